//! Terminal nonces, idempotency keys, payments and refunds.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::callbacks::enqueue_in;
use super::directory::corrupt;
use super::group_commit::Job;
use super::ledger::{EntryRef, KnownAccounts, post_in};
use super::{Store, StoreError};
use crate::callbacks::NewEvent;
use crate::domain::directory::{Terminal, WalletId};
use crate::domain::ids::{FacilityId, PaymentId, RefundId, TerminalId};
use crate::domain::ledger::{AccountCode, JournalEntry, OverdraftPolicy};
use crate::domain::money::Amount;
use crate::domain::payment::{Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus};
use crate::domain::time::UnixMs;

/// What a money-moving terminal request is, for its idempotency row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Payment,
    Refund,
    Reversal,
}

impl RequestKind {
    fn as_str(self) -> &'static str {
        match self {
            RequestKind::Payment => "payment",
            RequestKind::Refund => "refund",
            RequestKind::Reversal => "reversal",
        }
    }

    fn parse(raw: &str) -> Option<RequestKind> {
        [RequestKind::Payment, RequestKind::Refund, RequestKind::Reversal].into_iter().find(|kind| kind.as_str() == raw)
    }
}

/// The tables whose rows the payments worker claims; each has `next_check_at_ms` and
/// `lease_*` columns.
#[derive(Clone, Copy, Debug)]
enum DueTable {
    Payments,
    Refunds,
}

impl DueTable {
    fn name(self) -> &'static str {
        match self {
            DueTable::Payments => "payments",
            DueTable::Refunds => "refunds",
        }
    }
}

/// The idempotency key of one terminal request.
#[derive(Clone, Debug)]
pub struct TerminalRequest<'a> {
    pub terminal_id: &'a TerminalId,
    pub request_id: &'a str,
    pub request_sha256: &'a str,
    pub kind: RequestKind,
    pub object_id: &'a str,
    pub now: UnixMs,
}

/// A request id seen before: what it was and what it created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    pub request_sha256: String,
    pub kind: RequestKind,
    pub object_id: String,
}

/// The outcome of trying to start something under an idempotency key.
#[derive(Debug)]
pub enum Begun<T> {
    Created(T),
    Seen(SeenRequest),
}

/// A journal entry to book, and the accounts it needs (opened if missing).
pub struct Booking<'a> {
    pub what: EntryRef<'a>,
    pub entry: JournalEntry,
    pub accounts: Vec<(AccountCode, OverdraftPolicy)>,
}

/// Ledger entry and callbacks that must commit with a state change, or not at all.
#[derive(Default)]
pub struct Effects<'a> {
    pub booking: Option<Booking<'a>>,
    /// Written to the callback outbox in the same transaction (transactional outbox).
    pub events: Vec<NewEvent>,
}

/// What the operator said about a refund, recorded when it finishes.
#[derive(Clone, Debug, Default)]
pub struct RefundFacts<'a> {
    pub refund_no: Option<&'a str>,
    pub fail_code: Option<&'a str>,
    pub succeeded_at: Option<UnixMs>,
}

/// Facts learnt from the operator that accompany a state change.
#[derive(Clone, Debug, Default)]
pub struct TradeFacts {
    pub trade_no: Option<String>,
    pub fail_code: Option<String>,
    pub paid_at: Option<UnixMs>,
    /// When the worker should ask the operator next; `None` once the state is settled.
    pub next_check_at: Option<UnixMs>,
}

const PAYMENT_COLUMNS: &str = "id, facility_id, terminal_id, request_id, merchant_wallet_id, out_trade_no, method, \
     status, amount_fen, refund_reserved_fen, refunded_fen, description, trade_no, fail_code, qr_payload, \
     expires_at_ms, paid_at_ms, version, created_at_ms, updated_at_ms, next_check_at_ms, check_attempts";

pub(super) const REFUND_COLUMNS: &str = "id, payment_id, terminal_id, request_id, out_refund_no, status, amount_fen, reason, \
     refund_no, fail_code, succeeded_at_ms, version, created_at_ms, updated_at_ms, next_check_at_ms, check_attempts";

fn amount(row: &AnyRow, column: &'static str) -> Result<Amount, sqlx::Error> {
    let fen: i64 = row.try_get(column)?;
    Amount::from_fen(fen).map_err(|_| corrupt(column, &fen.to_string()))
}

