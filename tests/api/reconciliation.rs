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
    concurrent_runs_of_many_wallets_book_the_shared_operator_accounts_without_failing,
    a_tampered_statement_is_reported_resolved_and_the_day_closed,
    corrupt_and_foreign_statements_are_refused_whole,
    auditors_read_and_other_regions_see_nothing,
    the_operator_statement_is_fetched_once_and_a_day_not_ended_is_retried,
    the_command_line_imports_and_runs_a_file,
    an_adjustment_posts_a_balanced_ledger_entry,
    a_large_statement_is_kept_in_parts_and_its_result_pages_across_chunks,
    files_and_results_kept_before_migration_0009_still_read_the_same,
    carepay_s_records_read_alike_by_query_by_one_copy_and_by_two_halves,
    operator_entries_book_on_a_wallet_without_payments_and_ledger_balances_stay_exact,
    a_large_negative_adjustment_resolving_a_discrepancy_books_and_balances,
    a_gb18030_statement_with_a_byte_order_mark_is_refused_by_name,
    a_statement_whose_lines_are_of_another_day_than_its_header_is_refused_at_the_first,
    a_statement_of_another_facilitys_wallet_is_refused_with_its_reason,
    a_late_payment_is_one_timing_difference_when_today_runs_first,
    a_late_payment_is_one_timing_difference_when_tomorrow_runs_first,
    a_fee_total_counting_reversed_lines_is_taken_with_a_warning,
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
    // Every line is in one category, with the statement's signed amount: they add up to its net.
    let category_fen: i64 = categories
        .iter()
        .map(|c| carepay::domain::statement::parse_signed_yuan_fen(c["amount"].as_str().unwrap()).unwrap())
        .sum();
    assert_eq!(category_fen, 5_051, "{}", run.text);
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

    // The same file again is the same version; a closed day never changes again: a
    // corrected file is refused and nothing of it is kept, and the day cannot be run again.
    let same = upload(&app, &accountant, tampered).await.expect(StatusCode::CREATED);
    assert_eq!(same.body["id"], file.body["id"]);
    let corrected = upload(&app, &accountant, sandbox_statement(&app)).await;
    corrected.expect_problem(StatusCode::CONFLICT, "DAY_CLOSED");
    let named = format!("/v1/reconciliation/statements?wallet_id={WALLET}");
    app.raw(Method::POST, &named, Some(&accountant), Some(("text/csv", sandbox_statement(&app))))
        .await
        .expect_problem(StatusCode::CONFLICT, "DAY_CLOSED");
    assert_eq!(count_rows(&app, "statement_files").await, 1);
    assert_eq!(count_rows(&app, "statement_file_parts").await, 1);
    let actions = app.app.store.reconciliation_actions(WALLET, &today()).await.unwrap();
    assert_eq!(actions.iter().filter(|action| action.0 == "import").count(), 1);
    // Running it again is the run it was closed with.
    let again = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    assert_eq!((&again.body["run_id"], &again.body["file_id"]), (&run.body["run_id"], &file.body["id"]));
    assert_eq!(again.body["day_status"], "closed");
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
    // A file of a wallet out of scope is answered as one of a wallet that does not exist.
    let foreign = upload(&app, &stranger, statement.clone()).await;
    let text = String::from_utf8(statement.clone()).unwrap();
    let nobodys = upload(&app, &stranger, text.replacen(WALLET, "0021999999999999", 1).into_bytes()).await;
    assert_eq!((foreign.status, foreign.text.as_str()), (nobodys.status, nobodys.text.as_str()));
    assert_eq!(foreign.code(), "STATEMENT_WALLET_OUT_OF_SCOPE");
    let missing = app.get(&format!("/v1/reconciliation/days/0021999999999999/{}", today()), &stranger).await;

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
        .env("CAREPAY_SECRET_KEY", crate::helpers::TEST_SECRET_KEYS)
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

/// An account's balance in fen; 0 for an account never opened.
pub(crate) async fn balance_fen(app: &TestApp, code: &str) -> i64 {
    let code = carepay::domain::ledger::AccountCode::parse(code).unwrap();
    app.app.store.account_totals(&code).await.unwrap().map(|totals| totals.balance_fen()).unwrap_or(0)
}

/// The facility wallet as carepay mirrors it: what carepay moved plus what the operator moved.
pub(crate) async fn wallet_total_fen(app: &TestApp, wallet: &str) -> i64 {
    balance_fen(app, &format!("wallet:{wallet}")).await + balance_fen(app, &format!("wallet:{wallet}:operator")).await
}

/// A statement of `date` for `wallet` with these lines, trailer worked out.
pub(crate) fn statement_of(wallet: &str, date: &str, lines: &[carepay::domain::statement::StatementLine]) -> Vec<u8> {
    let header = carepay::domain::statement::StatementHeader {
        wallet_id: wallet.to_owned(),
        date: date.to_owned(),
        generated_at: format!("{date}T23:59:59+08:00"),
    };
    carepay::domain::statement::write_statement(&header, lines).unwrap()
}

