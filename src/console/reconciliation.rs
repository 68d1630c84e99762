//! The accountant's pages: wallets, a wallet's business days, a day's summary with its
//! 30-day chart and discrepancies (filter, resolve), statement upload, result downloads,
//! closing the day.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::charts::{DayPoint, daily_settlement};
use super::layout::{Area, Lang, PageError, PageResult, csrf_field, page, shanghai_time, yuan};
use super::session::{CsrfForm, CsrfUpload, NoFields, SignedIn};
use crate::directory::PageRequest;
use crate::domain::ids::DiscrepancyId;
use crate::domain::reconciliation::{Category, Summary, business_day, day_start_ms};
use crate::domain::role::Action;
use crate::domain::time::UnixMs;
use crate::error::Error;
use crate::http::AppState;
use crate::http::reconciliation::{CSV_HEADER, CSV_PAGE, ResultLineView, push_csv_line};
use crate::reconciliation::{RESOLUTIONS, Source};
use crate::store::console::WalletDay;

/// Days shown on a wallet's calendar and in the daily chart.
const DAYS_SHOWN: i64 = 30;
const MS_PER_DAY: i64 = 86_400_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/reconciliation", get(wallets))
        .route("/console/reconciliation/wallets/{wallet}", get(wallet_days))
        .route("/console/reconciliation/wallets/{wallet}/days/{date}", get(day))
        .route("/console/reconciliation/wallets/{wallet}/days/{date}/lines.csv", get(lines_csv))
        .route("/console/reconciliation/wallets/{wallet}/days/{date}/lines.json", get(lines_json))
        .route("/console/reconciliation/wallets/{wallet}/days/{date}/run", post(run_day))
        .route("/console/reconciliation/wallets/{wallet}/days/{date}/close", post(close_day))
        .route("/console/reconciliation/discrepancies/{id}/resolve", post(resolve))
        // The statement's size is bounded by the reconciliation setting while it is read.
        .route("/console/reconciliation/statements", post(upload).layer(DefaultBodyLimit::disable()))
}

fn day_path(wallet: &str, date: &str) -> String {
    format!("/console/reconciliation/wallets/{wallet}/days/{date}")
}

/// `date` moved by `days` (negative: earlier), or `None` if `date` is no date.
fn shift_day(date: &str, days: i64) -> Option<String> {
    // Noon avoids any doubt about which day an instant falls on.
    day_start_ms(date).map(|start| business_day(UnixMs(start + days * MS_PER_DAY + MS_PER_DAY / 2)))
}

fn category_label(lang: Lang, category: &str) -> &'static str {
    match Category::ALL.into_iter().find(|c| c.as_str() == category) {
        Some(Category::Matched) => lang.t("一致", "matched"),
        Some(Category::MissingInCarepay) => lang.t("carepay 缺失", "missing in carepay"),
        Some(Category::Expected) => lang.t("待入账", "expected"),
        Some(Category::MissingInStatement) => lang.t("对账单缺失", "missing in statement"),
        Some(Category::AmountMismatch) => lang.t("金额不符", "amount mismatch"),
        Some(Category::StatusMismatch) => lang.t("状态不符", "status mismatch"),
        Some(Category::KindMismatch) => lang.t("类型不符", "kind mismatch"),
        Some(Category::Duplicate) => lang.t("重复", "duplicate"),
        Some(Category::WrongDay) => lang.t("日期不符", "wrong day"),
        Some(Category::FeeMismatch) => lang.t("手续费不符", "fee mismatch"),
        Some(Category::OperatorEntry) => lang.t("运营机构记账", "operator entry"),
        None => lang.t("其他", "other"),
    }
}

fn resolution_label(lang: Lang, resolution: &str) -> &'static str {
    match resolution {
        "adjusted" => lang.t("已调账", "adjusted"),
        "operator_error" => lang.t("运营机构差错", "operator error"),
        "timing" => lang.t("时间差", "timing"),
        _ => lang.t("其他", "other"),
    }
}

fn parse_summary(json: &str) -> Result<Summary, Error> {
    serde_json::from_str(json).map_err(|error| Error::Internal(error.into()))
}

