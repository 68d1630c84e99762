//! Reconciliation on disk: statement files with their digests and versions, runs and their
//! line-level results, discrepancies and their resolutions, the day's status and the
//! record of who did what.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

mod carepay_side;
mod results;

pub use carepay_side::CarepayDay;
pub use results::{CHUNK_LINES, EncodedChunk, ResultEncoder, encode_chunks};

use super::audit::{AuditEntry, append_about_in};
use super::callbacks::enqueue_in;
use super::directory::corrupt;
use super::ledger::{EntryRef, KnownAccounts, post_in};
use super::{Store, StoreError};
use crate::callbacks::NewEvent;
use crate::domain::directory::{RegionPath, WalletId};
use crate::domain::ids::{
    DiscrepancyId, FacilityId, ProgrammeId, ReconciliationActionId, RegionId, RunId, StatementFileId,
};
use crate::domain::ledger::{Account, AccountCode, JournalEntry, LedgerError, OverdraftPolicy};
use crate::domain::reconciliation::{CarepaySide, Category, Fields, Outcome, StatementSide, WalletOwner};
use crate::domain::statement::{EntryKind, EntryStatus, StatementTotals};
use crate::domain::time::UnixMs;

/// A statement file is stored in parts of this size (migration 0009): PostgreSQL takes a
/// 130 MB file as parts in half the time it takes it as one value.
const FILE_PART_BYTES: usize = 1024 * 1024;

/// Result chunks written per INSERT: fewer round trips, a statement of under a megabyte.
pub const CHUNKS_PER_INSERT: usize = 8;

/// Discrepancies written per INSERT (one JSON array each): few round trips on a day with
/// tens of thousands, while one statement's document stays a few megabytes.
const DISCREPANCY_BATCH: usize = 5_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    pub id: StatementFileId,
    pub wallet_id: String,
    pub business_day: String,
    pub version: i64,
    pub sha256: String,
    pub source: String,
    pub byte_count: i64,
    pub totals: StatementTotals,
    pub imported_by: String,
    pub imported_at: UnixMs,
}

pub struct NewFile<'a> {
    pub wallet_id: &'a str,
    pub business_day: &'a str,
    pub sha256: &'a str,
    pub source: &'a str,
    pub content: &'a [u8],
    pub imported_by: &'a str,
    pub now: UnixMs,
    /// The audit record when a person imports it (the file's id is filled in here).
    pub audit: Option<AuditEntry<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRow {
    pub id: RunId,
    pub wallet_id: String,
    pub owner: WalletOwner,
    pub business_day: String,
    pub file_id: StatementFileId,
    pub past_grace: bool,
    /// JSON of [`crate::domain::reconciliation::Summary`].
    pub summary: String,
    pub started_by: String,
    pub created_at: UnixMs,
}

/// A wallet statements are kept for, and who answers for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedWallet {
    pub owner: WalletOwner,
    pub region_id: RegionId,
    pub region_path: RegionPath,
}

/// One stored result line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResultLine {
    pub seq: i64,
    pub category: String,
    pub fields: Vec<String>,
    pub line_no: Option<i64>,
    pub out_no: String,
    pub operator_ref: Option<String>,
    pub statement_kind: Option<String>,
    pub statement_status: Option<String>,
    pub statement_amount_fen: Option<i64>,
    pub statement_fee_fen: Option<i64>,
    pub settled_at: Option<String>,
    pub carepay_kind: Option<String>,
    pub carepay_status: Option<String>,
    pub carepay_amount_fen: Option<i64>,
    pub carepay_fee_fen: Option<i64>,
    pub carepay_business_day: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discrepancy {
    pub id: DiscrepancyId,
    pub wallet_id: String,
    pub business_day: String,
    pub run_id: RunId,
    pub category: Category,
    pub identity: String,
    pub out_no: String,
    pub fields: Vec<String>,
    pub amount_fen: i64,
    pub open: bool,
    pub resolution: Option<String>,
    pub note: Option<String>,
    pub adjustment_fen: Option<i64>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<UnixMs>,
    pub version: i64,
    pub created_at: UnixMs,
}

/// A resolution to record, with the ledger entry it posts (for "adjusted").
pub struct Resolution<'a> {
    pub resolution: &'a str,
    pub note: &'a str,
    pub adjustment_fen: Option<i64>,
    pub actor: &'a str,
    pub now: UnixMs,
    pub audit: Option<AuditEntry<'a>>,
}

/// A run as it starts: what is known before its lines are matched.
pub struct NewRun<'a> {
    pub wallet_id: &'a str,
    pub owner: &'a WalletOwner,
    pub business_day: &'a str,
    pub file_id: &'a StatementFileId,
    pub past_grace: bool,
    pub started_by: &'a str,
    pub now: UnixMs,
}

/// What a run ends with, once every outcome has been written.
pub struct RunEnd<'a> {
    /// JSON of [`crate::domain::reconciliation::Summary`].
    pub summary_json: &'a str,
    /// Fees withheld on the day's matched lines, booked once per day.
    pub withheld_fee_fen: i64,
    /// The audit record when a person started the run (the run's id is filled in here).
    pub audit: Option<AuditEntry<'a>>,
}

/// A discrepancy as a run raises it; one already open for the same item and category
/// stays as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaisedDiscrepancy {
    pub category: Category,
    pub identity: String,
    pub out_no: String,
    pub fields: Fields,
    pub amount_fen: i64,
}

impl RaisedDiscrepancy {
    pub fn of(sides: RunSides<'_>, outcome: &Outcome) -> Self {
        RaisedDiscrepancy {
            category: outcome.category,
            identity: identity_of(sides, outcome),
            out_no: out_no_of(sides, outcome),
            fields: outcome.fields,
            amount_fen: amount_of(sides, outcome),
        }
    }
}

/// A fee or adjustment the operator made itself, booked to its own account once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorBooking {
    kind: &'static str,
    counter: Account<'static>,
    /// Into the wallet when positive.
    signed_fen: i64,
    operator_ref: String,
    memo: String,
}

impl OperatorBooking {
    /// The booking of an operator entry's line; `None` for a line that books nothing.
    pub fn of(sides: RunSides<'_>, outcome: &Outcome) -> Option<Self> {
        let item = outcome.line.map(|line| sides.statement.item(line))?;
        if outcome.category != Category::OperatorEntry || item.status != EntryStatus::Success {
            return None;
        }
        let (kind, counter, signed_fen) = match item.kind {
            EntryKind::Fee => ("operator_fee", Account::OperatorFees, -item.amount_fen),
            _ => ("operator_adjustment", Account::OperatorAdjustments, item.amount_fen),
        };
        Some(OperatorBooking {
            kind,
            counter,
            signed_fen,
            operator_ref: item.operator_ref.to_owned(),
            memo: item.memo.to_owned(),
        })
    }
}

