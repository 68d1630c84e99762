//! A signing terminal for tests: a real gRPC client that signs every request exactly as
//! `proto/carepay/terminal/v1/terminal.proto` describes.

use carepay::grpc::client::now_s;
use carepay::grpc::proto;
use carepay::grpc::proto::terminal_service_client::TerminalServiceClient;
use ring::signature::Ed25519KeyPair;
use serde_json::json;
use tonic::transport::Channel;

use crate::helpers::{TestApp, terminal_key_pair};

pub struct TestTerminal {
    pub id: String,
    pub facility_id: String,
    pub key: Ed25519KeyPair,
    pub client: TerminalServiceClient<Channel>,
    /// Seconds added to the clock when signing (to test stale timestamps).
    pub clock_skew_s: i64,
}

/// A facility with wallet `wallet` and one registered terminal, ready to sign.
pub async fn terminal(app: &TestApp, wallet: &str) -> TestTerminal {
    let root = &app.root_token;
    let district = match app.get("/v1/regions", root).await.body["items"][0]["id"].as_str() {
        Some(id) => id.to_owned(),
        None => app.create_region(root, None, "district", "吴江区").await,
    };
    let facility_id = app.create_facility(root, &district, &format!("助餐点{wallet}"), wallet).await;
    let (key, public_key) = terminal_key_pair();
    let id = app
        .post("/v1/terminals", root, json!({"facility_id": facility_id, "label": "收银台", "public_key": public_key}))
        .await
        .id();
    TestTerminal { id, facility_id, key, client: connect(app).await, clock_skew_s: 0 }
}

pub async fn connect(app: &TestApp) -> TerminalServiceClient<Channel> {
    connect_to(&app.address).await
}

pub async fn connect_to(address: &str) -> TerminalServiceClient<Channel> {
    let channel = Channel::from_shared(address.to_owned()).unwrap().connect().await.expect("gRPC connect");
    TerminalServiceClient::new(channel)
}

pub use carepay::grpc::client::new_nonce as nonce;

impl TestTerminal {
    /// Wrap `message` with the four signature entries for `method`.
    pub fn signed<M: prost::Message>(&self, method: &str, message: M) -> tonic::Request<M> {
        self.signed_with(method, message, &nonce(), &self.key)
    }

    pub fn signed_with<M: prost::Message>(
        &self,
        method: &str,
        message: M,
        nonce: &str,
        key: &Ed25519KeyPair,
    ) -> tonic::Request<M> {
        carepay::grpc::client::sign(&self.id, key, method, message, now_s() + self.clock_skew_s, nonce)
    }

    pub async fn pay(&self, request_id: &str, amount: &str, payer_code: &str) -> Result<proto::Payment, tonic::Status> {
        let message = proto::PayRequest {
            request_id: request_id.to_owned(),
            amount: amount.to_owned(),
            description: String::from("午餐"),
            source: Some(proto::pay_request::Source::PayerCode(payer_code.to_owned())),
        };
        self.client.clone().pay(self.signed("Pay", message)).await.map(tonic::Response::into_inner)
    }

    pub async fn get_payment(&self, payment_id: &str) -> Result<proto::Payment, tonic::Status> {
        let message =
            proto::GetPaymentRequest { key: Some(proto::get_payment_request::Key::PaymentId(payment_id.to_owned())) };
        self.client.clone().get_payment(self.signed("GetPayment", message)).await.map(tonic::Response::into_inner)
    }

    pub async fn refund(
        &self,
        request_id: &str,
        payment_id: &str,
        amount: &str,
    ) -> Result<proto::Refund, tonic::Status> {
        let message = proto::RefundRequest {
            request_id: request_id.to_owned(),
            payment_id: payment_id.to_owned(),
            amount: amount.to_owned(),
            reason: String::from("退餐"),
        };
        self.client.clone().refund(self.signed("Refund", message)).await.map(tonic::Response::into_inner)
    }

    pub async fn reverse(&self, request_id: &str, payment_id: &str) -> Result<proto::Payment, tonic::Status> {
        let message = proto::ReverseRequest { request_id: request_id.to_owned(), payment_id: payment_id.to_owned() };
        self.client.clone().reverse(self.signed("Reverse", message)).await.map(tonic::Response::into_inner)
    }

    pub async fn create_qr(
        &self,
        request_id: &str,
        amount: &str,
        expires_in_s: u32,
    ) -> Result<proto::Payment, tonic::Status> {
        let message = proto::CreateQrOrderRequest {
            request_id: request_id.to_owned(),
            amount: amount.to_owned(),
            description: String::from("护理费"),
            expires_in_s,
        };
        self.client
            .clone()
            .create_qr_order(self.signed("CreateQrOrder", message))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Poll until the payment reaches `status` (bounded), returning it.
    pub async fn wait_for_status(&self, payment_id: &str, status: proto::PaymentStatus) -> proto::Payment {
        let mut last = None;
        for _ in 0..200 {
            let payment = self.get_payment(payment_id).await.expect("get payment");
            if payment.status == status as i32 {
                return payment;
            }
            last = Some(payment);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("payment never reached {status:?}; last seen {last:?}");
    }
}
