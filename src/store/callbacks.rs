//! Callbacks on disk: endpoints, the outbox of events, deliveries (one per event and
//! endpoint) and attempts.
//!
//! The outbox is transactional: [`enqueue_in`] runs on the caller's own connection, inside
//! the transaction that makes the state change, and fans the event out to the owner's
//! endpoints there too. Workers claim due deliveries with a lease (compare-and-set on
//! `claimed_by`/`lease_until_ms`), so instances sharing one database never hold the same
//! delivery at once, and a claim of an instance that died expires and is taken over.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::audit::{AuditEntry, append_in};
use super::directory::{Page, ScopeFilter, corrupt};
use super::{Backend, Store, StoreError};
use crate::callbacks::NewEvent;
use crate::domain::callbacks::{
    Attempt, DeliveryStatus, DisabledReason, Endpoint, EndpointStatus, EndpointUrl, EventOwner, EventType, EventTypes,
    OwnerKind, Verdict, event_body,
};
use crate::domain::callbacks::{Delivery, MAX_ENDPOINTS_PER_OWNER};
use crate::domain::directory::RegionPath;
use crate::domain::ids::{AttemptId, EndpointId, EventId, RegionId};
use crate::domain::time::UnixMs;

/// An endpoint's secrets as stored: AES-GCM sealed (see `callbacks::secrets`).
#[derive(Clone)]
pub struct SealedSecrets {
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<UnixMs>,
    pub signing_key: Option<String>,
}

impl std::fmt::Debug for SealedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedSecrets(<redacted>)")
    }
}

/// A delivery a worker holds the lease on, with the body to send.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    /// Attempts made before this one.
    pub attempts: i64,
    pub body: String,
}

/// What became of one claimed delivery, and under which claim it was held.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub claim: std::sync::Arc<str>,
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    pub result: OutcomeResult,
}

#[derive(Clone, Debug)]
pub enum OutcomeResult {
    /// An HTTP attempt was made; `verdict` says what follows.
    Attempted { attempt: Attempt, verdict: Verdict },
    /// The endpoint is disabled (or gone): no request was made.
    EndpointDisabled,
}

/// When a failing endpoint is disabled: `failure_threshold` failed attempts in a row,
/// spread over at least `failure_window_ms`.
#[derive(Clone, Copy, Debug)]
pub struct HealthRules {
    pub failure_threshold: i64,
    pub failure_window_ms: i64,
}

/// Which claim SQL a worker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimStrategy {
    /// Portable compare-and-set: runs on both backends (and on PostgreSQL-compatible
    /// distributed engines). Concurrent claimers may pick the same candidates; the losers'
    /// re-checked WHERE drops them, so nothing is claimed twice.
    CompareAndSet,
    /// PostgreSQL only: `FOR UPDATE SKIP LOCKED` lets concurrent claimers pass over each
    /// other's candidates instead of queueing behind them.
    SkipLocked,
}

impl ClaimStrategy {
    pub fn best_for(backend: Backend) -> ClaimStrategy {
        match backend {
            Backend::Sqlite => ClaimStrategy::CompareAndSet,
            Backend::Postgres => ClaimStrategy::SkipLocked,
        }
    }
}

const ENDPOINT_COLUMNS: &str = "e.id, e.owner_kind, e.owner_id, r.path AS region_path, e.url, e.event_types, \
     e.status, e.disabled_reason, e.public_key, e.previous_secret_until_ms, e.consecutive_failures, \
     e.failing_since_ms, e.version, e.created_at_ms, e.updated_at_ms";

const ENDPOINT_FROM: &str = "FROM callback_endpoints e JOIN regions r ON r.id = e.region_id";

fn text_enum<T>(row: &AnyRow, column: &'static str, parse: fn(&str) -> Option<T>) -> Result<T, sqlx::Error> {
    let raw: String = row.try_get(column)?;
    parse(&raw).ok_or_else(|| corrupt(column, &raw))
}

