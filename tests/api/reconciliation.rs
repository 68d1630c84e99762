//! Reconciliation through HTTP: real payments through the terminal client against the
//! in-process sandbox, then the sandbox's own statement of the day (tampered where a test
//! needs a discrepancy), uploaded, run, resolved and closed.

use carepay::domain::reconciliation::business_day;
use carepay::domain::time::UnixMs;
use carepay::grpc::proto::PaymentStatus;
use carepay::operator::sandbox::faults::StatementTamper;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::terminal_client::terminal;

backend_tests!(
    a_tampered_statement_is_reported_resolved_and_the_day_closed,
    corrupt_and_foreign_statements_are_refused_whole,
    auditors_read_and_other_regions_see_nothing,
    the_operator_statement_is_fetched_once_and_a_day_not_ended_is_retried,
    the_command_line_imports_and_runs_a_file,
    an_adjustment_posts_a_balanced_ledger_entry,
);

pub(crate) const WALLET: &str = "0021000000000001";
const MS_PER_DAY: i64 = 86_400_000;

/// Today in Asia/Shanghai, the day the payments settle on.
pub(crate) fn today() -> String {
    business_day(UnixMs::now())
}

/// The sandbox's statement of today, as it will serve it once the day has ended.
pub(crate) fn sandbox_statement(app: &TestApp) -> Vec<u8> {
    let tomorrow_ms = UnixMs::now().0 + MS_PER_DAY;
    app.sandbox.statement_file_as_of(&today(), WALLET, tomorrow_ms).expect("statement").0
}

pub(crate) async fn pay_three(app: &TestApp) -> String {
    let till = terminal(app, WALLET).await;
    for (request, amount) in [("r-1", "12.50"), ("r-2", "30.00"), ("r-3", "8.00")] {
        let payment = till.pay(request, amount, "013412345678900000").await.unwrap();
        assert_eq!(payment.status, PaymentStatus::Succeeded as i32);
    }
    till.facility_id.clone()
}

pub(crate) async fn district(app: &TestApp) -> String {
    app.get("/v1/regions", &app.root_token).await.body["items"][0]["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn upload(app: &TestApp, token: &str, bytes: Vec<u8>) -> crate::helpers::Reply {
    app.raw(Method::POST, "/v1/reconciliation/statements", Some(token), Some(("text/csv", bytes))).await
}

async fn count_events(app: &TestApp, event_type: &str) -> i64 {
    let pool = app.db.raw_pool().await;
    sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM callback_events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&pool)
        .await
        .unwrap()
}

