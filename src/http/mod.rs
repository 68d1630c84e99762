//! The back-office REST API (axum): routes, middleware, the OpenAPI document. Transport
//! only: handlers parse requests into domain types, call a use case on [`App`], and turn
//! the result or error into a response. No SQL and no business rules live here.

pub mod audit;
pub mod body_rate;
pub mod callbacks;
pub mod client_addr;
pub mod directory;
pub mod disbursement;
pub mod error;
pub mod extract;
pub mod head_limits;
pub mod lanes;
pub mod notifications;
pub mod ops;
pub mod reconciliation;
pub mod schema;
pub mod terminals;
pub mod tokens;
pub mod upload_stream;
pub mod views;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::app::App;
use error::ApiError;

/// Bounds on what one HTTP request, and one connection, may cost; from config.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    /// Back-office requests served at once; more wait briefly, then are refused with 503 and
    /// `Retry-After` rather than queued without bound. The other lanes are in `lanes`.
    pub max_in_flight_requests: usize,
    /// The other lanes, and each caller's share.
    pub lanes: lanes::LaneSettings,
    /// The slowest a request body may arrive.
    pub body_rate: body_rate::BodyRate,
    /// Longest a client may take to send a request's headers (HTTP/1.1), or its first
    /// request once connected.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    pub idle_connection_timeout_ms: u64,
    /// Connections open at once; past it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Proxies believed when they name the client in `X-Forwarded-For`.
    pub trusted_proxies: client_addr::TrustedProxies,
    /// How the web console (`/console`) is served.
    pub console: crate::console::ConsoleSettings,
    /// Longest request target and most header bytes (414 / 431 past them).
    pub head: head_limits::HeadLimits,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_body_bytes: 1024 * 1024,
            request_timeout_ms: 30_000,
            max_in_flight_requests: 512,
            lanes: lanes::LaneSettings::default(),
            body_rate: body_rate::BodyRate::default(),
            header_read_timeout_ms: 10_000,
            idle_connection_timeout_ms: 300_000,
            max_connections: 4_096,
            trusted_proxies: client_addr::TrustedProxies::default(),
            console: crate::console::ConsoleSettings::default(),
            head: head_limits::HeadLimits::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub app: App,
    lanes: Arc<lanes::Lanes>,
    request_timeout: Duration,
    body_rate: body_rate::BodyRate,
    pub trusted_proxies: client_addr::TrustedProxies,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "carepay back-office API",
        description = "Digital-RMB (e-CNY) settlement for elder-care facilities. Amounts are decimal \
                       strings of yuan (\"12.50\"); times are RFC 3339 in Asia/Shanghai; errors are \
                       application/problem+json with a stable `code`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "directory", description = "Regions, organisations and facilities"),
        (name = "audit", description = "The hash-chained audit trail"),
        (name = "terminals", description = "Counter terminals and their signing keys"),
        (name = "tokens", description = "Back-office API tokens"),
        (name = "callbacks", description = "Signed callbacks (Standard Webhooks) to facilities' and offices' systems"),
        (name = "reconciliation", description = "Daily reconciliation against the operator's wallet statements"),
        (name = "disbursement", description = "Subsidy programmes, batch files, four-eyes approval and execution"),
    ),
    components(schemas(error::Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("cpt_...").build()),
        );
    }
}

fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(directory::router())
        .merge(audit::router())
        .merge(terminals::router())
        .merge(tokens::router())
        .merge(callbacks::router())
        .merge(reconciliation::router())
        .merge(disbursement::router())
}

/// The OpenAPI document, generated from the route annotations so it cannot drift.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

pub fn router(app: App, settings: &HttpSettings) -> Router {
    // Install the recorder before the first request so no early sample is lost.
    crate::telemetry::metrics();
    let grpc = crate::grpc::router(app.clone());
    let state = AppState {
        app,
        lanes: Arc::new(lanes::Lanes::new(settings.max_in_flight_requests, &settings.lanes)),
        request_timeout: Duration::from_millis(settings.request_timeout_ms),
        body_rate: settings.body_rate,
        trusted_proxies: settings.trusted_proxies.clone(),
    };
    let (api_router, document) = api().split_for_parts();
    let document = Arc::new(document);
    let openapi_json = axum::routing::get(move || {
        let document = Arc::clone(&document);
        async move { axum::Json(document.as_ref().clone()) }
    });

    let routes: Router = Router::new()
        .merge(api_router)
        .route("/openapi.json", openapi_json)
        .merge(ops::router())
        .merge(notifications::router())
        .merge(crate::console::router(settings.console.clone()))
        .with_state(state.clone());
    routes
        .merge(grpc)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state, lanes::admit))
        .layer(middleware::from_fn(record_metrics))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_panic| {
            tracing::error!("request handler panicked");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "something went wrong on our side")
                .into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id =
                request.headers().get("x-request-id").and_then(|value| value.to_str().ok()).unwrap_or_default();
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(middleware::from_fn_with_state(settings.head, head_limits::bound_head))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NO_SUCH_ROUTE", "no such route; see /openapi.json")
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| String::from("unmatched"));
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
