//! Operational endpoints: liveness, readiness, metrics. Unauthenticated by design: they
//! reveal nothing but whether the process and its database are up.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;
use super::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

/// The process is up and serving.
async fn healthz() -> &'static str {
    "ok\n"
}

/// The process can reach its database now.
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match state.app.store.ping().await {
        Ok(()) => Ok("ready\n"),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE", "the database is not reachable")
                .with_retry_after(5))
        }
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::telemetry::sample(&state.app.store).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics().render())
}