async fn a_tampered_statement_is_reported_resolved_and_the_day_closed(app: TestApp) {
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let day_path = format!("/v1/reconciliation/days/{WALLET}/{}", today());

    app.sandbox.faults().tamper_statements(StatementTamper::ChangeAmount, 1).unwrap();
    let tampered = sandbox_statement(&app);
    let file = upload(&app, &accountant, tampered.clone()).await.expect(StatusCode::CREATED);
    assert_eq!(file.body["version"], 1);
    assert_eq!(file.body["line_count"], 3);

    let run = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    let categories = run.body["categories"].as_array().unwrap();
    let count = |name: &str| {
        categories.iter().find(|c| c["category"] == name).map(|c| c["count"].as_u64().unwrap()).unwrap_or(0)
    };
    assert_eq!(count("matched"), 2, "{}", run.text);
    assert_eq!(count("amount_mismatch"), 1, "{}", run.text);
    assert_eq!(run.body["carepay_net"], "50.50");
    assert_eq!(run.body["statement_net"], "50.51");
    assert_eq!(run.body["day_status"], "open");

    // Running the same file again is the same run and books nothing twice.
    let again = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    assert_eq!(again.body["run_id"], run.body["run_id"]);
    assert_eq!(count_events(&app, "reconciliation.completed").await, 1);
    assert_eq!(count_events(&app, "reconciliation.discrepancy_found").await, 1);

    let lines = app.get(&format!("{day_path}/lines?limit=10"), &accountant).await.expect(StatusCode::OK);
    assert_eq!(lines.body["items"].as_array().unwrap().len(), 3);
    let csv = app.get(&format!("{day_path}/lines?format=csv"), &accountant).await.expect(StatusCode::OK);
    assert!(csv.content_type.starts_with("text/csv"));
    assert_eq!(csv.text.lines().count(), 4, "{}", csv.text);
    assert!(csv.text.contains("amount_mismatch,amount,"), "{}", csv.text);

    let open = app.get(&format!("{day_path}/discrepancies"), &accountant).await.expect(StatusCode::OK);
    let open = open.body.as_array().unwrap().clone();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["category"], "amount_mismatch");
    assert_eq!(open[0]["fields"], json!(["amount"]));

    app.post(&format!("{day_path}/close"), &accountant, json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "DAY_NOT_CLOSABLE");

    let id = open[0]["id"].as_str().unwrap();
    let resolved = app
        .post(
            &format!("/v1/reconciliation/discrepancies/{id}/resolve"),
            &accountant,
            json!({"resolution": "operator_error", "note": "operator error, ticket #4711"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(resolved.body["status"], "resolved");
    assert!(resolved.body["resolved_by"].as_str().is_some_and(|by| by.starts_with("tok_")));
    app.post(
        &format!("/v1/reconciliation/discrepancies/{id}/resolve"),
        &accountant,
        json!({"resolution": "other", "note": "again"}),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "ALREADY_RESOLVED");

    app.post(&format!("{day_path}/close"), &accountant, json!({})).await.expect(StatusCode::NO_CONTENT);
    let day = app.get(&day_path, &accountant).await.expect(StatusCode::OK);
    assert_eq!(day.body["day_status"], "closed");

    // The same file again is the same version; a corrected file is version 2, kept but a
    // closed day cannot be run again.
    let same = upload(&app, &accountant, tampered).await.expect(StatusCode::CREATED);
    assert_eq!(same.body["id"], file.body["id"]);
    let corrected = upload(&app, &accountant, sandbox_statement(&app)).await.expect(StatusCode::CREATED);
    assert_eq!(corrected.body["version"], 2);
    app.post(&format!("{day_path}/run"), &accountant, json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "DAY_CLOSED");
}

async fn corrupt_and_foreign_statements_are_refused_whole(app: TestApp) {
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let good = sandbox_statement(&app);

    let truncated = good[..good.len() - 3].to_vec();
    let refused = upload(&app, &accountant, truncated).await;
    assert_eq!(refused.code(), "STATEMENT_CORRUPT", "{}", refused.text);
    assert!(refused.text.contains("line 6"), "the trailer line is named: {}", refused.text);

    app.sandbox.faults().tamper_statements(StatementTamper::CorruptTrailer, 1).unwrap();
    let refused = upload(&app, &accountant, sandbox_statement(&app)).await;
    assert_eq!(refused.code(), "STATEMENT_CORRUPT", "{}", refused.text);

    let not_csv = app
        .raw(Method::POST, "/v1/reconciliation/statements", Some(&accountant), Some(("application/json", good.clone())))
        .await;
    assert_eq!(not_csv.code(), "UNSUPPORTED_MEDIA_TYPE", "{}", not_csv.text);

    // Nothing was kept: the day has no run and no statement.
    let run = app.post(&format!("/v1/reconciliation/days/{WALLET}/{}/run", today()), &accountant, json!({})).await;
    assert_eq!(run.status, StatusCode::NOT_FOUND, "{}", run.text);

    // A gzipped file is the same file.
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&good).unwrap();
    let gzipped = app
        .raw(
            Method::POST,
            "/v1/reconciliation/statements",
            Some(&accountant),
            Some(("application/gzip", gz.finish().unwrap())),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(gzipped.body["line_count"], 3);
}

async fn auditors_read_and_other_regions_see_nothing(app: TestApp) {
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let auditor = app.issue_token(&app.root_token, "auditor", Some(&region)).await;
    let elsewhere = app.create_region(&app.root_token, None, "district", "昆山市").await;
    let stranger = app.issue_token(&app.root_token, "accountant", Some(&elsewhere)).await;
    let day_path = format!("/v1/reconciliation/days/{WALLET}/{}", today());

    let statement = sandbox_statement(&app);
    upload(&app, &auditor, statement.clone()).await.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    let foreign = upload(&app, &stranger, statement.clone()).await;
    let missing = app.get(&format!("/v1/reconciliation/days/0021999999999999/{}", today()), &stranger).await;
    assert_eq!(foreign.status, missing.status, "out of scope answers like missing");
    assert_eq!(foreign.code(), missing.code());

    upload(&app, &accountant, statement).await.expect(StatusCode::CREATED);
    let run = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    let categories = run.body["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 1, "all matched: {}", run.text);
    assert_eq!(categories[0]["category"], "matched");

    app.get(&day_path, &auditor).await.expect(StatusCode::OK);
    app.post(&format!("{day_path}/close"), &auditor, json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    let hidden = app.get(&day_path, &stranger).await;
    assert_eq!(hidden.status, missing.status);
    app.post(&format!("{day_path}/close"), &accountant, json!({})).await.expect(StatusCode::NO_CONTENT);
}

async fn the_operator_statement_is_fetched_once_and_a_day_not_ended_is_retried(app: TestApp) {
    use carepay::reconciliation::fetch::{FetchSettings, Fetched};
    pay_three(&app).await;
    let now = UnixMs::now();
    let fetched = app.app.fetch_statement(WALLET, &today(), now).await.unwrap();
    assert_eq!(fetched, Fetched::NotReady, "the sandbox has not generated today's statement");

    // Yesterday has ended: planned and leased once, fetched with its digest checked, run.
    let yesterday = business_day(UnixMs(now.0 - MS_PER_DAY));
    assert_eq!(app.app.store.plan_statement_fetches(&yesterday, now).await.unwrap(), 1);
    assert_eq!(app.app.store.plan_statement_fetches(&yesterday, now).await.unwrap(), 0);
    let first = app.app.store.claim_statement_fetches("a", now, 60_000, 10).await.unwrap();
    let second = app.app.store.claim_statement_fetches("b", now, 60_000, 10).await.unwrap();
    assert_eq!((first.len(), second.len()), (1, 0), "two instances never fetch the same statement");
    app.app.store.finish_statement_fetch(&first[0], "a", Some(now), Some("test")).await.unwrap();

    let settings = FetchSettings { at_minute_of_day: 0, ..FetchSettings::default() };
    assert_eq!(app.app.fetch_due_statements("a", &settings, now).await.unwrap(), 1);
    let run = app.app.store.latest_run(WALLET, &yesterday).await.unwrap().expect("yesterday was run");
    assert_eq!(run.started_by, "scheduler");
    assert_eq!(app.app.fetch_due_statements("a", &settings, now).await.unwrap(), 0, "done once");
    // carepay's own fetch and run are not a person's actions: not in the audit trail.
    let audit = app.get("/v1/audit?limit=200", &app.root_token).await.expect(StatusCode::OK);
    assert!(!audit.text.contains("statement.imported") && !audit.text.contains("reconciliation.run"), "{}", audit.text);
}

async fn the_command_line_imports_and_runs_a_file(app: TestApp) {
    pay_three(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statement.csv");
    std::fs::write(&path, sandbox_statement(&app)).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_carepay"))
        .env_remove("DATABASE_URL")
        .args(["reconcile", "import", "--database-url", &app.db.url])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = String::from_utf8(output.stdout).unwrap();
    assert!(report.contains("version 1") && report.contains("matched 3"), "{report}");
    let run = app.app.store.latest_run(WALLET, &today()).await.unwrap().expect("run");
    assert_eq!(run.started_by, "cli");
    // A person at the command line: both steps are in the audit trail, with the --actor name.
    let audit = app.get("/v1/audit?limit=200", &app.root_token).await.expect(StatusCode::OK);
    let items = audit.body["items"].as_array().unwrap();
    let tail: Vec<_> = items.iter().rev().take(2).map(|r| (r["action"].as_str(), r["actor"].as_str())).collect();
    assert_eq!(
        tail,
        [(Some("reconciliation.run"), Some("command-line")), (Some("statement.imported"), Some("command-line"))]
    );
    assert_eq!(items.last().unwrap()["summary"]["by"], "cli");
    assert_eq!(items.last().unwrap()["object_id"], run.id.as_str());
}

async fn an_adjustment_posts_a_balanced_ledger_entry(app: TestApp) {
    use carepay::domain::ledger::AccountCode;
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let day_path = format!("/v1/reconciliation/days/{WALLET}/{}", today());
    let wallet = AccountCode::parse(&format!("wallet:{WALLET}")).unwrap();
    let before = app.app.store.account_totals(&wallet).await.unwrap().unwrap().balance_fen();

    app.sandbox.faults().tamper_statements(StatementTamper::ChangeAmount, 1).unwrap();
    upload(&app, &accountant, sandbox_statement(&app)).await.expect(StatusCode::CREATED);
    app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    let open = app.get(&format!("{day_path}/discrepancies"), &accountant).await.expect(StatusCode::OK);
    let id = open.body[0]["id"].as_str().unwrap().to_owned();

    app.post(
        &format!("/v1/reconciliation/discrepancies/{id}/resolve"),
        &accountant,
        json!({"resolution": "adjusted", "note": "operator credited 0.01 more"}),
    )
    .await
    .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_ADJUSTMENT");
    let resolved = app
        .post(
            &format!("/v1/reconciliation/discrepancies/{id}/resolve"),
            &accountant,
            json!({"resolution": "adjusted", "note": "operator credited 0.01 more", "adjustment": "0.01"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(resolved.body["adjustment"], "0.01");
    let after = app.app.store.account_totals(&wallet).await.unwrap().unwrap().balance_fen();
    assert_eq!(after - before, 1, "the wallet's ledger account follows the operator");
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
    let actions = app.app.store.reconciliation_actions(WALLET, &today()).await.unwrap();
    let kinds: Vec<&str> = actions.iter().map(|action| action.0.as_str()).collect();
    assert_eq!(kinds, ["import", "run", "resolve"]);
}
