//! A run's line-level result on disk: chunks of [`CHUNK_LINES`] consecutive lines, each one
//! byte string written in the run's transaction (migration 0009). A million-line day is a
//! few hundred rows instead of a million, and a page of the result reads one or two chunks.
//!
//! Within a chunk each line is a few bytes: codes for the category, kinds and statuses,
//! LEB128 varints for numbers (line numbers as the difference to the line before), and each
//! string stored as the length of the prefix it shares with the same column of the line
//! before plus the rest (lines come in merchant-number order, so neighbours share most of
//! their merchant number, reference, time and day). A matched record whose numbers equal
//! its line's is stored as that fact. A chunk decodes on its own.

use crate::domain::reconciliation::{CarepaySide, Category, Fields, MS_PER_DAY, Outcome, StatementSide, business_day};
use crate::domain::statement::{EntryKind, EntryStatus};
use crate::domain::time::UnixMs;

use super::ResultLine;

/// Lines per chunk: a page of the API (at most a few hundred lines) touches one or two
/// chunks, and a chunk stays around a hundred kilobytes.
pub const CHUNK_LINES: usize = 4096;

/// The first byte of every chunk: how the rest is laid out.
const FORMAT_V1: u8 = 1;

const HAS_LINE: u8 = 1;
const HAS_ENTRY: u8 = 1 << 1;
const HAS_REFERENCE: u8 = 1 << 2;
/// The record's kind, status, amount and fee are the line's (every match).
const ENTRY_AS_LINE: u8 = 1 << 3;

/// One chunk ready to be written.
pub struct EncodedChunk {
    /// `seq` of its first line (1-based over the run).
    pub first_seq: i64,
    pub line_count: i64,
    pub content: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("result chunk at seq {first_seq} is corrupt: {what}")]
pub struct ChunkError {
    pub first_seq: i64,
    pub what: &'static str,
}

/// The strings of the line before, per column.
#[derive(Default)]
struct Previous {
    out_no: Vec<u8>,
    operator_ref: Vec<u8>,
    settled_at: Vec<u8>,
    business_day: Vec<u8>,
    line_no: u64,
}

/// Encodes outcomes into chunks as they come, one chunk per [`CHUNK_LINES`].
#[derive(Default)]
pub struct ResultEncoder {
    chunk: Vec<u8>,
    lines: usize,
    /// Lines in the chunks already handed out.
    done: usize,
    previous: Previous,
    days: DayNames,
}

impl ResultEncoder {
    /// Adds the next outcome; returns the chunk it completes, if it does.
    pub fn push(
        &mut self,
        statement: &StatementSide,
        carepay: &CarepaySide,
        outcome: &Outcome,
    ) -> Option<EncodedChunk> {
        if self.lines == 0 {
            self.chunk.reserve(CHUNK_LINES * 24 + 1);
            self.chunk.push(FORMAT_V1);
            self.previous = Previous::default();
        }
        encode_line(&mut self.chunk, &mut self.previous, &mut self.days, statement, carepay, outcome);
        self.lines += 1;
        (self.lines == CHUNK_LINES).then(|| self.take())
    }

    /// The last, partly filled chunk, if any.
    pub fn finish(mut self) -> Option<EncodedChunk> {
        (self.lines > 0).then(|| self.take())
    }

    fn take(&mut self) -> EncodedChunk {
        let chunk = EncodedChunk {
            first_seq: i64::try_from(self.done + 1).unwrap_or(i64::MAX),
            line_count: i64::try_from(self.lines).unwrap_or(i64::MAX),
            content: std::mem::take(&mut self.chunk),
        };
        self.done += self.lines;
        self.lines = 0;
        chunk
    }
}

/// Encodes every outcome, in order, into chunks.
pub fn encode_chunks(statement: &StatementSide, carepay: &CarepaySide, outcomes: &[Outcome]) -> Vec<EncodedChunk> {
    let mut encoder = ResultEncoder::default();
    let mut chunks: Vec<EncodedChunk> =
        outcomes.iter().filter_map(|outcome| encoder.push(statement, carepay, outcome)).collect();
    chunks.extend(encoder.finish());
    chunks
}

/// `YYYY-MM-DD` of a record's settlement, formatted once per day rather than per record.
#[derive(Default)]
struct DayNames {
    last: Option<(i64, String)>,
}

