//! Subsidy batch files: encoding sniffing, headers in Chinese or English, one beneficiary per
//! line, every problem reported with its line, column and reason, and control totals.
//!
//! The reader is streaming: it holds one CSV record at a time plus a bounded error list, so a
//! 1,000,000-line file costs the same memory as a 10-line one. Checks that need other lines or
//! other batches (the same person twice, a person in another open batch, the budget) are made by
//! the caller against the store while it inserts; they report through the same [`ErrorList`].
//!
//! Bytes are split into records before decoding. That is safe for GB18030 as well as UTF-8:
//! neither encoding uses the bytes of `,` `"` CR or LF inside a multi-byte character, so the CSV
//! structure is the same in both and each field is decoded on its own.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};

use crate::domain::citizen_id::{CitizenId, CitizenIdError, mask_name};
use crate::domain::directory::WalletId;
use crate::domain::money::{Amount, AmountError};

/// UTF-8 byte order mark, which Excel writes when saving "CSV UTF-8".
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes looked at to decide the encoding. Excel files put Chinese headers and names in the
/// first lines, so a GB18030 file shows invalid UTF-8 within the first few hundred bytes.
pub const SNIFF_BYTES: usize = 64 * 1024;

/// Longest name accepted, in characters (the longest registered Chinese names are far shorter;
/// transliterated minority names can reach 30-40).
pub const MAX_NAME_CHARS: usize = 64;

/// Longest memo, in characters; the operator's transfer memo has the same bound.
pub const MAX_MEMO_CHARS: usize = 64;

/// Longest CSV record in bytes. A record is one beneficiary; anything bigger is not a batch line
/// and must not make the reader buffer without bound.
pub const MAX_RECORD_BYTES: usize = 4 * 1024;

/// How the office's file was encoded; the result file is written back the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchEncoding {
    Utf8,
    Utf8Bom,
    Gb18030,
}

impl BatchEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchEncoding::Utf8 => "utf8",
            BatchEncoding::Utf8Bom => "utf8_bom",
            BatchEncoding::Gb18030 => "gb18030",
        }
    }

    pub fn parse(raw: &str) -> Option<BatchEncoding> {
        [BatchEncoding::Utf8, BatchEncoding::Utf8Bom, BatchEncoding::Gb18030].into_iter().find(|e| e.as_str() == raw)
    }

    /// Decides from the first bytes of a file: a BOM means UTF-8; valid UTF-8 (allowing a
    /// character cut at the end of the sample) means UTF-8; anything else is taken as GB18030,
    /// the superset of GBK that Excel on Chinese Windows writes.
    pub fn sniff(prefix: &[u8]) -> BatchEncoding {
        if prefix.starts_with(UTF8_BOM) {
            return BatchEncoding::Utf8Bom;
        }
        match std::str::from_utf8(prefix) {
            Ok(_) => BatchEncoding::Utf8,
            Err(err) if err.error_len().is_none() => BatchEncoding::Utf8,
            Err(_) => BatchEncoding::Gb18030,
        }
    }

    /// Decodes one field; `None` when its bytes are not valid in this encoding.
    pub fn decode<'a>(self, bytes: &'a [u8]) -> Option<Cow<'a, str>> {
        match self {
            BatchEncoding::Utf8 | BatchEncoding::Utf8Bom => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
            BatchEncoding::Gb18030 => encoding_rs::GB18030.decode_without_bom_handling_and_without_replacement(bytes),
        }
    }

    /// Encodes text for a file written back to the office. GB18030 covers all of Unicode, so
    /// nothing is ever replaced.
    pub fn encode<'a>(self, text: &'a str) -> Cow<'a, [u8]> {
        match self {
            BatchEncoding::Utf8 | BatchEncoding::Utf8Bom => Cow::Borrowed(text.as_bytes()),
            BatchEncoding::Gb18030 => encoding_rs::GB18030.encode(text).0,
        }
    }

    /// What a file in this encoding starts with.
    pub fn preamble(self) -> &'static [u8] {
        match self {
            BatchEncoding::Utf8Bom => UTF8_BOM,
            BatchEncoding::Utf8 | BatchEncoding::Gb18030 => b"",
        }
    }
}

/// The columns of a batch file, in Chinese or English. Column order is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    Name,
    CitizenId,
    WalletId,
    Amount,
    Memo,
}

impl Column {
    pub const ALL: [Column; 5] = [Column::Name, Column::CitizenId, Column::WalletId, Column::Amount, Column::Memo];

