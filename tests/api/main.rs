//! The HTTP API, end to end over loopback, against both backends.
//!
//! Every test runs once on SQLite and once on a fresh PostgreSQL database
//! (`sqlite::…`, `postgres::…`), against an in-process server; `process::…`
//! runs `stele serve` itself. PostgreSQL tests are reported as ignored (with
//! the reason printed) when the server is unreachable, and FAIL instead when
//! `STELE_REQUIRE_POSTGRES=1`. Database URL: `STELE_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! After the steps that write, [`Ctx::check`] runs the invariant checker
//! through the public API (and the stored checkpoints), with every receipt
//! the test was given.
//!
//! The checked-in OpenAPI document is compared with the served one; to
//! regenerate it: `cargo run -- openapi > openapi/stele.json`.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stele::wire;
use stele_core::note::Verifier;
use stele_core::receipt::Receipt;
use stele_testkit::checker::{HttpView, LogChecker};
use stele_testkit::harness::{Needs, Suite, TestFn, TestResult};
use stele_testkit::server::{spawn_app, Backend, TestApp};
use tokio::sync::Mutex;

mod bad_input;
mod ops;
mod process;
mod reads;
mod records;

/// `anyhow::ensure!` for equality, showing both sides.
macro_rules! ensure_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            anyhow::bail!("{} != {}: {:?} vs {:?}", stringify!($a), stringify!($b), a, b);
        }
    }};
    ($a:expr, $b:expr, $($msg:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            anyhow::bail!("{} != {}: {:?} vs {:?} ({})", stringify!($a), stringify!($b), a, b, format!($($msg)+));
        }
    }};
}
pub(crate) use ensure_eq;

async fn run(backend: Backend, test: TestFn<Ctx>) -> TestResult {
    let ctx = Ctx::new(backend).await?;
    let engine = ctx.app.engine.clone();
    let result = test(ctx).await;
    engine.shutdown().await;
    result
}

fn main() {
    let mut suite = Suite::new();
    let tables = [records::TESTS, bad_input::TESTS, reads::TESTS, ops::TESTS];
    suite.per_backend_tables(Backend::ALL, &tables, run);
    suite.add_async(
        "process::serve_embedded_first_start_and_graceful_stop",
        Needs::Nothing,
        process::serve_embedded_first_start_and_graceful_stop,
    );
    suite.add_async(
        "process::serve_production_requires_a_key",
        Needs::Postgres,
        process::serve_production_requires_a_key,
    );
    suite.run()
}

/// What a test gets: the server, a client, and the checker watching the log.
pub struct Ctx {
    pub app: TestApp,
    http: reqwest::Client,
    checker: Mutex<LogChecker<HttpView>>,
}

