//! Logs built to break the registry's rules, served from memory as C2SP
//! tlog-tiles (bundles, hash tiles, a signed checkpoint) — what a
//! misbehaving log could publish — and audited with the code of
//! `stele monitor --audit`.

use std::collections::HashMap;

use anyhow::ensure;
use async_trait::async_trait;
use stele::cli::audit::{audit, AuditState, Rules, TileSource};
use stele::names::AgencyName;
use stele::records::{leaf_bytes, parse_record};
use stele::registry::{entry_record, TypeDefinition, Writer};
use stele_core::checkpoint::Checkpoint;
use stele_core::leaf_hash;
use stele_core::note::Signer;
use stele_core::tile::{encode_bundle, TilePath, TreeBuilder, TILE_WIDTH};
use stele_testkit::harness::TestResult;

/// A log of `leaves`, its tiles in memory.
struct Crafted {
    leaves: Vec<Vec<u8>>,
    /// Every hash tile at its latest (widest) contents.
    tiles: HashMap<(u8, u64), Vec<u8>>,
    checkpoint: Checkpoint,
}

impl Crafted {
    fn new(leaves: Vec<Vec<u8>>) -> Self {
        let mut builder = TreeBuilder::new();
        let mut tiles = HashMap::new();
        let hashes: Vec<_> = leaves.iter().map(|l| leaf_hash(l)).collect();
        for (id, data) in builder.append(&hashes) {
            tiles.insert((id.level, id.index), data);
        }
        let checkpoint = Checkpoint::new("crafted.test/log", builder.size(), builder.root());
        // Signed as a log would sign it (the auditor is handed it verified).
        let (signer, _) = Signer::generate("crafted.test/log").unwrap();
        signer.sign_checkpoint(&checkpoint).unwrap();
        Crafted {
            leaves,
            tiles,
            checkpoint,
        }
    }

    async fn audit(&self, allow_unregistered: bool) -> anyhow::Result<Result<(), String>> {
        let mut slot: Option<AuditState> = None;
        let mut save = |_: &AuditState| Ok(());
        let rules = Some(Rules { allow_unregistered });
        Ok(
            audit(self, &self.checkpoint, &mut slot, 4, rules, &mut save)
                .await?
                .map(|_| ())
                .map_err(|a| a.to_string()),
        )
    }
}

#[async_trait]
impl TileSource for Crafted {
    async fn tile(&self, path: TilePath) -> anyhow::Result<Vec<u8>> {
        match path {
            TilePath::Hash(id) => {
                let d = self
                    .tiles
                    .get(&(id.level, id.index))
                    .ok_or_else(|| anyhow::anyhow!("no tile"))?;
                Ok(d[..usize::from(id.width) * 32].to_vec())
            }
            TilePath::Entries(id) => {
                let start = (id.index * TILE_WIDTH) as usize;
                let end = start + usize::from(id.width);
                Ok(encode_bundle(
                    self.leaves[start..end].iter().map(Vec::as_slice),
                )?)
            }
        }
    }

    fn show_progress(&self) -> bool {
        false
    }
}

const LAND: &str = include_str!("../../examples/types/land.transfer.toml");

fn definition(leaf_agency: &str, def: &TypeDefinition) -> Vec<u8> {
    let r = entry_record(def);
    leaf_bytes(
        &AgencyName::parse(leaf_agency).unwrap(),
        &r,
        None,
        1_795_000_000_000,
    )
}

fn record(agency: &str, body: &str, version: Option<u32>) -> Vec<u8> {
    let r = parse_record(body.as_bytes()).unwrap();
    leaf_bytes(
        &AgencyName::parse(agency).unwrap(),
        &r,
        version,
        1_795_000_000_000,
    )
}

const GOOD: &str =
    r#"{"type":"land.transfer","subject":"XH-1","attributes":{"deed":"2026/1","area_m2":12}}"#;

pub async fn audit_catches_logs_that_break_the_rules() -> TestResult {
    let v1 = TypeDefinition::parse(LAND)?;
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.writers
        .push(Writer::Agency(AgencyName::parse("notary")?));
    // An honest history of 600 entries (three bundles): v1, records, v2,
    // records by the new writer.
    let mut honest = vec![definition("registrar", &v1)];
    for i in 0..300 {
        let body = GOOD.replace("XH-1", &format!("XH-{i}"));
        honest.push(record("land-registry", &body, Some(1)));
    }
    honest.push(definition("registrar", &v2));
    for i in 0..298 {
        let body = GOOD.replace("XH-1", &format!("XH-{}", 1000 + i));
        honest.push(record("notary", &body, Some(2)));
    }
    let log = Crafted::new(honest.clone());
    ensure!(log.audit(false).await? == Ok(()), "an honest log alarmed");

    // Each break at index 400, in the third bundle; the report names it.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a record that violates its type's schema",
            record(
                "notary",
                r#"{"type":"land.transfer","subject":"XH-9","attributes":{"deed":"2026/1","area_m2":-4}}"#,
                Some(2),
            ),
            "/attributes/area_m2 (exclusiveMinimum)",
        ),
        (
            "a record by an agency the type does not allow",
            record("hospital", GOOD, Some(2)),
            "agency hospital is not a writer of land.transfer version 2",
        ),
        (
            "a record that names a superseded version",
            record("notary", GOOD, Some(1)),
            "version 2 was in force",
        ),
        (
            "a record of a type never registered",
            record("notary", r#"{"type":"land.survey"}"#, None),
            "not registered",
        ),
        (
            "a registry entry that rewrites version 1",
            definition("registrar", &{
                let mut d = v1.clone();
                d.writers = vec![Writer::Any];
                d
            }),
            "version 1 already exists",
        ),
    ];
    for (what, leaf, want) in cases {
        let mut leaves = honest.clone();
        leaves[400] = leaf;
        let alarm = Crafted::new(leaves).audit(false).await?;
        match alarm {
            Err(a) => ensure!(
                a.contains("entry 400 breaks the log's record-type rules") && a.contains(want),
                "{what}: {a}"
            ),
            Ok(()) => anyhow::bail!("{what}: the audit passed"),
        }
    }
    // A log configured to accept unregistered types: only those pass.
    let mut leaves = honest.clone();
    leaves[400] = record("notary", r#"{"type":"land.survey"}"#, None);
    ensure!(Crafted::new(leaves).audit(true).await? == Ok(()));
    let mut leaves = honest;
    leaves[400] = record("hospital", GOOD, Some(2));
    ensure!(Crafted::new(leaves).audit(true).await?.is_err());
    Ok(())
}
