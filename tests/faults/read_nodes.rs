//! Read nodes on a PostgreSQL streaming replica: a primary and its hot
//! standby (two throwaway clusters, `pg_basebackup -R`), a writer on the
//! primary and two read nodes on the standby. The read nodes serve
//! checkpoints signed by the writer and proofs that verify against them,
//! show replica lag as an older but valid (consistent) checkpoint, catch
//! up, refuse writes with `421` naming the writer, and a read node
//! restarted onto a standby further behind serves nothing smaller than it
//! served before.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use stele_core::note::{open_checkpoint, Verifier};
use stele_core::receipt::Receipt;
use stele_testkit::checker::{HttpView, LogChecker};
use stele_testkit::process::{with_logs, Deployment, PgCluster, ServerProcess};

use super::{LOG, RECORD_TYPE};

const CATCH_UP: Duration = Duration::from_secs(30);

pub async fn read_nodes() -> Result<()> {
    let primary = PgCluster::create().await?;
    let deployment = Deployment::new(
        &stele_testkit::stele_bin!(),
        None,
        Some(&primary.url("postgres")),
        super::spec(),
    )
    .await?;
    let mut writer = deployment.start("writer").await?;
    let standby = PgCluster::replica_of(&primary).await?;
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut readers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        readers.push(
            deployment
                .spawn_read_node(
                    &format!("reader-{i}"),
                    &standby.url("postgres"),
                    dir.path(),
                    &writer.base_url(),
                )
                .await?,
        );
    }
    let result = steps(
        &deployment,
        &primary,
        &standby,
        &writer,
        &mut readers,
        &dirs,
    )
    .await;
    let result = with_logs(&[&writer, &readers[0], &readers[1]], result);
    for r in &mut readers {
        r.terminate(super::STOP).await?;
    }
    writer.terminate(super::STOP).await?;
    result.with_context(|| format!("standby log:\n{}", standby.server_log()))
}

