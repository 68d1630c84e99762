//! Admission: before any of its body is read, every request is put in a lane by what it is
//! (ops, operator notifications, a terminal, the back office, the console, or
//! unauthenticated), and each lane has its own bound on requests in flight. Within the
//! back-office and terminal lanes each caller (a token, after authentication, which reads
//! only headers; a terminal, by the id it names) has its own share too. So one caller's slow
//! requests use up only its own share, and a full lane never refuses another lane's
//! requests: health checks, notifications and payments go on while the back office is busy.
//!
//! Every admitted body is read under the floor of [`super::body_rate`], and the whole
//! request under the request timeout: a client too slow with its body is answered 408.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::server::NamedService as _;

use super::AppState;
use super::body_rate::RateBody;
use super::client_addr::client_key;
use super::error::ApiError;
use crate::domain::access::Principal;
use crate::domain::ids::TerminalId;
use crate::grpc::envelope::HEADER_TERMINAL_ID;
use crate::rate_limit::{InFlightBudget, InFlightPermit};

/// Bounds of the lanes; from config.
#[derive(Clone, Debug)]
pub struct LaneSettings {
    /// Of the back-office requests in flight (`HttpSettings::max_in_flight_requests`),
    /// requests of one token.
    pub per_token_max_in_flight: u32,
    /// Terminal gRPC requests in flight at once.
    pub terminal_max_in_flight: usize,
    /// Of those, requests of one terminal.
    pub per_terminal_max_in_flight: u32,
    /// Operator notifications being received at once.
    pub notifications_max_in_flight: usize,
    /// Web console requests in flight at once.
    pub console_max_in_flight: usize,
    /// `/healthz`, `/readyz`, `/metrics` in flight at once.
    pub ops_max_in_flight: usize,
    /// Everything else (no credentials: the OpenAPI document, unknown routes, gRPC health
    /// and reflection) in flight at once.
    pub unauthenticated_max_in_flight: usize,
    /// How long a request may wait for a place in a full lane before it is refused (503);
    /// as many may wait as the lane holds.
    pub lane_wait_ms: u64,
}

impl Default for LaneSettings {
    fn default() -> Self {
        LaneSettings {
            per_token_max_in_flight: 32,
            terminal_max_in_flight: 512,
            per_terminal_max_in_flight: 8,
            notifications_max_in_flight: 256,
            console_max_in_flight: 128,
            ops_max_in_flight: 16,
            unauthenticated_max_in_flight: 32,
            lane_wait_ms: 1_000,
        }
    }
}

/// What a request is, for admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ops,
    Notifications,
    Terminal,
    BackOffice,
    Console,
    Unauthenticated,
}

/// One lane: a bounded number in flight, and as many again waiting a bounded time.
#[derive(Debug)]
struct Lane {
    in_flight: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    wait: Duration,
}

impl Lane {
    fn new(max_in_flight: usize, wait: Duration) -> Lane {
        let max_in_flight = max_in_flight.max(1);
        Lane {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            waiting: Arc::new(Semaphore::new(max_in_flight)),
            wait,
        }
    }

    async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() {
            return Some(permit);
        }
        let _waiting = Arc::clone(&self.waiting).try_acquire_owned().ok()?;
        tokio::time::timeout(self.wait, Arc::clone(&self.in_flight).acquire_owned()).await.ok()?.ok()
    }
}

/// The lanes of one server.
#[derive(Debug)]
pub struct Lanes {
    ops: Lane,
    notifications: Lane,
    terminal: Lane,
    back_office: Lane,
    console: Lane,
    unauthenticated: Lane,
    per_token: InFlightBudget,
    per_terminal: InFlightBudget,
}

impl Lanes {
    pub fn new(back_office_max_in_flight: usize, settings: &LaneSettings) -> Lanes {
        let wait = Duration::from_millis(settings.lane_wait_ms);
        Lanes {
            ops: Lane::new(settings.ops_max_in_flight, wait),
            notifications: Lane::new(settings.notifications_max_in_flight, wait),
            terminal: Lane::new(settings.terminal_max_in_flight, wait),
            back_office: Lane::new(back_office_max_in_flight, wait),
            console: Lane::new(settings.console_max_in_flight, wait),
            unauthenticated: Lane::new(settings.unauthenticated_max_in_flight, wait),
            per_token: InFlightBudget::new(settings.per_token_max_in_flight),
            per_terminal: InFlightBudget::new(settings.per_terminal_max_in_flight),
        }
    }

    fn lane(&self, kind: Kind) -> &Lane {
        match kind {
            Kind::Ops => &self.ops,
            Kind::Notifications => &self.notifications,
            Kind::Terminal => &self.terminal,
            Kind::BackOffice => &self.back_office,
            Kind::Console => &self.console,
            Kind::Unauthenticated => &self.unauthenticated,
        }
    }
}

/// The caller the admission step authenticated; the `Caller` extractor takes it from here
/// instead of asking the database again.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Principal);

const TERMINAL_SERVICE: &str =
    <crate::grpc::proto::terminal_service_server::TerminalServiceServer<crate::grpc::terminal::TerminalGrpc>>::NAME;

fn kind_of(request: &Request) -> Kind {
    let path = request.uri().path();
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return Kind::Ops;
    }
    if path == super::notifications::NOTIFICATIONS_PATH {
        return Kind::Notifications;
    }
    if path
        .strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(TERMINAL_SERVICE))
        .is_some_and(|rest| rest.starts_with('/'))
        && terminal_named(request).is_some()
    {
        return Kind::Terminal;
    }
    if path == "/console" || path.starts_with("/console/") {
        return Kind::Console;
    }
    let routed = request.extensions().get::<MatchedPath>().is_some();
    if routed && path.starts_with("/v1/") && bearer(request).is_some() {
        return Kind::BackOffice;
    }
    Kind::Unauthenticated
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ")?.trim())
}

