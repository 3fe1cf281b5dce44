//! Rollback-safe start without witnesses: the high-water mark beside the
//! key remembers the newest signed and stored checkpoint, so a database
//! restored from an older backup (PostgreSQL: `pg_dump`/`pg_restore`;
//! SQLite: the database files copied back) or an empty database given the
//! used key is refused before anything is signed, and `/readyz` and the
//! submissions say why; so is a different tree of the marked size (a
//! fork signed with the same key while the mark was away). A torn write
//! of the mark leaves the one before it, which storage extends.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use stele_testkit::process::{run, wait_for, ServerProcess};
use stele_testkit::store::{Backend, TestStore};

use super::load::{submit_once, submitter, Outcome};

use super::STOP;

pub async fn rollback(backend: Backend) -> Result<()> {
    let (store, deployment) = super::deploy(backend).await?;
    let backup = tempfile::tempdir()?;

    let mut first = deployment.start("first").await?;
    submit(&first, &deployment.token, "before-backup", 5).await?;
    first.terminate(STOP).await?;
    save(&store, backup.path())?;

    let mut second = deployment.start("second").await?;
    submit(&second, &deployment.token, "after-backup", 5).await?;
    second.terminate(STOP).await?;

    // A crash tore the mark's last write (the slot of size 10): the mark
    // reads as the one before, storage is ahead of it, and the log starts,
    // writes, and moves the mark up again.
    let mark = deployment.dir().join("log.key.mark");
    let torn = tear_newest_slot(&mark)?;
    ensure!(torn == 10, "the newest mark was of size {torn}, not 10");
    let mut after_tear = deployment.start("after-tear").await?;
    submit(&after_tear, &deployment.token, "after-tear", 1).await?;
    after_tear.terminate(STOP).await?;
    let sizes = mark_sizes(&mark)?;
    ensure!(sizes.contains(&11), "the mark was not moved up: {sizes:?}");

    restore(&store, backup.path())?;
    let mut restored = deployment.spawn("restored").await?;
    let result = refuses(
        &restored,
        Some(&deployment.token),
        "restored from an older backup",
    )
    .await;
    restored.terminate(STOP).await?;
    result.with_context(|| format!("restored:\n{}", restored.output()))?;

    wipe(&store)?;
    let mut empty = deployment.spawn("empty").await?;
    let result = refuses(&empty, None, "an empty or wrong database with a used key").await;
    empty.terminate(STOP).await?;
    result.with_context(|| format!("empty:\n{}", empty.output()))?;

    // A fork: another tree of the marked size, signed with the same key
    // while the mark was away, then the mark put back.
    let kept = backup.path().join("kept.mark");
    std::fs::rename(&mark, &kept)?;
    let token = deployment.add_agency("forker", &["faults.*"]).await?;
    let mut forker = deployment.start("forker").await?;
    submit(&forker, &token, "fork", 11).await?;
    forker.terminate(STOP).await?;
    std::fs::rename(&kept, &mark)?;
    let mut forked = deployment.spawn("forked").await?;
    let result = refuses(&forked, Some(&token), "a fork; refusing to sign").await;
    forked.terminate(STOP).await?;
    result.with_context(|| format!("forked:\n{}", forked.output()))?;
    Ok(())
}

async fn submit(server: &ServerProcess, token: &str, prefix: &str, n: usize) -> Result<()> {
    let http = submitter(token, Duration::from_secs(10))?;
    for i in 0..n {
        let a = submit_once(&http, &server.base_url(), &format!("{prefix}-{i}")).await;
        ensure!(
            matches!(a.outcome, Outcome::Receipt { .. }),
            "submission {prefix}-{i}: {:?}",
            a.outcome
        );
    }
    Ok(())
}

/// The mark file's two slots (see `src/engine/sequencer/mark.rs`): each
/// slot's header sequence number and the tree size of its note, read
/// without checking digests or signatures.
fn mark_slots(path: &Path) -> Result<Vec<(u64, u64, usize)>> {
    let bytes = std::fs::read(path)?;
    let half = bytes.len() / 2;
    ensure!(
        half % 4096 == 0 && half > 0,
        "not a two-slot mark: {} bytes",
        bytes.len()
    );
    let mut slots = Vec::new();
    for at in [0, half] {
        let text = String::from_utf8_lossy(&bytes[at..at + half]).into_owned();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
        let (Some(&"stele-mark"), Some(seq)) = (header.first(), header.get(1)) else {
            continue;
        };
        let size = lines.nth(1).and_then(|l| l.parse().ok());
        if let (Ok(seq), Some(size)) = (seq.parse(), size) {
            slots.push((seq, size, at));
        }
    }
    Ok(slots)
}