fn endpoint_from_row(row: &AnyRow) -> Result<Endpoint, sqlx::Error> {
    let owner_kind = text_enum(row, "owner_kind", OwnerKind::parse)?;
    let disabled_reason: Option<String> = row.try_get("disabled_reason")?;
    Ok(Endpoint {
        id: EndpointId::from_trusted(row.try_get("id")?),
        owner: EventOwner::from_trusted(owner_kind, row.try_get("owner_id")?),
        region_path: RegionPath::from_trusted(row.try_get("region_path")?),
        url: EndpointUrl::from_trusted(row.try_get("url")?),
        event_types: EventTypes::from_stored(&row.try_get::<String, _>("event_types")?),
        status: text_enum(row, "status", EndpointStatus::parse)?,
        disabled_reason: disabled_reason
            .map(|raw| DisabledReason::parse(&raw).ok_or_else(|| corrupt("disabled_reason", &raw)))
            .transpose()?,
        public_key: row.try_get("public_key")?,
        previous_secret_until: row.try_get::<Option<i64>, _>("previous_secret_until_ms")?.map(UnixMs),
        consecutive_failures: row.try_get("consecutive_failures")?,
        failing_since: row.try_get::<Option<i64>, _>("failing_since_ms")?.map(UnixMs),
        version: row.try_get("version")?,
        created_at: UnixMs(row.try_get("created_at_ms")?),
        updated_at: UnixMs(row.try_get("updated_at_ms")?),
    })
}

fn secrets_from_row(row: &AnyRow) -> Result<SealedSecrets, sqlx::Error> {
    Ok(SealedSecrets {
        secret: row.try_get("secret_sealed")?,
        previous_secret: row.try_get("previous_secret_sealed")?,
        previous_secret_until: row.try_get::<Option<i64>, _>("previous_secret_until_ms")?.map(UnixMs),
        signing_key: row.try_get("signing_key_sealed")?,
    })
}

fn delivery_from_row(row: &AnyRow) -> Result<Delivery, sqlx::Error> {
    Ok(Delivery {
        event_id: EventId::from_trusted(row.try_get("event_id")?),
        endpoint_id: EndpointId::from_trusted(row.try_get("endpoint_id")?),
        event_type: text_enum(row, "event_type", EventType::parse)?,
        object_id: row.try_get("object_id")?,
        object_version: row.try_get("object_version")?,
        status: text_enum(row, "status", DeliveryStatus::parse)?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get::<Option<i64>, _>("next_attempt_at_ms")?.map(UnixMs),
        last_status_code: row.try_get("last_status_code")?,
        last_error: row.try_get("last_error")?,
        event_created_at: UnixMs(row.try_get("event_created_at_ms")?),
        updated_at: UnixMs(row.try_get("updated_at_ms")?),
    })
}

fn attempt_from_row(row: &AnyRow) -> Result<Attempt, sqlx::Error> {
    Ok(Attempt {
        id: AttemptId::from_trusted(row.try_get("id")?),
        event_id: EventId::from_trusted(row.try_get("event_id")?),
        endpoint_id: EndpointId::from_trusted(row.try_get("endpoint_id")?),
        attempt: row.try_get("attempt")?,
        started_at: UnixMs(row.try_get("started_at_ms")?),
        latency_ms: row.try_get("latency_ms")?,
        status_code: row.try_get("status_code")?,
        error: row.try_get("error")?,
        response_excerpt: row.try_get("response_excerpt")?,
        next_attempt_at: row.try_get::<Option<i64>, _>("next_attempt_at_ms")?.map(UnixMs),
    })
}

/// Write `event` to the outbox on `conn`, inside the caller's transaction, and fan it out to
/// every endpoint of its owner that subscribes to its type. Enabled endpoints get a pending
/// delivery due now; disabled ones a failed one, so "replay failed events since" recovers
/// what they missed once re-enabled. Rolled back with the caller, it never existed.
pub async fn enqueue_in(conn: &mut AnyConnection, event: &NewEvent, now: UnixMs) -> Result<EventId, StoreError> {
    let mut ids = enqueue_many_in(conn, &[event], now).await?;
    Ok(ids.pop().expect("one id per event"))
}

