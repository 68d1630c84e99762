//! Subsidy programmes, batches, their steps and lines.
//!
//! A batch file is stored as it was validated: its lines a few thousand per row in
//! `subsidy_line_chunks` (layout in [`crate::domain::line_chunk`]) and its people, sorted by
//! keyed digest, in `subsidy_batch_people`, all in one write transaction ([`BatchUpload`]):
//! dropping the upload without [`BatchUpload::commit`] rolls everything back, so a rejected
//! file leaves no rows. A file line gets a row of its own in `subsidy_lines` only when a
//! worker claims it ([`Store::claim_lines`]): inserted as `sending`, with the
//! `out_transfer_no` fixed by the batch and the line number. A file line without a row is
//! pending. Re-issued lines, and lines of batches uploaded before chunks existed, are full rows
//! carrying their own name, wallet and person; every reader here merges the two.

mod returns;

pub(crate) use returns::return_lines_in;
pub use returns::{ReturnedLine, SeenReturn};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::audit::{AuditEntry, append_in};
use super::directory::corrupt;
use super::{Store, StoreError, WriteTx};
use crate::domain::batch::{
    Batch, BatchStatus, BatchStep, Line, LineReturn, LineStatus, Period, Programme, Progress, chunk_seal_context,
    out_transfer_no,
};
use crate::domain::citizen_id::mask_name;
use crate::domain::directory::{RegionPath, WalletId};
use crate::domain::disbursement::BatchEncoding;
use crate::domain::ids::{BatchId, FacilityId, ProgrammeId, RegionId, TokenId};
use crate::domain::line_chunk::{StoredLine, decode_chunk};
use crate::domain::money::Amount;
use crate::domain::time::UnixMs;

/// Batches one claim takes fresh lines from at most (each is a locked row and a chunk read).
const CLAIM_BATCHES_PER_ROUND: i64 = 4;

pub(super) const PROGRAMME_COLUMNS: &str = "p.id, p.region_id, r.path AS region_path, p.name, p.funding_wallet_id, p.budget_fen, \
     p.committed_fen, p.per_payment_cap_fen, p.per_period_cap_fen, p.designated_merchants, p.starts_on, p.ends_on, \
     p.created_by, p.created_at_ms";

pub(super) const BATCH_COLUMNS: &str = "b.id, b.programme_id, r.path AS region_path, b.period, b.idempotency_key, \
     b.upload_sha256, b.uploaded_by, b.encoding, b.chinese_headers, b.status, b.line_count, b.total_fen, b.version, \
     b.created_at_ms, b.updated_at_ms";

const LINE_COLUMNS: &str = "batch_id, seq, file_line, generation, reissue_of_seq, reissued_as_seq, payee_name, \
     name_masked, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no, status, fail_code, transfer_no, \
     succeeded_at_ms, attempts, returned_at_ms, return_reason, return_operator_ref";

/// One of the other batches of a programme and period an upload is checked against.
#[derive(Clone, Debug)]
pub struct OtherBatch {
    pub id: BatchId,
    /// Open batches hold their people for the period; completed ones still count to the cap.
    pub open: bool,
}

/// A person from a full row (a re-issued line, or a line stored before chunks) of another batch
/// of the programme and period, whose line did not definitely fail.
#[derive(Clone, Debug)]
pub struct RowPerson {
    /// The keyed digest in hex, as the row stores it.
    pub citizen_id_hmac: String,
    pub open: bool,
    pub amount_fen: i64,
    /// Where the next page starts.
    pub cursor: RowPersonCursor,
}

/// Keyset position in the stream of [`RowPerson`]s: digest, batch, line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowPersonCursor {
    pub citizen_id_hmac: String,
    pub batch_id: String,
    pub seq: i64,
}

/// An upload in progress; see the module comment.
pub struct BatchUpload {
    tx: WriteTx,
    backend: super::Backend,
    batch_id: BatchId,
    programme_id: ProgrammeId,
    period: Period,
    now: UnixMs,
}

/// Where the sealed ID number of a line is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealedCitizenId {
    /// A full row's own sealed copy, bound to `context`.
    Row { sealed: String, context: String },
    /// Line `index` of a chunk's sealed list of `line_count` numbers, bound to `context`.
    Chunk { sealed: String, context: String, index: usize, line_count: u64 },
}

/// A failed line to re-issue with its corrected name and wallet, and the person it pays: the
/// old line's ID number digested, sealed and masked by the caller.
pub struct Reissue<'a> {
    pub source: &'a Line,
    pub payee_name: &'a str,
    pub wallet_id: &'a WalletId,
    pub citizen_id_hmac: String,
    pub citizen_id_sealed: String,
    pub citizen_id_masked: String,
}

fn amount(row: &AnyRow, column: &'static str) -> Result<Amount, sqlx::Error> {
    let fen: i64 = row.try_get(column)?;
    Amount::from_fen(fen).map_err(|_| corrupt(column, &fen.to_string()))
}

fn count(row: &AnyRow, column: &'static str) -> Result<u64, sqlx::Error> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| corrupt(column, &value.to_string()))
}

pub(super) fn programme_from_row(row: &AnyRow) -> Result<Programme, sqlx::Error> {
    let merchants: String = row.try_get("designated_merchants")?;
    Ok(Programme {
        id: ProgrammeId::from_trusted(row.try_get("id")?),
        region_id: RegionId::from_trusted(row.try_get("region_id")?),
        region_path: RegionPath::from_trusted(row.try_get("region_path")?),
        name: row.try_get("name")?,
        funding_wallet_id: WalletId::from_trusted(row.try_get("funding_wallet_id")?),
        budget: amount(row, "budget_fen")?,
        committed: amount(row, "committed_fen")?,
        per_payment_cap: amount(row, "per_payment_cap_fen")?,
        per_period_cap: amount(row, "per_period_cap_fen")?,
        designated_merchants: merchants
            .split(',')
            .filter(|w| !w.is_empty())
            .map(|w| WalletId::from_trusted(w.to_owned()))
            .collect(),
        starts_on: row.try_get("starts_on")?,
        ends_on: row.try_get("ends_on")?,
        created_by: TokenId::from_trusted(row.try_get("created_by")?),
        created_at: UnixMs(row.try_get("created_at_ms")?),
    })
}

pub(super) fn batch_from_row(row: &AnyRow) -> Result<Batch, sqlx::Error> {
    let encoding: String = row.try_get("encoding")?;
    let status: String = row.try_get("status")?;
    let chinese: i64 = row.try_get("chinese_headers")?;
    Ok(Batch {
        id: BatchId::from_trusted(row.try_get("id")?),
        programme_id: ProgrammeId::from_trusted(row.try_get("programme_id")?),
        region_path: RegionPath::from_trusted(row.try_get("region_path")?),
        period: Period::from_trusted(row.try_get("period")?),
        idempotency_key: row.try_get("idempotency_key")?,
        upload_sha256: row.try_get("upload_sha256")?,
        uploaded_by: TokenId::from_trusted(row.try_get("uploaded_by")?),
        encoding: BatchEncoding::parse(&encoding).ok_or_else(|| corrupt("subsidy_batches.encoding", &encoding))?,
        chinese_headers: chinese == 1,
        status: BatchStatus::parse(&status).ok_or_else(|| corrupt("subsidy_batches.status", &status))?,
        line_count: count(row, "line_count")?,
        total: amount(row, "total_fen")?,
        version: row.try_get("version")?,
        created_at: UnixMs(row.try_get("created_at_ms")?),
        updated_at: UnixMs(row.try_get("updated_at_ms")?),
    })
}

/// What a `subsidy_lines` row holds: a whole line, or only the state of a chunked line.
enum RowLine {
    Full(Line),
    State(LineState),
}

/// The row of a chunked line: its state and what the row repeats of it (number, amount).
#[derive(Clone, Debug)]
struct LineState {
    seq: u64,
    file_line: u64,
    generation: u64,
    reissue_of_seq: Option<u64>,
    reissued_as_seq: Option<u64>,
    amount: Amount,
    out_transfer_no: String,
    status: LineStatus,
    fail_code: Option<String>,
    transfer_no: Option<String>,
    succeeded_at: Option<UnixMs>,
    attempts: u32,
    returned: Option<LineReturn>,
}

