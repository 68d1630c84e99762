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

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit)).routes(routes!(verify_audit))
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
    pub prev_hash: String,
    pub hash: String,
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
    let request = super::directory::page_request(None, params.limit)?;
    let after_seq = params.after_seq.unwrap_or(0).max(0);
    let records = state.app.audit_records(&caller, after_seq, request.limit.unwrap_or(50).min(MAX_PAGE_SIZE)).await?;
    let items = records
        .into_iter()
        .map(|record| AuditRecordView {
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
            prev_hash: record.prev_hash,
            hash: record.hash,
        })
        .collect();
    Ok(Json(AuditPage { items }))
}

#[derive(Serialize, ToSchema)]
pub struct AuditVerdict {
    /// True when every record follows from its content and its predecessor.
    pub intact: bool,
    /// The first broken record, when not intact.
    pub broken_at_seq: Option<i64>,
    pub reason: Option<String>,
}

/// Recompute the whole hash chain.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerdict), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn verify_audit(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<AuditVerdict>, ApiError> {
    let verdict = match state.app.verify_audit(&caller).await? {
        None => AuditVerdict { intact: true, broken_at_seq: None, reason: None },
        Some(link) => {
            AuditVerdict { intact: false, broken_at_seq: Some(link.seq), reason: Some(link.reason.to_owned()) }
        }
    };
    Ok(Json(verdict))
}
