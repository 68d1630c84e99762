//! Use cases for callback endpoints: register, read, change, rotate the secret, see
//! deliveries and attempts, replay. A facility's endpoints are managed by admins and
//! facility managers, an office's by admins and subsidy clerks/approvers; auditors read.
//! An endpoint the caller's role or scope may not see answers exactly like a missing one.

use super::secrets::{SecretBox, SecretError};
use super::signing::{Ed25519Signer, EndpointSigner, SigningError, SigningSecret};
use crate::app::{App, require};
use crate::directory::audited;
use crate::directory::{PageRequest, scope_filter};
use crate::domain::access::Principal;
use crate::domain::callbacks::{
    Attempt, Delivery, DeliveryStatus, DisabledReason, Endpoint, EndpointStatus, EndpointUrl, EventOwner, EventTypes,
    MAX_ENDPOINTS_PER_OWNER, OwnerKind,
};
use crate::domain::directory::{RegionPath, Scope};
use crate::domain::ids::{EndpointId, EventId, RegionId};
use crate::domain::role::Action;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::store::StoreError;
use crate::store::callbacks::SealedSecrets;
use crate::store::callbacks::SecretRotation;

/// How long the old secret keeps signing after a rotation, unless the caller says otherwise:
/// a day lets every receiver deploy the new secret.
pub const DEFAULT_ROTATION_OVERLAP_MS: i64 = 86_400_000;
/// Longest overlap a caller may ask for.
pub const MAX_ROTATION_OVERLAP_MS: i64 = 7 * 86_400_000;

pub struct NewEndpoint {
    pub owner: EventOwner,
    pub url: EndpointUrl,
    pub event_types: EventTypes,
    /// Also sign with Ed25519 (`v1a`), for receivers that want to verify with a public key.
    pub ed25519: bool,
}

/// A partial change; `None` leaves a field as it is.
pub struct EndpointChange {
    pub url: Option<EndpointUrl>,
    pub event_types: Option<EventTypes>,
    pub enabled: Option<bool>,
}

/// An endpoint with its new signing secret: the only time the secret is ever shown.
#[derive(Debug)]
pub struct EndpointWithSecret {
    pub endpoint: Endpoint,
    pub secret: SigningSecret,
}

fn manage_action(kind: OwnerKind) -> Action {
    match kind {
        OwnerKind::Facility => Action::ManageFacilityCallbacks,
        OwnerKind::Office => Action::ManageOfficeCallbacks,
    }
}

fn read_action(kind: OwnerKind) -> Action {
    match kind {
        OwnerKind::Facility => Action::ReadFacilityCallbacks,
        OwnerKind::Office => Action::ReadOfficeCallbacks,
    }
}

fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Internal(anyhow::Error::new(error))
}

fn secret_context(id: &EndpointId, field: &str) -> String {
    format!("{id}/{field}")
}

