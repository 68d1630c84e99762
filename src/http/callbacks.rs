//! Back-office routes for callbacks: endpoints (create, read, change, rotate the secret,
//! public key), their deliveries and attempts, and replay. Wire shapes live here too.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::directory::id_field;
use super::error::{ApiResult, Problem};
use super::extract::{Caller, StrictJson, StrictPath, StrictQuery};
use super::schema::CursorText;
use super::views::Page;
use crate::callbacks::endpoints::{EndpointChange, EndpointWithSecret, NewEndpoint};
use crate::domain::callbacks::{
    Attempt, Delivery, DeliveryStatus, DisabledReason, Endpoint, EndpointStatus, EndpointUrl, EventOwner, EventType,
    EventTypes, MAX_URL_LEN, OwnerKind,
};
use crate::domain::ids::{EndpointId, EventId, FacilityId, RegionId};
use crate::domain::time::UnixMs;
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, change_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(public_key))
        .routes(routes!(list_deliveries))
        .routes(routes!(list_attempts))
        .routes(routes!(replay_event))
        .routes(routes!(replay_failed))
}

fn url_field(raw: &str) -> Result<EndpointUrl, Error> {
    if !is_url_text(raw) {
        return Err(Error::invalid(
            "url",
            "INVALID_URL",
            "must be an http:// or https:// URL: a host name or a bracketed IPv6 address, an optional port, then a path or query of \
             printable ASCII without `#`, `@` or spaces",
        ));
    }
    EndpointUrl::parse(raw).map_err(|error| Error::invalid("url", "INVALID_URL", error))
}

/// The shape of an endpoint URL as the document states it ([`URL_PATTERN`]): the scheme, a
/// host name of letters, digits, dots and dashes (perhaps ending in a dot) or an IPv6 literal
/// in brackets, an optional port, then a path or query of
/// printable ASCII without `#` (no fragment), `@` (no credentials) or spaces. What the
/// callback rules then check (a port in range, where the host points) comes on top.
fn is_url_text(raw: &str) -> bool {
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    let Some(rest) = ["http://", "https://"].iter().find(|s| lower.starts_with(**s)).map(|s| &raw[s.len()..]) else {
        return false;
    };
    // An IPv6 literal in brackets, or a name (a fully qualified one may end in a dot).
    let host_end = if rest.starts_with('[') {
        rest.find(']').map_or(rest.len(), |end| end + 1)
    } else {
        rest.find([':', '/', '?']).unwrap_or(rest.len())
    };
    let (host, rest) = rest.split_at(host_end);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(literal) => {
            !literal.is_empty() && literal.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        None => {
            let name = host.strip_suffix('.').unwrap_or(host);
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        }
    };
    let rest = match rest.strip_prefix(':') {
        Some(port_and_rest) => {
            let port_end = port_and_rest.find(['/', '?']).unwrap_or(port_and_rest.len());
            let (port, rest) = port_and_rest.split_at(port_end);
            if !(1..=5).contains(&port.len()) || !port.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            rest
        }
        None => rest,
    };
    let tail_ok = rest.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'#' && b != b'@');
    raw.len() <= MAX_URL_LEN && host_ok && tail_ok
}

/// [`is_url_text`] as a regular expression.
pub const URL_PATTERN: &str = "^[hH][tT][tT][pP]([sS])?://(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\\.?)(:[0-9]{1,5})?([/?][!\"$-?A-~]*)?$";

fn event_types_field(raw: &[String]) -> Result<EventTypes, Error> {
    EventTypes::parse(raw).map_err(|error| Error::invalid("event_types", "INVALID_EVENT_TYPES", error))
}

/// Exactly one of a facility and an office (region) names the owner.
fn owner_field(facility_id: Option<&str>, office_region_id: Option<&str>) -> Result<Option<EventOwner>, Error> {
    match (facility_id, office_region_id) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "office_region_id",
            "AMBIGUOUS_OWNER",
            "give either facility_id or office_region_id, not both",
        )),
        (Some(raw), None) => Ok(Some(EventOwner::Facility(id_field("facility_id", raw, FacilityId::parse)?))),
        (None, Some(raw)) => Ok(Some(EventOwner::Office(id_field("office_region_id", raw, RegionId::parse)?))),
        (None, None) => Ok(None),
    }
}

fn instant_field(field: &str, raw: &str) -> Result<UnixMs, Error> {
    let parsed = OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|_| Error::invalid(field, "INVALID_TIME", "must be an RFC 3339 time with an offset"))?;
    Ok(UnixMs(i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)))
}

