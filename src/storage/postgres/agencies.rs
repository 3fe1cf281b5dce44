//! Agencies on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{map_err, ts_from_ms, Pool, PostgresStorage};
use crate::storage::{hash_from, Agencies, AgencyRecord, Result};

fn agency_from(row: &PgRow) -> Result<AgencyRecord> {
    let token_hash: Vec<u8> = row.try_get("token_hash").map_err(map_err)?;
    let created: DateTime<Utc> = row.try_get("created").map_err(map_err)?;
    Ok(AgencyRecord {
        name: row.try_get("name").map_err(map_err)?,
        token_hash: hash_from(&token_hash)?.0,
        types: row.try_get("types").map_err(map_err)?,
        revoked: row.try_get("revoked").map_err(map_err)?,
        registry_admin: row.try_get("registry_admin").map_err(map_err)?,
        eraser: row.try_get("eraser").map_err(map_err)?,
        created_ms: created.timestamp_millis(),
    })
}

#[async_trait]
impl Agencies for PostgresStorage {
    async fn add_agency(&self, agency: &AgencyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO agencies (name, token_hash, types, revoked, registry_admin, created, eraser) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&agency.name)
        .bind(agency.token_hash.as_slice())
        .bind(&agency.types)
        .bind(agency.revoked)
        .bind(agency.registry_admin)
        .bind(ts_from_ms(agency.created_ms)?)
        .bind(agency.eraser)
        .execute(&mut *self.conn(Pool::Auth).await?)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_agencies(&self) -> Result<Vec<AgencyRecord>> {
        let rows = sqlx::query(
            "SELECT name, token_hash, types, revoked, registry_admin, eraser, created FROM agencies ORDER BY name",
        )
        .fetch_all(&mut *self.conn(Pool::Auth).await?)
        .await
        .map_err(map_err)?;
        rows.iter().map(agency_from).collect()
    }

    async fn agency(&self, name: &str) -> Result<Option<AgencyRecord>> {
        let row = sqlx::query(
            "SELECT name, token_hash, types, revoked, registry_admin, eraser, created FROM agencies WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&mut *self.conn(Pool::Auth).await?)
        .await
        .map_err(map_err)?;
        row.as_ref().map(agency_from).transpose()
    }

    async fn revoke_agency(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE agencies SET revoked = true WHERE name = $1")
            .bind(name)
            .execute(&mut *self.conn(Pool::Auth).await?)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }
}
