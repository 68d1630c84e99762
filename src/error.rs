//! The one error type of the use-case layer. Transports map it to a status in one place
//! each (`http::error`, later `grpc::error`); internal details are logged there and never
//! shown to a client.

use crate::domain::role::Role;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials, or credentials that are unknown, expired or revoked.
    #[error("missing or invalid credentials")]
    Unauthenticated,
    /// The caller's role may not do this anywhere.
    #[error("role {role} may not do this")]
    RoleNotAllowed { role: Role },
    /// The object does not exist, or exists outside the caller's scope. The two are
    /// deliberately indistinguishable to a scoped caller.
    #[error("no such object within your scope")]
    OutOfScope,
    /// [`Error::OutOfScope`] for an object that the request's content names (a file's
    /// header), saying which part named it; still the same for a missing object.
    #[error("{field}: {detail}")]
    OutOfScopeIn { field: String, code: &'static str, detail: String },
    /// The object does not exist (only said to callers whose scope is everything).
    #[error("no such {what}")]
    NotFound { what: &'static str },
    /// A field of the request is wrong; nothing was changed.
    #[error("{field}: {detail}")]
    Invalid { field: String, code: &'static str, detail: String },
    /// The request clashes with the current state (duplicate, concurrent change, wrong state).
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// The same idempotency key was used for a different request.
    #[error("this request id was already used for a different request")]
    IdempotencyMismatch,
    /// The first request with this idempotency key is still being processed.
    #[error("the first request with this id is still in progress; retry later")]
    InFlight,
    /// The caller exceeded its request rate; retry after this many seconds.
    #[error("too many requests; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u32 },
    /// Too many failed sign-ins came from this client lately; retry after this many seconds.
    #[error("too many failed sign-ins; retry in {retry_after_s} s")]
    SignInThrottled { retry_after_s: u32 },
    /// A dependency (the operator) did not answer; repeating the same request is safe.
    #[error("{detail}")]
    Unavailable { detail: String },
    #[error("internal error: {0}")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, code: &'static str, detail: impl std::fmt::Display) -> Error {
        Error::Invalid { field: field.into(), code, detail: detail.to_string() }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Error {
        Error::Conflict { code, detail: detail.into() }
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Error {
        Error::Internal(anyhow::Error::new(error))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
