//! Agencies on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;

use super::{get, map_err, SqliteStorage};
use crate::storage::{hash_from, Agencies, AgencyRecord, Result, StorageError};

fn agency_from(row: &SqliteRow) -> Result<AgencyRecord> {
    let types: String = get(row, "types")?;
    Ok(AgencyRecord {
        name: get(row, "name")?,
        token_hash: hash_from(get(row, "token_hash")?)?.0,
        types: serde_json::from_str(&types)
            .map_err(|e| StorageError::Other(format!("agency types: {e}")))?,
        revoked: get(row, "revoked")?,
        registry_admin: get(row, "registry_admin")?,
        eraser: get(row, "eraser")?,
        created_ms: get(row, "created")?,
    })
}

#[async_trait]
impl Agencies for SqliteStorage {
    async fn add_agency(&self, agency: &AgencyRecord) -> Result<()> {
        let types = serde_json::to_string(&agency.types)
            .map_err(|e| StorageError::Other(format!("agency types: {e}")))?;
        sqlx::query(
            "INSERT INTO agencies (name, token_hash, types, revoked, registry_admin, created, eraser) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&agency.name)
        .bind(agency.token_hash.as_slice())
        .bind(types)
        .bind(agency.revoked)
        .bind(agency.registry_admin)
        .bind(agency.created_ms)
        .bind(agency.eraser)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_agencies(&self) -> Result<Vec<AgencyRecord>> {
        let rows = sqlx::query(
            "SELECT name, token_hash, types, revoked, registry_admin, eraser, created FROM agencies ORDER BY name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(agency_from).collect()
    }

    async fn agency(&self, name: &str) -> Result<Option<AgencyRecord>> {
        let row = sqlx::query(
            "SELECT name, token_hash, types, revoked, registry_admin, eraser, created FROM agencies WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.as_ref().map(agency_from).transpose()
    }

    async fn revoke_agency(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE agencies SET revoked = 1 WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }
}
