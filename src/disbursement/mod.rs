//! Use cases of subsidy disbursement: programmes, batch upload with all-or-nothing validation,
//! four-eyes approval, cancel, pause and resume, progress and the office's result file.
//! Execution towards the operator lives in [`worker`].

pub mod bench;
pub mod result_file;
mod upload;
pub mod worker;

use std::io::Read;

use crate::app::{App, require, within_scope};
use crate::domain::access::Principal;
use crate::domain::batch::{Batch, BatchStatus, BatchStep, Line, Period, Programme, Progress};
use crate::domain::citizen_id::mask_name;
use crate::domain::directory::{Name, WalletId};
use crate::domain::disbursement::{ControlTotals, ErrorList, LineError, LineRules, Problem, check_control_totals};
use crate::domain::ids::{BatchId, ProgrammeId, RegionId};
use crate::domain::money::Amount;
use crate::domain::role::Action;
use crate::domain::text::FreeText;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::store::StoreError;
use crate::store::audit::{Actor, AuditEntry};
use crate::store::disbursement::{NewBatch, Reissue, SealedCitizenId};
use upload::{HashingReader, OtherPeople, PackJob, PackOutcome, Packed};

/// Purpose string of the keyed ID-number digest; changing it changes every stored digest.
pub(crate) const CITIZEN_ID_DIGEST_PURPOSE: &str = "citizen_id";

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
    pub name: Name,
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