fn payment_from_row(row: &AnyRow) -> Result<Payment, sqlx::Error> {
    let method: String = row.try_get("method")?;
    let status: String = row.try_get("status")?;
    Ok(Payment {
        id: PaymentId::from_trusted(row.try_get("id")?),
        facility_id: FacilityId::from_trusted(row.try_get("facility_id")?),
        terminal_id: TerminalId::from_trusted(row.try_get("terminal_id")?),
        request_id: row.try_get("request_id")?,
        merchant_wallet_id: WalletId::from_trusted(row.try_get("merchant_wallet_id")?),
        out_trade_no: row.try_get("out_trade_no")?,
        method: PaymentMethod::parse(&method).ok_or_else(|| corrupt("payments.method", &method))?,
        status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("payments.status", &status))?,
        amount: amount(row, "amount_fen")?,
        refund_reserved: amount(row, "refund_reserved_fen")?,
        refunded: amount(row, "refunded_fen")?,
        description: row.try_get("description")?,
        trade_no: row.try_get("trade_no")?,
        fail_code: row.try_get("fail_code")?,
        qr_payload: row.try_get("qr_payload")?,
        expires_at: row.try_get::<Option<i64>, _>("expires_at_ms")?.map(UnixMs),
        paid_at: row.try_get::<Option<i64>, _>("paid_at_ms")?.map(UnixMs),
        version: row.try_get("version")?,
        created_at: UnixMs(row.try_get("created_at_ms")?),
        updated_at: UnixMs(row.try_get("updated_at_ms")?),
        next_check_at: row.try_get::<Option<i64>, _>("next_check_at_ms")?.map(UnixMs),
        check_attempts: row.try_get("check_attempts")?,
    })
}

pub(super) fn refund_from_row(row: &AnyRow) -> Result<Refund, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Refund {
        id: RefundId::from_trusted(row.try_get("id")?),
        payment_id: PaymentId::from_trusted(row.try_get("payment_id")?),
        terminal_id: TerminalId::from_trusted(row.try_get("terminal_id")?),
        request_id: row.try_get("request_id")?,
        out_refund_no: row.try_get("out_refund_no")?,
        status: RefundStatus::parse(&status).ok_or_else(|| corrupt("refunds.status", &status))?,
        amount: amount(row, "amount_fen")?,
        reason: row.try_get("reason")?,
        refund_no: row.try_get("refund_no")?,
        fail_code: row.try_get("fail_code")?,
        succeeded_at: row.try_get::<Option<i64>, _>("succeeded_at_ms")?.map(UnixMs),
        version: row.try_get("version")?,
        created_at: UnixMs(row.try_get("created_at_ms")?),
        updated_at: UnixMs(row.try_get("updated_at_ms")?),
        next_check_at: row.try_get::<Option<i64>, _>("next_check_at_ms")?.map(UnixMs),
        check_attempts: row.try_get("check_attempts")?,
    })
}

/// `'a', 'b'` for a `status IN (...)` list. Only ever built from the enum's own constants.
/// Insert the idempotency row; `Some(seen)` when the key already existed.
async fn claim_request(
    conn: &mut AnyConnection,
    request: &TerminalRequest<'_>,
) -> Result<Option<SeenRequest>, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO terminal_requests (terminal_id, request_id, request_sha256, kind, object_id, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (terminal_id, request_id) DO NOTHING",
    )
    .bind(request.terminal_id.as_str())
    .bind(request.request_id)
    .bind(request.request_sha256)
    .bind(request.kind.as_str())
    .bind(request.object_id)
    .bind(request.now.0)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(None);
    }
    seen_request(conn, request).await.map(Some)
}

/// What a request id already used was and created.
async fn seen_request(conn: &mut AnyConnection, request: &TerminalRequest<'_>) -> Result<SeenRequest, StoreError> {
    let row = sqlx::query(
        "SELECT request_sha256, kind, object_id FROM terminal_requests WHERE terminal_id = $1 AND request_id = $2",
    )
    .bind(request.terminal_id.as_str())
    .bind(request.request_id)
    .fetch_one(&mut *conn)
    .await?;
    let kind: String = row.try_get("kind")?;
    Ok(SeenRequest {
        request_sha256: row.try_get("request_sha256")?,
        kind: RequestKind::parse(&kind).ok_or_else(|| corrupt("terminal_requests.kind", &kind))?,
        object_id: row.try_get("object_id")?,
    })
}

/// Apply `effects` inside the caller's transaction; returns the accounts to remember as
/// open once it has committed.
async fn apply_effects(
    conn: &mut AnyConnection,
    effects: Effects<'_>,
    now: UnixMs,
    known: &KnownAccounts,
) -> Result<Vec<(AccountCode, OverdraftPolicy)>, StoreError> {
    let mut opened = Vec::new();
    if let Some(Booking { what, entry, accounts }) = effects.booking {
        for (code, policy) in &accounts {
            if known.policy(code).is_some() {
                continue;
            }
            super::ledger::open_account_in(conn, code, *policy, now).await?;
        }
        post_in(conn, what, &entry, now, known).await?;
        opened = accounts;
    }
    for event in &effects.events {
        enqueue_in(conn, event, now).await?;
    }
    Ok(opened)
}

