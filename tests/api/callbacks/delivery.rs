//! Delivery: signed, retried on the schedule, Retry-After and 410 obeyed, failing endpoints
//! disabled and their owner told, replay, the outbox's transactionality, and several
//! workers on one database.

use std::sync::Arc;

use carepay::callbacks::worker::WorkerSettings;
use carepay::callbacks::{EventOwner, EventType, NewEvent};
use carepay::domain::callbacks::RetrySchedule;
use carepay::domain::ids::FacilityId;
use carepay::domain::time::UnixMs;
use carepay::store::callbacks::{ClaimStrategy, HealthRules};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::receiver::{Receiver, by_id};
use super::{create_endpoint, expected_v1, fast_settings, publish, signatures, start_worker, wait_for_items, world};
use crate::backend_tests;
use crate::helpers::TestApp;

fn all_settled(items: &[Value], count: usize, status: &str) -> bool {
    items.len() == count && items.iter().all(|item| item["status"] == status)
}

async fn every_event_arrives_signed_after_failures_exactly_on_the_retry_schedule(app: TestApp) {
    let w = world(&app).await;
    // Down for the first three attempts of every event, then up.
    let receiver = Receiver::start(Arc::new(|request| {
        if request.nth <= 3 { (StatusCode::SERVICE_UNAVAILABLE, None) } else { (StatusCode::OK, None) }
    }))
    .await;
    let (endpoint, secret, _) = create_endpoint(
        &app,
        &app.root_token,
        json!({"facility_id": w.facility, "url": receiver.url("/hook"), "event_types": ["payment.succeeded", "refund.succeeded"]}),
    )
    .await;
    let settings = fast_settings();
    let schedule = settings.schedule.clone();
    let worker = start_worker(&app, settings);
    let mut events = Vec::new();
    for n in 0..3 {
        events.push(publish(&app, &w.facility, EventType::PaymentSucceeded, &format!("pay_{n}"), n + 1).await);
    }
    // Not subscribed: never sent.
    publish(&app, &w.facility, EventType::PaymentFailed, "pay_x", 1).await;

    let deliveries =
        wait_for_items(&app, &format!("/v1/callback-endpoints/{endpoint}/deliveries"), "3 deliveries", |items| {
            all_settled(items, 3, "succeeded")
        })
        .await;
    assert!(deliveries.iter().all(|d| d["attempts"] == 4 && d["last_status_code"] == 200), "{deliveries:?}");
    let received = receiver.received();
    let groups = by_id(&received);
    assert_eq!(groups.len(), 3);
    for event in &events {
        let requests = &groups[event.as_str()];
        assert_eq!(requests.len(), 4, "three failures and the success, nothing more");
        for request in requests {
            assert!(signatures(request).contains(&expected_v1(&secret, request)), "v1 signature verifies");
            assert_eq!(request.body, requests[0].body, "the body is the same on every attempt");
            let body = request.json();
            assert_eq!(body["type"], "payment.succeeded");
            assert!(body["timestamp"].as_str().unwrap().ends_with("+08:00"));
            assert!(body["data"]["object_version"].as_i64().is_some());
            assert_eq!(body["data"]["note"], "午餐 🍚");
        }
    }

    // The attempts follow the schedule: each next attempt is due the scheduled delay
    // (±10% jitter) after the failure, and is never made before it is due.
    for event in &events {
        let attempts = app
            .get(&format!("/v1/callback-endpoints/{endpoint}/attempts?event_id={event}"), &app.root_token)
            .await
            .expect(StatusCode::OK);
        let attempts = attempts.body["items"].as_array().unwrap().clone();
        assert_eq!(attempts.len(), 4);
        for (index, attempt) in attempts.iter().enumerate() {
            assert_eq!(attempt["attempt"], index as i64 + 1);
            assert!(attempt["latency_ms"].as_i64().unwrap() >= 0);
            if index < 3 {
                assert_eq!(attempt["status_code"], 503);
                assert_eq!(attempt["response_excerpt"], "receiver says hello");
                let delay = schedule.delays_ms()[index];
                let due = attempt["next_attempt_at_ms"].as_i64().unwrap();
                let finished = attempt["started_at_ms"].as_i64().unwrap() + attempt["latency_ms"].as_i64().unwrap();
                let waited = due - finished;
                assert!(
                    (delay * 9 / 10..=delay * 11 / 10).contains(&waited),
                    "attempt {index}: next due {waited} ms after it ended; the schedule says {delay} ± 10%"
                );
                let next_started = attempts[index + 1]["started_at_ms"].as_i64().unwrap();
                assert!(next_started >= due, "attempt {} made before it was due", index + 2);
            } else {
                assert_eq!(attempt["status_code"], 200);
                assert!(attempt["next_attempt_at"].is_null());
            }
        }
    }
    worker.stop().await;
}

