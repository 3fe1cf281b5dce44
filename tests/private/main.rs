//! Private records, against both backends: public tiles that hold nothing
//! of the content, reads by grant that are each an entry of the log (and
//! durable before any content leaves), tampering caught by the server and
//! by `stele fetch`'s check, erasure that destroys the content while every
//! proof stays valid, and the payload key's rotation.
//!
//! Every test runs on SQLite and on a fresh PostgreSQL database
//! (`sqlite::…`, `postgres::…`); PostgreSQL tests fail instead of being
//! ignored when `STELE_REQUIRE_POSTGRES=1`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};
use stele::cli::audit::{audit, Rules};
use stele::cli::client::LogClient;
use stele::cli::content::verify_content;
use stele::engine::EngineConfig;
use stele::vault::{Kek, KeyWrapper, Vault};
use stele::wire;
use stele_core::note::{open_checkpoint, Verifier};
use stele_core::receipt::Receipt;
use stele_testkit::harness::{Suite, TestResult};
use stele_testkit::server::{spawn_app_with, AppOptions, Backend, TestApp};

fn main() {
    let mut suite = Suite::new();
    suite.per_backend(
        "public_tiles_hold_nothing_private",
        Backend::ALL,
        public_tiles_hold_nothing_private,
    );
    suite.per_backend(
        "reads_by_grant_each_on_the_record",
        Backend::ALL,
        reads_by_grant_each_on_the_record,
    );
    suite.per_backend(
        "no_content_without_a_durable_access_entry",
        Backend::ALL,
        no_content_without_a_durable_access_entry,
    );
    suite.per_backend(
        "tampered_payloads_are_refused",
        Backend::ALL,
        tampered_payloads_are_refused,
    );
    suite.per_backend(
        "erasure_destroys_content_and_keeps_proofs",
        Backend::ALL,
        erasure_destroys_content_and_keeps_proofs,
    );
    suite.per_backend(
        "a_disclosure_lists_exactly_the_records_accesses",
        Backend::ALL,
        a_disclosure_lists_exactly_the_records_accesses,
    );
    suite.per_backend(
        "rotating_the_payload_key_rewraps_every_live_key",
        Backend::ALL,
        rotating_the_payload_key_rewraps_every_live_key,
    );
    suite.run()
}

const CASE: &str = include_str!("../../examples/types/health.case.toml");
/// Values that must never reach a public byte.
const SUBJECT: &str = "patient-7QX2K9";
const DIAGNOSIS: &str = "Z99.81";
const NOTES: &str = "needle-in-the-notes-7c1e";
const DOCUMENT: &[u8] = b"%PDF-1.7 scanned-discharge-letter-4d2a";

/// A server with the example private type `health.case` applied, agencies
/// `hospital-1` and `hospital-2` (writers and readers) and `parking`
/// (neither).
struct Fixture {
    app: TestApp,
    http: reqwest::Client,
    h1: String,
    h2: String,
    parking: String,
    verifier: Verifier,
}

fn vault() -> Arc<Vault> {
    Arc::new(Vault::new(Kek::generate().0, Vec::new()))
}

impl Fixture {
    async fn new(backend: Backend) -> anyhow::Result<Self> {
        Self::with(backend, vault(), false).await
    }

    async fn with(backend: Backend, vault: Arc<Vault>, faults: bool) -> anyhow::Result<Self> {
        let app = spawn_app_with(
            backend,
            AppOptions {
                agency: "registrar".into(),
                agency_admin: true,
                accept_unregistered: false,
                faults,
                engine: EngineConfig {
                    vault: Some(vault),
                    ..AppOptions::default().engine
                },
                ..AppOptions::default()
            },
        )
        .await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let def = stele::registry::TypeDefinition::parse(CASE)?;
        let r = http
            .post(app.log_url("/types"))
            .bearer_auth(&app.token)
            .json(&def)
            .send()
            .await?;
        ensure!(
            r.status() == StatusCode::CREATED,
            "apply: {}",
            r.text().await?
        );
        Ok(Fixture {
            h1: app.add_agency("hospital-1", &[]).await?,
            h2: app.add_agency("hospital-2", &[]).await?,
            parking: app.add_agency("parking", &[]).await?,
            verifier: Verifier::from_vkey(&app.vkey).map_err(|e| anyhow::anyhow!("{e}"))?,
            http,
            app,
        })
    }

