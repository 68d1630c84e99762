//! Every request body, sent wrong in every way we can think of, gets a specific problem
//! response naming the field, and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, terminal_key_pair};

backend_tests!(
    bad_bodies_are_refused_with_the_field_and_change_nothing,
    malformed_requests_get_specific_client_errors,
    requests_without_a_valid_token_are_unauthenticated,
);

async fn counts(app: &TestApp) -> Vec<usize> {
    let mut counts = Vec::new();
    for path in ["/v1/regions", "/v1/organisations", "/v1/facilities", "/v1/terminals", "/v1/tokens"] {
        let reply = app.get(&format!("{path}?limit=200"), &app.root_token).await.expect(StatusCode::OK);
        counts.push(reply.body["items"].as_array().unwrap().len());
    }
    counts
}

async fn bad_bodies_are_refused_with_the_field_and_change_nothing(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let facility = app.create_facility(root, &district, "敬老院", "0021000000000001").await;
    let (_, key) = terminal_key_pair();
    let terminal = app.register_terminal(root, &facility, &key).await;
    let before = counts(&app).await;

    let facility_body = |patch: Value| {
        let mut body = json!({"region_id": district, "name": "助餐点", "kind": "meal_canteen", "merchant_wallet_id": "0021000000000002"});
        for (key, value) in patch.as_object().unwrap() {
            if value.is_null() {
                body.as_object_mut().unwrap().remove(key);
            } else {
                body[key] = value.clone();
            }
        }
        body
    };
    // (method, path, body, expected code, expected field)
    let cases: Vec<(Method, String, Value, &str, &str)> = vec![
        (Method::POST, "/v1/regions".into(), json!({"level": "district", "name": ""}), "INVALID_NAME", "name"),
        (
            Method::POST,
            "/v1/regions".into(),
            json!({"level": "district", "name": "长".repeat(101)}),
            "INVALID_NAME",
            "name",
        ),
        (Method::POST, "/v1/regions".into(), json!({"level": "province", "name": "省"}), "INVALID_FIELD", "level"),
        (
            Method::POST,
            "/v1/regions".into(),
            json!({"level": "town", "name": "镇", "parent_id": "reg_x"}),
            "INVALID_ID",
            "parent_id",
        ),
        (Method::POST, "/v1/regions".into(), json!({"level": "district"}), "MISSING_FIELD", "name"),
        (
            Method::POST,
            "/v1/regions".into(),
            json!({"level": "district", "name": "区", "extra": 1}),
            "UNKNOWN_FIELD",
            "extra",
        ),
        (Method::POST, "/v1/regions".into(), json!({"level": "district", "name": 5}), "INVALID_FIELD", "name"),
        (
            Method::POST,
            "/v1/organisations".into(),
            json!({"region_id": facility, "name": "组织"}),
            "INVALID_ID",
            "region_id",
        ),
        (
            Method::POST,
            "/v1/organisations".into(),
            json!({"region_id": district, "name": "a\u{0007}b"}),
            "INVALID_NAME",
            "name",
        ),
        (
            Method::POST,
            "/v1/facilities".into(),
            facility_body(json!({"merchant_wallet_id": "0021-0000"})),
            "INVALID_WALLET_ID",
            "merchant_wallet_id",
        ),
        (
            Method::POST,
            "/v1/facilities".into(),
            facility_body(json!({"merchant_wallet_id": 21000000000002u64})),
            "INVALID_FIELD",
            "merchant_wallet_id",
        ),
        (Method::POST, "/v1/facilities".into(), facility_body(json!({"kind": "hospital"})), "INVALID_FIELD", "kind"),
        (Method::POST, "/v1/facilities".into(), facility_body(json!({"kind": null})), "MISSING_FIELD", "kind"),
        (
            Method::POST,
            "/v1/facilities".into(),
            facility_body(json!({"organisation_id": "org_zz"})),
            "INVALID_ID",
            "organisation_id",
        ),
        (Method::PATCH, format!("/v1/facilities/{facility}"), json!({"name": "  "}), "INVALID_NAME", "name"),
        (Method::PATCH, format!("/v1/facilities/{facility}"), json!({"kind": "nursing_home"}), "UNKNOWN_FIELD", "kind"),
        (
            Method::POST,
            "/v1/terminals".into(),
            json!({"facility_id": facility, "label": "台", "public_key": "short"}),
            "INVALID_PUBLIC_KEY",
            "public_key",
        ),
        (
            Method::POST,
            "/v1/terminals".into(),
            json!({"facility_id": district, "label": "台", "public_key": key}),
            "INVALID_ID",
            "facility_id",
        ),
        (
            Method::POST,
            "/v1/terminals".into(),
            json!({"facility_id": facility, "label": "", "public_key": key}),
            "INVALID_NAME",
            "label",
        ),
        (
            Method::POST,
            format!("/v1/terminals/{terminal}/rotate-key"),
            json!({"public_key": "AAAA"}),
            "INVALID_PUBLIC_KEY",
            "public_key",
        ),
        (Method::POST, format!("/v1/terminals/{terminal}/rotate-key"), json!({}), "MISSING_FIELD", "public_key"),
        (Method::POST, "/v1/tokens".into(), json!({"role": "root", "label": "x"}), "INVALID_FIELD", "role"),
        (
            Method::POST,
            "/v1/tokens".into(),
            json!({"role": "auditor", "label": "x", "lifetime_days": 0}),
            "INVALID_LIFETIME",
            "lifetime_days",
        ),
        (
            Method::POST,
            "/v1/tokens".into(),
            json!({"role": "auditor", "label": "x", "lifetime_days": -1}),
            "INVALID_FIELD",
            "lifetime_days",
        ),
        (
            Method::POST,
            "/v1/tokens".into(),
            json!({"role": "auditor", "label": "x", "region_id": "reg_1"}),
            "INVALID_ID",
            "region_id",
        ),
    ];
    for (method, path, body, code, field) in cases {
        let reply = app.call(method.clone(), &path, root, Some(body.clone())).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path} {body}: {}", reply.text);
        assert_eq!(reply.content_type, "application/problem+json");
        assert_eq!(reply.code(), code, "{method} {path} {body}: {}", reply.text);
        assert_eq!(reply.body["field"], field, "{method} {path} {body}: {}", reply.text);
        assert!(reply.body["detail"].as_str().unwrap().contains(field), "detail names the field: {}", reply.text);
    }
    assert_eq!(counts(&app).await, before, "refused requests wrote nothing");
    let unchanged = app.get(&format!("/v1/facilities/{facility}"), root).await.expect(StatusCode::OK);
    assert_eq!(unchanged.body["version"], 1);
}

