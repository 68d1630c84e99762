//! Bodies of the cargo-fuzz targets in `fuzz/fuzz_targets/`.
//!
//! Every fuzz target is a one-line call into a function here, never logic of its own, so that
//! the ordinary `cargo test` run can replay each target's committed seed corpus
//! (`tests/fuzz_corpus.rs`) on stable Rust. That keeps the targets compiling and their
//! assertions true even on days nobody runs the fuzzer. A body must never panic on any input
//! except to report a broken invariant.

use crate::domain::money::Amount;

/// Fuzz body for [`Amount::parse`], the parser of every amount a client sends.
///
/// Invariants checked on every accepted input: only ASCII digits and a point got through, the
/// value is within the ceiling, formatting and re-parsing give the same amount (and the same
/// text when the input already had two decimals), and the JSON form round-trips.
pub fn amount(data: &[u8]) {
    // Lossy decoding still drives the parser with every input; invalid bytes become U+FFFD,
    // which must be refused like any other stray character.
    let text = String::from_utf8_lossy(data);
    let amount = match Amount::parse(&text) {
        Ok(amount) => amount,
        Err(err) => {
            // Rendering the error for a client must not panic either.
            assert!(!err.code().is_empty());
            assert!(!err.to_string().is_empty());
            return;
        }
    };

    assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'), "accepted a non-numeric amount {text:?}");
    assert!(
        (0..=Amount::MAX_FEN).contains(&amount.fen()),
        "accepted {text:?} as {} fen, outside 0..={}",
        amount.fen(),
        Amount::MAX_FEN
    );

    let formatted = amount.to_string();
    assert_eq!(Amount::parse(&formatted), Ok(amount), "{text:?} formats as {formatted:?}, which does not parse back");
    if text.split_once('.').is_some_and(|(_, frac)| frac.len() == 2) {
        assert_eq!(formatted, text, "two-decimal input changed when formatted");
    }

    let json = serde_json::to_string(&amount).expect("an amount always serializes");
    let back: Amount = serde_json::from_str(&json).expect("an amount's JSON parses back");
    assert_eq!(back, amount, "JSON round trip changed {text:?}");
}

/// Splits a fuzz input into four metadata values (first line, `|`-separated) and a body
/// (everything after the first line feed), so one byte string drives headers and body.
fn headers_and_body(data: &[u8]) -> ([Option<String>; 4], &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (head, rest) = data.split_at(split);
    let body = rest.get(1..).unwrap_or_default();
    let head = String::from_utf8_lossy(head);
    let mut fields = head.split('|').map(str::to_owned);
    ([fields.next(), fields.next(), fields.next(), fields.next()], body)
}

/// Fuzz body for the terminal request envelope: parse the four signature entries and the
/// gRPC frame, build the signed message, verify it, and decode the request message.
///
/// Invariants: parsing never panics; an accepted envelope's signed message ends with the
/// exact request bytes and starts with the method; a signature over other bytes never verifies.
pub fn terminal_envelope(data: &[u8]) {
    use crate::grpc::envelope::{Envelope, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TERMINAL_ID, HEADER_TIMESTAMP};
    use prost::Message as _;

    const METHOD: &str = "/carepay.terminal.v1.TerminalService/Pay";
    let (values, body) = headers_and_body(data);
    let header = |name: &str| {
        let index =
            [HEADER_TERMINAL_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE].iter().position(|h| *h == name)?;
        values[index].as_deref()
    };
    let Ok(envelope) = Envelope::parse(METHOD, header, body) else { return };
    let signed = envelope.signed_message();
    assert!(signed.starts_with(METHOD.as_bytes()));
    assert!(signed.ends_with(&envelope.message));
    assert_eq!(envelope.request_sha256().len(), 64);
    // The spec's Ed25519 test key never signed these bytes.
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, test_public_key());
    let _ = key.verify(&signed, &envelope.signature);
    let _ = crate::grpc::proto::PayRequest::decode(envelope.message.as_slice());
}

/// The public half of the operator spec's Ed25519 test key.
fn test_public_key() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode("AJleQ5YNwqtksahmYC5WevsvFkaBDD3c5JzFeyVyrfw=")
        .expect("the spec's key is valid base64")
}