    async fn submit(&self, token: &str, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        let r = self
            .http
            .post(self.app.log_url("/records"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        Ok((r.status(), r.json().await?))
    }

    /// Submits a case record; its receipt.
    async fn case(&self, subject: &str, notes: &str) -> anyhow::Result<Receipt> {
        let (status, v) = self.submit(&self.h1, &case_body(subject, notes)).await?;
        ensure!(status == StatusCode::CREATED, "submit: {status} {v}");
        Ok(serde_json::from_value(v)?)
    }

    async fn read(
        &self,
        token: &str,
        index: u64,
        purpose: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self
            .http
            .get(self.app.log_url(&format!("/records/{index}/content")))
            .bearer_auth(token);
        if let Some(p) = purpose {
            req = req.header("Stele-Purpose", p);
        }
        let r = req.send().await?;
        Ok((r.status(), r.json().await?))
    }

    async fn erase(
        &self,
        token: &str,
        index: u64,
        reason: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let r = self
            .http
            .delete(self.app.log_url(&format!("/records/{index}/content")))
            .query(&[("reason", reason)])
            .bearer_auth(token)
            .send()
            .await?;
        Ok((r.status(), r.json().await?))
    }

    async fn tree_size(&self) -> anyhow::Result<u64> {
        let cp = self
            .http
            .get(self.app.log_url("/checkpoint"))
            .send()
            .await?
            .text()
            .await?;
        Ok(open_checkpoint(&cp, &self.verifier)?.size)
    }

    async fn leaf(&self, index: u64) -> anyhow::Result<Value> {
        let e: Value = self
            .http
            .get(self.app.log_url(&format!("/entries/{index}")))
            .send()
            .await?
            .json()
            .await?;
        Ok(serde_json::from_str(
            e["leaf"].as_str().context("no leaf")?,
        )?)
    }

    /// Every byte of every entry bundle the log serves.
    async fn public_bundles(&self) -> anyhow::Result<Vec<u8>> {
        let size = self.tree_size().await?;
        let mut out = Vec::new();
        for n in 0..size.div_ceil(256) {
            let width = (size - n * 256).min(256);
            let path = stele_core::tile::TilePath::Entries(stele_core::tile::TileId::new(
                0,
                n,
                width as u16,
            ));
            let r = self
                .http
                .get(self.app.log_url(&format!("/{path}")))
                .send()
                .await?;
            ensure!(
                r.status() == StatusCode::OK,
                "bundle {path}: {}",
                r.status()
            );
            out.extend_from_slice(&r.bytes().await?);
        }
        Ok(out)
    }

    async fn audit(&self) -> anyhow::Result<Result<(), String>> {
        let client = LogClient::new(&self.app.log_url(""))?;
        let cp = open_checkpoint(&client.checkpoint().await?, &self.verifier)?;
        let mut slot = None;
        let rules = Some(Rules {
            allow_unregistered: false,
        });
        let mut save = |_: &stele::cli::audit::AuditState| Ok(());
        Ok(
            match audit(&client, &cp, &mut slot, 4, rules, &mut save).await? {
                Ok(_) => Ok(()),
                Err(alarm) => Err(alarm.to_string()),
            },
        )
    }

    fn content_reads(&self, outcome: &str) -> u64 {
        let m = self.app.metrics.render();
        m.lines()
            .find(|l| {
                l.starts_with("stele_content_reads_total{")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

fn case_body(subject: &str, notes: &str) -> Value {
    use base64::Engine as _;
    json!({
        "type": "health.case",
        "subject": subject,
        "attributes": {"diagnosis": DIAGNOSIS, "opened": "2019-07-14", "notes": notes},
        "document": base64::engine::general_purpose::STANDARD.encode(DOCUMENT),
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Raw SQL on the test's database, as someone with database access would.
enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    async fn open(app: &TestApp) -> anyhow::Result<Db> {
        Ok(match app.store().database_url() {
            Some(url) => Db::Postgres(sqlx::PgPool::connect(url).await?),
            None => Db::Sqlite(
                sqlx::SqlitePool::connect(&format!(
                    "sqlite:{}",
                    app.store().sqlite_path().display()
                ))
                .await?,
            ),
        })
    }

    /// `(kek_id, wrapped_key, ciphertext, erased_by)` of payload `index`.
    #[allow(clippy::type_complexity)]
    async fn payload(
        &self,
        index: i64,
    ) -> anyhow::Result<(
        Option<String>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<i64>,
    )> {
        let q = "SELECT kek_id, wrapped_key, ciphertext, erased_by FROM payloads WHERE log = 'default' AND idx = ";
        Ok(match self {
            Db::Sqlite(p) => {
                sqlx::query_as(&format!("{q}?"))
                    .bind(index)
                    .fetch_one(p)
                    .await?
            }
            Db::Postgres(p) => {
                sqlx::query_as(&format!("{q}$1"))
                    .bind(index)
                    .fetch_one(p)
                    .await?
            }
        })
    }

    async fn set_ciphertext(&self, index: i64, c: &[u8]) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(p) => {
                sqlx::query("UPDATE payloads SET ciphertext = ? WHERE idx = ?")
                    .bind(c)
                    .bind(index)
                    .execute(p)
                    .await?;
            }
            Db::Postgres(p) => {
                sqlx::query("UPDATE payloads SET ciphertext = $1 WHERE idx = $2")
                    .bind(c)
                    .bind(index)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    async fn dedup_key(&self, index: i64) -> anyhow::Result<Vec<u8>> {
        let q = "SELECT dedup_key FROM entries WHERE log = 'default' AND idx = ";
        Ok(match self {
            Db::Sqlite(p) => {
                sqlx::query_scalar(&format!("{q}?"))
                    .bind(index)
                    .fetch_one(p)
                    .await?
            }
            Db::Postgres(p) => {
                sqlx::query_scalar(&format!("{q}$1"))
                    .bind(index)
                    .fetch_one(p)
                    .await?
            }
        })
    }
}

async fn public_tiles_hold_nothing_private(backend: Backend) -> TestResult {
    let f = Fixture::new(backend).await?;
    // Two records of one subject with the same content, a third of another.
    let a = f.case(SUBJECT, NOTES).await?;
    let b_body = case_body(SUBJECT, NOTES);
    let (status, b) = f.submit(&f.parking, &b_body).await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "parking is no writer: {status} {b}"
    );
    // The same body again by its writer is a duplicate (same entry)...
    let (status, again) = f.submit(&f.h1, &case_body(SUBJECT, NOTES)).await?;
    ensure!(
        status == StatusCode::OK && again["index"] == a.index,
        "duplicate: {status} {again}"
    );
    // ... and a second visit of the same patient with the same diagnosis is another record.
    let b = f.case(SUBJECT, "second visit").await?;
    let c = f.case("patient-0000AAAA", NOTES).await?;

    let bytes = f.public_bundles().await?;
    use base64::Engine as _;
    let doc_b64 = base64::engine::general_purpose::STANDARD.encode(DOCUMENT);
    for needle in [
        SUBJECT.as_bytes(),
        DIAGNOSIS.as_bytes(),
        NOTES.as_bytes(),
        DOCUMENT,
        doc_b64.as_bytes(),
        b"second visit",
        b"patient-0000AAAA",
        b"2019-07-14",
    ] {
        ensure!(
            !contains(&bytes, needle),
            "the public bundles contain {:?}",
            String::from_utf8_lossy(needle)
        );
    }
    // Each private leaf is exactly {agency, commitment, ts, type,
    // type_version, v}; nothing but the writer and the type is shared by
    // two records of one subject.
    let (la, lb, lc) = (
        f.leaf(a.index).await?,
        f.leaf(b.index).await?,
        f.leaf(c.index).await?,
    );
    for l in [&la, &lb, &lc] {
        let keys: Vec<&String> = l.as_object().context("leaf")?.keys().collect();
        ensure!(
            keys == ["agency", "commitment", "ts", "type", "type_version", "v"],
            "leaf keys {keys:?}"
        );
    }
    ensure!(la["commitment"] != lb["commitment"] && la["commitment"] != lc["commitment"]);
    // No 8-byte run of one record's commitment appears in another's leaf.
    let ca = la["commitment"].as_str().context("commitment")?;
    let hex = &ca["sha256:".len()..];
    for w in 0..hex.len() - 16 {
        let run = &hex[w..w + 16];
        ensure!(!lb.to_string().contains(run) && !lc.to_string().contains(run));
    }
    f.app.stop().await;
    Ok(())
}

async fn reads_by_grant_each_on_the_record(backend: Backend) -> TestResult {
    let f = Fixture::new(backend).await?;
    let rec = f.case(SUBJECT, NOTES).await?;
    let size = f.tree_size().await?;

    // No grant: 403, nothing appended, counted.
    let (status, p) = f.read(&f.parking, rec.index, Some("curiosity")).await?;
    ensure!(status == StatusCode::FORBIDDEN, "parking: {status} {p}");
    ensure!(
        f.tree_size().await? == size,
        "a refused read appended an entry"
    );
    ensure!(f.content_reads("refused") == 1);
    // No purpose: 422, nothing appended.
    let (status, p) = f.read(&f.h2, rec.index, None).await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && p["field"] == "Stele-Purpose",
        "{status} {p}"
    );
    ensure!(f.tree_size().await? == size);
    // A public entry has no content to read.
    let (status, _) = f.read(&f.h2, 0, Some("x")).await?;
    ensure!(status == StatusCode::NOT_FOUND, "registry entry: {status}");

    // Each read by a reader: the content, verified against the leaf, and
    // exactly one access entry.
    for (i, (token, reader, purpose)) in [
        (&f.h2, "hospital-2", "treatment"),
        (&f.h2, "hospital-2", "treatment"),
        (&f.h1, "hospital-1", "follow-up 复诊"),
    ]
    .into_iter()
    .enumerate()
    {
        let header =
            percent_encoding::utf8_percent_encode(purpose, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let (status, v) = f.read(token, rec.index, Some(&header)).await?;
        ensure!(status == StatusCode::OK, "read {i}: {status} {v}");
        let answer: wire::Content = serde_json::from_value(v)?;
        let checked = verify_content(&answer, &f.verifier, rec.index, purpose, Some(reader))?;
        ensure!(
            answer.content["subject"] == SUBJECT && answer.content["attributes"]["notes"] == NOTES
        );
        ensure!(
            checked.access_index == size + i as u64,
            "access entry at {}",
            checked.access_index
        );
        ensure!(
            f.tree_size().await? == size + i as u64 + 1,
            "one entry per read"
        );
        let leaf = f.leaf(checked.access_index).await?;
        ensure!(
            leaf["type"] == "stele.access"
                && leaf["agency"] == reader
                && leaf["attributes"] == json!({"purpose": purpose, "record": rec.index}),
            "access leaf {leaf}"
        );
    }
    ensure!(f.content_reads("released") == 3);
    // The auditor accepts the log: records, access entries and all.
    f.audit()
        .await?
        .map_err(|a| anyhow::anyhow!("honest log alarmed: {a}"))?;

    // A grant withdrawn by a new version of the type bites at once.
    let mut v2 = stele::registry::TypeDefinition::parse(CASE)?;
    v2.version = 2;
    v2.readers.retain(|r| r.as_str() != "hospital-2");
    let r = f
        .http
        .post(f.app.log_url("/types"))
        .bearer_auth(&f.app.token)
        .json(&v2)
        .send()
        .await?;
    ensure!(r.status() == StatusCode::CREATED);
    let (status, _) = f.read(&f.h2, rec.index, Some("treatment")).await?;
    ensure!(status == StatusCode::FORBIDDEN, "withdrawn grant: {status}");
    f.app.stop().await;
    Ok(())
}

async fn no_content_without_a_durable_access_entry(backend: Backend) -> TestResult {
    let f = Fixture::with(backend, vault(), true).await?;
    let rec = f.case(SUBJECT, NOTES).await?;
    let faults = f.app.faults.clone().context("faults")?;
    let size = f.tree_size().await?;
    // The access entry's commit fails before writing: no content, no entry.
    faults.fail_before.store(1, Ordering::SeqCst);
    let (status, v) = f.read(&f.h2, rec.index, Some("treatment")).await?;
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE,
        "failed commit: {status} {v}"
    );
    ensure!(v.get("content").is_none());
    // Its acknowledgement is lost (it may be durable; the reader cannot
    // know): still no content.
    faults.fail_after.store(1, Ordering::SeqCst);
    let (status, v) = f.read(&f.h2, rec.index, Some("treatment")).await?;
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE,
        "lost ack: {status} {v}"
    );
    ensure!(v.get("content").is_none());
    ensure!(f.content_reads("released") == 0);
    // After recovery a read works, and the log holds at most the one
    // unacknowledged access entry besides it: never content without one.
    let mut ok = None;
    for _ in 0..50 {
        let (status, v) = f.read(&f.h2, rec.index, Some("treatment")).await?;
        if status == StatusCode::OK {
            ok = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer: wire::Content = serde_json::from_value(ok.context("no read after recovery")?)?;
    let checked = verify_content(
        &answer,
        &f.verifier,
        rec.index,
        "treatment",
        Some("hospital-2"),
    )?;
    let grown = f.tree_size().await? - size;
    ensure!((1..=2).contains(&grown), "{grown} entries appended");
    ensure!(checked.access_index == f.tree_size().await? - 1);
    f.app.stop().await;
    Ok(())
}

async fn tampered_payloads_are_refused(backend: Backend) -> TestResult {
    let f = Fixture::new(backend).await?;
    let a = f.case(SUBJECT, NOTES).await?;
    let b = f.case(SUBJECT, "another").await?;
    let db = Db::open(&f.app).await?;
    let (_, _, ca, _) = db.payload(a.index as i64).await?;
    let (_, _, cb, _) = db.payload(b.index as i64).await?;
    let (ca, cb) = (ca.context("sealed")?, cb.context("sealed")?);
    ensure!(
        !contains(&ca, NOTES.as_bytes()) && !contains(&ca, SUBJECT.as_bytes()),
        "stored in clear"
    );

    // One flipped bit: the server refuses to serve it (500, counted).
    let mut bad = ca.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    db.set_ciphertext(a.index as i64, &bad).await?;
    let (status, v) = f.read(&f.h2, a.index, Some("treatment")).await?;
    ensure!(
        status == StatusCode::INTERNAL_SERVER_ERROR && v.get("content").is_none(),
        "{status} {v}"
    );
    ensure!(f.content_reads("corrupt") == 1);
    // Another record's payload moved under this one: refused too (the
    // payload is bound to its record's commitment).
    db.set_ciphertext(a.index as i64, &cb).await?;
    let (status, _) = f.read(&f.h2, a.index, Some("treatment")).await?;
    ensure!(
        status == StatusCode::INTERNAL_SERVER_ERROR,
        "swapped payload: {status}"
    );
    db.set_ciphertext(a.index as i64, &ca).await?;
    let (status, v) = f.read(&f.h2, a.index, Some("treatment")).await?;
    ensure!(status == StatusCode::OK, "restored: {status}");

    // `stele fetch`'s check catches content or salt that do not match the
    // signed leaf, whoever altered them.
    let good: wire::Content = serde_json::from_value(v)?;
    verify_content(&good, &f.verifier, a.index, "treatment", None)?;
    let mut altered = good.clone();
    altered.content["attributes"]["diagnosis"] = json!("A00.0");
    let e = verify_content(&altered, &f.verifier, a.index, "treatment", None).unwrap_err();
    ensure!(e.to_string().contains("does not match"), "{e}");
    let mut salted = good.clone();
    salted.salt = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([0u8; 32])
    };
    ensure!(verify_content(&salted, &f.verifier, a.index, "treatment", None).is_err());
    ensure!(
        verify_content(&good, &f.verifier, b.index, "treatment", None).is_err(),
        "another index"
    );
    ensure!(
        verify_content(&good, &f.verifier, a.index, "marketing", None).is_err(),
        "another purpose"
    );
    f.app.stop().await;
    Ok(())
}

async fn erasure_destroys_content_and_keeps_proofs(backend: Backend) -> TestResult {
    let f = Fixture::new(backend).await?;
    let rec = f.case(SUBJECT, NOTES).await?;
    let other = f.case(SUBJECT, "kept").await?;
    let db = Db::open(&f.app).await?;
    let (_, wrapped, cipher, _) = db.payload(rec.index as i64).await?;
    let (wrapped, cipher) = (wrapped.context("sealed")?, cipher.context("sealed")?);
    let key_before = db.dedup_key(rec.index as i64).await?;

    // Only the writer (or an eraser) may erase, with a known reason.
    let (status, _) = f.erase(&f.h2, rec.index, "subject-request").await?;
    ensure!(status == StatusCode::FORBIDDEN, "reader erased: {status}");
    let officer =
        stele_testkit::agency::register_eraser(f.app.storage.as_ref(), "privacy-office").await?;
    let (status, v) = f.erase(&officer, other.index, "legal-order").await?;
    ensure!(status == StatusCode::OK, "the eraser: {status} {v}");
    let leaf: Value = serde_json::from_str(v["leaf"].as_str().context("leaf")?)?;
    ensure!(leaf["agency"] == "privacy-office" && leaf["attributes"]["record"] == other.index);
    let (status, v) = f.erase(&f.h1, rec.index, "because").await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && v["field"] == "reason",
        "{status} {v}"
    );
    let (status, v) = f.erase(&f.h1, rec.index, "subject-request").await?;
    ensure!(status == StatusCode::OK, "erase: {status} {v}");
    let tomb: Receipt = serde_json::from_value(v)?;
    tomb.verify(&f.verifier)?;
    let leaf: Value = serde_json::from_str(&tomb.leaf)?;
    ensure!(
        leaf["type"] == "stele.erasure"
            && leaf["agency"] == "hospital-1"
            && leaf["attributes"] == json!({"reason": "subject-request", "record": rec.index}),
        "erasure leaf {leaf}"
    );

    // The content is gone from the database: no key, no ciphertext, and
    // the record's dedup key (a hash of its content) replaced.
    let (kek, w, c, by) = db.payload(rec.index as i64).await?;
    ensure!(kek.is_none() && w.is_none() && c.is_none() && by == Some(tomb.index as i64));
    ensure!(
        db.dedup_key(rec.index as i64).await? != key_before,
        "dedup key kept"
    );
    if let Db::Sqlite(p) = &db {
        // secure_delete: once the WAL is checkpointed into the file, the
        // old bytes are overwritten there.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(p)
            .await?;
        let file = std::fs::read(f.app.store().sqlite_path())?;
        ensure!(
            !contains(&file, &cipher),
            "the ciphertext is still in the database file"
        );
        ensure!(
            !contains(&file, &wrapped),
            "the wrapped key is still in the database file"
        );
    }
    // Reads and erasing again: 410 naming the erasure entry.
    for (status, v) in [
        f.read(&f.h2, rec.index, Some("treatment")).await?,
        f.erase(&f.h1, rec.index, "subject-request").await?,
    ] {
        ensure!(
            status == StatusCode::GONE
                && v["type"] == "urn:stele:problem:erased"
                && v["tombstone"] == tomb.index,
            "{status} {v}"
        );
    }
    ensure!(f.content_reads("erased") == 1);
    // The other record of the same subject was erased by the eraser, not
    // by this erasure.
    let (status, v) = f.read(&f.h2, other.index, Some("treatment")).await?;
    ensure!(
        status == StatusCode::GONE && v["tombstone"] != tomb.index,
        "{status} {v}"
    );
    // Every old receipt still verifies, the audit still passes, and the
    // same content submitted again is a new record (nothing of the old one
    // is left to match it).
    rec.verify(&f.verifier)?;
    f.audit()
        .await?
        .map_err(|a| anyhow::anyhow!("audit after erasure: {a}"))?;
    let (status, again) = f.submit(&f.h1, &case_body(SUBJECT, NOTES)).await?;
    ensure!(
        status == StatusCode::CREATED && again["index"] != rec.index,
        "{status} {again}"
    );
    f.app.stop().await;
    Ok(())
}

async fn rotating_the_payload_key_rewraps_every_live_key(backend: Backend) -> TestResult {
    let (old, old_text) = Kek::generate();
    let f = Fixture::with(backend, Arc::new(Vault::new(old, Vec::new())), false).await?;
    let a = f.case(SUBJECT, NOTES).await?;
    let b = f.case(SUBJECT, "erased before the rotation").await?;
    let (status, _) = f.erase(&f.h1, b.index, "recorded-in-error").await?;
    ensure!(status == StatusCode::OK);
    let (new, new_text) = Kek::generate();
    let new_id = new.id().to_string();
    let rotating = Vault::new(new, vec![Kek::parse(&old_text)?]);
    let n =
        stele::cli::vault::rotate_payloads(f.app.storage.as_ref(), &rotating, &["default"]).await?;
    ensure!(n == 1, "re-wrapped {n} (one live payload)");
    let db = Db::open(&f.app).await?;
    let (kek, _, _, _) = db.payload(a.index as i64).await?;
    ensure!(kek.as_deref() == Some(new_id.as_str()), "kek {kek:?}");
    // Nothing left for the old key: a second run does nothing.
    ensure!(
        stele::cli::vault::rotate_payloads(f.app.storage.as_ref(), &rotating, &["default"]).await?
            == 0
    );

    // The new key alone opens it; the old one alone no longer does.
    let only_new = Vault::new(Kek::parse(&new_text)?, Vec::new());
    let payload = match f.app.storage.payload("default", a.index).await? {
        Some(stele::storage::StoredPayload::Sealed(p)) => p,
        other => anyhow::bail!("payload {other:?}"),
    };
    let leaf: Value = serde_json::from_str(&a.leaf)?;
    let c = leaf["commitment"].as_str().context("commitment")?;
    ensure!(
        only_new.open("default", c, &payload).is_ok(),
        "the new key does not open it"
    );
    let only_old = Vault::new(Kek::parse(&old_text)?, Vec::new());
    ensure!(
        only_old.open("default", c, &payload).is_err(),
        "the old key still opens it"
    );
    f.app.stop().await;
    Ok(())
}

async fn a_disclosure_lists_exactly_the_records_accesses(backend: Backend) -> TestResult {
    let f = Fixture::new(backend).await?;
    let mine = f.case(SUBJECT, NOTES).await?;
    let other = f.case("patient-0000BBBB", "someone else").await?;
    // Only the writer discloses.
    let disclose = |token: String, index: u64| {
        let http = f.http.clone();
        let url = f.app.log_url(&format!("/records/{index}/disclosure"));
        async move {
            let r = http.post(url).bearer_auth(token).send().await?;
            anyhow::Ok((r.status(), r.json::<Value>().await?))
        }
    };
    let (status, _) = disclose(f.h2.clone(), mine.index).await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "a reader disclosed: {status}"
    );
    let (status, v) = disclose(f.h1.clone(), mine.index).await?;
    ensure!(status == StatusCode::CREATED, "disclose: {status} {v}");
    let d: wire::Disclosure = serde_json::from_value(v)?;
    ensure!(d.index == mine.index && d.log == f.app.origin);
    let (_, v) = disclose(f.h1.clone(), other.index).await?;
    let d_other: wire::Disclosure = serde_json::from_value(v)?;

    // Reads of both records by two agencies; then an erasure of the other.
    for (token, index, purpose) in [
        (&f.h2, mine.index, "treatment"),
        (&f.h2, other.index, "treatment"),
        (&f.h1, mine.index, "follow-up"),
        (&f.h2, other.index, "audit"),
    ] {
        let (status, v) = f.read(token, index, Some(purpose)).await?;
        ensure!(status == StatusCode::OK, "{status} {v}");
    }
    let (status, _) = f.erase(&f.h1, other.index, "retention-expired").await?;
    ensure!(status == StatusCode::OK);

    let list = |cap: Option<String>, index: u64| {
        let http = f.http.clone();
        let url = f.app.log_url(&format!("/records/{index}/accesses"));
        async move {
            let mut req = http.get(url);
            if let Some(c) = cap {
                req = req.header("Stele-Disclosure", c);
            }
            let r = req.send().await?;
            anyhow::Ok((r.status(), r.json::<Value>().await?))
        }
    };
    // Without the capability, with a made-up one, or for another record:
    // 403, and nothing about the record.
    for (cap, index) in [
        (None, mine.index),
        (Some("AAAA".to_string()), mine.index),
        (Some(d.capability.clone()), other.index),
    ] {
        let (status, v) = list(cap, index).await?;
        ensure!(
            status == StatusCode::FORBIDDEN && v.get("entries").is_none(),
            "{status} {v}"
        );
    }
    // With it: exactly the two reads of this record, each proven against
    // the signed checkpoint, and the record itself.
    let (status, v) = list(Some(d.capability.clone()), mine.index).await?;
    ensure!(status == StatusCode::OK, "{status} {v}");
    let a: wire::Accesses = serde_json::from_value(v)?;
    stele::cli::content::verify_accesses(&a, &d, &f.verifier)?;
    // The subject's check fails on a forged or foreign entry.
    let mut forged = a.clone();
    forged.entries[0].leaf = forged.entries[0].leaf.replace("treatment", "treatmenT");
    ensure!(stele::cli::content::verify_accesses(&forged, &d, &f.verifier).is_err());
    let mut foreign = a.clone();
    foreign.entries.push(a.record.clone());
    ensure!(stele::cli::content::verify_accesses(&foreign, &d, &f.verifier).is_err());
    // Complete: the whole tree rebuilt from the public bundles (reproducing
    // the signed root) holds no other entry about the record.
    let client = LogClient::new(&f.app.log_url(""))?;
    let cp = open_checkpoint(a.checkpoint.as_deref().context("checkpoint")?, &f.verifier)?;
    let all = stele::cli::content::entries_about(&client, &cp, mine.index).await?;
    let listed: Vec<u64> = a.entries.iter().map(|e| e.index).collect();
    ensure!(
        all == listed && all.len() == 2,
        "in the log {all:?}, listed {listed:?}"
    );
    let of_other = stele::cli::content::entries_about(&client, &cp, other.index).await?;
    ensure!(
        of_other.len() == 3 && of_other.iter().all(|i| !listed.contains(i)),
        "{of_other:?}"
    );
    ensure!(a.record.index == mine.index && a.record.leaf == mine.leaf);
    let seen: Vec<(String, String)> = a
        .entries
        .iter()
        .map(|e| {
            let l: Value = serde_json::from_str(&e.leaf).unwrap_or_default();
            ensure!(
                l["type"] == "stele.access" && l["attributes"]["record"] == mine.index,
                "not an access of this record: {}",
                e.leaf
            );
            Ok((
                l["agency"].as_str().unwrap_or_default().to_string(),
                l["attributes"]["purpose"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        seen == [
            ("hospital-2".to_string(), "treatment".to_string()),
            ("hospital-1".to_string(), "follow-up".to_string())
        ],
        "{seen:?}"
    );
    // The salt lets the subject check the content they are shown.
    let (status, v) = f
        .read(&f.h1, mine.index, Some("shown to the patient"))
        .await?;
    ensure!(status == StatusCode::OK);
    let shown: wire::Content = serde_json::from_value(v)?;
    let content = serde_json_canonicalizer::to_vec(&shown.content)?;
    let salt = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(&d.salt)?
    };
    ensure!(stele::records::private::commitment(&salt, &content) == d.commitment);
    let leaf: Value = serde_json::from_str(&mine.leaf)?;
    ensure!(leaf["commitment"] == d.commitment.as_str());
    // A new disclosure replaces the old one.
    let (_, v) = disclose(f.h1.clone(), mine.index).await?;
    let d2: wire::Disclosure = serde_json::from_value(v)?;
    let (status, _) = list(Some(d.capability.clone()), mine.index).await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "the replaced capability still works"
    );
    let (status, v) = list(Some(d2.capability), mine.index).await?;
    ensure!(
        status == StatusCode::OK && v["entries"].as_array().map(Vec::len) == Some(3),
        "{v}"
    );
    // The erased record's subject still sees its reads and the erasure;
    // no new disclosure of it can be issued (its salt is gone).
    let (status, v) = list(Some(d_other.capability), other.index).await?;
    let kinds: Vec<&str> = v["entries"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["leaf"].as_str())
                .map(|l| {
                    if l.contains("stele.erasure") {
                        "erasure"
                    } else {
                        "access"
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        status == StatusCode::OK && kinds == ["access", "access", "erasure"],
        "{status} {v}"
    );
    let (status, _) = disclose(f.h1.clone(), other.index).await?;
    ensure!(
        status == StatusCode::GONE,
        "disclosing an erased record: {status}"
    );
    f.app.stop().await;
    Ok(())
}
