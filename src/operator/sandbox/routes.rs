//! HTTP for the sandbox: the spec's `/v1` endpoints behind a layer that verifies request
//! signatures, applies request faults and signs every answer; and the unsigned `/sandbox`
//! admin routes that seed wallets, play the payer and inject faults.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Sandbox;
use super::faults::{FaultSpec, RequestFaultKind};
use super::state::{AfterApply, Applied, Refusal};
use crate::domain::money::Amount;
use crate::operator::client::HEADER_CONTENT_SHA256;
use crate::operator::signing::{PublicKey, SignatureAlgorithm, SignatureHeaders, Signer};
use crate::operator::types::{
    CodePaymentRequest, ErrorBody, OrderRequest, RefundRequest, ReverseRequest, ReverseResponse, TransferRequest,
};

pub fn router(sandbox: Sandbox) -> Router {
    let operator = Router::new()
        .route("/v1/payments/code", post(pay_by_code))
        .route("/v1/orders", post(create_order))
        .route("/v1/trades/{out_trade_no}", get(query_trade))
        .route("/v1/trades/{out_trade_no}/reverse", post(reverse))
        .route("/v1/refunds", post(refund))
        .route("/v1/refunds/{out_refund_no}", get(query_refund))
        .route("/v1/transfers", post(transfer))
        .route("/v1/transfers/{out_transfer_no}", get(query_transfer))
        .route("/v1/statements/{date}", get(statement))
        .layer(middleware::from_fn_with_state(sandbox.clone(), operator_layer));
    let admin = Router::new()
        .route("/sandbox/key", get(admin_key))
        .route("/sandbox/signing-key", post(admin_rotate_signing_key))
        .route("/sandbox/wallets", post(admin_open_wallet))
        .route("/sandbox/wallets/{wallet_id}", get(admin_wallet))
        .route("/sandbox/wallets/{wallet_id}/fund", post(admin_fund))
        .route("/sandbox/wallets/{wallet_id}/freeze", post(admin_freeze))
        .route("/sandbox/wallets/{wallet_id}/unfreeze", post(admin_unfreeze))
        .route("/sandbox/trades/{out_trade_no}/confirm", post(admin_confirm))
        .route("/sandbox/orders/{out_trade_no}/pay", post(admin_pay_order))
        .route("/sandbox/transfers/{out_transfer_no}/return", post(admin_return_transfer))
        .route("/sandbox/faults", post(admin_add_fault).delete(admin_clear_faults))
        .route("/sandbox/notify-url", axum::routing::put(admin_notify_url))
        .route("/sandbox/client-keys", post(admin_client_key))
        .route("/sandbox/clock", get(admin_clock).post(admin_set_clock));
    operator.merge(admin).with_state(sandbox)
}

// ---- the signing layer -------------------------------------------------------------------

async fn operator_layer(State(sandbox): State<Sandbox>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, sandbox.config().max_body_bytes).await else {
        return sign(&sandbox, refusal(Refusal::new(413, "BODY_TOO_LARGE", "request body too large"))).await;
    };
    let path_with_query = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let verified = SignatureHeaders::from_header_map(&parts.headers).and_then(|headers| {
        sandbox.verifier().verify_request(&headers, parts.method.as_str(), path_with_query, &bytes)
    });
    if let Err(error) = verified {
        let message = format!("{} ({})", error, error.reason());
        return sign(&sandbox, refusal(Refusal::new(401, "INVALID_SIGNATURE", message))).await;
    }
    let fault = sandbox.faults().take_request(parts.uri.path());
    if fault == Some(RequestFaultKind::ErrorBeforeApply) {
        return sign(&sandbox, system_error("sandbox fault: failing before applying")).await;
    }
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let after = match fault {
        Some(RequestFaultKind::TimeoutAfterApply) => AfterApply::Hang,
        Some(RequestFaultKind::ErrorAfterApply) => AfterApply::Error,
        _ => response.extensions().get::<AfterApply>().copied().unwrap_or_default(),
    };
    match after {
        AfterApply::Answer => sign(&sandbox, response).await,
        AfterApply::Error => sign(&sandbox, system_error("sandbox fault: failing after applying")).await,
        AfterApply::Hang => {
            tokio::time::sleep(Duration::from_millis(sandbox.config().hang_ms)).await;
            sign(&sandbox, system_error("sandbox fault: answering after the client gave up")).await
        }
    }
}

