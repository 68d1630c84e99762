//! The SM2-with-SM3 operator profile end to end: terminal payments through gRPC and signed
//! notifications when carepay and the operator sign with SM2, an operator switching from
//! Ed25519 to SM2 while payments flow (carepay holding both keys refuses nothing), and the
//! same with `carepay serve` and `carepay sandbox-operator` as their own processes.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carepay::domain::ledger::AccountCode;
use carepay::grpc::proto::PaymentStatus;
use carepay::http::HttpSettings;
use carepay::http::notifications::NOTIFICATIONS_PATH;
use carepay::operator::clock::Clock;
use carepay::operator::signing::{SignatureAlgorithm, Signer};
use carepay::store::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDatabase, spawn_app_signing_with, terminal_key_pair};
use crate::terminal_client::{TestTerminal, connect_to, terminal};

const WALLET: &str = "0021000000000001";
/// Polls of a state that settles in the background, each after a short pause.
const MAX_POLLS: usize = 400;

async fn spawn(backend: Backend, carepay: SignatureAlgorithm, operator: SignatureAlgorithm) -> TestApp {
    spawn_app_signing_with(TestDatabase::new(backend).await, HttpSettings::default(), carepay, operator).await
}

async fn count(db: &TestDatabase, sql: &'static str) -> i64 {
    let pool = db.raw_pool().await;
    let value = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    value
}

