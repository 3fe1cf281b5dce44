//! Huge bulk bodies in parallel: memory stays within the body budget.

use std::time::Duration;

use anyhow::{ensure, Result};
use stele_testkit::store::Backend;

use super::{check, deploy, honest_load, proc_stats, tree_size};

/// Bound on the server's peak resident memory in this test (MiB), from the
/// default budgets: request bodies 64 MiB (the body budget holds at most
/// four 16 MiB bodies at a time) and about as much again for their
/// validated records and answers, the tile cache 64 MiB (full bundles of
/// these 8 KiB leaves fill it), SQLite's page caches 96 MiB, plus the
/// process itself. Twenty 16 MiB bodies at once would be 320 MiB of bodies
/// alone, and 16–32× that parsed whole into JSON values, as bodies once
/// were. Measured: 324–368 MiB.
const PEAK_RSS_MIB: u64 = 448;

/// A bulk body of about `bytes`: 1,000 records, each `pad` long.
fn bulk_body(tag: &str, pad: usize) -> Vec<u8> {
    let mut out = String::from("{\"records\":[");
    for i in 0..1000 {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"type\":\"hostile.test\",\"subject\":\"{tag}-{i}\",\"attributes\":{{\"pad\":\"{}\"}}}}",
            "x".repeat(pad)
        ));
    }
    out.push_str("]}");
    out.into_bytes()
}

/// Twenty 16 MiB bulk requests at once (ten of valid records near the
/// 8 KiB attribute limit, about 8 MiB each, ten of records over it), with
/// an honest agency submitting beside them: the valid ones are committed
/// or pushed back (`503`, retried), the invalid ones refused (`413`), the
/// honest agency gets its receipts, and the server's peak RSS stays under
/// [`PEAK_RSS_MIB`].
pub async fn huge_bulk(backend: Backend) -> Result<()> {
    let (_store, deployment) = deploy(backend, "").await?;
    let server = deployment.start("server").await?;
    let base = server.base_url();
    let before = proc_stats(&server)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut tasks = Vec::new();
    for n in 0..20 {
        let (http, base, token) = (http.clone(), base.clone(), deployment.token.clone());
        let valid = n % 2 == 0;
        let body = if valid {
            bulk_body(&format!("big{n}"), 8000)
        } else {
            bulk_body(&format!("huge{n}"), 16_500)
        };
        ensure!(body.len() <= 16 << 20, "body of {} bytes", body.len());
        tasks.push(tokio::spawn(async move {
            loop {
                let r = http
                    .post(format!("{base}/logs/default/records/bulk"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                let status = r.status().as_u16();
                let answer: serde_json::Value = r.json().await?;
                match (valid, status) {
                    (_, 503) => tokio::time::sleep(Duration::from_millis(300)).await,
                    (true, 201) => {
                        let receipts: stele::wire::Receipts = serde_json::from_value(answer)?;
                        return anyhow::Ok(receipts.receipts);
                    }
                    (false, 413) => {
                        ensure!(answer["type"] == "urn:stele:problem:too-large", "{answer}");
                        return Ok(Vec::new());
                    }
                    _ => anyhow::bail!("bulk {n}: {status} {answer}"),
                }
            }
        }));
    }
    let mut receipts = honest_load(&base, &deployment.token, "honest", 4, 25).await?;
    let mut peak = 0;
    for t in tasks {
        receipts.extend(t.await??);
        peak = peak.max(proc_stats(&server)?.peak_rss_kib);
    }
    let after = proc_stats(&server)?;
    eprintln!(
        "RSS {} KiB before, {} KiB after; peak {} KiB",
        before.rss_kib, after.rss_kib, after.peak_rss_kib
    );
    ensure!(
        after.peak_rss_kib / 1024 < PEAK_RSS_MIB,
        "peak RSS {} MiB, bound {PEAK_RSS_MIB} MiB",
        after.peak_rss_kib / 1024
    );
    ensure!(
        receipts.len() == 10 * 1000 + 100,
        "{} receipts",
        receipts.len()
    );
    ensure!(tree_size(&http, &base).await? == receipts.len() as u64);
    check(&deployment, &server, &receipts).await
}
