//! Back-office API tokens (stored as SHA-256 digests only).

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::audit::{AuditEntry, append_in};
use super::directory::{Page, ScopeFilter, corrupt};
use super::{Store, StoreError};
use crate::domain::access::ApiToken;
use crate::domain::directory::{Name, RegionPath};
use crate::domain::ids::{RegionId, TokenId};
use crate::domain::role::Role;
use crate::domain::time::UnixMs;

const TOKEN_SELECT: &str = "SELECT t.id, t.role, t.scope_region_id, r.path AS scope_path, t.label, \
     t.created_by, t.created_at_ms, t.expires_at_ms, t.revoked_at_ms \
     FROM api_tokens t LEFT JOIN regions r ON r.id = t.scope_region_id";

fn token_from_row(row: &AnyRow) -> Result<ApiToken, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(ApiToken {
        id: TokenId::from_trusted(row.try_get("id")?),
        role: Role::parse(&role).ok_or_else(|| corrupt("api_tokens.role", &role))?,
        scope_region_id: row.try_get::<Option<String>, _>("scope_region_id")?.map(RegionId::from_trusted),
        scope_path: row.try_get::<Option<String>, _>("scope_path")?.map(RegionPath::from_trusted),
        label: Name::from_trusted(row.try_get("label")?),
        created_by: row.try_get::<Option<String>, _>("created_by")?.map(TokenId::from_trusted),
        created_at: UnixMs(row.try_get("created_at_ms")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at_ms")?.map(UnixMs),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at_ms")?.map(UnixMs),
    })
}

impl Store {
    pub async fn insert_token(
        &self,
        token: &ApiToken,
        token_sha256: &str,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_tokens (id, token_sha256, role, scope_region_id, label, created_by, \
             created_at_ms, expires_at_ms, revoked_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)",
        )
        .bind(token.id.as_str())
        .bind(token_sha256)
        .bind(token.role.as_str())
        .bind(token.scope_region_id.as_ref().map(RegionId::as_str))
        .bind(token.label.as_str())
        .bind(token.created_by.as_ref().map(TokenId::as_str))
        .bind(token.created_at.0)
        .bind(token.expires_at.map(|at| at.0))
        .execute(&mut *tx)
        .await?;
        append_in(&mut tx, audit, token.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Look a presented token up by its digest. Every request does this, so revocation
    /// takes effect at once on every instance sharing the database.
    pub async fn token_by_sha256(&self, token_sha256: &str) -> Result<Option<ApiToken>, StoreError> {
        let sql = format!("{TOKEN_SELECT} WHERE t.token_sha256 = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(token_sha256).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    pub async fn token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        let sql = format!("{TOKEN_SELECT} WHERE t.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    /// Tokens whose scope lies inside `scope` (a token of scope "all" lies inside only "all").
    pub async fn list_tokens(&self, scope: ScopeFilter<'_>, page: Page<'_>) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!(
            "{TOKEN_SELECT} WHERE ($1 IS NULL OR substr(r.path, 1, length($1)) = $1) \
             AND ($2 IS NULL OR t.id > $2) ORDER BY t.id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.map(RegionPath::as_str))
            .bind(page.after)
            .bind(i64::from(page.limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
    }

    /// Revoke once; revoking an already revoked token is `GuardFailed`.
    pub async fn revoke_token(&self, id: &TokenId, now: UnixMs, audit: &AuditEntry<'_>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE api_tokens SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL")
            .bind(now.0)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        append_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    }
}