async fn steps(
    deployment: &Deployment,
    primary: &PgCluster,
    standby: &PgCluster,
    writer: &ServerProcess,
    readers: &mut [ServerProcess],
    dirs: &[tempfile::TempDir; 2],
) -> Result<()> {
    let key = Verifier::from_vkey(&deployment.vkey)?;
    let http = reqwest::Client::new();
    let mut receipts = Vec::new();
    for i in 0..40 {
        receipts.push(submit(&http, writer, &deployment.token, &format!("r-{i}")).await?);
    }
    let mut checkers = Vec::new();
    for r in readers.iter() {
        r.wait_ready(CATCH_UP).await?;
        checkers.push(LogChecker::new(
            HttpView::new(&r.base_url(), LOG)?,
            &deployment.vkey,
        )?);
    }

    // Both read nodes catch up with the writer: the same signed note.
    let head = checkpoint(&http, writer).await?;
    for r in readers.iter() {
        same_checkpoint(&http, r, &head).await?;
    }
    // Proofs from the read nodes verify against the writer's checkpoints:
    // every receipt the writer gave, every entry, the whole tree.
    for c in &mut checkers {
        for receipt in &receipts {
            c.add_receipt(receipt)?;
        }
        let report = c.check_all().await?;
        ensure!(report.checkpoint.size == 40, "{report:?}");
    }

    // Writes go to the writer: 421 with the writer's URL, nothing stored.
    let refused = post(&http, &readers[0], &deployment.token, "to-a-reader").await?;
    ensure!(
        refused.0 == 421,
        "a write to a read node: {} {}",
        refused.0,
        refused.1
    );
    let problem: serde_json::Value = serde_json::from_str(&refused.1)?;
    ensure!(
        problem["type"] == "urn:stele:problem:read-node"
            && problem["writer"] == writer.base_url().as_str(),
        "the problem names the writer: {problem}"
    );
    // Reading private content writes an access entry: the writer's too.
    let content = http
        .get(format!(
            "{}/logs/{LOG}/records/0/content",
            readers[0].base_url()
        ))
        .bearer_auth(&deployment.token)
        .header("stele-purpose", "audit")
        .send()
        .await?;
    ensure!(
        content.status() == 421,
        "content on a read node: {}",
        content.status()
    );
    ensure!(open_checkpoint(&checkpoint(&http, writer).await?, &key)?.size == 40);
    let (status, body) = get(&http, &format!("{}/readyz", readers[1].base_url())).await?;
    ensure!(
        status == 200,
        "readyz of a read node in step: {status} {body}"
    );

    // A second standby, paused here: the older copy a restarted read node
    // will be pointed at.
    let stale = PgCluster::replica_of(primary).await?;
    sql(&stale, "SELECT pg_wal_replay_pause()").await?;

    // The standby lags: the read nodes serve an older checkpoint, still
    // signed by the writer and consistent with the writer's newer one.
    sql(standby, "SELECT pg_wal_replay_pause()").await?;
    let lagging = checkpoint(&http, &readers[0]).await?;
    for i in 40..100 {
        receipts.push(submit(&http, writer, &deployment.token, &format!("r-{i}")).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ahead = checkpoint(&http, writer).await?;
    ensure!(open_checkpoint(&ahead, &key)?.size == 100);
    for r in readers.iter() {
        let served = open_checkpoint(&checkpoint(&http, r).await?, &key)?;
        ensure!(
            served.size == 40,
            "{} serves size {} while its standby is paused at 40",
            r.name(),
            served.size
        );
    }
    let mut on_writer = deployment.checker(writer).await?;
    on_writer.add_note(&lagging)?;
    let now = on_writer.check().await?;
    ensure!(now.size == 100 && on_writer.pending().is_empty());

    // Replay resumes: both catch up, every new receipt proven on them.
    sql(standby, "SELECT pg_wal_replay_resume()").await?;
    for (r, c) in readers.iter().zip(&mut checkers) {
        same_checkpoint(&http, r, &ahead).await?;
        for receipt in &receipts[40..] {
            c.add_receipt(receipt)?;
        }
        let report = c.check_all().await?;
        ensure!(report.checkpoint.size == 100, "{report:?}");
    }

    // Restarted onto the stale standby (at 40), reader 0 serves nothing
    // smaller than the 100 it served: not ready, no checkpoint, until
    // that standby catches up.
    readers[0].terminate(super::STOP).await?;
    readers[0] = deployment
        .spawn_read_node(
            "reader-0-on-stale",
            &stale.url("postgres"),
            dirs[0].path(),
            &writer.base_url(),
        )
        .await?;
    let url = readers[0].base_url();
    stele_testkit::process::wait_for(&format!("{url}/healthz"), CATCH_UP).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = get(&http, &format!("{url}/readyz")).await?;
    ensure!(
        status == 503 && body.contains("behind the size 100"),
        "readyz on a standby behind the served mark: {status} {body}"
    );
    let (status, body) = get(&http, &format!("{url}/logs/{LOG}/checkpoint")).await?;
    match status {
        404 => {}
        200 => {
            let size = open_checkpoint(&body, &key)?.size;
            ensure!(
                size >= 100,
                "served size {size}, smaller than the 100 it served before"
            );
        }
        other => bail!("checkpoint on the stale standby: {other} {body}"),
    }
    sql(&stale, "SELECT pg_wal_replay_resume()").await?;
    readers[0].wait_ready(CATCH_UP).await?;
    same_checkpoint(&http, &readers[0], &ahead).await?;
    Ok(())
}

/// One statement on `cluster` (its `postgres` database).
async fn sql(cluster: &PgCluster, statement: &str) -> Result<()> {
    let mut conn =
        <sqlx::PgConnection as sqlx::Connection>::connect(&cluster.url("postgres")).await?;
    sqlx::query(statement).execute(&mut conn).await?;
    Ok(())
}

async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, String)> {
    let r = http.get(url).send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

async fn checkpoint(http: &reqwest::Client, server: &ServerProcess) -> Result<String> {
    let (status, body) = get(
        http,
        &format!("{}/logs/{LOG}/checkpoint", server.base_url()),
    )
    .await?;
    ensure!(
        status == 200,
        "{}: checkpoint {status} {body}",
        server.name()
    );
    Ok(body)
}

/// Waits until `server` serves exactly `note`.
async fn same_checkpoint(http: &reqwest::Client, server: &ServerProcess, note: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        let (status, body) = get(
            http,
            &format!("{}/logs/{LOG}/checkpoint", server.base_url()),
        )
        .await?;
        if status == 200 && body == note {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{} did not catch up within {CATCH_UP:?}: serves {status} {body}, the writer {note}",
                server.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(
    http: &reqwest::Client,
    server: &ServerProcess,
    token: &str,
    subject: &str,
) -> Result<(u16, String)> {
    let r = http
        .post(format!("{}/logs/{LOG}/records", server.base_url()))
        .bearer_auth(token)
        .json(&serde_json::json!({"type": RECORD_TYPE, "subject": subject}))
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

async fn submit(
    http: &reqwest::Client,
    server: &ServerProcess,
    token: &str,
    subject: &str,
) -> Result<Receipt> {
    let (status, body) = post(http, server, token, subject).await?;
    ensure!(status == 201, "submit {subject}: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}
