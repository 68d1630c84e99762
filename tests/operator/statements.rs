use carepay::operator::clock::Clock;
use carepay::operator::sandbox::SandboxConfig;
use carepay::operator::sandbox::faults::StatementTamper;
use carepay::operator::types::{RefundRequest, TransferRequest};
use ring::digest;

use crate::helpers::*;

const FUNDING: &str = "0041000000000001";

/// A minimal reading of `statement-format.md` for assertions: RFC 4180 records, backticks
/// stripped, header and trailer split off.
struct Parsed {
    header: Vec<String>,
    lines: Vec<Vec<String>>,
    trailer: Vec<String>,
}

fn parse(file: &[u8]) -> Parsed {
    let text = std::str::from_utf8(file).expect("UTF-8");
    let mut records = Vec::new();
    let (mut record, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && record.is_empty(), "file must end with a line end");
    let strip = |record: Vec<String>| -> Vec<String> {
        record.into_iter().map(|field| field.strip_prefix('`').map(str::to_owned).unwrap_or(field)).collect()
    };
    let header = records.remove(0);
    let columns = records.remove(0);
    assert_eq!(columns.join(","), "交易时间,运营机构流水号,商户单号,交易类型,交易状态,金额,手续费,对手钱包,备注");
    let trailer = records.pop().expect("trailer");
    Parsed { header, lines: records.into_iter().map(strip).collect(), trailer }
}

fn to_fen(yuan: &str) -> i64 {
    let negative = yuan.starts_with('-');
    let amount = carepay::domain::money::Amount::parse(yuan.trim_start_matches('-')).expect("amount").fen();
    if negative { -amount } else { amount }
}

/// (line_count, credits, debits, fees) worked out from the lines.
fn totals_of(parsed: &Parsed) -> (usize, i64, i64, i64) {
    let (mut credits, mut debits, mut fees) = (0, 0, 0);
    for line in &parsed.lines {
        if line[4] != "SUCCESS" {
            continue;
        }
        let amount = to_fen(&line[5]);
        match line[3].as_str() {
            "PAYMENT" | "TRANSFER_RETURN" => credits += amount,
            "ADJUSTMENT" if amount >= 0 => credits += amount,
            _ => debits += amount.abs(),
        }
        fees += to_fen(&line[6]);
    }
    (parsed.lines.len(), credits, debits, fees)
}

fn trailer_totals(parsed: &Parsed) -> (usize, i64, i64, i64) {
    assert_eq!(parsed.trailer[0], "#TOTAL");
    (
        parsed.trailer[1].parse().unwrap(),
        to_fen(&parsed.trailer[2]),
        to_fen(&parsed.trailer[3]),
        to_fen(&parsed.trailer[4]),
    )
}

/// A day at the canteen: two payments (0.6% fee), a refund, a same-day reversal, and a
/// subsidy transfer from the funding wallet; then the next morning's statements.
async fn a_settled_day() -> TestOperator {
    let clock = Clock::manual(NOV_28_10AM_MS);
    let config = SandboxConfig { fee_rate_ppm: 6_000, ..test_config(clock.clone()) };
    let operator = spawn_operator_with(config, test_settings()).await;
    let client = &operator.client;
    client.pay_by_code(&code_payment("P-a", 1_250, &payer_code(5, "0000"))).await.unwrap();
    clock.advance_ms(60_000);
    client.pay_by_code(&code_payment("P-b", 3_000, &payer_code(6, "0000"))).await.unwrap();
    clock.advance_ms(60_000);
    let refund = RefundRequest {
        merchant_wallet_id: MERCHANT.to_owned(),
        out_trade_no: String::from("P-b"),
        out_refund_no: String::from("R-b-1"),
        amount: fen(500),
        reason: String::from("退\"汤品\", 少一份"),
    };
    client.refund(&refund).await.unwrap();
    clock.advance_ms(60_000);
    client.pay_by_code(&code_payment("P-c", 1_500, &payer_code(7, "0000"))).await.unwrap();
    client.reverse(MERCHANT, "P-c").await.unwrap();
    operator.sandbox.open_wallet(FUNDING, "吴江区民政局", 1, fen(1_000_000)).unwrap();
    operator.sandbox.open_wallet("0031000000009001", "张三", 2, fen(0)).unwrap();
    let transfer = TransferRequest {
        payer_wallet_id: FUNDING.to_owned(),
        out_transfer_no: String::from("T-1"),
        payee_wallet_id: String::from("0031000000009001"),
        payee_name: String::from("张三"),
        amount: fen(30_000),
        memo: String::from("困难老人生活补贴\n2026年11月"),
    };
    client.transfer(&transfer).await.unwrap();
    let error = client.statement("2026-11-28", MERCHANT).await.unwrap_err();
    assert_eq!(error.code(), Some("STATEMENT_NOT_READY"), "{error:?}");
    // The next morning, 09:00.
    clock.set_ms(NOV_28_10AM_MS + 23 * 3_600_000);
    operator
}

