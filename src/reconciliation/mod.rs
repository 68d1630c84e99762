//! Reconciliation use cases: import a statement (upload, CLI, or fetched from the operator),
//! run a wallet's day, read the result, resolve discrepancies, close the day.
//!
//! A file is kept only once it has been parsed whole, so a corrupt file leaves no trace but
//! its error (it may travel to the database while it is parsed, inside a transaction that
//! commits after); a run is one transaction, so it is all there or not at all, and the same
//! file run again returns the stored run instead of booking anything twice.
//!
//! A million-line day has to fit a second or two on two cores, so its steps run side by side:
//! carepay's records load while the file is digested, stored and parsed; the matching and
//! the encoding of the result run on a blocking thread.

pub mod bench;
pub mod fetch;

use bytes::Bytes;
use ring::digest;
use serde_json::json;

use crate::app::{App, require, within_scope};
use crate::callbacks::NewEvent;
use crate::domain::access::Principal;
use crate::domain::callbacks::{EventOwner, EventType};
use crate::domain::directory::RegionPath;
use crate::domain::ids::DiscrepancyId;
use crate::domain::reconciliation::{
    CarepaySide, Category, MatchSettings, SideError, StatementSide, Summary, SummaryBuilder, WalletOwner, day_start_ms,
    neighbourhood_ms, reconcile, settled_at_ms,
};
use crate::domain::role::Action;
use crate::domain::statement::{
    EntryKind, EntryStatus, ReadError, StatementHeader, StatementTotals, Yuan, open_statement,
};
use crate::domain::text::FreeText;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::store::StoreError;
use crate::store::audit::{Actor, AuditEntry};
use crate::store::disbursement::{ReturnedLine, SeenReturn};
use crate::store::reconciliation::{
    CHUNKS_PER_INSERT, CarepayDay, Discrepancy, NewFile, NewRun, OperatorBooking, OwnedWallet, RaisedDiscrepancy,
    Resolution, ResultEncoder, ResultLine, RunEnd, RunPiece, RunRow, RunSides, RunStart, RunStoreError, StoredFile,
    TimingReport, TimingResolution,
};

const MS_PER_DAY: i64 = 86_400_000;

/// Reconciliation rules and bounds; from config.
#[derive(Clone, Debug)]
pub struct ReconciliationSettings {
    /// The fee the operator withholds on each line, by wallet and method.
    pub tariffs: std::sync::Arc<crate::domain::fees::Tariffs>,
    /// carepay records missing from the statement are "expected" until this many days after
    /// their day ends (T+2), then discrepancies.
    pub grace_days: u32,
    /// Largest statement file accepted (upload or fetch), in bytes.
    pub max_statement_bytes: usize,
}

impl Default for ReconciliationSettings {
    fn default() -> Self {
        ReconciliationSettings { tariffs: Default::default(), grace_days: 2, max_statement_bytes: 256 * 1024 * 1024 }
    }
}

/// Who keeps a file or starts a run. What a person does (through the API or at the command
/// line) is written to the audit trail; what carepay's own scheduler does is not.
#[derive(Clone, Copy, Debug)]
pub enum Initiator<'a> {
    Person(&'a Principal),
    /// Someone with database access, named by `--actor`.
    CommandLine(&'a str),
    /// carepay itself: `operator` (a fetched file) or `scheduler` (the run after a fetch).
    Carepay(&'static str),
}

impl Initiator<'_> {
    /// The name kept with the file, run or action.
    fn name(&self) -> &str {
        match self {
            Initiator::Person(principal) => principal.token_id.as_str(),
            Initiator::CommandLine(name) | Initiator::Carepay(name) => name,
        }
    }

    fn audit_actor(&self) -> Option<Actor<'_>> {
        match self {
            Initiator::Person(principal) => Some(Actor::Token(principal)),
            Initiator::CommandLine(_) => Some(Actor::CommandLine),
            Initiator::Carepay(_) => None,
        }
    }

    /// The audit summary's `by` field: the command line's `--actor` name, which the record's
    /// actor (`command-line`) does not carry.
    fn label(&self) -> Option<&str> {
        match self {
            Initiator::CommandLine(name) => Some(name),
            _ => None,
        }
    }
}

