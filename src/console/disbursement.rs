//! The subsidy office's pages: programmes with their budgets, batch upload with every
//! problem listed by line, four-eyes approval, cancel/run/pause, live progress, failed lines
//! with re-issue, and the result file.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Redirect};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::charts::{BudgetBar, budgets};
use super::layout::{Area, Lang, PageError, PageResult, csrf_field, page, shanghai_time, yuan};
use super::session::{CsrfForm, NoFields, SignedIn, read_text_field, signed_in_multipart, unreadable};
use crate::directory::PageRequest;
use crate::disbursement::{Rejection, Upload, UploadRequest};
use crate::domain::batch::{Batch, BatchStatus, Line, LineStatus, Period, Programme, Progress, StateTally};
use crate::domain::directory::WalletId;
use crate::domain::disbursement::{BatchEncoding, ControlTotals};
use crate::domain::ids::{BatchId, ProgrammeId};
use crate::domain::money::Amount;
use crate::domain::role::Action;
use crate::error::Error;
use crate::http::AppState;
use crate::http::upload_stream::{self, SpoolError};
use crate::sessions::random_token;
use axum::extract::Request;
use std::collections::HashMap;

/// Lines read to find a batch's failed ones; past this the page says the list is cut short.
const MAX_SCANNED_LINES: u64 = 20_000;
/// Lines shown in a batch's line table.
const LINES_SHOWN: u32 = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/subsidies", get(programmes))
        .route("/console/subsidies/programmes/{id}", get(programme))
        // The file's size is bounded by the disbursement setting while it is read.
        .route("/console/subsidies/programmes/{id}/batches", post(upload).layer(DefaultBodyLimit::disable()))
        .route("/console/subsidies/batches/{id}", get(batch))
        .route("/console/subsidies/batches/{id}/progress.json", get(progress_json))
        .route("/console/subsidies/batches/{id}/result.csv", get(result_file))
        .route("/console/subsidies/batches/{id}/{step}", post(move_batch))
        .route("/console/subsidies/batches/{id}/lines/{seq}/reissue", post(reissue))
}

fn batch_path(id: &str) -> String {
    format!("/console/subsidies/batches/{id}")
}

fn programme_id(raw: &str) -> Result<ProgrammeId, Error> {
    // A malformed id names nothing, which is what a scoped caller is told about anything missing.
    ProgrammeId::parse(raw).map_err(|_| Error::OutOfScope)
}

fn batch_id(raw: &str) -> Result<BatchId, Error> {
    BatchId::parse(raw).map_err(|_| Error::OutOfScope)
}

fn batch_status_label(lang: Lang, status: BatchStatus) -> &'static str {
    match status {
        BatchStatus::Draft => lang.t("待审批", "draft"),
        BatchStatus::Approved => lang.t("已审批", "approved"),
        BatchStatus::Running => lang.t("发放中", "running"),
        BatchStatus::Paused => lang.t("已暂停", "paused"),
        BatchStatus::Completed => lang.t("已完成", "completed"),
        BatchStatus::Cancelled => lang.t("已取消", "cancelled"),
    }
}

fn line_status_label(lang: Lang, status: LineStatus) -> &'static str {
    match status {
        LineStatus::Pending => lang.t("待发放", "pending"),
        LineStatus::Sending => lang.t("发送中", "sending"),
        LineStatus::Succeeded => lang.t("成功", "succeeded"),
        LineStatus::Failed => lang.t("失败", "failed"),
        LineStatus::Returned => lang.t("已退回", "returned"),
    }
}

fn remaining(programme: &Programme) -> i64 {
    programme.budget.fen().saturating_sub(programme.committed.fen())
}

