//! The single place where errors become HTTP responses: `application/problem+json`
//! (RFC 9457) with a stable `code`, the offending `field` where there is one, and never an
//! internal detail. Internal errors are logged with their full chain instead.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// An RFC 9457 problem document.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Short, human-readable summary of the kind of problem.
    pub title: &'static str,
    /// The HTTP status, repeated for clients that lose it.
    pub status: u16,
    /// Stable machine-readable code (UPPER_SNAKE); safe to branch on.
    pub code: &'static str,
    /// What went wrong with this request, for a human.
    pub detail: String,
    /// The request field at fault, as a dotted path, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    problem: Problem,
    retry_after_s: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            problem: Problem {
                title: status.canonical_reason().unwrap_or("Error"),
                status: status.as_u16(),
                code,
                detail: detail.into(),
                field: None,
            },
            retry_after_s: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.problem.field = Some(field.into());
        self
    }

    pub fn with_retry_after(mut self, seconds: u32) -> ApiError {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn code(&self) -> &'static str {
        self.problem.code
    }

    pub fn detail(&self) -> &str {
        &self.problem.detail
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "send a valid, unrevoked token as `Authorization: Bearer <token>`",
            ),
            Error::RoleNotAllowed { role } => {
                ApiError::new(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED", format!("the {role} role may not do this"))
            }
            Error::OutOfScope => {
                ApiError::new(StatusCode::FORBIDDEN, "OUT_OF_SCOPE", "no such object within your scope")
            }
            Error::OutOfScopeIn { field, code, detail } => {
                ApiError::new(StatusCode::FORBIDDEN, code, format!("{field}: {detail}")).with_field(field)
            }
            Error::NotFound { what } => ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no such {what}")),
            Error::Invalid { field, code, detail } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, format!("{field}: {detail}")).with_field(field)
            }
            Error::Conflict { code, detail } => ApiError::new(StatusCode::CONFLICT, code, detail),
            Error::IdempotencyMismatch => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "this idempotency key was already used with a different request",
            ),
            Error::InFlight => ApiError::new(
                StatusCode::CONFLICT,
                "REQUEST_IN_FLIGHT",
                "the first request with this idempotency key is still in progress; retry later",
            )
            .with_retry_after(1),
            Error::RateLimited { retry_after_s } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!("too many requests from this token; retry in {retry_after_s} s"),
            )
            .with_retry_after(retry_after_s),
            Error::SignInThrottled { retry_after_s } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "SIGN_IN_THROTTLED",
                format!("too many failed sign-ins from this client; retry in {retry_after_s} s"),
            )
            .with_retry_after(retry_after_s),
            Error::Unavailable { detail } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UPSTREAM_UNAVAILABLE", detail).with_retry_after(5)
            }
            Error::Internal(source) => {
                tracing::error!(error = ?source, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "something went wrong on our side; it has been logged",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
