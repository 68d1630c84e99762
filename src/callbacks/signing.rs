//! Standard Webhooks signatures: `v1` (HMAC-SHA256 with a `whsec_` secret) and `v1a`
//! (Ed25519, verified with a `whpk_` public key), both over `{id}.{timestamp}.{body}`.
//! Several signatures travel space-separated in one `webhook-signature` header, which is
//! how a rotation's old and new secrets both verify during the overlap.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

pub const SECRET_PREFIX: &str = "whsec_";
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";
/// Secret length in bytes: 256 bits, within the 24..=64 the spec recommends.
const SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the system random generator failed")]
    Random,
    #[error("a stored signing secret or key is malformed")]
    Malformed,
}

/// A `v1` signing secret. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    pub fn generate() -> Result<SigningSecret, SigningError> {
        let mut bytes = vec![0u8; SECRET_BYTES];
        SystemRandom::new().fill(&mut bytes).map_err(|_| SigningError::Random)?;
        Ok(SigningSecret(bytes))
    }

    /// `whsec_<base64>`, as shown to the endpoint's owner and as libraries take it.
    pub fn parse(whsec: &str) -> Result<SigningSecret, SigningError> {
        let encoded = whsec.strip_prefix(SECRET_PREFIX).unwrap_or(whsec);
        let bytes = BASE64.decode(encoded).map_err(|_| SigningError::Malformed)?;
        if bytes.is_empty() { Err(SigningError::Malformed) } else { Ok(SigningSecret(bytes)) }
    }

    pub fn from_bytes(bytes: Vec<u8>) -> SigningSecret {
        SigningSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret in its shareable form. Call only to show it to its owner, once.
    pub fn expose_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.0))
    }

    /// `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.
    pub fn sign(&self, message_id: &str, timestamp_s: i64, body: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let mut context = ring::hmac::Context::with_key(&key);
        context.update(message_id.as_bytes());
        context.update(b".");
        context.update(timestamp_s.to_string().as_bytes());
        context.update(b".");
        context.update(body.as_bytes());
        format!("v1,{}", BASE64.encode(context.sign().as_ref()))
    }
}

/// An Ed25519 key pair for `v1a` signatures, kept as its PKCS#8 document.
pub struct Ed25519Signer {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer").field("public_key", &self.public_key()).finish_non_exhaustive()
    }
}

impl Ed25519Signer {
    /// A fresh key pair and its PKCS#8 document (to be sealed before it is stored).
    pub fn generate() -> Result<(Ed25519Signer, Vec<u8>), SigningError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| SigningError::Random)?;
        let signer = Ed25519Signer::from_pkcs8(pkcs8.as_ref())?;
        Ok((signer, pkcs8.as_ref().to_vec()))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Ed25519Signer, SigningError> {
        Ok(Ed25519Signer { pair: Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| SigningError::Malformed)? })
    }

    /// `whpk_<base64 of the raw 32-byte public key>`.
    pub fn public_key(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", BASE64.encode(self.pair.public_key().as_ref()))
    }

    /// `v1a,<base64 Ed25519("{id}.{timestamp}.{body}")>`.
    pub fn sign(&self, message_id: &str, timestamp_s: i64, body: &str) -> String {
        let message = format!("{message_id}.{timestamp_s}.{body}");
        format!("v1a,{}", BASE64.encode(self.pair.sign(message.as_bytes()).as_ref()))
    }
}

/// Everything that signs for one endpoint at one moment.
#[derive(Debug)]
pub struct EndpointSigner {
    pub current: SigningSecret,
    /// The secret replaced by the last rotation, while its overlap lasts.
    pub previous: Option<SigningSecret>,
    pub ed25519: Option<Ed25519Signer>,
}

impl EndpointSigner {
    /// The `webhook-signature` header value: every signature that applies, space-separated.
    pub fn header(&self, message_id: &str, timestamp_s: i64, body: &str) -> String {
        let mut signatures = vec![self.current.sign(message_id, timestamp_s, body)];
        if let Some(previous) = &self.previous {
            signatures.push(previous.sign(message_id, timestamp_s, body));
        }
        if let Some(ed25519) = &self.ed25519 {
            signatures.push(ed25519.sign(message_id, timestamp_s, body));
        }
        signatures.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_signs_as_published() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, r#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_round_trip_and_never_show_in_debug() {
        let secret = SigningSecret::generate().unwrap();
        let shown = secret.expose_whsec();
        assert!(shown.starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&shown).unwrap(), secret);
        assert!(!format!("{secret:?}").contains(&shown[6..]));
    }

    #[test]
    fn v1a_signatures_verify_with_the_public_key() {
        let (signer, pkcs8) = Ed25519Signer::generate().unwrap();
        let again = Ed25519Signer::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(signer.public_key(), again.public_key());
        let signature = signer.sign("msg_1", 1_700_000_000, "{}");
        let raw = BASE64.decode(signature.strip_prefix("v1a,").unwrap()).unwrap();
        let public = BASE64.decode(signer.public_key().strip_prefix("whpk_").unwrap()).unwrap();
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
        assert!(key.verify(b"msg_1.1700000000.{}", &raw).is_ok());
        assert!(key.verify(b"msg_1.1700000000.{ }", &raw).is_err());
    }

    #[test]
    fn during_a_rotation_both_secrets_sign() {
        let old = SigningSecret::generate().unwrap();
        let new = SigningSecret::generate().unwrap();
        let signer = EndpointSigner { current: new.clone(), previous: Some(old.clone()), ed25519: None };
        let header = signer.header("msg_1", 1, "{}");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts, vec![new.sign("msg_1", 1, "{}"), old.sign("msg_1", 1, "{}")]);
    }
}
