//! The audit trail: append inside the transaction of the change it records, list within a
//! scope, and verify the keyed hash chain against its head and published checkpoints.

use std::sync::{Arc, RwLock};

use sqlx::Row as _;

use super::directory::ScopeFilter;
use super::{Store, StoreError, WriteTx};
use crate::domain::access::Principal;
pub use crate::domain::audit::AuditRecord;
use crate::domain::audit::{AuditKeys, Checkpoint, GENESIS_HASH, LEGACY_SEALED_ACTION, Recipe};
use crate::domain::directory::{RegionPath, Scope};
use crate::domain::time::UnixMs;

/// One action to record. `summary` is a short JSON description of what changed (masked:
/// never a secret or a personal identifier in clear).
#[derive(Clone, Debug)]
pub struct AuditEntry<'a> {
    pub actor: Actor<'a>,
    pub action: &'a str,
    pub object_kind: &'a str,
    pub object_id: &'a str,
    pub region_path: Option<&'a RegionPath>,
    pub summary: serde_json::Value,
}

impl<'a> AuditEntry<'a> {
    pub fn with(self, summary: serde_json::Value) -> AuditEntry<'a> {
        AuditEntry { summary, ..self }
    }
}

/// Who acted: a back-office token, or an operator at the command line.
#[derive(Clone, Copy, Debug)]
pub enum Actor<'a> {
    Token(&'a Principal),
    CommandLine,
}

/// The first record whose hash does not follow from its content and its predecessor, or
/// where the chain disagrees with its head or with a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: &'static str,
}

/// What verifying the chain found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainVerdict {
    /// `None` when every link, the head and every checkpoint hold.
    pub broken: Option<BrokenLink>,
    /// The newest record verified (all of them when intact).
    pub head: Checkpoint,
    /// The newest record hashed by the unkeyed recipe 1, if any (written before the upgrade).
    pub legacy_last_seq: Option<i64>,
}

/// Records verified per query, so verification runs in bounded memory.
const VERIFY_PAGE: i64 = 1_000;

/// The audit keys of a store and all its clones: installed once the configured key file is
/// read ([`Store::set_audit_keys`]); until then keys that live as long as the process, as
/// with [`crate::callbacks::secrets::SecretBox::ephemeral`].
#[derive(Clone)]
pub(crate) struct AuditKeyCell(Arc<RwLock<Arc<AuditKeys>>>);

impl Default for AuditKeyCell {
    fn default() -> Self {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .expect("the system random generator works");
        let keys = AuditKeys::derive(|purpose| {
            let digest = ring::digest::digest(&ring::digest::SHA256, &[&seed[..], purpose.as_bytes()].concat());
            digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
        });
        AuditKeyCell(Arc::new(RwLock::new(Arc::new(keys))))
    }
}

