//! The signature check in front of every terminal RPC: an axum middleware on the gRPC
//! routes, because the signature covers the exact request bytes, which tonic interceptors
//! never see. A request that fails is answered UNAUTHENTICATED and leaves nothing behind.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::envelope::Envelope;
use crate::app::App;
use crate::directory::{TerminalAuthError, check_terminal};
use crate::domain::directory::Terminal;
use crate::domain::time::UnixMs;
use crate::nonces::NonceVerdict;
use crate::store::Backend;

/// Largest terminal request body accepted; every terminal message is far smaller.
pub const MAX_TERMINAL_REQUEST_BYTES: usize = 64 * 1024;

/// The terminal a verified request came from, and the digest of what it asked.
#[derive(Clone, Debug)]
pub struct VerifiedTerminal {
    pub terminal: Terminal,
    pub request_sha256: String,
}

fn unauthenticated(reason: &str) -> Response {
    tonic::Status::unauthenticated(reason.to_owned()).into_http::<Body>().into_response()
}

pub async fn verify_terminal(State(app): State<App>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_TERMINAL_REQUEST_BYTES).await else {
        return tonic::Status::resource_exhausted("request too large").into_http::<Body>().into_response();
    };
    let method = parts.uri.path().to_owned();
    let header = |name: &str| parts.headers.get(name).and_then(|value| value.to_str().ok());
    let envelope = match Envelope::parse(&method, header, &bytes) {
        Ok(envelope) => envelope,
        Err(error) => return unauthenticated(&error.to_string()),
    };
    match app.verify_terminal_envelope(&envelope, UnixMs::now()).await {
        Ok(terminal) => {
            parts.extensions.insert(VerifiedTerminal { terminal, request_sha256: envelope.request_sha256() });
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        }
        Err(Ok(reason)) => {
            tracing::info!(terminal = %envelope.terminal_id, %reason, "terminal request refused");
            unauthenticated(&reason.to_string())
        }
        Err(Err(error @ crate::error::Error::RateLimited { .. })) => {
            super::error::status(error).into_http::<Body>().into_response()
        }
        Err(Err(error)) => {
            tracing::error!(%error, "terminal authentication failed internally");
            tonic::Status::unavailable("try again shortly").into_http::<Body>().into_response()
        }
    }
}

/// Why a well-formed envelope was refused, beyond the directory's own reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeRefusal {
    #[error("{0}")]
    Terminal(TerminalAuthError),
    #[error("timestamp is more than the allowed window away from the server clock")]
    StaleTimestamp,
    #[error("nonce already used")]
    ReplayedNonce,
    #[error("too many requests in the signature window; retry shortly")]
    Busy,
}

impl App {
    /// Verify a parsed envelope: fresh timestamp, the current key of an active terminal, and
    /// a nonce not seen in the window (recorded only once everything else passed).
    pub async fn verify_terminal_envelope(
        &self,
        envelope: &Envelope,
        now: UnixMs,
    ) -> Result<Terminal, Result<EnvelopeRefusal, crate::error::Error>> {
        let window_s = self.payments.signature_window_s;
        if (envelope.timestamp_s - now.0 / 1_000).abs() > window_s {
            return Err(Ok(EnvelopeRefusal::StaleTimestamp));
        }
        let refused = |reason| Err(Ok(EnvelopeRefusal::Terminal(reason)));
        let message = envelope.signed_message();
        // Instances sharing a PostgreSQL database check the terminal again when they record
        // the nonce, so they may start from the terminal as last read; SQLite reads it.
        let postgres = self.store.backend() == Backend::Postgres;
        let cached = postgres
            .then(|| self.terminals.get(&envelope.terminal_id, now, self.payments.terminal_cache_ttl_ms))
            .flatten();
        let terminal = match cached {
            Some(terminal) if check_terminal(&terminal, &message, &envelope.signature).is_ok() => terminal,
            // Unknown here, or refused as last read: it may have changed since.
            _ => {
                let terminal =
                    self.read_terminal(&envelope.terminal_id).await.map_err(|e| e.map(EnvelopeRefusal::Terminal))?;
                check_terminal(&terminal, &message, &envelope.signature).or_else(refused)?;
                terminal
            }
        };
        // Counted after the signature verified, so nobody can spend another terminal's rate.
        self.terminal_rate
            .check(terminal.id.as_str(), std::time::Instant::now())
            .map_err(|retry_after_s| Err(crate::error::Error::RateLimited { retry_after_s }))?;
        // The nonce must outlive any timestamp the window still accepts.
        let expires_at = UnixMs((envelope.timestamp_s + window_s) * 1_000 + 1_000);
        match self.nonces.insert(&terminal.id, &envelope.nonce, expires_at, now) {
            NonceVerdict::Fresh => {}
            NonceVerdict::Replayed => return Err(Ok(EnvelopeRefusal::ReplayedNonce)),
            NonceVerdict::Full => return Err(Ok(EnvelopeRefusal::Busy)),
        }
        // The database remembers every accepted nonce until its window closes, so a replay
        // is refused by any instance and after a restart, and a request signed before this
        // process started is as good as any other. The nonce is recorded only while the
        // terminal is as checked; if it is not recorded, the nonce was used, or the
        // terminal changed since it was read.
        let record = |terminal: &Terminal| {
            let store = self.store.clone();
            let (terminal, nonce) = (terminal.clone(), envelope.nonce.clone());
            async move {
                store.record_terminal_nonce(&terminal, &nonce, expires_at).await.map_err(|error| Err(error.into()))
            }
        };
        if record(&terminal).await? {
            return Ok(terminal);
        }
        let current = self.read_terminal(&terminal.id).await.map_err(|e| e.map(EnvelopeRefusal::Terminal))?;
        if current.version == terminal.version {
            return Err(Ok(EnvelopeRefusal::ReplayedNonce));
        }
        check_terminal(&current, &message, &envelope.signature).or_else(refused)?;
        if record(&current).await? { Ok(current) } else { Err(Ok(EnvelopeRefusal::Busy)) }
    }
}
