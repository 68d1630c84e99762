//! The matcher: one wallet, one business day, the operator's statement lines against
//! carepay's own records, every line and record ending in exactly one [`Category`] with the
//! fields that differ.
//!
//! A day holds up to a million lines on each side, so both sides are compact: one text
//! buffer per side for every string, fixed-size items pointing into it, outcomes that name
//! items by index. Both sides are ordered by merchant number (`out_no`, a stable sort: equal
//! numbers keep their order) and the first key is a sort-merge; lines and records left
//! unmatched after it (the exceptions, few on any real day) are then matched by the
//! operator's reference, the second key.

use std::collections::{HashMap, HashSet};

use time::macros::format_description;
use time::{Date, OffsetDateTime};

use super::ids::{FacilityId, ProgrammeId};
use super::statement::{EntryKind, EntryStatus, LineRef};
use super::time::{SHANGHAI, UnixMs};

pub const MS_PER_DAY: i64 = 86_400_000;

/// Whose wallet a statement is, and so whose records are its carepay side: a facility's
/// merchant wallet (payments and refunds) or a programme's funding wallet (subsidy transfers
/// and their returns; the first programme to name the wallet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalletOwner {
    Facility(FacilityId),
    Programme(ProgrammeId),
}

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
    /// Both sides know it, on different business days (cut-off: settled across midnight): a
    /// statement line paired with a record of the neighbouring day, or a record of this day
    /// that a neighbouring day's statement lists. With nothing else different it is a timing
    /// difference ([`Outcome::is_timing`]), not a discrepancy.
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

/// The most items (lines or records) one side of a day may hold: outcomes name items by a
/// 32-bit index.
pub const MAX_SIDE_ITEMS: usize = u32::MAX as usize;
/// The most text one side may hold (merchant numbers, references, times): spans are 32-bit.
pub const MAX_SIDE_TEXT_BYTES: usize = u32::MAX as usize;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SideError {
    #[error("one side of the day holds more than {MAX_SIDE_ITEMS} items or {MAX_SIDE_TEXT_BYTES} bytes of text")]
    TooLarge,
}

/// A string inside a side's text buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

/// Every string of one side in one allocation.
#[derive(Clone, Debug, Default)]
struct Text(String);

impl Text {
    fn push(&mut self, value: &str) -> Result<Span, SideError> {
        let start = u32::try_from(self.0.len()).map_err(|_| SideError::TooLarge)?;
        let len = u32::try_from(value.len()).map_err(|_| SideError::TooLarge)?;
        if self.0.len() + value.len() > MAX_SIDE_TEXT_BYTES {
            return Err(SideError::TooLarge);
        }
        self.0.push_str(value);
        Ok(Span { start, len })
    }

    fn get(&self, span: Span) -> &str {
        let start = span.start as usize;
        &self.0[start..start + span.len as usize]
    }
}

#[derive(Clone, Copy, Debug)]
struct SideLine {
    line_no: u64,
    settled_at: Span,
    operator_ref: Span,
    out_no: Span,
    memo: Span,
    kind: EntryKind,
    status: EntryStatus,
    amount_fen: i64,
    fee_fen: i64,
}

/// The statement's detail lines, in file order, as the matcher and the result need them.
#[derive(Clone, Debug, Default)]
pub struct StatementSide {
    text: Text,
    lines: Vec<SideLine>,
}

/// One statement line of a [`StatementSide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatementItem<'a> {
    /// The (1-based, physical) line the record starts on.
    pub line_no: u64,
    pub settled_at: &'a str,
    pub operator_ref: &'a str,
    pub out_no: &'a str,
    pub kind: EntryKind,
    pub status: EntryStatus,
    pub amount_fen: i64,
    pub fee_fen: i64,
    /// Kept for the operator's own entries (FEE, ADJUSTMENT), whose booking it names, and for
    /// TRANSFER_RETURN, whose reason it is; empty for every other line (the kept file has it).
    pub memo: &'a str,
}

impl StatementSide {
    pub fn with_capacity(lines: usize) -> Self {
        StatementSide { text: Text(String::with_capacity(lines * 80)), lines: Vec::with_capacity(lines) }
    }

