//! Publishing to object storage, against a real S3-compatible server
//! (`s3s-fs` on loopback, not a mock) and real `stele serve` processes, on
//! both backends: the bucket alone is a complete C2SP tlog-tiles log (the
//! monitor's auditor passes against its files served by a plain static
//! server), a killed publisher resumes without gaps or rewrites, an outage
//! of the bucket costs no receipt and shows in `/readyz`, and a conflicting
//! object already in the bucket — a tile, or a checkpoint this log did not
//! sign — is an alarm and is never overwritten.
//!
//! The trials need `s3s-fs` (`STELE_S3S_FS`, or on `PATH`); without it they
//! are reported as not run, or fail under `STELE_REQUIRE_S3=1` (CI).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{json, Value};
use stele_core::tile::{changed_bundles, changed_tiles, TileId, TilePath};
use stele_testkit::checker::{HttpView, LogChecker};
use stele_testkit::harness::{Needs, Suite, TestResult};
use stele_testkit::process::{command, run_async, Deployment, DeploymentSpec, ServerProcess};
use stele_testkit::s3::S3Server;
use stele_testkit::static_site::StaticSite;
use stele_testkit::store::{Backend, TestStore};

const LOG: &str = "pub";
const BUCKET: &str = "tiles";
/// Objects of the log live under `logs/pub/`.
const PREFIX: &str = "logs";

fn main() {
    let mut suite = Suite::new();
    suite.per_backend_needing(
        "the_bucket_is_a_complete_log",
        Backend::ALL,
        Needs::S3,
        the_bucket_is_a_complete_log,
    );
    suite.per_backend_needing(
        "a_killed_publisher_resumes_without_gaps_or_rewrites",
        Backend::ALL,
        Needs::S3,
        a_killed_publisher_resumes_without_gaps_or_rewrites,
    );
    suite.per_backend_needing(
        "a_conflicting_object_is_an_alarm_and_stays",
        Backend::ALL,
        Needs::S3,
        a_conflicting_object_is_an_alarm_and_stays,
    );
    suite.per_backend_needing(
        "a_bucket_checkpoint_the_log_did_not_sign_is_an_alarm",
        Backend::ALL,
        Needs::S3,
        a_bucket_checkpoint_the_log_did_not_sign_is_an_alarm,
    );
    suite.run();
}

/// A deployment publishing to its own S3 server.
struct Ctx {
    s3: S3Server,
    deployment: Deployment,
    _store: TestStore,
    http: reqwest::Client,
    bucket: Arc<dyn ObjectStore>,
    /// The state file of the monitor that audits the bucket: each audit
    /// after the first also proves the bucket's tree consistent with the
    /// one audited before, from the bucket's tiles alone.
    monitor_state: tempfile::TempDir,
}

impl Ctx {
    async fn new(backend: Backend, max_lag_s: u64) -> anyhow::Result<Ctx> {
        let s3 = S3Server::start(BUCKET).await?;
        let store = TestStore::new(backend).await?;
        let spec = DeploymentSpec {
            log: LOG.into(),
            origin: "publish.stele.test/pub".into(),
            agency: "publisher-test".into(),
            types: vec![],
            accept_unregistered: true,
            env: s3.env(),
            config: format!(
                "[publish]\nurl = \"s3://{BUCKET}/{PREFIX}\"\nendpoint = {:?}\nmax_lag_s = {max_lag_s}\n",
                s3.endpoint()
            ),
            log_config: String::new(),
        };
        let deployment = Deployment::on_store(&stele_testkit::stele_bin!(), &store, spec).await?;
        let bucket = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(s3.endpoint())
            .with_allow_http(true)
            .with_access_key_id(stele_testkit::s3::ACCESS_KEY)
            .with_secret_access_key(stele_testkit::s3::SECRET_KEY)
            .build()?;
        Ok(Ctx {
            s3,
            deployment,
            _store: store,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            bucket: Arc::new(bucket),
            monitor_state: tempfile::tempdir()?,
        })
    }

    fn key(rel: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{PREFIX}/{LOG}/{rel}"))
    }

    /// Appends `n` records through the bulk endpoint; every one must get
    /// its receipt.
    async fn bulk(&self, server: &ServerProcess, tag: &str, n: usize) -> TestResult {
        let mut done = 0;
        while done < n {
            let k = (n - done).min(1000);
            let records: Vec<Value> = (done..done + k)
                .map(|i| json!({"type": "test.publish", "subject": format!("{tag}-{i}")}))
                .collect();
            let resp = self
                .http
                .post(format!("{}/logs/{LOG}/records/bulk", server.base_url()))
                .bearer_auth(&self.deployment.token)
                .json(&json!({ "records": records }))
                .send()
                .await
                .context("bulk")?;
            let status = resp.status();
            let body: Value = resp.json().await?;
            ensure!(status.is_success(), "bulk: HTTP {status}: {body}");
            let receipts = body["receipts"].as_array().map_or(0, Vec::len);
            ensure!(receipts == k, "bulk of {k} answered {receipts} receipts");
            done += k;
        }
        Ok(())
    }

