//! Operator notifications: verified by the transport, applied here. A notification is a
//! hint about a trade, refund or transfer; it can only move a record forward, and the same
//! event applied twice changes nothing.

use super::{map_trade_status, parse_operator_time};
use crate::app::App;
use crate::domain::payment::RefundStatus;
use crate::error::{Error, Result};
use crate::operator::types::{Notification, NotificationType, RefundQueryResponse, TradeQueryResponse};
use crate::store::payments::TradeFacts;

impl App {
    /// Apply one verified notification. Unknown objects are acknowledged and ignored: they
    /// are not ours, or not created yet, and a query will settle them.
    pub async fn apply_operator_notification(&self, notification: Notification) -> Result<()> {
        let now = self.now();
        match notification.event_type {
            NotificationType::TradeSuccess | NotificationType::TradeClosed => {
                let trade: TradeQueryResponse = serde_json::from_value(notification.resource)
                    .map_err(|error| Error::invalid("resource", "INVALID_RESOURCE", error))?;
                if let Some(payment) = self.store.payment_by_out_trade_no(&trade.out_trade_no).await? {
                    if trade.amount != payment.amount {
                        tracing::error!(payment = %payment.id, "notification amount differs from the payment; ignored");
                        return Err(Error::invalid("resource.amount", "AMOUNT_MISMATCH", "differs from the payment"));
                    }
                    let facts = TradeFacts {
                        trade_no: Some(trade.trade_no),
                        paid_at: parse_operator_time(trade.paid_at.as_deref()),
                        ..TradeFacts::default()
                    };
                    let status = map_trade_status(trade.status, payment.method);
                    self.apply_trade_status(&payment, status, facts).await?;
                }
            }
            NotificationType::RefundSuccess | NotificationType::RefundFailed => {
                let answer: RefundQueryResponse = serde_json::from_value(notification.resource)
                    .map_err(|error| Error::invalid("resource", "INVALID_RESOURCE", error))?;
                let refund = match answer.out_refund_no.as_deref() {
                    Some(out_refund_no) => self.store.refund_by_out_refund_no(out_refund_no).await?,
                    None => self.store.refund_by_refund_no(&answer.refund_no).await?,
                };
                if let Some(refund) = refund
                    && let Some(payment) = self.store.payment(&refund.payment_id).await?
                {
                    let status = if notification.event_type == NotificationType::RefundSuccess {
                        RefundStatus::Succeeded
                    } else {
                        RefundStatus::Failed
                    };
                    let succeeded_at = parse_operator_time(answer.succeeded_at.as_deref());
                    self.apply_refund_status(&payment, &refund, status, Some(&answer.refund_no), None, succeeded_at)
                        .await?;
                }
            }
            NotificationType::TransferSuccess | NotificationType::TransferFailed => {
                let answer: crate::operator::types::TransferQueryResponse =
                    serde_json::from_value(notification.resource)
                        .map_err(|error| Error::invalid("resource", "INVALID_RESOURCE", error))?;
                crate::disbursement::worker::apply_transfer_notification(self, &answer).await?;
            }
        }
        self.store.record_operator_event(&notification.id, &format!("{:?}", notification.event_type), now).await?;
        Ok(())
    }
}