async fn programmes(State(state): State<AppState>, signed_in: SignedIn) -> PageResult {
    let lang = signed_in.lang;
    let page_request = PageRequest { after: None, limit: Some(state.app.limits.max_page_size) };
    let programmes = state.app.programmes(&signed_in.principal, &page_request).await?;
    let bars: Vec<BudgetBar> = programmes
        .iter()
        .map(|p| BudgetBar { label: p.name.clone(), budget_fen: p.budget.fen(), used_fen: p.committed.fen() })
        .collect();
    let body = html! {
        @if !bars.is_empty() { (budgets(&bars, lang)) }
        table #programmes {
            thead { tr {
                th { (lang.t("项目", "Programme")) } th { (lang.t("有效期", "Active")) }
                th.num { (lang.t("预算", "Budget")) } th.num { (lang.t("已用", "Used")) } th.num { (lang.t("剩余", "Remaining")) }
            } }
            tbody {
                @for p in &programmes {
                    tr {
                        td { a href=(format!("/console/subsidies/programmes/{}", p.id.as_str())) { (p.name) } }
                        td { (p.starts_on) " – " (p.ends_on) }
                        td.num { (yuan(p.budget.fen())) } td.num { (yuan(p.committed.fen())) } td.num { (yuan(remaining(p))) }
                    }
                }
            }
        }
        @if programmes.is_empty() { p.hint { (lang.t("您的范围内没有补贴项目。", "No programme within your scope.")) } }
    };
    Ok(page(Some(&signed_in.viewer()), lang, Area::Subsidies, lang.t("补贴项目", "Subsidy programmes"), body)
        .into_response())
}

fn upload_form(signed_in: &SignedIn, programme: &Programme) -> Result<Markup, PageError> {
    let lang = signed_in.lang;
    // A fresh key per rendered form: sending the same form twice creates one batch.
    let idempotency_key = random_token()?;
    Ok(html! {
        form.card method="post" action=(format!("/console/subsidies/programmes/{}/batches", programme.id.as_str()))
            enctype="multipart/form-data" {
            (csrf_field(&signed_in.csrf_token))
            input type="hidden" name="idempotency_key" value=(idempotency_key);
            label for="period" { (lang.t("发放期间（YYYY-MM）", "Period (YYYY-MM)")) }
            input #period type="text" name="period" required pattern="[0-9]{4}-[0-9]{2}";
            label for="line-count" { (lang.t("控制笔数", "Control count of lines")) }
            input #line-count type="number" name="line_count" min="1" required;
            label for="total" { (lang.t("控制总额（元）", "Control total (yuan)")) }
            input #total type="text" name="total" required;
            // Last: the browser sends fields in this order, and the file streams into the
            // upload once the fields before it (the CSRF token first) have been checked.
            label for="batch-file" { (lang.t("批次文件（CSV，UTF-8 或 GB18030）", "Batch file (CSV, UTF-8 or GB18030)")) }
            input #batch-file type="file" name="file" required;
            button type="submit" id="upload-batch" { (lang.t("上传批次", "Upload batch")) }
        }
    })
}

async fn programme_page(
    state: &AppState,
    signed_in: &SignedIn,
    id: &ProgrammeId,
    rejection: Option<&Rejection>,
) -> Result<Markup, PageError> {
    let lang = signed_in.lang;
    let programme = state.app.programme(&signed_in.principal, id).await?;
    let batches = state.app.programme_batches(&signed_in.principal, id).await?;
    let bar = BudgetBar {
        label: programme.name.clone(),
        budget_fen: programme.budget.fen(),
        used_fen: programme.committed.fen(),
    };
    let body = html! {
        (budgets(std::slice::from_ref(&bar), lang))
        dl.figures {
            dt { (lang.t("预算", "Budget")) } dd { (yuan(programme.budget.fen())) }
            dt { (lang.t("已用", "Used")) } dd { (yuan(programme.committed.fen())) }
            dt { (lang.t("剩余", "Remaining")) } dd #remaining { (yuan(remaining(&programme))) }
            dt { (lang.t("单笔上限", "Per payment cap")) } dd { (yuan(programme.per_payment_cap.fen())) }
            dt { (lang.t("每期上限", "Per period cap")) } dd { (yuan(programme.per_period_cap.fen())) }
            dt { (lang.t("资金钱包", "Funding wallet")) } dd { (programme.funding_wallet_id.as_str()) }
        }
        @if let Some(rejection) = rejection { (rejection_list(lang, rejection)) }
        @if signed_in.principal.may(Action::UploadBatches) { (upload_form(signed_in, &programme)?) }
        h2 { (lang.t("批次", "Batches")) }
        table #batches {
            thead { tr {
                th { (lang.t("批次", "Batch")) } th { (lang.t("期间", "Period")) } th { (lang.t("状态", "Status")) }
                th.num { (lang.t("笔数", "Lines")) } th.num { (lang.t("总额", "Total")) } th { (lang.t("上传时间", "Uploaded")) }
            } }
            tbody {
                @for b in &batches {
                    tr {
                        td { a href=(batch_path(b.id.as_str())) { (b.id.as_str()) } }
                        td { (b.period.as_str()) }
                        td { (batch_status_label(lang, b.status)) }
                        td.num { (b.line_count) } td.num { (yuan(b.total.fen())) }
                        td { (shanghai_time(b.created_at)) }
                    }
                }
            }
        }
    };
    Ok(page(Some(&signed_in.viewer()), lang, Area::Subsidies, &programme.name, body))
}

