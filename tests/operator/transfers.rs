use carepay::operator::clock::Clock;
use carepay::operator::types::{TransferRequest, TransferStatus, codes};

use crate::helpers::*;

const FUNDING: &str = "0041000000000001";

fn transfer(out_transfer_no: &str, payee: &str, name: &str, amount_fen: i64) -> TransferRequest {
    TransferRequest {
        payer_wallet_id: FUNDING.to_owned(),
        out_transfer_no: out_transfer_no.to_owned(),
        payee_wallet_id: payee.to_owned(),
        payee_name: name.to_owned(),
        amount: fen(amount_fen),
        memo: String::from("困难老人生活补贴"),
    }
}

#[tokio::test]
async fn transfers_succeed_or_fail_with_the_wallet_rules_code() {
    let operator = spawn_operator().await;
    let sandbox = &operator.sandbox;
    sandbox.open_wallet(FUNDING, "吴江区民政局", 1, fen(2_000_000)).unwrap();
    sandbox.open_wallet("0031000000000001", "张三", 2, fen(0)).unwrap();
    sandbox.open_wallet("0031000000000002", "李四", 4, fen(900_000)).unwrap();
    sandbox.open_wallet("0031000000000003", "王五", 2, fen(0)).unwrap();
    sandbox.freeze("0031000000000003").unwrap();
    let cases = [
        (transfer("T-ok", "0031000000000001", "张三", 30_000), None),
        (transfer("T-name", "0031000000000001", "张叁", 30_000), Some(codes::NAME_MISMATCH)),
        (transfer("T-limit", "0031000000000002", "李四", 100_001), Some(codes::WALLET_LIMIT_EXCEEDED)),
        (transfer("T-frozen", "0031000000000003", "王五", 100), Some(codes::WALLET_FROZEN)),
        (transfer("T-nobody", "0031000000000099", "无名", 100), Some(codes::WALLET_NOT_FOUND)),
        (transfer("T-broke", "0031000000000001", "张三", 5_000_000), Some(codes::INSUFFICIENT_BALANCE)),
    ];
    for (request, fail_code) in cases {
        // Settled inside the request: the answer already says how.
        let answer = operator.client.transfer(&request).await.unwrap();
        let expected = if fail_code.is_some() { TransferStatus::Failed } else { TransferStatus::Success };
        assert_eq!(answer.status, expected, "{}", request.out_transfer_no);
        let again = operator.client.transfer(&request).await.unwrap();
        assert_eq!((again.transfer_no.as_str(), again.status), (answer.transfer_no.as_str(), expected));
        let queried = operator.client.query_transfer(FUNDING, &request.out_transfer_no).await.unwrap();
        assert_eq!(queried.status, expected, "{}", request.out_transfer_no);
        assert_eq!(queried.fail_code.as_deref(), fail_code, "{}", request.out_transfer_no);
    }
    assert_eq!(sandbox.wallet("0031000000000001").unwrap().balance, fen(30_000));
    assert_eq!(sandbox.wallet(FUNDING).unwrap().balance, fen(1_970_000));
    let error = operator
        .client
        .transfer(&TransferRequest {
            payer_wallet_id: String::from("0041000000000999"),
            ..transfer("T-x", "0031000000000001", "张三", 1)
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(codes::WALLET_NOT_FOUND));
}

#[tokio::test]
async fn a_delayed_transfer_is_accepted_first_and_settles_later() {
    let config = carepay::operator::sandbox::SandboxConfig { transfer_delay_ms: 50, ..test_config(Clock::system()) };
    let operator = spawn_operator_with(config, test_settings()).await;
    operator.sandbox.open_wallet(FUNDING, "吴江区民政局", 1, fen(100_000)).unwrap();
    operator.sandbox.open_wallet("0031000000000001", "张三", 2, fen(0)).unwrap();
    let answer = operator.client.transfer(&transfer("T-later", "0031000000000001", "张三", 30_000)).await.unwrap();
    assert_eq!(answer.status, TransferStatus::Accepted);
    let mut status = TransferStatus::Accepted;
    for _ in 0..MAX_POLLS {
        status = operator.client.query_transfer(FUNDING, "T-later").await.unwrap().status;
        if status != TransferStatus::Accepted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, TransferStatus::Success);
}