fn line_return(row: &AnyRow) -> Result<Option<LineReturn>, sqlx::Error> {
    let Some(at) = row.try_get::<Option<i64>, _>("returned_at_ms")? else { return Ok(None) };
    Ok(Some(LineReturn {
        at: UnixMs(at),
        reason: row.try_get::<Option<String>, _>("return_reason")?.unwrap_or_default(),
        operator_ref: row.try_get::<Option<String>, _>("return_operator_ref")?.unwrap_or_default(),
    }))
}

fn row_line(row: &AnyRow) -> Result<RowLine, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let optional_count = |column: &'static str| -> Result<Option<u64>, sqlx::Error> {
        row.try_get::<Option<i64>, _>(column)?
            .map(|v| u64::try_from(v).map_err(|_| corrupt(column, &v.to_string())))
            .transpose()
    };
    let state = LineState {
        seq: count(row, "seq")?,
        file_line: count(row, "file_line")?,
        generation: count(row, "generation")?,
        reissue_of_seq: optional_count("reissue_of_seq")?,
        reissued_as_seq: optional_count("reissued_as_seq")?,
        amount: amount(row, "amount_fen")?,
        out_transfer_no: row.try_get("out_transfer_no")?,
        status: LineStatus::parse(&status).ok_or_else(|| corrupt("subsidy_lines.status", &status))?,
        fail_code: row.try_get("fail_code")?,
        transfer_no: row.try_get("transfer_no")?,
        succeeded_at: row.try_get::<Option<i64>, _>("succeeded_at_ms")?.map(UnixMs),
        attempts: u32::try_from(count(row, "attempts")?).unwrap_or(u32::MAX),
        returned: line_return(row)?,
    };
    let Some(payee_name) = row.try_get::<Option<String>, _>("payee_name")? else {
        return Ok(RowLine::State(state));
    };
    let text = |column: &'static str| -> Result<String, sqlx::Error> {
        row.try_get::<Option<String>, _>(column)?.ok_or_else(|| corrupt(column, "NULL"))
    };
    Ok(RowLine::Full(Line {
        batch_id: BatchId::from_trusted(row.try_get("batch_id")?),
        seq: state.seq,
        file_line: state.file_line,
        generation: state.generation,
        reissue_of_seq: state.reissue_of_seq,
        reissued_as_seq: state.reissued_as_seq,
        payee_name,
        name_masked: text("name_masked")?,
        citizen_id_masked: text("citizen_id_masked")?,
        wallet_id: WalletId::from_trusted(text("wallet_id")?),
        amount: state.amount,
        memo: text("memo")?,
        out_transfer_no: state.out_transfer_no,
        status: state.status,
        fail_code: state.fail_code,
        transfer_no: state.transfer_no,
        succeeded_at: state.succeeded_at,
        attempts: state.attempts,
        returned: state.returned,
    }))
}

/// A chunked line: what the upload stored, with the state of its row if a worker claimed it
/// (pending, never tried, if not).
fn chunked_line(batch: &BatchId, seq: u64, stored: StoredLine, state: Option<LineState>) -> Line {
    let state = state.unwrap_or_else(|| LineState {
        seq,
        file_line: stored.file_line,
        generation: 0,
        reissue_of_seq: None,
        reissued_as_seq: None,
        amount: stored.amount,
        out_transfer_no: out_transfer_no(batch, seq),
        status: LineStatus::Pending,
        fail_code: None,
        transfer_no: None,
        succeeded_at: None,
        attempts: 0,
        returned: None,
    });
    Line {
        batch_id: batch.clone(),
        seq,
        file_line: stored.file_line,
        generation: state.generation,
        reissue_of_seq: state.reissue_of_seq,
        reissued_as_seq: state.reissued_as_seq,
        name_masked: mask_name(&stored.name),
        payee_name: stored.name,
        citizen_id_masked: stored.citizen_id_masked,
        wallet_id: stored.wallet_id,
        amount: stored.amount,
        memo: stored.memo,
        out_transfer_no: state.out_transfer_no,
        status: state.status,
        fail_code: state.fail_code,
        transfer_no: state.transfer_no,
        succeeded_at: state.succeeded_at,
        attempts: state.attempts,
        returned: state.returned,
    }
}

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The stored lines `first..=last` of a batch's chunks, by seq.
async fn chunk_range(
    conn: &mut AnyConnection,
    batch: &BatchId,
    first: u64,
    last: u64,
) -> Result<Vec<(u64, StoredLine)>, StoreError> {
    let rows = sqlx::query(
        "SELECT first_seq, line_count, lines FROM subsidy_line_chunks \
         WHERE batch_id = $1 AND first_seq <= $3 AND first_seq + line_count > $2 ORDER BY first_seq",
    )
    .bind(batch.as_str())
    .bind(seq_param(first))
    .bind(seq_param(last))
    .fetch_all(&mut *conn)
    .await?;
    let mut lines = Vec::new();
    for row in rows {
        let first_seq = count(&row, "first_seq")?;
        let line_count = count(&row, "line_count")?;
        let bytes: &[u8] = row.try_get("lines")?;
        let decoded =
            decode_chunk(bytes, line_count).map_err(|e| corrupt("subsidy_line_chunks.lines", &e.to_string()))?;
        for (seq, stored) in (first_seq..).zip(decoded) {
            if (first..=last).contains(&seq) {
                lines.push((seq, stored));
            }
        }
    }
    Ok(lines)
}

/// The stored lines of a batch with these seqs (any order), reading each chunk once.
async fn chunk_lines_at(
    conn: &mut AnyConnection,
    batch: &BatchId,
    seqs: &[u64],
) -> Result<std::collections::HashMap<u64, StoredLine>, StoreError> {
    let mut wanted: Vec<u64> = seqs.to_vec();
    wanted.sort_unstable();
    let mut found = std::collections::HashMap::with_capacity(wanted.len());
    let mut next = 0;
    while next < wanted.len() {
        let seq = wanted[next];
        let row = sqlx::query(
            "SELECT first_seq, line_count, lines FROM subsidy_line_chunks \
             WHERE batch_id = $1 AND first_seq <= $2 ORDER BY first_seq DESC LIMIT 1",
        )
        .bind(batch.as_str())
        .bind(seq_param(seq))
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { return Err(corrupt("subsidy_line_chunks", &format!("{batch} line {seq}")).into()) };
        let first_seq = count(&row, "first_seq")?;
        let line_count = count(&row, "line_count")?;
        let bytes: &[u8] = row.try_get("lines")?;
        let decoded =
            decode_chunk(bytes, line_count).map_err(|e| corrupt("subsidy_line_chunks.lines", &e.to_string()))?;
        let mut decoded: Vec<Option<StoredLine>> = decoded.into_iter().map(Some).collect();
        let end = first_seq + line_count;
        if seq >= end {
            return Err(corrupt("subsidy_line_chunks", &format!("{batch} line {seq}")).into());
        }
        while next < wanted.len() && wanted[next] < end {
            let at = usize::try_from(wanted[next] - first_seq).unwrap_or(usize::MAX);
            if let Some(stored) = decoded.get_mut(at).and_then(Option::take) {
                found.insert(wanted[next], stored);
            }
            next += 1;
        }
    }
    Ok(found)
}

/// Appends one step to a batch's history, numbered after the last one.
async fn record_step(
    conn: &mut AnyConnection,
    batch: &BatchId,
    from: Option<BatchStatus>,
    to: BatchStatus,
    actor: (&TokenId, &str),
    now: UnixMs,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO subsidy_batch_steps (batch_id, seq, from_status, to_status, actor_token, actor_label, at_ms) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM subsidy_batch_steps WHERE batch_id = $1",
    )
    .bind(batch.as_str())
    .bind(from.map(BatchStatus::as_str))
    .bind(to.as_str())
    .bind(actor.0.as_str())
    .bind(actor.1)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The header of a new batch, written first in its upload transaction.
