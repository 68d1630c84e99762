//! Bounds on a request's head. hyper refuses a head past its own buffer (400 KiB) or a URI
//! past 64 KiB with an empty 431 or 414 of its own; carepay's bounds sit below those, so a
//! client that sends too much is told so in a problem document like every other refusal.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// hyper's own limit on a request target (`u16::MAX - 1`); ours must stay below it.
pub const HYPER_MAX_URI_BYTES: usize = 65_534;
/// hyper's own read buffer for an HTTP/1 head (8 KiB + 400 KiB); ours must stay below it.
pub const HYPER_MAX_HEAD_BYTES: usize = 8_192 + 4_096 * 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request target (path and query), in bytes; beyond it, 414.
    pub max_uri_bytes: usize,
    /// Most bytes of header names and values together; beyond it, 431.
    pub max_header_bytes: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits { max_uri_bytes: 8_192, max_header_bytes: 65_536 }
    }
}

pub async fn bound_head(State(limits): State<HeadLimits>, request: Request, next: Next) -> Response {
    let uri_bytes = request.uri().path_and_query().map_or(0, |target| target.as_str().len());
    if uri_bytes > limits.max_uri_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("the request target is {uri_bytes} bytes; at most {} are accepted", limits.max_uri_bytes),
        )
        .into_response();
    }
    // As HTTP/1.1 sends them: name, ": ", value, CRLF.
    let header_bytes: usize =
        request.headers().iter().map(|(name, value)| name.as_str().len() + value.as_bytes().len() + 4).sum();
    if header_bytes > limits.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            format!("the request headers are {header_bytes} bytes; at most {} are accepted", limits.max_header_bytes),
        )
        .into_response();
    }
    next.run(request).await
}
