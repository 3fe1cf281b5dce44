//! The record-type registry, against both backends: definitions applied as
//! entries of the log, records checked against the version in force,
//! writer grants per log that fail closed, the registry rebuilt from the
//! log after a restart, and the auditor (`stele monitor --audit`'s code)
//! replaying it from the tiles alone — passing honest logs and catching
//! logs built to break each rule.
//!
//! Every test runs on SQLite and on a fresh PostgreSQL database
//! (`sqlite::…`, `postgres::…`); PostgreSQL tests fail instead of being
//! ignored when `STELE_REQUIRE_POSTGRES=1`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};
use stele::cli::audit::{audit, AuditState, Rules};
use stele::cli::client::LogClient;
use stele::engine::{Agency, Engine, EngineConfig, LogConfig, LogError};
use stele::metrics::Metrics;
use stele::names::{AgencyName, LogName};
use stele::records::parse_record;
use stele::registry::TypeDefinition;
use stele_core::note::{open_checkpoint, Signer, Verifier};
use stele_core::receipt::Receipt;
use stele_testkit::harness::{Needs, Suite, TestResult};
use stele_testkit::server::{spawn_app_with, AppOptions, Backend, TestApp};
use stele_testkit::store::TestStore;

mod crafted;

const LAND_V1: &str = include_str!("../../examples/types/land.transfer.toml");

fn main() {
    let mut suite = Suite::new();
    suite.per_backend(
        "apply_list_show_and_supersede",
        Backend::ALL,
        apply_list_show_and_supersede,
    );
    suite.per_backend(
        "refusals_append_nothing",
        Backend::ALL,
        refusals_append_nothing,
    );
    suite.per_backend(
        "grants_are_per_log_and_survive_a_restart",
        Backend::ALL,
        grants_are_per_log_and_survive_a_restart,
    );
    suite.add_async(
        "audit_catches_logs_that_break_the_rules",
        Needs::Nothing,
        crafted::audit_catches_logs_that_break_the_rules,
    );
    suite.run()
}

/// A server whose log refuses unregistered types (as in production), with
/// agency `registrar` (registry admin) and `land-registry` and `hospital`.
struct Fixture {
    app: TestApp,
    http: reqwest::Client,
    registrar: String,
    land: String,
    hospital: String,
}

impl Fixture {
    async fn new(backend: Backend) -> anyhow::Result<Self> {
        let app = spawn_app_with(
            backend,
            AppOptions {
                agency: "registrar".into(),
                agency_admin: true,
                accept_unregistered: false,
                ..AppOptions::default()
            },
        )
        .await?;
        let land = app.add_agency("land-registry", &[]).await?;
        let hospital = app.add_agency("hospital", &[]).await?;
        Ok(Fixture {
            registrar: app.token.clone(),
            land,
            hospital,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            app,
        })
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let r = self
            .http
            .post(self.app.log_url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        let v = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
        Ok((status, v))
    }

    async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        let r = self.http.get(self.app.log_url(path)).send().await?;
        Ok((r.status(), r.json().await?))
    }

    async fn tree_size(&self) -> anyhow::Result<u64> {
        let logs: Value = self
            .http
            .get(self.app.url("/logs"))
            .send()
            .await?
            .json()
            .await?;
        logs["logs"][0]["tree_size"]
            .as_u64()
            .context("no tree size")
    }

    /// Audits the whole log over HTTP with the rules on (unregistered
    /// types not allowed).
    async fn audit(&self) -> anyhow::Result<Result<AuditState, String>> {
        let client = LogClient::new(&self.app.log_url(""))?;
        let verifier = Verifier::from_vkey(&self.app.vkey).map_err(|e| anyhow::anyhow!("{e}"))?;
        let cp = open_checkpoint(&client.checkpoint().await?, &verifier)?;
        let mut slot = None;
        let rules = Some(Rules {
            allow_unregistered: false,
        });
        let mut save = |_: &AuditState| Ok(());
        Ok(
            match audit(&client, &cp, &mut slot, 4, rules, &mut save).await? {
                Ok(_) => Ok(slot.context("no audit state")?),
                Err(alarm) => Err(alarm.to_string()),
            },
        )
    }
}

fn land_v1() -> Value {
    serde_json::to_value(TypeDefinition::parse(LAND_V1).unwrap()).unwrap()
}

