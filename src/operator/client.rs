//! The operator client: speaks `operator-api.md` over HTTP. Every request is signed; every
//! response's signature is checked before its status or body is believed.
//!
//! Outcomes are split the way money needs them split: [`OperatorError::Rejected`] is a
//! definite, signed 4xx answer (nothing happened, for the reason in `code`);
//! [`OperatorError::Unknown`] is everything else that is not a success (timeout, connection
//! error, 5xx, an unsigned, badly signed, oversized or unparseable response). Unknown is not
//! failed: the caller queries before it decides anything.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ring::digest;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::signing::{SignatureHeaders, Signer, Verifier};
use super::types::{
    CodePaymentRequest, CodePaymentResponse, ErrorBody, OrderRequest, OrderResponse, RefundQueryResponse,
    RefundRequest, RefundResponse, ReverseRequest, ReverseResponse, TradeQueryResponse, TransferQueryResponse,
    TransferRequest, TransferResponse,
};

/// The header carrying the statement's SHA-256 (hex), covered by the response signature.
pub const HEADER_CONTENT_SHA256: &str = "operator-content-sha256";

/// Where the operator is and what one call may cost.
#[derive(Clone, Debug)]
pub struct OperatorSettings {
    /// e.g. `http://127.0.0.1:8090` (no trailing slash needed).
    pub base_url: String,
    /// Whole call: connect, send, read the answer. Past it the outcome is unknown.
    pub timeout_ms: u64,
    /// Calls in flight at once; more wait (within `timeout_ms`) for a slot.
    pub max_in_flight: usize,
    /// Largest JSON answer read; larger is treated as unknown.
    pub max_response_bytes: usize,
    /// Largest statement file read.
    pub max_statement_bytes: usize,
    /// CAs trusted for an https operator besides the built-in roots.
    pub extra_roots: crate::tls::ExtraRoots,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        OperatorSettings {
            base_url: String::from("http://127.0.0.1:8090"),
            timeout_ms: 10_000,
            max_in_flight: 64,
            max_response_bytes: 64 * 1024,
            max_statement_bytes: 512 * 1024 * 1024,
            extra_roots: crate::tls::ExtraRoots::default(),
        }
    }
}

/// How a call that did not succeed ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// The operator may or may not have acted: query before deciding.
    #[error("operator outcome unknown: {reason}")]
    Unknown { reason: String },
    /// A signed, definite refusal with the spec's error body.
    #[error("operator refused ({http_status} {code}): {message}")]
    Rejected { http_status: u16, code: String, message: String },
}

impl OperatorError {
    fn unknown(reason: impl Into<String>) -> OperatorError {
        OperatorError::Unknown { reason: reason.into() }
    }

    /// A definite 404: the object (trade, refund, transfer, statement) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, OperatorError::Rejected { http_status: 404, .. })
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, OperatorError::Unknown { .. })
    }

    /// The refusal code, if this is a definite refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            OperatorError::Rejected { code, .. } => Some(code),
            OperatorError::Unknown { .. } => None,
        }
    }
}

/// A signed, verified answer.
struct Verified {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone)]
pub struct OperatorClient {
    http: reqwest::Client,
    settings: Arc<OperatorSettings>,
    base_url: Arc<str>,
    signer: Arc<Signer>,
    verifier: Arc<Verifier>,
    in_flight: Arc<Semaphore>,
}

impl fmt::Debug for OperatorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorClient").field("settings", &self.settings).field("signer", &self.signer).finish()
    }
}

impl OperatorClient {
    /// `signer` signs carepay's requests; `verifier` holds the operator's public keys. Fails
    /// only if the HTTP client cannot be built (the extra CAs were checked when loaded).
    pub fn new(
        settings: OperatorSettings,
        signer: Arc<Signer>,
        verifier: Arc<Verifier>,
    ) -> Result<OperatorClient, reqwest::Error> {
        let http = settings
            .extra_roots
            .apply(reqwest::Client::builder())
            // The operator is never reached through a redirect: a 3xx is an unknown outcome.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base_url: Arc<str> = Arc::from(settings.base_url.trim_end_matches('/'));
        let in_flight = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        Ok(OperatorClient { http, settings: Arc::new(settings), base_url, signer, verifier, in_flight })
    }

    pub fn settings(&self) -> &OperatorSettings {
        &self.settings
    }

    pub async fn pay_by_code(&self, request: &CodePaymentRequest) -> Result<CodePaymentResponse, OperatorError> {
        self.post_json("/v1/payments/code", request).await
    }

    pub async fn create_order(&self, request: &OrderRequest) -> Result<OrderResponse, OperatorError> {
        self.post_json("/v1/orders", request).await
    }

