//! The streaming statement reader: bytes in (gzip or not, UTF-8 with or without BOM or
//! GB18030, CRLF or LF), typed lines out, one at a time, so memory stays bounded by the longest
//! record rather than the file. The trailer is checked when it is reached; a caller that
//! imports must therefore stage the lines and commit only after [`StatementReader::next_line`]
//! returned `Ok(None)`.
//!
//! Encoding is decided once per file from the fixed column line (it is Chinese, so UTF-8 and
//! GB18030 spell it differently): a file whose column line is not valid UTF-8 is GB18030, as
//! the spec says. Each physical line is decoded before any CSV parsing because a GB18030
//! trail byte may be a backtick (0x60); it is never a line feed, so splitting on 0x0A first is
//! safe.

use std::io::{self, BufRead, BufReader};

use flate2::bufread::MultiGzDecoder;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use crate::domain::money::Amount;

use super::write::{COLUMNS, EntryKind, EntryStatus, StatementHeader, StatementLine, StatementTotals};

/// No physical line of a valid file comes near this; a longer one is refused rather than
/// buffered, which is what keeps memory bounded on hostile input.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// A quoted memo may span physical lines; the whole record is bounded too.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UTF8_BOM: [u8; 3] = [0xef, 0xbb, 0xbf];
/// U+FEFF in GB18030. The format allows a byte order mark on UTF-8 only.
const GB18030_BOM: [u8; 4] = [0x84, 0x31, 0x95, 0x33];
/// How far into the day before a line of a day's statement may be dated. The spec dates an
/// entry by when it settled, always within the header's day; a writer that dates it by when
/// it began instead shows an entry that settled across midnight as started late on the day
/// before. Nothing settles later than it began by more than the longest a payment can wait
/// for its payer (a QR order lives at most 30 minutes), so earlier lines, and any after the
/// day, are of another day's file.
pub const LINE_MINUTES_BEFORE_DAY: u32 = 30;
const DETAIL_FIELDS: usize = 9;
/// Yuan digits before the point: 15 keeps every amount (and a million of them) inside i64 fen.
const MAX_YUAN_DIGITS: usize = 15;

/// Why a file is corrupt, with the (1-based, physical) line where it was noticed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line_no}: {reason}")]
pub struct ReadError {
    pub line_no: u64,
    pub reason: Reason,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("cannot read the file: {0}")]
    Io(String),
    #[error("the bytes are neither UTF-8 nor GB18030")]
    Encoding,
    #[error("a line is longer than {MAX_LINE_BYTES} bytes or a record longer than {MAX_RECORD_BYTES}")]
    TooLong,
    #[error("the header must be `#STATEMENT,v1,<wallet_id>,<YYYY-MM-DD>,<generated_at RFC 3339>`")]
    Header,
    #[error("the column line is not `{COLUMNS}`")]
    Columns,
    #[error("malformed quoting")]
    Quoting,
    #[error("a carriage return not followed by a line feed")]
    BareCarriageReturn,
    #[error("a detail line needs {DETAIL_FIELDS} fields, this one has {0}")]
    FieldCount(usize),
    #[error("invalid {field}: {value:?}")]
    Field { field: &'static str, value: String },
    #[error("{0}")]
    Line(String),
    #[error("the file ends before its `#TOTAL` trailer is complete (truncated)")]
    Truncated,
    #[error("the trailer must be `#TOTAL,<line_count>,<credit_total>,<debit_total>,<fee_total>`")]
    Trailer,
    #[error("the trailer's {field} is {stated}, the lines add up to {computed}")]
    TrailerMismatch { field: &'static str, stated: String, computed: String },
    #[error("text after the trailer")]
    AfterTrailer,
    #[error("the header names {field} {found}, expected {expected}")]
    WrongFile { field: &'static str, expected: String, found: String },
    #[error(
        "the file starts with a GB18030 byte order mark (84 31 95 33); only a UTF-8 statement may lead with one: \
         save the GB18030 file without it"
    )]
    Gb18030Bom,
    #[error(
        "交易时间 {settled_at} is not of the header's business day {date}: a line is dated on that day \
         (Asia/Shanghai), or from {earliest} for an entry that settled across midnight"
    )]
    OutsideDay { settled_at: String, date: String, earliest: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoding {
    Utf8,
    Gb18030,
}

/// Opens a statement: unwraps gzip when the bytes start with its magic, skips a UTF-8 BOM,
/// reads and checks the header and column lines.
pub fn open_statement<'a, R: BufRead + 'a>(mut input: R) -> Result<StatementReader<Box<dyn BufRead + 'a>>, ReadError> {
    let io_error = |err: io::Error| ReadError { line_no: 1, reason: Reason::Io(err.to_string()) };
    let gzipped = input.fill_buf().map_err(io_error)?.starts_with(&GZIP_MAGIC);
    let mut input: Box<dyn BufRead + 'a> =
        if gzipped { Box::new(BufReader::new(MultiGzDecoder::new(input))) } else { Box::new(input) };
    if input.fill_buf().map_err(io_error)?.starts_with(&GB18030_BOM) {
        return Err(ReadError { line_no: 1, reason: Reason::Gb18030Bom });
    }
    let has_bom = input.fill_buf().map_err(io_error)?.starts_with(&UTF8_BOM);
    if has_bom {
        input.consume(UTF8_BOM.len());
    }
    StatementReader::start(input, has_bom)
}

