//! Submissions: verifiable receipts, deduplication (within a batch and
//! against stored records, with no hole in the indexes), authentication,
//! concurrency, pushback when the queue is full, and shutdown.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use stele::engine::agency::new_token;
use stele::engine::{EngineConfig, LogError};
use stele::names::AgencyName;
use stele::records;
use stele_core::note;
use stele_testkit::harness::{TestFn, TestResult};

use super::{config, placed, rec, Ctx, LOG};

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx:
    submit_gives_a_verifiable_receipt_and_dedups,
    authentication_rejects_bad_tokens_alike,
    concurrent_submissions_get_consecutive_indexes,
    bulk_submission_dedups_within_the_batch,
    batch_mixing_stored_duplicates_and_new_records_leaves_no_hole,
    full_queue_pushes_back_at_once,
    shutdown_stops_taking_submissions,
];

async fn submit_gives_a_verifiable_receipt_and_dedups(mut s: Ctx) -> TestResult {
    // A second agency is registered while the engine runs: its token must
    // be known at once.
    let engine = s
        .engine(EngineConfig {
            token_cache_ttl: Duration::ZERO,
            ..config()
        })
        .await?;
    assert_eq!(engine.ready().await, Ok(()));
    // An empty log has a signed checkpoint of size 0 at once.
    let v = s.verifier();
    assert_eq!(
        note::open_checkpoint(&engine.checkpoint(LOG).await.unwrap(), &v)
            .unwrap()
            .size,
        0
    );

    let token = s.agency("land-registry", &["land.*"]).await?;
    let agency = engine.authenticate(&token).await.unwrap();
    assert_eq!(agency.name, "land-registry");
    let first = engine.submit(LOG, &agency, rec(1)).await.unwrap();
    assert!(first.created);
    let verified = first.receipt().verify(&v).unwrap();
    assert_eq!(verified.index, 0);
    let leaf: serde_json::Value = serde_json::from_str(&first.receipt().leaf).unwrap();
    assert_eq!(leaf["agency"], "land-registry");
    assert_eq!(leaf["v"], 1);

    let second = engine.submit(LOG, &agency, rec(2)).await.unwrap();
    assert_eq!(second.receipt().verify(&v).unwrap().index, 1);
    let again = engine.submit(LOG, &agency, rec(1)).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.receipt().index, 0);
    assert_eq!(again.receipt().leaf, first.receipt().leaf);
    again.receipt().verify(&v).unwrap();

    // A different agency with the same body is a different record.
    let other = s.signed_in(&engine, "other", &[]).await?;
    let third = engine.submit(LOG, &other, rec(1)).await.unwrap();
    assert!(third.created);
    assert_eq!(third.receipt().index, 2);

    let health = records::parse_record(br#"{"type":"health.vaccination"}"#).unwrap();
    assert!(matches!(
        engine.submit(LOG, &agency, health).await,
        Err(LogError::Forbidden(_))
    ));
    assert!(matches!(
        engine.submit("nope", &agency, rec(9)).await,
        Err(LogError::NotFound(_))
    ));
    s.done(&engine, [&first, &second, &again, &third]).await
}

