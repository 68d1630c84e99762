//! The operator API's signature scheme, both directions (`operator-api.md`, "Signatures").
//!
//! Four headers travel with every request, response and notification: `Operator-Key-Id`,
//! `Operator-Timestamp` (unix seconds), `Operator-Nonce` (16-64 `[A-Za-z0-9]`) and
//! `Operator-Signature: <alg>:<base64>`. The signed message is each part followed by `\n`:
//! requests sign `METHOD`, `PATH_WITH_QUERY`, `TIMESTAMP`, `NONCE`, `BODY`; responses and
//! notifications sign `TIMESTAMP`, `NONCE`, `BODY`.
//!
//! [`Signer`] signs with one key of a [`SignatureAlgorithm`]: Ed25519 (the spec's), or SM2 with
//! SM3 (`sm2-sm3`, the name the spec reserves; the profile is defined in README.md, "SM2
//! profile": GB/T 32918.2 with the default user id [`SM2_USER_ID`], ASN.1 DER signatures,
//! uncompressed SEC1 public keys). [`Verifier`] holds several public keys by key id (keys
//! rotate, and during a migration keys of both algorithms are trusted at once), each bound to
//! its algorithm, and accepts Ed25519, ECDSA P-256/SHA-256 (ASN.1 DER) and SM2 signatures; it
//! refuses an unknown key id, a signature labelled with another algorithm than its key's, a bad
//! signature, a timestamp more than [`MAX_CLOCK_SKEW_S`] from its clock and a nonce already
//! seen within that window.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderValue};
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{self, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use super::clock::Clock;

pub const HEADER_KEY_ID: &str = "operator-key-id";
pub const HEADER_TIMESTAMP: &str = "operator-timestamp";
pub const HEADER_NONCE: &str = "operator-nonce";
pub const HEADER_SIGNATURE: &str = "operator-signature";

/// A signature's timestamp may be this far from the verifier's clock, either way.
pub const MAX_CLOCK_SKEW_S: i64 = 300;

/// Nonces a verifier remembers at once. A nonce must be remembered for as long as its
/// timestamp is acceptable (at most 2 x [`MAX_CLOCK_SKEW_S`]); when this many unexpired
/// nonces are held, further messages are refused rather than letting a replay through.
pub const DEFAULT_REPLAY_CACHE_CAPACITY: usize = 100_000;

const NONCE_MIN_CHARS: usize = 16;
const NONCE_MAX_CHARS: usize = 64;
/// Unix seconds fit in 12 digits for the next 30,000 years; longer is garbage.
const TIMESTAMP_MAX_DIGITS: usize = 12;
/// Base64 of a DER ECDSA P-256 or SM2 signature (at most 72 bytes) is under 100 chars; this
/// leaves room and no more.
const SIGNATURE_HEADER_MAX_CHARS: usize = 256;
const KEY_ID_MAX_CHARS: usize = 128;

/// The signature algorithms of the operator contract: the spec's two, and `sm2-sm3`, which the
/// spec reserves and carepay implements as its SM2 profile. A key is bound to one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    Ed25519,
    EcdsaP256Sha256,
    /// SM2 signatures (GB/T 32918.2) over SM3 (GB/T 32905) with the default user id.
    Sm2Sm3,
}

impl SignatureAlgorithm {
    /// The `alg` of `Operator-Signature: <alg>:<base64>`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureAlgorithm::Ed25519 => "ed25519",
            SignatureAlgorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            SignatureAlgorithm::Sm2Sm3 => "sm2-sm3",
        }
    }

    pub fn parse(raw: &str) -> Option<SignatureAlgorithm> {
        match raw {
            "ed25519" => Some(SignatureAlgorithm::Ed25519),
            "ecdsa-p256-sha256" => Some(SignatureAlgorithm::EcdsaP256Sha256),
            "sm2-sm3" => Some(SignatureAlgorithm::Sm2Sm3),
            _ => None,
        }
    }

    /// Raw public key bytes: 32 for Ed25519, 65 (uncompressed SEC1 `04||X||Y`) for the curves.
    fn public_key_len(self) -> usize {
        match self {
            SignatureAlgorithm::Ed25519 => 32,
            SignatureAlgorithm::EcdsaP256Sha256 | SignatureAlgorithm::Sm2Sm3 => 65,
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for SignatureAlgorithm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SignatureAlgorithm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SignatureAlgorithm, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for SignatureAlgorithm {
    type Err = String;

    fn from_str(raw: &str) -> Result<SignatureAlgorithm, String> {
        SignatureAlgorithm::parse(raw)
            .ok_or_else(|| format!("unknown signature algorithm {raw:?} (ed25519, ecdsa-p256-sha256 or sm2-sm3)"))
    }
}

/// The user id (`ID_A`) of SM2's `Z_A` in the profile: GB/T 32918.2's default, 16 bytes, so
/// `ENTL_A` is 128 bits.
pub const SM2_USER_ID: &str = "1234567812345678";

/// Signing attempts with fresh randomness after the deterministic SM2 nonce proved unusable
/// (GB/T 32918.2 A5/A6: `r = 0`, `r + k = n` or `s = 0`, each about 2^-256 likely).
const SM2_SIGN_ATTEMPTS: usize = 8;
/// Random draws of an SM2 private key before giving up (one fails about once in 2^32).
const SM2_KEYGEN_ATTEMPTS: usize = 8;

/// Why a signature was refused. [`SignatureError::reason`] is stable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    #[error("unknown key id")]
    UnknownKeyId,
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    #[error("signature algorithm does not match the key's")]
    AlgorithmMismatch,
    #[error("signature does not verify")]
    BadSignature,
    #[error("timestamp more than {MAX_CLOCK_SKEW_S} s from the verifier's clock")]
    StaleTimestamp,
    #[error("nonce already seen within the signature window")]
    ReplayedNonce,
    #[error("too many recent nonces to remember; try again shortly")]
    ReplayCacheFull,
}

impl SignatureError {
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader(_) => "MISSING_HEADER",
            SignatureError::MalformedHeader(_) => "MALFORMED_HEADER",
            SignatureError::UnknownKeyId => "UNKNOWN_KEY_ID",
            SignatureError::UnsupportedAlgorithm => "UNSUPPORTED_ALGORITHM",
            SignatureError::AlgorithmMismatch => "ALGORITHM_MISMATCH",
            SignatureError::BadSignature => "BAD_SIGNATURE",
            SignatureError::StaleTimestamp => "STALE_TIMESTAMP",
            SignatureError::ReplayedNonce => "REPLAYED_NONCE",
            SignatureError::ReplayCacheFull => "REPLAY_CACHE_FULL",
        }
    }
}