#[tokio::test]
async fn the_merchant_statement_lists_what_settled_and_its_trailer_adds_up() {
    let operator = a_settled_day().await;
    let file = operator.client.statement("2026-11-28", MERCHANT).await.unwrap();
    let parsed = parse(&file);
    assert_eq!(parsed.header, ["#STATEMENT", "v1", MERCHANT, "2026-11-28", "2026-11-29T09:00:00+08:00"]);
    let kinds: Vec<_> =
        parsed.lines.iter().map(|line| (line[2].as_str(), line[3].as_str(), line[4].as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("P-a", "PAYMENT", "SUCCESS"),
            ("P-b", "PAYMENT", "SUCCESS"),
            ("R-b-1", "REFUND", "SUCCESS"),
            ("P-c", "PAYMENT", "REVERSED"),
        ]
    );
    assert_eq!(parsed.lines[0][0], "2026-11-28 10:00:00");
    assert_eq!(parsed.lines[0][7], "0031****0005");
    assert_eq!(parsed.lines[2][8], "退\"汤品\", 少一份");
    // 12.50 and 30.00 paid, 5.00 refunded, 15.00 reversed; fees 0.6%: 0.08 + 0.18.
    assert_eq!(totals_of(&parsed), (4, 4_250, 500, 26));
    assert_eq!(trailer_totals(&parsed), totals_of(&parsed));
}

#[tokio::test]
async fn the_funding_wallet_statement_shows_the_transfer_and_the_digest_header_matches() {
    let operator = a_settled_day().await;
    let file = operator.client.statement("2026-11-28", FUNDING).await.unwrap();
    let parsed = parse(&file);
    assert_eq!(parsed.lines.len(), 1);
    assert_eq!(parsed.lines[0][3], "TRANSFER");
    assert_eq!(parsed.lines[0][8], "困难老人生活补贴\n2026年11月");
    assert_eq!(trailer_totals(&parsed), (1, 0, 30_000, 0));

    let path = format!("/v1/statements/2026-11-28?wallet_id={FUNDING}");
    let signature = operator.client_signer.sign_request("GET", &path, b"");
    let response = signed_raw(&operator, "GET", &path, "", &signature).await;
    let declared = response.headers()["operator-content-sha256"].to_str().unwrap().to_owned();
    let body = response.bytes().await.unwrap();
    assert_eq!(declared, hex::encode(digest::digest(&digest::SHA256, &body)));
    assert_eq!(body.as_ref(), file.as_slice());
}

#[tokio::test]
async fn tampered_statements_disagree_with_what_happened_or_with_their_own_trailer() {
    let operator = a_settled_day().await;
    let faults = operator.sandbox.faults();
    faults.tamper_statements(StatementTamper::DropLine, 1).unwrap();
    let dropped = parse(&operator.client.statement("2026-11-28", MERCHANT).await.unwrap());
    assert_eq!(dropped.lines.len(), 3);
    assert_eq!(trailer_totals(&dropped), totals_of(&dropped));

    faults.tamper_statements(StatementTamper::AddLine, 1).unwrap();
    let added = parse(&operator.client.statement("2026-11-28", MERCHANT).await.unwrap());
    assert_eq!(added.lines.len(), 5);

    faults.tamper_statements(StatementTamper::ChangeAmount, 1).unwrap();
    let changed = parse(&operator.client.statement("2026-11-28", MERCHANT).await.unwrap());
    assert_eq!(changed.lines[0][5], "12.51");

    faults.tamper_statements(StatementTamper::CorruptTrailer, 1).unwrap();
    let corrupt = parse(&operator.client.statement("2026-11-28", MERCHANT).await.unwrap());
    assert_ne!(trailer_totals(&corrupt), totals_of(&corrupt));

    let honest = parse(&operator.client.statement("2026-11-28", MERCHANT).await.unwrap());
    assert_eq!(totals_of(&honest), (4, 4_250, 500, 26));
}

#[tokio::test]
async fn unknown_wallets_and_bad_dates_are_refused() {
    let operator = a_settled_day().await;
    assert_eq!(
        operator.client.statement("2026-11-28", "0021999999999999").await.unwrap_err().code(),
        Some("WALLET_NOT_FOUND")
    );
    assert_eq!(operator.client.statement("2026-13-01", MERCHANT).await.unwrap_err().code(), Some("INVALID_REQUEST"));
    assert_eq!(
        operator.client.statement("2026-11-29", MERCHANT).await.unwrap_err().code(),
        Some("STATEMENT_NOT_READY")
    );
}