/// A terminal nonce to record.
pub(crate) struct NonceWrite {
    pub terminal_id: TerminalId,
    /// The terminal's version when its signature was checked.
    pub terminal_version: i64,
    pub nonce: String,
    pub expires_at: UnixMs,
}

/// A payment to create under a terminal's request id.
pub(crate) struct BeginWrite {
    pub payment: Payment,
    pub request_id: String,
    pub request_sha256: String,
    pub kind: RequestKind,
    pub now: UnixMs,
}

/// A [`Booking`] that owns its reference, to travel to a writer.
pub(crate) struct OwnedBooking {
    pub kind: String,
    pub reference: String,
    pub memo: String,
    pub entry: JournalEntry,
    pub accounts: Vec<(AccountCode, OverdraftPolicy)>,
}

/// A payment to move forward, with what must commit with the move.
pub(crate) struct MoveWrite {
    pub payment_id: PaymentId,
    /// The states it may move from (each may become `to`); never empty.
    pub from: Vec<PaymentStatus>,
    pub to: PaymentStatus,
    pub facts: TradeFacts,
    pub booking: Option<OwnedBooking>,
    pub events: Vec<NewEvent>,
    pub now: UnixMs,
}

fn is_postgres(conn: &AnyConnection) -> bool {
    super::Backend::of(conn) == super::Backend::Postgres
}

/// Record `nonces` (distinct) in one statement; for each, whether it was new.
pub(super) async fn record_nonces_in(
    conn: &mut AnyConnection,
    nonces: &[&NonceWrite],
) -> Result<Vec<bool>, StoreError> {
    if nonces.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<serde_json::Value> = nonces
        .iter()
        .map(|write| {
            serde_json::json!({
                "terminal_id": write.terminal_id.as_str(), "terminal_version": write.terminal_version,
                "nonce": write.nonce, "expires_at_ms": write.expires_at.0,
            })
        })
        .collect();
    let select = if is_postgres(conn) {
        "SELECT * FROM json_to_recordset($1::json) AS r(terminal_id TEXT, terminal_version BIGINT, nonce TEXT, \
         expires_at_ms BIGINT)"
    } else {
        "SELECT value ->> 'terminal_id' AS terminal_id, value ->> 'terminal_version' AS terminal_version, \
         value ->> 'nonce' AS nonce, value ->> 'expires_at_ms' AS expires_at_ms FROM json_each($1) AS r"
    };
    let sql = format!(
        "INSERT INTO terminal_nonces (terminal_id, nonce, expires_at_ms) SELECT r.terminal_id, r.nonce, \
         r.expires_at_ms FROM ({select}) AS r WHERE EXISTS (SELECT 1 FROM terminals t WHERE t.id = r.terminal_id \
         AND t.status = 'active' AND t.version = r.terminal_version) \
         ON CONFLICT (terminal_id, nonce) DO NOTHING RETURNING terminal_id, nonce"
    );
    let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(&mut *conn)
        .await?;
    let mut fresh = std::collections::HashSet::new();
    for row in &inserted {
        fresh.insert((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?));
    }
    Ok(nonces
        .iter()
        .map(|write| fresh.contains(&(write.terminal_id.as_str().to_owned(), write.nonce.clone())))
        .collect())
}

