//! Managing endpoints: who may, what is refused, what is shown and what is kept secret.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{create_endpoint, world};
use crate::backend_tests;
use crate::helpers::TestApp;

async fn an_owner_registers_changes_and_rotates_an_endpoint_and_sees_its_secret_once(app: TestApp) {
    let w = world(&app).await;
    let root = &app.root_token;
    let (id, secret, created) = create_endpoint(
        &app,
        root,
        json!({"facility_id": w.facility, "url": "https://billing.example.cn/hook?tenant=7",
               "event_types": ["refund.failed", "payment.succeeded", "payment.succeeded"], "ed25519": true}),
    )
    .await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    let endpoint = &created["endpoint"];
    assert_eq!(endpoint["owner_kind"], "facility");
    assert_eq!(endpoint["owner_id"], w.facility.as_str());
    assert_eq!(endpoint["status"], "enabled");
    assert_eq!(endpoint["event_types"], json!(["payment.succeeded", "refund.failed"]));
    let public_key = endpoint["public_key"].as_str().unwrap().to_owned();
    assert!(public_key.starts_with("whpk_"));

    let read = app.get(&format!("/v1/callback-endpoints/{id}"), root).await.expect(StatusCode::OK);
    assert!(!read.text.contains(&secret[6..]), "the secret is shown only at creation");
    assert_eq!(read.body["public_key"], public_key.as_str());
    let key = app.get(&format!("/v1/callback-endpoints/{id}/public-key"), root).await.expect(StatusCode::OK);
    assert_eq!(key.body["public_key"], public_key.as_str());

    let changed = app
        .call(
            Method::PATCH,
            &format!("/v1/callback-endpoints/{id}"),
            root,
            Some(json!({"url": "http://127.0.0.1:9/x", "enabled": false})),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(changed.body["status"], "disabled");
    assert_eq!(changed.body["disabled_reason"], "owner");
    assert_eq!(changed.body["version"], 2);
    let enabled = app
        .call(Method::PATCH, &format!("/v1/callback-endpoints/{id}"), root, Some(json!({"enabled": true})))
        .await
        .expect(StatusCode::OK);
    assert_eq!(enabled.body["status"], "enabled");
    assert_eq!(enabled.body["disabled_reason"], serde_json::Value::Null);

    let rotated = app
        .post(&format!("/v1/callback-endpoints/{id}/rotate-secret"), root, json!({"overlap_seconds": 3600}))
        .await
        .expect(StatusCode::OK);
    let new_secret = rotated.body["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(rotated.body["endpoint"]["previous_secret_until"].is_string());

    // At rest, neither secret nor the Ed25519 private key appears in clear.
    let pool = app.db.raw_pool().await;
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT secret_sealed, previous_secret_sealed, signing_key_sealed FROM callback_endpoints WHERE id = $1",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let stored = format!("{rows:?}");
    assert!(!stored.contains(&secret[6..]) && !stored.contains(&new_secret[6..]), "{stored}");
    assert!(rows[0].2.as_deref().is_some_and(|key| key.starts_with("gcm1:")));

    let listed =
        app.get(&format!("/v1/callback-endpoints?facility_id={}", w.facility), root).await.expect(StatusCode::OK);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);

    let (plain, _, _) = create_endpoint(
        &app,
        root,
        json!({"office_region_id": w.town, "url": "http://office.example.cn/cb", "event_types": ["batch.completed"]}),
    )
    .await;
    app.get(&format!("/v1/callback-endpoints/{plain}/public-key"), root)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");
}

async fn bad_endpoint_urls_and_event_types_are_refused_at_creation(app: TestApp) {
    let w = world(&app).await;
    let root = &app.root_token;
    let long = format!("https://example.cn/{}", "a".repeat(2_100));
    for (url, why) in [
        ("ftp://example.cn/hook", "not http"),
        ("javascript:alert(1)", "not http"),
        ("file:///etc/passwd", "not http"),
        ("/relative/path", "relative"),
        ("https://user:secret@example.cn/hook", "credentials"),
        ("https://token@example.cn/hook", "user name"),
        ("https://example.cn/hook#frag", "fragment"),
        (long.as_str(), "too long"),
    ] {
        app.post(
            "/v1/callback-endpoints",
            root,
            json!({"facility_id": w.facility, "url": url, "event_types": ["payment.succeeded"]}),
        )
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_URL");
        let _ = why;
    }
    for (body, code) in [
        (json!({"facility_id": w.facility, "url": "https://a.cn/", "event_types": []}), "INVALID_EVENT_TYPES"),
        (
            json!({"facility_id": w.facility, "url": "https://a.cn/", "event_types": ["payment.done"]}),
            "INVALID_EVENT_TYPES",
        ),
        (json!({"url": "https://a.cn/", "event_types": ["payment.failed"]}), "OWNER_REQUIRED"),
        (
            json!({"facility_id": w.facility, "office_region_id": w.town, "url": "https://a.cn/", "event_types": ["payment.failed"]}),
            "AMBIGUOUS_OWNER",
        ),
        (json!({"facility_id": "reg_x", "url": "https://a.cn/", "event_types": ["payment.failed"]}), "INVALID_ID"),
        (
            json!({"facility_id": w.facility, "url": "https://a.cn/", "event_types": ["payment.failed"], "secret": "mine"}),
            "UNKNOWN_FIELD",
        ),
    ] {
        app.post("/v1/callback-endpoints", root, body).await.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, code);
    }
    let listed = app.get("/v1/callback-endpoints", root).await.expect(StatusCode::OK);
    assert_eq!(listed.body["items"], json!([]), "nothing was created");
}

