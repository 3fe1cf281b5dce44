//! A log with witnesses: three real `stele witness serve` processes (each
//! with its own key and SQLite state, as three agencies would run them)
//! and a 2-of-3 C2SP tlog-policy in the log's configuration.
//!
//! - `federation`: published checkpoints carry ≥ 2 valid cosignatures that
//!   `stele verify --policy` and `stele monitor --policy` accept; one
//!   witness down → publication continues; two down → publication stops,
//!   records still get log-signed receipts, `?wait=witnessed` and the
//!   receipt endpoint answer `503`, `/readyz` says why, the quorum metric is
//!   0; both back (same addresses) → publication resumes, each witness
//!   cosigning from the size it left off at (its monitoring read shows the
//!   new size).
//! - `rollback_and_fork`: the database restored to an older dump, and an
//!   empty database (the high-water mark gone with the old machine, both
//!   times), are refused because the witnesses already cosigned a larger
//!   tree; an empty database grown to
//!   a different tree of the witnessed size while the witnesses were away
//!   is refused by every witness (`409`) once they are back, never
//!   published, and the log stops writing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use stele_core::checkpoint::Checkpoint;
use stele_core::note::{open_checkpoint, Verifier};
use stele_core::policy::Policy;
use stele_core::receipt::Receipt;
use stele_core::witness::monitoring_path;
use stele_testkit::process::{
    command, free_port, run, run_async, Deployment, ServerProcess, WitnessProcess,
};
use stele_testkit::store::{Backend, TestStore};

use super::load::submitter;
use super::rollback::{refuses, restore, save, wipe};
use super::{LOG, ORIGIN, RECORD_TYPE};

use super::STOP;
/// The log's witnessing interval in these tests.
const INTERVAL_MS: u64 = 200;

/// Three witnesses on fixed loopback ports (so a restarted one keeps its
/// URL in the policy) and the policy naming them.
struct Witnesses {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    configs: Vec<PathBuf>,
    running: Vec<Option<WitnessProcess>>,
    policy_file: PathBuf,
    policy: Option<Policy>,
}

impl Witnesses {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("stele-fed-").tempdir()?;
        let policy_file = dir.path().join("federation.policy");
        Ok(Witnesses {
            dir,
            ports: Vec::new(),
            configs: Vec::new(),
            running: Vec::new(),
            policy_file,
            policy: None,
        })
    }

    /// The `[[logs]]` keys that give the log this policy.
    fn log_config(&self) -> String {
        format!(
            "witness_policy = {:?}\nwitness_interval_ms = {INTERVAL_MS}\nwitness_timeout_ms = 2000\n",
            self.policy_file.display().to_string()
        )
    }

    /// Makes the three witnesses' keys (with `stele witness keygen`) and
    /// configurations for the log `log_vkey`, writes the policy, and
    /// starts them.
    async fn create(&mut self, log_vkey: &str) -> Result<()> {
        let bin = stele_testkit::stele_bin!();
        let mut policy = format!("log {log_vkey}\n");
        for i in 0..3 {
            let name = format!("witness.stele.test/agency-{i}");
            let key = self.dir.path().join(format!("w{i}.skey"));
            let key_arg = key.display().to_string();
            let out = run_async(
                command(
                    &bin,
                    &["witness", "keygen", "--name", &name, "--out", &key_arg],
                ),
                Duration::from_secs(30),
            )
            .await?
            .ok()?;
            let vkey = out.trim().to_string();
            let port = free_port()?;
            let config = self.dir.path().join(format!("w{i}.toml"));
            std::fs::write(
                &config,
                format!(
                    "key_file = {key_arg:?}\ndatabase = {:?}\n\n[[logs]]\norigin = {ORIGIN:?}\nvkey = {log_vkey:?}\n",
                    self.dir.path().join(format!("w{i}.db")).display().to_string()
                ),
            )?;
            policy.push_str(&format!(
                "witness agency-{i} {vkey} http://127.0.0.1:{port}\n"
            ));
            self.ports.push(port);
            self.configs.push(config);
            self.running.push(None);
        }
        policy.push_str("group two-of-three 2 agency-0 agency-1 agency-2\nquorum two-of-three\n");
        std::fs::write(&self.policy_file, &policy)?;
        self.policy = Some(Policy::parse(policy.as_bytes()).map_err(|e| anyhow::anyhow!("{e:?}"))?);
        for i in 0..3 {
            self.start(i).await?;
        }
        Ok(())
    }

    async fn start(&mut self, i: usize) -> Result<()> {
        let p = WitnessProcess::start(
            &stele_testkit::stele_bin!(),
            &self.configs[i],
            self.dir.path(),
            &format!("127.0.0.1:{}", self.ports[i]),
            &[],
        )
        .await
        .with_context(|| format!("starting witness {i}"))?;
        self.running[i] = Some(p);
        Ok(())
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.running[i].take() {
            p.kill9();
        }
    }

    fn policy(&self) -> &Policy {
        self.policy.as_ref().expect("created")
    }

    /// The checkpoint witness `i` last cosigned for the log (its
    /// monitoring read), opened with the log's key.
    async fn cosigned(&self, i: usize, log: &Verifier) -> Result<Checkpoint> {
        let url = format!(
            "http://127.0.0.1:{}{}",
            self.ports[i],
            monitoring_path(ORIGIN)
        );
        let r = reqwest::get(&url).await?;
        ensure!(r.status() == 200, "{url}: {}", r.status());
        let note = r.text().await?;
        Ok(open_checkpoint(&note, log)?)
    }
}

