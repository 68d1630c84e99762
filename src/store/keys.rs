//! Sealed values at rest, for re-sealing under the current key: citizen ID numbers of subsidy
//! lines (a full row's own copy, or a chunk's sealed list) and callback endpoints' secrets and
//! signing keys. Pages are keyset-paged by primary
//! key and every rewrite is a compare-and-set on the old ciphertext, so a run can stop at any
//! point and start again, and a value changed meanwhile (a secret rotated) is left alone.

use sqlx::Row as _;

use super::{Store, StoreError};

/// One sealed value and what it is bound to (the associated data it was sealed with).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedValue {
    pub location: SealedLocation,
    pub sealed: String,
    /// The context the value was sealed with.
    pub context: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealedLocation {
    /// `subsidy_lines.citizen_id_sealed` of (batch, seq).
    CitizenId { batch_id: String, seq: i64 },
    /// `subsidy_line_chunks.citizen_ids_sealed` of (batch, first seq): `ids` numbers in one value.
    CitizenIdChunk { batch_id: String, first_seq: i64, ids: u64 },
    /// One sealed column of `callback_endpoints`.
    Endpoint { id: String, column: EndpointColumn },
}

/// The sealed columns of an endpoint; the context is `{endpoint id}/{field}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointColumn {
    Secret,
    PreviousSecret,
    SigningKey,
}

impl EndpointColumn {
    const ALL: [EndpointColumn; 3] =
        [EndpointColumn::Secret, EndpointColumn::PreviousSecret, EndpointColumn::SigningKey];

    fn column(self) -> &'static str {
        match self {
            EndpointColumn::Secret => "secret_sealed",
            EndpointColumn::PreviousSecret => "previous_secret_sealed",
            EndpointColumn::SigningKey => "signing_key_sealed",
        }
    }

    fn field(self) -> &'static str {
        match self {
            EndpointColumn::Secret => "secret",
            EndpointColumn::PreviousSecret => "previous_secret",
            EndpointColumn::SigningKey => "signing_key",
        }
    }
}

/// Where the next page starts: after this line, this chunk, or this endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResealCursor {
    pub line: Option<(String, i64)>,
    pub chunk: Option<(String, i64)>,
    pub endpoint: Option<String>,
}