/// Why a key could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is not valid base64")]
    Base64,
    #[error("key has the wrong length for its algorithm")]
    Length,
    #[error("key rejected: {0}")]
    Rejected(String),
    #[error("key id must be 1-{KEY_ID_MAX_CHARS} printable ASCII characters")]
    KeyId,
    #[error("unknown signature algorithm (ed25519, ecdsa-p256-sha256 or sm2-sm3)")]
    UnknownAlgorithm,
    #[error("carepay verifies {0} signatures but does not sign with it")]
    SigningUnsupported(SignatureAlgorithm),
}

/// The four signature headers of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub key_id: String,
    pub timestamp_s: i64,
    pub nonce: String,
    /// `<alg>:<base64 signature>`.
    pub signature: String,
}

impl SignatureHeaders {
    /// Reads and shape-checks the headers; the signature itself is checked by [`Verifier`].
    pub fn from_header_map(headers: &HeaderMap) -> Result<SignatureHeaders, SignatureError> {
        let key_id = header_text(headers, HEADER_KEY_ID)?;
        if !valid_key_id(key_id) {
            return Err(SignatureError::MalformedHeader(HEADER_KEY_ID));
        }
        let timestamp = header_text(headers, HEADER_TIMESTAMP)?;
        if timestamp.is_empty()
            || timestamp.len() > TIMESTAMP_MAX_DIGITS
            || !timestamp.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(SignatureError::MalformedHeader(HEADER_TIMESTAMP));
        }
        let timestamp_s = timestamp.parse().map_err(|_| SignatureError::MalformedHeader(HEADER_TIMESTAMP))?;
        let nonce = header_text(headers, HEADER_NONCE)?;
        if !valid_nonce(nonce) {
            return Err(SignatureError::MalformedHeader(HEADER_NONCE));
        }
        let signature = header_text(headers, HEADER_SIGNATURE)?;
        if signature.len() > SIGNATURE_HEADER_MAX_CHARS {
            return Err(SignatureError::MalformedHeader(HEADER_SIGNATURE));
        }
        Ok(SignatureHeaders {
            key_id: key_id.to_owned(),
            timestamp_s,
            nonce: nonce.to_owned(),
            signature: signature.to_owned(),
        })
    }

    /// Writes the four headers (replacing any already there).
    pub fn write_to(&self, headers: &mut HeaderMap) {
        for (name, value) in self.pairs() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }

    pub fn pairs(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_KEY_ID, self.key_id.clone()),
            (HEADER_TIMESTAMP, self.timestamp_s.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ]
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, SignatureError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(SignatureError::MissingHeader(name))?;
    // Two copies of a signature header leave it ambiguous which one was meant.
    if values.next().is_some() {
        return Err(SignatureError::MalformedHeader(name));
    }
    value.to_str().map_err(|_| SignatureError::MalformedHeader(name))
}

fn valid_key_id(key_id: &str) -> bool {
    !key_id.is_empty() && key_id.len() <= KEY_ID_MAX_CHARS && key_id.bytes().all(|b| b.is_ascii_graphic())
}

pub fn valid_nonce(nonce: &str) -> bool {
    (NONCE_MIN_CHARS..=NONCE_MAX_CHARS).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The signed message of a request: each part followed by `\n`.
pub fn request_message(method: &str, path_with_query: &str, timestamp_s: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp_s.to_string();
    let mut message = Vec::with_capacity(method.len() + path_with_query.len() + nonce.len() + body.len() + 24);
    for part in [method.as_bytes(), path_with_query.as_bytes(), timestamp.as_bytes(), nonce.as_bytes(), body] {
        message.extend_from_slice(part);
        message.push(b'\n');
    }
    message
}

/// The signed message of a response or notification: each part followed by `\n`.
pub fn response_message(timestamp_s: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp_s.to_string();
    let mut message = Vec::with_capacity(nonce.len() + body.len() + 16);
    for part in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        message.extend_from_slice(part);
        message.push(b'\n');
    }
    message
}

/// A fresh nonce: 32 hex digits from the system's secure random source.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    // The system random source failing is not something to continue past: a predictable
    // nonce would defeat replay protection.
    SystemRandom::new().fill(&mut bytes).expect("system random source");
    hex::encode(bytes)
}

/// A private key of one [`SignatureAlgorithm`], ready to sign.
enum SigningKey {
    Ed25519(Ed25519KeyPair),
    Sm2Sm3 {
        key: Box<sm2::dsa::SigningKey>,
        /// Uncompressed SEC1, `04||X||Y`.
        public_key: Box<[u8]>,
    },
}

impl SigningKey {
    /// `secret` is the 32-byte Ed25519 seed, or the SM2 private key `d` as 32 big-endian bytes
    /// (`1 <= d <= n - 2`, GB/T 32918.1).
    fn from_secret(algorithm: SignatureAlgorithm, secret: &[u8]) -> Result<SigningKey, KeyError> {
        if secret.len() != 32 {
            return Err(KeyError::Length);
        }
        match algorithm {
            SignatureAlgorithm::Ed25519 => Ed25519KeyPair::from_seed_unchecked(secret)
                .map(SigningKey::Ed25519)
                .map_err(|e| KeyError::Rejected(e.to_string())),
            SignatureAlgorithm::Sm2Sm3 => {
                let rejected = || KeyError::Rejected(String::from("not an SM2 private key in [1, n-2]"));
                let key = sm2::dsa::SigningKey::from_slice(SM2_USER_ID, secret).map_err(|_| rejected())?;
                // d = n - 1 is a scalar but no key: signing divides by 1 + d.
                let d: sm2::Scalar = **key.as_nonzero_scalar();
                if bool::from((d + sm2::Scalar::ONE).is_zero()) {
                    return Err(rejected());
                }
                let public_key = key.verifying_key().to_sec1_bytes();
                Ok(SigningKey::Sm2Sm3 { key: Box::new(key), public_key })
            }
            SignatureAlgorithm::EcdsaP256Sha256 => Err(KeyError::SigningUnsupported(algorithm)),
        }
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self {
            SigningKey::Ed25519(_) => SignatureAlgorithm::Ed25519,
            SigningKey::Sm2Sm3 { .. } => SignatureAlgorithm::Sm2Sm3,
        }
    }

    fn public_key(&self) -> &[u8] {
        match self {
            SigningKey::Ed25519(key_pair) => key_pair.public_key().as_ref(),
            SigningKey::Sm2Sm3 { public_key, .. } => public_key,
        }
    }

    /// The raw signature: Ed25519's 64 bytes, or SM2's `SEQUENCE { r INTEGER, s INTEGER }` in DER.
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::Ed25519(key_pair) => key_pair.sign(message).as_ref().to_vec(),
            SigningKey::Sm2Sm3 { key, .. } => sm2_sign(key, message).to_der().to_vec(),
        }
    }
}