pub struct NewBatch<'a> {
    pub id: &'a BatchId,
    pub programme: &'a Programme,
    pub period: &'a Period,
    pub idempotency_key: &'a str,
    pub upload_sha256: &'a str,
    pub uploaded_by: (&'a TokenId, &'a str),
    pub encoding: BatchEncoding,
    pub chinese_headers: bool,
    /// The control totals the uploader stated; the upload is rolled back unless the file
    /// matches them.
    pub line_count: u64,
    pub total: Amount,
    pub now: UnixMs,
}

/// What a moved line's event needs of its batch.
#[derive(Clone, Debug)]
struct BatchOfLine {
    programme: ProgrammeId,
    region: RegionId,
    period: String,
}

/// A line's final outcome as the office's `transfer.succeeded` / `transfer.failed` callback:
/// the line by batch, sequence number and line of the uploaded file, the operator's numbers,
/// the amount and, for a failure, the operator's code and what to do. Nothing of the person
/// (the office's own file says who is on which line). A line changes once to a final state (a re-issue is a new line), so its version
/// is 1.
fn transfer_event(
    row: &AnyRow,
    batch_id: &str,
    batch: &BatchOfLine,
    line_amount: Amount,
) -> Result<crate::callbacks::NewEvent, sqlx::Error> {
    use crate::domain::callbacks::{EventOwner, EventType};
    let status: String = row.try_get("status")?;
    let out_transfer_no: String = row.try_get("out_transfer_no")?;
    let fail_code: Option<String> = row.try_get("fail_code")?;
    let succeeded_at_ms: Option<i64> = row.try_get("succeeded_at_ms")?;
    let succeeded = status == LineStatus::Succeeded.as_str();
    let mut data = serde_json::json!({
        "batch_id": batch_id,
        "seq": row.try_get::<i64, _>("seq")?,
        "file_line": row.try_get::<i64, _>("file_line")?,
        "programme_id": batch.programme.as_str(),
        "period": batch.period,
        "out_transfer_no": out_transfer_no,
        "transfer_no": row.try_get::<Option<String>, _>("transfer_no")?,
        "amount": line_amount.to_string(),
        "status": status,
    });
    if succeeded {
        data["succeeded_at"] =
            serde_json::json!(succeeded_at_ms.map(|ms| crate::domain::time::UnixMs(ms).to_rfc3339_shanghai()));
    } else {
        let code = fail_code.unwrap_or_default();
        data["fail_code"] = serde_json::json!(code);
        data["advice_zh"] = serde_json::json!(crate::domain::batch::TransferFailure::classify(&code).advice_zh());
    }
    Ok(crate::callbacks::NewEvent {
        owner: EventOwner::Office(batch.region.clone()),
        event_type: if succeeded { EventType::TransferSucceeded } else { EventType::TransferFailed },
        object_id: out_transfer_no,
        object_version: 1,
        data,
    })
}

/// Who already holds a wallet: the regions of the programmes it funds, and the facility whose
/// merchant wallet it is (with that facility's region).
#[derive(Clone, Debug, Default)]
pub struct WalletHolders {
    pub programme_regions: Vec<RegionPath>,
    pub merchant_of: Option<(FacilityId, RegionPath)>,
}

impl Store {
    pub async fn wallet_holders(&self, wallet_id: &WalletId) -> Result<WalletHolders, StoreError> {
        let programme_regions = sqlx::query_scalar::<_, String>(
            "SELECT DISTINCT r.path FROM subsidy_programmes p JOIN regions r ON r.id = p.region_id \
             WHERE p.funding_wallet_id = $1",
        )
        .bind(wallet_id.as_str())
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(RegionPath::from_trusted)
        .collect();
        let merchant_of = self
            .facility_by_wallet(wallet_id.as_str())
            .await?
            .map(|(facility, path)| (facility, RegionPath::from_trusted(path)));
        Ok(WalletHolders { programme_regions, merchant_of })
    }