/// Waits until `sql` counts at least `expected` rows, and returns the count.
async fn wait_for_count(db: &TestDatabase, sql: &'static str, expected: i64) -> i64 {
    for _ in 0..MAX_POLLS {
        let seen = count(db, sql).await;
        if seen >= expected {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    count(db, sql).await
}

async fn wallet_balance_fen(app: &TestApp) -> i64 {
    let code = AccountCode::parse(&format!("wallet:{WALLET}")).unwrap();
    app.app.store.account_totals(&code).await.unwrap().map(|totals| totals.balance_fen()).unwrap_or(0)
}

async fn both_sides_signing_with_sm2_pay_and_notify(backend: Backend) {
    let app = spawn(backend, SignatureAlgorithm::Sm2Sm3, SignatureAlgorithm::Sm2Sm3).await;
    assert_eq!(app.sandbox.verifying_key().algorithm(), SignatureAlgorithm::Sm2Sm3);
    let till = terminal(&app, WALLET).await;
    let paid = till.pay("r-1", "12.50", "013412345678900000").await.unwrap();
    assert_eq!(paid.status, PaymentStatus::Succeeded as i32);
    let confirmed = till.pay("r-2", "6.00", "013412345678901111").await.unwrap();
    assert_eq!(confirmed.status, PaymentStatus::Userpaying as i32);
    till.wait_for_status(&confirmed.payment_id, PaymentStatus::Succeeded).await;
    assert_eq!(wallet_balance_fen(&app).await, 1_850);
    assert_eq!(app.sandbox.wallet(WALLET).unwrap().balance.to_string(), "18.50");
    // Both TRADE.SUCCESS notifications were signed with SM2, verified and recorded.
    let events = wait_for_count(&app.db, "SELECT COUNT(*) FROM operator_events", 2).await;
    assert_eq!(events, 2);
    assert_eq!(app.sandbox.notifier().attempts(), 2, "none was refused and retried");

    // A notification signed with another algorithm under the operator's key id changes nothing.
    let impostor = Signer::generate(&app.sandbox.key_id(), Clock::system()).unwrap();
    let body = br#"{"id":"evt_impostor","type":"TRADE.CLOSED","created_at":"2026-11-28T09:15:02+08:00","resource":{}}"#;
    let mut request = app.client.post(format!("{}{NOTIFICATIONS_PATH}", app.address)).body(body.to_vec());
    for (name, value) in impostor.sign_response(body).pairs() {
        request = request.header(name, value);
    }
    let refused = request.send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "INVALID_SIGNATURE");
    assert!(problem.to_string().contains("ALGORITHM_MISMATCH"), "{problem}");
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM operator_events").await, 2);
    app.stop().await;
}

async fn an_operator_switching_to_sm2_mid_stream_is_refused_nothing(backend: Backend) {
    let app = spawn(backend, SignatureAlgorithm::Ed25519, SignatureAlgorithm::Ed25519).await;
    let ed25519_key_id = app.sandbox.key_id();
    // The operator announces its new key ahead of the switch; carepay trusts both meanwhile.
    let sm2 = Signer::generate_with(SignatureAlgorithm::Sm2Sm3, "sandbox-sm2", app.sandbox.clock().clone()).unwrap();
    let verifier = &app.app.operator.as_ref().unwrap().verifier;
    verifier.add_key("sandbox-sm2", sm2.verifying_key()).unwrap();

    let till = terminal(&app, WALLET).await;
    let payments = 8;
    let mut ids = Vec::new();
    let mut sm2 = Some(sm2);
    for n in 0..payments {
        if n == payments / 2 {
            app.sandbox.rotate_signing_key(sm2.take().unwrap());
        }
        // Payer codes ending 1111 are confirmed 300 ms later, each by a TRADE.SUCCESS
        // notification, so notifications of both keys are in flight around the switch.
        let payment = till.pay(&format!("r-{n}"), "2.00", "013412345678901111").await.expect("answer verified");
        assert_eq!(payment.status, PaymentStatus::Userpaying as i32);
        ids.push(payment.payment_id);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(app.sandbox.key_id(), "sandbox-sm2");
    assert_ne!(ed25519_key_id, "sandbox-sm2");
    for id in &ids {
        till.wait_for_status(id, PaymentStatus::Succeeded).await;
    }
    let events = wait_for_count(&app.db, "SELECT COUNT(*) FROM operator_events", payments).await;
    assert_eq!(events, payments, "every notification verified and applied");
    assert_eq!(app.sandbox.notifier().attempts(), payments as u64, "none was refused and retried");
    assert_eq!(wallet_balance_fen(&app).await, 200 * payments);
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
    app.stop().await;
}

fn read_line_with(lines: &mut impl Iterator<Item = std::io::Result<String>>, prefix: &str) -> String {
    loop {
        let line = lines.next().expect("process output").unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.trim().to_owned();
        }
    }
}

/// Ends a child process when the test does, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve_and_the_sandbox_operator_processes_pay_and_notify_with_sm2(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_key = BASE64.encode([9u8; 32]);
    let sm2_secret = |byte: u8| {
        let secret = [byte; 32];
        let signer = Signer::from_secret(SignatureAlgorithm::Sm2Sm3, "k", &secret, Clock::system()).unwrap();
        (BASE64.encode(secret), signer.public_key_base64())
    };
    let (carepay_secret, carepay_public) = sm2_secret(3);
    let (sandbox_secret, sandbox_public) = sm2_secret(4);
    let carepay_key_file = dir.path().join("carepay-sm2.key");
    let sandbox_key_file = dir.path().join("sandbox-sm2.key");
    std::fs::write(&carepay_key_file, &carepay_secret).unwrap();
    std::fs::write(&sandbox_key_file, &sandbox_secret).unwrap();

    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["sandbox-operator", "--listen", "127.0.0.1:0", "--signing-algorithm", "sm2-sm3", "--key-id", "bank-sm2"])
        .arg("--signing-key-file")
        .arg(&sandbox_key_file)
        .args(["--confirm-delay-ms", "200", "--notify-time-scale", "0.01", "--client-public-key"])
        .arg(format!("carepay-1=sm2-sm3:{carepay_public}"))
        .env("CAREPAY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sandbox operator");
    let mut lines = BufReader::new(sandbox.stdout.take().unwrap()).lines();
    let sandbox = Process(sandbox);
    let sandbox_url = read_line_with(&mut lines, "sandbox operator listening on ");
    assert_eq!(read_line_with(&mut lines, "operator key id: "), "bank-sm2");
    assert_eq!(read_line_with(&mut lines, "operator public key (sm2-sm3, base64): "), sandbox_public);
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));

    let output = Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["token", "create", "--role", "admin", "--database-url", &db.url])
        .env("CAREPAY_SECRET_KEY", &secret_key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let root = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    let mut serve = Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url])
        .env("CAREPAY_SECRET_KEY", &secret_key)
        .env("CAREPAY_LOG_FORMAT", "json")
        .env("CAREPAY_OPERATOR_URL", &sandbox_url)
        .env("CAREPAY_OPERATOR_PUBLIC_KEYS", format!("bank-sm2=sm2-sm3:{sandbox_public}"))
        .env("CAREPAY_OPERATOR_SIGNING_KEY_FILE", &carepay_key_file)
        .env("CAREPAY_OPERATOR_SIGNING_ALGORITHM", "sm2-sm3")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start carepay");
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let serve = Process(serve);
    let address = loop {
        let line = lines.next().expect("carepay printed its address").unwrap();
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if event["message"] == "carepay listening" {
            break format!("http://{}", event["address"].as_str().unwrap());
        }
    };
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));

    let http = reqwest::Client::new();
    let notify_url = format!("{address}{NOTIFICATIONS_PATH}");
    let set = http.put(format!("{sandbox_url}/sandbox/notify-url")).json(&json!({"url": notify_url})).send().await;
    assert!(set.unwrap().status().is_success());
    let post = |path: &str, body: Value| http.post(format!("{address}{path}")).bearer_auth(&root).json(&body).send();
    let id = |reply: Value| reply["id"].as_str().unwrap_or_else(|| panic!("no id in {reply}")).to_owned();
    let region =
        id(post("/v1/regions", json!({"level": "district", "name": "吴江区"})).await.unwrap().json().await.unwrap());
    let facility = id(post(
        "/v1/facilities",
        json!({"region_id": region, "name": "助餐点", "kind": "meal_canteen", "merchant_wallet_id": WALLET}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap());
    let (key, public_key) = terminal_key_pair();
    let terminal_id =
        id(post("/v1/terminals", json!({"facility_id": facility, "label": "收银台", "public_key": public_key}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap());
    let till = TestTerminal {
        id: terminal_id,
        facility_id: facility,
        key,
        client: connect_to(&address).await,
        clock_skew_s: 0,
    };

    let paid = till.pay("r-1", "12.50", "013412345678900000").await.unwrap();
    assert_eq!(paid.status, PaymentStatus::Succeeded as i32);
    let confirmed = till.pay("r-2", "6.00", "013412345678901111").await.unwrap();
    till.wait_for_status(&confirmed.payment_id, PaymentStatus::Succeeded).await;
    let wallet: Value =
        http.get(format!("{sandbox_url}/sandbox/wallets/{WALLET}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(wallet["balance"], "18.50");
    assert_eq!(wait_for_count(&db, "SELECT COUNT(*) FROM operator_events", 2).await, 2, "both notifications verified");
    drop(serve);
    drop(sandbox);
}

macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    super::$name(carepay::store::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    super::$name(carepay::store::Backend::Postgres).await;
                }
            }
        )+
    };
}

on_both_backends!(
    both_sides_signing_with_sm2_pay_and_notify,
    an_operator_switching_to_sm2_mid_stream_is_refused_nothing,
    serve_and_the_sandbox_operator_processes_pay_and_notify_with_sm2,
);
