//! The SM2 profile against published vectors (`data/sm2-sm3-vectors.json`): SM3 from GB/T 32905,
//! the GM/T 0003.5 appendix signature on sm2p256v1 with the default user id, and the spec's own
//! request and notification vectors signed the profile's way (computed with PyPI `gmssl`).
//! Where the vector gives the nonce `k`, the signature is reproduced from it with the curve's
//! arithmetic, not only verified.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carepay::operator::clock::Clock;
use carepay::operator::signing::{
    PublicKey, SM2_USER_ID, SignatureAlgorithm, SignatureHeaders, Signer, Verifier, request_message, response_message,
};
use serde_json::Value;
use sm2::elliptic_curve::point::AffineCoordinates as _;
use sm2::elliptic_curve::{Group as _, PrimeField as _};
use sm3::Digest as _;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/operator/data/sm2-sm3-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn unhex(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().unwrap()).unwrap()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap()
}

fn sm3(parts: &[&[u8]]) -> Vec<u8> {
    let mut hasher = sm3::Sm3::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().to_vec()
}

/// `Z_A = SM3(ENTL_A || ID_A || a || b || x_G || y_G || x_A || y_A)`, from the vector file's
/// curve parameters (GB/T 32918.2, 5.5).
fn z_a(curve: &Value, user_id: &str, public_key: &[u8]) -> Vec<u8> {
    let entl = u16::try_from(user_id.len() * 8).unwrap().to_be_bytes();
    let [a, b, gx, gy] = ["a", "b", "gx", "gy"].map(|name| unhex(&curve[name]));
    sm3(&[&entl, user_id.as_bytes(), &a, &b, &gx, &gy, &public_key[1..33], &public_key[33..65]])
}

fn scalar(bytes: &[u8]) -> sm2::Scalar {
    sm2::Scalar::from_repr(sm2::FieldBytes::try_from(bytes).unwrap()).into_option().expect("a scalar below n")
}

/// GB/T 32918.2 A4-A6 with the given `k`: `(x1, y1) = [k]G`, `r = (e + x1) mod n`,
/// `s = (1 + d)^-1 (k - r d) mod n`; the signature as the profile encodes it (DER).
fn sign_with_k(d: &[u8], e: &[u8], k: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (d, k) = (scalar(d), scalar(k));
    let e = <sm2::Scalar as sm2::elliptic_curve::ops::Reduce<sm2::FieldBytes>>::reduce(
        &sm2::FieldBytes::try_from(e).unwrap(),
    );
    let point = sm2::ProjectivePoint::mul_by_generator(&k).to_affine();
    let r = e + <sm2::Scalar as sm2::elliptic_curve::ops::Reduce<sm2::FieldBytes>>::reduce(&point.x());
    let s = (d + sm2::Scalar::ONE).invert().unwrap() * (k - r * d);
    let signature = sm2::dsa::Signature::from_scalars(r.to_repr(), s.to_repr()).unwrap();
    (r.to_repr().to_vec(), s.to_repr().to_vec(), signature.to_der().to_vec())
}

#[test]
fn sm3_hashes_the_standards_examples() {
    for vector in vectors()["sm3"].as_array().unwrap() {
        assert_eq!(hex::encode(sm3(&[text(&vector["message_utf8"]).as_bytes()])), text(&vector["digest"]));
    }
}

#[test]
fn the_gmt_0003_appendix_signature_verifies_and_is_reproduced_from_its_k() {
    let vectors = vectors();
    let curve = &vectors["sm2p256v1"];
    for vector in vectors["sm2_signatures"].as_array().unwrap() {
        assert_eq!(text(&vector["user_id"]), SM2_USER_ID, "the profile's user id is the standard's default");
        let message = text(&vector["message_utf8"]).as_bytes();
        let signer =
            Signer::from_secret(SignatureAlgorithm::Sm2Sm3, "annex", &unhex(&vector["private_key"]), Clock::system())
                .unwrap();
        let public_key = unhex(&vector["public_key"]);
        assert_eq!(signer.public_key(), public_key.as_slice(), "d G is the published point");

        let z = z_a(curve, SM2_USER_ID, &public_key);
        assert_eq!(hex::encode(&z), text(&vector["z_a"]));
        let e = sm3(&[&z, message]);
        assert_eq!(hex::encode(&e), text(&vector["e"]));

        let (r, s, der) = sign_with_k(&unhex(&vector["private_key"]), &e, &unhex(&vector["k"]));
        assert_eq!(hex::encode(r), text(&vector["r"]));
        assert_eq!(hex::encode(s), text(&vector["s"]));
        assert_eq!(hex::encode(&der), text(&vector["signature_der"]));

        let key = PublicKey::new(SignatureAlgorithm::Sm2Sm3, public_key).unwrap();
        assert!(key.verifies(message, &der));
        assert!(!key.verifies(b"message digesT", &der));
        assert!(key.verifies(message, &signer_signature(&signer, message)), "carepay's own signature of it");
    }
}

