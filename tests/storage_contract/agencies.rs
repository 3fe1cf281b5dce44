//! Agencies: added (a name only once), listed by name, looked up, revoked.

use anyhow::{bail, ensure};
use stele::storage::{AgencyRecord, StorageError};
use stele_testkit::harness::{TestFn, TestResult};

use super::Ctx;

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx: agencies_add_list_get_revoke];

async fn agencies_add_list_get_revoke(mut ctx: Ctx) -> TestResult {
    let s = ctx.open().await?;
    let land = AgencyRecord {
        name: "land-registry".into(),
        token_hash: [1; 32],
        types: vec!["land.*".into(), "parking.status".into()],
        revoked: false,
        registry_admin: false,
        // The eraser flag is stored and read back.
        eraser: true,
        created_ms: 1_700_000_000_123,
    };
    let health = AgencyRecord {
        name: "health".into(),
        token_hash: [2; 32],
        types: vec![],
        revoked: false,
        // The admin flag is stored and read back.
        registry_admin: true,
        eraser: false,
        created_ms: 1_700_000_000_456,
    };
    ensure!(s.list_agencies().await?.is_empty(), "no agencies at first");
    s.add_agency(&land).await?;
    s.add_agency(&health).await?;
    let dup = AgencyRecord {
        token_hash: [3; 32],
        ..land.clone()
    };
    match s.add_agency(&dup).await {
        Err(StorageError::Duplicate(_)) => {}
        r => bail!("duplicate agency name: {r:?}"),
    }
    ensure!(
        s.agency("land-registry").await? == Some(land.clone()),
        "get after add"
    );
    ensure!(s.agency("nobody").await?.is_none(), "unknown agency");
    ensure!(
        s.list_agencies().await? == vec![health.clone(), land.clone()],
        "list by name"
    );
    ensure!(s.revoke_agency("land-registry").await?, "revoke existing");
    ensure!(!s.revoke_agency("nobody").await?, "revoke unknown");
    let revoked = AgencyRecord {
        revoked: true,
        ..land
    };
    ensure!(
        s.agency("land-registry").await? == Some(revoked),
        "revoked flag stored"
    );
    ensure!(
        s.agency("health").await? == Some(health),
        "other agency untouched"
    );
    ctx.finish().await
}