/// Create the payments of `begins` (distinct request ids) with their idempotency rows, in
/// a fixed number of statements; a request id used before reports what it created.
pub(super) async fn begin_payments_in(
    conn: &mut AnyConnection,
    begins: &[&BeginWrite],
) -> Result<Vec<Begun<Payment>>, StoreError> {
    if begins.is_empty() {
        return Ok(Vec::new());
    }
    let postgres = is_postgres(conn);
    let requests: Vec<serde_json::Value> = begins
        .iter()
        .map(|write| {
            serde_json::json!({
                "terminal_id": write.payment.terminal_id.as_str(), "request_id": write.request_id,
                "request_sha256": write.request_sha256, "kind": write.kind.as_str(),
                "object_id": write.payment.id.as_str(), "created_at_ms": write.now.0,
            })
        })
        .collect();
    let select = if postgres {
        "SELECT r.terminal_id, r.request_id, r.request_sha256, r.kind, r.object_id, r.created_at_ms \
         FROM json_to_recordset($1::json) AS r(terminal_id TEXT, request_id TEXT, request_sha256 TEXT, kind TEXT, \
         object_id TEXT, created_at_ms BIGINT)"
    } else {
        "SELECT value ->> 'terminal_id', value ->> 'request_id', value ->> 'request_sha256', value ->> 'kind', \
         value ->> 'object_id', value ->> 'created_at_ms' FROM json_each($1) WHERE true"
    };
    let sql = format!(
        "INSERT INTO terminal_requests (terminal_id, request_id, request_sha256, kind, object_id, created_at_ms) \
         {select} ON CONFLICT (terminal_id, request_id) DO NOTHING RETURNING object_id"
    );
    let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::Value::Array(requests).to_string())
        .fetch_all(&mut *conn)
        .await?;
    let mut created = std::collections::HashSet::new();
    for row in &inserted {
        created.insert(row.try_get::<String, _>(0)?);
    }

    let payments: Vec<serde_json::Value> = begins
        .iter()
        .filter(|write| created.contains(write.payment.id.as_str()))
        .map(|write| {
            let payment = &write.payment;
            serde_json::json!({
                "id": payment.id.as_str(), "facility_id": payment.facility_id.as_str(),
                "terminal_id": payment.terminal_id.as_str(), "request_id": payment.request_id,
                "merchant_wallet_id": payment.merchant_wallet_id.as_str(), "out_trade_no": payment.out_trade_no,
                "method": payment.method.as_str(), "status": payment.status.as_str(),
                "amount_fen": payment.amount.fen(), "description": payment.description,
                "expires_at_ms": payment.expires_at.map(|at| at.0), "created_at_ms": payment.created_at.0,
                "next_check_at_ms": payment.next_check_at.map(|at| at.0),
            })
        })
        .collect();
    if !payments.is_empty() {
        // The request handling each start holds its lease while it talks to the operator,
        // so the worker does not query the same payment at the same time.
        let select = if postgres {
            "SELECT r.id, r.facility_id, r.terminal_id, r.request_id, r.merchant_wallet_id, r.out_trade_no, r.method, \
             r.status, r.amount_fen, 0, 0, r.description, NULL, NULL, NULL, r.expires_at_ms, NULL, 1, r.created_at_ms, \
             r.created_at_ms, r.next_check_at_ms, 0, 'request', r.next_check_at_ms \
             FROM json_to_recordset($1::json) AS r(id TEXT, facility_id TEXT, terminal_id TEXT, request_id TEXT, \
             merchant_wallet_id TEXT, out_trade_no TEXT, method TEXT, status TEXT, amount_fen BIGINT, \
             description TEXT, expires_at_ms BIGINT, created_at_ms BIGINT, next_check_at_ms BIGINT)"
        } else {
            "SELECT value ->> 'id', value ->> 'facility_id', value ->> 'terminal_id', value ->> 'request_id', \
             value ->> 'merchant_wallet_id', value ->> 'out_trade_no', value ->> 'method', value ->> 'status', \
             value ->> 'amount_fen', 0, 0, value ->> 'description', NULL, NULL, NULL, value ->> 'expires_at_ms', \
             NULL, 1, value ->> 'created_at_ms', value ->> 'created_at_ms', value ->> 'next_check_at_ms', 0, \
             'request', value ->> 'next_check_at_ms' FROM json_each($1)"
        };
        let sql = format!(
            "INSERT INTO payments (id, facility_id, terminal_id, request_id, merchant_wallet_id, out_trade_no, method, \
             status, amount_fen, refund_reserved_fen, refunded_fen, description, trade_no, fail_code, qr_payload, \
             expires_at_ms, paid_at_ms, version, created_at_ms, updated_at_ms, next_check_at_ms, check_attempts, \
             lease_owner, lease_until_ms) {select}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(serde_json::Value::Array(payments).to_string())
            .execute(&mut *conn)
            .await?;
    }

    let mut begun = Vec::with_capacity(begins.len());
    for write in begins {
        if created.contains(write.payment.id.as_str()) {
            begun.push(Begun::Created(write.payment.clone()));
            continue;
        }
        let request = TerminalRequest {
            terminal_id: &write.payment.terminal_id,
            request_id: &write.request_id,
            request_sha256: &write.request_sha256,
            kind: write.kind,
            object_id: write.payment.id.as_str(),
            now: write.now,
        };
        let seen = seen_request(conn, &request).await?;
        begun.push(Begun::Seen(seen));
    }
    Ok(begun)
}