/// [`enqueue_in`] for many events with a fixed number of statements however many there
/// are: the events as one JSON array, one read of their owners' endpoints, and their
/// deliveries as one JSON array. Inside the caller's transaction, like `enqueue_in`.
pub(crate) async fn enqueue_many_in(
    conn: &mut AnyConnection,
    events: &[&NewEvent],
    now: UnixMs,
) -> Result<Vec<EventId>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let postgres = Backend::of(conn) == Backend::Postgres;
    let mut ids = Vec::with_capacity(events.len());
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let body = event_body(event.event_type, now, &event.object_id, event.object_version, &event.data)
            .map_err(|error| StoreError::Database(sqlx::Error::Encode(Box::new(error))))?;
        let id = EventId::generate();
        rows.push(serde_json::json!({
            "id": id.as_str(), "owner_kind": event.owner.kind().as_str(), "owner_id": event.owner.id(),
            "event_type": event.event_type.as_str(), "object_id": event.object_id, "object_version": event.object_version,
            "body": body,
        }));
        ids.push(id);
    }
    let select = if postgres {
        "SELECT r.id, r.owner_kind, r.owner_id, r.event_type, r.object_id, r.object_version, r.body, $2 \
         FROM json_to_recordset($1::json) AS r(id TEXT, owner_kind TEXT, owner_id TEXT, event_type TEXT, \
         object_id TEXT, object_version BIGINT, body TEXT)"
    } else {
        "SELECT value ->> 'id', value ->> 'owner_kind', value ->> 'owner_id', value ->> 'event_type', \
         value ->> 'object_id', value ->> 'object_version', value ->> 'body', $2 FROM json_each($1)"
    };
    let sql = format!(
        "INSERT INTO callback_events (id, owner_kind, owner_id, event_type, object_id, object_version, body, \
         created_at_ms) {select}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::Value::Array(rows).to_string())
        .bind(now.0)
        .execute(&mut *conn)
        .await?;

    let mut owners: Vec<&str> = events.iter().map(|event| event.owner.id()).collect();
    owners.sort_unstable();
    owners.dedup();
    let owners_sql = if postgres {
        "SELECT id, owner_kind, owner_id, event_types, status FROM callback_endpoints \
         WHERE owner_id IN (SELECT json_array_elements_text($1::json))"
    } else {
        "SELECT id, owner_kind, owner_id, event_types, status FROM callback_endpoints \
         WHERE owner_id IN (SELECT value FROM json_each($1))"
    };
    let endpoints =
        sqlx::query(owners_sql).bind(serde_json::Value::from(owners).to_string()).fetch_all(&mut *conn).await?;
    let mut deliveries = Vec::new();
    for row in &endpoints {
        let owner_kind: String = row.try_get("owner_kind")?;
        let owner_id: String = row.try_get("owner_id")?;
        let types = EventTypes::from_stored(&row.try_get::<String, _>("event_types")?);
        let enabled = row.try_get::<String, _>("status")? == EndpointStatus::Enabled.as_str();
        let endpoint_id: String = row.try_get("id")?;
        for (event, id) in events.iter().zip(&ids) {
            if event.owner.kind().as_str() != owner_kind
                || event.owner.id() != owner_id
                || !types.contains(event.event_type)
            {
                continue;
            }
            let (status, next_attempt_at, last_error) = if enabled {
                (DeliveryStatus::Pending, Some(now.0), None)
            } else {
                (DeliveryStatus::Failed, None, Some("endpoint disabled"))
            };
            deliveries.push(serde_json::json!({
                "event_id": id.as_str(), "endpoint_id": endpoint_id, "status": status.as_str(),
                "next_attempt_at_ms": next_attempt_at, "last_error": last_error,
            }));
        }
    }
    if !deliveries.is_empty() {
        let select = if postgres {
            "SELECT r.event_id, r.endpoint_id, r.status, 0, r.next_attempt_at_ms, r.last_error, $2, $2 \
             FROM json_to_recordset($1::json) AS r(event_id TEXT, endpoint_id TEXT, status TEXT, \
             next_attempt_at_ms BIGINT, last_error TEXT)"
        } else {
            "SELECT value ->> 'event_id', value ->> 'endpoint_id', value ->> 'status', 0, \
             value ->> 'next_attempt_at_ms', value ->> 'last_error', $2, $2 FROM json_each($1)"
        };
        let sql = format!(
            "INSERT INTO callback_deliveries (event_id, endpoint_id, status, attempts, next_attempt_at_ms, last_error, \
             created_at_ms, updated_at_ms) {select}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(serde_json::Value::Array(deliveries).to_string())
            .bind(now.0)
            .execute(&mut *conn)
            .await?;
    }
    Ok(ids)
}

/// A rotated signing secret, sealed: the new one, and the previous one with how long it
/// still signs.
#[derive(Clone, Copy, Debug)]
pub struct SecretRotation<'a> {
    pub new_secret: &'a str,
    pub previous_secret: &'a str,
    pub previous_until: UnixMs,
}

