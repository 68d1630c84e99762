//! `kill -9` of the service with callbacks queued and in flight: after a restart every event
//! is delivered.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use carepay::callbacks::EventType;
use carepay::store::Backend;
use reqwest::StatusCode;
use serde_json::json;

use super::publish;
use super::receiver::Receiver;
use crate::helpers::{TestDatabase, spawn_app_with};

/// `carepay serve` on port 0 with time scaled down, its callbacks allowed to reach loopback
/// receivers; returns the child and its address.
fn serve(db_url: &str, secret_key: &str) -> (Child, String) {
    serve_with(db_url, secret_key, &[("CAREPAY_CALLBACK_ALLOWED_NETWORKS", "127.0.0.0/8")])
}

/// `carepay serve` as above, with `env` added to its environment.
pub(super) fn serve_with(db_url: &str, secret_key: &str, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db_url])
        .envs(env.iter().copied())
        .env("CAREPAY_SECRET_KEY", secret_key)
        .env("CAREPAY_LOG_FORMAT", "json")
        .env("CAREPAY_CALLBACK_LEASE_MS", "1500")
        .env("CAREPAY_CALLBACK_REQUEST_TIMEOUT_MS", "1000")
        .env("CAREPAY_CALLBACK_POLL_INTERVAL_MS", "20")
        .env("CAREPAY_CALLBACK_RETRY_SCHEDULE_MS", "100,100,100,100,100,100,100,100,100,100")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start carepay");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("carepay printed its address").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["message"] == "carepay listening" {
            break event["address"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    (child, format!("http://{address}"))
}

/// An admin token from `carepay token create`, as an operator issues the first one.
pub(super) fn command_line_token(db_url: &str, secret_key: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["token", "create", "--role", "admin", "--database-url", db_url])
        .env("CAREPAY_SECRET_KEY", secret_key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Through the REST API at `address`: a district, a facility in it, and an endpoint of the
/// facility at `url`. Returns the facility's and the endpoint's ids.
pub(super) async fn facility_with_endpoint(address: &str, token: &str, url: &str) -> (String, String) {
    // The test's own requests never go through a proxy, whatever the environment says.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |path: &str, body: serde_json::Value| {
        client.post(format!("{address}{path}")).bearer_auth(token).json(&body).send()
    };
    let district: serde_json::Value =
        post("/v1/regions", json!({"level": "district", "name": "吴江区"})).await.unwrap().json().await.unwrap();
    let facility: serde_json::Value = post(
        "/v1/facilities",
        json!({"region_id": district["id"], "name": "敬老院", "kind": "nursing_home", "merchant_wallet_id": "0021000000000001"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let facility = facility["id"].as_str().unwrap().to_owned();
    let created = post(
        "/v1/callback-endpoints",
        json!({"facility_id": facility, "url": url, "event_types": ["payment.succeeded"]}),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let endpoint: serde_json::Value = created.json().await.unwrap();
    (facility, endpoint["endpoint"]["id"].as_str().unwrap().to_owned())
}

async fn undelivered_callbacks_are_all_delivered_after_a_kill_9_and_restart(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let token = command_line_token(&db.url, &key);

    let receiver = Receiver::accepting().await;
    receiver.stall(true);
    let (mut first, address) = serve(&db.url, &key);
    let client = reqwest::Client::new();
    let (facility, endpoint) = facility_with_endpoint(&address, &token, &receiver.url("/hook")).await;

    // Another process publishes into the same database, as payments will.
    let publisher = spawn_app_with(db, Default::default()).await;
    const EVENTS: usize = 40;
    let mut events = HashSet::new();
    for n in 0..EVENTS {
        events.insert(
            publish(&publisher, &facility, EventType::PaymentSucceeded, &format!("pay_{n}"), 1).await.into_string(),
        );
    }
    // Requests are in flight (the receiver hangs) when carepay is killed.
    receiver.wait_until("requests in flight", |all| all.len() >= 5).await;
    first.kill().expect("SIGKILL carepay");
    first.wait().unwrap();
    receiver.stall(false);

    let (mut second, address) = serve(&publisher.db.url, &key);
    let delivered = receiver
        .wait_until("every event after the restart", |all| {
            let seen: HashSet<_> = all.iter().map(|r| r.webhook_id.clone()).collect();
            events.iter().all(|id| seen.contains(id))
        })
        .await;
    assert!(delivered.iter().all(|r| events.contains(&r.webhook_id)));
    // And carepay knows they all succeeded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let page: serde_json::Value = client
            .get(format!("{address}/v1/callback-endpoints/{endpoint}/deliveries?status=succeeded&limit=200"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["items"].as_array().unwrap().len() == EVENTS {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not all recorded as succeeded: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill").args(["-TERM", &second.id().to_string()]).status();
    second.wait().unwrap();
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_callbacks_survive_a_kill_9_on_sqlite() {
    undelivered_callbacks_are_all_delivered_after_a_kill_9_and_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_callbacks_survive_a_kill_9_on_postgres() {
    undelivered_callbacks_are_all_delivered_after_a_kill_9_and_restart(Backend::Postgres).await;
}