/// Move the payments of `moves` (distinct) forward where their state still allows it, with
/// the ledger entries and callbacks of those that moved, in a fixed number of statements.
/// Returns for each whether it moved, and the accounts opened (to remember after commit).
pub(super) async fn move_payments_in(
    conn: &mut AnyConnection,
    moves: &[&MoveWrite],
    known: &KnownAccounts,
) -> Result<(Vec<bool>, Vec<(AccountCode, OverdraftPolicy)>), StoreError> {
    if moves.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let rows: Vec<serde_json::Value> = moves
        .iter()
        .map(|write| {
            let from: String = write.from.iter().map(|status| format!(",{}", status.as_str())).collect();
            serde_json::json!({
                "id": write.payment_id.as_str(), "from_statuses": format!("{from},"), "to_status": write.to.as_str(),
                "trade_no": write.facts.trade_no, "fail_code": write.facts.fail_code,
                "paid_at_ms": write.facts.paid_at.map(|at| at.0),
                "next_check_at_ms": write.facts.next_check_at.map(|at| at.0), "updated_at_ms": write.now.0,
            })
        })
        .collect();
    let (source, in_from) = if is_postgres(conn) {
        (
            "json_to_recordset($1::json) AS r(id TEXT, from_statuses TEXT, to_status TEXT, trade_no TEXT, \
             fail_code TEXT, paid_at_ms BIGINT, next_check_at_ms BIGINT, updated_at_ms BIGINT)",
            // The id list lets the planner probe the primary key: it cannot size the JSON
            // and would otherwise scan every payment to hash-join a handful.
            "payments.id = ANY(ARRAY(SELECT json_array_elements($1::json) ->> 'id')) \
             AND strpos(r.from_statuses, ',' || payments.status || ',') > 0",
        )
    } else {
        (
            "(SELECT value ->> 'id' AS id, value ->> 'from_statuses' AS from_statuses, \
             value ->> 'to_status' AS to_status, value ->> 'trade_no' AS trade_no, value ->> 'fail_code' AS fail_code, \
             value ->> 'paid_at_ms' AS paid_at_ms, value ->> 'next_check_at_ms' AS next_check_at_ms, \
             value ->> 'updated_at_ms' AS updated_at_ms FROM json_each($1)) AS r",
            "instr(r.from_statuses, ',' || payments.status || ',') > 0",
        )
    };
    let sql = format!(
        "UPDATE payments SET status = r.to_status, trade_no = COALESCE(r.trade_no, payments.trade_no), \
         fail_code = COALESCE(r.fail_code, payments.fail_code), paid_at_ms = COALESCE(r.paid_at_ms, payments.paid_at_ms), \
         next_check_at_ms = r.next_check_at_ms, lease_owner = NULL, lease_until_ms = NULL, \
         version = payments.version + 1, updated_at_ms = r.updated_at_ms \
         FROM {source} WHERE payments.id = r.id AND {in_from} RETURNING payments.id"
    );
    let updated = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(&mut *conn)
        .await?;
    let mut moved_ids = std::collections::HashSet::new();
    for row in &updated {
        moved_ids.insert(row.try_get::<String, _>(0)?);
    }
    let moved: Vec<bool> = moves.iter().map(|write| moved_ids.contains(write.payment_id.as_str())).collect();
    let done: Vec<&MoveWrite> =
        moves.iter().zip(&moved).filter(|(_, moved)| **moved).map(|(write, _)| *write).collect();
    let now = done.iter().map(|write| write.now).max().unwrap_or(UnixMs(0));

    let mut opened: Vec<(AccountCode, OverdraftPolicy)> = Vec::new();
    let mut entries = Vec::new();
    for booking in done.iter().filter_map(|write| write.booking.as_ref()) {
        for (code, policy) in &booking.accounts {
            if known.policy(code).is_none() && !opened.iter().any(|(open, _)| open == code) {
                opened.push((code.clone(), *policy));
            }
        }
        let what = EntryRef { kind: &booking.kind, reference: &booking.reference, memo: &booking.memo };
        entries.push((what, booking.entry.clone()));
    }
    super::ledger::open_accounts_in(conn, &opened, now).await?;
    super::ledger::post_many_in(conn, &entries, now, known).await?;
    let events: Vec<&NewEvent> = done.iter().flat_map(|write| write.events.iter()).collect();
    super::callbacks::enqueue_many_in(conn, &events, now).await?;
    let mut remember: Vec<(AccountCode, OverdraftPolicy)> = opened;
    for booking in done.iter().filter_map(|write| write.booking.as_ref()) {
        for account in &booking.accounts {
            if !remember.iter().any(|(code, _)| code == &account.0) {
                remember.push(account.clone());
            }
        }
    }
    Ok((moved, remember))
}

