//! The HTTP API, end to end over loopback, against both backends.
//!
//! Every test runs once on SQLite and once on a fresh PostgreSQL database.
//! PostgreSQL tests are reported as ignored (with the reason printed) when
//! the server is unreachable, and FAIL instead when
//! `STELE_REQUIRE_POSTGRES=1`. Database URL: `STELE_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! The checked-in OpenAPI document is compared with the served one; to
//! regenerate it: `cargo run -- openapi > openapi/stele.json`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stele_core::merkle::{verify_consistency, verify_inclusion};
use stele_core::note::{open_checkpoint, Verifier};
use stele_core::receipt::Receipt;
use stele_core::tile::decode_bundle;
use stele_core::{leaf_hash, Hash};
use stele_testkit::pg::pg_policy;
use stele_testkit::server::{spawn_app, Backend, TestApp};

type TestResult = anyhow::Result<()>;
type TestFn = fn(Ctx) -> Pin<Box<dyn Future<Output = TestResult>>>;

/// What a test gets: the server and a client.
struct Ctx {
    app: TestApp,
    http: reqwest::Client,
}

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), (|ctx| Box::pin($name(ctx))) as TestFn)),*]
    };
}

const TESTS: &[(&str, TestFn)] = tests![
    submit_returns_a_verifiable_receipt,
    duplicate_gets_200_and_the_same_receipt,
    agency_comes_from_the_token_not_the_body,
    bad_input_is_rejected_and_appends_nothing,
    revoked_token_is_401,
    wrong_record_type_is_403,
    bulk_submits_all_or_nothing,
    logs_and_checkpoint,
    tiles_full_and_partial,
    entries_by_index_and_hash,
    inclusion_and_consistency_proofs,
    health_ready_metrics,
    openapi_is_current_and_docs_are_served,
    json_with_charset_is_accepted,
    stopped_engine_answers_503_with_retry_after,
];

fn main() {
    let args = Arguments::from_args();
    let policy = pg_policy();
    let pg_names: Vec<String> = TESTS
        .iter()
        .map(|(name, _)| format!("postgres::{name}"))
        .collect();
    policy.announce(&pg_names);
    let mut trials = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for &(name, f) in TESTS {
            let is_pg = backend == Backend::Postgres;
            let skip = is_pg && policy.is_skip();
            let policy = policy.clone();
            let trial = Trial::test(format!("{}::{name}", backend.name()), move || {
                if is_pg {
                    policy.check()?;
                }
                run_one(backend, f)
            });
            trials.push(trial.with_ignored_flag(skip));
        }
    }
    trials.push(Trial::test(
        "process::serve_embedded_first_start_and_graceful_stop",
        || block_on(serve_embedded_first_start_and_graceful_stop()),
    ));
    let skip = policy.is_skip();
    trials.push(
        Trial::test("process::serve_production_requires_a_key", move || {
            policy.check()?;
            block_on(serve_production_requires_a_key())
        })
        .with_ignored_flag(skip),
    );
    libtest_mimic::run(&args, trials).exit();
}

fn block_on(f: impl Future<Output = TestResult>) -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?;
    rt.block_on(async move {
        match tokio::time::timeout(Duration::from_secs(240), f).await {
            Ok(r) => r.map_err(|e| Failed::from(format!("{e:#}"))),
            Err(_) => Err(Failed::from("timed out")),
        }
    })
}

fn run_one(backend: Backend, f: TestFn) -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?;
    rt.block_on(async move {
        let app = spawn_app(backend)
            .await
            .map_err(|e| Failed::from(format!("spawn_app: {e:#}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let engine = app.engine.clone();
        let result = tokio::time::timeout(Duration::from_secs(240), f(Ctx { app, http })).await;
        engine.shutdown().await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failed::from(format!("{e:#}"))),
            Err(_) => Err(Failed::from("timed out")),
        }
    })
}

// ---------------------------------------------------------------- helpers

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