/// A record of another day that this statement lists (wrong day, by the cut-off): that
/// day's "expected"/"missing" discrepancy settles as timing, and the record's own day is told
/// for its later runs (`reconciliation_timing`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimingResolution {
    business_day: String,
    out_no: String,
}

impl TimingResolution {
    pub fn of(sides: RunSides<'_>, outcome: &Outcome) -> Option<Self> {
        let (Some(_), Some(entry)) = (outcome.line, outcome.entry.map(|entry| sides.carepay.item(entry))) else {
            return None;
        };
        // Only a pair on different days has this field.
        outcome
            .fields
            .contains(Fields::BUSINESS_DAY)
            .then(|| TimingResolution { business_day: entry.business_day(), out_no: entry.out_no.to_owned() })
    }
}

/// A record of this day that a neighbouring day's statement lists: reported once on this day,
/// as a discrepancy already resolved as timing, unless the day already has one for it (an
/// "expected" the other day's run resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimingReport {
    identity: String,
    out_no: String,
    amount_fen: i64,
}

impl TimingReport {
    pub fn of(sides: RunSides<'_>, outcome: &Outcome) -> Option<Self> {
        (outcome.is_timing() && outcome.line.is_none() && outcome.entry.is_some()).then(|| TimingReport {
            identity: identity_of(sides, outcome),
            out_no: out_no_of(sides, outcome),
            amount_fen: amount_of(sides, outcome),
        })
    }
}

/// One piece of a run's result, written while the rest is still being matched.
pub enum RunPiece {
    /// Consecutive chunks of the line-level result.
    Chunks(Vec<EncodedChunk>),
    Discrepancies(Vec<RaisedDiscrepancy>),
    OperatorEntry(OperatorBooking),
    Timing(TimingResolution),
    TimingReport(TimingReport),
}

/// A run begun: either the run this file already has, or the open transaction to write it.
pub enum RunStart<'a> {
    Existing(RunRow),
    New(RunWriter<'a>),
}

/// A run being written, in one transaction: dropped without [`RunWriter::finish`], nothing of
/// it remains.
pub struct RunWriter<'a> {
    tx: super::WriteTx,
    backend: super::Backend,
    run: &'a NewRun<'a>,
    id: RunId,
    new_discrepancies: u64,
    /// This day's records that a neighbouring day's statement lists, with that day.
    listed_elsewhere: std::collections::HashMap<String, String>,
}