    pub fn as_str(self) -> &'static str {
        match self {
            Column::Name => "name",
            Column::CitizenId => "citizen_id",
            Column::WalletId => "wallet_id",
            Column::Amount => "amount",
            Column::Memo => "memo",
        }
    }

    /// The Chinese header written into result files for an office that uploaded Chinese headers.
    pub fn chinese(self) -> &'static str {
        match self {
            Column::Name => "姓名",
            Column::CitizenId => "身份证号",
            Column::WalletId => "钱包编号",
            Column::Amount => "金额",
            Column::Memo => "备注",
        }
    }

    /// Every header spelling accepted for the column, compared after trimming and ASCII
    /// lower-casing.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Column::Name => &["姓名", "name", "名字", "payee_name"],
            Column::CitizenId => &["身份证号", "身份证号码", "身份证", "citizen_id", "id_number", "id_no"],
            Column::WalletId => &["钱包编号", "钱包id", "钱包号", "钱包", "wallet_id", "wallet"],
            Column::Amount => &["金额", "金额(元)", "金额（元）", "amount", "amount_yuan"],
            Column::Memo => &["备注", "memo", "note", "remark"],
        }
    }

    pub fn from_header(header: &str) -> Option<Column> {
        let normalised = header.trim().to_ascii_lowercase();
        Column::ALL.into_iter().find(|column| column.aliases().contains(&normalised.as_str()))
    }

    /// The memo is the only optional column.
    fn required(self) -> bool {
        self != Column::Memo
    }
}

/// Why a file, a line or a field was refused. `Display` is for the office clerk; `code` is stable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the file is empty or has no header line")]
    NoHeader,
    #[error("the header has no {} ({}) column", .0.chinese(), .0.as_str())]
    MissingColumn(Column),
    #[error("the header names the {} ({}) column twice", .0.chinese(), .0.as_str())]
    DuplicateColumn(Column),
    #[error(
        "unknown column {0:?}; expected 姓名/name, 身份证号/citizen_id, 钱包编号/wallet_id, 金额/amount, 备注/memo"
    )]
    UnknownColumn(String),
    #[error("the file has no beneficiary lines")]
    NoLines,
    #[error("the file has more than {max} lines, the most one batch may hold")]
    TooManyLines { max: u64 },
    #[error("the line is not valid CSV")]
    MalformedCsv,
    #[error("the line is longer than {max} bytes", max = MAX_RECORD_BYTES)]
    LineTooLong,
    #[error("the line has {found} fields, the header has {expected}")]
    FieldCount { expected: usize, found: usize },
    #[error("the text is not valid {0}")]
    Encoding(&'static str),
    #[error("the field is empty")]
    Empty,
    #[error("the name is longer than {max} characters or contains control characters", max = MAX_NAME_CHARS)]
    InvalidName,
    #[error("{0}")]
    CitizenId(CitizenIdError),
    #[error("a wallet id is 16 digits")]
    InvalidWalletId,
    #[error("{0}")]
    Amount(AmountError),
    #[error("the amount is over the programme's cap of {cap} yuan per payment")]
    OverPaymentCap { cap: Amount },
    #[error("the amount is over the service's limit of {limit} yuan per transaction")]
    OverTransactionLimit { limit: Amount },
    #[error("the person would receive more than the programme's cap of {cap} yuan in this period")]
    OverPeriodCap { cap: Amount },
    #[error("the memo is longer than {max} characters or contains control characters", max = MAX_MEMO_CHARS)]
    InvalidMemo,
    #[error("the same person is already on line {first_line} of this file")]
    DuplicateInBatch { first_line: u64 },
    #[error("the person is already in another open batch of this programme for the same period")]
    InOtherOpenBatch,
    #[error("the batch total would exceed the programme's remaining budget of {remaining} yuan")]
    OverBudget { remaining: Amount },
    #[error("the file has {actual} lines, the upload says {stated}")]
    LineCountDiffers { stated: u64, actual: u64 },
    #[error("the lines total {actual} yuan, the upload says {stated}")]
    TotalDiffers { stated: Amount, actual: Amount },
}

