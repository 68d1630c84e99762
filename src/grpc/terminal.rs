//! The TerminalService: each RPC parses its message into a use-case command, calls the
//! payments use cases as the verified terminal, and renders the result.

use tonic::{Request, Response, Status};

use super::auth::VerifiedTerminal;
use super::error::status;
use super::proto;
use super::proto::terminal_service_server::TerminalService;
use crate::app::App;
use crate::domain::ids::{PaymentId, RefundId};
use crate::domain::money::Amount;
use crate::domain::payment::{Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus, RequestId};
use crate::domain::time::UnixMs;
use crate::error::Error;
use crate::payments::{PayCommand, QrOrderCommand, RefundCommand, ReverseCommand};

#[derive(Clone)]
pub struct TerminalGrpc {
    pub app: App,
}

fn verified<T>(request: &Request<T>) -> Result<VerifiedTerminal, Status> {
    request
        .extensions()
        .get::<VerifiedTerminal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("request was not signed"))
}

fn request_id(raw: &str) -> Result<RequestId, Status> {
    RequestId::parse(raw).map_err(|reason| status(Error::invalid("request_id", "INVALID_REQUEST_ID", reason)))
}

fn amount(raw: &str) -> Result<Amount, Status> {
    Amount::parse(raw).map_err(|error| status(Error::invalid("amount", error.code(), error)))
}

fn payment_id(field: &str, raw: &str) -> Result<PaymentId, Status> {
    PaymentId::parse(raw).map_err(|error| status(Error::invalid(field, "INVALID_ID", error)))
}

fn payer_code(field: &str, raw: &str) -> Result<String, Status> {
    if (18..=19).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit()) {
        Ok(raw.to_owned())
    } else {
        Err(status(Error::invalid(field, "INVALID_PAYER_CODE", "must be an 18- or 19-digit code")))
    }
}

fn time(at: Option<UnixMs>) -> String {
    at.map(UnixMs::to_rfc3339_shanghai).unwrap_or_default()
}

pub fn payment_message(payment: Payment) -> proto::Payment {
    use proto::{PaymentMethod as M, PaymentStatus as S};
    proto::Payment {
        payment_id: payment.id.to_string(),
        request_id: payment.request_id,
        facility_id: payment.facility_id.to_string(),
        terminal_id: payment.terminal_id.to_string(),
        method: match payment.method {
            PaymentMethod::PayerCode => M::PayerCode,
            PaymentMethod::Card => M::Card,
            PaymentMethod::DynamicQr => M::DynamicQr,
        } as i32,
        status: match payment.status {
            PaymentStatus::Processing => S::Processing,
            PaymentStatus::Userpaying => S::Userpaying,
            PaymentStatus::AwaitingScan => S::AwaitingScan,
            PaymentStatus::Succeeded => S::Succeeded,
            PaymentStatus::Failed => S::Failed,
            PaymentStatus::Closed => S::Closed,
            PaymentStatus::Reversed => S::Reversed,
        } as i32,
        amount: payment.amount.to_string(),
        refunded_amount: payment.refunded.to_string(),
        description: payment.description,
        out_trade_no: payment.out_trade_no,
        trade_no: payment.trade_no.unwrap_or_default(),
        fail_code: payment.fail_code.unwrap_or_default(),
        qr_payload: payment.qr_payload.unwrap_or_default(),
        expires_at: time(payment.expires_at),
        created_at: payment.created_at.to_rfc3339_shanghai(),
        paid_at: time(payment.paid_at),
        version: payment.version,
    }
}

pub fn refund_message(refund: Refund) -> proto::Refund {
    use proto::RefundStatus as S;
    proto::Refund {
        refund_id: refund.id.to_string(),
        request_id: refund.request_id,
        payment_id: refund.payment_id.to_string(),
        status: match refund.status {
            RefundStatus::Processing => S::Processing,
            RefundStatus::Succeeded => S::Succeeded,
            RefundStatus::Failed => S::Failed,
        } as i32,
        amount: refund.amount.to_string(),
        reason: refund.reason,
        out_refund_no: refund.out_refund_no,
        fail_code: refund.fail_code.unwrap_or_default(),
        created_at: refund.created_at.to_rfc3339_shanghai(),
        succeeded_at: time(refund.succeeded_at),
        version: refund.version,
    }
}