/// Buffers the answer and adds the four signature headers over its exact bytes. Handlers
/// build their bodies in memory, so buffering copies, it does not wait on a stream.
async fn sign(sandbox: &Sandbox, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, sandbox.config().max_response_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            parts.headers.remove(HEADER_CONTENT_SHA256);
            Bytes::from(error_json("SYSTEM_ERROR", "answer too large to sign"))
        }
    };
    sandbox.signer().sign_response(&body).write_to(&mut parts.headers);
    Response::from_parts(parts, Body::from(body))
}

fn error_json(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody { code: code.to_owned(), message: message.to_owned() }).unwrap_or_default()
}

fn refusal(refusal: Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, error_json(refusal.code, &refusal.message))
}

fn system_error(message: &str) -> Response {
    refusal(Refusal::new(500, "SYSTEM_ERROR", message))
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn ok_json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(_) => system_error("answer not serialisable"),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|error| Refusal::new(400, "INVALID_REQUEST", error.to_string()))
}

/// A parameter of a raw query string, percent-decoded.
fn query_param(raw: Option<&str>, name: &str) -> Result<String, Refusal> {
    raw.unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(value))
        .ok_or_else(|| Refusal::new(400, "INVALID_REQUEST", format!("query parameter {name} is required")))
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = raw.get(index + 1..index + 3)?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// The answer of an operation, carrying how it should misbehave for the signing layer.
fn applied<T: Serialize>(sandbox: &Sandbox, result: Result<Applied<T>, Refusal>) -> Response {
    match result {
        Ok(applied) => {
            let applied = sandbox.finish_applied(applied);
            let mut response = ok_json(&applied.answer);
            response.extensions_mut().insert(applied.after);
            response
        }
        Err(error) => refusal(error),
    }
}

fn now_ms(sandbox: &Sandbox) -> i64 {
    sandbox.clock().now_ms()
}

// ---- the spec's endpoints ------------------------------------------------------------------

async fn pay_by_code(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let result =
        parse::<CodePaymentRequest>(&body).and_then(|request| sandbox.books().pay_by_code(&request, now_ms(&sandbox)));
    applied(&sandbox, result)
}

async fn create_order(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let result =
        parse::<OrderRequest>(&body).and_then(|request| sandbox.books().create_order(&request, now_ms(&sandbox)));
    applied(&sandbox, result)
}

async fn query_trade(
    State(sandbox): State<Sandbox>,
    Path(out_trade_no): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let result = query_param(query.as_deref(), "merchant_wallet_id")
        .and_then(|merchant| sandbox.books().query_trade(&merchant, &out_trade_no, now_ms(&sandbox)));
    applied(&sandbox, result)
}

async fn reverse(State(sandbox): State<Sandbox>, Path(out_trade_no): Path<String>, body: Bytes) -> Response {
    let result = parse::<ReverseRequest>(&body).and_then(|request| {
        sandbox.books().reverse(&request.merchant_wallet_id, &out_trade_no, now_ms(&sandbox)).map(|applied| Applied {
            answer: ReverseResponse { status: applied.answer },
            events: applied.events,
            timers: applied.timers,
            after: applied.after,
        })
    });
    applied(&sandbox, result)
}

async fn refund(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let result = parse::<RefundRequest>(&body).and_then(|request| sandbox.books().refund(&request, now_ms(&sandbox)));
    applied(&sandbox, result)
}

async fn query_refund(
    State(sandbox): State<Sandbox>,
    Path(out_refund_no): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    match query_param(query.as_deref(), "merchant_wallet_id")
        .and_then(|merchant| sandbox.books().query_refund(&merchant, &out_refund_no))
    {
        Ok(answer) => ok_json(&answer),
        Err(error) => refusal(error),
    }
}

