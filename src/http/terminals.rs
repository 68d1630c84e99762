//! Back-office routes for counter terminals: register, list, suspend, resume, rotate key.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::directory::{id_field, name_field};
use super::error::{ApiResult, Problem};
use super::extract::{Caller, StrictJson, StrictPath, StrictQuery};
use super::schema::{CursorText, NameText, PublicKeyText};
use super::views::{Page, TerminalView};
use crate::directory::NewTerminal;
use crate::domain::directory::{PublicKey, TerminalStatus};
use crate::domain::ids::{FacilityId, TerminalId};
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_terminal, list_terminals))
        .routes(routes!(get_terminal))
        .routes(routes!(suspend_terminal))
        .routes(routes!(resume_terminal))
        .routes(routes!(rotate_terminal_key))
}

fn public_key_field(raw: &str) -> Result<PublicKey, Error> {
    PublicKey::parse(raw).map_err(|error| Error::invalid("public_key", "INVALID_PUBLIC_KEY", error))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterTerminal {
    #[schema(value_type = FacilityId)]
    pub facility_id: String,
    #[schema(value_type = NameText, example = "食堂收银台 1")]
    pub label: String,
    /// Base64 of the terminal's raw 32-byte Ed25519 public key.
    #[schema(value_type = PublicKeyText)]
    pub public_key: String,
}

#[utoipa::path(post, path = "/v1/terminals", tag = "terminals", request_body = RegisterTerminal,
    responses((status = 201, body = TerminalView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn register_terminal(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictJson(body): StrictJson<RegisterTerminal>,
) -> ApiResult<(StatusCode, Json<TerminalView>)> {
    let new = NewTerminal {
        facility_id: id_field("facility_id", &body.facility_id, FacilityId::parse)?,
        label: name_field("label", &body.label)?,
        public_key: public_key_field(&body.public_key)?,
    };
    let terminal = state.app.register_terminal(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(terminal.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TerminalListParams {
    /// Only this facility's terminals.
    #[param(value_type = Option<FacilityId>, inline)]
    pub facility_id: Option<String>,
    #[param(value_type = Option<CursorText>, inline)]
    pub after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/terminals", tag = "terminals", params(TerminalListParams),
    responses((status = 200, body = Page<TerminalView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_terminals(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictQuery(params): StrictQuery<TerminalListParams>,
) -> ApiResult<Json<Page<TerminalView>>> {
    let facility =
        params.facility_id.as_deref().map(|raw| id_field("facility_id", raw, FacilityId::parse)).transpose()?;
    let request = super::directory::page_request(params.after, params.limit)?;
    let terminals = state.app.terminals(&caller, facility.as_ref(), &request).await?;
    let limit = state.app.page(&request).limit;
    Ok(Json(Page::new(terminals, limit, |t| t.id.to_string(), TerminalView::from)))
}

#[utoipa::path(get, path = "/v1/terminals/{id}", tag = "terminals", params(("id" = inline(crate::domain::ids::TerminalId), Path)),
    responses((status = 200, body = TerminalView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_terminal(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<TerminalId>,
) -> ApiResult<Json<TerminalView>> {
    Ok(Json(state.app.terminal(&caller, &id).await?.into()))
}

/// Stop a terminal transacting at once; its signed requests are refused until resumed.
#[utoipa::path(post, path = "/v1/terminals/{id}/suspend", tag = "terminals", params(("id" = inline(crate::domain::ids::TerminalId), Path)),
    responses((status = 200, body = TerminalView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn suspend_terminal(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<TerminalId>,
) -> ApiResult<Json<TerminalView>> {
    Ok(Json(state.app.set_terminal_status(&caller, &id, TerminalStatus::Suspended).await?.into()))
}

#[utoipa::path(post, path = "/v1/terminals/{id}/resume", tag = "terminals", params(("id" = inline(crate::domain::ids::TerminalId), Path)),
    responses((status = 200, body = TerminalView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn resume_terminal(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<TerminalId>,
) -> ApiResult<Json<TerminalView>> {
    Ok(Json(state.app.set_terminal_status(&caller, &id, TerminalStatus::Active).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Base64 of the new raw 32-byte Ed25519 public key.
    #[schema(value_type = PublicKeyText)]
    pub public_key: String,
}

/// Replace the terminal's key; the old key is refused from now on and cannot be reused.
#[utoipa::path(post, path = "/v1/terminals/{id}/rotate-key", tag = "terminals", params(("id" = inline(crate::domain::ids::TerminalId), Path)),
    request_body = RotateKey,
    responses((status = 200, body = TerminalView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn rotate_terminal_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<TerminalId>,
    StrictJson(body): StrictJson<RotateKey>,
) -> ApiResult<Json<TerminalView>> {
    let key = public_key_field(&body.public_key)?;
    Ok(Json(state.app.rotate_terminal_key(&caller, &id, key).await?.into()))
}