/// A line the operator booked itself (no merchant number): a FEE or a signed ADJUSTMENT.
pub(crate) fn operator_line(
    settled_at: &str,
    operator_ref: &str,
    kind: carepay::domain::statement::EntryKind,
    amount_fen: i64,
) -> carepay::domain::statement::StatementLine {
    carepay::domain::statement::StatementLine {
        settled_at: settled_at.to_owned(),
        operator_ref: operator_ref.to_owned(),
        out_no: String::new(),
        kind,
        status: carepay::domain::statement::EntryStatus::Success,
        amount_fen,
        fee_fen: 0,
        counterparty: String::new(),
        memo: String::from("运营机构"),
    }
}

async fn operator_entries_book_on_a_wallet_without_payments_and_ledger_balances_stay_exact(app: TestApp) {
    use carepay::domain::statement::EntryKind;
    let region = app.create_region(&app.root_token, None, "district", "吴江区").await;
    app.create_facility(&app.root_token, &region, "无收款助餐点", WALLET).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let day = today();
    // No payment at all that day: a monthly fee and a large negative adjustment.
    let statement = statement_of(
        WALLET,
        &day,
        &[
            operator_line(&format!("{day} 00:10:00"), "OPFEE0000000001", EntryKind::Fee, 61),
            operator_line(&format!("{day} 09:00:00"), "OPADJ0000000001", EntryKind::Adjustment, -500_000),
        ],
    );
    upload(&app, &accountant, statement).await.expect(StatusCode::CREATED);
    let day_path = format!("/v1/reconciliation/days/{WALLET}/{day}");
    let run = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    // Signed like the nets: the fee is money out, as is the negative adjustment.
    assert_eq!(run.body["categories"], json!([{"category": "operator_entry", "count": 2, "amount": "-5000.61"}]));
    assert_eq!(run.body["statement_net"], "-5000.61");
    assert_eq!(run.body["discrepancies_found"], 0);

    // Every fen accounted for: the wallet's operator side owes what the operator took.
    assert_eq!(balance_fen(&app, &format!("wallet:{WALLET}:operator")).await, -500_061);
    assert_eq!(balance_fen(&app, &format!("wallet:{WALLET}")).await, 0);
    assert_eq!(balance_fen(&app, "operator:fees").await, 61);
    assert_eq!(balance_fen(&app, "operator:adjustments").await, 500_000);
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);

    // Run again: the same run, nothing booked twice; and the day closes.
    let again = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    assert_eq!(again.body["run_id"], run.body["run_id"]);
    assert_eq!(wallet_total_fen(&app, WALLET).await, -500_061);
    app.post(&format!("{day_path}/close"), &accountant, json!({})).await.expect(StatusCode::NO_CONTENT);
}

/// Runs of several wallets at once, each booking a fee and an adjustment into the shared
/// operator accounts, half of them adjustment first: every run answers 200 and the shared
/// accounts hold the sum of them all.
async fn concurrent_runs_of_many_wallets_book_the_shared_operator_accounts_without_failing(app: TestApp) {
    use carepay::domain::statement::EntryKind;
    const WALLETS: usize = 8;
    let region = app.create_region(&app.root_token, None, "district", "吴江区").await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let day = today();
    let mut paths = Vec::new();
    for n in 0..WALLETS {
        let wallet = format!("00210000000007{n:02}");
        app.create_facility(&app.root_token, &region, &format!("助餐点{n}"), &wallet).await;
        let (fee_at, adjustment_at) = if n % 2 == 0 { ("00:10:00", "09:00:00") } else { ("09:00:00", "00:10:00") };
        let lines = [
            operator_line(&format!("{day} {fee_at}"), &format!("OPFEE{n:010}"), EntryKind::Fee, 10 + n as i64),
            operator_line(&format!("{day} {adjustment_at}"), &format!("OPADJ{n:010}"), EntryKind::Adjustment, 1_000),
        ];
        upload(&app, &accountant, statement_of(&wallet, &day, &lines)).await.expect(StatusCode::CREATED);
        paths.push(format!("/v1/reconciliation/days/{wallet}/{day}/run"));
    }
    let runs = paths.iter().map(|path| app.post(path, &accountant, json!({})));
    for run in futures_util::future::join_all(runs).await {
        run.expect(StatusCode::OK);
    }
    let fees: i64 = (0..WALLETS as i64).map(|n| 10 + n).sum();
    assert_eq!(balance_fen(&app, "operator:fees").await, fees);
    assert_eq!(balance_fen(&app, "operator:adjustments").await, -1_000 * WALLETS as i64);
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
}

