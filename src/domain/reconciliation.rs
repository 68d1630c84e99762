//! The matcher: one wallet, one business day, the operator's statement lines against
//! carepay's own records, every line and record ending in exactly one [`Category`] with the
//! fields that differ.
//!
//! Both sides arrive sorted by merchant number (`out_no`), so the first key is a sort-merge
//! that holds one key group at a time: memory stays bounded however long the day is. Lines
//! and records left unmatched after it (the exceptions, few on any real day) are then
//! matched by the operator's reference, the second key.

use std::collections::HashMap;

use time::macros::format_description;
use time::{Date, OffsetDateTime};

use super::statement::{EntryKind, EntryStatus, StatementLine};
use super::time::{SHANGHAI, UnixMs};

pub const MS_PER_DAY: i64 = 86_400_000;

/// Where a line or record ends up. Exactly one per item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Matched,
    /// On the statement, not in carepay.
    MissingInCarepay,
    /// In carepay, not (yet) on the statement, still within the grace period.
    Expected,
    /// In carepay, not on the statement, grace period over.
    MissingInStatement,
    AmountMismatch,
    /// E.g. carepay SUCCESS, statement REVERSED.
    StatusMismatch,
    /// Direction or type differ (a PAYMENT on one side, a REFUND on the other).
    KindMismatch,
    /// A second line (or record) with a key already seen on the same side.
    Duplicate,
    /// Both sides know it, on different business days (cut-off: settled after midnight).
    WrongDay,
    FeeMismatch,
    /// Fees and adjustments the operator booked itself (no merchant number).
    OperatorEntry,
}

impl Category {
    pub const ALL: [Category; 11] = [
        Category::Matched,
        Category::MissingInCarepay,
        Category::Expected,
        Category::MissingInStatement,
        Category::AmountMismatch,
        Category::StatusMismatch,
        Category::KindMismatch,
        Category::Duplicate,
        Category::WrongDay,
        Category::FeeMismatch,
        Category::OperatorEntry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Matched => "matched",
            Category::MissingInCarepay => "missing_in_carepay",
            Category::Expected => "expected",
            Category::MissingInStatement => "missing_in_statement",
            Category::AmountMismatch => "amount_mismatch",
            Category::StatusMismatch => "status_mismatch",
            Category::KindMismatch => "kind_mismatch",
            Category::Duplicate => "duplicate",
            Category::WrongDay => "wrong_day",
            Category::FeeMismatch => "fee_mismatch",
            Category::OperatorEntry => "operator_entry",
        }
    }

    pub fn parse(text: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|category| category.as_str() == text)
    }

    /// Whether it stays open until resolved: everything except a match and a booked
    /// operator entry. An expected record is open too (a day with one cannot close), and
    /// resolves itself as timing when it shows up on a later statement.
    pub fn is_discrepancy(self) -> bool {
        !matches!(self, Category::Matched | Category::OperatorEntry)
    }
}

/// One of carepay's own money movements on the wallet, as the operator should list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarepayEntry {
    /// `out_trade_no` / `out_refund_no`.
    pub out_no: String,
    /// The operator's reference carepay was told (`trade_no` / `refund_no`), if any.
    pub operator_ref: Option<String>,
    pub kind: EntryKind,
    /// `Reversed` for a payment carepay knows was undone.
    pub status: EntryStatus,
    pub amount_fen: i64,
    /// The fee carepay expects the operator to withhold.
    pub expected_fee_fen: i64,
    /// When carepay saw it settle.
    pub settled_at_ms: i64,
    /// `YYYY-MM-DD` in Asia/Shanghai of `settled_at_ms`.
    pub business_day: String,
}

/// A statement line with its (1-based, physical) line number in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberedLine {
    pub line_no: u64,
    pub line: StatementLine,
}

/// One classified item: a pair, a lone line or a lone record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub category: Category,
    pub statement: Option<NumberedLine>,
    pub carepay: Option<CarepayEntry>,
    /// The fields that differ (empty for a match).
    pub fields: Vec<&'static str>,
}