/// Fuzz body for operator notification verification: signature headers (key id,
/// timestamp, nonce, signature) and a body, verified as `POST /v1/operator/notifications`
/// does, against the spec's test key at the spec's test time; then the body is parsed.
///
/// Invariants: nothing panics; only a body whose signature verifies is ever parsed as a
/// notification, as in the real endpoint; the spec's own vector verifies.
pub fn operator_notification(data: &[u8]) {
    let _ = notification_verifies(data);
}

/// Whether the input's signature verifies (and then, that its nonce cannot verify twice).
fn notification_verifies(data: &[u8]) -> bool {
    use crate::operator::clock::Clock;
    use crate::operator::signing::{
        HEADER_KEY_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, PublicKey, SignatureAlgorithm,
        SignatureHeaders, Verifier,
    };

    let (values, body) = headers_and_body(data);
    let mut headers = http::HeaderMap::new();
    for (name, value) in [HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE].iter().zip(values) {
        if let Some(value) = value.and_then(|value| http::HeaderValue::from_str(&value).ok()) {
            headers.insert(*name, value);
        }
    }
    let Ok(signature) = SignatureHeaders::from_header_map(&headers) else { return false };
    // The spec's notification vector is signed at 1795900001.
    let verifier = Verifier::new(Clock::manual(1_795_900_001_000));
    let key = PublicKey::new(SignatureAlgorithm::Ed25519, test_public_key()).expect("a 32-byte key");
    verifier.add_key("test", key).expect("a fresh verifier takes a key");
    if verifier.verify_response(&signature, body).is_err() {
        return false;
    }
    let _ = serde_json::from_slice::<crate::operator::types::Notification>(body);
    assert!(verifier.verify_response(&signature, body).is_err(), "the same nonce verified twice");
    true
}

/// Fuzz body for the statement reader (`domain::statement`), which reads files from the
/// operator and from accountants' uploads.
///
/// Invariants: reading never panics; a file is accepted or refused alike whether its lines
/// are read one by one or into the compact side a run matches, and the side holds the same
/// lines; an accepted file's lines, written again by the writer, read back to the same
/// header, lines and trailer.
pub fn statement(data: &[u8]) {
    use crate::domain::statement::{EntryKind, EntryStatus, StatementTotals, open_statement, write_statement};

    let side = crate::reconciliation::read_statement(data);
    let read = open_statement(data).and_then(|mut reader| {
        let lines = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok((reader, lines))
    });
    assert_eq!(side.is_ok(), read.is_ok(), "the side and the reader disagree on {data:?}");
    let (Ok((_, side, side_totals)), Ok((reader, lines))) = (side, read) else { return };
    assert_eq!(side.len(), lines.len());
    for (index, line) in lines.iter().enumerate() {
        let item = side.item(u32::try_from(index).expect("a small input"));
        assert_eq!(
            (item.settled_at, item.operator_ref, item.out_no, item.kind, item.status, item.amount_fen, item.fee_fen),
            (
                line.settled_at.as_str(),
                line.operator_ref.as_str(),
                line.out_no.as_str(),
                line.kind,
                line.status,
                line.amount_fen,
                line.fee_fen
            )
        );
        let keeps_memo = matches!(line.kind, EntryKind::Fee | EntryKind::Adjustment | EntryKind::TransferReturn);
        assert_eq!(item.memo, if keeps_memo { line.memo.as_str() } else { "" });
        if index > 0 {
            assert!(item.line_no > side.item(u32::try_from(index - 1).expect("a small input")).line_no);
        }
    }
    assert_eq!(reader.totals(), Some(side_totals));
    let header = reader.header().clone();
    let totals = reader.totals().expect("an accepted file has its trailer");
    let written = write_statement(&header, &lines).expect("accepted lines always write");
    let mut again = open_statement(written.as_slice()).expect("written header reads back");
    let lines_again = again.by_ref().collect::<Result<Vec<_>, _>>().expect("written lines read back");
    assert_eq!(again.header(), &header);
    assert_eq!(lines_again, lines);
    // The writer's `fee_total` leaves REVERSED lines out; the file read may have counted them.
    let reversed_fee_fen: i64 =
        lines.iter().filter(|line| line.status == EntryStatus::Reversed).map(|line| line.fee_fen).sum();
    let rewritten = again.totals().expect("a written file has its trailer");
    assert_eq!(StatementTotals { fee_fen: totals.fee_fen, ..rewritten }, totals);
    assert!(rewritten.fee_fen == totals.fee_fen || rewritten.fee_fen + reversed_fee_fen == totals.fee_fen);
}