async fn roles_and_scopes_decide_who_sees_and_manages_callbacks(app: TestApp) {
    let w = world(&app).await;
    let root = &app.root_token;
    let other_town = app.create_region(root, Some(&w.district), "town", "平望镇").await;
    let other_facility = app.create_facility(root, &other_town, "平望敬老院", "0021000000000002").await;
    let facility_body =
        |facility: &str| json!({"facility_id": facility, "url": "https://a.cn/", "event_types": ["payment.succeeded"]});
    let office_body = json!({"office_region_id": w.town, "url": "https://b.cn/", "event_types": ["batch.completed"]});

    let manager = app.issue_token(root, "facility_manager", Some(&w.town)).await;
    let clerk = app.issue_token(root, "subsidy_clerk", Some(&w.town)).await;
    let approver = app.issue_token(root, "subsidy_approver", Some(&w.town)).await;
    let auditor = app.issue_token(root, "auditor", Some(&w.town)).await;
    let accountant = app.issue_token(root, "accountant", Some(&w.town)).await;

    let (facility_endpoint, _, _) = create_endpoint(&app, &manager, facility_body(&w.facility)).await;
    let (office_endpoint, _, _) = create_endpoint(&app, &clerk, office_body.clone()).await;
    create_endpoint(&app, &approver, office_body.clone()).await;
    app.post("/v1/callback-endpoints", &manager, office_body.clone())
        .await
        .expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    app.post("/v1/callback-endpoints", &clerk, facility_body(&w.facility))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    for token in [&auditor, &accountant] {
        app.post("/v1/callback-endpoints", token, facility_body(&w.facility))
            .await
            .expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    }
    // Auditors read both kinds; accountants neither.
    app.get(&format!("/v1/callback-endpoints/{facility_endpoint}"), &auditor).await.expect(StatusCode::OK);
    app.get(&format!("/v1/callback-endpoints/{office_endpoint}"), &auditor).await.expect(StatusCode::OK);
    let listed = app.get("/v1/callback-endpoints", &auditor).await.expect(StatusCode::OK);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 3);
    app.get("/v1/callback-endpoints", &accountant).await.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    app.call(
        Method::PATCH,
        &format!("/v1/callback-endpoints/{facility_endpoint}"),
        &auditor,
        Some(json!({"enabled": false})),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    // A manager sees only the facility's endpoints; an office endpoint is as good as missing.
    let listed = app.get("/v1/callback-endpoints", &manager).await.expect(StatusCode::OK);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);

    // Outside the scope, an endpoint answers exactly like a missing one, on every route.
    let (outside, _, _) = create_endpoint(&app, root, facility_body(&other_facility)).await;
    let missing = format!("ep_{}", "0".repeat(32));
    let routes = |id: &str| {
        vec![
            (Method::GET, format!("/v1/callback-endpoints/{id}"), None),
            (Method::PATCH, format!("/v1/callback-endpoints/{id}"), Some(json!({"enabled": false}))),
            (Method::POST, format!("/v1/callback-endpoints/{id}/rotate-secret"), Some(json!({}))),
            (Method::GET, format!("/v1/callback-endpoints/{id}/public-key"), None),
            (Method::GET, format!("/v1/callback-endpoints/{id}/deliveries"), None),
            (Method::GET, format!("/v1/callback-endpoints/{id}/attempts"), None),
            (
                Method::POST,
                format!("/v1/callback-endpoints/{id}/replay"),
                Some(json!({"event_id": format!("msg_{}", "1".repeat(32))})),
            ),
            (
                Method::POST,
                format!("/v1/callback-endpoints/{id}/replay-failed"),
                Some(json!({"since": "2026-01-01T00:00:00+08:00"})),
            ),
        ]
    };
    for ((method, path, body), (_, missing_path, missing_body)) in routes(&outside).into_iter().zip(routes(&missing)) {
        for (token, probe) in [(&manager, &outside), (&clerk, &facility_endpoint)] {
            let path = path.replace(&outside, probe);
            let seen = app.call(method.clone(), &path, token, body.clone()).await;
            let absent = app.call(method.clone(), &missing_path, token, missing_body.clone()).await;
            assert_eq!(seen.status, StatusCode::FORBIDDEN, "{method} {path}: {}", seen.text);
            assert_eq!(seen.body, absent.body, "{method} {path}: out-of-scope and missing answers differ");
        }
    }
    app.post("/v1/callback-endpoints", &manager, facility_body(&other_facility))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "OUT_OF_SCOPE");
    let still = app.get(&format!("/v1/callback-endpoints/{outside}"), root).await.expect(StatusCode::OK);
    assert_eq!(still.body["status"], "enabled", "nothing outside the scope changed");
}

backend_tests!(
    an_owner_registers_changes_and_rotates_an_endpoint_and_sees_its_secret_once,
    bad_endpoint_urls_and_event_types_are_refused_at_creation,
    roles_and_scopes_decide_who_sees_and_manages_callbacks,
);