impl Store {
    /// Record a nonce from a terminal, durably; `false` if it was already used (a replay).
    /// Nonces arriving together share a transaction (see `group_commit`).
    ///
    /// It is recorded only while `terminal` is active at the version it was read at, so a
    /// request checked against a terminal that has since been suspended or given a new key
    /// (on any instance) records nothing and reports `false` too.
    pub async fn record_terminal_nonce(
        &self,
        terminal: &Terminal,
        nonce: &str,
        expires_at: UnixMs,
    ) -> Result<bool, StoreError> {
        let write = NonceWrite {
            terminal_id: terminal.id.clone(),
            terminal_version: terminal.version,
            nonce: nonce.to_owned(),
            expires_at,
        };
        self.group_commit(|reply| Job::Nonce(write, reply)).await
    }

    /// Delete at most `limit` expired nonces and idempotency keys older than `keys_before`.
    pub async fn purge_terminal_housekeeping(
        &self,
        now: UnixMs,
        keys_before: UnixMs,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let nonces = sqlx::query(
            "DELETE FROM terminal_nonces WHERE (terminal_id, nonce) IN \
             (SELECT terminal_id, nonce FROM terminal_nonces WHERE expires_at_ms < $1 LIMIT $2)",
        )
        .bind(now.0)
        .bind(i64::from(limit))
        .execute(self.pool())
        .await?;
        let keys = sqlx::query(
            "DELETE FROM terminal_requests WHERE (terminal_id, request_id) IN \
             (SELECT terminal_id, request_id FROM terminal_requests WHERE created_at_ms < $1 LIMIT $2)",
        )
        .bind(keys_before.0)
        .bind(i64::from(limit))
        .execute(self.pool())
        .await?;
        Ok(nonces.rows_affected() + keys.rows_affected())
    }

    /// Create a payment under a terminal's request id, or report what that id created.
    /// Starts arriving together share a transaction (see `group_commit`).
    pub async fn begin_payment(
        &self,
        payment: &Payment,
        request: &TerminalRequest<'_>,
    ) -> Result<Begun<Payment>, StoreError> {
        debug_assert_eq!(request.object_id, payment.id.as_str());
        let write = BeginWrite {
            payment: payment.clone(),
            request_id: request.request_id.to_owned(),
            request_sha256: request.request_sha256.to_owned(),
            kind: request.kind,
            now: request.now,
        };
        self.group_commit(|reply| Job::Begin(Box::new(write), reply)).await
    }