/// Where a file came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Operator,
    Upload,
    Cli,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Operator => "operator",
            Source::Upload => "upload",
            Source::Cli => "cli",
        }
    }
}

/// A resolution an accountant may give.
pub const RESOLUTIONS: [&str; 4] = ["adjusted", "operator_error", "timing", "other"];

/// A parsed, checked statement: its lines in file order with their line numbers.
pub struct ParsedStatement {
    pub wallet_id: String,
    pub business_day: String,
    /// Hex SHA-256 of the bytes parsed.
    pub sha256: String,
    pub lines: StatementSide,
    pub totals: StatementTotals,
}

fn corrupt(error: ReadError) -> Error {
    Error::invalid("statement", "STATEMENT_CORRUPT", error)
}

/// The header of a file, read and checked without the rest (it names the wallet and day,
/// which lets the work on carepay's side start before the lines are read).
pub fn statement_header(bytes: &[u8]) -> Result<StatementHeader> {
    Ok(open_statement(bytes).map_err(corrupt)?.header().clone())
}

/// Reads a whole file into its lines, refusing it with the line and reason if anything is
/// wrong.
pub fn read_statement(bytes: &[u8]) -> Result<(StatementHeader, StatementSide, StatementTotals)> {
    /// Bytes per detail line of a typical file, to size the side once instead of growing it.
    const TYPICAL_LINE_BYTES: usize = 128;
    let mut reader = open_statement(bytes).map_err(corrupt)?;
    let mut lines = StatementSide::with_capacity(bytes.len() / TYPICAL_LINE_BYTES);
    while let Some(line) = reader.next_line_ref().map_err(corrupt)? {
        lines.push(&line).map_err(|error| Error::invalid("statement", "STATEMENT_TOO_LARGE", error))?;
    }
    let header = reader.header().clone();
    let totals = reader.totals().ok_or_else(|| Error::invalid("statement", "STATEMENT_CORRUPT", "no trailer"))?;
    Ok((header, lines, totals))
}

/// Work begun for a run before it is asked for: the parsed file and carepay's records,
/// loading.
pub struct Prepared {
    pub parsed: ParsedStatement,
    pub carepay: CarepayLoad,
}

/// carepay's records of a day, loading on their own task.
pub struct CarepayLoad {
    task: tokio::task::JoinHandle<std::result::Result<CarepaySide, StoreError>>,
    started: std::time::Instant,
}

impl CarepayLoad {
    async fn wait(self) -> Result<CarepaySide> {
        let side = self.task.await.map_err(|error| Error::Internal(error.into()))??;
        tracing::debug!(loaded_ms = self.started.elapsed().as_millis(), "carepay's records loaded");
        Ok(side)
    }
}

fn join_error(error: tokio::task::JoinError) -> Error {
    Error::Internal(error.into())
}

