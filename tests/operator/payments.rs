use carepay::operator::clock::Clock;
use carepay::operator::types::{OrderRequest, TradeStatus, codes};

use crate::helpers::*;

#[tokio::test]
async fn every_failing_payer_code_fails_with_its_code_and_charges_nothing() {
    let operator = spawn_operator().await;
    let cases = [
        ("2222", codes::INSUFFICIENT_BALANCE),
        ("3333", codes::PAYER_CODE_EXPIRED),
        ("4444", codes::WALLET_FROZEN),
        ("4040", codes::WALLET_NOT_FOUND),
        ("8888", codes::WALLET_LIMIT_EXCEEDED),
        ("9999", codes::MERCHANT_NOT_ALLOWED),
    ];
    for (index, (ending, fail_code)) in cases.into_iter().enumerate() {
        let request = code_payment(&format!("P-fail-{index}"), 1_250, &payer_code(7, ending));
        let answer = operator.client.pay_by_code(&request).await.unwrap();
        assert_eq!(answer.status, TradeStatus::Failed, "{ending}");
        assert_eq!(answer.fail_code.as_deref(), Some(fail_code), "{ending}");
        let trade = operator.client.query_trade(MERCHANT, &request.out_trade_no).await.unwrap();
        assert_eq!(trade.status, TradeStatus::Failed);
    }
    assert_eq!(operator.sandbox.wallet(MERCHANT).unwrap().balance, fen(0));
}

#[tokio::test]
async fn a_code_ending_0000_succeeds_at_once_and_moves_the_money() {
    let operator = spawn_operator().await;
    let request = code_payment("P-0000", 1_250, &payer_code(1, "0000"));
    let answer = operator.client.pay_by_code(&request).await.unwrap();
    assert_eq!(answer.status, TradeStatus::Success);
    assert!(answer.paid_at.is_some());
    let trade = operator.client.query_trade(MERCHANT, "P-0000").await.unwrap();
    assert_eq!((trade.status, trade.amount, trade.refunded_amount), (TradeStatus::Success, fen(1_250), fen(0)));
    assert_eq!(trade.trade_no, answer.trade_no);
    assert_eq!(operator.sandbox.wallet(MERCHANT).unwrap().balance, fen(1_250));
}