impl DayNames {
    fn of(&mut self, settled_at_ms: i64) -> &str {
        const SHANGHAI_OFFSET_MS: i64 = 8 * 3_600_000;
        let day = (settled_at_ms + SHANGHAI_OFFSET_MS).div_euclid(MS_PER_DAY);
        if self.last.as_ref().is_none_or(|(known, _)| *known != day) {
            self.last = Some((day, business_day(UnixMs(settled_at_ms))));
        }
        self.last.as_ref().map(|(_, name)| name.as_str()).unwrap_or_default()
    }
}

fn encode_line(
    out: &mut Vec<u8>,
    previous: &mut Previous,
    days: &mut DayNames,
    statement: &StatementSide,
    carepay: &CarepaySide,
    outcome: &Outcome,
) {
    let line = outcome.line.map(|line| statement.item(line));
    let entry = outcome.entry.map(|entry| carepay.item(entry));
    let operator_ref = line.map(|item| item.operator_ref).or(entry.and_then(|entry| entry.operator_ref));
    let entry_as_line = match (line, entry) {
        (Some(item), Some(entry)) => {
            item.kind == entry.kind
                && item.status == entry.status
                && item.amount_fen == entry.amount_fen
                && item.fee_fen == entry.expected_fee_fen
        }
        _ => false,
    };
    let flag = |set: bool, bit: u8| if set { bit } else { 0 };
    let flags = flag(line.is_some(), HAS_LINE)
        | flag(entry.is_some(), HAS_ENTRY)
        | flag(operator_ref.is_some(), HAS_REFERENCE)
        | flag(entry_as_line, ENTRY_AS_LINE);
    out.push(category_code(outcome.category));
    out.push(outcome.fields.bits());
    out.push(flags);
    let out_no = entry.map(|entry| entry.out_no).or(line.map(|item| item.out_no)).unwrap_or_default();
    push_string(out, &mut previous.out_no, out_no);
    if let Some(operator_ref) = operator_ref {
        push_string(out, &mut previous.operator_ref, operator_ref);
    }
    if let Some(item) = line {
        push_signed(out, (item.line_no as i64).wrapping_sub(previous.line_no as i64));
        previous.line_no = item.line_no;
        out.push(kind_status_code(item.kind, item.status));
        push_signed(out, item.amount_fen);
        push_signed(out, item.fee_fen);
        push_string(out, &mut previous.settled_at, item.settled_at);
    }
    if let Some(entry) = entry {
        if !entry_as_line {
            out.push(kind_status_code(entry.kind, entry.status));
            push_signed(out, entry.amount_fen);
            push_signed(out, entry.expected_fee_fen);
        }
        push_string(out, &mut previous.business_day, days.of(entry.settled_at_ms));
    }
}

/// Decodes one chunk back into its lines, numbered from `first_seq`.
pub fn decode_chunk(first_seq: i64, content: &[u8]) -> Result<Vec<ResultLine>, ChunkError> {
    let fail = |what| ChunkError { first_seq, what };
    let mut input = Input { bytes: content, first_seq };
    if input.byte()? != FORMAT_V1 {
        return Err(fail("unknown format"));
    }
    let mut previous = Previous::default();
    let mut lines = Vec::with_capacity(CHUNK_LINES);
    let mut seq = first_seq;
    while !input.bytes.is_empty() {
        let category = *Category::ALL.get(usize::from(input.byte()?)).ok_or_else(|| fail("category"))?;
        let fields = Fields::from_bits(input.byte()?).ok_or_else(|| fail("fields"))?;
        let flags = input.byte()?;
        let out_no = input.string(&mut previous.out_no)?;
        let operator_ref =
            if flags & HAS_REFERENCE != 0 { Some(input.string(&mut previous.operator_ref)?) } else { None };
        let mut result = ResultLine {
            seq,
            category: category.as_str().to_owned(),
            fields: fields.names().map(str::to_owned).collect(),
            line_no: None,
            out_no,
            operator_ref,
            statement_kind: None,
            statement_status: None,
            statement_amount_fen: None,
            statement_fee_fen: None,
            settled_at: None,
            carepay_kind: None,
            carepay_status: None,
            carepay_amount_fen: None,
            carepay_fee_fen: None,
            carepay_business_day: None,
        };
        let mut line_numbers = None;
        if flags & HAS_LINE != 0 {
            let line_no = (previous.line_no as i64).wrapping_add(input.signed()?);
            previous.line_no = line_no as u64;
            let (kind, status) = input.kind_status()?;
            let (amount_fen, fee_fen) = (input.signed()?, input.signed()?);
            result.line_no = Some(line_no);
            result.statement_kind = Some(kind.as_str().to_owned());
            result.statement_status = Some(status.as_str().to_owned());
            result.statement_amount_fen = Some(amount_fen);
            result.statement_fee_fen = Some(fee_fen);
            result.settled_at = Some(input.string(&mut previous.settled_at)?);
            line_numbers = Some((kind, status, amount_fen, fee_fen));
        }
        if flags & HAS_ENTRY != 0 {
            let (kind, status, amount_fen, fee_fen) = if flags & ENTRY_AS_LINE != 0 {
                line_numbers.ok_or_else(|| fail("a record as its line without a line"))?
            } else {
                let (kind, status) = input.kind_status()?;
                (kind, status, input.signed()?, input.signed()?)
            };
            result.carepay_kind = Some(kind.as_str().to_owned());
            result.carepay_status = Some(status.as_str().to_owned());
            result.carepay_amount_fen = Some(amount_fen);
            result.carepay_fee_fen = Some(fee_fen);
            result.carepay_business_day = Some(input.string(&mut previous.business_day)?);
        }
        lines.push(result);
        seq += 1;
    }
    Ok(lines)
}