    pub async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>, StoreError> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(payment_from_row).transpose()?)
    }

    pub async fn payment_by_out_trade_no(&self, out_trade_no: &str) -> Result<Option<Payment>, StoreError> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE out_trade_no = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(out_trade_no).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(payment_from_row).transpose()?)
    }

    /// The payment a terminal's request id created, if any.
    pub async fn payment_by_request(
        &self,
        terminal: &TerminalId,
        request_id: &str,
    ) -> Result<Option<Payment>, StoreError> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = \
             (SELECT object_id FROM terminal_requests WHERE terminal_id = $1 AND request_id = $2 AND kind = 'payment')"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(terminal.as_str())
            .bind(request_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(payment_from_row).transpose()?)
    }

    /// Move a payment to `to` if its current state may (forward only), with its effects, in
    /// one transaction (shared with other moves arriving together, see `group_commit`).
    /// `false` when it had already moved elsewhere (nothing changed).
    pub async fn transition_payment(
        &self,
        id: &PaymentId,
        from: &[PaymentStatus],
        to: PaymentStatus,
        facts: &TradeFacts,
        effects: Effects<'_>,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let from: Vec<PaymentStatus> = from.iter().copied().filter(|status| status.may_become(to)).collect();
        if from.is_empty() {
            return Ok(false);
        }
        let write = MoveWrite {
            payment_id: id.clone(),
            from,
            to,
            facts: facts.clone(),
            booking: effects.booking.map(|booking| OwnedBooking {
                kind: booking.what.kind.to_owned(),
                reference: booking.what.reference.to_owned(),
                memo: booking.what.memo.to_owned(),
                entry: booking.entry,
                accounts: booking.accounts,
            }),
            events: effects.events,
            now,
        };
        self.group_commit(|reply| Job::Move(Box::new(write), reply)).await
    }

    /// Keep a pending payment as it is but remember what we learnt and when to ask again;
    /// releases the lease.
    pub async fn reschedule_payment(
        &self,
        id: &PaymentId,
        expected: PaymentStatus,
        facts: &TradeFacts,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE payments SET trade_no = COALESCE($1, trade_no), next_check_at_ms = $2, \
             check_attempts = check_attempts + 1, lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = $3 \
             WHERE id = $4 AND status = $5",
        )
        .bind(facts.trade_no.as_deref())
        .bind(facts.next_check_at.map(|at| at.0))
        .bind(now.0)
        .bind(id.as_str())
        .bind(expected.as_str())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Set the QR details of a dynamic-QR order once the operator created it.
    pub async fn set_payment_qr(
        &self,
        id: &PaymentId,
        trade_no: &str,
        qr_payload: &str,
        expires_at: UnixMs,
        next_check_at: UnixMs,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE payments SET trade_no = $1, qr_payload = $2, expires_at_ms = $3, next_check_at_ms = $4, \
             lease_owner = NULL, lease_until_ms = NULL, version = version + 1, updated_at_ms = $5 \
             WHERE id = $6 AND status = 'awaiting_scan'",
        )
        .bind(trade_no)
        .bind(qr_payload)
        .bind(expires_at.0)
        .bind(next_check_at.0)
        .bind(now.0)
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Claim up to `limit` payments whose next check is due and whose lease has lapsed.
    pub async fn claim_due_payments(
        &self,
        owner: &str,
        now: UnixMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Payment>, StoreError> {
        let mut claimed = Vec::new();
        for id in self.claim_due(DueTable::Payments, owner, now, lease_ms, limit).await? {
            claimed.extend(self.payment(&PaymentId::from_trusted(id)).await?);
        }
        Ok(claimed)
    }

    /// Claim the ids of up to `limit` rows of `table` whose next check is due and whose
    /// lease has lapsed. Each claim is a compare-and-set, so two instances never hold the
    /// same row; a row another instance took between the SELECT and the UPDATE is skipped.
    async fn claim_due(
        &self,
        table: DueTable,
        owner: &str,
        now: UnixMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let table = table.name();
        let select = format!(
            "SELECT id FROM {table} WHERE next_check_at_ms IS NOT NULL AND next_check_at_ms <= $1 \
             AND (lease_until_ms IS NULL OR lease_until_ms < $1) ORDER BY next_check_at_ms LIMIT $2"
        );
        let candidates: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(select))
            .bind(now.0)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        let claim = format!(
            "UPDATE {table} SET lease_owner = $1, lease_until_ms = $2 WHERE id = $3 \
             AND next_check_at_ms IS NOT NULL AND next_check_at_ms <= $4 \
             AND (lease_until_ms IS NULL OR lease_until_ms < $4)"
        );
        let mut claimed = Vec::new();
        for id in candidates {
            let won = sqlx::query(sqlx::AssertSqlSafe(claim.clone()))
                .bind(owner)
                .bind(now.0 + lease_ms)
                .bind(id.as_str())
                .bind(now.0)
                .execute(self.pool())
                .await?;
            if won.rows_affected() == 1 {
                claimed.push(id);
            }
        }
        Ok(claimed)
    }

    /// Reserve refund money and create the refund under the terminal's request id, in one
    /// transaction. `Ok(None)` when the reservation is refused (payment not succeeded, or
    /// refunds would exceed it): nothing is written then.
    pub async fn begin_refund(
        &self,
        refund: &Refund,
        request: &TerminalRequest<'_>,
    ) -> Result<Option<Begun<Refund>>, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(seen) = claim_request(&mut tx, request).await? {
            return Ok(Some(Begun::Seen(seen)));
        }
        let reserved = sqlx::query(
            "UPDATE payments SET refund_reserved_fen = refund_reserved_fen + $1, version = version + 1, \
             updated_at_ms = $2 WHERE id = $3 AND status = 'succeeded' AND refund_reserved_fen + $1 <= amount_fen",
        )
        .bind(refund.amount.fen())
        .bind(refund.created_at.0)
        .bind(refund.payment_id.as_str())
        .execute(&mut *tx)
        .await?;
        if reserved.rows_affected() != 1 {
            // Dropping the transaction rolls back the idempotency row too: a refused refund
            // leaves nothing behind, and the same request id may be used again.
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO refunds (id, payment_id, terminal_id, request_id, out_refund_no, status, amount_fen, reason, \
             refund_no, fail_code, succeeded_at_ms, version, created_at_ms, updated_at_ms, next_check_at_ms, \
             check_attempts, lease_owner, lease_until_ms) \
             VALUES ($1, $2, $3, $4, $5, 'processing', $6, $7, NULL, NULL, NULL, 1, $8, $8, $9, 0, 'request', $9)",
        )
        .bind(refund.id.as_str())
        .bind(refund.payment_id.as_str())
        .bind(refund.terminal_id.as_str())
        .bind(refund.request_id.as_str())
        .bind(refund.out_refund_no.as_str())
        .bind(refund.amount.fen())
        .bind(refund.reason.as_str())
        .bind(refund.created_at.0)
        .bind(refund.next_check_at.map(|at| at.0))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Begun::Created(refund.clone())))
    }

    pub async fn refund(&self, id: &RefundId) -> Result<Option<Refund>, StoreError> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(refund_from_row).transpose()?)
    }

    pub async fn refund_by_out_refund_no(&self, out_refund_no: &str) -> Result<Option<Refund>, StoreError> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(out_refund_no).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(refund_from_row).transpose()?)
    }

    pub async fn refund_by_refund_no(&self, refund_no: &str) -> Result<Option<Refund>, StoreError> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE refund_no = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(refund_no).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(refund_from_row).transpose()?)
    }

    pub async fn refunds_of(&self, payment: &PaymentId) -> Result<Vec<Refund>, StoreError> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(payment.as_str()).fetch_all(self.pool()).await?;
        Ok(rows.iter().map(refund_from_row).collect::<Result<_, _>>()?)
    }

    /// Finish a processing refund: on success count it as refunded, on failure release its
    /// reservation; with the effects, in one transaction. `false` if it was already final.
    pub async fn finish_refund(
        &self,
        refund: &Refund,
        to: RefundStatus,
        facts: &RefundFacts<'_>,
        effects: Effects<'_>,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE refunds SET status = $1, refund_no = COALESCE($2, refund_no), fail_code = $3, \
             succeeded_at_ms = $4, next_check_at_ms = NULL, lease_owner = NULL, lease_until_ms = NULL, \
             version = version + 1, updated_at_ms = $5 WHERE id = $6 AND status = 'processing'",
        )
        .bind(to.as_str())
        .bind(facts.refund_no)
        .bind(facts.fail_code)
        .bind(facts.succeeded_at.map(|at| at.0))
        .bind(now.0)
        .bind(refund.id.as_str())
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        let payment_update = match to {
            RefundStatus::Succeeded => {
                "UPDATE payments SET refunded_fen = refunded_fen + $1, version = version + 1, updated_at_ms = $2 \
                 WHERE id = $3 AND refunded_fen + $1 <= refund_reserved_fen"
            }
            RefundStatus::Failed => {
                "UPDATE payments SET refund_reserved_fen = refund_reserved_fen - $1, version = version + 1, \
                 updated_at_ms = $2 WHERE id = $3 AND refund_reserved_fen - $1 >= refunded_fen"
            }
            RefundStatus::Processing => return Ok(false),
        };
        let updated = sqlx::query(payment_update)
            .bind(refund.amount.fen())
            .bind(now.0)
            .bind(refund.payment_id.as_str())
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        let opened = apply_effects(&mut tx, effects, now, &self.known_accounts).await?;
        tx.commit().await?;
        self.known_accounts.remember(&opened);
        Ok(true)
    }

    /// Keep a processing refund, remember its refund number, and ask again later.
    pub async fn reschedule_refund(
        &self,
        id: &RefundId,
        refund_no: Option<&str>,
        next_check_at: UnixMs,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE refunds SET refund_no = COALESCE($1, refund_no), next_check_at_ms = $2, \
             check_attempts = check_attempts + 1, lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = $3 \
             WHERE id = $4 AND status = 'processing'",
        )
        .bind(refund_no)
        .bind(next_check_at.0)
        .bind(now.0)
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Claim processing refunds whose next check is due (see [`Store::claim_due_payments`]).
    pub async fn claim_due_refunds(
        &self,
        owner: &str,
        now: UnixMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Refund>, StoreError> {
        let mut claimed = Vec::new();
        for id in self.claim_due(DueTable::Refunds, owner, now, lease_ms, limit).await? {
            claimed.extend(self.refund(&RefundId::from_trusted(id)).await?);
        }
        Ok(claimed)
    }

    /// Record a reversal request's idempotency key (the reversal acts on an existing payment).
    pub async fn claim_reversal_request(
        &self,
        request: &TerminalRequest<'_>,
    ) -> Result<Option<SeenRequest>, StoreError> {
        let mut tx = self.begin_write().await?;
        let seen = claim_request(&mut tx, request).await?;
        tx.commit().await?;
        Ok(seen)
    }

    /// Remember an operator notification by event id; `false` if it was seen before.
    pub async fn record_operator_event(&self, id: &str, event_type: &str, now: UnixMs) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO operator_events (id, event_type, received_at_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(event_type)
        .bind(now.0)
        .execute(self.pool())
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// A facility's payments created in `[from, to)`, newest first, at most `limit`.
    pub async fn payments_of_facility(
        &self,
        facility: &FacilityId,
        from: UnixMs,
        to: UnixMs,
        limit: u32,
    ) -> Result<Vec<Payment>, StoreError> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE facility_id = $1 AND created_at_ms >= $2 \
             AND created_at_ms < $3 ORDER BY created_at_ms DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(facility.as_str())
            .bind(from.0)
            .bind(to.0)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(payment_from_row).collect::<Result<_, _>>()?)
    }
}
