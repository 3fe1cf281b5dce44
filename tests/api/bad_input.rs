//! Bad requests: each gets the problem document its mistake calls for
//! (status, `type`, `field`; `WWW-Authenticate` on a 401), and none of them
//! changes the log.

use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Method, StatusCode};
use serde_json::json;
use stele::wire;
use stele_testkit::harness::{TestFn, TestResult};

use super::{check_problem, ensure_eq, record, Ctx};

pub const TESTS: &[(&str, TestFn<Ctx>)] =
    stele_testkit::tests![Ctx: bad_input_is_rejected_and_appends_nothing];

const INVALID: &str = "invalid-field";

/// One case: name, body (or path), status, problem slug, field.
type Case<T> = (&'static str, T, u16, &'static str, Option<&'static str>);

/// Bodies POSTed to `/records` with the test agency's token as JSON.
#[rustfmt::skip]
const POSTS: &[Case<&[u8]>] = &[
    ("malformed JSON", b"{\"type\": ", 400, "malformed", None),
    ("empty body", b"", 400, "malformed", None),
    ("array body", b"[1,2]", 400, "malformed", None),
    ("string body", b"\"land.transfer\"", 400, "malformed", None),
    ("null body", b"null", 400, "malformed", None),
    ("invalid UTF-8", b"{\"type\": \"land.\xff\xfe\"}", 400, "malformed", None),
    ("type is a number", br#"{"type": 5}"#, 422, INVALID, Some("type")),
    ("subject is a number", br#"{"type": "land.transfer", "subject": 5}"#, 422, INVALID, Some("subject")),
    ("attributes not an object", br#"{"type": "land.transfer", "attributes": [1]}"#, 422, INVALID, Some("attributes")),
    ("missing type", br#"{"subject": "x"}"#, 422, INVALID, Some("type")),
    ("unknown field", br#"{"type": "land.transfer", "color": "red"}"#, 422, INVALID, Some("color")),
    ("ts from the body", br#"{"type": "land.transfer", "ts": "2020-01-01T00:00:00.000Z"}"#, 422, INVALID, Some("ts")),
    ("bad type", br#"{"type": "Land Transfer!"}"#, 422, INVALID, Some("type")),
    ("bad content_hash", br#"{"type": "land.transfer", "content_hash": "md5:abc"}"#, 422, INVALID, Some("content_hash")),
    // Values that would be stored as other values: refused, never rounded.
    ("integer a double rounds", br#"{"type": "land.transfer", "attributes": {"case": 1234567890123456789}}"#, 422, INVALID, Some("attributes")),
    ("its neighbour", br#"{"type": "land.transfer", "attributes": {"case": 1234567890123456788}}"#, 422, INVALID, Some("attributes")),
    ("decimal a double rounds", br#"{"type": "land.transfer", "attributes": {"x": [0.30000000000000001]}}"#, 422, INVALID, Some("attributes")),
    ("exact but beyond 2^53 - 1", br#"{"type": "land.transfer", "attributes": {"x": 9007199254740992}}"#, 422, INVALID, Some("attributes")),
    ("beyond any double", br#"{"type": "land.transfer", "attributes": {"x": 1e400}}"#, 400, "malformed", None),
    ("repeated key", br#"{"type": "land.transfer", "type": "health.case"}"#, 400, "malformed", None),
    ("repeated key inside attributes", br#"{"type": "land.transfer", "attributes": {"a": 1, "a": 2}}"#, 400, "malformed", None),
    // Unicode format controls where readers tell records apart.
    ("bidi override in subject", "{\"type\": \"land.transfer\", \"subject\": \"parcel \u{202e}21\"}".as_bytes(), 422, INVALID, Some("subject")),
    ("zero-width space in subject", br#"{"type": "land.transfer", "subject": "a\u200bb"}"#, 422, INVALID, Some("subject")),
    ("BOM in an attribute key", br#"{"type": "land.transfer", "attributes": {"k\ufeff": 1}}"#, 422, INVALID, Some("attributes")),
    ("null subject", br#"{"type": "land.transfer", "subject": null}"#, 422, INVALID, Some("subject")),
    ("null attributes", br#"{"type": "land.transfer", "attributes": null}"#, 422, INVALID, Some("attributes")),
];

/// GETs under `/logs/<log>`. `{bad}` stands for 64 non-hex digits,
/// `{unknown}` for a hash no entry has.
#[rustfmt::skip]
const LOG_GETS: &[Case<&str>] = &[
    ("bad hex leaf_hash", "/entries?leaf_hash={bad}", 422, INVALID, Some("leaf_hash")),
    ("short leaf_hash", "/entries?leaf_hash=abcd", 422, INVALID, Some("leaf_hash")),
    ("missing leaf_hash", "/entries", 422, INVALID, Some("leaf_hash")),
    ("unknown leaf_hash", "/entries?leaf_hash={unknown}", 404, "not-found", None),
    ("bad hex leaf_hash in proof", "/proofs/inclusion?leaf_hash={bad}", 422, INVALID, Some("leaf_hash")),
    ("negative index", "/entries/-1", 422, INVALID, Some("index")),
    ("non-numeric index", "/entries/abc", 422, INVALID, Some("index")),
    ("index 2^63", "/entries/9223372036854775808", 422, INVALID, Some("index")),
    ("index beyond u64", "/entries/99999999999999999999999", 422, INVALID, Some("index")),
    ("index beyond the log", "/entries/2", 404, "not-found", None),
    ("negative proof index", "/proofs/inclusion?index=-1", 422, INVALID, Some("index")),
    ("huge proof index", "/proofs/inclusion?index=18446744073709551615", 422, INVALID, Some("index")),
    ("index >= tree_size", "/proofs/inclusion?index=1&tree_size=1", 422, INVALID, None),
    ("tree_size beyond the log", "/proofs/inclusion?index=0&tree_size=3", 422, INVALID, Some("tree_size")),
    ("inclusion without locator", "/proofs/inclusion", 422, INVALID, None),
    ("unknown query parameter", "/proofs/inclusion?index=0&color=red", 422, INVALID, Some("color")),
    ("from > to", "/proofs/consistency?from=2&to=1", 422, INVALID, None),
    ("to beyond the log", "/proofs/consistency?from=1&to=3", 422, INVALID, None),
    ("negative from", "/proofs/consistency?from=-1", 422, INVALID, Some("from")),
    ("missing from", "/proofs/consistency", 422, INVALID, Some("from")),
    ("non-canonical tile path", "/tile/0/1", 404, "not-found", None),
    ("tile beyond the tree", "/tile/0/005", 404, "not-found", None),
];

/// One malformed request: what is sent, and the problem expected.
struct Bad {
    name: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: u16,
    slug: &'static str,
    field: Option<&'static str>,
}

async fn bad_input_is_rejected_and_appends_nothing(ctx: Ctx) -> TestResult {
    // Two records, so that "beyond the log" and "index >= tree_size" have
    // something to be beyond.
    let r0 = ctx.submit_new(&record(0)).await?;
    ctx.submit_new(&record(1)).await?;
    ensure_eq!(ctx.check().await?, 2);
    let post = |name, body: &[u8], status, slug, field| Bad {
        name,
        method: Method::POST,
        path: ctx.log("/records"),
        token: Some(ctx.app.token.clone()),
        content_type: Some("application/json"),
        body: Some(body.to_vec()),
        status,
        slug,
        field,
    };
    let request = |name, method, path: String, status, slug| Bad {
        name,
        method,
        path,
        token: None,
        content_type: None,
        body: None,
        status,
        slug,
        field: None,
    };
    let big_attrs = serde_json::to_vec(
        &json!({"type": "land.transfer", "attributes": {"blob": "x".repeat(9 * 1024)}}),
    )?;
    let big_body =
        serde_json::to_vec(&json!({"type": "land.transfer", "subject": "x".repeat(70 * 1024)}))?;
    let plain = br#"{"type": "land.transfer"}"#;
    let mut cases: Vec<Bad> = POSTS
        .iter()
        .map(|&(name, body, status, slug, field)| post(name, body, status, slug, field))
        .collect();
    cases.extend([
        post("oversized body", &big_body, 413, "too-large", None),
        post("oversized attributes", &big_attrs, 413, "too-large", None),
        Bad {
            token: None,
            ..post("missing token", plain, 401, "unauthorized", None)
        },
        Bad {
            token: Some("test-agency.AAAA".into()),
            ..post("wrong token", plain, 401, "unauthorized", None)
        },
        Bad {
            token: Some("garbage".into()),
            ..post("malformed token", plain, 401, "unauthorized", None)
        },
        Bad {
            content_type: Some("text/plain"),
            ..post("text/plain", plain, 415, "unsupported-media-type", None)
        },
        Bad {
            content_type: None,
            ..post(
                "no content type",
                plain,
                415,
                "unsupported-media-type",
                None,
            )
        },
        Bad {
            path: "/logs/no-such-log/records".into(),
            ..post("unknown log", plain, 404, "not-found", None)
        },
        Bad {
            path: ctx.log("/records/bulk"),
            ..post(
                "bulk with one bad record",
                br#"{"records": [{"type": "land.transfer"}, {"type": 7}]}"#,
                422,
                INVALID,
                Some("records[1].type"),
            )
        },
        Bad {
            path: ctx.log("/records/bulk"),
            ..post("bulk not an object", b"[]", 400, "malformed", None)
        },
    ]);
    // Bulk bodies over a limit, refused before any record is parsed.
    let too_many = format!(
        "{{\"records\":[{}]}}",
        vec![r#"{"type":"land.transfer"}"#; 1001].join(",")
    );
    let one_too_big = format!(
        "{{\"records\":[{{\"type\":\"land.transfer\",\"subject\":\"{}\"}}]}}",
        "x".repeat(70_000)
    );
    let bulk = |name, body: Vec<u8>, status, slug, field| Bad {
        path: ctx.log("/records/bulk"),
        body: Some(body),
        ..post(name, b"", status, slug, field)
    };
    cases.extend([
        bulk(
            "bulk of 1,001 records",
            too_many.into_bytes(),
            413,
            "too-large",
            None,
        ),
        bulk(
            "bulk record over the record limit",
            one_too_big.into_bytes(),
            413,
            "too-large",
            None,
        ),
        bulk(
            "bulk with records twice",
            br#"{"records":[],"records":[]}"#.to_vec(),
            400,
            "malformed",
            None,
        ),
        bulk(
            "bulk with an unknown member",
            br#"{"records":[{"type":"land.transfer"}],"x":1}"#.to_vec(),
            422,
            INVALID,
            Some("x"),
        ),
        bulk(
            "bulk with no records",
            br#"{"records":[]}"#.to_vec(),
            422,
            INVALID,
            Some("records"),
        ),
        bulk(
            "bulk with an inexact number",
            br#"{"records":[{"type":"land.transfer","attributes":{"n":12345678901234567890}}]}"#
                .to_vec(),
            422,
            INVALID,
            Some("records[0].attributes"),
        ),
    ]);
    let (bad, unknown) = ("zz".repeat(32), "ab".repeat(32));
    cases.extend(LOG_GETS.iter().map(|&(name, path, status, slug, field)| {
        let path = path.replace("{bad}", &bad).replace("{unknown}", &unknown);
        Bad {
            field,
            ..request(name, Method::GET, ctx.log(&path), status, slug)
        }
    }));
    cases.extend([
        request(
            "unknown log checkpoint",
            Method::GET,
            "/logs/no-such-log/checkpoint".into(),
            404,
            "not-found",
        ),
        request(
            "unknown route",
            Method::GET,
            "/nope".into(),
            404,
            "not-found",
        ),
        request(
            "wrong method",
            Method::DELETE,
            "/logs".into(),
            405,
            "method-not-allowed",
        ),
        request(
            "GET on records",
            Method::GET,
            ctx.log("/records"),
            405,
            "method-not-allowed",
        ),
    ]);

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
        let status = StatusCode::from_u16(case.status)?;
        let mut outcome = check_problem(&r, status, case.slug, case.field);
        if outcome.is_ok()
            && status == StatusCode::UNAUTHORIZED
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
    let proof: wire::Inclusion = serde_json::from_slice(&r.body)?;
    ensure_eq!(proof.leaf_hash.to_hex(), r0.leaf_hash);
    if !failures.is_empty() {
        anyhow::bail!(
            "{} case(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    ensure_eq!(ctx.check().await?, 2);
    Ok(())
}
