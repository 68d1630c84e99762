//! carepay's own records of a wallet's day, as reconciliation compares them with the
//! statement: a facility's payments and refunds, or a funding wallet's subsidy transfers and
//! their returns, each with the fee the wallet's tariff expects.
//!
//! One column list serves both ways of reading them: the portable query (SQLite, or a wallet
//! id `COPY` cannot carry) and PostgreSQL's binary `COPY` on the native pool, which decodes a
//! million rows several times faster than the portable driver.

use sqlx::Row as _;

use super::super::directory::corrupt;
use super::super::{Store, StoreError};
use crate::domain::fees::{FeeMethod, Tariff};
use crate::domain::reconciliation::{CarepaySide, SideError, WalletOwner};
use crate::domain::statement::{EntryKind, EntryStatus};

/// What a row is, as the first column of every query below labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecordClass {
    Payment(FeeMethod),
    Refund,
    Transfer,
    TransferReturn,
}

impl RecordClass {
    fn from_code(code: i64) -> Option<RecordClass> {
        Some(match code {
            0 => RecordClass::Payment(FeeMethod::PayerCode),
            1 => RecordClass::Payment(FeeMethod::Card),
            2 => RecordClass::Payment(FeeMethod::DynamicQr),
            3 => RecordClass::Refund,
            4 => RecordClass::Transfer,
            5 => RecordClass::TransferReturn,
            _ => return None,
        })
    }
}

/// Where the queries' values go: `$n` parameters, or literals written into a `COPY`.
struct Window<'a> {
    wallet: &'a str,
    from: &'a str,
    to: &'a str,
}

/// A facility's payments settled in the window (`pages` restricts a `COPY` to part of the
/// table), then its refunds. Columns: class, merchant number, operator reference, reversed,
/// amount, settled at.
fn payments_of_day(window: &Window<'_>, pages: &str) -> String {
    let Window { wallet, from, to } = window;
    format!(
        "SELECT CAST(CASE method WHEN 'payer_code' THEN 0 WHEN 'card' THEN 1 ELSE 2 END AS BIGINT), out_trade_no, \
         trade_no, CAST(CASE WHEN status = 'reversed' THEN 1 ELSE 0 END AS BIGINT), amount_fen, paid_at_ms \
         FROM payments WHERE {pages} merchant_wallet_id = {wallet} AND paid_at_ms >= {from} AND paid_at_ms < {to} \
         AND status IN ('succeeded', 'reversed')"
    )
}

fn refunds_of_day(window: &Window<'_>) -> String {
    let Window { wallet, from, to } = window;
    format!(
        "SELECT CAST(3 AS BIGINT), r.out_refund_no, r.refund_no, CAST(0 AS BIGINT), r.amount_fen, r.succeeded_at_ms \
         FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE p.merchant_wallet_id = {wallet} \
         AND r.status = 'succeeded' AND r.succeeded_at_ms >= {from} AND r.succeeded_at_ms < {to}"
    )
}

/// The subsidy lines a funding wallet paid in the window (a returned line was paid first),
/// then those that came back in it.
fn transfers_of_day(window: &Window<'_>) -> String {
    let Window { wallet, from, to } = window;
    format!(
        "SELECT CAST(4 AS BIGINT), l.out_transfer_no, l.transfer_no, CAST(0 AS BIGINT), l.amount_fen, \
         l.succeeded_at_ms FROM subsidy_lines l WHERE l.status IN ('succeeded', 'returned') \
         AND l.succeeded_at_ms >= {from} AND l.succeeded_at_ms < {to} AND l.batch_id IN \
         (SELECT b.id FROM subsidy_batches b JOIN subsidy_programmes p ON p.id = b.programme_id \
         WHERE p.funding_wallet_id = {wallet})"
    )
}