impl Store {
    /// Publish one event in a transaction of its own.
    pub async fn enqueue(&self, event: &NewEvent, now: UnixMs) -> Result<EventId, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = enqueue_in(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Publish many events in one transaction (bulk loads, the benchmark).
    pub async fn enqueue_many(&self, events: &[NewEvent], now: UnixMs) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        enqueue_many_in(&mut tx, &events.iter().collect::<Vec<_>>(), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Register an endpoint unless its owner already has the most it may have
    /// (`GuardFailed`).
    pub async fn insert_endpoint(
        &self,
        endpoint: &Endpoint,
        region_id: &RegionId,
        secrets: &SealedSecrets,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let existing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM callback_endpoints WHERE owner_kind = $1 AND owner_id = $2")
                .bind(endpoint.owner.kind().as_str())
                .bind(endpoint.owner.id())
                .fetch_one(&mut *tx)
                .await?;
        if existing >= MAX_ENDPOINTS_PER_OWNER {
            return Err(StoreError::GuardFailed);
        }
        sqlx::query(
            "INSERT INTO callback_endpoints (id, owner_kind, owner_id, region_id, url, event_types, status, \
             disabled_reason, secret_sealed, signing_key_sealed, public_key, consecutive_failures, version, \
             created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, $14)",
        )
        .bind(endpoint.id.as_str())
        .bind(endpoint.owner.kind().as_str())
        .bind(endpoint.owner.id())
        .bind(region_id.as_str())
        .bind(endpoint.url.as_str())
        .bind(endpoint.event_types.to_stored())
        .bind(endpoint.status.as_str())
        .bind(endpoint.disabled_reason.map(DisabledReason::as_str))
        .bind(secrets.secret.as_str())
        .bind(secrets.signing_key.as_deref())
        .bind(endpoint.public_key.as_deref())
        .bind(endpoint.version)
        .bind(endpoint.created_at.0)
        .bind(endpoint.updated_at.0)
        .execute(&mut *tx)
        .await?;
        append_in(&mut tx, audit, endpoint.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>, StoreError> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} {ENDPOINT_FROM} WHERE e.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(endpoint_from_row).transpose()?)
    }

    pub async fn endpoint_secrets(&self, id: &EndpointId) -> Result<Option<SealedSecrets>, StoreError> {
        let row = sqlx::query(
            "SELECT secret_sealed, previous_secret_sealed, previous_secret_until_ms, signing_key_sealed \
             FROM callback_endpoints WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(secrets_from_row).transpose()?)
    }

    /// Endpoints in scope, optionally of one owner and of the owner kinds the caller may see.
    pub async fn list_endpoints(
        &self,
        scope: ScopeFilter<'_>,
        owner: Option<&EventOwner>,
        kinds: &[OwnerKind],
        page: Page<'_>,
    ) -> Result<Vec<Endpoint>, StoreError> {
        let kind = |index: usize| kinds.get(index).map(|kind| kind.as_str()).unwrap_or("");
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} {ENDPOINT_FROM} \
             WHERE ($1 IS NULL OR substr(r.path, 1, length($1)) = $1) \
             AND ($2 IS NULL OR (e.owner_kind = $2 AND e.owner_id = $3)) \
             AND e.owner_kind IN ($4, $5) AND ($6 IS NULL OR e.id > $6) ORDER BY e.id LIMIT $7"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.map(RegionPath::as_str))
            .bind(owner.map(|owner| owner.kind().as_str()))
            .bind(owner.map(EventOwner::id))
            .bind(kind(0))
            .bind(kind(1))
            .bind(page.after)
            .bind(i64::from(page.limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(endpoint_from_row).collect::<Result<_, _>>()?)
    }

    /// Change an endpoint's URL, types or status if nobody changed it since
    /// `expected_version`. Enabling clears the failure run, so it starts afresh.
    pub async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        expected_version: i64,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE callback_endpoints SET url = $1, event_types = $2, status = $3, disabled_reason = $4, \
             consecutive_failures = CASE WHEN $3 = 'enabled' AND status = 'disabled' THEN 0 ELSE consecutive_failures END, \
             failing_since_ms = CASE WHEN $3 = 'enabled' AND status = 'disabled' THEN NULL ELSE failing_since_ms END, \
             version = $5, updated_at_ms = $6 WHERE id = $7 AND version = $8",
        )
        .bind(endpoint.url.as_str())
        .bind(endpoint.event_types.to_stored())
        .bind(endpoint.status.as_str())
        .bind(endpoint.disabled_reason.map(DisabledReason::as_str))
        .bind(endpoint.version)
        .bind(endpoint.updated_at.0)
        .bind(endpoint.id.as_str())
        .bind(expected_version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        append_in(&mut tx, audit, endpoint.updated_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replace the signing secret; the current one becomes the previous one until `until`.
    pub async fn rotate_endpoint_secret(
        &self,
        id: &EndpointId,
        expected_version: i64,
        rotation: &SecretRotation<'_>,
        now: UnixMs,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let SecretRotation { new_secret, previous_secret, previous_until: until } = *rotation;
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE callback_endpoints SET secret_sealed = $1, previous_secret_sealed = $2, \
             previous_secret_until_ms = $3, version = version + 1, updated_at_ms = $4 \
             WHERE id = $5 AND version = $6",
        )
        .bind(new_secret)
        .bind(previous_secret)
        .bind(until.0)
        .bind(now.0)
        .bind(id.as_str())
        .bind(expected_version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        append_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_deliveries(
        &self,
        endpoint: &EndpointId,
        status: Option<DeliveryStatus>,
        page: Page<'_>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.event_id, d.endpoint_id, ev.event_type, ev.object_id, ev.object_version, d.status, d.attempts, \
             d.next_attempt_at_ms, d.last_status_code, d.last_error, ev.created_at_ms AS event_created_at_ms, \
             d.updated_at_ms FROM callback_deliveries d JOIN callback_events ev ON ev.id = d.event_id \
             WHERE d.endpoint_id = $1 AND ($2 IS NULL OR d.status = $2) AND ($3 IS NULL OR d.event_id > $3) \
             ORDER BY d.event_id LIMIT $4",
        )
        .bind(endpoint.as_str())
        .bind(status.map(DeliveryStatus::as_str))
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(delivery_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn list_attempts(
        &self,
        endpoint: &EndpointId,
        event: Option<&EventId>,
        page: Page<'_>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, endpoint_id, attempt, started_at_ms, latency_ms, status_code, error, \
             response_excerpt, next_attempt_at_ms FROM callback_attempts \
             WHERE endpoint_id = $1 AND ($2 IS NULL OR event_id = $2) AND ($3 IS NULL OR id > $3) \
             ORDER BY id LIMIT $4",
        )
        .bind(endpoint.as_str())
        .bind(event.map(EventId::as_str))
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(attempt_from_row).collect::<Result<_, _>>()?)
    }

    /// The owner of an event, if it exists.
    pub async fn event_owner(&self, id: &EventId) -> Result<Option<EventOwner>, StoreError> {
        let row = sqlx::query("SELECT owner_kind, owner_id FROM callback_events WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let kind = text_enum(&row, "owner_kind", OwnerKind::parse)?;
        Ok(Some(EventOwner::from_trusted(kind, row.try_get("owner_id")?)))
    }

    /// Deliver `event` to `endpoint` again, with a fresh retry schedule. A delivery still
    /// pending (perhaps in flight) is left alone: it is going out anyway. Returns whether
    /// anything was queued.
    pub async fn replay_event(
        &self,
        endpoint: &EndpointId,
        event: &EventId,
        now: UnixMs,
        audit: &AuditEntry<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let queued = sqlx::query(
            "INSERT INTO callback_deliveries (event_id, endpoint_id, status, attempts, next_attempt_at_ms, \
             created_at_ms, updated_at_ms) VALUES ($1, $2, 'pending', 0, $3, $3, $3) \
             ON CONFLICT (event_id, endpoint_id) DO UPDATE SET status = 'pending', attempts = 0, \
             next_attempt_at_ms = $3, last_error = NULL, updated_at_ms = $3 \
             WHERE callback_deliveries.status <> 'pending'",
        )
        .bind(event.as_str())
        .bind(endpoint.as_str())
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        append_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(queued.rows_affected() == 1)
    }

    /// Queue again every failed delivery to `endpoint` of an event created at or after
    /// `since`. Failed deliveries are never claimed, so no attempt in flight is disturbed.
    pub async fn replay_failed_since(
        &self,
        endpoint: &EndpointId,
        since: UnixMs,
        now: UnixMs,
        audit: &AuditEntry<'_>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let queued = sqlx::query(
            "UPDATE callback_deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = $1, \
             last_error = NULL, updated_at_ms = $1 WHERE endpoint_id = $2 AND status = 'failed' AND created_at_ms >= $3",
        )
        .bind(now.0)
        .bind(endpoint.as_str())
        .bind(since.0)
        .execute(&mut *tx)
        .await?;
        append_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(queued.rows_affected())
    }

    /// Take the lease on up to `limit` due deliveries for `claim` (a token unique to this
    /// claim), until `lease_until`. Returns how many were taken.
    pub async fn claim_due_deliveries(
        &self,
        strategy: ClaimStrategy,
        claim: &str,
        now: UnixMs,
        lease_until: UnixMs,
        limit: u32,
    ) -> Result<u64, StoreError> {
        const DUE: &str = "SELECT event_id, endpoint_id FROM callback_deliveries \
             WHERE status = 'pending' AND next_attempt_at_ms <= $3 AND (lease_until_ms IS NULL OR lease_until_ms < $3) \
             ORDER BY next_attempt_at_ms LIMIT $4";
        let sql = match strategy {
            // The outer WHERE repeats the lease test: on PostgreSQL a claimer that lost the
            // race re-evaluates it against the winner's row and skips it.
            ClaimStrategy::CompareAndSet => format!(
                "UPDATE callback_deliveries SET claimed_by = $1, lease_until_ms = $2 \
                 WHERE (event_id, endpoint_id) IN ({DUE}) \
                 AND status = 'pending' AND (lease_until_ms IS NULL OR lease_until_ms < $3)"
            ),
            ClaimStrategy::SkipLocked => format!(
                "UPDATE callback_deliveries SET claimed_by = $1, lease_until_ms = $2 \
                 WHERE (event_id, endpoint_id) IN ({DUE} FOR UPDATE SKIP LOCKED)"
            ),
        };
        let claimed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(claim)
            .bind(lease_until.0)
            .bind(now.0)
            .bind(i64::from(limit))
            .execute(self.pool())
            .await?;
        Ok(claimed.rows_affected())
    }

    /// The deliveries held by `claim`, with their bodies.
    pub async fn claimed_deliveries(&self, claim: &str) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.event_id, d.endpoint_id, d.attempts, ev.body FROM callback_deliveries d \
             JOIN callback_events ev ON ev.id = d.event_id WHERE d.claimed_by = $1 AND d.status = 'pending'",
        )
        .bind(claim)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedDelivery {
                    event_id: EventId::from_trusted(row.try_get("event_id")?),
                    endpoint_id: EndpointId::from_trusted(row.try_get("endpoint_id")?),
                    attempts: row.try_get("attempts")?,
                    body: row.try_get("body")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The endpoints (with sealed secrets) of the deliveries held by `claim`.
    pub async fn claimed_endpoints(&self, claim: &str) -> Result<Vec<(Endpoint, SealedSecrets)>, StoreError> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS}, e.secret_sealed, e.previous_secret_sealed, e.signing_key_sealed \
             {ENDPOINT_FROM} WHERE e.id IN (SELECT endpoint_id FROM callback_deliveries WHERE claimed_by = $1)"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(claim).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| Ok((endpoint_from_row(row)?, secrets_from_row(row)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Record what became of claimed deliveries, all in one transaction: the attempt rows,
    /// each delivery's next state (only while `claim` still holds it: a lease that ran out
    /// belongs to whoever took it over), and each endpoint's failure run. Endpoints that
    /// answered 410, or failed past `rules`, are disabled and their owner gets an
    /// `endpoint.disabled` event in the same transaction. Returns the endpoints disabled.
    pub async fn record_outcomes(
        &self,
        outcomes: &[Outcome],
        rules: HealthRules,
        now: UnixMs,
    ) -> Result<Vec<EndpointId>, StoreError> {
        let mut tx = self.begin_write().await?;
        // Per endpoint, in finishing order: whether each recorded attempt succeeded.
        let mut health: std::collections::BTreeMap<String, EndpointHealth> = Default::default();
        for outcome in outcomes {
            let (event_id, endpoint_id) = (&outcome.event_id, &outcome.endpoint_id);
            match &outcome.result {
                OutcomeResult::EndpointDisabled => {
                    sqlx::query(
                        "UPDATE callback_deliveries SET status = 'failed', next_attempt_at_ms = NULL, \
                         last_error = 'endpoint disabled', claimed_by = NULL, lease_until_ms = NULL, updated_at_ms = $1 \
                         WHERE event_id = $2 AND endpoint_id = $3 AND claimed_by = $4",
                    )
                    .bind(now.0)
                    .bind(event_id.as_str())
                    .bind(endpoint_id.as_str())
                    .bind(&*outcome.claim)
                    .execute(&mut *tx)
                    .await?;
                }
                OutcomeResult::Attempted { attempt, verdict } => {
                    let (status, next_attempt_at) = match verdict {
                        Verdict::Delivered => (DeliveryStatus::Succeeded, None),
                        Verdict::RetryAt(at) => (DeliveryStatus::Pending, Some(at.0)),
                        Verdict::Gone | Verdict::GiveUp => (DeliveryStatus::Failed, None),
                    };
                    let updated = sqlx::query(
                        "UPDATE callback_deliveries SET status = $1, attempts = $2, next_attempt_at_ms = $3, \
                         last_status_code = $4, last_error = $5, claimed_by = NULL, lease_until_ms = NULL, \
                         updated_at_ms = $6 WHERE event_id = $7 AND endpoint_id = $8 AND claimed_by = $9",
                    )
                    .bind(status.as_str())
                    .bind(attempt.attempt)
                    .bind(next_attempt_at)
                    .bind(attempt.status_code)
                    .bind(attempt.error.as_deref())
                    .bind(now.0)
                    .bind(event_id.as_str())
                    .bind(endpoint_id.as_str())
                    .bind(&*outcome.claim)
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() != 1 {
                        // Lease lost: the new holder makes (and records) its own attempt.
                        continue;
                    }
                    insert_attempt(&mut tx, attempt, next_attempt_at).await?;
                    let entry = health.entry(endpoint_id.as_str().to_owned()).or_default();
                    match verdict {
                        Verdict::Delivered => entry.succeeded(),
                        Verdict::Gone => entry.gone = true,
                        Verdict::RetryAt(_) | Verdict::GiveUp => entry.failed(attempt.started_at),
                    }
                }
            }
        }
        let mut disabled = Vec::new();
        // BTreeMap order: every recorder touches endpoint rows in id order, so two instances
        // recording at once cannot deadlock on them.
        for (endpoint_id, health) in &health {
            if let Some(reason) = update_health(&mut tx, endpoint_id, health, rules, now).await? {
                let endpoint_id = EndpointId::from_trusted(endpoint_id.clone());
                announce_disabled(&mut tx, &endpoint_id, reason, now).await?;
                disabled.push(endpoint_id);
            }
        }
        tx.commit().await?;
        Ok(disabled)
    }

    /// Deliveries not yet settled (pending), for the benchmark and operators.
    pub async fn pending_delivery_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM callback_deliveries WHERE status = 'pending'")
            .fetch_one(self.pool())
            .await?)
    }
}

