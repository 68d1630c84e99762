//! Use cases for back-office credentials: issuing, checking, listing and revoking tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::app::{App, require, within_scope};
use crate::directory::{PageRequest, scope_filter};
use crate::domain::access::{ApiToken, Principal};
use crate::domain::directory::{Name, Scope};
use crate::domain::ids::{RegionId, TokenId};
use crate::domain::role::{Action, Role};
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::store::StoreError;
use crate::store::audit::{Actor, AuditEntry};

/// Every token starts with this, so a leaked one is easy to recognise in a secret scanner.
pub const TOKEN_PREFIX: &str = "cpt_";
/// Longest token lifetime a caller may ask for.
pub const MAX_TOKEN_LIFETIME_DAYS: u32 = 3_650;

/// A freshly issued token: the record and, this once, the secret itself.
pub struct IssuedToken {
    pub token: ApiToken,
    pub secret: Secret,
}

/// A bearer secret. `Debug` never prints it.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub struct NewToken {
    pub role: Role,
    pub scope_region_id: Option<RegionId>,
    pub label: Name,
    pub lifetime_days: Option<u32>,
}

fn sha256_hex(secret: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()))
}

fn generate_secret() -> Result<Secret> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Internal(anyhow::anyhow!("the system random generator failed")))?;
    Ok(Secret(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))))
}

impl App {
    /// Issue a token without a caller: the bootstrap path behind `carepay token create`,
    /// for whoever can already reach the database.
    pub async fn issue_token_unchecked(&self, new: NewToken, created_by: Option<&Principal>) -> Result<IssuedToken> {
        let scope_path = match &new.scope_region_id {
            None => None,
            Some(region_id) => Some(
                self.store
                    .region(region_id)
                    .await?
                    .ok_or_else(|| Error::invalid("region", "UNKNOWN_REGION", "no such region"))?
                    .path,
            ),
        };
        let now = UnixMs::now();
        let secret = generate_secret()?;
        let token = ApiToken {
            id: TokenId::generate(),
            role: new.role,
            scope_region_id: new.scope_region_id,
            scope_path,
            label: new.label,
            created_by: created_by.map(|principal| principal.token_id.clone()),
            created_at: now,
            expires_at: new.lifetime_days.map(|days| UnixMs(now.0 + i64::from(days) * 86_400_000)),
            revoked_at: None,
        };
        let actor = created_by.map(Actor::Token).unwrap_or(Actor::CommandLine);
        let audit = AuditEntry {
            actor,
            action: "token.issued",
            object_kind: "token",
            object_id: token.id.as_str(),
            region_path: token.scope_path.as_ref(),
            summary: serde_json::json!({
                "role": token.role.as_str(),
                "region_id": token.scope_region_id.as_ref().map(|id| id.as_str()),
                "label": token.label.as_str(),
                "expires_at_ms": token.expires_at.map(|at| at.0),
            }),
        };
        self.store.insert_token(&token, &sha256_hex(secret.expose()), &audit).await?;
        Ok(IssuedToken { token, secret })
    }

    /// Issue a token on behalf of an admin; it can grant no wider scope than the admin has.
    pub async fn issue_token(&self, principal: &Principal, new: NewToken) -> Result<IssuedToken> {
        require(principal, Action::ManageTokens)?;
        if new.lifetime_days.is_some_and(|days| days == 0 || days > MAX_TOKEN_LIFETIME_DAYS) {
            return Err(Error::invalid(
                "lifetime_days",
                "INVALID_LIFETIME",
                format!("must be between 1 and {MAX_TOKEN_LIFETIME_DAYS}"),
            ));
        }
        match &new.scope_region_id {
            None if principal.scope != Scope::All => {
                return Err(Error::invalid(
                    "region_id",
                    "SCOPE_REQUIRED",
                    "a token you issue must be scoped to a region within your own scope",
                ));
            }
            None => {}
            Some(region_id) => {
                within_scope(principal, self.store.region(region_id).await?, "region", |r| &r.path)?;
            }
        }
        self.issue_token_unchecked(new, Some(principal)).await
    }

    /// Resolve a presented bearer token to a principal, or refuse it.
    pub async fn authenticate(&self, presented: &str, request_id: Option<String>) -> Result<Principal> {
        if !presented.starts_with(TOKEN_PREFIX) || presented.len() > 128 {
            return Err(Error::Unauthenticated);
        }
        // Looking up by digest compares no secret bytes in variable time: the digest of an
        // unknown token says nothing useful about any stored one.
        let token = self.store.token_by_sha256(&sha256_hex(presented)).await?.ok_or(Error::Unauthenticated)?;
        if !token.is_live(UnixMs::now()) {
            return Err(Error::Unauthenticated);
        }
        self.token_rate
            .check(token.id.as_str(), std::time::Instant::now())
            .map_err(|retry_after_s| Error::RateLimited { retry_after_s })?;
        Ok(Principal { token_id: token.id.clone(), role: token.role, scope: token.scope(), request_id })
    }

    /// [`App::authenticate`] for a client signing in from `client` (its address): a client
    /// with too many recent failures is refused before its token is even looked up, and
    /// only failures count, so callers with valid tokens are never slowed.
    pub async fn sign_in_with_token(
        &self,
        client: &str,
        presented: &str,
        request_id: Option<String>,
    ) -> Result<Principal> {
        self.sign_in_failures
            .allows(client, std::time::Instant::now())
            .map_err(|retry_after_s| Error::SignInThrottled { retry_after_s })?;
        let outcome = self.authenticate(presented, request_id).await;
        if matches!(outcome, Err(Error::Unauthenticated)) {
            // Spent whatever the bucket holds; the next attempt is the one refused.
            let _ = self.sign_in_failures.check(client, std::time::Instant::now());
        }
        outcome
    }

    pub async fn tokens(&self, principal: &Principal, page: &PageRequest) -> Result<Vec<ApiToken>> {
        require(principal, Action::ManageTokens)?;
        Ok(self.store.list_tokens(scope_filter(principal), self.page(page)).await?)
    }

    fn token_visible(principal: &Principal, token: Option<ApiToken>) -> Result<ApiToken> {
        match token {
            Some(token) if principal.scope.covers(&token.scope()) => Ok(token),
            None if principal.scope == Scope::All => Err(Error::NotFound { what: "token" }),
            _ => Err(Error::OutOfScope),
        }
    }

    pub async fn token(&self, principal: &Principal, id: &TokenId) -> Result<ApiToken> {
        require(principal, Action::ManageTokens)?;
        Self::token_visible(principal, self.store.token(id).await?)
    }

    /// Revoke a token; it is refused on every instance from the next request on.
    /// Revoking twice answers with the token as it is.
    pub async fn revoke_token(&self, principal: &Principal, id: &TokenId) -> Result<ApiToken> {
        require(principal, Action::ManageTokens)?;
        let token = Self::token_visible(principal, self.store.token(id).await?)?;
        let audit = AuditEntry {
            actor: Actor::Token(principal),
            action: "token.revoked",
            object_kind: "token",
            object_id: id.as_str(),
            region_path: token.scope_path.as_ref(),
            summary: serde_json::json!({"role": token.role.as_str(), "label": token.label.as_str()}),
        };
        match self.store.revoke_token(id, UnixMs::now(), &audit).await {
            Ok(()) | Err(StoreError::GuardFailed) => {}
            Err(other) => return Err(other.into()),
        }
        self.token(principal, id).await
    }
}
