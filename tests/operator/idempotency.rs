use carepay::operator::types::{RefundRequest, TradeStatus, TransferRequest, codes};

use crate::helpers::*;

#[tokio::test]
async fn the_same_payment_twice_gives_the_first_answer_and_charges_once() {
    let operator = spawn_operator().await;
    let request = code_payment("P-twice", 1_250, &payer_code(1, "0000"));
    let first = operator.client.pay_by_code(&request).await.unwrap();
    let second = operator.client.pay_by_code(&request).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(operator.sandbox.wallet(MERCHANT).unwrap().balance, fen(1_250));
}

#[tokio::test]
async fn the_same_out_numbers_with_a_different_body_are_refused_with_409() {
    let operator = spawn_operator().await;
    let request = code_payment("P-dup", 1_250, &payer_code(1, "0000"));
    operator.client.pay_by_code(&request).await.unwrap();
    let changed = code_payment("P-dup", 1_251, &payer_code(1, "0000"));
    let error = operator.client.pay_by_code(&changed).await.unwrap_err();
    assert_eq!(error.code(), Some(codes::DUPLICATE_OUT_NO), "{error:?}");
    assert!(matches!(error, carepay::operator::client::OperatorError::Rejected { http_status: 409, .. }));

    let refund = RefundRequest {
        merchant_wallet_id: MERCHANT.to_owned(),
        out_trade_no: String::from("P-dup"),
        out_refund_no: String::from("R-dup"),
        amount: fen(100),
        reason: String::from("退菜"),
    };
    let first = operator.client.refund(&refund).await.unwrap();
    assert_eq!(operator.client.refund(&refund).await.unwrap(), first);
    let error = operator.client.refund(&RefundRequest { amount: fen(101), ..refund.clone() }).await.unwrap_err();
    assert_eq!(error.code(), Some(codes::DUPLICATE_OUT_NO));
    assert_eq!(operator.client.query_trade(MERCHANT, "P-dup").await.unwrap().refunded_amount, fen(100));

    operator.sandbox.open_wallet("0041000000000001", "民政局补贴户", 1, fen(100_000)).unwrap();
    operator.sandbox.open_wallet("0031000000000077", "张三", 2, fen(0)).unwrap();
    let transfer = TransferRequest {
        payer_wallet_id: String::from("0041000000000001"),
        out_transfer_no: String::from("T-dup"),
        payee_wallet_id: String::from("0031000000000077"),
        payee_name: String::from("张三"),
        amount: fen(30_000),
        memo: String::from("补贴"),
    };
    let first = operator.client.transfer(&transfer).await.unwrap();
    assert_eq!(operator.client.transfer(&transfer).await.unwrap(), first);
    let error =
        operator.client.transfer(&TransferRequest { memo: String::from("x"), ..transfer.clone() }).await.unwrap_err();
    assert_eq!(error.code(), Some(codes::DUPLICATE_OUT_NO));
    assert_eq!(operator.sandbox.wallet("0031000000000077").unwrap().balance, fen(30_000));
}

#[tokio::test]
async fn a_repeated_userpaying_payment_answers_as_first_while_a_query_tells_the_present() {
    let operator = spawn_operator().await;
    let request = code_payment("P-first", 700, &payer_code(1, "5555"));
    operator.client.pay_by_code(&request).await.unwrap();
    operator.sandbox.confirm_trade(MERCHANT, "P-first").unwrap();
    assert_eq!(operator.client.pay_by_code(&request).await.unwrap().status, TradeStatus::Userpaying);
    assert_eq!(operator.client.query_trade(MERCHANT, "P-first").await.unwrap().status, TradeStatus::Success);
}
