//! Use cases for the directory: the region tree, organisations, facilities and terminals.
//! Every call checks the caller's role first, then that each object it names lies within
//! the caller's scope.

use crate::app::{App, require, within_scope};
use crate::domain::access::Principal;
use crate::domain::directory::{
    Facility, FacilityKind, Name, Organisation, PublicKey, Region, RegionLevel, RegionPath, Scope, Terminal,
    TerminalStatus, WalletId,
};
use crate::domain::ids::{Cursor, FacilityId, OrganisationId, RegionId, TerminalId, TerminalKeyId};
use crate::domain::role::Action;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::store::StoreError;
use crate::store::audit::{Actor, AuditEntry};
use crate::store::directory::Page;

pub struct NewRegion {
    pub parent_id: Option<RegionId>,
    pub level: RegionLevel,
    pub name: Name,
}

pub struct NewOrganisation {
    pub region_id: RegionId,
    pub name: Name,
}

pub struct NewFacility {
    pub region_id: RegionId,
    pub organisation_id: Option<OrganisationId>,
    pub name: Name,
    pub kind: FacilityKind,
    pub merchant_wallet_id: WalletId,
}

/// A partial change to a facility; `None` leaves a field as it is.
pub struct FacilityChange {
    pub name: Option<Name>,
    /// `Some(None)` detaches the facility from its organisation.
    pub organisation_id: Option<Option<OrganisationId>>,
}

pub struct NewTerminal {
    pub facility_id: FacilityId,
    pub label: Name,
    pub public_key: PublicKey,
}

/// A listing request as the transports hand it over: cursor and requested size.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    pub after: Option<Cursor>,
    pub limit: Option<u32>,
}