fn rejection_list(lang: Lang, rejection: &Rejection) -> Markup {
    html! {
        section.rejection role="alert" {
            h2 { (lang.t("文件未被接受，未保存任何内容", "The file was refused; nothing was stored")) }
            p #error-count {
                @match lang {
                    Lang::Zh => { "共 " (rejection.total) " 个问题" @if rejection.total > rejection.errors.len() as u64 { "，列出前 " (rejection.errors.len()) " 个" } }
                    Lang::En => { (rejection.total) " problem(s)" @if rejection.total > rejection.errors.len() as u64 { ", the first " (rejection.errors.len()) " listed" } }
                }
            }
            table #file-errors {
                thead { tr { th.num { (lang.t("行", "Line")) } th { (lang.t("列", "Column")) } th { (lang.t("代码", "Code")) } th { (lang.t("说明", "Problem")) } } }
                tbody {
                    @for error in &rejection.errors {
                        tr.file-error {
                            td.num { @if let Some(line) = error.line { (line) } @else { "–" } }
                            td { @if let Some(column) = error.column { (column.as_str()) } }
                            td { code { (error.problem.code()) } }
                            td { (error.problem.to_string()) }
                        }
                    }
                }
            }
        }
    }
}

async fn programme(State(state): State<AppState>, signed_in: SignedIn, Path(id): Path<String>) -> PageResult {
    Ok(programme_page(&state, &signed_in, &programme_id(&id)?, None).await?.into_response())
}