#[derive(Clone, Debug)]
pub struct MatchSettings {
    /// The statement's business day, `YYYY-MM-DD`.
    pub date: String,
    /// Whether carepay records missing from the statement are past the grace period (T+2 by
    /// default) and so discrepancies rather than expected.
    pub past_grace: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    #[error("{side} is not sorted by merchant number at {out_no:?}")]
    Unsorted { side: &'static str, out_no: String },
}

/// Classifies every statement line and every carepay record, calling `emit` once for each
/// outcome. `carepay` must cover the day and its two neighbours (an entry settled just
/// across midnight is a wrong-day case, not missing); records of a neighbouring day that the
/// statement does not list are not this day's business and are not emitted.
pub fn reconcile<S, C, E>(settings: &MatchSettings, statement: S, carepay: C, mut emit: E) -> Result<(), MatchError>
where
    S: IntoIterator<Item = NumberedLine>,
    C: IntoIterator<Item = CarepayEntry>,
    E: FnMut(Outcome),
{
    let mut statement = Sorted::new("statement", statement.into_iter(), |item: &NumberedLine| &item.line.out_no);
    let mut carepay = Sorted::new("carepay", carepay.into_iter(), |entry: &CarepayEntry| &entry.out_no);
    let mut lone_lines = Vec::new();
    let mut lone_entries = Vec::new();

    loop {
        let key = match (statement.peek_key(), carepay.peek_key()) {
            (None, None) => break,
            (Some(line), Some(entry)) => line.min(entry).to_owned(),
            (Some(line), None) => line.to_owned(),
            (None, Some(entry)) => entry.to_owned(),
        };
        let lines = statement.take_group(&key)?;
        let entries = carepay.take_group(&key)?;
        if key.is_empty() {
            // No merchant number: operator entries, or lines to match by reference.
            for item in lines {
                if matches!(item.line.kind, EntryKind::Fee | EntryKind::Adjustment) {
                    emit(Outcome {
                        category: Category::OperatorEntry,
                        statement: Some(item),
                        carepay: None,
                        fields: vec![],
                    });
                } else {
                    lone_lines.push(item);
                }
            }
            lone_entries.extend(entries);
            continue;
        }
        let mut lines = lines.into_iter();
        let mut entries = entries.into_iter();
        match (lines.next(), entries.next()) {
            (Some(line), Some(entry)) => emit(compare(settings, line, entry)),
            (Some(line), None) => lone_lines.push(line),
            (None, Some(entry)) => lone_entries.push(entry),
            (None, None) => {}
        }
        for line in lines {
            emit(Outcome {
                category: Category::Duplicate,
                statement: Some(line),
                carepay: None,
                fields: vec!["out_no"],
            });
        }
        for entry in entries {
            emit(Outcome {
                category: Category::Duplicate,
                statement: None,
                carepay: Some(entry),
                fields: vec!["out_no"],
            });
        }
    }

    match_by_reference(settings, lone_lines, lone_entries, &mut emit);
    Ok(())
}

/// The second key: the operator's reference, for what the merchant number did not pair.
fn match_by_reference<E: FnMut(Outcome)>(
    settings: &MatchSettings,
    lines: Vec<NumberedLine>,
    entries: Vec<CarepayEntry>,
    emit: &mut E,
) {
    let mut by_ref: HashMap<String, CarepayEntry> = HashMap::new();
    let mut unreferenced = Vec::new();
    for entry in entries {
        match entry.operator_ref.clone() {
            Some(operator_ref) if !by_ref.contains_key(&operator_ref) => {
                by_ref.insert(operator_ref, entry);
            }
            _ => unreferenced.push(entry),
        }
    }
    for line in lines {
        match by_ref.remove(&line.line.operator_ref) {
            Some(entry) => emit(compare(settings, line, entry)),
            None => emit(Outcome {
                category: Category::MissingInCarepay,
                statement: Some(line),
                carepay: None,
                fields: vec![],
            }),
        }
    }
    let mut left: Vec<CarepayEntry> = by_ref.into_values().chain(unreferenced).collect();
    // Deterministic output whatever the hash order.
    left.sort_by(|a, b| a.out_no.cmp(&b.out_no));
    for entry in left {
        if entry.business_day != settings.date {
            // A neighbouring day's record that is not on this statement: its own day's run.
            continue;
        }
        let category = if settings.past_grace { Category::MissingInStatement } else { Category::Expected };
        emit(Outcome { category, statement: None, carepay: Some(entry), fields: vec![] });
    }
}

/// A line and a record with the same key: the fields that differ, and the one category
/// that names the most fundamental of them.
fn compare(settings: &MatchSettings, item: NumberedLine, entry: CarepayEntry) -> Outcome {
    let line = &item.line;
    let mut fields = Vec::new();
    if line.out_no != entry.out_no {
        fields.push("out_no");
    }
    // The operator's references are not compared: the statement's serial number and the
    // trade number carepay was told need not be the same; the reference is only a key.
    if line.kind != entry.kind {
        fields.push("kind");
    }
    if line.status != entry.status {
        fields.push("status");
    }
    if line.amount_fen != entry.amount_fen {
        fields.push("amount");
    }
    if line.fee_fen != entry.expected_fee_fen {
        fields.push("fee");
    }
    if entry.business_day != settings.date {
        fields.push("business_day");
    }
    let category = if fields.contains(&"kind") {
        Category::KindMismatch
    } else if fields.contains(&"status") {
        Category::StatusMismatch
    } else if fields.contains(&"amount") {
        Category::AmountMismatch
    } else if fields.contains(&"business_day") {
        Category::WrongDay
    } else if fields.contains(&"fee") {
        Category::FeeMismatch
    } else {
        // A different reference or merchant number alone (matched on the other key) is
        // shown but is no discrepancy: the money agrees.
        Category::Matched
    };
    Outcome { category, statement: Some(item), carepay: Some(entry), fields }
}

/// A peekable side that checks its order as it goes and hands out one key group at a time.
struct Sorted<I: Iterator, K> {
    side: &'static str,
    items: std::iter::Peekable<I>,
    key: K,
    last: Option<String>,
}

impl<I: Iterator, K: Fn(&I::Item) -> &String> Sorted<I, K> {
    fn new(side: &'static str, items: I, key: K) -> Self {
        Sorted { side, items: items.peekable(), key, last: None }
    }