    pub fn push(&mut self, line: &LineRef<'_>) -> Result<(), SideError> {
        if self.lines.len() >= MAX_SIDE_ITEMS {
            return Err(SideError::TooLarge);
        }
        // The operator's own entries name their booking by it; a return says why it came back.
        let keeps_memo = matches!(line.kind, EntryKind::Fee | EntryKind::Adjustment | EntryKind::TransferReturn);
        let side_line = SideLine {
            line_no: line.line_no,
            settled_at: self.text.push(line.settled_at)?,
            operator_ref: self.text.push(line.operator_ref)?,
            out_no: self.text.push(line.out_no)?,
            memo: if keeps_memo { self.text.push(line.memo)? } else { Span::default() },
            kind: line.kind,
            status: line.status,
            amount_fen: line.amount_fen,
            fee_fen: line.fee_fen,
        };
        self.lines.push(side_line);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Line `index` (in file order). Panics on an index not from this side.
    pub fn item(&self, index: u32) -> StatementItem<'_> {
        let line = &self.lines[index as usize];
        StatementItem {
            line_no: line.line_no,
            settled_at: self.text.get(line.settled_at),
            operator_ref: self.text.get(line.operator_ref),
            out_no: self.text.get(line.out_no),
            kind: line.kind,
            status: line.status,
            amount_fen: line.amount_fen,
            fee_fen: line.fee_fen,
            memo: self.text.get(line.memo),
        }
    }

    fn out_no(&self, index: u32) -> &str {
        self.text.get(self.lines[index as usize].out_no)
    }

    fn key(&self, index: u32) -> MatchKey<'_> {
        MatchKey::of(self.out_no(index), self.lines[index as usize].kind)
    }

    fn operator_ref(&self, index: u32) -> &str {
        self.text.get(self.lines[index as usize].operator_ref)
    }

    /// Every index ordered by match key, file order among equals.
    fn order(&self) -> Vec<u32> {
        stable_order(self.lines.len(), |index| self.key(index))
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
}

#[derive(Clone, Copy, Debug)]
struct SideEntry {
    out_no: Span,
    operator_ref: Option<Span>,
    kind: EntryKind,
    status: EntryStatus,
    amount_fen: i64,
    expected_fee_fen: i64,
    settled_at_ms: i64,
}

/// carepay's records of the day and its two neighbours, in the order they were loaded.
#[derive(Clone, Debug, Default)]
pub struct CarepaySide {
    text: Text,
    entries: Vec<SideEntry>,
}

/// One record of a [`CarepaySide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarepayItem<'a> {
    pub out_no: &'a str,
    pub operator_ref: Option<&'a str>,
    pub kind: EntryKind,
    pub status: EntryStatus,
    pub amount_fen: i64,
    pub expected_fee_fen: i64,
    pub settled_at_ms: i64,
}

impl CarepayItem<'_> {
    /// `YYYY-MM-DD` in Asia/Shanghai of when it settled.
    pub fn business_day(&self) -> String {
        business_day(UnixMs(self.settled_at_ms))
    }
}

impl CarepaySide {
    pub fn with_capacity(entries: usize) -> Self {
        CarepaySide { text: Text(String::with_capacity(entries * 48)), entries: Vec::with_capacity(entries) }
    }

    #[expect(clippy::too_many_arguments, reason = "one argument per column of the record, as loaded")]
    pub fn push_parts(
        &mut self,
        out_no: &str,
        operator_ref: Option<&str>,
        kind: EntryKind,
        status: EntryStatus,
        amount_fen: i64,
        expected_fee_fen: i64,
        settled_at_ms: i64,
    ) -> Result<(), SideError> {
        if self.entries.len() >= MAX_SIDE_ITEMS {
            return Err(SideError::TooLarge);
        }
        let entry = SideEntry {
            out_no: self.text.push(out_no)?,
            operator_ref: operator_ref.map(|value| self.text.push(value)).transpose()?,
            kind,
            status,
            amount_fen,
            expected_fee_fen,
            settled_at_ms,
        };
        self.entries.push(entry);
        Ok(())
    }

