//! `/metrics` after a payment, a refused payment and a subsidy batch through the real
//! transports (gRPC for the terminal, REST for the office), on SQLite and on PostgreSQL.
//!
//! A test binary of its own: the metrics recorder is one per process, so only here do the
//! counters move by exactly what the test did.
#![allow(dead_code)]

#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/terminal_client.rs"]
mod terminal_client;

use carepay::domain::money::Amount;
use carepay::store::Backend;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            (series_name == name
                && labels.iter().all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

async fn scrape(app: &TestApp) -> String {
    app.raw(Method::GET, "/metrics", None, None).await.expect(StatusCode::OK).text
}

fn citizen_id(first17: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17.bytes().zip(WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    format!("{first17}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

/// Pay once, refuse once, pay a three-line batch (one line to a wallet that does not exist),
/// and read what `/metrics` says moved.
async fn metrics_count_what_happened(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.root_token.clone();
    let before = scrape(&app).await;

    // A facility with a terminal, and an endpoint for its payment events that nothing delivers
    // to (no callback worker runs here): its deliveries are the backlog.
    let till = terminal_client::terminal(&app, "0021000000000001").await;
    app.post(
        "/v1/callback-endpoints",
        &root,
        json!({"facility_id": till.facility_id, "url": "https://callbacks.example.org/carepay",
               "event_types": ["payment.succeeded", "payment.failed"]}),
    )
    .await
    .expect(StatusCode::CREATED);
    let paid = till.pay("m-1", "12.50", "013412345678900000").await.unwrap();
    assert_eq!(paid.status(), carepay::grpc::proto::PaymentStatus::Succeeded);
    let refused = till.pay("m-2", "12.50", "013412345678902222").await.unwrap();
    assert_eq!(refused.status(), carepay::grpc::proto::PaymentStatus::Failed);

    // A programme, a batch of three lines uploaded, approved and run.
    let district = app.get("/v1/regions", &root).await.body["items"][0]["id"].as_str().unwrap().to_owned();
    let clerk = app.issue_token(&root, "subsidy_clerk", Some(&district)).await;
    let approver = app.issue_token(&root, "subsidy_approver", Some(&district)).await;
    app.sandbox.open_wallet("0031000000000009", "吴江区民政局", 1, Amount::parse("1000.00").unwrap()).unwrap();
    let programme = app
        .post(
            "/v1/subsidy-programmes",
            &root,
            json!({"region_id": district, "name": "高龄津贴", "funding_wallet_id": "0031000000000009",
                   "budget": "1000.00", "per_payment_cap": "100.00", "per_period_cap": "100.00",
                   "designated_merchants": [], "starts_on": "2026-01-01", "ends_on": "2026-12-31"}),
        )
        .await
        .expect(StatusCode::CREATED)
        .id();
    let mut file = String::from("name,citizen_id,wallet_id,amount\n");
    for n in 0..3 {
        let wallet = format!("00210000000090{n:02}");
        if n < 2 {
            app.sandbox.open_wallet(&wallet, &format!("老人{n}"), 2, Amount::ZERO).unwrap();
        }
        file.push_str(&format!("老人{n},{},{wallet},10.00\n", citizen_id(&format!("32058419450315{n:03}"))));
    }
    let uploaded = app
        .client
        .post(format!(
            "{}/v1/subsidy-programmes/{programme}/batches?period=2026-11&line_count=3&total=30.00",
            app.address
        ))
        .bearer_auth(&clerk)
        .header("idempotency-key", "metrics-1")
        .header("content-type", "text/csv")
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let batch: serde_json::Value = uploaded.json().await.unwrap();
    let path = format!("/v1/subsidy-batches/{}", batch["id"].as_str().unwrap());
    app.post(&format!("{path}/approve"), &approver, json!({})).await.expect(StatusCode::OK);
    app.post(&format!("{path}/run"), &clerk, json!({})).await.expect(StatusCode::OK);
    let mut worker_app = app.app.clone();
    worker_app.disbursement.query_delay_ms = 50;
    let worker = tokio::spawn(carepay::disbursement::worker::run(worker_app, std::future::pending()));
    let progress = loop {
        let now = app.get(&path, &clerk).await.expect(StatusCode::OK).body;
        if now["status"] == "completed" {
            break now["progress"].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    worker.abort();
    assert_eq!(progress["succeeded"]["lines"], 2, "{progress}");
    assert_eq!(progress["failed"]["lines"], 1, "{progress}");

    let after = scrape(&app).await;
    let moved = |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    assert_eq!(moved("payments_total", &[("outcome", "succeeded")]), 1.0, "{after}");
    assert_eq!(moved("payments_total", &[("outcome", "failed")]), 1.0, "{after}");
    assert_eq!(moved("transfers_total", &[("outcome", "succeeded")]), 2.0, "{after}");
    assert_eq!(moved("transfers_total", &[("outcome", "failed")]), 1.0, "{after}");
    // Every operator call is timed, by operation and outcome, in buckets.
    assert_eq!(moved("operator_call_duration_seconds_count", &[("operation", "pay_by_code")]), 2.0, "{after}");
    assert_eq!(
        moved("operator_call_duration_seconds_count", &[("operation", "pay_by_code"), ("outcome", "success")])
            + moved("operator_call_duration_seconds_count", &[("operation", "pay_by_code"), ("outcome", "rejected")]),
        2.0,
        "a definite answer each: {after}"
    );
    assert_eq!(moved("operator_call_duration_seconds_count", &[("operation", "transfer")]), 3.0, "{after}");
    assert!(
        after.lines().any(|line| line.starts_with("operator_call_duration_seconds_bucket{")
            && line.contains("operation=\"transfer\"")
            && line.contains("le=\"+Inf\"")),
        "{after}"
    );
    // The backlog is this database's: the two payment events wait for their endpoint.
    assert_eq!(sample(&after, "callback_deliveries_pending", &[]), 2.0, "{after}");
    assert_eq!(sample(&after, "callback_deliveries_due", &[]), 2.0, "{after}");
    assert_eq!(sample(&after, "db_pool_connections_max", &[]), 10.0, "{after}");
    let (idle, in_use) = (
        sample(&after, "db_pool_connections", &[("state", "idle")]),
        sample(&after, "db_pool_connections", &[("state", "in_use")]),
    );
    assert!(idle + in_use >= 1.0 && idle + in_use <= 10.0, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_payments_transfers_operator_calls_backlog_and_pool_on_both_backends() {
    // One after the other: both share this process's counters, and each measures its own change.
    metrics_count_what_happened(Backend::Sqlite).await;
    metrics_count_what_happened(Backend::Postgres).await;
}
