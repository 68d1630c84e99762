//! Back-office routes for auditors: the audit trail within their scope, and its check.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::directory::MAX_PAGE_SIZE;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Caller, StrictQuery};
use crate::domain::audit::GivenCheckpoint;
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit)).routes(routes!(export_audit)).routes(routes!(verify_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditListParams {
    /// Records after this sequence number (the previous page's last `seq`).
    #[param(minimum = 0)]
    pub after_seq: Option<i64>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditRecordView {
    pub seq: i64,
    pub at: String,
    /// The acting token's id, or `command-line`.
    pub actor: String,
    pub actor_role: String,
    pub actor_region_id: Option<String>,
    /// What was done, e.g. `terminal.suspended`.
    pub action: String,
    pub object_kind: String,
    pub object_id: String,
    /// What changed (JSON), with personal data masked.
    pub summary: serde_json::Value,
    pub request_id: Option<String>,
    /// The region path of the object: which auditors' scope the record lies in.
    pub region_path: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    /// How `hash` is computed: 1 unkeyed SHA-256 (records from before the chain was keyed),
    /// 2 HMAC-SHA256 under the service's audit key over every field.
    pub recipe: i64,
}

impl From<crate::store::audit::AuditRecord> for AuditRecordView {
    fn from(record: crate::store::audit::AuditRecord) -> Self {
        AuditRecordView {
            seq: record.seq,
            at: crate::domain::time::UnixMs(record.at_ms).to_rfc3339_shanghai(),
            actor: record.actor,
            actor_role: record.actor_role,
            actor_region_id: record.actor_region_id,
            action: record.action,
            object_kind: record.object_kind,
            object_id: record.object_id,
            summary: serde_json::from_str(&record.summary).unwrap_or(serde_json::Value::Null),
            request_id: record.request_id,
            region_path: record.region_path,
            prev_hash: record.prev_hash,
            hash: record.hash,
            recipe: record.recipe,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRecordView>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditListParams),
    responses((status = 200, body = AuditPage), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_audit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictQuery(params): StrictQuery<AuditListParams>,
) -> ApiResult<Json<AuditPage>> {
    let limit = super::directory::page_limit(params.limit)?.unwrap_or(50).min(MAX_PAGE_SIZE);
    let after_seq = after_seq(params.after_seq)?;
    let records = state.app.audit_records(&caller, after_seq, limit).await?;
    Ok(Json(AuditPage { items: records.into_iter().map(AuditRecordView::from).collect() }))
}

/// An `after_seq` query parameter: a sequence number, so never negative.
fn after_seq(raw: Option<i64>) -> Result<i64, ApiError> {
    match raw {
        Some(seq) if seq < 0 => Err(super::directory::query_error("after_seq", String::from("must not be negative"))),
        other => Ok(other.unwrap_or(0)),
    }
}

/// The form of an export.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One record a row, after a header row; `summary` is its JSON text.
    #[default]
    Csv,
    /// One JSON record a line, as `GET /v1/audit` lists them.
    Ndjson,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditExportParams {
    /// `csv` (default) or `ndjson`.
    #[param(inline)]
    pub format: Option<ExportFormat>,
    /// Records after this sequence number (to continue an earlier export).
    #[param(minimum = 0)]
    pub after_seq: Option<i64>,
}

const EXPORT_CSV_HEADER: [&str; 14] = [
    "seq",
    "at",
    "actor",
    "actor_role",
    "actor_region_id",
    "action",
    "object_kind",
    "object_id",
    "summary",
    "request_id",
    "prev_hash",
    "hash",
    "region_path",
    "recipe",
];

/// The response header carrying the signed head at the moment an export began.
pub const CHECKPOINT_HEADER: &str = "audit-checkpoint";

/// Every record within the caller's scope, in sequence order, streamed a page at a time (the
/// service holds one page, whatever the trail's length). With the hashes, so the chain's
/// links can be checked again from the export, and with the chain's head when the export
/// began, signed (`Audit-Checkpoint: SEQ:HASH:SIGNATURE`), to keep and hand to
/// `GET /v1/audit/verify?checkpoint=` or `carepay audit verify --checkpoint` later.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", params(AuditExportParams),
    responses((status = 200, description = "CSV (header row first, `format=csv`) or one JSON record a line (`format=ndjson`)",
            content((String = "text/csv"), (String = "application/x-ndjson")),
            headers(("Audit-Checkpoint" = String, description = "the signed head when the export began"))),
        (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn export_audit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictQuery(params): StrictQuery<AuditExportParams>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;

    let format = params.format.unwrap_or_default();
    let page_size = state.app.limits.max_page_size;
    let after_seq = after_seq(params.after_seq)?;
    // The head first: every record the export holds is at or before it.
    let checkpoint = state.app.audit_checkpoint(&caller, "export").await?;
    // The first page is read before answering, so a refusal is a problem, not a cut stream.
    let first = state.app.audit_records(&caller, after_seq, page_size).await?;
    let header = match format {
        ExportFormat::Csv => Some(EXPORT_CSV_HEADER),
        ExportFormat::Ndjson => None,
    };
    let first_chunk = export_chunk(format, header, &first);
    let next = (first.len() == page_size as usize).then(|| first.last().map(|record| record.seq)).flatten();
    let rest = futures_util::stream::unfold(next, move |after| {
        let (app, caller) = (state.app.clone(), caller.clone());
        async move {
            let after = after?;
            match app.audit_records(&caller, after, page_size).await {
                Ok(records) if records.is_empty() => None,
                Ok(records) => {
                    let next = (records.len() == page_size as usize).then(|| records.last().map(|r| r.seq)).flatten();
                    Some((Ok(export_chunk(format, None, &records)), next))
                }
                Err(error) => {
                    // The head is sent: the export ends early, and the log says why.
                    tracing::error!(%error, "audit export cut short");
                    Some((Err(std::io::Error::other("audit export cut short")), None))
                }
            }
        }
    });
    let body = futures_util::StreamExt::chain(futures_util::stream::iter([Ok(first_chunk)]), rest);
    let (content_type, file) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "audit.csv"),
        ExportFormat::Ndjson => ("application/x-ndjson", "audit.ndjson"),
    };
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type.to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file}\"")),
            (axum::http::HeaderName::from_static(CHECKPOINT_HEADER), checkpoint.to_string()),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

fn export_chunk(
    format: ExportFormat,
    header: Option<[&str; 14]>,
    records: &[crate::store::audit::AuditRecord],
) -> axum::body::Bytes {
    let mut out = Vec::new();
    match format {
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(&mut out);
            if let Some(header) = header {
                let _ = writer.write_record(header);
            }
            for record in records {
                let at = crate::domain::time::UnixMs(record.at_ms).to_rfc3339_shanghai();
                let _ = writer.write_record([
                    record.seq.to_string().as_str(),
                    &at,
                    &record.actor,
                    &record.actor_role,
                    record.actor_region_id.as_deref().unwrap_or(""),
                    &record.action,
                    &record.object_kind,
                    &record.object_id,
                    &record.summary,
                    record.request_id.as_deref().unwrap_or(""),
                    &record.prev_hash,
                    &record.hash,
                    record.region_path.as_deref().unwrap_or(""),
                    &record.recipe.to_string(),
                ]);
            }
            let _ = writer.flush();
        }
        ExportFormat::Ndjson => {
            for record in records {
                let view = AuditRecordView::from(record.clone());
                if serde_json::to_writer(&mut out, &view).is_ok() {
                    out.push(b'\n');
                }
            }
        }
    }
    axum::body::Bytes::from(out)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditVerifyParams {
    /// A head kept from earlier (an export's `Audit-Checkpoint`, or a log line's): `SEQ:HASH`
    /// or `SEQ:HASH:SIGNATURE`. The record it names must still be there with that hash.
    #[param(value_type = Option<super::schema::CheckpointText>, inline)]
    pub checkpoint: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditVerdict {
    /// True when every record follows from its content and its predecessor, the head names
    /// the newest record, and the checkpoint (if given) still holds.
    pub intact: bool,
    /// The first broken record, when not intact.
    pub broken_at_seq: Option<i64>,
    pub reason: Option<String>,
    /// The head now, signed (`SEQ:HASH:SIGNATURE`), when intact: keep it to check against later.
    pub checkpoint: Option<String>,
}

/// Recompute the whole hash chain, against a checkpoint kept from earlier if one is given.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", params(AuditVerifyParams),
    responses((status = 200, body = AuditVerdict), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn verify_audit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    StrictQuery(params): StrictQuery<AuditVerifyParams>,
) -> Result<Json<AuditVerdict>, ApiError> {
    let checkpoint = params
        .checkpoint
        .as_deref()
        .map(GivenCheckpoint::parse)
        .transpose()
        .map_err(|detail| Error::invalid("checkpoint", "INVALID_CHECKPOINT", detail))?;
    let (verdict, signed) = state.app.verify_audit(&caller, checkpoint.as_ref()).await?;
    Ok(Json(AuditVerdict {
        intact: verdict.broken.is_none(),
        broken_at_seq: verdict.broken.as_ref().map(|link| link.seq),
        reason: verdict.broken.map(|link| link.reason.to_owned()),
        checkpoint: signed.map(|signed| signed.to_string()),
    }))
}