/// Reads detail lines one at a time; see the module comment for when the file is known good.
pub struct StatementReader<R> {
    input: R,
    encoding: TextEncoding,
    header: StatementHeader,
    /// Physical lines consumed so far.
    line_no: u64,
    computed: StatementTotals,
    /// Fees listed on REVERSED lines, which the spec's totals leave out; a trailer whose
    /// `fee_total` counts them is read too (see [`check_trailer`]).
    reversed_fee_fen: i64,
    stated: Option<StatementTotals>,
    raw: Vec<u8>,
    /// The current record's fields when quoting or decoding changed their bytes.
    text: String,
    /// The current record's fields: byte ranges into `raw` or into `text`.
    fields: Vec<(usize, usize)>,
    /// The physical line the last record returned started on.
    record_line_no: u64,
    /// `[earliest, end)`: the times (`YYYY-MM-DD HH:MM:SS`, which order as text) a line of
    /// the header's day may carry.
    earliest: String,
    end: String,
}

/// Where the current record's field ranges point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldText {
    /// Straight into the physical line (UTF-8, unquoted): no copy made.
    Raw,
    /// Into the decoded, unquoted copy.
    Copied,
}

/// A detail line as read, borrowing its text from the reader until the next line is read:
/// a caller that keeps only some fields copies only those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRef<'r> {
    /// The physical line (1-based) the record starts on.
    pub line_no: u64,
    pub settled_at: &'r str,
    pub operator_ref: &'r str,
    pub out_no: &'r str,
    pub kind: EntryKind,
    pub status: EntryStatus,
    pub amount_fen: i64,
    pub fee_fen: i64,
    pub counterparty: &'r str,
    pub memo: &'r str,
}

impl LineRef<'_> {
    pub fn to_line(&self) -> StatementLine {
        StatementLine {
            settled_at: self.settled_at.to_owned(),
            operator_ref: self.operator_ref.to_owned(),
            out_no: self.out_no.to_owned(),
            kind: self.kind,
            status: self.status,
            amount_fen: self.amount_fen,
            fee_fen: self.fee_fen,
            counterparty: self.counterparty.to_owned(),
            memo: self.memo.to_owned(),
        }
    }
}

