//! Back-office routes for API tokens: issue (secret shown once), list, inspect, revoke.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::directory::{ListParams, id_field, name_field};
use super::error::{ApiResult, Problem};
use super::extract::{Caller, StrictJson, StrictPath, StrictQuery};
use super::schema::NameText;
use super::views::{IssuedTokenView, Page, TokenView};
use crate::access::NewToken;
use crate::domain::ids::{RegionId, TokenId};
use crate::domain::role::Role;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(issue_token, list_tokens)).routes(routes!(get_token, revoke_token))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    pub role: Role,
    /// Confine the token to this region and below. Required unless the caller itself sees
    /// every region.
    #[schema(value_type = Option<RegionId>)]
    pub region_id: Option<String>,
    #[schema(value_type = NameText, example = "张会计的工作站")]
    pub label: String,
    /// Days until the token expires (1 to 3650); omit for a token that does not expire.
    #[schema(minimum = 1, maximum = 3650)]
    pub lifetime_days: Option<u32>,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = IssueToken,
    responses((status = 201, body = IssuedTokenView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn issue_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictJson(body): StrictJson<IssueToken>,
) -> ApiResult<(StatusCode, Json<IssuedTokenView>)> {
    let new = NewToken {
        role: body.role,
        scope_region_id: body
            .region_id
            .as_deref()
            .map(|raw| id_field("region_id", raw, RegionId::parse))
            .transpose()?,
        label: name_field("label", &body.label)?,
        lifetime_days: body.lifetime_days,
    };
    let issued = state.app.issue_token(&caller, new).await?;
    let view = IssuedTokenView { secret: issued.secret.expose().to_owned(), token: issued.token.into() };
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", params(ListParams),
    responses((status = 200, body = Page<TokenView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_tokens(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictQuery(params): StrictQuery<ListParams>,
) -> ApiResult<Json<Page<TokenView>>> {
    let request = params.page()?;
    let tokens = state.app.tokens(&caller, &request).await?;
    let limit = state.app.page(&request).limit;
    Ok(Json(Page::new(tokens, limit, |t| t.id.to_string(), TokenView::from)))
}

#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = inline(crate::domain::ids::TokenId), Path)),
    responses((status = 200, body = TokenView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<TokenId>,
) -> ApiResult<Json<TokenView>> {
    Ok(Json(state.app.token(&caller, &id).await?.into()))
}

/// Revoke a token: every instance refuses it from the next request on.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = inline(crate::domain::ids::TokenId), Path)),
    responses((status = 200, body = TokenView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn revoke_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<TokenId>,
) -> ApiResult<Json<TokenView>> {
    Ok(Json(state.app.revoke_token(&caller, &id).await?.into()))
}
