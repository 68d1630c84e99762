use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carepay::operator::client::{OperatorClient, OperatorSettings};
use carepay::operator::clock::Clock;
use carepay::operator::signing::{SignatureAlgorithm, Signer, Verifier};
use carepay::operator::types::{ErrorBody, TradeStatus};

use crate::helpers::*;

const SPEC_SEED: &str = "A1oN0NHhOi3fDorzPcMW2mQYO/sK8mV+bhWx57qKkG4=";

#[test]
fn both_spec_test_vectors_sign_to_the_published_signatures() {
    let signer = Signer::from_seed_base64("k1", SPEC_SEED, Clock::system()).unwrap();
    assert_eq!(signer.public_key_base64(), "AJleQ5YNwqtksahmYC5WevsvFkaBDD3c5JzFeyVyrfw=");
    let request_body = r#"{"merchant_wallet_id":"0021000000000001","out_trade_no":"P-20261128-0001","amount":"12.50","payer_code":"0100000000000000000","description":"午餐","terminal_id":"trm_01"}"#;
    let signed = signer.sign_request_at(
        "POST",
        "/v1/payments/code",
        1_795_900_000,
        "n0nce0123456789abcdef",
        request_body.as_bytes(),
    );
    assert_eq!(
        signed.signature,
        "ed25519:On9SnTRr2R4FG77qLNuZVMNNwn7+bdCaQPYCvWo4U33q84X7V+e32cKg8c+Xh94LG60+shWwE56WUZhu2pAIAQ=="
    );
    let notification_body = r#"{"id":"evt_01","type":"TRADE.SUCCESS","created_at":"2026-11-28T09:15:02+08:00","resource":{"trade_no":"T0001","out_trade_no":"P-20261128-0001","status":"SUCCESS","amount":"12.50","refunded_amount":"0.00","paid_at":"2026-11-28T09:15:02+08:00"}}"#;
    let signed = signer.sign_response_at(1_795_900_001, "abcdef0123456789nonce", notification_body.as_bytes());
    assert_eq!(
        signed.signature,
        "ed25519:UtEgWhpKb+00Pr6DgE9CBLgl5zMLlz8BK6mcay2e5tyuZZHvavtSev5aFeGPipIadoC5ZbTnLHl8aQjyb72ZDg=="
    );
}

#[tokio::test]
async fn a_replayed_request_with_the_same_nonce_is_refused() {
    let operator = spawn_operator().await;
    operator.client.pay_by_code(&code_payment("P-replay", 100, &payer_code(1, "0000"))).await.unwrap();
    let path = format!("/v1/trades/P-replay?merchant_wallet_id={MERCHANT}");
    let signature = operator.client_signer.sign_request("GET", &path, b"");
    let first = signed_raw(&operator, "GET", &path, "", &signature).await;
    assert_eq!(first.status(), 200);
    let replayed = signed_raw(&operator, "GET", &path, "", &signature).await;
    assert_eq!(replayed.status(), 401);
    let body: ErrorBody = replayed.json().await.unwrap();
    assert_eq!(body.code, "INVALID_SIGNATURE");
    assert!(body.message.contains("REPLAYED_NONCE"), "{}", body.message);
}