fn returns_of_day(window: &Window<'_>) -> String {
    let Window { wallet, from, to } = window;
    format!(
        "SELECT CAST(5 AS BIGINT), l.out_transfer_no, l.return_operator_ref, CAST(0 AS BIGINT), l.amount_fen, \
         l.returned_at_ms FROM subsidy_lines l WHERE l.status = 'returned' \
         AND l.returned_at_ms >= {from} AND l.returned_at_ms < {to} AND l.batch_id IN \
         (SELECT b.id FROM subsidy_batches b JOIN subsidy_programmes p ON p.id = b.programme_id \
         WHERE p.funding_wallet_id = {wallet})"
    )
}

/// The queries of an owner's records, in the order they are loaded.
fn queries_of(owner: &WalletOwner, window: &Window<'_>) -> Vec<String> {
    match owner {
        WalletOwner::Facility(_) => vec![payments_of_day(window, ""), refunds_of_day(window)],
        WalletOwner::Programme(_) => vec![transfers_of_day(window), returns_of_day(window)],
    }
}

const PORTABLE: Window<'static> = Window { wallet: "$1", from: "$2", to: "$3" };

/// One row of any of the queries: class, merchant number, operator reference, reversed,
/// amount, settled at.
type RecordRow<'a> = (i64, &'a str, Option<&'a str>, i64, i64, i64);

fn side_error(error: SideError) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(error.to_string().into()))
}

/// Adds a row to the side with the fee `tariff` expects of it: a payment's by its method
/// (none for a reversed one: the operator gives it back), a transfer's, nothing on money
/// going back.
fn push_record(side: &mut CarepaySide, row: RecordRow<'_>, tariff: &Tariff) -> Result<(), StoreError> {
    let (class, out_no, operator_ref, reversed, amount_fen, settled_at_ms) = row;
    let class = RecordClass::from_code(class).ok_or_else(|| copy_corrupt("a record class"))?;
    let (kind, status, fee_fen) = match class {
        RecordClass::Payment(_) if reversed != 0 => (EntryKind::Payment, EntryStatus::Reversed, 0),
        RecordClass::Payment(method) => (EntryKind::Payment, EntryStatus::Success, tariff.fee_fen(method, amount_fen)),
        RecordClass::Refund => (EntryKind::Refund, EntryStatus::Success, 0),
        RecordClass::Transfer => {
            (EntryKind::Transfer, EntryStatus::Success, tariff.fee_fen(FeeMethod::Transfer, amount_fen))
        }
        RecordClass::TransferReturn => (EntryKind::TransferReturn, EntryStatus::Success, 0),
    };
    side.push_parts(out_no, operator_ref, kind, status, amount_fen, fee_fen, settled_at_ms).map_err(side_error)
}

/// The day a run compares: whose wallet, and the window of settlement times it covers.
#[derive(Clone, Debug)]
pub struct CarepayDay<'a> {
    pub wallet_id: &'a str,
    pub owner: &'a WalletOwner,
    pub from_ms: i64,
    pub to_ms: i64,
    pub tariff: Tariff,
}

impl Store {
    /// carepay's records of `day`, in the order of [`queries_of`]. On PostgreSQL they stream
    /// as binary `COPY`; a read needs no transaction, so it may run beside one.
    pub async fn carepay_side(&self, day: &CarepayDay<'_>) -> Result<CarepaySide, StoreError> {
        // `COPY` takes no parameters: only a plain wallet id is written into its text; any
        // other (none exists: ids are digits) takes the portable path.
        let wallet_id = day.wallet_id;
        let plain =
            !wallet_id.is_empty() && wallet_id.len() <= 64 && wallet_id.bytes().all(|b| b.is_ascii_alphanumeric());
        if let (Some(pool), true) = (self.bulk_pool(), plain) {
            return copy_carepay_side(pool, day, SPLIT_COPY_MIN_PAGES).await;
        }
        self.portable_carepay_side(day).await
    }