/// A day's place in the accountant's work.
fn day_status(lang: Lang, day: Option<&WalletDay>) -> (&'static str, String) {
    match day {
        None => ("none", String::from(lang.t("未获取对账单", "not fetched"))),
        Some(day) if day.latest_summary.is_none() => ("fetched", String::from(lang.t("已获取，未对账", "fetched"))),
        Some(day) if day.day_status.as_deref() == Some("closed") => {
            ("closed", String::from(lang.t("已关账", "closed")))
        }
        Some(day) => (
            if day.open_discrepancies > 0 { "open" } else { "reconciled" },
            match lang {
                Lang::Zh => format!("已对账，{} 项差错未解决", day.open_discrepancies),
                Lang::En => format!("reconciled, {} open discrepancies", day.open_discrepancies),
            },
        ),
    }
}

/// The 30 days ending at `last_day`, with what reconciliation knows of each.
async fn recent_days(
    state: &AppState,
    signed_in: &SignedIn,
    wallet: &str,
    last_day: &str,
) -> Result<Vec<(String, Option<WalletDay>)>, PageError> {
    let first_day = shift_day(last_day, 1 - DAYS_SHOWN)
        .ok_or_else(|| Error::invalid("date", "INVALID_DATE", "must be a date YYYY-MM-DD"))?;
    let mut known = state.app.wallet_days(&signed_in.principal, wallet, &first_day, last_day).await?;
    let mut days = Vec::new();
    for offset in (0..DAYS_SHOWN).rev() {
        let Some(date) = shift_day(last_day, -offset) else { continue };
        let found = known.iter().position(|day| day.business_day == date).map(|i| known.swap_remove(i));
        days.push((date, found));
    }
    Ok(days)
}

fn chart(days: &[(String, Option<WalletDay>)], lang: Lang) -> Result<Markup, PageError> {
    let mut points = Vec::with_capacity(days.len());
    for (date, day) in days {
        let summary = day.as_ref().and_then(|d| d.latest_summary.as_deref()).map(parse_summary).transpose()?;
        points.push(DayPoint {
            day: date.clone(),
            settled_fen: summary.as_ref().map(|s| s.net_settlement_fen),
            discrepancies: summary.as_ref().map_or(0, |s| s.open_discrepancies),
        });
    }
    Ok(daily_settlement(&points, lang))
}

async fn wallets(State(state): State<AppState>, signed_in: SignedIn) -> PageResult {
    let lang = signed_in.lang;
    let page_request = PageRequest { after: None, limit: Some(state.app.limits.max_page_size) };
    let facilities = state.app.reconciliation_wallets(&signed_in.principal, &page_request).await?;
    let body = html! {
        table {
            thead { tr { th { (lang.t("机构", "Facility")) } th { (lang.t("钱包编号", "Wallet")) } } }
            tbody {
                @for facility in &facilities {
                    tr {
                        td { (facility.name.as_str()) }
                        td { a href=(format!("/console/reconciliation/wallets/{}", facility.merchant_wallet_id.as_str())) {
                            (facility.merchant_wallet_id.as_str()) } }
                    }
                }
            }
        }
        @if facilities.is_empty() { p.hint { (lang.t("您的范围内没有机构。", "No facility within your scope.")) } }
    };
    Ok(page(
        Some(&signed_in.viewer()),
        lang,
        Area::Reconciliation,
        lang.t("对账：钱包", "Reconciliation: wallets"),
        body,
    )
    .into_response())
}

/// The upload form of a wallet's pages: the file must be that wallet's statement.
fn upload_form(signed_in: &SignedIn, wallet: &str) -> Markup {
    let lang = signed_in.lang;
    // A wallet id that is not plain digits and letters is not put in the address.
    let action = if wallet.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("/console/reconciliation/statements?wallet_id={wallet}")
    } else {
        String::from("/console/reconciliation/statements")
    };
    html! {
        @if signed_in.principal.may(Action::Reconcile) {
            form.card method="post" action=(action) enctype="multipart/form-data" {
                (csrf_field(&signed_in.csrf_token))
                label for="statement-file" { (lang.t("上传对账单文件（CSV 或 gzip）", "Upload a statement file (CSV or gzip)")) }
                input #statement-file type="file" name="file" required;
                button type="submit" id="upload-statement" { (lang.t("上传并对账", "Upload and reconcile")) }
            }
        }
    }
}

