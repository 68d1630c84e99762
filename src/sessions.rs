//! Use cases of web-console sessions: signing in with a back-office token, finding the
//! principal behind a session cookie, signing out.
//!
//! A session is a row keyed by the SHA-256 of a random id (the cookie). Every request reads
//! the row and the token it stands for, so signing out, an expired session and a revoked or
//! expired token all take effect at once on every instance.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::app::App;
use crate::domain::access::Principal;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::store::console::StoredSession;

/// How long a console session lasts after sign-in (never longer than its token).
pub const CONSOLE_SESSION_LIFETIME_MS: i64 = 12 * 3_600_000;

/// Longest session id accepted from a cookie; anything longer is not one of ours.
const MAX_SESSION_ID_LEN: usize = 64;

/// A signed-in console user: who they are and the form token their forms must carry.
pub struct ConsoleSession {
    pub principal: Principal,
    pub csrf_token: String,
}

/// A session just opened: the cookie value (shown once, to be set on the browser) and the
/// principal it stands for.
pub struct OpenedSession {
    pub session_id: String,
    pub principal: Principal,
    pub expires_at: UnixMs,
}

impl std::fmt::Debug for OpenedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedSession").field("principal", &self.principal).finish_non_exhaustive()
    }
}

/// 32 random bytes, URL-safe base64: session ids, form tokens.
pub fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Internal(anyhow::anyhow!("the system random generator failed")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

impl App {
    /// Sign in from `client` (its address): the token is checked exactly as the API checks
    /// a bearer token, failures counted against the same per-client throttle.
    pub async fn open_console_session(&self, client: &str, presented_token: &str) -> Result<OpenedSession> {
        let principal = self.sign_in_with_token(client, presented_token.trim(), None).await?;
        let token = self.store.token(&principal.token_id).await?.ok_or(Error::Unauthenticated)?;
        let now = UnixMs::now();
        let lifetime_end = UnixMs(now.0 + CONSOLE_SESSION_LIFETIME_MS);
        let expires_at = token.expires_at.map_or(lifetime_end, |token_end| token_end.min(lifetime_end));
        let session_id = random_token()?;
        let stored = StoredSession { token_id: principal.token_id.clone(), csrf_token: random_token()?, expires_at };
        self.store.insert_console_session(&sha256_hex(&session_id), &stored, now).await?;
        Ok(OpenedSession { session_id, principal, expires_at })
    }

    /// The principal behind a session cookie, or `Unauthenticated` when the session is
    /// unknown, expired or signed out, or its token is revoked or expired.
    pub async fn console_session(&self, session_id: &str, request_id: Option<String>) -> Result<ConsoleSession> {
        if session_id.is_empty() || session_id.len() > MAX_SESSION_ID_LEN {
            return Err(Error::Unauthenticated);
        }
        let stored = self.store.console_session(&sha256_hex(session_id)).await?.ok_or(Error::Unauthenticated)?;
        let now = UnixMs::now();
        if now >= stored.expires_at {
            return Err(Error::Unauthenticated);
        }
        let token = self.store.token(&stored.token_id).await?.ok_or(Error::Unauthenticated)?;
        if !token.is_live(now) {
            return Err(Error::Unauthenticated);
        }
        self.token_rate
            .check(token.id.as_str(), std::time::Instant::now())
            .map_err(|retry_after_s| Error::RateLimited { retry_after_s })?;
        let principal = Principal { token_id: token.id.clone(), role: token.role, scope: token.scope(), request_id };
        Ok(ConsoleSession { principal, csrf_token: stored.csrf_token })
    }

    /// Sign out: the session is gone for every instance from the next request on.
    pub async fn close_console_session(&self, session_id: &str) -> Result<()> {
        if session_id.is_empty() || session_id.len() > MAX_SESSION_ID_LEN {
            return Ok(());
        }
        Ok(self.store.delete_console_session(&sha256_hex(session_id)).await?)
    }
}