    pub fn push(&mut self, entry: &CarepayEntry) -> Result<(), SideError> {
        self.push_parts(
            &entry.out_no,
            entry.operator_ref.as_deref(),
            entry.kind,
            entry.status,
            entry.amount_fen,
            entry.expected_fee_fen,
            entry.settled_at_ms,
        )
    }

    /// Adds every record of `other` after this side's own.
    pub fn append(&mut self, other: &CarepaySide) -> Result<(), SideError> {
        for index in 0..other.entries.len() {
            let entry = other.item(index as u32);
            self.push_parts(
                entry.out_no,
                entry.operator_ref,
                entry.kind,
                entry.status,
                entry.amount_fen,
                entry.expected_fee_fen,
                entry.settled_at_ms,
            )?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Record `index` (in load order). Panics on an index not from this side.
    pub fn item(&self, index: u32) -> CarepayItem<'_> {
        let entry = &self.entries[index as usize];
        CarepayItem {
            out_no: self.text.get(entry.out_no),
            operator_ref: entry.operator_ref.map(|span| self.text.get(span)),
            kind: entry.kind,
            status: entry.status,
            amount_fen: entry.amount_fen,
            expected_fee_fen: entry.expected_fee_fen,
            settled_at_ms: entry.settled_at_ms,
        }
    }

    fn out_no(&self, index: u32) -> &str {
        self.text.get(self.entries[index as usize].out_no)
    }

    fn key(&self, index: u32) -> MatchKey<'_> {
        MatchKey::of(self.out_no(index), self.entries[index as usize].kind)
    }

    /// Every index ordered by match key, load order among equals.
    fn order(&self) -> Vec<u32> {
        stable_order(self.entries.len(), |index| self.key(index))
    }
}

/// What the first pass matches on: the merchant number, and whether the item is money coming
/// back on it. A transfer and its return carry the same `out_transfer_no` and are two items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MatchKey<'a> {
    out_no: &'a str,
    is_return: bool,
}

impl<'a> MatchKey<'a> {
    fn of(out_no: &'a str, kind: EntryKind) -> Self {
        MatchKey { out_no, is_return: kind == EntryKind::TransferReturn }
    }
}

/// The indices `0..len` ordered by `key`, equal keys in index order (a stable sort).
///
/// Both sides of a day come nearly in order already: merchant numbers are time-ordered ids
/// and the file lists entries by time, the database its rows as inserted. So one pass keeps
/// the longest run in order as it goes and sets the few items that break it aside; only those
/// are sorted, then merged back. A day in any other order still sorts, as a general stable
/// sort would.
fn stable_order<K: Ord>(len: usize, key: impl Fn(u32) -> K) -> Vec<u32> {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut in_order: Vec<u32> = Vec::with_capacity(len as usize);
    let mut aside: Vec<u32> = Vec::new();
    for index in 0..len {
        match in_order.last() {
            Some(&last) if key(index) < key(last) => aside.push(index),
            _ => in_order.push(index),
        }
    }
    if aside.is_empty() {
        return in_order;
    }
    aside.sort_by_key(|index| key(*index));
    // Both runs are ordered by (key, index); so is their merge.
    let mut merged = Vec::with_capacity(len as usize);
    let (mut left, mut right) = (in_order.iter().peekable(), aside.iter().peekable());
    while let (Some(&&a), Some(&&b)) = (left.peek(), right.peek()) {
        if (key(b), b) < (key(a), a) {
            merged.push(b);
            right.next();
        } else {
            merged.push(a);
            left.next();
        }
    }
    merged.extend(left);
    merged.extend(right);
    merged
}

/// The fields in which a line and a record differ, as a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fields(u8);

