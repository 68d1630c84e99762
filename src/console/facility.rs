//! The facility manager's pages: a day's payments and refunds with totals, the terminals
//! (suspend, resume, rotate the key), and callback endpoints with their deliveries, attempts
//! and replay.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{Area, Lang, PageError, PageResult, csrf_field, page, shanghai_time, yuan};
use super::session::{CsrfForm, NoFields, SignedIn};
use crate::directory::PageRequest;
use crate::domain::callbacks::{DeliveryStatus, EndpointStatus, EventOwner};
use crate::domain::directory::{PublicKey, TerminalStatus};
use crate::domain::ids::{EndpointId, EventId, FacilityId, TerminalId};
use crate::domain::payment::{PaymentMethod, PaymentStatus, RefundStatus};
use crate::domain::reconciliation::business_day;
use crate::domain::role::Action;
use crate::domain::time::UnixMs;
use crate::error::Error;
use crate::http::AppState;

/// Deliveries and attempts shown per callback endpoint.
const CALLBACK_ROWS_SHOWN: u32 = 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/facilities", get(facilities))
        .route("/console/facilities/{id}", get(facility))
        .route("/console/facilities/{id}/terminals/{terminal}/{step}", post(terminal_step))
        .route("/console/facilities/{id}/terminals/{terminal}/rotate-key", post(rotate_key))
        .route("/console/facilities/{id}/callbacks/{endpoint}/replay", post(replay))
}

fn facility_path(id: &str) -> String {
    format!("/console/facilities/{id}")
}

fn facility_id(raw: &str) -> Result<FacilityId, Error> {
    FacilityId::parse(raw).map_err(|_| Error::OutOfScope)
}

fn payment_status_label(lang: Lang, status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Succeeded => lang.t("成功", "succeeded"),
        PaymentStatus::Failed => lang.t("失败", "failed"),
        PaymentStatus::Closed => lang.t("已关闭", "closed"),
        PaymentStatus::Reversed => lang.t("已撤销", "reversed"),
        _ => lang.t("处理中", "in progress"),
    }
}

fn method_label(lang: Lang, method: PaymentMethod) -> &'static str {
    match method {
        PaymentMethod::PayerCode => lang.t("付款码", "payment code"),
        PaymentMethod::Card => lang.t("硬钱包卡", "hard-wallet card"),
        PaymentMethod::DynamicQr => lang.t("动态二维码", "dynamic QR"),
    }
}

fn refund_status_label(lang: Lang, status: RefundStatus) -> &'static str {
    match status {
        RefundStatus::Processing => lang.t("处理中", "processing"),
        RefundStatus::Succeeded => lang.t("成功", "succeeded"),
        RefundStatus::Failed => lang.t("失败", "failed"),
    }
}

fn endpoint_status_label(lang: Lang, status: EndpointStatus) -> &'static str {
    match status {
        EndpointStatus::Enabled => lang.t("启用", "enabled"),
        EndpointStatus::Disabled => lang.t("已停用", "disabled"),
    }
}

fn delivery_status_label(lang: Lang, status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => lang.t("待发送", "pending"),
        DeliveryStatus::Succeeded => lang.t("已送达", "delivered"),
        DeliveryStatus::Failed => lang.t("失败", "failed"),
    }
}

async fn facilities(State(state): State<AppState>, signed_in: SignedIn) -> PageResult {
    let lang = signed_in.lang;
    let page_request = PageRequest { after: None, limit: Some(state.app.limits.max_page_size) };
    let facilities = state.app.payment_facilities(&signed_in.principal, &page_request).await?;
    let body = html! {
        table #facilities {
            thead { tr { th { (lang.t("机构", "Facility")) } th { (lang.t("钱包编号", "Wallet")) } } }
            tbody {
                @for f in &facilities {
                    tr { td { a href=(facility_path(f.id.as_str())) { (f.name.as_str()) } } td { (f.merchant_wallet_id.as_str()) } }
                }
            }
        }
        @if facilities.is_empty() { p.hint { (lang.t("您的范围内没有机构。", "No facility within your scope.")) } }
    };
    Ok(page(Some(&signed_in.viewer()), lang, Area::Facilities, lang.t("机构", "Facilities"), body).into_response())
}

#[derive(Deserialize)]
struct DayQuery {
    /// `YYYY-MM-DD`; today (Asia/Shanghai) when absent.
    date: Option<String>,
}