/// The answer for an object that does not exist: the same a scoped caller gets for one
/// outside their scope.
fn missing(principal: &Principal, what: &'static str) -> Error {
    match within_scope(principal, Option::<RegionPath>::None, what, |path| path) {
        Ok(_) => Error::NotFound { what },
        Err(error) => error,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

fn day_closed() -> Error {
    Error::Conflict { code: "DAY_CLOSED", detail: String::from("the business day is closed; adjust on an open day") }
}

fn statement_of_closed_day() -> Error {
    Error::Conflict {
        code: "DAY_CLOSED",
        detail: String::from("the business day is closed: its statement is final and no new version of it is kept"),
    }
}

fn run_store_error(error: RunStoreError) -> Error {
    match error {
        RunStoreError::DayClosed => day_closed(),
        RunStoreError::Store(error) => error.into(),
    }
}

impl App {
    /// Whose wallet `wallet_id` is (a facility's merchant wallet or a programme's funding
    /// wallet), when the principal may see it; a wallet outside the scope answers exactly like
    /// an unknown one.
    pub(crate) async fn reconciled_wallet(&self, principal: &Principal, wallet_id: &str) -> Result<OwnedWallet> {
        let found = self.store.wallet_owner(wallet_id).await?;
        within_scope(principal, found, "wallet", |owned| &owned.region_path)
    }

    /// The region of the owner of `wallet_id`, for the audit record of a person's action.
    async fn wallet_region(&self, by: Initiator<'_>, wallet_id: &str) -> Result<Option<RegionPath>> {
        if by.audit_actor().is_none() {
            return Ok(None);
        }
        Ok(self.store.wallet_owner(wallet_id).await?.map(|owned| owned.region_path))
    }

    /// The owner of a wallet the scheduler or the command line reconciles (no scope).
    pub(crate) async fn owned_wallet(&self, wallet_id: &str) -> Result<OwnedWallet> {
        self.store.wallet_owner(wallet_id).await?.ok_or(Error::NotFound { what: "wallet" })
    }

    /// An accountant's upload (API or console): check the wallet is theirs, parse, keep.
    /// `meant_for` is the wallet the upload names, if it names one: the file must be that
    /// wallet's.
    pub async fn import_statement(
        &self,
        principal: &Principal,
        bytes: Bytes,
        source: Source,
        meant_for: Option<&str>,
    ) -> Result<StoredFile> {
        require(principal, Action::Reconcile)?;
        if let Some(wallet_id) = meant_for {
            // The wallet named: like any object a request names, missing and out of scope alike.
            self.reconciled_wallet(principal, wallet_id).await?;
        }
        if bytes.len() > self.reconciliation.max_statement_bytes {
            return Err(Error::invalid("statement", "STATEMENT_TOO_LARGE", "the file is larger than allowed"));
        }
        let header = statement_header(&bytes)?;
        match meant_for {
            // Compared as given, before anything is looked up: says nothing about the file's
            // wallet but what the caller sent.
            Some(wallet_id) if header.wallet_id != wallet_id => {
                return Err(Error::invalid(
                    "statement",
                    "STATEMENT_WRONG_WALLET",
                    format!(
                        "line 1: the header names wallet {}, and this upload is for wallet {wallet_id}",
                        header.wallet_id
                    ),
                ));
            }
            Some(_) => {}
            None => self.statement_wallet_owner(principal, &header.wallet_id).await.map(drop)?,
        }
        let (file, _, _) = self.keep_statement(bytes, &header, source, Initiator::Person(principal)).await?;
        Ok(file)
    }

    /// The owner of the wallet a statement's header names, when the principal may see it.
    /// Otherwise the refusal says it is the file's wallet, and the same whether that wallet is
    /// another region's or nobody's, so it tells a scoped caller nothing they could not see.
    async fn statement_wallet_owner(&self, principal: &Principal, wallet_id: &str) -> Result<OwnedWallet> {
        match self.reconciled_wallet(principal, wallet_id).await {
            Err(Error::OutOfScope) => Err(Error::OutOfScopeIn {
                field: String::from("statement"),
                code: "STATEMENT_WALLET_OUT_OF_SCOPE",
                detail: String::from(
                    "line 1: the header names a wallet that is not the wallet of a facility or programme you can reach; \
                     upload it with ?wallet_id= naming the wallet it is meant for to check it against that one",
                ),
            }),
            Err(Error::NotFound { .. }) => Err(Error::invalid(
                "statement",
                "STATEMENT_WALLET_UNKNOWN",
                format!(
                    "line 1: the header names wallet {wallet_id}, which is neither a facility's merchant wallet \
                     nor a programme's funding wallet"
                ),
            )),
            other => other,
        }
    }

    /// Keeps a file whose header has been read: the same bytes are the same version, others
    /// the next one. The digest comes first; then the bytes go to the database while the
    /// lines are parsed on a blocking thread, and are committed only once they all are.
    pub async fn keep_statement(
        &self,
        bytes: Bytes,
        header: &StatementHeader,
        source: Source,
        by: Initiator<'_>,
    ) -> Result<(StoredFile, bool, ParsedStatement)> {
        let started = std::time::Instant::now();
        let region = self.wallet_region(by, &header.wallet_id).await?;
        let parse = tokio::task::spawn_blocking({
            let bytes = bytes.clone();
            move || {
                let started = std::time::Instant::now();
                read_statement(&bytes).map(|read| (read, started.elapsed().as_millis()))
            }
        });
        let sha256 = tokio::task::spawn_blocking({
            let bytes = bytes.clone();
            move || sha256_hex(&bytes)
        })
        .await
        .map_err(join_error)?;
        let digest_ms = started.elapsed().as_millis();
        let file = NewFile {
            wallet_id: &header.wallet_id,
            business_day: &header.date,
            sha256: &sha256,
            source: source.as_str(),
            content: &bytes,
            imported_by: by.name(),
            now: UnixMs::now(),
            audit: by.audit_actor().map(|actor| AuditEntry {
                actor,
                action: "statement.imported",
                object_kind: "statement_file",
                object_id: "",
                region_path: region.as_ref(),
                summary: json!({
                    "wallet_id": header.wallet_id,
                    "business_day": header.date,
                    "sha256": sha256,
                    "source": source.as_str(),
                    "byte_count": bytes.len(),
                    "by": by.label(),
                }),
            }),
        };
        let mut read = None;
        let kept = self
            .store
            .keep_statement_file(&file, async {
                let result = parse.await.map_err(join_error).and_then(|result| result);
                let totals = result.as_ref().ok().map(|((_, _, totals), _)| *totals);
                read = Some(result);
                totals
            })
            .await
            .map_err(|error| match error {
                RunStoreError::DayClosed => statement_of_closed_day(),
                RunStoreError::Store(error) => error.into(),
            })?;
        let ((header, lines, totals), parsed_ms) =
            read.ok_or_else(|| Error::Internal(anyhow::anyhow!("the file was kept unread")))??;
        let (stored, created) = kept.ok_or_else(|| Error::Internal(anyhow::anyhow!("a parsed file was not kept")))?;
        tracing::info!(digest_ms, parsed_ms, kept_ms = started.elapsed().as_millis(), "statement file kept");
        let parsed = ParsedStatement { wallet_id: header.wallet_id, business_day: header.date, sha256, lines, totals };
        Ok((stored, created, parsed))
    }

    /// Starts loading carepay's records of a wallet's day (and its neighbours) on their own
    /// task: a facility's payments and refunds, or a funding wallet's transfers and returns.
    pub fn load_carepay(&self, owned: &OwnedWallet, wallet_id: &str, business_day: &str) -> Result<CarepayLoad> {
        let (from_ms, to_ms) = neighbourhood_ms(business_day)
            .ok_or_else(|| Error::invalid("date", "INVALID_DATE", "must be a date YYYY-MM-DD"))?;
        let store = self.store.clone();
        let (wallet_id, owner) = (wallet_id.to_owned(), owned.owner.clone());
        let tariff = self.reconciliation.tariffs.of(&wallet_id);
        let task = tokio::spawn(async move {
            store.carepay_side(&CarepayDay { wallet_id: &wallet_id, owner: &owner, from_ms, to_ms, tariff }).await
        });
        Ok(CarepayLoad { task, started: std::time::Instant::now() })
    }

    pub async fn run_reconciliation(
        &self,
        principal: &Principal,
        wallet_id: &str,
        business_day: &str,
    ) -> Result<RunRow> {
        require(principal, Action::Reconcile)?;
        let facility = self.reconciled_wallet(principal, wallet_id).await?;
        self.run_day(&facility, wallet_id, business_day, Initiator::Person(principal), UnixMs::now(), None).await
    }

    /// Runs a wallet's day against its newest statement version. `prepared` is that file
    /// already parsed by the caller (import, fetch) with carepay's records loading, which
    /// saves reading it back; the file is used only when its digest is the newest version's.
    pub async fn run_day(
        &self,
        owned: &OwnedWallet,
        wallet_id: &str,
        business_day: &str,
        by: Initiator<'_>,
        now: UnixMs,
        prepared: Option<Prepared>,
    ) -> Result<RunRow> {
        let (from_ms, _) = neighbourhood_ms(business_day)
            .ok_or_else(|| Error::invalid("date", "INVALID_DATE", "must be a date YYYY-MM-DD"))?;
        let files = self.store.statement_files(wallet_id, business_day).await?;
        let file = files.last().ok_or(Error::NotFound { what: "statement" })?;
        let day_end_ms = day_start_ms(business_day).unwrap_or(from_ms) + MS_PER_DAY;
        let past_grace = now.0 >= day_end_ms + i64::from(self.reconciliation.grace_days) * MS_PER_DAY;
        if let Some(run) = self.store.run_for_file(&file.id, past_grace).await? {
            return Ok(run);
        }
        let started = std::time::Instant::now();
        let (parsed, carepay) = match prepared {
            Some(Prepared { parsed, carepay }) => (Some(parsed), carepay),
            None => (None, self.load_carepay(owned, wallet_id, business_day)?),
        };
        let statement = match parsed {
            Some(parsed) if parsed.sha256 == file.sha256 => parsed.lines,
            _ => {
                let content =
                    self.store.statement_content(&file.id).await?.ok_or(Error::NotFound { what: "statement" })?;
                tokio::task::spawn_blocking(move || read_statement(&content)).await.map_err(join_error)??.1
            }
        };
        let mut carepay = carepay.wait().await?;
        let loaded_ms = started.elapsed().as_millis();

        let new_run = NewRun {
            wallet_id,
            owner: &owned.owner,
            business_day,
            file_id: &file.id,
            past_grace,
            started_by: by.name(),
            now,
        };
        let mut writer = match self.store.begin_run(&new_run).await.map_err(run_store_error)? {
            RunStart::Existing(run) => return Ok(run),
            RunStart::New(writer) => writer,
        };
        // Money that came back re-opens its lines before the match, which then finds carepay
        // knowing of each return.
        let returned = writer.apply_returns(&seen_returns(&statement)).await?;
        add_returns(&mut carepay, &returned).map_err(|error| Error::Internal(error.into()))?;
        // The matcher runs on a blocking thread and hands over the result piece by piece
        // while this task writes them: the database works while the rest is matched.
        let (pieces, mut received) = tokio::sync::mpsc::channel(PIECES_IN_FLIGHT);
        let settings =
            MatchSettings { date: business_day.to_owned(), past_grace, listed_elsewhere: writer.listed_elsewhere() };
        let matcher = tokio::task::spawn_blocking(move || match_day(&settings, &statement, &carepay, &pieces));
        while let Some(piece) = received.recv().await {
            writer.write(piece).await?;
        }
        let matched = matcher.await.map_err(join_error)?;
        let matched_ms = started.elapsed().as_millis();
        let mut summary = matched.summary;
        if file.totals.fee_fen != summary.statement_fee_fen {
            // The reader took the trailer only if it adds up one of the two ways.
            summary.warnings.push(format!(
                "the trailer's fee_total ({}) counts the fees of REVERSED lines; carepay reads the spec as leaving \
                 them out of every total ({}) and holds no REVERSED line's fee as withheld",
                Yuan(file.totals.fee_fen),
                Yuan(summary.statement_fee_fen)
            ));
            tracing::warn!(%wallet_id, %business_day, "statement fee_total counts REVERSED lines' fees");
        }
        let summary_json = serde_json::to_string(&summary).map_err(|error| Error::Internal(error.into()))?;

        let region = self.wallet_region(by, wallet_id).await?;
        let end = RunEnd {
            summary_json: &summary_json,
            withheld_fee_fen: matched.withheld_fee_fen,
            audit: by.audit_actor().map(|actor| AuditEntry {
                actor,
                action: "reconciliation.run",
                object_kind: "reconciliation_run",
                object_id: "",
                region_path: region.as_ref(),
                summary: json!({
                    "wallet_id": wallet_id,
                    "business_day": business_day,
                    "file_id": file.id.as_str(),
                    "file_version": file.version,
                    "past_grace": past_grace,
                    "categories": summary.categories.iter().map(|c| (c.category.to_string(), c.count)).collect::<std::collections::BTreeMap<_, _>>(),
                    "by": by.label(),
                }),
            }),
        };
        let events = |run: &RunRow, new_discrepancies: u64| run_events(owned, run, &summary, new_discrepancies);
        let written = writer.finish(&end, events).await.map_err(run_store_error)?;
        tracing::info!(
            %wallet_id, %business_day, lines = matched.outcomes, loaded_ms, matched_ms,
            saved_ms = started.elapsed().as_millis(), "reconciliation run written"
        );
        Ok(written.run)
    }

    /// The newest run of a day and the day's status.
    pub async fn reconciliation_day(
        &self,
        principal: &Principal,
        wallet_id: &str,
        business_day: &str,
    ) -> Result<(RunRow, String)> {
        require(principal, Action::ReadReconciliation)?;
        self.reconciled_wallet(principal, wallet_id).await?;
        let run = self.store.latest_run(wallet_id, business_day).await?.ok_or(Error::NotFound { what: "run" })?;
        let status = self.store.day_status(wallet_id, business_day).await?.map(|(status, _, _)| status);
        Ok((run, status.unwrap_or_else(|| String::from("open"))))
    }

    pub async fn reconciliation_lines(
        &self,
        principal: &Principal,
        wallet_id: &str,
        business_day: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ResultLine>> {
        let (run, _) = self.reconciliation_day(principal, wallet_id, business_day).await?;
        Ok(self.store.run_lines(&run.id, after_seq, limit).await?)
    }

    pub async fn discrepancies(
        &self,
        principal: &Principal,
        wallet_id: &str,
        business_day: &str,
        only_open: bool,
    ) -> Result<Vec<Discrepancy>> {
        require(principal, Action::ReadReconciliation)?;
        self.reconciled_wallet(principal, wallet_id).await?;
        Ok(self.store.discrepancies(wallet_id, business_day, only_open).await?)
    }

    pub async fn resolve_discrepancy(
        &self,
        principal: &Principal,
        id: &DiscrepancyId,
        resolution: &str,
        note: &FreeText,
        adjustment_fen: Option<i64>,
    ) -> Result<Discrepancy> {
        require(principal, Action::Reconcile)?;
        if !RESOLUTIONS.contains(&resolution) {
            return Err(Error::invalid("resolution", "INVALID_RESOLUTION", RESOLUTIONS.join(", ")));
        }
        let beyond_any_amount =
            adjustment_fen.is_some_and(|fen| fen.unsigned_abs() > crate::domain::money::Amount::MAX_FEN.unsigned_abs());
        if adjustment_fen.is_some() != (resolution == "adjusted") || adjustment_fen == Some(0) || beyond_any_amount {
            return Err(Error::invalid(
                "adjustment",
                "INVALID_ADJUSTMENT",
                "an adjusted resolution needs a non-zero adjustment, within what one amount may be",
            ));
        }
        let Some(discrepancy) = self.store.discrepancy(id).await? else {
            return Err(missing(principal, "discrepancy"));
        };
        self.reconciled_wallet(principal, &discrepancy.wallet_id).await?;
        if !discrepancy.open {
            return Err(Error::Conflict {
                code: "ALREADY_RESOLVED",
                detail: String::from("the discrepancy is resolved"),
            });
        }
        let actor = principal.token_id.as_str();
        let region = self.wallet_region(Initiator::Person(principal), &discrepancy.wallet_id).await?;
        let audit = AuditEntry {
            actor: Actor::Token(principal),
            action: "discrepancy.resolved",
            object_kind: "discrepancy",
            object_id: discrepancy.id.as_str(),
            region_path: region.as_ref(),
            // The note stays with the discrepancy: it is free text and may name people.
            summary: json!({
                "before": "open",
                "after": "resolved",
                "wallet_id": discrepancy.wallet_id,
                "business_day": discrepancy.business_day,
                "resolution": resolution,
                "adjustment_fen": adjustment_fen,
            }),
        };
        let resolution = Resolution {
            resolution,
            note: note.as_str(),
            adjustment_fen,
            actor,
            now: UnixMs::now(),
            audit: Some(audit),
        };
        self.store.resolve_discrepancy(&discrepancy, &resolution).await.map_err(|error| match error {
            RunStoreError::Store(StoreError::GuardFailed) => {
                Error::Conflict { code: "ALREADY_RESOLVED", detail: String::from("someone resolved it first") }
            }
            other => run_store_error(other),
        })?;
        self.store.discrepancy(id).await?.ok_or(Error::NotFound { what: "discrepancy" })
    }

    pub async fn close_reconciliation_day(
        &self,
        principal: &Principal,
        wallet_id: &str,
        business_day: &str,
    ) -> Result<()> {
        require(principal, Action::Reconcile)?;
        self.reconciled_wallet(principal, wallet_id).await?;
        let region = self.wallet_region(Initiator::Person(principal), wallet_id).await?;
        let audit = AuditEntry {
            actor: Actor::Token(principal),
            action: "reconciliation_day.closed",
            object_kind: "reconciliation_day",
            object_id: "",
            region_path: region.as_ref(),
            summary: json!({"before": "open", "after": "closed", "wallet_id": wallet_id, "business_day": business_day}),
        };
        let actor = principal.token_id.as_str();
        match self.store.close_day(wallet_id, business_day, actor, UnixMs::now(), Some(&audit)).await {
            Ok(()) => Ok(()),
            Err(StoreError::GuardFailed) => Err(Error::Conflict {
                code: "DAY_NOT_CLOSABLE",
                detail: String::from("the day has not been run, is closed already, or has open discrepancies"),
            }),
            Err(other) => Err(other.into()),
        }
    }
}

/// Pieces of a run's result handed from the matcher to the writer at a time: the matcher
/// waits when the database falls behind, so memory stays bounded.
const PIECES_IN_FLIGHT: usize = 8;
/// Discrepancies handed to the writer at once.
const RAISED_PER_PIECE: usize = 5_000;

/// What matching a day came to, beside the pieces written.
struct Matched {
    summary: Summary,
    /// Fees withheld on the lines that match carepay's records (fees on unmatched lines are
    /// part of their discrepancy, resolved by the accountant).
    withheld_fee_fen: i64,
    outcomes: usize,
}

/// Matches a day and hands its result to the writer as it goes: chunks of the line-level
/// result, batches of discrepancies, the operator's own entries, records of other days this
/// statement lists. Stops early if the writer has stopped listening (it failed).
fn match_day(
    settings: &MatchSettings,
    statement: &StatementSide,
    carepay: &CarepaySide,
    pieces: &tokio::sync::mpsc::Sender<RunPiece>,
) -> Matched {
    let sides = RunSides { statement, carepay };
    let mut summary = SummaryBuilder::default();
    let mut encoder = ResultEncoder::default();
    let (mut raised, mut chunks) = (Vec::new(), Vec::new());
    let (mut withheld_fee_fen, mut outcomes, mut listening) = (0i64, 0usize, true);
    let mut send = |piece| listening = listening && pieces.blocking_send(piece).is_ok();
    reconcile(settings, statement, carepay, |outcome| {
        outcomes += 1;
        summary.add(&outcome, statement, carepay);
        if let (Some(line), Some(_)) = (outcome.line, outcome.entry) {
            let item = statement.item(line);
            // A REVERSED line's fee is given back with it.
            if item.status == EntryStatus::Success {
                withheld_fee_fen = withheld_fee_fen.saturating_add(item.fee_fen);
            }
        }
        if let Some(chunk) = encoder.push(statement, carepay, &outcome) {
            chunks.push(chunk);
            if chunks.len() == CHUNKS_PER_INSERT {
                send(RunPiece::Chunks(std::mem::take(&mut chunks)));
            }
        }
        match outcome.category {
            Category::Matched => {}
            Category::OperatorEntry => {
                if let Some(booking) = OperatorBooking::of(sides, &outcome) {
                    send(RunPiece::OperatorEntry(booking));
                }
            }
            _ if outcome.is_timing() => {
                // Reported on the record's own day; the statement's day raises nothing.
                if let Some(report) = TimingReport::of(sides, &outcome) {
                    send(RunPiece::TimingReport(report));
                }
            }
            _ => {
                raised.push(RaisedDiscrepancy::of(sides, &outcome));
                if raised.len() == RAISED_PER_PIECE {
                    send(RunPiece::Discrepancies(std::mem::take(&mut raised)));
                }
            }
        }
        if let Some(timing) = TimingResolution::of(sides, &outcome) {
            send(RunPiece::Timing(timing));
        }
    });
    chunks.extend(encoder.finish());
    if !chunks.is_empty() {
        send(RunPiece::Chunks(chunks));
    }
    if !raised.is_empty() {
        send(RunPiece::Discrepancies(raised));
    }
    Matched { summary: summary.finish(), withheld_fee_fen, outcomes }
}

/// The statement's `TRANSFER_RETURN` lines that settled (a funding wallet's returns).
fn seen_returns(statement: &StatementSide) -> Vec<SeenReturn> {
    (0..u32::try_from(statement.len()).unwrap_or(u32::MAX))
        .map(|index| statement.item(index))
        .filter(|item| item.kind == EntryKind::TransferReturn && item.status == EntryStatus::Success)
        .filter_map(|item| {
            Some(SeenReturn {
                out_transfer_no: item.out_no.to_owned(),
                operator_ref: item.operator_ref.to_owned(),
                amount_fen: item.amount_fen,
                at_ms: settled_at_ms(item.settled_at)?,
                reason: item.memo.chars().take(MAX_RETURN_REASON_CHARS).collect(),
            })
        })
        .collect()
}

/// The most of a return line's memo a line keeps as its reason.
const MAX_RETURN_REASON_CHARS: usize = 200;

/// Adds the returns this run recorded to carepay's side, unless it already holds them.
fn add_returns(carepay: &mut CarepaySide, returned: &[ReturnedLine]) -> std::result::Result<(), SideError> {
    if returned.is_empty() {
        return Ok(());
    }
    let known: std::collections::HashSet<String> = (0..u32::try_from(carepay.len()).unwrap_or(u32::MAX))
        .map(|index| carepay.item(index))
        .filter(|item| item.kind == EntryKind::TransferReturn)
        .map(|item| item.out_no.to_owned())
        .collect();
    for line in returned.iter().filter(|line| !known.contains(&line.out_transfer_no)) {
        carepay.push_parts(
            &line.out_transfer_no,
            Some(&line.operator_ref),
            EntryKind::TransferReturn,
            EntryStatus::Success,
            line.amount_fen,
            0,
            line.at_ms,
        )?;
    }
    Ok(())
}

fn run_events(owned: &OwnedWallet, run: &RunRow, summary: &Summary, new_discrepancies: u64) -> Vec<NewEvent> {
    let owner = match &owned.owner {
        WalletOwner::Facility(facility) => EventOwner::Facility(facility.clone()),
        WalletOwner::Programme(_) => EventOwner::Office(owned.region_id.clone()),
    };
    let data = json!({
        "run_id": run.id.as_str(),
        "wallet_id": run.wallet_id,
        "business_day": run.business_day,
        "summary": summary,
        "new_discrepancies": new_discrepancies,
    });
    let mut events = vec![NewEvent {
        owner: owner.clone(),
        event_type: EventType::ReconciliationCompleted,
        object_id: run.id.as_str().to_owned(),
        object_version: 1,
        data: data.clone(),
    }];
    if new_discrepancies > 0 {
        events.push(NewEvent {
            owner,
            event_type: EventType::ReconciliationDiscrepancyFound,
            object_id: run.id.as_str().to_owned(),
            object_version: 1,
            data,
        });
    }
    events
}

/// `carepay reconcile import FILE`: parse, keep and run, without a back-office token (the
/// command needs database access, which is the stronger credential). Returns a one-line report.
pub async fn import_file(app: &App, bytes: Bytes, actor: &str) -> Result<String> {
    let header = statement_header(&bytes)?;
    let owned = app.owned_wallet(&header.wallet_id).await?;
    let by = Initiator::CommandLine(actor);
    let carepay = app.load_carepay(&owned, &header.wallet_id, &header.date)?;
    let (file, created, parsed) = app.keep_statement(bytes, &header, Source::Cli, by).await?;
    let (wallet_id, business_day) = (header.wallet_id, header.date);
    let prepared = Prepared { parsed, carepay };
    let run = app.run_day(&owned, &wallet_id, &business_day, by, UnixMs::now(), Some(prepared)).await?;
    let summary: Summary = serde_json::from_str(&run.summary).map_err(|error| Error::Internal(error.into()))?;
    let categories: Vec<String> = summary.categories.iter().map(|c| format!("{} {}", c.category, c.count)).collect();
    Ok(format!(
        "wallet {} day {}: file {} version {}{}; run {}: {}",
        wallet_id,
        business_day,
        file.id,
        file.version,
        if created { "" } else { " (already kept)" },
        run.id,
        categories.join(", ")
    ))
}