impl Store {
    /// Up to `limit` citizen ID numbers after `after` not sealed under `current_prefix`, in
    /// primary-key order. A re-issued line carries its first generation's sealed copy, so the
    /// context is that line's `out_transfer_no`.
    pub async fn citizen_ids_to_reseal(
        &self,
        current_prefix: &str,
        after: Option<&(String, i64)>,
        limit: u32,
    ) -> Result<Vec<SealedValue>, StoreError> {
        let (after_batch, after_seq) = after.map(|(b, s)| (b.as_str(), *s)).unwrap_or(("", 0));
        let rows = sqlx::query(
            "SELECT l.batch_id, l.seq, l.citizen_id_sealed, f.out_transfer_no FROM subsidy_lines l \
             JOIN subsidy_lines f ON f.batch_id = l.batch_id AND f.file_line = l.file_line AND f.generation = 0 \
             WHERE l.citizen_id_sealed IS NOT NULL AND (l.batch_id > $1 OR (l.batch_id = $1 AND l.seq > $2)) \
             AND substr(l.citizen_id_sealed, 1, length($3)) <> $3 ORDER BY l.batch_id, l.seq LIMIT $4",
        )
        .bind(after_batch)
        .bind(after_seq)
        .bind(current_prefix)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            let out_transfer_no: String = row.try_get(3)?;
            values.push(SealedValue {
                location: SealedLocation::CitizenId { batch_id: row.try_get(0)?, seq: row.try_get(1)? },
                sealed: row.try_get(2)?,
                context: format!("{out_transfer_no}/citizen_id"),
            });
        }
        Ok(values)
    }

    /// Up to `limit` chunks' sealed lists of ID numbers after `after` not sealed under
    /// `current_prefix`, in primary-key order.
    pub async fn citizen_id_chunks_to_reseal(
        &self,
        current_prefix: &str,
        after: Option<&(String, i64)>,
        limit: u32,
    ) -> Result<Vec<SealedValue>, StoreError> {
        let (after_batch, after_seq) = after.map(|(b, s)| (b.as_str(), *s)).unwrap_or(("", 0));
        let rows = sqlx::query(
            "SELECT batch_id, first_seq, line_count, citizen_ids_sealed FROM subsidy_line_chunks \
             WHERE (batch_id > $1 OR (batch_id = $1 AND first_seq > $2)) \
             AND substr(citizen_ids_sealed, 1, length($3)) <> $3 ORDER BY batch_id, first_seq LIMIT $4",
        )
        .bind(after_batch)
        .bind(after_seq)
        .bind(current_prefix)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            let batch_id: String = row.try_get(0)?;
            let first_seq: i64 = row.try_get(1)?;
            let ids: i64 = row.try_get(2)?;
            let context = crate::domain::batch::chunk_seal_context(
                &crate::domain::ids::BatchId::from_trusted(batch_id.clone()),
                u64::try_from(first_seq).unwrap_or_default(),
            );
            values.push(SealedValue {
                location: SealedLocation::CitizenIdChunk {
                    batch_id,
                    first_seq,
                    ids: u64::try_from(ids).unwrap_or_default(),
                },
                sealed: row.try_get(3)?,
                context,
            });
        }
        Ok(values)
    }

    /// The sealed values of up to `limit` endpoints after `after` that hold any value not
    /// sealed under `current_prefix`, in id order; with the last endpoint id of the page.
    pub async fn endpoint_secrets_to_reseal(
        &self,
        current_prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<SealedValue>, Option<String>), StoreError> {
        let stale = |column: &str| format!("({column} IS NOT NULL AND substr({column}, 1, length($2)) <> $2)");
        let sql = format!(
            "SELECT id, secret_sealed, previous_secret_sealed, signing_key_sealed FROM callback_endpoints \
             WHERE id > $1 AND ({} OR {} OR {}) ORDER BY id LIMIT $3",
            stale("secret_sealed"),
            stale("previous_secret_sealed"),
            stale("signing_key_sealed")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.unwrap_or(""))
            .bind(current_prefix)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        let mut values = Vec::new();
        let mut last = None;
        for row in rows {
            let id: String = row.try_get(0)?;
            for (index, column) in EndpointColumn::ALL.into_iter().enumerate() {
                let sealed: Option<String> = row.try_get(index + 1)?;
                if let Some(sealed) = sealed.filter(|sealed| !sealed.starts_with(current_prefix)) {
                    values.push(SealedValue {
                        location: SealedLocation::Endpoint { id: id.clone(), column },
                        sealed,
                        context: format!("{id}/{}", column.field()),
                    });
                }
            }
            last = Some(id);
        }
        Ok((values, last))
    }

    /// Replaces sealed values with their re-sealed form in one transaction, each only if it
    /// still holds the old ciphertext. Returns, for each, whether it was replaced.
    pub async fn replace_sealed(&self, replacements: &[(SealedValue, String)]) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut replaced = Vec::with_capacity(replacements.len());
        for (old, new) in replacements {
            let result = match &old.location {
                SealedLocation::CitizenId { batch_id, seq } => {
                    sqlx::query(
                        "UPDATE subsidy_lines SET citizen_id_sealed = $1 \
                         WHERE batch_id = $2 AND seq = $3 AND citizen_id_sealed = $4",
                    )
                    .bind(new.as_str())
                    .bind(batch_id.as_str())
                    .bind(*seq)
                    .bind(old.sealed.as_str())
                    .execute(&mut *tx)
                    .await?
                }
                SealedLocation::CitizenIdChunk { batch_id, first_seq, .. } => {
                    sqlx::query(
                        "UPDATE subsidy_line_chunks SET citizen_ids_sealed = $1 \
                         WHERE batch_id = $2 AND first_seq = $3 AND citizen_ids_sealed = $4",
                    )
                    .bind(new.as_str())
                    .bind(batch_id.as_str())
                    .bind(*first_seq)
                    .bind(old.sealed.as_str())
                    .execute(&mut *tx)
                    .await?
                }
                SealedLocation::Endpoint { id, column } => {
                    let column = column.column();
                    let sql = format!("UPDATE callback_endpoints SET {column} = $1 WHERE id = $2 AND {column} = $3");
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(new.as_str())
                        .bind(id.as_str())
                        .bind(old.sealed.as_str())
                        .execute(&mut *tx)
                        .await?
                }
            };
            replaced.push(result.rows_affected() == 1);
        }
        tx.commit().await?;
        Ok(replaced)
    }
}
