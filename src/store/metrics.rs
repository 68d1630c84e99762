//! What `/metrics` samples from the database and the pool, bounded in rows counted.

use sqlx::Row as _;

use super::{Store, StoreError};
use crate::domain::time::UnixMs;

/// The portable pool's connections now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    pub max: u32,
    pub idle: usize,
    pub in_use: usize,
}

/// Callback deliveries not yet final, each count at most the limit it was asked with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryBacklog {
    pub pending: i64,
    /// Pending and due now: what the workers have not caught up with.
    pub due: i64,
}

impl Store {
    pub fn pool_usage(&self) -> PoolUsage {
        let (open, idle) = (self.pool.size() as usize, self.pool.num_idle());
        PoolUsage { max: self.pool.options().get_max_connections(), idle, in_use: open.saturating_sub(idle) }
    }

    /// Pending deliveries, counted over the partial index of pending rows and cut off at
    /// `limit` each.
    pub async fn delivery_backlog(&self, now: UnixMs, limit: i64) -> Result<DeliveryBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT \
             (SELECT COUNT(*) FROM (SELECT 1 FROM callback_deliveries WHERE status = 'pending' LIMIT $1) AS p), \
             (SELECT COUNT(*) FROM (SELECT 1 FROM callback_deliveries WHERE status = 'pending' \
              AND next_attempt_at_ms <= $2 LIMIT $1) AS d)",
        )
        .bind(limit)
        .bind(now.0)
        .fetch_one(self.pool())
        .await?;
        Ok(DeliveryBacklog { pending: row.try_get(0)?, due: row.try_get(1)? })
    }
}