#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    #[schema(example = "ep_0192f1ab0192f1ab0192f1ab0192f1ab")]
    pub id: String,
    pub owner_kind: OwnerKind,
    /// The facility (`fac_...`) or subsidy office region (`reg_...`) that owns the endpoint.
    pub owner_id: String,
    #[schema(example = "https://billing.example.cn/carepay/callbacks")]
    pub url: String,
    pub event_types: Vec<EventType>,
    pub status: EndpointStatus,
    /// Why it is disabled: `owner`, `gone` (the receiver answered 410) or `failing`.
    pub disabled_reason: Option<DisabledReason>,
    /// `whpk_...`: verifies the `v1a` signatures, when the endpoint has them.
    pub public_key: Option<String>,
    /// Until when the secret replaced by the last rotation still signs alongside.
    pub previous_secret_until: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: i64,
    pub failing_since: Option<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Endpoint> for EndpointView {
    fn from(endpoint: Endpoint) -> Self {
        EndpointView {
            id: endpoint.id.into_string(),
            owner_kind: endpoint.owner.kind(),
            owner_id: endpoint.owner.id().to_owned(),
            url: endpoint.url.as_str().to_owned(),
            event_types: endpoint.event_types.as_slice().to_vec(),
            status: endpoint.status,
            disabled_reason: endpoint.disabled_reason,
            public_key: endpoint.public_key,
            previous_secret_until: endpoint.previous_secret_until.map(UnixMs::to_rfc3339_shanghai),
            consecutive_failures: endpoint.consecutive_failures,
            failing_since: endpoint.failing_since.map(UnixMs::to_rfc3339_shanghai),
            version: endpoint.version,
            created_at: endpoint.created_at.to_rfc3339_shanghai(),
            updated_at: endpoint.updated_at.to_rfc3339_shanghai(),
        }
    }
}

/// An endpoint with its signing secret: the only time the secret is ever shown.
#[derive(Serialize, ToSchema)]
pub struct EndpointWithSecretView {
    /// `whsec_...`: verifies the `v1` signatures. Store it now; carepay will not show it again.
    pub secret: String,
    pub endpoint: EndpointView,
}

impl From<EndpointWithSecret> for EndpointWithSecretView {
    fn from(issued: EndpointWithSecret) -> Self {
        EndpointWithSecretView { secret: issued.secret.expose_whsec(), endpoint: issued.endpoint.into() }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    /// The event id, sent as `webhook-id`; the same on every attempt and replay.
    pub event_id: String,
    pub event_type: EventType,
    pub object_id: String,
    pub object_version: i64,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub event_created_at: String,
    pub updated_at: String,
}

impl From<Delivery> for DeliveryView {
    fn from(delivery: Delivery) -> Self {
        DeliveryView {
            event_id: delivery.event_id.into_string(),
            event_type: delivery.event_type,
            object_id: delivery.object_id,
            object_version: delivery.object_version,
            status: delivery.status,
            attempts: delivery.attempts,
            next_attempt_at: delivery.next_attempt_at.map(UnixMs::to_rfc3339_shanghai),
            last_status_code: delivery.last_status_code,
            last_error: delivery.last_error,
            event_created_at: delivery.event_created_at.to_rfc3339_shanghai(),
            updated_at: delivery.updated_at.to_rfc3339_shanghai(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    pub id: String,
    pub event_id: String,
    /// 1 for the first attempt; a replay starts again at 1.
    pub attempt: i64,
    pub started_at: String,
    /// Milliseconds since the unix epoch, for precise comparisons.
    pub started_at_ms: i64,
    pub latency_ms: i64,
    /// The receiver's status, absent when no response arrived.
    pub status_code: Option<i64>,
    /// Why no response arrived (`timeout`, `connection failed`, ...).
    pub error: Option<String>,
    /// The start of the receiver's response body.
    pub response_excerpt: String,
    /// When the next attempt is due; absent when this one settled the delivery.
    pub next_attempt_at: Option<String>,
    pub next_attempt_at_ms: Option<i64>,
}

impl From<Attempt> for AttemptView {
    fn from(attempt: Attempt) -> Self {
        AttemptView {
            id: attempt.id.into_string(),
            event_id: attempt.event_id.into_string(),
            attempt: attempt.attempt,
            started_at: attempt.started_at.to_rfc3339_shanghai(),
            started_at_ms: attempt.started_at.0,
            latency_ms: attempt.latency_ms,
            status_code: attempt.status_code,
            error: attempt.error,
            response_excerpt: attempt.response_excerpt,
            next_attempt_at: attempt.next_attempt_at.map(UnixMs::to_rfc3339_shanghai),
            next_attempt_at_ms: attempt.next_attempt_at.map(|at| at.0),
        }
    }
}

/// An endpoint for a facility (`facility_id`) or for a subsidy office (`office_region_id`,
/// its region node): exactly one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    pub facility_id: Option<String>,
    pub office_region_id: Option<String>,
    pub url: String,
    pub event_types: Vec<String>,
    /// Also sign with Ed25519 (`v1a`); the public key is then in the endpoint.
    #[serde(default)]
    pub ed25519: bool,
}

impl utoipa::PartialSchema for CreateEndpoint {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use super::schema::{null, object, one_of, reference};
        let owned_by = |owner: &str, other: &str, id: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            object()
                .property(owner, id)
                .property(other, null())
                .property("url", reference::<UrlText>())
                .property("event_types", event_types_schema())
                .property(
                    "ed25519",
                    utoipa::openapi::schema::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Boolean)
                        .description(Some("Also sign with Ed25519 (`v1a`); the public key is then in the endpoint.")),
                )
                .required(owner)
                .required("url")
                .required("event_types")
        };
        one_of([
            owned_by("facility_id", "office_region_id", reference::<FacilityId>())
                .description(Some("A facility's endpoint.")),
            owned_by("office_region_id", "facility_id", reference::<RegionId>())
                .description(Some("A subsidy office's endpoint (its region node).")),
        ])
    }
}

