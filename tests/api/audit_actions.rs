//! Disbursement and reconciliation actions of people are in the audit trail: each with who,
//! role, region, object, before/after and request id; a refused action leaves no record; a
//! citizen ID number is revealed only to the owning office, and every reveal is recorded.

use carepay::domain::money::Amount;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::disbursement::{FUNDING_WALLET, citizen_id, office, start_worker, upload, wait_for_status};
use crate::helpers::TestApp;
use crate::reconciliation::{WALLET, district, pay_three, sandbox_statement, today};

backend_tests!(
    every_disbursement_action_is_recorded_and_refused_ones_are_not,
    a_citizen_id_is_revealed_only_to_the_owning_office_and_every_reveal_is_recorded,
    every_reconciliation_action_of_a_person_is_recorded_and_refused_ones_are_not,
);

/// Every audit record, oldest first.
async fn records(app: &TestApp) -> Vec<Value> {
    let reply = app.get("/v1/audit?limit=200", &app.root_token).await.expect(StatusCode::OK);
    reply.body["items"].as_array().unwrap().clone()
}

async fn actions(app: &TestApp) -> Vec<String> {
    records(app).await.iter().map(|r| r["action"].as_str().unwrap().to_owned()).collect()
}

/// The newest record, which must be `action` about `object_id`.
async fn newest(app: &TestApp, action: &str, object_id: &str) -> Value {
    let all = records(app).await;
    let last = all.last().unwrap().clone();
    assert_eq!(last["action"], action, "{last}");
    assert_eq!(last["object_id"], object_id, "{last}");
    last
}

/// POST with an `x-request-id`, so the record can be tied to the request.
async fn post_as(app: &TestApp, path: &str, token: &str, request_id: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .client
        .post(format!("{}{path}", app.address))
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null))
}

fn batch_file(ids: &[String]) -> Vec<u8> {
    let mut text = String::from("姓名,身份证号,钱包编号,金额\n");
    for (n, id) in ids.iter().enumerate() {
        text.push_str(&format!("张三{n},{id},002100000000010{n},100.00\n"));
    }
    text.into_bytes()
}

