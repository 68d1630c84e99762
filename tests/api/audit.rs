//! The audit trail: every directory and token change is recorded with who, when and which
//! request; auditors see their scope; any edit of a stored record is found and named.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{TestApp, terminal_key_pair};

backend_tests!(
    every_change_is_recorded_with_who_and_which_request,
    editing_or_removing_a_record_is_detected_and_named,
    auditors_see_only_their_scope_and_other_roles_see_nothing,
    an_export_holds_every_record_in_scope_with_its_hashes,
);

async fn actions(app: &TestApp, token: &str) -> Vec<String> {
    let reply = app.get("/v1/audit?limit=200", token).await.expect(StatusCode::OK);
    reply.body["items"].as_array().unwrap().iter().map(|item| item["action"].as_str().unwrap().to_owned()).collect()
}

async fn every_change_is_recorded_with_who_and_which_request(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let facility = app.create_facility(root, &district, "敬老院", "0021000000000001").await;
    let (_, key) = terminal_key_pair();
    let terminal = app.register_terminal(root, &facility, &key).await;
    let response = app
        .client
        .post(format!("{}/v1/terminals/{terminal}/suspend", app.address))
        .bearer_auth(root)
        .header("x-request-id", "req-suspend-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, new_key) = terminal_key_pair();
    app.post(&format!("/v1/terminals/{terminal}/rotate-key"), root, json!({"public_key": new_key}))
        .await
        .expect(StatusCode::OK);
    let issued = app
        .post("/v1/tokens", root, json!({"role": "auditor", "region_id": district, "label": "审计"}))
        .await
        .expect(StatusCode::CREATED);
    let token_id = issued.body["token"]["id"].as_str().unwrap().to_owned();
    app.call(Method::DELETE, &format!("/v1/tokens/{token_id}"), root, None).await.expect(StatusCode::OK);
    // A refused request records nothing.
    app.post("/v1/regions", root, json!({"level": "town", "name": "无父镇"}))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);

    let listed = app.get("/v1/audit?limit=200", root).await.expect(StatusCode::OK);
    let items = listed.body["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|item| item["action"].as_str().unwrap()).collect();
    // The first record is the test's own root token, issued from the command line path.
    assert_eq!(
        actions,
        vec![
            "token.issued",
            "region.created",
            "facility.created",
            "terminal.registered",
            "terminal.suspended",
            "terminal.key_rotated",
            "token.issued",
            "token.revoked"
        ]
    );
    assert_eq!(items[0]["actor"], "command-line");
    let suspended = &items[4];
    assert_eq!(suspended["object_id"], terminal.as_str());
    assert_eq!(suspended["request_id"], "req-suspend-1");
    assert_eq!(suspended["actor_role"], "admin");
    assert!(suspended["actor"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(suspended["summary"], json!({"before": "active", "after": "suspended"}));
    assert!(suspended["at"].as_str().unwrap().ends_with("+08:00"));
    for pair in items.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "each record carries its predecessor's hash");
    }
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK);
    assert_eq!(verdict.body["intact"], true);
}

async fn editing_or_removing_a_record_is_detected_and_named(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    for n in 0..3 {
        app.create_facility(root, &district, &format!("助餐点{n}"), &format!("002100000000000{n}")).await;
    }
    let pool = app.db.raw_pool().await;
    let original: String =
        sqlx::query_scalar("SELECT summary FROM audit_log WHERE seq = 3").fetch_one(&pool).await.unwrap();
    sqlx::query("UPDATE audit_log SET summary = '{\"name\":\"改过\"}' WHERE seq = 3").execute(&pool).await.unwrap();
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK);
    assert_eq!(verdict.body["intact"], false);
    assert_eq!(verdict.body["broken_at_seq"], 3);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["audit", "verify", "--database-url", &app.db.url])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("broken at record 3"), "{output:?}");

    // Put it back: intact again. Then remove the newest record instead: detected too.
    sqlx::query("UPDATE audit_log SET summary = $1 WHERE seq = 3").bind(original).execute(&pool).await.unwrap();
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK);
    assert_eq!(verdict.body["intact"], true, "{}", verdict.text);
    sqlx::query("DELETE FROM audit_log WHERE seq = 5").execute(&pool).await.unwrap();
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK);
    assert_eq!(verdict.body["intact"], false, "{}", verdict.text);
    assert_eq!(verdict.body["reason"], "the newest records were removed");
}