/// SM2 signs with a nonce derived from the key and the message (RFC 6979 with SM3), so the same
/// message signs the same, as Ed25519 does. The standard's rare "pick another k" falls back to
/// nonces hedged with system randomness.
fn sm2_sign(key: &sm2::dsa::SigningKey, message: &[u8]) -> sm2::dsa::Signature {
    use sm2::dsa::signature::{RandomizedSigner as _, Signer as _};
    if let Ok(signature) = key.try_sign(message) {
        return signature;
    }
    for _ in 0..SM2_SIGN_ATTEMPTS {
        if let Ok(signature) = key.try_sign_with_rng(&mut SystemRng, message) {
            return signature;
        }
    }
    // Eight more unusable nonces in a row (about 2^-2000), or no random source: not something to
    // continue past, as with a nonce in `new_nonce`.
    panic!("SM2 signing found no usable nonce");
}

/// The system's secure random source, for the SM2 crate's randomness traits.
struct SystemRng;

#[derive(Debug, thiserror::Error)]
#[error("the system random source failed")]
struct NoRandomSource;

impl sm2::dsa::signature::rand_core::TryRng for SystemRng {
    type Error = NoRandomSource;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut bytes = [0u8; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut bytes = [0u8; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        SystemRandom::new().fill(dst).map_err(|_| NoRandomSource)
    }
}

impl sm2::dsa::signature::rand_core::TryCryptoRng for SystemRng {}

/// Signs with one key: Ed25519 or SM2/SM3. `Debug` shows the key id and public key only.
pub struct Signer {
    key_id: String,
    key: SigningKey,
    clock: Clock,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm())
            .field("public_key", &self.public_key_base64())
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl Signer {
    /// An Ed25519 signer from a 32-byte seed.
    pub fn from_seed(key_id: &str, seed: &[u8], clock: Clock) -> Result<Signer, KeyError> {
        Signer::from_secret(SignatureAlgorithm::Ed25519, key_id, seed, clock)
    }

    /// An Ed25519 signer from the base64 of a 32-byte seed (surrounding whitespace ignored, so
    /// a key file may end with a newline).
    pub fn from_seed_base64(key_id: &str, seed_base64: &str, clock: Clock) -> Result<Signer, KeyError> {
        Signer::from_secret_base64(SignatureAlgorithm::Ed25519, key_id, seed_base64, clock)
    }

    /// A signer of `algorithm` from its 32-byte secret: the Ed25519 seed, or the SM2 private
    /// key `d` big-endian.
    pub fn from_secret(
        algorithm: SignatureAlgorithm,
        key_id: &str,
        secret: &[u8],
        clock: Clock,
    ) -> Result<Signer, KeyError> {
        if !valid_key_id(key_id) {
            return Err(KeyError::KeyId);
        }
        let key = SigningKey::from_secret(algorithm, secret)?;
        Ok(Signer { key_id: key_id.to_owned(), key, clock })
    }

    /// [`Signer::from_secret`] from base64 (surrounding whitespace ignored).
    pub fn from_secret_base64(
        algorithm: SignatureAlgorithm,
        key_id: &str,
        secret_base64: &str,
        clock: Clock,
    ) -> Result<Signer, KeyError> {
        let secret = BASE64.decode(secret_base64.trim()).map_err(|_| KeyError::Base64)?;
        Signer::from_secret(algorithm, key_id, &secret, clock)
    }

    /// An Ed25519 signer with a new random key.
    pub fn generate(key_id: &str, clock: Clock) -> Result<Signer, KeyError> {
        Signer::generate_with(SignatureAlgorithm::Ed25519, key_id, clock)
    }

    /// A signer of `algorithm` with a new random key.
    pub fn generate_with(algorithm: SignatureAlgorithm, key_id: &str, clock: Clock) -> Result<Signer, KeyError> {
        let mut last = KeyError::SigningUnsupported(algorithm);
        // A random 32 bytes is an Ed25519 seed; it is an SM2 key unless it is 0 or at least
        // n - 1, which the loop draws again.
        for _ in 0..SM2_KEYGEN_ATTEMPTS {
            let mut secret = [0u8; 32];
            SystemRandom::new().fill(&mut secret).map_err(|_| KeyError::Rejected(String::from("no random source")))?;
            match Signer::from_secret(algorithm, key_id, &secret, clock.clone()) {
                Ok(signer) => return Ok(signer),
                Err(error @ KeyError::Rejected(_)) => last = error,
                Err(error) => return Err(error),
            }
        }
        Err(last)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.key.algorithm()
    }

    /// The raw public key: 32 bytes (Ed25519) or 65 bytes `04||X||Y` (SM2).
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key()
    }

    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.public_key())
    }

    /// The public key a verifier needs to trust this signer, bound to its algorithm.
    pub fn verifying_key(&self) -> PublicKey {
        // A signer's own public key is well formed for its algorithm.
        PublicKey::new(self.algorithm(), self.public_key().to_vec()).expect("a signer's public key parses")
    }

    /// `<alg>:<base64>` over `message`.
    pub fn signature_value(&self, message: &[u8]) -> String {
        format!("{}:{}", self.algorithm().as_str(), BASE64.encode(self.key.sign(message)))
    }

    /// Signs a request now, with a fresh nonce.
    pub fn sign_request(&self, method: &str, path_with_query: &str, body: &[u8]) -> SignatureHeaders {
        self.sign_request_at(method, path_with_query, self.clock.now_s(), &new_nonce(), body)
    }

    pub fn sign_request_at(
        &self,
        method: &str,
        path_with_query: &str,
        timestamp_s: i64,
        nonce: &str,
        body: &[u8],
    ) -> SignatureHeaders {
        let message = request_message(method, path_with_query, timestamp_s, nonce, body);
        self.headers(timestamp_s, nonce, &message)
    }

    /// Signs a response or notification now, with a fresh nonce.
    pub fn sign_response(&self, body: &[u8]) -> SignatureHeaders {
        self.sign_response_at(self.clock.now_s(), &new_nonce(), body)
    }

    pub fn sign_response_at(&self, timestamp_s: i64, nonce: &str, body: &[u8]) -> SignatureHeaders {
        let message = response_message(timestamp_s, nonce, body);
        self.headers(timestamp_s, nonce, &message)
    }

    fn headers(&self, timestamp_s: i64, nonce: &str, message: &[u8]) -> SignatureHeaders {
        SignatureHeaders {
            key_id: self.key_id.clone(),
            timestamp_s,
            nonce: nonce.to_owned(),
            signature: self.signature_value(message),
        }
    }
}

