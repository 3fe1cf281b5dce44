//! The in-process ceiling of an audit: the entries of a tlog-tiles log
//! already in memory, hashed (RFC 6962 leaf hashes) and built into the
//! tree with its hash tiles (`TreeBuilder`), as `stele monitor --audit`
//! must at least do. Reads a local copy of a log (`stele mirror URL DIR`):
//! its checkpoint and every entry bundle, untimed; times only the hashing
//! and the tree, and checks the root against the checkpoint's.
//!
//! `cargo run --release --example audit_ceiling -- DIR` prints one JSON line:
//! `{"entries": N, "seconds": S, "entries_per_s": R}`.

use std::time::Instant;

use stele_core::tile::{decode_bundle, TileId, TilePath, TreeBuilder, TILE_WIDTH};

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("usage: audit_ceiling DIR (a stele mirror)"))?,
    );
    let note = std::fs::read_to_string(dir.join("checkpoint"))?;
    let checkpoint = stele_core::note::parse_unverified_checkpoint(&note)?;
    let size = checkpoint.size;
    let mut bundles = Vec::new();
    for index in 0..size.div_ceil(TILE_WIDTH) {
        let width = (size - index * TILE_WIDTH).min(TILE_WIDTH) as u16;
        let path = TilePath::Entries(TileId::new(0, index, width)).to_path();
        bundles.push(std::fs::read(dir.join(path))?);
    }
    let started = Instant::now();
    let mut tree = TreeBuilder::new();
    let mut hashes = Vec::with_capacity(TILE_WIDTH as usize);
    for data in &bundles {
        hashes.clear();
        for leaf in decode_bundle(data)? {
            hashes.push(stele_core::leaf_hash(leaf));
        }
        tree.append(&hashes);
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        tree.size() == size && tree.root() == checkpoint.root,
        "the entries do not reproduce the checkpoint's root"
    );
    println!(
        "{}",
        serde_json::json!({
            "entries": size,
            "seconds": seconds,
            "entries_per_s": size as f64 / seconds,
        })
    );
    Ok(())
}
