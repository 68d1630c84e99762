//! Use cases for taking payments at terminals: pay by payer code or card, dynamic QR
//! orders, refunds and reversals, resolving unknown outcomes with the operator, and applying
//! operator notifications. No transport types here; `grpc` and `http` call in.
//!
//! Rules kept here: every money-moving call is idempotent on the terminal's request id; the
//! `out_trade_no` / `out_refund_no` is fixed before the operator is first asked; a timeout or
//! 5xx is "unknown" and resolved by query, never failed on a guess; states only move forward;
//! every success, refund and reversal posts a balanced ledger entry in the same transaction.

pub mod bench;
pub mod notifications;
pub mod worker;

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::app::App;
use crate::callbacks::{EventOwner, EventType, NewEvent};
use crate::domain::directory::{Terminal, WalletId};
use crate::domain::ids::{PaymentId, RefundId};
use crate::domain::ledger::{Account, AccountCode, JournalEntry, OverdraftPolicy};
use crate::domain::money::Amount;
use crate::domain::payment::{Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus, RequestId};
use crate::domain::time::{SHANGHAI, UnixMs};
use crate::error::{Error, Result};
use crate::operator::client::{OperatorClient, OperatorError};
use crate::operator::types::{CodePaymentRequest, OrderRequest, RefundRequest, TradeStatus};
use crate::store::ledger::EntryRef;
use crate::store::payments::{
    Begun, Booking, Effects, RefundFacts, RequestKind, SeenRequest, TerminalRequest, TradeFacts,
};

/// Bounds and timings of the payment flows; from config.
#[derive(Clone, Debug)]
pub struct PaymentSettings {
    /// A USERPAYING payment not confirmed within this is reversed (the operator's rule: 30 s).
    pub userpaying_timeout_ms: i64,
    /// First re-check of an unknown or pending outcome.
    pub check_interval_ms: i64,
    /// Longest wait between re-checks of one payment (backoff cap).
    pub max_check_interval_ms: i64,
    /// How long the request that created a payment owns it before the worker may take over.
    pub request_lease_ms: i64,
    /// How long a repeated request waits for the first one to finish before ABORTED.
    pub duplicate_wait_ms: u64,
    /// A trade the operator has never heard of this long after we sent it was never
    /// received: it is reversed (so a late arrival cannot charge) and marked failed.
    pub not_found_grace_ms: i64,
    pub qr_default_expiry_s: u32,
    pub qr_min_expiry_s: u32,
    pub qr_max_expiry_s: u32,
    /// Terminal request timestamps may be this far from our clock.
    pub signature_window_s: i64,
    /// PostgreSQL: how long a terminal read for one request serves the next ones (each
    /// request's nonce insert still checks the terminal's version in the database).
    pub terminal_cache_ttl_ms: i64,
    /// Request ids are remembered this long.
    pub idempotency_retention_ms: i64,
    pub max_description_chars: usize,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            userpaying_timeout_ms: 30_000,
            check_interval_ms: 2_000,
            max_check_interval_ms: 600_000,
            request_lease_ms: 20_000,
            duplicate_wait_ms: 3_000,
            not_found_grace_ms: 30_000,
            qr_default_expiry_s: 300,
            qr_min_expiry_s: 30,
            qr_max_expiry_s: 1_800,
            signature_window_s: 300,
            terminal_cache_ttl_ms: 60_000,
            idempotency_retention_ms: 7 * 86_400_000,
            max_description_chars: 100,
        }
    }
}

/// A payment request from a terminal, parsed.
pub struct PayCommand {
    pub request_id: RequestId,
    pub request_sha256: String,
    pub amount: Amount,
    pub method: PaymentMethod,
    pub payer_code: String,
    pub description: String,
}

pub struct QrOrderCommand {
    pub request_id: RequestId,
    pub request_sha256: String,
    pub amount: Amount,
    pub description: String,
    pub expires_in_s: u32,
}

pub struct RefundCommand {
    pub request_id: RequestId,
    pub request_sha256: String,
    pub payment_id: PaymentId,
    pub amount: Amount,
    pub reason: String,
}