    pub async fn query_trade(
        &self,
        merchant_wallet_id: &str,
        out_trade_no: &str,
    ) -> Result<TradeQueryResponse, OperatorError> {
        let path = format!(
            "/v1/trades/{}?merchant_wallet_id={}",
            encode_component(out_trade_no),
            encode_component(merchant_wallet_id)
        );
        self.get_json(&path).await
    }

    pub async fn reverse(
        &self,
        merchant_wallet_id: &str,
        out_trade_no: &str,
    ) -> Result<ReverseResponse, OperatorError> {
        let path = format!("/v1/trades/{}/reverse", encode_component(out_trade_no));
        self.post_json(&path, &ReverseRequest { merchant_wallet_id: merchant_wallet_id.to_owned() }).await
    }

    pub async fn refund(&self, request: &RefundRequest) -> Result<RefundResponse, OperatorError> {
        self.post_json("/v1/refunds", request).await
    }

    pub async fn query_refund(
        &self,
        merchant_wallet_id: &str,
        out_refund_no: &str,
    ) -> Result<RefundQueryResponse, OperatorError> {
        let path = format!(
            "/v1/refunds/{}?merchant_wallet_id={}",
            encode_component(out_refund_no),
            encode_component(merchant_wallet_id)
        );
        self.get_json(&path).await
    }

    pub async fn transfer(&self, request: &TransferRequest) -> Result<TransferResponse, OperatorError> {
        self.post_json("/v1/transfers", request).await
    }

    pub async fn query_transfer(
        &self,
        payer_wallet_id: &str,
        out_transfer_no: &str,
    ) -> Result<TransferQueryResponse, OperatorError> {
        let path = format!(
            "/v1/transfers/{}?payer_wallet_id={}",
            encode_component(out_transfer_no),
            encode_component(payer_wallet_id)
        );
        self.get_json(&path).await
    }

    /// The statement file of `date` (`YYYY-MM-DD`) for `wallet_id`, with its digest checked
    /// against the signed `Operator-Content-SHA256` header. A mismatch is `Unknown`: the file
    /// cannot be trusted, and fetching again may give the right one.
    pub async fn statement(&self, date: &str, wallet_id: &str) -> Result<Vec<u8>, OperatorError> {
        let started = std::time::Instant::now();
        let path = format!("/v1/statements/{}?wallet_id={}", encode_component(date), encode_component(wallet_id));
        observed("statement", started, self.statement_at(&path).await)
    }

    async fn statement_at(&self, path: &str) -> Result<Vec<u8>, OperatorError> {
        let answer = self.call("GET", path, Vec::new(), self.settings.max_statement_bytes).await?;
        if !(200..300).contains(&answer.status) {
            return Err(refusal_or_unknown(&answer));
        }
        let declared = answer
            .headers
            .get(HEADER_CONTENT_SHA256)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| OperatorError::unknown("statement without an Operator-Content-SHA256 header"))?;
        let actual = hex::encode(digest::digest(&digest::SHA256, &answer.body));
        if !declared.eq_ignore_ascii_case(&actual) {
            return Err(OperatorError::unknown("statement digest differs from its Operator-Content-SHA256 header"));
        }
        Ok(answer.body)
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, OperatorError> {
        let started = std::time::Instant::now();
        // Serialising our own wire types cannot fail; if it ever did, nothing was sent.
        let bytes = serde_json::to_vec(body).map_err(|e| OperatorError::unknown(format!("cannot encode: {e}")))?;
        let answer = self.call("POST", path, bytes, self.settings.max_response_bytes).await;
        observed(operation("POST", path), started, answer.and_then(|answer| parse_answer(&answer)))
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, OperatorError> {
        let started = std::time::Instant::now();
        let answer = self.call("GET", path, Vec::new(), self.settings.max_response_bytes).await;
        observed(operation("GET", path), started, answer.and_then(|answer| parse_answer(&answer)))
    }

    /// One signed round trip, within `timeout_ms` all told (waiting for a slot included).
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        max_body_bytes: usize,
    ) -> Result<Verified, OperatorError> {
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        match tokio::time::timeout(timeout, self.call_unbounded(method, path, body, max_body_bytes)).await {
            Ok(result) => result,
            Err(_) => Err(OperatorError::unknown(format!("no answer within {} ms", self.settings.timeout_ms))),
        }
    }