/// Fuzz body for the subsidy batch file reader ([`crate::domain::disbursement`]), which reads
/// whatever bytes an office uploads, in UTF-8 or GB18030.
///
/// Invariants: the reader never panics; every accepted line has a valid ID number, a 16-digit
/// wallet id, an amount above zero and within the cap; line numbers only grow; the good totals
/// equal the sum of the accepted lines; the error list never exceeds its limit while its count
/// stays exact; no problem message repeats the middle of an accepted ID number; the accepted
/// lines, packed into a stored chunk, decode back to the same lines, with each ID number apart
/// and never inside the packed lines.
pub fn batch_file(data: &[u8]) {
    use crate::domain::disbursement::{BatchFileReader, ControlTotals, LineRules, validate_file};
    use crate::domain::line_chunk::{ChunkEncoder, citizen_id_at, decode_chunk};

    let cap = Amount::from_fen(200_000).expect("a valid cap");
    let rules = LineRules { per_payment_cap: cap, max_transaction_amount: Amount::MAX, max_lines: 10_000 };
    let mut reader = match BatchFileReader::open(data, rules) {
        Ok(reader) => reader,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused header must say why");
            return;
        }
    };
    let (mut last_line, mut count, mut total_fen, mut error_count) = (1u64, 0u64, 0i64, 0u64);
    let mut accepted_middles = Vec::new();
    let mut accepted = Vec::new();
    let mut chunk = ChunkEncoder::new();
    let mut messages = Vec::new();
    while let Some(result) = reader.next_line() {
        match result {
            Ok(line) => {
                assert!(line.line > last_line, "line numbers must grow: {} after {last_line}", line.line);
                last_line = line.line;
                assert!(!line.amount.is_zero() && line.amount <= cap, "accepted amount {}", line.amount);
                assert_eq!(line.wallet_id.as_str().len(), 16);
                assert!(crate::domain::citizen_id::CitizenId::parse(line.citizen_id.expose_clear_text()).is_ok());
                accepted_middles.push(line.citizen_id.expose_clear_text()[3..14].to_owned());
                count += 1;
                total_fen += line.amount.fen();
                chunk.push(&line);
                accepted.push(line);
            }
            Err(rejected) => {
                let errors = rejected.problems;
                assert!(!errors.is_empty(), "a refused line must say why");
                error_count += errors.len() as u64;
                messages.extend(errors.iter().map(ToString::to_string));
            }
        }
    }
    assert_eq!(
        reader.good_totals(),
        ControlTotals { line_count: count, total: Amount::from_fen(total_fen).expect("bounded sum") }
    );
    for middle in &accepted_middles {
        assert!(messages.iter().all(|m| !m.contains(middle.as_str())), "a problem message repeats an ID number");
    }
    let packed = chunk.finish();
    if !accepted.is_empty() {
        let stored = decode_chunk(&packed.lines, count).expect("a packed chunk decodes");
        assert_eq!(stored.len(), accepted.len());
        for (index, (stored, line)) in stored.iter().zip(&accepted).enumerate() {
            assert_eq!((stored.file_line, &stored.name, &stored.memo), (line.line, &line.name, &line.memo));
            assert_eq!((&stored.wallet_id, stored.amount), (&line.wallet_id, line.amount));
            assert_eq!(stored.citizen_id_masked, line.citizen_id.masked());
            let clear = line.citizen_id.expose_clear_text();
            assert_eq!(citizen_id_at(&packed.clear_ids, index, count).expect("the number of the line"), clear);
            let middle = &clear.as_bytes()[3..14];
            assert!(!packed.lines.windows(middle.len()).any(|w| w == middle), "an ID number inside the packed lines");
        }
    }

    let limit = 3;
    let (errors, _) = validate_file(data, rules, reader.good_totals(), limit);
    assert!(errors.listed().len() <= limit);
    assert!(errors.total() >= error_count, "validate_file lost problems: {} < {error_count}", errors.total());
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_specs_notification_vector_verifies_and_a_tampered_copy_does_not() {
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/operator_notification/");
        let valid = std::fs::read(format!("{corpus}spec_vector_valid")).unwrap();
        let tampered = std::fs::read(format!("{corpus}spec_vector_tampered_amount")).unwrap();
        assert!(super::notification_verifies(&valid));
        assert!(!super::notification_verifies(&tampered));
    }
}