async fn every_disbursement_action_is_recorded_and_refused_ones_are_not(app: TestApp) {
    let office = office(&app).await;
    start_worker(&app);
    let created = newest(&app, "programme.created", &office.programme).await;
    assert_eq!(created["actor_role"], "admin");
    assert_eq!(created["summary"]["budget"], "10000.00");

    let ids = [citizen_id("32058419450315002"), citizen_id("32058419520708008")];
    app.sandbox.open_wallet("0021000000000100", "张三0", 2, Amount::ZERO).unwrap();
    // The second person's wallet does not exist: that line fails and is re-issued.
    let (status, batch) = upload(&app, &office, "a-1", batch_file(&ids), 2, "200.00").await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let uploaded = newest(&app, "batch.uploaded", &batch_id).await;
    assert_eq!(uploaded["actor_role"], "subsidy_clerk");
    assert_eq!(uploaded["actor_region_id"], office.region.as_str());
    assert_eq!(uploaded["summary"]["line_count"], 2);
    assert_eq!(uploaded["summary"]["total"], "200.00");
    assert!(!uploaded.to_string().contains(&ids[0]), "no ID number in clear in the trail");

    // Refused: nothing recorded. A bad file, the uploader approving, running a draft, the
    // same upload again (it changes nothing).
    let before = records(&app).await.len();
    let (status, _) = upload(&app, &office, "a-2", b"name,citizen_id\nx,y\n".to_vec(), 1, "1.00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = upload(&app, &office, "a-1", batch_file(&ids), 2, "200.00").await;
    assert_eq!(status, StatusCode::CREATED);
    let path = |what: &str| format!("/v1/subsidy-batches/{batch_id}/{what}");
    app.post(&path("approve"), &office.clerk, json!({})).await.expect(StatusCode::FORBIDDEN);
    app.post(&path("run"), &office.clerk, json!({})).await.expect_problem(StatusCode::CONFLICT, "BATCH_STATE");
    app.post(&path("lines/2/reissue"), &office.clerk, json!({"payee_name": "李四", "wallet_id": "0021000000000102"}))
        .await
        .expect(StatusCode::CONFLICT);
    assert_eq!(records(&app).await.len(), before, "refused actions are not recorded");

    let (status, _) = post_as(&app, &path("approve"), &office.approver, "req-approve-1", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let approved = newest(&app, "batch.approved", &batch_id).await;
    assert_eq!(approved["request_id"], "req-approve-1");
    assert_eq!(approved["actor_role"], "subsidy_approver");
    assert_eq!(
        (approved["summary"]["before"].as_str(), approved["summary"]["after"].as_str()),
        (Some("draft"), Some("approved"))
    );

    app.post(&path("run"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    newest(&app, "batch.started", &batch_id).await;
    let pause = app.post(&path("pause"), &office.clerk, json!({})).await;
    if pause.status == StatusCode::OK {
        newest(&app, "batch.paused", &batch_id).await;
        app.post(&path("run"), &office.approver, json!({})).await.expect(StatusCode::OK);
        let resumed = newest(&app, "batch.resumed", &batch_id).await;
        assert_eq!(resumed["summary"]["before"], "paused");
    } else {
        // The worker finished the two lines first; a completed batch cannot be paused.
        pause.expect_problem(StatusCode::CONFLICT, "BATCH_STATE");
    }
    wait_for_status(&app, &office.clerk, &batch_id, "completed").await;
    let reissue_path = path("lines/2/reissue");
    let (status, line) = post_as(
        &app,
        &reissue_path,
        &office.clerk,
        "req-reissue-1",
        json!({"payee_name": "李四", "wallet_id": "0021000000000102"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{line}");
    let reissued = newest(&app, "line.reissued", &format!("{batch_id}/2")).await;
    assert_eq!(reissued["summary"]["payee_name"], "李*", "names are masked in the trail");
    assert_eq!(reissued["summary"]["new_line"], line["seq"]);
    assert_eq!(reissued["request_id"], "req-reissue-1");
    // A re-issued line keeps the person's sealed number, and it still opens.
    let revealed = app
        .post(&path(&format!("lines/{}/reveal", line["seq"])), &office.clerk, json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(revealed.body["citizen_id"], ids[1].as_str());

    // A second batch, cancelled as a draft.
    let (status, second) =
        upload(&app, &office, "a-3", batch_file(&[citizen_id("32058419600101003")]), 1, "100.00").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second = second["id"].as_str().unwrap().to_owned();
    app.post(&format!("/v1/subsidy-batches/{second}/cancel"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    let cancelled = newest(&app, "batch.cancelled", &second).await;
    assert_eq!(cancelled["summary"]["before"], "draft");
    assert_eq!(cancelled["summary"]["after"], "cancelled");
    app.post(&format!("/v1/subsidy-batches/{second}/cancel"), &office.clerk, json!({}))
        .await
        .expect(StatusCode::CONFLICT);
    newest(&app, "batch.cancelled", &second).await;

    let verdict = app.get("/v1/audit/verify", &app.root_token).await.expect(StatusCode::OK);
    assert_eq!(verdict.body["intact"], true);
    let _ = FUNDING_WALLET;
}

async fn a_citizen_id_is_revealed_only_to_the_owning_office_and_every_reveal_is_recorded(app: TestApp) {
    let office = office(&app).await;
    let id = citizen_id("32058419450315002");
    let (status, batch) = upload(&app, &office, "r-1", batch_file(std::slice::from_ref(&id)), 1, "100.00").await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let reveal = format!("/v1/subsidy-batches/{batch_id}/lines/1/reveal");

    // Everywhere else the number is masked.
    let lines = app.get(&format!("/v1/subsidy-batches/{batch_id}/lines"), &office.clerk).await.expect(StatusCode::OK);
    assert!(!lines.text.contains(&id));

    for token in [&office.clerk, &office.approver] {
        let response = app
            .client
            .post(format!("{}{reveal}", app.address))
            .bearer_auth(token)
            .header("x-request-id", "req-reveal")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["citizen_id"], id.as_str());
        let record = newest(&app, "citizen_id.revealed", &format!("{batch_id}/1")).await;
        assert_eq!(record["request_id"], "req-reveal");
        assert_eq!(record["summary"]["citizen_id"], format!("{}***********{}", &id[..3], &id[14..]));
        assert!(!record.to_string().contains(&id));
    }
    let revealed = actions(&app).await.iter().filter(|a| *a == "citizen_id.revealed").count();
    assert_eq!(revealed, 2);

    // Reveals per token and hour are bounded; one refused is not recorded.
    let bounded = carepay::app::App {
        reveal_quota: std::sync::Arc::new(carepay::rate_limit::WindowQuota::new(1, 3_600_000)),
        ..app.app.clone()
    };
    let clerk = app.app.authenticate(&office.clerk, None).await.unwrap();
    let batch = carepay::domain::ids::BatchId::parse(&batch_id).unwrap();
    assert_eq!(bounded.reveal_citizen_id(&clerk, &batch, 1).await.unwrap(), id);
    let refused = bounded.reveal_citizen_id(&clerk, &batch, 1).await.unwrap_err();
    assert!(matches!(refused, carepay::error::Error::RateLimited { .. }), "{refused:?}");
    assert_eq!(actions(&app).await.iter().filter(|a| *a == "citizen_id.revealed").count(), 3);

    // Refused, and not recorded: roles outside the office, another region's office, a
    // line that does not exist.
    let before = records(&app).await.len();
    let auditor = app.issue_token(&app.root_token, "auditor", Some(&office.region)).await;
    for token in [&app.root_token, &auditor] {
        app.post(&reveal, token, json!({})).await.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    }
    let other = app.create_region(&app.root_token, None, "district", "相城区").await;
    let other_clerk = app.issue_token(&app.root_token, "subsidy_clerk", Some(&other)).await;
    let out_of_scope =
        app.post(&reveal, &other_clerk, json!({})).await.expect_problem(StatusCode::FORBIDDEN, "OUT_OF_SCOPE");
    let missing =
        app.post(&format!("/v1/subsidy-batches/bat_{}/lines/1/reveal", "0".repeat(32)), &other_clerk, json!({})).await;
    assert_eq!(missing.body, out_of_scope.body, "an out-of-scope batch answers like a missing one");
    app.post(&format!("/v1/subsidy-batches/{batch_id}/lines/9/reveal"), &office.clerk, json!({}))
        .await
        .expect(StatusCode::NOT_FOUND);
    // The region and the two tokens made above are recorded; no refused reveal is.
    let after = actions(&app).await;
    assert_eq!(after.len(), before + 3, "{after:?}");
    assert_eq!(after.iter().filter(|a| *a == "citizen_id.revealed").count(), 3);
}

async fn every_reconciliation_action_of_a_person_is_recorded_and_refused_ones_are_not(app: TestApp) {
    use carepay::operator::sandbox::faults::StatementTamper;
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let auditor = app.issue_token(&app.root_token, "auditor", Some(&region)).await;
    let day_path = format!("/v1/reconciliation/days/{WALLET}/{}", today());

    app.sandbox.faults().tamper_statements(StatementTamper::ChangeAmount, 1).unwrap();
    let tampered = sandbox_statement(&app);
    let before = records(&app).await.len();
    // Refused: the auditor may not import, a corrupt file is refused whole.
    crate::reconciliation::upload(&app, &auditor, tampered.clone()).await.expect(StatusCode::FORBIDDEN);
    crate::reconciliation::upload(&app, &accountant, b"not a statement".to_vec())
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(records(&app).await.len(), before);

    let file = crate::reconciliation::upload(&app, &accountant, tampered).await.expect(StatusCode::CREATED);
    let file_id = file.body["id"].as_str().unwrap();
    let imported = newest(&app, "statement.imported", file_id).await;
    assert_eq!(imported["actor_role"], "accountant");
    assert_eq!(imported["summary"]["version"], 1);
    assert_eq!(imported["summary"]["wallet_id"], WALLET);

    let run = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    let run_id = run.body["run_id"].as_str().unwrap();
    let recorded = newest(&app, "reconciliation.run", run_id).await;
    assert_eq!(recorded["summary"]["file_id"], file_id);
    assert_eq!(recorded["summary"]["new_discrepancies"], 1);
    // Running the same file again changes nothing and records nothing.
    let count = records(&app).await.len();
    app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    app.post(&format!("{day_path}/close"), &accountant, json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "DAY_NOT_CLOSABLE");
    assert_eq!(records(&app).await.len(), count);

    let open = app.get(&format!("{day_path}/discrepancies"), &accountant).await.expect(StatusCode::OK);
    let id = open.body[0]["id"].as_str().unwrap().to_owned();
    let resolve = format!("/v1/reconciliation/discrepancies/{id}/resolve");
    app.post(&resolve, &accountant, json!({"resolution": "operator_error", "note": "工单 4711"}))
        .await
        .expect(StatusCode::OK);
    let resolved = newest(&app, "discrepancy.resolved", &id).await;
    assert_eq!(resolved["summary"]["resolution"], "operator_error");
    assert_eq!(resolved["summary"]["after"], "resolved");
    app.post(&resolve, &accountant, json!({"resolution": "other", "note": "again"}))
        .await
        .expect_problem(StatusCode::CONFLICT, "ALREADY_RESOLVED");

    app.call(Method::POST, &format!("{day_path}/close"), &accountant, Some(json!({})))
        .await
        .expect(StatusCode::NO_CONTENT);
    let closed = newest(&app, "reconciliation_day.closed", &format!("{WALLET}/{}", today())).await;
    assert_eq!(closed["actor_region_id"], region.as_str());
    let tail: Vec<String> = actions(&app).await.into_iter().rev().take(4).collect();
    assert_eq!(tail, ["reconciliation_day.closed", "discrepancy.resolved", "reconciliation.run", "statement.imported"]);
}
