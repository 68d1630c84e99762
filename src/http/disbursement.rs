//! Back-office routes for subsidy disbursement: programmes, batch upload (raw CSV body),
//! four-eyes approval, run/pause/cancel, progress, lines, re-issue and the result file.

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::directory::{id_field, name_field, page_limit};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Caller, StrictJson, StrictPath, StrictQuery};
use super::schema::{AmountText, DateText, NameText, NonZeroAmountText, PayeeNameText, PeriodText, WalletIdText};
use super::upload_stream::{self, SpoolError};
use crate::disbursement::{NewProgramme, Rejection, Upload, UploadRequest};
use crate::domain::batch::{Batch, BatchStatus, BatchStep, Line, LineStatus, Period, Programme, Progress};
use crate::domain::directory::WalletId;
use crate::domain::disbursement::{Column, ControlTotals};
use crate::domain::ids::{BatchId, ProgrammeId, RegionId};
use crate::domain::money::Amount;
use crate::domain::text::{self, FreeText};
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_programme))
        .routes(routes!(get_programme))
        // The file's size is bounded by the disbursement setting inside the handler, not by
        // the JSON body limit every other route has.
        .merge(OpenApiRouter::new().routes(routes!(upload_batch)).layer(DefaultBodyLimit::disable()))
        .routes(routes!(get_batch))
        .routes(routes!(batch_history))
        .routes(routes!(batch_lines))
        .routes(routes!(approve_batch))
        .routes(routes!(run_batch))
        .routes(routes!(pause_batch))
        .routes(routes!(cancel_batch))
        .routes(routes!(reissue_line))
        .routes(routes!(reveal_citizen_id))
        .routes(routes!(batch_result))
}

fn amount_field(field: &str, raw: &str) -> Result<Amount, Error> {
    Amount::parse(raw).map_err(|error| Error::invalid(field, error.code(), error))
}