impl<R: BufRead> StatementReader<R> {
    fn start(input: R, has_bom: bool) -> Result<Self, ReadError> {
        let mut reader = StatementReader {
            input,
            encoding: TextEncoding::Utf8,
            header: StatementHeader { wallet_id: String::new(), date: String::new(), generated_at: String::new() },
            line_no: 0,
            computed: StatementTotals::default(),
            reversed_fee_fen: 0,
            stated: None,
            raw: Vec::with_capacity(512),
            text: String::with_capacity(512),
            fields: Vec::with_capacity(DETAIL_FIELDS + 1),
            record_line_no: 0,
            earliest: String::new(),
            end: String::new(),
        };
        let header = reader.read_raw_line()?.to_vec();
        reader.header = std::str::from_utf8(&header)
            .ok()
            .filter(|text| text.is_ascii())
            .and_then(split_simple)
            .and_then(|fields| parse_header(&fields))
            .ok_or_else(|| reader.fail(Reason::Header))?;
        (reader.earliest, reader.end) = line_window(&reader.header.date).ok_or_else(|| reader.fail(Reason::Header))?;

        let columns = trim_line_end(reader.read_raw_line()?).to_vec();
        let columns = columns.as_slice();
        reader.encoding = if std::str::from_utf8(columns) == Ok(COLUMNS) {
            TextEncoding::Utf8
        } else if !has_bom && decode_gb18030(columns).as_deref() == Some(COLUMNS) {
            TextEncoding::Gb18030
        } else {
            return Err(reader.fail(Reason::Columns));
        };
        Ok(reader)
    }

    pub fn header(&self) -> &StatementHeader {
        &self.header
    }

    pub fn encoding(&self) -> TextEncoding {
        self.encoding
    }

    /// Refuses a file for another wallet or day than the one asked for.
    pub fn expect(&self, wallet_id: &str, date: &str) -> Result<(), ReadError> {
        let wrong = |field, expected: &str, found: &str| ReadError {
            line_no: 1,
            reason: Reason::WrongFile { field, expected: expected.to_owned(), found: found.to_owned() },
        };
        if self.header.wallet_id != wallet_id {
            return Err(wrong("wallet", wallet_id, &self.header.wallet_id));
        }
        if self.header.date != date {
            return Err(wrong("day", date, &self.header.date));
        }
        Ok(())
    }

    /// The physical line (1-based) the line last returned by `next_line` started on.
    pub fn record_line_no(&self) -> u64 {
        self.record_line_no
    }

    /// The trailer, once `next_line` has returned `Ok(None)`.
    pub fn totals(&self) -> Option<StatementTotals> {
        self.stated
    }

    /// The next detail line, `Ok(None)` once the trailer has been read and agrees with the
    /// lines, or the reason the whole file is corrupt.
    pub fn next_line(&mut self) -> Result<Option<StatementLine>, ReadError> {
        Ok(self.next_line_ref()?.map(|line| line.to_line()))
    }