/// An answer, read whole.
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Resp {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: reqwest::header::HeaderName) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Ctx {
    async fn new(backend: Backend) -> anyhow::Result<Self> {
        let app = spawn_app(backend).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let view = HttpView::new(&app.base_url, &app.log)?.with_storage(app.storage.clone());
        let checker = Mutex::new(LogChecker::new(view, &app.vkey)?);
        Ok(Ctx { app, http, checker })
    }

    /// The checker's full check of the log, with every receipt handed out
    /// so far; returns the checked tree size.
    pub async fn check(&self) -> anyhow::Result<u64> {
        let report = self.checker.lock().await.check_all().await?;
        ensure_eq!(self.tree_size().await?, report.checkpoint.size);
        Ok(report.checkpoint.size)
    }

    /// Hands receipts to the checker (each is verified offline at once).
    pub async fn keep<'a>(&self, receipts: impl IntoIterator<Item = &'a Receipt>) -> TestResult {
        let mut checker = self.checker.lock().await;
        for r in receipts {
            checker.add_receipt(r)?;
        }
        Ok(())
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        ct: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Resp> {
        let mut req = self.http.request(method, self.app.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = ct {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await?;
        Ok(Resp {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.bytes().await?,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Resp> {
        self.request(Method::GET, path, None, None, None).await
    }

    /// `/logs/<log>` + `rest`.
    pub fn log(&self, rest: &str) -> String {
        format!("/logs/{}{}", self.app.log, rest)
    }

    pub async fn submit_as(&self, token: &str, body: &Value) -> anyhow::Result<Resp> {
        let path = self.log("/records");
        self.request(
            Method::POST,
            &path,
            Some(token),
            Some("application/json"),
            Some(serde_json::to_vec(body)?),
        )
        .await
    }

    pub async fn submit(&self, body: &Value) -> anyhow::Result<Resp> {
        self.submit_as(&self.app.token, body).await
    }

    /// Submits and expects a new record; returns the receipt, which the
    /// checker verified and keeps.
    pub async fn submit_new(&self, body: &Value) -> anyhow::Result<Receipt> {
        let r = self.submit(body).await?;
        self.receipt(&r, StatusCode::CREATED).await
    }

    /// Submits `record(0..n)` one by one (the checker keeps every
    /// receipt), then checks the log, which must have `n` entries.
    pub async fn submit_records(&self, n: usize) -> anyhow::Result<Vec<Receipt>> {
        let mut receipts = Vec::with_capacity(n);
        for i in 0..n {
            receipts.push(self.submit_new(&record(i)).await?);
        }
        ensure_eq!(self.check().await?, n as u64);
        Ok(receipts)
    }

    /// The receipt `r` carries with status `status`; the checker verifies
    /// it offline and keeps it.
    pub async fn receipt(&self, r: &Resp, status: StatusCode) -> anyhow::Result<Receipt> {
        ensure_eq!(r.status, status, "{}", r.text());
        let receipt: Receipt = serde_json::from_value(r.json()?)?;
        self.keep([&receipt]).await?;
        Ok(receipt)
    }

    /// The receipts a bulk answer `r` carries with status `status`, in
    /// order; the checker verifies and keeps them.
    pub async fn receipts(&self, r: &Resp, status: StatusCode) -> anyhow::Result<Vec<Receipt>> {
        ensure_eq!(r.status, status, "{}", r.text());
        let answer: wire::Receipts = serde_json::from_slice(&r.body)?;
        self.keep(&answer.receipts).await?;
        Ok(answer.receipts)
    }

    pub async fn bulk(&self, records: Vec<Value>) -> anyhow::Result<Resp> {
        self.bulk_as(&self.app.token, records).await
    }

    pub async fn bulk_as(&self, token: &str, records: Vec<Value>) -> anyhow::Result<Resp> {
        let path = self.log("/records/bulk");
        let body = serde_json::to_vec(&json!({ "records": records }))?;
        self.request(
            Method::POST,
            &path,
            Some(token),
            Some("application/json"),
            Some(body),
        )
        .await
    }

    pub fn verifier(&self) -> Verifier {
        Verifier::from_vkey(&self.app.vkey).expect("the test server's vkey parses")
    }

    /// The log's size in `GET /logs`.
    pub async fn tree_size(&self) -> anyhow::Result<u64> {
        let logs: wire::Logs = serde_json::from_slice(&self.get("/logs").await?.body)?;
        logs.logs
            .iter()
            .find(|l| l.name == self.app.log)
            .map(|l| l.tree_size)
            .ok_or_else(|| anyhow::anyhow!("log missing from /logs: {logs:?}"))
    }
}

/// Checks a problem document: status, content type, `type`, and `field` if given.
pub fn check_problem(r: &Resp, status: StatusCode, slug: &str, field: Option<&str>) -> TestResult {
    ensure_eq!(r.status, status, "body {}", r.text());
    ensure_eq!(r.header(CONTENT_TYPE), "application/problem+json");
    let body = r.json()?;
    ensure_eq!(body["type"], format!("urn:stele:problem:{slug}"));
    ensure_eq!(body["status"], status.as_u16());
    if !body["detail"].is_string() {
        anyhow::bail!("problem without detail: {body}");
    }
    if let Some(field) = field {
        ensure_eq!(body["field"], field, "problem {body}");
    }
    Ok(())
}

pub fn record(i: usize) -> Value {
    json!({ "type": "land.transfer", "subject": format!("parcel-{i}"), "attributes": { "n": i } })
}
