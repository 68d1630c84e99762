//! Subsidy programmes, batches, their steps and lines.
//!
//! An upload is one write transaction ([`BatchUpload`]): the batch row, then the lines in
//! multi-row chunks, each chunk checked against the rest of the batch (unique person per batch)
//! and against other open batches of the programme and period. Dropping the upload without
//! [`BatchUpload::commit`] rolls everything back, so a rejected file leaves no rows.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::audit::{AuditEntry, append_in};
use super::directory::corrupt;
use super::{Store, StoreError, WriteTx};
use crate::domain::batch::{Batch, BatchStatus, BatchStep, Line, LineStatus, Period, Programme, Progress};
use crate::domain::directory::{RegionPath, WalletId};
use crate::domain::disbursement::BatchEncoding;
use crate::domain::ids::{BatchId, ProgrammeId, RegionId, TokenId};
use crate::domain::money::Amount;
use crate::domain::time::UnixMs;

/// Lines per multi-row INSERT: 11 parameters each stays far below SQLite's 32,766 and
/// PostgreSQL's 65,535 bound parameters, and large enough that round trips do not dominate.
pub const LINE_CHUNK: usize = 5_000;

/// A line ready to store: personal data already digested, sealed and masked by the caller.
#[derive(Clone)]
pub struct NewLine {
    pub seq: u64,
    pub file_line: u64,
    pub payee_name: String,
    pub name_masked: String,
    pub citizen_id_hmac: String,
    pub citizen_id_sealed: String,
    pub citizen_id_masked: String,
    pub wallet_id: WalletId,
    pub amount: Amount,
    pub memo: String,
    pub out_transfer_no: String,
}

/// A problem only the store can see, for one file line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredLineProblem {
    /// The same person is earlier in this batch, on `first_line`.
    DuplicateInBatch { first_line: u64 },
    /// The same person is in another open batch of the programme for the period.
    InOtherOpenBatch,
    /// With what the person already has in the period, this line passes the period cap.
    OverPeriodCap,
}

/// An upload in progress; see the module comment.
pub struct BatchUpload {
    tx: WriteTx,
    backend: super::Backend,
    batch_id: BatchId,
    programme_id: ProgrammeId,
    period: Period,
    per_period_cap_fen: i64,
    now: UnixMs,
}

pub(super) const PROGRAMME_COLUMNS: &str = "p.id, p.region_id, r.path AS region_path, p.name, p.funding_wallet_id, p.budget_fen, \
     p.committed_fen, p.per_payment_cap_fen, p.per_period_cap_fen, p.designated_merchants, p.starts_on, p.ends_on, \
     p.created_by, p.created_at_ms";

pub(super) const BATCH_COLUMNS: &str = "b.id, b.programme_id, r.path AS region_path, b.period, b.idempotency_key, \
     b.upload_sha256, b.uploaded_by, b.encoding, b.chinese_headers, b.status, b.line_count, b.total_fen, b.version, \
     b.created_at_ms, b.updated_at_ms";

const LINE_COLUMNS: &str = "batch_id, seq, file_line, generation, reissue_of_seq, reissued_as_seq, payee_name, \
     name_masked, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no, status, fail_code, transfer_no, \
     succeeded_at_ms, attempts";

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

fn line_from_row(row: &AnyRow) -> Result<Line, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let optional_count = |column: &'static str| -> Result<Option<u64>, sqlx::Error> {
        row.try_get::<Option<i64>, _>(column)?
            .map(|v| u64::try_from(v).map_err(|_| corrupt(column, &v.to_string())))
            .transpose()
    };
    Ok(Line {
        batch_id: BatchId::from_trusted(row.try_get("batch_id")?),
        seq: count(row, "seq")?,
        file_line: count(row, "file_line")?,
        generation: count(row, "generation")?,
        reissue_of_seq: optional_count("reissue_of_seq")?,
        reissued_as_seq: optional_count("reissued_as_seq")?,
        payee_name: row.try_get("payee_name")?,
        name_masked: row.try_get("name_masked")?,
        citizen_id_masked: row.try_get("citizen_id_masked")?,
        wallet_id: WalletId::from_trusted(row.try_get("wallet_id")?),
        amount: amount(row, "amount_fen")?,
        memo: row.try_get("memo")?,
        out_transfer_no: row.try_get("out_transfer_no")?,
        status: LineStatus::parse(&status).ok_or_else(|| corrupt("subsidy_lines.status", &status))?,
        fail_code: row.try_get("fail_code")?,
        transfer_no: row.try_get("transfer_no")?,
        succeeded_at: row.try_get::<Option<i64>, _>("succeeded_at_ms")?.map(UnixMs),
        attempts: u32::try_from(count(row, "attempts")?).unwrap_or(u32::MAX),
    })
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

