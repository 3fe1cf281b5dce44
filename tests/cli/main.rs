//! `stele submit`, `stele verify`, `stele monitor` and `stele mirror` against a running
//! `stele serve` (SQLite, started from a deployment made with `stele keygen`
//! and `stele agency add`) and against small fake logs served by the test
//! itself (forged, rolled-back, inconsistent and split-view checkpoints,
//! tampered tiles). After the steps that write to the real server, the
//! invariant checker verifies its log, with every receipt `stele submit`
//! filed.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use stele_core::receipt::Receipt;
use stele_testkit::checker::{HttpView, LogChecker};
use stele_testkit::harness::{Needs, Suite, TestResult};
use stele_testkit::process::{command, run, Deployment, DeploymentSpec, Output, ServerProcess};
use stele_testkit::store::{Backend, TestStore};

mod audit;
mod fake;
mod mirror;
mod monitor;
mod types;
mod verify;

/// A test of the shared server.
type ServerTest = fn(&Server) -> TestResult;
/// A test that needs no shared server.
type Test = fn() -> TestResult;

/// `Ok` if `cond`, else the error `msg()`.
fn ensure(cond: bool, msg: impl FnOnce() -> String) -> TestResult {
    if cond {
        Ok(())
    } else {
        Err(anyhow!(msg()))
    }
}

/// Runs `stele args...` to completion.
fn stele(args: &[&str]) -> Output {
    run(command(&stele_testkit::stele_bin!(), args)).expect("running stele")
}

/// `stele verify` must fail, and name `step` as the failed one.
fn expect_failed_step(out: &Output, step: &str) -> TestResult {
    ensure(out.code != 0, || {
        format!(
            "verify succeeded, expected failure at {step}\n{}",
            out.show()
        )
    })?;
    let want = format!("FAILED at step \"{step}\"");
    ensure(out.stdout.contains(&want), || {
        format!("expected {want:?}\n{}", out.show())
    })?;
    ensure(out.stdout.contains(&format!("✗ {step}:")), || {
        format!("no ✗ line for {step}\n{}", out.show())
    })
}

/// `stele monitor URL --vkey K --state STATE --once EXTRA...`
fn monitor(url: &str, vkey: &str, state: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "monitor",
        url,
        "--vkey",
        vkey,
        "--state",
        state.to_str().unwrap(),
        "--once",
    ];
    args.extend_from_slice(extra);
    stele(&args)
}

fn expect_alarm(out: &Output, what: &str) -> TestResult {
    ensure(out.code == 1, || {
        format!("expected exit 1 (alarm: {what})\n{}", out.show())
    })?;
    ensure(
        out.stdout.contains("ALARM") && out.stdout.contains(what),
        || format!("expected an ALARM about {what:?}\n{}", out.show()),
    )
}

fn expect_fine(out: &Output) -> TestResult {
    ensure(out.code == 0 && out.stdout.contains('✓'), || {
        format!("expected a clean check\n{}", out.show())
    })
}