struct Resp {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Resp {
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: reqwest::header::HeaderName) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Ctx {
    async fn request(
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

    async fn get(&self, path: &str) -> anyhow::Result<Resp> {
        self.request(Method::GET, path, None, None, None).await
    }

    fn log(&self, rest: &str) -> String {
        format!("/logs/{}{}", self.app.log, rest)
    }

    async fn submit_as(&self, token: &str, body: &Value) -> anyhow::Result<Resp> {
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

    async fn submit(&self, body: &Value) -> anyhow::Result<Resp> {
        self.submit_as(&self.app.token, body).await
    }

    /// Submits and expects a new record; returns the verified receipt.
    async fn submit_new(&self, body: &Value) -> anyhow::Result<Receipt> {
        let r = self.submit(body).await?;
        ensure_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let receipt: Receipt = serde_json::from_value(r.json()?)?;
        receipt
            .verify(&self.verifier())
            .map_err(|e| anyhow::anyhow!("receipt does not verify: {e}"))?;
        Ok(receipt)
    }

    async fn bulk(&self, records: Vec<Value>) -> anyhow::Result<Resp> {
        let path = self.log("/records/bulk");
        let body = serde_json::to_vec(&json!({ "records": records }))?;
        self.request(
            Method::POST,
            &path,
            Some(&self.app.token),
            Some("application/json"),
            Some(body),
        )
        .await
    }

    fn verifier(&self) -> Verifier {
        Verifier::from_vkey(&self.app.vkey).expect("the test server's vkey parses")
    }

    async fn tree_size(&self) -> anyhow::Result<u64> {
        let logs = self.get("/logs").await?.json()?;
        logs["logs"]
            .as_array()
            .and_then(|a| a.iter().find(|l| l["name"] == self.app.log.as_str()))
            .and_then(|l| l["tree_size"].as_u64())
            .ok_or_else(|| anyhow::anyhow!("log missing from /logs: {logs}"))
    }
}

/// Checks a problem document: status, content type, `type`, and `field` if given.
fn check_problem(r: &Resp, status: StatusCode, slug: &str, field: Option<&str>) -> TestResult {
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

fn record(i: usize) -> Value {
    json!({ "type": "land.transfer", "subject": format!("parcel-{i}"), "attributes": { "n": i } })
}

fn hashes(v: &Value) -> anyhow::Result<Vec<Hash>> {
    v.as_array()
        .ok_or_else(|| anyhow::anyhow!("not an array: {v}"))?
        .iter()
        .map(|h| Hash::from_hex(h.as_str().unwrap_or("")).map_err(|e| anyhow::anyhow!("{e}")))
        .collect()
}

// ---------------------------------------------------------------- tests

async fn submit_returns_a_verifiable_receipt(ctx: Ctx) -> TestResult {
    let receipt = ctx
        .submit_new(&json!({"type": "land.transfer", "subject": "parcel-1"}))
        .await?;
    ensure_eq!(receipt.index, 0);
    ensure_eq!(receipt.log, ctx.app.origin);
    let leaf: Value = serde_json::from_str(&receipt.leaf)?;
    ensure_eq!(leaf["agency"], "test-agency");
    ensure_eq!(leaf["type"], "land.transfer");
    ensure_eq!(leaf["subject"], "parcel-1");
    ensure_eq!(leaf["v"], 1);
    let second = ctx
        .submit_new(&json!({"type": "land.transfer", "subject": "parcel-2"}))
        .await?;
    ensure_eq!(second.index, 1);
    ensure_eq!(ctx.tree_size().await?, 2);
    Ok(())
}

async fn duplicate_gets_200_and_the_same_receipt(ctx: Ctx) -> TestResult {
    let body = json!({"type": "health.vaccination", "content_hash": format!("sha256:{}", "ab".repeat(32))});
    let first = ctx.submit_new(&body).await?;
    let again = ctx.submit(&body).await?;
    ensure_eq!(again.status, StatusCode::OK, "{}", again.text());
    let again: Receipt = serde_json::from_value(again.json()?)?;
    again
        .verify(&ctx.verifier())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure_eq!(again.index, first.index);
    ensure_eq!(again.leaf, first.leaf);
    ensure_eq!(ctx.tree_size().await?, 1);
    // The same body from another agency is a different record.
    let other = ctx.app.add_agency("other-agency", &[]).await?;
    let r = ctx.submit_as(&other, &body).await?;
    ensure_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    ensure_eq!(ctx.tree_size().await?, 2);
    Ok(())
}

async fn agency_comes_from_the_token_not_the_body(ctx: Ctx) -> TestResult {
    let r = ctx
        .submit(&json!({"type": "land.transfer", "agency": "someone-else"}))
        .await?;
    check_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-field",
        Some("agency"),
    )?;
    ensure_eq!(ctx.tree_size().await?, 0);
    let other = ctx.app.add_agency("land-registry", &[]).await?;
    let receipt = {
        let r = ctx
            .submit_as(&other, &json!({"type": "land.transfer"}))
            .await?;
        ensure_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        serde_json::from_value::<Receipt>(r.json()?)?
    };
    let leaf: Value = serde_json::from_str(&receipt.leaf)?;
    ensure_eq!(leaf["agency"], "land-registry");
    Ok(())
}

/// One malformed request: what is sent, and the problem expected.
struct Bad {
    name: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: StatusCode,
    slug: &'static str,
    field: Option<&'static str>,
}

async fn bad_input_is_rejected_and_appends_nothing(ctx: Ctx) -> TestResult {
    // Two records, so that "beyond the log" and "index >= tree_size" have
    // something to be beyond.
    let r0 = ctx.submit_new(&record(0)).await?;
    ctx.submit_new(&record(1)).await?;
    let token = ctx.app.token.clone();
    let json_ct = Some("application/json");
    let post = |name, body: &[u8], status, slug, field| Bad {
        name,
        method: Method::POST,
        path: ctx.log("/records"),
        token: Some(token.clone()),
        content_type: json_ct,
        body: Some(body.to_vec()),
        status,
        slug,
        field,
    };
    let get = |name, path: String, status, slug, field| Bad {
        name,
        method: Method::GET,
        path,
        token: None,
        content_type: None,
        body: None,
        status,
        slug,
        field,
    };
    use StatusCode as S;
    let big_attrs = serde_json::to_vec(
        &json!({"type": "land.transfer", "attributes": {"blob": "x".repeat(9 * 1024)}}),
    )?;
    let big_body =
        serde_json::to_vec(&json!({"type": "land.transfer", "subject": "x".repeat(70 * 1024)}))?;
    let bad_hex = "zz".repeat(32);
    let unknown_hash = "ab".repeat(32);
    let cases = vec![
        post(
            "malformed JSON",
            b"{\"type\": ",
            S::BAD_REQUEST,
            "malformed",
            None,
        ),
        post("empty body", b"", S::BAD_REQUEST, "malformed", None),
        post("array body", b"[1,2]", S::BAD_REQUEST, "malformed", None),
        post(
            "string body",
            b"\"land.transfer\"",
            S::BAD_REQUEST,
            "malformed",
            None,
        ),
        post("null body", b"null", S::BAD_REQUEST, "malformed", None),
        post(
            "invalid UTF-8",
            b"{\"type\": \"land.\xff\xfe\"}",
            S::BAD_REQUEST,
            "malformed",
            None,
        ),
        post(
            "type is a number",
            br#"{"type": 5}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("type"),
        ),
        post(
            "subject is a number",
            br#"{"type": "land.transfer", "subject": 5}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("subject"),
        ),
        post(
            "attributes not an object",
            br#"{"type": "land.transfer", "attributes": [1]}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("attributes"),
        ),
        post(
            "missing type",
            br#"{"subject": "x"}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("type"),
        ),
        post(
            "unknown field",
            br#"{"type": "land.transfer", "color": "red"}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("color"),
        ),
        post(
            "ts from the body",
            br#"{"type": "land.transfer", "ts": "2020-01-01T00:00:00.000Z"}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("ts"),
        ),
        post(
            "bad type",
            br#"{"type": "Land Transfer!"}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("type"),
        ),
        post(
            "bad content_hash",
            br#"{"type": "land.transfer", "content_hash": "md5:abc"}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("content_hash"),
        ),
        post(
            "oversized body",
            &big_body,
            S::PAYLOAD_TOO_LARGE,
            "too-large",
            None,
        ),
        post(
            "oversized attributes",
            &big_attrs,
            S::PAYLOAD_TOO_LARGE,
            "too-large",
            None,
        ),
        Bad {
            token: None,
            ..post(
                "missing token",
                br#"{"type": "land.transfer"}"#,
                S::UNAUTHORIZED,
                "unauthorized",
                None,
            )
        },
        Bad {
            token: Some("test-agency.AAAA".into()),
            ..post(
                "wrong token",
                br#"{"type": "land.transfer"}"#,
                S::UNAUTHORIZED,
                "unauthorized",
                None,
            )
        },
        Bad {
            token: Some("garbage".into()),
            ..post(
                "malformed token",
                br#"{"type": "land.transfer"}"#,
                S::UNAUTHORIZED,
                "unauthorized",
                None,
            )
        },
        Bad {
            content_type: Some("text/plain"),
            ..post(
                "text/plain",
                br#"{"type": "land.transfer"}"#,
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                None,
            )
        },
        Bad {
            content_type: None,
            ..post(
                "no content type",
                br#"{"type": "land.transfer"}"#,
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                None,
            )
        },
        Bad {
            path: "/logs/no-such-log/records".into(),
            ..post(
                "unknown log",
                br#"{"type": "land.transfer"}"#,
                S::NOT_FOUND,
                "not-found",
                None,
            )
        },
        Bad {
            path: ctx.log("/records/bulk"),
            ..post(
                "bulk with one bad record",
                br#"{"records": [{"type": "land.transfer"}, {"type": 7}]}"#,
                S::UNPROCESSABLE_ENTITY,
                "invalid-field",
                Some("records[1].type"),
            )
        },
        Bad {
            path: ctx.log("/records/bulk"),
            ..post(
                "bulk not an object",
                b"[]",
                S::BAD_REQUEST,
                "malformed",
                None,
            )
        },
        get(
            "unknown log checkpoint",
            "/logs/no-such-log/checkpoint".into(),
            S::NOT_FOUND,
            "not-found",
            None,
        ),
        get(
            "bad hex leaf_hash",
            ctx.log(&format!("/entries?leaf_hash={bad_hex}")),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("leaf_hash"),
        ),
        get(
            "short leaf_hash",
            ctx.log("/entries?leaf_hash=abcd"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("leaf_hash"),
        ),
        get(
            "missing leaf_hash",
            ctx.log("/entries"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("leaf_hash"),
        ),
        get(
            "unknown leaf_hash",
            ctx.log(&format!("/entries?leaf_hash={unknown_hash}")),
            S::NOT_FOUND,
            "not-found",
            None,
        ),
        get(
            "bad hex leaf_hash in proof",
            ctx.log(&format!("/proofs/inclusion?leaf_hash={bad_hex}")),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("leaf_hash"),
        ),
        get(
            "negative index",
            ctx.log("/entries/-1"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("index"),
        ),
        get(
            "non-numeric index",
            ctx.log("/entries/abc"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("index"),
        ),
        get(
            "index 2^63",
            ctx.log("/entries/9223372036854775808"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("index"),
        ),
        get(
            "index beyond u64",
            ctx.log("/entries/99999999999999999999999"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("index"),
        ),
        get(
            "index beyond the log",
            ctx.log("/entries/2"),
            S::NOT_FOUND,
            "not-found",
            None,
        ),
        get(
            "negative proof index",
            ctx.log("/proofs/inclusion?index=-1"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("index"),
        ),
        get(
            "huge proof index",
            ctx.log("/proofs/inclusion?index=18446744073709551615"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("index"),
        ),
        get(
            "index >= tree_size",
            ctx.log("/proofs/inclusion?index=1&tree_size=1"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            None,
        ),
        get(
            "tree_size beyond the log",
            ctx.log("/proofs/inclusion?index=0&tree_size=3"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("tree_size"),
        ),
        get(
            "inclusion without locator",
            ctx.log("/proofs/inclusion"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            None,
        ),
        get(
            "unknown query parameter",
            ctx.log("/proofs/inclusion?index=0&color=red"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("color"),
        ),
        get(
            "from > to",
            ctx.log("/proofs/consistency?from=2&to=1"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            None,
        ),
        get(
            "to beyond the log",
            ctx.log("/proofs/consistency?from=1&to=3"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            None,
        ),
        get(
            "negative from",
            ctx.log("/proofs/consistency?from=-1"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("from"),
        ),
        get(
            "missing from",
            ctx.log("/proofs/consistency"),
            S::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some("from"),
        ),
        get(
            "non-canonical tile path",
            ctx.log("/tile/0/1"),
            S::NOT_FOUND,
            "not-found",
            None,
        ),
        get(
            "tile beyond the tree",
            ctx.log("/tile/0/005"),
            S::NOT_FOUND,
            "not-found",
            None,
        ),
        get(
            "unknown route",
            "/nope".into(),
            S::NOT_FOUND,
            "not-found",
            None,
        ),
        Bad {
            method: Method::DELETE,
            ..get(
                "wrong method",
                "/logs".into(),
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                None,
            )
        },
        Bad {
            method: Method::GET,
            ..get(
                "GET on records",
                ctx.log("/records"),
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                None,
            )
        },
    ];
    let mut failures = Vec::new();
    for case in cases {
        let r = ctx
            .request(
                case.method.clone(),
                &case.path,
                case.token.as_deref(),
                case.content_type,
                case.body.clone(),
            )
            .await?;
        let mut outcome = check_problem(&r, case.status, case.slug, case.field);
        if outcome.is_ok()
            && case.status == S::UNAUTHORIZED
            && !r.header(WWW_AUTHENTICATE).starts_with("Bearer")
        {
            outcome = Err(anyhow::anyhow!("401 without WWW-Authenticate: Bearer"));
        }
        if let Err(e) = outcome {
            failures.push(format!("{}: {e:#}", case.name));
        }
        let size = ctx.tree_size().await?;
        if size != 2 {
            failures.push(format!("{}: tree size changed to {size}", case.name));
            break;
        }
    }
    // The log still works and still proves the first record.
    let r = ctx.get(&ctx.log("/proofs/inclusion?index=0")).await?;
    ensure_eq!(r.status, StatusCode::OK, "{}", r.text());
    ensure_eq!(r.json()?["leaf_hash"], r0.leaf_hash);
    if !failures.is_empty() {
        anyhow::bail!(
            "{} case(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

async fn revoked_token_is_401(ctx: Ctx) -> TestResult {
    let token = ctx.app.add_agency("leaving", &[]).await?;
    let r = ctx.submit_as(&token, &record(0)).await?;
    ensure_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    ensure_eq!(ctx.app.storage.revoke_agency("leaving").await?, true);
    let r = ctx.submit_as(&token, &record(1)).await?;
    check_problem(&r, StatusCode::UNAUTHORIZED, "unauthorized", None)?;
    if !r.header(WWW_AUTHENTICATE).starts_with("Bearer") {
        anyhow::bail!("401 without WWW-Authenticate: Bearer");
    }
    ensure_eq!(ctx.tree_size().await?, 1);
    Ok(())
}

async fn wrong_record_type_is_403(ctx: Ctx) -> TestResult {
    let token = ctx.app.add_agency("land-office", &["land.*"]).await?;
    let r = ctx
        .submit_as(&token, &json!({"type": "health.vaccination"}))
        .await?;
    check_problem(&r, StatusCode::FORBIDDEN, "forbidden", None)?;
    ensure_eq!(ctx.tree_size().await?, 0);
    let r = ctx
        .submit_as(&token, &json!({"type": "land.transfer"}))
        .await?;
    ensure_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // In bulk, one forbidden record rejects all.
    let path = ctx.log("/records/bulk");
    let body = serde_json::to_vec(
        &json!({"records": [{"type": "land.lease"}, {"type": "parking.status"}]}),
    )?;
    let r = ctx
        .request(
            Method::POST,
            &path,
            Some(&token),
            Some("application/json"),
            Some(body),
        )
        .await?;
    check_problem(&r, StatusCode::FORBIDDEN, "forbidden", None)?;
    ensure_eq!(ctx.tree_size().await?, 1);
    Ok(())
}

async fn bulk_submits_all_or_nothing(ctx: Ctx) -> TestResult {
    let records: Vec<Value> = (0..10).map(record).collect();
    let r = ctx.bulk(records.clone()).await?;
    ensure_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = r.json()?;
    let receipts: Vec<Receipt> = serde_json::from_value(body["receipts"].clone())?;
    ensure_eq!(receipts.len(), 10);
    let mut indexes: Vec<u64> = receipts.iter().map(|r| r.index).collect();
    for r in &receipts {
        r.verify(&ctx.verifier())
            .map_err(|e| anyhow::anyhow!("bulk receipt {}: {e}", r.index))?;
    }
    indexes.sort_unstable();
    ensure_eq!(indexes, (0..10).collect::<Vec<u64>>());
    for (i, r) in receipts.iter().enumerate() {
        let leaf: Value = serde_json::from_str(&r.leaf)?;
        ensure_eq!(
            leaf["subject"],
            format!("parcel-{i}"),
            "receipts are in request order"
        );
    }
    // The same batch again: all duplicates, same indexes.
    let r = ctx.bulk(records).await?;
    ensure_eq!(r.status, StatusCode::OK, "{}", r.text());
    let again: Vec<Receipt> = serde_json::from_value(r.json()?["receipts"].clone())?;
    ensure_eq!(
        again.iter().map(|r| r.index).collect::<Vec<_>>(),
        receipts.iter().map(|r| r.index).collect::<Vec<_>>()
    );
    // One bad record: nothing appended.
    let mut mixed: Vec<Value> = (10..15).map(record).collect();
    mixed.push(json!({"type": "land.transfer", "unknown": true}));
    let r = ctx.bulk(mixed).await?;
    check_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-field",
        Some("records[5].unknown"),
    )?;
    ensure_eq!(ctx.tree_size().await?, 10);
    // Too many records.
    let r = ctx.bulk((0..1001).map(record).collect()).await?;
    check_problem(&r, StatusCode::PAYLOAD_TOO_LARGE, "too-large", None)?;
    ensure_eq!(ctx.tree_size().await?, 10);
    Ok(())
}

async fn logs_and_checkpoint(ctx: Ctx) -> TestResult {
    let logs = ctx.get("/logs").await?;
    ensure_eq!(logs.status, StatusCode::OK);
    ensure_eq!(logs.header(CONTENT_TYPE), "application/json");
    let logs = logs.json()?;
    ensure_eq!(logs["logs"][0]["name"], ctx.app.log);
    ensure_eq!(logs["logs"][0]["origin"], ctx.app.origin);
    ensure_eq!(logs["logs"][0]["vkey"], ctx.app.vkey);
    ensure_eq!(logs["logs"][0]["tree_size"], 0);
    for i in 0..3 {
        ctx.submit_new(&record(i)).await?;
    }
    let r = ctx.get(&ctx.log("/checkpoint")).await?;
    ensure_eq!(r.status, StatusCode::OK);
    ensure_eq!(r.header(CONTENT_TYPE), "text/plain; charset=utf-8");
    let cc = r.header(CACHE_CONTROL);
    if !(cc.contains("no-cache") || cc.contains("max-age=")) || cc.contains("immutable") {
        anyhow::bail!("checkpoint Cache-Control {cc:?}");
    }
    let cp = open_checkpoint(&r.text(), &ctx.verifier())
        .map_err(|e| anyhow::anyhow!("checkpoint: {e}"))?;
    ensure_eq!(cp.size, 3);
    ensure_eq!(cp.origin, ctx.app.origin);
    ensure_eq!(ctx.tree_size().await?, 3);
    Ok(())
}

async fn tiles_full_and_partial(ctx: Ctx) -> TestResult {
    // 300 records: one full level-0 tile and bundle, one partial of 44.
    for chunk in (0..300).collect::<Vec<_>>().chunks(150) {
        let r = ctx.bulk(chunk.iter().map(|&i| record(i)).collect()).await?;
        ensure_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    let first = ctx.get(&ctx.log("/entries/0")).await?.json()?;

    let full = ctx.get(&ctx.log("/tile/0/000")).await?;
    ensure_eq!(full.status, StatusCode::OK, "{}", full.text());
    ensure_eq!(full.header(CONTENT_TYPE), "application/octet-stream");
    ensure_eq!(
        full.header(CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    ensure_eq!(full.body.len(), 256 * 32);
    ensure_eq!(
        hex::encode(&full.body[..32]),
        first["leaf_hash"].as_str().unwrap_or("")
    );

    let partial = ctx.get(&ctx.log("/tile/0/001.p/44")).await?;
    ensure_eq!(partial.status, StatusCode::OK, "{}", partial.text());
    ensure_eq!(partial.body.len(), 44 * 32);
    let cc = partial.header(CACHE_CONTROL);
    if cc.contains("immutable") || !cc.contains("max-age=") {
        anyhow::bail!("partial tile Cache-Control {cc:?}");
    }

    let bundle = ctx.get(&ctx.log("/tile/entries/000")).await?;
    ensure_eq!(bundle.status, StatusCode::OK, "{}", bundle.text());
    ensure_eq!(
        bundle.header(CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    let leaves = decode_bundle(&bundle.body).map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure_eq!(leaves.len(), 256);
    ensure_eq!(
        std::str::from_utf8(leaves[0])?,
        first["leaf"].as_str().unwrap_or("")
    );
    ensure_eq!(
        leaf_hash(leaves[0]).to_hex(),
        first["leaf_hash"].as_str().unwrap_or("")
    );

    let partial_bundle = ctx.get(&ctx.log("/tile/entries/001.p/44")).await?;
    ensure_eq!(
        partial_bundle.status,
        StatusCode::OK,
        "{}",
        partial_bundle.text()
    );
    ensure_eq!(
        decode_bundle(&partial_bundle.body)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .len(),
        44
    );

    let level1 = ctx.get(&ctx.log("/tile/1/000.p/1")).await?;
    ensure_eq!(level1.status, StatusCode::OK, "{}", level1.text());
    ensure_eq!(level1.body.len(), 32);
    Ok(())
}

async fn entries_by_index_and_hash(ctx: Ctx) -> TestResult {
    let mut receipts = Vec::new();
    for i in 0..3 {
        receipts.push(ctx.submit_new(&record(i)).await?);
    }
    for r in &receipts {
        let e = ctx.get(&ctx.log(&format!("/entries/{}", r.index))).await?;
        ensure_eq!(e.status, StatusCode::OK, "{}", e.text());
        let e = e.json()?;
        ensure_eq!(e["index"], r.index);
        ensure_eq!(e["leaf"], r.leaf);
        ensure_eq!(e["leaf_hash"], r.leaf_hash);
        let by_hash = ctx
            .get(&ctx.log(&format!("/entries?leaf_hash={}", r.leaf_hash)))
            .await?;
        ensure_eq!(by_hash.status, StatusCode::OK, "{}", by_hash.text());
        ensure_eq!(by_hash.json()?, e);
    }
    Ok(())
}

async fn inclusion_and_consistency_proofs(ctx: Ctx) -> TestResult {
    let mut receipts = Vec::new();
    for i in 0..7 {
        receipts.push(ctx.submit_new(&record(i)).await?);
    }
    let verifier = ctx.verifier();
    let latest = open_checkpoint(&ctx.get(&ctx.log("/checkpoint")).await?.text(), &verifier)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure_eq!(latest.size, 7);
    let r3 = &receipts[3];
    let lh = Hash::from_hex(&r3.leaf_hash).map_err(|e| anyhow::anyhow!("{e}"))?;
    for query in [
        format!("index={}", r3.index),
        format!("leaf_hash={}", r3.leaf_hash),
    ] {
        let p = ctx
            .get(&ctx.log(&format!("/proofs/inclusion?{query}")))
            .await?;
        ensure_eq!(p.status, StatusCode::OK, "{}", p.text());
        let p = p.json()?;
        ensure_eq!(p["index"], 3);
        ensure_eq!(p["tree_size"], 7);
        ensure_eq!(p["leaf_hash"], r3.leaf_hash);
        let cp = open_checkpoint(p["checkpoint"].as_str().unwrap_or(""), &verifier)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure_eq!(cp.size, 7);
        verify_inclusion(&lh, 3, 7, &hashes(&p["inclusion_proof"])?, &cp.root)
            .map_err(|e| anyhow::anyhow!("inclusion ({query}): {e}"))?;
    }
    // Against an older size: the checkpoint the log signed there.
    let p = ctx
        .get(&ctx.log("/proofs/inclusion?index=3&tree_size=5"))
        .await?;
    ensure_eq!(p.status, StatusCode::OK, "{}", p.text());
    let p = p.json()?;
    ensure_eq!(p["tree_size"], 5);
    let cp5 =
        open_checkpoint(&receipts[4].checkpoint, &verifier).map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure_eq!(cp5.size, 5, "receipt 4 was covered by checkpoint 5");
    verify_inclusion(&lh, 3, 5, &hashes(&p["inclusion_proof"])?, &cp5.root)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Consistency from every receipt's checkpoint to the latest.
    for r in &receipts {
        let old = open_checkpoint(&r.checkpoint, &verifier).map_err(|e| anyhow::anyhow!("{e}"))?;
        let c = ctx
            .get(&ctx.log(&format!("/proofs/consistency?from={}", old.size)))
            .await?;
        ensure_eq!(c.status, StatusCode::OK, "{}", c.text());
        let c = c.json()?;
        ensure_eq!(c["from"], old.size);
        ensure_eq!(c["to"], 7);
        verify_consistency(
            old.size,
            7,
            &old.root,
            &latest.root,
            &hashes(&c["consistency_proof"])?,
        )
        .map_err(|e| anyhow::anyhow!("consistency {} -> 7: {e}", old.size))?;
    }
    let c = ctx.get(&ctx.log("/proofs/consistency?from=2&to=5")).await?;
    ensure_eq!(c.status, StatusCode::OK, "{}", c.text());
    let c = c.json()?;
    let cp2 =
        open_checkpoint(&receipts[1].checkpoint, &verifier).map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure_eq!(cp2.size, 2);
    verify_consistency(
        2,
        5,
        &cp2.root,
        &cp5.root,
        &hashes(&c["consistency_proof"])?,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

async fn health_ready_metrics(ctx: Ctx) -> TestResult {
    let h = ctx.get("/healthz").await?;
    ensure_eq!(h.status, StatusCode::OK);
    if h.header(reqwest::header::HeaderName::from_static("x-request-id"))
        .is_empty()
    {
        anyhow::bail!("no x-request-id on the response");
    }
    let r = ctx.get("/readyz").await?;
    ensure_eq!(r.status, StatusCode::OK, "{}", r.text());
    ctx.submit_new(&record(0)).await?;
    let _ = ctx.get("/nope").await?;
    let m = ctx.get("/metrics").await?;
    ensure_eq!(m.status, StatusCode::OK);
    if !m
        .header(CONTENT_TYPE)
        .starts_with("text/plain; version=0.0.4")
    {
        anyhow::bail!("metrics content type {:?}", m.header(CONTENT_TYPE));
    }
    let text = m.text();
    for name in [
        "stele_submissions",
        "stele_batch_size",
        "stele_time_to_receipt_seconds",
        "stele_queue_depth",
        "stele_tree_size",
        // By route template (a bounded set), never by raw path.
        "stele_http_requests_total{method=\"POST\",route=\"/logs/{log}/records\",status=\"201\"} 1",
        "stele_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
    ] {
        if !text.contains(name) {
            anyhow::bail!("metrics lack {name:?}:\n{text}");
        }
    }
    // A 503 from readiness would carry Retry-After; when ready there is none.
    ensure_eq!(r.header(RETRY_AFTER), "");
    Ok(())
}

async fn openapi_is_current_and_docs_are_served(ctx: Ctx) -> TestResult {
    let r = ctx.get("/openapi.json").await?;
    ensure_eq!(r.status, StatusCode::OK);
    ensure_eq!(r.header(CONTENT_TYPE), "application/json");
    let doc = r.json()?;
    if !doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1"))
    {
        anyhow::bail!("not OpenAPI 3.1: {}", doc["openapi"]);
    }
    for path in [
        "/logs/{log}/records",
        "/logs/{log}/records/bulk",
        "/logs/{log}/proofs/inclusion",
        "/logs/{log}/tile/{path}",
    ] {
        if doc["paths"][path].is_null() {
            anyhow::bail!("OpenAPI document lacks {path}");
        }
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/stele.json");
    if std::env::var("STELE_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&file, &r.body)?;
    }
    let checked_in = std::fs::read(&file).unwrap_or_default();
    if checked_in != r.body {
        anyhow::bail!("openapi/stele.json is stale; regenerate it with: cargo run -- openapi > openapi/stele.json");
    }
    let docs = ctx.get("/docs").await?;
    ensure_eq!(docs.status, StatusCode::OK);
    if !docs.header(CONTENT_TYPE).starts_with("text/html") || !docs.text().contains("swagger-ui") {
        anyhow::bail!("/docs is not the docs page");
    }
    for (asset, ct) in [
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui.css", "text/css"),
        ("/docs/init.js", "text/javascript"),
    ] {
        let a = ctx.get(asset).await?;
        ensure_eq!(a.status, StatusCode::OK, "{asset}");
        if !a.header(CONTENT_TYPE).starts_with(ct) || a.body.len() < 100 {
            anyhow::bail!(
                "{asset}: {:?}, {} bytes",
                a.header(CONTENT_TYPE),
                a.body.len()
            );
        }
        if !docs.text().contains(asset.trim_start_matches('/')) {
            anyhow::bail!("/docs does not reference {asset}");
        }
    }
    Ok(())
}

async fn json_with_charset_is_accepted(ctx: Ctx) -> TestResult {
    let path = ctx.log("/records");
    let body = serde_json::to_vec(&record(0))?;
    let token = ctx.app.token.clone();
    for (i, ct) in ["application/json; charset=utf-8", "Application/JSON"]
        .into_iter()
        .enumerate()
    {
        let body = serde_json::to_vec(&record(i))?;
        let r = ctx
            .request(Method::POST, &path, Some(&token), Some(ct), Some(body))
            .await?;
        ensure_eq!(r.status, StatusCode::CREATED, "{ct}: {}", r.text());
    }
    for ct in ["application/problem+json", "application/jsonx", "text/json"] {
        let r = ctx
            .request(
                Method::POST,
                &path,
                Some(&token),
                Some(ct),
                Some(body.clone()),
            )
            .await?;
        check_problem(
            &r,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            None,
        )?;
    }
    ensure_eq!(ctx.tree_size().await?, 2);
    Ok(())
}

async fn stopped_engine_answers_503_with_retry_after(ctx: Ctx) -> TestResult {
    ctx.submit_new(&record(0)).await?;
    ctx.app.engine.shutdown().await;
    let r = ctx.get("/readyz").await?;
    check_problem(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable", None)?;
    if r.header(RETRY_AFTER)
        .parse::<u64>()
        .map_or(true, |s| s == 0)
    {
        anyhow::bail!("readyz 503 without Retry-After");
    }
    let r = ctx.submit(&record(1)).await?;
    check_problem(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable", None)?;
    if r.header(RETRY_AFTER)
        .parse::<u64>()
        .map_or(true, |s| s == 0)
    {
        anyhow::bail!("submission 503 without Retry-After");
    }
    // Reads still work.
    ensure_eq!(ctx.tree_size().await?, 1);
    let h = ctx.get("/healthz").await?;
    ensure_eq!(h.status, StatusCode::OK);
    Ok(())
}

// ------------------------------------------------- `stele serve` processes

/// A `stele serve` child process listening on a free port.
struct ServeProcess {
    child: std::process::Child,
    stderr: std::path::PathBuf,
    base_url: String,
}

/// The trimmed standard output of a command that must have succeeded.
fn stdout_of_success(out: std::process::Output) -> anyhow::Result<String> {
    ensure_eq!(
        out.status.success(),
        true,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn stele(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stele"));
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("STELE_CONFIG")
        .env_remove("STELE_DATABASE_URL")
        .env_remove("STELE_DATA_DIR")
        .env("STELE_LOG", "info");
    cmd
}

impl ServeProcess {
    async fn start(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<ServeProcess> {
        let n = std::fs::read_dir(dir)?.count();
        let stderr = dir.join(format!("serve-{n}.err"));
        let addr_file = dir.join(format!("serve-{n}.addr"));
        let mut child = stele(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        for _ in 0..600 {
            if let Ok(addr) = std::fs::read_to_string(&addr_file) {
                return Ok(ServeProcess {
                    child,
                    stderr,
                    base_url: format!("http://{}", addr.trim()),
                });
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "stele serve exited with {status}: {}",
                    std::fs::read_to_string(&stderr)?
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        anyhow::bail!("stele serve did not write its address file in 60 s")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then wait for the exit status.
    async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        anyhow::bail!("stele serve did not stop within 30 s of SIGTERM")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post_record(
    base_url: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let r = reqwest::Client::new()
        .post(format!("{base_url}/logs/default/records"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    Ok((status, r.json().await?))
}

async fn serve_embedded_first_start_and_graceful_stop() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap_or_default();
    let server = ServeProcess::start(dir.path(), &["--data-dir", data_arg]).await?;
    let err = server.stderr();
    let token = err
        .split_whitespace()
        .find(|w| w.starts_with("demo."))
        .ok_or_else(|| anyhow::anyhow!("no demo token on first start:\n{err}"))?
        .to_string();
    if !err.contains("listening on http://") || !err.contains("generated a signing key") {
        anyhow::bail!("start-up log lacks the address or the key:\n{err}");
    }
    let skey = std::fs::read_to_string(data.join("keys/default.skey"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("keys/default.skey"))?
            .permissions()
            .mode();
        ensure_eq!(mode & 0o777, 0o600);
    }
    let signer =
        stele_core::note::Signer::from_skey(skey.trim()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let verifier = Verifier::from_vkey(&signer.vkey()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = json!({"type": "land.transfer", "subject": "parcel-9"});
    let (status, receipt) = post_record(&server.base_url, &token, &body).await?;
    ensure_eq!(status, StatusCode::CREATED, "{receipt}");
    let receipt: Receipt = serde_json::from_value(receipt)?;
    receipt
        .verify(&verifier)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let status = server.terminate().await?;
    if !status.success() {
        anyhow::bail!("stele serve exited with {status} after SIGTERM");
    }

    // Second start: same key, same log, no new demo token.
    let server = ServeProcess::start(dir.path(), &["--data-dir", data_arg]).await?;
    if server.stderr().contains("demo.") {
        anyhow::bail!("a second start printed a token again:\n{}", server.stderr());
    }
    let (status, again) = post_record(&server.base_url, &token, &body).await?;
    ensure_eq!(status, StatusCode::OK, "{again}");
    ensure_eq!(again["index"], 0);
    let status = server.terminate().await?;
    if !status.success() {
        anyhow::bail!("stele serve exited with {status} after SIGTERM");
    }
    Ok(())
}

async fn serve_production_requires_a_key() -> TestResult {
    let db = stele_testkit::pg::fresh_database().await?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("keys/default.skey");
    let key_arg = key.to_str().unwrap_or_default().to_string();
    std::fs::write(
        dir.path().join("stele.toml"),
        format!("[[logs]]\nname = \"default\"\norigin = \"records.example.gov/default\"\nkey_file = {key_arg:?}\n"),
    )?;
    let common = ["--config", "stele.toml", "--database-url", db.url.as_str()];

    // No key: refuse to start, and say how to make one.
    let out = stele(dir.path()).arg("serve").args(common).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !err.contains("stele keygen") {
        anyhow::bail!("production start without a key: {} / {err}", out.status);
    }
    if key.exists() {
        anyhow::bail!("production mode created a key file");
    }

    let out = stele(dir.path())
        .args([
            "keygen",
            "--origin",
            "records.example.gov/default",
            "--out",
            &key_arg,
        ])
        .output()?;
    let vkey = stdout_of_success(out)?;
    let verifier = Verifier::from_vkey(&vkey).map_err(|e| anyhow::anyhow!("{vkey:?}: {e}"))?;

    let server = ServeProcess::start(dir.path(), &common).await?;
    if server.stderr().contains("demo.") {
        anyhow::bail!(
            "production mode registered a demo agency:\n{}",
            server.stderr()
        );
    }
    let out = stele(dir.path())
        .args(["agency", "add", "land-office", "--types", "land.*"])
        .args(&common[2..])
        .output()?;
    let token = stdout_of_success(out)?;

    let (status, receipt) =
        post_record(&server.base_url, &token, &json!({"type": "land.transfer"})).await?;
    ensure_eq!(status, StatusCode::CREATED, "{receipt}");
    let receipt: Receipt = serde_json::from_value(receipt)?;
    receipt
        .verify(&verifier)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (status, problem) =
        post_record(&server.base_url, &token, &json!({"type": "health.x"})).await?;
    ensure_eq!(status, StatusCode::FORBIDDEN, "{problem}");

    let out = stele(dir.path())
        .args(["agency", "list"])
        .args(&common[2..])
        .output()?;
    let list = String::from_utf8(out.stdout)?;
    if !list.contains("land-office\tactive\tland.*") || list.contains(&token) {
        anyhow::bail!("agency list: {list:?}");
    }
    let status = server.terminate().await?;
    if !status.success() {
        anyhow::bail!("stele serve exited with {status} after SIGTERM");
    }
    Ok(())
}