async fn wallet_days(State(state): State<AppState>, signed_in: SignedIn, Path(wallet): Path<String>) -> PageResult {
    let lang = signed_in.lang;
    let today = business_day(UnixMs::now());
    let days = recent_days(&state, &signed_in, &wallet, &today).await?;
    let body = html! {
        (chart(&days, lang)?)
        (upload_form(&signed_in, &wallet))
        table.calendar {
            thead { tr { th { (lang.t("营业日", "Business day")) } th { (lang.t("状态", "Status")) } } }
            tbody {
                @for (date, day) in days.iter().rev() {
                    @let (class, label) = day_status(lang, day.as_ref());
                    tr {
                        td { a href=(day_path(&wallet, date)) { (date) } }
                        td { span class=(format!("status {class}")) { (label) } }
                    }
                }
            }
        }
    };
    let title = format!("{} {wallet}", lang.t("钱包", "Wallet"));
    Ok(page(Some(&signed_in.viewer()), lang, Area::Reconciliation, &title, body).into_response())
}

#[derive(Deserialize)]
struct DiscrepancyFilter {
    /// `open` (default) or `all`.
    status: Option<String>,
    /// A category name, or empty for every category.
    category: Option<String>,
}

fn summary_table(lang: Lang, summary: &Summary) -> Markup {
    html! {
        table.summary {
            thead { tr { th { (lang.t("类别", "Category")) } th.num { (lang.t("笔数", "Count")) } th.num { (lang.t("金额（收入为正，退款与手续费为负）", "Amount (in +, refunds and fees −)")) } } }
            tbody {
                @for category in &summary.categories {
                    tr { td { (category_label(lang, &category.category)) } td.num { (category.count) } td.num { (yuan(category.amount_fen)) } }
                }
            }
        }
        dl.figures {
            dt { (lang.t("对账单笔数", "Statement lines")) } dd { (summary.statement_lines) }
            dt { (lang.t("对账单净额", "Statement net")) } dd { (yuan(summary.statement_net_fen)) }
            dt { (lang.t("手续费", "Fees")) } dd { (yuan(summary.statement_fee_fen)) }
            dt { (lang.t("carepay 笔数", "carepay records")) } dd { (summary.carepay_records) }
            dt { (lang.t("carepay 净额", "carepay net")) } dd { (yuan(summary.carepay_net_fen)) }
            dt { (lang.t("结算净额", "Net settlement")) } dd #net-settlement { (yuan(summary.net_settlement_fen)) }
        }
    }
}

fn resolve_form(signed_in: &SignedIn, id: &str) -> Markup {
    let lang = signed_in.lang;
    html! {
        form.resolve method="post" action=(format!("/console/reconciliation/discrepancies/{id}/resolve")) {
            (csrf_field(&signed_in.csrf_token))
            select name="resolution" aria-label=(lang.t("处理方式", "Resolution")) {
                @for resolution in RESOLUTIONS { option value=(resolution) { (resolution_label(lang, resolution)) } }
            }
            input type="text" name="note" required maxlength="500" placeholder=(lang.t("说明", "note"))
                aria-label=(lang.t("说明", "Note"));
            input type="text" name="adjustment" placeholder=(lang.t("调账金额（元，可为负）", "adjustment, yuan (signed)"))
                aria-label=(lang.t("调账金额", "Adjustment"));
            button type="submit" { (lang.t("解决", "Resolve")) }
        }
    }
}

