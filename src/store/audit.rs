//! The audit trail: append inside the transaction of the change it records, list within a
//! scope, and verify the hash chain.

use sqlx::{AnyConnection, Row as _};

use super::directory::ScopeFilter;
use super::{Store, StoreError};
use crate::domain::access::Principal;
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

/// A stored audit record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub actor_role: String,
    pub actor_region_id: Option<String>,
    pub action: String,
    pub object_kind: String,
    pub object_id: String,
    pub summary: String,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The first record whose hash does not follow from its content and its predecessor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: &'static str,
}

/// Records verified per query, so verification runs in bounded memory.
const VERIFY_PAGE: i64 = 1_000;

fn record_hash(record: &AuditRecord) -> String {
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let fields = [
        record.prev_hash.as_str(),
        &record.seq.to_string(),
        &record.at_ms.to_string(),
        &record.actor,
        &record.actor_role,
        record.actor_region_id.as_deref().unwrap_or(""),
        &record.action,
        &record.object_kind,
        &record.object_id,
        &record.summary,
        record.request_id.as_deref().unwrap_or(""),
    ];
    for field in fields {
        // Length-prefixed, so no two different records hash the same bytes.
        hasher.update(&(field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finish())
}

/// Append `entry` inside the caller's transaction.
pub(crate) async fn append_in(
    conn: &mut AnyConnection,
    entry: &AuditEntry<'_>,
    now: UnixMs,
) -> Result<i64, StoreError> {
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
        summary: entry.summary.to_string(),
        request_id,
        prev_hash: head.try_get(1)?,
        hash: String::new(),
    };
    record.hash = record_hash(&record);
    sqlx::query(
        "INSERT INTO audit_log (seq, at_ms, actor, actor_role, actor_region_id, action, object_kind, object_id, \
         region_path, summary, request_id, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(record.seq)
    .bind(record.at_ms)
    .bind(record.actor.as_str())
    .bind(record.actor_role.as_str())
    .bind(record.actor_region_id.as_deref())
    .bind(record.action.as_str())
    .bind(record.object_kind.as_str())
    .bind(record.object_id.as_str())
    .bind(entry.region_path.map(RegionPath::as_str))
    .bind(record.summary.as_str())
    .bind(record.request_id.as_deref())
    .bind(record.prev_hash.as_str())
    .bind(record.hash.as_str())
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
    conn: &mut AnyConnection,
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
    append_in(conn, &entry, now).await?;
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
        summary: row.try_get("summary")?,
        request_id: row.try_get("request_id")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

const AUDIT_COLUMNS: &str = "seq, at_ms, actor, actor_role, actor_region_id, action, object_kind, object_id, \
     summary, request_id, prev_hash, hash";

impl Store {
    /// Append a record of an action that changes nothing else (revealing a personal
    /// identifier), in a write transaction of its own.
    pub async fn append_audit(&self, entry: &AuditEntry<'_>, now: UnixMs) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let seq = append_in(&mut tx, entry, now).await?;
        tx.commit().await?;
        Ok(seq)
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

    /// Recompute the whole chain, page by page; `None` when every link holds.
    pub async fn verify_audit_chain(&self) -> Result<Option<BrokenLink>, StoreError> {
        let mut expected_prev = String::from("0000000000000000000000000000000000000000000000000000000000000000");
        let mut expected_seq = 1;
        loop {
            let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(expected_seq)
                .bind(VERIFY_PAGE)
                .fetch_all(self.pool())
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let record = record_from_row(row)?;
                if record.seq != expected_seq {
                    return Ok(Some(BrokenLink { seq: expected_seq, reason: "record missing" }));
                }
                if record.prev_hash != expected_prev {
                    return Ok(Some(BrokenLink { seq: record.seq, reason: "does not follow the previous record" }));
                }
                if record_hash(&record) != record.hash {
                    return Ok(Some(BrokenLink { seq: record.seq, reason: "content does not match its hash" }));
                }
                expected_prev = record.hash;
                expected_seq += 1;
            }
        }
        let head =
            sqlx::query("SELECT last_seq, last_hash FROM audit_head WHERE id = 1").fetch_one(self.pool()).await?;
        let (last_seq, last_hash): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
        if last_seq != expected_seq - 1 || last_hash != expected_prev {
            return Ok(Some(BrokenLink { seq: last_seq, reason: "the newest records were removed" }));
        }
        Ok(None)
    }
}