async fn callbacks_section(state: &AppState, signed_in: &SignedIn, facility: &FacilityId) -> Result<Markup, Error> {
    let lang = signed_in.lang;
    let principal = &signed_in.principal;
    let owner = EventOwner::Facility(facility.clone());
    let endpoints = state.app.endpoints(principal, Some(&owner), &PageRequest::default()).await?;
    let rows = PageRequest { after: None, limit: Some(CALLBACK_ROWS_SHOWN) };
    let may_replay = principal.may(Action::ManageFacilityCallbacks);
    let mut sections = Vec::with_capacity(endpoints.len());
    for endpoint in &endpoints {
        let deliveries = state.app.endpoint_deliveries(principal, &endpoint.id, None, &rows).await?;
        let attempts = state.app.endpoint_attempts(principal, &endpoint.id, None, &rows).await?;
        let replay_action = format!("{}/callbacks/{}/replay", facility_path(facility.as_str()), endpoint.id.as_str());
        sections.push(html! {
            section.endpoint {
                h3 { code { (endpoint.url.as_str()) } " · " (endpoint_status_label(lang, endpoint.status))
                    @if endpoint.consecutive_failures > 0 { " · " (lang.t("连续失败", "consecutive failures")) " " (endpoint.consecutive_failures) } }
                table.deliveries {
                    thead { tr {
                        th { (lang.t("事件", "Event")) } th { (lang.t("类型", "Type")) } th { (lang.t("状态", "Status")) }
                        th.num { (lang.t("尝试", "Attempts")) } th { (lang.t("最近结果", "Last result")) }
                        @if may_replay { th {} }
                    } }
                    tbody {
                        @for d in &deliveries {
                            tr {
                                td { code { (d.event_id.as_str()) } } td { (d.event_type.as_str()) } td { (delivery_status_label(lang, d.status)) }
                                td.num { (d.attempts) }
                                td { @if let Some(code) = d.last_status_code { (code) } " " (d.last_error.as_deref().unwrap_or_default()) }
                                @if may_replay {
                                    td { form.inline method="post" action=(replay_action) {
                                        (csrf_field(&signed_in.csrf_token))
                                        input type="hidden" name="event_id" value=(d.event_id.as_str());
                                        button type="submit" { (lang.t("重放", "Replay")) }
                                    } }
                                }
                            }
                        }
                    }
                }
                details {
                    summary { (lang.t("投递尝试", "Delivery attempts")) " (" (attempts.len()) ")" }
                    table.attempts {
                        thead { tr {
                            th { (lang.t("时间", "Time")) } th { (lang.t("事件", "Event")) } th.num { "#" }
                            th { (lang.t("结果", "Result")) } th.num { (lang.t("耗时", "Latency")) }
                        } }
                        tbody {
                            @for a in &attempts {
                                tr {
                                    td { (shanghai_time(a.started_at)) } td { code { (a.event_id.as_str()) } } td.num { (a.attempt) }
                                    td { @if let Some(code) = a.status_code { (code) } " " (a.error.as_deref().unwrap_or_default()) }
                                    td.num { (a.latency_ms) " ms" }
                                }
                            }
                        }
                    }
                }
            }
        });
    }
    Ok(html! {
        h2 { (lang.t("回调地址", "Callback endpoints")) }
        @if sections.is_empty() { p.hint { (lang.t("没有回调地址。", "No callback endpoint.")) } }
        @for section in sections { (section) }
    })
}