async fn day(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path((wallet, date)): Path<(String, String)>,
    Query(filter): Query<DiscrepancyFilter>,
) -> PageResult {
    let lang = signed_in.lang;
    let principal = &signed_in.principal;
    let only_open = match filter.status.as_deref().unwrap_or("open") {
        "open" => true,
        "all" => false,
        _ => return Err(PageError::BadRequest(String::from("status: open or all"))),
    };
    let category = filter.category.unwrap_or_default();
    let (run, status) = match state.app.reconciliation_day(principal, &wallet, &date).await {
        Ok((run, status)) => (Some(run), status),
        Err(Error::NotFound { what: "run" }) => (None, String::from("open")),
        Err(other) => return Err(other.into()),
    };
    let days = recent_days(&state, &signed_in, &wallet, &date).await?;
    let discrepancies: Vec<_> = state
        .app
        .discrepancies(principal, &wallet, &date, only_open)
        .await?
        .into_iter()
        .filter(|d| category.is_empty() || d.category.as_str() == category)
        .collect();
    let may_reconcile = principal.may(Action::Reconcile);
    let day_open = status != "closed";
    let summary = run.as_ref().map(|run| parse_summary(&run.summary)).transpose()?;
    let base = day_path(&wallet, &date);
    let body = html! {
        p {
            (lang.t("状态：", "Status: "))
            span #day-status class=(format!("status {status}")) {
                @if status == "closed" { (lang.t("已关账", "closed")) } @else { (lang.t("未关账", "open")) }
            }
            @if let Some(run) = &run {
                " · " (lang.t("最近对账", "last run")) " " (shanghai_time(run.created_at))
            }
        }
        @match &summary {
            Some(summary) => {
                h2 { (lang.t("汇总", "Summary")) }
                (summary_table(lang, summary))
                p.downloads {
                    a href=(format!("{base}/lines.csv")) download { (lang.t("下载结果 CSV", "Download results (CSV)")) }
                    " · "
                    a href=(format!("{base}/lines.json")) download { (lang.t("下载结果 JSON", "Download results (JSON)")) }
                }
            }
            None => { p.hint { (lang.t("此营业日尚未对账。", "This business day has not been reconciled.")) } }
        }
        (chart(&days, lang)?)
        @if may_reconcile && day_open {
            div.actions {
                form.inline method="post" action=(format!("{base}/run")) {
                    (csrf_field(&signed_in.csrf_token))
                    button type="submit" id="run-day" { (lang.t("重新对账", "Run reconciliation")) }
                }
                @if run.is_some() {
                    form.inline method="post" action=(format!("{base}/close")) {
                        (csrf_field(&signed_in.csrf_token))
                        button type="submit" id="close-day" { (lang.t("关账", "Close the day")) }
                    }
                }
            }
            (upload_form(&signed_in, &wallet))
        }
        h2 { (lang.t("差错", "Discrepancies")) }
        form.filters method="get" action=(base) {
            select name="status" aria-label=(lang.t("状态", "Status")) {
                option value="open" selected[only_open] { (lang.t("未解决", "open")) }
                option value="all" selected[!only_open] { (lang.t("全部", "all")) }
            }
            select name="category" aria-label=(lang.t("类别", "Category")) {
                option value="" { (lang.t("全部类别", "every category")) }
                @for c in Category::ALL.into_iter().filter(|c| *c != Category::Matched) {
                    option value=(c.as_str()) selected[c.as_str() == category] { (category_label(lang, c.as_str())) }
                }
            }
            button type="submit" { (lang.t("筛选", "Filter")) }
        }
        table #discrepancies {
            thead { tr {
                th { (lang.t("类别", "Category")) } th { (lang.t("商户单号", "Merchant no.")) }
                th { (lang.t("不一致字段", "Fields that differ")) } th.num { (lang.t("金额", "Amount")) }
                th { (lang.t("处理", "Resolution")) }
            } }
            tbody {
                @for d in &discrepancies {
                    tr.discrepancy {
                        td { (category_label(lang, d.category.as_str())) }
                        td { code { (d.out_no) } }
                        td.fields { @for field in &d.fields { span.field { (field) } " " } }
                        td.num { (yuan(d.amount_fen)) }
                        td {
                            @if d.open {
                                @if may_reconcile && day_open { (resolve_form(&signed_in, d.id.as_str())) }
                                @else { (lang.t("未解决", "open")) }
                            } @else {
                                span.resolved { (resolution_label(lang, d.resolution.as_deref().unwrap_or_default())) }
                                " " (d.note.as_deref().unwrap_or_default())
                                @if let Some(adjustment_fen) = d.adjustment_fen { " " (yuan(adjustment_fen)) }
                                @if let Some(at) = d.resolved_at { " · " (shanghai_time(at)) }
                            }
                        }
                    }
                }
            }
        }
        @if discrepancies.is_empty() { p.hint #no-discrepancies { (lang.t("没有符合条件的差错。", "No discrepancy matches.")) } }
        p { a href=(format!("/console/reconciliation/wallets/{wallet}")) { (lang.t("返回营业日列表", "Back to the business days")) } }
    };
    let title = format!("{} {wallet} · {date}", lang.t("对账", "Reconciliation"));
    Ok(page(Some(&signed_in.viewer()), lang, Area::Reconciliation, &title, body).into_response())
}

