//! The SM2 profile against an independent implementation, PyPI `gmssl` (pure Python, SM2 with
//! SM3 and the default user id): gmssl verifies what carepay signs, carepay verifies what gmssl
//! signs, both derive the same public key, and a changed byte fails on both sides. `.ci/run`
//! installs `gmssl` when missing.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carepay::operator::clock::Clock;
use carepay::operator::signing::{
    SignatureAlgorithm, SignatureError, SignatureHeaders, Signer, Verifier, request_message, response_message,
};
use ring::rand::SecureRandom as _;
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/operator/gmssl_sm2.py");
const NOW_S: i64 = 1_795_900_000;
const BODY: &str = r#"{"merchant_wallet_id":"0021000000000001","out_trade_no":"P-20261128-0001","amount":"12.50","payer_code":"0100000000000000000","description":"午餐","terminal_id":"trm_01"}"#;
const PATH: &str = "/v1/payments/code";

/// Runs the gmssl script on `tasks`, one process for all of them.
fn gmssl(tasks: &[Value]) -> Vec<Value> {
    match Command::new("python3").args(["-c", "import gmssl"]).output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "the SM2 interop test needs the Python package `gmssl` (`pip install gmssl`; .ci/run installs it): {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!("the SM2 interop test needs python3 on PATH: {error}"),
    }
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the gmssl script");
    child.stdin.take().unwrap().write_all(Value::from(tasks.to_vec()).to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the gmssl script failed");
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("a JSON list");
    assert_eq!(results.len(), tasks.len());
    results
}

fn random_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut secret).unwrap();
    secret
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

#[test]
fn gmssl_verifies_carepays_sm2_signatures_and_carepay_verifies_gmssls() {
    let clock = Clock::manual(NOW_S * 1_000);
    // Several random keys, so points whose X starts with any digit are exercised.
    let signers: Vec<(Signer, [u8; 32])> = (0..4)
        .filter_map(|n| {
            let secret = random_secret();
            Signer::from_secret(SignatureAlgorithm::Sm2Sm3, &format!("bank-sm2-{n}"), &secret, clock.clone())
                .ok()
                .map(|signer| (signer, secret))
        })
        .collect();
    assert!(signers.len() >= 3);
    let request = request_message("POST", PATH, NOW_S, "n0nce0123456789abcdef", BODY.as_bytes());
    let notification = response_message(NOW_S, "abcdef0123456789nonce", BODY.as_bytes());
    let tampered =
        request_message("POST", PATH, NOW_S, "n0nce0123456789abcdef", BODY.replace("12.50", "12.51").as_bytes());

    let mut tasks = Vec::new();
    for (signer, secret) in &signers {
        let public_key = hex::encode(signer.public_key());
        let carepay_request = signer.sign_request_at("POST", PATH, NOW_S, "n0nce0123456789abcdef", BODY.as_bytes());
        let carepay_notification = signer.sign_response_at(NOW_S, "abcdef0123456789nonce", BODY.as_bytes());
        let der = |headers: &SignatureHeaders| headers.signature.strip_prefix("sm2-sm3:").unwrap().to_owned();
        tasks.push(json!({"op": "public_key", "private_key": hex::encode(secret)}));
        tasks.push(json!({"op": "verify", "public_key": public_key, "message": b64(&request), "signature": der(&carepay_request)}));
        tasks.push(json!({"op": "verify", "public_key": public_key, "message": b64(&notification), "signature": der(&carepay_notification)}));
        tasks.push(json!({"op": "verify", "public_key": public_key, "message": b64(&tampered), "signature": der(&carepay_request)}));
        tasks.push(json!({"op": "sign", "private_key": hex::encode(secret), "message": b64(&request)}));
        tasks.push(json!({"op": "sign", "private_key": hex::encode(secret), "message": b64(&notification)}));
    }
    let results = gmssl(&tasks);

    for ((signer, _), results) in signers.iter().zip(results.chunks(6)) {
        assert_eq!(results[0]["public_key"], hex::encode(signer.public_key()), "d G agrees");
        assert_eq!(results[1]["valid"], true, "gmssl verifies carepay's request signature");
        assert_eq!(results[2]["valid"], true, "gmssl verifies carepay's notification signature");
        assert_eq!(results[3]["valid"], false, "gmssl refuses it over a changed body");

        let verifier = Verifier::new(clock.clone());
        verifier.add_key(signer.key_id(), signer.verifying_key()).unwrap();
        let signed_by_gmssl = |nonce: &str, result: &Value| SignatureHeaders {
            key_id: signer.key_id().to_owned(),
            timestamp_s: NOW_S,
            nonce: nonce.to_owned(),
            signature: format!("sm2-sm3:{}", result["signature"].as_str().unwrap()),
        };
        let request_headers = signed_by_gmssl("n0nce0123456789abcdef", &results[4]);
        let changed = BODY.replace("12.50", "12.51");
        assert_eq!(
            verifier.verify_request(&request_headers, "POST", PATH, changed.as_bytes()),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(verifier.verify_request(&request_headers, "POST", PATH, BODY.as_bytes()), Ok(()));
        let notification_headers = signed_by_gmssl("abcdef0123456789nonce", &results[5]);
        assert_eq!(verifier.verify_response(&notification_headers, BODY.as_bytes()), Ok(()));
    }
}

#[test]
fn gmssl_reproduces_the_published_appendix_signature_from_its_k() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/operator/data/sm2-sm3-vectors.json");
    let vectors: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vector = &vectors["sm2_signatures"][0];
    let results = gmssl(&[
        json!({"op": "sign_e_with_k", "private_key": vector["private_key"], "e": vector["e"], "k": vector["k"]}),
        json!({"op": "public_key", "private_key": vector["private_key"]}),
    ]);
    assert_eq!(results[0]["signature"], vector["signature_der"]);
    assert_eq!(results[1]["public_key"], vector["public_key"]);
}
