//! What the web console keeps (its sessions) and the listings it shows that no API route
//! needed before: programmes and batches within a scope, a wallet's business days, a
//! facility's refunds of a day.

use sqlx::Row as _;

use super::directory::{Page, ScopeFilter};
use super::disbursement::{BATCH_COLUMNS, PROGRAMME_COLUMNS, batch_from_row, programme_from_row};
use super::payments::{REFUND_COLUMNS, refund_from_row};
use super::{Store, StoreError};
use crate::domain::batch::{Batch, Programme};
use crate::domain::directory::RegionPath;
use crate::domain::ids::{FacilityId, ProgrammeId, TokenId};
use crate::domain::payment::Refund;
use crate::domain::time::UnixMs;

/// A console session as stored: whose token it stands for and its form token.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub token_id: TokenId,
    pub csrf_token: String,
    pub expires_at: UnixMs,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("token_id", &self.token_id)
            .field("csrf_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// One business day of a wallet, as far as reconciliation got with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletDay {
    pub business_day: String,
    /// Statement file versions received.
    pub statement_files: i64,
    /// JSON of the newest run's summary, when the day has been run.
    pub latest_summary: Option<String>,
    pub open_discrepancies: i64,
    /// `open` or `closed` once the day has been run.
    pub day_status: Option<String>,
}

impl Store {
    pub async fn insert_console_session(
        &self,
        id_sha256: &str,
        session: &StoredSession,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // Expired sessions are removed as new ones arrive, so the table stays as small as
        // the number of people signed in.
        sqlx::query("DELETE FROM console_sessions WHERE expires_at_ms <= $1").bind(now.0).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_sha256, token_id, csrf_token, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_sha256)
        .bind(session.token_id.as_str())
        .bind(&session.csrf_token)
        .bind(now.0)
        .bind(session.expires_at.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn console_session(&self, id_sha256: &str) -> Result<Option<StoredSession>, StoreError> {
        let row = sqlx::query("SELECT token_id, csrf_token, expires_at_ms FROM console_sessions WHERE id_sha256 = $1")
            .bind(id_sha256)
            .fetch_optional(self.pool())
            .await?;
        Ok(row
            .map(|row| -> Result<_, sqlx::Error> {
                Ok(StoredSession {
                    token_id: TokenId::from_trusted(row.try_get(0)?),
                    csrf_token: row.try_get(1)?,
                    expires_at: UnixMs(row.try_get(2)?),
                })
            })
            .transpose()?)
    }

    pub async fn delete_console_session(&self, id_sha256: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE id_sha256 = $1").bind(id_sha256).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Programmes owned by regions inside `scope`, in id order.
    pub async fn list_programmes(&self, scope: ScopeFilter<'_>, page: Page<'_>) -> Result<Vec<Programme>, StoreError> {
        let sql = format!(
            "SELECT {PROGRAMME_COLUMNS} FROM subsidy_programmes p JOIN regions r ON r.id = p.region_id \
             WHERE ($1 IS NULL OR substr(r.path, 1, length($1)) = $1) AND ($2 IS NULL OR p.id > $2) \
             ORDER BY p.id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.map(RegionPath::as_str))
            .bind(page.after)
            .bind(i64::from(page.limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(programme_from_row).collect::<Result<_, _>>()?)
    }

    /// A programme's batches, newest first, at most `limit`.
    pub async fn batches_of_programme(&self, programme: &ProgrammeId, limit: u32) -> Result<Vec<Batch>, StoreError> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM subsidy_batches b JOIN subsidy_programmes p ON p.id = b.programme_id \
             JOIN regions r ON r.id = p.region_id WHERE b.programme_id = $1 \
             ORDER BY b.created_at_ms DESC, b.id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(programme.as_str())
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(batch_from_row).collect::<Result<_, _>>()?)
    }

    /// Refunds of a facility's payments created in `[from, to)`, newest first, at most `limit`.
    pub async fn refunds_of_facility(
        &self,
        facility: &FacilityId,
        from: UnixMs,
        to: UnixMs,
        limit: u32,
    ) -> Result<Vec<Refund>, StoreError> {
        let columns = REFUND_COLUMNS.split(", ").map(|column| format!("rf.{column}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {columns} FROM refunds rf JOIN payments p ON p.id = rf.payment_id \
             WHERE p.facility_id = $1 AND rf.created_at_ms >= $2 AND rf.created_at_ms < $3 \
             ORDER BY rf.created_at_ms DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(facility.as_str())
            .bind(from.0)
            .bind(to.0)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(refund_from_row).collect::<Result<_, _>>()?)
    }

    /// Every business day of a wallet in `[first_day, last_day]` that reconciliation has
    /// seen (a statement, a run or a status), in day order. Days it has not seen are absent.
    pub async fn wallet_days(
        &self,
        wallet_id: &str,
        first_day: &str,
        last_day: &str,
    ) -> Result<Vec<WalletDay>, StoreError> {
        let mut days: std::collections::BTreeMap<String, WalletDay> = std::collections::BTreeMap::new();
        let blank = |day: &str| WalletDay {
            business_day: day.to_owned(),
            statement_files: 0,
            latest_summary: None,
            open_discrepancies: 0,
            day_status: None,
        };
        let files = sqlx::query(
            "SELECT business_day, CAST(COUNT(*) AS BIGINT) FROM statement_files \
             WHERE wallet_id = $1 AND business_day >= $2 AND business_day <= $3 GROUP BY business_day",
        )
        .bind(wallet_id)
        .bind(first_day)
        .bind(last_day)
        .fetch_all(self.pool())
        .await?;
        for row in files {
            let day: String = row.try_get(0)?;
            days.entry(day.clone()).or_insert_with(|| blank(&day)).statement_files = row.try_get(1)?;
        }
        // Runs in creation order: the last one seen for a day is its newest.
        let runs = sqlx::query(
            "SELECT business_day, summary FROM reconciliation_runs \
             WHERE wallet_id = $1 AND business_day >= $2 AND business_day <= $3 ORDER BY created_at_ms, id",
        )
        .bind(wallet_id)
        .bind(first_day)
        .bind(last_day)
        .fetch_all(self.pool())
        .await?;
        for row in runs {
            let day: String = row.try_get(0)?;
            days.entry(day.clone()).or_insert_with(|| blank(&day)).latest_summary = Some(row.try_get(1)?);
        }
        let open = sqlx::query(
            "SELECT business_day, CAST(COUNT(*) AS BIGINT) FROM discrepancies \
             WHERE wallet_id = $1 AND business_day >= $2 AND business_day <= $3 AND status = 'open' \
             GROUP BY business_day",
        )
        .bind(wallet_id)
        .bind(first_day)
        .bind(last_day)
        .fetch_all(self.pool())
        .await?;
        for row in open {
            let day: String = row.try_get(0)?;
            days.entry(day.clone()).or_insert_with(|| blank(&day)).open_discrepancies = row.try_get(1)?;
        }
        let statuses = sqlx::query(
            "SELECT business_day, status FROM reconciliation_days \
             WHERE wallet_id = $1 AND business_day >= $2 AND business_day <= $3",
        )
        .bind(wallet_id)
        .bind(first_day)
        .bind(last_day)
        .fetch_all(self.pool())
        .await?;
        for row in statuses {
            let day: String = row.try_get(0)?;
            days.entry(day.clone()).or_insert_with(|| blank(&day)).day_status = Some(row.try_get(1)?);
        }
        Ok(days.into_values().collect())
    }
}