impl std::fmt::Debug for AuditKeyCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl AuditKeyCell {
    pub(crate) fn get(&self) -> Arc<AuditKeys> {
        Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Append `entry` inside the caller's transaction, hashed with the transaction's audit keys.
pub(crate) async fn append_in(tx: &mut WriteTx, entry: &AuditEntry<'_>, now: UnixMs) -> Result<i64, StoreError> {
    let keys = Arc::clone(&tx.audit_keys);
    let conn = &mut **tx;
    let head = sqlx::query("UPDATE audit_head SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq, last_hash")
        .fetch_one(&mut *conn)
        .await?;
    let (actor, actor_role, actor_region_id, request_id) = match entry.actor {
        Actor::Token(principal) => (
            principal.token_id.to_string(),
            principal.role.as_str().to_owned(),
            match &principal.scope {
                Scope::All => None,
                Scope::Region { id, .. } => Some(id.to_string()),
            },
            principal.request_id.clone(),
        ),
        Actor::CommandLine => (String::from("command-line"), String::from("operator"), None, None),
    };
    let mut record = AuditRecord {
        seq: head.try_get(0)?,
        at_ms: now.0,
        actor,
        actor_role,
        actor_region_id,
        action: entry.action.to_owned(),
        object_kind: entry.object_kind.to_owned(),
        object_id: entry.object_id.to_owned(),
        region_path: entry.region_path.map(|path| path.as_str().to_owned()),
        summary: entry.summary.to_string(),
        request_id,
        prev_hash: head.try_get(1)?,
        hash: String::new(),
        recipe: Recipe::Keyed.number(),
    };
    record.hash = keys.record_hash(&record, Recipe::Keyed);
    sqlx::query(
        "INSERT INTO audit_log (seq, at_ms, actor, actor_role, actor_region_id, action, object_kind, object_id, \
         region_path, summary, request_id, prev_hash, hash, recipe) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(record.seq)
    .bind(record.at_ms)
    .bind(record.actor.as_str())
    .bind(record.actor_role.as_str())
    .bind(record.actor_region_id.as_deref())
    .bind(record.action.as_str())
    .bind(record.object_kind.as_str())
    .bind(record.object_id.as_str())
    .bind(record.region_path.as_deref())
    .bind(record.summary.as_str())
    .bind(record.request_id.as_deref())
    .bind(record.prev_hash.as_str())
    .bind(record.hash.as_str())
    .bind(record.recipe)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET last_hash = $1 WHERE id = 1")
        .bind(record.hash.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(record.seq)
}

/// Append `entry` about `object_id` (known only inside the store's transaction, such as a new
/// run's id) with `extra` fields merged into its summary. `None` records nothing: the change
/// was made by carepay itself (a scheduled fetch), not by a person.
pub(crate) async fn append_about_in(
    tx: &mut WriteTx,
    entry: Option<&AuditEntry<'_>>,
    object_id: &str,
    extra: serde_json::Value,
    now: UnixMs,
) -> Result<(), StoreError> {
    let Some(entry) = entry else { return Ok(()) };
    let mut summary = entry.summary.clone();
    if let (Some(summary), serde_json::Value::Object(extra)) = (summary.as_object_mut(), extra) {
        summary.extend(extra);
    }
    let entry = AuditEntry { object_id, summary, ..entry.clone() };
    append_in(tx, &entry, now).await?;
    Ok(())
}

fn record_from_row(row: &sqlx::any::AnyRow) -> Result<AuditRecord, sqlx::Error> {
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        actor: row.try_get("actor")?,
        actor_role: row.try_get("actor_role")?,
        actor_region_id: row.try_get("actor_region_id")?,
        action: row.try_get("action")?,
        object_kind: row.try_get("object_kind")?,
        object_id: row.try_get("object_id")?,
        region_path: row.try_get("region_path")?,
        summary: row.try_get("summary")?,
        request_id: row.try_get("request_id")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        recipe: row.try_get("recipe")?,
    })
}

const AUDIT_COLUMNS: &str = "seq, at_ms, actor, actor_role, actor_region_id, action, object_kind, object_id, \
     region_path, summary, request_id, prev_hash, hash, recipe";

/// Whether `record` is the keyed record vouching for the unkeyed ones up to `legacy_last_seq`.
fn seals_legacy(record: &AuditRecord, legacy_last_seq: i64) -> bool {
    record.recipe == Recipe::Keyed.number()
        && record.action == LEGACY_SEALED_ACTION
        && serde_json::from_str::<serde_json::Value>(&record.summary)
            .is_ok_and(|summary| summary["legacy_last_seq"].as_i64() == Some(legacy_last_seq))
}

/// The verification's walk along the chain, one record at a time.
struct Walk<'a> {
    keys: &'a AuditKeys,
    /// Checkpoints not yet reached, in sequence order.
    checkpoints: std::iter::Peekable<std::vec::IntoIter<&'a Checkpoint>>,
    head: Checkpoint,
    legacy_last_seq: Option<i64>,
    keyed_seen: bool,
    legacy_sealed: bool,
}

impl Walk<'_> {
    fn step(&mut self, record: AuditRecord) -> Result<(), BrokenLink> {
        let broken = |seq, reason| Err(BrokenLink { seq, reason });
        let expected_seq = self.head.seq + 1;
        if record.seq != expected_seq {
            return broken(expected_seq, "record missing");
        }
        if record.prev_hash != self.head.hash {
            return broken(record.seq, "does not follow the previous record");
        }
        match Recipe::from_number(record.recipe) {
            None => return broken(record.seq, "hashed by an unknown recipe"),
            Some(Recipe::Unkeyed) if self.keyed_seen => {
                return broken(record.seq, "an unkeyed record after keyed ones");
            }
            Some(Recipe::Unkeyed) => self.legacy_last_seq = Some(record.seq),
            Some(Recipe::Keyed) => self.keyed_seen = true,
        }
        if !self.keys.hash_holds(&record) {
            return broken(record.seq, "content does not match its hash");
        }
        if self.legacy_last_seq.is_some_and(|last| seals_legacy(&record, last)) {
            self.legacy_sealed = true;
        }
        while let Some(checkpoint) = self.checkpoints.next_if(|checkpoint| checkpoint.seq == record.seq) {
            if checkpoint.hash != record.hash {
                return broken(record.seq, "differs from a checkpoint");
            }
        }
        self.head = Checkpoint { seq: record.seq, hash: record.hash };
        Ok(())
    }