fn wallet_field(field: &str, raw: &str) -> Result<WalletId, Error> {
    WalletId::parse(raw).map_err(|_| Error::invalid(field, "INVALID_WALLET_ID", "a wallet id is 16 digits"))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProgramme {
    /// The owning subsidy office (a region node).
    #[schema(value_type = RegionId)]
    pub region_id: String,
    #[schema(value_type = NameText, example = "2026 高龄津贴")]
    pub name: String,
    /// The funding wallet transfers are paid from (16 digits).
    #[schema(value_type = WalletIdText)]
    pub funding_wallet_id: String,
    #[schema(value_type = NonZeroAmountText, example = "1000000.00")]
    pub budget: String,
    #[schema(value_type = NonZeroAmountText, example = "500.00")]
    pub per_payment_cap: String,
    #[schema(value_type = NonZeroAmountText, example = "500.00")]
    pub per_period_cap: String,
    /// Merchant wallets the money may be spent at (e.g. designated canteens); empty for any.
    #[serde(default)]
    #[schema(value_type = Vec<WalletIdText>)]
    pub designated_merchants: Vec<String>,
    #[schema(value_type = DateText, example = "2026-01-01")]
    pub starts_on: String,
    /// On or after `starts_on`.
    #[schema(value_type = DateText, example = "2026-12-31")]
    pub ends_on: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProgrammeView {
    pub id: String,
    pub region_id: String,
    pub name: String,
    pub funding_wallet_id: String,
    #[schema(value_type = String, example = "300.00")]
    pub budget: Amount,
    /// Reserved by approved batches, less what definitely failed.
    #[schema(value_type = String, example = "300.00")]
    pub committed: Amount,
    #[schema(value_type = String, example = "300.00")]
    pub per_payment_cap: Amount,
    #[schema(value_type = String, example = "300.00")]
    pub per_period_cap: Amount,
    /// Designated merchants (purpose restriction), shown to the operator side.
    pub designated_merchants: Vec<String>,
    pub starts_on: String,
    pub ends_on: String,
}

impl From<Programme> for ProgrammeView {
    fn from(p: Programme) -> Self {
        ProgrammeView {
            id: p.id.into_string(),
            region_id: p.region_id.into_string(),
            name: p.name,
            funding_wallet_id: p.funding_wallet_id.as_str().to_owned(),
            budget: p.budget,
            committed: p.committed,
            per_payment_cap: p.per_payment_cap,
            per_period_cap: p.per_period_cap,
            designated_merchants: p.designated_merchants.iter().map(|w| w.as_str().to_owned()).collect(),
            starts_on: p.starts_on,
            ends_on: p.ends_on,
        }
    }
}

/// Create a subsidy programme (admin) and book its budget.
#[utoipa::path(post, path = "/v1/subsidy-programmes", tag = "disbursement", request_body = CreateProgramme,
    responses((status = 201, body = ProgrammeView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn create_programme(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictJson(body): StrictJson<CreateProgramme>,
) -> ApiResult<(StatusCode, Json<ProgrammeView>)> {
    let designated_merchants = body
        .designated_merchants
        .iter()
        .map(|raw| wallet_field("designated_merchants", raw))
        .collect::<Result<_, _>>()?;
    let new = NewProgramme {
        region_id: id_field("region_id", &body.region_id, RegionId::parse)?,
        name: name_field("name", &body.name)?,
        funding_wallet_id: wallet_field("funding_wallet_id", &body.funding_wallet_id)?,
        budget: amount_field("budget", &body.budget)?,
        per_payment_cap: amount_field("per_payment_cap", &body.per_payment_cap)?,
        per_period_cap: amount_field("per_period_cap", &body.per_period_cap)?,
        designated_merchants,
        starts_on: body.starts_on,
        ends_on: body.ends_on,
    };
    let programme = state.app.create_programme(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(programme.into())))
}

#[derive(Deserialize)]
struct ProgrammePath {
    id: String,
}

#[utoipa::path(get, path = "/v1/subsidy-programmes/{id}", tag = "disbursement",
    params(("id" = inline(ProgrammeId), Path)),
    responses((status = 200, body = ProgrammeView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_programme(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<ProgrammePath>,
) -> ApiResult<Json<ProgrammeView>> {
    let id = ProgrammeId::parse(&path.id).map_err(|_| Error::OutOfScope)?;
    Ok(Json(state.app.programme(&caller, &id).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    /// The month paid for, `YYYY-MM`, within the programme's dates.
    #[param(value_type = PeriodText, inline)]
    pub period: String,
    /// Control total: the number of beneficiary lines in the file.
    pub line_count: u64,
    /// Control total: the sum of the amounts, yuan.
    #[param(value_type = AmountText, inline)]
    pub total: String,
}

/// What an `Idempotency-Key` may be: printable ASCII, 1 to 128 characters, no space at either
/// end (HTTP drops those).
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]([ -~]{0,126}[!-~])?$";

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, Error> {
    let raw = headers.get("idempotency-key").ok_or_else(|| {
        Error::invalid("Idempotency-Key", "IDEMPOTENCY_KEY_REQUIRED", "send an Idempotency-Key header")
    })?;
    let bytes = raw.as_bytes();
    let printable = |b: &u8| (0x20..=0x7e).contains(b);
    let shaped = (1..=128).contains(&bytes.len())
        && bytes.iter().all(printable)
        && bytes.first().is_some_and(|b| *b != b' ')
        && bytes.last().is_some_and(|b| *b != b' ');
    if !shaped {
        return Err(Error::invalid(
            "Idempotency-Key",
            "INVALID_IDEMPOTENCY_KEY",
            "1 to 128 printable ASCII characters, no space at either end",
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

#[derive(Serialize, ToSchema)]
pub struct TallyView {
    pub lines: u64,
    #[schema(value_type = String, example = "300.00")]
    pub amount: Amount,
}

#[derive(Serialize, ToSchema)]
pub struct ProgressView {
    pub pending: TallyView,
    pub sending: TallyView,
    pub succeeded: TallyView,
    pub failed: TallyView,
    /// Paid, then sent back by the operator (the funding wallet's statement); may be re-issued.
    pub returned: TallyView,
}

impl From<&Progress> for ProgressView {
    fn from(p: &Progress) -> Self {
        let tally = |t: &crate::domain::batch::StateTally| TallyView {
            lines: t.lines,
            amount: Amount::from_fen(t.amount_fen).unwrap_or(Amount::ZERO),
        };
        ProgressView {
            pending: tally(&p.pending),
            sending: tally(&p.sending),
            succeeded: tally(&p.succeeded),
            failed: tally(&p.failed),
            returned: tally(&p.returned),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct BatchView {
    pub id: String,
    pub programme_id: String,
    pub period: String,
    pub status: BatchStatus,
    pub uploaded_by: String,
    pub encoding: crate::domain::disbursement::BatchEncoding,
    pub line_count: u64,
    #[schema(value_type = String, example = "300.00")]
    pub total: Amount,
    pub upload_sha256: String,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
}

fn batch_view(batch: Batch, progress: Option<&Progress>) -> BatchView {
    BatchView {
        id: batch.id.into_string(),
        programme_id: batch.programme_id.into_string(),
        period: batch.period.as_str().to_owned(),
        status: batch.status,
        uploaded_by: batch.uploaded_by.into_string(),
        encoding: batch.encoding,
        line_count: batch.line_count,
        total: batch.total,
        upload_sha256: batch.upload_sha256,
        version: batch.version,
        progress: progress.map(ProgressView::from),
    }
}

#[derive(Serialize, ToSchema)]
pub struct FileErrorView {
    /// 1-based line of the file (the header is line 1); absent for problems of the whole file.
    pub line: Option<u64>,
    pub column: Option<Column>,
    pub code: &'static str,
    pub message: String,
}

/// A refused batch file: problem+json with every problem counted and the first ones listed.
#[derive(Serialize, ToSchema)]
pub struct BatchRejectedView {
    pub title: &'static str,
    pub status: u16,
    #[schema(example = "BATCH_FILE_INVALID")]
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FileErrorView>,
    /// Every problem found in the file.
    pub errors_total: u64,
    /// At most this many are listed in `errors`.
    pub errors_listed_limit: usize,
}

/// Why an upload was refused with 422: the file's problems, or (as on every route) one field
/// of the request (`period`, `Idempotency-Key`, ...).
pub struct UploadRefusal;

impl utoipa::PartialSchema for UploadRefusal {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use super::schema::reference;
        let any_of = utoipa::openapi::schema::AnyOfBuilder::new()
            .item(reference::<BatchRejectedView>())
            .item(reference::<Problem>())
            .build();
        utoipa::openapi::schema::Schema::AnyOf(any_of).into()
    }
}

impl ToSchema for UploadRefusal {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        super::schema::register::<BatchRejectedView>(schemas);
        super::schema::register::<Problem>(schemas);
    }
}

fn rejected_response(rejection: Rejection) -> Response {
    let listed = rejection.errors.len();
    let view = BatchRejectedView {
        title: "Unprocessable Entity",
        status: 422,
        code: "BATCH_FILE_INVALID",
        detail: format!(
            "the file has {} problem(s); {listed} listed (at most {}); nothing was stored",
            rejection.total, rejection.limit
        ),
        errors: rejection
            .errors
            .into_iter()
            .map(|e| FileErrorView {
                line: e.line,
                column: e.column,
                code: e.problem.code(),
                message: e.problem.to_string(),
            })
            .collect(),
        errors_total: rejection.total,
        errors_listed_limit: rejection.limit,
    };
    let mut response = (StatusCode::UNPROCESSABLE_ENTITY, Json(view)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

/// Upload a batch file (subsidy clerk). The body is the CSV file itself (UTF-8 with or
/// without BOM, or GB18030); `Idempotency-Key` makes a repeated upload return the same batch.
/// Any problem refuses the whole file (422 with every problem counted) and stores nothing.
#[utoipa::path(post, path = "/v1/subsidy-programmes/{id}/batches", tag = "disbursement",
    params(("id" = inline(ProgrammeId), Path), UploadParams,
           ("Idempotency-Key" = String, Header, description = "client-chosen, unique per uploader",
            pattern = "^[!-~]([ -~]{0,126}[!-~])?$")),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 201, body = BatchView), (status = 422, body = UploadRefusal, content_type = "application/problem+json"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn upload_batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<ProgrammePath>,
    StrictQuery(params): StrictQuery<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let programme_id = ProgrammeId::parse(&path.id).map_err(|_| Error::OutOfScope)?;
    let idempotency_key = idempotency_key(&headers)?;
    let request = UploadRequest {
        programme_id,
        period: Period::parse(&params.period).map_err(|e| Error::invalid("period", "INVALID_PERIOD", e))?,
        idempotency_key,
        stated: ControlTotals { line_count: params.line_count, total: amount_field("total", &params.total)? },
    };
    let limit = usize::try_from(state.app.disbursement.max_upload_bytes).unwrap_or(usize::MAX);
    // The whole file is on disk before the upload's transaction begins: however slowly the
    // client sends it, the database is written for as long as the parse takes.
    let file = upload_stream::spool(body.into_data_stream(), limit).await.map_err(spool_refusal)?;
    let uploaded = state.app.upload_batch(&caller, request, file).await;
    match uploaded? {
        Upload::Accepted(batch) => Ok((StatusCode::CREATED, Json(batch_view(batch, None))).into_response()),
        Upload::Rejected(rejection) => Ok(rejected_response(rejection)),
    }
}

/// A file that could not be spooled, as the client is told.
fn spool_refusal(error: SpoolError) -> ApiError {
    match error {
        // Whatever the cut-off file looked like, the answer is that it was too large.
        SpoolError::TooLarge { limit_bytes } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "FILE_TOO_LARGE",
            format!("a batch file is at most {limit_bytes} bytes"),
        ),
        SpoolError::Body(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "FILE_INCOMPLETE", "the file did not arrive whole; send it again")
        }
        SpoolError::Disk(error) => Error::Internal(error.into()).into(),
    }
}

#[derive(Deserialize)]
struct BatchPath {
    id: String,
}

fn batch_id(raw: &str) -> Result<BatchId, Error> {
    // A malformed id names nothing, which is what a scoped caller is told about anything missing.
    BatchId::parse(raw).map_err(|_| Error::OutOfScope)
}

/// A batch with its progress: lines and amounts by state.
#[utoipa::path(get, path = "/v1/subsidy-batches/{id}", tag = "disbursement",
    params(("id" = inline(BatchId), Path)),
    responses((status = 200, body = BatchView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<BatchPath>,
) -> ApiResult<Json<BatchView>> {
    let (batch, progress) = state.app.batch_progress(&caller, &batch_id(&path.id)?).await?;
    Ok(Json(batch_view(batch, Some(&progress))))
}

#[derive(Serialize, ToSchema)]
pub struct StepView {
    pub from: Option<BatchStatus>,
    pub to: BatchStatus,
    /// The token (person) who took the step.
    pub actor: String,
    pub actor_label: String,
    pub at_ms: i64,
}

impl From<BatchStep> for StepView {
    fn from(s: BatchStep) -> Self {
        StepView { from: s.from, to: s.to, actor: s.actor.into_string(), actor_label: s.actor_label, at_ms: s.at.0 }
    }
}

/// Every step of a batch: who moved it, and when.
#[utoipa::path(get, path = "/v1/subsidy-batches/{id}/history", tag = "disbursement",
    params(("id" = inline(BatchId), Path)),
    responses((status = 200, body = Vec<StepView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn batch_history(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<BatchPath>,
) -> ApiResult<Json<Vec<StepView>>> {
    let steps = state.app.batch_history(&caller, &batch_id(&path.id)?).await?;
    Ok(Json(steps.into_iter().map(StepView::from).collect()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LineParams {
    /// Lines after this sequence number (the last `seq` of the previous page).
    #[serde(default)]
    #[param(maximum = 9_223_372_036_854_775_807_u64)]
    pub after: u64,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// One beneficiary line of a batch, as the office sees it (personal data masked).
#[derive(Serialize, ToSchema)]
pub struct BatchLineView {
    pub seq: u64,
    pub file_line: u64,
    /// Masked (`张*`): the full name is in the office's result file.
    pub name: String,
    /// Masked (`110***********1234`).
    pub citizen_id: String,
    pub wallet_id: String,
    #[schema(value_type = String, example = "300.00")]
    pub amount: Amount,
    pub status: LineStatus,
    pub fail_code: Option<String>,
    pub out_transfer_no: String,
    pub transfer_no: Option<String>,
    pub reissue_of_seq: Option<u64>,
    pub reissued_as_seq: Option<u64>,
}

impl From<Line> for BatchLineView {
    fn from(l: Line) -> Self {
        BatchLineView {
            seq: l.seq,
            file_line: l.file_line,
            name: l.name_masked,
            citizen_id: l.citizen_id_masked,
            wallet_id: l.wallet_id.as_str().to_owned(),
            amount: l.amount,
            status: l.status,
            fail_code: l.fail_code,
            out_transfer_no: l.out_transfer_no,
            transfer_no: l.transfer_no,
            reissue_of_seq: l.reissue_of_seq,
            reissued_as_seq: l.reissued_as_seq,
        }
    }
}

/// A page of a batch's lines, in sequence order.
#[utoipa::path(get, path = "/v1/subsidy-batches/{id}/lines", tag = "disbursement",
    params(("id" = inline(BatchId), Path), LineParams),
    responses((status = 200, body = Vec<BatchLineView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn batch_lines(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<BatchPath>,
    StrictQuery(params): StrictQuery<LineParams>,
) -> ApiResult<Json<Vec<BatchLineView>>> {
    let limit = page_limit(params.limit)?.unwrap_or(50);
    if i64::try_from(params.after).is_err() {
        return Err(super::directory::query_error("after", format!("must be at most {}", i64::MAX)));
    }
    let lines = state.app.batch_lines(&caller, &batch_id(&path.id)?, params.after, limit).await?;
    Ok(Json(lines.into_iter().map(BatchLineView::from).collect()))
}

/// Approve a draft (subsidy approver in the programme's region, never the uploader).
#[utoipa::path(post, path = "/v1/subsidy-batches/{id}/approve", tag = "disbursement",
    params(("id" = inline(BatchId), Path)),
    responses((status = 200, body = BatchView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn approve_batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<BatchPath>,
) -> ApiResult<Json<BatchView>> {
    Ok(Json(batch_view(state.app.approve_batch(&caller, &batch_id(&path.id)?).await?, None)))
}

/// Start an approved batch, or resume a paused one.
#[utoipa::path(post, path = "/v1/subsidy-batches/{id}/run", tag = "disbursement",
    params(("id" = inline(BatchId), Path)),
    responses((status = 200, body = BatchView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn run_batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<BatchPath>,
) -> ApiResult<Json<BatchView>> {
    Ok(Json(batch_view(state.app.run_batch(&caller, &batch_id(&path.id)?).await?, None)))
}

/// Pause a running batch: no new transfers start; those sent are still resolved.
#[utoipa::path(post, path = "/v1/subsidy-batches/{id}/pause", tag = "disbursement",
    params(("id" = inline(BatchId), Path)),
    responses((status = 200, body = BatchView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn pause_batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<BatchPath>,
) -> ApiResult<Json<BatchView>> {
    Ok(Json(batch_view(state.app.pause_batch(&caller, &batch_id(&path.id)?).await?, None)))
}

/// Cancel a draft or approved batch (never a running one).
#[utoipa::path(post, path = "/v1/subsidy-batches/{id}/cancel", tag = "disbursement",
    params(("id" = inline(BatchId), Path)),
    responses((status = 200, body = BatchView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn cancel_batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<BatchPath>,
) -> ApiResult<Json<BatchView>> {
    Ok(Json(batch_view(state.app.cancel_batch(&caller, &batch_id(&path.id)?).await?, None)))
}

#[derive(Deserialize)]
struct LinePath {
    id: String,
    seq: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reissue {
    /// The corrected name (the wallet holder's).
    #[schema(value_type = PayeeNameText)]
    pub payee_name: String,
    /// The corrected wallet id (16 digits).
    #[schema(value_type = WalletIdText)]
    pub wallet_id: String,
}

/// Re-issue a failed line after correction: a new line, linked to the old one.
#[utoipa::path(post, path = "/v1/subsidy-batches/{id}/lines/{seq}/reissue", tag = "disbursement",
    params(("id" = inline(BatchId), Path), ("seq" = u64, Path, description = "the failed line")),
    request_body = Reissue,
    responses((status = 201, body = BatchLineView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn reissue_line(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<LinePath>,
    StrictJson(body): StrictJson<Reissue>,
) -> ApiResult<(StatusCode, Json<BatchLineView>)> {
    let payee_name = FreeText::parse(&body.payee_name, text::PAYEE_NAME)
        .map_err(|error| Error::invalid("payee_name", "INVALID_NAME", error))?;
    let wallet = wallet_field("wallet_id", &body.wallet_id)?;
    let line = state.app.reissue_line(&caller, &batch_id(&path.id)?, path.seq, &payee_name, &wallet).await?;
    Ok((StatusCode::CREATED, Json(line.into())))
}

#[derive(Serialize, ToSchema)]
pub struct RevealedCitizenId {
    pub seq: u64,
    /// The citizen ID number in clear. This reveal is recorded in the audit trail.
    #[schema(example = "320584194503150025")]
    pub citizen_id: String,
}

/// Reveal a beneficiary's citizen ID number in clear (subsidy clerk or approver of the
/// programme's office). Every reveal is recorded in the audit trail; the answer must not be
/// cached (`Cache-Control: no-store`).
#[utoipa::path(post, path = "/v1/subsidy-batches/{id}/lines/{seq}/reveal", tag = "disbursement",
    params(("id" = inline(BatchId), Path), ("seq" = u64, Path, description = "the line")),
    responses((status = 200, body = RevealedCitizenId), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn reveal_citizen_id(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<LinePath>,
) -> ApiResult<Response> {
    let citizen_id = state.app.reveal_citizen_id(&caller, &batch_id(&path.id)?, path.seq).await?;
    let mut response = Json(RevealedCitizenId { seq: path.seq, citizen_id }).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The result file: CSV in the encoding the office uploaded, ID numbers masked.
#[utoipa::path(get, path = "/v1/subsidy-batches/{id}/result", tag = "disbursement",
    params(("id" = inline(BatchId), Path)),
    responses((status = 200, body = String, content_type = "text/csv"), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn batch_result(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<BatchPath>,
) -> ApiResult<Response> {
    let mut out = Vec::new();
    let encoding = state.app.write_batch_result(&caller, &batch_id(&path.id)?, &mut out).await?;
    let content_type = match encoding {
        crate::domain::disbursement::BatchEncoding::Gb18030 => "text/csv; charset=GB18030",
        _ => "text/csv; charset=utf-8",
    };
    let mut response = (StatusCode::OK, out).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}
