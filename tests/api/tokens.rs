use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    an_issued_token_works_until_it_is_revoked,
    tokens_are_stored_only_as_digests,
    an_expired_token_is_refused,
);

async fn an_issued_token_works_until_it_is_revoked(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let issued = app
        .post(
            "/v1/tokens",
            root,
            json!({"role": "auditor", "region_id": district, "label": "审计", "lifetime_days": 30}),
        )
        .await
        .expect(StatusCode::CREATED);
    let secret = issued.body["secret"].as_str().unwrap().to_owned();
    let id = issued.body["token"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cpt_"));
    assert_eq!(issued.body["token"]["role"], "auditor");
    assert_eq!(issued.body["token"]["status"], "live");
    assert!(issued.body["token"]["expires_at"].is_string());

    app.get("/v1/regions", &secret).await.expect(StatusCode::OK);
    let shown = app.get(&format!("/v1/tokens/{id}"), root).await.expect(StatusCode::OK);
    assert!(shown.body.get("secret").is_none(), "the secret is shown only once");
    assert!(!shown.text.contains(&secret));

    let revoked = app.call(Method::DELETE, &format!("/v1/tokens/{id}"), root, None).await.expect(StatusCode::OK);
    assert_eq!(revoked.body["status"], "revoked");
    app.get("/v1/regions", &secret).await.expect_problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let again = app.call(Method::DELETE, &format!("/v1/tokens/{id}"), root, None).await.expect(StatusCode::OK);
    assert_eq!(again.body["revoked_at"], revoked.body["revoked_at"], "revoking twice keeps the first time");
}

async fn tokens_are_stored_only_as_digests(app: TestApp) {
    let secret = app.issue_token(&app.root_token, "admin", None).await;
    let pool = app.db.raw_pool().await;
    let digests: Vec<String> =
        sqlx::query_scalar("SELECT token_sha256 FROM api_tokens").fetch_all(&pool).await.unwrap();
    assert_eq!(digests.len(), 2);
    assert!(digests.iter().all(|digest| digest.len() == 64 && !digest.contains(&secret)));
    assert!(!digests.iter().any(|digest| digest == &secret));
}

async fn an_expired_token_is_refused(app: TestApp) {
    let secret = app.issue_token(&app.root_token, "auditor", None).await;
    app.get("/v1/regions", &secret).await.expect(StatusCode::OK);
    let pool = app.db.raw_pool().await;
    sqlx::query("UPDATE api_tokens SET expires_at_ms = 1").execute(&pool).await.unwrap();
    app.get("/v1/regions", &secret).await.expect_problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
}