async fn facility(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<DayQuery>,
) -> PageResult {
    let lang = signed_in.lang;
    let principal = &signed_in.principal;
    let id = facility_id(&id)?;
    let date = query.date.unwrap_or_else(|| business_day(UnixMs::now()));
    let day = state.app.facility_day(principal, &id, &date).await?;
    let terminals = state.app.terminals(principal, Some(&id), &PageRequest::default()).await?;
    let callbacks = if principal.may(Action::ReadFacilityCallbacks) {
        Some(callbacks_section(&state, &signed_in, &id).await?)
    } else {
        None
    };
    let succeeded: Vec<_> = day.payments.iter().filter(|p| p.status == PaymentStatus::Succeeded).collect();
    let paid_fen: i64 = succeeded.iter().map(|p| p.amount.fen()).fold(0, i64::saturating_add);
    let refunded: Vec<_> = day.refunds.iter().filter(|r| r.status == RefundStatus::Succeeded).collect();
    let refunded_fen: i64 = refunded.iter().map(|r| r.amount.fen()).fold(0, i64::saturating_add);
    let may_manage_terminals = principal.may(Action::ManageTerminals);
    let base = facility_path(id.as_str());
    let body = html! {
        form.filters method="get" action=(base) {
            label for="date" { (lang.t("营业日", "Business day")) }
            input #date type="date" name="date" value=(date);
            button type="submit" { (lang.t("查看", "Show")) }
        }
        dl.figures #day-totals {
            dt { (lang.t("成功收款", "Payments succeeded")) } dd #payments-total { (succeeded.len()) " · " (yuan(paid_fen)) }
            dt { (lang.t("成功退款", "Refunds succeeded")) } dd #refunds-total { (refunded.len()) " · " (yuan(refunded_fen)) }
            dt { (lang.t("净额", "Net")) } dd #net-total { (yuan(paid_fen.saturating_sub(refunded_fen))) }
        }
        h2 { (lang.t("收款", "Payments")) }
        table #payments {
            thead { tr {
                th { (lang.t("时间", "Time")) } th { (lang.t("商户单号", "Merchant no.")) } th { (lang.t("方式", "Method")) }
                th { (lang.t("状态", "Status")) } th.num { (lang.t("金额", "Amount")) } th.num { (lang.t("已退款", "Refunded")) }
            } }
            tbody {
                @for p in &day.payments {
                    tr {
                        td { (shanghai_time(p.created_at)) } td { code { (p.out_trade_no) } } td { (method_label(lang, p.method)) }
                        td { (payment_status_label(lang, p.status)) } td.num { (yuan(p.amount.fen())) } td.num { (yuan(p.refunded.fen())) }
                    }
                }
            }
        }
        h2 { (lang.t("退款", "Refunds")) }
        table #refunds {
            thead { tr {
                th { (lang.t("时间", "Time")) } th { (lang.t("退款单号", "Refund no.")) } th { (lang.t("状态", "Status")) }
                th.num { (lang.t("金额", "Amount")) } th { (lang.t("原因", "Reason")) }
            } }
            tbody {
                @for r in &day.refunds {
                    tr {
                        td { (shanghai_time(r.created_at)) } td { code { (r.out_refund_no) } } td { (refund_status_label(lang, r.status)) }
                        td.num { (yuan(r.amount.fen())) } td { (r.reason) }
                    }
                }
            }
        }
        h2 { (lang.t("终端", "Terminals")) }
        table #terminals {
            thead { tr {
                th { (lang.t("终端", "Terminal")) } th { (lang.t("状态", "Status")) } th { (lang.t("公钥", "Public key")) }
                @if may_manage_terminals { th { (lang.t("操作", "Actions")) } }
            } }
            tbody {
                @for t in &terminals {
                    @let terminal_base = format!("{base}/terminals/{}", t.id.as_str());
                    tr {
                        td { (t.label.as_str()) br; code { (t.id.as_str()) } }
                        td.terminal-status { @if t.status == TerminalStatus::Active { (lang.t("启用", "active")) } @else { (lang.t("已停用", "suspended")) } }
                        td { code.public-key { (t.public_key.as_base64()) } }
                        @if may_manage_terminals {
                            td {
                                @let step = if t.status == TerminalStatus::Active { "suspend" } else { "resume" };
                                form.inline method="post" action=(format!("{terminal_base}/{step}")) {
                                    (csrf_field(&signed_in.csrf_token))
                                    button type="submit" {
                                        @if step == "suspend" { (lang.t("停用", "Suspend")) } @else { (lang.t("启用", "Resume")) }
                                    }
                                }
                                form.inline method="post" action=(format!("{terminal_base}/rotate-key")) {
                                    (csrf_field(&signed_in.csrf_token))
                                    input type="text" name="public_key" required placeholder=(lang.t("新公钥（base64）", "new public key (base64)"))
                                        aria-label=(lang.t("新公钥", "New public key"));
                                    button type="submit" { (lang.t("更换密钥", "Rotate key")) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(callbacks) = callbacks { (callbacks) }
    };
    let title = format!("{} · {date}", day.facility.name.as_str());
    Ok(page(Some(&signed_in.viewer()), lang, Area::Facilities, &title, body).into_response())
}

async fn terminal_step(
    State(state): State<AppState>,
    Path((id, terminal, step)): Path<(String, String, String)>,
    CsrfForm { signed_in, .. }: CsrfForm<NoFields>,
) -> PageResult {
    let to = match step.as_str() {
        "suspend" => TerminalStatus::Suspended,
        "resume" => TerminalStatus::Active,
        _ => return Err(PageError::BadRequest(String::from("suspend or resume"))),
    };
    let terminal = TerminalId::parse(&terminal).map_err(|_| Error::OutOfScope)?;
    state.app.set_terminal_status(&signed_in.principal, &terminal, to).await?;
    Ok(Redirect::to(&facility_path(facility_id(&id)?.as_str())).into_response())
}

#[derive(Deserialize)]
struct RotateForm {
    public_key: String,
}

async fn rotate_key(
    State(state): State<AppState>,
    Path((id, terminal)): Path<(String, String)>,
    CsrfForm { signed_in, form }: CsrfForm<RotateForm>,
) -> PageResult {
    let terminal = TerminalId::parse(&terminal).map_err(|_| Error::OutOfScope)?;
    let key =
        PublicKey::parse(form.public_key.trim()).map_err(|error| Error::invalid("public_key", "INVALID_KEY", error))?;
    state.app.rotate_terminal_key(&signed_in.principal, &terminal, key).await?;
    Ok(Redirect::to(&facility_path(facility_id(&id)?.as_str())).into_response())
}

#[derive(Deserialize)]
struct ReplayForm {
    event_id: String,
}

async fn replay(
    State(state): State<AppState>,
    Path((id, endpoint)): Path<(String, String)>,
    CsrfForm { signed_in, form }: CsrfForm<ReplayForm>,
) -> PageResult {
    let endpoint = EndpointId::parse(&endpoint).map_err(|_| Error::OutOfScope)?;
    let event = EventId::parse(&form.event_id)
        .map_err(|_| Error::invalid("event_id", "UNKNOWN_EVENT", "no such event for this endpoint's owner"))?;
    state.app.replay_event(&signed_in.principal, &endpoint, &event).await?;
    Ok(Redirect::to(&facility_path(facility_id(&id)?.as_str())).into_response())
}