impl ToSchema for CreateEndpoint {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        super::schema::register::<FacilityId>(schemas);
        super::schema::register::<RegionId>(schemas);
        super::schema::register::<UrlText>(schemas);
        super::schema::register::<EventType>(schemas);
    }
}

/// At least one event type; repeats count once.
fn event_types_schema() -> utoipa::openapi::schema::ArrayBuilder {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(super::schema::reference::<EventType>())
        .min_items(Some(1))
        .examples([serde_json::json!(["payment.succeeded", "refund.succeeded"])])
}

struct UrlText;

impl utoipa::PartialSchema for UrlText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(MAX_URL_LEN))
            .pattern(Some(URL_PATTERN))
            .description(Some(
                "An http:// or https:// URL without credentials or fragment, at most 2048 characters, whose host \
                 resolves to a public address.",
            ))
            .examples(["https://billing.example.cn/carepay/callbacks"])
            .into()
    }
}

impl ToSchema for UrlText {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("EndpointUrl")
    }
}

/// Register an endpoint. The answer carries its `whsec_` secret, shown this once.
#[utoipa::path(post, path = "/v1/callback-endpoints", tag = "callbacks", request_body = CreateEndpoint,
    responses((status = 201, body = EndpointWithSecretView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn create_endpoint(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictJson(body): StrictJson<CreateEndpoint>,
) -> ApiResult<(StatusCode, Json<EndpointWithSecretView>)> {
    let owner = owner_field(body.facility_id.as_deref(), body.office_region_id.as_deref())?
        .ok_or_else(|| Error::invalid("facility_id", "OWNER_REQUIRED", "give facility_id or office_region_id"))?;
    let new = NewEndpoint {
        owner,
        url: url_field(&body.url)?,
        event_types: event_types_field(&body.event_types)?,
        ed25519: body.ed25519,
    };
    let issued = state.app.create_endpoint(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(issued.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EndpointListParams {
    /// Only this facility's endpoints (not with `office_region_id`).
    #[param(value_type = Option<FacilityId>, inline)]
    pub facility_id: Option<String>,
    /// Only this subsidy office's endpoints (not with `facility_id`).
    #[param(value_type = Option<RegionId>, inline)]
    pub office_region_id: Option<String>,
    #[param(value_type = Option<CursorText>, inline)]
    pub after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/callback-endpoints", tag = "callbacks", params(EndpointListParams),
    responses((status = 200, body = Page<EndpointView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_endpoints(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictQuery(params): StrictQuery<EndpointListParams>,
) -> ApiResult<Json<Page<EndpointView>>> {
    let owner = owner_field(params.facility_id.as_deref(), params.office_region_id.as_deref())?;
    let request = super::directory::page_request(params.after, params.limit)?;
    let endpoints = state.app.endpoints(&caller, owner.as_ref(), &request).await?;
    let limit = state.app.page(&request).limit;
    Ok(Json(Page::new(endpoints, limit, |e| e.id.to_string(), EndpointView::from)))
}

#[utoipa::path(get, path = "/v1/callback-endpoints/{id}", tag = "callbacks", params(("id" = inline(EndpointId), Path)),
    responses((status = 200, body = EndpointView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_endpoint(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<EndpointId>,
) -> ApiResult<Json<EndpointView>> {
    Ok(Json(state.app.endpoint(&caller, &id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeEndpoint {
    #[schema(value_type = Option<UrlText>)]
    pub url: Option<String>,
    #[schema(schema_with = optional_event_types)]
    pub event_types: Option<Vec<String>>,
    /// `true` re-enables a disabled endpoint (its failure count starts again); `false`
    /// disables it. Replay what it missed with `replay-failed`.
    pub enabled: Option<bool>,
}

fn optional_event_types() -> utoipa::openapi::schema::Schema {
    use super::schema::null;
    utoipa::openapi::schema::Schema::OneOf(
        utoipa::openapi::schema::OneOfBuilder::new().item(null()).item(event_types_schema()).build(),
    )
}

#[utoipa::path(patch, path = "/v1/callback-endpoints/{id}", tag = "callbacks", params(("id" = inline(EndpointId), Path)),
    request_body = ChangeEndpoint,
    responses((status = 200, body = EndpointView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn change_endpoint(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<EndpointId>,
    StrictJson(body): StrictJson<ChangeEndpoint>,
) -> ApiResult<Json<EndpointView>> {
    let change = EndpointChange {
        url: body.url.as_deref().map(url_field).transpose()?,
        event_types: body.event_types.as_deref().map(event_types_field).transpose()?,
        enabled: body.enabled,
    };
    Ok(Json(state.app.change_endpoint(&caller, &id, change).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the old secret keeps signing alongside the new one (default one day, at
    /// most seven).
    #[schema(minimum = 0, maximum = 604_800)]
    pub overlap_seconds: Option<i64>,
}

/// Replace the `whsec_` secret (shown this once). During the overlap every callback carries
/// both signatures, space-separated, so receivers switch without losing one.
#[utoipa::path(post, path = "/v1/callback-endpoints/{id}/rotate-secret", tag = "callbacks",
    params(("id" = inline(EndpointId), Path)), request_body = RotateSecret,
    responses((status = 200, body = EndpointWithSecretView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn rotate_secret(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<EndpointId>,
    StrictJson(body): StrictJson<RotateSecret>,
) -> ApiResult<Json<EndpointWithSecretView>> {
    let overlap_ms = body.overlap_seconds.map(|seconds| seconds.saturating_mul(1_000));
    Ok(Json(state.app.rotate_endpoint_secret(&caller, &id, overlap_ms).await?.into()))
}

#[derive(Serialize, ToSchema)]
pub struct PublicKeyView {
    /// `whpk_<base64 of the raw Ed25519 public key>`: verifies `v1a` signatures.
    pub public_key: String,
}

#[utoipa::path(get, path = "/v1/callback-endpoints/{id}/public-key", tag = "callbacks", params(("id" = inline(EndpointId), Path)),
    responses((status = 200, body = PublicKeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn public_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<EndpointId>,
) -> ApiResult<Json<PublicKeyView>> {
    let endpoint = state.app.endpoint(&caller, &id).await?;
    let public_key = endpoint.public_key.ok_or(Error::NotFound { what: "public key (the endpoint signs v1 only)" })?;
    Ok(Json(PublicKeyView { public_key }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryListParams {
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryStatus>, inline)]
    pub status: Option<String>,
    #[param(value_type = Option<CursorText>, inline)]
    pub after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// The events sent (or to be sent) to this endpoint and where each stands.
#[utoipa::path(get, path = "/v1/callback-endpoints/{id}/deliveries", tag = "callbacks",
    params(("id" = inline(EndpointId), Path), DeliveryListParams),
    responses((status = 200, body = Page<DeliveryView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<EndpointId>,
    StrictQuery(params): StrictQuery<DeliveryListParams>,
) -> ApiResult<Json<Page<DeliveryView>>> {
    let status = params
        .status
        .as_deref()
        .map(|raw| {
            DeliveryStatus::parse(raw)
                .ok_or_else(|| Error::invalid("status", "INVALID_STATUS", "must be pending, succeeded or failed"))
        })
        .transpose()?;
    let request = super::directory::page_request(params.after, params.limit)?;
    let deliveries = state.app.endpoint_deliveries(&caller, &id, status, &request).await?;
    let limit = state.app.page(&request).limit;
    Ok(Json(Page::new(deliveries, limit, |d| d.event_id.to_string(), DeliveryView::from)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttemptListParams {
    /// Only the attempts of this event.
    #[param(value_type = Option<EventId>, inline)]
    pub event_id: Option<String>,
    #[param(value_type = Option<CursorText>, inline)]
    pub after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// Every HTTP attempt to this endpoint, oldest first: status, latency, response excerpt,
/// next attempt.
#[utoipa::path(get, path = "/v1/callback-endpoints/{id}/attempts", tag = "callbacks",
    params(("id" = inline(EndpointId), Path), AttemptListParams),
    responses((status = 200, body = Page<AttemptView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_attempts(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<EndpointId>,
    StrictQuery(params): StrictQuery<AttemptListParams>,
) -> ApiResult<Json<Page<AttemptView>>> {
    let event = params.event_id.as_deref().map(|raw| id_field("event_id", raw, EventId::parse)).transpose()?;
    let request = super::directory::page_request(params.after, params.limit)?;
    let attempts = state.app.endpoint_attempts(&caller, &id, event.as_ref(), &request).await?;
    let limit = state.app.page(&request).limit;
    Ok(Json(Page::new(attempts, limit, |a| a.id.to_string(), AttemptView::from)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayEvent {
    #[schema(value_type = EventId)]
    pub event_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct ReplayView {
    /// Deliveries queued again.
    pub queued: u64,
}

/// Send one event to this endpoint again (same `webhook-id`, fresh retry schedule).
#[utoipa::path(post, path = "/v1/callback-endpoints/{id}/replay", tag = "callbacks",
    params(("id" = inline(EndpointId), Path)), request_body = ReplayEvent,
    responses((status = 202, body = ReplayView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn replay_event(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<EndpointId>,
    StrictJson(body): StrictJson<ReplayEvent>,
) -> ApiResult<(StatusCode, Json<ReplayView>)> {
    let event = id_field("event_id", &body.event_id, EventId::parse)?;
    let queued = state.app.replay_event(&caller, &id, &event).await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayView { queued: u64::from(queued) })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayFailed {
    /// Replay failed deliveries of events created at or after this time (RFC 3339).
    #[schema(value_type = super::schema::InstantText)]
    pub since: String,
}

/// Queue again every failed delivery to this endpoint since a time.
#[utoipa::path(post, path = "/v1/callback-endpoints/{id}/replay-failed", tag = "callbacks",
    params(("id" = inline(EndpointId), Path)), request_body = ReplayFailed,
    responses((status = 202, body = ReplayView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn replay_failed(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<EndpointId>,
    StrictJson(body): StrictJson<ReplayFailed>,
) -> ApiResult<(StatusCode, Json<ReplayView>)> {
    let since = instant_field("since", &body.since)?;
    let queued = state.app.replay_failed(&caller, &id, since).await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayView { queued })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_pattern_states_exactly_what_the_url_shape_check_accepts() {
        let pattern = regex::Regex::new(URL_PATTERN).unwrap();
        let samples = [
            "https://billing.example.cn/carepay/callbacks",
            "http://127.0.0.1:9/hook",
            "HTTPS://a",
            "https://a.b-c.d:8443?x=1&y=2",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]:8080/",
            "https://[2001:db8::1]",
            "http://[]/",
            "http://[::1/",
            "http://[g::1]/",
            "http://LocalHost./hook",
            "http://a../",
            "http://./",
            "https://a/%20",
            "https://or0>L!Y=",
            "https://user@a/",
            "https://a/#frag",
            "https://a/ b",
            "https://-a/",
            "https://a-/",
            "https://a:/",
            "https://a:123456/",
            "ftp://a/",
            "https://",
            "https://a/\u{0}",
            "https://例子.cn/",
            "http:/a",
        ];
        for sample in samples {
            assert_eq!(pattern.is_match(sample), is_url_text(sample), "{sample:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_url_pattern_and_the_shape_check_agree(raw in "(https?|HTTP)://[a-z0-9.:/?#@\\[\\] -]{0,12}") {
            let pattern = regex::Regex::new(URL_PATTERN).unwrap();
            proptest::prop_assert_eq!(pattern.is_match(&raw), is_url_text(&raw), "{:?}", raw);
        }
    }
}