    pub async fn programme(&self, id: &ProgrammeId) -> Result<Option<Programme>, StoreError> {
        let sql = format!(
            "SELECT {PROGRAMME_COLUMNS} FROM subsidy_programmes p JOIN regions r ON r.id = p.region_id WHERE p.id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(programme_from_row).transpose()?)
    }

    pub async fn batch(&self, id: &BatchId) -> Result<Option<Batch>, StoreError> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM subsidy_batches b JOIN subsidy_programmes p ON p.id = b.programme_id \
             JOIN regions r ON r.id = p.region_id WHERE b.id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(batch_from_row).transpose()?)
    }

    pub async fn batch_by_idempotency_key(&self, uploader: &TokenId, key: &str) -> Result<Option<Batch>, StoreError> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM subsidy_batches b JOIN subsidy_programmes p ON p.id = b.programme_id \
             JOIN regions r ON r.id = p.region_id WHERE b.uploaded_by = $1 AND b.idempotency_key = $2"
        );
        let row =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(uploader.as_str()).bind(key).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(batch_from_row).transpose()?)
    }

    pub async fn batch_steps(&self, id: &BatchId) -> Result<Vec<BatchStep>, StoreError> {
        let rows = sqlx::query(
            "SELECT from_status, to_status, actor_token, actor_label, at_ms FROM subsidy_batch_steps \
             WHERE batch_id = $1 ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(self.pool())
        .await?;
        let status = |raw: String| BatchStatus::parse(&raw).ok_or_else(|| corrupt("subsidy_batch_steps.status", &raw));
        let mut steps = Vec::with_capacity(rows.len());
        for row in rows {
            steps.push(BatchStep {
                from: row.try_get::<Option<String>, _>("from_status")?.map(status).transpose()?,
                to: status(row.try_get("to_status")?)?,
                actor: TokenId::from_trusted(row.try_get("actor_token")?),
                actor_label: row.try_get("actor_label")?,
                at: UnixMs(row.try_get("at_ms")?),
            });
        }
        Ok(steps)
    }

    /// Starts an upload: the batch row (draft) and its first step, in a write transaction that
    /// stays open while the caller streams chunks into it.
    pub async fn begin_batch_upload(&self, batch: &NewBatch<'_>) -> Result<BatchUpload, StoreError> {
        let mut tx = self.begin_write().await?;
        let line_count = i64::try_from(batch.line_count).map_err(|_| StoreError::GuardFailed)?;
        sqlx::query(
            "INSERT INTO subsidy_batches (id, programme_id, period, idempotency_key, upload_sha256, uploaded_by, \
             encoding, chinese_headers, status, line_count, total_fen, version, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'draft', $9, $10, 1, $11, $11)",
        )
        .bind(batch.id.as_str())
        .bind(batch.programme.id.as_str())
        .bind(batch.period.as_str())
        .bind(batch.idempotency_key)
        .bind(batch.upload_sha256)
        .bind(batch.uploaded_by.0.as_str())
        .bind(batch.encoding.as_str())
        .bind(i64::from(batch.chinese_headers))
        .bind(line_count)
        .bind(batch.total.fen())
        .bind(batch.now.0)
        .execute(&mut *tx)
        .await?;
        record_step(&mut tx, batch.id, None, BatchStatus::Draft, batch.uploaded_by, batch.now).await?;
        Ok(BatchUpload {
            tx,
            backend: self.backend(),
            batch_id: batch.id.clone(),
            programme_id: batch.programme.id.clone(),
            period: batch.period.clone(),
            now: batch.now,
        })
    }

    /// Lines and amounts of a batch by state. A file line without a row is pending: there are
    /// as many of them as the batch's lines less its rows of generation 0, for what the
    /// batch's total less those rows' amounts.
    pub async fn batch_progress(&self, id: &BatchId) -> Result<Progress, StoreError> {
        let rows = sqlx::query(
            "SELECT status, CAST(CASE WHEN reissued_as_seq IS NULL THEN 1 ELSE 0 END AS BIGINT) AS is_current, \
             CAST(CASE WHEN generation = 0 THEN 1 ELSE 0 END AS BIGINT) AS is_first_generation, COUNT(*) AS lines, \
             CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS amount_fen \
             FROM subsidy_lines WHERE batch_id = $1 GROUP BY status, is_current, is_first_generation",
        )
        .bind(id.as_str())
        .fetch_all(self.pool())
        .await?;
        let totals = sqlx::query("SELECT line_count, total_fen FROM subsidy_batches WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?;
        let mut progress = Progress::default();
        let (mut file_rows, mut file_rows_fen) = (0u64, 0i64);
        for row in rows {
            let status: String = row.try_get("status")?;
            let status = LineStatus::parse(&status).ok_or_else(|| corrupt("subsidy_lines.status", &status))?;
            let lines = count(&row, "lines")?;
            let amount_fen: i64 = row.try_get("amount_fen")?;
            if row.try_get::<i64, _>("is_first_generation")? == 1 {
                file_rows += lines;
                file_rows_fen += amount_fen;
            }
            if row.try_get::<i64, _>("is_current")? == 1 {
                let tally = progress.tally_mut(status);
                tally.lines += lines;
                tally.amount_fen += amount_fen;
            }
        }
        if let Some(totals) = totals {
            let unclaimed = count(&totals, "line_count")?.saturating_sub(file_rows);
            if unclaimed > 0 {
                progress.pending.lines += unclaimed;
                progress.pending.amount_fen += totals.try_get::<i64, _>("total_fen")? - file_rows_fen;
            }
        }
        Ok(progress)
    }

    /// A page of a batch's lines in sequence order, after `after_seq`: the chunked file lines
    /// with the state of their rows, then full rows (re-issues), as one sequence.
    pub async fn batch_lines(&self, id: &BatchId, after_seq: u64, limit: u32) -> Result<Vec<Line>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let chunked: Option<i64> = sqlx::query_scalar("SELECT chunked_lines FROM subsidy_batches WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        let chunked = u64::try_from(chunked.unwrap_or(0)).unwrap_or(0);
        let sql =
            format!("SELECT {LINE_COLUMNS} FROM subsidy_lines WHERE batch_id = $1 AND seq > $2 ORDER BY seq LIMIT $3");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .bind(seq_param(after_seq))
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
        let mut states = std::collections::HashMap::new();
        let mut full = Vec::new();
        for row in &rows {
            match row_line(row)? {
                RowLine::State(state) => {
                    states.insert(state.seq, state);
                }
                RowLine::Full(line) => full.push(line),
            }
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut lines = Vec::with_capacity(limit.min(rows.len().max(64)));
        let last_chunked = chunked.min(after_seq.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX)));
        if after_seq < last_chunked {
            for (seq, stored) in chunk_range(&mut conn, id, after_seq + 1, last_chunked).await? {
                lines.push(chunked_line(id, seq, stored, states.remove(&seq)));
            }
        }
        lines.extend(full.into_iter().filter(|line| line.seq > chunked));
        lines.truncate(limit);
        Ok(lines)
    }

    /// One line of a batch.
    pub async fn batch_line(&self, id: &BatchId, seq: u64) -> Result<Option<Line>, StoreError> {
        let Some(after) = seq.checked_sub(1) else { return Ok(None) };
        Ok(self.batch_lines(id, after, 1).await?.into_iter().find(|line| line.seq == seq))
    }

    /// Moves a batch from one of `to`'s predecessors to `to` (compare-and-set on status and
    /// version) and records who did it. `GuardFailed` when someone moved it first.
    pub async fn move_batch(
        &self,
        batch: &Batch,
        to: BatchStatus,
        actor: (&TokenId, &str),
        now: UnixMs,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        if !batch.status.may_become(to) {
            return Err(StoreError::GuardFailed);
        }
        let mut tx = self.begin_write().await?;
        move_batch_in(&mut tx, batch, to, now).await?;
        record_step(&mut tx, &batch.id, Some(batch.status), to, actor, now).await?;
        append_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Approves a draft and reserves its total against the programme's budget in one
    /// transaction; `GuardFailed` when the budget would be exceeded or the batch moved.
    pub async fn approve_batch(
        &self,
        batch: &Batch,
        actor: (&TokenId, &str),
        now: UnixMs,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let reserved = sqlx::query(
            "UPDATE subsidy_programmes SET committed_fen = committed_fen + $1 \
             WHERE id = $2 AND committed_fen + $1 <= budget_fen",
        )
        .bind(batch.total.fen())
        .bind(batch.programme_id.as_str())
        .execute(&mut *tx)
        .await?;
        if reserved.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        move_batch_in(&mut tx, batch, BatchStatus::Approved, now).await?;
        record_step(&mut tx, &batch.id, Some(batch.status), BatchStatus::Approved, actor, now).await?;
        append_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Cancels a draft or approved batch, releasing an approved batch's reservation.
    pub async fn cancel_batch(
        &self,
        batch: &Batch,
        actor: (&TokenId, &str),
        now: UnixMs,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        move_batch_in(&mut tx, batch, BatchStatus::Cancelled, now).await?;
        if batch.status == BatchStatus::Approved {
            sqlx::query("UPDATE subsidy_programmes SET committed_fen = committed_fen - $1 WHERE id = $2")
                .bind(batch.total.fen())
                .bind(batch.programme_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        record_step(&mut tx, &batch.id, Some(batch.status), BatchStatus::Cancelled, actor, now).await?;
        append_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn move_batch_in(
    conn: &mut AnyConnection,
    batch: &Batch,
    to: BatchStatus,
    now: UnixMs,
) -> Result<(), StoreError> {
    if !batch.status.may_become(to) {
        return Err(StoreError::GuardFailed);
    }
    let moved = sqlx::query(
        "UPDATE subsidy_batches SET status = $1, version = version + 1, updated_at_ms = $2 \
         WHERE id = $3 AND status = $4 AND version = $5",
    )
    .bind(to.as_str())
    .bind(now.0)
    .bind(batch.id.as_str())
    .bind(batch.status.as_str())
    .bind(batch.version)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() == 1 { Ok(()) } else { Err(StoreError::GuardFailed) }
}

impl BatchUpload {
    pub fn batch_id(&self) -> &BatchId {
        &self.batch_id
    }

    /// Stores one chunk of validated lines: `lines` encoded by
    /// [`crate::domain::line_chunk::ChunkEncoder`], their ID numbers sealed as one value bound
    /// to [`chunk_seal_context`].
    pub async fn insert_chunk(
        &mut self,
        first_seq: u64,
        line_count: u32,
        lines: &[u8],
        citizen_ids_sealed: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO subsidy_line_chunks (batch_id, first_seq, line_count, lines, citizen_ids_sealed) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(self.batch_id.as_str())
        .bind(seq_param(first_seq))
        .bind(i64::from(line_count))
        .bind(lines)
        .bind(citizen_ids_sealed)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Serialises this upload with every other upload and re-issue of the programme and
    /// period: the row is updated here and held until commit, so the checks that follow see
    /// everything committed by one that went first, and one that comes later sees this one.
    pub async fn take_period_gate(&mut self) -> Result<(), StoreError> {
        take_period_gate_in(&mut self.tx, &self.programme_id, &self.period).await
    }

    /// The other batches of the programme and period whose people count: every one not
    /// cancelled. Read after [`BatchUpload::take_period_gate`].
    pub async fn other_batches(&mut self) -> Result<Vec<OtherBatch>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, status FROM subsidy_batches WHERE programme_id = $1 AND period = $2 AND id <> $3 \
             AND status <> 'cancelled' AND chunked_lines > 0 ORDER BY id",
        )
        .bind(self.programme_id.as_str())
        .bind(self.period.as_str())
        .bind(self.batch_id.as_str())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                let status = BatchStatus::parse(&status).ok_or_else(|| corrupt("subsidy_batches.status", &status))?;
                Ok(OtherBatch { id: BatchId::from_trusted(row.try_get("id")?), open: status.is_open() })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Part `part` of another batch's people (encoded), if it has that many.
    pub async fn people_part(&mut self, batch: &BatchId, part: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let entries: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT entries FROM subsidy_batch_people WHERE batch_id = $1 AND part = $2")
                .bind(batch.as_str())
                .bind(seq_param(part))
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(entries)
    }

    /// The chunked lines of another batch that definitely failed or came back, ascending: they
    /// no longer hold their person (a re-issue has a full row of its own).
    pub async fn failed_chunked_lines(&mut self, batch: &BatchId) -> Result<Vec<u64>, StoreError> {
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT seq FROM subsidy_lines WHERE batch_id = $1 AND status IN ('failed', 'returned') AND payee_name IS NULL \
             ORDER BY seq",
        )
        .bind(batch.as_str())
        .fetch_all(&mut *self.tx)
        .await?;
        seqs.into_iter()
            .map(|seq| u64::try_from(seq).map_err(|_| corrupt("subsidy_lines.seq", &seq.to_string()).into()))
            .collect()
    }

    /// The next page of people in full rows of the other batches of the programme and period
    /// (not cancelled, line neither failed nor returned), by digest, after `after`.
    pub async fn people_in_rows(&mut self, after: &RowPersonCursor, limit: u32) -> Result<Vec<RowPerson>, StoreError> {
        let rows = sqlx::query(
            "SELECT l.citizen_id_hmac, l.batch_id, l.seq, l.amount_fen, b.status FROM subsidy_lines l \
             JOIN subsidy_batches b ON b.id = l.batch_id \
             WHERE b.programme_id = $1 AND b.period = $2 AND b.id <> $3 AND b.status <> 'cancelled' \
             AND l.citizen_id_hmac IS NOT NULL AND l.status NOT IN ('failed', 'returned') \
             AND (l.citizen_id_hmac > $4 OR (l.citizen_id_hmac = $4 AND (l.batch_id > $5 OR (l.batch_id = $5 AND l.seq > $6)))) \
             ORDER BY l.citizen_id_hmac, l.batch_id, l.seq LIMIT $7",
        )
        .bind(self.programme_id.as_str())
        .bind(self.period.as_str())
        .bind(self.batch_id.as_str())
        .bind(after.citizen_id_hmac.as_str())
        .bind(after.batch_id.as_str())
        .bind(after.seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.tx)
        .await?;
        let mut people = Vec::with_capacity(rows.len());
        for row in rows {
            let status: String = row.try_get("status")?;
            let status = BatchStatus::parse(&status).ok_or_else(|| corrupt("subsidy_batches.status", &status))?;
            let citizen_id_hmac: String = row.try_get("citizen_id_hmac")?;
            people.push(RowPerson {
                open: status.is_open(),
                amount_fen: row.try_get("amount_fen")?,
                cursor: RowPersonCursor {
                    citizen_id_hmac: citizen_id_hmac.clone(),
                    batch_id: row.try_get("batch_id")?,
                    seq: row.try_get("seq")?,
                },
                citizen_id_hmac,
            });
        }
        Ok(people)
    }

    /// Stores part `part` of this batch's people (encoded, sorted by digest after the parts
    /// before it).
    pub async fn insert_people_part(&mut self, part: u64, entries: &[u8]) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO subsidy_batch_people (batch_id, part, entries) VALUES ($1, $2, $3)")
            .bind(self.batch_id.as_str())
            .bind(seq_param(part))
            .bind(entries)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records what is known only once the whole file has been read: its digest, and how many
    /// lines the chunks hold.
    pub async fn finish(&mut self, sha256: &str, chunked_lines: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE subsidy_batches SET upload_sha256 = $1, chunked_lines = $2 WHERE id = $3")
            .bind(sha256)
            .bind(seq_param(chunked_lines))
            .bind(self.batch_id.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Makes the batch and its lines durable, with the upload's audit record (appended last, so
    /// the audit chain is held only for the commit, not for the whole upload). Without this
    /// call nothing is kept.
    pub async fn commit(mut self, audit: &AuditEntry<'_>) -> Result<(), StoreError> {
        append_in(&mut self.tx, audit, self.now).await?;
        self.tx.commit().await?;
        Ok(())
    }

    pub fn backend(&self) -> super::Backend {
        self.backend
    }
}

/// See [`BatchUpload::take_period_gate`]; re-issues take it too, since a re-issued line holds
/// its person again.
async fn take_period_gate_in(
    conn: &mut AnyConnection,
    programme: &ProgrammeId,
    period: &Period,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO subsidy_period_gates (programme_id, period, version) VALUES ($1, $2, 1) \
         ON CONFLICT (programme_id, period) DO UPDATE SET version = subsidy_period_gates.version + 1",
    )
    .bind(programme.as_str())
    .bind(period.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A line claimed by a worker, with what it needs to talk to the operator.
#[derive(Clone, Debug)]
pub struct ClaimedLine {
    pub line: Line,
    pub funding_wallet_id: WalletId,
    /// First claim: the transfer has never been sent. Later claims resolve an unknown outcome.
    pub first_attempt: bool,
}

/// A definite answer about a line.
#[derive(Clone, Debug)]
pub enum LineOutcome {
    Succeeded { transfer_no: Option<String>, at: UnixMs },
    Failed { transfer_no: Option<String>, fail_code: String },
}

/// The ledger account mirroring a programme's funding: credited with the budget when the
/// programme is created, debited by every successful transfer, never below zero.
pub fn budget_account(programme: &ProgrammeId) -> crate::domain::ledger::AccountCode {
    let code = format!("programme:{}:budget", programme.as_str());
    crate::domain::ledger::AccountCode::parse(&code).expect("programme ids are lowercase hex")
}

/// Where a programme's budget comes from (the office's allocation); may go negative.
fn allocation_account(programme: &ProgrammeId) -> crate::domain::ledger::AccountCode {
    let code = format!("programme:{}:allocation", programme.as_str());
    crate::domain::ledger::AccountCode::parse(&code).expect("programme ids are lowercase hex")
}

/// Money paid out to beneficiaries' wallets; may go negative (it only receives credits).
fn paid_account(programme: &ProgrammeId) -> crate::domain::ledger::AccountCode {
    let code = format!("programme:{}:paid", programme.as_str());
    crate::domain::ledger::AccountCode::parse(&code).expect("programme ids are lowercase hex")
}

const CLAIM_RETURNING: &str = "RETURNING batch_id, seq, file_line, generation, reissue_of_seq, reissued_as_seq, \
     payee_name, name_masked, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no, status, fail_code, \
     transfer_no, succeeded_at_ms, attempts, returned_at_ms, return_reason, return_operator_ref";

/// Funding wallets of the batches one claim touches, each looked up once.
#[derive(Default)]
struct FundingWallets(std::collections::HashMap<String, WalletId>);

impl FundingWallets {
    async fn of(&mut self, conn: &mut AnyConnection, batch: &BatchId) -> Result<WalletId, StoreError> {
        if let Some(wallet) = self.0.get(batch.as_str()) {
            return Ok(wallet.clone());
        }
        let wallet: String = sqlx::query_scalar(
            "SELECT p.funding_wallet_id FROM subsidy_batches b JOIN subsidy_programmes p ON p.id = b.programme_id \
             WHERE b.id = $1",
        )
        .bind(batch.as_str())
        .fetch_one(&mut *conn)
        .await?;
        let wallet = WalletId::from_trusted(wallet);
        self.0.insert(batch.as_str().to_owned(), wallet.clone());
        Ok(wallet)
    }
}

impl Store {
    /// Books a new programme's budget into the ledger with the programme row.
    pub async fn insert_programme(&self, programme: &Programme, audit: &AuditEntry<'_>) -> Result<(), StoreError> {
        use crate::domain::ledger::{JournalEntry, OverdraftPolicy};
        let mut tx = self.begin_write().await?;
        let merchants: Vec<&str> = programme.designated_merchants.iter().map(WalletId::as_str).collect();
        sqlx::query(
            "INSERT INTO subsidy_programmes (id, region_id, name, funding_wallet_id, budget_fen, committed_fen, \
             per_payment_cap_fen, per_period_cap_fen, designated_merchants, starts_on, ends_on, created_by, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(programme.id.as_str())
        .bind(programme.region_id.as_str())
        .bind(programme.name.as_str())
        .bind(programme.funding_wallet_id.as_str())
        .bind(programme.budget.fen())
        .bind(programme.per_payment_cap.fen())
        .bind(programme.per_period_cap.fen())
        .bind(merchants.join(","))
        .bind(programme.starts_on.as_str())
        .bind(programme.ends_on.as_str())
        .bind(programme.created_by.as_str())
        .bind(programme.created_at.0)
        .execute(&mut *tx)
        .await?;
        let (budget, allocation) = (budget_account(&programme.id), allocation_account(&programme.id));
        super::ledger::open_account_in(&mut tx, &budget, OverdraftPolicy::Forbidden, programme.created_at).await?;
        super::ledger::open_account_in(&mut tx, &allocation, OverdraftPolicy::Allowed, programme.created_at).await?;
        super::ledger::open_account_in(
            &mut tx,
            &paid_account(&programme.id),
            OverdraftPolicy::Allowed,
            programme.created_at,
        )
        .await?;
        let entry = JournalEntry::transfer(allocation, budget, programme.budget).map_err(StoreError::Ledger)?;
        let what = super::ledger::EntryRef { kind: "programme_budget", reference: programme.id.as_str(), memo: "" };
        super::ledger::post_in(&mut tx, what, &entry, programme.created_at, &self.known_accounts).await?;
        append_in(&mut tx, audit, programme.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` lines that need the operator: lines already with a row that are due
    /// (pending re-issues of running or completed batches, lines of batches stored before
    /// chunks, sent lines whose outcome is due to be asked again), then the next unclaimed
    /// lines of running batches. Either way the line is durably `sending`, its attempt counted
    /// and its lease taken before any request leaves, and two instances never hold it.
    pub async fn claim_lines(
        &self,
        owner: &str,
        now: UnixMs,
        lease_ms: i64,
        query_delay_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedLine>, StoreError> {
        let mut claimed = self.claim_rows(owner, now, lease_ms, query_delay_ms, limit).await?;
        let left = limit.saturating_sub(u32::try_from(claimed.len()).unwrap_or(u32::MAX));
        if left > 0 {
            claimed.extend(self.claim_chunked(owner, now, lease_ms, query_delay_ms, left).await?);
        }
        Ok(claimed)
    }

    /// Lines with a row: one UPDATE marks them `sending`. Three index-backed picks, each
    /// bounded: pending lines of running batches, re-issued lines of completed batches, and sent
    /// lines due for a query. Every pick reads only the partial indexes of claimable lines, so
    /// the cost does not grow with the finished ones. Index order (no ORDER BY) keeps the scan
    /// a range read rather than a sort.
    async fn claim_rows(
        &self,
        owner: &str,
        now: UnixMs,
        lease_ms: i64,
        query_delay_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedLine>, StoreError> {
        let sql = format!(
            "UPDATE subsidy_lines SET status = 'sending', attempts = attempts + 1, lease_owner = $1, \
             lease_until_ms = $2, next_attempt_at_ms = $3, updated_at_ms = $4 \
             WHERE (batch_id, seq) IN ( \
               SELECT batch_id, seq FROM (SELECT l.batch_id, l.seq FROM subsidy_lines l \
                 WHERE l.status = 'pending' AND l.batch_id IN (SELECT id FROM subsidy_batches WHERE status = 'running') \
                 AND (l.lease_until_ms IS NULL OR l.lease_until_ms < $4) LIMIT $5) running_lines \
               UNION ALL \
               SELECT batch_id, seq FROM (SELECT l.batch_id, l.seq FROM subsidy_lines l \
                 WHERE l.status = 'pending' AND l.generation > 0 \
                 AND l.batch_id IN (SELECT id FROM subsidy_batches WHERE status = 'completed') \
                 AND (l.lease_until_ms IS NULL OR l.lease_until_ms < $4) LIMIT $5) reissued_lines \
               UNION ALL \
               SELECT batch_id, seq FROM (SELECT l.batch_id, l.seq FROM subsidy_lines l \
                 WHERE l.status = 'sending' AND l.next_attempt_at_ms <= $4 \
                 AND (l.lease_until_ms IS NULL OR l.lease_until_ms < $4) LIMIT $5) due_lines) \
             AND status IN ('pending', 'sending') AND (lease_until_ms IS NULL OR lease_until_ms < $4) {CLAIM_RETURNING}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(now.0 + lease_ms)
            .bind(now.0 + query_delay_ms)
            .bind(now.0)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool().acquire().await?;
        let mut lines = Vec::with_capacity(rows.len());
        // Rows of chunked lines hold only their state: their name, wallet and memo come from the
        // chunk, each chunk read once per batch.
        let mut states: std::collections::BTreeMap<String, Vec<LineState>> = std::collections::BTreeMap::new();
        for row in &rows {
            match row_line(row)? {
                RowLine::Full(line) => lines.push(line),
                RowLine::State(state) => {
                    states.entry(row.try_get("batch_id")?).or_default().push(state);
                }
            }
        }
        for (batch, states) in states {
            let batch = BatchId::from_trusted(batch);
            let seqs: Vec<u64> = states.iter().map(|state| state.seq).collect();
            let mut stored = chunk_lines_at(&mut conn, &batch, &seqs).await?;
            for state in states {
                let chunk_line = stored
                    .remove(&state.seq)
                    .ok_or_else(|| corrupt("subsidy_line_chunks", &format!("{batch} line {}", state.seq)))?;
                lines.push(chunked_line(&batch, state.seq, chunk_line, Some(state)));
            }
        }
        let mut wallets = FundingWallets::default();
        let mut claimed = Vec::with_capacity(lines.len());
        for line in lines {
            let funding_wallet_id = wallets.of(&mut conn, &line.batch_id).await?;
            let first_attempt = line.attempts == 1;
            claimed.push(ClaimedLine { line, funding_wallet_id, first_attempt });
        }
        Ok(claimed)
    }

    /// The next unclaimed lines of running batches, in order. Each batch row is locked while
    /// its range is taken (PostgreSQL `FOR UPDATE`: a second instance waits for the first to
    /// commit and then takes the range after it; SQLite has one writer anyway), and the rows of
    /// the range are inserted as `sending` in the same transaction that raises
    /// `claimed_lines`, so a line is claimed exactly once and a crash claims nothing.
    async fn claim_chunked(
        &self,
        owner: &str,
        now: UnixMs,
        lease_ms: i64,
        query_delay_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedLine>, StoreError> {
        // Most rounds find nothing to take; a read says so without a write transaction.
        let waiting: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM subsidy_batches WHERE status = 'running' AND claimed_lines < chunked_lines LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        if waiting.is_none() {
            return Ok(Vec::new());
        }
        let lock = match self.backend() {
            super::Backend::Postgres => "FOR UPDATE",
            super::Backend::Sqlite => "",
        };
        let mut tx = self.begin_write().await?;
        let candidates: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM subsidy_batches WHERE status = 'running' AND claimed_lines < chunked_lines \
             ORDER BY id LIMIT $1",
        )
        .bind(CLAIM_BATCHES_PER_ROUND)
        .fetch_all(&mut *tx)
        .await?;
        // Each batch row is locked only once its lines are wanted, in id order like every claim.
        let locked = format!(
            "SELECT claimed_lines, chunked_lines FROM subsidy_batches WHERE id = $1 AND status = 'running' {lock}"
        );
        let mut claimed = Vec::new();
        let mut left = u64::from(limit);
        let mut wallets = FundingWallets::default();
        for batch in candidates {
            if left == 0 {
                break;
            }
            let batch = BatchId::from_trusted(batch);
            let row =
                sqlx::query(sqlx::AssertSqlSafe(locked.as_str())).bind(batch.as_str()).fetch_optional(&mut *tx).await?;
            // Paused or completed meanwhile.
            let Some(row) = row else { continue };
            let (already, chunked) = (count(&row, "claimed_lines")?, count(&row, "chunked_lines")?);
            let take = left.min(chunked.saturating_sub(already));
            if take == 0 {
                continue;
            }
            let range = chunk_range(&mut tx, &batch, already + 1, already + take).await?;
            if u64::try_from(range.len()).ok() != Some(take) {
                return Err(corrupt(
                    "subsidy_line_chunks",
                    &format!("{batch} lines {} to {}", already + 1, already + take),
                )
                .into());
            }
            let moved = sqlx::query(
                "UPDATE subsidy_batches SET claimed_lines = $1 WHERE id = $2 AND claimed_lines = $3 \
                 AND status = 'running' AND $1 <= chunked_lines",
            )
            .bind(seq_param(already + take))
            .bind(batch.as_str())
            .bind(seq_param(already))
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() != 1 {
                // Moved meanwhile (only possible without the row lock): claim it next round.
                continue;
            }
            let rows: Vec<serde_json::Value> = range
                .iter()
                .map(|(seq, stored)| {
                    serde_json::json!({
                        "seq": seq, "file_line": stored.file_line, "amount_fen": stored.amount.fen(),
                        "out_transfer_no": out_transfer_no(&batch, *seq),
                    })
                })
                .collect();
            let select = match self.backend() {
                super::Backend::Postgres => {
                    "SELECT $1, r.seq, r.file_line, 0, r.amount_fen, r.out_transfer_no, 'sending', 1, $3, $4, $5, $6 \
                     FROM json_to_recordset($2::json) AS r(seq BIGINT, file_line BIGINT, amount_fen BIGINT, \
                     out_transfer_no TEXT)"
                }
                super::Backend::Sqlite => {
                    "SELECT $1, value ->> 'seq', value ->> 'file_line', 0, value ->> 'amount_fen', \
                     value ->> 'out_transfer_no', 'sending', 1, $3, $4, $5, $6 FROM json_each($2)"
                }
            };
            let sql = format!(
                "INSERT INTO subsidy_lines (batch_id, seq, file_line, generation, amount_fen, out_transfer_no, status, \
                 attempts, lease_owner, lease_until_ms, next_attempt_at_ms, updated_at_ms) {select}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(batch.as_str())
                .bind(serde_json::Value::Array(rows).to_string())
                .bind(owner)
                .bind(now.0 + lease_ms)
                .bind(now.0 + query_delay_ms)
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
            let funding_wallet_id = wallets.of(&mut tx, &batch).await?;
            for (seq, stored) in range {
                let state = LineState {
                    seq,
                    file_line: stored.file_line,
                    generation: 0,
                    reissue_of_seq: None,
                    reissued_as_seq: None,
                    amount: stored.amount,
                    out_transfer_no: out_transfer_no(&batch, seq),
                    status: LineStatus::Sending,
                    fail_code: None,
                    transfer_no: None,
                    succeeded_at: None,
                    attempts: 1,
                    returned: None,
                };
                let line = chunked_line(&batch, seq, stored, Some(state));
                claimed.push(ClaimedLine { line, funding_wallet_id: funding_wallet_id.clone(), first_attempt: true });
            }
            left -= take;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Leaves a sent line for a later query and gives up the lease.
    pub async fn reschedule_line(&self, line: &Line, owner: &str, next_at: UnixMs) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE subsidy_lines SET next_attempt_at_ms = $1, lease_owner = NULL, lease_until_ms = NULL \
             WHERE batch_id = $2 AND seq = $3 AND status = 'sending' AND lease_owner = $4",
        )
        .bind(next_at.0)
        .bind(line.batch_id.as_str())
        .bind(i64::try_from(line.seq).unwrap_or(i64::MAX))
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a definite answer, once: the line moves forward only from pending or sending, and
    /// in the same transaction a success is booked (budget to paid) and a failure gives its
    /// amount back to the programme's budget. `false` when the line was already final.
    pub async fn finish_line(
        &self,
        out_transfer_no: &str,
        outcome: &LineOutcome,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let moved = self.finish_lines(&[(out_transfer_no.to_owned(), outcome.clone())], now).await?;
        Ok(moved == 1)
    }

    /// [`Store::finish_line`] for many lines in one transaction (one commit for a worker's round)
    /// and a fixed number of statements: the lines move with one UPDATE that reads the
    /// outcomes as a JSON array, successes are booked with [`post_many_in`], and failures give
    /// their amounts back with one UPDATE per programme. Ledger accounts are moved before
    /// programme rows, as in every transaction here, so two instances cannot deadlock.
    /// Returns how many lines moved.
    pub async fn finish_lines(&self, outcomes: &[(String, LineOutcome)], now: UnixMs) -> Result<usize, StoreError> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        let rows: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|(out_transfer_no, outcome)| match outcome {
                LineOutcome::Succeeded { transfer_no, at } => serde_json::json!({
                    "out_transfer_no": out_transfer_no, "status": LineStatus::Succeeded.as_str(),
                    "transfer_no": transfer_no, "fail_code": null, "succeeded_at_ms": at.0,
                }),
                LineOutcome::Failed { transfer_no, fail_code } => serde_json::json!({
                    "out_transfer_no": out_transfer_no, "status": LineStatus::Failed.as_str(),
                    "transfer_no": transfer_no, "fail_code": fail_code, "succeeded_at_ms": null,
                }),
            })
            .collect();
        let mut tx = self.begin_write().await?;
        let sql = match self.backend() {
            super::Backend::Postgres => {
                "UPDATE subsidy_lines AS l SET status = r.status, transfer_no = COALESCE(r.transfer_no, l.transfer_no), \
                 fail_code = r.fail_code, succeeded_at_ms = r.succeeded_at_ms, next_attempt_at_ms = NULL, \
                 lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = $2 \
                 FROM json_to_recordset($1::json) AS r(out_transfer_no TEXT, status TEXT, transfer_no TEXT, \
                 fail_code TEXT, succeeded_at_ms BIGINT) \
                 WHERE l.out_transfer_no = r.out_transfer_no AND l.status IN ('pending', 'sending') \
                 RETURNING l.out_transfer_no, l.batch_id, l.seq, l.file_line, l.amount_fen, l.status, l.transfer_no, \
                 l.fail_code, l.succeeded_at_ms"
            }
            super::Backend::Sqlite => {
                "UPDATE subsidy_lines SET status = r.status, transfer_no = COALESCE(r.transfer_no, subsidy_lines.transfer_no), \
                 fail_code = r.fail_code, succeeded_at_ms = r.succeeded_at_ms, next_attempt_at_ms = NULL, \
                 lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = $2 \
                 FROM (SELECT value ->> 'out_transfer_no' AS out_transfer_no, value ->> 'status' AS status, \
                 value ->> 'transfer_no' AS transfer_no, value ->> 'fail_code' AS fail_code, \
                 value ->> 'succeeded_at_ms' AS succeeded_at_ms FROM json_each($1)) AS r \
                 WHERE subsidy_lines.out_transfer_no = r.out_transfer_no AND subsidy_lines.status IN ('pending', 'sending') \
                 RETURNING out_transfer_no, batch_id, seq, file_line, amount_fen, status, transfer_no, fail_code, \
                 succeeded_at_ms"
            }
        };
        let moved_rows =
            sqlx::query(sql).bind(serde_json::Value::Array(rows).to_string()).bind(now.0).fetch_all(&mut *tx).await?;
        let mut batches: std::collections::HashMap<String, BatchOfLine> = std::collections::HashMap::new();
        let mut succeeded: Vec<(String, ProgrammeId, Amount)> = Vec::new();
        let mut released: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        let mut events = Vec::with_capacity(moved_rows.len());
        for row in &moved_rows {
            let batch_id: String = row.try_get("batch_id")?;
            let batch = match batches.get(&batch_id) {
                Some(batch) => batch.clone(),
                None => {
                    let found = sqlx::query(
                        "SELECT b.programme_id, p.region_id, b.period FROM subsidy_batches b \
                         JOIN subsidy_programmes p ON p.id = b.programme_id WHERE b.id = $1",
                    )
                    .bind(batch_id.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                    let batch = BatchOfLine {
                        programme: ProgrammeId::from_trusted(found.try_get("programme_id")?),
                        region: RegionId::from_trusted(found.try_get("region_id")?),
                        period: found.try_get("period")?,
                    };
                    batches.insert(batch_id.clone(), batch.clone());
                    batch
                }
            };
            let line_amount = amount(row, "amount_fen")?;
            if row.try_get::<String, _>("status")? == LineStatus::Succeeded.as_str() {
                succeeded.push((row.try_get("out_transfer_no")?, batch.programme.clone(), line_amount));
            } else {
                *released.entry(batch.programme.as_str().to_owned()).or_default() += line_amount.fen();
            }
            events.push(transfer_event(row, &batch_id, &batch, line_amount)?);
        }
        let entries = succeeded
            .iter()
            .map(|(out_transfer_no, programme, line_amount)| {
                let entry = crate::domain::ledger::JournalEntry::transfer(
                    budget_account(programme),
                    paid_account(programme),
                    *line_amount,
                )
                .map_err(StoreError::Ledger)?;
                let what = super::ledger::EntryRef { kind: "subsidy_transfer", reference: out_transfer_no, memo: "" };
                Ok((what, entry))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        super::ledger::post_many_in(&mut tx, &entries, now, &self.known_accounts).await?;
        for (programme, released_fen) in released {
            sqlx::query("UPDATE subsidy_programmes SET committed_fen = committed_fen - $1 WHERE id = $2")
                .bind(released_fen)
                .bind(programme)
                .execute(&mut *tx)
                .await?;
        }
        // The office hears of each outcome with the change itself: no outcome without its
        // callback, no callback for an outcome rolled back.
        let events: Vec<&crate::callbacks::NewEvent> = events.iter().collect();
        super::callbacks::enqueue_many_in(&mut tx, &events, now).await?;
        tx.commit().await?;
        crate::telemetry::transfers_finished(succeeded.len(), moved_rows.len() - succeeded.len());
        Ok(moved_rows.len())
    }

    /// Running batches none of whose lines still need the operator (bounded): every chunked
    /// line claimed, and no row pending or sending.
    pub async fn batches_ready_to_complete(&self, limit: u32) -> Result<Vec<Batch>, StoreError> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM subsidy_batches b JOIN subsidy_programmes p ON p.id = b.programme_id \
             JOIN regions r ON r.id = p.region_id WHERE b.status = 'running' AND b.claimed_lines >= b.chunked_lines \
             AND NOT EXISTS (SELECT 1 FROM subsidy_lines l WHERE l.batch_id = b.id AND l.status IN ('pending', 'sending')) \
             LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i64::from(limit)).fetch_all(self.pool()).await?;
        Ok(rows.iter().map(batch_from_row).collect::<Result<_, _>>()?)
    }

    /// Running -> completed, with its step and the office's callback in one transaction.
    pub async fn complete_batch(
        &self,
        batch: &Batch,
        event: &crate::callbacks::NewEvent,
        actor: (&TokenId, &str),
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        move_batch_in(&mut tx, batch, BatchStatus::Completed, now).await?;
        record_step(&mut tx, &batch.id, Some(batch.status), BatchStatus::Completed, actor, now).await?;
        super::callbacks::enqueue_in(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Re-issues a failed line with corrected name and wallet: a new full row (next sequence
    /// number, next generation, its own `out_transfer_no`, the person the caller digested and
    /// sealed from the old line) linked both ways to the old one, and the amount reserved against
    /// the budget again. Takes the period gate, since the person is held again. `GuardFailed`
    /// when the line is not a failed or returned, not yet re-issued line, or the budget no longer covers it.
    pub async fn reissue_line(
        &self,
        batch: &Batch,
        reissue: &Reissue<'_>,
        now: UnixMs,
        audit: &AuditEntry<'_>,
    ) -> Result<Line, StoreError> {
        let (source, payee_name, wallet_id) = (reissue.source, reissue.payee_name, reissue.wallet_id);
        let mut tx = self.begin_write().await?;
        take_period_gate_in(&mut tx, &batch.programme_id, &batch.period).await?;
        let seq = seq_param(source.seq);
        // After every row and every chunked line, claimed or not.
        let next: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN COALESCE(MAX(l.seq), 0) > b.chunked_lines THEN COALESCE(MAX(l.seq), 0) \
             ELSE b.chunked_lines END + 1 FROM subsidy_batches b LEFT JOIN subsidy_lines l ON l.batch_id = b.id \
             WHERE b.id = $1 GROUP BY b.chunked_lines",
        )
        .bind(batch.id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let marked = sqlx::query(
            "UPDATE subsidy_lines SET reissued_as_seq = $1, updated_at_ms = $2 \
             WHERE batch_id = $3 AND seq = $4 AND status IN ('failed', 'returned') AND reissued_as_seq IS NULL",
        )
        .bind(next)
        .bind(now.0)
        .bind(batch.id.as_str())
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        let out_no = out_transfer_no(&batch.id, u64::try_from(next).unwrap_or_default());
        sqlx::query(
            "INSERT INTO subsidy_lines (batch_id, seq, file_line, generation, reissue_of_seq, payee_name, name_masked, \
             citizen_id_hmac, citizen_id_sealed, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no, status, \
             attempts, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'pending', 0, $15)",
        )
        .bind(batch.id.as_str())
        .bind(next)
        .bind(seq_param(source.file_line))
        .bind(seq_param(source.generation + 1))
        .bind(seq)
        .bind(payee_name)
        .bind(mask_name(payee_name))
        .bind(reissue.citizen_id_hmac.as_str())
        .bind(reissue.citizen_id_sealed.as_str())
        .bind(reissue.citizen_id_masked.as_str())
        .bind(wallet_id.as_str())
        .bind(source.amount.fen())
        .bind(source.memo.as_str())
        .bind(out_no.as_str())
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        let reserved = sqlx::query(
            "UPDATE subsidy_programmes SET committed_fen = committed_fen + $1 \
             WHERE id = $2 AND committed_fen + $1 <= budget_fen",
        )
        .bind(source.amount.fen())
        .bind(batch.programme_id.as_str())
        .execute(&mut *tx)
        .await?;
        if reserved.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        let sql = format!("SELECT {LINE_COLUMNS} FROM subsidy_lines WHERE batch_id = $1 AND seq = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(batch.id.as_str()).bind(next).fetch_one(&mut *tx).await?;
        let RowLine::Full(line) = row_line(&row)? else {
            return Err(corrupt("subsidy_lines", "a re-issued line without its data").into());
        };
        super::audit::append_about_in(
            &mut tx,
            Some(audit),
            audit.object_id,
            serde_json::json!({"new_line": next}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(line)
    }

    /// Where the sealed ID number of a line is, for the owning office only, with its masked
    /// form. A full row has its own sealed copy; a re-issued line carries its first
    /// generation's number, sealed for that line's `out_transfer_no`. A chunked line's number is
    /// in its chunk's sealed list.
    pub async fn line_sealed_citizen_id(
        &self,
        batch: &BatchId,
        seq: u64,
    ) -> Result<Option<(SealedCitizenId, String)>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let row = sqlx::query(
            "SELECT l.citizen_id_sealed, f.out_transfer_no, l.citizen_id_masked FROM subsidy_lines l \
             JOIN subsidy_lines f ON f.batch_id = l.batch_id AND f.file_line = l.file_line AND f.generation = 0 \
             WHERE l.batch_id = $1 AND l.seq = $2 AND l.citizen_id_sealed IS NOT NULL",
        )
        .bind(batch.as_str())
        .bind(seq_param(seq))
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = row {
            let bound_to: String = row.try_get(1)?;
            let sealed = SealedCitizenId::Row { sealed: row.try_get(0)?, context: format!("{bound_to}/citizen_id") };
            return Ok(Some((sealed, row.try_get(2)?)));
        }
        let row = sqlx::query(
            "SELECT c.first_seq, c.line_count, c.lines, c.citizen_ids_sealed FROM subsidy_line_chunks c \
             WHERE c.batch_id = $1 AND c.first_seq <= $2 AND c.first_seq + c.line_count > $2",
        )
        .bind(batch.as_str())
        .bind(seq_param(seq))
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let first_seq = count(&row, "first_seq")?;
        let line_count = count(&row, "line_count")?;
        let index = usize::try_from(seq - first_seq).map_err(|_| corrupt("subsidy_line_chunks", "index"))?;
        let bytes: &[u8] = row.try_get("lines")?;
        let lines =
            decode_chunk(bytes, line_count).map_err(|e| corrupt("subsidy_line_chunks.lines", &e.to_string()))?;
        let masked = lines.into_iter().nth(index).map(|line| line.citizen_id_masked).unwrap_or_default();
        let sealed = SealedCitizenId::Chunk {
            sealed: row.try_get("citizen_ids_sealed")?,
            context: chunk_seal_context(batch, first_seq),
            index,
            line_count,
        };
        Ok(Some((sealed, masked)))
    }
}
