//! The back-office web console, served by carepay itself under `/console` on the API's port.
//! Server-rendered HTML (maud templates, escaped by construction); every page calls the same
//! use cases as the REST handlers with the principal of the signed-in token, so roles and
//! region scopes hold exactly as they do for the API. The only script is the live progress
//! of a running batch; charts are inline SVG drawn here.
//!
//! - `session`: sign-in with an API token, the session cookie, same-origin and CSRF checks
//! - `layout`: language, formats (¥1,234.50, Asia/Shanghai), the page shell, error pages
//! - `charts`: inline SVG charts
//! - `reconciliation`, `disbursement`, `facility`: one file per area

pub mod charts;
pub mod disbursement;
pub mod facility;
pub mod layout;
pub mod reconciliation;
pub mod session;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::html;

use crate::domain::role::Action;
use crate::http::AppState;
use layout::{Area, LANG_COOKIE, Lang, PageError, PageResult, areas_for, page};
use session::SignedIn;

/// How the console is served; from config.
#[derive(Clone, Debug, Default)]
pub struct ConsoleSettings {
    /// Mark cookies `Secure`: set when the console is reached over https (directly or
    /// behind a TLS-terminating proxy).
    pub secure_cookie: bool,
}

const STYLESHEET: &str = include_str!("assets/console.css");
const PROGRESS_SCRIPT: &str = include_str!("assets/progress.js");

/// Pages may load only this origin's stylesheet and script and post only to this origin;
/// nothing may frame them.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router(settings: ConsoleSettings) -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/sign-in", get(session::sign_in_form).post(session::sign_in))
        .route("/console/sign-out", post(session::sign_out))
        .route(
            "/console/assets/console.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET) }),
        )
        .route(
            "/console/assets/progress.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], PROGRESS_SCRIPT) }),
        )
        .merge(reconciliation::router())
        .merge(disbursement::router())
        .merge(facility::router())
        // Below every page above: an unknown console address is a console page, not the API's JSON.
        .route("/console/{*unknown}", get(|| async { PageError::NoSuchPage }))
        // A person opening the service's address in a browser lands on the console.
        .route("/", get(|| async { Redirect::to("/console") }))
        .layer(middleware::from_fn(console_headers))
        .layer(Extension(settings))
}

/// Security headers on every console response, and the language cookie when a page was
/// asked for with `?lang=`.
async fn console_headers(Extension(settings): Extension<ConsoleSettings>, request: Request, next: Next) -> Response {
    let chosen = request
        .uri()
        .query()
        .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("lang=")))
        .and_then(Lang::parse);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    if let Some(lang) = chosen {
        headers.append(header::SET_COOKIE, session::set_cookie(&settings, LANG_COOKIE, lang.as_str(), None));
    }
    response
}

async fn home(signed_in: SignedIn) -> PageResult {
    let lang = signed_in.lang;
    let principal = &signed_in.principal;
    let areas = areas_for(principal);
    let body = html! {
        p { (lang.t("您的角色：", "Your role: ")) strong #role { (lang.role(principal.role)) } }
        ul.areas {
            @for area in &areas {
                @match area {
                    Area::Reconciliation => li { a href="/console/reconciliation" { (lang.t("对账", "Reconciliation")) }
                        " — " (lang.t("营业日、差错处理、关账", "business days, discrepancies, closing the day")) },
                    Area::Subsidies => li { a href="/console/subsidies" { (lang.t("补贴发放", "Subsidies")) }
                        " — " (lang.t("项目预算、批次上传、审批与发放进度", "programme budgets, batch upload, approval and progress")) },
                    Area::Facilities => li { a href="/console/facilities" { (lang.t("机构", "Facilities")) }
                        " — " (lang.t("当日收款与退款、终端、回调", "today's payments and refunds, terminals, callbacks")) },
                    Area::Home => {},
                }
            }
        }
        @if areas.is_empty() {
            p.hint { (lang.t("您的角色在控制台中没有可用页面；请使用 API。", "Your role has no console pages; use the API.")) }
        }
        @if principal.may(Action::ReadAudit) {
            p.hint { (lang.t("审计日志请通过 API 查看（/v1/audit）。", "Read the audit trail through the API (/v1/audit).")) }
        }
    };
    Ok(page(Some(&signed_in.viewer()), lang, Area::Home, lang.t("carepay 控制台", "carepay console"), body)
        .into_response())
}
