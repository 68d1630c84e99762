use std::io::Write as _;

use proptest::prelude::*;

use super::super::write::{StatementError, write_statement, write_statement_with_totals};
use super::*;

const EXAMPLE_UTF8: &[u8] = include_bytes!("../../../../tests/operator/data/statement-0021000000000001-20261128.csv");
const EXAMPLE_GB18030: &[u8] =
    include_bytes!("../../../../tests/operator/data/statement-0021000000000001-20261128.gb18030.csv");

fn read_all(bytes: &[u8]) -> Result<(StatementHeader, Vec<StatementLine>, StatementTotals), ReadError> {
    let mut reader = open_statement(bytes)?;
    let lines = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
    let totals = reader.totals().expect("trailer read once the lines end");
    Ok((reader.header().clone(), lines, totals))
}

#[test]
fn the_spec_example_parses_with_its_worked_out_trailer() {
    let (header, lines, totals) = read_all(EXAMPLE_UTF8).unwrap();
    assert_eq!(header.wallet_id, "0021000000000001");
    assert_eq!(header.date, "2026-11-28");
    assert_eq!(totals, StatementTotals { line_count: 9, credit_fen: 232_750, debit_fen: 30_661, fee_fen: 57 });
    assert_eq!(lines[1].memo, "午餐, 套餐B");
    assert_eq!(lines[2].status, EntryStatus::Reversed);
    assert_eq!(lines[3].memo, "退\"汤品\"");
    assert_eq!(lines[4].memo, "困难老人生活补贴\n2026年11月");
    assert_eq!(lines[7].kind, EntryKind::Fee);
    assert_eq!(lines[7].out_no, "");
    assert_eq!(lines[8].amount_fen, -100);
    // The writer gives back the very same bytes.
    assert_eq!(write_statement(&header, &lines).unwrap(), EXAMPLE_UTF8);
}

#[test]
fn the_gb18030_example_reads_as_the_utf8_one() {
    let reader = open_statement(EXAMPLE_GB18030).unwrap();
    assert_eq!(reader.encoding(), TextEncoding::Gb18030);
    assert_eq!(read_all(EXAMPLE_GB18030).unwrap(), read_all(EXAMPLE_UTF8).unwrap());
}

#[test]
fn bom_lf_and_gzip_variants_read_the_same() {
    let expected = read_all(EXAMPLE_UTF8).unwrap();
    let mut with_bom = UTF8_BOM.to_vec();
    with_bom.extend_from_slice(EXAMPLE_UTF8);
    assert_eq!(read_all(&with_bom).unwrap(), expected);

    let lf = String::from_utf8(EXAMPLE_UTF8.to_vec()).unwrap().replace("\r\n", "\n");
    assert_eq!(read_all(lf.as_bytes()).unwrap(), expected);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(EXAMPLE_GB18030).unwrap();
    assert_eq!(read_all(&gz.finish().unwrap()).unwrap(), expected);
}

#[test]
fn a_wrong_wallet_or_day_is_refused_on_line_one() {
    let reader = open_statement(EXAMPLE_UTF8).unwrap();
    assert!(reader.expect("0021000000000001", "2026-11-28").is_ok());
    let err = reader.expect("0021000000000002", "2026-11-28").unwrap_err();
    assert_eq!(err.line_no, 1);
    assert!(matches!(err.reason, Reason::WrongFile { field: "wallet", .. }));
    assert!(matches!(reader.expect("0021000000000001", "2026-11-27").unwrap_err().reason, Reason::WrongFile { .. }));
}

#[test]
fn a_gb18030_byte_order_mark_is_named_as_such() {
    let mut with_bom = GB18030_BOM.to_vec();
    with_bom.extend_from_slice(EXAMPLE_GB18030);
    let err = open_statement(with_bom.as_slice()).err().expect("refused");
    assert_eq!(err.line_no, 1);
    assert_eq!(err.reason, Reason::Gb18030Bom);
    assert!(err.to_string().starts_with("line 1: the file starts with a GB18030 byte order mark"), "{err}");
    // Inside gzip too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&with_bom).unwrap();
    assert_eq!(open_statement(gz.finish().unwrap().as_slice()).err().map(|err| err.reason), Some(Reason::Gb18030Bom));
}