/// A public key a verifier trusts, bound to the algorithm it signs with.
#[derive(Clone)]
pub struct PublicKey {
    /// The raw key, as it travels: 32 bytes, or 65 bytes uncompressed SEC1.
    bytes: Vec<u8>,
    key: VerifyingKey,
}

/// What verifying takes for each algorithm: `ring` parses its keys per call; an SM2 key is
/// parsed once, with its `Z_A` (an SM3 over the curve and the point) computed once.
#[derive(Clone)]
enum VerifyingKey {
    Ed25519,
    EcdsaP256Sha256,
    Sm2Sm3(Box<sm2::dsa::VerifyingKey>),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("algorithm", &self.algorithm()).field("key", &self.to_base64()).finish()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.algorithm() == other.algorithm() && self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    /// An SM2 key must be an uncompressed point (`04||X||Y`) on sm2p256v1.
    pub fn new(algorithm: SignatureAlgorithm, bytes: Vec<u8>) -> Result<PublicKey, KeyError> {
        if bytes.len() != algorithm.public_key_len() {
            return Err(KeyError::Length);
        }
        let key = match algorithm {
            SignatureAlgorithm::Ed25519 => VerifyingKey::Ed25519,
            SignatureAlgorithm::EcdsaP256Sha256 => VerifyingKey::EcdsaP256Sha256,
            SignatureAlgorithm::Sm2Sm3 => {
                let rejected = || KeyError::Rejected(String::from("not an uncompressed point on sm2p256v1"));
                if bytes.first() != Some(&0x04) {
                    return Err(rejected());
                }
                let key = sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_USER_ID, &bytes).map_err(|_| rejected())?;
                VerifyingKey::Sm2Sm3(Box::new(key))
            }
        };
        Ok(PublicKey { bytes, key })
    }

    /// Base64 of the raw key, as the spec ships keys.
    pub fn from_base64(algorithm: SignatureAlgorithm, raw_base64: &str) -> Result<PublicKey, KeyError> {
        let bytes = BASE64.decode(raw_base64.trim()).map_err(|_| KeyError::Base64)?;
        PublicKey::new(algorithm, bytes)
    }

    /// `[ALG:]BASE64`: a raw key, Ed25519 unless prefixed with its algorithm (`sm2-sm3:`,
    /// `ecdsa-p256-sha256:`, `ed25519:`). Base64 has no `:`, so the prefix is unambiguous.
    pub fn parse_labelled(raw: &str) -> Result<PublicKey, KeyError> {
        match raw.trim().split_once(':') {
            None => PublicKey::from_base64(SignatureAlgorithm::Ed25519, raw),
            Some((algorithm, key)) => {
                let algorithm = SignatureAlgorithm::parse(algorithm).ok_or(KeyError::UnknownAlgorithm)?;
                PublicKey::from_base64(algorithm, key)
            }
        }
    }

    pub fn algorithm(&self) -> SignatureAlgorithm {
        match self.key {
            VerifyingKey::Ed25519 => SignatureAlgorithm::Ed25519,
            VerifyingKey::EcdsaP256Sha256 => SignatureAlgorithm::EcdsaP256Sha256,
            VerifyingKey::Sm2Sm3(_) => SignatureAlgorithm::Sm2Sm3,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.bytes)
    }

    /// Whether `signature` (the raw bytes after the `<alg>:` label, base64-decoded) signs
    /// `message` under this key. [`Verifier`] adds the key id, window and replay checks.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let algorithm: &dyn signature::VerificationAlgorithm = match &self.key {
            VerifyingKey::Ed25519 => &signature::ED25519,
            VerifyingKey::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
            VerifyingKey::Sm2Sm3(key) => {
                use sm2::dsa::signature::Verifier as _;
                // Strict DER, nothing after it; r and s in [1, n-1].
                return sm2::dsa::Signature::from_der(signature)
                    .is_ok_and(|signature| key.verify(message, &signature).is_ok());
            }
        };
        UnparsedPublicKey::new(algorithm, &self.bytes).verify(message, signature).is_ok()
    }
}

/// `KEY_ID=[ALG:]BASE64`, how keys are named on command lines (`--operator-public-key`, the
/// sandbox's `--client-public-key`).
pub fn parse_key_entry(raw: &str) -> Result<(String, PublicKey), String> {
    let (key_id, key) = raw.split_once('=').ok_or("expected KEY_ID=BASE64 or KEY_ID=ALG:BASE64")?;
    if !valid_key_id(key_id) {
        return Err(KeyError::KeyId.to_string());
    }
    let key = PublicKey::parse_labelled(key).map_err(|error| format!("key {key_id}: {error}"))?;
    Ok((key_id.to_owned(), key))
}

/// A signer that can be replaced while in use (a key rotation, a migration to another
/// algorithm); each message is signed whole by the signer that was current when it began.
#[derive(Clone, Debug)]
pub struct RotatingSigner(Arc<RwLock<Arc<Signer>>>);

impl RotatingSigner {
    pub fn new(signer: Signer) -> RotatingSigner {
        RotatingSigner(Arc::new(RwLock::new(Arc::new(signer))))
    }

    pub fn current(&self) -> Arc<Signer> {
        Arc::clone(&self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Signs with `signer` from now on.
    pub fn replace(&self, signer: Signer) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(signer);
    }
}

/// Checks signatures against several keys by key id, a clock and a replay cache.
#[derive(Debug)]
pub struct Verifier {
    keys: RwLock<HashMap<String, Arc<PublicKey>>>,
    clock: Clock,
    replay: Mutex<ReplayCache>,
}

impl Verifier {
    pub fn new(clock: Clock) -> Verifier {
        Verifier::with_replay_capacity(clock, DEFAULT_REPLAY_CACHE_CAPACITY)
    }

    pub fn with_replay_capacity(clock: Clock, replay_capacity: usize) -> Verifier {
        Verifier { keys: RwLock::new(HashMap::new()), clock, replay: Mutex::new(ReplayCache::new(replay_capacity)) }
    }

    /// Trusts `key` under `key_id` (replacing a key of the same id). Old ids stay trusted
    /// until removed, so a key can rotate without a gap.
    pub fn add_key(&self, key_id: &str, key: PublicKey) -> Result<(), KeyError> {
        if !valid_key_id(key_id) {
            return Err(KeyError::KeyId);
        }
        self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key_id.to_owned(), Arc::new(key));
        Ok(())
    }

    pub fn remove_key(&self, key_id: &str) -> bool {
        self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key_id).is_some()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn verify_request(
        &self,
        headers: &SignatureHeaders,
        method: &str,
        path_with_query: &str,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let message = request_message(method, path_with_query, headers.timestamp_s, &headers.nonce, body);
        self.verify_message(headers, &message)
    }

