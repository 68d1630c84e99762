//! The life of a dynamic QR order through the real gRPC transport, with the clock the payment
//! use cases and the in-process operator share moved instead of waited out: payable until its
//! own expiry (the operator's 30 s confirmation rule is for payer codes), then CLOSED as the
//! operator closes it, never reversed unless the terminal asks.

use carepay::domain::ids::PaymentId;
use carepay::domain::ledger::AccountCode;
use carepay::domain::payment::Payment;
use carepay::grpc::proto::PaymentStatus;
use carepay::operator::types::TradeStatus;

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::terminal_client::terminal;

backend_tests!(
    a_five_minute_qr_is_still_payable_after_half_a_minute_while_a_payer_code_is_reversed,
    a_qr_left_unpaid_ends_closed_at_its_expiry_and_the_operator_closed_it,
    a_qr_order_whose_answer_was_lost_gets_its_code_when_the_terminal_repeats_the_call,
);

const WALLET: &str = "0021000000000003";
const SCAN_SUCCEEDS: &str = "013412345678900000";
const NEVER_CONFIRMED: &str = "013412345678905555";

async fn wallet_balance_fen(app: &TestApp) -> i64 {
    let code = AccountCode::parse(&format!("wallet:{WALLET}")).unwrap();
    app.app.store.account_totals(&code).await.unwrap().map(|totals| totals.balance_fen()).unwrap_or(0)
}

