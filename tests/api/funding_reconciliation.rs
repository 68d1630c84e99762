//! Reconciliation of a programme's funding wallet through HTTP: a batch paid through the
//! sandbox by the disbursement worker, the sandbox's statement of the funding wallet (with a
//! transfer bounced back, or tampered), uploaded, run and closed.

use carepay::domain::statement::{EntryKind, EntryStatus, StatementLine};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::disbursement::{FUNDING_WALLET, Office, citizen_id, office, start_worker, upload, wait_for_status};
use crate::helpers::TestApp;
use crate::reconciliation::{balance_fen, statement_of, today};

backend_tests!(
    a_returned_transfer_reopens_its_line_releases_its_budget_and_the_day_closes,
    a_funding_wallets_discrepancies_are_each_in_their_category_and_change_no_line,
);
backend_tests!(spawn = crate::funding_reconciliation::spawn_with_a_transfer_tariff; transfer_fees_are_held_to_the_wallets_tariff);

/// A server whose tariff charges the funding wallet 0.10 per transfer, as the office agreed
/// with the operator.
async fn spawn_with_a_transfer_tariff(backend: carepay::store::Backend) -> TestApp {
    use carepay::domain::fees::{FeeMethod, FeeRule, Tariff, Tariffs};
    let per_transfer = FeeRule::new(0, carepay::domain::money::Amount::parse("0.10").unwrap(), None).unwrap();
    let tariff = Tariff::flat(0).with(FeeMethod::Transfer, per_transfer);
    let tariffs = Tariffs { default: Tariff::flat(0), wallets: [(FUNDING_WALLET.to_owned(), tariff)].into() };
    crate::helpers::spawn_app_configured_by(backend, |app| app.reconciliation.tariffs = std::sync::Arc::new(tariffs))
        .await
}

const MS_PER_DAY: i64 = 86_400_000;

