use carepay::operator::sandbox::faults::RequestFaultKind;
use carepay::operator::types::{RefundRequest, RefundStatus, TradeStatus};

use crate::helpers::*;

#[tokio::test]
async fn a_request_timing_out_after_applying_is_unknown_and_a_query_shows_it_happened() {
    let operator = spawn_operator().await;
    operator.sandbox.faults().fail_requests(RequestFaultKind::TimeoutAfterApply, Some("/v1/payments"), 1).unwrap();
    let error = operator.client.pay_by_code(&code_payment("P-slow", 1_000, &payer_code(1, "0000"))).await.unwrap_err();
    assert!(error.is_unknown(), "{error:?}");
    assert_eq!(operator.client.query_trade(MERCHANT, "P-slow").await.unwrap().status, TradeStatus::Success);
}

#[tokio::test]
async fn a_5xx_after_applying_a_refund_is_unknown_and_the_refund_exists() {
    let operator = spawn_operator().await;
    operator.client.pay_by_code(&code_payment("P-r5xx", 1_000, &payer_code(1, "0000"))).await.unwrap();
    operator.sandbox.faults().fail_requests(RequestFaultKind::ErrorAfterApply, Some("/v1/refunds"), 1).unwrap();
    let request = RefundRequest {
        merchant_wallet_id: MERCHANT.to_owned(),
        out_trade_no: String::from("P-r5xx"),
        out_refund_no: String::from("R-5xx"),
        amount: fen(400),
        reason: String::new(),
    };
    assert!(operator.client.refund(&request).await.unwrap_err().is_unknown());
    assert_eq!(operator.client.query_refund(MERCHANT, "R-5xx").await.unwrap().status, RefundStatus::Success);
    // Retrying the same refund is safe: the first result, no second refund.
    assert_eq!(operator.client.refund(&request).await.unwrap().status, RefundStatus::Success);
    assert_eq!(operator.client.query_trade(MERCHANT, "P-r5xx").await.unwrap().refunded_amount, fen(400));
}

#[tokio::test]
async fn a_5xx_before_applying_is_unknown_and_nothing_happened() {
    let operator = spawn_operator().await;
    operator.sandbox.faults().fail_requests(RequestFaultKind::ErrorBeforeApply, None, 1).unwrap();
    let request = code_payment("P-early", 1_000, &payer_code(1, "0000"));
    assert!(operator.client.pay_by_code(&request).await.unwrap_err().is_unknown());
    assert!(operator.client.query_trade(MERCHANT, "P-early").await.unwrap_err().is_not_found());
    assert_eq!(operator.client.pay_by_code(&request).await.unwrap().status, TradeStatus::Success);
}

#[tokio::test]
async fn an_unreachable_operator_is_unknown() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let operator = spawn_operator().await;
    let client = carepay::operator::client::OperatorClient::new(
        carepay::operator::client::OperatorSettings { base_url: format!("http://{address}"), ..test_settings() },
        operator.client_signer.clone(),
        std::sync::Arc::new(carepay::operator::signing::Verifier::new(operator.clock.clone())),
    )
    .expect("operator client");
    assert!(client.query_trade(MERCHANT, "P-1").await.unwrap_err().is_unknown());
}