async fn insert_attempt(
    conn: &mut AnyConnection,
    attempt: &Attempt,
    next_attempt_at: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO callback_attempts (id, event_id, endpoint_id, attempt, started_at_ms, latency_ms, status_code, \
         error, response_excerpt, next_attempt_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(attempt.id.as_str())
    .bind(attempt.event_id.as_str())
    .bind(attempt.endpoint_id.as_str())
    .bind(attempt.attempt)
    .bind(attempt.started_at.0)
    .bind(attempt.latency_ms)
    .bind(attempt.status_code)
    .bind(attempt.error.as_deref())
    .bind(attempt.response_excerpt.as_str())
    .bind(next_attempt_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What one batch says about an endpoint: its failures since its last success in the batch.
#[derive(Default)]
struct EndpointHealth {
    any_success: bool,
    failures_after_success: i64,
    first_failure_after_success: Option<UnixMs>,
    gone: bool,
}

impl EndpointHealth {
    fn succeeded(&mut self) {
        self.any_success = true;
        self.failures_after_success = 0;
        self.first_failure_after_success = None;
    }

    fn failed(&mut self, at: UnixMs) {
        self.failures_after_success += 1;
        self.first_failure_after_success.get_or_insert(at);
    }
}

/// Apply a batch's verdicts to the endpoint's failure run; disable it when it answered 410
/// or has failed past the rules. Returns why it was disabled, if it was just now.
async fn update_health(
    conn: &mut AnyConnection,
    endpoint_id: &str,
    health: &EndpointHealth,
    rules: HealthRules,
    now: UnixMs,
) -> Result<Option<DisabledReason>, StoreError> {
    if health.any_success {
        sqlx::query("UPDATE callback_endpoints SET consecutive_failures = $1, failing_since_ms = $2 WHERE id = $3")
            .bind(health.failures_after_success)
            .bind(health.first_failure_after_success.map(|at| at.0))
            .bind(endpoint_id)
            .execute(&mut *conn)
            .await?;
    } else if let Some(first) = health.first_failure_after_success {
        sqlx::query(
            "UPDATE callback_endpoints SET consecutive_failures = consecutive_failures + $1, \
             failing_since_ms = COALESCE(failing_since_ms, $2) WHERE id = $3",
        )
        .bind(health.failures_after_success)
        .bind(first.0)
        .bind(endpoint_id)
        .execute(&mut *conn)
        .await?;
    }
    let (reason, guard) = if health.gone {
        (DisabledReason::Gone, "")
    } else if health.failures_after_success > 0 {
        (DisabledReason::Failing, " AND consecutive_failures >= $4 AND failing_since_ms <= $5")
    } else {
        return Ok(None);
    };
    let sql = format!(
        "UPDATE callback_endpoints SET status = 'disabled', disabled_reason = $1, version = version + 1, \
         updated_at_ms = $2 WHERE id = $3 AND status = 'enabled'{guard}"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(reason.as_str()).bind(now.0).bind(endpoint_id);
    if reason == DisabledReason::Failing {
        query = query.bind(rules.failure_threshold).bind(now.0 - rules.failure_window_ms);
    }
    let disabled = query.execute(&mut *conn).await?;
    Ok((disabled.rows_affected() == 1).then_some(reason))
}

/// Tell the owner, through its other endpoints, that carepay stopped delivering to one.
async fn announce_disabled(
    conn: &mut AnyConnection,
    endpoint_id: &EndpointId,
    reason: DisabledReason,
    now: UnixMs,
) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT owner_kind, owner_id, url, version FROM callback_endpoints WHERE id = $1")
        .bind(endpoint_id.as_str())
        .fetch_one(&mut *conn)
        .await?;
    let owner = EventOwner::from_trusted(text_enum(&row, "owner_kind", OwnerKind::parse)?, row.try_get("owner_id")?);
    let event = NewEvent {
        owner,
        event_type: EventType::EndpointDisabled,
        object_id: endpoint_id.as_str().to_owned(),
        object_version: row.try_get("version")?,
        data: serde_json::json!({
            "endpoint_id": endpoint_id.as_str(),
            "url": row.try_get::<String, _>("url")?,
            "reason": reason.as_str(),
        }),
    };
    enqueue_in(conn, &event, now).await?;
    Ok(())
}