fn spec(w: &Witnesses) -> stele_testkit::process::DeploymentSpec {
    let mut spec = super::spec();
    spec.log_config = w.log_config();
    spec
}

/// What a `POST records` answered.
struct Answer {
    status: u16,
    kind: String,
    body: String,
}

async fn post(server: &ServerProcess, token: &str, subject: &str, wait: bool) -> Result<Answer> {
    let http = submitter(token, Duration::from_secs(30))?;
    let url = format!(
        "{}/logs/{LOG}/records{}",
        server.base_url(),
        if wait { "?wait=witnessed" } else { "" }
    );
    let r = http
        .post(&url)
        .json(&serde_json::json!({"type": RECORD_TYPE, "subject": subject}))
        .send()
        .await?;
    Ok(Answer {
        status: r.status().as_u16(),
        kind: r
            .headers()
            .get("stele-receipt-kind")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: r.text().await?,
    })
}

/// Submits `n` records waiting for witnessed receipts; checks each one
/// under the policy; returns the last.
async fn submit_witnessed(
    server: &ServerProcess,
    token: &str,
    policy: &Policy,
    prefix: &str,
    n: usize,
) -> Result<Receipt> {
    let mut last = None;
    for i in 0..n {
        let a = post(server, token, &format!("{prefix}-{i}"), true).await?;
        ensure!(
            a.status == 201 && a.kind == "witnessed",
            "{prefix}-{i} with wait=witnessed: {} [{}] {}",
            a.status,
            a.kind,
            a.body
        );
        let receipt: Receipt = serde_json::from_str(&a.body)?;
        let w = policy
            .verify(&receipt.checkpoint)
            .map_err(|e| anyhow::anyhow!("{prefix}-{i}: its checkpoint fails the policy: {e}"))?;
        ensure!(
            w.cosignatures.len() >= 2 && w.checkpoint.size > receipt.index,
            "{prefix}-{i}: {} cosignatures, size {} for index {}",
            w.cosignatures.len(),
            w.checkpoint.size,
            receipt.index
        );
        last = Some(receipt);
    }
    last.context("n > 0")
}

async fn published(server: &ServerProcess) -> Result<(u16, String)> {
    let r = reqwest::get(format!("{}/logs/{LOG}/checkpoint", server.base_url())).await?;
    Ok((r.status().as_u16(), r.text().await?))
}