async fn retry_after_is_honoured_and_a_410_disables_the_endpoint_and_tells_its_owner(app: TestApp) {
    let w = world(&app).await;
    let receiver = Receiver::start(Arc::new(|request| match request.path.as_str() {
        "/gone" => (StatusCode::GONE, None),
        _ if request.nth == 1 => (StatusCode::TOO_MANY_REQUESTS, Some("1")),
        _ => (StatusCode::NO_CONTENT, None),
    }))
    .await;
    let root = &app.root_token;
    let (watcher, watcher_secret, _) = create_endpoint(
        &app,
        root,
        json!({"facility_id": w.facility, "url": receiver.url("/watch"), "event_types": ["endpoint.disabled", "refund.failed"]}),
    )
    .await;
    let (gone, _, _) = create_endpoint(
        &app,
        root,
        json!({"facility_id": w.facility, "url": receiver.url("/gone"), "event_types": ["refund.failed"]}),
    )
    .await;
    let worker = start_worker(&app, fast_settings());
    let refund = publish(&app, &w.facility, EventType::RefundFailed, "ref_1", 2).await;

    let received = receiver
        .wait_until("the refund twice and the endpoint.disabled notice on /watch", |all| {
            all.iter().filter(|r| r.path == "/watch" && r.nth == 2).count() == 2
        })
        .await;
    let watch: Vec<_> = received.iter().filter(|r| r.path == "/watch").collect();
    let notice = watch.iter().find(|r| r.json()["type"] == "endpoint.disabled").expect("owner told");
    assert!(signatures(notice).contains(&expected_v1(&watcher_secret, notice)));
    assert_eq!(notice.json()["data"]["endpoint_id"], gone.as_str());
    assert_eq!(notice.json()["data"]["reason"], "gone");
    assert_eq!(received.iter().filter(|r| r.path == "/gone").count(), 1, "410 is not retried");

    let disabled = app.get(&format!("/v1/callback-endpoints/{gone}"), root).await.expect(StatusCode::OK);
    assert_eq!(disabled.body["status"], "disabled");
    assert_eq!(disabled.body["disabled_reason"], "gone");
    wait_for_items(&app, &format!("/v1/callback-endpoints/{gone}/deliveries"), "the 410 delivery failed", |items| {
        all_settled(items, 1, "failed")
    })
    .await;

    // 429 with Retry-After: 1 waits at least a second, though the schedule says 100 ms.
    wait_for_items(&app, &format!("/v1/callback-endpoints/{watcher}/deliveries"), "watcher deliveries", |items| {
        all_settled(items, 2, "succeeded")
    })
    .await;
    let attempts = app
        .get(&format!("/v1/callback-endpoints/{watcher}/attempts?event_id={refund}"), root)
        .await
        .expect(StatusCode::OK);
    let attempts = attempts.body["items"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status_code"], 429);
    let waited = attempts[1]["started_at_ms"].as_i64().unwrap() - attempts[0]["started_at_ms"].as_i64().unwrap();
    assert!(waited >= 1_000, "Retry-After ignored: retried after {waited} ms");

    // A later event for the disabled endpoint is recorded as failed, not sent.
    publish(&app, &w.facility, EventType::RefundFailed, "ref_2", 1).await;
    wait_for_items(
        &app,
        &format!("/v1/callback-endpoints/{gone}/deliveries?status=failed"),
        "second failed",
        |items| items.len() == 2,
    )
    .await;
    assert_eq!(receiver.received_on("/gone").len(), 1);
    worker.stop().await;
}

async fn an_endpoint_failing_too_long_is_disabled_and_replay_recovers_what_it_missed(app: TestApp) {
    let w = world(&app).await;
    let receiver = Receiver::start(Arc::new(|_| (StatusCode::INTERNAL_SERVER_ERROR, None))).await;
    let root = &app.root_token;
    let (endpoint, _, _) = create_endpoint(
        &app,
        root,
        json!({"facility_id": w.facility, "url": receiver.url("/down"), "event_types": ["transfer.succeeded"]}),
    )
    .await;
    let mut settings = fast_settings();
    settings.health = HealthRules { failure_threshold: 4, failure_window_ms: 0 };
    settings.schedule = RetrySchedule::new(vec![50; 10]).unwrap();
    let worker = start_worker(&app, settings);
    let before = UnixMs::now();
    let first = publish(&app, &w.facility, EventType::TransferSucceeded, "tr_1", 1).await;
    let second = publish(&app, &w.facility, EventType::TransferSucceeded, "tr_2", 1).await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let reply = app.get(&format!("/v1/callback-endpoints/{endpoint}"), root).await.expect(StatusCode::OK);
        if reply.body["status"] == "disabled" {
            assert_eq!(reply.body["disabled_reason"], "failing");
            assert!(reply.body["consecutive_failures"].as_i64().unwrap() >= 4);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never disabled: {}", reply.text);
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    wait_for_items(&app, &format!("/v1/callback-endpoints/{endpoint}/deliveries"), "both failed", |items| {
        all_settled(items, 2, "failed")
    })
    .await;

    // The receiver comes back; its owner re-enables the endpoint and replays what failed.
    receiver.set_script(Arc::new(|_| (StatusCode::OK, None)));
    app.call(Method::PATCH, &format!("/v1/callback-endpoints/{endpoint}"), root, Some(json!({"enabled": true})))
        .await
        .expect(StatusCode::OK);
    let since = before.to_rfc3339_shanghai();
    let replayed = app
        .post(&format!("/v1/callback-endpoints/{endpoint}/replay-failed"), root, json!({"since": since}))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(replayed.body["queued"], 2);
    wait_for_items(&app, &format!("/v1/callback-endpoints/{endpoint}/deliveries"), "both delivered", |items| {
        all_settled(items, 2, "succeeded")
    })
    .await;
    let delivered: Vec<_> =
        receiver.received().into_iter().filter(|r| r.nth > 1 && r.webhook_id == first.as_str()).collect();
    assert!(!delivered.is_empty(), "replay keeps the webhook-id");

    // One event again, on request; an event of another owner is refused.
    let again = app
        .post(&format!("/v1/callback-endpoints/{endpoint}/replay"), root, json!({"event_id": second.as_str()}))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(again.body["queued"], 1);
    let count = receiver.received().iter().filter(|r| r.webhook_id == second.as_str()).count();
    receiver
        .wait_until("the replayed event", |all| all.iter().filter(|r| r.webhook_id == second.as_str()).count() > count)
        .await;
    let other_town = app.create_region(root, None, "district", "相城区").await;
    let other = app.create_facility(root, &other_town, "别家", "0021000000000003").await;
    let foreign = publish(&app, &other, EventType::TransferSucceeded, "tr_9", 1).await;
    app.post(&format!("/v1/callback-endpoints/{endpoint}/replay"), root, json!({"event_id": foreign.as_str()}))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_EVENT");
    worker.stop().await;
}

async fn no_event_exists_for_a_rolled_back_change_and_a_committed_one_is_always_delivered(app: TestApp) {
    let w = world(&app).await;
    let receiver = Receiver::accepting().await;
    let (endpoint, _, _) = create_endpoint(
        &app,
        &app.root_token,
        json!({"facility_id": w.facility, "url": receiver.url("/hook"), "event_types": ["payment.reversed"]}),
    )
    .await;
    let worker = start_worker(&app, fast_settings());
    let pool = app.db.raw_pool().await;
    let event = |object_id: &str| NewEvent {
        owner: EventOwner::Facility(FacilityId::parse(&w.facility).unwrap()),
        event_type: EventType::PaymentReversed,
        object_id: object_id.to_owned(),
        object_version: 2,
        data: json!({}),
    };
    // The state change and its event in one transaction, rolled back...
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE facilities SET name = '改名', version = version + 1 WHERE id = $1")
        .bind(&w.facility)
        .execute(&mut *tx)
        .await
        .unwrap();
    let rolled_back =
        carepay::store::callbacks::enqueue_in(&mut tx, &event("pay_rolled_back"), UnixMs::now()).await.unwrap();
    tx.rollback().await.unwrap();
    // ...and committed.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE facilities SET name = '新名', version = version + 1 WHERE id = $1")
        .bind(&w.facility)
        .execute(&mut *tx)
        .await
        .unwrap();
    let committed =
        carepay::store::callbacks::enqueue_in(&mut tx, &event("pay_committed"), UnixMs::now()).await.unwrap();
    tx.commit().await.unwrap();
    let later = publish(&app, &w.facility, EventType::PaymentReversed, "pay_later", 1).await;

    let received = receiver
        .wait_until("the committed and the later event", |all| {
            [&committed, &later].iter().all(|id| all.iter().any(|r| r.webhook_id == id.as_str()))
        })
        .await;
    assert!(received.iter().all(|r| r.webhook_id != rolled_back.as_str()));
    assert!(received.iter().all(|r| r.json()["data"]["object_id"] != "pay_rolled_back"));
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM callback_events WHERE id = $1")
        .bind(rolled_back.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "the rolled-back event never existed");
    let facility = app.get(&format!("/v1/facilities/{}", w.facility), &app.root_token).await.expect(StatusCode::OK);
    assert_eq!(facility.body["name"], "新名");
    wait_for_items(&app, &format!("/v1/callback-endpoints/{endpoint}/deliveries"), "two deliveries", |items| {
        all_settled(items, 2, "succeeded")
    })
    .await;
    worker.stop().await;
}

async fn workers_sharing_a_database_never_send_the_same_delivery_twice(app: TestApp) {
    let w = world(&app).await;
    let receiver = Receiver::accepting().await;
    let (endpoint, _, _) = create_endpoint(
        &app,
        &app.root_token,
        json!({"facility_id": w.facility, "url": receiver.url("/hook"), "event_types": ["batch.completed"]}),
    )
    .await;
    // Two instances: separate pools on the same database, the same secret key.
    let mut second_app =
        carepay::app::App::new(app.db.store().await, Default::default()).with_secrets(app.app.secrets.clone());
    second_app.callback_egress = app.app.callback_egress.clone();
    let mut settings = fast_settings();
    settings.batch_size = 7;
    // One claims with the portable compare-and-set, the other with the backend's best
    // (SKIP LOCKED on PostgreSQL): both kinds of claim side by side.
    let portable = WorkerSettings { claim_strategy: Some(ClaimStrategy::CompareAndSet), ..settings.clone() };
    let first = start_worker(&app, portable);
    let second = carepay::callbacks::worker::spawn(second_app, settings).unwrap();
    const EVENTS: usize = 150;
    for n in 0..EVENTS {
        publish(&app, &w.facility, EventType::BatchCompleted, &format!("bat_{n}"), 1).await;
    }
    wait_for_items(
        &app,
        &format!("/v1/callback-endpoints/{endpoint}/deliveries?limit=200"),
        "all delivered",
        |items| all_settled(items, EVENTS, "succeeded"),
    )
    .await;
    first.stop().await;
    second.stop().await;
    let received = receiver.received();
    let groups = by_id(&received);
    assert_eq!(groups.len(), EVENTS);
    assert!(groups.values().all(|requests| requests.len() == 1), "some delivery was sent twice");
}

backend_tests!(
    every_event_arrives_signed_after_failures_exactly_on_the_retry_schedule,
    retry_after_is_honoured_and_a_410_disables_the_endpoint_and_tells_its_owner,
    an_endpoint_failing_too_long_is_disabled_and_replay_recovers_what_it_missed,
    no_event_exists_for_a_rolled_back_change_and_a_committed_one_is_always_delivered,
    workers_sharing_a_database_never_send_the_same_delivery_twice,
);