    /// [`Self::next_line`] without copying the line's text: it borrows the reader's buffers.
    pub fn next_line_ref(&mut self) -> Result<Option<LineRef<'_>>, ReadError> {
        if self.stated.is_some() {
            return Ok(None);
        }
        let first_line_no = self.line_no + 1;
        let record = self.read_record()?;
        let fail = |reason| ReadError { line_no: first_line_no, reason };
        let Some(source) = record else {
            return Err(fail(Reason::Truncated));
        };
        let bytes = match source {
            FieldText::Raw => self.raw.as_slice(),
            FieldText::Copied => self.text.as_bytes(),
        };
        let is_trailer = self.fields.first().is_some_and(|&(start, _)| bytes.get(start) == Some(&b'#'));
        if is_trailer {
            let stated = {
                let text = self.record_text(source).map_err(fail)?;
                let fields: Vec<&str> = self.fields.iter().map(|&(start, end)| &text[start..end]).collect();
                parse_trailer(&fields).ok_or_else(|| fail(Reason::Trailer))?
            };
            check_trailer(&stated, &self.computed, self.reversed_fee_fen).map_err(fail)?;
            self.stated = Some(stated);
            if self.read_raw_line_or_eof()?.is_some() {
                return Err(ReadError { line_no: self.line_no, reason: Reason::AfterTrailer });
            }
            return Ok(None);
        }
        let text = match source {
            // A line read as `Raw` is checked here, once.
            FieldText::Raw => std::str::from_utf8(&self.raw).map_err(|_| fail(Reason::Encoding))?,
            FieldText::Copied => self.text.as_str(),
        };
        let field = |index: usize| self.fields.get(index).map(|&(start, end)| &text[start..end]);
        if self.fields.len() != DETAIL_FIELDS {
            return Err(fail(Reason::FieldCount(self.fields.len())));
        }
        let fields: [&str; DETAIL_FIELDS] = std::array::from_fn(|index| field(index).unwrap_or_default());
        let line = parse_detail(first_line_no, fields).map_err(fail)?;
        if !(self.earliest.as_str() <= line.settled_at && line.settled_at < self.end.as_str()) {
            return Err(fail(Reason::OutsideDay {
                settled_at: line.settled_at.to_owned(),
                date: self.header.date.clone(),
                earliest: self.earliest.clone(),
            }));
        }
        self.record_line_no = first_line_no;
        let index = usize::try_from(self.computed.line_count).unwrap_or(usize::MAX);
        self.computed
            .add_entry(index, line.kind, line.status, line.amount_fen, line.fee_fen)
            .map_err(|err| fail(Reason::Line(err.to_string())))?;
        if line.status == EntryStatus::Reversed {
            self.reversed_fee_fen = self.reversed_fee_fen.saturating_add(line.fee_fen);
        }
        Ok(Some(line))
    }

    /// The text the current record's field ranges point into.
    fn record_text(&self, source: FieldText) -> Result<&str, Reason> {
        match source {
            FieldText::Raw => std::str::from_utf8(&self.raw).map_err(|_| Reason::Encoding),
            FieldText::Copied => Ok(self.text.as_str()),
        }
    }

    fn fail(&self, reason: Reason) -> ReadError {
        ReadError { line_no: self.line_no, reason }
    }

    /// One CSV record, possibly over several physical lines, into `fields` (and `text`
    /// where its bytes had to change); `None` at a clean end of file.
    fn read_record(&mut self) -> Result<Option<FieldText>, ReadError> {
        let mut parser = RecordParser::default();
        self.text.clear();
        self.fields.clear();
        let mut record_bytes = 0usize;
        loop {
            if !self.next_raw_line()? {
                return if parser.is_empty(&self.text, &self.fields) {
                    Ok(None)
                } else {
                    Err(self.fail(Reason::Truncated))
                };
            }
            let raw = self.raw.as_slice();
            record_bytes += raw.len();
            let ends_line = raw.last() == Some(&b'\n');
            let line_no = self.line_no;
            let fail = |reason| ReadError { line_no, reason };
            let starts_record = parser.is_empty(&self.text, &self.fields);
            if starts_record
                && self.encoding == TextEncoding::Utf8
                && let Some(body) = simple_record(raw)
            {
                // The common line: one physical line, no quotes, no stray carriage return.
                // The state machine would give exactly these fields; the line's bytes are
                // checked as UTF-8 once, when its fields are read.
                split_simple_fields(&raw[..body], &mut self.fields);
                return Ok(Some(FieldText::Raw));
            }
            let text = match self.encoding {
                TextEncoding::Utf8 => std::str::from_utf8(raw).ok().map(std::borrow::Cow::Borrowed),
                TextEncoding::Gb18030 => decode_gb18030(raw),
            };
            let text = text.ok_or_else(|| fail(Reason::Encoding))?;
            if record_bytes > MAX_RECORD_BYTES {
                return Err(fail(Reason::TooLong));
            }
            if starts_record && let Some(body) = simple_record(text.as_bytes()) {
                self.text.push_str(&text);
                split_simple_fields(&text.as_bytes()[..body], &mut self.fields);
                return Ok(Some(FieldText::Copied));
            }
            match parser.feed(&text, &mut self.text, &mut self.fields).map_err(fail)? {
                true => return Ok(Some(FieldText::Copied)),
                false if !ends_line => return Err(fail(Reason::Truncated)),
                false => {}
            }
        }
    }

    fn read_raw_line(&mut self) -> Result<&[u8], ReadError> {
        let line_no = self.line_no + 1;
        match self.read_raw_line_or_eof()? {
            Some(raw) if raw.ends_with(b"\n") => Ok(raw),
            _ => Err(ReadError { line_no, reason: Reason::Truncated }),
        }
    }

    fn read_raw_line_or_eof(&mut self) -> Result<Option<&[u8]>, ReadError> {
        Ok(if self.next_raw_line()? { Some(&self.raw) } else { None })
    }

    /// Reads the next physical line, including its `\n`, into `raw`, bounded by
    /// [`MAX_LINE_BYTES`]; false at the end of the file.
    fn next_raw_line(&mut self) -> Result<bool, ReadError> {
        self.raw.clear();
        self.line_no += 1;
        loop {
            let available = match self.input.fill_buf() {
                Ok(available) => available,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(self.fail(Reason::Io(err.to_string()))),
            };
            if available.is_empty() {
                return Ok(!self.raw.is_empty());
            }
            let (taken, done) = match memchr::memchr(b'\n', available) {
                Some(end) => (end + 1, true),
                None => (available.len(), false),
            };
            if self.raw.len() + taken > MAX_LINE_BYTES {
                return Err(self.fail(Reason::TooLong));
            }
            self.raw.extend_from_slice(&available[..taken]);
            self.input.consume(taken);
            if done {
                return Ok(true);
            }
        }
    }
}

