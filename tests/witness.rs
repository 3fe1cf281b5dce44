//! `stele witness`, end to end: real `stele witness serve` processes on
//! loopback, on SQLite and on a fresh PostgreSQL database per test.
//!
//! - conformance: every status of C2SP tlog-witness with its exact body and
//!   content type, and the monitoring read;
//! - durability: `kill -9` after the state is written and before the
//!   answer (`STELE_WITNESS_TEST_PAUSE_AFTER_WRITE_MS` holds the process in
//!   that window), then a restart that remembers it;
//! - atomicity: concurrent `add-checkpoint`s from one old size, in one
//!   process and across two processes on one database — exactly one is
//!   cosigned, the others get `409` naming the winner's size; and the
//!   store's compare-and-set contract directly;
//! - cross-check: cosignatures, a witnessed checkpoint and a request body
//!   against `aics-tlog`/`aics-witness` (an independent Python
//!   implementation, `tests/crosscheck/requirements.txt`). Set
//!   `STELE_CROSSCHECK_PYTHON` to a Python that has them (CI does); without
//!   one the test is reported as ignored, and with
//!   `STELE_REQUIRE_CROSSCHECK=1` it fails instead.
//!
//! PostgreSQL tests follow `stele_testkit::pg`: ignored (and printed) when
//! the server is unreachable, failed when `STELE_REQUIRE_POSTGRES=1`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use libtest_mimic::{Arguments, Failed, Trial};
use stele::witness::postgres::PostgresWitnessStore;
use stele::witness::sqlite::SqliteWitnessStore;
use stele::witness::{StoredCheckpoint, WitnessStore, TEST_PAUSE_ENV};
use stele_core::checkpoint::Checkpoint;
use stele_core::cosignature::{verify_cosignatures, CosignatureVerifier, Cosigner};
use stele_core::merkle::{prove_consistency, root_of};
use stele_core::note::{open_checkpoint, Signer, Verifier};
use stele_core::witness::{
    monitoring_path, parse_response, verify_cosignatures_response, AddCheckpointRequest,
    AddCheckpointResponse, WitnessedState, MAX_REQUEST_BYTES,
};
use stele_core::{leaf_hash, Hash, EMPTY_ROOT};
use stele_testkit::pg::{fresh_database, pg_policy, TestDb};
use stele_testkit::process::WitnessProcess;

const LOG: &str = "example.com/log";
/// Configured, but never sent a checkpoint.
const QUIET_LOG: &str = "example.com/quiet";
const WITNESS: &str = "witness.example/w1";

fn bin() -> String {
    std::env::var("STELE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stele").to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

type TestFn = fn(Backend) -> Pin<Box<dyn Future<Output = Result<()>>>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), (|b| Box::pin($name(b))) as TestFn)),*]
    };
}

const TESTS: &[(&str, TestFn)] = tests![
    conformance_every_status_and_body,
    state_survives_kill9_between_write_and_reply,
    concurrent_requests_from_one_old_size,
    two_processes_on_one_database,
    store_compare_and_set_contract,
];

fn main() {
    let args = Arguments::from_args();
    let policy = pg_policy();
    let pg_names: Vec<String> = TESTS
        .iter()
        .map(|(n, _)| format!("postgres::{n}"))
        .collect();
    policy.announce(&pg_names);
    let mut trials = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for &(name, f) in TESTS {
            let is_pg = backend == Backend::Postgres;
            let policy = policy.clone();
            let skip = is_pg && policy.is_skip();
            let prefix = if is_pg { "postgres" } else { "sqlite" };
            trials.push(
                Trial::test(format!("{prefix}::{name}"), move || {
                    if is_pg {
                        policy.check()?;
                    }
                    block_on(f(backend))
                })
                .with_ignored_flag(skip),
            );
        }
    }
    let python = crosscheck_python();
    if let Err(why) = &python {
        eprintln!("{why}");
    }
    let skip = python.is_err() && std::env::var("STELE_REQUIRE_CROSSCHECK").as_deref() != Ok("1");
    trials.push(
        Trial::test("crosscheck::cosignatures_against_aics_tlog", move || {
            let python = python.clone().map_err(Failed::from)?;
            block_on(cosignatures_against_aics_tlog(python))
        })
        .with_ignored_flag(skip),
    );
    libtest_mimic::run(&args, trials).exit();
}