    /// After the last record: every checkpoint reached, the head naming the last record, and
    /// unkeyed records sealed.
    fn finish(&mut self, head: &Checkpoint) -> Result<(), BrokenLink> {
        if let Some(checkpoint) = self.checkpoints.next() {
            return Err(BrokenLink { seq: checkpoint.seq, reason: "records up to a checkpoint were removed" });
        }
        if head.seq > self.head.seq {
            return Err(BrokenLink { seq: head.seq, reason: "the newest records were removed" });
        }
        if *head != self.head {
            return Err(BrokenLink { seq: head.seq, reason: "the head does not name the newest record" });
        }
        match self.legacy_last_seq {
            Some(last) if !self.legacy_sealed => {
                Err(BrokenLink { seq: last, reason: "records written before the chain was keyed are not sealed" })
            }
            _ => Ok(()),
        }
    }
}

impl Store {
    /// Append a record of an action that changes nothing else (revealing a personal
    /// identifier), in a write transaction of its own.
    pub async fn append_audit(&self, entry: &AuditEntry<'_>, now: UnixMs) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let seq = append_in(&mut tx, entry, now).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Install the keys appends and verification use, for this store and all its clones.
    pub fn set_audit_keys(&self, keys: AuditKeys) {
        *self.audit_keys.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
    }

    pub fn audit_keys(&self) -> Arc<AuditKeys> {
        self.audit_keys.get()
    }

    /// The chain's head as `audit_head` names it now.
    pub async fn audit_head(&self) -> Result<Checkpoint, StoreError> {
        let head =
            sqlx::query("SELECT last_seq, last_hash FROM audit_head WHERE id = 1").fetch_one(self.pool()).await?;
        Ok(Checkpoint { seq: head.try_get(0)?, hash: head.try_get(1)? })
    }

    /// Records after `after_seq` whose object lies within `scope` (records about no region
    /// are shown only to callers who see every region), at most `limit`, in order.
    pub async fn audit_records(
        &self,
        scope: ScopeFilter<'_>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 \
             AND ($2 IS NULL OR (region_path IS NOT NULL AND substr(region_path, 1, length($2)) = $2)) \
             ORDER BY seq LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after_seq)
            .bind(scope.map(RegionPath::as_str))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(record_from_row).collect::<Result<_, _>>()?)
    }

    /// Recompute the whole chain, page by page, against its head and `checkpoints` (heads
    /// published earlier: the record each names must still be there with that hash).
    ///
    /// Unkeyed (recipe 1) records may only come first, before any keyed one, and count only
    /// once a keyed [`LEGACY_SEALED_ACTION`] record names the last of them: otherwise anyone
    /// with the database could rewrite the whole chain by the public recipe.
    pub async fn verify_audit_chain(&self, checkpoints: &[Checkpoint]) -> Result<ChainVerdict, StoreError> {
        let keys = self.audit_keys();
        let genesis = Checkpoint { seq: 0, hash: GENESIS_HASH.to_owned() };
        let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
        sorted.sort_by_key(|checkpoint| checkpoint.seq);
        let mut walk = Walk {
            keys: &keys,
            checkpoints: sorted.into_iter().peekable(),
            head: genesis.clone(),
            legacy_last_seq: None,
            keyed_seen: false,
            legacy_sealed: false,
        };
        let verdict = |walk: &Walk, broken| ChainVerdict {
            broken,
            head: walk.head.clone(),
            legacy_last_seq: walk.legacy_last_seq,
        };
        while let Some(checkpoint) = walk.checkpoints.next_if(|checkpoint| checkpoint.seq == 0) {
            if *checkpoint != genesis {
                return Ok(verdict(&walk, Some(BrokenLink { seq: 0, reason: "differs from a checkpoint" })));
            }
        }
        loop {
            let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(walk.head.seq)
                .bind(VERIFY_PAGE)
                .fetch_all(self.pool())
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                if let Err(link) = walk.step(record_from_row(row)?) {
                    return Ok(verdict(&walk, Some(link)));
                }
            }
        }
        // Rows numbered below the first record are outside the walk: none may exist.
        let outside: i64 =
            sqlx::query("SELECT COUNT(*) FROM audit_log WHERE seq <= 0").fetch_one(self.pool()).await?.try_get(0)?;
        if outside > 0 {
            return Ok(verdict(&walk, Some(BrokenLink { seq: 0, reason: "records numbered before the first one" })));
        }
        let head = self.audit_head().await?;
        let broken = walk.finish(&head).err();
        Ok(verdict(&walk, broken))
    }
}
