//! Input no honest client sends: a NUL or a control character in a cursor or in any free
//! text, a request target or headers past the bounds. Each is a client error in a problem
//! document, and changes nothing. The listings and text fields are found in the OpenAPI
//! document itself, so one added later is tested without a new row here.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, terminal_key_pair};
use crate::route_table::{WALLET_B, World, world};

backend_tests!(
    every_listing_refuses_a_cursor_no_page_handed_out,
    every_free_text_field_refuses_nul_and_control_characters_and_stores_nothing,
    a_long_request_target_or_large_headers_get_a_problem_document,
);

fn document() -> Value {
    serde_json::to_value(carepay::http::openapi()).unwrap()
}

/// A concrete path for a template, naming town B's objects.
fn fill(template: &str, w: &World) -> String {
    let id = if template.starts_with("/v1/regions") {
        &w.town_b
    } else if template.starts_with("/v1/organisations") {
        &w.org_b
    } else if template.starts_with("/v1/facilities") {
        &w.facility_b
    } else if template.starts_with("/v1/terminals") {
        &w.terminal_b
    } else if template.starts_with("/v1/tokens") {
        &w.victim_token_b
    } else if template.starts_with("/v1/callback-endpoints") {
        &w.endpoint_b
    } else if template.starts_with("/v1/subsidy-programmes") {
        &w.programme_b
    } else if template.starts_with("/v1/subsidy-batches") {
        &w.batch_b
    } else {
        &w.discrepancy_b
    };
    let today = carepay::domain::reconciliation::business_day(carepay::domain::time::UnixMs::now());
    template.replace("{id}", id).replace("{seq}", "1").replace("{wallet_id}", WALLET_B).replace("{date}", &today)
}

/// Everything a test can see changing: the audit trail records every change carepay makes.
async fn audit_length(app: &TestApp) -> usize {
    let mut after = 0;
    let mut total = 0;
    loop {
        let page = app.get(&format!("/v1/audit?after_seq={after}&limit=200"), &app.root_token).await;
        let items = page.expect(StatusCode::OK).body["items"].as_array().unwrap().clone();
        let Some(last) = items.last() else { return total };
        after = last["seq"].as_i64().unwrap();
        total += items.len();
    }
}

async fn every_listing_refuses_a_cursor_no_page_handed_out(app: TestApp) {
    let w = world(&app).await;
    let doc = document();
    let mut listings = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        let Some(operation) = item.get("get") else { continue };
        let takes_cursor = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "after" && p["in"] == "query" && p["schema"]["type"] == "string");
        if takes_cursor {
            listings.push(fill(template, &w));
        }
    }
    assert_eq!(listings.len(), 8, "{listings:?}");
    for path in listings {
        // The first page hands out a real cursor, which is accepted.
        let first = app.get(&format!("{path}?limit=1"), &app.root_token).await.expect(StatusCode::OK);
        if let Some(next) = first.body["next_after"].as_str() {
            app.get(&format!("{path}?after={next}"), &app.root_token).await.expect(StatusCode::OK);
        }
        for cursor in ["%00", "reg_%00", "a%00b", "%27%3B--", "reg_0192", &"f".repeat(200), "%E5%90%B4"] {
            let reply = app.get(&format!("{path}?after={cursor}"), &app.root_token).await;
            let reply = reply.expect_problem(StatusCode::BAD_REQUEST, "INVALID_QUERY");
            assert_eq!(reply.body["field"], "after", "{path}?after={cursor}: {}", reply.text);
        }
    }
}

/// A body every text-taking operation accepts but for what is being tested; `None` for an
/// operation this table does not know, which fails the test.
fn valid_body(method: &str, template: &str, w: &World, public_key: &str) -> Option<Value> {
    Some(match (method, template) {
        ("post", "/v1/regions") => json!({"parent_id": w.town_b, "level": "village", "name": "新村"}),
        ("post", "/v1/organisations") => json!({"region_id": w.town_b, "name": "新组织"}),
        ("post", "/v1/facilities") => json!({"region_id": w.town_b, "name": "新助餐点", "kind": "meal_canteen",
                                            "merchant_wallet_id": "0021000000000077"}),
        ("patch", "/v1/facilities/{id}") => json!({"name": "改名"}),
        ("post", "/v1/terminals") => {
            json!({"facility_id": w.facility_b, "label": "收银台 2", "public_key": public_key})
        }
        ("post", "/v1/tokens") => json!({"role": "auditor", "region_id": w.town_b, "label": "新令牌"}),
        ("post", "/v1/subsidy-programmes") => json!({"region_id": w.town_b, "name": "新津贴",
            "funding_wallet_id": "0031000000000001", "budget": "10.00", "per_payment_cap": "1.00",
            "per_period_cap": "1.00", "starts_on": "2026-01-01", "ends_on": "2026-12-31"}),
        ("post", "/v1/subsidy-batches/{id}/lines/{seq}/reissue") => {
            json!({"payee_name": "李四", "wallet_id": "0021000000000102"})
        }
        ("post", "/v1/reconciliation/discrepancies/{id}/resolve") => {
            json!({"resolution": "other", "note": "checked with the operator"})
        }
        _ => return None,
    })
}