#[tokio::test]
async fn a_code_ending_1111_waits_for_the_payer_then_succeeds() {
    let operator = spawn_operator().await;
    let request = code_payment("P-1111", 990, &payer_code(1, "1111"));
    let answer = operator.client.pay_by_code(&request).await.unwrap();
    assert_eq!(answer.status, TradeStatus::Userpaying);
    let mut status = answer.status;
    for _ in 0..MAX_POLLS {
        status = operator.client.query_trade(MERCHANT, "P-1111").await.unwrap().status;
        if status != TradeStatus::Userpaying {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, TradeStatus::Success);
}

#[tokio::test]
async fn a_code_ending_5555_never_confirms_and_is_reversed() {
    let operator = spawn_operator().await;
    let request = code_payment("P-5555", 990, &payer_code(1, "5555"));
    assert_eq!(operator.client.pay_by_code(&request).await.unwrap().status, TradeStatus::Userpaying);
    assert_eq!(operator.client.query_trade(MERCHANT, "P-5555").await.unwrap().status, TradeStatus::Userpaying);
    assert_eq!(operator.client.reverse(MERCHANT, "P-5555").await.unwrap().status, TradeStatus::Reversed);
    assert_eq!(operator.client.query_trade(MERCHANT, "P-5555").await.unwrap().status, TradeStatus::Reversed);
    // Confirming afterwards changes nothing: states only move forward.
    let confirmed = operator.sandbox.confirm_trade(MERCHANT, "P-5555").unwrap();
    assert_eq!(confirmed.status, TradeStatus::Reversed);
    assert_eq!(operator.sandbox.wallet(MERCHANT).unwrap().balance, fen(0));
}

#[tokio::test]
async fn a_code_ending_6666_is_charged_but_the_client_times_out_and_a_query_finds_it() {
    let operator = spawn_operator().await;
    let request = code_payment("P-6666", 500, &payer_code(1, "6666"));
    let error = operator.client.pay_by_code(&request).await.unwrap_err();
    assert!(error.is_unknown(), "{error:?}");
    let trade = operator.client.query_trade(MERCHANT, "P-6666").await.unwrap();
    assert_eq!(trade.status, TradeStatus::Success);
}

#[tokio::test]
async fn a_code_ending_7777_is_charged_then_answered_500_which_is_unknown() {
    let operator = spawn_operator().await;
    let request = code_payment("P-7777", 500, &payer_code(1, "7777"));
    let error = operator.client.pay_by_code(&request).await.unwrap_err();
    assert!(error.is_unknown(), "{error:?}");
    assert_eq!(operator.client.query_trade(MERCHANT, "P-7777").await.unwrap().status, TradeStatus::Success);
}

#[tokio::test]
async fn a_code_ending_6000_fails_before_applying_so_the_trade_does_not_exist() {
    let operator = spawn_operator().await;
    let request = code_payment("P-6000", 500, &payer_code(1, "6000"));
    assert!(operator.client.pay_by_code(&request).await.unwrap_err().is_unknown());
    let error = operator.client.query_trade(MERCHANT, "P-6000").await.unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
    assert_eq!(error.code(), Some("TRADE_NOT_FOUND"));
}

#[tokio::test]
async fn seeded_wallets_are_charged_under_their_real_rules() {
    let operator = spawn_operator().await;
    let sandbox = &operator.sandbox;
    // payer_code(n, ..) pays from wallet 0031 + the 12 digits of n.
    sandbox.open_wallet("0031000000000011", "匿名", 4, fen(900_000)).unwrap();
    sandbox.open_wallet("0031000000000012", "李四", 2, fen(1_000)).unwrap();
    sandbox.open_wallet("0031000000000013", "王五", 2, fen(100_000)).unwrap();
    sandbox.freeze("0031000000000013").unwrap();
    sandbox.open_wallet("0031000000000014", "赵六", 2, fen(100_000)).unwrap();
    sandbox.restrict_to_merchants("0031000000000014", vec![String::from("0021000000000099")]).unwrap();
    let cases = [
        ("P-tier4-big", 200_001, payer_code(11, "0000"), Some(codes::WALLET_LIMIT_EXCEEDED)),
        ("P-tier4-a", 200_000, payer_code(11, "0001"), None),
        ("P-tier4-b", 200_000, payer_code(11, "0002"), None),
        ("P-tier4-day", 100_001, payer_code(11, "0003"), Some(codes::WALLET_LIMIT_EXCEEDED)),
        ("P-poor", 1_001, payer_code(12, "0000"), Some(codes::INSUFFICIENT_BALANCE)),
        ("P-frozen", 100, payer_code(13, "0000"), Some(codes::WALLET_FROZEN)),
        ("P-restricted", 100, payer_code(14, "0000"), Some(codes::MERCHANT_NOT_ALLOWED)),
    ];
    for (out_trade_no, amount_fen, code, fail_code) in cases {
        let answer = operator.client.pay_by_code(&code_payment(out_trade_no, amount_fen, &code)).await.unwrap();
        assert_eq!(answer.fail_code.as_deref(), fail_code, "{out_trade_no}");
        let expected = if fail_code.is_some() { TradeStatus::Failed } else { TradeStatus::Success };
        assert_eq!(answer.status, expected, "{out_trade_no}");
    }
    assert_eq!(sandbox.wallet("0031000000000011").unwrap().balance, fen(500_000));
}

#[tokio::test]
async fn a_successful_payment_is_reversed_the_same_day_but_not_the_next() {
    let clock = Clock::manual(NOV_28_10AM_MS);
    let operator = spawn_operator_with(test_config(clock.clone()), test_settings()).await;
    operator.client.pay_by_code(&code_payment("P-same-day", 1_500, &payer_code(1, "0000"))).await.unwrap();
    operator.client.pay_by_code(&code_payment("P-next-day", 1_500, &payer_code(1, "0000"))).await.unwrap();
    assert_eq!(operator.sandbox.wallet(MERCHANT).unwrap().balance, fen(3_000));
    assert_eq!(operator.client.reverse(MERCHANT, "P-same-day").await.unwrap().status, TradeStatus::Reversed);
    assert_eq!(operator.sandbox.wallet(MERCHANT).unwrap().balance, fen(1_500));
    // Reversing twice is harmless.
    assert_eq!(operator.client.reverse(MERCHANT, "P-same-day").await.unwrap().status, TradeStatus::Reversed);
    clock.advance_ms(14 * 3_600_000);
    let error = operator.client.reverse(MERCHANT, "P-next-day").await.unwrap_err();
    assert_eq!(error.code(), Some("REVERSE_NOT_ALLOWED"), "{error:?}");
    assert_eq!(operator.client.query_trade(MERCHANT, "P-next-day").await.unwrap().status, TradeStatus::Success);
}

#[tokio::test]
async fn a_dynamic_qr_order_is_paid_by_scanning_or_closes_when_it_expires() {
    let clock = Clock::manual(NOV_28_10AM_MS);
    let operator = spawn_operator_with(test_config(clock.clone()), test_settings()).await;
    let order = |out_trade_no: &str| OrderRequest {
        merchant_wallet_id: MERCHANT.to_owned(),
        out_trade_no: out_trade_no.to_owned(),
        amount: fen(1_800),
        description: String::from("助餐"),
        expires_in_s: 60,
    };
    let created = operator.client.create_order(&order("Q-paid")).await.unwrap();
    assert!(created.qr_payload.starts_with("ecny://pay?"), "{}", created.qr_payload);
    assert_eq!(created.expires_at, "2026-11-28T10:01:00+08:00");
    let paid = operator.sandbox.pay_order(MERCHANT, "Q-paid", &payer_code(3, "0000")).unwrap();
    assert_eq!(paid.status, TradeStatus::Success);
    assert_eq!(operator.client.query_trade(MERCHANT, "Q-paid").await.unwrap().status, TradeStatus::Success);

    operator.client.create_order(&order("Q-expired")).await.unwrap();
    assert_eq!(operator.client.query_trade(MERCHANT, "Q-expired").await.unwrap().status, TradeStatus::Userpaying);
    clock.advance_ms(61_000);
    assert_eq!(operator.client.query_trade(MERCHANT, "Q-expired").await.unwrap().status, TradeStatus::Closed);
    assert!(operator.sandbox.pay_order(MERCHANT, "Q-expired", &payer_code(3, "0000")).is_err());
}