impl Problem {
    /// Stable code for API error bodies; never change an existing one.
    pub fn code(&self) -> &'static str {
        match self {
            Problem::NoHeader => "NO_HEADER",
            Problem::MissingColumn(_) => "MISSING_COLUMN",
            Problem::DuplicateColumn(_) => "DUPLICATE_COLUMN",
            Problem::UnknownColumn(_) => "UNKNOWN_COLUMN",
            Problem::NoLines => "NO_LINES",
            Problem::TooManyLines { .. } => "TOO_MANY_LINES",
            Problem::MalformedCsv => "MALFORMED_CSV",
            Problem::LineTooLong => "LINE_TOO_LONG",
            Problem::FieldCount { .. } => "FIELD_COUNT",
            Problem::Encoding(_) => "ENCODING",
            Problem::Empty => "EMPTY_FIELD",
            Problem::InvalidName => "INVALID_NAME",
            Problem::CitizenId(err) => err.code(),
            Problem::InvalidWalletId => "INVALID_WALLET_ID",
            Problem::Amount(err) => err.code(),
            Problem::OverPaymentCap { .. } => "OVER_PAYMENT_CAP",
            Problem::OverTransactionLimit { .. } => "OVER_TRANSACTION_LIMIT",
            Problem::OverPeriodCap { .. } => "OVER_PERIOD_CAP",
            Problem::InvalidMemo => "INVALID_MEMO",
            Problem::DuplicateInBatch { .. } => "DUPLICATE_IN_BATCH",
            Problem::InOtherOpenBatch => "IN_OTHER_OPEN_BATCH",
            Problem::OverBudget { .. } => "OVER_BUDGET",
            Problem::LineCountDiffers { .. } => "LINE_COUNT_DIFFERS",
            Problem::TotalDiffers { .. } => "TOTAL_DIFFERS",
        }
    }
}

/// One problem and where it is: `line` is the 1-based physical line of the file (the header is
/// line 1); `None` for problems of the whole file. Never carries the offending value, which may
/// be personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: Option<u64>,
    pub column: Option<Column>,
    pub problem: Problem,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "line {line}, {}: {}", column.as_str(), self.problem),
            (Some(line), None) => write!(f, "line {line}: {}", self.problem),
            (None, _) => write!(f, "file: {}", self.problem),
        }
    }
}

/// Every problem counted, the first `limit` in file order kept: an office fixing a file wants
/// them all in one go, but a response listing a million errors helps nobody and costs unbounded
/// memory. Problems may be pushed in any order (the checks against other lines and batches
/// report after the reader, in digest order), so the list keeps the `limit` earliest by
/// position, not the first pushed; at most twice `limit` are held between trims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorList {
    /// (position, problem); trimmed to the `limit` earliest whenever it reaches twice that.
    held: Vec<((u64, u8, u64), LineError)>,
    /// After a trim, the latest position kept: anything later can no longer be listed.
    cutoff: Option<(u64, u8, u64)>,
    total: u64,
    limit: usize,
}

impl ErrorList {
    /// Problems listed in full by default; the count beyond it is still exact.
    pub const DEFAULT_LIMIT: usize = 1000;

    pub fn new(limit: usize) -> ErrorList {
        ErrorList { held: Vec::new(), cutoff: None, total: 0, limit }
    }

    /// Where a problem sorts: whole-file problems first, then by line and column; problems of
    /// one place keep the order they were found in.
    fn position(&self, error: &LineError) -> (u64, u8, u64) {
        (error.line.unwrap_or(0), error.column.map_or(0, |c| c as u8 + 1), self.total)
    }

    pub fn push(&mut self, error: LineError) {
        let position = self.position(&error);
        self.total += 1;
        if self.limit == 0 {
            return;
        }
        if self.cutoff.is_some_and(|cutoff| position > cutoff) {
            return;
        }
        self.held.push((position, error));
        if self.held.len() >= self.limit.saturating_mul(2) {
            self.trim();
        }
    }

    /// Keeps the `limit` earliest and remembers the latest of them.
    fn trim(&mut self) {
        if self.held.len() > self.limit {
            self.held.select_nth_unstable_by_key(self.limit - 1, |(position, _)| *position);
            self.held.truncate(self.limit);
            self.cutoff = self.held.iter().map(|(position, _)| *position).max();
        }
    }

    /// Adds every problem of `other` (counted and listed as if pushed here).
    pub fn absorb(&mut self, other: ErrorList) {
        let total = other.total;
        let listed = other.into_sorted_pairs();
        let unlisted = total - listed.len() as u64;
        for (_, error) in listed {
            self.push(error);
        }
        self.total += unlisted;
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The listed problems (at most `limit`), in file order.
    pub fn listed(&self) -> Vec<LineError> {
        self.clone().into_sorted()
    }

    fn into_sorted_pairs(mut self) -> Vec<((u64, u8, u64), LineError)> {
        self.held.sort_by_key(|(position, _)| *position);
        self.held.truncate(self.limit);
        self.held
    }

    /// Listed problems in file order.
    pub fn into_sorted(self) -> Vec<LineError> {
        self.into_sorted_pairs().into_iter().map(|(_, error)| error).collect()
    }
}

/// The programme's rules a line is checked against without looking at other lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRules {
    pub per_payment_cap: Amount,
    /// The service's limit on any one transaction (`--max-transaction-amount`), over every
    /// programme's own cap.
    pub max_transaction_amount: Amount,
    pub max_lines: u64,
}