async fn all_lines(
    state: &AppState,
    signed_in: &SignedIn,
    wallet: &str,
    date: &str,
) -> Result<Vec<ResultLineView>, Error> {
    let mut lines = Vec::new();
    let mut after = 0;
    loop {
        let page = state.app.reconciliation_lines(&signed_in.principal, wallet, date, after, CSV_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        lines.extend(page.into_iter().map(ResultLineView::from));
    }
    Ok(lines)
}

fn download(content_type: &'static str, filename: String, body: Vec<u8>) -> Response {
    let disposition = format!("attachment; filename=\"{filename}\"");
    ([(header::CONTENT_TYPE, String::from(content_type)), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response()
}

async fn lines_csv(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path((wallet, date)): Path<(String, String)>,
) -> PageResult {
    let mut csv = String::from(CSV_HEADER);
    for line in all_lines(&state, &signed_in, &wallet, &date).await? {
        push_csv_line(&mut csv, &line);
    }
    Ok(download("text/csv; charset=utf-8", format!("reconciliation-{wallet}-{date}.csv"), csv.into_bytes()))
}

async fn lines_json(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path((wallet, date)): Path<(String, String)>,
) -> PageResult {
    let lines = all_lines(&state, &signed_in, &wallet, &date).await?;
    let json = serde_json::to_vec(&lines).map_err(|error| Error::Internal(error.into()))?;
    Ok(download("application/json", format!("reconciliation-{wallet}-{date}.json"), json))
}

#[derive(Deserialize)]
struct UploadQuery {
    wallet_id: Option<String>,
}

async fn upload(State(state): State<AppState>, Query(query): Query<UploadQuery>, upload: CsrfUpload) -> PageResult {
    let principal = &upload.signed_in.principal;
    if upload.file.is_empty() {
        return Err(PageError::BadRequest(String::from("choose a statement file")));
    }
    let meant_for = query.wallet_id.as_deref();
    let file = state.app.import_statement(principal, upload.file.into(), Source::Upload, meant_for).await?;
    state.app.run_reconciliation(principal, &file.wallet_id, &file.business_day).await?;
    Ok(Redirect::to(&day_path(&file.wallet_id, &file.business_day)).into_response())
}

async fn run_day(
    State(state): State<AppState>,
    Path((wallet, date)): Path<(String, String)>,
    CsrfForm { signed_in, .. }: CsrfForm<NoFields>,
) -> PageResult {
    state.app.run_reconciliation(&signed_in.principal, &wallet, &date).await?;
    Ok(Redirect::to(&day_path(&wallet, &date)).into_response())
}

async fn close_day(
    State(state): State<AppState>,
    Path((wallet, date)): Path<(String, String)>,
    CsrfForm { signed_in, .. }: CsrfForm<NoFields>,
) -> PageResult {
    state.app.close_reconciliation_day(&signed_in.principal, &wallet, &date).await?;
    Ok(Redirect::to(&day_path(&wallet, &date)).into_response())
}

#[derive(Deserialize)]
struct ResolveForm {
    resolution: String,
    note: String,
    #[serde(default)]
    adjustment: String,
}

async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm { signed_in, form }: CsrfForm<ResolveForm>,
) -> PageResult {
    let id = DiscrepancyId::parse(&id).map_err(|_| Error::NotFound { what: "discrepancy" })?;
    let adjustment = form.adjustment.trim();
    let adjustment_fen = if adjustment.is_empty() {
        None
    } else {
        // The money rule of the API's adjustment, so a page and its route refuse alike.
        Some(
            crate::domain::money::Amount::parse_signed_nonzero_fen(adjustment)
                .map_err(|error| Error::invalid("adjustment", error.code(), error))?,
        )
    };
    let note = crate::domain::text::FreeText::parse(&form.note, crate::domain::text::NOTE)
        .map_err(|error| Error::invalid("note", "INVALID_NOTE", error))?;
    let resolved =
        state.app.resolve_discrepancy(&signed_in.principal, &id, &form.resolution, &note, adjustment_fen).await?;
    Ok(Redirect::to(&day_path(&resolved.wallet_id, &resolved.business_day)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_shift_across_month_and_year_ends() {
        assert_eq!(shift_day("2026-03-01", -1).as_deref(), Some("2026-02-28"));
        assert_eq!(shift_day("2026-12-31", 1).as_deref(), Some("2027-01-01"));
        assert_eq!(shift_day("2026-11-28", -29).as_deref(), Some("2026-10-30"));
        assert_eq!(shift_day("not a day", 1), None);
    }
}
