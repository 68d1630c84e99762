//! Signing in and out, the session cookie, and the checks every console form passes: same
//! origin and a CSRF token compared in constant time.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Multipart, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ConsoleSettings;
use super::layout::{Area, Lang, PageError, PageResult, Viewer, csrf_field, lang_of, page};
use crate::domain::access::Principal;
use crate::error::Error;
use crate::http::AppState;
use crate::http::client_addr::client_key;
use crate::sessions::random_token;

/// The session cookie: a random id whose SHA-256 names the session row.
pub const SESSION_COOKIE: &str = "carepay_console_session";
/// Before sign-in there is no session to hold a CSRF token, so the sign-in form's token is
/// also set in this short-lived cookie and the two must match (double submit).
const SIGN_IN_COOKIE: &str = "carepay_console_sign_in";
const SIGN_IN_COOKIE_MAX_AGE_S: u32 = 1_800;
/// Largest urlencoded console form accepted (notes, names: a few kilobytes at most).
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Text fields a multipart console form may have, and the size of each.
const MAX_MULTIPART_TEXT_FIELDS: usize = 16;
const MAX_MULTIPART_TEXT_BYTES: usize = 4 * 1024;

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value for the console: HttpOnly, SameSite=Strict, Path=/console, and
/// Secure when the console is served over TLS.
pub fn set_cookie(settings: &ConsoleSettings, name: &str, value: &str, max_age_s: Option<u32>) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if let Some(max_age_s) = max_age_s {
        cookie.push_str(&format!("; Max-Age={max_age_s}"));
    }
    if settings.secure_cookie {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// Equal lengths and bytes, in time that depends only on the length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Refuse a form posted from another site: a browser names the page's origin in `Origin`
/// (and its relation in `Sec-Fetch-Site`); it must be this host.
fn check_same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|value| value.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(PageError::Forgery);
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).ok_or(PageError::Forgery)?;
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .ok_or(PageError::Forgery)?;
    if origin_host.eq_ignore_ascii_case(host) { Ok(()) } else { Err(PageError::Forgery) }
}

/// A signed-in console user, from the session cookie. Without a valid session the request
/// is sent to the sign-in page.
pub struct SignedIn {
    pub principal: Principal,
    pub csrf_token: String,
    pub lang: Lang,
    session_id: String,
}

impl SignedIn {
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer { principal: &self.principal, csrf_token: &self.csrf_token, lang: self.lang }
    }

    pub(crate) fn check_csrf(&self, presented: &str) -> Result<(), PageError> {
        if constant_time_eq(presented.as_bytes(), self.csrf_token.as_bytes()) {
            Ok(())
        } else {
            Err(PageError::Forgery)
        }
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let session_id = cookie(&parts.headers, SESSION_COOKIE).ok_or(Error::Unauthenticated)?.to_owned();
        let request_id = parts.headers.get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned);
        let session = state.app.console_session(&session_id, request_id).await?;
        Ok(SignedIn { principal: session.principal, csrf_token: session.csrf_token, lang: lang_of(parts), session_id })
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// An urlencoded form of a signed-in user that passed the origin and CSRF checks.
pub struct CsrfForm<T> {
    pub signed_in: SignedIn,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        check_same_origin(&parts.headers)?;
        let signed_in = SignedIn::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| PageError::BadRequest(String::from("the form is larger than allowed")))?;
        let CsrfOnly { csrf } = serde_urlencoded::from_bytes(&bytes).map_err(|_| PageError::Forgery)?;
        signed_in.check_csrf(&csrf)?;
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|error| PageError::BadRequest(error.to_string()))?;
        Ok(CsrfForm { signed_in, form })
    }
}

/// A multipart form (a file and a few text fields) of a signed-in user that passed the
/// origin and CSRF checks. The file is bounded by the larger of the statement and batch
/// limits; each use case checks its own.
pub struct CsrfUpload {
    pub signed_in: SignedIn,
    pub fields: HashMap<String, String>,
    pub file: Vec<u8>,
}

impl CsrfUpload {
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map(String::as_str).unwrap_or_default()
    }
}

/// A signed-in user's multipart form, after the origin check: the fields are still to be read.
pub async fn signed_in_multipart(request: Request, state: &AppState) -> Result<(SignedIn, Multipart), PageError> {
    let (mut parts, body) = request.into_parts();
    check_same_origin(&parts.headers)?;
    let signed_in = SignedIn::from_request_parts(&mut parts, state).await?;
    let request = Request::from_parts(parts, body);
    let multipart =
        Multipart::from_request(request, state).await.map_err(|error| PageError::BadRequest(error.body_text()))?;
    Ok((signed_in, multipart))
}

pub fn unreadable(error: axum::extract::multipart::MultipartError) -> PageError {
    PageError::BadRequest(error.body_text())
}

/// One text field of a multipart form (bounded), added to `fields` (bounded in number).
pub async fn read_text_field(
    mut field: axum::extract::multipart::Field<'_>,
    fields: &mut HashMap<String, String>,
) -> Result<(), PageError> {
    let name = field.name().unwrap_or_default().to_owned();
    if fields.len() >= MAX_MULTIPART_TEXT_FIELDS {
        return Err(PageError::BadRequest(String::from("too many form fields")));
    }
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
        if value.len() + chunk.len() > MAX_MULTIPART_TEXT_BYTES {
            return Err(PageError::BadRequest(format!("the field {name} is too long")));
        }
        value.extend_from_slice(&chunk);
    }
    let value = String::from_utf8(value).map_err(|_| PageError::BadRequest(format!("{name}: not UTF-8")))?;
    fields.insert(name, value);
    Ok(())
}

