//! Taking payments through the real gRPC transport against the sandbox operator.

use std::sync::Arc;

use carepay::domain::ledger::AccountCode;
use carepay::grpc::proto::{PaymentStatus, RefundStatus};
use carepay::operator::sandbox::faults::NotificationFault;
use tonic::Code;

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::terminal_client::terminal;

backend_tests!(
    a_payer_code_payment_succeeds_and_books_a_balanced_entry,
    a_definite_refusal_fails_the_payment_and_books_nothing,
    a_hundred_identical_concurrent_requests_charge_once,
    a_reused_request_id_with_another_body_is_refused,
    fifty_concurrent_partial_refunds_never_exceed_the_payment,
    a_timeout_after_charging_is_resolved_by_query_and_booked_once,
    a_server_error_after_charging_is_resolved_by_query,
    a_payment_the_payer_confirms_succeeds,
    a_payment_never_confirmed_is_reversed_after_the_deadline,
    duplicated_and_reordered_notifications_change_nothing_after_the_first,
    a_same_day_reversal_refunds_in_full_and_books_it_back,
    a_dynamic_qr_is_paid_by_scan,
    a_dynamic_qr_that_is_not_paid_closes,
    bad_amounts_and_codes_are_refused_and_record_nothing,
    a_charge_the_operator_never_received_fails_only_after_a_definite_answer,
    every_outcome_is_called_back_to_the_facility_once_with_its_version,
    duplicates_spread_over_two_instances_still_make_one_payment,
    callers_over_their_rate_are_told_when_to_retry_and_others_are_unaffected,
    a_refund_whose_answer_was_lost_is_resolved_by_query_and_booked_once,
    request_ids_are_remembered_until_their_retention_ends,
);

const WALLET: &str = "0021000000000001";

async fn wallet_balance_fen(app: &TestApp) -> i64 {
    let code = AccountCode::parse(&format!("wallet:{WALLET}")).unwrap();
    app.app.store.account_totals(&code).await.unwrap().map(|totals| totals.balance_fen()).unwrap_or(0)
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    let pool = app.db.raw_pool().await;
    sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
}

fn sandbox_balance(app: &TestApp) -> String {
    app.sandbox.wallet(WALLET).map(|wallet| wallet.balance.to_string()).unwrap_or_else(|| String::from("0.00"))
}

async fn a_payer_code_payment_succeeds_and_books_a_balanced_entry(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    let payment = till.pay("r-1", "12.50", "013412345678900000").await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Succeeded as i32);
    assert_eq!(payment.amount, "12.50");
    assert_eq!(payment.refunded_amount, "0.00");
    assert_eq!(payment.facility_id, till.facility_id);
    assert!(!payment.trade_no.is_empty());
    assert!(payment.paid_at.ends_with("+08:00"));
    assert_eq!(sandbox_balance(&app), "12.50", "the operator credited the merchant wallet");
    assert_eq!(wallet_balance_fen(&app).await, 1_250);
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
    let read = till.get_payment(&payment.payment_id).await.unwrap();
    assert_eq!(read, payment);
}

