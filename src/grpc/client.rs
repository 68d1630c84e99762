//! The terminal side of the signing scheme, for carepay's own load generator and tests (and
//! as a reference for terminal vendors): wrap a request message with the four signature
//! entries exactly as `proto/carepay/terminal/v1/terminal.proto` describes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message;
use ring::signature::Ed25519KeyPair;

use super::envelope::{HEADER_NONCE, HEADER_SIGNATURE, HEADER_TERMINAL_ID, HEADER_TIMESTAMP, signed_message};

/// The package and service prefix of every terminal method path.
pub const SERVICE_PATH: &str = "/carepay.terminal.v1.TerminalService/";

/// A fresh nonce: 32 hex characters.
pub fn new_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Seconds since the unix epoch by this machine's clock.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// Sign `message` for `method` (e.g. "Pay") as `terminal_id` with `key`, at `timestamp_s`.
pub fn sign<M: Message>(
    terminal_id: &str,
    key: &Ed25519KeyPair,
    method: &str,
    message: M,
    timestamp_s: i64,
    nonce: &str,
) -> tonic::Request<M> {
    let path = format!("{SERVICE_PATH}{method}");
    let signature = key.sign(&signed_message(&path, terminal_id, timestamp_s, nonce, &message.encode_to_vec()));
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    let entries = [
        (HEADER_TERMINAL_ID, terminal_id.to_owned()),
        (HEADER_TIMESTAMP, timestamp_s.to_string()),
        (HEADER_NONCE, nonce.to_owned()),
        (HEADER_SIGNATURE, BASE64.encode(signature.as_ref())),
    ];
    for (name, value) in entries {
        if let Ok(value) = value.parse() {
            metadata.insert(name, value);
        }
    }
    request
}
