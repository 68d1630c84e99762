//! The wire types of the wallet operator's API (`shared/spec/operator-api.md`), shared by
//! the operator client and the sandbox operator. Amounts are yuan strings (`Amount`'s serde);
//! times are RFC 3339 strings with offset, kept as text because the spec fixes their form.

use serde::{Deserialize, Serialize};

use crate::domain::money::Amount;

/// `POST /v1/payments/code`: charge a payer's payment code or hard-wallet card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodePaymentRequest {
    pub merchant_wallet_id: String,
    pub out_trade_no: String,
    pub amount: Amount,
    pub payer_code: String,
    pub description: String,
    pub terminal_id: String,
}

/// Answer to a code payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodePaymentResponse {
    pub trade_no: String,
    pub status: TradeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_code: Option<String>,
}

/// `POST /v1/orders`: a merchant-presented dynamic QR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub merchant_wallet_id: String,
    pub out_trade_no: String,
    pub amount: Amount,
    pub description: String,
    pub expires_in_s: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderResponse {
    pub trade_no: String,
    pub qr_payload: String,
    pub expires_at: String,
}

/// `GET /v1/trades/{out_trade_no}?merchant_wallet_id=`, and the `resource` of TRADE.*
/// notifications.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeQueryResponse {
    pub trade_no: String,
    pub out_trade_no: String,
    pub status: TradeStatus,
    pub amount: Amount,
    pub refunded_amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
}

/// `POST /v1/trades/{out_trade_no}/reverse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseRequest {
    pub merchant_wallet_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseResponse {
    pub status: TradeStatus,
}

/// `POST /v1/refunds`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub merchant_wallet_id: String,
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub amount: Amount,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResponse {
    pub refund_no: String,
    pub status: RefundStatus,
}

/// `GET /v1/refunds/{out_refund_no}?merchant_wallet_id=`, and the `resource` of REFUND.*
/// notifications.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundQueryResponse {
    pub refund_no: String,
    pub status: RefundStatus,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded_at: Option<String>,
    /// Present in notifications so the receiver can find the refund without a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_refund_no: Option<String>,
}

/// `POST /v1/transfers`: pay a person's wallet from a funding wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    pub payer_wallet_id: String,
    pub out_transfer_no: String,
    pub payee_wallet_id: String,
    pub payee_name: String,
    pub amount: Amount,
    pub memo: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResponse {
    pub transfer_no: String,
    pub status: TransferStatus,
}

/// `GET /v1/transfers/{out_transfer_no}?payer_wallet_id=`, and the `resource` of
/// TRANSFER.* notifications.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferQueryResponse {
    pub transfer_no: String,
    pub status: TransferStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_transfer_no: Option<String>,
}

/// A non-2xx answer: `{"code": "UPPER_SNAKE", "message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// A notification POSTed by the operator. `resource` is the query result of the object the
/// event is about; its shape depends on `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: NotificationType,
    pub created_at: String,
    pub resource: serde_json::Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NotificationType {
    #[serde(rename = "TRADE.SUCCESS")]
    TradeSuccess,
    #[serde(rename = "TRADE.CLOSED")]
    TradeClosed,
    #[serde(rename = "REFUND.SUCCESS")]
    RefundSuccess,
    #[serde(rename = "REFUND.FAILED")]
    RefundFailed,
    #[serde(rename = "TRANSFER.SUCCESS")]
    TransferSuccess,
    #[serde(rename = "TRANSFER.FAILED")]
    TransferFailed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeStatus {
    Userpaying,
    Success,
    Failed,
    Closed,
    Reversed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Processing,
    Success,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferStatus {
    Accepted,
    Success,
    Failed,
}

/// `fail_code`s and error codes the client must handle.
pub mod codes {
    pub const INSUFFICIENT_BALANCE: &str = "INSUFFICIENT_BALANCE";
    pub const PAYER_CODE_EXPIRED: &str = "PAYER_CODE_EXPIRED";
    pub const WALLET_NOT_FOUND: &str = "WALLET_NOT_FOUND";
    pub const WALLET_FROZEN: &str = "WALLET_FROZEN";
    pub const NAME_MISMATCH: &str = "NAME_MISMATCH";
    pub const WALLET_LIMIT_EXCEEDED: &str = "WALLET_LIMIT_EXCEEDED";
    pub const MERCHANT_NOT_ALLOWED: &str = "MERCHANT_NOT_ALLOWED";
    pub const DUPLICATE_OUT_NO: &str = "DUPLICATE_OUT_NO";
}
