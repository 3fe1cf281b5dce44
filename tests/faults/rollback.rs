//! Rollback-safe start without witnesses: the high-water mark beside the
//! key remembers the newest signed and stored checkpoint, so a database
//! restored from an older backup (PostgreSQL: `pg_dump`/`pg_restore`;
//! SQLite: the database files copied back) or an empty database given the
//! used key is refused before anything is signed, and `/readyz` and the
//! submissions say why; so is a different tree of the marked size (a
//! fork signed with the same key while the mark was away).

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
    let mark = deployment.dir().join("log.key.mark");
    let kept = backup.path().join("kept.mark");
    std::fs::rename(&mark, &kept)?;
    let token = deployment.add_agency("forker", &["faults.*"]).await?;
    let mut forker = deployment.start("forker").await?;
    submit(&forker, &token, "fork", 10).await?;
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