async fn a_definite_refusal_fails_the_payment_and_books_nothing(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    for (code, fail_code) in [
        ("013412345678902222", "INSUFFICIENT_BALANCE"),
        ("013412345678903333", "PAYER_CODE_EXPIRED"),
        ("013412345678904444", "WALLET_FROZEN"),
    ] {
        let payment = till.pay(&format!("r-{fail_code}"), "8.00", code).await.unwrap();
        assert_eq!(payment.status, PaymentStatus::Failed as i32, "{code}");
        assert_eq!(payment.fail_code, fail_code);
    }
    assert_eq!(wallet_balance_fen(&app).await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM journal_entries").await, 0);
}

async fn a_hundred_identical_concurrent_requests_charge_once(app: TestApp) {
    let till = Arc::new(terminal(&app, WALLET).await);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let till = Arc::clone(&till);
        tasks.push(tokio::spawn(async move {
            // A real terminal retries ABORTED (still in flight) with the same request id.
            for _ in 0..50 {
                match till.pay("same-request", "9.90", "013412345678900000").await {
                    Err(status) if status.code() == Code::Aborted => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    other => return other,
                }
            }
            panic!("still in flight after 50 retries");
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().expect("every duplicate gets the payment"));
    }
    let first = &answers[0];
    assert_eq!(first.status, PaymentStatus::Succeeded as i32);
    assert!(answers.iter().all(|answer| answer == first), "100 identical answers");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(sandbox_balance(&app), "9.90", "one operator charge");
    assert_eq!(wallet_balance_fen(&app).await, 990);
}

async fn a_reused_request_id_with_another_body_is_refused(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    till.pay("r-1", "9.90", "013412345678900000").await.unwrap();
    let refused = till.pay("r-1", "99.00", "013412345678900000").await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(sandbox_balance(&app), "9.90");
}

async fn fifty_concurrent_partial_refunds_never_exceed_the_payment(app: TestApp) {
    let till = Arc::new(terminal(&app, WALLET).await);
    let payment = till.pay("p", "30.00", "013412345678900000").await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..50 {
        let till = Arc::clone(&till);
        let payment_id = payment.payment_id.clone();
        tasks.push(tokio::spawn(async move { till.refund(&format!("refund-{n}"), &payment_id, "1.00").await }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(refund) => {
                assert_eq!(refund.status, RefundStatus::Succeeded as i32);
                accepted += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(status.message().starts_with("REFUND_EXCEEDS_PAYMENT"), "{status:?}");
            }
        }
    }
    assert_eq!(accepted, 30, "exactly the payment was refunded");
    let after = till.get_payment(&payment.payment_id).await.unwrap();
    assert_eq!(after.refunded_amount, "30.00");
    assert_eq!(wallet_balance_fen(&app).await, 0);
    assert_eq!(sandbox_balance(&app), "0.00");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM refunds").await, 30, "refused refunds left no rows");
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
}

async fn a_timeout_after_charging_is_resolved_by_query_and_booked_once(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    // No notification either: only a query can tell carepay what happened.
    app.sandbox.faults().disturb_notifications(NotificationFault::Drop, 10).unwrap();
    // Code ending 6666: the sandbox charges, then does not answer before our timeout.
    let payment = till.pay("r-1", "15.00", "013412345678906666").await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Processing as i32, "unknown is not failed");
    let resolved = till.wait_for_status(&payment.payment_id, PaymentStatus::Succeeded).await;
    assert!(!resolved.trade_no.is_empty());
    assert_eq!(wallet_balance_fen(&app).await, 1_500);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM journal_entries").await, 1);
    assert_eq!(sandbox_balance(&app), "15.00");
}

async fn a_server_error_after_charging_is_resolved_by_query(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    app.sandbox.faults().disturb_notifications(NotificationFault::Drop, 10).unwrap();
    let payment = till.pay("r-1", "15.00", "013412345678907777").await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Processing as i32);
    till.wait_for_status(&payment.payment_id, PaymentStatus::Succeeded).await;
    assert_eq!(wallet_balance_fen(&app).await, 1_500);
}

async fn a_payment_the_payer_confirms_succeeds(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    let payment = till.pay("r-1", "6.00", "013412345678901111").await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Userpaying as i32);
    till.wait_for_status(&payment.payment_id, PaymentStatus::Succeeded).await;
    assert_eq!(wallet_balance_fen(&app).await, 600);
}

async fn a_payment_never_confirmed_is_reversed_after_the_deadline(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    let payment = till.pay("r-1", "6.00", "013412345678905555").await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Userpaying as i32);
    till.wait_for_status(&payment.payment_id, PaymentStatus::Reversed).await;
    assert_eq!(wallet_balance_fen(&app).await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM journal_entries").await, 0, "nothing was ever paid");
    assert_eq!(sandbox_balance(&app), "0.00");
}