/// Everything that signs for `endpoint` at `now`, opened from its sealed secrets.
pub(crate) fn open_signer(
    secrets: &SecretBox,
    endpoint: &EndpointId,
    sealed: &SealedSecrets,
    now: UnixMs,
) -> Result<EndpointSigner, OpenError> {
    let current = SigningSecret::from_bytes(secrets.open(&sealed.secret, &secret_context(endpoint, "secret"))?);
    let previous = match (&sealed.previous_secret, sealed.previous_secret_until) {
        (Some(previous), Some(until)) if now < until => {
            Some(SigningSecret::from_bytes(secrets.open(previous, &secret_context(endpoint, "previous_secret"))?))
        }
        _ => None,
    };
    let ed25519 = match &sealed.signing_key {
        Some(key) => Some(Ed25519Signer::from_pkcs8(&secrets.open(key, &secret_context(endpoint, "signing_key"))?)?),
        None => None,
    };
    Ok(EndpointSigner { current, previous, ed25519 })
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Signing(#[from] SigningError),
}

impl App {
    /// The owner's region path, if the owner exists within the caller's scope.
    async fn owner_path(&self, principal: &Principal, owner: &EventOwner) -> Result<(RegionId, RegionPath)> {
        match owner {
            EventOwner::Facility(id) => {
                let facility = self.facility(principal, id).await?;
                Ok((facility.region_id, facility.region_path))
            }
            EventOwner::Office(id) => {
                let region = self.region(principal, id).await?;
                Ok((region.id, region.path))
            }
        }
    }

    /// Refuse a URL whose host the egress rules forbid (checked again, resolved, whenever
    /// a callback connects).
    fn check_callback_url(&self, url: &EndpointUrl) -> Result<()> {
        url.check_target(&self.callback_egress).map_err(|refusal| Error::invalid("url", "URL_NOT_ALLOWED", refusal))
    }

    pub async fn create_endpoint(&self, principal: &Principal, new: NewEndpoint) -> Result<EndpointWithSecret> {
        require(principal, manage_action(new.owner.kind()))?;
        self.check_callback_url(&new.url)?;
        let (region_id, region_path) = self.owner_path(principal, &new.owner).await?;
        let id = EndpointId::generate();
        let secret = SigningSecret::generate().map_err(internal)?;
        let (public_key, signing_key) = if new.ed25519 {
            let (signer, pkcs8) = Ed25519Signer::generate().map_err(internal)?;
            let sealed = self.secrets.seal(&pkcs8, &secret_context(&id, "signing_key")).map_err(internal)?;
            (Some(signer.public_key()), Some(sealed))
        } else {
            (None, None)
        };
        let sealed = SealedSecrets {
            secret: self.secrets.seal(secret.as_bytes(), &secret_context(&id, "secret")).map_err(internal)?,
            previous_secret: None,
            previous_secret_until: None,
            signing_key,
        };
        let now = UnixMs::now();
        let endpoint = Endpoint {
            id,
            owner: new.owner,
            region_path,
            url: new.url,
            event_types: new.event_types,
            status: EndpointStatus::Enabled,
            disabled_reason: None,
            public_key,
            previous_secret_until: None,
            consecutive_failures: 0,
            failing_since: None,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let audit = audited(
            principal,
            "callback_endpoint.created",
            "callback_endpoint",
            endpoint.id.as_str(),
            &endpoint.region_path,
        )
        .with(serde_json::json!({
            "owner": endpoint.owner.id(),
            "url": endpoint.url.as_str(),
            "event_types": endpoint.event_types.to_stored(),
            "ed25519": endpoint.public_key.is_some(),
        }));
        self.store.insert_endpoint(&endpoint, &region_id, &sealed, &audit).await.map_err(|error| match error {
            StoreError::GuardFailed => Error::conflict(
                "TOO_MANY_ENDPOINTS",
                format!("an owner may register at most {MAX_ENDPOINTS_PER_OWNER} callback endpoints"),
            ),
            other => other.into(),
        })?;
        Ok(EndpointWithSecret { endpoint, secret })
    }

    /// The endpoint, if the caller may see it for `action_of` its owner kind.
    async fn visible_endpoint(
        &self,
        principal: &Principal,
        id: &EndpointId,
        action_of: fn(OwnerKind) -> Action,
    ) -> Result<Endpoint> {
        match self.store.endpoint(id).await? {
            Some(endpoint)
                if principal.sees(&endpoint.region_path) && principal.may(action_of(endpoint.owner.kind())) =>
            {
                Ok(endpoint)
            }
            _ if principal.scope == Scope::All => Err(Error::NotFound { what: "callback endpoint" }),
            _ => Err(Error::OutOfScope),
        }
    }

    fn require_any(principal: &Principal, action_of: fn(OwnerKind) -> Action) -> Result<()> {
        require(principal, action_of(OwnerKind::Facility)).or_else(|_| require(principal, action_of(OwnerKind::Office)))
    }

    pub async fn endpoint(&self, principal: &Principal, id: &EndpointId) -> Result<Endpoint> {
        Self::require_any(principal, read_action)?;
        self.visible_endpoint(principal, id, read_action).await
    }

    pub async fn endpoints(
        &self,
        principal: &Principal,
        owner: Option<&EventOwner>,
        page: &PageRequest,
    ) -> Result<Vec<Endpoint>> {
        let kinds: Vec<OwnerKind> = match owner {
            Some(owner) => {
                require(principal, read_action(owner.kind()))?;
                self.owner_path(principal, owner).await?;
                vec![owner.kind()]
            }
            None => {
                Self::require_any(principal, read_action)?;
                OwnerKind::ALL.iter().copied().filter(|kind| principal.may(read_action(*kind))).collect()
            }
        };
        Ok(self.store.list_endpoints(scope_filter(principal), owner, &kinds, self.page(page)).await?)
    }

    pub async fn change_endpoint(
        &self,
        principal: &Principal,
        id: &EndpointId,
        change: EndpointChange,
    ) -> Result<Endpoint> {
        Self::require_any(principal, manage_action)?;
        if let Some(url) = &change.url {
            self.check_callback_url(url)?;
        }
        let current = self.visible_endpoint(principal, id, manage_action).await?;
        let (status, disabled_reason) = match change.enabled {
            None => (current.status, current.disabled_reason),
            Some(true) => (EndpointStatus::Enabled, None),
            Some(false) if current.status == EndpointStatus::Disabled => (current.status, current.disabled_reason),
            Some(false) => (EndpointStatus::Disabled, Some(DisabledReason::Owner)),
        };
        let re_enabled = current.status == EndpointStatus::Disabled && status == EndpointStatus::Enabled;
        let changed = Endpoint {
            url: change.url.unwrap_or_else(|| current.url.clone()),
            event_types: change.event_types.unwrap_or_else(|| current.event_types.clone()),
            status,
            disabled_reason,
            consecutive_failures: if re_enabled { 0 } else { current.consecutive_failures },
            failing_since: if re_enabled { None } else { current.failing_since },
            version: current.version + 1,
            updated_at: UnixMs::now(),
            ..current.clone()
        };
        let audit = audited(principal, "callback_endpoint.changed", "callback_endpoint", changed.id.as_str(), &changed.region_path)
            .with(serde_json::json!({
                "before": {"url": current.url.as_str(), "event_types": current.event_types.to_stored(), "status": current.status.as_str()},
                "after": {"url": changed.url.as_str(), "event_types": changed.event_types.to_stored(), "status": changed.status.as_str()},
            }));
        self.store.update_endpoint(&changed, current.version, &audit).await.map_err(concurrent_change)?;
        Ok(changed)
    }

    /// Replace the signing secret. Until `overlap_ms` has passed, every callback carries
    /// signatures with both the new and the previous secret, so receivers can switch over
    /// without losing one.
    pub async fn rotate_endpoint_secret(
        &self,
        principal: &Principal,
        id: &EndpointId,
        overlap_ms: Option<i64>,
    ) -> Result<EndpointWithSecret> {
        Self::require_any(principal, manage_action)?;
        let overlap_ms = overlap_ms.unwrap_or(DEFAULT_ROTATION_OVERLAP_MS);
        if !(0..=MAX_ROTATION_OVERLAP_MS).contains(&overlap_ms) {
            return Err(Error::invalid(
                "overlap_seconds",
                "INVALID_OVERLAP",
                format!("must be between 0 and {}", MAX_ROTATION_OVERLAP_MS / 1_000),
            ));
        }
        let current = self.visible_endpoint(principal, id, manage_action).await?;
        let sealed = self.store.endpoint_secrets(id).await?.ok_or(Error::NotFound { what: "callback endpoint" })?;
        let previous = self.secrets.open(&sealed.secret, &secret_context(id, "secret")).map_err(internal)?;
        let secret = SigningSecret::generate().map_err(internal)?;
        let now = UnixMs::now();
        let audit = audited(
            principal,
            "callback_endpoint.secret_rotated",
            "callback_endpoint",
            id.as_str(),
            &current.region_path,
        )
        .with(serde_json::json!({"overlap_ms": overlap_ms}));
        self.store
            .rotate_endpoint_secret(
                id,
                current.version,
                &SecretRotation {
                    new_secret: &self
                        .secrets
                        .seal(secret.as_bytes(), &secret_context(id, "secret"))
                        .map_err(internal)?,
                    previous_secret: &self
                        .secrets
                        .seal(&previous, &secret_context(id, "previous_secret"))
                        .map_err(internal)?,
                    previous_until: UnixMs(now.0 + overlap_ms),
                },
                now,
                &audit,
            )
            .await
            .map_err(concurrent_change)?;
        let endpoint = self.visible_endpoint(principal, id, manage_action).await?;
        Ok(EndpointWithSecret { endpoint, secret })
    }

    pub async fn endpoint_deliveries(
        &self,
        principal: &Principal,
        id: &EndpointId,
        status: Option<DeliveryStatus>,
        page: &PageRequest,
    ) -> Result<Vec<Delivery>> {
        let endpoint = self.endpoint(principal, id).await?;
        Ok(self.store.list_deliveries(&endpoint.id, status, self.page(page)).await?)
    }

    pub async fn endpoint_attempts(
        &self,
        principal: &Principal,
        id: &EndpointId,
        event: Option<&EventId>,
        page: &PageRequest,
    ) -> Result<Vec<Attempt>> {
        let endpoint = self.endpoint(principal, id).await?;
        Ok(self.store.list_attempts(&endpoint.id, event, self.page(page)).await?)
    }

    /// Send one of the owner's events to this endpoint again, with a fresh retry schedule
    /// (same `webhook-id`, so a receiver that already has it ignores it). Returns false when
    /// it is still pending anyway.
    pub async fn replay_event(&self, principal: &Principal, id: &EndpointId, event: &EventId) -> Result<bool> {
        Self::require_any(principal, manage_action)?;
        let endpoint = self.visible_endpoint(principal, id, manage_action).await?;
        match self.store.event_owner(event).await? {
            Some(owner) if owner == endpoint.owner => {}
            _ => return Err(Error::invalid("event_id", "UNKNOWN_EVENT", "no such event for this endpoint's owner")),
        }
        let audit = audited(
            principal,
            "callback_event.replayed",
            "callback_endpoint",
            endpoint.id.as_str(),
            &endpoint.region_path,
        )
        .with(serde_json::json!({"event_id": event.as_str()}));
        Ok(self.store.replay_event(&endpoint.id, event, UnixMs::now(), &audit).await?)
    }

    /// Queue again every failed delivery to this endpoint of events since `since`.
    pub async fn replay_failed(&self, principal: &Principal, id: &EndpointId, since: UnixMs) -> Result<u64> {
        Self::require_any(principal, manage_action)?;
        let endpoint = self.visible_endpoint(principal, id, manage_action).await?;
        let audit = audited(
            principal,
            "callback_events.replayed_failed",
            "callback_endpoint",
            endpoint.id.as_str(),
            &endpoint.region_path,
        )
        .with(serde_json::json!({"since_ms": since.0}));
        Ok(self.store.replay_failed_since(&endpoint.id, since, UnixMs::now(), &audit).await?)
    }
}

fn concurrent_change(error: StoreError) -> Error {
    match error {
        StoreError::GuardFailed => {
            Error::conflict("CONCURRENT_CHANGE", "the endpoint changed meanwhile; read it again and retry")
        }
        other => other.into(),
    }
}
