//! The single place where use-case errors become gRPC statuses. Internal details are
//! logged, never sent.

use crate::error::Error;

pub fn status(error: Error) -> tonic::Status {
    match error {
        Error::Unauthenticated => tonic::Status::unauthenticated("invalid credentials"),
        Error::RoleNotAllowed { .. } | Error::OutOfScope | Error::OutOfScopeIn { .. } => {
            tonic::Status::permission_denied("not allowed")
        }
        Error::NotFound { what } => tonic::Status::not_found(format!("no such {what}")),
        Error::Invalid { field, code, detail } => tonic::Status::invalid_argument(format!("{code}: {field}: {detail}")),
        Error::Conflict { code, detail } => tonic::Status::failed_precondition(format!("{code}: {detail}")),
        Error::IdempotencyMismatch => {
            tonic::Status::already_exists("REQUEST_ID_REUSED: this request_id was already used for a different request")
        }
        Error::InFlight => {
            tonic::Status::aborted("REQUEST_IN_FLIGHT: the first call with this request_id is still running; retry")
        }
        Error::RateLimited { retry_after_s } => {
            tonic::Status::resource_exhausted(format!("RATE_LIMITED: too many requests; retry in {retry_after_s} s"))
        }
        Error::SignInThrottled { retry_after_s } => tonic::Status::resource_exhausted(format!(
            "SIGN_IN_THROTTLED: too many failed sign-ins; retry in {retry_after_s} s"
        )),
        Error::Unavailable { detail } => tonic::Status::unavailable(format!("UPSTREAM_UNAVAILABLE: {detail}")),
        Error::Internal(source) => {
            tracing::error!(error = ?source, "internal error");
            tonic::Status::internal("something went wrong on our side; it has been logged")
        }
    }
}