fn block_on(f: impl Future<Output = Result<()>>) -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?;
    rt.block_on(async move {
        match tokio::time::timeout(Duration::from_secs(180), f).await {
            Ok(r) => r.map_err(|e| Failed::from(format!("{e:#}"))),
            Err(_) => Err(Failed::from("timed out")),
        }
    })
}

// ---------------------------------------------------------------------------
// A log, a witness configuration and the witness process
// ---------------------------------------------------------------------------

struct Setup {
    dir: tempfile::TempDir,
    db: Option<TestDb>,
    log: Signer,
    quiet: Signer,
    witness_key: CosignatureVerifier,
    leaves: Vec<Hash>,
    config: PathBuf,
}

impl Setup {
    async fn new(backend: Backend) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("stele-witness-")
            .tempdir()?;
        // The witness key through the command line, as an operator makes it.
        let key_file = dir.path().join("witness.skey");
        let out = Command::new(bin())
            .args(["witness", "keygen", "--name", WITNESS, "--out"])
            .arg(&key_file)
            .output()?;
        ensure!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vkey = String::from_utf8(out.stdout)?.trim().to_string();
        let witness_key = CosignatureVerifier::from_vkey(&vkey)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_file)?.permissions().mode() & 0o777;
            ensure!(mode == 0o600, "key file mode {mode:o}");
        }
        let log = Signer::generate(LOG)?.0;
        let quiet = Signer::generate(QUIET_LOG)?.0;
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_database().await?),
        };
        let storage = match &db {
            None => "database = \"state/witness.db\"".to_string(),
            Some(db) => format!("database_url = \"{}\"", db.url),
        };
        let config = dir.path().join("witness.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nkey_file = \"witness.skey\"\n{storage}\n\n\
                 [[logs]]\norigin = \"{LOG}\"\nvkey = \"{}\"\n\n\
                 [[logs]]\norigin = \"{QUIET_LOG}\"\nvkey = \"{}\"\n",
                log.vkey(),
                quiet.vkey()
            ),
        )?;
        let leaves = (0..256u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        Ok(Setup {
            dir,
            db,
            log,
            quiet,
            witness_key,
            leaves,
            config,
        })
    }

    async fn start(&self, env: &[(&str, &str)]) -> Result<WitnessProcess> {
        WitnessProcess::start(
            Path::new(&bin()),
            &self.config,
            self.dir.path(),
            "127.0.0.1:0",
            env,
        )
        .await
    }

    fn root(&self, size: u64) -> Hash {
        root_of(&self.leaves[..size as usize])
    }

    fn note(&self, size: u64) -> String {
        self.log
            .sign_checkpoint(&Checkpoint::new(LOG, size, self.root(size)))
            .unwrap()
    }

    /// A valid request from `old` to `size` (the proof from `old`).
    fn request(&self, old: u64, size: u64) -> String {
        let proof = if old == 0 {
            vec![]
        } else {
            prove_consistency(old, size, &self.leaves[..size as usize]).unwrap()
        };
        AddCheckpointRequest::new(old, proof, self.note(size)).encode()
    }

    async fn finish(self) -> Result<()> {
        if let Some(db) = self.db {
            db.drop_db().await?;
        }
        Ok(())
    }
}

/// Status, content type and body of a `POST /add-checkpoint`.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}] {:?}", self.status, self.content_type, self.body)
    }
}

