//! Every route of the OpenAPI document × every role × a token inside the object's region and
//! one outside it. A role that may not do something is refused before any lookup; outside
//! its scope an allowed role gets exactly the answer a missing object gets; inside, it is
//! never refused. A route added to the API without a row here fails
//! `every_route_in_the_openapi_document_is_in_the_table`.

use std::collections::BTreeSet;

use carepay::domain::reconciliation::business_day;
use carepay::domain::time::UnixMs;
use carepay::operator::sandbox::faults::StatementTamper;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::disbursement::citizen_id;
use crate::helpers::{TestApp, terminal_key_pair};

backend_tests!(every_route_answers_every_role_inside_and_outside_its_scope_as_the_table_says);

const ROLES: [&str; 6] = ["admin", "facility_manager", "subsidy_clerk", "subsidy_approver", "accountant", "auditor"];
const ALL: &[&str] = &ROLES;
const ADMIN: &[&str] = &["admin"];
const READ_AUDIT: &[&str] = &["admin", "auditor"];
const TERMINALS: &[&str] = &["admin", "facility_manager"];
const READ_FACILITY_CALLBACKS: &[&str] = &["admin", "facility_manager", "auditor"];
const RECONCILE: &[&str] = &["admin", "accountant"];
const READ_RECONCILIATION: &[&str] = &["admin", "accountant", "auditor"];
const READ_BATCHES: &[&str] = &["admin", "subsidy_clerk", "subsidy_approver", "auditor"];
const OPERATE_BATCHES: &[&str] = &["admin", "subsidy_clerk", "subsidy_approver"];
const UPLOAD: &[&str] = &["subsidy_clerk"];
const APPROVE: &[&str] = &["subsidy_approver"];
const REVEAL: &[&str] = &["subsidy_clerk", "subsidy_approver"];
/// Who manages a subsidy office's callback endpoints (and so reaches the routes) but not a facility's.
const OFFICE_ONLY: &[&str] = &["subsidy_clerk", "subsidy_approver"];

pub(crate) const WALLET_B: &str = "0021000000000002";
const MISSING_WALLET: &str = "0021999999999999";

/// Objects in town B, which outsiders (town A) must not see and insiders (town B) may.
#[derive(Default)]
pub(crate) struct World {
    pub(crate) town_a: String,
    pub(crate) town_b: String,
    pub(crate) org_b: String,
    pub(crate) facility_b: String,
    pub(crate) terminal_b: String,
    pub(crate) victim_token_b: String,
    pub(crate) endpoint_b: String,
    pub(crate) programme_b: String,
    pub(crate) batch_b: String,
    pub(crate) discrepancy_b: String,
    pub(crate) statement_b: Vec<u8>,
}

enum Body {
    None,
    Json(Value),
    Bytes(&'static str, Vec<u8>),
}

/// How an allowed role outside the object's region is answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outside {
    /// 403 `OUT_OF_SCOPE`, byte for byte the answer about an object that does not exist.
    Refused,
    /// A listing of the caller's own scope: none of town B's objects in it.
    Filtered,
}

struct Row {
    method: Method,
    /// The path as the OpenAPI document names it.
    template: &'static str,
    path: String,
    body: Body,
    allowed: &'static [&'static str],
    outside: Outside,
    /// Roles that may do this to some objects but not to this kind (an office's clerk and a
    /// facility's callback endpoint): the object is invisible to them, inside their region
    /// too, and they are answered as about a missing one.
    blind: &'static [&'static str],
    /// The code of the refusal outside the scope: `OUT_OF_SCOPE`, or a code that says which
    /// part of the request named the object (a statement's header), the same for a missing one.
    outside_code: &'static str,
}

