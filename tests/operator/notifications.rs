use axum::http::StatusCode;
use carepay::operator::sandbox::faults::NotificationFault;
use carepay::operator::types::{NotificationType, RefundRequest, TransferRequest};

use crate::helpers::*;

#[tokio::test]
async fn a_payment_notification_arrives_signed_with_the_query_result() {
    let operator = spawn_operator().await;
    let mut receiver = spawn_receiver(&operator).await;
    operator.client.pay_by_code(&code_payment("P-n", 1_250, &payer_code(1, "0000"))).await.unwrap();
    let received = receiver.next().await;
    assert!(received.verified);
    assert_eq!(received.notification.event_type, NotificationType::TradeSuccess);
    assert!(received.notification.id.starts_with("evt_"));
    assert_eq!(received.notification.resource["out_trade_no"], "P-n");
    assert_eq!(received.notification.resource["status"], "SUCCESS");
    assert_eq!(received.notification.resource["amount"], "12.50");
}

#[tokio::test]
async fn refund_and_transfer_notifications_name_their_out_numbers() {
    let operator = spawn_operator().await;
    let mut receiver = spawn_receiver(&operator).await;
    operator.client.pay_by_code(&code_payment("P-rn", 1_000, &payer_code(1, "0000"))).await.unwrap();
    assert_eq!(receiver.next().await.notification.event_type, NotificationType::TradeSuccess);
    let refund = RefundRequest {
        merchant_wallet_id: MERCHANT.to_owned(),
        out_trade_no: String::from("P-rn"),
        out_refund_no: String::from("R-rn"),
        amount: fen(300),
        reason: String::new(),
    };
    operator.client.refund(&refund).await.unwrap();
    let received = receiver.next().await;
    assert_eq!(received.notification.event_type, NotificationType::RefundSuccess);
    assert_eq!(received.notification.resource["out_refund_no"], "R-rn");

    operator.sandbox.open_wallet("0041000000000001", "民政局", 1, fen(10_000)).unwrap();
    let transfer = TransferRequest {
        payer_wallet_id: String::from("0041000000000001"),
        out_transfer_no: String::from("T-rn"),
        payee_wallet_id: String::from("0031000000000404"),
        payee_name: String::from("无名"),
        amount: fen(100),
        memo: String::new(),
    };
    operator.client.transfer(&transfer).await.unwrap();
    let received = receiver.next().await;
    assert_eq!(received.notification.event_type, NotificationType::TransferFailed);
    assert_eq!(received.notification.resource["out_transfer_no"], "T-rn");
    assert_eq!(received.notification.resource["fail_code"], "WALLET_NOT_FOUND");
}

