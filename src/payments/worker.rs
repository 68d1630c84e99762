//! The background worker that resolves what a request could not: unknown outcomes,
//! USERPAYING payments (reversed after 30 s), dynamic QR orders until they expire, and
//! refunds still processing. Work is claimed with leases, so several instances share it
//! without asking the operator about the same payment at once.

use std::time::Duration;

use super::{map_trade_status, parse_operator_time};
use crate::app::App;
use crate::domain::payment::{Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus};
use crate::domain::time::UnixMs;
use crate::error::Result;
use crate::operator::types::RefundStatus as OperatorRefundStatus;
use crate::store::payments::TradeFacts;

/// Bounds of one worker; from config.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Pause between rounds when nothing was due.
    pub poll_interval_ms: u64,
    /// Most payments and refunds claimed per round.
    pub batch_size: u32,
    /// How long a claim lasts; a crashed worker's claims lapse after this.
    pub lease_ms: i64,
    /// Most expired nonces and idempotency keys deleted per round.
    pub housekeeping_batch: u32,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings { poll_interval_ms: 1_000, batch_size: 100, lease_ms: 30_000, housekeeping_batch: 1_000 }
    }
}

/// Run until `stop` resolves.
pub async fn run(app: App, settings: WorkerSettings, stop: impl std::future::Future<Output = ()>) {
    let owner = format!("worker-{}", uuid::Uuid::now_v7().simple());
    tokio::pin!(stop);
    loop {
        let busy = match round(&app, &settings, &owner).await {
            Ok(busy) => busy,
            Err(error) => {
                tracing::error!(%error, "payments worker round failed");
                false
            }
        };
        let pause = if busy { Duration::ZERO } else { Duration::from_millis(settings.poll_interval_ms) };
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// One round: resolve what is due; `true` when a full batch was found (more may wait).
pub async fn round(app: &App, settings: &WorkerSettings, owner: &str) -> Result<bool> {
    let now = app.now();
    let payments = app.store.claim_due_payments(owner, now, settings.lease_ms, settings.batch_size).await?;
    let refunds = app.store.claim_due_refunds(owner, now, settings.lease_ms, settings.batch_size).await?;
    let full = payments.len() as u32 >= settings.batch_size || refunds.len() as u32 >= settings.batch_size;
    for payment in payments {
        if let Err(error) = app.resolve_payment(&payment).await {
            tracing::warn!(payment = %payment.id, %error, "could not resolve payment this round");
        }
    }
    for refund in refunds {
        if let Err(error) = app.resolve_refund(&refund).await {
            tracing::warn!(refund = %refund.id, %error, "could not resolve refund this round");
        }
    }
    let keys_before = UnixMs(now.0 - app.payments.idempotency_retention_ms);
    // Nonces expire by the wall clock, which the signature check reads (terminals sign with
    // theirs); the app clock may be moved (the demo, tests).
    app.store.purge_terminal_housekeeping(UnixMs::now(), keys_before, settings.housekeeping_batch).await?;
    Ok(full)
}

impl App {
    /// Backoff for the n-th check: doubling from the first interval, capped.
    fn next_check(&self, attempts: i64, now: UnixMs) -> UnixMs {
        let shift = attempts.clamp(0, 16) as u32;
        let delay = self.payments.check_interval_ms.saturating_mul(1 << shift).min(self.payments.max_check_interval_ms);
        UnixMs(now.0 + delay)
    }

    /// Ask the operator where a pending payment stands and act on a definite answer.
    pub(crate) async fn resolve_payment(&self, payment: &Payment) -> Result<()> {
        let now = self.now();
        let query = self.operator()?.query_trade(payment.merchant_wallet_id.as_str(), &payment.out_trade_no).await;
        match query {
            Ok(trade) => {
                let status = map_trade_status(trade.status, payment.method);
                let facts = TradeFacts {
                    trade_no: Some(trade.trade_no),
                    paid_at: parse_operator_time(trade.paid_at.as_deref()),
                    ..TradeFacts::default()
                };
                let waited_ms = now.0 - payment.created_at.0;
                if status == PaymentStatus::Userpaying && waited_ms > self.payments.userpaying_timeout_ms {
                    // Not confirmed in time: undo it so it can never complete later. A QR order
                    // is never USERPAYING here: it stays open until the operator closes it.
                    return match self.reverse_with_operator(payment).await {
                        Ok(()) => Ok(()),
                        Err(_) => self.reschedule(payment, now).await,
                    };
                }
                if status.is_pending() && !payment.status.may_become(status) {
                    let facts = TradeFacts { next_check_at: Some(self.next_pending_check(payment, now)), ..facts };
                    self.store.reschedule_payment(&payment.id, payment.status, &facts, now).await?;
                    return Ok(());
                }
                self.apply_trade_status(payment, status, facts).await
            }
            Err(error) if error.is_not_found() && payment.status == PaymentStatus::AwaitingScan => {
                if now.0 - payment.created_at.0 < self.payments.not_found_grace_ms {
                    // The create call may still be on its way to the operator.
                    return self.reschedule(payment, now).await;
                }
                // The order was never created (the create call's outcome was unknown): close ours.
                self.apply_trade_status(
                    payment,
                    PaymentStatus::Closed,
                    TradeFacts { fail_code: Some(String::from("ORDER_NOT_CREATED")), ..TradeFacts::default() },
                )
                .await
            }
            Err(error) if error.is_not_found() => {
                if now.0 - payment.created_at.0 < self.payments.not_found_grace_ms {
                    return self.reschedule(payment, now).await;
                }
                // Never received. Reverse first so a request still in flight cannot charge later;
                // only then is "failed" a definite answer.
                match self.operator()?.reverse(payment.merchant_wallet_id.as_str(), &payment.out_trade_no).await {
                    Ok(_) => {}
                    Err(reverse_error) if reverse_error.is_not_found() => {}
                    Err(_) => return self.reschedule(payment, now).await,
                }
                let facts =
                    TradeFacts { fail_code: Some(String::from("NOT_RECEIVED_BY_OPERATOR")), ..TradeFacts::default() };
                self.apply_trade_status(payment, PaymentStatus::Failed, facts).await
            }
            Err(error) => {
                tracing::warn!(payment = %payment.id, %error, "query failed; will retry");
                self.reschedule(payment, now).await
            }
        }
    }

    /// When to ask again about a payment the operator has not decided yet. A payer code is
    /// asked at the first interval until its confirmation deadline. A QR order is asked with
    /// backoff while it is open, once just after its expiry, and from then on at intervals
    /// that grow with the time past it, until the operator reports it closed (or paid).
    fn next_pending_check(&self, payment: &Payment, now: UnixMs) -> UnixMs {
        let settings = &self.payments;
        match (payment.method, payment.expires_at) {
            (PaymentMethod::DynamicQr, Some(expires)) if now.0 <= expires.0 => {
                UnixMs(self.next_check(payment.check_attempts, now).0.min(expires.0 + 1_000).max(now.0 + 500))
            }
            (PaymentMethod::DynamicQr, Some(expires)) => {
                UnixMs(now.0 + (now.0 - expires.0).clamp(settings.check_interval_ms, settings.max_check_interval_ms))
            }
            (PaymentMethod::DynamicQr, None) => self.next_check(payment.check_attempts, now),
            (PaymentMethod::PayerCode | PaymentMethod::Card, _) => UnixMs(now.0 + settings.check_interval_ms),
        }
    }

    /// Ask again later, backing off.
    async fn reschedule(&self, payment: &Payment, now: UnixMs) -> Result<()> {
        let facts =
            TradeFacts { next_check_at: Some(self.next_check(payment.check_attempts, now)), ..TradeFacts::default() };
        self.store.reschedule_payment(&payment.id, payment.status, &facts, now).await?;
        Ok(())
    }

    /// Ask the operator where a processing refund stands; resend it if it never arrived.
    pub(crate) async fn resolve_refund(&self, refund: &Refund) -> Result<()> {
        let Some(payment) = self.store.payment(&refund.payment_id).await? else { return Ok(()) };
        let now = self.now();
        match self.operator()?.query_refund(payment.merchant_wallet_id.as_str(), &refund.out_refund_no).await {
            Ok(answer) => {
                let status = match answer.status {
                    OperatorRefundStatus::Success => RefundStatus::Succeeded,
                    OperatorRefundStatus::Failed => RefundStatus::Failed,
                    OperatorRefundStatus::Processing => RefundStatus::Processing,
                };
                let succeeded_at = parse_operator_time(answer.succeeded_at.as_deref());
                self.apply_refund_status(&payment, refund, status, Some(&answer.refund_no), None, succeeded_at).await
            }
            // Never received: sending it again under the same out_refund_no is safe.
            Err(error) if error.is_not_found() => self.send_refund(&payment, refund).await,
            Err(error) => {
                tracing::warn!(refund = %refund.id, %error, "refund query failed; will retry");
                let next = self.next_check(refund.check_attempts, now);
                self.store.reschedule_refund(&refund.id, None, next, now).await?;
                Ok(())
            }
        }
    }
}
