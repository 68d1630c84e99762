//! The statement file writer (`statement-format.md`): pure, so the sandbox, the reconciliation
//! test generator and the reader's round-trip tests share the very same bytes.
//!
//! Output is UTF-8 without BOM, CRLF line ends, every field prefixed with a backtick, and a
//! field quoted (RFC 4180) when it holds a comma, a quote or a line break; the backtick goes
//! inside the quotes, as in the spec's example.

use std::fmt;

/// The column header line, exactly as the spec writes it.
pub const COLUMNS: &str = "交易时间,运营机构流水号,商户单号,交易类型,交易状态,金额,手续费,对手钱包,备注";

const LINE_END: &str = "\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Credit.
    Payment,
    /// Debit.
    Refund,
    /// Debit: a disbursement.
    Transfer,
    /// Credit: a disbursement that bounced back.
    TransferReturn,
    /// Debit.
    Fee,
    /// Signed.
    Adjustment,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Payment => "PAYMENT",
            EntryKind::Refund => "REFUND",
            EntryKind::Transfer => "TRANSFER",
            EntryKind::TransferReturn => "TRANSFER_RETURN",
            EntryKind::Fee => "FEE",
            EntryKind::Adjustment => "ADJUSTMENT",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryStatus {
    Success,
    /// A payment undone the same day: listed, counted in `line_count`, in no total.
    Reversed,
}

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Success => "SUCCESS",
            EntryStatus::Reversed => "REVERSED",
        }
    }
}

/// The first line's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementHeader {
    pub wallet_id: String,
    /// `YYYY-MM-DD`, the business day.
    pub date: String,
    /// RFC 3339.
    pub generated_at: String,
}

/// One detail line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    /// `YYYY-MM-DD HH:MM:SS` in +08:00.
    pub settled_at: String,
    pub operator_ref: String,
    /// `out_trade_no` / `out_refund_no` / `out_transfer_no`; empty for operator entries.
    pub out_no: String,
    pub kind: EntryKind,
    pub status: EntryStatus,
    /// Positive, except an `ADJUSTMENT`, which may be negative.
    pub amount_fen: i64,
    pub fee_fen: i64,
    /// Already masked (`0021****5678`), or empty.
    pub counterparty: String,
    pub memo: String,
}

/// The trailer's numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatementTotals {
    pub line_count: u64,
    pub credit_fen: i64,
    pub debit_fen: i64,
    pub fee_fen: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("line {index}: amount must be positive for {kind}")]
    NegativeAmount { index: usize, kind: &'static str },
    #[error("line {index}: fee must not be negative")]
    NegativeFee { index: usize },
    #[error("totals overflow")]
    Overflow,
}

/// Trailer totals: amounts of `SUCCESS` lines by direction (ADJUSTMENT by its sign), fees
/// of `SUCCESS` lines; `REVERSED` lines count only in `line_count`.
pub fn totals(lines: &[StatementLine]) -> Result<StatementTotals, StatementError> {
    let mut totals = StatementTotals::default();
    for (index, line) in lines.iter().enumerate() {
        totals.add(index, line)?;
    }
    Ok(totals)
}

impl EntryKind {
    /// Every kind, for parsing and generators.
    pub const ALL: [EntryKind; 6] = [
        EntryKind::Payment,
        EntryKind::Refund,
        EntryKind::Transfer,
        EntryKind::TransferReturn,
        EntryKind::Fee,
        EntryKind::Adjustment,
    ];

    pub fn parse(text: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether a line of this kind and amount brings money into the wallet.
    pub fn is_credit(self, amount_fen: i64) -> bool {
        match self {
            EntryKind::Payment | EntryKind::TransferReturn => true,
            EntryKind::Refund | EntryKind::Transfer | EntryKind::Fee => false,
            EntryKind::Adjustment => amount_fen >= 0,
        }
    }
}

impl EntryStatus {
    pub fn parse(text: &str) -> Option<EntryStatus> {
        [EntryStatus::Success, EntryStatus::Reversed].into_iter().find(|status| status.as_str() == text)
    }
}

impl StatementTotals {
    /// Adds one line (`index` only names it in an error), so a streaming reader keeps the
    /// trailer arithmetic in exactly one place.
    pub fn add(&mut self, index: usize, line: &StatementLine) -> Result<(), StatementError> {
        self.add_entry(index, line.kind, line.status, line.amount_fen, line.fee_fen)
    }