/// A `stele serve` process and what the tests need of it.
pub struct Server {
    process: Mutex<Option<ServerProcess>>,
    _deployment: Deployment,
    _store: TestStore,
    pub origin: String,
    /// The log's base URL.
    pub url: String,
    pub vkey: String,
    pub token: String,
    http: reqwest::blocking::Client,
    pub checker: Mutex<LogChecker<HttpView>>,
    rt: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        // One runtime for the server's lifetime: the checker's clients and
        // its storage pool belong to it.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (store, deployment, process, checker) = rt.block_on(async {
            let store = TestStore::new(Backend::Sqlite).await?;
            let spec = DeploymentSpec {
                log: "default".into(),
                origin: "cli.stele.test/default".into(),
                agency: "cli-test".into(),
                types: vec![],
                accept_unregistered: true,
                env: vec![],
                config: String::new(),
                log_config: String::new(),
            };
            let deployment =
                Deployment::on_store(&stele_testkit::stele_bin!(), &store, spec).await?;
            let process = deployment.start("stele serve").await?;
            let checker = deployment.checker(&process).await?;
            anyhow::Ok((store, deployment, process, checker))
        })?;
        Ok(Server {
            origin: deployment.spec().origin.clone(),
            url: checker.view().log_url().to_string(),
            vkey: deployment.vkey.clone(),
            token: deployment.token.clone(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()?,
            checker: Mutex::new(checker),
            process: Mutex::new(Some(process)),
            _deployment: deployment,
            _store: store,
            rt,
        })
    }

    fn stop(&self) {
        drop(self.process.lock().unwrap().take());
    }

    /// The checker's full check of the log; returns its size.
    fn check(&self) -> anyhow::Result<u64> {
        let mut checker = self.checker.lock().unwrap();
        let report = self.rt.block_on(checker.check_all())?;
        Ok(report.checkpoint.size)
    }

    /// Appends records through the bulk endpoint, 1,000 per request.
    fn bulk(&self, tag: &str, n: usize) -> TestResult {
        let mut done = 0;
        while done < n {
            let k = (n - done).min(1000);
            let records: Vec<Value> = (done..done + k)
                .map(|i| json!({"type": "test.bulk", "subject": format!("{tag}-{i}")}))
                .collect();
            let resp = self
                .http
                .post(format!("{}/records/bulk", self.url))
                .bearer_auth(&self.token)
                .json(&json!({ "records": records }))
                .send()
                .context("bulk")?;
            let status = resp.status();
            ensure(status.is_success(), || {
                format!("bulk: HTTP {status}: {}", resp.text().unwrap_or_default())
            })?;
            done += k;
        }
        Ok(())
    }

    /// Submits a record with `stele submit`; returns the receipt path. The
    /// checker keeps the receipt.
    fn submit(&self, dir: &Path, stem: &str, subject: &str) -> anyhow::Result<PathBuf> {
        let file = dir.join(format!("{stem}.json"));
        std::fs::write(
            &file,
            json!({"type": "test.record", "subject": subject}).to_string(),
        )?;
        let out = stele(&[
            "submit",
            "--log",
            &self.url,
            "--token",
            &self.token,
            file.to_str().unwrap(),
        ]);
        ensure(out.code == 0, || format!("submit failed\n{}", out.show()))?;
        let receipt = dir.join(format!("{stem}.receipt.json"));
        ensure(receipt.exists(), || {
            format!("{} was not written\n{}", receipt.display(), out.show())
        })?;
        ensure(dir.join(format!("{stem}.tlog-proof")).exists(), || {
            "no .tlog-proof written".into()
        })?;
        let filed: Receipt = serde_json::from_str(&std::fs::read_to_string(&receipt)?)?;
        self.checker.lock().unwrap().add_receipt(&filed)?;
        Ok(receipt)
    }
}

/// The server shared by the tests that need one, started by the first.
static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
/// The shared server's tests take turns: the checker wants a quiet log.
static TURN: Mutex<()> = Mutex::new(());

fn with_server(suite: &mut Suite, name: &str, test: ServerTest) {
    suite.add(name, Needs::Nothing, move || {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        match SERVER.get_or_init(|| Server::start().map_err(|e| format!("{e:#}"))) {
            Ok(s) => {
                test(s)?;
                s.check().map(|_| ())
            }
            Err(e) => Err(anyhow!("could not start stele serve: {e}")),
        }
    });
}

fn main() {
    let mut suite = Suite::new();
    for &(name, test) in verify::TESTS.iter().chain(monitor::WITH_SERVER) {
        with_server(&mut suite, name, test);
    }
    for &(name, test) in monitor::TESTS
        .iter()
        .chain(audit::TESTS)
        .chain(mirror::TESTS)
        .chain(types::TESTS)
    {
        suite.add(name, Needs::Nothing, test);
    }
    let conclusion = suite.conclude();
    // Statics are not dropped: stop the shared server by hand.
    if let Some(Ok(s)) = SERVER.get() {
        s.stop();
    }
    conclusion.exit();
}