impl Fields {
    pub const NONE: Fields = Fields(0);
    pub const OUT_NO: Fields = Fields(1);
    pub const KIND: Fields = Fields(1 << 1);
    pub const STATUS: Fields = Fields(1 << 2);
    pub const AMOUNT: Fields = Fields(1 << 3);
    pub const FEE: Fields = Fields(1 << 4);
    pub const BUSINESS_DAY: Fields = Fields(1 << 5);
    /// Every field with its name, in the order they are listed.
    const NAMED: [(Fields, &'static str); 6] = [
        (Fields::OUT_NO, "out_no"),
        (Fields::KIND, "kind"),
        (Fields::STATUS, "status"),
        (Fields::AMOUNT, "amount"),
        (Fields::FEE, "fee"),
        (Fields::BUSINESS_DAY, "business_day"),
    ];

    pub fn contains(self, other: Fields) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn insert(&mut self, other: Fields) {
        self.0 |= other.0;
    }

    /// The names of the fields in the set, in listing order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Fields::NAMED.into_iter().filter(move |(field, _)| self.contains(*field)).map(|(_, name)| name)
    }

    /// The names joined by commas (`amount,fee`), as stored.
    pub fn joined(self) -> String {
        self.names().collect::<Vec<_>>().join(",")
    }

    /// The set as one byte, for storage.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set from [`Self::bits`]; `None` for bits that name no field.
    pub fn from_bits(bits: u8) -> Option<Fields> {
        (bits & !0b11_1111 == 0).then_some(Fields(bits))
    }
}

/// One classified item: a pair, a lone line or a lone record, naming them by index into
/// their sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub category: Category,
    /// Index into the [`StatementSide`].
    pub line: Option<u32>,
    /// Index into the [`CarepaySide`].
    pub entry: Option<u32>,
    /// The fields that differ (empty for a match).
    pub fields: Fields,
}

impl Outcome {
    /// The same money on both sides, only on neighbouring business days: an entry that
    /// settled across midnight. It is one timing difference, reported once on the record's
    /// own day and open on neither (a merchant number that differs, matched by the operator's
    /// reference, is shown but no discrepancy, as for a match).
    pub fn is_timing(&self) -> bool {
        self.category == Category::WrongDay && Fields(self.fields.0 & !Fields::OUT_NO.0) == Fields::BUSINESS_DAY
    }

    /// Whether it stays open until resolved.
    pub fn is_discrepancy(&self) -> bool {
        self.category.is_discrepancy() && !self.is_timing()
    }
}

#[derive(Clone, Debug)]
pub struct MatchSettings {
    /// The statement's business day, `YYYY-MM-DD`.
    pub date: String,
    /// Whether carepay records missing from the statement are past the grace period (T+2 by
    /// default) and so discrepancies rather than expected.
    pub past_grace: bool,
    /// Merchant numbers of this day's records that a neighbouring day's statement lists
    /// (settled across midnight): not expected and not missing here, but on the wrong day.
    pub listed_elsewhere: HashSet<String>,
}

impl MatchSettings {
    /// `[start, end)` in unix ms of the day; `None` (no record is of it) for no date.
    fn day_ms(&self) -> Option<(i64, i64)> {
        day_start_ms(&self.date).map(|start| (start, start + MS_PER_DAY))
    }
}