async fn auditors_see_only_their_scope_and_other_roles_see_nothing(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town_a = app.create_region(root, Some(&district), "town", "松陵街道").await;
    let town_b = app.create_region(root, Some(&district), "town", "平望镇").await;
    app.create_facility(root, &town_a, "甲", "0021000000000001").await;
    app.create_facility(root, &town_b, "乙", "0021000000000002").await;
    let auditor_a = app.issue_token(root, "auditor", Some(&town_a)).await;
    let seen = actions(&app, &auditor_a).await;
    assert_eq!(seen, vec!["region.created", "facility.created", "token.issued"], "only town A's records");
    for role in ["facility_manager", "subsidy_clerk", "subsidy_approver", "accountant"] {
        let token = app.issue_token(root, role, Some(&town_a)).await;
        app.get("/v1/audit", &token).await.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
        app.get("/v1/audit/verify", &token).await.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
        app.get("/v1/audit/export", &token).await.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    }
}

/// More records than one page, exported as CSV and as JSON lines: the same records as the
/// listing, in order, each with the hash of its predecessor, and only those in scope.
async fn an_export_holds_every_record_in_scope_with_its_hashes(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town_a = app.create_region(root, Some(&district), "town", "松陵街道").await;
    let town_b = app.create_region(root, Some(&district), "town", "平望镇").await;
    app.create_facility(root, &town_b, "乙, \"平望\"", "0021000000000002").await;
    for n in 0..230 {
        app.create_facility(root, &town_a, &format!("甲{n}"), &format!("0022000000{n:06}")).await;
    }
    let auditor_a = app.issue_token(root, "auditor", Some(&town_a)).await;

    let csv = app.raw(Method::GET, "/v1/audit/export", Some(&auditor_a), None).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.content_type.starts_with("text/csv"), "{}", csv.content_type);
    let mut reader = csv::Reader::from_reader(csv.text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "seq");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    // town A: the region, 230 facilities, the token; nothing of town B.
    assert_eq!(rows.len(), 232, "every record in scope, across pages");
    assert!(rows.iter().all(|row| !row[7].is_empty()));
    assert!(!csv.text.contains("平望"), "nothing outside the scope");
    let seqs: Vec<i64> = rows.iter().map(|row| row[0].parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "in sequence order");

    let ndjson = app.raw(Method::GET, "/v1/audit/export?format=ndjson", Some(&auditor_a), None).await;
    assert_eq!(ndjson.status, StatusCode::OK);
    assert_eq!(ndjson.content_type, "application/x-ndjson");
    let records: Vec<serde_json::Value> = ndjson.text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(records.len(), rows.len());
    let listed = app.get("/v1/audit?limit=200", &auditor_a).await.expect(StatusCode::OK);
    for (listed, exported) in listed.body["items"].as_array().unwrap().iter().zip(&records) {
        assert_eq!(listed, exported, "an exported record is the listed one");
    }
    for (row, record) in rows.iter().zip(&records) {
        assert_eq!(row[11], record["hash"], "the CSV carries the same hash");
        assert_eq!(row[10], record["prev_hash"]);
    }

    // Continue after a record, and a format that does not exist.
    let after = seqs[100];
    let rest = app
        .raw(Method::GET, &format!("/v1/audit/export?format=ndjson&after_seq={after}"), Some(&auditor_a), None)
        .await;
    assert_eq!(rest.text.lines().count(), 131);
    app.get("/v1/audit/export?format=xml", &auditor_a).await.expect_problem(StatusCode::BAD_REQUEST, "INVALID_QUERY");
}
