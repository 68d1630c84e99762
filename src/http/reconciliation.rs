//! Back-office routes for reconciliation: upload a statement, run a wallet's day, read its
//! summary and line-level result (JSON or CSV), list and resolve discrepancies, close the day.
//! Accountants act, auditors read; a wallet outside the caller's scope is a missing one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiResult, Problem};
use super::extract::{Caller, StrictJson, StrictPath, StrictQuery};
use super::schema::{DateText, NoteText, SignedAmountText, WalletIdText};
use crate::domain::access::Principal;
use crate::domain::directory::{RegionPath, WalletId};
use crate::domain::ids::DiscrepancyId;
use crate::domain::money::Amount;
use crate::domain::reconciliation::{Summary, WalletOwner};
use crate::domain::statement::Yuan;
use crate::domain::text::{self, FreeText};
use crate::error::Error;
use crate::reconciliation::Source;
use crate::store::reconciliation::{Discrepancy, ResultLine, RunRow, StoredFile};

/// Largest upload: a million-line day is about 100 MB as CSV and far less gzipped.
pub const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;
/// Result lines per CSV page read from the store while writing a download.
pub(crate) const CSV_PAGE: u32 = 5_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_statement))
        .routes(routes!(run_day))
        .routes(routes!(get_day))
        .routes(routes!(day_lines))
        .routes(routes!(day_discrepancies))
        .routes(routes!(resolve_discrepancy))
        .routes(routes!(close_day))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
}

#[derive(Serialize, ToSchema)]
pub struct StatementFileView {
    pub id: String,
    pub wallet_id: String,
    pub business_day: String,
    /// 1 for the first file of a wallet's day, then 2, 3, ... for different files.
    pub version: i64,
    pub sha256: String,
    pub source: String,
    pub line_count: u64,
    pub credit_total: String,
    pub debit_total: String,
    pub fee_total: String,
    pub imported_by: String,
    pub imported_at: String,
}

