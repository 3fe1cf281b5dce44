//! Reading the log: `GET /logs` and the checkpoint, tiles and bundles
//! (full and partial, with their caching), entries by index and by leaf
//! hash, and inclusion and consistency proofs at the latest and older sizes.

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use reqwest::StatusCode;
use stele::wire;
use stele_core::merkle::{verify_consistency, verify_inclusion};
use stele_core::note::open_checkpoint;
use stele_core::tile::decode_bundle;
use stele_core::{leaf_hash, Hash};
use stele_testkit::harness::{TestFn, TestResult};

use super::{ensure_eq, record, Ctx};

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx:
    logs_and_checkpoint,
    tiles_full_and_partial,
    entries_by_index_and_hash,
    inclusion_and_consistency_proofs,
];

async fn logs_and_checkpoint(ctx: Ctx) -> TestResult {
    let logs = ctx.get("/logs").await?;
    ensure_eq!(logs.status, StatusCode::OK);
    ensure_eq!(logs.header(CONTENT_TYPE), "application/json");
    let logs = logs.json()?;
    ensure_eq!(logs["logs"][0]["name"], ctx.app.log);
    ensure_eq!(logs["logs"][0]["origin"], ctx.app.origin);
    ensure_eq!(logs["logs"][0]["vkey"], ctx.app.vkey);
    ensure_eq!(logs["logs"][0]["tree_size"], 0);
    ctx.submit_records(3).await?;
    let r = ctx.get(&ctx.log("/checkpoint")).await?;
    ensure_eq!(r.status, StatusCode::OK);
    ensure_eq!(r.header(CONTENT_TYPE), "text/plain; charset=utf-8");
    let cc = r.header(CACHE_CONTROL);
    if !(cc.contains("no-cache") || cc.contains("max-age=")) || cc.contains("immutable") {
        anyhow::bail!("checkpoint Cache-Control {cc:?}");
    }
    let cp = open_checkpoint(&r.text(), &ctx.verifier())
        .map_err(|e| anyhow::anyhow!("checkpoint: {e}"))?;
    ensure_eq!(cp.size, 3);
    ensure_eq!(cp.origin, ctx.app.origin);
    ensure_eq!(ctx.check().await?, 3);
    Ok(())
}

