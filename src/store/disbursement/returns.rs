//! Subsidy transfers that came back: a funding wallet's statement lists a `TRANSFER_RETURN`
//! for a line carepay recorded as paid (the person's wallet closed or frozen). The line
//! becomes `returned` with the operator's reason, its amount goes back to the programme's
//! budget (ledger and reservation alike) so the office can re-issue it, and the office hears
//! of it by a `transfer.returned` callback, all in the caller's transaction.

use sqlx::{AnyConnection, Row as _};

use super::super::StoreError;
use super::super::ledger::{EntryRef, KnownAccounts, post_many_in};
use super::{BatchOfLine, amount, budget_account, paid_account};
use crate::domain::ids::{ProgrammeId, RegionId};
use crate::domain::ledger::JournalEntry;
use crate::domain::money::Amount;
use crate::domain::time::UnixMs;

/// A `TRANSFER_RETURN` line of a funding wallet's statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenReturn {
    pub out_transfer_no: String,
    /// The statement line's own reference.
    pub operator_ref: String,
    pub amount_fen: i64,
    /// When it came back (the line's `交易时间`).
    pub at_ms: i64,
    /// The line's memo: why.
    pub reason: String,
}

/// A line this call moved to `returned`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnedLine {
    pub out_transfer_no: String,
    pub operator_ref: String,
    pub amount_fen: i64,
    pub at_ms: i64,
}

/// Returns carried by one statement.
const RETURNS_PER_UPDATE: usize = 1_000;

/// Moves every paid line of `funding_wallet_id` that `returns` names, with the same amount, to
/// `returned`; a line already returned, unknown, another wallet's or of another amount is left
/// alone (the run shows such a line as the discrepancy it is). Returns the lines moved.
pub(crate) async fn return_lines_in(
    conn: &mut AnyConnection,
    backend: super::super::Backend,
    funding_wallet_id: &str,
    returns: &[SeenReturn],
    now: UnixMs,
) -> Result<Vec<ReturnedLine>, StoreError> {
    let mut returned = Vec::new();
    for group in returns.chunks(RETURNS_PER_UPDATE) {
        returned.extend(return_group(conn, backend, funding_wallet_id, group, now).await?);
    }
    Ok(returned)
}

