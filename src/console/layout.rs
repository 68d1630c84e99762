//! What every console page shares: the language, number and time formats, the page shell
//! with its role-dependent navigation, and the error page.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

use crate::domain::access::Principal;
use crate::domain::role::{Action, Role};
use crate::domain::time::{SHANGHAI, UnixMs};
use crate::error::Error;
use crate::http::error::ApiError;

/// Cookie that remembers a chosen language (`zh` or `en`).
pub const LANG_COOKIE: &str = "carepay_console_lang";

/// Labels are Chinese unless English was chosen with `?lang=en` (remembered in a cookie).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    pub fn parse(raw: &str) -> Option<Lang> {
        match raw {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// The label in this language: every label is written in both, side by side, at its use.
    pub fn t(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    fn html_lang(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    pub fn role(self, role: Role) -> &'static str {
        match role {
            Role::Admin => self.t("管理员", "Administrator"),
            Role::FacilityManager => self.t("机构负责人", "Facility manager"),
            Role::SubsidyClerk => self.t("补贴经办人", "Subsidy clerk"),
            Role::SubsidyApprover => self.t("补贴审批人", "Subsidy approver"),
            Role::Accountant => self.t("会计", "Accountant"),
            Role::Auditor => self.t("审计", "Auditor"),
        }
    }
}

/// The query's `lang`, else the cookie's, else Chinese.
pub fn lang_of(parts: &Parts) -> Lang {
    let from_query = parts.uri.query().and_then(|query| {
        query.split('&').filter_map(|pair| pair.split_once('=')).find(|(key, _)| *key == "lang").map(|(_, v)| v)
    });
    from_query
        .and_then(Lang::parse)
        .or_else(|| super::session::cookie(&parts.headers, LANG_COOKIE).and_then(Lang::parse))
        .unwrap_or_default()
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(lang_of(parts))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(Some(lang_of(parts)))
    }
}

/// `¥1,234.50` (and `-¥1,234.50`) from fen, in integer arithmetic.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let magnitude = fen.unsigned_abs();
    let (whole, cents) = (magnitude / 100, magnitude % 100);
    let digits = whole.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}¥{grouped}.{cents:02}")
}

/// `2026-11-28 09:15:02`, Asia/Shanghai.
pub fn shanghai_time(at: UnixMs) -> String {
    let instant = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.0) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(SHANGHAI);
    let (date, clock) = (instant.date(), instant.time());
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        clock.hour(),
        clock.minute(),
        clock.second()
    )
}

/// Which part of the console a page belongs to, for the navigation's highlight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    Home,
    Reconciliation,
    Subsidies,
    Facilities,
}

/// The navigation entries a role may use: exactly the areas whose use cases it may call.
pub fn areas_for(principal: &Principal) -> Vec<Area> {
    let mut areas = Vec::new();
    if principal.may(Action::ReadReconciliation) {
        areas.push(Area::Reconciliation);
    }
    if principal.may(Action::ReadBatches) {
        areas.push(Area::Subsidies);
    }
    if principal.may(Action::ReadPayments) || principal.may(Action::ManageTerminals) {
        areas.push(Area::Facilities);
    }
    areas
}

fn area_link(area: Area, lang: Lang) -> (&'static str, &'static str) {
    match area {
        Area::Home => ("/console", lang.t("首页", "Home")),
        Area::Reconciliation => ("/console/reconciliation", lang.t("对账", "Reconciliation")),
        Area::Subsidies => ("/console/subsidies", lang.t("补贴发放", "Subsidies")),
        Area::Facilities => ("/console/facilities", lang.t("机构", "Facilities")),
    }
}

/// Who is looking at a page, for its shell.
pub struct Viewer<'a> {
    pub principal: &'a Principal,
    pub csrf_token: &'a str,
    pub lang: Lang,
}

/// The page shell: header with navigation, language switch and sign-out, then `body`.
pub fn page(viewer: Option<&Viewer<'_>>, lang: Lang, area: Area, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.html_lang()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · carepay" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                header.top {
                    a.brand href="/console" { "carepay" }
                    @if let Some(viewer) = viewer {
                        nav {
                            @for entry in std::iter::once(Area::Home).chain(areas_for(viewer.principal)) {
                                @let (href, label) = area_link(entry, lang);
                                a.active[entry == area] href=(href) { (label) }
                            }
                        }
                        span.who { (lang.role(viewer.principal.role)) }
                        form.inline method="post" action="/console/sign-out" {
                            (csrf_field(viewer.csrf_token))
                            button type="submit" id="sign-out" { (lang.t("退出", "Sign out")) }
                        }
                    }
                    span.langs {
                        a href="?lang=zh" { "中文" } " | " a href="?lang=en" { "English" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden field every console form carries.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// Why a console request was refused, on its way to becoming a page.
#[derive(Debug)]
pub enum PageError {
    /// A use case refused; shown with the same status the REST API gives.
    Refused(Error),
    /// A form without a valid CSRF token, or from another origin.
    Forgery,
    /// A request no console form would send.
    BadRequest(String),
    /// A console address with no page.
    NoSuchPage,
}

impl From<Error> for PageError {
    fn from(error: Error) -> Self {
        PageError::Refused(error)
    }
}

pub type PageResult<T = Response> = Result<T, PageError>;

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, code, detail) = match self {
            PageError::Refused(Error::Unauthenticated) => {
                return Redirect::to("/console/sign-in").into_response();
            }
            PageError::Refused(error) => {
                let detail = match &error {
                    Error::Internal(_) => String::from("something went wrong on our side; it has been logged"),
                    other => other.to_string(),
                };
                // The REST API's mapping decides the status, so a page and its API route agree.
                let api = ApiError::from(error);
                let code = api.code();
                (api.into_response().status(), code, detail)
            }
            PageError::Forgery => (
                StatusCode::FORBIDDEN,
                "CSRF",
                String::from("the form was not sent from this console session; reload the page and try again"),
            ),
            PageError::BadRequest(detail) => (StatusCode::BAD_REQUEST, "BAD_REQUEST", detail),
            PageError::NoSuchPage => (
                StatusCode::NOT_FOUND,
                "NO_SUCH_PAGE",
                String::from("没有这个页面，请从首页进入 / There is no such page; start from the console's home"),
            ),
        };
        let body = html! {
            (DOCTYPE)
            html lang="zh-CN" {
                head {
                    meta charset="utf-8";
                    title { (status.as_u16()) " · carepay" }
                    link rel="stylesheet" href="/console/assets/console.css";
                }
                body {
                    main {
                        h1 { "无法完成 / Not done" }
                        p.error { code { (code) } " " (detail) }
                        p { a href="/console" { "返回首页 / Back to the console" } }
                    }
                }
            }
        };
        (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_grouped_yuan_with_two_decimals() {
        assert_eq!(yuan(0), "¥0.00");
        assert_eq!(yuan(5), "¥0.05");
        assert_eq!(yuan(123_450), "¥1,234.50");
        assert_eq!(yuan(100_000_000), "¥1,000,000.00");
        assert_eq!(yuan(-123_450), "-¥1,234.50");
        assert_eq!(yuan(i64::MIN), "-¥92,233,720,368,547,758.08");
    }

    #[test]
    fn times_are_shown_in_shanghai() {
        assert_eq!(shanghai_time(UnixMs(1_795_828_502_000)), "2026-11-28 09:15:02");
    }
}