/// The terminal a request says it comes from (checked against its signature later).
fn terminal_named(request: &Request) -> Option<TerminalId> {
    let raw = request.headers().get(HEADER_TERMINAL_ID)?.to_str().ok()?;
    TerminalId::parse(raw).ok()
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// A refusal in the form the client speaks: problem+json, or a gRPC status.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    detail: &'static str,
    grpc: tonic::Code,
    retry_after_s: Option<u32>,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Ops => "ops",
            Kind::Notifications => "notifications",
            Kind::Terminal => "terminal",
            Kind::BackOffice => "back_office",
            Kind::Console => "console",
            Kind::Unauthenticated => "unauthenticated",
        }
    }
}

impl Refusal {
    /// Counted by lane and code, so an operator sees which bound is being met.
    fn answer(self, kind: Kind, grpc: bool) -> Response {
        metrics::counter!("http_admission_refused_total", "lane" => kind.as_str(), "code" => self.code).increment(1);
        self.into_response(grpc)
    }

    fn into_response(self, grpc: bool) -> Response {
        if grpc {
            let status = tonic::Status::new(self.grpc, format!("{}: {}", self.code, self.detail));
            return status.into_http::<Body>().into_response();
        }
        let error = ApiError::new(self.status, self.code, self.detail);
        match self.retry_after_s {
            Some(seconds) => error.with_retry_after(seconds).into_response(),
            None => error.into_response(),
        }
    }
}

const LANE_FULL: Refusal = Refusal {
    status: StatusCode::SERVICE_UNAVAILABLE,
    code: "OVERLOADED",
    detail: "too many requests in flight; retry shortly",
    grpc: tonic::Code::Unavailable,
    retry_after_s: Some(1),
};

const OWN_SHARE_USED: Refusal = Refusal {
    status: StatusCode::TOO_MANY_REQUESTS,
    code: "TOO_MANY_IN_FLIGHT",
    detail: "this caller already has as many requests in flight as it may; retry when one has finished",
    grpc: tonic::Code::ResourceExhausted,
    retry_after_s: Some(1),
};

const BODY_TOO_SLOW: Refusal = Refusal {
    status: StatusCode::REQUEST_TIMEOUT,
    code: "REQUEST_TIMEOUT",
    detail: "the request body arrived too slowly; send it again at a steady pace",
    grpc: tonic::Code::DeadlineExceeded,
    retry_after_s: None,
};

const HANDLER_TOO_SLOW: Refusal = Refusal {
    status: StatusCode::SERVICE_UNAVAILABLE,
    code: "TIMEOUT",
    detail: "the request took too long and was abandoned",
    grpc: tonic::Code::Unavailable,
    retry_after_s: Some(1),
};

/// Admit a request to its lane (and its caller's share), read its body under the floor, and
/// cut it off at the request timeout.
pub async fn admit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let grpc = is_grpc(&request);
    let kind = kind_of(&request);
    // A caller's share is taken before a place in the lane, so requests over their caller's
    // share never hold one, not even while they wait.
    let _share: Option<InFlightPermit> = match kind {
        Kind::BackOffice => {
            let principal = match authenticate(&state, &request).await {
                Ok(principal) => principal,
                Err(refused) => return refused.into_response(),
            };
            let Some(share) = state.lanes.per_token.try_acquire(principal.token_id.as_str()) else {
                return OWN_SHARE_USED.answer(kind, grpc);
            };
            request.extensions_mut().insert(Authenticated(principal));
            Some(share)
        }
        Kind::Terminal => {
            let terminal = terminal_named(&request).map(|id| id.as_str().to_owned()).unwrap_or_default();
            let Some(share) = state.lanes.per_terminal.try_acquire(&terminal) else {
                return OWN_SHARE_USED.answer(kind, grpc);
            };
            Some(share)
        }
        Kind::Ops | Kind::Notifications | Kind::Console | Kind::Unauthenticated => None,
    };
    let Some(_in_lane) = state.lanes.lane(kind).enter().await else {
        return LANE_FULL.answer(kind, grpc);
    };
    let (parts, body) = request.into_parts();
    let (body, watch) = RateBody::wrap(body, state.body_rate);
    let request = Request::from_parts(parts, body);
    let refusal = match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) if !watch.too_slow() => return response,
        // Whatever the handler made of the failed read, the client's slowness is the answer.
        Ok(_) => BODY_TOO_SLOW,
        Err(_) if watch.waiting_on_client() => BODY_TOO_SLOW,
        Err(_) => HANDLER_TOO_SLOW,
    };
    let too_slow = refusal.status == StatusCode::REQUEST_TIMEOUT;
    let mut response = refusal.answer(kind, grpc);
    if too_slow {
        // The rest of the body is never read: the connection cannot carry another request.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Authenticate a bearer token from its headers alone, counting failures against the
/// client's sign-in throttle.
fn authenticate(state: &AppState, request: &Request) -> impl Future<Output = Result<Principal, ApiError>> + Send {
    let client = client_key(state.trusted_proxies.client_of(request));
    let presented = bearer(request).unwrap_or_default().to_owned();
    let request_id = request.headers().get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let app = state.app.clone();
    async move { Ok(app.sign_in_with_token(&client, &presented, request_id).await?) }
}