async fn post(
    client: &reqwest::Client,
    w: &WitnessProcess,
    body: impl Into<Vec<u8>>,
) -> Result<Answer> {
    let r = client
        .post(format!("{}/add-checkpoint", w.url()))
        .body(body.into())
        .send()
        .await?;
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = r.text().await?;
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

fn expect(a: &Answer, status: u16, what: &str) -> Result<()> {
    ensure!(a.status == status, "{what}: expected {status}, got {a:?}");
    Ok(())
}

fn expect_size_conflict(a: &Answer, size: u64, what: &str) -> Result<()> {
    ensure!(
        a.status == 409 && a.content_type == "text/x.tlog.size" && a.body == format!("{size}\n"),
        "{what}: expected 409 text/x.tlog.size {size:?}, got {a:?}"
    );
    Ok(())
}

/// A 200 holds exactly one line: this witness's valid cosignature over the
/// checkpoint that was sent.
fn expect_cosigned(s: &Setup, a: &Answer, size: u64, what: &str) -> Result<u64> {
    ensure!(
        a.status == 200 && a.content_type.starts_with("text/plain"),
        "{what}: expected 200, got {a:?}"
    );
    ensure!(
        a.body.starts_with(&format!("— {WITNESS} "))
            && a.body.matches('\n').count() == 1
            && a.body.ends_with('\n'),
        "{what}: the body is not one cosignature line: {:?}",
        a.body
    );
    let cos = verify_cosignatures_response(&s.note(size), &a.body, &s.witness_key)?;
    ensure!(
        cos.len() == 1,
        "{what}: no valid cosignature in {:?}",
        a.body
    );
    Ok(cos[0].timestamp)
}

async fn monitor(
    client: &reqwest::Client,
    w: &WitnessProcess,
    origin: &str,
) -> Result<(u16, String)> {
    let r = client
        .get(format!("{}{}", w.url(), monitoring_path(origin)))
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// The monitoring read: the log's signature and the witness's cosignature
/// both verify, at `size`.
async fn expect_monitored(
    s: &Setup,
    client: &reqwest::Client,
    w: &WitnessProcess,
    size: u64,
) -> Result<String> {
    let (status, note) = monitor(client, w, LOG).await?;
    ensure!(status == 200, "monitoring read: {status} {note:?}");
    let log_key = Verifier::from_vkey(&s.log.vkey())?;
    let cp = open_checkpoint(&note, &log_key)?;
    ensure!(
        cp.size == size && cp.root == s.root(size),
        "monitored size {} != {size}",
        cp.size
    );
    let cos = verify_cosignatures(&note, std::slice::from_ref(&s.witness_key))?;
    ensure!(
        cos.len() == 1,
        "monitored checkpoint without the witness's cosignature: {note:?}"
    );
    Ok(note)
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

async fn conformance_every_status_and_body(backend: Backend) -> Result<()> {
    let s = Setup::new(backend).await?;
    let w = s.start(&[]).await?;
    let http = reqwest::Client::new();

    // Nothing cosigned yet: the monitoring read is 404, for a configured
    // log and for an unknown hash alike.
    ensure!(
        monitor(&http, &w, LOG).await?.0 == 404,
        "monitoring before any cosignature"
    );
    let r = http
        .get(format!("{}/{}/checkpoint", w.url(), "00".repeat(32)))
        .send()
        .await?;
    ensure!(r.status() == 404, "unknown origin hash: {}", r.status());

    // 400: not a request body; proof lines that are not hashes; too many.
    for (body, what) in [
        (b"hello".to_vec(), "garbage"),
        (
            format!("old 01\n\n{}", s.note(5)).into_bytes(),
            "leading zero",
        ),
        (
            format!("old 0\nnot-a-hash\n\n{}", s.note(5)).into_bytes(),
            "bad proof line",
        ),
        (
            format!(
                "old 0\n{}\n{}",
                format!("{}\n", s.leaves[0].to_base64()).repeat(64),
                s.note(5)
            )
            .into_bytes(),
            "64 proof lines",
        ),
        (
            format!("old 0\n\n{}", s.note(5).replace("— ", "- ")).into_bytes(),
            "not a signed note",
        ),
    ] {
        let a = post(&http, &w, body).await?;
        expect(&a, 400, what)?;
        ensure!(a.content_type.starts_with("text/plain"), "{what}: {a:?}");
    }
    // 413: over the body limit.
    let big = format!("old 0\n\n{}", "a".repeat(MAX_REQUEST_BYTES + 1));
    expect(&post(&http, &w, big).await?, 413, "oversized body")?;
    // 404: an origin the witness does not witness (validly signed).
    let stranger = Signer::generate("example.com/stranger")?.0;
    let note =
        stranger.sign_checkpoint(&Checkpoint::new("example.com/stranger", 1, s.leaves[0]))?;
    expect(
        &post(
            &http,
            &w,
            AddCheckpointRequest::new(0, vec![], note).encode(),
        )
        .await?,
        404,
        "unknown origin",
    )?;
    // 403: the log's name, another key; and the log's key over other text.
    let impostor = Signer::generate(LOG)?.0;
    let note = impostor.sign_checkpoint(&Checkpoint::new(LOG, 5, s.root(5)))?;
    expect(
        &post(
            &http,
            &w,
            AddCheckpointRequest::new(0, vec![], note).encode(),
        )
        .await?,
        403,
        "impostor key",
    )?;
    let tampered = s.note(5).replacen("\n5\n", "\n6\n", 1);
    expect(
        &post(
            &http,
            &w,
            AddCheckpointRequest::new(0, vec![], tampered).encode(),
        )
        .await?,
        403,
        "tampered",
    )?;
    // 400: old size above the checkpoint's size.
    expect(
        &post(
            &http,
            &w,
            AddCheckpointRequest::new(6, vec![], s.note(5)).encode(),
        )
        .await?,
        400,
        "old > size",
    )?;
    // 409: a witness that never cosigned has size 0.
    expect_size_conflict(
        &post(&http, &w, s.request(3, 5)).await?,
        0,
        "old 3 on a fresh witness",
    )?;
    // 422: size 0 with a root that is not the empty tree's.
    let bad_zero = s
        .quiet
        .sign_checkpoint(&Checkpoint::new(QUIET_LOG, 0, s.leaves[0]))?;
    expect(
        &post(
            &http,
            &w,
            AddCheckpointRequest::new(0, vec![], bad_zero).encode(),
        )
        .await?,
        422,
        "size 0, wrong root",
    )?;
    // 422: a proof with old size 0.
    let mut req = AddCheckpointRequest::parse(s.request(0, 5).as_bytes())?;
    req.proof = vec![s.leaves[1]];
    expect(
        &post(&http, &w, req.encode()).await?,
        422,
        "proof with old 0",
    )?;

    // 200: the first checkpoint (trust on first use), then growth.
    let t1 = expect_cosigned(
        &s,
        &post(&http, &w, s.request(0, 5)).await?,
        5,
        "first checkpoint",
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    ensure!(
        t1.abs_diff(now) < 60,
        "cosignature time {t1} is not the clock's {now}"
    );
    expect_monitored(&s, &http, &w, 5).await?;
    // 409 with the size, for a stale old size either way.
    expect_size_conflict(&post(&http, &w, s.request(0, 8)).await?, 5, "old 0 after 5")?;
    expect_size_conflict(&post(&http, &w, s.request(3, 8)).await?, 5, "old 3 after 5")?;
    // 422: a proof that does not verify, and no proof at all.
    let mut req = AddCheckpointRequest::parse(s.request(5, 8).as_bytes())?;
    req.proof[0] = s.leaves[9];
    expect(&post(&http, &w, req.encode()).await?, 422, "wrong proof")?;
    req.proof.clear();
    expect(&post(&http, &w, req.encode()).await?, 422, "missing proof")?;
    // A fork: another tree of the same size (409, not text/x.tlog.size),
    // then of a larger size with its own proof (422). Never cosigned.
    let mut forked = s.leaves.clone();
    forked[1] = leaf_hash(b"rewritten history");
    let fork5 = s
        .log
        .sign_checkpoint(&Checkpoint::new(LOG, 5, root_of(&forked[..5])))?;
    let a = post(
        &http,
        &w,
        AddCheckpointRequest::new(5, vec![], fork5).encode(),
    )
    .await?;
    ensure!(
        a.status == 409 && a.content_type != "text/x.tlog.size",
        "fork at the same size: {a:?}"
    );
    ensure!(
        matches!(
            parse_response(a.status, Some(&a.content_type), a.body.as_bytes())?,
            AddCheckpointResponse::Refused { status: 409, .. }
        ),
        "a log would read the fork's 409 as a size"
    );
    let fork9 = s
        .log
        .sign_checkpoint(&Checkpoint::new(LOG, 9, root_of(&forked[..9])))?;
    let proof = prove_consistency(5, 9, &forked[..9])?;
    expect(
        &post(
            &http,
            &w,
            AddCheckpointRequest::new(5, proof, fork9).encode(),
        )
        .await?,
        422,
        "grown fork",
    )?;
    expect_monitored(&s, &http, &w, 5).await?;
    ensure!(
        w.output().contains("evidence"),
        "the fork was not logged as evidence"
    );
    // 200: consistent growth; the same checkpoint again; more growth.
    expect_cosigned(&s, &post(&http, &w, s.request(5, 8)).await?, 8, "5 -> 8")?;
    expect_cosigned(&s, &post(&http, &w, s.request(8, 8)).await?, 8, "8 again")?;
    expect_cosigned(
        &s,
        &post(&http, &w, s.request(8, 200)).await?,
        200,
        "8 -> 200",
    )?;
    let note = expect_monitored(&s, &http, &w, 200).await?;
    ensure!(
        note.starts_with(&s.note(200)),
        "the monitored note is not the log's note plus the cosignature"
    );
    // The other log is still at 0 and independent.
    ensure!(monitor(&http, &w, QUIET_LOG).await?.0 == 404, "quiet log");
    let zero = s
        .quiet
        .sign_checkpoint(&Checkpoint::new(QUIET_LOG, 0, EMPTY_ROOT))?;
    let a = post(
        &http,
        &w,
        AddCheckpointRequest::new(0, vec![], zero).encode(),
    )
    .await?;
    ensure!(a.status == 200, "size-0 checkpoint of the quiet log: {a:?}");
    drop(w);
    s.finish().await
}

async fn state_survives_kill9_between_write_and_reply(backend: Backend) -> Result<()> {
    let s = Setup::new(backend).await?;
    let http = reqwest::Client::new();
    {
        let w = s.start(&[]).await?;
        expect_cosigned(&s, &post(&http, &w, s.request(0, 5)).await?, 5, "first")?;
    }
    // Hold the witness between its durable write and its answer, and kill it there.
    let mut w = s.start(&[(TEST_PAUSE_ENV, "30000")]).await?;
    let pending = {
        let (http, url, body) = (http.clone(), w.url(), s.request(5, 9));
        tokio::spawn(async move {
            http.post(format!("{url}/add-checkpoint"))
                .body(body)
                .send()
                .await
        })
    };
    // The write is visible to the monitoring read before any answer left.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, note) = monitor(&http, &w, LOG).await?;
        if status == 200 && note.starts_with(&s.note(9)) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the write never landed: {}",
            w.output()
        );
        ensure!(
            !pending.is_finished(),
            "answered before the pause: {}",
            w.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        !pending.is_finished(),
        "the request was answered inside the pause"
    );
    w.kill9();
    // The connection must die with the process: no cosignature left it.
    if let Ok(r) = pending.await? {
        bail!("the killed witness answered {}", r.status());
    }
    // Restarted, it remembers size 9: the log's retry from 5 gets 409 with
    // 9, and from 9 a fresh cosignature.
    let w = s.start(&[]).await?;
    expect_monitored(&s, &http, &w, 9).await?;
    expect_size_conflict(
        &post(&http, &w, s.request(5, 9)).await?,
        9,
        "retry after the lost answer",
    )?;
    expect_cosigned(
        &s,
        &post(&http, &w, s.request(9, 9)).await?,
        9,
        "retry from 9",
    )?;
    expect_cosigned(
        &s,
        &post(&http, &w, s.request(9, 12)).await?,
        12,
        "growth after restart",
    )?;
    // And a kill -9 with no request in flight loses nothing either.
    drop(w);
    let w = s.start(&[]).await?;
    expect_monitored(&s, &http, &w, 12).await?;
    drop(w);
    s.finish().await
}

/// Fires one request per target size, all from `old`, at the given
/// witnesses (round robin); returns the answers by size.
async fn race(
    s: &Setup,
    witnesses: &[&WitnessProcess],
    old: u64,
    sizes: std::ops::Range<u64>,
) -> Result<Vec<(u64, Answer)>> {
    let http = reqwest::Client::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(sizes.clone().count()));
    let mut tasks = Vec::new();
    for (i, size) in sizes.enumerate() {
        let (http, url, body, barrier) = (
            http.clone(),
            witnesses[i % witnesses.len()].url(),
            s.request(old, size),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = http
                .post(format!("{url}/add-checkpoint"))
                .body(body)
                .send()
                .await?;
            let status = r.status().as_u16();
            let content_type = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = r.text().await?;
            anyhow::Ok((
                size,
                Answer {
                    status,
                    content_type,
                    body,
                },
            ))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Exactly one answer is a cosignature; every other one is 409 naming its size.
fn exactly_one_winner(s: &Setup, answers: &[(u64, Answer)]) -> Result<u64> {
    let winners: Vec<u64> = answers
        .iter()
        .filter(|(_, a)| a.status == 200)
        .map(|(n, _)| *n)
        .collect();
    ensure!(
        winners.len() == 1,
        "{} requests were cosigned from one old size: {answers:?}",
        winners.len()
    );
    let won = winners[0];
    for (size, a) in answers {
        if *size == won {
            expect_cosigned(s, a, *size, "the winner")?;
        } else {
            expect_size_conflict(a, won, "a loser")?;
        }
    }
    Ok(won)
}

async fn concurrent_requests_from_one_old_size(backend: Backend) -> Result<()> {
    let s = Setup::new(backend).await?;
    let w = s.start(&[]).await?;
    let http = reqwest::Client::new();
    expect_cosigned(&s, &post(&http, &w, s.request(0, 2)).await?, 2, "first")?;
    let mut old = 2;
    for round in 0..6 {
        let answers = race(&s, &[&w], old, old + 1..old + 9).await?;
        old = exactly_one_winner(&s, &answers).with_context(|| format!("round {round}"))?;
        expect_monitored(&s, &http, &w, old).await?;
    }
    drop(w);
    s.finish().await
}

async fn two_processes_on_one_database(backend: Backend) -> Result<()> {
    let s = Setup::new(backend).await?;
    let (a, b) = (s.start(&[]).await?, s.start(&[]).await?);
    let http = reqwest::Client::new();
    expect_cosigned(
        &s,
        &post(&http, &a, s.request(0, 3)).await?,
        3,
        "first, on a",
    )?;
    // b sees a's state.
    expect_size_conflict(&post(&http, &b, s.request(0, 4)).await?, 3, "b after a")?;
    let mut old = 3;
    for round in 0..6 {
        let answers = race(&s, &[&a, &b], old, old + 1..old + 7).await?;
        old = exactly_one_winner(&s, &answers).with_context(|| format!("round {round}"))?;
        expect_monitored(&s, &http, &a, old).await?;
        expect_monitored(&s, &http, &b, old).await?;
    }
    drop((a, b));
    s.finish().await
}

async fn open_store(backend: Backend, s: &Setup) -> Result<Arc<dyn WitnessStore>> {
    Ok(match (backend, &s.db) {
        (Backend::Sqlite, _) => {
            Arc::new(SqliteWitnessStore::open(&s.dir.path().join("state/witness.db")).await?)
        }
        (Backend::Postgres, Some(db)) => Arc::new(PostgresWitnessStore::connect(&db.url).await?),
        (Backend::Postgres, None) => return Err(anyhow!("no database")),
    })
}

async fn store_compare_and_set_contract(backend: Backend) -> Result<()> {
    let s = Setup::new(backend).await?;
    let state = |size: u64, t: u64| WitnessedState {
        size,
        root: s.root(size),
        timestamp: t,
    };
    let row = |size: u64, t: u64| StoredCheckpoint {
        origin: LOG.into(),
        state: state(size, t),
        note: s.note(size),
    };
    // Two handles on one database, like two processes.
    let (one, two) = (
        open_store(backend, &s).await?,
        open_store(backend, &s).await?,
    );
    ensure!(one.latest(LOG).await?.is_none(), "fresh store has a row");
    // First insert: exactly one of two "no row yet" writers wins.
    ensure!(
        one.compare_and_set(None, &row(5, 10)).await?,
        "first insert failed"
    );
    ensure!(
        !two.compare_and_set(None, &row(6, 11)).await?,
        "second insert from nothing succeeded"
    );
    ensure!(
        two.latest(LOG).await? == Some(row(5, 10)),
        "the loser changed the row"
    );
    // Compare-and-set from a stale size or a wrong root writes nothing.
    ensure!(
        !two.compare_and_set(Some(&state(4, 10)), &row(7, 12))
            .await?,
        "stale size won"
    );
    let wrong_root = WitnessedState {
        root: s.leaves[0],
        ..state(5, 10)
    };
    ensure!(
        !two.compare_and_set(Some(&wrong_root), &row(7, 12)).await?,
        "wrong root won"
    );
    ensure!(
        one.latest(LOG).await? == Some(row(5, 10)),
        "a failed compare-and-set wrote"
    );
    // The right expected state wins once; the same expected again loses.
    ensure!(
        two.compare_and_set(Some(&state(5, 10)), &row(8, 13))
            .await?,
        "the right state lost"
    );
    ensure!(
        !one.compare_and_set(Some(&state(5, 10)), &row(9, 14))
            .await?,
        "two winners from size 5"
    );
    ensure!(
        one.latest(LOG).await? == Some(row(8, 13)),
        "first handle does not see the write"
    );
    // Concurrent writers from one state: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        let (expected, new) = (state(8, 13), row(10 + i, 20 + i));
        tasks.push(tokio::spawn(async move {
            store.compare_and_set(Some(&expected), &new).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await??);
    }
    ensure!(
        wins == 1,
        "{wins} concurrent compare-and-sets won from one state"
    );
    // Durable: a new handle (a restarted process) reads the same row.
    let latest = one.latest(LOG).await?.context("row vanished")?;
    drop((one, two));
    let again = open_store(backend, &s).await?;
    ensure!(
        again.latest(LOG).await? == Some(latest),
        "the row did not survive reopening"
    );
    ensure!(
        again.latest(QUIET_LOG).await?.is_none(),
        "another origin has a row"
    );
    drop(again);
    s.finish().await
}

// ---------------------------------------------------------------------------
// Cross-check against an independent implementation (aics-tlog, Python)
// ---------------------------------------------------------------------------

fn crosscheck_python() -> Result<String, String> {
    let python = std::env::var("STELE_CROSSCHECK_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import aics_tlog, aics_witness"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(python)
    } else {
        Err(format!(
            "no Python with aics-tlog at {python:?} (set STELE_CROSSCHECK_PYTHON; \
             pip install -r tests/crosscheck/requirements.txt): not running \
             crosscheck::cosignatures_against_aics_tlog \
             (set STELE_REQUIRE_CROSSCHECK=1 to make this a failure)"
        ))
    }
}

async fn cosignatures_against_aics_tlog(python: String) -> Result<()> {
    use base64::Engine as _;
    // One fixed key, time and checkpoint, with an extension line: both
    // implementations must produce the same cosignature byte for byte.
    let seed = [0x5au8; 32];
    let cosigner = Cosigner::from_seed(WITNESS, &seed)?;
    let leaves: Vec<Hash> = (0..37u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut cp = Checkpoint::new(LOG, 37, root_of(&leaves));
    cp.extensions = vec!["an extension line".into()];
    let text = cp.to_body();
    let line = cosigner.cosign(&text, 1_760_000_000)?;

    // A witnessed checkpoint as `stele witness` serves it.
    let s = Setup::new(Backend::Sqlite).await?;
    let w = s.start(&[]).await?;
    let http = reqwest::Client::new();
    expect_cosigned(&s, &post(&http, &w, s.request(0, 21)).await?, 21, "first")?;
    let body = s.request(21, 77);
    expect_cosigned(&s, &post(&http, &w, body.clone()).await?, 77, "growth")?;
    let witnessed = expect_monitored(&s, &http, &w, 77).await?;
    let req = AddCheckpointRequest::parse(body.as_bytes())?;

    let input = serde_json::json!({
        "seed_hex": hex::encode(seed),
        "name": WITNESS,
        "timestamp": 1_760_000_000u64,
        "checkpoint_text": text,
        "stele_line": line,
        "stele_vkey": cosigner.vkey(),
        "witnessed_note": witnessed,
        "log_vkey": s.log.vkey(),
        "witness_vkey": s.witness_key.vkey(),
        "request_body_b64": base64::engine::general_purpose::STANDARD.encode(&body),
        "request_old": req.old_size,
        "request_proof": req.proof.iter().map(|h| h.to_base64()).collect::<Vec<_>>(),
        "request_checkpoint": req.checkpoint,
    });
    let input_path = s.dir.path().join("crosscheck.json");
    std::fs::write(&input_path, serde_json::to_vec(&input)?)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crosscheck/aics_tlog_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&input_path)
        .output()?;
    ensure!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        theirs["aics_vkey"] == cosigner.vkey(),
        "vkeys differ: {} vs {}",
        theirs["aics_vkey"],
        cosigner.vkey()
    );
    ensure!(
        theirs["aics_line"] == line,
        "cosignatures differ:\n aics-tlog {}\n stele     {line}",
        theirs["aics_line"]
    );
    // Their line verifies here too (the same bytes, but check the path).
    let their_line = theirs["aics_line"].as_str().context("no line")?;
    let found = stele_core::cosignature::verify_cosignature_lines(
        &text,
        their_line,
        &[cosigner.verifier()],
    )?;
    ensure!(
        found.len() == 1 && found[0].timestamp == 1_760_000_000,
        "their cosignature does not verify here"
    );
    drop(w);
    s.finish().await
}