    fn peek_key(&mut self) -> Option<&str> {
        let key = &self.key;
        self.items.peek().map(|item| key(item).as_str())
    }

    fn take_group(&mut self, wanted: &str) -> Result<Vec<I::Item>, MatchError> {
        let mut group = Vec::new();
        while let Some(item) = self.items.next_if(|item| (self.key)(item) == wanted) {
            group.push(item);
        }
        if let Some(next) = self.items.peek() {
            let next = (self.key)(next);
            if next.as_str() < wanted || self.last.as_deref().is_some_and(|last| next.as_str() < last) {
                return Err(MatchError::Unsorted { side: self.side, out_no: next.clone() });
            }
        }
        if !group.is_empty() {
            self.last = Some(wanted.to_owned());
        }
        Ok(group)
    }
}

/// Counts and amounts per category, both sides' totals and the net settlement.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub categories: Vec<CategoryTotal>,
    /// SUCCESS statement lines: credits minus debits.
    pub statement_net_fen: i64,
    pub statement_fee_fen: i64,
    pub statement_lines: u64,
    /// carepay's SUCCESS records of this day: credits minus debits.
    pub carepay_net_fen: i64,
    pub carepay_records: u64,
    /// What the operator settles into the wallet: statement net minus fees.
    pub net_settlement_fen: i64,
    pub open_discrepancies: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CategoryTotal {
    pub category: String,
    pub count: u64,
    /// Statement amounts where there is a line, carepay's otherwise.
    pub amount_fen: i64,
}

/// Accumulates a [`Summary`] from outcomes as they stream past.
#[derive(Default)]
pub struct SummaryBuilder {
    per_category: HashMap<Category, (u64, i64)>,
    summary: Summary,
}

impl SummaryBuilder {
    pub fn add(&mut self, outcome: &Outcome) {
        let amount_fen = outcome
            .statement
            .as_ref()
            .map(|item| item.line.amount_fen)
            .or(outcome.carepay.as_ref().map(|entry| entry.amount_fen))
            .unwrap_or(0);
        let slot = self.per_category.entry(outcome.category).or_default();
        slot.0 += 1;
        slot.1 = slot.1.saturating_add(amount_fen);
        if outcome.category.is_discrepancy() {
            self.summary.open_discrepancies += 1;
        }
        if let Some(item) = &outcome.statement {
            self.summary.statement_lines += 1;
            if item.line.status == EntryStatus::Success {
                let signed = signed_fen(item.line.kind, item.line.amount_fen);
                self.summary.statement_net_fen = self.summary.statement_net_fen.saturating_add(signed);
                self.summary.statement_fee_fen = self.summary.statement_fee_fen.saturating_add(item.line.fee_fen);
            }
        }
        if let Some(entry) = &outcome.carepay {
            self.summary.carepay_records += 1;
            if entry.status == EntryStatus::Success {
                let signed = signed_fen(entry.kind, entry.amount_fen);
                self.summary.carepay_net_fen = self.summary.carepay_net_fen.saturating_add(signed);
            }
        }
    }