pub struct ReverseCommand {
    pub request_id: RequestId,
    pub request_sha256: String,
    pub payment_id: PaymentId,
}

/// A payment request either starts a new payment or repeats one already made.
enum Started {
    New(Payment),
    Replayed(Payment),
}

/// How often a repeated request looks whether the first one has finished.
const DUPLICATE_POLL_MS: u64 = 20;

/// What a new payment is, before it gets its id.
struct NewPayment<'a> {
    request_id: &'a RequestId,
    method: PaymentMethod,
    amount: Amount,
    description: String,
}

fn payers_account() -> AccountCode {
    Account::Payers.code()
}

fn wallet_account(wallet: &WalletId) -> AccountCode {
    Account::Wallet(wallet).code()
}

fn accounts(wallet: &WalletId) -> Vec<(AccountCode, OverdraftPolicy)> {
    vec![Account::Payers.opening(), Account::Wallet(wallet).opening()]
}

/// Money in: payer to the facility's wallet.
fn payment_entry(payment: &Payment) -> Effects<'_> {
    let entry = JournalEntry::transfer(payers_account(), wallet_account(&payment.merchant_wallet_id), payment.amount)
        .expect("a payment amount is positive");
    let what = EntryRef { kind: "payment", reference: payment.id.as_str(), memo: "" };
    Effects {
        booking: Some(Booking { what, entry, accounts: accounts(&payment.merchant_wallet_id) }),
        events: Vec::new(),
    }
}

/// Money out: the facility's wallet back to the payer.
fn refund_entry<'a>(kind: &'static str, reference: &'a str, wallet: &WalletId, amount: Amount) -> Effects<'a> {
    let entry = JournalEntry::transfer(wallet_account(wallet), payers_account(), amount).expect("positive refund");
    Effects {
        booking: Some(Booking { what: EntryRef { kind, reference, memo: "" }, entry, accounts: accounts(wallet) }),
        events: Vec::new(),
    }
}

/// The callback a payment reaching `to` publishes, if any; data as the payment will be
/// after the change, its version included.
fn payment_event(payment: &Payment, to: PaymentStatus, facts: &TradeFacts) -> Option<NewEvent> {
    let event_type = match to {
        PaymentStatus::Succeeded => EventType::PaymentSucceeded,
        PaymentStatus::Failed | PaymentStatus::Closed => EventType::PaymentFailed,
        PaymentStatus::Reversed => EventType::PaymentReversed,
        PaymentStatus::Processing | PaymentStatus::Userpaying | PaymentStatus::AwaitingScan => return None,
    };
    let data = serde_json::json!({
        "payment_id": payment.id.as_str(),
        "request_id": payment.request_id,
        "facility_id": payment.facility_id.as_str(),
        "terminal_id": payment.terminal_id.as_str(),
        "method": payment.method.as_str(),
        "status": to.as_str(),
        "amount": payment.amount.to_string(),
        "refunded_amount": payment.refunded.to_string(),
        "description": payment.description,
        "out_trade_no": payment.out_trade_no,
        "trade_no": facts.trade_no.clone().or_else(|| payment.trade_no.clone()),
        "fail_code": facts.fail_code.clone().or_else(|| payment.fail_code.clone()),
        "paid_at": facts.paid_at.or(payment.paid_at).map(UnixMs::to_rfc3339_shanghai),
        "created_at": payment.created_at.to_rfc3339_shanghai(),
    });
    Some(NewEvent {
        owner: EventOwner::Facility(payment.facility_id.clone()),
        event_type,
        object_id: payment.id.to_string(),
        object_version: payment.version + 1,
        data,
    })
}