/// What a run found, for the callbacks the use case publishes.
pub struct RunWritten {
    pub run: RunRow,
    pub new_discrepancies: u64,
    /// Whether this call wrote the run (false: an identical run existed).
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunStoreError {
    #[error("the day is closed")]
    DayClosed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RunStoreError {
    fn from(error: sqlx::Error) -> Self {
        RunStoreError::Store(error.into())
    }
}

fn file_from_row(row: &AnyRow) -> Result<StoredFile, sqlx::Error> {
    Ok(StoredFile {
        id: StatementFileId::from_trusted(row.try_get("id")?),
        wallet_id: row.try_get("wallet_id")?,
        business_day: row.try_get("business_day")?,
        version: row.try_get("version")?,
        sha256: row.try_get("sha256")?,
        source: row.try_get("source")?,
        byte_count: row.try_get("byte_count")?,
        totals: StatementTotals {
            line_count: u64::try_from(row.try_get::<i64, _>("line_count")?).unwrap_or(0),
            credit_fen: row.try_get("credit_total_fen")?,
            debit_fen: row.try_get("debit_total_fen")?,
            fee_fen: row.try_get("fee_total_fen")?,
        },
        imported_by: row.try_get("imported_by")?,
        imported_at: UnixMs(row.try_get("imported_at_ms")?),
    })
}

const FILE_COLUMNS: &str = "id, wallet_id, business_day, version, sha256, source, byte_count, line_count, \
     credit_total_fen, debit_total_fen, fee_total_fen, imported_by, imported_at_ms";

fn run_from_row(row: &AnyRow) -> Result<RunRow, sqlx::Error> {
    Ok(RunRow {
        id: RunId::from_trusted(row.try_get("id")?),
        wallet_id: row.try_get("wallet_id")?,
        owner: match (
            row.try_get::<Option<String>, _>("facility_id")?,
            row.try_get::<Option<String>, _>("programme_id")?,
        ) {
            (Some(facility), None) => WalletOwner::Facility(FacilityId::from_trusted(facility)),
            (None, Some(programme)) => WalletOwner::Programme(ProgrammeId::from_trusted(programme)),
            _ => return Err(corrupt("reconciliation_runs.facility_id", "not exactly one owner")),
        },
        business_day: row.try_get("business_day")?,
        file_id: StatementFileId::from_trusted(row.try_get("file_id")?),
        past_grace: row.try_get::<i64, _>("past_grace")? == 1,
        summary: row.try_get("summary")?,
        started_by: row.try_get("started_by")?,
        created_at: UnixMs(row.try_get("created_at_ms")?),
    })
}

const RUN_COLUMNS: &str =
    "id, wallet_id, facility_id, programme_id, business_day, file_id, past_grace, summary, started_by, created_at_ms";

fn split_fields(raw: &str) -> Vec<String> {
    raw.split(',').filter(|field| !field.is_empty()).map(str::to_owned).collect()
}

fn line_from_row(row: &AnyRow) -> Result<ResultLine, sqlx::Error> {
    Ok(ResultLine {
        seq: row.try_get("seq")?,
        category: row.try_get("category")?,
        fields: split_fields(&row.try_get::<String, _>("fields")?),
        line_no: row.try_get("line_no")?,
        out_no: row.try_get("out_no")?,
        operator_ref: row.try_get("operator_ref")?,
        statement_kind: row.try_get("statement_kind")?,
        statement_status: row.try_get("statement_status")?,
        statement_amount_fen: row.try_get("statement_amount_fen")?,
        statement_fee_fen: row.try_get("statement_fee_fen")?,
        settled_at: row.try_get("settled_at")?,
        carepay_kind: row.try_get("carepay_kind")?,
        carepay_status: row.try_get("carepay_status")?,
        carepay_amount_fen: row.try_get("carepay_amount_fen")?,
        carepay_fee_fen: row.try_get("carepay_fee_fen")?,
        carepay_business_day: row.try_get("carepay_business_day")?,
    })
}

fn discrepancy_from_row(row: &AnyRow) -> Result<Discrepancy, sqlx::Error> {
    let category: String = row.try_get("category")?;
    Ok(Discrepancy {
        id: DiscrepancyId::from_trusted(row.try_get("id")?),
        wallet_id: row.try_get("wallet_id")?,
        business_day: row.try_get("business_day")?,
        run_id: RunId::from_trusted(row.try_get("run_id")?),
        category: Category::parse(&category).ok_or_else(|| corrupt("discrepancies.category", &category))?,
        identity: row.try_get("identity")?,
        out_no: row.try_get("out_no")?,
        fields: split_fields(&row.try_get::<String, _>("fields")?),
        amount_fen: row.try_get("amount_fen")?,
        open: row.try_get::<String, _>("status")? == "open",
        resolution: row.try_get("resolution")?,
        note: row.try_get("note")?,
        adjustment_fen: row.try_get("adjustment_fen")?,
        resolved_by: row.try_get("resolved_by")?,
        resolved_at: row.try_get::<Option<i64>, _>("resolved_at_ms")?.map(UnixMs),
        version: row.try_get("version")?,
        created_at: UnixMs(row.try_get("created_at_ms")?),
    })
}

const DISCREPANCY_COLUMNS: &str = "id, wallet_id, business_day, run_id, category, identity, out_no, fields, \
     amount_fen, status, resolution, note, adjustment_fen, resolved_by, resolved_at_ms, version, created_at_ms";

/// The two sides a run's outcomes point into.
#[derive(Clone, Copy)]
pub struct RunSides<'a> {
    pub statement: &'a StatementSide,
    pub carepay: &'a CarepaySide,
}

/// How a discrepancy is named across runs of the same day.
pub fn identity_of(sides: RunSides<'_>, outcome: &Outcome) -> String {
    let line = outcome.line.map(|line| sides.statement.item(line));
    let entry = outcome.entry.map(|entry| sides.carepay.item(entry));
    match (line, entry) {
        // A duplicate line shares its reference with the original; its line number tells them apart.
        (Some(item), _) if outcome.category == Category::Duplicate => {
            format!("line:{}:{}", item.operator_ref, item.line_no)
        }
        (Some(item), _) => format!("ref:{}", item.operator_ref),
        (None, Some(entry)) if outcome.category == Category::Duplicate => {
            format!("carepay:{}:{}", entry.out_no, entry.operator_ref.unwrap_or(""))
        }
        (None, Some(entry)) => format!("carepay:{}", entry.out_no),
        (None, None) => String::from("none"),
    }
}

fn out_no_of(sides: RunSides<'_>, outcome: &Outcome) -> String {
    outcome
        .entry
        .map(|entry| sides.carepay.item(entry).out_no)
        .or_else(|| outcome.line.map(|line| sides.statement.item(line).out_no))
        .unwrap_or_default()
        .to_owned()
}

fn amount_of(sides: RunSides<'_>, outcome: &Outcome) -> i64 {
    outcome
        .line
        .map(|line| sides.statement.item(line).amount_fen)
        .or_else(|| outcome.entry.map(|entry| sides.carepay.item(entry).amount_fen))
        .unwrap_or(0)
}

/// A balanced entry on the operator's side of a wallet, with the accounts it needs open.
struct OperatorSideEntry {
    entry: JournalEntry,
    accounts: [(AccountCode, OverdraftPolicy); 2],
}

/// Books `entry` unless an entry with the same kind and reference exists: re-runs and new
/// file versions never book the same operator entry twice.
async fn book_once(
    conn: &mut AnyConnection,
    what: EntryRef<'_>,
    entry: &OperatorSideEntry,
    now: UnixMs,
) -> Result<bool, StoreError> {
    let exists = sqlx::query("SELECT 1 FROM journal_entries WHERE kind = $1 AND reference = $2")
        .bind(what.kind)
        .bind(what.reference)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if exists {
        return Ok(false);
    }
    super::ledger::open_accounts_in(conn, &entry.accounts, now).await?;
    // No shared cache here: the accounts were just opened in this transaction, so their
    // policies are read from the table.
    post_in(conn, what, &entry.entry, now, &KnownAccounts::default()).await?;
    Ok(true)
}

/// The ledger entry for money the operator moved into (`signed_fen > 0`) or out of the
/// wallet against `counter`, or `None` for zero. It books to the wallet's operator side,
/// which never refuses it (see [`Account`]).
fn wallet_entry(
    wallet_id: &str,
    counter: Account<'static>,
    signed_fen: i64,
) -> Result<Option<OperatorSideEntry>, StoreError> {
    if signed_fen == 0 {
        return Ok(None);
    }
    let amount = crate::domain::money::Amount::from_fen(i64::try_from(signed_fen.unsigned_abs()).unwrap_or(i64::MAX))
        .map_err(|_| StoreError::Ledger(LedgerError::Overflow))?;
    let wallet = WalletId::parse(wallet_id).map_err(|_| StoreError::Ledger(LedgerError::InvalidAccountCode))?;
    let side = Account::WalletOperatorSide(&wallet);
    let entry = if signed_fen > 0 {
        JournalEntry::transfer(counter.code(), side.code(), amount)
    } else {
        JournalEntry::transfer(side.code(), counter.code(), amount)
    };
    let entry = entry.map_err(StoreError::Ledger)?;
    Ok(Some(OperatorSideEntry { entry, accounts: [side.opening(), counter.opening()] }))
}

#[expect(clippy::too_many_arguments, reason = "one argument per column of the audit row")]
async fn record_action(
    conn: &mut AnyConnection,
    wallet_id: &str,
    business_day: &str,
    action: &str,
    object_id: &str,
    actor: &str,
    detail: &str,
    now: UnixMs,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO reconciliation_actions (id, wallet_id, business_day, action, object_id, actor, detail, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(ReconciliationActionId::generate().as_str())
    .bind(wallet_id)
    .bind(business_day)
    .bind(action)
    .bind(object_id)
    .bind(actor)
    .bind(detail)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes the wallet's `reconciliation_wallets` row until the transaction ends (an upsert: a
/// second transaction doing the same waits for the first), so runs, imports and closings of a
/// wallet's days follow one another.
async fn lock_wallet(conn: &mut AnyConnection, wallet_id: &str, now: UnixMs) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO reconciliation_wallets (wallet_id, touched_at_ms) VALUES ($1, $2) \
         ON CONFLICT (wallet_id) DO UPDATE SET touched_at_ms = excluded.touched_at_ms",
    )
    .bind(wallet_id)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Opens and row-locks the accounts every wallet's run may book against (the operator's fees
/// and adjustments), in code order, at the start of a run. A run books many entries in one
/// transaction, so without this two runs of different wallets could take these shared rows in
/// opposite orders (one books a fee first, the other an adjustment) and deadlock.
async fn lock_shared_operator_accounts(conn: &mut AnyConnection, now: UnixMs) -> Result<(), StoreError> {
    let mut shared = [Account::OperatorFees.opening(), Account::OperatorAdjustments.opening()];
    shared.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    for (code, policy) in shared {
        // The no-op update takes the row lock on both backends whether the row is new or not.
        sqlx::query(
            "INSERT INTO ledger_accounts (code, overdraft, debits_fen, credits_fen, created_at_ms) \
             VALUES ($1, $2, 0, 0, $3) ON CONFLICT (code) DO UPDATE SET debits_fen = ledger_accounts.debits_fen",
        )
        .bind(code.as_str())
        .bind(super::ledger::overdraft_text(policy))
        .bind(now.0)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn day_is_closed(conn: &mut AnyConnection, wallet_id: &str, business_day: &str) -> Result<bool, StoreError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM reconciliation_days WHERE wallet_id = $1 AND business_day = $2")
            .bind(wallet_id)
            .bind(business_day)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(status.as_deref() == Some("closed"))
}

impl Store {
    /// Keeps a statement file: the same bytes again return the stored row (`false`), other
    /// bytes for the same wallet and day become the next version (`true`). `read_through`
    /// resolves once the caller has read the whole file: its trailer keeps it, `None` (a
    /// corrupt file) leaves nothing. On PostgreSQL the bytes travel and are stored while
    /// the file is still being read, in a transaction that commits only after it; SQLite
    /// waits for the trailer first, as its writer lock is the whole database's.
    /// A closed day keeps its statement: other bytes for it are refused (`DayClosed`) and
    /// nothing is stored.
    pub async fn keep_statement_file(
        &self,
        file: &NewFile<'_>,
        read_through: impl Future<Output = Option<StatementTotals>>,
    ) -> Result<Option<(StoredFile, bool)>, RunStoreError> {
        let mut read_through = std::pin::pin!(read_through);
        let mut totals = None;
        if self.backend() == super::Backend::Sqlite {
            let Some(read) = read_through.as_mut().await else { return Ok(None) };
            totals = Some(read);
        }
        let mut tx = self.begin_write().await?;
        lock_wallet(&mut tx, file.wallet_id, file.now).await?;
        let select = format!(
            "SELECT {FILE_COLUMNS} FROM statement_files WHERE wallet_id = $1 AND business_day = $2 AND sha256 = $3"
        );
        let existing = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
            .bind(file.wallet_id)
            .bind(file.business_day)
            .bind(file.sha256)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            let stored = file_from_row(&row)?;
            drop(tx);
            if totals.is_none() && read_through.as_mut().await.is_none() {
                return Ok(None);
            }
            return Ok(Some((stored, false)));
        }
        if day_is_closed(&mut tx, file.wallet_id, file.business_day).await? {
            return Err(RunStoreError::DayClosed);
        }
        let version: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(version), 0) + 1 AS BIGINT) FROM statement_files WHERE wallet_id = $1 AND business_day = $2",
        )
        .bind(file.wallet_id)
        .bind(file.business_day)
        .fetch_one(&mut *tx)
        .await?;
        let id = StatementFileId::generate();
        // Until the trailer is read the totals are zero; they are set below, in this
        // transaction, before anything is visible. The bytes go into parts; `content` stays
        // empty (it holds the bytes of files kept before migration 0009).
        let known = totals.unwrap_or_default();
        sqlx::query(
            "INSERT INTO statement_files (id, wallet_id, business_day, version, sha256, source, content, byte_count, \
             line_count, credit_total_fen, debit_total_fen, fee_total_fen, imported_by, imported_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(id.as_str())
        .bind(file.wallet_id)
        .bind(file.business_day)
        .bind(version)
        .bind(file.sha256)
        .bind(file.source)
        .bind(&[][..])
        .bind(i64::try_from(file.content.len()).unwrap_or(i64::MAX))
        .bind(i64::try_from(known.line_count).unwrap_or(i64::MAX))
        .bind(known.credit_fen)
        .bind(known.debit_fen)
        .bind(known.fee_fen)
        .bind(file.imported_by)
        .bind(file.now.0)
        .execute(&mut *tx)
        .await?;
        for (part_no, part) in file.content.chunks(FILE_PART_BYTES).enumerate() {
            sqlx::query("INSERT INTO statement_file_parts (file_id, part_no, content) VALUES ($1, $2, $3)")
                .bind(id.as_str())
                .bind(i64::try_from(part_no).unwrap_or(i64::MAX))
                .bind(part)
                .execute(&mut *tx)
                .await?;
        }
        if totals.is_none() {
            let Some(read) = read_through.as_mut().await else { return Ok(None) };
            sqlx::query(
                "UPDATE statement_files SET line_count = $1, credit_total_fen = $2, debit_total_fen = $3, \
                 fee_total_fen = $4 WHERE id = $5",
            )
            .bind(i64::try_from(read.line_count).unwrap_or(i64::MAX))
            .bind(read.credit_fen)
            .bind(read.debit_fen)
            .bind(read.fee_fen)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let detail = format!("version {version}, sha256 {}, source {}", file.sha256, file.source);
        record_action(
            &mut tx,
            file.wallet_id,
            file.business_day,
            "import",
            id.as_str(),
            file.imported_by,
            &detail,
            file.now,
        )
        .await?;
        append_about_in(&mut tx, file.audit.as_ref(), id.as_str(), serde_json::json!({"version": version}), file.now)
            .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {FILE_COLUMNS} FROM statement_files WHERE id = $1")))
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let stored = file_from_row(&row)?;
        tx.commit().await?;
        Ok(Some((stored, true)))
    }

    pub async fn statement_files(&self, wallet_id: &str, business_day: &str) -> Result<Vec<StoredFile>, StoreError> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM statement_files WHERE wallet_id = $1 AND business_day = $2 ORDER BY version"
        );
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(wallet_id).bind(business_day).fetch_all(self.pool()).await?;
        Ok(rows.iter().map(file_from_row).collect::<Result<_, _>>()?)
    }

    /// A kept file's bytes: its parts in order, or (kept before migration 0009) its
    /// `content`.
    pub async fn statement_content(&self, id: &StatementFileId) -> Result<Option<Vec<u8>>, StoreError> {
        use futures_util::TryStreamExt as _;

        let mut parts = sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT content FROM statement_file_parts WHERE file_id = $1 ORDER BY part_no",
        )
        .bind(id.as_str())
        .fetch(self.pool());
        let mut content: Option<Vec<u8>> = None;
        while let Some(part) = parts.try_next().await? {
            match &mut content {
                Some(content) => content.extend_from_slice(&part),
                None => content = Some(part),
            }
        }
        drop(parts);
        if content.is_some() {
            return Ok(content);
        }
        Ok(sqlx::query_scalar("SELECT content FROM statement_files WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?)
    }

    /// The facility whose merchant wallet this is, with its region path (for scope).
    pub async fn facility_by_wallet(&self, wallet_id: &str) -> Result<Option<(FacilityId, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT f.id, r.path FROM facilities f JOIN regions r ON r.id = f.region_id WHERE f.merchant_wallet_id = $1",
        )
        .bind(wallet_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row
            .map(|row| -> Result<_, sqlx::Error> { Ok((FacilityId::from_trusted(row.try_get(0)?), row.try_get(1)?)) })
            .transpose()?)
    }

    /// Whose wallet this is for reconciliation, with the owner's region: the facility whose
    /// merchant wallet it is, else the first programme funded from it.
    pub async fn wallet_owner(&self, wallet_id: &str) -> Result<Option<OwnedWallet>, StoreError> {
        let facility = sqlx::query(
            "SELECT f.id, r.id AS region_id, r.path FROM facilities f JOIN regions r ON r.id = f.region_id \
             WHERE f.merchant_wallet_id = $1",
        )
        .bind(wallet_id)
        .fetch_optional(self.pool())
        .await?;
        if let Some(row) = facility {
            return Ok(Some(OwnedWallet {
                owner: WalletOwner::Facility(FacilityId::from_trusted(row.try_get("id")?)),
                region_id: RegionId::from_trusted(row.try_get("region_id")?),
                region_path: RegionPath::from_trusted(row.try_get("path")?),
            }));
        }
        let programme = sqlx::query(
            "SELECT p.id, r.id AS region_id, r.path FROM subsidy_programmes p JOIN regions r ON r.id = p.region_id \
             WHERE p.funding_wallet_id = $1 ORDER BY p.created_at_ms, p.id LIMIT 1",
        )
        .bind(wallet_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(programme
            .map(|row| -> Result<_, sqlx::Error> {
                Ok(OwnedWallet {
                    owner: WalletOwner::Programme(ProgrammeId::from_trusted(row.try_get("id")?)),
                    region_id: RegionId::from_trusted(row.try_get("region_id")?),
                    region_path: RegionPath::from_trusted(row.try_get("path")?),
                })
            })
            .transpose()?)
    }

    pub async fn run_for_file(
        &self,
        file_id: &StatementFileId,
        past_grace: bool,
    ) -> Result<Option<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE file_id = $1 AND past_grace = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(file_id.as_str())
            .bind(i64::from(past_grace))
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(run_from_row).transpose()?)
    }

    pub async fn latest_run(&self, wallet_id: &str, business_day: &str) -> Result<Option<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE wallet_id = $1 AND business_day = $2 \
             ORDER BY created_at_ms DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(wallet_id)
            .bind(business_day)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(run_from_row).transpose()?)
    }

    /// Begins a run: refused on a closed day; the run this file already has (same grace
    /// state) if there is one, so a re-run books nothing; otherwise the run's row in an open
    /// transaction, to which the result is written piece by piece.
    pub async fn begin_run<'a>(&self, run: &'a NewRun<'a>) -> Result<RunStart<'a>, RunStoreError> {
        let mut tx = self.begin_write().await?;
        lock_wallet(&mut tx, run.wallet_id, run.now).await?;
        if day_is_closed(&mut tx, run.wallet_id, run.business_day).await? {
            return Err(RunStoreError::DayClosed);
        }
        lock_shared_operator_accounts(&mut tx, run.now).await?;
        let select = format!("SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE file_id = $1 AND past_grace = $2");
        let existing = sqlx::query(sqlx::AssertSqlSafe(select))
            .bind(run.file_id.as_str())
            .bind(i64::from(run.past_grace))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            return Ok(RunStart::Existing(run_from_row(&row)?));
        }
        sqlx::query(
            "INSERT INTO reconciliation_days (wallet_id, business_day, status, version) VALUES ($1, $2, 'open', 1) \
             ON CONFLICT (wallet_id, business_day) DO NOTHING",
        )
        .bind(run.wallet_id)
        .bind(run.business_day)
        .execute(&mut *tx)
        .await?;
        let id = RunId::generate();
        // The summary is known once every line is matched; it is set in this transaction.
        sqlx::query(
            "INSERT INTO reconciliation_runs (id, wallet_id, facility_id, programme_id, business_day, file_id, \
             past_grace, summary, started_by, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8, $9)",
        )
        .bind(id.as_str())
        .bind(run.wallet_id)
        .bind(match run.owner {
            WalletOwner::Facility(facility) => Some(facility.as_str()),
            WalletOwner::Programme(_) => None,
        })
        .bind(match run.owner {
            WalletOwner::Programme(programme) => Some(programme.as_str()),
            WalletOwner::Facility(_) => None,
        })
        .bind(run.business_day)
        .bind(run.file_id.as_str())
        .bind(i64::from(run.past_grace))
        .bind(run.started_by)
        .bind(run.now.0)
        .execute(&mut *tx)
        .await?;
        // What this day's statement lists of other days is written again by this run.
        sqlx::query("DELETE FROM reconciliation_timing WHERE wallet_id = $1 AND statement_day = $2")
            .bind(run.wallet_id)
            .bind(run.business_day)
            .execute(&mut *tx)
            .await?;
        let listed = sqlx::query(
            "SELECT out_no, statement_day FROM reconciliation_timing WHERE wallet_id = $1 AND record_day = $2",
        )
        .bind(run.wallet_id)
        .bind(run.business_day)
        .fetch_all(&mut *tx)
        .await?;
        let listed_elsewhere = listed
            .iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(RunStart::New(RunWriter { tx, backend: self.backend(), run, id, new_discrepancies: 0, listed_elsewhere }))
    }

    /// Up to `limit` result lines of a run after `after_seq`, in order: decoded from the
    /// chunks that hold them, or (a run written before migration 0009) read from its rows.
    pub async fn run_lines(&self, run_id: &RunId, after_seq: i64, limit: u32) -> Result<Vec<ResultLine>, StoreError> {
        let last_seq = after_seq.saturating_add(i64::from(limit));
        let chunks = sqlx::query(
            "SELECT first_seq, content FROM reconciliation_result_chunks \
             WHERE run_id = $1 AND first_seq <= $2 AND first_seq + line_count > $3 ORDER BY first_seq",
        )
        .bind(run_id.as_str())
        .bind(last_seq)
        .bind(after_seq)
        .fetch_all(self.pool())
        .await?;
        if !chunks.is_empty() {
            let mut lines = Vec::new();
            for row in &chunks {
                let first_seq: i64 = row.try_get("first_seq")?;
                let content: Vec<u8> = row.try_get("content")?;
                let decoded = results::decode_chunk(first_seq, &content)
                    .map_err(|error| corrupt("reconciliation_result_chunks.content", &error.to_string()))?;
                lines.extend(decoded.into_iter().filter(|line| line.seq > after_seq && line.seq <= last_seq));
            }
            return Ok(lines);
        }
        let rows = sqlx::query(
            "SELECT seq, category, fields, line_no, out_no, operator_ref, statement_kind, statement_status, \
             statement_amount_fen, statement_fee_fen, settled_at, carepay_kind, carepay_status, carepay_amount_fen, \
             carepay_fee_fen, carepay_business_day FROM reconciliation_lines WHERE run_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(run_id.as_str())
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(line_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn discrepancies(
        &self,
        wallet_id: &str,
        business_day: &str,
        only_open: bool,
    ) -> Result<Vec<Discrepancy>, StoreError> {
        let sql = format!(
            "SELECT {DISCREPANCY_COLUMNS} FROM discrepancies WHERE wallet_id = $1 AND business_day = $2 \
             AND ($3 = 0 OR status = 'open') ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(wallet_id)
            .bind(business_day)
            .bind(i64::from(only_open))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(discrepancy_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn discrepancy(&self, id: &DiscrepancyId) -> Result<Option<Discrepancy>, StoreError> {
        let sql = format!("SELECT {DISCREPANCY_COLUMNS} FROM discrepancies WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(discrepancy_from_row).transpose()?)
    }

    /// Resolves an open discrepancy of an open day (compare-and-set on its version) and, for
    /// an adjustment, posts the balanced ledger entry in the same transaction.
    pub async fn resolve_discrepancy(
        &self,
        discrepancy: &Discrepancy,
        resolution: &Resolution<'_>,
    ) -> Result<(), RunStoreError> {
        let mut tx = self.begin_write().await?;
        if day_is_closed(&mut tx, &discrepancy.wallet_id, &discrepancy.business_day).await? {
            return Err(RunStoreError::DayClosed);
        }
        let updated = sqlx::query(
            "UPDATE discrepancies SET status = 'resolved', resolution = $1, note = $2, adjustment_fen = $3, \
             resolved_by = $4, resolved_at_ms = $5, version = version + 1 \
             WHERE id = $6 AND version = $7 AND status = 'open'",
        )
        .bind(resolution.resolution)
        .bind(resolution.note)
        .bind(resolution.adjustment_fen)
        .bind(resolution.actor)
        .bind(resolution.now.0)
        .bind(discrepancy.id.as_str())
        .bind(discrepancy.version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(RunStoreError::Store(StoreError::GuardFailed));
        }
        if let Some(adjustment_fen) = resolution.adjustment_fen
            && let Some(entry) =
                wallet_entry(&discrepancy.wallet_id, Account::ReconciliationAdjustments, adjustment_fen)?
        {
            let what = EntryRef {
                kind: "reconciliation_adjustment",
                reference: discrepancy.id.as_str(),
                memo: resolution.note,
            };
            book_once(&mut tx, what, &entry, resolution.now).await?;
        }
        let detail = format!("{}: {}", resolution.resolution, resolution.note);
        record_action(
            &mut tx,
            &discrepancy.wallet_id,
            &discrepancy.business_day,
            "resolve",
            discrepancy.id.as_str(),
            resolution.actor,
            &detail,
            resolution.now,
        )
        .await?;
        let id = discrepancy.id.as_str();
        append_about_in(&mut tx, resolution.audit.as_ref(), id, serde_json::json!({}), resolution.now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `Some(status)` of a day that has been run, with who closed it and when.
    pub async fn day_status(
        &self,
        wallet_id: &str,
        business_day: &str,
    ) -> Result<Option<(String, Option<String>, Option<UnixMs>)>, StoreError> {
        let row = sqlx::query(
            "SELECT status, closed_by, closed_at_ms FROM reconciliation_days WHERE wallet_id = $1 AND business_day = $2",
        )
        .bind(wallet_id)
        .bind(business_day)
        .fetch_optional(self.pool())
        .await?;
        Ok(row
            .map(|row| -> Result<_, sqlx::Error> {
                Ok((row.try_get(0)?, row.try_get(1)?, row.try_get::<Option<i64>, _>(2)?.map(UnixMs)))
            })
            .transpose()?)
    }

    /// Closes a day that has been run and has nothing open. `GuardFailed` otherwise.
    pub async fn close_day(
        &self,
        wallet_id: &str,
        business_day: &str,
        actor: &str,
        now: UnixMs,
        audit: Option<&AuditEntry<'_>>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        lock_wallet(&mut tx, wallet_id, now).await?;
        let updated = sqlx::query(
            "UPDATE reconciliation_days SET status = 'closed', closed_by = $1, closed_at_ms = $2, version = version + 1 \
             WHERE wallet_id = $3 AND business_day = $4 AND status = 'open' AND NOT EXISTS \
             (SELECT 1 FROM discrepancies d WHERE d.wallet_id = $3 AND d.business_day = $4 AND d.status = 'open')",
        )
        .bind(actor)
        .bind(now.0)
        .bind(wallet_id)
        .bind(business_day)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        record_action(&mut tx, wallet_id, business_day, "close", business_day, actor, "day closed", now).await?;
        append_about_in(&mut tx, audit, &format!("{wallet_id}/{business_day}"), serde_json::json!({}), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every action on a wallet's day, oldest first: (action, object, actor, detail, at).
    pub async fn reconciliation_actions(
        &self,
        wallet_id: &str,
        business_day: &str,
    ) -> Result<Vec<(String, String, String, String, UnixMs)>, StoreError> {
        let rows = sqlx::query(
            "SELECT action, object_id, actor, detail, at_ms FROM reconciliation_actions \
             WHERE wallet_id = $1 AND business_day = $2 ORDER BY at_ms, id",
        )
        .bind(wallet_id)
        .bind(business_day)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, UnixMs(row.try_get(4)?)))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

impl RunWriter<'_> {
    pub async fn write(&mut self, piece: RunPiece) -> Result<(), StoreError> {
        match piece {
            RunPiece::Chunks(chunks) => {
                for group in chunks.chunks(CHUNKS_PER_INSERT) {
                    let rows: Vec<String> = (0..group.len())
                        .map(|i| format!("($1, ${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
                        .collect();
                    let sql = format!(
                        "INSERT INTO reconciliation_result_chunks (run_id, first_seq, line_count, content) VALUES {}",
                        rows.join(", ")
                    );
                    let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.id.as_str());
                    for chunk in group {
                        insert = insert.bind(chunk.first_seq).bind(chunk.line_count).bind(chunk.content.as_slice());
                    }
                    insert.execute(&mut *self.tx).await?;
                }
            }
            RunPiece::Discrepancies(raised) => {
                for batch in raised.chunks(DISCREPANCY_BATCH) {
                    self.new_discrepancies += insert_discrepancies(&mut self.tx, self.run, &self.id, batch).await?;
                }
            }
            RunPiece::OperatorEntry(booking) => book_operator_entry(&mut self.tx, self.run, &booking).await?,
            RunPiece::Timing(timing) => resolve_timing(&mut self.tx, self.run, &self.id, &timing).await?,
            RunPiece::TimingReport(report) => {
                let statement_day = self.listed_elsewhere.get(&report.out_no).map_or("", String::as_str);
                report_timing(&mut self.tx, self.run, &self.id, &report, statement_day).await?;
            }
        }
        Ok(())
    }

    /// A funding wallet's day: moves the paid lines its statement says came back to
    /// `returned`, in the run's transaction (see [`super::disbursement::return_lines_in`]).
    pub async fn apply_returns(
        &mut self,
        returns: &[super::disbursement::SeenReturn],
    ) -> Result<Vec<super::disbursement::ReturnedLine>, StoreError> {
        if returns.is_empty() || !matches!(self.run.owner, WalletOwner::Programme(_)) {
            return Ok(Vec::new());
        }
        super::disbursement::return_lines_in(&mut self.tx, self.backend, self.run.wallet_id, returns, self.run.now)
            .await
    }

    /// Merchant numbers of this day's records that a neighbouring day's statement lists.
    pub fn listed_elsewhere(&self) -> std::collections::HashSet<String> {
        self.listed_elsewhere.keys().cloned().collect()
    }

    /// Completes the run: its summary, the grace period's consequences, the day's withheld
    /// fees, the callbacks, the record of who ran it; then commits all of it at once.
    pub async fn finish(
        mut self,
        end: &RunEnd<'_>,
        events: impl Fn(&RunRow, u64) -> Vec<NewEvent>,
    ) -> Result<RunWritten, RunStoreError> {
        let (run, id, new_discrepancies) = (self.run, self.id.clone(), self.new_discrepancies);
        let tx = &mut self.tx;
        sqlx::query("UPDATE reconciliation_runs SET summary = $1 WHERE id = $2")
            .bind(end.summary_json)
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?;
        if run.past_grace {
            // Past the grace period an "expected" record is re-raised as missing from the
            // statement; the expectation itself is settled so nothing is open twice.
            sqlx::query(
                "UPDATE discrepancies SET status = 'resolved', resolution = 'other', \
                 note = 'grace period over: raised as missing_in_statement', resolved_by = 'system', \
                 resolved_at_ms = $1, version = version + 1 \
                 WHERE wallet_id = $2 AND business_day = $3 AND category = 'expected' AND status = 'open'",
            )
            .bind(run.now.0)
            .bind(run.wallet_id)
            .bind(run.business_day)
            .execute(&mut **tx)
            .await?;
        }
        if let Some(entry) = wallet_entry(run.wallet_id, Account::OperatorFees, -end.withheld_fee_fen)? {
            let reference = format!("{}:{}", run.wallet_id, run.business_day);
            let what = EntryRef {
                kind: "operator_withheld_fees",
                reference: &reference,
                memo: "fees withheld on the statement",
            };
            book_once(tx, what, &entry, run.now).await?;
        }

        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE id = $1")))
                .bind(id.as_str())
                .fetch_one(&mut **tx)
                .await?;
        let stored = run_from_row(&row)?;
        for event in events(&stored, new_discrepancies) {
            enqueue_in(tx, &event, run.now).await?;
        }
        let detail = format!("file {}, {new_discrepancies} new discrepancies", run.file_id);
        record_action(tx, run.wallet_id, run.business_day, "run", id.as_str(), run.started_by, &detail, run.now)
            .await?;
        let counts = serde_json::json!({"new_discrepancies": new_discrepancies});
        append_about_in(tx, end.audit.as_ref(), id.as_str(), counts, run.now).await?;
        self.tx.commit().await?;
        Ok(RunWritten { run: stored, new_discrepancies, created: true })
    }
}

/// Raises a batch of discrepancies with one statement; one already open for the same item
/// and category stays as it is. Returns how many are new. The rows travel as a few
/// parameters however many they are: on PostgreSQL one array per column, unnested together
/// (it parses arrays several times faster than JSON), on SQLite one JSON array.
async fn insert_discrepancies(
    conn: &mut AnyConnection,
    run: &NewRun<'_>,
    run_id: &RunId,
    batch: &[RaisedDiscrepancy],
) -> Result<u64, StoreError> {
    let ids: Vec<DiscrepancyId> = batch.iter().map(|_| DiscrepancyId::generate()).collect();
    const COLUMNS: &str = "INSERT INTO discrepancies (id, wallet_id, business_day, run_id, category, identity, \
         out_no, fields, amount_fen, status, version, created_at_ms)";
    const ON_CONFLICT: &str = "ON CONFLICT (wallet_id, business_day, category, identity) DO NOTHING";
    let inserted = if super::Backend::of(conn) == super::Backend::Postgres {
        let sql = format!(
            "{COLUMNS} SELECT r.id, $1, $2, $3, r.category, r.identity, r.out_no, r.fields, r.amount_fen, 'open', 1, $4 \
             FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[]) \
             AS r(id, category, identity, out_no, fields, amount_fen) {ON_CONFLICT}"
        );
        let amounts: Vec<String> = batch.iter().map(|raised| raised.amount_fen.to_string()).collect();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run.wallet_id)
            .bind(run.business_day)
            .bind(run_id.as_str())
            .bind(run.now.0)
            .bind(postgres_array(ids.iter().map(DiscrepancyId::as_str)))
            .bind(postgres_array(batch.iter().map(|raised| raised.category.as_str())))
            .bind(postgres_array(batch.iter().map(|raised| raised.identity.as_str())))
            .bind(postgres_array(batch.iter().map(|raised| raised.out_no.as_str())))
            .bind(postgres_array(batch.iter().map(|raised| raised.fields.joined())))
            .bind(format!("{{{}}}", amounts.join(",")))
            .execute(&mut *conn)
            .await?
    } else {
        let rows: Vec<serde_json::Value> = batch
            .iter()
            .zip(&ids)
            .map(|(raised, id)| {
                serde_json::json!({
                    "id": id.as_str(),
                    "category": raised.category.as_str(),
                    "identity": raised.identity,
                    "out_no": raised.out_no,
                    "fields": raised.fields.joined(),
                    "amount_fen": raised.amount_fen,
                })
            })
            .collect();
        // `WHERE true` lets SQLite tell the upsert's ON CONFLICT from a join's ON.
        let sql = format!(
            "{COLUMNS} SELECT value ->> 'id', $1, $2, $3, value ->> 'category', value ->> 'identity', \
             value ->> 'out_no', value ->> 'fields', value ->> 'amount_fen', 'open', 1, $4 \
             FROM json_each($5) WHERE true {ON_CONFLICT}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run.wallet_id)
            .bind(run.business_day)
            .bind(run_id.as_str())
            .bind(run.now.0)
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut *conn)
            .await?
    };
    Ok(inserted.rows_affected())
}

/// A PostgreSQL array literal of texts (`{"a","b \"c\""}`), for a `$n::text[]` parameter:
/// every element quoted, with its quotes and backslashes escaped, so any text survives.
fn postgres_array(values: impl Iterator<Item = impl AsRef<str>>) -> String {
    let mut out = String::from("{");
    for (index, value) in values.enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push('"');
        for ch in value.as_ref().chars() {
            if matches!(ch, '"' | '\\') {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// Fees and adjustments the operator made itself go to their own accounts, once each.
async fn book_operator_entry(
    conn: &mut AnyConnection,
    run: &NewRun<'_>,
    booking: &OperatorBooking,
) -> Result<(), StoreError> {
    if let Some(entry) = wallet_entry(run.wallet_id, booking.counter, booking.signed_fen)? {
        let reference = format!("{}:{}", run.wallet_id, booking.operator_ref);
        let what = EntryRef { kind: booking.kind, reference: &reference, memo: &booking.memo };
        book_once(conn, what, &entry, run.now).await?;
    }
    Ok(())
}

/// Settles the other day's "expected"/"missing" discrepancy of a record this statement
/// lists. Such a discrepancy is named `carepay:<out_no>` ([`identity_of`]), which the
/// day's unique key finds.
async fn resolve_timing(
    conn: &mut AnyConnection,
    run: &NewRun<'_>,
    run_id: &RunId,
    timing: &TimingResolution,
) -> Result<(), StoreError> {
    if timing.business_day == run.business_day {
        return Ok(());
    }
    // The first statement to list it is the one its day is told of.
    sqlx::query(
        "INSERT INTO reconciliation_timing (wallet_id, record_day, out_no, statement_day, run_id, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (wallet_id, record_day, out_no) DO NOTHING",
    )
    .bind(run.wallet_id)
    .bind(&timing.business_day)
    .bind(&timing.out_no)
    .bind(run.business_day)
    .bind(run_id.as_str())
    .bind(run.now.0)
    .execute(&mut *conn)
    .await?;
    let note = format!("appeared on the statement of {}", run.business_day);
    sqlx::query(
        "UPDATE discrepancies SET status = 'resolved', resolution = 'timing', note = $1, resolved_by = 'system', \
         resolved_at_ms = $2, version = version + 1 \
         WHERE wallet_id = $3 AND business_day = $4 AND category IN ('expected', 'missing_in_statement') \
         AND identity = $5 AND out_no = $6 AND status = 'open' \
         AND NOT EXISTS (SELECT 1 FROM reconciliation_days d WHERE d.wallet_id = $3 AND d.business_day = $4 AND d.status = 'closed')",
    )
    .bind(note)
    .bind(run.now.0)
    .bind(run.wallet_id)
    .bind(&timing.business_day)
    .bind(format!("carepay:{}", timing.out_no))
    .bind(&timing.out_no)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Reports a record of this day that a neighbouring day's statement lists as one timing
/// difference, resolved: unless the day already has a discrepancy for it, open or not (an
/// "expected" that day's run settled, which is the same report).
async fn report_timing(
    conn: &mut AnyConnection,
    run: &NewRun<'_>,
    run_id: &RunId,
    report: &TimingReport,
    statement_day: &str,
) -> Result<(), StoreError> {
    let note = format!("appeared on the statement of {statement_day}");
    sqlx::query(
        "INSERT INTO discrepancies (id, wallet_id, business_day, run_id, category, identity, out_no, fields, \
         amount_fen, status, resolution, note, resolved_by, resolved_at_ms, version, created_at_ms) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 'resolved', 'timing', $10, 'system', $11, 1, $11 \
         WHERE NOT EXISTS (SELECT 1 FROM discrepancies d WHERE d.wallet_id = $2 AND d.business_day = $3 \
         AND d.identity = $6 AND d.out_no = $7) \
         ON CONFLICT (wallet_id, business_day, category, identity) DO NOTHING",
    )
    .bind(DiscrepancyId::generate().as_str())
    .bind(run.wallet_id)
    .bind(run.business_day)
    .bind(run_id.as_str())
    .bind(Category::WrongDay.as_str())
    .bind(&report.identity)
    .bind(&report.out_no)
    .bind(Fields::BUSINESS_DAY.joined())
    .bind(report.amount_fen)
    .bind(note)
    .bind(run.now.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A claimed scheduled fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueFetch {
    pub wallet_id: String,
    pub business_day: String,
    pub attempts: i64,
}

impl Store {
    /// Plans a fetch of `business_day` for every facility's merchant wallet and every
    /// programme's funding wallet (idempotent: planned once).
    /// `WHERE true` lets SQLite tell the upsert's ON CONFLICT from a join's ON.
    pub async fn plan_statement_fetches(&self, business_day: &str, now: UnixMs) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let planned = sqlx::query(
            "INSERT INTO statement_fetches (wallet_id, business_day, status, attempts, next_attempt_ms) \
             SELECT w.wallet_id, $1, 'pending', 0, $2 FROM (SELECT merchant_wallet_id AS wallet_id FROM facilities \
             UNION SELECT funding_wallet_id FROM subsidy_programmes) AS w WHERE true \
             ON CONFLICT (wallet_id, business_day) DO NOTHING",
        )
        .bind(business_day)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(planned.rows_affected())
    }

    /// Leases up to `limit` due fetches to `owner` (compare-and-set per row, so two
    /// instances never fetch the same statement at once).
    pub async fn claim_statement_fetches(
        &self,
        owner: &str,
        now: UnixMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueFetch>, StoreError> {
        let rows = sqlx::query(
            "SELECT wallet_id, business_day, attempts FROM statement_fetches WHERE status = 'pending' \
             AND next_attempt_ms <= $1 AND (lease_until_ms IS NULL OR lease_until_ms < $1) \
             ORDER BY next_attempt_ms LIMIT $2",
        )
        .bind(now.0)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let mut claimed = Vec::new();
        for row in &rows {
            let due = DueFetch {
                wallet_id: row.try_get("wallet_id")?,
                business_day: row.try_get("business_day")?,
                attempts: row.try_get("attempts")?,
            };
            let mut tx = self.begin_write().await?;
            let taken = sqlx::query(
                "UPDATE statement_fetches SET lease_owner = $1, lease_until_ms = $2 WHERE wallet_id = $3 \
                 AND business_day = $4 AND status = 'pending' AND attempts = $5 \
                 AND (lease_until_ms IS NULL OR lease_until_ms < $6)",
            )
            .bind(owner)
            .bind(now.0 + lease_ms)
            .bind(&due.wallet_id)
            .bind(&due.business_day)
            .bind(due.attempts)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            if taken.rows_affected() == 1 {
                claimed.push(due);
            }
        }
        Ok(claimed)
    }

    /// Records a fetch's outcome: done, or tried again at `retry_at` with the error.
    pub async fn finish_statement_fetch(
        &self,
        due: &DueFetch,
        owner: &str,
        retry_at: Option<UnixMs>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE statement_fetches SET status = $1, attempts = attempts + 1, next_attempt_ms = COALESCE($2, next_attempt_ms), \
             last_error = $3, lease_owner = NULL, lease_until_ms = NULL \
             WHERE wallet_id = $4 AND business_day = $5 AND lease_owner = $6",
        )
        .bind(if retry_at.is_some() { "pending" } else { "done" })
        .bind(retry_at.map(|at| at.0))
        .bind(error)
        .bind(&due.wallet_id)
        .bind(&due.business_day)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
