use reqwest::{Method, StatusCode};

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    health_and_readiness_answer_without_credentials,
    metrics_count_requests_by_route_and_status,
    the_openapi_document_describes_every_route,
    every_response_carries_a_request_id,
);

async fn health_and_readiness_answer_without_credentials(app: TestApp) {
    let health = app.raw(Method::GET, "/healthz", None, None).await.expect(StatusCode::OK);
    assert_eq!(health.text, "ok\n");
    let ready = app.raw(Method::GET, "/readyz", None, None).await.expect(StatusCode::OK);
    assert_eq!(ready.text, "ready\n");

    // With the database gone, the service is alive but not ready.
    app.app.store.close().await;
    app.raw(Method::GET, "/healthz", None, None).await.expect(StatusCode::OK);
    app.raw(Method::GET, "/readyz", None, None)
        .await
        .expect_problem(StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE");
}

async fn metrics_count_requests_by_route_and_status(app: TestApp) {
    app.get("/v1/regions", &app.root_token).await.expect(StatusCode::OK);
    app.raw(Method::GET, "/v1/regions", None, None).await.expect(StatusCode::UNAUTHORIZED);
    let metrics = app.raw(Method::GET, "/metrics", None, None).await.expect(StatusCode::OK);
    let line = |status: &str| {
        metrics.text.lines().any(|line| {
            line.starts_with("http_requests_total")
                && line.contains("route=\"/v1/regions\"")
                && line.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(line("200") && line("401"), "metrics:\n{}", metrics.text);
}

async fn the_openapi_document_describes_every_route(app: TestApp) {
    let document = app.raw(Method::GET, "/openapi.json", None, None).await.expect(StatusCode::OK);
    assert!(document.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/regions", "post"),
        ("/v1/regions", "get"),
        ("/v1/regions/{id}", "get"),
        ("/v1/organisations", "post"),
        ("/v1/organisations/{id}", "get"),
        ("/v1/facilities", "post"),
        ("/v1/facilities/{id}", "patch"),
        ("/v1/terminals", "post"),
        ("/v1/terminals/{id}/suspend", "post"),
        ("/v1/terminals/{id}/resume", "post"),
        ("/v1/terminals/{id}/rotate-key", "post"),
        ("/v1/tokens", "post"),
        ("/v1/tokens/{id}", "delete"),
    ] {
        assert!(
            paths.get(path).and_then(|item| item.get(method)).is_some(),
            "{method} {path} missing from the document"
        );
    }
    assert!(document.body["components"]["securitySchemes"]["bearer"].is_object());
    // Enumerations are documented by their wire names, as clients must send them.
    let schemas = &document.body["components"]["schemas"];
    assert_eq!(schemas["FacilityKind"]["enum"][2], "meal_canteen");
    assert_eq!(schemas["EventType"]["enum"][0], "payment.succeeded");
    assert_eq!(schemas["EndpointStatus"]["enum"][0], "enabled");
    assert!(document.body["components"]["schemas"]["Problem"].is_object());
}

async fn every_response_carries_a_request_id(app: TestApp) {
    let response = app.client.get(format!("{}/healthz", app.address)).send().await.unwrap();
    let id = response.headers().get("x-request-id").expect("x-request-id").to_str().unwrap().to_owned();
    assert!(!id.is_empty());
    let response =
        app.client.get(format!("{}/healthz", app.address)).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123", "a client's request id is kept");
}
