//! Use cases of subsidy disbursement: programmes, batch upload with all-or-nothing validation,
//! four-eyes approval, cancel, pause and resume, progress and the office's result file.
//! Execution towards the operator lives in [`worker`].

pub mod bench;
pub mod result_file;
pub mod worker;

use std::io::Read;

use crate::app::{App, require, within_scope};
use crate::domain::access::Principal;
use crate::domain::batch::{Batch, BatchStatus, BatchStep, Line, Period, Programme, Progress, out_transfer_no};
use crate::domain::citizen_id::mask_name;
use crate::domain::directory::WalletId;
use crate::domain::disbursement::{
    BatchFileReader, BatchLine, ControlTotals, ErrorList, LineError, LineRules, Problem, check_control_totals,
};
use crate::domain::ids::{BatchId, ProgrammeId, RegionId};
use crate::domain::money::Amount;
use crate::domain::role::Action;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::store::StoreError;
use crate::store::audit::{Actor, AuditEntry};
use crate::store::disbursement::{LINE_CHUNK, NewBatch, NewLine, StoredLineProblem};

/// Purpose string of the keyed ID-number digest; changing it changes every stored digest.
const CITIZEN_ID_DIGEST_PURPOSE: &str = "citizen_id";

/// Bounds of disbursement; from config.
#[derive(Clone, Debug)]
pub struct DisbursementSettings {
    /// Most beneficiary lines one batch file may hold.
    pub max_batch_lines: u64,
    /// Largest upload accepted by the transport, in bytes.
    pub max_upload_bytes: u64,
    /// Problems listed in full when a file is refused (all are counted).
    pub max_listed_errors: usize,
    /// Transfers in flight towards the operator per instance.
    pub concurrency: usize,
    /// Transfers started per second per instance.
    pub rate_per_s: u32,
    /// How long a claimed line belongs to an instance before another may take it over.
    pub lease_ms: i64,
    /// Wait before asking the operator again about a line whose outcome was unknown.
    pub query_delay_ms: i64,
    /// Lines claimed per round trip (fewer when the rate could not start them all within a
    /// quarter of the lease).
    pub claim_batch: u32,
}

impl Default for DisbursementSettings {
    fn default() -> Self {
        DisbursementSettings {
            max_batch_lines: 1_000_000,
            max_upload_bytes: 200 * 1_048_576,
            max_listed_errors: ErrorList::DEFAULT_LIMIT,
            concurrency: 32,
            rate_per_s: 2_000,
            lease_ms: 30_000,
            query_delay_ms: 2_000,
            claim_batch: 1_024,
        }
    }
}

/// What an admin gives to create a programme.
#[derive(Clone, Debug)]
pub struct NewProgramme {
    pub region_id: RegionId,
    pub name: String,
    pub funding_wallet_id: WalletId,
    pub budget: Amount,
    pub per_payment_cap: Amount,
    pub per_period_cap: Amount,
    pub designated_merchants: Vec<WalletId>,
    pub starts_on: String,
    pub ends_on: String,
}

/// The uploader's statement about a file.
#[derive(Clone, Debug)]
pub struct UploadRequest {
    pub programme_id: ProgrammeId,
    pub period: Period,
    pub idempotency_key: String,
    pub stated: ControlTotals,
}

/// Why an upload was refused: every problem counted, the first `limit` listed in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub errors: Vec<LineError>,
    pub total: u64,
    pub limit: usize,
}

/// The outcome of an upload.
#[derive(Debug)]
pub enum Upload {
    /// A new batch (draft), or the batch an earlier identical upload created.
    Accepted(Batch),
    /// The file was refused; nothing was stored.
    Rejected(Rejection),
}

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A reader that hashes everything read through it, so the upload's SHA-256 is known once the
/// stream ends without holding the file.
struct HashingReader<R> {
    inner: R,
    digest: ring::digest::Context,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader { inner, digest: ring::digest::Context::new(&ring::digest::SHA256) }
    }

    /// Reads to the end and returns the hex digest.
    fn finish(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(hex::encode(self.digest.finish().as_ref()))
    }
}