/// What `signer` produces for `message` (the raw DER after the label), through the signing
/// API carepay uses for operator messages.
fn signer_signature(signer: &Signer, message: &[u8]) -> Vec<u8> {
    let value = signer.signature_value(message);
    BASE64.decode(value.strip_prefix("sm2-sm3:").expect("labelled sm2-sm3")).unwrap()
}

#[test]
fn the_spec_vectors_signed_the_sm2_way_verify_and_reproduce_byte_for_byte() {
    let vectors = vectors();
    let profile = &vectors["operator_profile"];
    let curve = &vectors["sm2p256v1"];
    let secret = unhex(&profile["private_key"]);
    let key_id = text(&profile["key_id"]);
    let clock = Clock::manual(1_795_900_000_000);
    let signer = Signer::from_secret(SignatureAlgorithm::Sm2Sm3, key_id, &secret, clock.clone()).unwrap();
    assert_eq!(signer.public_key_base64(), text(&profile["public_key_base64"]));
    let verifier = Verifier::new(clock);
    let key = PublicKey::from_base64(SignatureAlgorithm::Sm2Sm3, text(&profile["public_key_base64"])).unwrap();
    verifier.add_key(key_id, key).unwrap();
    let z = z_a(curve, SM2_USER_ID, signer.public_key());

    let request = &profile["request"];
    let timestamp_s = request["timestamp"].as_i64().unwrap();
    let message = request_message(
        text(&request["method"]),
        text(&request["path_with_query"]),
        timestamp_s,
        text(&request["nonce"]),
        text(&request["body"]).as_bytes(),
    );
    let e = sm3(&[&z, &message]);
    assert_eq!(hex::encode(&e), text(&request["e"]));
    let (_, _, der) = sign_with_k(&secret, &e, &unhex(&profile["k"]));
    assert_eq!(format!("sm2-sm3:{}", BASE64.encode(der)), text(&request["signature"]));
    let headers = SignatureHeaders {
        key_id: key_id.to_owned(),
        timestamp_s,
        nonce: text(&request["nonce"]).to_owned(),
        signature: text(&request["signature"]).to_owned(),
    };
    let verified = verifier.verify_request(
        &headers,
        text(&request["method"]),
        text(&request["path_with_query"]),
        text(&request["body"]).as_bytes(),
    );
    assert_eq!(verified, Ok(()));

    let notification = &profile["notification"];
    let timestamp_s = notification["timestamp"].as_i64().unwrap();
    let body = text(&notification["body"]).as_bytes();
    let message = response_message(timestamp_s, text(&notification["nonce"]), body);
    let e = sm3(&[&z, &message]);
    assert_eq!(hex::encode(&e), text(&notification["e"]));
    let (_, _, der) = sign_with_k(&secret, &e, &unhex(&profile["k"]));
    assert_eq!(format!("sm2-sm3:{}", BASE64.encode(der)), text(&notification["signature"]));
    let headers = SignatureHeaders {
        key_id: key_id.to_owned(),
        timestamp_s,
        nonce: text(&notification["nonce"]).to_owned(),
        signature: text(&notification["signature"]).to_owned(),
    };
    assert_eq!(verifier.verify_response(&headers, body), Ok(()));
    let tampered = String::from_utf8(body.to_vec()).unwrap().replace("12.50", "12.51");
    let replay_free = SignatureHeaders { nonce: String::from("abcdef0123456789nonc2"), ..headers };
    assert!(verifier.verify_response(&replay_free, tampered.as_bytes()).is_err());
}