/// Three people paid 300.00, 200.00 and 100.00 from the office's funding wallet; returns the
/// batch id and its lines' `out_transfer_no`s.
async fn paid_batch(app: &TestApp, office: &Office) -> (String, Vec<String>) {
    start_worker(app);
    let people = [
        ("张三", "0021000000000101", "300.00"),
        ("李四", "0021000000000102", "200.00"),
        ("王五", "0021000000000103", "100.00"),
    ];
    let mut text = String::from("姓名,身份证号,钱包编号,金额,备注\r\n");
    for (n, (name, wallet, amount)) in people.iter().enumerate() {
        app.sandbox.open_wallet(wallet, name, 2, carepay::domain::money::Amount::ZERO).unwrap();
        let id = citizen_id(&format!("3205841945031500{n}"));
        text.push_str(&format!("{name},{id},{wallet},{amount},十一月\r\n"));
    }
    let (status, batch) = upload(app, office, "nov", text.into_bytes(), 3, "600.00").await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    app.post(&format!("/v1/subsidy-batches/{batch_id}/approve"), &office.approver, json!({}))
        .await
        .expect(StatusCode::OK);
    app.post(&format!("/v1/subsidy-batches/{batch_id}/run"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    let done = wait_for_status(app, &office.approver, &batch_id, "completed").await;
    assert_eq!(done["progress"]["succeeded"]["lines"], 3, "{done}");
    let lines =
        app.get(&format!("/v1/subsidy-batches/{batch_id}/lines"), &office.approver).await.expect(StatusCode::OK);
    let out_nos =
        lines.body.as_array().unwrap().iter().map(|l| l["out_transfer_no"].as_str().unwrap().to_owned()).collect();
    (batch_id, out_nos)
}

/// The sandbox's statement of the funding wallet's day, as served once the day has ended.
fn funding_statement(app: &TestApp) -> Vec<u8> {
    let tomorrow_ms = carepay::domain::time::UnixMs::now().0 + MS_PER_DAY;
    app.sandbox.statement_file_as_of(&today(), FUNDING_WALLET, tomorrow_ms).expect("statement").0
}

fn count(run: &Value, name: &str) -> u64 {
    run["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == name)
        .map_or(0, |c| c["count"].as_u64().unwrap())
}

async fn accountant_of(app: &TestApp, office: &Office) -> String {
    app.issue_token(&app.root_token, "accountant", Some(&office.region)).await
}

async fn a_returned_transfer_reopens_its_line_releases_its_budget_and_the_day_closes(app: TestApp) {
    let office = office(&app).await;
    let receiver = crate::callbacks::receiver::Receiver::accepting().await;
    crate::callbacks::create_endpoint(
        &app,
        &app.root_token,
        json!({"office_region_id": office.region, "url": receiver.url("/returns"), "event_types": ["transfer.returned"]}),
    )
    .await;
    let _callbacks = crate::callbacks::start_worker(&app, crate::callbacks::fast_settings());
    let (batch_id, out_nos) = paid_batch(&app, &office).await;
    // Li Si's wallet is closed after the payment: the operator sends the 200.00 back.
    app.sandbox.return_transfer(FUNDING_WALLET, &out_nos[1]).unwrap();
    let programme = carepay::domain::ids::ProgrammeId::parse(&office.programme).unwrap();
    let budget = carepay::store::disbursement::budget_account(&programme);
    assert_eq!(balance_fen(&app, budget.as_str()).await, 1_000_000 - 60_000);

    let accountant = accountant_of(&app, &office).await;
    let file =
        crate::reconciliation::upload(&app, &accountant, funding_statement(&app)).await.expect(StatusCode::CREATED);
    assert_eq!(file.body["line_count"], 4, "three transfers and a return: {}", file.text);
    let day_path = format!("/v1/reconciliation/days/{FUNDING_WALLET}/{}", today());
    let run = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    assert_eq!(count(&run.body, "matched"), 4, "{}", run.text);
    assert_eq!(run.body["programme_id"], office.programme.as_str(), "{}", run.text);
    assert_eq!(run.body["facility_id"], Value::Null);
    assert_eq!(run.body["statement_net"], "-400.00", "600.00 out, 200.00 back: {}", run.text);
    assert_eq!(run.body["carepay_net"], "-400.00", "{}", run.text);
    assert_eq!(run.body["discrepancies_found"], 0, "{}", run.text);

    // The line is re-opened with the operator's reason, and its money is the programme's again.
    let line = app.get(&format!("/v1/subsidy-batches/{batch_id}/lines?after=1&limit=1"), &office.approver).await;
    assert_eq!(line.body[0]["status"], "returned", "{}", line.text);
    let batch = app.get(&format!("/v1/subsidy-batches/{batch_id}"), &office.approver).await.expect(StatusCode::OK);
    assert_eq!(batch.body["progress"]["returned"], json!({"lines": 1, "amount": "200.00"}), "{}", batch.text);
    assert_eq!(batch.body["progress"]["succeeded"]["lines"], 2);
    let programme_view = app.get(&format!("/v1/subsidy-programmes/{}", office.programme), &office.approver).await;
    assert_eq!(programme_view.body["committed"], "400.00", "{}", programme_view.text);
    assert_eq!(balance_fen(&app, budget.as_str()).await, 1_000_000 - 40_000);
    assert!(app.app.store.verify_ledger().await.unwrap().is_empty());
    let result = app.get(&format!("/v1/subsidy-batches/{batch_id}/result"), &office.approver).await;
    assert!(result.text.contains("已退回") && result.text.contains("转账退回"), "{}", result.text);

    // The office hears of it once, with the reason.
    let received = receiver.wait_until("the return's callback", |received| !received.is_empty()).await;
    let body = received[0].json();
    assert_eq!(body["type"], "transfer.returned");
    assert_eq!(body["data"]["out_transfer_no"], out_nos[1].as_str());
    assert_eq!(body["data"]["amount"], "200.00");
    assert_eq!(body["data"]["reason"], "转账退回");

    // Running the day again is the same run; the return is recorded once.
    let again = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    assert_eq!(again.body["run_id"], run.body["run_id"]);
    assert_eq!(balance_fen(&app, budget.as_str()).await, 1_000_000 - 40_000);

    // The office re-issues it to the person's new wallet; it is paid, and the day closes.
    app.sandbox.open_wallet("0021000000000104", "李四", 2, carepay::domain::money::Amount::ZERO).unwrap();
    let reissued = app
        .post(
            &format!("/v1/subsidy-batches/{batch_id}/lines/2/reissue"),
            &office.clerk,
            json!({"payee_name": "李四", "wallet_id": "0021000000000104"}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reissued.body["reissue_of_seq"], 2);
    let seq = reissued.body["seq"].as_u64().unwrap();
    for _ in 0..2_400 {
        let line =
            app.get(&format!("/v1/subsidy-batches/{batch_id}/lines?after={}&limit=1", seq - 1), &office.approver).await;
        if line.body[0]["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(app.sandbox.wallet("0021000000000104").unwrap().balance.fen(), 20_000);
    app.post(&format!("{day_path}/close"), &accountant, json!({})).await.expect(StatusCode::NO_CONTENT);
}

async fn a_funding_wallets_discrepancies_are_each_in_their_category_and_change_no_line(app: TestApp) {
    let office = office(&app).await;
    let (batch_id, out_nos) = paid_batch(&app, &office).await;
    let day = today();
    let at = format!("{day} 10:00:00");
    let line = |out_no: &str, kind, amount_fen| StatementLine {
        settled_at: at.clone(),
        operator_ref: format!("OP{}", out_no.len() + amount_fen as usize),
        out_no: out_no.to_owned(),
        kind,
        status: EntryStatus::Success,
        amount_fen,
        fee_fen: 0,
        counterparty: String::from("0021****0101"),
        memo: String::from("钱包已销户"),
    };
    let mut lines = vec![
        line(&out_nos[0], EntryKind::Transfer, 30_000),
        // Another amount than carepay paid.
        line(&out_nos[1], EntryKind::Transfer, 20_001),
        // The third transfer is not listed; a return of a transfer carepay never made, and one
        // of the first transfer's with another amount, are.
        line("T-unknown-000001", EntryKind::TransferReturn, 5_000),
        line(&out_nos[0], EntryKind::TransferReturn, 100),
    ];
    for (n, item) in lines.iter_mut().enumerate() {
        item.operator_ref = format!("OP2026112800000{n}");
    }
    let accountant = accountant_of(&app, &office).await;
    crate::reconciliation::upload(&app, &accountant, statement_of(FUNDING_WALLET, &day, &lines))
        .await
        .expect(StatusCode::CREATED);
    let day_path = format!("/v1/reconciliation/days/{FUNDING_WALLET}/{day}");
    let run = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    assert_eq!(count(&run.body, "matched"), 1, "{}", run.text);
    assert_eq!(count(&run.body, "amount_mismatch"), 1, "{}", run.text);
    assert_eq!(count(&run.body, "missing_in_carepay"), 2, "{}", run.text);
    assert_eq!(count(&run.body, "expected"), 1, "the unlisted transfer, within the grace period: {}", run.text);

    let open = app.get(&format!("{day_path}/discrepancies"), &accountant).await.expect(StatusCode::OK);
    let mut found: Vec<(String, String)> = open
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["category"].as_str().unwrap().to_owned(), d["out_no"].as_str().unwrap().to_owned()))
        .collect();
    found.sort();
    let mut wanted = vec![
        (String::from("amount_mismatch"), out_nos[1].clone()),
        (String::from("expected"), out_nos[2].clone()),
        (String::from("missing_in_carepay"), out_nos[0].clone()),
        (String::from("missing_in_carepay"), String::from("T-unknown-000001")),
    ];
    wanted.sort();
    assert_eq!(found, wanted);

    // A return of another amount re-opens nothing: every line is still paid.
    let batch = app.get(&format!("/v1/subsidy-batches/{batch_id}"), &office.approver).await.expect(StatusCode::OK);
    assert_eq!(batch.body["progress"]["succeeded"]["lines"], 3, "{}", batch.text);
    assert_eq!(batch.body["progress"]["returned"]["lines"], 0);
    app.post(&format!("{day_path}/close"), &accountant, json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "DAY_NOT_CLOSABLE");
}

async fn transfer_fees_are_held_to_the_wallets_tariff(app: TestApp) {
    let office = office(&app).await;
    let (_, out_nos) = paid_batch(&app, &office).await;
    let day = today();
    let fees = [10, 10, 0];
    let lines: Vec<StatementLine> = out_nos
        .iter()
        .zip([30_000, 20_000, 10_000])
        .zip(fees)
        .enumerate()
        .map(|(n, ((out_no, amount_fen), fee_fen))| StatementLine {
            settled_at: format!("{day} 10:00:0{n}"),
            operator_ref: format!("OP2026112800001{n}"),
            out_no: out_no.clone(),
            kind: EntryKind::Transfer,
            status: EntryStatus::Success,
            amount_fen,
            fee_fen,
            counterparty: String::from("0021****0101"),
            memo: String::new(),
        })
        .collect();
    let accountant = accountant_of(&app, &office).await;
    crate::reconciliation::upload(&app, &accountant, statement_of(FUNDING_WALLET, &day, &lines))
        .await
        .expect(StatusCode::CREATED);
    let day_path = format!("/v1/reconciliation/days/{FUNDING_WALLET}/{day}");
    let run = app.post(&format!("{day_path}/run"), &accountant, json!({})).await.expect(StatusCode::OK);
    assert_eq!(count(&run.body, "matched"), 2, "{}", run.text);
    assert_eq!(count(&run.body, "fee_mismatch"), 1, "the line the operator charged nothing on: {}", run.text);
    assert_eq!(run.body["statement_fees"], "0.20", "{}", run.text);
    let lines = app.get(&format!("{day_path}/lines"), &accountant).await.expect(StatusCode::OK);
    let mismatch =
        lines.body["items"].as_array().unwrap().iter().find(|l| l["category"] == "fee_mismatch").unwrap().clone();
    assert_eq!(mismatch["out_no"], out_nos[2].as_str());
    assert_eq!(mismatch["carepay_fee"], "0.10", "{mismatch}");
    assert_eq!(mismatch["statement_fee"], "0.00", "{mismatch}");
}