/// A line that was refused: its problems (at least one) and, when that field itself was
/// good, the ID number, so a person named again on a later line is reported as a duplicate in
/// the same report.
#[derive(Debug)]
pub struct RejectedLine {
    pub problems: Vec<LineError>,
    pub line: u64,
    pub citizen_id: Option<CitizenId>,
}

impl RejectedLine {
    fn of_line(line: u64, problems: Vec<LineError>) -> RejectedLine {
        RejectedLine { problems, line, citizen_id: None }
    }
}

/// One beneficiary, parsed and checked on its own.
#[derive(Clone, PartialEq, Eq)]
pub struct BatchLine {
    /// 1-based physical line in the uploaded file.
    pub line: u64,
    pub name: String,
    pub citizen_id: CitizenId,
    pub wallet_id: WalletId,
    pub amount: Amount,
    pub memo: String,
}

impl fmt::Debug for BatchLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLine")
            .field("line", &self.line)
            .field("name", &mask_name(&self.name))
            .field("citizen_id", &self.citizen_id)
            .field("wallet_id", &self.wallet_id.as_str())
            .field("amount", &self.amount)
            .field("memo_chars", &self.memo.chars().count())
            .finish()
    }
}

/// The control totals the uploader states and the file must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ControlTotals {
    pub line_count: u64,
    pub total: Amount,
}

/// Streams a batch file: the header on construction, then one [`BatchLine`] or the problems of
/// one line per call. Counts and sums every good line for the control totals.
pub struct BatchFileReader<R: Read> {
    csv: csv::Reader<io::Chain<io::Cursor<Vec<u8>>, R>>,
    encoding: BatchEncoding,
    positions: [Option<usize>; 5],
    field_count: usize,
    rules: LineRules,
    record: csv::ByteRecord,
    lines_seen: u64,
    good: ControlTotals,
    done: bool,
    chinese_headers: bool,
}

impl<R: Read> BatchFileReader<R> {
    /// Sniffs the encoding and reads the header. A header problem is a problem of the whole
    /// file; all of them are returned at once.
    pub fn open(mut input: R, rules: LineRules) -> Result<BatchFileReader<R>, Vec<LineError>> {
        let file_error = |problem| LineError { line: Some(1), column: None, problem };
        let mut prefix = Vec::with_capacity(SNIFF_BYTES);
        (&mut input)
            .take(SNIFF_BYTES as u64)
            .read_to_end(&mut prefix)
            .map_err(|_| vec![file_error(Problem::MalformedCsv)])?;
        let encoding = BatchEncoding::sniff(&prefix);
        let skip = encoding.preamble().len();
        let chained = io::Cursor::new(prefix.split_off(skip)).chain(input);
        let csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            // Only LF ends a record: with CR also a terminator, csv reports the start of the
            // line after a CRLF one line early. A CR left at the end of a field is trimmed.
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(MAX_RECORD_BYTES)
            .from_reader(chained);
        let mut reader = BatchFileReader {
            csv,
            encoding,
            positions: [None; 5],
            field_count: 0,
            rules,
            record: csv::ByteRecord::new(),
            lines_seen: 0,
            good: ControlTotals::default(),
            done: false,
            chinese_headers: false,
        };

        match reader.csv.read_byte_record(&mut reader.record) {
            Ok(true) => {}
            Ok(false) => return Err(vec![LineError { line: None, column: None, problem: Problem::NoHeader }]),
            Err(_) => return Err(vec![file_error(Problem::MalformedCsv)]),
        }
        let mut errors = Vec::new();
        let header = reader.record.clone();
        reader.field_count = header.len();
        reader.chinese_headers = !header.as_slice().is_ascii();
        for (index, raw) in header.iter().enumerate() {
            let Some(text) = encoding.decode(raw) else {
                errors.push(file_error(Problem::Encoding(encoding_name(encoding))));
                continue;
            };
            match Column::from_header(&text) {
                Some(column) if reader.positions[column as usize].is_some() => errors.push(LineError {
                    line: Some(1),
                    column: Some(column),
                    problem: Problem::DuplicateColumn(column),
                }),
                Some(column) => reader.positions[column as usize] = Some(index),
                // Excel leaves empty trailing header cells; they carry nothing.
                None if text.trim().is_empty() => {}
                None => {
                    let shown: String = text.chars().take(32).collect();
                    errors.push(file_error(Problem::UnknownColumn(shown)));
                }
            }
        }
        for column in Column::ALL {
            if column.required() && reader.positions[column as usize].is_none() {
                errors.push(LineError { line: Some(1), column: Some(column), problem: Problem::MissingColumn(column) });
            }
        }
        if errors.is_empty() { Ok(reader) } else { Err(errors) }
    }