/// The callback a refund reaching `to` publishes.
fn refund_event(payment: &Payment, refund: &Refund, to: RefundStatus, facts: &RefundFacts<'_>) -> Option<NewEvent> {
    let event_type = match to {
        RefundStatus::Succeeded => EventType::RefundSucceeded,
        RefundStatus::Failed => EventType::RefundFailed,
        RefundStatus::Processing => return None,
    };
    let data = serde_json::json!({
        "refund_id": refund.id.as_str(),
        "request_id": refund.request_id,
        "payment_id": payment.id.as_str(),
        "facility_id": payment.facility_id.as_str(),
        "status": to.as_str(),
        "amount": refund.amount.to_string(),
        "reason": refund.reason,
        "out_refund_no": refund.out_refund_no,
        "refund_no": facts.refund_no,
        "fail_code": facts.fail_code,
        "succeeded_at": facts.succeeded_at.map(UnixMs::to_rfc3339_shanghai),
        "created_at": refund.created_at.to_rfc3339_shanghai(),
    });
    Some(NewEvent {
        owner: EventOwner::Facility(payment.facility_id.clone()),
        event_type,
        object_id: refund.id.to_string(),
        object_version: refund.version + 1,
        data,
    })
}

pub(crate) fn parse_operator_time(raw: Option<&str>) -> Option<UnixMs> {
    let instant = OffsetDateTime::parse(raw?, &Rfc3339).ok()?;
    Some(UnixMs((instant.unix_timestamp_nanos() / 1_000_000) as i64))
}

fn business_day(at: UnixMs) -> time::Date {
    let nanos = i128::from(at.0) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH).to_offset(SHANGHAI).date()
}

/// What the operator's status of a trade means for a payment made by `method`. The operator
/// reports an open dynamic QR order as USERPAYING until it is paid or, at its own expiry,
/// closed; for carepay it is still awaiting its scan, and the 30 s confirmation deadline of
/// a payer code (a USERPAYING payment) does not apply to it.
fn map_trade_status(status: TradeStatus, method: PaymentMethod) -> PaymentStatus {
    match status {
        TradeStatus::Userpaying if method == PaymentMethod::DynamicQr => PaymentStatus::AwaitingScan,
        TradeStatus::Userpaying => PaymentStatus::Userpaying,
        TradeStatus::Success => PaymentStatus::Succeeded,
        TradeStatus::Failed => PaymentStatus::Failed,
        TradeStatus::Closed => PaymentStatus::Closed,
        TradeStatus::Reversed => PaymentStatus::Reversed,
    }
}