    pub fn finish(mut self) -> Summary {
        let mut categories: Vec<CategoryTotal> = self
            .per_category
            .into_iter()
            .map(|(category, (count, amount_fen))| CategoryTotal {
                category: category.as_str().to_owned(),
                count,
                amount_fen,
            })
            .collect();
        categories.sort_by(|a, b| a.category.cmp(&b.category));
        self.summary.categories = categories;
        self.summary.net_settlement_fen = self.summary.statement_net_fen.saturating_sub(self.summary.statement_fee_fen);
        self.summary
    }
}

/// Credits positive, debits negative; an ADJUSTMENT keeps its own sign.
pub fn signed_fen(kind: EntryKind, amount_fen: i64) -> i64 {
    match kind {
        EntryKind::Adjustment => amount_fen,
        _ if kind.is_credit(amount_fen) => amount_fen,
        _ => -amount_fen,
    }
}

/// The fee the operator withholds at `rate_ppm` (rounded half up, never above the amount),
/// the same rule the sandbox applies.
pub fn expected_fee_fen(amount_fen: i64, rate_ppm: u32) -> i64 {
    let fee = (i128::from(amount_fen) * i128::from(rate_ppm) + 500_000) / 1_000_000;
    i64::try_from(fee).unwrap_or(amount_fen).min(amount_fen)
}

/// `YYYY-MM-DD` of an instant in Asia/Shanghai.
pub fn business_day(at: UnixMs) -> String {
    let instant = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.0) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(SHANGHAI);
    let date = instant.date();
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// The first millisecond of a `YYYY-MM-DD` business day, or `None` if it is no date.
pub fn day_start_ms(date: &str) -> Option<i64> {
    let date = Date::parse(date, format_description!("[year]-[month]-[day]")).ok()?;
    let start = date.midnight().assume_offset(SHANGHAI);
    i64::try_from(start.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `[start, end)` in unix ms covering the day before, the day and the day after: the
/// carepay records a day's run must load.
pub fn neighbourhood_ms(date: &str) -> Option<(i64, i64)> {
    let start = day_start_ms(date)?;
    Some((start - MS_PER_DAY, start + 2 * MS_PER_DAY))
}

#[cfg(test)]
mod tests;
