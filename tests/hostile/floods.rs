//! Floods: bogus tokens, an agency over its quota, duplicate-heavy batches.

use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::json;
use stele_testkit::store::Backend;

use super::{check, deploy, honest_load, post, record, tree_size};

/// Problem `type` of an answer.
fn problem_type(answer: &serde_json::Value) -> &str {
    answer["type"].as_str().unwrap_or("")
}

/// 4,000 requests with made-up tokens (random agency names and secrets,
/// and a real agency's name with a wrong secret) arrive with an honest
/// agency's submissions: every bogus one gets `401 unauthorized`, the
/// honest ones all get receipts, and nothing else is appended.
pub async fn bogus_tokens(backend: Backend) -> Result<()> {
    let (_store, deployment) = deploy(backend, "").await?;
    let server = deployment.start("server").await?;
    let base = server.base_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()?;
    let mut flood = Vec::new();
    for w in 0..16 {
        let (http, base) = (http.clone(), base.clone());
        flood.push(tokio::spawn(async move {
            let mut unauthorized = 0;
            for i in 0..250 {
                let token = if i % 2 == 0 {
                    format!("bogus-{w}-{i}.{}", "A".repeat(43))
                } else {
                    format!("honest.{}", "B".repeat(43))
                };
                let (status, answer) = post(&http, &base, &token, &record("bogus", i)).await?;
                ensure!(
                    status == 401 && problem_type(&answer) == "urn:stele:problem:unauthorized",
                    "bogus token answered {status} {answer}"
                );
                unauthorized += 1;
            }
            anyhow::Ok(unauthorized)
        }));
    }
    let receipts = honest_load(&base, &deployment.token, "honest", 8, 25).await?;
    let mut refused = 0;
    for f in flood {
        refused += f.await??;
    }
    ensure!(refused == 4000, "{refused} bogus requests refused");
    ensure!(tree_size(&http, &base).await? == receipts.len() as u64);
    check(&deployment, &server, &receipts).await
}

/// An agency with a quota of 20 records per second floods the log: beyond
/// its bucket it gets `429 rate-limited` with `Retry-After` and nothing of
/// it is appended, while another agency's submissions all go through.
pub async fn over_quota(backend: Backend) -> Result<()> {
    let config = "[quotas.agencies.flooder]\nrecords_per_s = 20\nburst_s = 1\n";
    let (_store, deployment) = deploy(backend, config).await?;
    let flooder = deployment.add_agency("flooder", &[]).await?;
    let server = deployment.start("server").await?;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    let mut limited = 0;
    let flood = {
        let (http, base, flooder) = (http.clone(), base.clone(), flooder.clone());
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for i in 0..200 {
                let (http, base, flooder) = (http.clone(), base.clone(), flooder.clone());
                tasks.push(tokio::spawn(async move {
                    post(&http, &base, &flooder, &record("flood", i)).await
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await??);
            }
            anyhow::Ok(out)
        })
    };
    let honest = honest_load(&base, &deployment.token, "honest", 4, 25).await?;
    for (status, answer) in flood.await?? {
        match status.as_u16() {
            201 => accepted.push(serde_json::from_value(answer)?),
            429 => {
                ensure!(
                    problem_type(&answer) == "urn:stele:problem:rate-limited",
                    "429 with {answer}"
                );
                limited += 1;
            }
            other => anyhow::bail!("the flooder got {other}: {answer}"),
        }
    }
    // At most the burst plus what 20/s refills during the flood.
    ensure!(
        accepted.len() <= 60 && limited >= 140,
        "{} accepted, {limited} limited",
        accepted.len()
    );
    // Retry-After is there, and honoured it works again.
    let r = http
        .post(format!("{base}/logs/default/records"))
        .bearer_auth(&flooder)
        .json(&record("flood", 10_000))
        .send()
        .await?;
    if r.status() == 429 {
        let wait: u64 = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        ensure!((1..=5).contains(&wait), "Retry-After {wait}");
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let (status, answer) = post(&http, &base, &flooder, &record("flood", 10_000)).await?;
        ensure!(status == 201, "after Retry-After: {status} {answer}");
        accepted.push(serde_json::from_value(answer)?);
    } else {
        ensure!(r.status() == 201);
        accepted.push(r.json().await?);
    }
    let all: Vec<_> = honest.into_iter().chain(accepted).collect();
    ensure!(tree_size(&http, &base).await? == all.len() as u64);
    check(&deployment, &server, &all).await
}

/// Bulk requests that are mostly repeats of stored records, interleaved
/// with new ones and sent by two agencies at once: every repeat gets its
/// stored record's receipt (`200`), the new records theirs, and no batch
/// fails because it carried a repeat.
pub async fn duplicates(backend: Backend) -> Result<()> {
    let (_store, deployment) = deploy(backend, "").await?;
    let other = deployment.add_agency("other", &[]).await?;
    let server = deployment.start("server").await?;
    let base = server.base_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let bulk = |token: String, records: Vec<serde_json::Value>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/logs/default/records/bulk"))
                .bearer_auth(token)
                .json(&json!({ "records": records }))
                .send()
                .await?;
            let status = r.status();
            let body: serde_json::Value = r.json().await?;
            ensure!(status.is_success(), "bulk answered {status}: {body}");
            let receipts: stele::wire::Receipts = serde_json::from_value(body)?;
            anyhow::Ok(receipts.receipts)
        }
    };
    // 300 stored records of each agency.
    let mut first = Vec::new();
    for token in [&deployment.token, &other] {
        first.extend(bulk(token.clone(), (0..300).map(|i| record("dup", i)).collect()).await?);
    }
    let stored_index = |receipts: &[stele_core::receipt::Receipt], i: usize| receipts[i].index;
    // Then rounds of 90% repeats, 10% new, both agencies in parallel.
    let mut all = first.clone();
    for round in 0..5 {
        let make = |round: usize| -> Vec<serde_json::Value> {
            (0..200)
                .map(|k| {
                    if k % 10 == 0 {
                        record("new", round * 1000 + k)
                    } else {
                        record("dup", (k * 7 + round) % 300)
                    }
                })
                .collect()
        };
        let (a, b) = tokio::join!(
            bulk(deployment.token.clone(), make(round)),
            bulk(other.clone(), make(round))
        );
        for (receipts, offset) in [(a?, 0), (b?, 300)] {
            for (k, r) in receipts.iter().enumerate() {
                if k % 10 != 0 {
                    let i = (k * 7 + round) % 300;
                    ensure!(
                        r.index == stored_index(&first, offset + i),
                        "a repeat got index {}, its stored record is at {}",
                        r.index,
                        stored_index(&first, offset + i)
                    );
                }
            }
            all.extend(receipts);
        }
    }
    // 600 stored + 2 agencies × 5 rounds × 20 new.
    ensure!(tree_size(&http, &base).await? == 600 + 200);
    check(&deployment, &server, &all).await
}