fn store_line_problem(line: u64, problem: StoredLineProblem, cap: Amount) -> LineError {
    let problem = match problem {
        StoredLineProblem::DuplicateInBatch { first_line } => Problem::DuplicateInBatch { first_line },
        StoredLineProblem::InOtherOpenBatch => Problem::InOtherOpenBatch,
        StoredLineProblem::OverPeriodCap => Problem::OverPeriodCap { cap },
    };
    let column = Some(crate::domain::disbursement::Column::CitizenId);
    LineError { line: Some(line), column, problem }
}

impl App {
    pub async fn create_programme(&self, principal: &Principal, new: NewProgramme) -> Result<Programme> {
        require(principal, Action::ManageProgrammes)?;
        let region = self.store.region(&new.region_id).await?;
        let region = within_scope(principal, region, "region", |r| &r.path)?;
        let name = new.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::invalid("name", "INVALID_NAME", "a programme name has 1 to 100 characters"));
        }
        new.budget.ensure_nonzero().map_err(|e| Error::invalid("budget", e.code(), e))?;
        new.per_payment_cap.ensure_nonzero().map_err(|e| Error::invalid("per_payment_cap", e.code(), e))?;
        new.per_period_cap.ensure_nonzero().map_err(|e| Error::invalid("per_period_cap", e.code(), e))?;
        for (field, date) in [("starts_on", &new.starts_on), ("ends_on", &new.ends_on)] {
            if !is_iso_date(date) {
                return Err(Error::invalid(field, "INVALID_DATE", "a date is written YYYY-MM-DD"));
            }
        }
        if new.starts_on > new.ends_on {
            return Err(Error::invalid("ends_on", "INVALID_DATE", "a programme ends on or after its first day"));
        }
        let programme = Programme {
            id: ProgrammeId::generate(),
            region_id: region.id,
            region_path: region.path,
            name,
            funding_wallet_id: new.funding_wallet_id,
            budget: new.budget,
            committed: Amount::ZERO,
            per_payment_cap: new.per_payment_cap,
            per_period_cap: new.per_period_cap,
            designated_merchants: new.designated_merchants,
            starts_on: new.starts_on,
            ends_on: new.ends_on,
            created_by: principal.token_id.clone(),
            created_at: UnixMs::now(),
        };
        let audit = AuditEntry {
            actor: Actor::Token(principal),
            action: "programme.created",
            object_kind: "subsidy_programme",
            object_id: programme.id.as_str(),
            region_path: Some(&programme.region_path),
            summary: serde_json::json!({
                "name": programme.name,
                "region_id": programme.region_id.as_str(),
                "funding_wallet_id": programme.funding_wallet_id.as_str(),
                "budget": programme.budget.to_string(),
                "per_payment_cap": programme.per_payment_cap.to_string(),
                "per_period_cap": programme.per_period_cap.to_string(),
                "designated_merchants": programme.designated_merchants.len(),
                "starts_on": programme.starts_on,
                "ends_on": programme.ends_on,
            }),
        };
        self.store.insert_programme(&programme, &audit).await?;
        Ok(programme)
    }

    pub async fn programme(&self, principal: &Principal, id: &ProgrammeId) -> Result<Programme> {
        require(principal, Action::ReadBatches)?;
        let found = self.store.programme(id).await?;
        within_scope(principal, found, "programme", |p| &p.region_path)
    }

    /// Reads, checks and stores a batch file in one transaction. Any problem (in a line, in
    /// the header, against other batches, the budget or the control totals) refuses the whole
    /// file and leaves no rows. The same idempotency key with the same file returns the batch
    /// created the first time; with another file it is refused.
    pub async fn upload_batch<R: Read>(
        &self,
        principal: &Principal,
        request: UploadRequest,
        file: R,
    ) -> Result<Upload> {
        require(principal, Action::UploadBatches)?;
        let programme = self.programme(principal, &request.programme_id).await?;
        let key = request.idempotency_key.trim();
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Error::invalid("idempotency_key", "INVALID_IDEMPOTENCY_KEY", "1 to 128 characters"));
        }
        // A programme pays only for months within its active dates.
        let period = request.period.as_str();
        if period < &programme.starts_on[..7] || period > &programme.ends_on[..7] {
            let detail = format!("the programme runs from {} to {}", programme.starts_on, programme.ends_on);
            return Err(Error::invalid("period", "PERIOD_OUTSIDE_PROGRAMME", detail));
        }
        let mut file = HashingReader::new(file);

        if let Some(existing) = self.store.batch_by_idempotency_key(&principal.token_id, key).await? {
            return self.same_upload_again(existing, file);
        }

        let settings = &self.disbursement;
        let rules = LineRules { per_payment_cap: programme.per_payment_cap, max_lines: settings.max_batch_lines };
        let mut errors = ErrorList::new(settings.max_listed_errors);
        let mut reader = match BatchFileReader::open(&mut file, rules) {
            Ok(reader) => reader,
            Err(problems) => {
                problems.into_iter().for_each(|e| errors.push(e));
                return Ok(Upload::Rejected(rejection(errors)));
            }
        };
        let batch_id = BatchId::generate();
        let label = self.actor_label(principal).await?;
        let new_batch = NewBatch {
            id: &batch_id,
            programme: &programme,
            period: &request.period,
            idempotency_key: key,
            // Known only at the end of the stream; written then (see below).
            upload_sha256: "",
            uploaded_by: (&principal.token_id, &label),
            encoding: reader.encoding(),
            chinese_headers: reader.chinese_headers(),
            line_count: request.stated.line_count.max(1),
            total: request.stated.total.max(Amount::from_fen(1).expect("one fen")),
            now: UnixMs::now(),
        };
        let mut upload = match self.store.begin_batch_upload(&new_batch).await {
            Ok(upload) => upload,
            Err(StoreError::Conflict("subsidy_batches_uploader_key")) => return Err(Error::InFlight),
            Err(other) => return Err(other.into()),
        };

        let mut chunk: Vec<NewLine> = Vec::with_capacity(LINE_CHUNK);
        let mut seq = 0u64;
        while let Some(result) = reader.next_line() {
            let line = match result {
                Ok(line) => line,
                Err(problems) => {
                    problems.into_iter().for_each(|e| errors.push(e));
                    continue;
                }
            };
            if line.amount > programme.per_period_cap {
                let problem = Problem::OverPeriodCap { cap: programme.per_period_cap };
                let column = Some(crate::domain::disbursement::Column::Amount);
                errors.push(LineError { line: Some(line.line), column, problem });
                continue;
            }
            // Good lines are stored even once the file is known to be refused: only the store
            // sees duplicates and other open batches, and the office gets every problem in one
            // go. The rollback removes them.
            seq += 1;
            chunk.push(self.new_line(&batch_id, seq, line).map_err(Error::Internal)?);
            if chunk.len() == LINE_CHUNK {
                for (line, problem) in upload.insert_lines(&chunk).await? {
                    errors.push(store_line_problem(line, problem, programme.per_period_cap));
                }
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            for (line, problem) in upload.insert_lines(&chunk).await? {
                errors.push(store_line_problem(line, problem, programme.per_period_cap));
            }
        }
        let actual = reader.good_totals();
        if reader.lines_seen() == 0 {
            errors.push(LineError { line: None, column: None, problem: Problem::NoLines });
        }
        if errors.is_empty() {
            check_control_totals(request.stated, actual).into_iter().for_each(|e| errors.push(e));
            let remaining = programme.budget.checked_sub(programme.committed).unwrap_or(Amount::ZERO);
            if actual.total > remaining {
                errors.push(LineError { line: None, column: None, problem: Problem::OverBudget { remaining } });
            }
        }
        drop(reader);
        if !errors.is_empty() {
            // Dropping the upload rolls back the batch row and every line inserted so far.
            drop(upload);
            return Ok(Upload::Rejected(rejection(errors)));
        }
        let sha256 = file.finish().map_err(|e| Error::Internal(e.into()))?;
        upload.set_sha256(&sha256).await?;
        let audit = AuditEntry {
            actor: Actor::Token(principal),
            action: "batch.uploaded",
            object_kind: "subsidy_batch",
            object_id: batch_id.as_str(),
            region_path: Some(&programme.region_path),
            summary: serde_json::json!({
                "programme_id": programme.id.as_str(),
                "period": request.period.as_str(),
                "after": BatchStatus::Draft.as_str(),
                "line_count": actual.line_count,
                "total": actual.total.to_string(),
                "upload_sha256": sha256,
            }),
        };
        upload.commit(&audit).await?;
        let batch =
            self.store.batch(&batch_id).await?.ok_or_else(|| Error::Internal(anyhow::anyhow!("batch vanished")))?;
        tracing::info!(batch = %batch.id, lines = batch.line_count, "subsidy batch uploaded");
        Ok(Upload::Accepted(batch))
    }

    fn same_upload_again<R: Read>(&self, existing: Batch, file: HashingReader<R>) -> Result<Upload> {
        let sha256 = file.finish().map_err(|e| Error::Internal(e.into()))?;
        if sha256 == existing.upload_sha256 { Ok(Upload::Accepted(existing)) } else { Err(Error::IdempotencyMismatch) }
    }

    /// Digests, seals and masks one parsed line; the clear ID number goes no further.
    fn new_line(&self, batch: &BatchId, seq: u64, line: BatchLine) -> anyhow::Result<NewLine> {
        let clear = line.citizen_id.expose_clear_text();
        let out_transfer_no = out_transfer_no(batch, seq);
        // The seal is bound to the line's transfer number, so a sealed copy moved to another
        // row does not open.
        let sealed = self.secrets.seal(clear.as_bytes(), &format!("{out_transfer_no}/citizen_id"))?;
        Ok(NewLine {
            seq,
            file_line: line.line,
            name_masked: mask_name(&line.name),
            payee_name: line.name,
            citizen_id_hmac: self.secrets.keyed_digest(CITIZEN_ID_DIGEST_PURPOSE, clear.as_bytes()),
            citizen_id_sealed: sealed,
            citizen_id_masked: line.citizen_id.masked(),
            wallet_id: line.wallet_id,
            amount: line.amount,
            memo: line.memo,
            out_transfer_no,
        })
    }

    async fn actor_label(&self, principal: &Principal) -> Result<String> {
        let token = self.store.token(&principal.token_id).await?;
        Ok(token.map(|t| t.label.as_str().to_owned()).unwrap_or_else(|| principal.token_id.to_string()))
    }

    pub async fn batch(&self, principal: &Principal, id: &BatchId) -> Result<Batch> {
        require(principal, Action::ReadBatches)?;
        let found = self.store.batch(id).await?;
        within_scope(principal, found, "batch", |b| &b.region_path)
    }

    pub async fn batch_history(&self, principal: &Principal, id: &BatchId) -> Result<Vec<BatchStep>> {
        let batch = self.batch(principal, id).await?;
        Ok(self.store.batch_steps(&batch.id).await?)
    }

    pub async fn batch_progress(&self, principal: &Principal, id: &BatchId) -> Result<(Batch, Progress)> {
        let batch = self.batch(principal, id).await?;
        let progress = self.store.batch_progress(&batch.id).await?;
        Ok((batch, progress))
    }

    pub async fn batch_lines(
        &self,
        principal: &Principal,
        id: &BatchId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Line>> {
        let batch = self.batch(principal, id).await?;
        let limit = limit.clamp(1, self.limits.max_page_size);
        Ok(self.store.batch_lines(&batch.id, after_seq, limit).await?)
    }

    /// Four-eyes: an approver in the programme's region, never the uploader. Reserves the
    /// batch's total against the programme budget.
    pub async fn approve_batch(&self, principal: &Principal, id: &BatchId) -> Result<Batch> {
        require(principal, Action::ApproveBatches)?;
        let batch = self.batch(principal, id).await?;
        if batch.uploaded_by == principal.token_id {
            return Err(Error::conflict(
                "APPROVER_IS_UPLOADER",
                "a batch must be approved by someone other than its uploader",
            ));
        }
        if batch.status != BatchStatus::Draft {
            return Err(wrong_state(&batch, "approved"));
        }
        let label = self.actor_label(principal).await?;
        let audit = batch_audit(principal, &batch, "batch.approved", BatchStatus::Approved);
        match self.store.approve_batch(&batch, (&principal.token_id, &label), UnixMs::now(), &audit).await {
            Ok(()) => {}
            Err(StoreError::GuardFailed) => {
                return Err(Error::conflict(
                    "OVER_BUDGET_OR_MOVED",
                    "the programme's remaining budget no longer covers this batch, or it was moved meanwhile",
                ));
            }
            Err(other) => return Err(other.into()),
        }
        self.reload(&batch.id).await
    }

    pub async fn cancel_batch(&self, principal: &Principal, id: &BatchId) -> Result<Batch> {
        self.move_batch(principal, id, BatchStatus::Cancelled).await
    }

    /// Starts (approved) or resumes (paused) execution.
    pub async fn run_batch(&self, principal: &Principal, id: &BatchId) -> Result<Batch> {
        self.move_batch(principal, id, BatchStatus::Running).await
    }

    /// Stops claiming new lines; lines already sent are still resolved.
    pub async fn pause_batch(&self, principal: &Principal, id: &BatchId) -> Result<Batch> {
        self.move_batch(principal, id, BatchStatus::Paused).await
    }

    async fn move_batch(&self, principal: &Principal, id: &BatchId, to: BatchStatus) -> Result<Batch> {
        require(principal, Action::OperateBatches)?;
        let batch = self.batch(principal, id).await?;
        if !batch.status.may_become(to) {
            return Err(wrong_state(&batch, to.as_str()));
        }
        let label = self.actor_label(principal).await?;
        let actor = (&principal.token_id, label.as_str());
        let action = match (batch.status, to) {
            (_, BatchStatus::Cancelled) => "batch.cancelled",
            (_, BatchStatus::Paused) => "batch.paused",
            (BatchStatus::Paused, _) => "batch.resumed",
            _ => "batch.started",
        };
        let audit = batch_audit(principal, &batch, action, to);
        let moved = if to == BatchStatus::Cancelled {
            self.store.cancel_batch(&batch, actor, UnixMs::now(), &audit).await
        } else {
            self.store.move_batch(&batch, to, actor, UnixMs::now(), &audit).await
        };
        match moved {
            Ok(()) => self.reload(&batch.id).await,
            Err(StoreError::GuardFailed) => {
                Err(Error::conflict("BATCH_MOVED", "the batch was changed meanwhile; reload it"))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Re-issues a failed line after the office corrected the name or wallet id: a new line
    /// with its own `out_transfer_no`, linked to the old one, reserved against the budget.
    pub async fn reissue_line(
        &self,
        principal: &Principal,
        id: &BatchId,
        seq: u64,
        payee_name: &str,
        wallet_id: &WalletId,
    ) -> Result<Line> {
        require(principal, Action::OperateBatches)?;
        let batch = self.batch(principal, id).await?;
        if !matches!(batch.status, BatchStatus::Running | BatchStatus::Paused | BatchStatus::Completed) {
            return Err(wrong_state(&batch, "re-issued from"));
        }
        let name = payee_name.trim();
        if name.is_empty() || name.chars().count() > crate::domain::disbursement::MAX_NAME_CHARS {
            return Err(Error::invalid("payee_name", "INVALID_NAME", "a name has 1 to 64 characters"));
        }
        let object_id = format!("{}/{seq}", batch.id);
        let audit = AuditEntry {
            actor: Actor::Token(principal),
            action: "line.reissued",
            object_kind: "subsidy_line",
            object_id: &object_id,
            region_path: Some(&batch.region_path),
            // The corrected name only masked: the audit trail is read by people outside the office.
            summary: serde_json::json!({"line": seq, "payee_name": mask_name(name), "wallet_id": wallet_id.as_str()}),
        };
        match self.store.reissue_line(&batch.id, seq, name, wallet_id, UnixMs::now(), &audit).await {
            Ok(line) => Ok(line),
            Err(StoreError::GuardFailed) => Err(Error::conflict(
                "NOT_REISSUABLE",
                "only a failed line not yet re-issued can be, and only within the programme's budget",
            )),
            Err(other) => Err(other.into()),
        }
    }

    /// The clear citizen ID number of one line, for the office that owns the programme. The
    /// reveal is written to the audit trail before the number leaves; if that fails, it does
    /// not leave.
    pub async fn reveal_citizen_id(&self, principal: &Principal, id: &BatchId, seq: u64) -> Result<String> {
        require(principal, Action::RevealCitizenIds)?;
        let batch = self.batch(principal, id).await?;
        // A stolen or misused office token reveals a bounded number of people per hour.
        self.reveal_quota
            .check(principal.token_id.as_str(), UnixMs::now().0)
            .map_err(|retry_after_s| Error::RateLimited { retry_after_s })?;
        let (sealed, bound_to, masked) =
            self.store.line_sealed_citizen_id(&batch.id, seq).await?.ok_or(Error::NotFound { what: "line" })?;
        let clear = self
            .secrets
            .open(&sealed, &format!("{bound_to}/citizen_id"))
            .map_err(|error| Error::Internal(anyhow::anyhow!("line {seq} of {}: {error}", batch.id)))?;
        let clear = String::from_utf8(clear)
            .map_err(|_| Error::Internal(anyhow::anyhow!("line {seq} of {}: not text", batch.id)))?;
        let object_id = format!("{}/{seq}", batch.id);
        let audit = AuditEntry {
            actor: Actor::Token(principal),
            action: "citizen_id.revealed",
            object_kind: "subsidy_line",
            object_id: &object_id,
            region_path: Some(&batch.region_path),
            summary: serde_json::json!({"line": seq, "citizen_id": masked}),
        };
        self.store.append_audit(&audit, UnixMs::now()).await?;
        Ok(clear)
    }

    async fn reload(&self, id: &BatchId) -> Result<Batch> {
        self.store.batch(id).await?.ok_or_else(|| Error::Internal(anyhow::anyhow!("batch {id} vanished")))
    }
}

/// The audit record of a batch moving from its current state to `to`.
fn batch_audit<'a>(principal: &'a Principal, batch: &'a Batch, action: &'a str, to: BatchStatus) -> AuditEntry<'a> {
    AuditEntry {
        actor: Actor::Token(principal),
        action,
        object_kind: "subsidy_batch",
        object_id: batch.id.as_str(),
        region_path: Some(&batch.region_path),
        summary: serde_json::json!({
            "before": batch.status.as_str(),
            "after": to.as_str(),
            "programme_id": batch.programme_id.as_str(),
            "period": batch.period.as_str(),
            "line_count": batch.line_count,
            "total": batch.total.to_string(),
        }),
    }
}

fn wrong_state(batch: &Batch, wanted: &str) -> Error {
    Error::conflict("BATCH_STATE", format!("a {} batch cannot be {wanted}", batch.status.as_str()))
}

fn rejection(errors: ErrorList) -> Rejection {
    let (total, limit) = (errors.total(), errors.limit());
    Rejection { errors: errors.into_sorted(), total, limit }
}

fn is_iso_date(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && (1..=12).contains(&raw[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&raw[8..10].parse::<u32>().unwrap_or(0))
}