fn line_at(settled_at: &str) -> StatementLine {
    StatementLine {
        settled_at: settled_at.to_owned(),
        operator_ref: String::from("OP1"),
        out_no: String::from("P-1"),
        kind: EntryKind::Payment,
        status: EntryStatus::Success,
        amount_fen: 1250,
        fee_fen: 0,
        counterparty: String::new(),
        memo: String::new(),
    }
}

#[test]
fn a_line_is_of_the_headers_day_or_of_the_last_half_hour_before_it() {
    // Header day 2026-11-28.
    for ok in ["2026-11-28 00:00:00", "2026-11-28 23:59:59", "2026-11-27 23:30:00", "2026-11-27 23:59:59"] {
        let bytes = write_statement(&header(), &[line_at(ok)]).unwrap();
        assert!(read_all(&bytes).is_ok(), "{ok}");
    }
    for bad in ["2026-11-27 23:29:59", "2026-11-27 09:15:02", "2026-11-29 00:00:00", "2026-11-26 23:59:59"] {
        let bytes = write_statement(&header(), &[line_at("2026-11-28 12:00:00"), line_at(bad)]).unwrap();
        let err = read_all(&bytes).unwrap_err();
        assert_eq!(err.line_no, 4, "{bad}: the offending line, after the header, columns and a good line");
        assert!(matches!(&err.reason, Reason::OutsideDay { settled_at, .. } if settled_at == bad), "{err}");
        assert!(err.to_string().contains("business day 2026-11-28"), "{err}");
    }
    // Across a month and a year end.
    let new_year = StatementHeader { date: String::from("2027-01-01"), ..header() };
    let bytes = write_statement(&new_year, &[line_at("2026-12-31 23:45:00")]).unwrap();
    assert!(read_all(&bytes).is_ok());
}