    /// [`Self::add`] from a line's numbers alone.
    pub fn add_entry(
        &mut self,
        index: usize,
        kind: EntryKind,
        status: EntryStatus,
        amount_fen: i64,
        fee_fen: i64,
    ) -> Result<(), StatementError> {
        if amount_fen < 0 && kind != EntryKind::Adjustment {
            return Err(StatementError::NegativeAmount { index, kind: kind.as_str() });
        }
        if fee_fen < 0 {
            return Err(StatementError::NegativeFee { index });
        }
        self.line_count += 1;
        if status == EntryStatus::Reversed {
            return Ok(());
        }
        let magnitude = amount_fen.checked_abs().ok_or(StatementError::Overflow)?;
        let total = if kind.is_credit(amount_fen) { &mut self.credit_fen } else { &mut self.debit_fen };
        *total = total.checked_add(magnitude).ok_or(StatementError::Overflow)?;
        self.fee_fen = self.fee_fen.checked_add(fee_fen).ok_or(StatementError::Overflow)?;
        Ok(())
    }
}

/// The whole file, trailer computed from `lines`.
pub fn write_statement(header: &StatementHeader, lines: &[StatementLine]) -> Result<Vec<u8>, StatementError> {
    let totals = totals(lines)?;
    Ok(write_statement_with_totals(header, lines, &totals))
}

/// The whole file with the given trailer (a tampering sandbox may lie in it).
pub fn write_statement_with_totals(
    header: &StatementHeader,
    lines: &[StatementLine],
    totals: &StatementTotals,
) -> Vec<u8> {
    let mut out = String::with_capacity(256 + lines.len() * 128);
    push_header(&mut out, header);
    for line in lines {
        push_line(&mut out, line);
    }
    push_trailer(&mut out, totals);
    out.into_bytes()
}

/// The header and column lines. With [`push_line`] and [`push_trailer`], a large file can
/// be written a piece at a time (the benchmark's million lines) with the very same bytes.
pub fn push_header(out: &mut String, header: &StatementHeader) {
    out.push_str(&format!("#STATEMENT,v1,{},{},{}{LINE_END}", header.wallet_id, header.date, header.generated_at));
    out.push_str(COLUMNS);
    out.push_str(LINE_END);
}

/// One detail line.
pub fn push_line(out: &mut String, line: &StatementLine) {
    let fields = [
        line.settled_at.as_str(),
        line.operator_ref.as_str(),
        line.out_no.as_str(),
        line.kind.as_str(),
        line.status.as_str(),
        &Yuan(line.amount_fen).to_string(),
        &Yuan(line.fee_fen).to_string(),
        line.counterparty.as_str(),
        line.memo.as_str(),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(out, field);
    }
    out.push_str(LINE_END);
}

/// The `#TOTAL` trailer.
pub fn push_trailer(out: &mut String, totals: &StatementTotals) {
    out.push_str(&format!(
        "#TOTAL,{},{},{},{}{LINE_END}",
        totals.line_count,
        Yuan(totals.credit_fen),
        Yuan(totals.debit_fen),
        Yuan(totals.fee_fen)
    ));
}

fn push_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\r', '\n']) {
        out.push_str("\"`");
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push('`');
        out.push_str(value);
    }
}

/// Signed fen shown as yuan with two decimals (`-100` is `-1.00`).
pub struct Yuan(pub i64);

impl fmt::Display for Yuan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", magnitude / 100, magnitude % 100)
    }
}

