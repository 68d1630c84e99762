//! Request extractors that turn every way a request can be malformed into a specific
//! problem response: which field, which position, why.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::domain::access::Principal;

/// A JSON body, strictly: `Content-Type: application/json`, within the body limit,
/// well-formed, and matching the schema (unknown fields are refused by the DTOs).
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_client_json(&bytes).map(StrictJson)
    }
}

/// A client's JSON body. JSON has one kind of number: `1267.0` is the integer 1267 to JSON
/// Schema and to most clients' encoders (a JavaScript client sends whole floats so), so a
/// whole number written with a fraction or exponent is read as the integer it is.
fn parse_client_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match parse_json(bytes) {
        Err(error) if error.is_whole_float_mismatch() => {
            let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| error)?;
            whole_floats_as_integers(&mut value);
            serde_path_to_error::deserialize(value).map_err(json_error)
        }
        other => other,
    }
}

fn whole_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(number) if number.is_f64() => {
            let float = number.as_f64().unwrap_or(f64::NAN);
            // Within ±2^53 a float holds every whole number exactly.
            if float.fract() == 0.0 && float.abs() <= 9_007_199_254_740_992.0 {
                *number = serde_json::Number::from(float as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE", "the request body exceeds the size limit")
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "UNREADABLE_BODY", "the request body could not be read")
    }
}

/// Deserialize with the path of the failing field, and classify the failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
    deserializer.end().map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            format!("trailing characters after the JSON value: {error}"),
        )
    })?;
    Ok(value)
}

impl ApiError {
    /// Whether a body was refused only for a float where an integer belongs.
    fn is_whole_float_mismatch(&self) -> bool {
        self.code() == "INVALID_FIELD" && self.detail().contains("invalid type: floating point")
    }
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof | serde_json::error::Category::Io => {
            ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_JSON", format!("the body is not valid JSON: {inner}"))
        }
        serde_json::error::Category::Data => {
            let message = inner.to_string();
            // serde names the offending field in backticks for unknown and missing fields;
            // for every other data error the path tells which field it was.
            let named = message.split('`').nth(1).map(str::to_owned);
            let join = |name: String| if path == "." { name } else { format!("{path}.{name}") };
            let (code, field) = if message.starts_with("unknown field") {
                // The path already ends at the unknown field itself.
                ("UNKNOWN_FIELD", if path == "." { named.unwrap_or(path) } else { path })
            } else if message.starts_with("missing field") {
                ("MISSING_FIELD", named.map(join).unwrap_or(path))
            } else {
                ("INVALID_FIELD", path)
            };
            let detail = message.split(" at line ").next().unwrap_or(&message).to_owned();
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, format!("{field}: {detail}")).with_field(field)
        }
    }
}

/// Query parameters, with a problem response naming the bad parameter.
pub struct StrictQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| StrictQuery(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", rejection.body_text())
            })
    }
}

/// Path parameters, parsed into typed ids by the handler's tuple/struct.
pub struct StrictPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for StrictPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| StrictPath(value))
            .map_err(|rejection: PathRejection| {
                ApiError::new(StatusCode::NOT_FOUND, "INVALID_ID", rejection.body_text())
            })
    }
}

/// The caller, from `Authorization: Bearer <token>`.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(super::lanes::Authenticated(principal)) = parts.extensions.get::<super::lanes::Authenticated>() {
            return Ok(Caller(principal.clone()));
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(crate::error::Error::Unauthenticated)?;
        let request_id = parts.headers.get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned);
        Ok(Caller(state.app.authenticate(presented.trim(), request_id).await?))
    }
}