#[tonic::async_trait]
impl TerminalService for TerminalGrpc {
    async fn pay(&self, request: Request<proto::PayRequest>) -> Result<Response<proto::Payment>, Status> {
        let caller = verified(&request)?;
        let message = request.into_inner();
        let (method, code) = match message.source {
            Some(proto::pay_request::Source::PayerCode(code)) => {
                (PaymentMethod::PayerCode, payer_code("payer_code", &code)?)
            }
            Some(proto::pay_request::Source::CardCode(code)) => (PaymentMethod::Card, payer_code("card_code", &code)?),
            None => return Err(status(Error::invalid("source", "MISSING_FIELD", "send payer_code or card_code"))),
        };
        let command = PayCommand {
            request_id: request_id(&message.request_id)?,
            request_sha256: caller.request_sha256,
            amount: amount(&message.amount)?,
            method,
            payer_code: code,
            description: message.description,
        };
        let payment = self.app.pay(&caller.terminal, command).await.map_err(status)?;
        Ok(Response::new(payment_message(payment)))
    }

    async fn create_qr_order(
        &self,
        request: Request<proto::CreateQrOrderRequest>,
    ) -> Result<Response<proto::Payment>, Status> {
        let caller = verified(&request)?;
        let message = request.into_inner();
        let command = QrOrderCommand {
            request_id: request_id(&message.request_id)?,
            request_sha256: caller.request_sha256,
            amount: amount(&message.amount)?,
            description: message.description,
            expires_in_s: message.expires_in_s,
        };
        let payment = self.app.create_qr_order(&caller.terminal, command).await.map_err(status)?;
        Ok(Response::new(payment_message(payment)))
    }

    async fn get_payment(
        &self,
        request: Request<proto::GetPaymentRequest>,
    ) -> Result<Response<proto::Payment>, Status> {
        let caller = verified(&request)?;
        let payment = match request.into_inner().key {
            Some(proto::get_payment_request::Key::PaymentId(id)) => {
                self.app.get_payment(&caller.terminal, &payment_id("payment_id", &id)?).await
            }
            Some(proto::get_payment_request::Key::RequestId(id)) => {
                self.app.get_payment_by_request(&caller.terminal, &request_id(&id)?).await
            }
            None => return Err(status(Error::invalid("key", "MISSING_FIELD", "send payment_id or request_id"))),
        }
        .map_err(status)?;
        Ok(Response::new(payment_message(payment)))
    }

    async fn refund(&self, request: Request<proto::RefundRequest>) -> Result<Response<proto::Refund>, Status> {
        let caller = verified(&request)?;
        let message = request.into_inner();
        let command = RefundCommand {
            request_id: request_id(&message.request_id)?,
            request_sha256: caller.request_sha256,
            payment_id: payment_id("payment_id", &message.payment_id)?,
            amount: amount(&message.amount)?,
            reason: message.reason,
        };
        let refund = self.app.refund(&caller.terminal, command).await.map_err(status)?;
        Ok(Response::new(refund_message(refund)))
    }

    async fn get_refund(&self, request: Request<proto::GetRefundRequest>) -> Result<Response<proto::Refund>, Status> {
        let caller = verified(&request)?;
        let raw = request.into_inner().refund_id;
        let id = RefundId::parse(&raw).map_err(|error| status(Error::invalid("refund_id", "INVALID_ID", error)))?;
        let refund = self.app.get_refund(&caller.terminal, &id).await.map_err(status)?;
        Ok(Response::new(refund_message(refund)))
    }

    async fn reverse(&self, request: Request<proto::ReverseRequest>) -> Result<Response<proto::Payment>, Status> {
        let caller = verified(&request)?;
        let message = request.into_inner();
        let command = ReverseCommand {
            request_id: request_id(&message.request_id)?,
            request_sha256: caller.request_sha256,
            payment_id: payment_id("payment_id", &message.payment_id)?,
        };
        let payment = self.app.reverse(&caller.terminal, command).await.map_err(status)?;
        Ok(Response::new(payment_message(payment)))
    }
}