/// Move the shared clock forward by `ms` and wait (bounded) until the payments worker has
/// looked at `payment_id` at or after the new time; the payment as it then stands.
async fn advance_and_let_the_worker_check(app: &TestApp, payment_id: &str, ms: i64) -> Payment {
    let moved_to = app.app.clock.now_ms() + ms;
    assert!(app.app.clock.advance_ms(ms), "the test clock moves");
    let id = PaymentId::from_trusted(payment_id.to_owned());
    for _ in 0..200 {
        let payment = app.app.store.payment(&id).await.unwrap().expect("payment stored");
        if payment.updated_at.0 >= moved_to {
            return payment;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the worker never checked {payment_id} after the clock moved");
}

async fn operator_status(app: &TestApp, out_trade_no: &str) -> TradeStatus {
    let operator = &app.app.operator.as_ref().expect("operator").client;
    operator.query_trade(WALLET, out_trade_no).await.expect("the operator knows the order").status
}

async fn a_five_minute_qr_is_still_payable_after_half_a_minute_while_a_payer_code_is_reversed(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    let order = till.create_qr("qr-300", "35.00", 300).await.unwrap();
    assert_eq!(order.status, PaymentStatus::AwaitingScan as i32);
    assert!(!order.qr_payload.is_empty());
    let code = till.pay("code-1", "6.00", NEVER_CONFIRMED).await.unwrap();
    assert_eq!(code.status, PaymentStatus::Userpaying as i32);

    // 31 s later: past the payer-code confirmation deadline, well inside the QR's 300 s.
    let checked = advance_and_let_the_worker_check(&app, &order.payment_id, 31_000).await;
    assert_eq!(checked.status.as_str(), "awaiting_scan", "an unpaid QR is not a payer-code confirmation");
    let reversed = till.wait_for_status(&code.payment_id, PaymentStatus::Reversed).await;
    assert_eq!(reversed.amount, "6.00", "the payer code still gets its 30 s treatment");
    let shown = till.get_payment(&order.payment_id).await.unwrap();
    assert_eq!(shown.status, PaymentStatus::AwaitingScan as i32, "{shown:?}");
    assert_eq!(shown.qr_payload, order.qr_payload);
    assert_eq!(shown.expires_at, order.expires_at);
    assert_eq!(operator_status(&app, &order.out_trade_no).await, TradeStatus::Userpaying, "still open there");

    // The resident scans now, and pays.
    let scan = app.sandbox.pay_order(WALLET, &order.out_trade_no, SCAN_SUCCEEDS).expect("the QR is payable");
    assert_eq!(scan.status, TradeStatus::Success);
    let paid = till.wait_for_status(&order.payment_id, PaymentStatus::Succeeded).await;
    assert_eq!(paid.amount, "35.00");
    assert_eq!(wallet_balance_fen(&app).await, 3_500);
    assert_eq!(app.sandbox.wallet(WALLET).unwrap().balance.to_string(), "35.00");
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
}

async fn a_qr_left_unpaid_ends_closed_at_its_expiry_and_the_operator_closed_it(app: TestApp) {
    let till = terminal(&app, WALLET).await;
    let order = till.create_qr("qr-left", "12.00", 300).await.unwrap();
    assert_eq!(order.status, PaymentStatus::AwaitingScan as i32);

    // A second before it expires it is still waiting for a scan.
    let before = advance_and_let_the_worker_check(&app, &order.payment_id, 299_000).await;
    assert_eq!(before.status.as_str(), "awaiting_scan");
    assert_eq!(operator_status(&app, &order.out_trade_no).await, TradeStatus::Userpaying);

    // Past its expiry the operator closes it, and so does carepay: CLOSED, not REVERSED.
    app.app.clock.advance_ms(2_000);
    let closed = till.wait_for_status(&order.payment_id, PaymentStatus::Closed).await;
    assert_eq!(closed.amount, "12.00");
    assert_eq!(operator_status(&app, &order.out_trade_no).await, TradeStatus::Closed, "closed, not reversed");
    let refused = app.sandbox.pay_order(WALLET, &order.out_trade_no, SCAN_SUCCEEDS).unwrap_err();
    assert_eq!(refused.code, "ORDER_NOT_PAYABLE");
    assert_eq!(wallet_balance_fen(&app).await, 0);
    let reverse = till.reverse("undo-closed", &order.payment_id).await.unwrap_err();
    assert_eq!(reverse.code(), tonic::Code::FailedPrecondition, "{reverse:?}");
    assert!(reverse.message().starts_with("PAYMENT_NOT_REVERSIBLE"), "{reverse:?}");
    assert_eq!(till.get_payment(&order.payment_id).await.unwrap().status, PaymentStatus::Closed as i32);
}

async fn a_qr_order_whose_answer_was_lost_gets_its_code_when_the_terminal_repeats_the_call(app: TestApp) {
    use carepay::operator::sandbox::faults::RequestFaultKind;
    let till = terminal(&app, WALLET).await;
    // The operator makes the order, then answers 500: carepay has no QR to show yet.
    app.sandbox.faults().fail_requests(RequestFaultKind::ErrorAfterApply, Some("/v1/orders"), 1).unwrap();
    let first = till.create_qr("qr-lost", "20.00", 300).await.unwrap();
    assert_eq!(first.status, PaymentStatus::AwaitingScan as i32, "unknown is not failed");
    assert_eq!(first.qr_payload, "", "{first:?}");
    assert_eq!(operator_status(&app, &first.out_trade_no).await, TradeStatus::Userpaying, "made there");

    // The terminal repeats the call with the same request_id: the same order, now with its code.
    let again = till.create_qr("qr-lost", "20.00", 300).await.unwrap();
    assert_eq!(again.payment_id, first.payment_id);
    assert_eq!(again.status, PaymentStatus::AwaitingScan as i32);
    assert!(again.qr_payload.contains(&again.trade_no) && !again.trade_no.is_empty(), "{again:?}");
    assert!(again.expires_at.ends_with("+08:00"), "{again:?}");
    let other = till.create_qr("qr-lost", "21.00", 300).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::AlreadyExists, "{other:?}");

    app.sandbox.pay_order(WALLET, &again.out_trade_no, SCAN_SUCCEEDS).expect("the code shown is payable");
    till.wait_for_status(&again.payment_id, PaymentStatus::Succeeded).await;
    assert_eq!(wallet_balance_fen(&app).await, 2_000);
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
}