impl App {
    pub(crate) fn page<'a>(&self, request: &'a PageRequest) -> Page<'a> {
        Page {
            after: request.after.as_ref().map(Cursor::as_str),
            limit: request.limit.unwrap_or(50).clamp(1, self.limits.max_page_size),
        }
    }

    pub async fn create_region(&self, principal: &Principal, new: NewRegion) -> Result<Region> {
        require(principal, Action::ManageRegions)?;
        let id = RegionId::generate();
        let path = match &new.parent_id {
            None => {
                if principal.scope != Scope::All {
                    return Err(Error::OutOfScope);
                }
                if new.level != RegionLevel::District {
                    return Err(Error::invalid(
                        "level",
                        "INVALID_LEVEL",
                        "a region without a parent must be a district",
                    ));
                }
                RegionPath::root_of(&id)
            }
            Some(parent_id) => {
                let parent = within_scope(principal, self.store.region(parent_id).await?, "region", |r| &r.path)?;
                match parent.level.child_level() {
                    Some(level) if level == new.level => parent.path.child(&id),
                    Some(level) => {
                        return Err(Error::invalid(
                            "level",
                            "INVALID_LEVEL",
                            format!("a child of a {} must be a {level}", parent.level),
                        ));
                    }
                    None => {
                        return Err(Error::invalid(
                            "parent_id",
                            "INVALID_PARENT",
                            "a village or community has no child regions",
                        ));
                    }
                }
            }
        };
        let region =
            Region { id, parent_id: new.parent_id, level: new.level, name: new.name, path, created_at: UnixMs::now() };
        let audit = audited(principal, "region.created", "region", region.id.as_str(), &region.path)
            .with(serde_json::json!({"name": region.name.as_str(), "level": region.level.as_str()}));
        self.store.insert_region(&region, &audit).await.map_err(|error| match error {
            StoreError::Conflict(_) => Error::conflict("REGION_NAME_TAKEN", "a sibling region already has this name"),
            other => other.into(),
        })?;
        Ok(region)
    }

    pub async fn region(&self, principal: &Principal, id: &RegionId) -> Result<Region> {
        require(principal, Action::ReadDirectory)?;
        within_scope(principal, self.store.region(id).await?, "region", |r| &r.path)
    }

    pub async fn regions(&self, principal: &Principal, page: &PageRequest) -> Result<Vec<Region>> {
        require(principal, Action::ReadDirectory)?;
        Ok(self.store.list_regions(scope_filter(principal), self.page(page)).await?)
    }

    pub async fn create_organisation(&self, principal: &Principal, new: NewOrganisation) -> Result<Organisation> {
        require(principal, Action::ManageRegions)?;
        let region = within_scope(principal, self.store.region(&new.region_id).await?, "region", |r| &r.path)?;
        let organisation = Organisation {
            id: OrganisationId::generate(),
            region_id: region.id,
            region_path: region.path,
            name: new.name,
            created_at: UnixMs::now(),
        };
        let audit = audited(
            principal,
            "organisation.created",
            "organisation",
            organisation.id.as_str(),
            &organisation.region_path,
        )
        .with(serde_json::json!({"name": organisation.name.as_str(), "region_id": organisation.region_id.as_str()}));
        self.store.insert_organisation(&organisation, &audit).await.map_err(|error| match error {
            StoreError::Conflict(_) => Error::conflict(
                "ORGANISATION_NAME_TAKEN",
                "an organisation with this name is already attached to the region",
            ),
            other => other.into(),
        })?;
        Ok(organisation)
    }

    pub async fn organisation(&self, principal: &Principal, id: &OrganisationId) -> Result<Organisation> {
        require(principal, Action::ReadDirectory)?;
        within_scope(principal, self.store.organisation(id).await?, "organisation", |o| &o.region_path)
    }

    pub async fn organisations(&self, principal: &Principal, page: &PageRequest) -> Result<Vec<Organisation>> {
        require(principal, Action::ReadDirectory)?;
        Ok(self.store.list_organisations(scope_filter(principal), self.page(page)).await?)
    }

    pub async fn create_facility(&self, principal: &Principal, new: NewFacility) -> Result<Facility> {
        require(principal, Action::ManageFacilities)?;
        let region = within_scope(principal, self.store.region(&new.region_id).await?, "region", |r| &r.path)?;
        if let Some(organisation_id) = &new.organisation_id {
            self.organisation(principal, organisation_id).await?;
        }
        let now = UnixMs::now();
        let facility = Facility {
            id: FacilityId::generate(),
            region_id: region.id,
            region_path: region.path,
            organisation_id: new.organisation_id,
            name: new.name,
            kind: new.kind,
            merchant_wallet_id: new.merchant_wallet_id,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let audit = audited(principal, "facility.created", "facility", facility.id.as_str(), &facility.region_path)
            .with(serde_json::json!({
                "name": facility.name.as_str(),
                "kind": facility.kind.as_str(),
                "merchant_wallet_id": facility.merchant_wallet_id.as_str(),
            }));
        self.store.insert_facility(&facility, &audit).await.map_err(|error| match error {
            StoreError::Conflict(_) => {
                Error::conflict("WALLET_ALREADY_REGISTERED", "this merchant wallet is already registered to a facility")
            }
            other => other.into(),
        })?;
        Ok(facility)
    }

    pub async fn facility(&self, principal: &Principal, id: &FacilityId) -> Result<Facility> {
        require(principal, Action::ReadDirectory)?;
        within_scope(principal, self.store.facility(id).await?, "facility", |f| &f.region_path)
    }

    pub async fn facilities(&self, principal: &Principal, page: &PageRequest) -> Result<Vec<Facility>> {
        require(principal, Action::ReadDirectory)?;
        Ok(self.store.list_facilities(scope_filter(principal), self.page(page)).await?)
    }

    pub async fn change_facility(
        &self,
        principal: &Principal,
        id: &FacilityId,
        change: FacilityChange,
    ) -> Result<Facility> {
        require(principal, Action::ManageFacilities)?;
        let current = self.facility(principal, id).await?;
        if let Some(Some(organisation_id)) = &change.organisation_id {
            self.organisation(principal, organisation_id).await?;
        }
        let changed = Facility {
            name: change.name.unwrap_or_else(|| current.name.clone()),
            organisation_id: change.organisation_id.unwrap_or_else(|| current.organisation_id.clone()),
            version: current.version + 1,
            updated_at: UnixMs::now(),
            ..current.clone()
        };
        let audit = audited(principal, "facility.changed", "facility", changed.id.as_str(), &changed.region_path)
            .with(serde_json::json!({
                "before": {"name": current.name.as_str(), "organisation_id": current.organisation_id.as_ref().map(|id| id.as_str())},
                "after": {"name": changed.name.as_str(), "organisation_id": changed.organisation_id.as_ref().map(|id| id.as_str())},
            }));
        self.store.update_facility(&changed, current.version, &audit).await.map_err(|error| match error {
            StoreError::GuardFailed => {
                Error::conflict("CONCURRENT_CHANGE", "the facility changed meanwhile; read it again and retry")
            }
            other => other.into(),
        })?;
        Ok(changed)
    }

    pub async fn register_terminal(&self, principal: &Principal, new: NewTerminal) -> Result<Terminal> {
        require(principal, Action::ManageTerminals)?;
        let facility = self.facility(principal, &new.facility_id).await?;
        let now = UnixMs::now();
        let terminal = Terminal {
            id: TerminalId::generate(),
            facility_id: facility.id,
            merchant_wallet_id: facility.merchant_wallet_id,
            region_path: facility.region_path,
            label: new.label,
            status: TerminalStatus::Active,
            active_key_id: TerminalKeyId::generate(),
            public_key: new.public_key,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let audit = audited(principal, "terminal.registered", "terminal", terminal.id.as_str(), &terminal.region_path)
            .with(serde_json::json!({"facility_id": terminal.facility_id.as_str(), "key_id": terminal.active_key_id.as_str()}));
        self.store.insert_terminal(&terminal, &audit).await.map_err(key_conflict)?;
        Ok(terminal)
    }

    pub async fn terminal(&self, principal: &Principal, id: &TerminalId) -> Result<Terminal> {
        require(principal, Action::ReadDirectory)?;
        within_scope(principal, self.store.terminal(id).await?, "terminal", |t| &t.region_path)
    }

    pub async fn terminals(
        &self,
        principal: &Principal,
        facility: Option<&FacilityId>,
        page: &PageRequest,
    ) -> Result<Vec<Terminal>> {
        require(principal, Action::ReadDirectory)?;
        if let Some(facility) = facility {
            self.facility(principal, facility).await?;
        }
        Ok(self.store.list_terminals(scope_filter(principal), facility, self.page(page)).await?)
    }

    /// Suspend or resume a terminal. Asking for the state it is already in is a no-op
    /// that answers with the terminal, so retries are harmless.
    pub async fn set_terminal_status(
        &self,
        principal: &Principal,
        id: &TerminalId,
        to: TerminalStatus,
    ) -> Result<Terminal> {
        require(principal, Action::ManageTerminals)?;
        let current = self.terminal(principal, id).await?;
        if current.status != to {
            let action = if to == TerminalStatus::Suspended { "terminal.suspended" } else { "terminal.resumed" };
            let audit = audited(principal, action, "terminal", id.as_str(), &current.region_path)
                .with(serde_json::json!({"before": current.status.as_str(), "after": to.as_str()}));
            let changed = self.store.set_terminal_status(id, current.status, to, UnixMs::now(), &audit).await;
            self.terminals.forget(id);
            match changed {
                // A concurrent request moved it first; the re-read below shows the outcome.
                Ok(()) | Err(StoreError::GuardFailed) => {}
                Err(other) => return Err(other.into()),
            }
        }
        self.terminal(principal, id).await
    }

    /// Replace the terminal's key. The old key is refused from the moment this commits.
    pub async fn rotate_terminal_key(
        &self,
        principal: &Principal,
        id: &TerminalId,
        public_key: PublicKey,
    ) -> Result<Terminal> {
        require(principal, Action::ManageTerminals)?;
        let current = self.terminal(principal, id).await?;
        if current.public_key == public_key {
            return Err(Error::invalid("public_key", "KEY_UNCHANGED", "the new key must differ from the current one"));
        }
        let new_key_id = TerminalKeyId::generate();
        let audit = audited(principal, "terminal.key_rotated", "terminal", id.as_str(), &current.region_path).with(
            serde_json::json!({"retired_key_id": current.active_key_id.as_str(), "new_key_id": new_key_id.as_str()}),
        );
        let rotated = self
            .store
            .rotate_terminal_key(id, &current.active_key_id, &new_key_id, &public_key, UnixMs::now(), &audit)
            .await;
        self.terminals.forget(id);
        rotated.map_err(|error| match error {
            StoreError::GuardFailed => {
                Error::conflict("CONCURRENT_CHANGE", "the key was rotated meanwhile; read the terminal again")
            }
            other => key_conflict(other),
        })?;
        self.terminal(principal, id).await
    }
}

/// An active terminal whose current key made `signature` over `message`.
pub(crate) fn check_terminal(
    terminal: &Terminal,
    message: &[u8],
    signature: &[u8],
) -> std::result::Result<(), TerminalAuthError> {
    if terminal.status != TerminalStatus::Active {
        return Err(TerminalAuthError::Suspended);
    }
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, terminal.public_key.raw_bytes());
    key.verify(message, signature).map_err(|_| TerminalAuthError::BadSignature)
}

