//! The signed envelope of a terminal request (see `proto/carepay/terminal/v1/terminal.proto`):
//! four metadata entries and the exact request bytes. Parsing is pure, so it can be fuzzed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::domain::ids::TerminalId;

pub const HEADER_TERMINAL_ID: &str = "x-carepay-terminal-id";
pub const HEADER_TIMESTAMP: &str = "x-carepay-timestamp";
pub const HEADER_NONCE: &str = "x-carepay-nonce";
pub const HEADER_SIGNATURE: &str = "x-carepay-signature";

/// Length of the gRPC message frame header: 1 byte compressed flag, 4 bytes length.
const FRAME_HEADER_LEN: usize = 5;

/// Why an envelope was refused. Every variant answers UNAUTHENTICATED; the text is the
/// reason given to the terminal and is safe to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("missing or malformed x-carepay-terminal-id")]
    TerminalId,
    #[error("missing or malformed x-carepay-timestamp")]
    Timestamp,
    #[error("missing or malformed x-carepay-nonce (16-64 of [A-Za-z0-9])")]
    Nonce,
    #[error("missing or malformed x-carepay-signature (base64 of 64 bytes)")]
    Signature,
    #[error("the body must be exactly one uncompressed gRPC message")]
    Frame,
}

/// A parsed, not yet verified, terminal request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub method: String,
    pub terminal_id: TerminalId,
    pub timestamp_s: i64,
    pub nonce: String,
    pub signature: Vec<u8>,
    /// The protobuf bytes of the request message.
    pub message: Vec<u8>,
}

impl Envelope {
    /// Parse from the request path, a header lookup and the raw HTTP/2 body.
    pub fn parse<'a>(
        method: &str,
        header: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
    ) -> Result<Envelope, EnvelopeError> {
        let terminal_id =
            header(HEADER_TERMINAL_ID).and_then(|raw| TerminalId::parse(raw).ok()).ok_or(EnvelopeError::TerminalId)?;
        let timestamp_s = header(HEADER_TIMESTAMP)
            .filter(|raw| !raw.is_empty() && raw.len() <= 12 && raw.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|raw| raw.parse::<i64>().ok())
            .ok_or(EnvelopeError::Timestamp)?;
        let nonce = header(HEADER_NONCE)
            .filter(|raw| (16..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or(EnvelopeError::Nonce)?
            .to_owned();
        let signature = header(HEADER_SIGNATURE)
            .filter(|raw| raw.len() <= 128)
            .and_then(|raw| BASE64.decode(raw).ok())
            .filter(|bytes| bytes.len() == 64)
            .ok_or(EnvelopeError::Signature)?;
        let message = single_message(body).ok_or(EnvelopeError::Frame)?.to_vec();
        Ok(Envelope { method: method.to_owned(), terminal_id, timestamp_s, nonce, signature, message })
    }

    /// The bytes the terminal signed.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(&self.method, self.terminal_id.as_str(), self.timestamp_s, &self.nonce, &self.message)
    }

    /// Digest of what the request asks for (method and message), for idempotency: the same
    /// request id with another digest is a different request.
    pub fn request_sha256(&self) -> String {
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        hasher.update(self.method.as_bytes());
        hasher.update(b"\n");
        hasher.update(&self.message);
        hex::encode(hasher.finish())
    }
}

/// The message a terminal signs: method, terminal id, timestamp and nonce, each followed by
/// a line feed, then the request bytes.
pub fn signed_message(method: &str, terminal_id: &str, timestamp_s: i64, nonce: &str, message: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(method.len() + terminal_id.len() + nonce.len() + 16 + message.len());
    for part in [method, terminal_id, &timestamp_s.to_string(), nonce] {
        signed.extend_from_slice(part.as_bytes());
        signed.push(b'\n');
    }
    signed.extend_from_slice(message);
    signed
}

/// The payload of a body holding exactly one uncompressed gRPC frame.
fn single_message(body: &[u8]) -> Option<&[u8]> {
    let header = body.get(..FRAME_HEADER_LEN)?;
    if header[0] != 0 {
        return None;
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let payload = body.get(FRAME_HEADER_LEN..)?;
    (payload.len() == length).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        body
    }

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| *value)
    }

    const TERMINAL: &str = "trm_0192f1ab0192f1ab0192f1ab0192f1ab";
    const SIGNATURE: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";

    #[test]
    fn a_well_formed_envelope_parses_and_signs_the_documented_message() {
        let pairs = [
            (HEADER_TERMINAL_ID, TERMINAL),
            (HEADER_TIMESTAMP, "1795900000"),
            (HEADER_NONCE, "n0nce0123456789abcdef"),
            (HEADER_SIGNATURE, SIGNATURE),
        ];
        let envelope =
            Envelope::parse("/carepay.terminal.v1.TerminalService/Pay", headers(&pairs), &frame(b"\x0a\x01x")).unwrap();
        assert_eq!(envelope.message, b"\x0a\x01x");
        let expected = format!(
            "/carepay.terminal.v1.TerminalService/Pay\n{TERMINAL}\n1795900000\nn0nce0123456789abcdef\n\x0a\x01x"
        );
        assert_eq!(envelope.signed_message(), expected.as_bytes());
    }

    #[test]
    fn malformed_envelopes_say_which_part_is_wrong() {
        let good = [
            (HEADER_TERMINAL_ID, TERMINAL),
            (HEADER_TIMESTAMP, "1795900000"),
            (HEADER_NONCE, "n0nce0123456789abcdef"),
            (HEADER_SIGNATURE, SIGNATURE),
        ];
        let cases: [(&str, &str, EnvelopeError); 6] = [
            (HEADER_TERMINAL_ID, "fac_0192f1ab0192f1ab0192f1ab0192f1ab", EnvelopeError::TerminalId),
            (HEADER_TIMESTAMP, "-5", EnvelopeError::Timestamp),
            (HEADER_NONCE, "short", EnvelopeError::Nonce),
            (HEADER_NONCE, "has space in the nonce!", EnvelopeError::Nonce),
            (HEADER_SIGNATURE, "AAAA", EnvelopeError::Signature),
            (HEADER_SIGNATURE, "not base64 at all", EnvelopeError::Signature),
        ];
        for (name, value, expected) in cases {
            let pairs: Vec<_> =
                good.iter().map(|(key, v)| if *key == name { (*key, value) } else { (*key, *v) }).collect();
            assert_eq!(Envelope::parse("/m", headers(&pairs), &frame(b"x")), Err(expected), "{name}={value}");
        }
        let mut compressed = frame(b"x");
        compressed[0] = 1;
        assert_eq!(Envelope::parse("/m", headers(&good), &compressed), Err(EnvelopeError::Frame));
        let mut two = frame(b"x");
        two.extend_from_slice(&frame(b"y"));
        assert_eq!(Envelope::parse("/m", headers(&good), &two), Err(EnvelopeError::Frame));
        assert_eq!(Envelope::parse("/m", headers(&good), b"\0\0\0"), Err(EnvelopeError::Frame));
    }
}