async fn tiles_full_and_partial(ctx: Ctx) -> TestResult {
    // 300 records: one full level-0 tile and bundle, one partial of 44.
    for chunk in (0..300).collect::<Vec<_>>().chunks(150) {
        let r = ctx.bulk(chunk.iter().map(|&i| record(i)).collect()).await?;
        ctx.receipts(&r, StatusCode::CREATED).await?;
        ctx.check().await?;
    }
    let first = ctx.get(&ctx.log("/entries/0")).await?.json()?;

    let full = ctx.get(&ctx.log("/tile/0/000")).await?;
    ensure_eq!(full.status, StatusCode::OK, "{}", full.text());
    ensure_eq!(full.header(CONTENT_TYPE), "application/octet-stream");
    ensure_eq!(
        full.header(CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    ensure_eq!(full.body.len(), 256 * 32);
    ensure_eq!(
        hex::encode(&full.body[..32]),
        first["leaf_hash"].as_str().unwrap_or("")
    );

    let partial = ctx.get(&ctx.log("/tile/0/001.p/44")).await?;
    ensure_eq!(partial.status, StatusCode::OK, "{}", partial.text());
    ensure_eq!(partial.body.len(), 44 * 32);
    let cc = partial.header(CACHE_CONTROL);
    if cc.contains("immutable") || !cc.contains("max-age=") {
        anyhow::bail!("partial tile Cache-Control {cc:?}");
    }

    let bundle = ctx.get(&ctx.log("/tile/entries/000")).await?;
    ensure_eq!(bundle.status, StatusCode::OK, "{}", bundle.text());
    ensure_eq!(
        bundle.header(CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    let leaves = decode_bundle(&bundle.body).map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure_eq!(leaves.len(), 256);
    ensure_eq!(
        std::str::from_utf8(leaves[0])?,
        first["leaf"].as_str().unwrap_or("")
    );
    ensure_eq!(
        leaf_hash(leaves[0]).to_hex(),
        first["leaf_hash"].as_str().unwrap_or("")
    );

    let partial_bundle = ctx.get(&ctx.log("/tile/entries/001.p/44")).await?;
    ensure_eq!(
        partial_bundle.status,
        StatusCode::OK,
        "{}",
        partial_bundle.text()
    );
    ensure_eq!(
        decode_bundle(&partial_bundle.body)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .len(),
        44
    );

    let level1 = ctx.get(&ctx.log("/tile/1/000.p/1")).await?;
    ensure_eq!(level1.status, StatusCode::OK, "{}", level1.text());
    ensure_eq!(level1.body.len(), 32);
    Ok(())
}

async fn entries_by_index_and_hash(ctx: Ctx) -> TestResult {
    let receipts = ctx.submit_records(3).await?;
    for r in &receipts {
        let e = ctx.get(&ctx.log(&format!("/entries/{}", r.index))).await?;
        ensure_eq!(e.status, StatusCode::OK, "{}", e.text());
        let e = e.json()?;
        ensure_eq!(e["index"], r.index);
        ensure_eq!(e["leaf"], r.leaf);
        ensure_eq!(e["leaf_hash"], r.leaf_hash);
        let by_hash = ctx
            .get(&ctx.log(&format!("/entries?leaf_hash={}", r.leaf_hash)))
            .await?;
        ensure_eq!(by_hash.status, StatusCode::OK, "{}", by_hash.text());
        ensure_eq!(by_hash.json()?, e);
    }
    Ok(())
}

async fn inclusion_and_consistency_proofs(ctx: Ctx) -> TestResult {
    let receipts = ctx.submit_records(7).await?;
    let verifier = ctx.verifier();
    let open = |note: &str| open_checkpoint(note, &verifier).map_err(|e| anyhow::anyhow!("{e}"));
    let latest = open(&ctx.get(&ctx.log("/checkpoint")).await?.text())?;
    ensure_eq!(latest.size, 7);
    let r3 = &receipts[3];
    let lh = Hash::from_hex(&r3.leaf_hash).map_err(|e| anyhow::anyhow!("{e}"))?;
    for query in [
        format!("index={}", r3.index),
        format!("leaf_hash={}", r3.leaf_hash),
    ] {
        let p: wire::Inclusion = answer(&ctx, &format!("/proofs/inclusion?{query}")).await?;
        ensure_eq!((p.index, p.tree_size, p.leaf_hash), (3, 7, lh));
        let cp = open(p.checkpoint.as_deref().unwrap_or(""))?;
        ensure_eq!(cp.size, 7);
        verify_inclusion(&lh, 3, 7, &p.inclusion_proof, &cp.root)
            .map_err(|e| anyhow::anyhow!("inclusion ({query}): {e}"))?;
    }
    // Against an older size: the checkpoint the log signed there.
    let p: wire::Inclusion = answer(&ctx, "/proofs/inclusion?index=3&tree_size=5").await?;
    ensure_eq!(p.tree_size, 5);
    let cp5 = open(&receipts[4].checkpoint)?;
    ensure_eq!(cp5.size, 5, "receipt 4 was covered by checkpoint 5");
    verify_inclusion(&lh, 3, 5, &p.inclusion_proof, &cp5.root)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Consistency from every receipt's checkpoint to the latest (`to`
    // left out).
    for r in &receipts {
        let old = open(&r.checkpoint)?;
        let c: wire::Consistency =
            answer(&ctx, &format!("/proofs/consistency?from={}", old.size)).await?;
        ensure_eq!((c.from, c.to), (old.size, 7));
        verify_consistency(old.size, 7, &old.root, &latest.root, &c.consistency_proof)
            .map_err(|e| anyhow::anyhow!("consistency {} -> 7: {e}", old.size))?;
    }
    let c: wire::Consistency = answer(&ctx, "/proofs/consistency?from=2&to=5").await?;
    let cp2 = open(&receipts[1].checkpoint)?;
    ensure_eq!(cp2.size, 2);
    verify_consistency(2, 5, &cp2.root, &cp5.root, &c.consistency_proof)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// `GET /logs/<log><rest>`, which must answer 200 with a `T`.
async fn answer<T: serde::de::DeserializeOwned>(ctx: &Ctx, rest: &str) -> anyhow::Result<T> {
    let r = ctx.get(&ctx.log(rest)).await?;
    ensure_eq!(r.status, StatusCode::OK, "{}", r.text());
    Ok(serde_json::from_slice(&r.body)?)
}
