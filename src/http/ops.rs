//! Operational endpoints: liveness, readiness, metrics. Unauthenticated by design: they
//! reveal nothing but whether the process and its database are up, and if not, why.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;
use super::error::ApiError;
use crate::store::NotReady;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

/// The process is up and serving.
async fn healthz() -> &'static str {
    "ok\n"
}

/// The process can serve now: its database answers, is the one it opened, and has the
/// schema this build expects. Says which of these failed (no paths or addresses).
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let not_ready = match state.app.store.readiness().await {
        Ok(()) => return Ok("ready\n"),
        Err(not_ready) => not_ready,
    };
    tracing::warn!(error = %not_ready, "readiness check failed");
    let (code, detail) = match &not_ready {
        NotReady::Unreachable(_) => ("DATABASE_UNAVAILABLE", String::from("the database is not reachable")),
        NotReady::FileMissing => ("DATABASE_FILE_MISSING", not_ready.to_string()),
        NotReady::FileReplaced => ("DATABASE_FILE_REPLACED", not_ready.to_string()),
        NotReady::Schema { .. } => ("SCHEMA_MISMATCH", not_ready.to_string()),
    };
    Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, detail).with_retry_after(5))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::telemetry::sample(&state.app.store).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics().render())
}
