//! Regions, organisations, facilities, terminals and their keys.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::audit::{AuditEntry, append_in};
use super::{Store, StoreError};
use crate::domain::directory::{
    Facility, FacilityKind, Name, Organisation, PublicKey, Region, RegionLevel, RegionPath, Terminal, TerminalStatus,
    WalletId,
};
use crate::domain::ids::{FacilityId, OrganisationId, RegionId, TerminalId, TerminalKeyId};
use crate::domain::time::UnixMs;

/// A page request: rows strictly after `after` (in id order), at most `limit` of them.
#[derive(Clone, Debug)]
pub struct Page<'a> {
    pub after: Option<&'a str>,
    pub limit: u32,
}

/// Which part of the region tree a listing may return: `None` means all of it.
pub type ScopeFilter<'a> = Option<&'a RegionPath>;

pub(crate) fn corrupt(column: &'static str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unexpected value {value:?} in {column}").into())
}

fn region_from_row(row: &AnyRow) -> Result<Region, sqlx::Error> {
    let level: String = row.try_get("level")?;
    Ok(Region {
        id: RegionId::from_trusted(row.try_get("id")?),
        parent_id: row.try_get::<Option<String>, _>("parent_id")?.map(RegionId::from_trusted),
        level: RegionLevel::parse(&level).ok_or_else(|| corrupt("regions.level", &level))?,
        name: Name::from_trusted(row.try_get("name")?),
        path: RegionPath::from_trusted(row.try_get("path")?),
        created_at: UnixMs(row.try_get("created_at_ms")?),
    })
}

fn organisation_from_row(row: &AnyRow) -> Result<Organisation, sqlx::Error> {
    Ok(Organisation {
        id: OrganisationId::from_trusted(row.try_get("id")?),
        region_id: RegionId::from_trusted(row.try_get("region_id")?),
        region_path: RegionPath::from_trusted(row.try_get("region_path")?),
        name: Name::from_trusted(row.try_get("name")?),
        created_at: UnixMs(row.try_get("created_at_ms")?),
    })
}

fn facility_from_row(row: &AnyRow) -> Result<Facility, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(Facility {
        id: FacilityId::from_trusted(row.try_get("id")?),
        region_id: RegionId::from_trusted(row.try_get("region_id")?),
        region_path: RegionPath::from_trusted(row.try_get("region_path")?),
        organisation_id: row.try_get::<Option<String>, _>("organisation_id")?.map(OrganisationId::from_trusted),
        name: Name::from_trusted(row.try_get("name")?),
        kind: FacilityKind::parse(&kind).ok_or_else(|| corrupt("facilities.kind", &kind))?,
        merchant_wallet_id: WalletId::from_trusted(row.try_get("merchant_wallet_id")?),
        version: row.try_get("version")?,
        created_at: UnixMs(row.try_get("created_at_ms")?),
        updated_at: UnixMs(row.try_get("updated_at_ms")?),
    })
}

fn terminal_from_row(row: &AnyRow) -> Result<Terminal, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Terminal {
        id: TerminalId::from_trusted(row.try_get("id")?),
        facility_id: FacilityId::from_trusted(row.try_get("facility_id")?),
        merchant_wallet_id: WalletId::from_trusted(row.try_get("merchant_wallet_id")?),
        region_path: RegionPath::from_trusted(row.try_get("region_path")?),
        label: Name::from_trusted(row.try_get("label")?),
        status: TerminalStatus::parse(&status).ok_or_else(|| corrupt("terminals.status", &status))?,
        active_key_id: TerminalKeyId::from_trusted(row.try_get("key_id")?),
        public_key: PublicKey::from_trusted(row.try_get("public_key")?),
        version: row.try_get("version")?,
        created_at: UnixMs(row.try_get("created_at_ms")?),
        updated_at: UnixMs(row.try_get("updated_at_ms")?),
    })
}

const FACILITY_COLUMNS: &str = "f.id, f.region_id, r.path AS region_path, f.organisation_id, f.name, f.kind, \
     f.merchant_wallet_id, f.version, f.created_at_ms, f.updated_at_ms";