    pub fn encoding(&self) -> BatchEncoding {
        self.encoding
    }

    /// Good lines so far: how many and their sum.
    pub fn good_totals(&self) -> ControlTotals {
        self.good
    }

    /// Beneficiary lines read so far, good or bad.
    pub fn lines_seen(&self) -> u64 {
        self.lines_seen
    }

    /// Whether the file used Chinese headers, so the result file can answer in kind.
    pub fn chinese_headers(&self) -> bool {
        self.chinese_headers
    }

    /// The next line: `Some(Ok)` a good line, `Some(Err)` the problems of a bad one (at least
    /// one), `None` at the end. A CSV error that loses the record boundary ends the file.
    pub fn next_line(&mut self) -> Option<Result<BatchLine, RejectedLine>> {
        loop {
            if self.done {
                return None;
            }
            match self.csv.read_byte_record(&mut self.record) {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Ok(true) => {}
                Err(err) => {
                    self.done = true;
                    let line = err.position().map(|p| p.line()).unwrap_or(self.lines_seen + 2);
                    let problem = LineError { line: Some(line), column: None, problem: Problem::MalformedCsv };
                    return Some(Err(RejectedLine::of_line(line, vec![problem])));
                }
            }
            // Excel writes rows of empty cells below the data; they are not beneficiaries.
            if self.record.iter().all(|field| field.iter().all(|b| b.is_ascii_whitespace())) {
                continue;
            }
            self.lines_seen += 1;
            let line = self.record.position().map(|p| p.line()).unwrap_or(self.lines_seen + 1);
            if self.lines_seen > self.rules.max_lines {
                self.done = true;
                let problem = Problem::TooManyLines { max: self.rules.max_lines };
                return Some(Err(RejectedLine::of_line(
                    line,
                    vec![LineError { line: Some(line), column: None, problem }],
                )));
            }
            let parsed = self.parse_record(line);
            if let Ok(good) = &parsed {
                self.good.line_count += 1;
                // Each amount is at most the cap, and lines at most max_lines, but a sum that
                // overflows is still reported rather than wrapped.
                self.good.total = self.good.total.checked_add(good.amount).unwrap_or(Amount::MAX);
            }
            return Some(parsed);
        }
    }

    fn parse_record(&self, line: u64) -> Result<BatchLine, RejectedLine> {
        let at = |column: Option<Column>, problem| LineError { line: Some(line), column, problem };
        if self.record.as_slice().len() > MAX_RECORD_BYTES {
            return Err(RejectedLine::of_line(line, vec![at(None, Problem::LineTooLong)]));
        }
        // Trailing empty cells (Excel pads rows to the widest one) are not extra fields.
        let mut found = self.record.len();
        while found > self.field_count
            && self.record.get(found - 1).is_some_and(|f| f.iter().all(|b| b.is_ascii_whitespace()))
        {
            found -= 1;
        }
        if found != self.field_count {
            return Err(RejectedLine::of_line(
                line,
                vec![at(None, Problem::FieldCount { expected: self.field_count, found })],
            ));
        }

        let mut errors = Vec::new();
        let mut text = |column: Column| -> Option<String> {
            let index = self.positions[column as usize]?;
            let raw = self.record.get(index).unwrap_or_default();
            match self.encoding.decode(raw) {
                Some(decoded) => Some(decoded.trim().to_owned()),
                None => {
                    errors.push(at(Some(column), Problem::Encoding(encoding_name(self.encoding))));
                    None
                }
            }
        };
        let name = text(Column::Name);
        let citizen_id = text(Column::CitizenId);
        let wallet_id = text(Column::WalletId);
        let amount = text(Column::Amount);
        let memo = text(Column::Memo).unwrap_or_default();

        let name = name.and_then(|name| match check_name(&name) {
            Ok(()) => Some(name),
            Err(problem) => {
                errors.push(at(Some(Column::Name), problem));
                None
            }
        });
        let citizen_id = citizen_id.and_then(|raw| {
            if raw.is_empty() {
                errors.push(at(Some(Column::CitizenId), Problem::Empty));
                return None;
            }
            CitizenId::parse(&raw).map_err(|err| errors.push(at(Some(Column::CitizenId), Problem::CitizenId(err)))).ok()
        });
        let wallet_id = wallet_id.and_then(|raw| {
            if raw.is_empty() {
                errors.push(at(Some(Column::WalletId), Problem::Empty));
                return None;
            }
            WalletId::parse(&raw).map_err(|_| errors.push(at(Some(Column::WalletId), Problem::InvalidWalletId))).ok()
        });
        let amount = amount.and_then(|raw| match parse_line_amount(&raw, &self.rules) {
            Ok(amount) => Some(amount),
            Err(problem) => {
                errors.push(at(Some(Column::Amount), problem));
                None
            }
        });
        if memo.chars().count() > MAX_MEMO_CHARS || memo.chars().any(char::is_control) {
            errors.push(at(Some(Column::Memo), Problem::InvalidMemo));
        }

        match (name, citizen_id, wallet_id, amount) {
            (Some(name), Some(citizen_id), Some(wallet_id), Some(amount)) if errors.is_empty() => {
                Ok(BatchLine { line, name, citizen_id, wallet_id, amount, memo })
            }
            (_, citizen_id, ..) => Err(RejectedLine { problems: errors, line, citizen_id }),
        }
    }
}