async fn malformed_requests_get_specific_client_errors(app: TestApp) {
    let root = Some(app.root_token.as_str());
    let reply = app.raw(Method::POST, "/v1/regions", root, Some(("application/json", b"{\"level\": ".to_vec()))).await;
    reply.expect_problem(StatusCode::BAD_REQUEST, "MALFORMED_JSON");
    let reply = app.raw(Method::POST, "/v1/regions", root, Some(("application/json", b"[1,2]".to_vec()))).await;
    reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_FIELD");
    let reply = app
        .raw(
            Method::POST,
            "/v1/regions",
            root,
            Some(("application/json", b"{\"level\":\"district\",\"name\":\"a\"} x".to_vec())),
        )
        .await;
    reply.expect_problem(StatusCode::BAD_REQUEST, "MALFORMED_JSON");
    let reply = app.raw(Method::POST, "/v1/regions", root, Some(("text/plain", b"{}".to_vec()))).await;
    reply.expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
    let reply = app.raw(Method::POST, "/v1/regions", root, None).await;
    reply.expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
    let reply = app.raw(Method::GET, "/v1/facilities/not-an-id", root, None).await;
    reply.expect_problem(StatusCode::NOT_FOUND, "INVALID_ID");
    let reply = app.raw(Method::GET, "/v1/facilities?limit=abc", root, None).await;
    reply.expect_problem(StatusCode::BAD_REQUEST, "INVALID_QUERY");
    let reply = app.raw(Method::GET, "/v1/facilities?colour=red", root, None).await;
    reply.expect_problem(StatusCode::BAD_REQUEST, "INVALID_QUERY");
    for limit in ["0", "201"] {
        let reply = app.raw(Method::GET, &format!("/v1/regions?limit={limit}"), root, None).await;
        let reply = reply.expect_problem(StatusCode::BAD_REQUEST, "INVALID_QUERY");
        assert_eq!(reply.body["field"], "limit");
    }
    let reply = app.raw(Method::GET, "/v2/nothing", root, None).await;
    reply.expect_problem(StatusCode::NOT_FOUND, "NO_SUCH_ROUTE");
    let reply = app.raw(Method::DELETE, "/v1/facilities", root, None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let missing = format!("/v1/facilities/fac_{}", "0".repeat(32));
    app.raw(Method::GET, &missing, root, None).await.expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");
}

async fn oversized_bodies_are_refused(backend: carepay::store::Backend) {
    // A small limit keeps the body inside the socket buffers, so the client has finished
    // sending before the server answers and closes; the default limit is 1 MiB.
    let settings = carepay::http::HttpSettings { max_body_bytes: 4_096, ..Default::default() };
    let app = crate::helpers::spawn_app_with(crate::helpers::TestDatabase::new(backend).await, settings).await;
    let root = Some(app.root_token.as_str());
    let name = "长".repeat(3_000);
    let body = serde_json::to_vec(&json!({"level": "district", "name": name})).unwrap();
    let reply = app.raw(Method::POST, "/v1/regions", root, Some(("application/json", body))).await;
    reply.expect_problem(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE");
    let regions = app.get("/v1/regions", &app.root_token).await.expect(StatusCode::OK);
    assert_eq!(regions.body["items"].as_array().unwrap().len(), 0);
}

async fn requests_without_a_valid_token_are_unauthenticated(app: TestApp) {
    let fake = format!("cpt_{}", "A".repeat(43));
    for token in [None, Some("nonsense"), Some(fake.as_str()), Some("")] {
        let reply = app.raw(Method::GET, "/v1/facilities", token, None).await;
        reply.expect_problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    let reply = app
        .raw(
            Method::POST,
            "/v1/regions",
            None,
            Some(("application/json", br#"{"level":"district","name":"x"}"#.to_vec())),
        )
        .await;
    reply.expect_problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_on_sqlite() {
    oversized_bodies_are_refused(carepay::store::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_on_postgres() {
    oversized_bodies_are_refused(carepay::store::Backend::Postgres).await;
}