impl<R: BufRead> Iterator for StatementReader<R> {
    type Item = Result<StatementLine, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_line().transpose()
    }
}

fn decode_gb18030(raw: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    encoding_rs::GB18030.decode_without_bom_handling_and_without_replacement(raw)
}

fn trim_line_end(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    raw.strip_suffix(b"\r").unwrap_or(raw)
}

/// Header and trailer are plain comma lists (no quotes, no backticks).
fn split_simple(line: &str) -> Option<Vec<&str>> {
    let line = line.strip_suffix('\n')?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    (!line.contains(['"', '\r'])).then(|| line.split(',').collect())
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum CsvState {
    #[default]
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: either the first of a doubled quote or the closing one.
    QuoteInQuoted,
    CarriageReturn,
}

/// The length of the body of a record that is one whole physical line without quotes and
/// without a carriage return before its end; `None` for anything else, which goes through
/// [`RecordParser`]. Only ASCII bytes are looked at, which UTF-8 and the decoded text never
/// use inside a character.
fn simple_record(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"\n")?;
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    memchr::memchr2(b'"', b'\r', body).is_none().then_some(body.len())
}

/// A simple record's fields as byte ranges, each without its leading backtick.
fn split_simple_fields(body: &[u8], fields: &mut Vec<(usize, usize)>) {
    let mut start = 0;
    for end in memchr::memchr_iter(b',', body).chain(std::iter::once(body.len())) {
        let from = if body.get(start) == Some(&b'`') { start + 1 } else { start };
        fields.push((from, end));
        start = end + 1;
    }
}

/// RFC 4180 over decoded text, fed one physical line at a time. The record's unquoted text
/// goes into one buffer, its fields are ranges of it.
#[derive(Default)]
struct RecordParser {
    state: CsvState,
    /// Where the field being read starts in the text buffer.
    field_start: usize,
}

impl RecordParser {
    fn is_empty(&self, text: &str, fields: &[(usize, usize)]) -> bool {
        fields.is_empty() && text.len() == self.field_start && self.state == CsvState::FieldStart
    }

