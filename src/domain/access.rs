//! Who is asking: back-office tokens and the principal a valid token stands for.

use super::directory::{Name, RegionPath, Scope};
use super::ids::{RegionId, TokenId};
use super::role::{Action, Role};
use super::time::UnixMs;

/// A back-office bearer token as stored: everything but the secret, of which only a
/// SHA-256 is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub id: TokenId,
    pub role: Role,
    pub scope_region_id: Option<RegionId>,
    /// The path of the scope region, when there is one (joined in from `regions`).
    pub scope_path: Option<RegionPath>,
    pub label: Name,
    pub created_by: Option<TokenId>,
    pub created_at: UnixMs,
    pub expires_at: Option<UnixMs>,
    pub revoked_at: Option<UnixMs>,
}

impl ApiToken {
    pub fn scope(&self) -> Scope {
        match (&self.scope_region_id, &self.scope_path) {
            (Some(id), Some(path)) => Scope::Region { id: id.clone(), path: path.clone() },
            _ => Scope::All,
        }
    }

    /// Usable now: not revoked and not past its expiry.
    pub fn is_live(&self, now: UnixMs) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires| now < expires)
    }
}

/// The authenticated caller of a back-office request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub token_id: TokenId,
    pub role: Role,
    pub scope: Scope,
    /// The request this principal is acting in (`x-request-id`), for the audit trail.
    pub request_id: Option<String>,
}

impl Principal {
    pub fn may(&self, action: Action) -> bool {
        self.role.may(action)
    }

    pub fn sees(&self, path: &RegionPath) -> bool {
        self.scope.contains(path)
    }
}