    pub fn verify_response(&self, headers: &SignatureHeaders, body: &[u8]) -> Result<(), SignatureError> {
        let message = response_message(headers.timestamp_s, &headers.nonce, body);
        self.verify_message(headers, &message)
    }

    fn verify_message(&self, headers: &SignatureHeaders, message: &[u8]) -> Result<(), SignatureError> {
        let key = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&headers.key_id)
            .cloned()
            .ok_or(SignatureError::UnknownKeyId)?;
        let (algorithm, signature_base64) =
            headers.signature.split_once(':').ok_or(SignatureError::MalformedHeader(HEADER_SIGNATURE))?;
        let algorithm = SignatureAlgorithm::parse(algorithm).ok_or(SignatureError::UnsupportedAlgorithm)?;
        // The key decides the algorithm; a header naming another one is refused so that no
        // key is ever used with an algorithm it was not registered for.
        if algorithm != key.algorithm() {
            return Err(SignatureError::AlgorithmMismatch);
        }
        let signature =
            BASE64.decode(signature_base64).map_err(|_| SignatureError::MalformedHeader(HEADER_SIGNATURE))?;
        let now_s = self.clock.now_s();
        if (now_s - headers.timestamp_s).abs() > MAX_CLOCK_SKEW_S {
            return Err(SignatureError::StaleTimestamp);
        }
        if !key.verifies(message, &signature) {
            return Err(SignatureError::BadSignature);
        }
        // Only a verified message may take a place in the cache, so forged messages cannot
        // fill it or burn someone else's nonce.
        let remember_until_s = headers.timestamp_s + MAX_CLOCK_SKEW_S;
        self.replay.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(
            &headers.key_id,
            &headers.nonce,
            remember_until_s,
            now_s,
        )
    }
}

/// Nonces seen recently, per key id, each remembered until its timestamp would be refused
/// anyway. Bounded by `capacity`.
#[derive(Debug)]
struct ReplayCache {
    capacity: usize,
    expiry_by_nonce: HashMap<(String, String), i64>,
    /// Insertion order with expiry; expiries are nearly monotone, so evicting from the front
    /// while expired keeps the map small without a scan.
    order: VecDeque<(i64, (String, String))>,
}

impl ReplayCache {
    fn new(capacity: usize) -> ReplayCache {
        ReplayCache { capacity, expiry_by_nonce: HashMap::new(), order: VecDeque::new() }
    }

    fn insert(&mut self, key_id: &str, nonce: &str, remember_until_s: i64, now_s: i64) -> Result<(), SignatureError> {
        self.evict_expired(now_s);
        let entry = (key_id.to_owned(), nonce.to_owned());
        if let Some(&until_s) = self.expiry_by_nonce.get(&entry)
            && until_s >= now_s
        {
            return Err(SignatureError::ReplayedNonce);
        }
        if self.expiry_by_nonce.len() >= self.capacity {
            // Entries expiring later than the front may be stuck behind it; one full sweep
            // before refusing keeps the bound honest.
            self.expiry_by_nonce.retain(|_, until_s| *until_s >= now_s);
            self.order.retain(|(until_s, _)| *until_s >= now_s);
            if self.expiry_by_nonce.len() >= self.capacity {
                return Err(SignatureError::ReplayCacheFull);
            }
        }
        self.expiry_by_nonce.insert(entry.clone(), remember_until_s);
        self.order.push_back((remember_until_s, entry));
        Ok(())
    }