fn encoding_name(encoding: BatchEncoding) -> &'static str {
    match encoding {
        BatchEncoding::Utf8 | BatchEncoding::Utf8Bom => "UTF-8",
        BatchEncoding::Gb18030 => "GB18030",
    }
}

fn check_name(name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Problem::InvalidName);
    }
    Ok(())
}

/// Offices type amounts as yuan with up to two decimals; Excel may add thousands separators,
/// which are dropped before the strict money parser sees the text.
fn parse_line_amount(raw: &str, rules: &LineRules) -> Result<Amount, Problem> {
    if raw.is_empty() {
        return Err(Problem::Empty);
    }
    let cleaned: Cow<'_, str> = if raw.contains(',') { Cow::Owned(raw.replace(',', "")) } else { Cow::Borrowed(raw) };
    let amount = Amount::parse(&cleaned).map_err(Problem::Amount)?;
    let amount = amount.ensure_nonzero().map_err(Problem::Amount)?;
    if amount > rules.max_transaction_amount {
        return Err(Problem::OverTransactionLimit { limit: rules.max_transaction_amount });
    }
    if amount > rules.per_payment_cap {
        return Err(Problem::OverPaymentCap { cap: rules.per_payment_cap });
    }
    Ok(amount)
}

/// The problems of stated against actual control totals (none when they agree).
pub fn check_control_totals(stated: ControlTotals, actual: ControlTotals) -> Vec<LineError> {
    let mut errors = Vec::new();
    if stated.line_count != actual.line_count {
        let problem = Problem::LineCountDiffers { stated: stated.line_count, actual: actual.line_count };
        errors.push(LineError { line: None, column: None, problem });
    }
    if stated.total != actual.total {
        let problem = Problem::TotalDiffers { stated: stated.total, actual: actual.total };
        errors.push(LineError { line: None, column: None, problem });
    }
    errors
}