const TERMINAL_SELECT: &str = "SELECT t.id, t.facility_id, f.merchant_wallet_id, r.path AS region_path, t.label, \
     t.status, k.id AS key_id, k.public_key, t.version, t.created_at_ms, t.updated_at_ms \
     FROM terminals t \
     JOIN facilities f ON f.id = t.facility_id \
     JOIN regions r ON r.id = f.region_id \
     JOIN terminal_keys k ON k.terminal_id = t.id AND k.status = 'active'";

impl Store {
    pub async fn insert_region(&self, region: &Region, audit: &AuditEntry<'_>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO regions (id, parent_id, level, name, path, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(region.id.as_str())
        .bind(region.parent_id.as_ref().map(|id| id.as_str()))
        .bind(region.level.as_str())
        .bind(region.name.as_str())
        .bind(region.path.as_str())
        .bind(region.created_at.0)
        .execute(&mut *tx)
        .await?;
        append_in(&mut tx, audit, region.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn region(&self, id: &RegionId) -> Result<Option<Region>, StoreError> {
        let row = sqlx::query("SELECT id, parent_id, level, name, path, created_at_ms FROM regions WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(region_from_row).transpose()?)
    }

    pub async fn list_regions(&self, scope: ScopeFilter<'_>, page: Page<'_>) -> Result<Vec<Region>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, parent_id, level, name, path, created_at_ms FROM regions \
             WHERE ($1 IS NULL OR substr(path, 1, length($1)) = $1) AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3",
        )
        .bind(scope.map(RegionPath::as_str))
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(region_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn insert_organisation(
        &self,
        organisation: &Organisation,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO organisations (id, region_id, name, created_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(organisation.id.as_str())
            .bind(organisation.region_id.as_str())
            .bind(organisation.name.as_str())
            .bind(organisation.created_at.0)
            .execute(&mut *tx)
            .await?;
        append_in(&mut tx, audit, organisation.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn organisation(&self, id: &OrganisationId) -> Result<Option<Organisation>, StoreError> {
        let row = sqlx::query(
            "SELECT o.id, o.region_id, r.path AS region_path, o.name, o.created_at_ms \
             FROM organisations o JOIN regions r ON r.id = o.region_id WHERE o.id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(organisation_from_row).transpose()?)
    }

    pub async fn list_organisations(
        &self,
        scope: ScopeFilter<'_>,
        page: Page<'_>,
    ) -> Result<Vec<Organisation>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, o.region_id, r.path AS region_path, o.name, o.created_at_ms \
             FROM organisations o JOIN regions r ON r.id = o.region_id \
             WHERE ($1 IS NULL OR substr(r.path, 1, length($1)) = $1) AND ($2 IS NULL OR o.id > $2) \
             ORDER BY o.id LIMIT $3",
        )
        .bind(scope.map(RegionPath::as_str))
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(organisation_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn insert_facility(&self, facility: &Facility, audit: &AuditEntry<'_>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO facilities (id, region_id, organisation_id, name, kind, merchant_wallet_id, \
             version, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(facility.id.as_str())
        .bind(facility.region_id.as_str())
        .bind(facility.organisation_id.as_ref().map(|id| id.as_str()))
        .bind(facility.name.as_str())
        .bind(facility.kind.as_str())
        .bind(facility.merchant_wallet_id.as_str())
        .bind(facility.version)
        .bind(facility.created_at.0)
        .bind(facility.updated_at.0)
        .execute(&mut *tx)
        .await?;
        append_in(&mut tx, audit, facility.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn facility(&self, id: &FacilityId) -> Result<Option<Facility>, StoreError> {
        let sql =
            format!("SELECT {FACILITY_COLUMNS} FROM facilities f JOIN regions r ON r.id = f.region_id WHERE f.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(facility_from_row).transpose()?)
    }

    pub async fn list_facilities(&self, scope: ScopeFilter<'_>, page: Page<'_>) -> Result<Vec<Facility>, StoreError> {
        let sql = format!(
            "SELECT {FACILITY_COLUMNS} FROM facilities f JOIN regions r ON r.id = f.region_id \
             WHERE ($1 IS NULL OR substr(r.path, 1, length($1)) = $1) AND ($2 IS NULL OR f.id > $2) \
             ORDER BY f.id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.map(RegionPath::as_str))
            .bind(page.after)
            .bind(i64::from(page.limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(facility_from_row).collect::<Result<_, _>>()?)
    }

    /// Rename a facility or move it to another organisation, bumping its version only if
    /// nobody changed it since `expected_version` was read.
    pub async fn update_facility(
        &self,
        facility: &Facility,
        expected_version: i64,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE facilities SET name = $1, organisation_id = $2, version = $3, updated_at_ms = $4 \
             WHERE id = $5 AND version = $6",
        )
        .bind(facility.name.as_str())
        .bind(facility.organisation_id.as_ref().map(|id| id.as_str()))
        .bind(facility.version)
        .bind(facility.updated_at.0)
        .bind(facility.id.as_str())
        .bind(expected_version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        append_in(&mut tx, audit, facility.updated_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Register a terminal together with its first key, atomically.
    pub async fn insert_terminal(&self, terminal: &Terminal, audit: &AuditEntry<'_>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO terminals (id, facility_id, label, status, version, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(terminal.id.as_str())
        .bind(terminal.facility_id.as_str())
        .bind(terminal.label.as_str())
        .bind(terminal.status.as_str())
        .bind(terminal.version)
        .bind(terminal.created_at.0)
        .bind(terminal.updated_at.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO terminal_keys (id, terminal_id, public_key, status, created_at_ms) \
             VALUES ($1, $2, $3, 'active', $4)",
        )
        .bind(terminal.active_key_id.as_str())
        .bind(terminal.id.as_str())
        .bind(terminal.public_key.as_base64())
        .bind(terminal.created_at.0)
        .execute(&mut *tx)
        .await?;
        append_in(&mut tx, audit, terminal.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn terminal(&self, id: &TerminalId) -> Result<Option<Terminal>, StoreError> {
        let sql = format!("{TERMINAL_SELECT} WHERE t.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(terminal_from_row).transpose()?)
    }

    pub async fn list_terminals(
        &self,
        scope: ScopeFilter<'_>,
        facility: Option<&FacilityId>,
        page: Page<'_>,
    ) -> Result<Vec<Terminal>, StoreError> {
        let sql = format!(
            "{TERMINAL_SELECT} WHERE ($1 IS NULL OR substr(r.path, 1, length($1)) = $1) \
             AND ($2 IS NULL OR t.facility_id = $2) AND ($3 IS NULL OR t.id > $3) ORDER BY t.id LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.map(RegionPath::as_str))
            .bind(facility.map(FacilityId::as_str))
            .bind(page.after)
            .bind(i64::from(page.limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(terminal_from_row).collect::<Result<_, _>>()?)
    }

    /// Move a terminal from `from` to `to`; fails with `GuardFailed` when it is not in
    /// `from` any more (a concurrent change won).
    pub async fn set_terminal_status(
        &self,
        id: &TerminalId,
        from: TerminalStatus,
        to: TerminalStatus,
        now: UnixMs,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE terminals SET status = $1, version = version + 1, updated_at_ms = $2 \
             WHERE id = $3 AND status = $4",
        )
        .bind(to.as_str())
        .bind(now.0)
        .bind(id.as_str())
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        append_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Retire `expected_key` and make `new_key` the terminal's only active key, in one
    /// transaction. If another rotation got there first, nothing changes (`GuardFailed`).
    pub async fn rotate_terminal_key(
        &self,
        terminal: &TerminalId,
        expected_key: &TerminalKeyId,
        new_key_id: &TerminalKeyId,
        new_key: &PublicKey,
        now: UnixMs,
        audit: &AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let retired = sqlx::query(
            "UPDATE terminal_keys SET status = 'retired', retired_at_ms = $1 \
             WHERE id = $2 AND terminal_id = $3 AND status = 'active'",
        )
        .bind(now.0)
        .bind(expected_key.as_str())
        .bind(terminal.as_str())
        .execute(&mut *tx)
        .await?;
        if retired.rows_affected() != 1 {
            return Err(StoreError::GuardFailed);
        }
        sqlx::query(
            "INSERT INTO terminal_keys (id, terminal_id, public_key, status, created_at_ms) \
             VALUES ($1, $2, $3, 'active', $4)",
        )
        .bind(new_key_id.as_str())
        .bind(terminal.as_str())
        .bind(new_key.as_base64())
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE terminals SET version = version + 1, updated_at_ms = $1 WHERE id = $2")
            .bind(now.0)
            .bind(terminal.as_str())
            .execute(&mut *tx)
            .await?;
        append_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    }
}
