//! Storage faults: a commit that fails before writing, one that commits
//! but reports failure (a lost acknowledgement), an outage, and corrupted
//! tiles at recovery.

use std::sync::atomic::Ordering;
use std::time::Duration;

use stele::engine::LogError;
use stele_testkit::harness::{TestFn, TestResult};

use super::{config, rec, retry_submit, Ctx, LOG};

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx:
    failed_commit_loses_and_duplicates_nothing,
    lost_acknowledgement_is_adopted,
    database_outage_answers_503_and_recovers_without_restart,
    recovery_refuses_writes_when_a_tile_is_corrupted,
    entries_beyond_the_tree_refuse_writes,
    readiness_fails_while_commits_fail,
    storage_going_back_is_never_served,
];

async fn failed_commit_loses_and_duplicates_nothing(mut s: Ctx) -> TestResult {
    let (engine, agency) = s.writer(config()).await?;
    let first = engine.submit(LOG, &agency, rec(0)).await.unwrap();
    s.check_with(&engine, [&first]).await?;
    s.faults.fail_before.store(1, Ordering::SeqCst);
    match engine.submit(LOG, &agency, rec(1)).await {
        Err(LogError::Unavailable(_)) => {}
        other => panic!("expected 503, got {other:?}"),
    }
    // The engine reloads and continues on its own.
    let sub = retry_submit(&engine, &agency, rec(1)).await?;
    assert!(sub.created);
    assert_eq!(sub.receipt().index, 1);
    assert_eq!(engine.logs().await[0].tree_size, 2);
    s.done(&engine, [&sub]).await
}

async fn lost_acknowledgement_is_adopted(mut s: Ctx) -> TestResult {
    let (engine, agency) = s.writer(config()).await?;
    let first = engine.submit(LOG, &agency, rec(0)).await.unwrap();
    s.check_with(&engine, [&first]).await?;
    s.faults.fail_after.store(1, Ordering::SeqCst);
    assert!(matches!(
        engine.submit(LOG, &agency, rec(1)).await,
        Err(LogError::Unavailable(_))
    ));
    // Committed in fact: the retry is a duplicate of index 1.
    let again = retry_submit(&engine, &agency, rec(1)).await?;
    assert!(!again.created);
    assert_eq!(again.receipt().index, 1);
    again.receipt().verify(&s.verifier()).unwrap();
    let next = engine.submit(LOG, &agency, rec(2)).await.unwrap();
    assert_eq!((next.receipt().index, next.created), (2, true));
    s.done(&engine, [&again, &next]).await
}

async fn database_outage_answers_503_and_recovers_without_restart(mut s: Ctx) -> TestResult {
    let (engine, agency) = s.writer(config()).await?;
    let first = engine.submit(LOG, &agency, rec(0)).await.unwrap();
    s.check_with(&engine, [&first]).await?;
    s.faults.down.store(true, Ordering::SeqCst);
    for i in 1..5 {
        let started = std::time::Instant::now();
        let r = engine.submit(LOG, &agency, rec(i)).await;
        assert!(matches!(r, Err(LogError::Unavailable(_))), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a 503 must not hang"
        );
    }
    assert!(engine.ready().await.is_err());
    s.faults.down.store(false, Ordering::SeqCst);
    let sub = retry_submit(&engine, &agency, rec(1)).await?;
    assert_eq!((sub.receipt().index, sub.created), (1, true));
    assert_eq!(engine.ready().await, Ok(()));
    s.done(&engine, [&sub]).await
}

async fn recovery_refuses_writes_when_a_tile_is_corrupted(mut s: Ctx) -> TestResult {
    let (engine, agency) = s.writer(config()).await?;
    for i in 0..3 {
        let sub = engine.submit(LOG, &agency, rec(i)).await.unwrap();
        s.keep([&sub]);
    }
    s.check(&engine).await?;
    let before = engine.checkpoint(LOG).await.unwrap();
    engine.shutdown().await;

    s.faults.corrupt_tiles.store(true, Ordering::SeqCst);
    let engine = s.engine(config()).await?;
    let why = engine.ready().await.unwrap_err();
    assert!(why.contains("do not reproduce the root"), "{why}");
    assert!(matches!(
        engine.submit(LOG, &agency, rec(7)).await,
        Err(LogError::Pushback { .. })
    ));
    // Reads keep working.
    assert_eq!(engine.checkpoint(LOG).await.unwrap(), before);
    assert_eq!(engine.entry(LOG, 2).await.unwrap().index, 2);
    engine.shutdown().await;

    // With intact tiles the log starts writable again.
    s.faults.corrupt_tiles.store(false, Ordering::SeqCst);
    let engine = s.engine(config()).await?;
    assert_eq!(engine.ready().await, Ok(()));
    let sub = engine.submit(LOG, &agency, rec(7)).await.unwrap();
    assert_eq!(sub.receipt().index, 3);
    s.done(&engine, [&sub]).await
}