/// `0021000000005678` shown as `0021****5678`; short ids are masked whole.
pub fn mask_wallet_id(wallet_id: &str) -> String {
    if wallet_id.len() < 12 || !wallet_id.is_ascii() {
        return String::from("****");
    }
    format!("{}****{}", &wallet_id[..4], &wallet_id[wallet_id.len() - 4..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(clippy::too_many_arguments, reason = "one argument per statement column keeps the table readable")]
    fn line(
        settled_at: &str,
        operator_ref: &str,
        out_no: &str,
        kind: EntryKind,
        status: EntryStatus,
        amount_fen: i64,
        fee_fen: i64,
        counterparty: &str,
        memo: &str,
    ) -> StatementLine {
        StatementLine {
            settled_at: settled_at.to_owned(),
            operator_ref: operator_ref.to_owned(),
            out_no: out_no.to_owned(),
            kind,
            status,
            amount_fen,
            fee_fen,
            counterparty: counterparty.to_owned(),
            memo: memo.to_owned(),
        }
    }

    #[test]
    fn the_spec_example_is_reproduced_byte_for_byte() {
        use EntryKind::*;
        use EntryStatus::*;
        let expected = include_bytes!("../../../tests/operator/data/statement-0021000000000001-20261128.csv");
        let header = StatementHeader {
            wallet_id: String::from("0021000000000001"),
            date: String::from("2026-11-28"),
            generated_at: String::from("2026-11-29T09:00:00+08:00"),
        };
        let lines = [
            line(
                "2026-11-28 07:31:05",
                "OP202611280000101",
                "P-7f3a0001",
                Payment,
                Success,
                1250,
                3,
                "0021****5678",
                "早餐",
            ),
            line(
                "2026-11-28 11:45:12",
                "OP202611280000102",
                "P-7f3a0002",
                Payment,
                Success,
                1500,
                4,
                "0021****1234",
                "午餐, 套餐B",
            ),
            line(
                "2026-11-28 11:47:40",
                "OP202611280000103",
                "P-7f3a0003",
                Payment,
                Reversed,
                1500,
                0,
                "0021****4321",
                "重复扫码，已撤销",
            ),
            line(
                "2026-11-28 12:02:19",
                "OP202611280000104",
                "R-7f3a0002-1",
                Refund,
                Success,
                500,
                0,
                "0021****1234",
                "退\"汤品\"",
            ),
            line(
                "2026-11-28 14:10:00",
                "OP202611280000105",
                "T-batch42-000017",
                Transfer,
                Success,
                30000,
                0,
                "0021****9001",
                "困难老人生活补贴\n2026年11月",
            ),
            line(
                "2026-11-28 14:10:03",
                "OP202611280000106",
                "T-batch42-000018",
                TransferReturn,
                Success,
                30000,
                0,
                "0021****9002",
                "钱包已冻结，退回",
            ),
            line(
                "2026-11-28 23:59:59",
                "OP202611280000107",
                "P-7f3a0004",
                Payment,
                Success,
                200_000,
                50,
                "0021****7777",
                "护理费",
            ),
            line("2026-11-28 23:59:59", "OP202611280000108", "", Fee, Success, 61, 0, "", ""),
            line("2026-11-28 23:59:59", "OP202611280000109", "", Adjustment, Success, -100, 0, "", "运营机构差错调整"),
        ];
        let written = write_statement(&header, &lines).unwrap();
        assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(expected));
        assert_eq!(written, expected);
        let totals = totals(&lines).unwrap();
        assert_eq!(totals, StatementTotals { line_count: 9, credit_fen: 232_750, debit_fen: 30_661, fee_fen: 57 });
    }

    #[test]
    fn negative_amounts_outside_adjustments_are_refused() {
        let bad = line("2026-11-28 00:00:00", "OP1", "P-1", EntryKind::Payment, EntryStatus::Success, -1, 0, "", "");
        assert!(matches!(totals(&[bad]), Err(StatementError::NegativeAmount { index: 0, .. })));
    }

    #[test]
    fn wallet_ids_are_masked_to_first_and_last_four() {
        assert_eq!(mask_wallet_id("0021000000005678"), "0021****5678");
        assert_eq!(mask_wallet_id("12"), "****");
        assert_eq!(Yuan(-100).to_string(), "-1.00");
        assert_eq!(Yuan(5).to_string(), "0.05");
    }
}
