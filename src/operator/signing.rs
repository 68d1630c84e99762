//! The operator API's signature scheme, both directions (`operator-api.md`, "Signatures").
//!
//! Four headers travel with every request, response and notification: `Operator-Key-Id`,
//! `Operator-Timestamp` (unix seconds), `Operator-Nonce` (16-64 `[A-Za-z0-9]`) and
//! `Operator-Signature: <alg>:<base64>`. The signed message is each part followed by `\n`:
//! requests sign `METHOD`, `PATH_WITH_QUERY`, `TIMESTAMP`, `NONCE`, `BODY`; responses and
//! notifications sign `TIMESTAMP`, `NONCE`, `BODY`.
//!
//! [`Signer`] signs with Ed25519. [`Verifier`] holds several public keys by key id (keys
//! rotate) and accepts Ed25519 and ECDSA P-256/SHA-256 (ASN.1 DER) signatures; it refuses an
//! unknown key id, a bad signature, a timestamp more than [`MAX_CLOCK_SKEW_S`] from its clock
//! and a nonce already seen within that window.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, RwLock};

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
/// Base64 of a DER ECDSA P-256 signature is under 100 chars; this leaves room and no more.
const SIGNATURE_HEADER_MAX_CHARS: usize = 256;
const KEY_ID_MAX_CHARS: usize = 128;

/// Signature algorithms of the spec (`sm2-sm3` is reserved and refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Ed25519,
    EcdsaP256Sha256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
        }
    }

    pub fn parse(raw: &str) -> Option<Algorithm> {
        match raw {
            "ed25519" => Some(Algorithm::Ed25519),
            "ecdsa-p256-sha256" => Some(Algorithm::EcdsaP256Sha256),
            _ => None,
        }
    }

    fn public_key_len(self) -> usize {
        match self {
            Algorithm::Ed25519 => 32,
            Algorithm::EcdsaP256Sha256 => 65,
        }
    }
}

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

/// Signs with an Ed25519 key. `Debug` shows the key id and public key only.
pub struct Signer {
    key_id: String,
    key_pair: Ed25519KeyPair,
    clock: Clock,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_base64())
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl Signer {
    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(key_id: &str, seed: &[u8], clock: Clock) -> Result<Signer, KeyError> {
        if !valid_key_id(key_id) {
            return Err(KeyError::KeyId);
        }
        if seed.len() != 32 {
            return Err(KeyError::Length);
        }
        let key_pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(Signer { key_id: key_id.to_owned(), key_pair, clock })
    }

    /// A signer from the base64 of a 32-byte seed (surrounding whitespace ignored, so a
    /// key file may end with a newline).
    pub fn from_seed_base64(key_id: &str, seed_base64: &str, clock: Clock) -> Result<Signer, KeyError> {
        let seed = BASE64.decode(seed_base64.trim()).map_err(|_| KeyError::Base64)?;
        Signer::from_seed(key_id, &seed, clock)
    }

    /// A signer with a new random key.
    pub fn generate(key_id: &str, clock: Clock) -> Result<Signer, KeyError> {
        let mut seed = [0u8; 32];
        SystemRandom::new().fill(&mut seed).map_err(|_| KeyError::Rejected(String::from("no random source")))?;
        Signer::from_seed(key_id, &seed, clock)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> &[u8] {
        self.key_pair.public_key().as_ref()
    }

    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.public_key())
    }

    /// `ed25519:<base64>` over `message`.
    pub fn signature_value(&self, message: &[u8]) -> String {
        format!("{}:{}", Algorithm::Ed25519.as_str(), BASE64.encode(self.key_pair.sign(message).as_ref()))
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

/// A public key a verifier trusts, with the algorithm it signs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub algorithm: Algorithm,
    pub bytes: Vec<u8>,
}

impl PublicKey {
    pub fn new(algorithm: Algorithm, bytes: Vec<u8>) -> Result<PublicKey, KeyError> {
        if bytes.len() != algorithm.public_key_len() {
            return Err(KeyError::Length);
        }
        Ok(PublicKey { algorithm, bytes })
    }

    /// Base64 of the raw key, as the spec ships keys.
    pub fn from_base64(algorithm: Algorithm, raw_base64: &str) -> Result<PublicKey, KeyError> {
        let bytes = BASE64.decode(raw_base64.trim()).map_err(|_| KeyError::Base64)?;
        PublicKey::new(algorithm, bytes)
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let algorithm: &dyn signature::VerificationAlgorithm = match self.algorithm {
            Algorithm::Ed25519 => &signature::ED25519,
            Algorithm::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
        };
        UnparsedPublicKey::new(algorithm, &self.bytes).verify(message, signature).is_ok()
    }
}

/// Checks signatures against several keys by key id, a clock and a replay cache.
#[derive(Debug)]
pub struct Verifier {
    keys: RwLock<HashMap<String, PublicKey>>,
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
        self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key_id.to_owned(), key);
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
        let algorithm = Algorithm::parse(algorithm).ok_or(SignatureError::UnsupportedAlgorithm)?;
        // The key decides the algorithm; a header naming another one is refused so that no
        // key is ever used with an algorithm it was not registered for.
        if algorithm != key.algorithm {
            return Err(SignatureError::AlgorithmMismatch);
        }
        let signature =
            BASE64.decode(signature_base64).map_err(|_| SignatureError::MalformedHeader(HEADER_SIGNATURE))?;
        let now_s = self.clock.now_s();
        if (now_s - headers.timestamp_s).abs() > MAX_CLOCK_SKEW_S {
            return Err(SignatureError::StaleTimestamp);
        }
        if !key.verify(message, &signature) {
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
        verifier.add_key("k1", PublicKey::from_base64(Algorithm::Ed25519, PUBLIC_KEY).unwrap()).unwrap();
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
        let sm2 = request_headers("sm2-sm3:AAAA");
        assert_eq!(
            verifier.verify_request(&sm2, "POST", "/v1/payments/code", body),
            Err(SignatureError::UnsupportedAlgorithm)
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
        verifier.add_key("k2", PublicKey::new(Algorithm::Ed25519, new.public_key().to_vec()).unwrap()).unwrap();
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
        let public_key = PublicKey::new(Algorithm::EcdsaP256Sha256, key_pair.public_key().as_ref().to_vec()).unwrap();
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
