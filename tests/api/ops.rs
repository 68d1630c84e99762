use reqwest::{Method, StatusCode};

use carepay::store::{Backend, NotReady, PoolSettings, Store};

use crate::backend_tests;
use crate::helpers::{TestApp, TestDatabase, postgres_admin_url};

backend_tests!(
    health_and_readiness_answer_without_credentials,
    readiness_needs_the_schema_this_build_migrates_to,
    readiness_fails_once_the_database_is_not_the_one_opened,
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

/// The newest migration the database has recorded as applied.
async fn latest_applied(app: &TestApp) -> i64 {
    let pool = app.db.raw_pool().await;
    let latest = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(&pool).await.unwrap();
    pool.close().await;
    latest
}

async fn readiness_needs_the_schema_this_build_migrates_to(app: TestApp) {
    app.raw(Method::GET, "/readyz", None, None).await.expect(StatusCode::OK);
    let latest = latest_applied(&app).await;
    let pool = app.db.raw_pool().await;
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1").bind(latest).execute(&pool).await.unwrap();
    let previous: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(&pool).await.unwrap();
    let reply = app
        .raw(Method::GET, "/readyz", None, None)
        .await
        .expect_problem(StatusCode::SERVICE_UNAVAILABLE, "SCHEMA_MISMATCH");
    assert_eq!(reply.body["detail"], format!("schema version {latest} expected, found {previous}"));
    app.raw(Method::GET, "/healthz", None, None).await.expect(StatusCode::OK);
}

/// The SQLite file behind a test database's url.
fn sqlite_path(url: &str) -> std::path::PathBuf {
    let path = url.strip_prefix("sqlite://").expect("a sqlite url");
    std::path::PathBuf::from(path.split('?').next().unwrap())
}

async fn readiness_fails_once_the_database_is_not_the_one_opened(app: TestApp) {
    app.raw(Method::GET, "/readyz", None, None).await.expect(StatusCode::OK);
    let latest = latest_applied(&app).await;
    match app.app.store.backend() {
        Backend::Sqlite => {
            let path = sqlite_path(&app.db.url);
            std::fs::remove_file(&path).expect("delete the database file");
            let reply = app.raw(Method::GET, "/readyz", None, None).await;
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text);
            // Gone, unless the pool has already opened a new, empty file in its place.
            assert!(matches!(reply.code(), "DATABASE_FILE_MISSING" | "DATABASE_FILE_REPLACED"), "{}", reply.text);
            assert!(!reply.text.contains(path.to_str().unwrap()), "no path is shown: {}", reply.text);
            std::fs::write(&path, b"").expect("another file at the path");
            app.raw(Method::GET, "/readyz", None, None)
                .await
                .expect_problem(StatusCode::SERVICE_UNAVAILABLE, "DATABASE_FILE_REPLACED");
        }
        Backend::Postgres => {
            let name = app.db.url.rsplit('/').next().unwrap().to_owned();
            let admin =
                Store::connect(&postgres_admin_url(), &PoolSettings { max_connections: 1, ..PoolSettings::default() })
                    .await
                    .unwrap();
            // Under the running server: its connections are cut, the database made anew, empty.
            admin.execute_raw(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
            admin.execute_raw(&format!("CREATE DATABASE {name}")).await.unwrap();
            admin.close().await;
            // The pool notices its connections are gone and opens new ones.
            let mut reply = app.raw(Method::GET, "/readyz", None, None).await;
            for _ in 0..100 {
                if reply.code() != "DATABASE_UNAVAILABLE" {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                reply = app.raw(Method::GET, "/readyz", None, None).await;
            }
            let reply = reply.expect_problem(StatusCode::SERVICE_UNAVAILABLE, "SCHEMA_MISMATCH");
            assert_eq!(reply.body["detail"], format!("schema version {latest} expected, found none"));
        }
    }
    app.raw(Method::GET, "/healthz", None, None).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn a_deleted_sqlite_file_is_missing_to_the_store_that_opened_it() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let store = db.store().await;
    store.readiness().await.expect("ready at first");
    std::fs::remove_file(sqlite_path(&db.url)).unwrap();
    assert!(matches!(store.readiness().await, Err(NotReady::FileMissing)));
    store.ping().await.expect("the open connections still answer, which is why the file is checked");
    store.close().await;
}