/// A batch file from the upload form, streamed into the upload as the REST route does: the
/// text fields come first, the CSRF token among them is checked before a byte of the file is
/// read, and the file never sits in memory. A file sent before the token is refused.
async fn upload(State(state): State<AppState>, Path(id): Path<String>, request: Request) -> PageResult {
    let id = programme_id(&id)?;
    let (signed_in, mut multipart) = signed_in_multipart(request, &state).await?;
    let mut fields = HashMap::new();
    let file = loop {
        let Some(field) = multipart.next_field().await.map_err(unreadable)? else {
            signed_in.check_csrf(fields.get("csrf").map(String::as_str).unwrap_or_default())?;
            return Err(Error::invalid("file", "FILE_MISSING", "choose a batch file").into());
        };
        if field.name() == Some("file") {
            break field;
        }
        read_text_field(field, &mut fields).await?;
    };
    signed_in.check_csrf(fields.get("csrf").map(String::as_str).unwrap_or_default())?;
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let amount = |name: &str| Amount::parse(field(name).trim()).map_err(|e| Error::invalid(name, e.code(), e));
    let request = UploadRequest {
        programme_id: id.clone(),
        period: Period::parse(field("period").trim()).map_err(|e| Error::invalid("period", "INVALID_PERIOD", e))?,
        idempotency_key: field("idempotency_key").to_owned(),
        stated: ControlTotals {
            line_count: field("line_count")
                .trim()
                .parse()
                .map_err(|_| Error::invalid("line_count", "INVALID_COUNT", "a whole number of lines"))?,
            total: amount("total")?,
        },
    };
    let limit = usize::try_from(state.app.disbursement.max_upload_bytes).unwrap_or(usize::MAX);
    // On disk whole before the upload's transaction begins (see `upload_stream`).
    let file = match upload_stream::spool(file, limit).await {
        Ok(file) => file,
        Err(error @ (SpoolError::TooLarge { .. } | SpoolError::Body(_))) => {
            return Err(PageError::BadRequest(error.to_string()));
        }
        Err(SpoolError::Disk(error)) => return Err(Error::Internal(error.into()).into()),
    };
    match state.app.upload_batch(&signed_in.principal, request, file).await? {
        Upload::Accepted(batch) => Ok(Redirect::to(&batch_path(batch.id.as_str())).into_response()),
        Upload::Rejected(rejection) => {
            let page = programme_page(&state, &signed_in, &id, Some(&rejection)).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

/// The batch's failed lines (bounded scan) and its first lines for the table.
async fn lines_of(state: &AppState, signed_in: &SignedIn, id: &BatchId) -> Result<(Vec<Line>, Vec<Line>, bool), Error> {
    let mut failed = Vec::new();
    let mut shown = Vec::new();
    let mut after = 0;
    let page_size = state.app.limits.max_page_size;
    loop {
        let page = state.app.batch_lines(&signed_in.principal, id, after, page_size).await?;
        let Some(last) = page.last() else { return Ok((failed, shown, false)) };
        after = last.seq;
        let full = page.len() == usize::try_from(page_size).unwrap_or(usize::MAX);
        for line in page {
            if line.status.may_be_reissued() && line.reissued_as_seq.is_none() {
                failed.push(line.clone());
            }
            if shown.len() < LINES_SHOWN as usize {
                shown.push(line);
            }
        }
        if !full {
            return Ok((failed, shown, false));
        }
        if after >= MAX_SCANNED_LINES {
            return Ok((failed, shown, true));
        }
    }
}

fn tally_cells(name: &str, tally: &StateTally) -> Markup {
    html! {
        td.num data-progress=(format!("{name}-lines")) { (tally.lines) }
        td.num data-progress=(format!("{name}-amount")) { (yuan(tally.amount_fen)) }
    }
}

fn progress_table(lang: Lang, progress: &Progress) -> Markup {
    html! {
        table #progress {
            thead { tr { th { (lang.t("状态", "State")) } th.num { (lang.t("笔数", "Lines")) } th.num { (lang.t("金额", "Amount")) } } }
            tbody {
                tr { td { (line_status_label(lang, LineStatus::Pending)) } (tally_cells("pending", &progress.pending)) }
                tr { td { (line_status_label(lang, LineStatus::Sending)) } (tally_cells("sending", &progress.sending)) }
                tr { td { (line_status_label(lang, LineStatus::Succeeded)) } (tally_cells("succeeded", &progress.succeeded)) }
                tr { td { (line_status_label(lang, LineStatus::Failed)) } (tally_cells("failed", &progress.failed)) }
                tr { td { (line_status_label(lang, LineStatus::Returned)) } (tally_cells("returned", &progress.returned)) }
            }
        }
    }
}

fn step_button(signed_in: &SignedIn, batch: &Batch, step: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(format!("{}/{step}", batch_path(batch.id.as_str()))) {
            (csrf_field(&signed_in.csrf_token))
            button type="submit" id=(format!("{step}-batch")) { (label) }
        }
    }
}

async fn batch(State(state): State<AppState>, signed_in: SignedIn, Path(id): Path<String>) -> PageResult {
    let lang = signed_in.lang;
    let principal = &signed_in.principal;
    let id = batch_id(&id)?;
    let (batch, progress) = state.app.batch_progress(principal, &id).await?;
    let history = state.app.batch_history(principal, &id).await?;
    let (failed, shown, cut_short) = lines_of(&state, &signed_in, &id).await?;
    let may_operate = principal.may(Action::OperateBatches);
    let may_approve = principal.may(Action::ApproveBatches) && batch.uploaded_by != principal.token_id;
    let may_reissue =
        may_operate && matches!(batch.status, BatchStatus::Running | BatchStatus::Paused | BatchStatus::Completed);
    let live = matches!(batch.status, BatchStatus::Approved | BatchStatus::Running | BatchStatus::Paused);
    let base = batch_path(id.as_str());
    let body = html! {
        p {
            (lang.t("状态：", "Status: "))
            strong #batch-status data-status=(batch.status.as_str()) { (batch_status_label(lang, batch.status)) }
            " · " (lang.t("期间", "period")) " " (batch.period.as_str())
            " · " (batch.line_count) " " (lang.t("笔", "lines")) " · " (yuan(batch.total.fen()))
            " · " a href=(format!("/console/subsidies/programmes/{}", batch.programme_id.as_str())) { (lang.t("所属项目", "programme")) }
        }
        h2 { (lang.t("进度", "Progress")) }
        div #live-progress data-progress-url=(format!("{base}/progress.json")) data-live=(live) {
            (progress_table(lang, &progress))
        }
        @if live { script src="/console/assets/progress.js" defer {} }
        p.hint #batch-changed hidden {
            (lang.t("批次状态已变化。", "The batch has moved on. "))
            a href=(base.as_str()) { (lang.t("刷新页面查看最新明细和操作", "Reload for its current lines and actions")) }
        }
        div.actions #batch-actions {
            @if batch.status == BatchStatus::Draft && may_approve { (step_button(&signed_in, &batch, "approve", lang.t("审批通过", "Approve"))) }
            @if batch.status.may_become(BatchStatus::Running) && may_operate { (step_button(&signed_in, &batch, "run", lang.t("开始发放", "Start paying"))) }
            @if batch.status.may_become(BatchStatus::Paused) && may_operate { (step_button(&signed_in, &batch, "pause", lang.t("暂停", "Pause"))) }
            @if batch.status.may_become(BatchStatus::Cancelled) && may_operate { (step_button(&signed_in, &batch, "cancel", lang.t("取消批次", "Cancel batch"))) }
            a #result-file href=(format!("{base}/result.csv")) download { (lang.t("下载结果文件", "Download the result file")) }
        }
        @if batch.status == BatchStatus::Draft && principal.may(Action::ApproveBatches) && !may_approve {
            p.hint { (lang.t("上传人不能审批自己的批次。", "The uploader cannot approve their own batch.")) }
        }
        h2 { (lang.t("失败明细", "Failed lines")) }
        // The list is as of the page's load; while the batch runs, the live script reveals the
        // hint below once more lines have failed than when the page was drawn.
        p.hint #failed-lines-stale hidden data-failed-at-load=(progress.failed.lines) {
            (lang.t("加载本页后又有明细发放失败。", "More lines have failed since this page was loaded. "))
            a href=(base.as_str()) { (lang.t("刷新页面查看并重发", "Reload to see and re-issue them")) }
        }
        @if failed.is_empty() { p.hint #no-failed-lines { (lang.t("本页加载时没有待处理的失败明细。", "No failed line to act on when this page was loaded.")) } }
        @else {
            table #failed-lines {
                thead { tr {
                    th.num { (lang.t("行", "Line")) } th { (lang.t("姓名", "Name")) } th { (lang.t("身份证号", "ID number")) }
                    th { (lang.t("钱包", "Wallet")) } th.num { (lang.t("金额", "Amount")) } th { (lang.t("原因", "Reason")) }
                    @if may_reissue { th { (lang.t("更正后重发", "Correct and re-issue")) } }
                } }
                tbody {
                    @for line in &failed {
                        tr {
                            td.num { (line.file_line) } td { (line.name_masked) } td { code { (line.citizen_id_masked) } }
                            td { (line.wallet_id.as_str()) } td.num { (yuan(line.amount.fen())) }
                            @let fail_code = line.fail_code.as_deref().unwrap_or_default();
                            @let failure = crate::domain::batch::TransferFailure::classify(fail_code);
                            td { (lang.t(failure.advice_zh(), failure.advice_en())) " " code { (fail_code) } }
                            @if may_reissue {
                                td {
                                    form.reissue method="post" action=(format!("{base}/lines/{}/reissue", line.seq)) {
                                        (csrf_field(&signed_in.csrf_token))
                                        input type="text" name="payee_name" required maxlength="64"
                                            placeholder=(lang.t("更正后的姓名", "corrected name")) aria-label=(lang.t("姓名", "Name"));
                                        input type="text" name="wallet_id" required pattern="[0-9]{16}" value=(line.wallet_id.as_str())
                                            aria-label=(lang.t("钱包编号", "Wallet id"));
                                        button type="submit" { (lang.t("重发", "Re-issue")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if cut_short { p.hint { (lang.t("批次过大，失败明细只列出前面部分；完整结果见结果文件。",
            "The batch is large; failed lines are listed from its beginning only. The result file has them all.")) } }
        h2 { (lang.t("明细", "Lines")) }
        table #lines {
            thead { tr {
                th.num { (lang.t("行", "Line")) } th { (lang.t("姓名", "Name")) } th { (lang.t("身份证号", "ID number")) }
                th { (lang.t("钱包", "Wallet")) } th.num { (lang.t("金额", "Amount")) } th { (lang.t("状态", "Status")) }
            } }
            tbody {
                @for line in &shown {
                    tr {
                        td.num { (line.file_line) } td { (line.name_masked) } td { code { (line.citizen_id_masked) } }
                        td { (line.wallet_id.as_str()) } td.num { (yuan(line.amount.fen())) } td { (line_status_label(lang, line.status)) }
                    }
                }
            }
        }
        h2 { (lang.t("操作记录", "History")) }
        ol.history {
            @for step in &history {
                li { (shanghai_time(step.at)) " · " (batch_status_label(lang, step.to)) " · " (step.actor_label) }
            }
        }
    };
    let title = format!("{} {}", lang.t("批次", "Batch"), id.as_str());
    Ok(page(Some(&signed_in.viewer()), lang, Area::Subsidies, &title, body).into_response())
}

#[derive(Serialize)]
struct TallyJson {
    lines: u64,
    amount: String,
}

/// What the live progress script reads: the batch's state and a tally per line state, with
/// amounts already formatted so the page shows them exactly as the server renders them.
#[derive(Serialize)]
struct ProgressJson {
    status: &'static str,
    status_label: &'static str,
    pending: TallyJson,
    sending: TallyJson,
    succeeded: TallyJson,
    failed: TallyJson,
    returned: TallyJson,
}

async fn progress_json(State(state): State<AppState>, signed_in: SignedIn, Path(id): Path<String>) -> PageResult {
    let (batch, progress) = state.app.batch_progress(&signed_in.principal, &batch_id(&id)?).await?;
    let tally = |t: &StateTally| TallyJson { lines: t.lines, amount: yuan(t.amount_fen) };
    let body = ProgressJson {
        status: batch.status.as_str(),
        status_label: batch_status_label(signed_in.lang, batch.status),
        pending: tally(&progress.pending),
        sending: tally(&progress.sending),
        succeeded: tally(&progress.succeeded),
        failed: tally(&progress.failed),
        returned: tally(&progress.returned),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

async fn result_file(State(state): State<AppState>, signed_in: SignedIn, Path(id): Path<String>) -> PageResult {
    let id = batch_id(&id)?;
    let mut out = Vec::new();
    let encoding = state.app.write_batch_result(&signed_in.principal, &id, &mut out).await?;
    let content_type = match encoding {
        BatchEncoding::Gb18030 => "text/csv; charset=GB18030",
        _ => "text/csv; charset=utf-8",
    };
    let disposition = format!("attachment; filename=\"result-{}.csv\"", id.as_str());
    Ok(([(header::CONTENT_TYPE, String::from(content_type)), (header::CONTENT_DISPOSITION, disposition)], out)
        .into_response())
}

async fn move_batch(
    State(state): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    CsrfForm { signed_in, .. }: CsrfForm<NoFields>,
) -> PageResult {
    let (principal, id) = (&signed_in.principal, batch_id(&id)?);
    match step.as_str() {
        "approve" => state.app.approve_batch(principal, &id).await?,
        "run" => state.app.run_batch(principal, &id).await?,
        "pause" => state.app.pause_batch(principal, &id).await?,
        "cancel" => state.app.cancel_batch(principal, &id).await?,
        _ => return Ok(StatusCode::NOT_FOUND.into_response()),
    };
    Ok(Redirect::to(&batch_path(id.as_str())).into_response())
}

#[derive(Deserialize)]
struct ReissueForm {
    payee_name: String,
    wallet_id: String,
}

async fn reissue(
    State(state): State<AppState>,
    Path((id, seq)): Path<(String, String)>,
    CsrfForm { signed_in, form }: CsrfForm<ReissueForm>,
) -> PageResult {
    let id = batch_id(&id)?;
    let seq: u64 = seq.parse().map_err(|_| Error::NotFound { what: "line" })?;
    let wallet = WalletId::parse(form.wallet_id.trim())
        .map_err(|_| Error::invalid("wallet_id", "INVALID_WALLET_ID", "a wallet id is 16 digits"))?;
    let payee_name = crate::domain::text::FreeText::parse(&form.payee_name, crate::domain::text::PAYEE_NAME)
        .map_err(|error| Error::invalid("payee_name", "INVALID_NAME", error))?;
    state.app.reissue_line(&signed_in.principal, &id, seq, &payee_name, &wallet).await?;
    Ok(Redirect::to(&batch_path(id.as_str())).into_response())
}