impl App {
    pub async fn create_programme(&self, principal: &Principal, new: NewProgramme) -> Result<Programme> {
        require(principal, Action::ManageProgrammes)?;
        let region = self.store.region(&new.region_id).await?;
        let region = within_scope(principal, region, "region", |r| &r.path)?;
        new.budget.ensure_nonzero().map_err(|e| Error::invalid("budget", e.code(), e))?;
        new.per_payment_cap.ensure_nonzero().map_err(|e| Error::invalid("per_payment_cap", e.code(), e))?;
        new.per_period_cap.ensure_nonzero().map_err(|e| Error::invalid("per_period_cap", e.code(), e))?;
        for (field, date) in [("starts_on", &new.starts_on), ("ends_on", &new.ends_on)] {
            if !crate::domain::time::is_calendar_date(date) {
                return Err(Error::invalid(field, "INVALID_DATE", "a date is written YYYY-MM-DD"));
            }
        }
        if new.starts_on > new.ends_on {
            return Err(Error::invalid("ends_on", "INVALID_DATE", "a programme ends on or after its first day"));
        }
        self.check_funding_wallet(principal, &new.funding_wallet_id).await?;
        let programme = Programme {
            id: ProgrammeId::generate(),
            region_id: region.id,
            region_path: region.path,
            name: new.name.as_str().to_owned(),
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

    /// A funding wallet belongs to the regions of the programmes it funds: a caller may fund a
    /// programme only from a wallet every one of whose programmes is in their scope (a town
    /// cannot spend another town's or the district's money). A facility's merchant wallet
    /// receives payments and funds nothing. The first programme to name a wallet places it.
    async fn check_funding_wallet(&self, principal: &Principal, wallet_id: &WalletId) -> Result<()> {
        let holders = self.store.wallet_holders(wallet_id).await?;
        let merchant_region = holders.merchant_of.as_ref().map(|(_, path)| path);
        if holders.programme_regions.iter().chain(merchant_region).any(|path| !principal.sees(path)) {
            return Err(Error::OutOfScopeIn {
                field: String::from("funding_wallet_id"),
                code: "FUNDING_WALLET_OUT_OF_SCOPE",
                detail: String::from("the wallet belongs to a region outside yours"),
            });
        }
        if let Some((facility, _)) = holders.merchant_of {
            return Err(Error::invalid(
                "funding_wallet_id",
                "FUNDING_WALLET_IS_MERCHANT",
                format!(
                    "the wallet is the merchant wallet of facility {facility}; a programme is funded from a funding wallet"
                ),
            ));
        }
        Ok(())
    }

    pub async fn programme(&self, principal: &Principal, id: &ProgrammeId) -> Result<Programme> {
        require(principal, Action::ReadBatches)?;
        let found = self.store.programme(id).await?;
        within_scope(principal, found, "programme", |p| &p.region_path)
    }

    /// Reads, checks and stores a batch file in one transaction. Any problem (in a line, in
    /// the header, against other batches, the budget or the control totals) refuses the whole
    /// file and leaves no rows. The same idempotency key with the same file returns the batch
    /// created the first time; with another file it is refused. The file is read on a thread
    /// of its own while this task writes what it has packed (see [`upload`]).
    pub async fn upload_batch<R: Read + Send + 'static>(
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
        let file = HashingReader::new(file);

        if let Some(existing) = self.store.batch_by_idempotency_key(&principal.token_id, key).await? {
            let sha256 = tokio::task::spawn_blocking(move || file.finish())
                .await
                .map_err(|e| Error::Internal(e.into()))?
                .map_err(|e| Error::Internal(e.into()))?;
            return if sha256 == existing.upload_sha256 {
                Ok(Upload::Accepted(existing))
            } else {
                Err(Error::IdempotencyMismatch)
            };
        }

        let settings = &self.disbursement;
        let batch_id = BatchId::generate();
        let job = PackJob {
            file,
            batch_id: batch_id.clone(),
            rules: LineRules {
                per_payment_cap: programme.per_payment_cap,
                max_transaction_amount: self.limits.max_transaction_amount,
                max_lines: settings.max_batch_lines,
            },
            per_period_cap: programme.per_period_cap,
            max_listed_errors: settings.max_listed_errors,
            secrets: self.secrets.clone(),
        };
        let (sender, mut packed) = tokio::sync::mpsc::channel(upload::PIPELINE_DEPTH);
        let reading = tokio::task::spawn_blocking(move || upload::pack(job, &sender));
        let finished = |reading: tokio::task::JoinHandle<std::result::Result<PackOutcome, upload::PackError>>| async {
            reading.await.map_err(|e| Error::Internal(e.into()))?.map_err(|e| Error::Internal(e.into()))
        };

        let Some(Packed::Header { encoding, chinese_headers }) = packed.recv().await else {
            // The header was refused (or the thread failed): nothing was stored.
            let outcome = finished(reading).await?;
            return Ok(Upload::Rejected(rejection(outcome.errors)));
        };
        let label = self.actor_label(principal).await?;
        let new_batch = NewBatch {
            id: &batch_id,
            programme: &programme,
            period: &request.period,
            idempotency_key: key,
            // Known only at the end of the stream; written then (see below).
            upload_sha256: "",
            uploaded_by: (&principal.token_id, &label),
            encoding,
            chinese_headers,
            line_count: request.stated.line_count.max(1),
            total: request.stated.total.max(Amount::from_fen(1).expect("one fen")),
            now: UnixMs::now(),
        };
        let mut upload = match self.store.begin_batch_upload(&new_batch).await {
            Ok(upload) => upload,
            Err(StoreError::Conflict("subsidy_batches_uploader_key")) => return Err(Error::InFlight),
            Err(other) => return Err(other.into()),
        };

        // What only the other batches can tell, counted with the reader's problems at the end.
        let mut errors = ErrorList::new(settings.max_listed_errors);
        let mut others: Option<OtherPeople> = None;
        let mut parts = 0u64;
        while let Some(message) = packed.recv().await {
            match message {
                Packed::Header { .. } => return Err(Error::Internal(anyhow::anyhow!("a second header"))),
                Packed::Chunk { first_seq, line_count, lines, citizen_ids_sealed } => {
                    upload.insert_chunk(first_seq, line_count, &lines, &citizen_ids_sealed).await?;
                }
                Packed::People { people, part, clean } => {
                    let others = match &mut others {
                        Some(others) => others,
                        None => {
                            // From here to commit, other uploads and re-issues of this
                            // programme and period wait for this one (and it waited for them).
                            upload.take_period_gate().await?;
                            others.insert(OtherPeople::open(&mut upload).await?)
                        }
                    };
                    for person in &people {
                        let held = others.held(&mut upload, person.digest).await?;
                        if let Some(problem) = upload::held_problem(person, held, programme.per_period_cap) {
                            errors.push(problem);
                        }
                    }
                    if clean && errors.is_empty() {
                        upload.insert_people_part(parts, &part).await?;
                        parts += 1;
                    }
                }
            }
        }
        let outcome = finished(reading).await?;
        let mut found = outcome.errors;
        found.absorb(errors);
        let mut errors = found;
        let actual = outcome.totals;
        if outcome.lines_seen == 0 {
            errors.push(LineError { line: None, column: None, problem: Problem::NoLines });
        }
        if errors.is_empty() {
            check_control_totals(request.stated, actual).into_iter().for_each(|e| errors.push(e));
            let remaining = programme.budget.checked_sub(programme.committed).unwrap_or(Amount::ZERO);
            if actual.total > remaining {
                errors.push(LineError { line: None, column: None, problem: Problem::OverBudget { remaining } });
            }
        }
        if !errors.is_empty() {
            // Dropping the upload rolls back the batch row and every chunk written so far.
            drop(upload);
            return Ok(Upload::Rejected(rejection(errors)));
        }
        let sha256 = outcome.sha256.ok_or_else(|| Error::Internal(anyhow::anyhow!("no digest of a read file")))?;
        upload.finish(&sha256, outcome.chunked_lines).await?;
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

    /// The clear ID number of a line, from its row's sealed copy or its chunk's sealed list,
    /// with its masked form and the context a copy of it is sealed under for a re-issue.
    async fn open_citizen_id(&self, batch: &BatchId, seq: u64) -> Result<(String, String, String)> {
        let (sealed, masked) =
            self.store.line_sealed_citizen_id(batch, seq).await?.ok_or(Error::NotFound { what: "line" })?;
        let unreadable = |why: &dyn std::fmt::Display| Error::Internal(anyhow::anyhow!("line {seq} of {batch}: {why}"));
        let (clear, bound_to) = match sealed {
            SealedCitizenId::Row { sealed, context } => {
                let clear = self.secrets.open(&sealed, &context).map_err(|e| unreadable(&e))?;
                (String::from_utf8(clear).map_err(|_| unreadable(&"not text"))?, context)
            }
            SealedCitizenId::Chunk { sealed, context, index, line_count } => {
                let mut clear_ids = self.secrets.open(&sealed, &context).map_err(|e| unreadable(&e))?;
                let clear = crate::domain::line_chunk::citizen_id_at(&clear_ids, index, line_count)
                    .map_err(|e| unreadable(&e))?
                    .to_owned();
                // Only the one number leaves; the rest of the list in clear is wiped.
                clear_ids.fill(0);
                // The first generation's line is the chunked one, so a copy is bound to its number.
                (clear, format!("{}/citizen_id", crate::domain::batch::out_transfer_no(batch, seq)))
            }
        };
        Ok((clear, masked, bound_to))
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
        payee_name: &FreeText,
        wallet_id: &WalletId,
    ) -> Result<Line> {
        require(principal, Action::OperateBatches)?;
        let batch = self.batch(principal, id).await?;
        if !matches!(batch.status, BatchStatus::Running | BatchStatus::Paused | BatchStatus::Completed) {
            return Err(wrong_state(&batch, "re-issued from"));
        }
        let name = payee_name.as_str();
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
        let not_reissuable = || {
            Error::conflict(
                "NOT_REISSUABLE",
                "only a failed or returned line not yet re-issued can be, and only within the programme's budget",
            )
        };
        let source = self.store.batch_line(&batch.id, seq).await?;
        let Some(source) = source.filter(|l| l.status.may_be_reissued() && l.reissued_as_seq.is_none()) else {
            return Err(not_reissuable());
        };
        // The new line holds the same person: its own digest and sealed copy, made from the
        // number the old line holds, which goes no further than this.
        let (clear, masked, bound_to) = self.open_citizen_id(&batch.id, seq).await?;
        let reissue = Reissue {
            source: &source,
            payee_name: name,
            wallet_id,
            citizen_id_hmac: self.secrets.keyed_digest(CITIZEN_ID_DIGEST_PURPOSE, clear.as_bytes()),
            citizen_id_sealed: self.secrets.seal(clear.as_bytes(), &bound_to).map_err(|e| Error::Internal(e.into()))?,
            citizen_id_masked: masked,
        };
        drop(clear);
        match self.store.reissue_line(&batch, &reissue, UnixMs::now(), &audit).await {
            Ok(line) => Ok(line),
            Err(StoreError::GuardFailed) => Err(not_reissuable()),
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
        let (clear, masked, _) = self.open_citizen_id(&batch.id, seq).await?;
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