    async fn call_unbounded(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        max_body_bytes: usize,
    ) -> Result<Verified, OperatorError> {
        let _permit =
            self.in_flight.acquire().await.map_err(|_| OperatorError::unknown("operator client is shutting down"))?;
        let signature = self.signer.sign_request(method, path, &body);
        let url = format!("{}{}", self.base_url, path);
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| OperatorError::unknown(format!("bad method {method}")))?;
        let mut request = self.http.request(method, url);
        for (name, value) in signature.pairs() {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json").body(body);
        }
        let mut response = request.send().await.map_err(|e| OperatorError::unknown(describe(&e)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut received = Vec::new();
        // Bounded by `max_body_bytes`: each chunk grows `received` and the check stops it.
        while let Some(chunk) = response.chunk().await.map_err(|e| OperatorError::unknown(describe(&e)))? {
            if received.len() + chunk.len() > max_body_bytes {
                return Err(OperatorError::unknown(format!("answer larger than {max_body_bytes} bytes")));
            }
            received.extend_from_slice(&chunk);
        }
        let signature = SignatureHeaders::from_header_map(&headers)
            .map_err(|e| OperatorError::unknown(format!("HTTP {status} answer not verifiable: {e}")))?;
        self.verifier
            .verify_response(&signature, &received)
            .map_err(|e| OperatorError::unknown(format!("HTTP {status} answer not verifiable: {e}")))?;
        Ok(Verified { status, headers, body: received })
    }
}

/// The operation a request path names, as the metrics label it (ids in the path left out).
fn operation(method: &str, path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    match (method, path) {
        ("POST", "/v1/payments/code") => "pay_by_code",
        ("POST", "/v1/orders") => "create_order",
        ("POST", path) if path.starts_with("/v1/trades/") => "reverse",
        ("GET", path) if path.starts_with("/v1/trades/") => "query_trade",
        ("POST", "/v1/refunds") => "refund",
        ("GET", path) if path.starts_with("/v1/refunds/") => "query_refund",
        ("POST", "/v1/transfers") => "transfer",
        ("GET", path) if path.starts_with("/v1/transfers/") => "query_transfer",
        ("GET", path) if path.starts_with("/v1/statements/") => "statement",
        _ => "other",
    }
}

/// `result`, after recording how long the call took and how it ended.
fn observed<T>(
    operation: &'static str,
    started: std::time::Instant,
    result: Result<T, OperatorError>,
) -> Result<T, OperatorError> {
    let outcome = match &result {
        Ok(_) => "success",
        Err(OperatorError::Rejected { .. }) => "rejected",
        Err(OperatorError::Unknown { .. }) => "unknown",
    };
    crate::telemetry::operator_call(operation, outcome, started.elapsed());
    result
}

fn parse_answer<T: DeserializeOwned>(answer: &Verified) -> Result<T, OperatorError> {
    if (200..300).contains(&answer.status) {
        serde_json::from_slice(&answer.body)
            .map_err(|e| OperatorError::unknown(format!("HTTP {} answer not understood: {e}", answer.status)))
    } else {
        Err(refusal_or_unknown(answer))
    }
}

/// Only a 4xx with the spec's error body is a definite refusal; 5xx, 3xx and anything
/// unreadable leave the outcome open.
fn refusal_or_unknown(answer: &Verified) -> OperatorError {
    if !(400..500).contains(&answer.status) {
        return OperatorError::unknown(format!("HTTP {}", answer.status));
    }
    match serde_json::from_slice::<ErrorBody>(&answer.body) {
        Ok(error) => OperatorError::Rejected { http_status: answer.status, code: error.code, message: error.message },
        Err(_) => OperatorError::unknown(format!("HTTP {} without an error body", answer.status)),
    }
}

fn describe(error: &reqwest::Error) -> String {
    if let Some(tls) = crate::tls::tls_failure(error) {
        tls
    } else if error.is_timeout() {
        String::from("timed out")
    } else if error.is_connect() {
        String::from("cannot connect to the operator")
    } else {
        format!("transport error: {error}")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so an id can never
/// change the shape of the path or query it is put in.
pub fn encode_component(raw: &str) -> String {
    let mut encoded = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_the_spec_alphabet_pass_through_and_anything_else_is_escaped() {
        assert_eq!(encode_component("P-20261128_0001"), "P-20261128_0001");
        assert_eq!(encode_component("0021000000000001"), "0021000000000001");
        assert_eq!(encode_component("a/b?c=d&e"), "a%2Fb%3Fc%3Dd%26e");
        assert_eq!(encode_component("午"), "%E5%8D%88");
    }

    #[test]
    fn only_a_404_refusal_is_not_found() {
        let not_found =
            OperatorError::Rejected { http_status: 404, code: String::from("TRADE_NOT_FOUND"), message: String::new() };
        assert!(not_found.is_not_found());
        assert_eq!(not_found.code(), Some("TRADE_NOT_FOUND"));
        assert!(!OperatorError::unknown("timed out").is_not_found());
        let conflict = OperatorError::Rejected {
            http_status: 409,
            code: String::from("DUPLICATE_OUT_NO"),
            message: String::new(),
        };
        assert!(!conflict.is_not_found());
    }
}