    /// The ways [`Self::carepay_side`] may read the records, for tests that hold them to
    /// the same answer: the portable query, one `COPY`, and two halves at once.
    pub async fn carepay_side_every_way(&self, day: &CarepayDay<'_>) -> Result<Vec<CarepaySide>, StoreError> {
        let mut sides = vec![self.portable_carepay_side(day).await?];
        if let Some(pool) = self.bulk_pool() {
            sides.push(copy_carepay_side(pool, day, i64::MAX).await?);
            sides.push(copy_carepay_side(pool, day, 0).await?);
        }
        Ok(sides)
    }

    async fn portable_carepay_side(&self, day: &CarepayDay<'_>) -> Result<CarepaySide, StoreError> {
        use futures_util::TryStreamExt as _;

        // Streamed row by row: a million rows fetched whole would hold every row's driver
        // representation at once, several times the records themselves.
        let mut side = CarepaySide::default();
        for query in queries_of(day.owner, &PORTABLE) {
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(query))
                .bind(day.wallet_id)
                .bind(day.from_ms)
                .bind(day.to_ms)
                .fetch(self.pool());
            while let Some(row) = rows.try_next().await? {
                let out_no: String = row.try_get(1)?;
                let operator_ref: Option<String> = row.try_get(2)?;
                let record = (
                    row.try_get(0)?,
                    out_no.as_str(),
                    operator_ref.as_deref(),
                    row.try_get(3)?,
                    row.try_get(4)?,
                    row.try_get(5)?,
                );
                push_record(&mut side, record, &day.tariff)?;
            }
        }
        Ok(side)
    }
}

/// `payments` pages from which the PostgreSQL path reads the table in two halves at once.
const SPLIT_COPY_MIN_PAGES: i64 = 4096;

/// The PostgreSQL path of [`Store::carepay_side`]: the same queries as binary `COPY`,
/// decoded as they arrive. A facility's large `payments` is read in two halves of its pages
/// (a TID range scan) on two connections at once, which share one snapshot: a row that moves
/// to another page while the day is read is seen exactly once.
async fn copy_carepay_side(
    pool: &sqlx::PgPool,
    day: &CarepayDay<'_>,
    split_min_pages: i64,
) -> Result<CarepaySide, StoreError> {
    let (wallet, from, to) = (format!("'{}'", day.wallet_id), day.from_ms.to_string(), day.to_ms.to_string());
    let window = Window { wallet: &wallet, from: &from, to: &to };
    let copy = |select: String| format!("COPY ({select}) TO STDOUT (FORMAT binary)");
    let pages: i64 = match day.owner {
        WalletOwner::Facility(_) => {
            sqlx::query_scalar(
                "SELECT CAST(pg_relation_size('payments') / current_setting('block_size')::bigint AS BIGINT)",
            )
            .fetch_one(pool)
            .await?
        }
        WalletOwner::Programme(_) => 0,
    };
    if pages < split_min_pages || pool.options().get_max_connections() < 2 {
        let mut conn = pool.acquire().await?;
        return copy_into_side(&mut conn, &copy(queries_of(day.owner, &window).join(" UNION ALL ")), &day.tariff).await;
    }
    let half = pages / 2;
    const READ_ONLY: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
    let mut first = pool.begin_with(READ_ONLY).await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()").fetch_one(&mut *first).await?;
    if !snapshot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(copy_corrupt("an exported snapshot id"));
    }
    let mut second = pool.begin_with(READ_ONLY).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))).execute(&mut *second).await?;
    let first_half = copy(payments_of_day(&window, &format!("ctid < '({half},0)'::tid AND")));
    let second_half = copy(format!(
        "{} UNION ALL {}",
        payments_of_day(&window, &format!("ctid >= '({half},0)'::tid AND")),
        refunds_of_day(&window)
    ));
    let (mut side, rest) = tokio::try_join!(
        copy_into_side(&mut first, &first_half, &day.tariff),
        copy_into_side(&mut second, &second_half, &day.tariff),
    )?;
    first.commit().await?;
    second.commit().await?;
    side.append(&rest).map_err(side_error)?;
    Ok(side)
}