impl From<StoredFile> for StatementFileView {
    fn from(file: StoredFile) -> Self {
        StatementFileView {
            id: file.id.into_string(),
            wallet_id: file.wallet_id,
            business_day: file.business_day,
            version: file.version,
            sha256: file.sha256,
            source: file.source,
            line_count: file.totals.line_count,
            credit_total: Yuan(file.totals.credit_fen).to_string(),
            debit_total: Yuan(file.totals.debit_fen).to_string(),
            fee_total: Yuan(file.totals.fee_fen).to_string(),
            imported_by: file.imported_by,
            imported_at: file.imported_at.to_rfc3339_shanghai(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CategoryView {
    pub category: String,
    pub count: u64,
    /// Signed yuan like the nets: money in positive, refunds and fees negative.
    pub amount: String,
}

#[derive(Serialize, ToSchema)]
pub struct RunView {
    pub run_id: String,
    pub wallet_id: String,
    /// The facility whose merchant wallet it is; absent for a funding wallet.
    pub facility_id: Option<String>,
    /// The programme whose funding wallet it is; absent for a merchant wallet.
    pub programme_id: Option<String>,
    pub business_day: String,
    pub file_id: String,
    /// `open` or `closed`.
    pub day_status: String,
    pub past_grace: bool,
    pub categories: Vec<CategoryView>,
    pub statement_lines: u64,
    pub statement_net: String,
    pub statement_fees: String,
    pub carepay_records: u64,
    pub carepay_net: String,
    pub net_settlement: String,
    pub discrepancies_found: u64,
    /// Where the file took one of two readings the spec allows, in words.
    pub warnings: Vec<String>,
    pub started_by: String,
    pub created_at: String,
}

fn run_view(run: RunRow, day_status: String) -> Result<RunView, Error> {
    let summary: Summary = serde_json::from_str(&run.summary).map_err(|error| Error::Internal(error.into()))?;
    Ok(RunView {
        run_id: run.id.into_string(),
        wallet_id: run.wallet_id,
        facility_id: match &run.owner {
            WalletOwner::Facility(facility) => Some(facility.as_str().to_owned()),
            WalletOwner::Programme(_) => None,
        },
        programme_id: match &run.owner {
            WalletOwner::Programme(programme) => Some(programme.as_str().to_owned()),
            WalletOwner::Facility(_) => None,
        },
        business_day: run.business_day,
        file_id: run.file_id.into_string(),
        day_status,
        past_grace: run.past_grace,
        categories: summary
            .categories
            .into_iter()
            .map(|c| CategoryView { category: c.category, count: c.count, amount: Yuan(c.amount_fen).to_string() })
            .collect(),
        statement_lines: summary.statement_lines,
        statement_net: Yuan(summary.statement_net_fen).to_string(),
        statement_fees: Yuan(summary.statement_fee_fen).to_string(),
        carepay_records: summary.carepay_records,
        carepay_net: Yuan(summary.carepay_net_fen).to_string(),
        net_settlement: Yuan(summary.net_settlement_fen).to_string(),
        discrepancies_found: summary.open_discrepancies,
        warnings: summary.warnings,
        started_by: run.started_by,
        created_at: run.created_at.to_rfc3339_shanghai(),
    })
}

/// One line of a reconciliation result: a statement line, a carepay record, or both, and
/// how they compare.
#[derive(Serialize, ToSchema)]
pub struct ResultLineView {
    pub seq: i64,
    pub category: String,
    /// The fields that differ between the two sides.
    pub fields: Vec<String>,
    pub line_no: Option<i64>,
    pub out_no: String,
    pub operator_ref: Option<String>,
    pub statement_kind: Option<String>,
    pub statement_status: Option<String>,
    pub statement_amount: Option<String>,
    pub statement_fee: Option<String>,
    pub settled_at: Option<String>,
    pub carepay_kind: Option<String>,
    pub carepay_status: Option<String>,
    pub carepay_amount: Option<String>,
    pub carepay_fee: Option<String>,
    pub carepay_business_day: Option<String>,
}

fn yuan(fen: Option<i64>) -> Option<String> {
    fen.map(|fen| Yuan(fen).to_string())
}

impl From<ResultLine> for ResultLineView {
    fn from(line: ResultLine) -> Self {
        ResultLineView {
            seq: line.seq,
            category: line.category,
            fields: line.fields,
            line_no: line.line_no,
            out_no: line.out_no,
            operator_ref: line.operator_ref,
            statement_kind: line.statement_kind,
            statement_status: line.statement_status,
            statement_amount: yuan(line.statement_amount_fen),
            statement_fee: yuan(line.statement_fee_fen),
            settled_at: line.settled_at,
            carepay_kind: line.carepay_kind,
            carepay_status: line.carepay_status,
            carepay_amount: yuan(line.carepay_amount_fen),
            carepay_fee: yuan(line.carepay_fee_fen),
            carepay_business_day: line.carepay_business_day,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DiscrepancyView {
    pub id: String,
    pub wallet_id: String,
    pub business_day: String,
    pub run_id: String,
    pub category: String,
    pub out_no: String,
    pub fields: Vec<String>,
    pub amount: String,
    /// `open` or `resolved`.
    pub status: String,
    pub resolution: Option<String>,
    pub note: Option<String>,
    pub adjustment: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<String>,
    pub created_at: String,
}

impl From<Discrepancy> for DiscrepancyView {
    fn from(d: Discrepancy) -> Self {
        DiscrepancyView {
            id: d.id.into_string(),
            wallet_id: d.wallet_id,
            business_day: d.business_day,
            run_id: d.run_id.into_string(),
            category: d.category.as_str().to_owned(),
            out_no: d.out_no,
            fields: d.fields,
            amount: Yuan(d.amount_fen).to_string(),
            status: String::from(if d.open { "open" } else { "resolved" }),
            resolution: d.resolution,
            note: d.note,
            adjustment: yuan(d.adjustment_fen),
            resolved_by: d.resolved_by,
            resolved_at: d.resolved_at.map(|at| at.to_rfc3339_shanghai()),
            created_at: d.created_at.to_rfc3339_shanghai(),
        }
    }
}

fn is_accepted_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(essence.as_str(), "text/csv" | "application/gzip" | "application/x-gzip")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    /// The wallet (16 digits) this statement is meant for. A file whose header names another
    /// wallet is then refused with `STATEMENT_WRONG_WALLET`; without it, the header's wallet
    /// must be one the caller can reach (`STATEMENT_WALLET_OUT_OF_SCOPE` otherwise).
    #[param(value_type = Option<WalletIdText>, inline)]
    pub wallet_id: Option<String>,
}

/// The statement file as the body, `text/csv` (UTF-8 or GB18030) or gzip. Parsed whole and
/// refused whole, with the line and reason, if corrupt. A closed day keeps its statement: a
/// new version of it is refused with 409 `DAY_CLOSED`.
#[utoipa::path(post, path = "/v1/reconciliation/statements", tag = "reconciliation",
    params(UploadParams),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 201, body = StatementFileView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn upload_statement(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictQuery(params): StrictQuery<UploadParams>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<StatementFileView>)> {
    if !is_accepted_content_type(&headers) {
        return Err(
            Error::invalid("content-type", "UNSUPPORTED_MEDIA_TYPE", "send text/csv or application/gzip").into()
        );
    }
    let meant_for = params
        .wallet_id
        .as_deref()
        .map(WalletId::parse)
        .transpose()
        .map_err(|error| super::directory::query_error("wallet_id", error.to_string()))?;
    let file =
        state.app.import_statement(&caller, body, Source::Upload, meant_for.as_ref().map(WalletId::as_str)).await?;
    Ok((StatusCode::CREATED, Json(file.into())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DayPath {
    wallet_id: String,
    date: String,
}

/// A wallet's day as a path names it. A malformed wallet id or date names no day: the
/// caller is told what it is told about a wallet that does not exist (and nothing malformed
/// reaches the store).
fn day_path(caller: &Principal, path: DayPath) -> Result<DayPath, Error> {
    if WalletId::parse(&path.wallet_id).is_err() || !crate::domain::time::is_calendar_date(&path.date) {
        return crate::app::within_scope(caller, None::<RegionPath>, "wallet", |path| path).map(|_| path);
    }
    Ok(path)
}

#[utoipa::path(post, path = "/v1/reconciliation/days/{wallet_id}/{date}/run", tag = "reconciliation",
    params(("wallet_id" = inline(WalletIdText), Path), ("date" = inline(DateText), Path)),
    responses((status = 200, body = RunView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn run_day(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<DayPath>,
) -> ApiResult<Json<RunView>> {
    let path = day_path(&caller, path)?;
    state.app.run_reconciliation(&caller, &path.wallet_id, &path.date).await?;
    let (run, status) = state.app.reconciliation_day(&caller, &path.wallet_id, &path.date).await?;
    Ok(Json(run_view(run, status)?))
}

#[utoipa::path(get, path = "/v1/reconciliation/days/{wallet_id}/{date}", tag = "reconciliation",
    params(("wallet_id" = inline(WalletIdText), Path), ("date" = inline(DateText), Path)),
    responses((status = 200, body = RunView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_day(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<DayPath>,
) -> ApiResult<Json<RunView>> {
    let path = day_path(&caller, path)?;
    let (run, status) = state.app.reconciliation_day(&caller, &path.wallet_id, &path.date).await?;
    Ok(Json(run_view(run, status)?))
}

/// How a day's result lines are answered.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinesFormat {
    /// Paged JSON.
    #[default]
    Json,
    /// The whole result as one CSV download.
    Csv,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LinesParams {
    /// `json` (default, paged) or `csv` (the whole result as a download).
    #[param(inline)]
    pub format: Option<LinesFormat>,
    /// The last `seq` of the previous page.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct LinesPage {
    pub items: Vec<ResultLineView>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<i64>,
}

#[utoipa::path(get, path = "/v1/reconciliation/days/{wallet_id}/{date}/lines", tag = "reconciliation",
    params(("wallet_id" = inline(WalletIdText), Path), ("date" = inline(DateText), Path), LinesParams),
    responses((status = 200, description = "A page of lines (`format=json`), or every line as CSV (`format=csv`)",
            content((LinesPage = "application/json"), (String = "text/csv"))),
        (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn day_lines(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<DayPath>,
    StrictQuery(params): StrictQuery<LinesParams>,
) -> ApiResult<Response> {
    let path = day_path(&caller, path)?;
    let limit = super::directory::page_limit(params.limit)?.unwrap_or(50);
    if params.after.is_some_and(|after| after < 0) {
        return Err(super::directory::query_error("after", String::from("must not be negative")));
    }
    match params.format.unwrap_or_default() {
        LinesFormat::Json => {
            let lines = state
                .app
                .reconciliation_lines(&caller, &path.wallet_id, &path.date, params.after.unwrap_or(0), limit)
                .await?;
            let next_after = (lines.len() == usize::try_from(limit).unwrap_or(usize::MAX))
                .then(|| lines.last().map(|l| l.seq))
                .flatten();
            Ok(Json(LinesPage { items: lines.into_iter().map(ResultLineView::from).collect(), next_after })
                .into_response())
        }
        LinesFormat::Csv => {
            let mut csv = String::from(CSV_HEADER);
            let mut after = 0;
            loop {
                let lines =
                    state.app.reconciliation_lines(&caller, &path.wallet_id, &path.date, after, CSV_PAGE).await?;
                let Some(last) = lines.last() else { break };
                after = last.seq;
                for line in lines {
                    push_csv_line(&mut csv, &ResultLineView::from(line));
                }
            }
            let disposition = format!("attachment; filename=\"reconciliation-{}-{}.csv\"", path.wallet_id, path.date);
            Ok((
                [
                    (header::CONTENT_TYPE, String::from("text/csv; charset=utf-8")),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                csv,
            )
                .into_response())
        }
    }
}

pub(crate) const CSV_HEADER: &str = "seq,category,fields,line_no,out_no,operator_ref,statement_kind,statement_status,\
statement_amount,statement_fee,settled_at,carepay_kind,carepay_status,carepay_amount,carepay_fee,carepay_business_day\r\n";

pub(crate) fn push_csv_line(out: &mut String, line: &ResultLineView) {
    let opt = |value: &Option<String>| value.clone().unwrap_or_default();
    let fields = [
        line.seq.to_string(),
        line.category.clone(),
        line.fields.join(" "),
        line.line_no.map(|n| n.to_string()).unwrap_or_default(),
        line.out_no.clone(),
        opt(&line.operator_ref),
        opt(&line.statement_kind),
        opt(&line.statement_status),
        opt(&line.statement_amount),
        opt(&line.statement_fee),
        opt(&line.settled_at),
        opt(&line.carepay_kind),
        opt(&line.carepay_status),
        opt(&line.carepay_amount),
        opt(&line.carepay_fee),
        opt(&line.carepay_business_day),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // RFC 4180; a leading formula character is neutralised so a spreadsheet shows text.
        let negative_number =
            field.strip_prefix('-').is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        let guarded = if field.starts_with(['=', '+', '-', '@']) && !negative_number {
            format!("'{field}")
        } else {
            field.clone()
        };
        if guarded.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&guarded.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&guarded);
        }
    }
    out.push_str("\r\n");
}

/// Which discrepancies of a day are listed.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiscrepancyFilter {
    /// Only those still to resolve.
    #[default]
    Open,
    /// Open and resolved.
    All,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiscrepancyParams {
    /// `open` (default) or `all`.
    #[param(inline)]
    pub status: Option<DiscrepancyFilter>,
}

#[utoipa::path(get, path = "/v1/reconciliation/days/{wallet_id}/{date}/discrepancies", tag = "reconciliation",
    params(("wallet_id" = inline(WalletIdText), Path), ("date" = inline(DateText), Path), DiscrepancyParams),
    responses((status = 200, body = Vec<DiscrepancyView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn day_discrepancies(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<DayPath>,
    StrictQuery(params): StrictQuery<DiscrepancyParams>,
) -> ApiResult<Json<Vec<DiscrepancyView>>> {
    let path = day_path(&caller, path)?;
    let only_open = matches!(params.status.unwrap_or_default(), DiscrepancyFilter::Open);
    let found = state.app.discrepancies(&caller, &path.wallet_id, &path.date, only_open).await?;
    Ok(Json(found.into_iter().map(DiscrepancyView::from).collect()))
}

/// `adjusted` with an `adjustment` (signed yuan posted to the wallet's ledger account,
/// `"-1.00"` takes money out, against `reconciliation:adjustments`), or `operator_error`,
/// `timing` or `other` without one; always with a note.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveDiscrepancy {
    pub resolution: String,
    pub note: String,
    pub adjustment: Option<String>,
}

impl utoipa::PartialSchema for ResolveDiscrepancy {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use super::schema::{null, object, one_of, reference, strings};
        one_of([
            object()
                .description(Some("Corrected in carepay's ledger."))
                .property("resolution", strings(["adjusted"]))
                .property("note", reference::<NoteText>())
                .property("adjustment", reference::<SignedAmountText>())
                .required("resolution")
                .required("note")
                .required("adjustment"),
            object()
                .description(Some("Explained without a correction."))
                .property("resolution", strings(["operator_error", "timing", "other"]))
                .property("note", reference::<NoteText>())
                .property("adjustment", null())
                .required("resolution")
                .required("note"),
        ])
    }
}

impl ToSchema for ResolveDiscrepancy {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        super::schema::register::<NoteText>(schemas);
        super::schema::register::<SignedAmountText>(schemas);
    }
}

#[utoipa::path(post, path = "/v1/reconciliation/discrepancies/{id}/resolve", tag = "reconciliation",
    params(("id" = inline(DiscrepancyId), Path)), request_body = ResolveDiscrepancy,
    responses((status = 200, body = DiscrepancyView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn resolve_discrepancy(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(id): StrictPath<String>,
    StrictJson(body): StrictJson<ResolveDiscrepancy>,
) -> ApiResult<Json<DiscrepancyView>> {
    let id = DiscrepancyId::parse(&id).map_err(|_| Error::NotFound { what: "discrepancy" })?;
    let note =
        FreeText::parse(&body.note, text::NOTE).map_err(|error| Error::invalid("note", "INVALID_NOTE", error))?;
    let adjustment_fen = body
        .adjustment
        .as_deref()
        .map(|raw| {
            Amount::parse_signed_nonzero_fen(raw).map_err(|error| Error::invalid("adjustment", error.code(), error))
        })
        .transpose()?;
    let resolved = state.app.resolve_discrepancy(&caller, &id, &body.resolution, &note, adjustment_fen).await?;
    Ok(Json(resolved.into()))
}

#[utoipa::path(post, path = "/v1/reconciliation/days/{wallet_id}/{date}/close", tag = "reconciliation",
    params(("wallet_id" = inline(WalletIdText), Path), ("date" = inline(DateText), Path)),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn close_day(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictPath(path): StrictPath<DayPath>,
) -> ApiResult<StatusCode> {
    let path = day_path(&caller, path)?;
    state.app.close_reconciliation_day(&caller, &path.wallet_id, &path.date).await?;
    Ok(StatusCode::NO_CONTENT)
}
