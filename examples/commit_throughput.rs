//! Times `Storage::commit_batch` on both backends: batches of ~300-byte
//! leaves, with the hash tiles each batch changes and a signed checkpoint
//! (real ones, from the test kit's synthetic log; only the commit is timed).
//!
//! `cargo run --example commit_throughput [-- BATCH_SIZE BATCHES]`
//! PostgreSQL is skipped (with a message) when `STELE_TEST_DATABASE_URL`'s
//! server is unreachable.

use std::time::{Duration, Instant};

use stele::storage::Storage;
use stele_testkit::store::{Backend, TestStore};
use stele_testkit::synthetic::TestLog;

async fn run(s: &dyn Storage, batch_size: u64, batches: u64) -> anyhow::Result<()> {
    s.ensure_log("bench", "bench.example/log").await?;
    let mut log = TestLog::new("bench", "bench.example/log");
    let mut lat = Vec::new();
    let started = Instant::now();
    for _ in 0..batches {
        let parts = log.prepare(batch_size, "land");
        let t = Instant::now();
        s.commit_batch(&parts.batch()).await?;
        lat.push(t.elapsed());
        log.accept(parts);
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

    for backend in Backend::ALL {
        let store = match TestStore::new(*backend).await {
            Ok(store) => store,
            Err(e) => {
                println!("{}: skipped, {e:#}", backend.name());
                continue;
            }
        };
        let opened = store.open().await?;
        run(&*opened.storage(), batch_size, batches).await?;
        opened.close().await;
        store.finish().await?;
    }
    Ok(())
}
