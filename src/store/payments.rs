//! Terminal nonces, idempotency keys, payments and refunds.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::callbacks::enqueue_in;
use super::directory::corrupt;
use super::ledger::{EntryRef, KnownAccounts, post_in};
use super::{Store, StoreError};
use crate::callbacks::NewEvent;
use crate::domain::directory::WalletId;
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
fn status_list(statuses: &[PaymentStatus]) -> String {
    statuses.iter().map(|status| format!("'{}'", status.as_str())).collect::<Vec<_>>().join(", ")
}

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
    let row = sqlx::query(
        "SELECT request_sha256, kind, object_id FROM terminal_requests WHERE terminal_id = $1 AND request_id = $2",
    )
    .bind(request.terminal_id.as_str())
    .bind(request.request_id)
    .fetch_one(&mut *conn)
    .await?;
    let kind: String = row.try_get("kind")?;
    Ok(Some(SeenRequest {
        request_sha256: row.try_get("request_sha256")?,
        kind: RequestKind::parse(&kind).ok_or_else(|| corrupt("terminal_requests.kind", &kind))?,
        object_id: row.try_get("object_id")?,
    }))
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

impl Store {
    /// Record a nonce from a terminal; `false` if it was already used (a replay).
    ///
    /// PostgreSQL only: this commit does not wait for the WAL flush (`synchronous_commit`
    /// off for this one transaction). A crash may forget the last nonces; a replay of one
    /// within the remaining window still meets the terminal request's idempotency key, so
    /// it moves no money twice, and it saves one flush per terminal request.
    pub async fn record_terminal_nonce(
        &self,
        terminal: &TerminalId,
        nonce: &str,
        expires_at: UnixMs,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        if self.backend() == super::Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit TO OFF").execute(&mut *tx).await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO terminal_nonces (terminal_id, nonce, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (terminal_id, nonce) DO NOTHING",
        )
        .bind(terminal.as_str())
        .bind(nonce)
        .bind(expires_at.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(inserted.rows_affected() == 1)
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
    pub async fn begin_payment(
        &self,
        payment: &Payment,
        request: &TerminalRequest<'_>,
    ) -> Result<Begun<Payment>, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(seen) = claim_request(&mut tx, request).await? {
            return Ok(Begun::Seen(seen));
        }
        sqlx::query(
            "INSERT INTO payments (id, facility_id, terminal_id, request_id, merchant_wallet_id, out_trade_no, method, \
             status, amount_fen, refund_reserved_fen, refunded_fen, description, trade_no, fail_code, qr_payload, \
             expires_at_ms, paid_at_ms, version, created_at_ms, updated_at_ms, next_check_at_ms, check_attempts, \
             lease_owner, lease_until_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, NULL, NULL, NULL, $11, NULL, 1, $12, $12, $13, 0, \
             $14, $15)",
        )
        .bind(payment.id.as_str())
        .bind(payment.facility_id.as_str())
        .bind(payment.terminal_id.as_str())
        .bind(payment.request_id.as_str())
        .bind(payment.merchant_wallet_id.as_str())
        .bind(payment.out_trade_no.as_str())
        .bind(payment.method.as_str())
        .bind(payment.status.as_str())
        .bind(payment.amount.fen())
        .bind(payment.description.as_str())
        .bind(payment.expires_at.map(|at| at.0))
        .bind(payment.created_at.0)
        .bind(payment.next_check_at.map(|at| at.0))
        // The request handling this call holds the lease while it talks to the operator, so
        // the worker does not query the same payment at the same time.
        .bind(Some("request"))
        .bind(payment.next_check_at.map(|at| at.0))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Begun::Created(payment.clone()))
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
    /// one transaction. `false` when it had already moved elsewhere (nothing changed).
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
        let sql = format!(
            "UPDATE payments SET status = $1, trade_no = COALESCE($2, trade_no), fail_code = COALESCE($3, fail_code), \
             paid_at_ms = COALESCE($4, paid_at_ms), next_check_at_ms = $5, lease_owner = NULL, lease_until_ms = NULL, \
             version = version + 1, updated_at_ms = $6 WHERE id = $7 AND status IN ({})",
            status_list(&from)
        );
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(facts.trade_no.as_deref())
            .bind(facts.fail_code.as_deref())
            .bind(facts.paid_at.map(|at| at.0))
            .bind(facts.next_check_at.map(|at| at.0))
            .bind(now.0)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        let opened = apply_effects(&mut tx, effects, now, &self.known_accounts).await?;
        tx.commit().await?;
        self.known_accounts.remember(&opened);
        Ok(true)
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
