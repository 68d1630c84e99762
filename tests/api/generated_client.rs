//! A client generated from the OpenAPI document by someone else's generator
//! (`openapi-python-client` from PyPI) works: the Python driver generates it at test time
//! and calls every operation it covers against this server; what it created is read back
//! here through the plain HTTP API.

use std::process::Command;

use carepay::domain::money::Amount;
use carepay::domain::reconciliation::business_day;
use carepay::domain::time::UnixMs;
use carepay::operator::sandbox::faults::StatementTamper;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::disbursement::{citizen_id, start_worker};
use crate::helpers::{TestApp, terminal_key_pair};

backend_tests!(a_client_generated_from_the_document_calls_every_operation_it_covers);

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/generated_client/drive_generated_client.py");
const MERCHANT_WALLET: &str = "0021000000000002";
const FUNDING_WALLET: &str = "0031000000000001";
const PAID_WALLET: &str = "0021000000000101";
/// Where the failed line is re-issued to: its holder's own wallet.
const REISSUE_WALLET: &str = "0021000000000103";
/// Never opened at the operator: the transfer to it fails.
const MISSING_WALLET: &str = "0021000000000109";

fn require_generator() {
    let check = Command::new("python3")
        .args(["-c", "import openapi_python_client, openapi_spec_validator, httpx, attrs"])
        .output();
    match check {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "the generated-client test needs the Python packages `openapi-python-client` and \
             `openapi-spec-validator` (`pip install openapi-python-client openapi-spec-validator`; \
             .ci/run installs them): {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!("the generated-client test needs python3 on PATH: {error}"),
    }
}

async fn a_client_generated_from_the_document_calls_every_operation_it_covers(app: TestApp) {
    require_generator();
    start_worker(&app);
    let work = tempfile::tempdir().unwrap();
    let document = work.path().join("openapi.json");
    std::fs::write(&document, serde_json::to_vec(&carepay::http::openapi()).unwrap()).unwrap();

    app.sandbox.open_wallet(FUNDING_WALLET, "松陵街道民政", 1, Amount::parse("1000.00").unwrap()).unwrap();
    app.sandbox.open_wallet(PAID_WALLET, "张三", 2, Amount::ZERO).unwrap();
    app.sandbox.open_wallet(REISSUE_WALLET, "李四", 2, Amount::ZERO).unwrap();
    app.sandbox.open_wallet(MERCHANT_WALLET, "流虹社区助餐点", 1, Amount::ZERO).unwrap();
    // The operator's statement of the facility's day, with one line carepay never saw.
    app.sandbox.faults().tamper_statements(StatementTamper::AddLine, 1).unwrap();
    let today = business_day(UnixMs::now());
    let statement =
        app.sandbox.statement_file_as_of(&today, MERCHANT_WALLET, UnixMs::now().0 + 86_400_000).expect("statement").0;
    let statement_path = work.path().join("statement.csv");
    std::fs::write(&statement_path, statement).unwrap();
    let ((_, key), (_, new_key)) = (terminal_key_pair(), terminal_key_pair());
    let (paid_id, failed_id) = (citizen_id("32058419450315002"), citizen_id("32058419520708008"));
    let fixture = json!({
        "base_url": app.address,
        "token": app.root_token,
        "document": document,
        "merchant_wallet": MERCHANT_WALLET,
        "funding_wallet": FUNDING_WALLET,
        "payee_wallets": [PAID_WALLET, MISSING_WALLET],
        "reissue_wallet": REISSUE_WALLET,
        "citizen_ids": [paid_id, failed_id],
        "terminal_keys": [key, new_key],
        "callback_url": "http://127.0.0.1:9/hook",
        "statement": statement_path,
        "business_day": today,
    });
    let fixture_path = work.path().join("fixture.json");
    std::fs::write(&fixture_path, fixture.to_string()).unwrap();

    let work_dir = work.path().to_owned();
    // The server runs on this runtime's threads while the driver talks to it.
    let driver = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(SCRIPT).arg(&fixture_path).arg(&work_dir).output()
    })
    .await
    .unwrap()
    .expect("run the Python driver");
    let stdout = String::from_utf8_lossy(&driver.stdout);
    assert!(
        driver.status.success(),
        "the generated client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&driver.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().expect("a report")).expect("a JSON report");

    // Every operation the generator produced was called; it produced all but the two whose
    // request body is a CSV file (which the driver sends itself).
    assert_eq!(report["operations_not_called"], json!([]), "{report}");
    let covered = report["operations_covered"].as_array().unwrap().len();
    let operations: usize = serde_json::to_value(carepay::http::openapi()).unwrap()["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(covered, operations - 2, "{report}");

    // What the generated client did is what the server holds.
    let root = &app.root_token;
    let facility = app.get(&format!("/v1/facilities/{}", report["facility"].as_str().unwrap()), root).await;
    let facility = facility.expect(StatusCode::OK);
    assert_eq!(facility.body["name"], "流虹社区助餐点");
    assert_eq!(facility.body["version"], 2);
    let terminal = app.get(&format!("/v1/terminals/{}", report["terminal"].as_str().unwrap()), root).await;
    assert_eq!(terminal.expect(StatusCode::OK).body["public_key"], new_key);
    let revoked = app.get(&format!("/v1/tokens/{}", report["revoked_token"].as_str().unwrap()), root).await;
    assert_eq!(revoked.expect(StatusCode::OK).body["status"], "revoked");
    let batch = report["batch"].as_str().unwrap();
    let lines = app.get(&format!("/v1/subsidy-batches/{batch}/lines"), root).await.expect(StatusCode::OK);
    let reissued = lines.body.as_array().unwrap().iter().find(|l| l["seq"] == report["reissued_seq"]).unwrap().clone();
    assert_eq!(reissued["wallet_id"], REISSUE_WALLET);
    assert_eq!(reissued["amount"], "20.00");
    let day = format!("/v1/reconciliation/days/{MERCHANT_WALLET}/{today}");
    let closed = app.get(&day, root).await.expect(StatusCode::OK);
    assert_eq!(closed.body["day_status"], "closed");
    let all = app.get(&format!("{day}/discrepancies?status=all"), root).await.expect(StatusCode::OK);
    assert_eq!(all.body[0]["id"], report["discrepancy"]);
    assert_eq!(all.body[0]["resolution"], "timing");
}
