//! Submitting records: receipts, duplicates, the agency from the token,
//! revoked tokens, record types an agency may not submit, bulk all or
//! nothing, and JSON content types.

use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stele_testkit::harness::{TestFn, TestResult};

use super::{check_problem, ensure_eq, record, Ctx};

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx:
    submit_returns_a_verifiable_receipt,
    duplicate_gets_200_and_the_same_receipt,
    agency_comes_from_the_token_not_the_body,
    revoked_token_is_401,
    wrong_record_type_is_403,
    bulk_submits_all_or_nothing,
    json_with_charset_is_accepted,
    witness_endpoints_without_a_policy,
];

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
    ensure_eq!(ctx.check().await?, 1);
    let second = ctx
        .submit_new(&json!({"type": "land.transfer", "subject": "parcel-2"}))
        .await?;
    ensure_eq!(second.index, 1);
    ensure_eq!(ctx.check().await?, 2);
    Ok(())
}

async fn duplicate_gets_200_and_the_same_receipt(ctx: Ctx) -> TestResult {
    let body = json!({"type": "health.vaccination", "content_hash": format!("sha256:{}", "ab".repeat(32))});
    let first = ctx.submit_new(&body).await?;
    let again = ctx.submit(&body).await?;
    let again = ctx.receipt(&again, StatusCode::OK).await?;
    ensure_eq!(again.index, first.index);
    ensure_eq!(again.leaf, first.leaf);
    ensure_eq!(ctx.check().await?, 1);
    // The same body from another agency is a different record.
    let other = ctx.app.add_agency("other-agency", &[]).await?;
    let r = ctx.submit_as(&other, &body).await?;
    ctx.receipt(&r, StatusCode::CREATED).await?;
    ensure_eq!(ctx.check().await?, 2);
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
    let r = ctx
        .submit_as(&other, &json!({"type": "land.transfer"}))
        .await?;
    let receipt = ctx.receipt(&r, StatusCode::CREATED).await?;
    let leaf: Value = serde_json::from_str(&receipt.leaf)?;
    ensure_eq!(leaf["agency"], "land-registry");
    ensure_eq!(ctx.check().await?, 1);
    Ok(())
}

async fn revoked_token_is_401(ctx: Ctx) -> TestResult {
    let token = ctx.app.add_agency("leaving", &[]).await?;
    let r = ctx.submit_as(&token, &record(0)).await?;
    ctx.receipt(&r, StatusCode::CREATED).await?;
    ensure_eq!(ctx.app.storage.revoke_agency("leaving").await?, true);
    let r = ctx.submit_as(&token, &record(1)).await?;
    check_problem(&r, StatusCode::UNAUTHORIZED, "unauthorized", None)?;
    if !r.header(WWW_AUTHENTICATE).starts_with("Bearer") {
        anyhow::bail!("401 without WWW-Authenticate: Bearer");
    }
    ensure_eq!(ctx.check().await?, 1);
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
    ctx.receipt(&r, StatusCode::CREATED).await?;
    // In bulk, one forbidden record rejects all.
    let r = ctx
        .bulk_as(
            &token,
            vec![
                json!({"type": "land.lease"}),
                json!({"type": "parking.status"}),
            ],
        )
        .await?;
    check_problem(&r, StatusCode::FORBIDDEN, "forbidden", None)?;
    ensure_eq!(ctx.check().await?, 1);
    Ok(())
}

async fn bulk_submits_all_or_nothing(ctx: Ctx) -> TestResult {
    let records: Vec<Value> = (0..10).map(record).collect();
    let r = ctx.bulk(records.clone()).await?;
    let receipts = ctx.receipts(&r, StatusCode::CREATED).await?;
    ensure_eq!(receipts.len(), 10);
    let mut indexes: Vec<u64> = receipts.iter().map(|r| r.index).collect();
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
    ensure_eq!(ctx.check().await?, 10);
    // The same batch again: all duplicates, same indexes.
    let r = ctx.bulk(records).await?;
    let again = ctx.receipts(&r, StatusCode::OK).await?;
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
    ensure_eq!(ctx.check().await?, 10);
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
        ctx.receipt(&r, StatusCode::CREATED)
            .await
            .map_err(|e| e.context(ct))?;
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
    ensure_eq!(ctx.check().await?, 2);
    Ok(())
}

/// A log without a witness policy: `?wait=witnessed` is refused (nothing
/// appended), unknown query parameters too, the receipt endpoint answers
/// log-signed receipts, and there is no policy to fetch.
async fn witness_endpoints_without_a_policy(ctx: Ctx) -> TestResult {
    let body = serde_json::to_vec(&json!({"type": "land.transfer", "subject": "w"}))?;
    for (query, field) in [
        ("?wait=witnessed", "wait"),
        ("?wait=soon", "wait"),
        ("?hurry=1", "hurry"),
    ] {
        let r = ctx
            .request(
                Method::POST,
                &ctx.log(&format!("/records{query}")),
                Some(&ctx.app.token),
                Some("application/json"),
                Some(body.clone()),
            )
            .await?;
        check_problem(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            Some(field),
        )?;
    }
    let bulk = serde_json::to_vec(&json!({"records": [{"type": "land.transfer"}]}))?;
    let r = ctx
        .request(
            Method::POST,
            &ctx.log("/records/bulk?wait=witnessed"),
            Some(&ctx.app.token),
            Some("application/json"),
            Some(bulk),
        )
        .await?;
    check_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-field",
        Some("wait"),
    )?;
    ensure_eq!(ctx.check().await?, 0);

    // `?wait=integrated` is the default, spelled out.
    let r = ctx
        .request(
            Method::POST,
            &ctx.log("/records?wait=integrated"),
            Some(&ctx.app.token),
            Some("application/json"),
            Some(body),
        )
        .await?;
    ensure_eq!(r.header("stele-receipt-kind".parse()?), "log-signed");
    let submitted = ctx.receipt(&r, StatusCode::CREATED).await?;
    let r = ctx
        .get(&ctx.log(&format!("/entries/{}/receipt", submitted.index)))
        .await?;
    ensure_eq!(r.status, StatusCode::OK, "{}", r.text());
    ensure_eq!(r.header("stele-receipt-kind".parse()?), "log-signed");
    let fetched = ctx.receipt(&r, StatusCode::OK).await?;
    ensure_eq!(fetched.leaf, submitted.leaf);
    ensure_eq!(fetched.index, submitted.index);
    let r = ctx.get(&ctx.log("/entries/1/receipt")).await?;
    check_problem(&r, StatusCode::NOT_FOUND, "not-found", None)?;
    let r = ctx.get(&ctx.log("/witness-policy")).await?;
    check_problem(&r, StatusCode::NOT_FOUND, "not-found", None)?;
    ensure_eq!(ctx.check().await?, 1);
    Ok(())
}