fn key_conflict(error: StoreError) -> Error {
    match error {
        StoreError::Conflict("terminal_keys_public_key_key") => Error::conflict(
            "PUBLIC_KEY_IN_USE",
            "this public key is already registered; every terminal needs its own key pair",
        ),
        other => other.into(),
    }
}

/// An audit entry for an action `principal` took on an object in `path`.
pub(crate) fn audited<'a>(
    principal: &'a Principal,
    action: &'a str,
    object_kind: &'a str,
    object_id: &'a str,
    path: &'a RegionPath,
) -> AuditEntry<'a> {
    AuditEntry {
        actor: Actor::Token(principal),
        action,
        object_kind,
        object_id,
        region_path: Some(path),
        summary: serde_json::Value::Null,
    }
}

pub(crate) fn scope_filter(principal: &Principal) -> Option<&RegionPath> {
    match &principal.scope {
        Scope::All => None,
        Scope::Region { path, .. } => Some(path),
    }
}

/// Why a terminal's signed request was refused. Transports answer all of these the same
/// way (unauthenticated) and log the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TerminalAuthError {
    #[error("unknown terminal")]
    UnknownTerminal,
    #[error("terminal is suspended")]
    Suspended,
    #[error("signature does not verify with the terminal's current key")]
    BadSignature,
}

impl App {
    /// Check that `signature` is the active key's Ed25519 signature over `message`. Keys
    /// retired by rotation no longer verify, and a suspended terminal is refused whatever
    /// it signs.
    pub async fn authenticate_terminal(
        &self,
        id: &TerminalId,
        message: &[u8],
        signature: &[u8],
    ) -> Result<Terminal, std::result::Result<TerminalAuthError, Error>> {
        let terminal = self.read_terminal(id).await?;
        check_terminal(&terminal, message, signature).map_err(Ok)?;
        Ok(terminal)
    }

    /// The terminal as stored now (and remembered for the next request).
    pub(crate) async fn read_terminal(
        &self,
        id: &TerminalId,
    ) -> Result<Terminal, std::result::Result<TerminalAuthError, Error>> {
        let terminal = self
            .store
            .terminal(id)
            .await
            .map_err(|error| Err(error.into()))?
            .ok_or(Ok(TerminalAuthError::UnknownTerminal))?;
        self.terminals.put(terminal.clone(), UnixMs::now(), self.payments.terminal_cache_ttl_ms);
        Ok(terminal)
    }
}