async fn copy_into_side(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    tariff: &Tariff,
) -> Result<CarepaySide, StoreError> {
    use futures_util::TryStreamExt as _;

    let mut stream = conn.copy_out_raw(statement).await?;
    let mut side = CarepaySide::default();
    let mut decoder = CopyDecoder::default();
    while let Some(message) = stream.try_next().await? {
        decoder.feed(&message, |row| push_record(&mut side, row, tariff))?;
    }
    decoder.finish()?;
    Ok(side)
}

/// PostgreSQL's binary `COPY` format (signature, flags, header extension, then tuples of
/// length-prefixed fields, then -1), read from messages that need not end on a row.
#[derive(Default)]
struct CopyDecoder {
    /// Bytes of a row split across messages.
    pending: Vec<u8>,
    header_read: bool,
    finished: bool,
}

const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

fn copy_text(value: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(value).map_err(|_| copy_corrupt("a text column"))
}

fn copy_corrupt(what: &str) -> StoreError {
    StoreError::Database(corrupt("COPY of carepay's records", what))
}

impl CopyDecoder {
    fn feed(
        &mut self,
        message: &[u8],
        mut row: impl FnMut(RecordRow<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            let used = self.rows(message, &mut row)?;
            self.pending.extend_from_slice(&message[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(message);
            let used = self.rows(&pending, &mut row)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(())
    }

    /// Reads every whole row of `data`; returns how many bytes that took.
    fn rows(
        &mut self,
        data: &[u8],
        row: &mut impl FnMut(RecordRow<'_>) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        let mut at = 0;
        if !self.header_read {
            let Some(extension) = data.get(COPY_SIGNATURE.len() + 4..COPY_SIGNATURE.len() + 8) else { return Ok(0) };
            if !data.starts_with(COPY_SIGNATURE) {
                return Err(copy_corrupt("no COPY signature"));
            }
            let extension =
                usize::try_from(u32::from_be_bytes(extension.try_into().unwrap_or_default())).unwrap_or(usize::MAX);
            let header = COPY_SIGNATURE.len() + 8 + extension;
            if data.len() < header {
                return Ok(0);
            }
            self.header_read = true;
            at = header;
        }
        loop {
            if self.finished {
                return if at == data.len() { Ok(at) } else { Err(copy_corrupt("bytes after the end")) };
            }
            let Some(count) = data.get(at..at + 2) else { return Ok(at) };
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.finished = true;
                at += 2;
                continue;
            }
            if count != 6 {
                return Err(copy_corrupt("a row without six columns"));
            }
            let mut fields: [Option<&[u8]>; 6] = [None; 6];
            let mut cursor = at + 2;
            for field in &mut fields {
                let Some(length) = data.get(cursor..cursor + 4) else { return Ok(at) };
                let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
                cursor += 4;
                if length < 0 {
                    continue;
                }
                let length = usize::try_from(length).unwrap_or(usize::MAX);
                let Some(value) = data.get(cursor..cursor + length) else { return Ok(at) };
                *field = Some(value);
                cursor += length;
            }
            let number = |value: Option<&[u8]>| {
                value
                    .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                    .map(i64::from_be_bytes)
                    .ok_or_else(|| copy_corrupt("a number column"))
            };
            let out_no = copy_text(fields[1].ok_or_else(|| copy_corrupt("no merchant number"))?)?;
            let operator_ref = fields[2].map(copy_text).transpose()?;
            row((
                number(fields[0])?,
                out_no,
                operator_ref,
                number(fields[3])?,
                number(fields[4])?,
                number(fields[5])?,
            ))?;
            at = cursor;
        }
    }

    fn finish(&self) -> Result<(), StoreError> {
        if self.finished && self.pending.is_empty() { Ok(()) } else { Err(copy_corrupt("cut short")) }
    }
}
