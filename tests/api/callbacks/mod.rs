//! Callbacks out, end to end: endpoints through the REST API, a real delivery worker, and
//! real receivers (a recording axum server, the Python `standardwebhooks` package, and the
//! `carepay` binary killed with SIGKILL). Each test runs on SQLite and on PostgreSQL.

mod crash;
mod delivery;
mod egress;
mod endpoints;
mod interop;
pub mod receiver;
mod settings;

use std::time::Duration;

use base64::Engine as _;
use carepay::callbacks::worker::{WorkerHandle, WorkerSettings};
use carepay::callbacks::{EventOwner, EventType, NewEvent};
use carepay::domain::callbacks::RetrySchedule;
use carepay::domain::ids::{EventId, FacilityId};
use carepay::store::callbacks::HealthRules;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use receiver::Received;

/// Time scaled down: milliseconds where production has minutes and hours.
pub fn fast_settings() -> WorkerSettings {
    WorkerSettings {
        concurrency: 16,
        request_timeout_ms: 2_000,
        poll_interval_ms: 20,
        lease_ms: 10_000,
        batch_size: 64,
        health: HealthRules { failure_threshold: 1_000, failure_window_ms: 86_400_000 },
        schedule: RetrySchedule::new(vec![100, 200, 300, 400]).unwrap(),
        ..WorkerSettings::default()
    }
}

pub fn start_worker(app: &TestApp, settings: WorkerSettings) -> WorkerHandle {
    carepay::callbacks::worker::spawn(app.app.clone(), settings).expect("worker starts")
}

/// A district, a town in it, and a facility in the town.
pub struct World {
    pub district: String,
    pub town: String,
    pub facility: String,
}

pub async fn world(app: &TestApp) -> World {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town = app.create_region(root, Some(&district), "town", "松陵街道").await;
    let facility = app.create_facility(root, &town, "流虹社区助餐点", "0021000000000001").await;
    World { district, town, facility }
}

/// Register an endpoint; returns (endpoint id, whsec secret, the full reply body).
pub async fn create_endpoint(app: &TestApp, token: &str, body: Value) -> (String, String, Value) {
    let reply = app.post("/v1/callback-endpoints", token, body).await.expect(StatusCode::CREATED);
    let id = reply.body["endpoint"]["id"].as_str().expect("endpoint id").to_owned();
    let secret = reply.body["secret"].as_str().expect("secret").to_owned();
    (id, secret, reply.body)
}

pub async fn publish(app: &TestApp, facility: &str, event_type: EventType, object_id: &str, version: i64) -> EventId {
    app.app
        .publish_event(NewEvent {
            owner: EventOwner::Facility(FacilityId::parse(facility).unwrap()),
            event_type,
            object_id: object_id.to_owned(),
            object_version: version,
            data: json!({"amount": "12.50", "payer": "张*", "note": "午餐 🍚"}),
        })
        .await
        .expect("event published")
}

/// The `v1` signature a receiver holding `whsec` expects for this request.
pub fn expected_v1(whsec: &str, request: &Received) -> String {
    let key = base64::engine::general_purpose::STANDARD.decode(whsec.strip_prefix("whsec_").unwrap()).unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let message = format!("{}.{}.{}", request.webhook_id, request.timestamp, request.body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, message.as_bytes())))
}

pub fn signatures(request: &Received) -> Vec<String> {
    request.signature.split(' ').map(str::to_owned).collect()
}

/// Poll a listing of the API until `done` holds for its items.
pub async fn wait_for_items(app: &TestApp, path: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = app.get(path, &app.root_token).await.expect(StatusCode::OK);
        let items = reply.body["items"].as_array().cloned().unwrap_or_default();
        if done(&items) {
            return items;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