    /// The bucket's checkpoint, if any.
    async fn bucket_checkpoint(&self) -> anyhow::Result<Option<String>> {
        match self.bucket.get(&Self::key("checkpoint")).await {
            Ok(g) => Ok(Some(String::from_utf8(g.bytes().await?.to_vec())?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the bucket's checkpoint is the one the server shows.
    async fn wait_published(&self, server: &ServerProcess, timeout: Duration) -> TestResult {
        let deadline = Instant::now() + timeout;
        loop {
            let shown = self
                .http
                .get(format!("{}/logs/{LOG}/checkpoint", server.base_url()))
                .send()
                .await?
                .text()
                .await?;
            if self.bucket_checkpoint().await?.as_deref() == Some(shown.as_str()) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the bucket did not get the checkpoint {shown:?} within {timeout:?}; the server logged:\n{}",
                server.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The invariant checker's whole check of the served log.
    async fn check(&self, server: &ServerProcess) -> anyhow::Result<u64> {
        let mut checker: LogChecker<HttpView> = self.deployment.checker(server).await?;
        Ok(checker.check_all().await?.checkpoint.size)
    }

    /// `stele monitor --audit --once` against the bucket's files served by
    /// a plain static file server: the bucket alone is the log.
    async fn audit_bucket(&self) -> TestResult {
        let site = StaticSite::serve(&self.s3.bucket_dir()).await?;
        let url = format!("{}/{PREFIX}/{LOG}", site.url());
        let state = self.monitor_state.path().join("monitor.json");
        let before: Option<u64> = match std::fs::read(&state) {
            Ok(b) => {
                let v: serde_json::Value = serde_json::from_slice(&b)?;
                let note = v["checkpoint"].as_str().unwrap_or_default().to_string();
                Some(
                    stele_core::note::open_checkpoint(
                        &note,
                        &stele_core::note::Verifier::from_vkey(&self.deployment.vkey)?,
                    )?
                    .size,
                )
            }
            Err(_) => None,
        };
        let state_arg = state.display().to_string();
        let out = run_async(
            command(
                &stele_testkit::stele_bin!(),
                &[
                    "monitor",
                    &url,
                    "--vkey",
                    &self.deployment.vkey,
                    "--once",
                    "--audit",
                    "--allow-unregistered",
                    "--state",
                    &state_arg,
                ],
            ),
            Duration::from_secs(120),
        )
        .await?;
        ensure!(
            out.code == 0 && out.stdout.contains("audited: the"),
            "the auditor did not pass against the bucket\n{}",
            out.show()
        );
        if let Some(size) = before {
            ensure!(
                out.stdout.contains(&format!("consistent with size {size}"))
                    || out.stdout.contains("unchanged"),
                "the monitor did not prove the bucket consistent with size {size}\n{}",
                out.show()
            );
        }
        Ok(())
    }

    /// `/readyz`: status and body.
    async fn readyz(&self, server: &ServerProcess) -> anyhow::Result<(u16, String)> {
        let r = self
            .http
            .get(format!("{}/readyz", server.base_url()))
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }
}

/// One sample of `name` (`stele_…`) for the log from `/metrics` (with
/// `extra` labels, e.g. `outcome="conflict"`); 0 if absent.
async fn metric(server: &ServerProcess, name: &str, extra: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", server.base_url()))
        .await?
        .text()
        .await?;
    let labels = if extra.is_empty() {
        format!("{{log=\"{LOG}\"}}")
    } else {
        format!("{{log=\"{LOG}\",{extra}}}")
    };
    let want = format!("{name}{labels} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map(|v| v.trim().parse().unwrap_or(f64::NAN))
        .unwrap_or(0.0))
}

/// Waits until `done(metric(name, extra))`, for at most 30 s; `what` and
/// the server's log otherwise.
async fn wait_metric(
    server: &ServerProcess,
    name: &str,
    extra: &str,
    done: impl Fn(f64) -> bool,
    what: &str,
) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(metric(server, name, extra).await?) {
        ensure!(
            Instant::now() < deadline,
            "{what}; the server logged:\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Every tile and bundle of a tree of `size`, at its width there.
fn tiles_of(size: u64) -> Vec<TilePath> {
    let hashes = changed_tiles(0, size).into_iter().map(TilePath::Hash);
    hashes
        .chain(changed_bundles(0, size).into_iter().map(TilePath::Entries))
        .collect()
}

/// Every object of the log in the bucket: key → (bytes, last modified).
async fn listing(
    bucket: &dyn ObjectStore,
) -> anyhow::Result<BTreeMap<String, (Vec<u8>, chrono::DateTime<chrono::Utc>)>> {
    use futures::TryStreamExt;
    let metas: Vec<_> = bucket
        .list(Some(&object_store::path::Path::from(format!(
            "{PREFIX}/{LOG}"
        ))))
        .try_collect()
        .await?;
    let mut out = BTreeMap::new();
    for m in metas {
        let bytes = bucket.get(&m.location).await?.bytes().await?.to_vec();
        out.insert(m.location.to_string(), (bytes, m.last_modified));
    }
    Ok(out)
}

async fn the_bucket_is_a_complete_log(backend: Backend) -> TestResult {
    let ctx = Ctx::new(backend, 60).await?;
    let server = ctx.deployment.start("writer").await?;
    // 2,600 entries: full tiles and bundles, partial ones at both levels.
    ctx.bulk(&server, "a", 1000).await?;
    ctx.bulk(&server, "b", 1600).await?;
    ctx.wait_published(&server, Duration::from_secs(60)).await?;
    let size = ctx.check(&server).await?;
    ensure!(size == 2600, "the log has {size} entries");

    // Every tile of the tree, byte for byte what the log serves, with the
    // cache rule of its kind; the checkpoint is the served one.
    for path in tiles_of(size) {
        let rel = path.to_path();
        let served = ctx
            .http
            .get(format!("{}/logs/{LOG}/{rel}", server.base_url()))
            .send()
            .await?
            .bytes()
            .await?;
        let got = ctx
            .bucket
            .get(&Ctx::key(&rel))
            .await
            .with_context(|| format!("{rel} is not in the bucket"))?;
        let cache = got
            .attributes
            .get(&object_store::Attribute::CacheControl)
            .map(|v| v.to_string());
        let bytes = got.bytes().await?;
        ensure!(
            bytes == served,
            "{rel} in the bucket differs from the log's"
        );
        let full = match path {
            TilePath::Hash(id) | TilePath::Entries(id) => id.is_full(),
        };
        let want = if full {
            stele::engine::CACHE_IMMUTABLE
        } else {
            stele::engine::CACHE_PARTIAL
        };
        ensure!(
            cache.as_deref() == Some(want),
            "{rel} has Cache-Control {cache:?}, not {want:?}"
        );
    }
    let cp = ctx
        .bucket
        .get(&Ctx::key("checkpoint"))
        .await?
        .attributes
        .get(&object_store::Attribute::CacheControl)
        .map(|v| v.to_string());
    ensure!(
        cp.as_deref() == Some(stele::engine::CACHE_CHECKPOINT),
        "the checkpoint has Cache-Control {cp:?}"
    );
    ctx.audit_bucket().await?;
    ensure!(metric(&server, "stele_published_tree_size", "").await? == 2600.0);
    ensure!(metric(&server, "stele_publish_lag_entries", "").await? == 0.0);
    let (status, body) = ctx.readyz(&server).await?;
    ensure!(status == 200, "/readyz {status}: {body}");
    Ok(())
}

async fn a_killed_publisher_resumes_without_gaps_or_rewrites(backend: Backend) -> TestResult {
    let mut ctx = Ctx::new(backend, 2).await?;
    let mut server = ctx.deployment.start("writer").await?;
    ctx.bulk(&server, "a", 1000).await?;
    ctx.wait_published(&server, Duration::from_secs(60)).await?;
    let before = listing(&*ctx.bucket).await?;

    // Killed right after its receipts: the publisher may be anywhere.
    ctx.bulk(&server, "b", 1300).await?;
    server.kill9();
    drop(server);
    let server = ctx.deployment.start("writer, again").await?;
    ctx.wait_published(&server, Duration::from_secs(60)).await?;
    let after = listing(&*ctx.bucket).await?;
    let checkpoint = Ctx::key("checkpoint").to_string();
    for (key, (bytes, modified)) in &before {
        if *key == checkpoint {
            continue;
        }
        let (b2, m2) = after
            .get(key)
            .ok_or_else(|| anyhow!("{key} vanished from the bucket"))?;
        ensure!(b2 == bytes, "{key} was rewritten with other bytes");
        ensure!(m2 == modified, "{key} was written again");
    }
    ensure!(ctx.check(&server).await? == 2300);
    ctx.audit_bucket().await?;

    // The bucket goes away: receipts still come, readiness says why once
    // the lag passes max_lag_s (2 s), and publishing catches up after.
    ctx.s3.stop();
    ctx.bulk(&server, "c", 500).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = ctx.readyz(&server).await?;
        if status == 503 {
            ensure!(
                body.contains("publishing to s3://") && body.contains("behind"),
                "/readyz says {body}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "/readyz stayed {status} with the bucket down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_metric(
        &server,
        "stele_publish_failures_total",
        "",
        |v| v >= 1.0,
        "no failed publishing round counted with the bucket down",
    )
    .await?;
    ensure!(metric(&server, "stele_published_tree_size", "").await? == 2300.0);
    ensure!(metric(&server, "stele_publish_lag_entries", "").await? == 500.0);
    ctx.s3.restart().await?;
    ctx.wait_published(&server, Duration::from_secs(60)).await?;
    server.wait_ready(Duration::from_secs(30)).await?;
    ensure!(ctx.check(&server).await? == 2800);
    ctx.audit_bucket().await?;

    // Restarted with the bucket up to date and nothing written since: no
    // lag, however long it waits (longer than max_lag_s).
    drop(server);
    let server = ctx.deployment.start("writer, third").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = ctx.readyz(&server).await?;
    ensure!(
        status == 200,
        "/readyz {status} with an up-to-date bucket: {body}"
    );
    ensure!(metric(&server, "stele_publish_lag_seconds", "").await? == 0.0);
    Ok(())
}

async fn a_conflicting_object_is_an_alarm_and_stays(backend: Backend) -> TestResult {
    let ctx = Ctx::new(backend, 60).await?;
    let server = ctx.deployment.start("writer").await?;
    ctx.bulk(&server, "a", 100).await?;
    ctx.wait_published(&server, Duration::from_secs(60)).await?;
    let published = ctx.bucket_checkpoint().await?;

    // Someone else's object where the first full bundle will go.
    let planted = b"not this log's entries".to_vec();
    let bundle = Ctx::key(&TilePath::Entries(TileId::new(0, 0, 256)).to_path());
    ctx.bucket
        .put(&bundle, PutPayload::from(planted.clone()))
        .await?;
    ctx.bulk(&server, "b", 200).await?;
    wait_metric(
        &server,
        "stele_publish_alarm",
        "",
        |v| v == 1.0,
        "no publishing alarm",
    )
    .await?;
    ensure!(
        metric(
            &server,
            "stele_publish_objects_total",
            "outcome=\"conflict\""
        )
        .await?
            >= 1.0
    );
    let there = ctx.bucket.get(&bundle).await?.bytes().await?;
    ensure!(there == planted, "the conflicting object was overwritten");
    ensure!(
        ctx.bucket_checkpoint().await? == published,
        "the bucket's checkpoint moved past a conflict"
    );
    let (status, body) = ctx.readyz(&server).await?;
    ensure!(
        status == 503 && body.contains("differ") && body.contains("tile/entries/000"),
        "/readyz {status}: {body}"
    );
    // Writes go on: publishing never holds up a receipt.
    ctx.bulk(&server, "c", 10).await?;
    ensure!(ctx.check(&server).await? == 310);
    // Still not overwritten after more rounds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let there = ctx.bucket.get(&bundle).await?.bytes().await?;
    ensure!(
        there == planted,
        "the conflicting object was overwritten later"
    );
    Ok(())
}

async fn a_bucket_checkpoint_the_log_did_not_sign_is_an_alarm(backend: Backend) -> TestResult {
    let ctx = Ctx::new(backend, 60).await?;
    // Another key under the log's own origin, a tree of its own.
    let origin = ctx.deployment.spec().origin.clone();
    let (other, _) = stele_core::note::Signer::generate(&origin).map_err(|e| anyhow!("{e}"))?;
    let forged = other
        .sign_checkpoint(&stele_core::checkpoint::Checkpoint::new(
            origin,
            5,
            stele_core::Hash([7; 32]),
        ))
        .map_err(|e| anyhow!("{e}"))?;
    ctx.bucket
        .put(&Ctx::key("checkpoint"), PutPayload::from(forged.clone()))
        .await?;
    // Never ready (the alarm comes with the first round): only listening.
    let server = ctx.deployment.spawn("writer").await?;
    ctx.bulk(&server, "a", 300).await?;
    wait_metric(
        &server,
        "stele_publish_alarm",
        "",
        |v| v == 1.0,
        "no alarm for a checkpoint another key signed",
    )
    .await?;
    ensure!(
        ctx.bucket_checkpoint().await?.as_deref() == Some(forged.as_str()),
        "the bucket's checkpoint was replaced"
    );
    ensure!(
        listing(&*ctx.bucket).await?.len() == 1,
        "tiles were published beside a checkpoint this log did not sign"
    );
    let (status, body) = ctx.readyz(&server).await?;
    ensure!(
        status == 503 && body.contains("not a checkpoint this log signed"),
        "/readyz {status}: {body}"
    );
    ensure!(ctx.check(&server).await? == 300);
    Ok(())
}