fn mark_sizes(path: &Path) -> Result<Vec<u64>> {
    Ok(mark_slots(path)?
        .into_iter()
        .map(|(_, size, _)| size)
        .collect())
}

/// Tears the mark's newest slot as a crash in its write would (its second
/// half never written); returns the tree size that slot held.
fn tear_newest_slot(path: &Path) -> Result<u64> {
    let slots = mark_slots(path)?;
    let &(_, size, at) = slots
        .iter()
        .max_by_key(|(seq, _, _)| *seq)
        .context("no slot in the mark")?;
    let mut bytes = std::fs::read(path)?;
    let half = bytes.len() / 2;
    bytes[at + half / 2..at + half].fill(0);
    // Also a byte of the note, in case it fits in the slot's first half.
    let nl = at
        + bytes[at..]
            .iter()
            .position(|&b| b == b'\n')
            .context("no header")?;
    bytes[nl + 1] ^= 0x20;
    std::fs::write(path, &bytes)?;
    Ok(size)
}

/// The server answers `/healthz` but `/readyz` says 503 with `why`; with a
/// token, a submission is refused with `why` too.
pub(super) async fn refuses(server: &ServerProcess, token: Option<&str>, why: &str) -> Result<()> {
    wait_for(
        &format!("{}/healthz", server.base_url()),
        Duration::from_secs(60),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = reqwest::get(format!("{}/readyz", server.base_url())).await?;
        let status = r.status().as_u16();
        let body = r.text().await?;
        if status == 503 && body.contains(why) {
            break;
        }
        ensure!(status != 200, "ready on a rolled-back database: {body}");
        if Instant::now() >= deadline {
            bail!("/readyz never said {why:?}; last: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(token) = token {
        let http = submitter(token, Duration::from_secs(10))?;
        let a = submit_once(&http, &server.base_url(), "after-restore").await;
        match &a.outcome {
            Outcome::Status { status: 503, body } if body.contains(why) => {}
            other => bail!("a submission on a rolled-back database got {other:?}"),
        }
    }
    Ok(())
}

const SQLITE_FILES: [&str; 3] = ["stele.db", "stele.db-wal", "stele.db-shm"];

pub(super) fn save(store: &TestStore, to: &Path) -> Result<()> {
    match store.database_url() {
        Some(url) => run(cmd("pg_dump", &["-Fc", "-f", &dump(to), url]))?
            .ok()
            .map(drop),
        None => {
            for f in SQLITE_FILES {
                let from = store.dir().join(f);
                if from.exists() {
                    std::fs::copy(&from, to.join(f))?;
                }
            }
            Ok(())
        }
    }
}

pub(super) fn restore(store: &TestStore, from: &Path) -> Result<()> {
    match store.database_url() {
        Some(url) => run(cmd(
            "pg_restore",
            &[
                "--clean",
                "--if-exists",
                "--no-owner",
                "-d",
                url,
                &dump(from),
            ],
        ))?
        .ok()
        .map(drop),
        None => {
            wipe(store)?;
            for f in SQLITE_FILES {
                if from.join(f).exists() {
                    std::fs::copy(from.join(f), store.dir().join(f))?;
                }
            }
            Ok(())
        }
    }
}

/// An empty database: PostgreSQL's schema dropped (`stele serve` migrates
/// it again), SQLite's files removed.
pub(super) fn wipe(store: &TestStore) -> Result<()> {
    match store.database_url() {
        Some(url) => run(cmd(
            "psql",
            &[
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "DROP SCHEMA public CASCADE; CREATE SCHEMA public;",
                url,
            ],
        ))?
        .ok()
        .map(drop),
        None => {
            for f in SQLITE_FILES {
                let p = store.dir().join(f);
                if p.exists() {
                    std::fs::remove_file(p)?;
                }
            }
            Ok(())
        }
    }
}

fn dump(dir: &Path) -> String {
    dir.join("db.dump").display().to_string()
}

fn cmd(program: &str, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.args(args);
    c
}