#[tokio::test]
async fn unsigned_and_foreign_key_requests_are_refused_with_a_signed_401() {
    let operator = spawn_operator().await;
    let unsigned = operator
        .http
        .get(format!("{}/v1/trades/P-1?merchant_wallet_id={MERCHANT}", operator.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert!(unsigned.headers().contains_key("operator-signature"));

    let stranger = Arc::new(Signer::generate(CLIENT_KEY_ID, Clock::system()).unwrap());
    let verifier = Arc::new(Verifier::new(Clock::system()));
    verifier.add_key(&operator.sandbox.key_id(), operator.sandbox.verifying_key()).unwrap();
    let client = OperatorClient::new(
        OperatorSettings { base_url: operator.base_url.clone(), ..test_settings() },
        stranger,
        verifier,
    )
    .expect("operator client");
    let error = client.pay_by_code(&code_payment("P-stranger", 100, &payer_code(1, "0000"))).await.unwrap_err();
    assert_eq!(error.code(), Some("INVALID_SIGNATURE"), "{error:?}");
    assert!(operator.client.query_trade(MERCHANT, "P-stranger").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn answers_signed_by_an_untrusted_key_are_unknown_not_success() {
    let operator = spawn_operator().await;
    let verifier = Arc::new(Verifier::new(Clock::system()));
    let other = Signer::generate("someone-else", Clock::system()).unwrap();
    verifier.add_key(&operator.sandbox.key_id(), other.verifying_key()).unwrap();
    let client = OperatorClient::new(
        OperatorSettings { base_url: operator.base_url.clone(), ..test_settings() },
        operator.client_signer.clone(),
        verifier,
    )
    .expect("operator client");
    let error = client.pay_by_code(&code_payment("P-untrusted", 100, &payer_code(1, "0000"))).await.unwrap_err();
    assert!(error.is_unknown(), "{error:?}");
    // It did happen: only the answer could not be believed.
    assert_eq!(operator.client.query_trade(MERCHANT, "P-untrusted").await.unwrap().status, TradeStatus::Success);
}

/// A fake operator that signs one body and sends another, as a tampering middlebox would.
#[tokio::test]
async fn an_answer_whose_body_does_not_match_its_signature_is_unknown() {
    let clock = Clock::system();
    let operator_signer = Arc::new(Signer::generate("fake-op", clock.clone()).unwrap());
    let signer = operator_signer.clone();
    let app = axum::Router::new().fallback(move || {
        let signer = signer.clone();
        async move {
            let signed_body = br#"{"trade_no":"T1","status":"FAILED","fail_code":"INSUFFICIENT_BALANCE"}"#;
            let sent_body = r#"{"trade_no":"T1","status":"SUCCESS"}"#;
            let mut headers = HeaderMap::new();
            signer.sign_response(signed_body).write_to(&mut headers);
            (StatusCode::OK, headers, sent_body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let verifier = Arc::new(Verifier::new(clock.clone()));
    verifier.add_key("fake-op", operator_signer.verifying_key()).unwrap();
    let client_signer = Arc::new(Signer::generate("carepay", clock).unwrap());
    let client = OperatorClient::new(OperatorSettings { base_url, ..test_settings() }, client_signer, verifier)
        .expect("operator client");
    let error = client.pay_by_code(&code_payment("P-tampered", 100, &payer_code(1, "0000"))).await.unwrap_err();
    assert!(error.is_unknown(), "{error:?}");
}

/// The operator client and the sandbox over HTTP with SM2 on both sides, the sandbox switching
/// its key through its admin route while carepay holds both, and carepay's own keys of both
/// algorithms registered at the sandbox for carepay's migration.
#[tokio::test]
async fn sm2_keys_are_registered_and_switched_over_the_admin_routes_and_both_verify() {
    let operator = spawn_operator().await;
    let clock = operator.clock.clone();
    let carepay_sm2 =
        Arc::new(Signer::generate_with(SignatureAlgorithm::Sm2Sm3, "carepay-sm2", clock.clone()).unwrap());
    let admin = |path: &str, body: serde_json::Value| {
        operator.http.post(format!("{}{path}", operator.base_url)).json(&body).send()
    };
    let registered = admin(
        "/sandbox/client-keys",
        serde_json::json!({"key_id": "carepay-sm2", "algorithm": "sm2-sm3", "public_key": carepay_sm2.public_key_base64()}),
    )
    .await
    .unwrap();
    assert_eq!(registered.status(), 200);
    let wrong_length = admin(
        "/sandbox/client-keys",
        serde_json::json!({"key_id": "x", "algorithm": "sm2-sm3", "public_key": operator.client_signer.public_key_base64()}),
    )
    .await
    .unwrap();
    assert_eq!(wrong_length.status(), 400);
    assert_eq!(wrong_length.json::<ErrorBody>().await.unwrap().code, "INVALID_KEY");

    // carepay's verifier trusts the sandbox's Ed25519 key and, announced ahead, its SM2 key.
    let sandbox_secret = [7u8; 32];
    let sandbox_sm2 =
        Signer::from_secret(SignatureAlgorithm::Sm2Sm3, "sandbox-sm2", &sandbox_secret, clock.clone()).unwrap();
    let verifier = Arc::new(Verifier::new(clock.clone()));
    verifier.add_key(&operator.sandbox.key_id(), operator.sandbox.verifying_key()).unwrap();
    verifier.add_key("sandbox-sm2", sandbox_sm2.verifying_key()).unwrap();
    let client = |signer: Arc<Signer>| {
        OperatorClient::new(
            OperatorSettings { base_url: operator.base_url.clone(), ..test_settings() },
            signer,
            Arc::clone(&verifier),
        )
        .expect("operator client")
    };
    let (ed25519_client, sm2_client) = (client(operator.client_signer.clone()), client(carepay_sm2));
    for (n, client) in [&ed25519_client, &sm2_client].into_iter().enumerate() {
        let paid = client.pay_by_code(&code_payment(&format!("P-ed-{n}"), 100, &payer_code(1, "0000"))).await.unwrap();
        assert_eq!(paid.status, TradeStatus::Success);
    }

    let unknown = admin("/sandbox/signing-key", serde_json::json!({"key_id": "k", "algorithm": "rsa"})).await.unwrap();
    assert_eq!(unknown.status(), 400);
    let switched = admin(
        "/sandbox/signing-key",
        serde_json::json!({"key_id": "sandbox-sm2", "algorithm": "sm2-sm3", "secret": BASE64.encode(sandbox_secret)}),
    )
    .await
    .unwrap();
    assert_eq!(switched.status(), 200);
    let shown: serde_json::Value = switched.json().await.unwrap();
    assert_eq!(shown["algorithm"], "sm2-sm3");
    assert_eq!(shown["public_key"], sandbox_sm2.public_key_base64());
    let current: serde_json::Value =
        operator.http.get(format!("{}/sandbox/key", operator.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(current, shown);

    for (n, client) in [&ed25519_client, &sm2_client].into_iter().enumerate() {
        let paid = client.pay_by_code(&code_payment(&format!("P-sm2-{n}"), 100, &payer_code(1, "0000"))).await.unwrap();
        assert_eq!(paid.status, TradeStatus::Success, "an answer signed with SM2 verifies");
    }
    // Without the announced key, the same answers are not believed: nothing verifies by accident.
    let ed25519_only = Arc::new(Verifier::new(clock));
    ed25519_only.add_key("sandbox-1", operator.client_signer.verifying_key()).unwrap();
    let unaware = OperatorClient::new(
        OperatorSettings { base_url: operator.base_url.clone(), ..test_settings() },
        operator.client_signer.clone(),
        ed25519_only,
    )
    .expect("operator client");
    assert!(unaware.query_trade(MERCHANT, "P-sm2-0").await.unwrap_err().is_unknown());
}
