//! A sandbox operator on port 0 with a fresh state per test, an operator client pointed at
//! it over real HTTP, and a notification receiver that checks signatures.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use carepay::domain::money::Amount;
use carepay::operator::client::{OperatorClient, OperatorSettings};
use carepay::operator::clock::Clock;
use carepay::operator::sandbox::notify::NotifySettings;
use carepay::operator::sandbox::{Sandbox, SandboxConfig};
use carepay::operator::signing::{SignatureHeaders, Signer, Verifier};
use carepay::operator::types::{CodePaymentRequest, Notification};
use tokio::sync::mpsc;

pub const MERCHANT: &str = "0021000000000001";
pub const CLIENT_KEY_ID: &str = "carepay-test-1";
/// 2026-11-28 10:00:00 in Shanghai.
pub const NOV_28_10AM_MS: i64 = 1_795_831_200_000;
/// Waits that end a test that would otherwise hang; never asserted on.
pub const WAIT_BOUND: Duration = Duration::from_secs(10);
/// Polls of a state that settles in the background, each after a short pause.
pub const MAX_POLLS: usize = 200;

pub fn fen(n: i64) -> Amount {
    Amount::from_fen(n).unwrap()
}

pub fn test_config(clock: Clock) -> SandboxConfig {
    SandboxConfig {
        clock,
        confirm_delay_ms: 50,
        hang_ms: 3_000,
        notify: NotifySettings {
            time_scale: 0.001,
            max_pending: 256,
            attempt_timeout_ms: 2_000,
            ..NotifySettings::default()
        },
        ..SandboxConfig::default()
    }
}

pub fn test_settings() -> OperatorSettings {
    OperatorSettings { timeout_ms: 800, ..OperatorSettings::default() }
}

pub struct TestOperator {
    pub sandbox: Sandbox,
    pub client: OperatorClient,
    pub base_url: String,
    pub clock: Clock,
    pub client_signer: Arc<Signer>,
    pub http: reqwest::Client,
}

pub async fn spawn_operator() -> TestOperator {
    spawn_operator_with(test_config(Clock::system()), test_settings()).await
}

pub async fn spawn_operator_with(config: SandboxConfig, settings: OperatorSettings) -> TestOperator {
    let clock = config.clock.clone();
    let sandbox = Sandbox::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(carepay::operator::sandbox::serve(listener, sandbox.clone()));

    let client_signer = Arc::new(Signer::generate(CLIENT_KEY_ID, clock.clone()).unwrap());
    sandbox.register_client_key(CLIENT_KEY_ID, client_signer.verifying_key()).unwrap();
    let verifier = Arc::new(Verifier::new(clock.clone()));
    verifier.add_key(&sandbox.key_id(), sandbox.verifying_key()).unwrap();
    let client = OperatorClient::new(
        OperatorSettings { base_url: base_url.clone(), ..settings },
        client_signer.clone(),
        verifier,
    )
    .expect("operator client");
    TestOperator { sandbox, client, base_url, clock, client_signer, http: reqwest::Client::new() }
}

/// A payer code with the given last four digits; `payer` picks the payer's wallet.
pub fn payer_code(payer: u32, ending: &str) -> String {
    format!("01{payer:012}{ending}")
}

pub fn code_payment(out_trade_no: &str, amount_fen: i64, code: &str) -> CodePaymentRequest {
    CodePaymentRequest {
        merchant_wallet_id: MERCHANT.to_owned(),
        out_trade_no: out_trade_no.to_owned(),
        amount: fen(amount_fen),
        payer_code: code.to_owned(),
        description: String::from("午餐"),
        terminal_id: String::from("trm_01"),
    }
}

/// One notification as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub notification: Notification,
    pub verified: bool,
    pub answered: StatusCode,
}

/// A local notification endpoint: verifies the sandbox's signature, records each arrival
/// and answers with the queued statuses (then 200).
pub struct Receiver {
    pub arrivals: mpsc::UnboundedReceiver<Received>,
    pub answers: Arc<Mutex<VecDeque<StatusCode>>>,
}

#[derive(Clone)]
struct ReceiverState {
    verifier: Arc<Verifier>,
    answers: Arc<Mutex<VecDeque<StatusCode>>>,
    arrivals: mpsc::UnboundedSender<Received>,
}

pub async fn spawn_receiver(operator: &TestOperator) -> Receiver {
    let verifier = Arc::new(Verifier::new(operator.clock.clone()));
    let sandbox = &operator.sandbox;
    verifier.add_key(&sandbox.key_id(), sandbox.verifying_key()).unwrap();
    let answers = Arc::new(Mutex::new(VecDeque::new()));
    let (sender, arrivals) = mpsc::unbounded_channel();
    let state = ReceiverState { verifier, answers: answers.clone(), arrivals: sender };
    let app = axum::Router::new().route("/notify", axum::routing::post(receive)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    sandbox.set_notify_url(Some(url));
    Receiver { arrivals, answers }
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let verified = SignatureHeaders::from_header_map(&headers)
        .and_then(|signature| state.verifier.verify_response(&signature, &body))
        .is_ok();
    let answered = state.answers.lock().unwrap().pop_front().unwrap_or(StatusCode::OK);
    let notification: Notification = serde_json::from_slice(&body).expect("notification body");
    let _ = state.arrivals.send(Received { notification, verified, answered });
    answered
}

impl Receiver {
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT_BOUND, self.arrivals.recv())
            .await
            .expect("a notification within the wait bound")
            .expect("receiver open")
    }
}

/// A signed raw request, for tests that need to control the headers.
pub async fn signed_raw(
    operator: &TestOperator,
    method: &str,
    path: &str,
    body: &str,
    signature: &SignatureHeaders,
) -> reqwest::Response {
    let mut request = operator
        .http
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{}", operator.base_url, path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in signature.pairs() {
        request = request.header(name, value);
    }
    request.send().await.expect("sandbox reachable")
}