async fn duplicated_and_reordered_notifications_change_nothing_after_the_first(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    app.sandbox.faults().disturb_notifications(NotificationFault::Duplicate { copies: 5 }, 10).unwrap();
    app.sandbox.faults().disturb_notifications(NotificationFault::Reorder, 2).unwrap();
    let mut ids = Vec::new();
    for n in 0..4 {
        let payment = till.pay(&format!("r-{n}"), "2.00", "013412345678901111").await.unwrap();
        ids.push(payment.payment_id);
    }
    for id in &ids {
        till.wait_for_status(id, PaymentStatus::Succeeded).await;
    }
    // Let every duplicate and held-back notification land.
    for _ in 0..100 {
        if app.sandbox.notifier().attempts() >= 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for id in &ids {
        let payment = till.get_payment(id).await.unwrap();
        assert_eq!(payment.status, PaymentStatus::Succeeded as i32);
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM journal_entries").await, 4, "each payment booked once");
    assert_eq!(wallet_balance_fen(&app).await, 800);
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
}

async fn a_same_day_reversal_refunds_in_full_and_books_it_back(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    let payment = till.pay("r-1", "20.00", "013412345678900000").await.unwrap();
    let reversed = till.reverse("undo-1", &payment.payment_id).await.unwrap();
    assert_eq!(reversed.status, PaymentStatus::Reversed as i32);
    let again = till.reverse("undo-1", &payment.payment_id).await.unwrap();
    assert_eq!(again, reversed, "a repeated reversal answers the same");
    assert_eq!(wallet_balance_fen(&app).await, 0);
    assert_eq!(sandbox_balance(&app), "0.00");

    let refunded = till.pay("r-2", "20.00", "013412345678900000").await.unwrap();
    till.refund("refund-1", &refunded.payment_id, "5.00").await.unwrap();
    let refused = till.reverse("undo-2", &refunded.payment_id).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().starts_with("PAYMENT_HAS_REFUNDS"), "{refused:?}");
    assert_eq!(wallet_balance_fen(&app).await, 1_500);
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
}

async fn a_dynamic_qr_is_paid_by_scan(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    let order = till.create_qr("qr-1", "35.00", 60).await.unwrap();
    assert_eq!(order.status, PaymentStatus::AwaitingScan as i32);
    assert!(!order.qr_payload.is_empty());
    assert!(order.expires_at.ends_with("+08:00"));
    app.sandbox.pay_order(WALLET, &order.out_trade_no, "013412345678900000").unwrap();
    till.wait_for_status(&order.payment_id, PaymentStatus::Succeeded).await;
    assert_eq!(wallet_balance_fen(&app).await, 3_500);
}

async fn a_dynamic_qr_that_is_not_paid_closes(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    let order = till.create_qr("qr-1", "35.00", 1).await;
    // The default minimum expiry (30 s) is too long for a test; the refusal names the field.
    let refused = order.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("expires_in_s"), "{refused:?}");
    let order = till.create_qr("qr-2", "35.00", 30).await.unwrap();
    assert_eq!(order.status, PaymentStatus::AwaitingScan as i32);
    let closed = till.reverse("close-qr-2", &order.payment_id).await.unwrap();
    assert!(
        closed.status == PaymentStatus::Reversed as i32 || closed.status == PaymentStatus::Closed as i32,
        "{closed:?}"
    );
    assert!(
        app.sandbox.pay_order(WALLET, &order.out_trade_no, "013412345678900000").is_err(),
        "cannot be paid any more"
    );
    assert_eq!(wallet_balance_fen(&app).await, 0);
}

async fn bad_amounts_and_codes_are_refused_and_record_nothing(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    for (amount, code, expect) in [
        ("12.505", "013412345678900000", "AMOUNT_TOO_MANY_DECIMALS"),
        ("-1.00", "013412345678900000", "AMOUNT_NEGATIVE"),
        ("0.00", "013412345678900000", "AMOUNT_ZERO"),
        ("1e3", "013412345678900000", "AMOUNT_EXPONENT"),
        ("50000.01", "013412345678900000", "AMOUNT_OVER_LIMIT"),
        ("1.00", "12345", "INVALID_PAYER_CODE"),
    ] {
        let refused = till.pay("r-bad", amount, code).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{amount} {code}: {refused:?}");
        assert!(refused.message().starts_with(expect), "{amount} {code}: {refused:?}");
    }
    let refused = till.pay("", "1.00", "013412345678900000").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM payments").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM terminal_requests").await, 0);
}