fn land_record(subject: &str, area: f64) -> Value {
    json!({"type": "land.transfer", "subject": subject, "attributes": {"deed": "2026/7", "area_m2": area}})
}

fn leaf_of(receipt: &Value) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(
        receipt["leaf"].as_str().context("no leaf")?,
    )?)
}

async fn apply_list_show_and_supersede(backend: Backend) -> TestResult {
    let f = Fixture::new(backend).await?;
    let (status, types) = f.get("/types").await?;
    ensure!(
        status == StatusCode::OK && types["types"] == json!([]),
        "{types}"
    );

    let (status, entry) = f.post("/types", &f.registrar, &land_v1()).await?;
    ensure!(status == StatusCode::CREATED, "{status} {entry}");
    let entry: Receipt = serde_json::from_value(entry)?;
    entry.verify(&Verifier::from_vkey(&f.app.vkey).map_err(|e| anyhow::anyhow!("{e}"))?)?;
    let leaf: Value = serde_json::from_str(&entry.leaf)?;
    ensure!(
        leaf["type"] == "stele.type" && leaf["subject"] == "land.transfer",
        "{leaf}"
    );
    ensure!(
        leaf["agency"] == "registrar" && leaf.get("type_version").is_none(),
        "{leaf}"
    );
    ensure!(
        leaf["attributes"] == land_v1(),
        "the entry carries the definition: {leaf}"
    );
    // Applying the same definition again: its entry, nothing appended.
    let size = f.tree_size().await?;
    let (status, again) = f.post("/types", &f.registrar, &land_v1()).await?;
    ensure!(
        status == StatusCode::OK && again["index"] == entry.index,
        "{status} {again}"
    );
    ensure!(f.tree_size().await? == size, "a repeat appended");

    let (status, r1) = f
        .post("/records", &f.land, &land_record("XH-1", 10.0))
        .await?;
    ensure!(status == StatusCode::CREATED, "{status} {r1}");
    ensure!(leaf_of(&r1)?["type_version"] == 1, "{r1}");

    // Version 2 adds a required field and a writer.
    let mut v2 = land_v1();
    v2["version"] = json!(2);
    v2["writers"] = json!(["land-registry", "hospital"]);
    v2["schema"]["required"] = json!(["deed", "area_m2", "use"]);
    let (status, e2) = f.post("/types", &f.registrar, &v2).await?;
    ensure!(status == StatusCode::CREATED, "{status} {e2}");
    let (status, p) = f
        .post("/records", &f.land, &land_record("XH-2", 10.0))
        .await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY,
        "v2 is in force: {status} {p}"
    );
    ensure!(
        p["keyword"] == "required" && p["pointer"] == "/attributes",
        "{p}"
    );
    let mut rec = land_record("XH-2", 10.0);
    rec["attributes"]["use"] = json!("public");
    let (status, r2) = f.post("/records", &f.hospital, &rec).await?;
    ensure!(
        status == StatusCode::CREATED,
        "the new writer may: {status} {r2}"
    );
    ensure!(leaf_of(&r2)?["type_version"] == 2, "{r2}");

    let (_, types) = f.get("/types").await?;
    ensure!(
        types["types"].as_array().map(Vec::len) == Some(1),
        "{types}"
    );
    ensure!(
        types["types"][0]["version"] == 2 && types["types"][0]["index"] == e2["index"],
        "{types}"
    );

    // Every version with a proof of its entry against one checkpoint.
    let (status, h) = f.get("/types/land.transfer").await?;
    ensure!(status == StatusCode::OK, "{h}");
    let verifier = Verifier::from_vkey(&f.app.vkey).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cp = open_checkpoint(h["checkpoint"].as_str().context("checkpoint")?, &verifier)?;
    let versions = h["versions"].as_array().context("versions")?;
    ensure!(versions.len() == 2, "{h}");
    for (n, v) in versions.iter().enumerate() {
        ensure!(v["version"] == n as u64 + 1, "{v}");
        let leaf = v["leaf"].as_str().context("leaf")?;
        let proof: Vec<stele_core::Hash> = v["inclusion_proof"]
            .as_array()
            .context("proof")?
            .iter()
            .map(|h| stele_core::Hash::from_hex(h.as_str().unwrap_or_default()))
            .collect::<Result<_, _>>()?;
        stele_core::merkle::verify_inclusion(
            &stele_core::leaf_hash(leaf.as_bytes()),
            v["index"].as_u64().context("index")?,
            cp.size,
            &proof,
            &cp.root,
        )?;
        ensure!(
            serde_json::from_str::<Value>(leaf)?["attributes"] == v["definition"],
            "{v}"
        );
    }
    let (status, _) = f.get("/types/land.survey").await?;
    ensure!(status == StatusCode::NOT_FOUND, "unknown type: {status}");

    // The auditor replays it all from the tiles: both records follow the
    // version in force at their index.
    let state = f
        .audit()
        .await?
        .map_err(|a| anyhow::anyhow!("honest log alarmed: {a}"))?;
    ensure!(
        state.registry.len() == 2,
        "registry entries {:?}",
        state.registry
    );
    f.app.stop().await;
    Ok(())
}

