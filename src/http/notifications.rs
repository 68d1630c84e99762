//! `POST /v1/operator/notifications`: where the wallet operator reports outcomes. Verified
//! per the operator spec (key id, signature, 300 s window, nonce replay) before anything is
//! read; a refused notification changes nothing and is answered 401 so the operator retries.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use super::AppState;
use super::error::ApiError;
use crate::operator::signing::SignatureHeaders;
use crate::operator::types::Notification;

pub const NOTIFICATIONS_PATH: &str = "/v1/operator/notifications";

pub fn router() -> Router<AppState> {
    Router::new().route(NOTIFICATIONS_PATH, post(receive))
}

async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<StatusCode, ApiError> {
    let Some(operator) = state.app.operator.as_ref() else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "NO_OPERATOR", "no wallet operator is configured"));
    };
    let refused = |reason: &str| ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE", reason.to_owned());
    let signature = SignatureHeaders::from_header_map(&headers).map_err(|error| refused(error.reason()))?;
    operator.verifier.verify_response(&signature, &body).map_err(|error| {
        tracing::warn!(reason = error.reason(), "operator notification refused");
        refused(error.reason())
    })?;
    let notification: Notification = super::extract::parse_json(&body)?;
    state.app.apply_operator_notification(notification).await?;
    Ok(StatusCode::NO_CONTENT)
}
