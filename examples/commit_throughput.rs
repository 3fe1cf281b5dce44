//! Times `Storage::commit_batch` on both backends: batches of ~300-byte
//! leaves, with the batch's changed level-0/level-1 tiles and a checkpoint.
//!
//! `cargo run --example commit_throughput [-- BATCH_SIZE BATCHES]`
//! PostgreSQL is skipped (with a message) when `STELE_TEST_DATABASE_URL`'s
//! server is unreachable.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use stele::storage::postgres::{PgOptions, PostgresStorage};
use stele::storage::sqlite::SqliteStorage;
use stele::storage::{Batch, NewEntry, Storage};
use stele_core::tile::TileId;
use stele_core::Hash;
use stele_testkit::pg::fresh_database;

fn sha(b: &[u8]) -> Hash {
    Hash(Sha256::digest(b).into())
}

async fn run(s: &dyn Storage, batch_size: u64, batches: u64) -> anyhow::Result<()> {
    s.ensure_log("bench", "bench.example/log").await?;
    let mut lat = Vec::new();
    let started = Instant::now();
    for b in 0..batches {
        let old = b * batch_size;
        let new = old + batch_size;
        let entries: Vec<NewEntry> = (old..new)
            .map(|i| {
                let leaf = format!(
                    r#"{{"agency":"land","attributes":{{"pad":"{}"}},"subject":"parcel-{i}","ts":"2026-01-01T00:00:00.000Z","type":"land.transfer","v":1}}"#,
                    "x".repeat(180)
                )
                .into_bytes();
                NewEntry {
                    index: i,
                    leaf_hash: sha(&leaf),
                    dedup_key: sha(&i.to_be_bytes()),
                    leaf: leaf.into(),
                    ts_ms: 1_700_000_000_000 + i as i64,
                }
            })
            .collect();
        let mut tiles = Vec::new();
        for level in 0..2u8 {
            let shift = 8 * u32::from(level);
            let (lo, hi) = (old >> shift, new >> shift);
            for n in lo / 256..=hi.saturating_sub(1) / 256 {
                let w = (hi - n * 256).clamp(1, 256) as u16;
                tiles.push((TileId::new(level, n, w), vec![level; 32 * usize::from(w)]));
            }
        }
        let checkpoint = format!("bench.example/log\n{new}\n{}\n\n— sig\n", "A".repeat(44));
        let batch = Batch {
            log: "bench",
            old_size: old,
            new_size: new,
            entries: &entries,
            tiles: &tiles,
            checkpoint: &checkpoint,
            root: sha(checkpoint.as_bytes()),
        };
        let t = Instant::now();
        s.commit_batch(&batch).await?;
        lat.push(t.elapsed());
    }
    let total = started.elapsed();
    let k = lat.len().min(10);
    let first: Duration = lat[..k].iter().sum::<Duration>() / k as u32;
    let last: Duration = lat[lat.len() - k..].iter().sum::<Duration>() / k as u32;
    let commit_time: Duration = lat.iter().sum();
    lat.sort();
    let n = batch_size * batches;
    println!(
        "{:>8}: {batches} batches x {batch_size}: {:.0} entries/s in commit_batch \
         ({:.0} entries/s wall incl. batch building); batch latency p50 {:?}, max {:?}; \
         mean of first {k} {:?}, of last {k} {:?}",
        s.backend(),
        n as f64 / commit_time.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        lat[lat.len() / 2],
        lat[lat.len() - 1],
        first,
        last,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let batch_size = args.first().copied().unwrap_or(1000);
    let batches = args.get(1).copied().unwrap_or(20);

    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStorage::open(&dir.path().join("bench.db")).await?;
    run(&sqlite, batch_size, batches).await?;
    sqlite.close().await;

    match fresh_database().await {
        Err(e) => println!("postgres: skipped, {e}"),
        Ok(db) => {
            let pg = PostgresStorage::connect(&db.url, PgOptions::default()).await?;
            run(&pg, batch_size, batches).await?;
            pg.close().await;
            db.drop_db().await?;
        }
    }
    Ok(())
}