async fn a_charge_the_operator_never_received_fails_only_after_a_definite_answer(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    // Code ending 6000: HTTP 500 and nothing charged. carepay cannot tell that from a
    // charge whose answer was lost, so it queries; "not found" past the grace period, then
    // a reversal so a late arrival cannot charge, and only then "failed".
    let payment = till.pay("r-1", "15.00", "013412345678906000").await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Processing as i32);
    let failed = till.wait_for_status(&payment.payment_id, PaymentStatus::Failed).await;
    assert_eq!(failed.fail_code, "NOT_RECEIVED_BY_OPERATOR");
    assert_eq!(wallet_balance_fen(&app).await, 0);
    assert_eq!(sandbox_balance(&app), "0.00");
}

async fn every_outcome_is_called_back_to_the_facility_once_with_its_version(app: TestApp) {
    use crate::callbacks::receiver::Receiver;
    let till = terminal(&app, WALLET).await;
    let receiver = Receiver::accepting().await;
    let types = ["payment.succeeded", "payment.failed", "payment.reversed", "refund.succeeded"];
    let (_, _, _) = crate::callbacks::create_endpoint(
        &app,
        &app.root_token,
        serde_json::json!({"facility_id": till.facility_id, "url": receiver.url("/hook"), "event_types": types}),
    )
    .await;
    let _worker = crate::callbacks::start_worker(&app, crate::callbacks::fast_settings());

    let paid = till.pay("r-1", "12.50", "013412345678900000").await.unwrap();
    let failed = till.pay("r-2", "3.00", "013412345678902222").await.unwrap();
    let refund = till.refund("rf-1", &paid.payment_id, "2.50").await.unwrap();
    let reversed = till.pay("r-3", "4.00", "013412345678900000").await.unwrap();
    till.reverse("undo-3", &reversed.payment_id).await.unwrap();

    let received = receiver.wait_until("five callbacks", |received| received.len() >= 5).await;
    let mut seen: Vec<(String, String, i64, String)> = received
        .iter()
        .map(|request| {
            let body = request.json();
            (
                body["type"].as_str().unwrap().to_owned(),
                body["data"]["object_id"].as_str().unwrap().to_owned(),
                body["data"]["object_version"].as_i64().unwrap(),
                body["data"]["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (String::from("payment.succeeded"), paid.payment_id.clone(), 2, String::from("12.50")),
        (String::from("payment.failed"), failed.payment_id.clone(), 2, String::from("3.00")),
        (String::from("refund.succeeded"), refund.refund_id.clone(), 2, String::from("2.50")),
        (String::from("payment.succeeded"), reversed.payment_id.clone(), 2, String::from("4.00")),
        (String::from("payment.reversed"), reversed.payment_id.clone(), 3, String::from("4.00")),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    let failed_body = received.iter().map(|r| r.json()).find(|body| body["type"] == "payment.failed").unwrap();
    assert_eq!(failed_body["data"]["fail_code"], "INSUFFICIENT_BALANCE");
}

async fn duplicates_spread_over_two_instances_still_make_one_payment(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    let replica = app.spawn_replica(crate::helpers::test_limits()).await;
    let replica_client = crate::terminal_client::connect_to(&replica).await;
    let till = Arc::new(till);
    let mut tasks = Vec::new();
    for n in 0..40 {
        let till = Arc::clone(&till);
        let client = if n % 2 == 0 { till.client.clone() } else { replica_client.clone() };
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let message = carepay::grpc::proto::PayRequest {
                    request_id: String::from("across-instances"),
                    amount: String::from("7.70"),
                    description: String::from("午餐"),
                    source: Some(carepay::grpc::proto::pay_request::Source::PayerCode(String::from(
                        "013412345678900000",
                    ))),
                };
                match client.clone().pay(till.signed("Pay", message)).await {
                    Err(status) if status.code() == Code::Aborted => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    other => return other.map(tonic::Response::into_inner),
                }
            }
            panic!("still in flight after 50 retries");
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let payment = task.await.unwrap().expect("every duplicate gets the payment");
        assert_eq!(payment.status, PaymentStatus::Succeeded as i32);
        ids.insert(payment.payment_id);
    }
    assert_eq!(ids.len(), 1, "one payment across both instances");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(sandbox_balance(&app), "7.70", "one operator charge");
    assert_eq!(wallet_balance_fen(&app).await, 770);
}

async fn callers_over_their_rate_are_told_when_to_retry_and_others_are_unaffected(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    let other = terminal(&app, "0021000000000002").await;
    let tight = carepay::rate_limit::Rate { per_second: 1, burst: 3 };
    let limits = carepay::app::Limits { token_rate: tight, terminal_rate: tight, ..Default::default() };
    let replica = app.spawn_replica(limits).await;
    let client = crate::terminal_client::connect_to(&replica).await;

    let get = |till: &crate::terminal_client::TestTerminal| {
        let message = carepay::grpc::proto::GetPaymentRequest {
            key: Some(carepay::grpc::proto::get_payment_request::Key::RequestId(String::from("none"))),
        };
        let request = till.signed("GetPayment", message);
        let mut client = client.clone();
        async move { client.get_payment(request).await }
    };
    for _ in 0..3 {
        assert_eq!(get(&till).await.unwrap_err().code(), Code::NotFound, "within the burst");
    }
    let limited = get(&till).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert_eq!(get(&other).await.unwrap_err().code(), Code::NotFound, "another terminal is unaffected");

    let http = reqwest::Client::new();
    let call = || http.get(format!("{replica}/v1/regions")).bearer_auth(&app.root_token).send();
    for _ in 0..3 {
        assert_eq!(call().await.unwrap().status(), reqwest::StatusCode::OK);
    }
    let limited = call().await.unwrap();
    assert_eq!(limited.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "1");
}

async fn a_refund_whose_answer_was_lost_is_resolved_by_query_and_booked_once(app: TestApp) {
    use carepay::operator::sandbox::faults::RequestFaultKind;
    let till = terminal(&app, WALLET).await;
    let payment = till.pay("p", "20.00", "013412345678900000").await.unwrap();
    app.sandbox.faults().disturb_notifications(NotificationFault::Drop, 10).unwrap();
    // The operator refunds, then answers 500: carepay must not call it failed.
    app.sandbox.faults().fail_requests(RequestFaultKind::ErrorAfterApply, Some("/v1/refunds"), 1).unwrap();
    let refund = till.refund("r", &payment.payment_id, "5.00").await.unwrap();
    assert_eq!(refund.status, RefundStatus::Processing as i32, "unknown is not failed");
    let mut resolved = None;
    for _ in 0..200 {
        let message = carepay::grpc::proto::GetRefundRequest { refund_id: refund.refund_id.clone() };
        let current = till.client.clone().get_refund(till.signed("GetRefund", message)).await.unwrap().into_inner();
        if current.status != RefundStatus::Processing as i32 {
            resolved = Some(current);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let resolved = resolved.expect("the worker resolved the refund");
    assert_eq!(resolved.status, RefundStatus::Succeeded as i32);
    assert_eq!(till.get_payment(&payment.payment_id).await.unwrap().refunded_amount, "5.00");
    assert_eq!(wallet_balance_fen(&app).await, 1_500);
    assert_eq!(sandbox_balance(&app), "15.00", "refunded once at the operator");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM journal_entries WHERE kind = 'refund'").await, 1);
}

async fn request_ids_are_remembered_until_their_retention_ends(app: TestApp) {
    use carepay::domain::time::UnixMs;
    let till = terminal(&app, WALLET).await;
    till.pay("kept", "1.00", "013412345678900000").await.unwrap();
    let store = &app.app.store;
    let week_ago = UnixMs(UnixMs::now().0 - 7 * 86_400_000);
    store.purge_terminal_housekeeping(UnixMs::now(), week_ago, 1_000).await.unwrap();
    assert_eq!(count(&app, "SELECT COUNT(*) FROM terminal_requests").await, 1, "a fresh key survives housekeeping");
    let replay = till.pay("kept", "1.00", "013412345678900000").await.unwrap();
    assert_eq!(count(&app, "SELECT COUNT(*) FROM payments").await, 1, "and still answers its retry");
    assert_eq!(replay.status, PaymentStatus::Succeeded as i32);
    let later = UnixMs(UnixMs::now().0 + 1_000);
    store.purge_terminal_housekeeping(later, later, 1_000).await.unwrap();
    assert_eq!(count(&app, "SELECT COUNT(*) FROM terminal_requests").await, 0, "past retention it is purged");
}