async fn authentication_rejects_bad_tokens_alike(s: Ctx) -> TestResult {
    let engine = s
        .engine(EngineConfig {
            token_cache_ttl: Duration::ZERO,
            ..config()
        })
        .await?;
    let token = s.agency("hospital-7", &[]).await?;
    assert_eq!(
        engine.authenticate(&token).await.unwrap().name,
        "hospital-7"
    );
    let (wrong, _) = new_token(&AgencyName::parse("hospital-7")?);
    let (unknown, _) = new_token(&AgencyName::parse("nobody")?);
    for bad in [
        wrong.as_str(),
        unknown.as_str(),
        "garbage",
        "hospital-7.",
        "",
        "Hospital-7.abc",
    ] {
        match engine.authenticate(bad).await {
            Err(LogError::Unauthorized(m)) => assert_eq!(m, "unknown, revoked or malformed token"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert!(engine.storage().revoke_agency("hospital-7").await.unwrap());
    assert!(matches!(
        engine.authenticate(&token).await,
        Err(LogError::Unauthorized(_))
    ));
    engine.shutdown().await;
    Ok(())
}

async fn concurrent_submissions_get_consecutive_indexes(mut s: Ctx) -> TestResult {
    let engine = s
        .engine(EngineConfig {
            max_batch: 64,
            ..config()
        })
        .await?;
    let agency = s.signed_in(&engine, "transport", &["*"]).await?;
    let v = s.verifier();
    let mut tasks = Vec::new();
    for t in 0..20 {
        let (engine, agency) = (engine.clone(), agency.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..25 {
                out.push(
                    engine
                        .submit(LOG, &agency, rec(t * 1000 + i))
                        .await
                        .unwrap(),
                );
            }
            out
        }));
    }
    let mut indexes = HashSet::new();
    for t in tasks {
        let subs = t.await.unwrap();
        for sub in &subs {
            assert!(sub.created);
            assert!(indexes.insert(sub.receipt().verify(&v).unwrap().index));
        }
        // The checker proves every receipt's checkpoint consistent with
        // the final one, and every receipt's leaf included in it.
        s.keep(&subs);
    }
    assert_eq!(indexes, (0..500).collect::<HashSet<u64>>());
    // A repeat is a duplicate, whichever connection of the pool sees it.
    let again = engine.submit(LOG, &agency, rec(7)).await?;
    assert!(!again.created);
    s.check_with(&engine, [&again]).await?;
    let latest = note::open_checkpoint(&engine.checkpoint(LOG).await.unwrap(), &v).unwrap();
    assert_eq!(latest.size, 500);
    // Timestamps never decrease along the log.
    let mut last = String::new();
    for i in 0..500 {
        let leaf: serde_json::Value =
            serde_json::from_str(&engine.entry(LOG, i).await.unwrap().leaf).unwrap();
        let ts = leaf["ts"].as_str().unwrap().to_string();
        assert!(ts >= last, "ts went back at {i}");
        last = ts;
    }
    engine.shutdown().await;
    Ok(())
}

async fn bulk_submission_dedups_within_the_batch(mut s: Ctx) -> TestResult {
    let engine = s.engine(config()).await?;
    let agency = s.signed_in(&engine, "parking", &[]).await?;
    let v = s.verifier();
    let subs = engine
        .submit_bulk(LOG, &agency, vec![rec(1), rec(2), rec(1), rec(3)])
        .await
        .unwrap();
    let got = placed(&subs, &v);
    assert_eq!(got, vec![(0, true), (1, true), (0, false), (2, true)]);
    s.keep(&subs);
    // No records: no receipts, nothing appended (an empty bulk request is
    // refused by the HTTP layer, which owns the request's shape).
    assert!(engine
        .submit_bulk(LOG, &agency, vec![])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(engine.logs().await[0].tree_size, 3);
    s.done(&engine, []).await
}

/// Stored duplicates are found by the optimistic commit failing with
/// `Duplicate`: the batch is then sequenced again with the stored indexes,
/// so the new records still get consecutive indexes (no hole where the
/// failed attempt had put the duplicates) and the duplicates their old ones.
async fn batch_mixing_stored_duplicates_and_new_records_leaves_no_hole(mut s: Ctx) -> TestResult {
    let engine = s.engine(config()).await?;
    let agency = s.signed_in(&engine, "parking", &[]).await?;
    let v = s.verifier();
    let first = engine
        .submit_bulk(LOG, &agency, vec![rec(1), rec(2), rec(3)])
        .await
        .unwrap();
    s.check_with(&engine, &first).await?;
    let subs = engine
        .submit_bulk(LOG, &agency, vec![rec(4), rec(2), rec(5), rec(3), rec(4)])
        .await
        .unwrap();
    let got = placed(&subs, &v);
    assert_eq!(
        got,
        vec![(3, true), (1, false), (4, true), (2, false), (3, false)]
    );
    s.keep(&subs);
    // A batch of nothing but stored duplicates commits nothing.
    let again = engine
        .submit_bulk(LOG, &agency, vec![rec(5), rec(1)])
        .await
        .unwrap();
    let got = placed(&again, &v);
    assert_eq!(got, vec![(4, false), (0, false)]);
    s.keep(&again);
    assert_eq!(engine.logs().await[0].tree_size, 5);
    s.done(&engine, []).await
}

async fn full_queue_pushes_back_at_once(mut s: Ctx) -> TestResult {
    let engine = s
        .engine(EngineConfig {
            queue_capacity: 2,
            // The whole queue may be one agency's (the test is the queue).
            quotas: stele::engine::QuotaConfig {
                max_queue_share: 1.0,
                ..Default::default()
            },
            max_batch: 1,
            ..config()
        })
        .await?;
    let agency = s.signed_in(&engine, "land", &[]).await?;
    s.faults.commit_delay_ms.store(400, Ordering::SeqCst);
    let mut pending = Vec::new();
    for i in 0..2 {
        let (engine, agency) = (engine.clone(), agency.clone());
        pending.push(tokio::spawn(async move {
            engine.submit(LOG, &agency, rec(i)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    match engine.submit(LOG, &agency, rec(9)).await {
        Err(LogError::Pushback { retry_after, .. }) => {
            assert_eq!(retry_after, config().retry_after)
        }
        other => panic!("expected pushback, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    for p in pending {
        let sub = p.await.unwrap().unwrap();
        assert!(sub.created);
        s.keep([&sub]);
    }
    s.faults.commit_delay_ms.store(0, Ordering::SeqCst);
    let last = engine.submit(LOG, &agency, rec(9)).await.unwrap();
    assert_eq!(last.receipt().index, 2);
    s.done(&engine, [&last]).await
}

async fn shutdown_stops_taking_submissions(mut s: Ctx) -> TestResult {
    let (engine, agency) = s.writer(config()).await?;
    let first = engine.submit(LOG, &agency, rec(0)).await.unwrap();
    s.check_with(&engine, [&first]).await?;
    engine.shutdown().await;
    assert!(matches!(
        engine.submit(LOG, &agency, rec(1)).await,
        Err(LogError::Pushback { .. })
    ));
    assert!(engine.ready().await.is_err());
    // Reads still answer.
    assert_eq!(engine.entry(LOG, 0).await.unwrap().index, 0);
    Ok(())
}