/// Reads and checks a whole file in memory-bounded fashion, without store checks: the problems
/// (bounded list, exact count) and the good totals. For tests, fuzzing and the CLI's dry run.
pub fn validate_file<R: Read>(
    input: R,
    rules: LineRules,
    stated: ControlTotals,
    limit: usize,
) -> (ErrorList, ControlTotals) {
    let mut errors = ErrorList::new(limit);
    let mut reader = match BatchFileReader::open(input, rules) {
        Ok(reader) => reader,
        Err(problems) => {
            problems.into_iter().for_each(|e| errors.push(e));
            return (errors, ControlTotals::default());
        }
    };
    while let Some(result) = reader.next_line() {
        if let Err(rejected) = result {
            rejected.problems.into_iter().for_each(|e| errors.push(e));
        }
    }
    let actual = reader.good_totals();
    if reader.lines_seen() == 0 {
        errors.push(LineError { line: None, column: None, problem: Problem::NoLines });
    } else if errors.is_empty() {
        // Control totals compare with good lines; with bad lines present they differ anyway and
        // would only add noise to the list.
        check_control_totals(stated, actual).into_iter().for_each(|e| errors.push(e));
    }
    (errors, actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cap of 500.00 yuan per payment, at most 1000 lines.
    fn rules() -> LineRules {
        LineRules {
            per_payment_cap: Amount::from_fen(50_000).unwrap(),
            max_transaction_amount: Amount::MAX,
            max_lines: 1000,
        }
    }

    fn id(first17: &str) -> String {
        let digits: [u8; 17] = first17.as_bytes().try_into().unwrap();
        format!("{first17}{}", crate::domain::citizen_id::check_char(&digits) as char)
    }

    fn lines(text: &str) -> (Vec<BatchLine>, Vec<LineError>) {
        let mut reader = BatchFileReader::open(text.as_bytes(), rules()).expect("header");
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        while let Some(result) = reader.next_line() {
            match result {
                Ok(line) => good.push(line),
                Err(rejected) => bad.extend(rejected.problems),
            }
        }
        (good, bad)
    }

    #[test]
    fn chinese_headers_in_utf8_with_bom_parse() {
        let file = format!(
            "\u{FEFF}姓名,身份证号,钱包编号,金额,备注\r\n张三,{},0021000000000001,300.00,十一月餐补\r\n",
            id("32058419450315002")
        );
        let reader = BatchFileReader::open(file.as_bytes(), rules()).unwrap();
        assert_eq!(reader.encoding(), BatchEncoding::Utf8Bom);
        let (good, bad) = lines(&file);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].name, "张三");
        assert_eq!(good[0].amount.fen(), 30_000);
        assert_eq!(good[0].line, 2);
        assert!(!format!("{:?}", good[0]).contains("张三"));
    }

    #[test]
    fn gb18030_files_from_excel_parse_with_columns_in_any_order() {
        let text = format!("金额,姓名,钱包编号,身份证号\r\n12.5,李四,0021000000000002,{}\r\n", id("32058419520708008"));
        let bytes = encoding_rs::GB18030.encode(&text).0.into_owned();
        assert!(std::str::from_utf8(&bytes).is_err());
        let mut reader = BatchFileReader::open(bytes.as_slice(), rules()).unwrap();
        assert_eq!(reader.encoding(), BatchEncoding::Gb18030);
        let line = reader.next_line().unwrap().unwrap();
        assert_eq!(line.name, "李四");
        assert_eq!(line.amount.fen(), 1250);
        assert_eq!(line.memo, "");
        assert!(reader.next_line().is_none());
    }

    #[test]
    fn english_headers_parse() {
        let file = format!(
            "name,citizen_id,wallet_id,amount,memo\nWang Wu,{},0021000000000003,1,x\n",
            id("11010119400101004")
        );
        let (good, bad) = lines(&file);
        assert!(bad.is_empty());
        assert_eq!(good[0].amount.fen(), 100);
    }

    #[test]
    fn header_problems_are_all_reported() {
        let errors = BatchFileReader::open("姓名,姓名,金额,colour\n".as_bytes(), rules()).err().unwrap();
        let codes: Vec<_> = errors.iter().map(|e| e.problem.code()).collect();
        assert_eq!(codes, ["DUPLICATE_COLUMN", "UNKNOWN_COLUMN", "MISSING_COLUMN", "MISSING_COLUMN"]);
    }

    #[test]
    fn every_problem_of_every_line_is_reported_with_its_column() {
        let good_id = id("32058419600101003");
        let bad_check = format!("{}0", &good_id[..17]).replace("X0", "X1");
        let file = format!(
            "姓名,身份证号,钱包编号,金额\n\
             ,{bad_check},12ab,0.001\n\
             王五,{good_id},0021000000000004,600.00\n\
             赵六,{good_id},0021000000000004,0\n\
             孙七,{good_id}\n"
        );
        let (good, bad) = lines(&file);
        assert!(good.is_empty());
        let found: Vec<_> =
            bad.iter().map(|e| (e.line.unwrap(), e.column.map(Column::as_str), e.problem.code())).collect();
        assert_eq!(
            found,
            [
                (2, Some("name"), "EMPTY_FIELD"),
                (2, Some("citizen_id"), "CITIZEN_ID_CHECK_DIGIT"),
                (2, Some("wallet_id"), "INVALID_WALLET_ID"),
                (2, Some("amount"), "AMOUNT_TOO_MANY_DECIMALS"),
                (3, Some("amount"), "OVER_PAYMENT_CAP"),
                (4, Some("amount"), "AMOUNT_ZERO"),
                (5, None, "FIELD_COUNT"),
            ]
        );
        // No error text carries the number itself.
        assert!(bad.iter().all(|e| !e.to_string().contains(&good_id[3..14])));
    }

    #[test]
    fn excel_padding_is_ignored() {
        let file = format!(
            "姓名,身份证号,钱包编号,金额,,\n张三,{},0021000000000001,\"1,000.00\",,\n,,,,,\n",
            id("32058419450315002")
        );
        let rules = LineRules {
            per_payment_cap: Amount::from_fen(1_000_000).unwrap(),
            max_transaction_amount: Amount::MAX,
            max_lines: 10,
        };
        let mut reader = BatchFileReader::open(file.as_bytes(), rules).unwrap();
        assert_eq!(reader.next_line().unwrap().unwrap().amount.fen(), 100_000);
        assert!(reader.next_line().is_none());
    }

    #[test]
    fn control_totals_and_bounded_error_lists() {
        let mut file = String::from("name,citizen_id,wallet_id,amount\n");
        for _ in 0..30 {
            file.push_str("x,1,2,3\n");
        }
        let (errors, _) = validate_file(file.as_bytes(), rules(), ControlTotals::default(), 5);
        assert_eq!(errors.listed().len(), 5);
        assert_eq!(errors.total(), 60);

        let good = format!("name,citizen_id,wallet_id,amount\nA,{},0021000000000001,2.00\n", id("32058419450315002"));
        let stated = ControlTotals { line_count: 2, total: Amount::from_fen(300).unwrap() };
        let (errors, actual) = validate_file(good.as_bytes(), rules(), stated, 5);
        assert_eq!(actual, ControlTotals { line_count: 1, total: Amount::from_fen(200).unwrap() });
        let codes: Vec<_> = errors.listed().iter().map(|e| e.problem.code()).collect();
        assert_eq!(codes, ["LINE_COUNT_DIFFERS", "TOTAL_DIFFERS"]);
        let (errors, _) = validate_file(good.as_bytes(), rules(), actual, 5);
        assert!(errors.is_empty());
    }

    #[test]
    fn the_listed_problems_are_the_first_in_file_order_however_they_were_found() {
        let at = |line: u64| LineError { line: Some(line), column: Some(Column::CitizenId), problem: Problem::Empty };
        let mut reader = ErrorList::new(3);
        for line in [50, 40, 30, 20, 10, 60, 5] {
            reader.push(at(line));
        }
        let mut store = ErrorList::new(3);
        for line in [7, 1, 90] {
            store.push(at(line));
        }
        store.push(LineError { line: None, column: None, problem: Problem::NoLines });
        reader.absorb(store);
        assert_eq!(reader.total(), 11);
        let listed: Vec<Option<u64>> = reader.into_sorted().iter().map(|e| e.line).collect();
        assert_eq!(listed, [None, Some(1), Some(5)]);
    }

    #[test]
    fn too_many_lines_stop_the_file() {
        let rules = LineRules { max_lines: 2, ..rules() };
        let file = format!("name,citizen_id,wallet_id,amount\n{}", "a,b,c,d\n".repeat(5));
        let (errors, _) = validate_file(file.as_bytes(), rules, ControlTotals::default(), 100);
        assert_eq!(errors.listed().last().unwrap().problem.code(), "TOO_MANY_LINES");
        assert_eq!(errors.total(), 2 * 3 + 1);
    }

    #[test]
    fn result_text_round_trips_through_each_encoding() {
        for encoding in [BatchEncoding::Utf8, BatchEncoding::Utf8Bom, BatchEncoding::Gb18030] {
            let encoded = encoding.encode("张*,已支付");
            assert_eq!(encoding.decode(&encoded).unwrap(), "张*,已支付");
            assert_eq!(BatchEncoding::parse(encoding.as_str()), Some(encoding));
        }
    }

    #[test]
    fn the_example_files_in_the_readme_are_valid() {
        let total = Amount::from_fen(75_050).unwrap();
        let (errors, _) = validate_file(
            include_bytes!("../../examples/subsidy_batch.csv").as_slice(),
            rules(),
            ControlTotals { line_count: 3, total },
            10,
        );
        assert!(errors.is_empty(), "{:?}", errors.listed());
        let total = Amount::from_fen(60_000).unwrap();
        let english = include_bytes!("../../examples/subsidy_batch_en.csv").as_slice();
        let (errors, _) = validate_file(english, rules(), ControlTotals { line_count: 2, total }, 10);
        assert!(errors.is_empty(), "{:?}", errors.listed());
    }
}