    /// True once a line ends outside quotes (the record is complete), false while a quoted
    /// field continues on the next physical line. Runs of ordinary characters are copied
    /// whole; only the four that mean something (`,` `"` CR LF, all ASCII) are looked at.
    fn feed(&mut self, line: &str, text: &mut String, fields: &mut Vec<(usize, usize)>) -> Result<bool, Reason> {
        use CsvState::*;
        let bytes = line.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let ordinary = match self.state {
                Quoted => memchr::memchr(b'"', rest).unwrap_or(rest.len()),
                FieldStart | Unquoted => {
                    rest.iter().position(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')).unwrap_or(rest.len())
                }
                QuoteInQuoted | CarriageReturn => 0,
            };
            if ordinary > 0 {
                // Inside quotes or a field: every character of the run is part of the value.
                text.push_str(&line[at..at + ordinary]);
                at += ordinary;
                if self.state == FieldStart {
                    self.state = Unquoted;
                }
                continue;
            }
            let ch = bytes[at];
            at += 1;
            self.state = match (self.state, ch) {
                (CarriageReturn, b'\n') | (FieldStart | Unquoted | QuoteInQuoted, b'\n') => {
                    self.end_field(text, fields);
                    self.state = FieldStart;
                    return Ok(true);
                }
                (CarriageReturn, _) => return Err(Reason::BareCarriageReturn),
                (FieldStart | Unquoted | QuoteInQuoted, b'\r') => CarriageReturn,
                (FieldStart | Unquoted | QuoteInQuoted, b',') => {
                    self.end_field(text, fields);
                    FieldStart
                }
                (FieldStart, b'"') => Quoted,
                // A backtick written before the opening quote (`` `"a,b" ``) guards the field
                // the same way as one inside it.
                (Unquoted, b'"') if &text[self.field_start..] == "`" => Quoted,
                (QuoteInQuoted, b'"') => {
                    text.push('"');
                    Quoted
                }
                (Unquoted, b'"') | (QuoteInQuoted, _) => return Err(Reason::Quoting),
                (Quoted, b'"') => QuoteInQuoted,
                // Ordinary characters were taken as runs above.
                (FieldStart | Unquoted | Quoted, _) => unreachable!("an ordinary character outside a run"),
            };
        }
        Ok(false)
    }

    fn end_field(&mut self, text: &str, fields: &mut Vec<(usize, usize)>) {
        let start = if text[self.field_start..].starts_with('`') { self.field_start + 1 } else { self.field_start };
        fields.push((start, text.len()));
        self.field_start = text.len();
    }
}

fn parse_header(fields: &[&str]) -> Option<StatementHeader> {
    let ["#STATEMENT", "v1", wallet_id, date, generated_at] = fields else { return None };
    let wallet_ok =
        !wallet_id.is_empty() && wallet_id.len() <= 64 && wallet_id.bytes().all(|b| b.is_ascii_alphanumeric());
    let date_ok = date.len() == 10 && Date::parse(date, format_description!("[year]-[month]-[day]")).is_ok();
    let generated_ok = OffsetDateTime::parse(generated_at, &Rfc3339).is_ok();
    (wallet_ok && date_ok && generated_ok).then(|| StatementHeader {
        wallet_id: (*wallet_id).to_owned(),
        date: (*date).to_owned(),
        generated_at: (*generated_at).to_owned(),
    })
}

/// The times a line of business day `date` may carry, as the text bounds `[earliest, end)`.
fn line_window(date: &str) -> Option<(String, String)> {
    let day = Date::parse(date, format_description!("[year]-[month]-[day]")).ok()?;
    let earliest = day.midnight().assume_offset(time::UtcOffset::UTC)
        - time::Duration::minutes(i64::from(LINE_MINUTES_BEFORE_DAY));
    let next = day.next_day()?;
    let text = |date: Date, hms: (u8, u8, u8)| {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            date.year(),
            u8::from(date.month()),
            date.day(),
            hms.0,
            hms.1,
            hms.2
        )
    };
    Some((text(earliest.date(), earliest.time().as_hms()), text(next, (0, 0, 0))))
}

fn parse_trailer(fields: &[&str]) -> Option<StatementTotals> {
    let [tag, count, credit, debit, fee] = fields else { return None };
    if *tag != "#TOTAL" || count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) || count.len() > 19 {
        return None;
    }
    let non_negative = |text: &str| parse_yuan_fen(text).filter(|fen| *fen >= 0);
    Some(StatementTotals {
        line_count: count.parse().ok()?,
        credit_fen: non_negative(credit)?,
        debit_fen: non_negative(debit)?,
        fee_fen: non_negative(fee)?,
    })
}