#[test]
fn a_file_whose_lines_are_all_of_the_day_before_its_header_is_refused_at_its_first_line() {
    // The spec's example, its header moved to the next day.
    let text = String::from_utf8(EXAMPLE_UTF8.to_vec()).unwrap();
    let moved = text.replacen(",2026-11-28,", ",2026-11-29,", 1);
    let err = read_all(moved.as_bytes()).unwrap_err();
    assert_eq!(err.line_no, 3);
    assert!(matches!(err.reason, Reason::OutsideDay { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("line 3: 交易时间 2026-11-28 07:31:05 is not of the header's business day 2026-11-29")
    );
}

#[test]
fn an_amount_beyond_any_ledger_amount_is_refused() {
    let mut line = line_at("2026-11-28 12:00:00");
    line.amount_fen = crate::domain::money::Amount::MAX_FEN + 1;
    let bytes = write_statement(&header(), &[line]).unwrap();
    assert!(matches!(read_all(&bytes).unwrap_err().reason, Reason::Field { field: "金额", .. }));
}

#[test]
fn every_truncation_of_the_example_is_refused() {
    for len in 0..EXAMPLE_UTF8.len() {
        assert!(read_all(&EXAMPLE_UTF8[..len]).is_err(), "a file cut to {len} bytes was accepted");
    }
    for len in 0..EXAMPLE_GB18030.len() {
        assert!(read_all(&EXAMPLE_GB18030[..len]).is_err(), "a GB18030 file cut to {len} bytes was accepted");
    }
}

#[test]
fn corrupt_lines_are_named_by_line_number() {
    let text = String::from_utf8(EXAMPLE_UTF8.to_vec()).unwrap();
    let changed_trailer = text.replace("#TOTAL,9,", "#TOTAL,8,");
    let err = read_all(changed_trailer.as_bytes()).unwrap_err();
    // Header, columns, nine records of which one spans two lines: the trailer is line 13.
    assert_eq!(err.line_no, 13);
    assert!(matches!(err.reason, Reason::TrailerMismatch { field: "line_count", .. }), "{err}");

    let bad_amount = text.replace("`12.50", "`12.5");
    let err = read_all(bad_amount.as_bytes()).unwrap_err();
    assert_eq!(err.line_no, 3);
    assert!(matches!(err.reason, Reason::Field { field: "金额", .. }), "{err}");

    let after = format!("{text}extra\r\n");
    assert_eq!(read_all(after.as_bytes()).unwrap_err().reason, Reason::AfterTrailer);

    let mut not_text = EXAMPLE_UTF8.to_vec();
    let at = text.find("早餐").unwrap();
    not_text[at] = 0xff;
    assert_eq!(read_all(&not_text).unwrap_err().reason, Reason::Encoding);
}

#[test]
fn an_overlong_line_is_refused_without_buffering_it() {
    let mut text = String::from_utf8(EXAMPLE_UTF8.to_vec()).unwrap();
    text.insert_str(text.find("早餐").unwrap(), &"x".repeat(MAX_LINE_BYTES));
    assert_eq!(read_all(text.as_bytes()).unwrap_err().reason, Reason::TooLong);
}

#[test]
fn yuan_parsing_is_strict() {
    assert_eq!(parse_yuan_fen("12.50"), Some(1250));
    assert_eq!(parse_yuan_fen("-1.00"), Some(-100));
    assert_eq!(parse_yuan_fen("0.05"), Some(5));
    for bad in ["", ".50", "1.5", "1.500", "1,00", "+1.00", "1e2", "9999999999999999.00"] {
        assert_eq!(parse_yuan_fen(bad), None, "{bad:?}");
    }
}

pub(crate) fn arb_line() -> impl Strategy<Value = StatementLine> {
    let kind = prop::sample::select(EntryKind::ALL.to_vec());
    let status = prop::sample::select(vec![EntryStatus::Success, EntryStatus::Reversed]);
    // Memos exercise every quoting rule: commas, quotes, CR/LF, backticks, CJK.
    let memo = "[a-z午餐补贴,\"`\r\n ]{0,12}";
    (
        (0u32..86_400).prop_map(|s| format!("2026-11-28 {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)),
        "OP[0-9]{1,12}",
        "[A-Za-z0-9`-]{0,16}",
        kind,
        status,
        0i64..10_000_000,
        any::<bool>(),
        0i64..10_000,
        "(0021\\*\\*\\*\\*[0-9]{4})?",
        memo,
    )
        .prop_map(
            |(settled_at, operator_ref, out_no, kind, status, amount_fen, negative, fee_fen, counterparty, memo)| {
                let amount_fen = if kind == EntryKind::Adjustment && negative { -amount_fen } else { amount_fen };
                StatementLine {
                    settled_at,
                    operator_ref,
                    out_no,
                    kind,
                    status,
                    amount_fen,
                    fee_fen,
                    counterparty,
                    memo,
                }
            },
        )
}

fn header() -> StatementHeader {
    StatementHeader {
        wallet_id: String::from("0021000000000001"),
        date: String::from("2026-11-28"),
        generated_at: String::from("2026-11-29T09:00:00+08:00"),
    }
}

proptest! {
    #[test]
    fn any_written_statement_reads_back_to_the_same_lines(
        lines in prop::collection::vec(arb_line(), 0..24),
        gb18030 in any::<bool>(),
        lf in any::<bool>(),
    ) {
        let mut bytes = write_statement(&header(), &lines).unwrap();
        if lf {
            // Only line ends between records change; a quoted memo keeps its own bytes.
            bytes = rewrite_record_ends_as_lf(&bytes, &lines);
        }
        if gb18030 {
            let text = String::from_utf8(bytes.clone()).unwrap();
            bytes = encoding_rs::GB18030.encode(&text).0.into_owned();
        }
        let (read_header, read_lines, totals) = read_all(&bytes).unwrap();
        prop_assert_eq!(read_header, header());
        prop_assert_eq!(&read_lines, &lines);
        prop_assert_eq!(Ok(totals), super::super::write::totals(&lines));
    }

    #[test]
    fn any_truncation_is_refused(lines in prop::collection::vec(arb_line(), 0..12), cut in any::<prop::sample::Index>()) {
        let bytes = write_statement(&header(), &lines).unwrap();
        let len = cut.index(bytes.len());
        prop_assert!(read_all(&bytes[..len]).is_err());
    }

    #[test]
    fn any_trailer_change_is_refused(
        lines in prop::collection::vec(arb_line(), 0..12),
        field in 0usize..4,
        delta in prop_oneof![1i64..1000, -1000i64..0],
    ) {
        let mut totals = super::super::write::totals(&lines).unwrap();
        match field {
            0 => totals.line_count = totals.line_count.saturating_add_signed(delta),
            1 => totals.credit_fen += delta,
            2 => totals.debit_fen += delta,
            _ => totals.fee_fen += delta,
        }
        prop_assume!(totals != super::super::write::totals(&lines).unwrap());
        let bytes = write_statement_with_totals(&header(), &lines, &totals);
        prop_assert!(read_all(&bytes).is_err());
    }
}

/// The writer's CRLF between records as bare LF, leaving line breaks inside quoted memos.
fn rewrite_record_ends_as_lf(_bytes: &[u8], lines: &[StatementLine]) -> Vec<u8> {
    let crlf = write_statement(&header(), lines).unwrap();
    let text = String::from_utf8(crlf).unwrap();
    let mut out = String::with_capacity(text.len());
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '"' {
            in_quotes = !in_quotes;
        }
        if ch == '\r' && !in_quotes && chars.peek() == Some(&'\n') {
            continue;
        }
        out.push(ch);
    }
    out.into_bytes()
}

#[test]
fn statement_errors_stay_distinct_from_read_errors() {
    // A negative payment is a line error, reported with the line number.
    let mut text = String::from_utf8(EXAMPLE_UTF8.to_vec()).unwrap();
    text = text.replace("`12.50", "`-12.50");
    let err = read_all(text.as_bytes()).unwrap_err();
    assert_eq!(err.line_no, 3);
    let expected = StatementError::NegativeAmount { index: 0, kind: "PAYMENT" }.to_string();
    assert_eq!(err.reason, Reason::Line(expected));
}

proptest! {
    /// The direct reading of a settlement time accepts exactly what the `time` parser does.
    #[test]
    fn settlement_times_are_checked_exactly_as_the_time_parser_does(
        text in prop_oneof![
            "[0-9]{4}-[0-1][0-9]-[0-3][0-9] [0-2][0-9]:[0-6][0-9]:[0-6][0-9]",
            "[0-9+ -]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}",
            "[0-9:+ -]{17,21}",
        ],
    ) {
        let by_parser = PrimitiveDateTime::parse(&text, format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"))
            .is_ok() && text.len() == 19;
        prop_assert_eq!(is_settled_at(&text), by_parser, "{:?}", text);
    }

    /// A plain line split directly gives the fields the RFC 4180 state machine gives.
    #[test]
    fn plain_lines_split_as_the_state_machine_reads_them(
        fields in prop::collection::vec("`?[a-z0-9午餐 `.-]{0,6}", 1..12),
        crlf in any::<bool>(),
    ) {
        let line = format!("{}{}", fields.join(","), if crlf { "\r\n" } else { "\n" });
        let body = &line[..simple_record(line.as_bytes()).expect("a plain line")];
        let mut direct = Vec::new();
        split_simple_fields(body.as_bytes(), &mut direct);
        let direct: Vec<&str> = direct.iter().map(|&(start, end)| &body[start..end]).collect();
        let (mut text, mut ranges) = (String::new(), Vec::new());
        prop_assert!(RecordParser::default().feed(&line, &mut text, &mut ranges).unwrap());
        let machine: Vec<&str> = ranges.iter().map(|&(start, end)| &text[start..end]).collect();
        prop_assert_eq!(direct, machine);
    }
}

#[test]
fn quoted_and_stray_carriage_return_lines_take_the_state_machine() {
    assert_eq!(simple_record(b"`a,`b\r\n"), Some(5));
    assert!(simple_record(b"`a,\"`b,c\"\r\n").is_none());
    assert!(simple_record(b"`a\r,`b\n").is_none());
    assert!(simple_record(b"`a,`b").is_none(), "a line without its end");
}

#[test]
fn the_corpus_seeds_of_plain_and_quoted_lines_read_as_written() {
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/statement/");
    let valid = std::fs::read(format!("{corpus}valid_plain_and_quoted_lines.csv")).unwrap();
    let (_, lines, totals) = read_all(&valid).unwrap();
    assert_eq!(lines[1].out_no, "P-2,a");
    assert_eq!(lines[1].memo, "a\rb\r\nc");
    assert_eq!(lines[2].out_no, "");
    assert_eq!(lines[3].memo, "调整");
    assert_eq!(totals.line_count, 4);
    let bare = std::fs::read(format!("{corpus}invalid_bare_carriage_return.csv")).unwrap();
    assert_eq!(read_all(&bare).unwrap_err(), ReadError { line_no: 3, reason: Reason::BareCarriageReturn });
}

/// The RFC 4180 state machine as first written, a character at a time, into owned fields:
/// the reference the reader's run-at-a-time parser must agree with.
fn reference_record(physical_lines: &[&str]) -> Result<Option<Vec<String>>, Reason> {
    use CsvState::*;
    let (mut state, mut fields, mut current) = (FieldStart, Vec::new(), String::new());
    let end_field = |fields: &mut Vec<String>, current: &mut String| {
        let mut value = std::mem::take(current);
        if value.starts_with('`') {
            value.remove(0);
        }
        fields.push(value);
    };
    for line in physical_lines {
        for ch in line.chars() {
            state = match (state, ch) {
                (CarriageReturn, '\n') | (FieldStart | Unquoted | QuoteInQuoted, '\n') => {
                    end_field(&mut fields, &mut current);
                    return Ok(Some(fields));
                }
                (CarriageReturn, _) => return Err(Reason::BareCarriageReturn),
                (FieldStart | Unquoted | QuoteInQuoted, '\r') => CarriageReturn,
                (FieldStart | Unquoted | QuoteInQuoted, ',') => {
                    end_field(&mut fields, &mut current);
                    FieldStart
                }
                (FieldStart, '"') => Quoted,
                (Unquoted, '"') if current == "`" => Quoted,
                (QuoteInQuoted, '"') => {
                    current.push('"');
                    Quoted
                }
                (Unquoted, '"') | (QuoteInQuoted, _) => return Err(Reason::Quoting),
                (FieldStart | Unquoted, other) => {
                    current.push(other);
                    Unquoted
                }
                (Quoted, '"') => QuoteInQuoted,
                (Quoted, other) => {
                    current.push(other);
                    Quoted
                }
            };
        }
    }
    Ok(None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Over any text (quotes, commas, CR, LF, backticks, CJK), one record is read alike by the
    /// reference machine and by the reader's parser, fed the same physical lines.
    #[test]
    fn the_record_parser_reads_as_the_reference_machine(text in "[a`\",\r\n午 ]{0,40}\n") {
        let physical: Vec<&str> = text.split_inclusive('\n').collect();
        let expected = reference_record(&physical);
        let (mut parser, mut buffer, mut ranges) = (RecordParser::default(), String::new(), Vec::new());
        let mut actual = Ok(None);
        for line in &physical {
            match parser.feed(line, &mut buffer, &mut ranges) {
                Ok(true) => {
                    actual = Ok(Some(ranges.iter().map(|&(start, end)| buffer[start..end].to_owned()).collect()));
                    break;
                }
                Ok(false) => {}
                Err(reason) => {
                    actual = Err(reason);
                    break;
                }
            }
        }
        prop_assert_eq!(actual, expected);
    }
}

/// The spec leaves REVERSED lines out of every total but says `fee_total` "sums the fee
/// column": a file of either reading is taken, and one that fits neither is still corrupt.
#[test]
fn a_fee_total_with_or_without_reversed_lines_fees_is_taken_and_any_other_refused() {
    let (header, mut lines, _) = read_all(EXAMPLE_UTF8).unwrap();
    assert_eq!(lines[2].status, EntryStatus::Reversed);
    lines[2].fee_fen = 4;
    let spec = StatementTotals { line_count: 9, credit_fen: 232_750, debit_fen: 30_661, fee_fen: 57 };
    for fee_fen in [57, 61] {
        let bytes = write_statement_with_totals(&header, &lines, &StatementTotals { fee_fen, ..spec });
        let (_, read, totals) = read_all(&bytes).unwrap();
        assert_eq!(totals.fee_fen, fee_fen);
        assert_eq!(read[2].fee_fen, 4);
    }
    let bytes = write_statement_with_totals(&header, &lines, &StatementTotals { fee_fen: 60, ..spec });
    let error = read_all(&bytes).unwrap_err();
    assert!(error.to_string().contains("fee_total is 0.60, the lines add up to 0.57"), "{error}");
}