#[tokio::test]
async fn a_notification_answered_500_is_retried_until_a_2xx() {
    let operator = spawn_operator().await;
    let mut receiver = spawn_receiver(&operator).await;
    receiver.answers.lock().unwrap().extend([StatusCode::INTERNAL_SERVER_ERROR; 3]);
    operator.client.pay_by_code(&code_payment("P-retry", 100, &payer_code(1, "0000"))).await.unwrap();
    let mut arrivals = Vec::new();
    for _ in 0..4 {
        arrivals.push(receiver.next().await);
    }
    let ids: Vec<_> = arrivals.iter().map(|received| received.notification.id.clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let answered: Vec<_> = arrivals.iter().map(|received| received.answered.as_u16()).collect();
    assert_eq!(answered, [500, 500, 500, 200]);
    assert!(arrivals.iter().all(|received| received.verified));
}

#[tokio::test]
async fn duplicated_notifications_arrive_several_times_with_one_id() {
    let operator = spawn_operator().await;
    let mut receiver = spawn_receiver(&operator).await;
    operator.sandbox.faults().disturb_notifications(NotificationFault::Duplicate { copies: 2 }, 1).unwrap();
    operator.client.pay_by_code(&code_payment("P-dupn", 100, &payer_code(1, "0000"))).await.unwrap();
    let ids =
        [receiver.next().await, receiver.next().await, receiver.next().await].map(|received| received.notification.id);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

#[tokio::test]
async fn a_reordered_notification_arrives_after_the_next_one() {
    let operator = spawn_operator().await;
    let mut receiver = spawn_receiver(&operator).await;
    operator.sandbox.faults().disturb_notifications(NotificationFault::Reorder, 1).unwrap();
    operator.client.pay_by_code(&code_payment("P-first", 100, &payer_code(1, "0000"))).await.unwrap();
    operator.client.pay_by_code(&code_payment("P-second", 100, &payer_code(1, "0000"))).await.unwrap();
    let first = receiver.next().await;
    let second = receiver.next().await;
    assert_eq!(first.notification.resource["out_trade_no"], "P-second");
    assert_eq!(second.notification.resource["out_trade_no"], "P-first");
}

#[tokio::test]
async fn a_dropped_notification_never_arrives() {
    let operator = spawn_operator().await;
    let mut receiver = spawn_receiver(&operator).await;
    operator.sandbox.faults().disturb_notifications(NotificationFault::Drop, 1).unwrap();
    operator.client.pay_by_code(&code_payment("P-lost", 100, &payer_code(1, "0000"))).await.unwrap();
    operator.client.pay_by_code(&code_payment("P-kept", 100, &payer_code(1, "0000"))).await.unwrap();
    assert_eq!(receiver.next().await.notification.resource["out_trade_no"], "P-kept");
}

/// A receiver that answers each notification after a pause and records how many it was
/// holding at once.
struct SlowReceiver {
    open: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    ids: std::sync::Mutex<std::collections::HashSet<String>>,
}

async fn slow_receive(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<SlowReceiver>>,
    body: axum::body::Bytes,
) -> StatusCode {
    use std::sync::atomic::Ordering;
    let open = state.open.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak.fetch_max(open, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let notification: carepay::operator::types::Notification = serde_json::from_slice(&body).unwrap();
    state.ids.lock().unwrap().insert(notification.resource["out_trade_no"].as_str().unwrap().to_owned());
    state.open.fetch_sub(1, Ordering::SeqCst);
    StatusCode::OK
}

#[tokio::test]
async fn a_burst_of_notifications_is_sent_a_few_at_a_time_and_none_is_dropped() {
    use carepay::operator::clock::Clock;
    use carepay::operator::sandbox::notify::NotifySettings;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let mut config = test_config(Clock::system());
    config.notify = NotifySettings { max_concurrent_sends: 4, max_pending: 1_000, ..config.notify };
    let operator = Arc::new(spawn_operator_with(config, test_settings()).await);
    let state = Arc::new(SlowReceiver {
        open: Default::default(),
        peak: Default::default(),
        ids: std::sync::Mutex::new(Default::default()),
    });
    let app = axum::Router::new().route("/notify", axum::routing::post(slow_receive)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    operator.sandbox.set_notify_url(Some(url));

    const BURST: usize = 120;
    let mut payments = tokio::task::JoinSet::new();
    for n in 0..BURST {
        let operator = operator.clone();
        payments.spawn(async move {
            operator.client.pay_by_code(&code_payment(&format!("P-burst-{n}"), 100, &payer_code(1, "0000"))).await
        });
    }
    while let Some(paid) = payments.join_next().await {
        paid.unwrap().unwrap();
    }
    for _ in 0..MAX_POLLS * 5 {
        if state.ids.lock().unwrap().len() == BURST {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(state.ids.lock().unwrap().len(), BURST, "every payment's notification arrived");
    assert_eq!(operator.sandbox.notifier().dropped(), 0);
    let peak = state.peak.load(Ordering::SeqCst);
    assert!((1..=4).contains(&peak), "at most 4 notifications were open at once, saw {peak}");
}