impl App {
    pub(crate) fn operator(&self) -> Result<&OperatorClient> {
        self.operator
            .as_ref()
            .map(|link| &link.client)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("no wallet operator is configured")))
    }

    fn check_amount(&self, amount: Amount) -> Result<Amount> {
        amount
            .ensure_nonzero()
            .and_then(|amount| amount.ensure_at_most(self.limits.max_transaction_amount))
            .map_err(|error| Error::invalid("amount", error.code(), error))
    }

    fn check_text(&self, field: &str, text: &str) -> Result<String> {
        let text = text.trim();
        if text.chars().count() > self.payments.max_description_chars || text.chars().any(char::is_control) {
            return Err(Error::invalid(
                field,
                "INVALID_TEXT",
                format!("must be at most {} printable characters", self.payments.max_description_chars),
            ));
        }
        Ok(text.to_owned())
    }

    /// The payment, if it belongs to the terminal's facility; otherwise "not found".
    async fn own_payment(&self, terminal: &Terminal, id: &PaymentId) -> Result<Payment> {
        match self.store.payment(id).await? {
            Some(payment) if payment.facility_id == terminal.facility_id => Ok(payment),
            _ => Err(Error::NotFound { what: "payment" }),
        }
    }

    pub async fn get_payment(&self, terminal: &Terminal, id: &PaymentId) -> Result<Payment> {
        self.own_payment(terminal, id).await
    }

    pub async fn get_payment_by_request(&self, terminal: &Terminal, request_id: &RequestId) -> Result<Payment> {
        self.store
            .payment_by_request(&terminal.id, request_id.as_str())
            .await?
            .ok_or(Error::NotFound { what: "payment" })
    }

    pub async fn get_refund(&self, terminal: &Terminal, id: &RefundId) -> Result<Refund> {
        let refund = self.store.refund(id).await?.ok_or(Error::NotFound { what: "refund" })?;
        self.own_payment(terminal, &refund.payment_id).await.map_err(|_| Error::NotFound { what: "refund" })?;
        Ok(refund)
    }

    fn new_payment(&self, terminal: &Terminal, wallet: WalletId, spec: NewPayment<'_>, now: UnixMs) -> Payment {
        let NewPayment { request_id, method, amount, description } = spec;
        let id = PaymentId::generate();
        Payment {
            out_trade_no: id.to_string(),
            id,
            facility_id: terminal.facility_id.clone(),
            terminal_id: terminal.id.clone(),
            request_id: request_id.as_str().to_owned(),
            merchant_wallet_id: wallet,
            method,
            status: if method == PaymentMethod::DynamicQr {
                PaymentStatus::AwaitingScan
            } else {
                PaymentStatus::Processing
            },
            amount,
            refund_reserved: Amount::ZERO,
            refunded: Amount::ZERO,
            description,
            trade_no: None,
            fail_code: None,
            qr_payload: None,
            expires_at: None,
            paid_at: None,
            version: 1,
            created_at: now,
            updated_at: now,
            // If this process dies while talking to the operator, the worker takes over then.
            next_check_at: Some(UnixMs(now.0 + self.payments.request_lease_ms)),
            check_attempts: 0,
        }
    }

    /// Create a payment under the terminal's request id, or (the id seen before) answer
    /// with the payment it created.
    async fn begin_payment(&self, terminal: &Terminal, spec: NewPayment<'_>, request_sha256: &str) -> Result<Started> {
        let now = self.now();
        let request_id = spec.request_id.clone();
        let payment = self.new_payment(terminal, terminal.merchant_wallet_id.clone(), spec, now);
        let request = TerminalRequest {
            terminal_id: &terminal.id,
            request_id: request_id.as_str(),
            request_sha256,
            kind: RequestKind::Payment,
            object_id: payment.id.as_str(),
            now,
        };
        match self.store.begin_payment(&payment, &request).await? {
            Begun::Created(payment) => Ok(Started::New(payment)),
            Begun::Seen(seen) => Ok(Started::Replayed(self.replay_payment(seen, request_sha256).await?)),
        }
    }

    /// Charge a payer code or card.
    pub async fn pay(&self, terminal: &Terminal, command: PayCommand) -> Result<Payment> {
        let amount = self.check_amount(command.amount)?;
        let description = self.check_text("description", &command.description)?;
        let spec = NewPayment { request_id: &command.request_id, method: command.method, amount, description };
        let payment = match self.begin_payment(terminal, spec, &command.request_sha256).await? {
            Started::New(payment) => payment,
            Started::Replayed(payment) => return Ok(payment),
        };
        let answer = self
            .operator()?
            .pay_by_code(&CodePaymentRequest {
                merchant_wallet_id: payment.merchant_wallet_id.as_str().to_owned(),
                out_trade_no: payment.out_trade_no.clone(),
                amount: payment.amount,
                payer_code: command.payer_code,
                description: payment.description.clone(),
                terminal_id: terminal.id.to_string(),
            })
            .await;
        match answer {
            Ok(answer) => {
                let facts = TradeFacts {
                    trade_no: Some(answer.trade_no),
                    fail_code: answer.fail_code,
                    paid_at: parse_operator_time(answer.paid_at.as_deref()),
                    next_check_at: None,
                };
                // A notification may have moved it while we waited; then this re-reads.
                self.move_payment(payment, map_trade_status(answer.status, command.method), facts).await
            }
            Err(error) => {
                self.after_operator_error(&payment, error).await?;
                self.store.payment(&payment.id).await?.ok_or(Error::NotFound { what: "payment" })
            }
        }
    }

    /// A definite refusal fails the payment; an unknown outcome is left for the worker to
    /// resolve by query.
    async fn after_operator_error(&self, payment: &Payment, error: OperatorError) -> Result<()> {
        let now = self.now();
        match error {
            OperatorError::Rejected { code, .. } => {
                let facts = TradeFacts { fail_code: Some(code), ..TradeFacts::default() };
                self.apply_trade_status(payment, PaymentStatus::Failed, facts).await?;
            }
            OperatorError::Unknown { reason } => {
                tracing::warn!(payment = %payment.id, %reason, "operator outcome unknown; will query");
                let facts = TradeFacts {
                    next_check_at: Some(UnixMs(now.0 + self.payments.check_interval_ms)),
                    ..TradeFacts::default()
                };
                self.store.reschedule_payment(&payment.id, payment.status, &facts, now).await?;
            }
        }
        Ok(())
    }

    /// Apply what the operator says about a trade, moving the payment forward only, with
    /// its ledger entry when money moved. Stale or repeated news changes nothing.
    pub(crate) async fn apply_trade_status(
        &self,
        payment: &Payment,
        to: PaymentStatus,
        facts: TradeFacts,
    ) -> Result<()> {
        let current = self.store.payment(&payment.id).await?.ok_or(Error::NotFound { what: "payment" })?;
        self.move_payment(current, to, facts).await.map(|_| ())
    }

    /// Move `current` (as just read or just written) to `to`, forward only, with its ledger
    /// entry and callback, and return the payment as it now stands. Only when another
    /// writer moved it first is it read again.
    async fn move_payment(&self, current: Payment, to: PaymentStatus, facts: TradeFacts) -> Result<Payment> {
        let now = self.now();
        if current.status == to {
            if to.is_pending() {
                let next = UnixMs(now.0 + self.payments.check_interval_ms);
                self.store
                    .reschedule_payment(&current.id, to, &TradeFacts { next_check_at: Some(next), ..facts }, now)
                    .await?;
            }
            return Ok(current);
        }
        if !current.status.may_become(to) {
            tracing::info!(payment = %current.id, from = %current.status, to = %to, "ignored a backward move");
            return Ok(current);
        }
        let facts = TradeFacts {
            paid_at: if to == PaymentStatus::Succeeded { facts.paid_at.or(Some(now)) } else { facts.paid_at },
            next_check_at: if to.is_pending() { Some(UnixMs(now.0 + self.payments.check_interval_ms)) } else { None },
            ..facts
        };
        let mut effects = match (current.status, to) {
            (_, PaymentStatus::Succeeded) => payment_entry(&current),
            (PaymentStatus::Succeeded, PaymentStatus::Reversed) => {
                refund_entry("reversal", current.id.as_str(), &current.merchant_wallet_id, current.amount)
            }
            _ => Effects::default(),
        };
        effects.events.extend(payment_event(&current, to, &facts));
        let moved = self.store.transition_payment(&current.id, &[current.status], to, &facts, effects, now).await?;
        if !moved {
            return self.store.payment(&current.id).await?.ok_or(Error::NotFound { what: "payment" });
        }
        crate::telemetry::payment_moved(to.as_str());
        Ok(Payment {
            status: to,
            trade_no: facts.trade_no.or(current.trade_no.clone()),
            fail_code: facts.fail_code.or(current.fail_code.clone()),
            paid_at: facts.paid_at.or(current.paid_at),
            next_check_at: facts.next_check_at,
            version: current.version + 1,
            updated_at: now,
            ..current
        })
    }

    /// A repeated request id: the same request gets the payment as it stands now (after a
    /// bounded wait for the first call to finish); another request is refused.
    async fn replay_payment(&self, seen: SeenRequest, request_sha256: &str) -> Result<Payment> {
        if seen.kind != RequestKind::Payment || seen.request_sha256 != request_sha256 {
            return Err(Error::IdempotencyMismatch);
        }
        let id = PaymentId::from_trusted(seen.object_id);
        self.wait_for_first(
            || async { self.store.payment(&id).await?.ok_or(Error::NotFound { what: "payment" }) },
            |payment: &Payment| {
                payment.status == PaymentStatus::Processing
                    && payment.check_attempts == 0
                    && self.within_lease(payment.created_at)
            },
        )
        .await
    }

    fn within_lease(&self, created_at: UnixMs) -> bool {
        self.now().0 < created_at.0 + self.payments.request_lease_ms
    }

    /// Read an object until the first request that created it has finished with it
    /// (`still_running` false), at most `duplicate_wait_ms`; past that, ABORTED.
    async fn wait_for_first<T, F, Fut>(&self, read: F, still_running: impl Fn(&T) -> bool) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.payments.duplicate_wait_ms);
        loop {
            let object = read().await?;
            if !still_running(&object) {
                return Ok(object);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::InFlight);
            }
            tokio::time::sleep(Duration::from_millis(DUPLICATE_POLL_MS)).await;
        }
    }

    /// Create a dynamic QR order for the payer to scan.
    pub async fn create_qr_order(&self, terminal: &Terminal, command: QrOrderCommand) -> Result<Payment> {
        let amount = self.check_amount(command.amount)?;
        let description = self.check_text("description", &command.description)?;
        let settings = &self.payments;
        let expires_in_s = if command.expires_in_s == 0 { settings.qr_default_expiry_s } else { command.expires_in_s };
        if !(settings.qr_min_expiry_s..=settings.qr_max_expiry_s).contains(&expires_in_s) {
            return Err(Error::invalid(
                "expires_in_s",
                "INVALID_EXPIRY",
                format!("must be between {} and {} seconds", settings.qr_min_expiry_s, settings.qr_max_expiry_s),
            ));
        }
        let now = self.now();
        let spec =
            NewPayment { request_id: &command.request_id, method: PaymentMethod::DynamicQr, amount, description };
        let payment = match self.begin_payment(terminal, spec, &command.request_sha256).await? {
            Started::New(payment) => payment,
            // The operator's answer to the first call was lost, so there is no code to show.
            // The same out_trade_no and body again get the order the operator made (or make
            // it now); the operator answers it with its code and expiry.
            Started::Replayed(payment)
                if payment.status == PaymentStatus::AwaitingScan && payment.qr_payload.is_none() =>
            {
                payment
            }
            Started::Replayed(payment) => return Ok(payment),
        };
        let answer = self
            .operator()?
            .create_order(&OrderRequest {
                merchant_wallet_id: payment.merchant_wallet_id.as_str().to_owned(),
                out_trade_no: payment.out_trade_no.clone(),
                amount: payment.amount,
                description: payment.description.clone(),
                expires_in_s,
            })
            .await;
        match answer {
            Ok(order) => {
                let expires_at = parse_operator_time(Some(&order.expires_at))
                    .unwrap_or(UnixMs(now.0 + i64::from(expires_in_s) * 1_000));
                let next_check = UnixMs((now.0 + settings.check_interval_ms).min(expires_at.0));
                self.store
                    .set_payment_qr(&payment.id, &order.trade_no, &order.qr_payload, expires_at, next_check, self.now())
                    .await?;
            }
            Err(error) => self.after_operator_error(&payment, error).await?,
        }
        self.store.payment(&payment.id).await?.ok_or(Error::NotFound { what: "payment" })
    }

    /// Refund all or part of a succeeded payment.
    pub async fn refund(&self, terminal: &Terminal, command: RefundCommand) -> Result<Refund> {
        let amount = self.check_amount(command.amount)?;
        let reason = self.check_text("reason", &command.reason)?;
        let payment = self.own_payment(terminal, &command.payment_id).await?;
        let now = self.now();
        let id = RefundId::generate();
        let refund = Refund {
            out_refund_no: id.to_string(),
            id,
            payment_id: payment.id.clone(),
            terminal_id: terminal.id.clone(),
            request_id: command.request_id.as_str().to_owned(),
            status: RefundStatus::Processing,
            amount,
            reason,
            refund_no: None,
            fail_code: None,
            succeeded_at: None,
            version: 1,
            created_at: now,
            updated_at: now,
            next_check_at: Some(UnixMs(now.0 + self.payments.request_lease_ms)),
            check_attempts: 0,
        };
        let request = TerminalRequest {
            terminal_id: &terminal.id,
            request_id: command.request_id.as_str(),
            request_sha256: &command.request_sha256,
            kind: RequestKind::Refund,
            object_id: refund.id.as_str(),
            now,
        };
        let refund = match self.store.begin_refund(&refund, &request).await? {
            Some(Begun::Created(refund)) => refund,
            Some(Begun::Seen(seen)) => return self.replay_refund(seen, &command.request_sha256).await,
            None if payment.status != PaymentStatus::Succeeded => {
                return Err(Error::conflict("PAYMENT_NOT_SUCCEEDED", "only a succeeded payment can be refunded"));
            }
            None => {
                let current = self.store.payment(&payment.id).await?.unwrap_or(payment);
                let left = current.amount.checked_sub(current.refund_reserved).unwrap_or(Amount::ZERO);
                return Err(Error::conflict(
                    "REFUND_EXCEEDS_PAYMENT",
                    format!("refunds would exceed the payment; at most {left} yuan is left to refund"),
                ));
            }
        };
        self.send_refund(&payment, &refund).await?;
        self.store.refund(&refund.id).await?.ok_or(Error::NotFound { what: "refund" })
    }

    /// Ask the operator to refund (again: the same out_refund_no is idempotent there) and
    /// record a definite answer.
    pub(crate) async fn send_refund(&self, payment: &Payment, refund: &Refund) -> Result<()> {
        let answer = self
            .operator()?
            .refund(&RefundRequest {
                merchant_wallet_id: payment.merchant_wallet_id.as_str().to_owned(),
                out_trade_no: payment.out_trade_no.clone(),
                out_refund_no: refund.out_refund_no.clone(),
                amount: refund.amount,
                reason: refund.reason.clone(),
            })
            .await;
        let now = self.now();
        match answer {
            Ok(answer) => {
                let status = match answer.status {
                    crate::operator::types::RefundStatus::Success => RefundStatus::Succeeded,
                    crate::operator::types::RefundStatus::Failed => RefundStatus::Failed,
                    crate::operator::types::RefundStatus::Processing => RefundStatus::Processing,
                };
                self.apply_refund_status(payment, refund, status, Some(&answer.refund_no), None, None).await
            }
            Err(OperatorError::Rejected { code, .. }) => {
                self.apply_refund_status(payment, refund, RefundStatus::Failed, None, Some(&code), None).await
            }
            Err(OperatorError::Unknown { reason }) => {
                tracing::warn!(refund = %refund.id, %reason, "refund outcome unknown; will query");
                let next = UnixMs(now.0 + self.payments.check_interval_ms);
                self.store.reschedule_refund(&refund.id, None, next, now).await?;
                Ok(())
            }
        }
    }

    pub(crate) async fn apply_refund_status(
        &self,
        payment: &Payment,
        refund: &Refund,
        status: RefundStatus,
        refund_no: Option<&str>,
        fail_code: Option<&str>,
        succeeded_at: Option<UnixMs>,
    ) -> Result<()> {
        let now = self.now();
        match status {
            RefundStatus::Processing => {
                let next = UnixMs(now.0 + self.payments.check_interval_ms);
                self.store.reschedule_refund(&refund.id, refund_no, next, now).await?;
            }
            RefundStatus::Succeeded => {
                let mut effects =
                    refund_entry("refund", refund.id.as_str(), &payment.merchant_wallet_id, refund.amount);
                let facts = RefundFacts { refund_no, fail_code: None, succeeded_at: Some(succeeded_at.unwrap_or(now)) };
                effects.events.extend(refund_event(payment, refund, status, &facts));
                if self.store.finish_refund(refund, status, &facts, effects, now).await? {
                    crate::telemetry::refund_finished(status.as_str());
                }
            }
            RefundStatus::Failed => {
                let facts = RefundFacts { refund_no, fail_code, succeeded_at: None };
                let events = refund_event(payment, refund, status, &facts).into_iter().collect();
                if self.store.finish_refund(refund, status, &facts, Effects { booking: None, events }, now).await? {
                    crate::telemetry::refund_finished(status.as_str());
                }
            }
        }
        Ok(())
    }

    async fn replay_refund(&self, seen: SeenRequest, request_sha256: &str) -> Result<Refund> {
        if seen.kind != RequestKind::Refund || seen.request_sha256 != request_sha256 {
            return Err(Error::IdempotencyMismatch);
        }
        let id = RefundId::from_trusted(seen.object_id);
        self.wait_for_first(
            || async { self.store.refund(&id).await?.ok_or(Error::NotFound { what: "refund" }) },
            |refund: &Refund| {
                refund.status == RefundStatus::Processing
                    && refund.check_attempts == 0
                    && refund.refund_no.is_none()
                    && self.within_lease(refund.created_at)
            },
        )
        .await
    }

    /// Undo a payment whose outcome is pending, or a succeeded one on its business day.
    /// Repeating the call (same request id) repeats the operator's idempotent reverse.
    pub async fn reverse(&self, terminal: &Terminal, command: ReverseCommand) -> Result<Payment> {
        let payment = self.own_payment(terminal, &command.payment_id).await?;
        let now = self.now();
        let request = TerminalRequest {
            terminal_id: &terminal.id,
            request_id: command.request_id.as_str(),
            request_sha256: &command.request_sha256,
            kind: RequestKind::Reversal,
            object_id: payment.id.as_str(),
            now,
        };
        if let Some(seen) = self.store.claim_reversal_request(&request).await?
            && (seen.kind != RequestKind::Reversal || seen.request_sha256 != command.request_sha256)
        {
            return Err(Error::IdempotencyMismatch);
        }
        match payment.status {
            PaymentStatus::Reversed => return Ok(payment),
            PaymentStatus::Failed | PaymentStatus::Closed => {
                return Err(Error::conflict(
                    "PAYMENT_NOT_REVERSIBLE",
                    format!("a {} payment cannot be reversed", payment.status),
                ));
            }
            PaymentStatus::Succeeded => {
                if !payment.refund_reserved.is_zero() {
                    return Err(Error::conflict(
                        "PAYMENT_HAS_REFUNDS",
                        "a payment with refunds cannot be reversed; refund the rest",
                    ));
                }
                if business_day(payment.paid_at.unwrap_or(payment.created_at)) != business_day(now) {
                    return Err(Error::conflict(
                        "REVERSAL_WINDOW_CLOSED",
                        "a succeeded payment can only be reversed on the day it was paid; refund it instead",
                    ));
                }
            }
            PaymentStatus::Processing | PaymentStatus::Userpaying | PaymentStatus::AwaitingScan => {}
        }
        self.reverse_with_operator(&payment).await?;
        self.store.payment(&payment.id).await?.ok_or(Error::NotFound { what: "payment" })
    }

    /// Ask the operator to reverse and record a definite answer.
    pub(crate) async fn reverse_with_operator(&self, payment: &Payment) -> Result<()> {
        match self.operator()?.reverse(payment.merchant_wallet_id.as_str(), &payment.out_trade_no).await {
            Ok(answer) => {
                self.apply_trade_status(payment, map_trade_status(answer.status, payment.method), TradeFacts::default())
                    .await
            }
            Err(OperatorError::Rejected { code, message, .. }) => {
                // The operator knows better: learn the trade's real state.
                tracing::info!(payment = %payment.id, %code, %message, "operator refused the reversal");
                if let Ok(trade) =
                    self.operator()?.query_trade(payment.merchant_wallet_id.as_str(), &payment.out_trade_no).await
                {
                    let facts = TradeFacts {
                        trade_no: Some(trade.trade_no),
                        paid_at: parse_operator_time(trade.paid_at.as_deref()),
                        ..TradeFacts::default()
                    };
                    self.apply_trade_status(payment, map_trade_status(trade.status, payment.method), facts).await?;
                }
                Err(Error::conflict("REVERSAL_REFUSED", format!("the operator refused the reversal ({code})")))
            }
            Err(OperatorError::Unknown { reason }) => {
                tracing::warn!(payment = %payment.id, %reason, "reversal outcome unknown");
                Err(Error::Unavailable {
                    detail: String::from("the operator did not answer; repeat the call with the same request_id"),
                })
            }
        }
    }
}