async fn return_group(
    conn: &mut AnyConnection,
    backend: super::super::Backend,
    funding_wallet_id: &str,
    returns: &[SeenReturn],
    now: UnixMs,
) -> Result<Vec<ReturnedLine>, StoreError> {
    let rows: Vec<serde_json::Value> = returns
        .iter()
        .map(|seen| {
            serde_json::json!({
                "out_transfer_no": seen.out_transfer_no, "operator_ref": seen.operator_ref,
                "amount_fen": seen.amount_fen, "at_ms": seen.at_ms, "reason": seen.reason,
            })
        })
        .collect();
    let of_wallet = "(SELECT b.id FROM subsidy_batches b JOIN subsidy_programmes p ON p.id = b.programme_id \
                     WHERE p.funding_wallet_id = $3)";
    let sql = match backend {
        super::super::Backend::Postgres => format!(
            "UPDATE subsidy_lines AS l SET status = 'returned', returned_at_ms = r.at_ms, return_reason = r.reason, \
             return_operator_ref = r.operator_ref, updated_at_ms = $2 \
             FROM json_to_recordset($1::json) AS r(out_transfer_no TEXT, operator_ref TEXT, amount_fen BIGINT, \
             at_ms BIGINT, reason TEXT) \
             WHERE l.out_transfer_no = r.out_transfer_no AND l.status = 'succeeded' AND l.amount_fen = r.amount_fen \
             AND l.batch_id IN {of_wallet} \
             RETURNING l.out_transfer_no, l.batch_id, l.seq, l.file_line, l.amount_fen, l.transfer_no, \
             l.returned_at_ms, l.return_reason, l.return_operator_ref"
        ),
        super::super::Backend::Sqlite => format!(
            "UPDATE subsidy_lines SET status = 'returned', returned_at_ms = r.at_ms, return_reason = r.reason, \
             return_operator_ref = r.operator_ref, updated_at_ms = $2 \
             FROM (SELECT value ->> 'out_transfer_no' AS out_transfer_no, value ->> 'operator_ref' AS operator_ref, \
             value ->> 'amount_fen' AS amount_fen, value ->> 'at_ms' AS at_ms, value ->> 'reason' AS reason \
             FROM json_each($1)) AS r \
             WHERE subsidy_lines.out_transfer_no = r.out_transfer_no AND subsidy_lines.status = 'succeeded' \
             AND subsidy_lines.amount_fen = r.amount_fen AND subsidy_lines.batch_id IN {of_wallet} \
             RETURNING out_transfer_no, batch_id, seq, file_line, amount_fen, transfer_no, returned_at_ms, \
             return_reason, return_operator_ref"
        ),
    };
    let moved = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::Value::Array(rows).to_string())
        .bind(now.0)
        .bind(funding_wallet_id)
        .fetch_all(&mut *conn)
        .await?;
    if moved.is_empty() {
        return Ok(Vec::new());
    }
    let mut batches: std::collections::HashMap<String, BatchOfLine> = std::collections::HashMap::new();
    let mut released: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    let mut entries = Vec::with_capacity(moved.len());
    let mut events = Vec::with_capacity(moved.len());
    let mut returned = Vec::with_capacity(moved.len());
    for row in &moved {
        let batch_id: String = row.try_get("batch_id")?;
        let batch = match batches.get(&batch_id) {
            Some(batch) => batch.clone(),
            None => {
                let batch = batch_of_line(conn, &batch_id).await?;
                batches.insert(batch_id.clone(), batch.clone());
                batch
            }
        };
        let line_amount = amount(row, "amount_fen")?;
        let out_transfer_no: String = row.try_get("out_transfer_no")?;
        *released.entry(batch.programme.as_str().to_owned()).or_default() += line_amount.fen();
        entries.push((out_transfer_no.clone(), batch.programme.clone(), line_amount));
        events.push(returned_event(row, &batch_id, &batch, line_amount)?);
        returned.push(ReturnedLine {
            out_transfer_no,
            operator_ref: row.try_get::<Option<String>, _>("return_operator_ref")?.unwrap_or_default(),
            amount_fen: line_amount.fen(),
            at_ms: row.try_get::<Option<i64>, _>("returned_at_ms")?.unwrap_or(now.0),
        });
    }
    // The transfer's entry (budget to paid) undone: the money is the programme's again.
    let entries = entries
        .iter()
        .map(|(out_transfer_no, programme, line_amount)| {
            let entry = JournalEntry::transfer(paid_account(programme), budget_account(programme), *line_amount)
                .map_err(StoreError::Ledger)?;
            let what = EntryRef { kind: "subsidy_transfer_return", reference: out_transfer_no, memo: "" };
            Ok((what, entry))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Ledger accounts before programme rows, as everywhere: no deadlock with a worker
    // finishing lines of the same programme.
    post_many_in(conn, &entries, now, &KnownAccounts::default()).await?;
    for (programme, released_fen) in released {
        sqlx::query("UPDATE subsidy_programmes SET committed_fen = committed_fen - $1 WHERE id = $2")
            .bind(released_fen)
            .bind(programme)
            .execute(&mut *conn)
            .await?;
    }
    let events: Vec<&crate::callbacks::NewEvent> = events.iter().collect();
    super::super::callbacks::enqueue_many_in(conn, &events, now).await?;
    Ok(returned)
}

async fn batch_of_line(conn: &mut AnyConnection, batch_id: &str) -> Result<BatchOfLine, StoreError> {
    let found = sqlx::query(
        "SELECT b.programme_id, p.region_id, b.period FROM subsidy_batches b \
         JOIN subsidy_programmes p ON p.id = b.programme_id WHERE b.id = $1",
    )
    .bind(batch_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(BatchOfLine {
        programme: ProgrammeId::from_trusted(found.try_get("programme_id")?),
        region: RegionId::from_trusted(found.try_get("region_id")?),
        period: found.try_get("period")?,
    })
}

/// The office's `transfer.returned` callback: the line as in `transfer.succeeded`, when and
/// why it came back. The line's second change, so version 2.
fn returned_event(
    row: &sqlx::any::AnyRow,
    batch_id: &str,
    batch: &BatchOfLine,
    line_amount: Amount,
) -> Result<crate::callbacks::NewEvent, sqlx::Error> {
    use crate::domain::callbacks::{EventOwner, EventType};
    let out_transfer_no: String = row.try_get("out_transfer_no")?;
    let returned_at_ms: Option<i64> = row.try_get("returned_at_ms")?;
    let data = serde_json::json!({
        "batch_id": batch_id,
        "seq": row.try_get::<i64, _>("seq")?,
        "file_line": row.try_get::<i64, _>("file_line")?,
        "programme_id": batch.programme.as_str(),
        "period": batch.period,
        "out_transfer_no": out_transfer_no,
        "transfer_no": row.try_get::<Option<String>, _>("transfer_no")?,
        "amount": line_amount.to_string(),
        "status": "returned",
        "returned_at": returned_at_ms.map(|ms| UnixMs(ms).to_rfc3339_shanghai()),
        "reason": row.try_get::<Option<String>, _>("return_reason")?,
    });
    Ok(crate::callbacks::NewEvent {
        owner: EventOwner::Office(batch.region.clone()),
        event_type: EventType::TransferReturned,
        object_id: out_transfer_no,
        object_version: 2,
        data,
    })
}