impl Store {
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
    /// stays open while the caller streams lines into it.
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
            per_period_cap_fen: batch.programme.per_period_cap.fen(),
            now: batch.now,
        })
    }

    /// Lines and amounts of a batch by state.
    pub async fn batch_progress(&self, id: &BatchId) -> Result<Progress, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS lines, CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS amount_fen \
             FROM subsidy_lines WHERE batch_id = $1 AND reissued_as_seq IS NULL GROUP BY status",
        )
        .bind(id.as_str())
        .fetch_all(self.pool())
        .await?;
        let mut progress = Progress::default();
        for row in rows {
            let status: String = row.try_get("status")?;
            let status = LineStatus::parse(&status).ok_or_else(|| corrupt("subsidy_lines.status", &status))?;
            let tally = progress.tally_mut(status);
            tally.lines = count(&row, "lines")?;
            tally.amount_fen = row.try_get("amount_fen")?;
        }
        Ok(progress)
    }

    /// A page of a batch's lines in sequence order, after `after_seq`.
    pub async fn batch_lines(&self, id: &BatchId, after_seq: u64, limit: u32) -> Result<Vec<Line>, StoreError> {
        let sql =
            format!("SELECT {LINE_COLUMNS} FROM subsidy_lines WHERE batch_id = $1 AND seq > $2 ORDER BY seq LIMIT $3");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(line_from_row).collect::<Result<_, _>>()?)
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
    /// Inserts one chunk of lines (at most [`LINE_CHUNK`]) and returns the problems only the
    /// store can see, by file line. Rows with problems stay in the transaction; the caller
    /// rolls the whole upload back when any problem was found.
    pub async fn insert_lines(&mut self, lines: &[NewLine]) -> Result<Vec<(u64, StoredLineProblem)>, StoreError> {
        assert!(lines.len() <= LINE_CHUNK, "chunks are bounded by LINE_CHUNK");
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let mut problems = Vec::new();
        self.check_other_batches(lines, &mut problems).await?;

        // The rows travel as one JSON array the database unpacks: two parameters however many
        // rows, instead of eleven per row.
        let rows: Vec<serde_json::Value> = lines
            .iter()
            .map(|line| {
                serde_json::json!({
                    "seq": line.seq, "file_line": line.file_line, "payee_name": line.payee_name,
                    "name_masked": line.name_masked, "citizen_id_hmac": line.citizen_id_hmac,
                    "citizen_id_sealed": line.citizen_id_sealed, "citizen_id_masked": line.citizen_id_masked,
                    "wallet_id": line.wallet_id.as_str(), "amount_fen": line.amount.fen(), "memo": line.memo,
                    "out_transfer_no": line.out_transfer_no,
                })
            })
            .collect();
        let select = match self.backend {
            super::Backend::Postgres => {
                "SELECT $1, r.seq, r.file_line, 0, r.payee_name, r.name_masked, r.citizen_id_hmac, \
                 r.citizen_id_sealed, r.citizen_id_masked, r.wallet_id, r.amount_fen, r.memo, r.out_transfer_no, \
                 'pending', 0, NULL::BIGINT, $3 FROM json_to_recordset($2::json) AS r(seq BIGINT, file_line BIGINT, \
                 payee_name TEXT, name_masked TEXT, citizen_id_hmac TEXT, citizen_id_sealed TEXT, \
                 citizen_id_masked TEXT, wallet_id TEXT, amount_fen BIGINT, memo TEXT, out_transfer_no TEXT)"
            }
            // `WHERE true` lets SQLite tell the upsert's ON CONFLICT from a join's ON.
            super::Backend::Sqlite => {
                "SELECT $1, value ->> 'seq', value ->> 'file_line', 0, value ->> 'payee_name', \
                 value ->> 'name_masked', value ->> 'citizen_id_hmac', value ->> 'citizen_id_sealed', \
                 value ->> 'citizen_id_masked', value ->> 'wallet_id', value ->> 'amount_fen', value ->> 'memo', \
                 value ->> 'out_transfer_no', 'pending', 0, NULL, $3 FROM json_each($2) WHERE true"
            }
        };
        let sql = format!(
            "INSERT INTO subsidy_lines (batch_id, seq, file_line, generation, payee_name, name_masked, citizen_id_hmac, \
             citizen_id_sealed, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no, status, attempts, \
             next_attempt_at_ms, updated_at_ms) {select} \
             ON CONFLICT (batch_id, citizen_id_hmac, generation) DO NOTHING RETURNING file_line"
        );
        let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .bind(self.batch_id.as_str())
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(self.now.0);
        let inserted: std::collections::HashSet<i64> = query.fetch_all(&mut *self.tx).await?.into_iter().collect();
        for line in lines {
            if inserted.contains(&i64::try_from(line.file_line).unwrap_or(i64::MAX)) {
                continue;
            }
            let first: i64 = sqlx::query_scalar(
                "SELECT file_line FROM subsidy_lines WHERE batch_id = $1 AND citizen_id_hmac = $2 AND generation = 0",
            )
            .bind(self.batch_id.as_str())
            .bind(line.citizen_id_hmac.as_str())
            .fetch_one(&mut *self.tx)
            .await?;
            let first_line = u64::try_from(first).unwrap_or_default();
            problems.push((line.file_line, StoredLineProblem::DuplicateInBatch { first_line }));
        }
        Ok(problems)
    }

    /// People of this chunk in another open batch of the programme and period, and those the
    /// line would take over the period cap (counting every batch that is not cancelled and
    /// every line that did not definitely fail).
    async fn check_other_batches(
        &mut self,
        lines: &[NewLine],
        problems: &mut Vec<(u64, StoredLineProblem)>,
    ) -> Result<(), StoreError> {
        let people = match self.backend {
            super::Backend::Postgres => "SELECT json_array_elements_text($4::json)",
            super::Backend::Sqlite => "SELECT value FROM json_each($4)",
        };
        let sql = format!(
            "SELECT l.citizen_id_hmac, \
             CAST(SUM(CASE WHEN b.status IN ('draft', 'approved', 'running', 'paused') THEN 1 ELSE 0 END) AS BIGINT) AS open_lines, \
             CAST(COALESCE(SUM(l.amount_fen), 0) AS BIGINT) AS committed_fen \
             FROM subsidy_lines l JOIN subsidy_batches b ON b.id = l.batch_id \
             WHERE b.programme_id = $1 AND b.period = $2 AND b.id <> $3 AND b.status <> 'cancelled' \
             AND l.status <> 'failed' AND l.citizen_id_hmac IN ({people}) GROUP BY l.citizen_id_hmac"
        );
        let hmacs: Vec<&str> = lines.iter().map(|line| line.citizen_id_hmac.as_str()).collect();
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.programme_id.as_str())
            .bind(self.period.as_str())
            .bind(self.batch_id.as_str())
            .bind(serde_json::json!(hmacs).to_string());
        let rows = query.fetch_all(&mut *self.tx).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut seen = std::collections::HashMap::new();
        for row in rows {
            let hmac: String = row.try_get("citizen_id_hmac")?;
            let open: i64 = row.try_get("open_lines")?;
            let committed: i64 = row.try_get("committed_fen")?;
            seen.insert(hmac, (open, committed));
        }
        for line in lines {
            if let Some((open, committed)) = seen.get(&line.citizen_id_hmac) {
                if *open > 0 {
                    problems.push((line.file_line, StoredLineProblem::InOtherOpenBatch));
                } else if committed + line.amount.fen() > self.per_period_cap_fen {
                    problems.push((line.file_line, StoredLineProblem::OverPeriodCap));
                }
            }
        }
        Ok(())
    }

    pub fn batch_id(&self) -> &BatchId {
        &self.batch_id
    }

    /// Makes the batch and its lines durable, with the upload's audit record (appended last, so
    /// the audit chain is held only for the commit, not for the whole upload). Without this
    /// call nothing is kept.
    pub async fn commit(mut self, audit: &AuditEntry<'_>) -> Result<(), StoreError> {
        append_in(&mut self.tx, audit, self.now).await?;
        self.tx.commit().await?;
        Ok(())
    }
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
     transfer_no, succeeded_at_ms, attempts";

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

    /// Claims up to `limit` lines that need the operator: pending lines of running (or, for
    /// re-issues, completed) batches, and sent lines whose outcome is due to be asked again.
    /// One UPDATE marks them `sending`, counts the attempt and takes the lease, so the line is
    /// durably "possibly sent" before any request leaves, and two instances never hold it.
    pub async fn claim_lines(
        &self,
        owner: &str,
        now: UnixMs,
        lease_ms: i64,
        query_delay_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedLine>, StoreError> {
        // Three index-backed picks, each bounded: pending lines of running batches, re-issued
        // lines of completed batches, and sent lines due for a query. Every pick reads only the
        // partial indexes of claimable lines, so the cost does not grow with the finished ones.
        // Index order (no ORDER BY) keeps the scan a range read rather than a sort.
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
        let mut claimed = Vec::with_capacity(rows.len());
        let mut wallets: std::collections::HashMap<String, WalletId> = std::collections::HashMap::new();
        for row in rows {
            let line = line_from_row(&row)?;
            let funding_wallet_id = match wallets.get(line.batch_id.as_str()) {
                Some(wallet) => wallet.clone(),
                None => {
                    let wallet: String = sqlx::query_scalar(
                        "SELECT p.funding_wallet_id FROM subsidy_batches b \
                         JOIN subsidy_programmes p ON p.id = b.programme_id WHERE b.id = $1",
                    )
                    .bind(line.batch_id.as_str())
                    .fetch_one(self.pool())
                    .await?;
                    let wallet = WalletId::from_trusted(wallet);
                    wallets.insert(line.batch_id.as_str().to_owned(), wallet.clone());
                    wallet
                }
            };
            let first_attempt = line.attempts == 1;
            claimed.push(ClaimedLine { line, funding_wallet_id, first_attempt });
        }
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
                 RETURNING l.out_transfer_no, l.batch_id, l.amount_fen, l.status"
            }
            super::Backend::Sqlite => {
                "UPDATE subsidy_lines SET status = r.status, transfer_no = COALESCE(r.transfer_no, subsidy_lines.transfer_no), \
                 fail_code = r.fail_code, succeeded_at_ms = r.succeeded_at_ms, next_attempt_at_ms = NULL, \
                 lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = $2 \
                 FROM (SELECT value ->> 'out_transfer_no' AS out_transfer_no, value ->> 'status' AS status, \
                 value ->> 'transfer_no' AS transfer_no, value ->> 'fail_code' AS fail_code, \
                 value ->> 'succeeded_at_ms' AS succeeded_at_ms FROM json_each($1)) AS r \
                 WHERE subsidy_lines.out_transfer_no = r.out_transfer_no AND subsidy_lines.status IN ('pending', 'sending') \
                 RETURNING out_transfer_no, batch_id, amount_fen, status"
            }
        };
        let moved_rows =
            sqlx::query(sql).bind(serde_json::Value::Array(rows).to_string()).bind(now.0).fetch_all(&mut *tx).await?;
        let mut programmes: std::collections::HashMap<String, ProgrammeId> = std::collections::HashMap::new();
        let mut succeeded: Vec<(String, ProgrammeId, Amount)> = Vec::new();
        let mut released: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        for row in &moved_rows {
            let batch_id: String = row.try_get("batch_id")?;
            let programme = match programmes.get(&batch_id) {
                Some(programme) => programme.clone(),
                None => {
                    let programme: String =
                        sqlx::query_scalar("SELECT programme_id FROM subsidy_batches WHERE id = $1")
                            .bind(batch_id.as_str())
                            .fetch_one(&mut *tx)
                            .await?;
                    let programme = ProgrammeId::from_trusted(programme);
                    programmes.insert(batch_id, programme.clone());
                    programme
                }
            };
            let line_amount = amount(row, "amount_fen")?;
            if row.try_get::<String, _>("status")? == LineStatus::Succeeded.as_str() {
                succeeded.push((row.try_get("out_transfer_no")?, programme, line_amount));
            } else {
                *released.entry(programme.as_str().to_owned()).or_default() += line_amount.fen();
            }
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
        tx.commit().await?;
        Ok(moved_rows.len())
    }

    /// Running batches none of whose lines still need the operator (bounded).
    pub async fn batches_ready_to_complete(&self, limit: u32) -> Result<Vec<Batch>, StoreError> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM subsidy_batches b JOIN subsidy_programmes p ON p.id = b.programme_id \
             JOIN regions r ON r.id = p.region_id WHERE b.status = 'running' AND NOT EXISTS ( \
             SELECT 1 FROM subsidy_lines l WHERE l.batch_id = b.id AND l.status IN ('pending', 'sending')) LIMIT $1"
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

    /// Re-issues a failed line with corrected name and wallet: a new line (next sequence number,
    /// next generation, its own `out_transfer_no`) linked both ways to the old one, and the
    /// amount reserved against the budget again. `GuardFailed` when the line is not a failed,
    /// not yet re-issued line, or the budget no longer covers it.
    pub async fn reissue_line(
        &self,
        batch: &BatchId,
        seq: u64,
        payee_name: &str,
        wallet_id: &WalletId,
        now: UnixMs,
        audit: &AuditEntry<'_>,
    ) -> Result<Line, StoreError> {
        let mut tx = self.begin_write().await?;
        let seq = i64::try_from(seq).map_err(|_| StoreError::GuardFailed)?;
        let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM subsidy_lines WHERE batch_id = $1")
            .bind(batch.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let marked = sqlx::query(
            "UPDATE subsidy_lines SET reissued_as_seq = $1, updated_at_ms = $2 \
             WHERE batch_id = $3 AND seq = $4 AND status = 'failed' AND reissued_as_seq IS NULL",
        )
        .bind(next)
        .bind(now.0)
        .bind(batch.as_str())
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        let out_no = crate::domain::batch::out_transfer_no(batch, u64::try_from(next).unwrap_or_default());
        let name_masked = crate::domain::citizen_id::mask_name(payee_name);
        sqlx::query(
            "INSERT INTO subsidy_lines (batch_id, seq, file_line, generation, reissue_of_seq, payee_name, name_masked, \
             citizen_id_hmac, citizen_id_sealed, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no, status, \
             attempts, updated_at_ms) \
             SELECT batch_id, $1, file_line, generation + 1, seq, $2, $3, citizen_id_hmac, citizen_id_sealed, \
             citizen_id_masked, $4, amount_fen, memo, $5, 'pending', 0, $6 FROM subsidy_lines WHERE batch_id = $7 AND seq = $8",
        )
        .bind(next)
        .bind(payee_name)
        .bind(name_masked)
        .bind(wallet_id.as_str())
        .bind(out_no.as_str())
        .bind(now.0)
        .bind(batch.as_str())
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        let reserved = sqlx::query(
            "UPDATE subsidy_programmes SET committed_fen = committed_fen + \
             (SELECT amount_fen FROM subsidy_lines WHERE batch_id = $1 AND seq = $2) \
             WHERE id = (SELECT programme_id FROM subsidy_batches WHERE id = $1) \
             AND committed_fen + (SELECT amount_fen FROM subsidy_lines WHERE batch_id = $1 AND seq = $2) <= budget_fen",
        )
        .bind(batch.as_str())
        .bind(next)
        .execute(&mut *tx)
        .await?;
        if reserved.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        let sql = format!("SELECT {LINE_COLUMNS} FROM subsidy_lines WHERE batch_id = $1 AND seq = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(batch.as_str()).bind(next).fetch_one(&mut *tx).await?;
        let line = line_from_row(&row)?;
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

    /// The sealed ID number of a line, for the owning office only: (sealed copy, the
    /// `out_transfer_no` it is bound to, masked form). A re-issued line carries its first
    /// generation's sealed copy, so the binding is that line's number.
    pub async fn line_sealed_citizen_id(
        &self,
        batch: &BatchId,
        seq: u64,
    ) -> Result<Option<(String, String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT l.citizen_id_sealed, f.out_transfer_no, l.citizen_id_masked FROM subsidy_lines l \
             JOIN subsidy_lines f ON f.batch_id = l.batch_id AND f.file_line = l.file_line AND f.generation = 0 \
             WHERE l.batch_id = $1 AND l.seq = $2",
        )
        .bind(batch.as_str())
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
    }
}

impl BatchUpload {
    /// Writes the upload's digest once the whole file has been read.
    pub async fn set_sha256(&mut self, sha256: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE subsidy_batches SET upload_sha256 = $1 WHERE id = $2")
            .bind(sha256)
            .bind(self.batch_id.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