fn row(method: Method, template: &'static str, path: String, body: Body, allowed: &'static [&'static str]) -> Row {
    Row { method, template, path, body, allowed, outside: Outside::Refused, blind: &[], outside_code: "OUT_OF_SCOPE" }
}

fn listing(template: &'static str, allowed: &'static [&'static str]) -> Row {
    Row {
        method: Method::GET,
        template,
        path: template.to_owned(),
        body: Body::None,
        allowed,
        outside: Outside::Filtered,
        blind: &[],
        outside_code: "OUT_OF_SCOPE",
    }
}

fn table(w: &World) -> Vec<Row> {
    let mut rows = rows(w);
    for row in &mut rows {
        if row.template.starts_with("/v1/callback-endpoints/{id}") {
            row.blind = OFFICE_ONLY;
        }
    }
    rows
}

fn rows(w: &World) -> Vec<Row> {
    use Method as M;
    let (_, key) = terminal_key_pair();
    let day = format!("/v1/reconciliation/days/{WALLET_B}/{}", business_day(UnixMs::now()));
    let ep = format!("/v1/callback-endpoints/{}", w.endpoint_b);
    let batch = format!("/v1/subsidy-batches/{}", w.batch_b);
    let j = Body::Json;
    let empty = || Body::Json(json!({}));
    let batch_file =
        format!("姓名,身份证号,钱包编号,金额\n王五,{},0021000000000109,10.00\n", citizen_id("32058419450315003"));
    vec![
        listing("/v1/regions", ALL),
        row(
            M::POST,
            "/v1/regions",
            "/v1/regions".into(),
            j(json!({"parent_id": w.town_b, "level": "village", "name": "新村"})),
            ADMIN,
        ),
        row(M::GET, "/v1/regions/{id}", format!("/v1/regions/{}", w.town_b), Body::None, ALL),
        listing("/v1/organisations", ALL),
        row(
            M::POST,
            "/v1/organisations",
            "/v1/organisations".into(),
            j(json!({"region_id": w.town_b, "name": "新组织"})),
            ADMIN,
        ),
        row(M::GET, "/v1/organisations/{id}", format!("/v1/organisations/{}", w.org_b), Body::None, ALL),
        listing("/v1/facilities", ALL),
        row(
            M::POST,
            "/v1/facilities",
            "/v1/facilities".into(),
            j(
                json!({"region_id": w.town_b, "name": "新点", "kind": "meal_canteen", "merchant_wallet_id": "0021000000000009"}),
            ),
            ADMIN,
        ),
        row(M::GET, "/v1/facilities/{id}", format!("/v1/facilities/{}", w.facility_b), Body::None, ALL),
        row(
            M::PATCH,
            "/v1/facilities/{id}",
            format!("/v1/facilities/{}", w.facility_b),
            j(json!({"name": "改名"})),
            ADMIN,
        ),
        row(M::GET, "/v1/terminals", format!("/v1/terminals?facility_id={}", w.facility_b), Body::None, ALL),
        row(
            M::POST,
            "/v1/terminals",
            "/v1/terminals".into(),
            j(json!({"facility_id": w.facility_b, "label": "台", "public_key": key})),
            TERMINALS,
        ),
        row(M::GET, "/v1/terminals/{id}", format!("/v1/terminals/{}", w.terminal_b), Body::None, ALL),
        row(
            M::POST,
            "/v1/terminals/{id}/suspend",
            format!("/v1/terminals/{}/suspend", w.terminal_b),
            Body::None,
            TERMINALS,
        ),
        row(
            M::POST,
            "/v1/terminals/{id}/resume",
            format!("/v1/terminals/{}/resume", w.terminal_b),
            Body::None,
            TERMINALS,
        ),
        row(
            M::POST,
            "/v1/terminals/{id}/rotate-key",
            format!("/v1/terminals/{}/rotate-key", w.terminal_b),
            j(json!({"public_key": key})),
            TERMINALS,
        ),
        listing("/v1/tokens", ADMIN),
        row(
            M::POST,
            "/v1/tokens",
            "/v1/tokens".into(),
            j(json!({"role": "auditor", "region_id": w.town_b, "label": "x"})),
            ADMIN,
        ),
        row(M::GET, "/v1/tokens/{id}", format!("/v1/tokens/{}", w.victim_token_b), Body::None, ADMIN),
        row(M::DELETE, "/v1/tokens/{id}", format!("/v1/tokens/{}", w.victim_token_b), Body::None, ADMIN),
        listing("/v1/audit", READ_AUDIT),
        listing("/v1/audit/export", READ_AUDIT),
        listing("/v1/audit/verify", READ_AUDIT),
        // Callbacks of town B's facility.
        row(
            M::GET,
            "/v1/callback-endpoints",
            format!("/v1/callback-endpoints?facility_id={}", w.facility_b),
            Body::None,
            READ_FACILITY_CALLBACKS,
        ),
        row(
            M::POST,
            "/v1/callback-endpoints",
            "/v1/callback-endpoints".into(),
            j(
                json!({"facility_id": w.facility_b, "url": "http://127.0.0.1:9/b", "event_types": ["payment.succeeded"]}),
            ),
            TERMINALS,
        ),
        row(M::GET, "/v1/callback-endpoints/{id}", ep.clone(), Body::None, READ_FACILITY_CALLBACKS),
        row(M::PATCH, "/v1/callback-endpoints/{id}", ep.clone(), j(json!({"enabled": true})), TERMINALS),
        row(
            M::GET,
            "/v1/callback-endpoints/{id}/attempts",
            format!("{ep}/attempts"),
            Body::None,
            READ_FACILITY_CALLBACKS,
        ),
        row(
            M::GET,
            "/v1/callback-endpoints/{id}/deliveries",
            format!("{ep}/deliveries"),
            Body::None,
            READ_FACILITY_CALLBACKS,
        ),
        row(
            M::GET,
            "/v1/callback-endpoints/{id}/public-key",
            format!("{ep}/public-key"),
            Body::None,
            READ_FACILITY_CALLBACKS,
        ),
        row(
            M::POST,
            "/v1/callback-endpoints/{id}/replay",
            format!("{ep}/replay"),
            j(json!({"event_id": format!("msg_{}", "1".repeat(32))})),
            TERMINALS,
        ),
        row(
            M::POST,
            "/v1/callback-endpoints/{id}/replay-failed",
            format!("{ep}/replay-failed"),
            j(json!({"since": "2026-01-01T00:00:00+08:00"})),
            TERMINALS,
        ),
        row(M::POST, "/v1/callback-endpoints/{id}/rotate-secret", format!("{ep}/rotate-secret"), empty(), TERMINALS),
        // Reconciliation of town B's facility wallet: a statement naming it in its header, and
        // an upload that names it too.
        Row {
            outside_code: "STATEMENT_WALLET_OUT_OF_SCOPE",
            ..row(
                M::POST,
                "/v1/reconciliation/statements",
                "/v1/reconciliation/statements".into(),
                Body::Bytes("text/csv", w.statement_b.clone()),
                RECONCILE,
            )
        },
        row(
            M::POST,
            "/v1/reconciliation/statements",
            format!("/v1/reconciliation/statements?wallet_id={WALLET_B}"),
            Body::Bytes("text/csv", w.statement_b.clone()),
            RECONCILE,
        ),
        row(M::POST, "/v1/reconciliation/days/{wallet_id}/{date}/run", format!("{day}/run"), empty(), RECONCILE),
        row(M::GET, "/v1/reconciliation/days/{wallet_id}/{date}", day.clone(), Body::None, READ_RECONCILIATION),
        row(
            M::GET,
            "/v1/reconciliation/days/{wallet_id}/{date}/lines",
            format!("{day}/lines"),
            Body::None,
            READ_RECONCILIATION,
        ),
        row(
            M::GET,
            "/v1/reconciliation/days/{wallet_id}/{date}/discrepancies",
            format!("{day}/discrepancies"),
            Body::None,
            READ_RECONCILIATION,
        ),
        row(
            M::POST,
            "/v1/reconciliation/discrepancies/{id}/resolve",
            format!("/v1/reconciliation/discrepancies/{}/resolve", w.discrepancy_b),
            j(json!({"resolution": "operator_error", "note": "ticket"})),
            RECONCILE,
        ),
        row(M::POST, "/v1/reconciliation/days/{wallet_id}/{date}/close", format!("{day}/close"), empty(), RECONCILE),
        // Disbursement of town B's office.
        row(
            M::POST,
            "/v1/subsidy-programmes",
            "/v1/subsidy-programmes".into(),
            j(
                json!({"region_id": w.town_b, "name": "新项目", "funding_wallet_id": "0031000000000002", "budget": "100.00",
                     "per_payment_cap": "10.00", "per_period_cap": "10.00", "starts_on": "2026-01-01", "ends_on": "2026-12-31"}),
            ),
            ADMIN,
        ),
        row(
            M::GET,
            "/v1/subsidy-programmes/{id}",
            format!("/v1/subsidy-programmes/{}", w.programme_b),
            Body::None,
            READ_BATCHES,
        ),
        row(
            M::POST,
            "/v1/subsidy-programmes/{id}/batches",
            format!("/v1/subsidy-programmes/{}/batches?period=2026-11&line_count=1&total=10.00", w.programme_b),
            Body::Bytes("text/csv", batch_file.into_bytes()),
            UPLOAD,
        ),
        row(M::GET, "/v1/subsidy-batches/{id}", batch.clone(), Body::None, READ_BATCHES),
        row(M::GET, "/v1/subsidy-batches/{id}/history", format!("{batch}/history"), Body::None, READ_BATCHES),
        row(M::GET, "/v1/subsidy-batches/{id}/lines", format!("{batch}/lines"), Body::None, READ_BATCHES),
        row(M::GET, "/v1/subsidy-batches/{id}/result", format!("{batch}/result"), Body::None, READ_BATCHES),
        row(M::POST, "/v1/subsidy-batches/{id}/lines/{seq}/reveal", format!("{batch}/lines/1/reveal"), empty(), REVEAL),
        row(M::POST, "/v1/subsidy-batches/{id}/approve", format!("{batch}/approve"), empty(), APPROVE),
        row(M::POST, "/v1/subsidy-batches/{id}/run", format!("{batch}/run"), empty(), OPERATE_BATCHES),
        row(M::POST, "/v1/subsidy-batches/{id}/pause", format!("{batch}/pause"), empty(), OPERATE_BATCHES),
        row(
            M::POST,
            "/v1/subsidy-batches/{id}/lines/{seq}/reissue",
            format!("{batch}/lines/1/reissue"),
            j(json!({"payee_name": "李四", "wallet_id": "0021000000000102"})),
            OPERATE_BATCHES,
        ),
        row(M::POST, "/v1/subsidy-batches/{id}/cancel", format!("{batch}/cancel"), empty(), OPERATE_BATCHES),
    ]
}

#[test]
fn every_route_in_the_openapi_document_is_in_the_table() {
    let document = carepay::http::openapi();
    let mut documented = BTreeSet::new();
    for (path, item) in &document.paths.paths {
        let item = serde_json::to_value(item).unwrap();
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let tabled: BTreeSet<String> =
        table(&World::default()).iter().map(|row| format!("{} {}", row.method, row.template)).collect();
    let missing: Vec<_> = documented.difference(&tabled).collect();
    let extra: Vec<_> = tabled.difference(&documented).collect();
    assert!(missing.is_empty(), "routes in the OpenAPI document without a row in the table: {missing:?}");
    assert!(extra.is_empty(), "rows naming no route of the OpenAPI document: {extra:?}");
}

/// Replace every town B id with a well-formed id of the same kind that names nothing.
fn with_missing_ids(bytes: &[u8], w: &World) -> Vec<u8> {
    let mut text = String::from_utf8(bytes.to_vec()).expect("utf-8 request");
    for id in [
        &w.town_b,
        &w.org_b,
        &w.facility_b,
        &w.terminal_b,
        &w.victim_token_b,
        &w.endpoint_b,
        &w.programme_b,
        &w.batch_b,
        &w.discrepancy_b,
    ] {
        let prefix = id.split('_').next().unwrap();
        text = text.replace(id.as_str(), &format!("{prefix}_{}", "0".repeat(32)));
    }
    text.replace(WALLET_B, MISSING_WALLET).into_bytes()
}

struct Answer {
    status: StatusCode,
    text: String,
}

impl Answer {
    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.text)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

async fn send(app: &TestApp, method: &Method, path: &str, token: &str, body: &Body) -> Answer {
    let mut request = app
        .client
        .request(method.clone(), format!("{}{path}", app.address))
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string());
    request = match body {
        Body::None => request,
        Body::Json(value) => request.json(value),
        Body::Bytes(content_type, bytes) => request.header("content-type", *content_type).body(bytes.clone()),
    };
    let response = request.send().await.unwrap();
    Answer { status: response.status(), text: response.text().await.unwrap() }
}

pub(crate) async fn world(app: &TestApp) -> World {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town_a = app.create_region(root, Some(&district), "town", "松陵街道").await;
    let town_b = app.create_region(root, Some(&district), "town", "平望镇").await;
    let org_b = app.create_organisation(root, &town_b, "乙组织").await;
    let facility_b = app.create_facility(root, &town_b, "乙助餐点", WALLET_B).await;
    let (_, key) = terminal_key_pair();
    let terminal_b = app.register_terminal(root, &facility_b, &key).await;
    let victim = app
        .post("/v1/tokens", root, json!({"role": "auditor", "region_id": town_b, "label": "victim"}))
        .await
        .expect(StatusCode::CREATED);
    let victim_token_b = victim.body["token"]["id"].as_str().unwrap().to_owned();
    let endpoint = app
        .post(
            "/v1/callback-endpoints",
            root,
            json!({"facility_id": facility_b, "url": "http://127.0.0.1:9/hook", "event_types": ["payment.succeeded"], "ed25519": true}),
        )
        .await
        .expect(StatusCode::CREATED);
    let endpoint_b = endpoint.body["endpoint"]["id"].as_str().unwrap().to_owned();

    app.sandbox
        .open_wallet("0031000000000001", "平望镇民政", 1, carepay::domain::money::Amount::parse("1000.00").unwrap())
        .unwrap();
    let programme_b = app
        .post(
            "/v1/subsidy-programmes",
            root,
            json!({"region_id": town_b, "name": "高龄津贴", "funding_wallet_id": "0031000000000001", "budget": "1000.00",
                   "per_payment_cap": "100.00", "per_period_cap": "100.00", "starts_on": "2026-01-01", "ends_on": "2026-12-31"}),
        )
        .await
        .expect(StatusCode::CREATED)
        .id();
    let clerk_b = app.issue_token(root, "subsidy_clerk", Some(&town_b)).await;
    let file =
        format!("姓名,身份证号,钱包编号,金额\n张三,{},0021000000000101,10.00\n", citizen_id("32058419450315002"));
    let upload = app
        .client
        .post(format!(
            "{}/v1/subsidy-programmes/{programme_b}/batches?period=2026-11&line_count=1&total=10.00",
            app.address
        ))
        .bearer_auth(&clerk_b)
        .header("idempotency-key", "b-1")
        .header("content-type", "text/csv")
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::CREATED);
    let batch_b = upload.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // A statement of the wallet's day with a line carepay never saw: one discrepancy.
    app.sandbox.open_wallet(WALLET_B, "乙助餐点", 1, carepay::domain::money::Amount::ZERO).unwrap();
    app.sandbox.faults().tamper_statements(StatementTamper::AddLine, 1).unwrap();
    let today = business_day(UnixMs::now());
    let statement_b =
        app.sandbox.statement_file_as_of(&today, WALLET_B, UnixMs::now().0 + 86_400_000).expect("statement").0;
    app.raw(Method::POST, "/v1/reconciliation/statements", Some(root), Some(("text/csv", statement_b.clone())))
        .await
        .expect(StatusCode::CREATED);
    let day = format!("/v1/reconciliation/days/{WALLET_B}/{today}");
    app.post(&format!("{day}/run"), root, json!({})).await.expect(StatusCode::OK);
    let open = app.get(&format!("{day}/discrepancies"), root).await.expect(StatusCode::OK);
    let discrepancy_b = open.body[0]["id"].as_str().expect("a discrepancy").to_owned();

    World {
        town_a,
        town_b,
        org_b,
        facility_b,
        terminal_b,
        victim_token_b,
        endpoint_b,
        programme_b,
        batch_b,
        discrepancy_b,
        statement_b,
    }
}

async fn every_route_answers_every_role_inside_and_outside_its_scope_as_the_table_says(app: TestApp) {
    let w = world(&app).await;
    let root = &app.root_token;
    let mut outsiders = Vec::new();
    let mut insiders = Vec::new();
    for role in ROLES {
        outsiders.push(app.issue_token(root, role, Some(&w.town_a)).await);
        insiders.push(app.issue_token(root, role, Some(&w.town_b)).await);
    }
    let town_b_ids = [&w.town_b, &w.org_b, &w.facility_b, &w.terminal_b, &w.endpoint_b, &w.programme_b, &w.batch_b];
    for row in table(&w) {
        let name = format!("{} {}", row.method, row.path);
        for (n, role) in ROLES.into_iter().enumerate() {
            let allowed = row.allowed.contains(&role);
            let blind = row.blind.contains(&role);
            let outside = send(&app, &row.method, &row.path, &outsiders[n], &row.body).await;
            if !allowed && !blind {
                assert_eq!(outside.status, StatusCode::FORBIDDEN, "{role} outside, {name}: {}", outside.text);
                assert_eq!(outside.code(), "ROLE_NOT_ALLOWED", "{role} outside, {name}: {}", outside.text);
            } else if row.outside == Outside::Filtered {
                assert!(outside.status.is_success(), "{role} outside, {name}: {}", outside.text);
                for id in town_b_ids {
                    assert!(!outside.text.contains(id.as_str()), "{role} outside, {name} shows {id}: {}", outside.text);
                }
            } else {
                // Allowed, or blind to this object: refused like a missing object.
                assert_eq!(outside.status, StatusCode::FORBIDDEN, "{role} outside, {name}: {}", outside.text);
                assert_eq!(outside.code(), row.outside_code, "{role} outside, {name}: {}", outside.text);
                let missing_path = String::from_utf8(with_missing_ids(row.path.as_bytes(), &w)).unwrap();
                let missing_body = match &row.body {
                    Body::None => Body::None,
                    Body::Json(value) => {
                        Body::Json(serde_json::from_slice(&with_missing_ids(value.to_string().as_bytes(), &w)).unwrap())
                    }
                    Body::Bytes(content_type, bytes) => Body::Bytes(content_type, with_missing_ids(bytes, &w)),
                };
                let missing = send(&app, &row.method, &missing_path, &outsiders[n], &missing_body).await;
                assert_eq!(
                    (missing.status, missing.text.as_str()),
                    (outside.status, outside.text.as_str()),
                    "{role}, {name}: a missing object and one outside the scope must be answered alike"
                );
            }

            let inside = send(&app, &row.method, &row.path, &insiders[n], &row.body).await;
            if blind {
                assert_eq!(inside.code(), "OUT_OF_SCOPE", "{role} inside, {name}: {}", inside.text);
            } else if allowed {
                assert!(
                    !matches!(inside.code().as_str(), "ROLE_NOT_ALLOWED" | "OUT_OF_SCOPE")
                        && inside.status != StatusCode::NOT_FOUND
                        && !inside.status.is_server_error(),
                    "{role} inside, {name}: {} {}",
                    inside.status,
                    inside.text
                );
            } else {
                assert_eq!(inside.code(), "ROLE_NOT_ALLOWED", "{role} inside, {name}: {}", inside.text);
            }
        }
    }
}