const TEXT_SCHEMAS: [&str; 3] =
    ["#/components/schemas/Name", "#/components/schemas/Note", "#/components/schemas/PayeeName"];

/// (method, template, field) for every request body field of a free-text schema.
fn text_fields(doc: &Value) -> Vec<(String, String, String)> {
    fn walk(schema: &Value, doc: &Value, out: &mut Vec<String>) {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap();
            return walk(&doc["components"]["schemas"][name], doc, out);
        }
        for choice in schema.get("oneOf").and_then(Value::as_array).into_iter().flatten() {
            walk(choice, doc, out);
        }
        for (field, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let mut refs = Vec::new();
            collect_refs(property, &mut refs);
            if refs.iter().any(|r| TEXT_SCHEMAS.contains(&r.as_str())) && !out.contains(field) {
                out.push(field.clone());
            }
        }
    }
    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => map.iter().for_each(|(k, v)| match v {
                Value::String(r) if k == "$ref" => out.push(r.clone()),
                other => collect_refs(other, out),
            }),
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(schema) = operation["requestBody"]["content"]["application/json"].get("schema") else { continue };
            let mut fields = Vec::new();
            walk(schema, doc, &mut fields);
            found.extend(fields.into_iter().map(|field| (method.clone(), template.clone(), field)));
        }
    }
    found
}

async fn every_free_text_field_refuses_nul_and_control_characters_and_stores_nothing(app: TestApp) {
    let w = world(&app).await;
    let (_, public_key) = terminal_key_pair();
    let fields = text_fields(&document());
    let named: Vec<String> = fields.iter().map(|(m, t, f)| format!("{m} {t} {f}")).collect();
    for expected in [
        "post /v1/regions name",
        "post /v1/terminals label",
        "post /v1/tokens label",
        "post /v1/subsidy-programmes name",
        "post /v1/subsidy-batches/{id}/lines/{seq}/reissue payee_name",
        "post /v1/reconciliation/discrepancies/{id}/resolve note",
    ] {
        assert!(named.iter().any(|n| n == expected), "{expected} not among {named:?}");
    }
    let audit_before = audit_length(&app).await;
    for (method, template, field) in &fields {
        let body = valid_body(method, template, &w, &public_key)
            .unwrap_or_else(|| panic!("no valid body for {method} {template}: add a row to `valid_body`"));
        assert!(body.get(field).is_some(), "{method} {template}: the valid body lacks {field}");
        for hostile in ["a\u{0}b", "\u{0}", "\u{0}名字", "a\u{1b}[31mb", "a\u{7f}", "a\u{85}b"] {
            let mut bad = body.clone();
            bad[field] = json!(hostile);
            let path = fill(template, &w);
            let reply = app
                .call(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), &path, &app.root_token, Some(bad))
                .await;
            assert_eq!(
                reply.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path} {field}={hostile:?}: {}",
                reply.text
            );
            assert_eq!(reply.content_type, "application/problem+json", "{}", reply.text);
            assert_eq!(reply.body["field"], field.as_str(), "{method} {path}: {}", reply.text);
        }
    }
    assert_eq!(audit_length(&app).await, audit_before, "a refused request changed something");
    let facility = app.get(&format!("/v1/facilities/{}", w.facility_b), &app.root_token).await.expect(StatusCode::OK);
    assert_eq!(facility.body["name"], "乙助餐点");
    let today = carepay::domain::reconciliation::business_day(carepay::domain::time::UnixMs::now());
    let day = format!("/v1/reconciliation/days/{WALLET_B}/{today}/discrepancies?status=all");
    let discrepancies = app.get(&day, &app.root_token).await.expect(StatusCode::OK);
    assert_eq!(discrepancies.body[0]["status"], "open");
    assert_eq!(discrepancies.body[0]["note"], Value::Null);

    // A note may have lines and tabs; it is stored as written, trimmed.
    let note = "line one\n\tline two";
    let resolved = app
        .post(
            &format!("/v1/reconciliation/discrepancies/{}/resolve", w.discrepancy_b),
            &app.root_token,
            json!({"resolution": "other", "note": format!("  {note} ")}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(resolved.body["note"], note);
}

async fn a_long_request_target_or_large_headers_get_a_problem_document(app: TestApp) {
    let limits = carepay::http::head_limits::HeadLimits::default();
    let long = format!("/v1/regions?limit={}", "1".repeat(limits.max_uri_bytes));
    let reply = app.raw(Method::GET, &long, Some(&app.root_token), None).await;
    reply.expect_problem(StatusCode::URI_TOO_LONG, "URI_TOO_LONG");

    let response = app
        .client
        .get(format!("{}/v1/regions", app.address))
        .bearer_auth(&app.root_token)
        .header("x-padding", "p".repeat(limits.max_header_bytes))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "HEADERS_TOO_LARGE");

    // Just inside both bounds, the request is served.
    let inside = format!("/v1/regions?limit=50&{}", "x=1&".repeat(500));
    let reply = app.raw(Method::GET, &inside, Some(&app.root_token), None).await;
    assert_ne!(reply.status, StatusCode::URI_TOO_LONG, "{}", reply.text);
}