async fn transfer(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let result =
        parse::<TransferRequest>(&body).and_then(|request| sandbox.books().transfer(&request, now_ms(&sandbox)));
    applied(&sandbox, result)
}

async fn query_transfer(
    State(sandbox): State<Sandbox>,
    Path(out_transfer_no): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    match query_param(query.as_deref(), "payer_wallet_id")
        .and_then(|payer| sandbox.books().query_transfer(&payer, &out_transfer_no))
    {
        Ok(answer) => ok_json(&answer),
        Err(error) => refusal(error),
    }
}

async fn statement(State(sandbox): State<Sandbox>, Path(date): Path<String>, RawQuery(query): RawQuery) -> Response {
    let result =
        query_param(query.as_deref(), "wallet_id").and_then(|wallet_id| sandbox.statement_file(&date, &wallet_id));
    match result {
        Ok((file, digest_hex)) => {
            let mut response = (StatusCode::OK, file).into_response();
            let headers = response.headers_mut();
            headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
            if let Ok(value) = HeaderValue::from_str(&digest_hex) {
                headers.insert(HEADER_CONTENT_SHA256, value);
            }
            response
        }
        Err(error) => refusal(error),
    }
}

// ---- admin routes (not part of the spec) ---------------------------------------------------

fn admin<T: Serialize>(result: Result<T, Refusal>) -> Response {
    match result {
        Ok(value) => ok_json(&value),
        Err(error) => refusal(error),
    }
}

#[derive(Serialize)]
struct Done {
    ok: bool,
}

const DONE: Done = Done { ok: true };

#[derive(Serialize)]
struct KeyView {
    key_id: String,
    algorithm: SignatureAlgorithm,
    public_key: String,
}

fn key_view(sandbox: &Sandbox) -> KeyView {
    let signer = sandbox.signer();
    KeyView {
        key_id: signer.key_id().to_owned(),
        algorithm: signer.algorithm(),
        public_key: signer.public_key_base64(),
    }
}

async fn admin_key(State(sandbox): State<Sandbox>) -> Response {
    ok_json(&key_view(&sandbox))
}

#[derive(Deserialize)]
struct SigningKey {
    key_id: String,
    algorithm: SignatureAlgorithm,
    /// Base64 of the 32-byte secret (Ed25519 seed, SM2 private key); a new random key when absent.
    #[serde(default)]
    secret: Option<String>,
}

/// Switches the key every answer and notification is signed with, and shows the new one.
async fn admin_rotate_signing_key(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    admin(parse::<SigningKey>(&body).and_then(|key| {
        let clock = sandbox.clock().clone();
        let signer = match &key.secret {
            Some(secret) => Signer::from_secret_base64(key.algorithm, &key.key_id, secret, clock),
            None => Signer::generate_with(key.algorithm, &key.key_id, clock),
        }
        .map_err(|error| Refusal::new(400, "INVALID_KEY", error.to_string()))?;
        sandbox.rotate_signing_key(signer);
        Ok(key_view(&sandbox))
    }))
}

#[derive(Deserialize)]
struct OpenWallet {
    wallet_id: String,
    holder_name: String,
    tier: u8,
    balance: Amount,
    #[serde(default)]
    allowed_merchants: Option<Vec<String>>,
}

async fn admin_open_wallet(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    admin(parse::<OpenWallet>(&body).and_then(|open| {
        sandbox.open_wallet(&open.wallet_id, &open.holder_name, open.tier, open.balance)?;
        if let Some(merchants) = open.allowed_merchants {
            sandbox.restrict_to_merchants(&open.wallet_id, merchants)?;
        }
        Ok(DONE)
    }))
}

async fn admin_wallet(State(sandbox): State<Sandbox>, Path(wallet_id): Path<String>) -> Response {
    admin(sandbox.wallet(&wallet_id).ok_or_else(|| Refusal::new(404, "WALLET_NOT_FOUND", "no such wallet")))
}

#[derive(Deserialize)]
struct Fund {
    amount: Amount,
}