impl FromRequest<AppState> for CsrfUpload {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (signed_in, mut multipart) = signed_in_multipart(request, state).await?;
        let max_file_bytes = state
            .app
            .reconciliation
            .max_statement_bytes
            .max(usize::try_from(state.app.disbursement.max_upload_bytes).unwrap_or(usize::MAX));
        let mut fields = HashMap::new();
        let mut file = Vec::new();
        while let Some(mut field) = multipart.next_field().await.map_err(unreadable)? {
            if field.name() == Some("file") {
                while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
                    if file.len() + chunk.len() > max_file_bytes {
                        return Err(PageError::BadRequest(String::from("the file is larger than allowed")));
                    }
                    file.extend_from_slice(&chunk);
                }
                continue;
            }
            read_text_field(field, &mut fields).await?;
        }
        signed_in.check_csrf(fields.get("csrf").map(String::as_str).unwrap_or_default())?;
        Ok(CsrfUpload { signed_in, fields, file })
    }
}

fn sign_in_page(lang: Lang, form_token: &str, problem: Option<&str>) -> maud::Markup {
    let body = html! {
        @if let Some(problem) = problem {
            p.error role="alert" { (problem) }
        }
        form.card method="post" action="/console/sign-in" {
            (csrf_field(form_token))
            label for="token" { (lang.t("API 令牌", "API token")) }
            input #token type="password" name="token" autocomplete="off" required placeholder="cpt_...";
            button type="submit" id="sign-in" { (lang.t("登录", "Sign in")) }
        }
        p.hint {
            (lang.t("令牌由管理员签发；控制台与 API 使用相同的角色与区域范围。",
                    "Tokens are issued by an administrator; the console uses the same roles and region scopes as the API."))
        }
    };
    page(None, lang, Area::Home, lang.t("登录 carepay 控制台", "Sign in to the carepay console"), body)
}

pub async fn sign_in_form(Extension(settings): Extension<ConsoleSettings>, lang: Lang) -> PageResult {
    let form_token = random_token()?;
    let cookie = set_cookie(&settings, SIGN_IN_COOKIE, &form_token, Some(SIGN_IN_COOKIE_MAX_AGE_S));
    Ok(([(header::SET_COOKIE, cookie)], sign_in_page(lang, &form_token, None)).into_response())
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

pub async fn sign_in(
    State(state): State<AppState>,
    Extension(settings): Extension<ConsoleSettings>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    lang: Lang,
    body: Bytes,
) -> PageResult {
    check_same_origin(&headers)?;
    let form: SignInForm = serde_urlencoded::from_bytes(&body).map_err(|_| PageError::Forgery)?;
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(form.csrf.as_bytes(), expected.as_bytes()) {
        return Err(PageError::Forgery);
    }
    let client = client_key(state.trusted_proxies.client(peer.map(|Extension(ConnectInfo(addr))| addr), &headers));
    match state.app.open_console_session(&client, &form.token).await {
        Ok(opened) => {
            let max_age_s =
                u32::try_from((opened.expires_at.0 - crate::domain::time::UnixMs::now().0) / 1_000).unwrap_or(0);
            let session = set_cookie(&settings, SESSION_COOKIE, &opened.session_id, Some(max_age_s));
            let cleared = set_cookie(&settings, SIGN_IN_COOKIE, "", Some(0));
            let mut response = Redirect::to("/console").into_response();
            response.headers_mut().append(header::SET_COOKIE, session);
            response.headers_mut().append(header::SET_COOKIE, cleared);
            Ok(response)
        }
        Err(Error::Unauthenticated) => {
            // A fresh form token for the next try; the refused token is never echoed.
            let form_token = random_token()?;
            let cookie = set_cookie(&settings, SIGN_IN_COOKIE, &form_token, Some(SIGN_IN_COOKIE_MAX_AGE_S));
            let problem = lang.t("令牌无效、已过期或已吊销。", "The token is unknown, expired or revoked.");
            Ok((
                StatusCode::UNAUTHORIZED,
                [(header::SET_COOKIE, cookie)],
                sign_in_page(lang, &form_token, Some(problem)),
            )
                .into_response())
        }
        Err(Error::SignInThrottled { retry_after_s }) => {
            // The form stays usable once the wait is over; its token is kept.
            let problem = lang.t("登录失败次数过多，请稍后再试。", "Too many failed sign-ins; try again shortly.");
            Ok((
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, HeaderValue::from(retry_after_s))],
                sign_in_page(lang, expected, Some(problem)),
            )
                .into_response())
        }
        Err(other) => Err(other.into()),
    }
}

#[derive(Deserialize)]
pub struct NoFields {}

pub async fn sign_out(
    State(state): State<AppState>,
    Extension(settings): Extension<ConsoleSettings>,
    CsrfForm { signed_in, .. }: CsrfForm<NoFields>,
) -> PageResult {
    state.app.close_console_session(&signed_in.session_id).await?;
    let mut response = Redirect::to("/console/sign-in").into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&settings, SESSION_COOKIE, "", Some(0)));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn a_form_from_another_origin_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_same_origin(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(check_same_origin(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(check_same_origin(&headers).is_err());
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_same_origin(&headers).is_err());
    }
}
