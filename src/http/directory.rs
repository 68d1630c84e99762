//! Back-office routes for the region tree, organisations and facilities.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Caller, StrictJson, StrictPath, StrictQuery};
use super::schema::{CursorText, NameText};
use super::views::{FacilityView, OrganisationView, Page, RegionView};
use crate::directory::{FacilityChange, NewFacility, NewOrganisation, NewRegion, PageRequest};
use crate::domain::directory::{FacilityKind, Name, RegionLevel, WalletId};
use crate::domain::ids::{Cursor, FacilityId, OrganisationId, RegionId};
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_region, list_regions))
        .routes(routes!(get_region))
        .routes(routes!(create_organisation, list_organisations))
        .routes(routes!(get_organisation))
        .routes(routes!(create_facility, list_facilities))
        .routes(routes!(get_facility, change_facility))
}

/// `?after=<id>&limit=<n>` on every listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Return items after this id (the previous page's `next_after`).
    #[param(value_type = Option<CursorText>, inline)]
    pub after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

impl ListParams {
    pub fn page(self) -> Result<PageRequest, ApiError> {
        page_request(self.after, self.limit)
    }
}

/// The largest page a listing returns; also the bound `limit` is checked against.
pub const MAX_PAGE_SIZE: u32 = 200;

/// A page request from `after` and `limit` query parameters; a `limit` outside 1 to 200 is
/// refused rather than silently changed, and so is a cursor no page ever handed out.
pub fn page_request(after: Option<String>, limit: Option<u32>) -> Result<PageRequest, ApiError> {
    let limit = page_limit(limit)?;
    let after = after.as_deref().map(cursor_param).transpose()?;
    Ok(PageRequest { after, limit })
}

/// A `limit` query parameter: 1 to [`MAX_PAGE_SIZE`].
pub fn page_limit(limit: Option<u32>) -> Result<Option<u32>, ApiError> {
    if limit.is_some_and(|limit| !(1..=MAX_PAGE_SIZE).contains(&limit)) {
        return Err(query_error("limit", format!("must be between 1 and {MAX_PAGE_SIZE}")));
    }
    Ok(limit)
}

/// An `after` query parameter: a cursor as [`Cursor::parse`] reads it.
pub fn cursor_param(raw: &str) -> Result<Cursor, ApiError> {
    Cursor::parse(raw).map_err(|error| query_error("after", error.to_string()))
}

/// A query parameter that is present but not of its form: 400, naming it.
pub fn query_error(field: &'static str, detail: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", format!("{field}: {detail}")).with_field(field)
}

pub(crate) fn name_field(field: &str, raw: &str) -> Result<Name, Error> {
    Name::parse(raw).map_err(|error| Error::invalid(field, "INVALID_NAME", error))
}

pub(crate) fn id_field<T>(
    field: &str,
    raw: &str,
    parse: impl Fn(&str) -> Result<T, crate::domain::ids::IdError>,
) -> Result<T, Error> {
    parse(raw).map_err(|error| Error::invalid(field, "INVALID_ID", error))
}

/// A district (no parent; needs an all-regions token), or a town under a district or a
/// village under a town.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRegion {
    pub parent_id: Option<String>,
    pub level: RegionLevel,
    pub name: String,
}

impl utoipa::PartialSchema for CreateRegion {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use super::schema::{object, one_of, reference, strings};
        one_of([
            object()
                .description(Some("A district: the top of the tree, without a parent."))
                .property("parent_id", super::schema::null())
                .property("level", strings(["district"]))
                .property("name", reference::<NameText>())
                .required("level")
                .required("name"),
            object()
                .description(Some("A town under a district, or a village under a town."))
                .property("parent_id", reference::<RegionId>())
                .property("level", strings(["town", "village"]))
                .property("name", reference::<NameText>())
                .required("parent_id")
                .required("level")
                .required("name"),
        ])
    }
}

impl ToSchema for CreateRegion {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        super::schema::register::<NameText>(schemas);
        super::schema::register::<RegionId>(schemas);
    }
}