async fn admin_fund(State(sandbox): State<Sandbox>, Path(wallet_id): Path<String>, body: Bytes) -> Response {
    admin(parse::<Fund>(&body).and_then(|fund| sandbox.fund(&wallet_id, fund.amount)).map(|()| DONE))
}

async fn admin_freeze(State(sandbox): State<Sandbox>, Path(wallet_id): Path<String>) -> Response {
    admin(sandbox.freeze(&wallet_id).map(|()| DONE))
}

async fn admin_unfreeze(State(sandbox): State<Sandbox>, Path(wallet_id): Path<String>) -> Response {
    admin(sandbox.unfreeze(&wallet_id).map(|()| DONE))
}

async fn admin_confirm(
    State(sandbox): State<Sandbox>,
    Path(out_trade_no): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    admin(
        query_param(query.as_deref(), "merchant_wallet_id")
            .and_then(|merchant| sandbox.confirm_trade(&merchant, &out_trade_no)),
    )
}

#[derive(Deserialize)]
struct PayOrder {
    payer_code: String,
}

async fn admin_pay_order(
    State(sandbox): State<Sandbox>,
    Path(out_trade_no): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    admin(query_param(query.as_deref(), "merchant_wallet_id").and_then(|merchant| {
        let pay = parse::<PayOrder>(&body)?;
        sandbox.pay_order(&merchant, &out_trade_no, &pay.payer_code)
    }))
}

async fn admin_return_transfer(
    State(sandbox): State<Sandbox>,
    Path(out_transfer_no): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    admin(
        query_param(query.as_deref(), "payer_wallet_id")
            .and_then(|payer| sandbox.return_transfer(&payer, &out_transfer_no))
            .map(|()| DONE),
    )
}

async fn admin_add_fault(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    admin(
        parse::<FaultSpec>(&body)
            .and_then(|spec| {
                sandbox.faults().add(spec).map_err(|error| Refusal::new(400, "INVALID_FAULT", error.to_string()))
            })
            .map(|()| DONE),
    )
}

async fn admin_clear_faults(State(sandbox): State<Sandbox>) -> Response {
    sandbox.faults().clear();
    ok_json(&DONE)
}

#[derive(Deserialize)]
struct NotifyUrl {
    url: Option<String>,
}

async fn admin_notify_url(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    admin(parse::<NotifyUrl>(&body).map(|notify| {
        sandbox.set_notify_url(notify.url);
        DONE
    }))
}

#[derive(Deserialize)]
struct ClientKey {
    key_id: String,
    /// Base64 of the raw key.
    public_key: String,
    /// `ed25519` (default), `ecdsa-p256-sha256` or `sm2-sm3`.
    #[serde(default)]
    algorithm: Option<String>,
}

async fn admin_client_key(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    admin(parse::<ClientKey>(&body).and_then(|key| {
        let algorithm = match key.algorithm.as_deref() {
            None => SignatureAlgorithm::Ed25519,
            Some(name) => {
                SignatureAlgorithm::parse(name).ok_or_else(|| Refusal::new(400, "INVALID_KEY", "unknown algorithm"))?
            }
        };
        let invalid = |error: crate::operator::signing::KeyError| Refusal::new(400, "INVALID_KEY", error.to_string());
        let public_key = PublicKey::from_base64(algorithm, &key.public_key).map_err(invalid)?;
        sandbox.register_client_key(&key.key_id, public_key).map_err(invalid)?;
        Ok(DONE)
    }))
}

#[derive(Serialize, Deserialize)]
struct ClockView {
    now_ms: i64,
}

async fn admin_clock(State(sandbox): State<Sandbox>) -> Response {
    ok_json(&ClockView { now_ms: sandbox.clock().now_ms() })
}

async fn admin_set_clock(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    admin(parse::<ClockView>(&body).and_then(|clock| {
        if sandbox.clock().set_ms(clock.now_ms) {
            Ok(DONE)
        } else {
            Err(Refusal::new(409, "CLOCK_NOT_MANUAL", "this sandbox runs on the system clock"))
        }
    }))
}