async fn readyz(server: &ServerProcess) -> Result<(u16, String)> {
    let r = reqwest::get(format!("{}/readyz", server.base_url())).await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// Polls until `f` holds, for at most `limit`.
async fn until<F, Fut>(limit: Duration, what: &str, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match f().await? {
            None => return Ok(()),
            Some(last) => last,
        };
        if Instant::now() >= deadline {
            bail!("{what} did not happen within {limit:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stele_cli(args: &[&str]) -> Result<(bool, String)> {
    let out = run(command(&stele_testkit::stele_bin!(), args))?;
    Ok((out.code == 0, out.show()))
}

pub async fn federation(backend: Backend) -> Result<()> {
    let mut w = Witnesses::new()?;
    let store = TestStore::new(backend).await?;
    let deployment = Deployment::on_store(&stele_testkit::stele_bin!(), &store, spec(&w)).await?;
    let log_key = Verifier::from_vkey(&deployment.vkey)?;
    w.create(&deployment.vkey).await?;
    let mut server = deployment.start("writer").await?;
    let result = federation_steps(&mut w, &deployment, &server, &log_key).await;
    server.terminate(STOP).await?;
    result.with_context(|| format!("server output:\n{}", server.output()))
}

async fn federation_steps(
    w: &mut Witnesses,
    deployment: &Deployment,
    server: &ServerProcess,
    log_key: &Verifier,
) -> Result<()> {
    let token = &deployment.token;
    let policy = w.policy().clone();
    let receipt = submit_witnessed(server, token, &policy, "all-up", 5).await?;

    // The published checkpoint and the pinned policy, as a verifier sees them.
    let (status, note) = published(server).await?;
    ensure!(status == 200, "checkpoint: {status} {note}");
    let witnessed = policy.verify(&note)?;
    ensure!(witnessed.cosignatures.len() >= 2, "{note}");
    let served_policy = reqwest::get(format!("{}/logs/{LOG}/witness-policy", server.base_url()))
        .await?
        .text()
        .await?;
    ensure!(
        served_policy == std::fs::read_to_string(&w.policy_file)?,
        "GET witness-policy serves another file: {served_policy}"
    );
    let receipt_file = w.dir.path().join("receipt.json");
    std::fs::write(&receipt_file, serde_json::to_string(&receipt)?)?;
    let policy_arg = w.policy_file.display().to_string();
    let log_url = format!("{}/logs/{LOG}", server.base_url());
    let receipt_arg = receipt_file.display().to_string();
    let (ok, out) = stele_cli(&[
        "verify",
        &receipt_arg,
        "--policy",
        &policy_arg,
        "--online",
        &log_url,
    ])?;
    ensure!(
        ok && out.contains("witness quorum") && out.contains("VERIFIED"),
        "stele verify --policy: {out}"
    );
    // A log-signed receipt does not pass --policy.
    let plain = post(server, token, "log-signed", false).await?;
    ensure!(
        plain.status == 201 && plain.kind == "log-signed",
        "{}",
        plain.body
    );
    let plain_file = w.dir.path().join("plain.json");
    std::fs::write(&plain_file, &plain.body)?;
    let (ok, out) = stele_cli(&[
        "verify",
        &plain_file.display().to_string(),
        "--policy",
        &policy_arg,
    ])?;
    ensure!(
        !ok && out.contains("FAILED at step \"witness quorum\""),
        "a log-signed receipt under --policy: {out}"
    );
    // `stele submit --witnessed` files a witnessed receipt.
    let token_file = w.dir.path().join("token");
    std::fs::write(&token_file, token)?;
    let record = w.dir.path().join("cli-record.json");
    std::fs::write(
        &record,
        format!("{{\"type\":\"{RECORD_TYPE}\",\"subject\":\"cli\"}}"),
    )?;
    let (ok, out) = stele_cli(&[
        "submit",
        "--log",
        &log_url,
        "--token-file",
        &token_file.display().to_string(),
        "--witnessed",
        &record.display().to_string(),
    ])?;
    ensure!(ok, "stele submit --witnessed: {out}");
    let filed: Receipt = serde_json::from_slice(&std::fs::read(
        w.dir.path().join("cli-record.receipt.json"),
    )?)?;
    policy.verify(&filed.checkpoint).map_err(|e| {
        anyhow::anyhow!("stele submit --witnessed filed a receipt without the quorum: {e}")
    })?;
    let (ok, out) = stele_cli(&["monitor", &log_url, "--policy", &policy_arg, "--once"])?;
    ensure!(
        ok && out.contains("cosigned by"),
        "stele monitor --policy: {out}"
    );

    // One witness down: 2 of 3 still make the quorum.
    w.kill9(0);
    let before = w.cosigned(0, log_key).await;
    ensure!(before.is_err(), "witness 0 still answers");
    submit_witnessed(server, token, &policy, "one-down", 3).await?;
    let (status, body) = readyz(server).await?;
    ensure!(
        status == 200,
        "readyz with one witness down: {status} {body}"
    );

    // Two down: records still integrate, publication stops.
    w.kill9(1);
    let (_, stuck) = published(server).await?;
    let stuck = open_checkpoint(&stuck, log_key)?;
    let mut last_index = 0;
    for i in 0..3 {
        let a = post(server, token, &format!("two-down-{i}"), false).await?;
        ensure!(
            a.status == 201 && a.kind == "log-signed",
            "two down, plain submission: {} [{}] {}",
            a.status,
            a.kind,
            a.body
        );
        last_index = serde_json::from_str::<Receipt>(&a.body)?.index;
    }
    until(
        Duration::from_secs(20),
        "readyz saying publication stopped",
        || async {
            let (status, body) = readyz(server).await?;
            Ok(
                (!(status == 503 && body.contains("checkpoint publication stopped")))
                    .then(|| format!("{status} {body}")),
            )
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(INTERVAL_MS * 3)).await;
    let (status, note) = published(server).await?;
    ensure!(status == 200, "{status} {note}");
    let now = open_checkpoint(&note, log_key)?;
    ensure!(
        now.size == stuck.size && now.root == stuck.root,
        "published moved to {} without a quorum",
        now.size
    );
    let a = post(server, token, "two-down-wait", true).await?;
    ensure!(
        a.status == 503 && a.body.contains("reached the witness quorum"),
        "wait=witnessed with two witnesses down: {} {}",
        a.status,
        a.body
    );
    let r = reqwest::get(format!(
        "{}/logs/{LOG}/entries/{last_index}/receipt",
        server.base_url()
    ))
    .await?;
    ensure!(r.status() == 503, "receipt endpoint: {}", r.status());
    let metrics = reqwest::get(format!("{}/metrics", server.base_url()))
        .await?
        .text()
        .await?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("stele_witness_quorum{") && l.ends_with(" 0")),
        "witness_quorum metric is not 0:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("witness"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Back one at a time, at the same addresses: publication resumes with
    // the first (2 of 3), each witness cosigning from the size it left off
    // at; the second, back after that checkpoint was published, is still
    // asked for it.
    w.start(0).await?;
    until_published_beyond(
        server,
        log_key,
        last_index,
        "a witnessed checkpoint covering every entry",
    )
    .await?;
    // A follower (a second process on the same storage) serves what the
    // writer stored, including the cosignature that arrives next for a
    // checkpoint already published at this size.
    let mut follower = deployment.spawn("follower").await?;
    let result = late_cosignature_steps(w, server, &follower, log_key, &policy, last_index).await;
    follower.terminate(STOP).await?;
    result?;
    let r = reqwest::get(format!(
        "{}/logs/{LOG}/entries/{last_index}/receipt",
        server.base_url()
    ))
    .await?;
    ensure!(
        r.status() == 200,
        "receipt endpoint after recovery: {}",
        r.status()
    );
    let kind = r
        .headers()
        .get("stele-receipt-kind")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(kind == "witnessed", "receipt kind {kind}");
    let upgraded: Receipt = serde_json::from_str(&r.text().await?)?;
    upgraded.verify(log_key)?;
    policy.verify(&upgraded.checkpoint)?;
    until(Duration::from_secs(10), "readyz 200 again", || async {
        let (status, body) = readyz(server).await?;
        Ok((status != 200).then(|| format!("{status} {body}")))
    })
    .await?;
    Ok(())
}

/// Waits (up to 20 s) until `server` publishes a checkpoint signed by the
/// log that covers `last_index`.
async fn until_published_beyond(
    server: &ServerProcess,
    log_key: &Verifier,
    last_index: u64,
    what: &str,
) -> Result<()> {
    until(Duration::from_secs(20), what, || async {
        let (status, note) = published(server).await?;
        if status != 200 {
            return Ok(Some(format!("{status} {note}")));
        }
        let cp = open_checkpoint(&note, log_key)?;
        Ok((cp.size <= last_index).then(|| format!("size {}", cp.size)))
    })
    .await
}

/// Witness 1 comes back after the checkpoint it missed was published: it
/// is asked again, every witness cosigns beyond `last_index`, and the
/// published checkpoint — on the writer and then on the follower, at the
/// same size — carries all three cosignatures.
async fn late_cosignature_steps(
    w: &mut Witnesses,
    server: &ServerProcess,
    follower: &ServerProcess,
    log_key: &Verifier,
    policy: &Policy,
    last_index: u64,
) -> Result<()> {
    until_published_beyond(
        follower,
        log_key,
        last_index,
        "the follower's witnessed checkpoint",
    )
    .await?;
    w.start(1).await?;
    for i in 0..3 {
        until(
            Duration::from_secs(10),
            &format!("witness {i} cosigning beyond index {last_index}"),
            || async {
                let cp = w.cosigned(i, log_key).await?;
                Ok((cp.size <= last_index).then(|| format!("cosigned up to {}", cp.size)))
            },
        )
        .await?;
    }
    for (who, s) in [("writer", server), ("follower", follower)] {
        until(
            Duration::from_secs(10),
            &format!("the {who}'s published checkpoint carrying all three cosignatures"),
            || async {
                let (_, note) = published(s).await?;
                let n = policy.verify(&note)?.cosignatures.len();
                Ok((n != 3).then(|| format!("{n} cosignatures")))
            },
        )
        .await?;
    }
    Ok(())
}

pub async fn rollback_and_fork(backend: Backend) -> Result<()> {
    let mut w = Witnesses::new()?;
    let store = TestStore::new(backend).await?;
    let deployment = Deployment::on_store(&stele_testkit::stele_bin!(), &store, spec(&w)).await?;
    let log_key = Verifier::from_vkey(&deployment.vkey)?;
    w.create(&deployment.vkey).await?;
    let policy = w.policy().clone();
    let backup = tempfile::tempdir()?;
    let mark = deployment.dir().join("log.key.mark");

    let mut first = deployment.start("first").await?;
    submit_witnessed(&first, &deployment.token, &policy, "before-backup", 5).await?;
    first.terminate(STOP).await?;
    save(&store, backup.path())?;
    let mut second = deployment.start("second").await?;
    let last = submit_witnessed(&second, &deployment.token, &policy, "after-backup", 5).await?;
    second.terminate(STOP).await?;
    let witnessed_size = last.index + 1;
    let witnessed_root = w.cosigned(0, &log_key).await?.root;

    // The dump restored, and the mark lost with the machine it was on:
    // only the witnesses remember.
    restore(&store, backup.path())?;
    remove(&mark)?;
    let mut restored = deployment.spawn("restored").await?;
    let result = refuses(
        &restored,
        Some(&deployment.token),
        "the database is behind what the witnesses saw",
    )
    .await;
    restored.terminate(STOP).await?;
    result.with_context(|| format!("restored:\n{}", restored.output()))?;

    // An empty database (the wrong one, or a lost one) with the used key
    // and no mark: its size-0 checkpoint is behind the witnesses too.
    wipe(&store)?;
    remove(&mark)?;
    let mut empty = deployment.spawn("empty").await?;
    let result = refuses(
        &empty,
        None,
        "the database is behind what the witnesses saw",
    )
    .await;
    empty.terminate(STOP).await?;
    result.with_context(|| format!("empty:\n{}", empty.output()))?;

    // A fork: an empty database and no mark, grown while the witnesses
    // were away to a different tree of the witnessed size.
    for i in 0..3 {
        w.kill9(i);
    }
    wipe(&store)?;
    remove(&mark)?;
    let token = deployment.add_agency("forker", &["faults.*"]).await?;
    let mut forked = deployment.spawn("forked").await?;
    let result = fork_steps(&mut w, &forked, &token, witnessed_size).await;
    forked.terminate(STOP).await?;
    result.with_context(|| format!("forked:\n{}", forked.output()))?;
    for i in 0..3 {
        let cp = w.cosigned(i, &log_key).await?;
        ensure!(
            cp.size == witnessed_size && cp.root == witnessed_root,
            "witness {i} moved to size {} root {}",
            cp.size,
            cp.root
        );
    }
    Ok(())
}

async fn fork_steps(
    w: &mut Witnesses,
    forked: &ServerProcess,
    token: &str,
    witnessed_size: u64,
) -> Result<()> {
    stele_testkit::process::wait_for(
        &format!("{}/healthz", forked.base_url()),
        Duration::from_secs(60),
    )
    .await?;
    // The log is empty now, with its size-0 checkpoint signed.
    let mut n = 0;
    while n < witnessed_size {
        let a = post(forked, token, &format!("fork-{n}"), false).await?;
        ensure!(a.status == 201, "fork-{n}: {} {}", a.status, a.body);
        n = serde_json::from_str::<Receipt>(&a.body)?.index + 1;
    }
    let (status, body) = published(forked).await?;
    ensure!(
        status == 503,
        "a checkpoint published with no witness: {status} {body}"
    );
    for i in 0..3 {
        w.start(i).await?;
    }
    refuses(forked, Some(token), "a fork; refusing to sign").await?;
    let (status, body) = published(forked).await?;
    ensure!(
        status == 503,
        "the forked tree was published: {status} {body}"
    );
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}