/// The trailer against the lines. `fee_total` may be read two ways: the spec leaves REVERSED
/// lines out of every total, yet says `fee_total` "sums the fee column". Both forms are taken
/// (`reversed_fee_fen` is what tells them apart); a run over a file of the second form says so
/// in its warnings.
fn check_trailer(stated: &StatementTotals, computed: &StatementTotals, reversed_fee_fen: i64) -> Result<(), Reason> {
    use super::write::Yuan;
    if reversed_fee_fen > 0 && stated.fee_fen == computed.fee_fen.saturating_add(reversed_fee_fen) {
        let counted = StatementTotals { fee_fen: stated.fee_fen, ..*computed };
        return check_trailer(stated, &counted, 0);
    }
    let mismatch = |field, stated: String, computed: String| Err(Reason::TrailerMismatch { field, stated, computed });
    if stated.line_count != computed.line_count {
        return mismatch("line_count", stated.line_count.to_string(), computed.line_count.to_string());
    }
    for (field, stated, computed) in [
        ("credit_total", stated.credit_fen, computed.credit_fen),
        ("debit_total", stated.debit_fen, computed.debit_fen),
        ("fee_total", stated.fee_fen, computed.fee_fen),
    ] {
        if stated != computed {
            return mismatch(field, Yuan(stated).to_string(), Yuan(computed).to_string());
        }
    }
    Ok(())
}

fn parse_detail(line_no: u64, fields: [&str; DETAIL_FIELDS]) -> Result<LineRef<'_>, Reason> {
    let [settled_at, operator_ref, out_no, kind, status, amount, fee, counterparty, memo] = fields;
    let invalid = |field, value: &str| Reason::Field { field, value: value.chars().take(64).collect() };
    if !is_settled_at(settled_at) {
        return Err(invalid("交易时间", settled_at));
    }
    if operator_ref.is_empty() {
        return Err(invalid("运营机构流水号", operator_ref));
    }
    let kind_parsed = EntryKind::parse(kind).ok_or_else(|| invalid("交易类型", kind))?;
    let status_parsed = EntryStatus::parse(status).ok_or_else(|| invalid("交易状态", status))?;
    // Within what one amount of money may be, so every line books as a ledger entry.
    let within = |fen: &i64| fen.unsigned_abs() <= Amount::MAX_FEN.unsigned_abs();
    let amount_fen = parse_yuan_fen(amount).filter(within).ok_or_else(|| invalid("金额", amount))?;
    let fee_fen = parse_yuan_fen(fee).filter(|fen| *fen >= 0 && within(fen)).ok_or_else(|| invalid("手续费", fee))?;
    Ok(LineRef {
        line_no,
        settled_at,
        operator_ref,
        out_no,
        kind: kind_parsed,
        status: status_parsed,
        amount_fen,
        fee_fen,
        counterparty,
        memo,
    })
}

/// `YYYY-MM-DD HH:MM:SS`, a real date and time. The digits are read directly (a million
/// lines a day); anything that is not plainly digits in those places is left to the `time`
/// parser, so what is accepted is exactly what it accepts.
fn is_settled_at(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != 19 {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        bytes[range].iter().try_fold(0u32, |value, b| b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0')))
    };
    let layout = bytes[4] == b'-' && bytes[7] == b'-' && bytes[10] == b' ' && bytes[13] == b':' && bytes[16] == b':';
    let parts = (digits(0..4), digits(5..7), digits(8..10), digits(11..13), digits(14..16), digits(17..19));
    if let (true, (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second))) = (layout, parts) {
        let date = time::Month::try_from(u8::try_from(month).unwrap_or(0))
            .ok()
            .and_then(|month| Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok());
        let clock = time::Time::from_hms(
            u8::try_from(hour).unwrap_or(u8::MAX),
            u8::try_from(minute).unwrap_or(u8::MAX),
            u8::try_from(second).unwrap_or(u8::MAX),
        );
        return date.is_some() && clock.is_ok();
    }
    PrimitiveDateTime::parse(text, format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).is_ok()
}

/// `-?\d{1,15}\.\d\d` yuan as fen.
pub fn parse_yuan_fen(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.')?;
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > MAX_YUAN_DIGITS
        || fraction.len() != 2
        || !all_digits(whole)
        || !all_digits(fraction)
    {
        return None;
    }
    let fen = whole.parse::<i64>().ok()?.checked_mul(100)?.checked_add(fraction.parse::<i64>().ok()?)?;
    Some(if negative { -fen } else { fen })
}

#[cfg(test)]
mod tests;