async fn a_large_negative_adjustment_resolving_a_discrepancy_books_and_balances(app: TestApp) {
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let day_path = format!("/v1/reconciliation/days/{WALLET}/{}", today());
    assert_eq!(wallet_total_fen(&app, WALLET).await, 5_050);

    app.sandbox.faults().tamper_statements(StatementTamper::ChangeAmount, 1).unwrap();
    upload(&app, &accountant, sandbox_statement(&app)).await.expect(StatusCode::CREATED);
    app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    let open = app.get(&format!("{day_path}/discrepancies"), &accountant).await.expect(StatusCode::OK);
    let id = open.body[0]["id"].as_str().unwrap().to_owned();
    // Beyond what any amount may be: refused by the money rule, not a failure.
    let refused = app
        .post(
            &format!("/v1/reconciliation/discrepancies/{id}/resolve"),
            &accountant,
            json!({"resolution": "adjusted", "note": "typo", "adjustment": "-999999999999999.99"}),
        )
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "AMOUNT_TOO_LARGE");
    assert_eq!(refused.body["field"], "adjustment", "{}", refused.text);
    // Far more than the wallet ever received through carepay.
    let resolved = app
        .post(
            &format!("/v1/reconciliation/discrepancies/{id}/resolve"),
            &accountant,
            json!({"resolution": "adjusted", "note": "operator clawed back a prior month", "adjustment": "-9999.99"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(resolved.body["adjustment"], "-9999.99");
    assert_eq!(wallet_total_fen(&app, WALLET).await, 5_050 - 999_999);
    assert_eq!(balance_fen(&app, &format!("wallet:{WALLET}")).await, 5_050, "carepay's own side is untouched");
    assert_eq!(balance_fen(&app, "reconciliation:adjustments").await, 999_999);
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
}

async fn an_adjustment_posts_a_balanced_ledger_entry(app: TestApp) {
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let day_path = format!("/v1/reconciliation/days/{WALLET}/{}", today());
    let before = wallet_total_fen(&app, WALLET).await;

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
    let after = wallet_total_fen(&app, WALLET).await;
    assert_eq!(after - before, 1, "the wallet's ledger accounts follow the operator");
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
    let actions = app.app.store.reconciliation_actions(WALLET, &today()).await.unwrap();
    let kinds: Vec<&str> = actions.iter().map(|action| action.0.as_str()).collect();
    assert_eq!(kinds, ["import", "run", "resolve"]);
}

/// `bytes` (a statement) with `count` more lines carepay never saw, trailer recomputed.
fn with_strangers(bytes: &[u8], count: usize) -> Vec<u8> {
    use carepay::domain::statement::{EntryKind, EntryStatus, StatementLine, open_statement, write_statement};
    let mut reader = open_statement(bytes).unwrap();
    let mut lines: Vec<StatementLine> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    let header = reader.header().clone();
    for i in 0..count {
        lines.push(StatementLine {
            settled_at: format!("{} 12:00:00", header.date),
            operator_ref: format!("OPSTRANGER{i:08}"),
            out_no: format!("X-{i:08}"),
            kind: EntryKind::Payment,
            status: EntryStatus::Success,
            amount_fen: 100 + i as i64,
            fee_fen: 0,
            counterparty: String::from("0021****5678"),
            memo: String::from(if i % 7 == 0 { "午餐, \"套餐\"\n加汤" } else { "午餐" }),
        });
    }
    write_statement(&header, &lines).unwrap()
}

async fn count_rows(app: &TestApp, table: &str) -> i64 {
    let pool = app.db.raw_pool().await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}")))
        .fetch_one(&pool)
        .await
        .unwrap()
}

/// Every line of a day's result through the paged JSON route, `limit` at a time.
async fn all_line_pages(app: &TestApp, token: &str, day_path: &str, limit: u32) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut after = 0;
    loop {
        let page =
            app.get(&format!("{day_path}/lines?after={after}&limit={limit}"), token).await.expect(StatusCode::OK);
        items.extend(page.body["items"].as_array().unwrap().iter().cloned());
        match page.body["next_after"].as_i64() {
            Some(next) => after = next,
            None => return items,
        }
    }
}