async fn refusals_append_nothing(backend: Backend) -> TestResult {
    let f = Fixture::new(backend).await?;
    let (status, _) = f.post("/types", &f.registrar, &land_v1()).await?;
    ensure!(status == StatusCode::CREATED);
    let size = f.tree_size().await?;

    // (path, token, body, status, problem type, what else must hold)
    let mut over_v1 = land_v1();
    over_v1["description"] = json!("rewritten");
    let mut skip = land_v1();
    skip["version"] = json!(3);
    let mut bad_schema = land_v1();
    bad_schema["version"] = json!(2);
    bad_schema["schema"] = json!({"type": 12});
    let cases: Vec<(&str, &str, Value, StatusCode, &str)> = vec![
        (
            "/records",
            &f.land,
            land_record("XH-1", 0.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema-violation",
        ),
        (
            "/records",
            &f.land,
            land_record("nope", 1.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema-violation",
        ),
        (
            "/records",
            &f.land,
            json!({"type": "land.survey", "subject": "XH-1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-type",
        ),
        (
            "/records",
            &f.hospital,
            land_record("XH-1", 1.0),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "/records",
            &f.registrar,
            land_record("XH-1", 1.0),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "/records",
            &f.registrar,
            json!({"type": "stele.type", "subject": "x.y"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
        ),
        (
            "/types",
            &f.land,
            land_v1(),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "/types",
            &f.registrar,
            over_v1,
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "/types",
            &f.registrar,
            skip,
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "/types",
            &f.registrar,
            bad_schema,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
        ),
        (
            "/types",
            &f.registrar,
            json!({"name": "stele.thing", "version": 1, "schema": {}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
        ),
    ];
    for (path, token, body, want, slug) in cases {
        let (status, p) = f.post(path, token, &body).await?;
        ensure!(status == want, "{path} {body}: {status} {p}");
        ensure!(
            p["type"] == format!("urn:stele:problem:{slug}"),
            "{path} {body}: {p}"
        );
        ensure!(f.tree_size().await? == size, "{path} {body} appended");
    }
    let (_, p) = f
        .post("/records", &f.land, &land_record("XH-1", 0.0))
        .await?;
    ensure!(
        p["pointer"] == "/attributes/area_m2" && p["keyword"] == "exclusiveMinimum",
        "{p}"
    );
    let (_, p) = f
        .post("/records", &f.land, &json!({"type": "land.survey"}))
        .await?;
    ensure!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("land.survey"),
        "names the type: {p}"
    );

    // A bulk request is all or nothing and names every failing record.
    let body = json!({"records": [
        land_record("XH-1", 1.0),
        land_record("XH-2", -1.0),
        land_record("XH-3", 2.0),
        land_record("bad subject", 0.0),
    ]});
    let (status, p) = f.post("/records/bulk", &f.land, &body).await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY
            && p["type"] == "urn:stele:problem:schema-violation",
        "{p}"
    );
    let pointers: Vec<&str> = p["errors"]
        .as_array()
        .context("errors")?
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    ensure!(
        pointers
            == [
                "/records/1/attributes/area_m2",
                "/records/3/subject",
                "/records/3/attributes/area_m2"
            ],
        "{p}"
    );
    let body = json!({"records": [land_record("XH-1", 1.0), {"type": "land.survey"}]});
    let (status, p) = f.post("/records/bulk", &f.land, &body).await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && p["type"] == "urn:stele:problem:unknown-type",
        "{p}"
    );
    ensure!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("records[1]"),
        "{p}"
    );
    ensure!(f.tree_size().await? == size, "a refused bulk appended");
    let state = f
        .audit()
        .await?
        .map_err(|a| anyhow::anyhow!("honest log alarmed: {a}"))?;
    ensure!(state.size == size);
    f.app.stop().await;
    Ok(())
}

fn log_config(name: &str, skey: &str) -> anyhow::Result<LogConfig> {
    let signer = Signer::from_skey(skey).map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(signer.name() == format!("stele.test/{name}"));
    Ok(LogConfig::for_signer(LogName::parse(name)?, signer))
}

async fn start(store: &TestStore, keys: &[(&str, String)]) -> anyhow::Result<Arc<Engine>> {
    let logs = keys
        .iter()
        .map(|(n, k)| log_config(n, k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = EngineConfig {
        max_wait: Duration::from_millis(2),
        ..EngineConfig::default()
    };
    let engine = Engine::start(
        store.open().await?.storage(),
        logs,
        config,
        Arc::new(Metrics::new()),
    )
    .await?;
    for _ in 0..500 {
        if engine.ready().await.is_ok() {
            return Ok(engine);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the engine did not become ready")
}

fn agency(name: &str, admin: bool) -> Agency {
    Agency {
        name: AgencyName::parse(name).unwrap(),
        types: vec![],
        registry_admin: admin,
        eraser: false,
    }
}

async fn grants_are_per_log_and_survive_a_restart(backend: Backend) -> TestResult {
    let store = TestStore::new(backend).await?;
    let keys: Vec<(&str, String)> = ["land", "health"]
        .iter()
        .map(|n| {
            let (_, skey) =
                Signer::generate(&format!("stele.test/{n}")).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok((*n, skey))
        })
        .collect::<anyhow::Result<_>>()?;
    let engine = start(&store, &keys).await?;
    let admin = agency("registrar", true);
    let land = agency("land-registry", false);
    let def = TypeDefinition::parse(LAND_V1)?;
    engine.apply_type("land", &admin, def.clone()).await?;
    let record = || {
        parse_record(br#"{"type":"land.transfer","subject":"XH-5","attributes":{"deed":"2026/5","area_m2":3}}"#)
            .unwrap()
    };
    let ok = engine.submit("land", &land, record()).await?;
    ensure!(ok.created);
    // The health log has no such type: the land registry cannot write it there.
    match engine.submit("health", &land, record()).await {
        Err(LogError::UnknownType(d)) => ensure!(d.contains("land.transfer"), "{d}"),
        other => bail!("writing into another log: {other:?}"),
    }
    // Even once the health log defines it, only its own writers may.
    let mut health_def = def.clone();
    health_def.writers = vec![stele::registry::Writer::Agency(AgencyName::parse(
        "hospital",
    )?)];
    engine.apply_type("health", &admin, health_def).await?;
    match engine.submit("health", &land, record()).await {
        Err(LogError::Forbidden(d)) => ensure!(d.contains("land-registry"), "{d}"),
        other => bail!("writing a type not granted in that log: {other:?}"),
    }
    // Only its registry entry.
    let health_size = engine
        .logs()
        .await
        .iter()
        .find(|l| l.name == "health")
        .map(|l| l.tree_size);
    ensure!(
        health_size == Some(1),
        "refusals appended to health: {health_size:?}"
    );

    // A new version, then a restart: the registry is rebuilt from the log.
    let mut v2 = def.clone();
    v2.version = 2;
    v2.writers = vec![];
    engine.apply_type("land", &admin, v2).await?;
    engine.shutdown().await;
    let engine = start(&store, &keys).await?;
    let (registry, _) = engine.registry("land")?;
    ensure!(
        registry.current("land.transfer").map(|t| t.def.version) == Some(2),
        "{registry:?}"
    );
    match engine.submit("land", &land, record()).await {
        // Version 2 grants nobody: the registry is checked before
        // deduplication, so even a repeat of an earlier record is refused.
        Err(LogError::Forbidden(_)) => {}
        other => bail!("version 2 grants nobody, after a restart: {other:?}"),
    }
    let mut v3 = def;
    v3.version = 3;
    engine.apply_type("land", &admin, v3).await?;
    let again = engine.submit("land", &land, record()).await?;
    ensure!(
        !again.created && again.index == ok.index,
        "a repeat is deduplicated"
    );
    engine.shutdown().await;
    store.finish().await?;
    Ok(())
}
