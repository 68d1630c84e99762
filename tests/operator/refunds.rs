use carepay::operator::types::{RefundRequest, RefundStatus, TradeStatus};
use tokio::task::JoinSet;

use crate::helpers::*;

fn refund(out_trade_no: &str, out_refund_no: &str, amount_fen: i64) -> RefundRequest {
    RefundRequest {
        merchant_wallet_id: MERCHANT.to_owned(),
        out_trade_no: out_trade_no.to_owned(),
        out_refund_no: out_refund_no.to_owned(),
        amount: fen(amount_fen),
        reason: String::from("退菜"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_partial_refunds_never_exceed_the_trade() {
    let operator = spawn_operator().await;
    let trade_fen = 3_000;
    operator.client.pay_by_code(&code_payment("P-refunds", trade_fen, &payer_code(1, "0000"))).await.unwrap();
    let mut tasks = JoinSet::new();
    for index in 0..50_i64 {
        let client = operator.client.clone();
        // 50 to 147 fen each: about 49 yuan asked against 30 yuan paid.
        let amount_fen = 50 + (index * 37) % 98;
        tasks.spawn(async move {
            let answer = client.refund(&refund("P-refunds", &format!("R-{index}"), amount_fen)).await;
            (amount_fen, answer)
        });
    }
    let mut accepted_fen = 0;
    let mut asked_fen = 0;
    while let Some(joined) = tasks.join_next().await {
        let (amount_fen, answer) = joined.unwrap();
        asked_fen += amount_fen;
        match answer {
            Ok(answer) => {
                assert_eq!(answer.status, RefundStatus::Success);
                accepted_fen += amount_fen;
            }
            Err(error) => assert_eq!(error.code(), Some("REFUND_AMOUNT_EXCEEDED"), "{error:?}"),
        }
    }
    assert!(asked_fen > trade_fen);
    assert!(accepted_fen <= trade_fen, "{accepted_fen}");
    let trade = operator.client.query_trade(MERCHANT, "P-refunds").await.unwrap();
    assert_eq!(trade.refunded_amount, fen(accepted_fen));
    assert_eq!(operator.sandbox.wallet(MERCHANT).unwrap().balance, fen(trade_fen - accepted_fen));
}

#[tokio::test]
async fn a_refund_is_queried_and_a_refunded_trade_cannot_be_reversed() {
    let operator = spawn_operator().await;
    operator.client.pay_by_code(&code_payment("P-r", 2_000, &payer_code(1, "0000"))).await.unwrap();
    let answer = operator.client.refund(&refund("P-r", "R-r-1", 500)).await.unwrap();
    let queried = operator.client.query_refund(MERCHANT, "R-r-1").await.unwrap();
    assert_eq!(
        (queried.refund_no, queried.status, queried.amount),
        (answer.refund_no, RefundStatus::Success, fen(500))
    );
    assert!(queried.succeeded_at.is_some());
    let error = operator.client.reverse(MERCHANT, "P-r").await.unwrap_err();
    assert_eq!(error.code(), Some("TRADE_HAS_REFUNDS"));
    assert_eq!(operator.client.query_trade(MERCHANT, "P-r").await.unwrap().status, TradeStatus::Success);
    assert!(operator.client.query_refund(MERCHANT, "R-none").await.unwrap_err().is_not_found());
    let error = operator.client.refund(&refund("P-none", "R-x", 1)).await.unwrap_err();
    assert_eq!(error.code(), Some("TRADE_NOT_FOUND"));
}