/// Classifies every statement line and every carepay record, calling `emit` once for each
/// outcome. `carepay` must cover the day and its two neighbours (an entry settled just
/// across midnight is a wrong-day case, not missing); records of a neighbouring day that the
/// statement does not list are not this day's business and are not emitted. Either side may
/// come in any order; equal merchant numbers keep theirs (the first is the one compared, the
/// others are duplicates).
pub fn reconcile<E: FnMut(Outcome)>(
    settings: &MatchSettings,
    statement: &StatementSide,
    carepay: &CarepaySide,
    mut emit: E,
) {
    let day = settings.day_ms();
    let of_day = |entry: u32| day.is_some_and(|(start, end)| (start..end).contains(&carepay.item(entry).settled_at_ms));
    let lines = statement.order();
    let entries = carepay.order();
    let mut lone_lines = Vec::new();
    let mut lone_entries = Vec::new();
    let (mut i, mut j) = (0, 0);

    while i < lines.len() || j < entries.len() {
        let key = match (lines.get(i), entries.get(j)) {
            (Some(&line), Some(&entry)) => statement.key(line).min(carepay.key(entry)),
            (Some(&line), None) => statement.key(line),
            (None, Some(&entry)) => carepay.key(entry),
            (None, None) => break,
        };
        let line_group = i..i + lines[i..].iter().take_while(|&&line| statement.key(line) == key).count();
        let entry_group = j..j + entries[j..].iter().take_while(|&&entry| carepay.key(entry) == key).count();
        (i, j) = (line_group.end, entry_group.end);
        let (group_lines, group_entries) = (&lines[line_group], &entries[entry_group]);
        if key.out_no.is_empty() {
            // No merchant number: operator entries, or lines to match by reference.
            for &line in group_lines {
                if matches!(statement.item(line).kind, EntryKind::Fee | EntryKind::Adjustment) {
                    emit(Outcome {
                        category: Category::OperatorEntry,
                        line: Some(line),
                        entry: None,
                        fields: Fields::NONE,
                    });
                } else {
                    lone_lines.push(line);
                }
            }
            lone_entries.extend_from_slice(group_entries);
            continue;
        }
        match (group_lines.first(), group_entries.first()) {
            (Some(&line), Some(&entry)) => emit(compare(statement, carepay, line, entry, of_day(entry))),
            (Some(&line), None) => lone_lines.push(line),
            (None, Some(&entry)) => lone_entries.push(entry),
            (None, None) => {}
        }
        for &line in group_lines.iter().skip(1) {
            emit(Outcome { category: Category::Duplicate, line: Some(line), entry: None, fields: Fields::OUT_NO });
        }
        for &entry in group_entries.iter().skip(1) {
            emit(Outcome { category: Category::Duplicate, line: None, entry: Some(entry), fields: Fields::OUT_NO });
        }
    }

    match_by_reference(settings, statement, carepay, lone_lines, lone_entries, &of_day, &mut emit);
}

/// The second key: the operator's reference, for what the merchant number did not pair.
fn match_by_reference<E: FnMut(Outcome)>(
    settings: &MatchSettings,
    statement: &StatementSide,
    carepay: &CarepaySide,
    lines: Vec<u32>,
    entries: Vec<u32>,
    of_day: &impl Fn(u32) -> bool,
    emit: &mut E,
) {
    let mut by_ref: HashMap<&str, u32> = HashMap::new();
    let mut unreferenced = Vec::new();
    for entry in entries {
        match carepay.item(entry).operator_ref {
            Some(operator_ref) if !by_ref.contains_key(operator_ref) => {
                by_ref.insert(operator_ref, entry);
            }
            _ => unreferenced.push(entry),
        }
    }
    for line in lines {
        match by_ref.remove(statement.operator_ref(line)) {
            Some(entry) => emit(compare(statement, carepay, line, entry, of_day(entry))),
            None => emit(Outcome {
                category: Category::MissingInCarepay,
                line: Some(line),
                entry: None,
                fields: Fields::NONE,
            }),
        }
    }
    let mut left: Vec<u32> = by_ref.into_values().chain(unreferenced).collect();
    // Deterministic output whatever the hash order.
    left.sort_by(|a, b| carepay.key(*a).cmp(&carepay.key(*b)).then(a.cmp(b)));
    for entry in left {
        if !of_day(entry) {
            // A neighbouring day's record that is not on this statement: its own day's run.
            continue;
        }
        // A return's time is its statement line's, so only the transfer itself crosses midnight.
        let key = carepay.key(entry);
        if !key.is_return && settings.listed_elsewhere.contains(key.out_no) {
            emit(Outcome {
                category: Category::WrongDay,
                line: None,
                entry: Some(entry),
                fields: Fields::BUSINESS_DAY,
            });
            continue;
        }
        let category = if settings.past_grace { Category::MissingInStatement } else { Category::Expected };
        emit(Outcome { category, line: None, entry: Some(entry), fields: Fields::NONE });
    }
}