/// Storage holding an entry beyond its tree size would make every commit
/// fail on its uniqueness rule: the log is refused at start-up, says why,
/// and keeps serving reads.
async fn entries_beyond_the_tree_refuse_writes(mut s: Ctx) -> TestResult {
    let (engine, agency) = s.writer(config()).await?;
    let sub = engine.submit(LOG, &agency, rec(0)).await.unwrap();
    s.check_with(&engine, [&sub]).await?;
    engine.shutdown().await;
    s.faults.phantom_entry.store(true, Ordering::SeqCst);
    let engine = s.engine(config()).await?;
    let why = engine.ready().await.unwrap_err();
    assert!(why.contains("beyond the tree size 1"), "{why}");
    assert!(matches!(
        engine.submit(LOG, &agency, rec(1)).await,
        Err(LogError::Pushback { .. })
    ));
    assert_eq!(engine.entry(LOG, 0).await.unwrap().index, 0);
    engine.shutdown().await;
    s.faults.phantom_entry.store(false, Ordering::SeqCst);
    let engine = s.engine(config()).await?;
    assert_eq!(engine.ready().await, Ok(()));
    s.done(&engine, []).await
}

/// A commit that fails turns readiness red until a commit succeeds again,
/// while submissions still try (and succeed once storage does).
async fn readiness_fails_while_commits_fail(mut s: Ctx) -> TestResult {
    let (engine, agency) = s.writer(config()).await?;
    assert_eq!(engine.ready().await, Ok(()));
    s.faults.fail_before.store(1, Ordering::SeqCst);
    assert!(engine.submit(LOG, &agency, rec(0)).await.is_err());
    // Wait for the reload that follows the failed commit.
    let mut why = String::new();
    for _ in 0..100 {
        match engine.ready().await {
            Err(w) if w.contains("the last commit failed") => {
                why = w;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(why.contains("the last commit failed"), "readiness: {why:?}");
    assert!(
        !why.contains("injected"),
        "storage's own words reached readiness: {why}"
    );
    let sub = retry_submit(&engine, &agency, rec(0)).await?;
    assert_eq!(engine.ready().await, Ok(()));
    s.done(&engine, [&sub]).await
}

/// A process that serves a log while another writes it never serves a
/// stored tree that went back (a database restored from an older backup)
/// or forked: it keeps serving what it verified, refuses writes, and says
/// why.
async fn storage_going_back_is_never_served(mut s: Ctx) -> TestResult {
    // The writer, on storage without faults; this context's faulty storage
    // is the second process's.
    let writer = s.engine_on(s.another_process().await?, config()).await?;
    let agency = s.signed_in(&writer, "land", &[]).await?;
    let first = writer.submit(LOG, &agency, rec(0)).await.unwrap();
    let old_state = s.storage.log_state(LOG).await?.expect("the log exists");
    let mut subs = vec![first];
    for i in 1..5 {
        subs.push(writer.submit(LOG, &agency, rec(i)).await.unwrap());
    }
    let reader = s.engine(config()).await?;
    assert!(reader.ready().await.is_err(), "a second writer?");
    assert_eq!(reader.logs().await[0].tree_size, 5);
    let served = reader.checkpoint(LOG).await.unwrap();

    // Storage now says the tree is back at size 1.
    *s.faults.log_state_override.lock().unwrap() = Some(old_state);
    let mut why = String::new();
    for _ in 0..60 {
        match reader.ready().await {
            Err(w) if w.contains("smaller than the size 5") => {
                why = w;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        why.contains("smaller than the size 5"),
        "readiness: {why:?}"
    );
    assert_eq!(reader.checkpoint(LOG).await.unwrap(), served);
    assert_eq!(reader.logs().await[0].tree_size, 5);
    *s.faults.log_state_override.lock().unwrap() = None;
    reader.shutdown().await;
    s.done(&writer, subs.iter()).await
}