#[utoipa::path(post, path = "/v1/regions", tag = "directory", request_body = CreateRegion,
    responses((status = 201, body = RegionView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn create_region(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictJson(body): StrictJson<CreateRegion>,
) -> ApiResult<(StatusCode, Json<RegionView>)> {
    let new = NewRegion {
        parent_id: body.parent_id.as_deref().map(|raw| id_field("parent_id", raw, RegionId::parse)).transpose()?,
        level: body.level,
        name: name_field("name", &body.name)?,
    };
    let region = state.app.create_region(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(region.into())))
}

#[utoipa::path(get, path = "/v1/regions", tag = "directory", params(ListParams),
    responses((status = 200, body = Page<RegionView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_regions(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictQuery(params): StrictQuery<ListParams>,
) -> ApiResult<Json<Page<RegionView>>> {
    let request = params.page()?;
    let regions = state.app.regions(&caller, &request).await?;
    let limit = state.app.page(&request).limit;
    Ok(Json(Page::new(regions, limit, |r| r.id.to_string(), RegionView::from)))
}

#[utoipa::path(get, path = "/v1/regions/{id}", tag = "directory", params(("id" = inline(RegionId), Path)),
    responses((status = 200, body = RegionView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_region(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<RegionId>,
) -> ApiResult<Json<RegionView>> {
    Ok(Json(state.app.region(&caller, &id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganisation {
    #[schema(value_type = RegionId)]
    pub region_id: String,
    #[schema(value_type = NameText, example = "吴江颐家养老服务有限公司")]
    pub name: String,
}

#[utoipa::path(post, path = "/v1/organisations", tag = "directory", request_body = CreateOrganisation,
    responses((status = 201, body = OrganisationView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn create_organisation(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictJson(body): StrictJson<CreateOrganisation>,
) -> ApiResult<(StatusCode, Json<OrganisationView>)> {
    let new = NewOrganisation {
        region_id: id_field("region_id", &body.region_id, RegionId::parse)?,
        name: name_field("name", &body.name)?,
    };
    let organisation = state.app.create_organisation(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(organisation.into())))
}

#[utoipa::path(get, path = "/v1/organisations", tag = "directory", params(ListParams),
    responses((status = 200, body = Page<OrganisationView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_organisations(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictQuery(params): StrictQuery<ListParams>,
) -> ApiResult<Json<Page<OrganisationView>>> {
    let request = params.page()?;
    let organisations = state.app.organisations(&caller, &request).await?;
    let limit = state.app.page(&request).limit;
    Ok(Json(Page::new(organisations, limit, |o| o.id.to_string(), OrganisationView::from)))
}

#[utoipa::path(get, path = "/v1/organisations/{id}", tag = "directory", params(("id" = inline(OrganisationId), Path)),
    responses((status = 200, body = OrganisationView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_organisation(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<OrganisationId>,
) -> ApiResult<Json<OrganisationView>> {
    Ok(Json(state.app.organisation(&caller, &id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFacility {
    #[schema(value_type = RegionId)]
    pub region_id: String,
    #[schema(value_type = Option<OrganisationId>)]
    pub organisation_id: Option<String>,
    #[schema(value_type = NameText, example = "松陵镇中心敬老院")]
    pub name: String,
    pub kind: FacilityKind,
    /// The facility's e-CNY merchant wallet: 16 digits.
    #[schema(value_type = super::schema::WalletIdText)]
    pub merchant_wallet_id: String,
}

#[utoipa::path(post, path = "/v1/facilities", tag = "directory", request_body = CreateFacility,
    responses((status = 201, body = FacilityView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn create_facility(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictJson(body): StrictJson<CreateFacility>,
) -> ApiResult<(StatusCode, Json<FacilityView>)> {
    let new = NewFacility {
        region_id: id_field("region_id", &body.region_id, RegionId::parse)?,
        organisation_id: body
            .organisation_id
            .as_deref()
            .map(|raw| id_field("organisation_id", raw, OrganisationId::parse))
            .transpose()?,
        name: name_field("name", &body.name)?,
        kind: body.kind,
        merchant_wallet_id: WalletId::parse(&body.merchant_wallet_id)
            .map_err(|error| Error::invalid("merchant_wallet_id", "INVALID_WALLET_ID", error))?,
    };
    let facility = state.app.create_facility(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(facility.into())))
}

#[utoipa::path(get, path = "/v1/facilities", tag = "directory", params(ListParams),
    responses((status = 200, body = Page<FacilityView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_facilities(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictQuery(params): StrictQuery<ListParams>,
) -> ApiResult<Json<Page<FacilityView>>> {
    let request = params.page()?;
    let facilities = state.app.facilities(&caller, &request).await?;
    let limit = state.app.page(&request).limit;
    Ok(Json(Page::new(facilities, limit, |f| f.id.to_string(), FacilityView::from)))
}

#[utoipa::path(get, path = "/v1/facilities/{id}", tag = "directory", params(("id" = inline(FacilityId), Path)),
    responses((status = 200, body = FacilityView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_facility(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<FacilityId>,
) -> ApiResult<Json<FacilityView>> {
    Ok(Json(state.app.facility(&caller, &id).await?.into()))
}

/// Fields to change; omitted fields stay as they are. `organisation_id: null` detaches
/// the facility from its organisation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeFacility {
    #[schema(value_type = Option<NameText>)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<OrganisationId>)]
    pub organisation_id: Option<Option<String>>,
}

/// Tell `"field": null` (Some(None)) apart from an absent field (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[utoipa::path(patch, path = "/v1/facilities/{id}", tag = "directory", params(("id" = inline(FacilityId), Path)),
    request_body = ChangeFacility,
    responses((status = 200, body = FacilityView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn change_facility(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<FacilityId>,
    StrictJson(body): StrictJson<ChangeFacility>,
) -> ApiResult<Json<FacilityView>> {
    let change = FacilityChange {
        name: body.name.as_deref().map(|raw| name_field("name", raw)).transpose()?,
        organisation_id: body
            .organisation_id
            .map(|inner| {
                inner.as_deref().map(|raw| id_field("organisation_id", raw, OrganisationId::parse)).transpose()
            })
            .transpose()?,
    };
    Ok(Json(state.app.change_facility(&caller, &id, change).await?.into()))
}
