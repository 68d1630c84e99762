//! Every way a terminal request can be badly signed is refused UNAUTHENTICATED, and
//! records nothing.

use carepay::grpc::proto;
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

use crate::backend_tests;
use crate::helpers::{TestApp, terminal_key_pair};
use crate::terminal_client::{nonce, terminal};

backend_tests!(
    badly_signed_requests_are_unauthenticated_and_record_nothing,
    a_terminal_changed_through_another_instance_is_refused_at_its_next_request,
    health_and_reflection_are_served,
);

fn pay_message(request_id: &str) -> proto::PayRequest {
    proto::PayRequest {
        request_id: request_id.to_owned(),
        amount: String::from("1.00"),
        description: String::new(),
        source: Some(proto::pay_request::Source::PayerCode(String::from("013412345678900000"))),
    }
}

/// (payments, nonces stored): every accepted request's nonce is stored, on either backend.
async fn recorded(app: &TestApp) -> (i64, i64) {
    let pool = app.db.raw_pool().await;
    let payments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments").fetch_one(&pool).await.unwrap();
    let nonces: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM terminal_nonces").fetch_one(&pool).await.unwrap();
    (payments, nonces)
}

async fn badly_signed_requests_are_unauthenticated_and_record_nothing(app: TestApp) {
    let mut till = terminal(&app, "0021000000000001").await;
    let (stranger, _) = terminal_key_pair();
    let mut client = till.client.clone();
    let expect_refused = |result: Result<tonic::Response<proto::Payment>, tonic::Status>, why: &str| {
        let status = result.expect_err(why);
        assert_eq!(status.code(), Code::Unauthenticated, "{why}: {status:?}");
        status
    };

    // Unsigned.
    expect_refused(client.pay(tonic::Request::new(pay_message("a"))).await, "unsigned");
    // Signed by another key.
    expect_refused(client.pay(till.signed_with("Pay", pay_message("b"), &nonce(), &stranger)).await, "foreign key");
    // Signed for another method than the one called.
    expect_refused(client.pay(till.signed("GetPayment", pay_message("c"))).await, "wrong method");
    // The signature covers the bytes: a request altered after signing fails.
    let mut altered = till.signed("Pay", pay_message("d"));
    altered.get_mut().amount = String::from("1000.00");
    expect_refused(client.pay(altered).await, "altered body");
    // Stale timestamps, both directions.
    till.clock_skew_s = -301;
    expect_refused(client.pay(till.signed("Pay", pay_message("e"))).await, "old timestamp");
    till.clock_skew_s = 301;
    expect_refused(client.pay(till.signed("Pay", pay_message("f"))).await, "future timestamp");
    till.clock_skew_s = 0;
    assert_eq!(recorded(&app).await, (0, 0), "refused requests recorded nothing");

    // A replayed nonce: the first use succeeds, the second is refused.
    let reused = nonce();
    client.pay(till.signed_with("Pay", pay_message("g"), &reused, &till.key)).await.expect("first use");
    let status =
        expect_refused(client.pay(till.signed_with("Pay", pay_message("g"), &reused, &till.key)).await, "replay");
    assert!(status.message().contains("nonce"), "{status:?}");
    assert_eq!(recorded(&app).await, (1, 1));

    // Suspended, then resumed.
    let root = &app.root_token;
    app.post(&format!("/v1/terminals/{}/suspend", till.id), root, json!(null)).await.expect(StatusCode::OK);
    expect_refused(client.pay(till.signed("Pay", pay_message("h"))).await, "suspended");
    app.post(&format!("/v1/terminals/{}/resume", till.id), root, json!(null)).await.expect(StatusCode::OK);

    // Rotated: the old key no longer verifies, the new one does.
    let (new_key, new_public) = terminal_key_pair();
    app.post(&format!("/v1/terminals/{}/rotate-key", till.id), root, json!({"public_key": new_public}))
        .await
        .expect(StatusCode::OK);
    expect_refused(client.pay(till.signed("Pay", pay_message("i"))).await, "rotated-out key");
    client.pay(till.signed_with("Pay", pay_message("j"), &nonce(), &new_key)).await.expect("new key works");

    // Unknown terminal.
    till.id = format!("trm_{}", "0".repeat(32));
    expect_refused(client.pay(till.signed_with("Pay", pay_message("k"), &nonce(), &new_key)).await, "unknown terminal");
    assert_eq!(recorded(&app).await, (2, 2));
}

/// Another instance suspends, resumes and re-keys the terminal; this instance, which has
/// just served it, follows at once (its copy of the terminal is checked again as the nonce
/// is recorded).
async fn a_terminal_changed_through_another_instance_is_refused_at_its_next_request(app: TestApp) {
    let till = terminal(&app, "0021000000000002").await;
    let mut client = till.client.clone();
    let replica = app.spawn_replica(crate::helpers::test_limits()).await;
    let on_replica = |path: String, body: serde_json::Value| {
        let request = app.client.post(format!("{replica}{path}")).bearer_auth(&app.root_token).json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
    };
    client.pay(till.signed("Pay", pay_message("before"))).await.expect("served before the change");

    on_replica(format!("/v1/terminals/{}/suspend", till.id), json!(null)).await;
    let status = client.pay(till.signed("Pay", pay_message("suspended"))).await.expect_err("suspended elsewhere");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("suspended"), "{status:?}");

    on_replica(format!("/v1/terminals/{}/resume", till.id), json!(null)).await;
    client.pay(till.signed("Pay", pay_message("resumed"))).await.expect("resumed elsewhere");

    let (new_key, new_public) = terminal_key_pair();
    on_replica(format!("/v1/terminals/{}/rotate-key", till.id), json!({"public_key": new_public})).await;
    let status = client.pay(till.signed("Pay", pay_message("old-key"))).await.expect_err("re-keyed elsewhere");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    client.pay(till.signed_with("Pay", pay_message("new-key"), &nonce(), &new_key)).await.expect("the new key");
    assert_eq!(recorded(&app).await, (3, 3), "refused requests recorded nothing");
}

async fn health_and_reflection_are_served(app: TestApp) {
    let channel = tonic::transport::Channel::from_shared(app.address.clone()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // grpc.health.v1.Health/Check for the terminal service, encoded by hand: field 1 = service name.
    let service = "carepay.terminal.v1.TerminalService";
    let mut request = vec![0x0a, service.len() as u8];
    request.extend_from_slice(service.as_bytes());
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let response: tonic::Response<Vec<u8>> =
        grpc.unary(tonic::Request::new(request), path, RawCodec).await.expect("health check answers");
    // HealthCheckResponse { status: SERVING (1) } encodes as 08 01.
    assert_eq!(response.into_inner(), vec![0x08, 0x01]);
}

/// A codec that passes message bytes through, to call a service without its generated types.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf as _;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}
