//! Lookups the demo seeding (`carepay demo`) needs to find what an earlier run made.

use super::{Store, StoreError};
use crate::domain::ids::{BatchId, ProgrammeId, RegionId};

impl Store {
    /// The programme of `region` named `name`, if one exists (names are not unique; the oldest).
    pub async fn programme_id_by_name(&self, region: &RegionId, name: &str) -> Result<Option<ProgrammeId>, StoreError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM subsidy_programmes WHERE region_id = $1 AND name = $2 ORDER BY created_at_ms, id LIMIT 1",
        )
        .bind(region.as_str())
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        Ok(id.map(ProgrammeId::from_trusted))
    }

    /// The batch of `programme` uploaded under `idempotency_key` by anyone (an upload's own
    /// idempotency is per uploader, and every demo run has a new clerk token).
    pub async fn batch_id_by_key(
        &self,
        programme: &ProgrammeId,
        idempotency_key: &str,
    ) -> Result<Option<BatchId>, StoreError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM subsidy_batches WHERE programme_id = $1 AND idempotency_key = $2 ORDER BY created_at_ms, id LIMIT 1",
        )
        .bind(programme.as_str())
        .bind(idempotency_key)
        .fetch_optional(self.pool())
        .await?;
        Ok(id.map(BatchId::from_trusted))
    }
}