fn category_code(category: Category) -> u8 {
    Category::ALL.iter().position(|known| *known == category).and_then(|index| u8::try_from(index).ok()).unwrap_or(0)
}

fn kind_status_code(kind: EntryKind, status: EntryStatus) -> u8 {
    let kind = EntryKind::ALL.iter().position(|known| *known == kind).unwrap_or(0) as u8;
    kind << 1 | u8::from(status == EntryStatus::Reversed)
}

fn push_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Zigzag, so small negative numbers stay small.
fn push_signed(out: &mut Vec<u8>, value: i64) {
    push_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// The length shared with `previous`, the rest's length and the rest; `previous` becomes
/// `value`.
fn push_string(out: &mut Vec<u8>, previous: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let shared = previous.iter().zip(bytes).take_while(|(a, b)| a == b).count();
    push_unsigned(out, shared as u64);
    push_unsigned(out, (bytes.len() - shared) as u64);
    out.extend_from_slice(&bytes[shared..]);
    previous.truncate(shared);
    previous.extend_from_slice(&bytes[shared..]);
}

struct Input<'a> {
    bytes: &'a [u8],
    first_seq: i64,
}

impl Input<'_> {
    fn fail(&self, what: &'static str) -> ChunkError {
        ChunkError { first_seq: self.first_seq, what }
    }

    fn byte(&mut self) -> Result<u8, ChunkError> {
        let (&first, rest) = self.bytes.split_first().ok_or_else(|| self.fail("cut short"))?;
        self.bytes = rest;
        Ok(first)
    }

    fn unsigned(&mut self) -> Result<u64, ChunkError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.fail("varint too long"))
    }

    fn signed(&mut self) -> Result<i64, ChunkError> {
        let zigzag = self.unsigned()?;
        Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
    }

    fn kind_status(&mut self) -> Result<(EntryKind, EntryStatus), ChunkError> {
        let code = self.byte()?;
        let kind = *EntryKind::ALL.get(usize::from(code >> 1)).ok_or_else(|| self.fail("kind"))?;
        let status = if code & 1 == 1 { EntryStatus::Reversed } else { EntryStatus::Success };
        Ok((kind, status))
    }

    fn string(&mut self, previous: &mut Vec<u8>) -> Result<String, ChunkError> {
        let shared = usize::try_from(self.unsigned()?).map_err(|_| self.fail("prefix"))?;
        let rest = usize::try_from(self.unsigned()?).map_err(|_| self.fail("length"))?;
        if shared > previous.len() || rest > self.bytes.len() {
            return Err(self.fail("string out of bounds"));
        }
        let (suffix, tail) = self.bytes.split_at(rest);
        self.bytes = tail;
        previous.truncate(shared);
        previous.extend_from_slice(suffix);
        String::from_utf8(previous.clone()).map_err(|_| self.fail("not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::reconciliation::{CarepayEntry, MatchSettings, day_start_ms, reconcile};
    use crate::domain::statement::LineRef;

    fn line<'a>(line_no: u64, out_no: &'a str, operator_ref: &'a str, kind: EntryKind, amount_fen: i64) -> LineRef<'a> {
        LineRef {
            line_no,
            settled_at: "2026-11-28 10:00:00",
            operator_ref,
            out_no,
            kind,
            status: EntryStatus::Success,
            amount_fen,
            fee_fen: 3,
            counterparty: "",
            memo: "调整",
        }
    }

    #[test]
    fn every_outcome_decodes_to_what_its_sides_say() {
        let day_start = day_start_ms("2026-11-28").unwrap();
        let mut statement = StatementSide::default();
        statement.push(&line(3, "P-1", "OP1", EntryKind::Payment, 1250)).unwrap();
        statement.push(&line(4, "P-2", "OP2", EntryKind::Payment, 1500)).unwrap();
        statement.push(&line(6, "", "OP3", EntryKind::Adjustment, -100)).unwrap();
        statement.push(&line(7, "X-1", "OP4", EntryKind::Payment, 100)).unwrap();
        let mut carepay = CarepaySide::default();
        let entry = |out_no: &str, amount_fen, settled_at_ms| CarepayEntry {
            out_no: out_no.to_owned(),
            operator_ref: Some(format!("T{out_no}")),
            kind: EntryKind::Payment,
            status: EntryStatus::Success,
            amount_fen,
            expected_fee_fen: 3,
            settled_at_ms,
        };
        carepay.push(&entry("P-1", 1250, day_start + 1)).unwrap();
        carepay.push(&entry("P-2", 1499, day_start + 2)).unwrap();
        carepay.push(&entry("P-3", 800, day_start + 3)).unwrap();
        let settings =
            MatchSettings { date: String::from("2026-11-28"), past_grace: true, listed_elsewhere: Default::default() };
        let mut outcomes = Vec::new();
        reconcile(&settings, &statement, &carepay, |outcome| outcomes.push(outcome));
        // More than one chunk, so chunk boundaries are crossed too.
        let many: Vec<Outcome> = outcomes.iter().copied().cycle().take(CHUNK_LINES + 7).collect();

        let chunks = encode_chunks(&statement, &carepay, &many);
        assert_eq!(chunks.len(), 2);
        let decoded: Vec<ResultLine> =
            chunks.iter().flat_map(|chunk| decode_chunk(chunk.first_seq, &chunk.content).unwrap()).collect();
        assert_eq!(decoded.len(), many.len());
        for (index, (outcome, result)) in many.iter().zip(&decoded).enumerate() {
            let line = outcome.line.map(|line| statement.item(line));
            let entry = outcome.entry.map(|entry| carepay.item(entry));
            assert_eq!(result.seq, index as i64 + 1);
            assert_eq!(result.category, outcome.category.as_str());
            assert_eq!(result.fields, outcome.fields.names().collect::<Vec<_>>());
            assert_eq!(result.line_no, line.map(|item| item.line_no as i64));
            assert_eq!(result.out_no, entry.map(|e| e.out_no).or(line.map(|item| item.out_no)).unwrap());
            let reference = line.map(|item| item.operator_ref).or(entry.and_then(|e| e.operator_ref));
            assert_eq!(result.operator_ref.as_deref(), reference);
            assert_eq!(result.statement_kind.as_deref(), line.map(|item| item.kind.as_str()));
            assert_eq!(result.statement_amount_fen, line.map(|item| item.amount_fen));
            assert_eq!(result.statement_fee_fen, line.map(|item| item.fee_fen));
            assert_eq!(result.settled_at.as_deref(), line.map(|item| item.settled_at));
            assert_eq!(result.carepay_kind.as_deref(), entry.map(|e| e.kind.as_str()));
            assert_eq!(result.carepay_status.as_deref(), entry.map(|e| e.status.as_str()));
            assert_eq!(result.carepay_amount_fen, entry.map(|e| e.amount_fen));
            assert_eq!(result.carepay_fee_fen, entry.map(|e| e.expected_fee_fen));
            assert_eq!(result.carepay_business_day, entry.map(|e| e.business_day()));
        }
    }

    #[test]
    fn a_cut_or_unknown_chunk_is_an_error_not_a_panic() {
        let mut statement = StatementSide::default();
        statement.push(&line(3, "P-1", "OP1", EntryKind::Payment, 1250)).unwrap();
        let outcomes =
            [Outcome { category: Category::MissingInCarepay, line: Some(0), entry: None, fields: Fields::NONE }];
        let chunk = encode_chunks(&statement, &CarepaySide::default(), &outcomes).remove(0);
        for len in 2..chunk.content.len() {
            assert!(decode_chunk(1, &chunk.content[..len]).is_err(), "cut to {len} bytes");
        }
        let mut other = chunk.content.clone();
        other[0] = 9;
        assert!(decode_chunk(1, &other).is_err());
        assert_eq!(decode_chunk(1, &chunk.content).unwrap().len(), 1);
    }
}