async fn a_large_statement_is_kept_in_parts_and_its_result_pages_across_chunks(app: TestApp) {
    const STRANGERS: usize = 12_000;
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let day_path = format!("/v1/reconciliation/days/{WALLET}/{}", today());
    let statement = with_strangers(&sandbox_statement(&app), STRANGERS);
    assert!(statement.len() > 1024 * 1024, "more than one part: {} bytes", statement.len());

    let file = upload(&app, &accountant, statement).await.expect(StatusCode::CREATED);
    assert_eq!(file.body["line_count"], 3 + STRANGERS as u64);
    assert!(count_rows(&app, "statement_file_parts").await >= 2);
    // The run reads the kept file back from its parts.
    let run = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    let categories = run.body["categories"].as_array().unwrap();
    let count = |name: &str| categories.iter().find(|c| c["category"] == name).map(|c| c["count"].as_u64().unwrap());
    assert_eq!(count("matched"), Some(3), "{}", run.text);
    assert_eq!(count("missing_in_carepay"), Some(STRANGERS as u64), "{}", run.text);
    let total = 3 + STRANGERS;
    assert_eq!(count_rows(&app, "reconciliation_result_chunks").await, total.div_ceil(4096) as i64);
    assert_eq!(count_rows(&app, "reconciliation_lines").await, 0, "no line is a row of its own any more");

    let items = all_line_pages(&app, &accountant, &day_path, 200).await;
    let seqs: Vec<i64> = items.iter().map(|item| item["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>());
    let strangers = items.iter().filter(|item| item["category"] == "missing_in_carepay").count();
    assert_eq!(strangers, STRANGERS);
    let stranger = items.iter().find(|item| item["out_no"] == "X-00000007").unwrap();
    assert_eq!(stranger["operator_ref"], "OPSTRANGER00000007");
    assert_eq!(stranger["statement_amount"], "1.07");
    assert!(stranger["carepay_kind"].is_null());

    // A page across the boundary of two chunks.
    let page = app.get(&format!("{day_path}/lines?after=4090&limit=10"), &accountant).await.expect(StatusCode::OK);
    let seqs: Vec<i64> = page.body["items"].as_array().unwrap().iter().map(|i| i["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (4091..=4100).collect::<Vec<_>>());
    assert_eq!(page.body["items"][0], items[4090]);

    let csv = app.get(&format!("{day_path}/lines?format=csv"), &accountant).await.expect(StatusCode::OK);
    assert_eq!(csv.text.lines().count(), total + 1);
}

async fn files_and_results_kept_before_migration_0009_still_read_the_same(app: TestApp) {
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let day_path = format!("/v1/reconciliation/days/{WALLET}/{}", today());
    app.sandbox.faults().tamper_statements(StatementTamper::ChangeAmount, 1).unwrap();
    upload(&app, &accountant, sandbox_statement(&app)).await.expect(StatusCode::CREATED);

    // A file kept before 0009 has its bytes in statement_files.content and no parts.
    let pool = app.db.raw_pool().await;
    let parts: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT content FROM statement_file_parts ORDER BY part_no").fetch_all(&pool).await.unwrap();
    sqlx::query("UPDATE statement_files SET content = $1").bind(parts.concat()).execute(&pool).await.unwrap();
    sqlx::query("DELETE FROM statement_file_parts").execute(&pool).await.unwrap();
    let run = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    let categories: Vec<(String, u64)> = run.body["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["category"].as_str().unwrap().to_owned(), c["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(categories, [(String::from("amount_mismatch"), 1), (String::from("matched"), 2)]);
    let json_before = all_line_pages(&app, &accountant, &day_path, 2).await;
    let csv_before = app.get(&format!("{day_path}/lines?format=csv"), &accountant).await.expect(StatusCode::OK).text;
    assert_eq!(json_before.len(), 3);

    // A run written before 0009 has its result as rows and no chunks.
    let run_id = run.body["run_id"].as_str().unwrap();
    let fen = |value: &serde_json::Value| {
        value.as_str().map(|yuan| carepay::domain::statement::parse_signed_yuan_fen(yuan).unwrap())
    };
    for item in &json_before {
        let fields: Vec<&str> = item["fields"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        sqlx::query(
            "INSERT INTO reconciliation_lines (run_id, seq, category, fields, line_no, out_no, operator_ref, \
             statement_kind, statement_status, statement_amount_fen, statement_fee_fen, settled_at, carepay_kind, \
             carepay_status, carepay_amount_fen, carepay_fee_fen, carepay_business_day) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(run_id)
        .bind(item["seq"].as_i64())
        .bind(item["category"].as_str())
        .bind(fields.join(","))
        .bind(item["line_no"].as_i64())
        .bind(item["out_no"].as_str())
        .bind(item["operator_ref"].as_str())
        .bind(item["statement_kind"].as_str())
        .bind(item["statement_status"].as_str())
        .bind(fen(&item["statement_amount"]))
        .bind(fen(&item["statement_fee"]))
        .bind(item["settled_at"].as_str())
        .bind(item["carepay_kind"].as_str())
        .bind(item["carepay_status"].as_str())
        .bind(fen(&item["carepay_amount"]))
        .bind(fen(&item["carepay_fee"]))
        .bind(item["carepay_business_day"].as_str())
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("DELETE FROM reconciliation_result_chunks").execute(&pool).await.unwrap();
    assert_eq!(all_line_pages(&app, &accountant, &day_path, 2).await, json_before);
    let csv_after = app.get(&format!("{day_path}/lines?format=csv"), &accountant).await.expect(StatusCode::OK).text;
    assert_eq!(csv_after, csv_before);
}

async fn carepay_s_records_read_alike_by_query_by_one_copy_and_by_two_halves(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    for (request, amount) in [("r-1", "12.50"), ("r-2", "30.00"), ("r-3", "8.00")] {
        let payment = till.pay(request, amount, "013412345678900000").await.unwrap();
        assert_eq!(payment.status, PaymentStatus::Succeeded as i32);
        if request == "r-2" {
            till.refund("f-2", &payment.payment_id, "5.00").await.unwrap();
        }
    }
    let (from_ms, to_ms) = carepay::domain::reconciliation::neighbourhood_ms(&today()).unwrap();
    let owned = app.app.store.wallet_owner(WALLET).await.unwrap().unwrap();
    let day = carepay::store::reconciliation::CarepayDay {
        wallet_id: WALLET,
        owner: &owned.owner,
        from_ms,
        to_ms,
        tariff: carepay::domain::fees::Tariff::flat(6_000),
    };
    let sides = app.app.store.carepay_side_every_way(&day).await.unwrap();
    let items = |index: usize| {
        let side = &sides[index];
        let mut items: Vec<String> = (0..side.len() as u32).map(|i| format!("{:?}", side.item(i))).collect();
        items.sort();
        items
    };
    let expected = items(0);
    assert_eq!(expected.len(), 4, "three payments and a refund: {expected:?}");
    assert!(expected.iter().any(|item| item.contains("Refund")), "{expected:?}");
    for index in 1..sides.len() {
        assert_eq!(items(index), expected);
    }
}

async fn a_gb18030_statement_with_a_byte_order_mark_is_refused_by_name(app: TestApp) {
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let text = String::from_utf8(sandbox_statement(&app)).unwrap();
    let gb18030 = encoding_rs::GB18030.encode(&text).0.into_owned();
    // Without the mark the same file is taken (GB18030 is sniffed from the column line).
    let mut with_bom = vec![0x84, 0x31, 0x95, 0x33];
    with_bom.extend_from_slice(&gb18030);
    let refused = upload(&app, &accountant, with_bom).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    assert_eq!(refused.code(), "STATEMENT_CORRUPT");
    assert_eq!(refused.body["field"], "statement");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.starts_with("statement: line 1: the file starts with a GB18030 byte order mark"), "{detail}");
    assert!(!detail.contains("the header must be"), "{detail}");
    assert_eq!(count_rows(&app, "statement_files").await, 0);
    upload(&app, &accountant, gb18030).await.expect(StatusCode::CREATED);
}

/// `bytes` with its header's business day replaced by `date`, trailer and lines as they were.
fn with_header_day(bytes: &[u8], date: &str) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let (header, rest) = text.split_once("\r\n").unwrap();
    let mut fields: Vec<&str> = header.split(',').collect();
    fields[3] = date;
    format!("{}\r\n{rest}", fields.join(",")).into_bytes()
}

fn tomorrow() -> String {
    business_day(UnixMs(UnixMs::now().0 + MS_PER_DAY))
}

async fn a_statement_whose_lines_are_of_another_day_than_its_header_is_refused_at_the_first(app: TestApp) {
    use carepay::domain::statement::{StatementLine, open_statement};
    pay_three(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    // Today's lines at fixed times, so no line falls near midnight however late this runs.
    let mut lines: Vec<StatementLine> =
        open_statement(sandbox_statement(&app).as_slice()).unwrap().collect::<Result<_, _>>().unwrap();
    for (n, line) in lines.iter_mut().enumerate() {
        line.settled_at = format!("{} 12:00:0{n}", today());
    }
    let statement = statement_of(WALLET, &today(), &lines);

    // Today's file under tomorrow's header: every line is of the day before it.
    let refused = upload(&app, &accountant, with_header_day(&statement, &tomorrow())).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    assert_eq!(refused.code(), "STATEMENT_CORRUPT");
    let expected = format!(
        "statement: line 3: 交易时间 {} is not of the header's business day {}",
        lines[0].settled_at,
        tomorrow()
    );
    assert!(refused.body["detail"].as_str().unwrap().starts_with(&expected), "{}", refused.text);
    // And yesterday's header under today's lines: lines after the day.
    let yesterday = business_day(UnixMs(UnixMs::now().0 - MS_PER_DAY));
    let refused = upload(&app, &accountant, with_header_day(&statement, &yesterday)).await;
    assert_eq!(refused.code(), "STATEMENT_CORRUPT", "{}", refused.text);
    assert!(refused.text.contains("line 3: "), "{}", refused.text);
    assert_eq!(count_rows(&app, "statement_files").await, 0, "nothing of a refused file is kept");
    let run = app.post(&format!("/v1/reconciliation/days/{WALLET}/{}/run", tomorrow()), &accountant, json!({})).await;
    assert_eq!(run.status, StatusCode::NOT_FOUND, "{}", run.text);

    // A line of the day before, in the last half hour (an entry that settled across
    // midnight, dated when it began), belongs to tomorrow's file.
    let mut late = lines[0].clone();
    late.settled_at = format!("{} 23:45:00", today());
    let mut on_time = lines[1].clone();
    on_time.settled_at = format!("{} 00:00:01", tomorrow());
    let accepted = upload(&app, &accountant, statement_of(WALLET, &tomorrow(), &[late.clone(), on_time])).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.text);
    // From earlier in the day before, it is refused, naming that line.
    let mut early = late;
    early.settled_at = format!("{} 23:29:59", today());
    let mut good = lines[2].clone();
    good.settled_at = format!("{} 08:00:00", tomorrow());
    let refused = upload(&app, &accountant, statement_of(WALLET, &tomorrow(), &[good, early])).await;
    assert_eq!(refused.code(), "STATEMENT_CORRUPT", "{}", refused.text);
    assert!(refused.text.contains("line 4: "), "the first offending line: {}", refused.text);
}

async fn a_statement_of_another_facilitys_wallet_is_refused_with_its_reason(app: TestApp) {
    use carepay::domain::statement::EntryKind;
    const OTHER_WALLET: &str = "0021000000000002";
    const NO_WALLET: &str = "0021999999999999";
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town_a = app.create_region(root, Some(&district), "town", "松陵街道").await;
    let town_b = app.create_region(root, Some(&district), "town", "平望镇").await;
    app.create_facility(root, &town_a, "甲助餐点", WALLET).await;
    app.create_facility(root, &town_b, "乙助餐点", OTHER_WALLET).await;
    let accountant_a = app.issue_token(root, "accountant", Some(&town_a)).await;
    let accountant_all = app.issue_token(root, "accountant", Some(&district)).await;
    let day = today();
    let fee = [operator_line(&format!("{day} 08:00:00"), "OPFEE1", EntryKind::Fee, 50)];
    let of = |wallet: &str| statement_of(wallet, &day, &fee);
    let named = |wallet: &str| format!("/v1/reconciliation/statements?wallet_id={wallet}");
    let client = &app;
    let send = |token: &str, path: String, bytes: Vec<u8>| {
        let token = token.to_owned();
        async move { client.raw(Method::POST, &path, Some(&token), Some(("text/csv", bytes))).await }
    };

    // Out of the caller's scope, and nobody's: one answer that says it is the file's wallet.
    let foreign = upload(&app, &accountant_a, of(OTHER_WALLET)).await;
    let nobodys = upload(&app, &accountant_a, of(NO_WALLET)).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "{}", foreign.text);
    assert_eq!(foreign.code(), "STATEMENT_WALLET_OUT_OF_SCOPE");
    assert_eq!(foreign.body["field"], "statement");
    assert!(foreign.body["detail"].as_str().unwrap().starts_with("statement: line 1: "), "{}", foreign.text);
    assert_eq!((nobodys.status, nobodys.text.as_str()), (foreign.status, foreign.text.as_str()));

    // An upload naming the wallet it is for: another facility's file is refused by name,
    // whether that facility is in the caller's scope or not.
    for (token, header_wallet) in
        [(&accountant_a, OTHER_WALLET), (&accountant_all, OTHER_WALLET), (&accountant_a, NO_WALLET)]
    {
        let refused = send(token, named(WALLET), of(header_wallet)).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
        assert_eq!(refused.code(), "STATEMENT_WRONG_WALLET");
        assert_eq!(
            refused.body["detail"],
            format!(
                "statement: line 1: the header names wallet {header_wallet}, and this upload is for wallet {WALLET}"
            )
        );
    }
    // Naming a wallet out of scope is answered as naming one that does not exist.
    let out = send(&accountant_a, named(OTHER_WALLET), of(OTHER_WALLET)).await;
    let missing = send(&accountant_a, named(NO_WALLET), of(NO_WALLET)).await;
    assert_eq!(out.code(), "OUT_OF_SCOPE", "{}", out.text);
    assert_eq!((missing.status, missing.text.as_str()), (out.status, out.text.as_str()));
    // A caller who sees everything is told the wallet is nobody's.
    let unknown = upload(&app, root, of(NO_WALLET)).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", unknown.text);
    assert_eq!(unknown.code(), "STATEMENT_WALLET_UNKNOWN");
    assert!(unknown.text.contains(NO_WALLET), "{}", unknown.text);
    assert_eq!(count_rows(&app, "statement_files").await, 0, "nothing refused was kept");

    // The right wallet, named or not.
    send(&accountant_a, named(WALLET), of(WALLET)).await.expect(StatusCode::CREATED);
    send(&accountant_all, named(OTHER_WALLET), of(OTHER_WALLET)).await.expect(StatusCode::CREATED);
    assert_eq!(count_rows(&app, "statement_files").await, 2);

    // The parameter is in the OpenAPI document.
    let document = serde_json::to_value(carepay::http::openapi()).unwrap();
    let parameters = &document["paths"]["/v1/reconciliation/statements"]["post"]["parameters"];
    let wallet_id = parameters.as_array().unwrap().iter().find(|p| p["name"] == "wallet_id").expect("documented");
    assert_eq!(wallet_id["in"], "query");
    assert_eq!(wallet_id["required"], false);
}

/// Today's three payments, the first settling across midnight: today's statement lacks it and
/// tomorrow's lists it, dated after midnight. Returns (today's file, tomorrow's file).
async fn late_payment_statements(app: &TestApp) -> (Vec<u8>, Vec<u8>, String) {
    use carepay::domain::statement::{StatementLine, open_statement};
    pay_three(app).await;
    let statement = sandbox_statement(app);
    let mut lines: Vec<StatementLine> =
        open_statement(statement.as_slice()).unwrap().collect::<Result<_, _>>().unwrap();
    let mut late = lines.remove(0);
    late.settled_at = format!("{} 00:00:01", tomorrow());
    let out_no = late.out_no.clone();
    (statement_of(WALLET, &today(), &lines), statement_of(WALLET, &tomorrow(), &[late]), out_no)
}

async fn discrepancies_of(app: &TestApp, token: &str, date: &str, status: &str) -> Vec<serde_json::Value> {
    let path = format!("/v1/reconciliation/days/{WALLET}/{date}/discrepancies?status={status}");
    app.get(&path, token).await.expect(StatusCode::OK).body.as_array().unwrap().clone()
}

async fn run_of(app: &TestApp, token: &str, date: &str) -> serde_json::Value {
    let path = format!("/v1/reconciliation/days/{WALLET}/{date}/run");
    app.post(&path, token, json!({})).await.expect(StatusCode::OK).body
}

/// Once both days are in: nothing open on either, the late payment reported once, on its own
/// day, as timing; tomorrow shows it as a wrong-day line that is no discrepancy.
async fn assert_one_timing_difference(app: &TestApp, token: &str, out_no: &str) {
    assert_eq!(discrepancies_of(app, token, &today(), "open").await, Vec::<serde_json::Value>::new());
    assert_eq!(discrepancies_of(app, token, &tomorrow(), "open").await, Vec::<serde_json::Value>::new());
    let reported = discrepancies_of(app, token, &today(), "all").await;
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0]["out_no"], out_no);
    assert_eq!(reported[0]["status"], "resolved");
    assert_eq!(reported[0]["resolution"], "timing");
    assert_eq!(reported[0]["amount"], "12.50");
    assert_eq!(discrepancies_of(app, token, &tomorrow(), "all").await, Vec::<serde_json::Value>::new());
    let lines =
        app.get(&format!("/v1/reconciliation/days/{WALLET}/{}/lines", tomorrow()), token).await.expect(StatusCode::OK);
    assert_eq!(lines.body["items"][0]["category"], "wrong_day", "{}", lines.text);
    assert_eq!(lines.body["items"][0]["fields"], json!(["business_day"]));
    assert_eq!(lines.body["items"][0]["carepay_business_day"], today().as_str());
}

/// Runs a day as the scheduler would once the grace period is over.
async fn run_past_grace(app: &TestApp, date: &str) {
    use carepay::reconciliation::Initiator;
    let owned = app.app.store.wallet_owner(WALLET).await.unwrap().unwrap();
    let later = UnixMs(UnixMs::now().0 + 5 * MS_PER_DAY);
    let run = app.app.run_day(&owned, WALLET, date, Initiator::Carepay("scheduler"), later, None).await.unwrap();
    assert!(run.past_grace);
}

/// `bytes` as another version: the same lines with another generation time.
fn regenerated(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.replacen("T23:59:59+08:00", "T23:59:58+08:00", 1).into_bytes()
}

async fn a_late_payment_is_one_timing_difference_when_today_runs_first(app: TestApp) {
    let (today_file, tomorrow_file, out_no) = late_payment_statements(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;

    // Today alone: the late payment is expected.
    upload(&app, &accountant, today_file.clone()).await.expect(StatusCode::CREATED);
    let run = run_of(&app, &accountant, &today()).await;
    assert_eq!(run["discrepancies_found"], 1);
    let open = discrepancies_of(&app, &accountant, &today(), "open").await;
    assert_eq!((open.len(), open[0]["category"].as_str()), (1, Some("expected")), "{open:?}");

    // Tomorrow lists it: settled as timing today, nothing raised tomorrow.
    upload(&app, &accountant, tomorrow_file.clone()).await.expect(StatusCode::CREATED);
    let run = run_of(&app, &accountant, &tomorrow()).await;
    assert_eq!(run["categories"], json!([{"category": "wrong_day", "count": 1, "amount": "12.50"}]));
    assert_eq!(run["discrepancies_found"], 0);
    assert_one_timing_difference(&app, &accountant, &out_no).await;

    // Either day run again after the other arrived, a new version or past the grace period:
    // still one timing difference and nothing open.
    upload(&app, &accountant, regenerated(&today_file)).await.expect(StatusCode::CREATED);
    let rerun = run_of(&app, &accountant, &today()).await;
    assert_eq!(rerun["discrepancies_found"], 0, "{rerun}");
    run_past_grace(&app, &today()).await;
    upload(&app, &accountant, regenerated(&tomorrow_file)).await.expect(StatusCode::CREATED);
    run_of(&app, &accountant, &tomorrow()).await;
    run_past_grace(&app, &tomorrow()).await;
    assert_one_timing_difference(&app, &accountant, &out_no).await;
    for date in [today(), tomorrow()] {
        let close = format!("/v1/reconciliation/days/{WALLET}/{date}/close");
        app.post(&close, &accountant, json!({})).await.expect(StatusCode::NO_CONTENT);
    }
}

async fn a_late_payment_is_one_timing_difference_when_tomorrow_runs_first(app: TestApp) {
    let (today_file, tomorrow_file, out_no) = late_payment_statements(&app).await;
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;

    // Tomorrow first: a wrong-day line that is no discrepancy there.
    upload(&app, &accountant, tomorrow_file.clone()).await.expect(StatusCode::CREATED);
    let run = run_of(&app, &accountant, &tomorrow()).await;
    assert_eq!(run["categories"], json!([{"category": "wrong_day", "count": 1, "amount": "12.50"}]));
    assert_eq!(run["discrepancies_found"], 0);
    assert_eq!(discrepancies_of(&app, &accountant, &tomorrow(), "all").await, Vec::<serde_json::Value>::new());

    // Then today: the payment is not expected, it is on tomorrow's statement.
    upload(&app, &accountant, today_file.clone()).await.expect(StatusCode::CREATED);
    let run = run_of(&app, &accountant, &today()).await;
    assert_eq!(run["discrepancies_found"], 0, "{run}");
    let count = |name: &str| {
        run["categories"].as_array().unwrap().iter().find(|c| c["category"] == name).map(|c| c["count"].clone())
    };
    assert_eq!((count("matched"), count("wrong_day"), count("expected")), (Some(json!(2)), Some(json!(1)), None));
    assert_one_timing_difference(&app, &accountant, &out_no).await;

    // Run again after the other arrived: still one, nothing open.
    upload(&app, &accountant, regenerated(&tomorrow_file)).await.expect(StatusCode::CREATED);
    run_of(&app, &accountant, &tomorrow()).await;
    run_past_grace(&app, &today()).await;
    upload(&app, &accountant, regenerated(&today_file)).await.expect(StatusCode::CREATED);
    run_of(&app, &accountant, &today()).await;
    assert_one_timing_difference(&app, &accountant, &out_no).await;
    for date in [today(), tomorrow()] {
        let close = format!("/v1/reconciliation/days/{WALLET}/{date}/close");
        app.post(&close, &accountant, json!({})).await.expect(StatusCode::NO_CONTENT);
    }
}

/// The spec's two readings of `fee_total`: a file whose trailer counts a REVERSED line's fee
/// is taken, and its run says so; that fee is neither compared nor booked as withheld.
async fn a_fee_total_counting_reversed_lines_is_taken_with_a_warning(app: TestApp) {
    use carepay::domain::statement::{EntryStatus, StatementHeader, StatementLine, StatementTotals};
    let till = terminal(&app, WALLET).await;
    let paid = till.pay("r-1", "12.50", "013412345678900000").await.unwrap();
    assert_eq!(paid.status, PaymentStatus::Succeeded as i32);
    let region = district(&app).await;
    let accountant = app.issue_token(&app.root_token, "accountant", Some(&region)).await;
    let day = today();
    let mut lines: Vec<StatementLine> = {
        let statement = sandbox_statement(&app);
        let mut reader = carepay::domain::statement::open_statement(statement.as_slice()).unwrap();
        reader.by_ref().collect::<Result<Vec<_>, _>>().unwrap()
    };
    assert_eq!(lines.len(), 1);
    let mut reversed = lines[0].clone();
    reversed.operator_ref = String::from("OP-REVERSED-1");
    reversed.out_no = String::from("P-reversed-elsewhere");
    reversed.status = EntryStatus::Reversed;
    reversed.fee_fen = 4;
    lines.push(reversed);
    let header = StatementHeader {
        wallet_id: WALLET.to_owned(),
        date: day.clone(),
        generated_at: format!("{day}T23:59:59+08:00"),
    };
    let totals = StatementTotals { line_count: 2, credit_fen: 1_250, debit_fen: 0, fee_fen: lines[0].fee_fen + 4 };
    let bytes = carepay::domain::statement::write_statement_with_totals(&header, &lines, &totals);
    upload(&app, &accountant, bytes).await.expect(StatusCode::CREATED);
    let run = app.post(&format!("/v1/reconciliation/days/{WALLET}/{day}/run"), &accountant, json!({})).await;
    let run = run.expect(StatusCode::OK);
    let warnings = run.body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{}", run.text);
    assert!(warnings[0].as_str().unwrap().contains("REVERSED"), "{}", run.text);
    assert_eq!(run.body["statement_fees"], carepay::domain::statement::Yuan(lines[0].fee_fen).to_string());
}