/// A line and a record with the same key: the fields that differ, and the one category
/// that names the most fundamental of them.
fn compare(statement: &StatementSide, carepay: &CarepaySide, line: u32, entry: u32, entry_of_day: bool) -> Outcome {
    let (item, record) = (statement.item(line), carepay.item(entry));
    let mut fields = Fields::NONE;
    if item.out_no != record.out_no {
        fields.insert(Fields::OUT_NO);
    }
    // The operator's references are not compared: the statement's serial number and the
    // trade number carepay was told need not be the same; the reference is only a key.
    if item.kind != record.kind {
        fields.insert(Fields::KIND);
    }
    if item.status != record.status {
        fields.insert(Fields::STATUS);
    }
    if item.amount_fen != record.amount_fen {
        fields.insert(Fields::AMOUNT);
    }
    // A REVERSED line's fee is given back with it (it is in no total), so it is not compared.
    let both_reversed = item.status == EntryStatus::Reversed && record.status == EntryStatus::Reversed;
    if item.fee_fen != record.expected_fee_fen && !both_reversed {
        fields.insert(Fields::FEE);
    }
    if !entry_of_day {
        fields.insert(Fields::BUSINESS_DAY);
    }
    let category = if fields.contains(Fields::KIND) {
        Category::KindMismatch
    } else if fields.contains(Fields::STATUS) {
        Category::StatusMismatch
    } else if fields.contains(Fields::AMOUNT) {
        Category::AmountMismatch
    } else if fields.contains(Fields::BUSINESS_DAY) {
        Category::WrongDay
    } else if fields.contains(Fields::FEE) {
        Category::FeeMismatch
    } else {
        // A different reference or merchant number alone (matched on the other key) is
        // shown but is no discrepancy: the money agrees.
        Category::Matched
    };
    Outcome { category, line: Some(line), entry: Some(entry), fields }
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
    /// What the file does that the spec allows two readings of, in words (e.g. a `fee_total`
    /// counting REVERSED lines' fees).
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CategoryTotal {
    pub category: String,
    pub count: u64,
    /// Signed like the nets (money in positive, refunds and fees negative): statement amounts
    /// where there is a line, carepay's otherwise.
    pub amount_fen: i64,
}

/// Accumulates a [`Summary`] from outcomes as they stream past.
#[derive(Default)]
pub struct SummaryBuilder {
    per_category: HashMap<Category, (u64, i64)>,
    summary: Summary,
}

impl SummaryBuilder {
    pub fn add(&mut self, outcome: &Outcome, statement: &StatementSide, carepay: &CarepaySide) {
        let line = outcome.line.map(|line| statement.item(line));
        let entry = outcome.entry.map(|entry| carepay.item(entry));
        // Signed as the nets are (refunds and fees out, payments in), so a category's amount and
        // the day's net read alike.
        let signed_amount_fen = line
            .map(|item| signed_fen(item.kind, item.amount_fen))
            .or(entry.map(|entry| signed_fen(entry.kind, entry.amount_fen)))
            .unwrap_or(0);
        let slot = self.per_category.entry(outcome.category).or_default();
        slot.0 += 1;
        slot.1 = slot.1.saturating_add(signed_amount_fen);
        if outcome.is_discrepancy() {
            self.summary.open_discrepancies += 1;
        }
        if let Some(item) = line {
            self.summary.statement_lines += 1;
            if item.status == EntryStatus::Success {
                let signed = signed_fen(item.kind, item.amount_fen);
                self.summary.statement_net_fen = self.summary.statement_net_fen.saturating_add(signed);
                self.summary.statement_fee_fen = self.summary.statement_fee_fen.saturating_add(item.fee_fen);
            }
        }
        if let Some(entry) = entry {
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

/// A statement line's `交易时间` (`YYYY-MM-DD HH:MM:SS`, +08:00) in unix ms; `None` for text
/// that is not one (the reader has already refused such a line).
pub fn settled_at_ms(settled_at: &str) -> Option<i64> {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let local = time::PrimitiveDateTime::parse(settled_at, &format).ok()?;
    i64::try_from(local.assume_offset(SHANGHAI).unix_timestamp_nanos() / 1_000_000).ok()
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
