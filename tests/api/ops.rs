//! Operations: health, readiness and metrics; the OpenAPI document (the
//! checked-in copy must be current) and the docs page; a stopped engine's
//! 503s with `Retry-After`.

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use stele_testkit::harness::{TestFn, TestResult};

use super::{check_problem, ensure_eq, record, Ctx};

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx:
    health_ready_metrics,
    openapi_is_current_and_docs_are_served,
    stopped_engine_answers_503_with_retry_after,
];

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
    // Checked last: the checker's requests would count above.
    ensure_eq!(ctx.check().await?, 1);
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

async fn stopped_engine_answers_503_with_retry_after(ctx: Ctx) -> TestResult {
    ctx.submit_new(&record(0)).await?;
    ensure_eq!(ctx.check().await?, 1);
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
    // Reads still work: the whole log still verifies through them.
    ensure_eq!(ctx.check().await?, 1);
    let h = ctx.get("/healthz").await?;
    ensure_eq!(h.status, StatusCode::OK);
    Ok(())
}
