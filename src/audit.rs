//! Use cases for the audit trail: auditors list the records within their scope and check
//! that the chain is unbroken; carepay publishes signed checkpoints of its head (in the log,
//! periodically, and with every export) so that removing the newest records is found later.

use std::time::Duration;

use crate::app::{App, require};
use crate::callbacks::secrets::SecretBox;
use crate::directory::scope_filter;
use crate::domain::access::Principal;
use crate::domain::audit::{AuditKeys, Checkpoint, GivenCheckpoint, LEGACY_SEALED_ACTION, SignedCheckpoint};
use crate::domain::role::Action;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::audit::{Actor, AuditEntry, AuditRecord, ChainVerdict};

/// The audit keys of a key configuration: every instance with the same keys appends and
/// verifies alike.
pub fn audit_keys(secrets: &SecretBox) -> AuditKeys {
    AuditKeys::derive(|purpose| secrets.derived_key(purpose))
}

/// Checkpoints as given (from a log line, an export's header or someone's notes): refused
/// when one carries a signature this key file did not make.
pub fn checkpoints_to_check(store: &Store, given: &[GivenCheckpoint]) -> Result<Vec<Checkpoint>> {
    let keys = store.audit_keys();
    given
        .iter()
        .map(|given| match given {
            GivenCheckpoint::Signed(signed) if !keys.signed_here(signed) => Err(Error::invalid(
                "checkpoint",
                "CHECKPOINT_NOT_SIGNED_HERE",
                format!("checkpoint {} was not signed with this service's audit key", signed.checkpoint),
            )),
            given => Ok(given.checkpoint().clone()),
        })
        .collect()
}

/// The current head, signed, and logged: a checkpoint someone may keep.
pub async fn publish_checkpoint(store: &Store, occasion: &'static str) -> Result<SignedCheckpoint> {
    let head = store.audit_head().await?;
    let signed = store.audit_keys().sign(head);
    tracing::info!(checkpoint = %signed, occasion, "audit checkpoint");
    Ok(signed)
}

/// Publish a checkpoint every `interval` while the head moves (one read of the head per
/// interval), until the process stops.
pub async fn publish_checkpoints(store: Store, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: Option<Checkpoint> = None;
    loop {
        tick.tick().await;
        match store.audit_head().await {
            Ok(head) if published.as_ref() == Some(&head) => {}
            Ok(head) => {
                let signed = store.audit_keys().sign(head.clone());
                tracing::info!(checkpoint = %signed, occasion = "periodic", "audit checkpoint");
                published = Some(head);
            }
            Err(error) => tracing::warn!(%error, "cannot read the audit head for a checkpoint"),
        }
    }
}

/// What `carepay audit seal-legacy` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Sealed {
    /// The record vouching for the unkeyed records up to `legacy_last_seq` was appended.
    Now { legacy_last_seq: i64, seq: i64 },
    /// There is nothing unkeyed to vouch for.
    NothingToSeal,
}

/// Vouch for the records written before the chain was keyed: verify them (by their public
/// recipe and against `given`, checkpoints kept from before the upgrade), then append a keyed
/// record naming the last of them. Refused when anything else is broken.
pub async fn seal_legacy(store: &Store, given: &[GivenCheckpoint]) -> anyhow::Result<Sealed> {
    let checkpoints = checkpoints_to_check(store, given).map_err(|error| anyhow::anyhow!("{error}"))?;
    let verdict = store.verify_audit_chain(&checkpoints).await?;
    let Some(legacy_last_seq) = verdict.legacy_last_seq else { return Ok(Sealed::NothingToSeal) };
    match verdict.broken {
        Some(link) if link.seq == legacy_last_seq && link.reason.ends_with("are not sealed") => {}
        Some(link) => anyhow::bail!("audit trail broken at record {}: {}; nothing sealed", link.seq, link.reason),
        None => return Ok(Sealed::NothingToSeal),
    }
    let legacy_last = store.audit_records(None, legacy_last_seq - 1, 1).await?;
    let legacy_last_hash = legacy_last.first().map(|record| record.hash.clone()).unwrap_or_default();
    let entry = AuditEntry {
        actor: Actor::CommandLine,
        action: LEGACY_SEALED_ACTION,
        object_kind: "audit_log",
        object_id: "audit_log",
        region_path: None,
        summary: serde_json::json!({"legacy_last_seq": legacy_last_seq, "legacy_last_hash": legacy_last_hash}),
    };
    let seq = store.append_audit(&entry, UnixMs::now()).await?;
    Ok(Sealed::Now { legacy_last_seq, seq })
}

impl App {
    /// Records after `after_seq`, within the caller's scope, at most `limit` (bounded by the
    /// page size).
    pub async fn audit_records(&self, principal: &Principal, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        require(principal, Action::ReadAudit)?;
        let limit = limit.clamp(1, self.limits.max_page_size);
        Ok(self.store.audit_records(scope_filter(principal), after_seq, limit).await?)
    }

    /// Recompute the whole chain, against `checkpoint` when one is given; when intact, with
    /// the head it verified, signed.
    pub async fn verify_audit(
        &self,
        principal: &Principal,
        checkpoint: Option<&GivenCheckpoint>,
    ) -> Result<(ChainVerdict, Option<SignedCheckpoint>)> {
        require(principal, Action::ReadAudit)?;
        let given: Vec<GivenCheckpoint> = checkpoint.into_iter().cloned().collect();
        let checkpoints = checkpoints_to_check(&self.store, &given)?;
        let verdict = self.store.verify_audit_chain(&checkpoints).await?;
        let signed = verdict.broken.is_none().then(|| {
            let signed = self.store.audit_keys().sign(verdict.head.clone());
            tracing::info!(checkpoint = %signed, occasion = "verify", "audit checkpoint");
            signed
        });
        Ok((verdict, signed))
    }

    /// The head now, signed and logged, for an export (or a verification) to carry.
    pub async fn audit_checkpoint(&self, principal: &Principal, occasion: &'static str) -> Result<SignedCheckpoint> {
        require(principal, Action::ReadAudit)?;
        publish_checkpoint(&self.store, occasion).await
    }
}