    fn evict_expired(&mut self, now_s: i64) {
        while let Some((until_s, _)) = self.order.front() {
            if *until_s >= now_s {
                break;
            }
            if let Some((until_s, entry)) = self.order.pop_front()
                && self.expiry_by_nonce.get(&entry) == Some(&until_s)
            {
                self.expiry_by_nonce.remove(&entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "A1oN0NHhOi3fDorzPcMW2mQYO/sK8mV+bhWx57qKkG4=";
    const PUBLIC_KEY: &str = "AJleQ5YNwqtksahmYC5WevsvFkaBDD3c5JzFeyVyrfw=";
    const REQUEST_BODY: &str = r#"{"merchant_wallet_id":"0021000000000001","out_trade_no":"P-20261128-0001","amount":"12.50","payer_code":"0100000000000000000","description":"午餐","terminal_id":"trm_01"}"#;
    const REQUEST_SIGNATURE: &str =
        "ed25519:On9SnTRr2R4FG77qLNuZVMNNwn7+bdCaQPYCvWo4U33q84X7V+e32cKg8c+Xh94LG60+shWwE56WUZhu2pAIAQ==";
    const NOTIFICATION_BODY: &str = r#"{"id":"evt_01","type":"TRADE.SUCCESS","created_at":"2026-11-28T09:15:02+08:00","resource":{"trade_no":"T0001","out_trade_no":"P-20261128-0001","status":"SUCCESS","amount":"12.50","refunded_amount":"0.00","paid_at":"2026-11-28T09:15:02+08:00"}}"#;
    const NOTIFICATION_SIGNATURE: &str =
        "ed25519:UtEgWhpKb+00Pr6DgE9CBLgl5zMLlz8BK6mcay2e5tyuZZHvavtSev5aFeGPipIadoC5ZbTnLHl8aQjyb72ZDg==";

    fn spec_signer(clock: Clock) -> Signer {
        Signer::from_seed_base64("k1", SEED, clock).unwrap()
    }

    fn spec_verifier(clock: Clock) -> Verifier {
        let verifier = Verifier::new(clock);
        verifier.add_key("k1", PublicKey::from_base64(SignatureAlgorithm::Ed25519, PUBLIC_KEY).unwrap()).unwrap();
        verifier
    }

    fn request_headers(signature: &str) -> SignatureHeaders {
        SignatureHeaders {
            key_id: String::from("k1"),
            timestamp_s: 1_795_900_000,
            nonce: String::from("n0nce0123456789abcdef"),
            signature: signature.to_owned(),
        }
    }

    #[test]
    fn the_spec_key_seed_gives_the_spec_public_key() {
        assert_eq!(spec_signer(Clock::system()).public_key_base64(), PUBLIC_KEY);
    }

    #[test]
    fn the_spec_request_vector_signs_to_the_exact_bytes() {
        let signer = spec_signer(Clock::system());
        let headers = signer.sign_request_at(
            "POST",
            "/v1/payments/code",
            1_795_900_000,
            "n0nce0123456789abcdef",
            REQUEST_BODY.as_bytes(),
        );
        assert_eq!(headers.signature, REQUEST_SIGNATURE);
        let message = request_message(
            "POST",
            "/v1/payments/code",
            1_795_900_000,
            "n0nce0123456789abcdef",
            REQUEST_BODY.as_bytes(),
        );
        let expected = format!("POST\n/v1/payments/code\n1795900000\nn0nce0123456789abcdef\n{REQUEST_BODY}\n");
        assert_eq!(message, expected.as_bytes());
    }

    #[test]
    fn the_spec_notification_vector_signs_to_the_exact_bytes() {
        let signer = spec_signer(Clock::system());
        let headers = signer.sign_response_at(1_795_900_001, "abcdef0123456789nonce", NOTIFICATION_BODY.as_bytes());
        assert_eq!(headers.signature, NOTIFICATION_SIGNATURE);
        let message = response_message(1_795_900_001, "abcdef0123456789nonce", NOTIFICATION_BODY.as_bytes());
        assert_eq!(message, format!("1795900001\nabcdef0123456789nonce\n{NOTIFICATION_BODY}\n").as_bytes());
    }

    #[test]
    fn the_spec_vectors_verify_within_the_window_and_a_replay_is_refused() {
        let verifier = spec_verifier(Clock::manual(1_795_900_000_000 + 299_000));
        let headers = request_headers(REQUEST_SIGNATURE);
        assert_eq!(verifier.verify_request(&headers, "POST", "/v1/payments/code", REQUEST_BODY.as_bytes()), Ok(()));
        assert_eq!(
            verifier.verify_request(&headers, "POST", "/v1/payments/code", REQUEST_BODY.as_bytes()),
            Err(SignatureError::ReplayedNonce)
        );
        let notification = SignatureHeaders {
            key_id: String::from("k1"),
            timestamp_s: 1_795_900_001,
            nonce: String::from("abcdef0123456789nonce"),
            signature: NOTIFICATION_SIGNATURE.to_owned(),
        };
        assert_eq!(verifier.verify_response(&notification, NOTIFICATION_BODY.as_bytes()), Ok(()));
    }

    #[test]
    fn a_changed_byte_anywhere_breaks_the_signature() {
        let verifier = spec_verifier(Clock::manual(1_795_900_000_000));
        let headers = request_headers(REQUEST_SIGNATURE);
        let tampered_body = REQUEST_BODY.replace("12.50", "12.51");
        assert_eq!(
            verifier.verify_request(&headers, "POST", "/v1/payments/code", tampered_body.as_bytes()),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verifier.verify_request(&headers, "POST", "/v1/payments/code?x=1", REQUEST_BODY.as_bytes()),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verifier.verify_request(&headers, "PUT", "/v1/payments/code", REQUEST_BODY.as_bytes()),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn timestamps_outside_the_window_unknown_keys_and_foreign_algorithms_are_refused() {
        let body = REQUEST_BODY.as_bytes();
        let late = spec_verifier(Clock::manual((1_795_900_000 + MAX_CLOCK_SKEW_S + 1) * 1_000));
        let headers = request_headers(REQUEST_SIGNATURE);
        assert_eq!(
            late.verify_request(&headers, "POST", "/v1/payments/code", body),
            Err(SignatureError::StaleTimestamp)
        );
        let early = spec_verifier(Clock::manual((1_795_900_000 - MAX_CLOCK_SKEW_S - 1) * 1_000));
        assert_eq!(
            early.verify_request(&headers, "POST", "/v1/payments/code", body),
            Err(SignatureError::StaleTimestamp)
        );

        let verifier = spec_verifier(Clock::manual(1_795_900_000_000));
        let unknown = SignatureHeaders { key_id: String::from("k2"), ..headers.clone() };
        assert_eq!(
            verifier.verify_request(&unknown, "POST", "/v1/payments/code", body),
            Err(SignatureError::UnknownKeyId)
        );
        let unknown_algorithm = request_headers("rsa-sha256:AAAA");
        assert_eq!(
            verifier.verify_request(&unknown_algorithm, "POST", "/v1/payments/code", body),
            Err(SignatureError::UnsupportedAlgorithm)
        );
        let sm2 = request_headers("sm2-sm3:AAAA");
        assert_eq!(
            verifier.verify_request(&sm2, "POST", "/v1/payments/code", body),
            Err(SignatureError::AlgorithmMismatch)
        );
        let ecdsa = request_headers(&REQUEST_SIGNATURE.replace("ed25519:", "ecdsa-p256-sha256:"));
        assert_eq!(
            verifier.verify_request(&ecdsa, "POST", "/v1/payments/code", body),
            Err(SignatureError::AlgorithmMismatch)
        );
        let not_base64 = request_headers("ed25519:***");
        assert_eq!(
            verifier.verify_request(&not_base64, "POST", "/v1/payments/code", body),
            Err(SignatureError::MalformedHeader(HEADER_SIGNATURE))
        );
    }

    #[test]
    fn rotated_keys_both_verify_until_the_old_one_is_removed() {
        let clock = Clock::manual(1_795_900_000_000);
        let old = spec_signer(clock.clone());
        let new = Signer::generate("k2", clock.clone()).unwrap();
        let verifier = spec_verifier(clock.clone());
        verifier
            .add_key("k2", PublicKey::new(SignatureAlgorithm::Ed25519, new.public_key().to_vec()).unwrap())
            .unwrap();
        for signer in [&old, &new] {
            let headers = signer.sign_response(b"{}");
            assert_eq!(verifier.verify_response(&headers, b"{}"), Ok(()));
        }
        assert!(verifier.remove_key("k1"));
        let headers = old.sign_response(b"{}");
        assert_eq!(verifier.verify_response(&headers, b"{}"), Err(SignatureError::UnknownKeyId));
    }

    #[test]
    fn ecdsa_p256_der_signatures_verify() {
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let clock = Clock::manual(1_795_900_000_000);
        let verifier = Verifier::new(clock);
        let public_key =
            PublicKey::new(SignatureAlgorithm::EcdsaP256Sha256, key_pair.public_key().as_ref().to_vec()).unwrap();
        verifier.add_key("bank-p256", public_key).unwrap();
        let message = response_message(1_795_900_000, "abcdefabcdefabcdef", b"{\"a\":1}");
        let signature = key_pair.sign(&rng, &message).unwrap();
        let headers = SignatureHeaders {
            key_id: String::from("bank-p256"),
            timestamp_s: 1_795_900_000,
            nonce: String::from("abcdefabcdefabcdef"),
            signature: format!("ecdsa-p256-sha256:{}", BASE64.encode(signature.as_ref())),
        };
        assert_eq!(verifier.verify_response(&headers, b"{\"a\":1}"), Ok(()));
        assert_eq!(verifier.verify_response(&headers, b"{\"a\":2}"), Err(SignatureError::BadSignature));
    }

    /// The GM/T 0003.5 appendix key (sm2p256v1, default user id).
    const SM2_SECRET_HEX: &str = "3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8";
    const SM2_PUBLIC_KEY: &str =
        "BAn53zEeVCGhUN19Fh5LxcZyF5+tGDP8B2uwj/NW81AgzOpJDOJndaUtxupxjMGqYArtBfvzXghKZjL2By2prRM=";

    fn sm2_signer(key_id: &str, clock: Clock) -> Signer {
        Signer::from_secret(SignatureAlgorithm::Sm2Sm3, key_id, &hex::decode(SM2_SECRET_HEX).unwrap(), clock).unwrap()
    }

    #[test]
    fn an_sm2_signer_signs_der_under_its_own_label_and_its_verifier_checks_every_byte() {
        let clock = Clock::manual(1_795_900_000_000);
        let signer = sm2_signer("bank-sm2", clock.clone());
        assert_eq!(signer.algorithm(), SignatureAlgorithm::Sm2Sm3);
        assert_eq!(signer.public_key_base64(), SM2_PUBLIC_KEY);
        let verifier = Verifier::new(clock);
        verifier
            .add_key("bank-sm2", PublicKey::from_base64(SignatureAlgorithm::Sm2Sm3, SM2_PUBLIC_KEY).unwrap())
            .unwrap();

        let body = REQUEST_BODY.as_bytes();
        let headers = signer.sign_request("POST", "/v1/payments/code", body);
        let (label, encoded) = headers.signature.split_once(':').unwrap();
        assert_eq!(label, "sm2-sm3");
        let der = BASE64.decode(encoded).unwrap();
        assert_eq!(der[0], 0x30, "an ASN.1 SEQUENCE");
        assert!(headers.signature.len() <= SIGNATURE_HEADER_MAX_CHARS);
        assert_eq!(verifier.verify_request(&headers, "POST", "/v1/payments/code", body), Ok(()));
        assert_eq!(
            verifier.verify_request(&headers, "POST", "/v1/payments/code", body),
            Err(SignatureError::ReplayedNonce)
        );
        let again = signer.sign_request_at("POST", "/v1/payments/code", headers.timestamp_s, &headers.nonce, body);
        assert_eq!(again.signature, headers.signature, "the nonce k is derived from key and message");

        let fresh = signer.sign_request("POST", "/v1/payments/code", body);
        let tampered = REQUEST_BODY.replace("12.50", "12.51");
        assert_eq!(
            verifier.verify_request(&fresh, "POST", "/v1/payments/code", tampered.as_bytes()),
            Err(SignatureError::BadSignature)
        );
        let response = signer.sign_response(b"{}");
        assert_eq!(verifier.verify_response(&response, b"{}"), Ok(()));
        // The raw r||s form is not the profile's encoding.
        let parsed = sm2::dsa::Signature::from_der(&BASE64.decode(&fresh.signature[8..]).unwrap()).unwrap();
        let raw =
            SignatureHeaders { signature: format!("sm2-sm3:{}", BASE64.encode(parsed.to_bytes())), ..fresh.clone() };
        assert_eq!(verifier.verify_request(&raw, "POST", "/v1/payments/code", body), Err(SignatureError::BadSignature));
    }

    #[test]
    fn a_key_of_one_algorithm_never_verifies_under_the_other() {
        let clock = Clock::manual(1_795_900_000_000);
        let ed25519 = spec_signer(clock.clone());
        let sm2 = sm2_signer("bank-sm2", clock.clone());
        let verifier = spec_verifier(clock.clone());
        verifier.add_key("bank-sm2", sm2.verifying_key()).unwrap();

        // Both at once, each under its own key id: a migration.
        for signer in [&ed25519, &sm2] {
            let headers = signer.sign_response(b"{}");
            assert_eq!(verifier.verify_response(&headers, b"{}"), Ok(()), "{}", signer.algorithm());
        }
        // An SM2 signature presented under the Ed25519 key's id, and the other way round.
        let sm2_as_k1 = SignatureHeaders { key_id: String::from("k1"), ..sm2.sign_response(b"{}") };
        assert_eq!(verifier.verify_response(&sm2_as_k1, b"{}"), Err(SignatureError::AlgorithmMismatch));
        let ed25519_as_sm2 = SignatureHeaders { key_id: String::from("bank-sm2"), ..ed25519.sign_response(b"{}") };
        assert_eq!(verifier.verify_response(&ed25519_as_sm2, b"{}"), Err(SignatureError::AlgorithmMismatch));
        // Relabelled to match the key: the bytes are still the other algorithm's.
        let mut relabelled = sm2.sign_response(b"{}");
        relabelled.key_id = String::from("k1");
        relabelled.signature = relabelled.signature.replacen("sm2-sm3:", "ed25519:", 1);
        assert_eq!(verifier.verify_response(&relabelled, b"{}"), Err(SignatureError::BadSignature));
        let mut relabelled = ed25519.sign_response(b"{}");
        relabelled.key_id = String::from("bank-sm2");
        relabelled.signature = relabelled.signature.replacen("ed25519:", "sm2-sm3:", 1);
        assert_eq!(verifier.verify_response(&relabelled, b"{}"), Err(SignatureError::BadSignature));
        // An SM2 key offered as another curve's, or an Ed25519 key as SM2's, does not load.
        assert_eq!(PublicKey::new(SignatureAlgorithm::Ed25519, sm2.public_key().to_vec()), Err(KeyError::Length));
        assert_eq!(PublicKey::new(SignatureAlgorithm::Sm2Sm3, ed25519.public_key().to_vec()), Err(KeyError::Length));
    }

    #[test]
    fn sm2_keys_are_uncompressed_points_on_the_curve_and_secrets_are_in_range() {
        let point = BASE64.decode(SM2_PUBLIC_KEY).unwrap();
        let mut compressed_tag = point.clone();
        compressed_tag[0] = 0x02;
        assert!(matches!(PublicKey::new(SignatureAlgorithm::Sm2Sm3, compressed_tag), Err(KeyError::Rejected(_))));
        let mut off_curve = point.clone();
        off_curve[64] ^= 1;
        assert!(matches!(PublicKey::new(SignatureAlgorithm::Sm2Sm3, off_curve), Err(KeyError::Rejected(_))));
        assert_eq!(PublicKey::new(SignatureAlgorithm::Sm2Sm3, point[1..].to_vec()), Err(KeyError::Length));

        let n_minus = |less: u8| {
            let mut n = hex::decode("fffffffeffffffffffffffffffffffff7203df6b21c6052b53bbf40939d54123").unwrap();
            n[31] -= less;
            n
        };
        let secret = |bytes: &[u8]| Signer::from_secret(SignatureAlgorithm::Sm2Sm3, "k", bytes, Clock::system());
        assert!(matches!(secret(&[0u8; 32]), Err(KeyError::Rejected(_))));
        assert!(matches!(secret(&n_minus(0)), Err(KeyError::Rejected(_))), "d = n");
        assert!(matches!(secret(&n_minus(1)), Err(KeyError::Rejected(_))), "d = n - 1 has no inverse of 1 + d");
        let highest = secret(&n_minus(2)).unwrap();
        let verifier = Verifier::new(Clock::system());
        verifier.add_key("k", highest.verifying_key()).unwrap();
        assert_eq!(verifier.verify_response(&highest.sign_response(b"x"), b"x"), Ok(()));
        assert_eq!(secret(&[1u8; 31]).err(), Some(KeyError::Length));
        assert_eq!(
            Signer::generate_with(SignatureAlgorithm::EcdsaP256Sha256, "k", Clock::system()).err(),
            Some(KeyError::SigningUnsupported(SignatureAlgorithm::EcdsaP256Sha256))
        );
        let generated = Signer::generate_with(SignatureAlgorithm::Sm2Sm3, "k", Clock::system()).unwrap();
        assert_eq!(generated.public_key().len(), 65);
    }

    #[test]
    fn key_entries_name_their_algorithm_or_are_ed25519() {
        let (id, key) = parse_key_entry(&format!("k1={PUBLIC_KEY}")).unwrap();
        assert_eq!((id.as_str(), key.algorithm()), ("k1", SignatureAlgorithm::Ed25519));
        let (id, key) = parse_key_entry(&format!("bank-sm2=sm2-sm3:{SM2_PUBLIC_KEY}")).unwrap();
        assert_eq!((id.as_str(), key.algorithm()), ("bank-sm2", SignatureAlgorithm::Sm2Sm3));
        assert_eq!(key.to_base64(), SM2_PUBLIC_KEY);
        assert_eq!(
            parse_key_entry(&format!("k1=ed25519:{PUBLIC_KEY}")).unwrap().1.algorithm(),
            SignatureAlgorithm::Ed25519
        );
        assert!(parse_key_entry(&format!("k1=sm2-sm3:{PUBLIC_KEY}")).unwrap_err().contains("wrong length"));
        assert!(parse_key_entry(&format!("k1=rsa:{PUBLIC_KEY}")).unwrap_err().contains("unknown signature algorithm"));
        assert!(parse_key_entry(PUBLIC_KEY).is_err());
        assert!(parse_key_entry(&format!("={PUBLIC_KEY}")).is_err());
    }

    #[test]
    fn a_rotating_signer_signs_with_the_key_current_at_each_message() {
        let clock = Clock::manual(1_795_900_000_000);
        let rotating = RotatingSigner::new(spec_signer(clock.clone()));
        let before = rotating.current();
        rotating.replace(sm2_signer("bank-sm2", clock));
        assert_eq!(before.algorithm(), SignatureAlgorithm::Ed25519, "a signer in use is not changed under it");
        assert_eq!(rotating.current().algorithm(), SignatureAlgorithm::Sm2Sm3);
        assert!(rotating.current().sign_response(b"").signature.starts_with("sm2-sm3:"));
    }

    #[test]
    fn headers_are_shape_checked_before_any_crypto() {
        let signer = spec_signer(Clock::system());
        let mut map = HeaderMap::new();
        signer.sign_response(b"").write_to(&mut map);
        assert!(SignatureHeaders::from_header_map(&map).is_ok());
        let mut short_nonce = map.clone();
        short_nonce.insert(HEADER_NONCE, HeaderValue::from_static("short"));
        assert_eq!(SignatureHeaders::from_header_map(&short_nonce), Err(SignatureError::MalformedHeader(HEADER_NONCE)));
        let mut bad_nonce = map.clone();
        bad_nonce.insert(HEADER_NONCE, HeaderValue::from_static("0123456789abcdef-"));
        assert!(SignatureHeaders::from_header_map(&bad_nonce).is_err());
        let mut bad_timestamp = map.clone();
        bad_timestamp.insert(HEADER_TIMESTAMP, HeaderValue::from_static("-5"));
        assert_eq!(
            SignatureHeaders::from_header_map(&bad_timestamp),
            Err(SignatureError::MalformedHeader(HEADER_TIMESTAMP))
        );
        let mut missing = map.clone();
        missing.remove(HEADER_SIGNATURE);
        assert_eq!(SignatureHeaders::from_header_map(&missing), Err(SignatureError::MissingHeader(HEADER_SIGNATURE)));
        let mut doubled = map.clone();
        doubled.append(HEADER_KEY_ID, HeaderValue::from_static("k9"));
        assert_eq!(SignatureHeaders::from_header_map(&doubled), Err(SignatureError::MalformedHeader(HEADER_KEY_ID)));
    }

    #[test]
    fn the_replay_cache_forgets_expired_nonces_and_refuses_when_full_of_live_ones() {
        let mut cache = ReplayCache::new(2);
        assert_eq!(cache.insert("k", "a", 100, 0), Ok(()));
        assert_eq!(cache.insert("k", "b", 100, 0), Ok(()));
        assert_eq!(cache.insert("k", "c", 100, 0), Err(SignatureError::ReplayCacheFull));
        assert_eq!(cache.insert("k", "a", 100, 50), Err(SignatureError::ReplayedNonce));
        // After expiry the slots free up and an old nonce is no longer tracked (its
        // timestamp would be refused by the window check anyway).
        assert_eq!(cache.insert("k", "c", 300, 101), Ok(()));
        assert_eq!(cache.insert("k", "a", 300, 101), Ok(()));
        assert_eq!(cache.expiry_by_nonce.len(), 2);
        assert_eq!(cache.insert("other-key", "z", 300, 101), Err(SignatureError::ReplayCacheFull));
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let shown = format!("{:?}", spec_signer(Clock::system()));
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains(SEED));
    }

    #[test]
    fn every_error_has_a_distinct_reason() {
        let all = [
            SignatureError::MissingHeader("x"),
            SignatureError::MalformedHeader("x"),
            SignatureError::UnknownKeyId,
            SignatureError::UnsupportedAlgorithm,
            SignatureError::AlgorithmMismatch,
            SignatureError::BadSignature,
            SignatureError::StaleTimestamp,
            SignatureError::ReplayedNonce,
            SignatureError::ReplayCacheFull,
        ];
        let mut reasons: Vec<_> = all.iter().map(SignatureError::reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
    }
}
