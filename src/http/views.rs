//! Wire shapes of the directory and tokens: what the back-office API returns. Times are
//! RFC 3339 in Asia/Shanghai; ids are prefixed strings.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::access::ApiToken;
use crate::domain::directory::{Facility, FacilityKind, Organisation, Region, RegionLevel, Terminal, TerminalStatus};
use crate::domain::role::Role;
use crate::domain::time::UnixMs;

/// One page of a listing. Pass `next_after` back as `after` to get the next page; it is
/// absent on the last page.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    pub fn new<R>(records: Vec<R>, requested: u32, cursor: impl Fn(&R) -> String, view: impl Fn(R) -> T) -> Page<T> {
        let next_after = if records.len() >= requested as usize { records.last().map(&cursor) } else { None };
        Page { items: records.into_iter().map(view).collect(), next_after }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RegionView {
    #[schema(example = "reg_0192f1ab0192f1ab0192f1ab0192f1ab")]
    pub id: String,
    pub parent_id: Option<String>,
    pub level: RegionLevel,
    pub name: String,
    pub created_at: String,
}

impl From<Region> for RegionView {
    fn from(region: Region) -> Self {
        RegionView {
            id: region.id.into_string(),
            parent_id: region.parent_id.map(|id| id.into_string()),
            level: region.level,
            name: region.name.as_str().to_owned(),
            created_at: region.created_at.to_rfc3339_shanghai(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OrganisationView {
    pub id: String,
    pub region_id: String,
    pub name: String,
    pub created_at: String,
}

impl From<Organisation> for OrganisationView {
    fn from(organisation: Organisation) -> Self {
        OrganisationView {
            id: organisation.id.into_string(),
            region_id: organisation.region_id.into_string(),
            name: organisation.name.as_str().to_owned(),
            created_at: organisation.created_at.to_rfc3339_shanghai(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct FacilityView {
    pub id: String,
    pub region_id: String,
    pub organisation_id: Option<String>,
    pub name: String,
    pub kind: FacilityKind,
    #[schema(example = "0021000000000001")]
    pub merchant_wallet_id: String,
    /// Increases with every change.
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Facility> for FacilityView {
    fn from(facility: Facility) -> Self {
        FacilityView {
            id: facility.id.into_string(),
            region_id: facility.region_id.into_string(),
            organisation_id: facility.organisation_id.map(|id| id.into_string()),
            name: facility.name.as_str().to_owned(),
            kind: facility.kind,
            merchant_wallet_id: facility.merchant_wallet_id.as_str().to_owned(),
            version: facility.version,
            created_at: facility.created_at.to_rfc3339_shanghai(),
            updated_at: facility.updated_at.to_rfc3339_shanghai(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TerminalView {
    pub id: String,
    pub facility_id: String,
    pub label: String,
    pub status: TerminalStatus,
    /// Id of the key requests must currently be signed with.
    pub key_id: String,
    /// Base64 of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Terminal> for TerminalView {
    fn from(terminal: Terminal) -> Self {
        TerminalView {
            id: terminal.id.into_string(),
            facility_id: terminal.facility_id.into_string(),
            label: terminal.label.as_str().to_owned(),
            status: terminal.status,
            key_id: terminal.active_key_id.into_string(),
            public_key: terminal.public_key.as_base64().to_owned(),
            version: terminal.version,
            created_at: terminal.created_at.to_rfc3339_shanghai(),
            updated_at: terminal.updated_at.to_rfc3339_shanghai(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Live,
    Expired,
    Revoked,
}

#[derive(Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub role: Role,
    /// The region the token is confined to; absent for a token that sees every region.
    pub region_id: Option<String>,
    pub label: String,
    pub status: TokenStatus,
    pub created_by: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<ApiToken> for TokenView {
    fn from(token: ApiToken) -> Self {
        let status = if token.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if token.is_live(UnixMs::now()) {
            TokenStatus::Live
        } else {
            TokenStatus::Expired
        };
        TokenView {
            id: token.id.into_string(),
            role: token.role,
            region_id: token.scope_region_id.map(|id| id.into_string()),
            label: token.label.as_str().to_owned(),
            status,
            created_by: token.created_by.map(|id| id.into_string()),
            created_at: token.created_at.to_rfc3339_shanghai(),
            expires_at: token.expires_at.map(UnixMs::to_rfc3339_shanghai),
            revoked_at: token.revoked_at.map(UnixMs::to_rfc3339_shanghai),
        }
    }
}

/// A token as issued: the only time its secret is ever shown.
#[derive(Serialize, ToSchema)]
pub struct IssuedTokenView {
    /// The bearer secret. Store it now; carepay keeps only a digest.
    pub secret: String,
    pub token: TokenView,
}
