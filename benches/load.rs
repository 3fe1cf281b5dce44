//! `load`: drives a running Stele service over HTTP and, in the same run,
//! measures the raw database ceilings it is compared against.
//!
//! ```text
//! cargo bench --bench load -- --url http://127.0.0.1:8080 --token demo.XXXX \
//!     --mode submit --clients 64 --duration 60 [--server-pid PID] \
//!     [--copy-ceiling postgres://postgres@127.0.0.1:5432/scratch] \
//!     [--insert-latency postgres://postgres@127.0.0.1:5432/scratch] \
//!     [--sqlite-ceiling /tmp/scratch/ceiling.db]
//! ```
//!
//! Modes: `submit` (one record per `POST`), `bulk` (`--bulk-size` records per
//! `POST .../records/bulk`), `proofs` (inclusion proofs by random index),
//! `tiles` (random full level-0 hash tiles), `content` (private records'
//! content by random index), `get` (`GET <URL><--path>`, one fixed path: a
//! static file on a web server, the peer the read modes are compared with).
//! It reports records/s (or requests/s), time to receipt p50/p99/max, errors
//! by status, and the server's peak RSS (`VmHWM` of `--server-pid`). It only
//! ever targets loopback addresses, and it stops by itself after `--duration`
//! seconds or `--count` operations, whichever comes first.
//!
//! The tree size (which bounds the indexes of `proofs`, `tiles` and
//! `content`) is read from the log's checkpoint, `<URL>/logs/<log>/checkpoint`,
//! so `tiles` runs as well against a static copy of the log (`stele mirror`)
//! that a web server serves under the same paths.
//!
//! After the load, each ceiling asked for runs for the same duration on leaf
//! rows of one shape, `(idx, leaf, leaf_hash)` with a unique index on the
//! hash; only the database's work is timed, not building the rows:
//!
//! - `--copy-ceiling URL`: binary `COPY` in batches of 1,000 into a scratch
//!   PostgreSQL table, `synchronous_commit = on`, one transaction per batch
//!   (`copy_ceiling_rows_per_s`; `ratio_to_ceiling` is the service's rate
//!   over it).
//! - `--insert-latency URL`: single-row `INSERT`s one after the other on one
//!   connection, autocommit, `synchronous_commit = on` (`insert_p50_ms`,
//!   `insert_mean_ms`): the durable write that one sequential client's time
//!   to receipt is compared with.
//! - `--sqlite-ceiling PATH`: one multi-row `INSERT` of 1,000 rows per
//!   transaction into a fresh SQLite database file PATH (it must not exist;
//!   it is removed afterwards) in WAL mode with `synchronous = FULL` and the
//!   SQLite backend's 64 MiB page cache (`sqlite_ceiling_rows_per_s`;
//!   `ratio_to_ceiling` is the service's rate over it).

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::Method;
use sha2::{Digest, Sha256};
use sqlx::Connection;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Submit,
    Bulk,
    Proofs,
    Tiles,
    /// Private records' content (`GET .../records/{i}/content`, with a
    /// purpose) by random index in `--first-index ..` the tree size: each
    /// read appends an access entry before it answers.
    Content,
    /// `GET <URL><--path>`, the same path every time.
    Get,
}

/// What the submitted records look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Shape {
    /// `bench.load` records with `--pad` bytes of padding.
    Bench,
    /// Valid records of the four example types (`examples/types/`), in
    /// turn: what the registry's validation costs is measured with them.
    Examples,
    /// Records shaped like the example `health.case` (a subject, a
    /// diagnosis, a date and ~200 bytes of notes), of type `--record-type`:
    /// the private type itself, or a public copy of it.
    Case,
}

#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "Load generator for a Stele service on loopback"
)]
struct Args {
    /// Base URL of the service (loopback only). Repeat it to spread the
    /// clients over several servers of one log (client i uses the i-th
    /// URL, round robin; a writer and its read nodes); the tree size is
    /// read from the first.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    /// Log name.
    #[arg(long, default_value = "default")]
    log: String,
    /// Agency bearer token (submit and bulk modes).
    #[arg(long, env = "STELE_TOKEN", default_value = "")]
    token: String,
    #[arg(long, value_enum, default_value = "submit")]
    mode: Mode,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Stop after this many operations (records for submit/bulk, requests otherwise).
    #[arg(long)]
    count: Option<u64>,
    /// Records per bulk request.
    #[arg(long, default_value_t = 1000)]
    bulk_size: usize,
    /// Bytes of padding in each record's attributes.
    #[arg(long, default_value_t = 64)]
    pad: usize,
    /// The records submitted.
    #[arg(long, value_enum, default_value = "bench")]
    shape: Shape,
    /// PID of the server, to report its peak resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// PID of another process on the machine (an S3 server, say) whose CPU
    /// time over the load is reported as `other_cpu_s`.
    #[arg(long)]
    other_pid: Option<u32>,
    /// PostgreSQL URL for the raw COPY ceiling (a scratch table is created and dropped).
    #[arg(long)]
    copy_ceiling: Option<String>,
    /// PostgreSQL URL for the raw durable single-row INSERT latency (a
    /// scratch table is created and dropped).
    #[arg(long)]
    insert_latency: Option<String>,
    /// A path for the raw SQLite ceiling's fresh database file (it must not
    /// exist; it is removed afterwards).
    #[arg(long, conflicts_with = "copy_ceiling")]
    sqlite_ceiling: Option<std::path::PathBuf>,
    /// Get mode: the path requested, after the URL's (e.g. `/proof.json`).
    #[arg(long, required_if_eq("mode", "get"))]
    path: Option<String>,
    /// Submit mode: `witnessed` sends `?wait=witnessed` (each answer waits
    /// for a checkpoint the log's witness quorum cosigned).
    #[arg(long)]
    wait: Option<String>,
    /// The record type of `--shape case`.
    #[arg(long, default_value = "health.case")]
    record_type: String,
    /// Content mode: the first index of the private records read.
    #[arg(long, default_value_t = 0)]
    first_index: u64,
    /// A label printed with the results.
    #[arg(long, default_value = "")]
    label: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url)?;
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|ip| ip.is_loopback()) {
        anyhow::bail!("refusing to load {host}: only loopback addresses are allowed");
    }
    Ok(())
}

fn postgres_is_loopback(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url)?;
    match parsed.host_str() {
        None | Some("") => Ok(()), // Unix socket
        Some(_) => ensure_loopback(&url.replacen("postgres", "http", 1)),
    }
}

/// One record's JSON, written directly (the load tool must stay cheap).
fn record_body(client: usize, n: u64, pad: &str, run: u64) -> String {
    format!(
        "{{\"type\":\"bench.load\",\"subject\":\"run{run}-c{client}-n{n}\",\"attributes\":{{\"seq\":{n},\"pad\":\"{pad}\"}}}}"
    )
}

/// A valid record of one of the four example types, unique per run,
/// client and `n`.
fn example_body(client: usize, n: u64, run: u64) -> String {
    let u = (run % 1000) * 1_000_000_000_000 + (client as u64 % 1000) * 1_000_000_000 + n;
    match n % 4 {
        0 => format!(
            "{{\"type\":\"land.transfer\",\"subject\":\"XH-{}\",\"attributes\":{{\"deed\":\"2026/{}\",\"area_m2\":{},\"use\":\"residential\"}}}}",
            n % 100_000_000,
            n % 10_000_000_000,
            u + 1
        ),
        1 => format!(
            "{{\"type\":\"health.vaccination\",\"subject\":\"facility-{}\",\"attributes\":{{\"vaccine\":\"covid-19\",\"lot\":\"L{u}\",\"doses\":{}}}}}",
            client % 1_000_000,
            1 + n % 100
        ),
        2 => format!(
            "{{\"type\":\"disease.covid-test\",\"subject\":\"site-{}\",\"attributes\":{{\"date\":\"2026-12-02\",\"tests\":{u},\"positive\":{},\"method\":\"pcr\"}}}}",
            client % 1_000_000,
            n % 100
        ),
        _ => format!(
            "{{\"type\":\"parking.status\",\"subject\":\"lot-{}\",\"attributes\":{{\"free\":{u},\"capacity\":{}}}}}",
            client % 1_000_000,
            u + 100
        ),
    }
}

/// A `health.case`-shaped record of type `t`, unique per run, client and `n`.
fn case_body(t: &str, client: usize, n: u64, run: u64) -> String {
    let id = (run % 1000) * 1_000_000_000_000 + (client as u64 % 1000) * 1_000_000_000 + n;
    format!(
        "{{\"type\":\"{t}\",\"subject\":\"patient-{id:016X}\",\"attributes\":{{\"diagnosis\":\"U07.1\",\"opened\":\"2026-12-01\",\"notes\":\"Admitted with fever; PCR positive; observation for 48 h, then discharged home with follow-up at the clinic in two weeks. Case {id}.\"}}}}"
    )
}

#[derive(Default)]
struct ClientStats {
    latencies_us: Vec<u32>,
    ops: u64,
    errors: BTreeMap<u16, u64>,
    transport_errors: u64,
}

struct Shared {
    stop: AtomicBool,
    done_ops: AtomicU64,
    tree_size: AtomicU64,
}

/// The size of the log's latest checkpoint (signature unchecked): served
/// alike by Stele and by a web server serving a mirror of the log.
async fn current_tree_size(http: &reqwest::Client, url: &str, log: &str) -> anyhow::Result<u64> {
    let note = http
        .get(format!("{url}/logs/{log}/checkpoint"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let checkpoint = stele_core::note::parse_unverified_checkpoint(&note)
        .map_err(|e| anyhow::anyhow!("checkpoint of {url}/logs/{log}: {e}"))?;
    Ok(checkpoint.size)
}

/// One keep-alive HTTP/1.1 connection per client, driven with hyper's
/// connection API directly: the load tool shares the machine with the
/// server, so it spends as little CPU per request as it can (no connection
/// pool, no JSON value trees, headers built once).
struct Conn {
    addr: String,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn connect(&mut self) -> anyhow::Result<()> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().expect("connected above");
        let result = async {
            sender.ready().await?;
            let resp =
                tokio::time::timeout(Duration::from_secs(30), sender.send_request(req)).await??;
            let status = resp.status().as_u16();
            // Read the whole body: a receipt is only "received" once it is all here.
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

async fn client_loop(
    id: usize,
    args: Arc<Args>,
    shared: Arc<Shared>,
    run: u64,
    ready: Arc<tokio::sync::Barrier>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let parsed = reqwest::Url::parse(&args.url[id % args.url.len()]).expect("checked in main");
    let host = format!(
        "{}:{}",
        parsed.host_str().unwrap_or("127.0.0.1"),
        parsed.port_or_known_default().unwrap_or(80)
    );
    let base = parsed.path().trim_end_matches('/');
    let prefix = format!("{base}/logs/{}", args.log);
    let auth = HeaderValue::from_str(&format!("Bearer {}", args.token)).ok();
    let mut conn = Conn {
        addr: host.clone(),
        sender: None,
    };
    // Connect before the clock starts (a failed connect is retried by the
    // first request).
    let _ = conn.connect().await;
    ready.wait().await;
    let mut n: u64 = 0;
    let mut rng = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ run;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let pad = "x".repeat(args.pad);
    while !shared.stop.load(Ordering::Relaxed) {
        let (method, path, body, ops) = match args.mode {
            Mode::Submit => {
                let body = match args.shape {
                    Shape::Bench => record_body(id, n, &pad, run),
                    Shape::Examples => example_body(id, n, run),
                    Shape::Case => case_body(&args.record_type, id, n, run),
                };
                n += 1;
                let path = match &args.wait {
                    Some(w) => format!("{prefix}/records?wait={w}"),
                    None => format!("{prefix}/records"),
                };
                (Method::POST, path, body, 1)
            }
            Mode::Bulk => {
                let mut body = String::from("{\"records\":[");
                for i in 0..args.bulk_size {
                    if i > 0 {
                        body.push(',');
                    }
                    n += 1;
                    match args.shape {
                        Shape::Bench => body.push_str(&record_body(id, n, &pad, run)),
                        Shape::Examples => body.push_str(&example_body(id, n, run)),
                        Shape::Case => body.push_str(&case_body(&args.record_type, id, n, run)),
                    }
                }
                body.push_str("]}");
                (
                    Method::POST,
                    format!("{prefix}/records/bulk"),
                    body,
                    args.bulk_size as u64,
                )
            }
            Mode::Proofs => {
                let size = shared.tree_size.load(Ordering::Relaxed).max(1);
                let index = next() % size;
                (
                    Method::GET,
                    format!("{prefix}/proofs/inclusion?index={index}"),
                    String::new(),
                    1,
                )
            }
            Mode::Content => {
                let size = shared.tree_size.load(Ordering::Relaxed);
                let span = size.saturating_sub(args.first_index).max(1);
                let index = args.first_index + next() % span;
                (
                    Method::GET,
                    format!("{prefix}/records/{index}/content"),
                    String::new(),
                    1,
                )
            }
            Mode::Tiles => {
                let full = (shared.tree_size.load(Ordering::Relaxed) / 256).max(1);
                let index = next() % full;
                let path = tile_index_path(index);
                (
                    Method::GET,
                    format!("{prefix}/tile/0/{path}"),
                    String::new(),
                    1,
                )
            }
            Mode::Get => {
                let path = args.path.as_deref().unwrap_or("/");
                (Method::GET, format!("{base}{path}"), String::new(), 1)
            }
        };
        let mut req = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &host);
        if method == Method::POST {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if method == Method::POST || args.mode == Mode::Content {
            if let Some(auth) = &auth {
                req = req.header(header::AUTHORIZATION, auth.clone());
            }
        }
        if args.mode == Mode::Content {
            req = req.header("stele-purpose", "load%20test");
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .expect("valid request");
        let start = Instant::now();
        match conn.send(req).await {
            Ok((status, _body)) => {
                let us = elapsed_us(start);
                if (200..300).contains(&status) {
                    stats.latencies_us.push(us);
                    stats.ops += ops;
                    let total = shared.done_ops.fetch_add(ops, Ordering::Relaxed) + ops;
                    if args.count.is_some_and(|c| total >= c) {
                        shared.stop.store(true, Ordering::Relaxed);
                    }
                } else {
                    *stats.errors.entry(status).or_default() += 1;
                    if status == 503 || status == 429 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            Err(_) => {
                stats.transport_errors += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    stats
}

/// The tlog-tiles index encoding (`x001/x234/067`).
fn tile_index_path(mut n: u64) -> String {
    let mut parts = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        parts.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    parts.reverse();
    parts.join("/")
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// CPU seconds (user + system) the process has used so far, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks of 1/100 s, the
/// Linux `USER_HZ`).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Busy CPU seconds of the whole machine so far (every core; user, nice,
/// system, irq and softirq time from `/proc/stat`'s `cpu` line).
fn machine_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq ...
    Some(
        [0, 1, 2, 5, 6]
            .iter()
            .map(|&i| f.get(i).copied().unwrap_or(0.0))
            .sum::<f64>()
            / 100.0,
    )
}

/// Microseconds since `start`, as the latency samples keep them.
fn elapsed_us(start: Instant) -> u32 {
    start.elapsed().as_micros().min(u32::MAX as u128) as u32
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

/// One row of the ceilings: a leaf shaped like the service's leaf of a
/// `bench.load` record with `pad` as its padding, and its RFC 6962 leaf hash.
fn ceiling_row(idx: i64, pad: &str) -> anyhow::Result<(Vec<u8>, [u8; 32])> {
    let leaf = serde_json::to_vec(&serde_json::json!({
        "agency": "bench",
        "attributes": {"pad": pad, "seq": idx},
        "subject": format!("ceiling-{idx}"),
        "ts": "2026-01-01T00:00:00.000Z",
        "type": "bench.load",
        "v": 1
    }))?;
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(&leaf);
    Ok((leaf, h.finalize().into()))
}

/// A PostgreSQL connection with `synchronous_commit = on` and a fresh
/// scratch `table` of the ceilings' row shape, with a unique hash index.
async fn pg_scratch_table(url: &str, table: &str) -> anyhow::Result<sqlx::PgConnection> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    for sql in [
        "SET synchronous_commit = on".to_string(),
        format!("DROP TABLE IF EXISTS {table}"),
        format!(
            "CREATE TABLE {table} (idx bigint PRIMARY KEY, leaf bytea NOT NULL, leaf_hash bytea NOT NULL)"
        ),
        format!("CREATE UNIQUE INDEX {table}_hash ON {table} (leaf_hash)"),
    ] {
        sqlx::query(&sql).execute(&mut conn).await?;
    }
    Ok(conn)
}

/// Binary COPY of ceiling rows in batches of 1,000, one transaction per
/// batch, `synchronous_commit = on`, into a table with a unique hash index.
async fn copy_ceiling(url: &str, seconds: u64, pad: usize) -> anyhow::Result<f64> {
    let mut conn = pg_scratch_table(url, "stele_copy_ceiling").await?;
    let pad = "x".repeat(pad);
    // Only the COPY and its commit are timed: building the rows is client
    // work that the service's own rate does not include either.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut busy = Duration::ZERO;
    let mut idx: i64 = 0;
    while Instant::now() < deadline {
        let mut buf = Vec::with_capacity(1000 * (pad.len() + 200));
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        for _ in 0..1000 {
            let (leaf, hash) = ceiling_row(idx, &pad)?;
            buf.extend_from_slice(&3i16.to_be_bytes());
            buf.extend_from_slice(&8i32.to_be_bytes());
            buf.extend_from_slice(&idx.to_be_bytes());
            buf.extend_from_slice(&(leaf.len() as i32).to_be_bytes());
            buf.extend_from_slice(&leaf);
            buf.extend_from_slice(&32i32.to_be_bytes());
            buf.extend_from_slice(&hash);
            idx += 1;
        }
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        let started = Instant::now();
        let mut tx = conn.begin().await?;
        let mut copy = tx
            .copy_in_raw(
                "COPY stele_copy_ceiling (idx, leaf, leaf_hash) FROM STDIN (FORMAT binary)",
            )
            .await?;
        copy.send(buf).await?;
        copy.finish().await?;
        tx.commit().await?;
        busy += started.elapsed();
    }
    let rate = idx as f64 / busy.as_secs_f64();
    sqlx::query("DROP TABLE stele_copy_ceiling")
        .execute(&mut conn)
        .await?;
    Ok(rate)
}

/// The raw durable single-row write, in ms.
struct InsertLatency {
    p50_ms: f64,
    mean_ms: f64,
}

/// Single-row INSERTs of ceiling rows one after the other on one
/// connection, autocommit (each its own durable transaction),
/// `synchronous_commit = on`, for `seconds`.
async fn insert_latency(url: &str, seconds: u64, pad: usize) -> anyhow::Result<InsertLatency> {
    let mut conn = pg_scratch_table(url, "stele_insert_latency").await?;
    let pad = "x".repeat(pad);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut latencies_us = Vec::new();
    let mut idx: i64 = 0;
    while Instant::now() < deadline {
        let (leaf, hash) = ceiling_row(idx, &pad)?;
        let started = Instant::now();
        sqlx::query("INSERT INTO stele_insert_latency (idx, leaf, leaf_hash) VALUES ($1, $2, $3)")
            .bind(idx)
            .bind(leaf)
            .bind(&hash[..])
            .execute(&mut conn)
            .await?;
        latencies_us.push(elapsed_us(started));
        idx += 1;
    }
    sqlx::query("DROP TABLE stele_insert_latency")
        .execute(&mut conn)
        .await?;
    latencies_us.sort_unstable();
    let total_us: u64 = latencies_us.iter().map(|&us| u64::from(us)).sum();
    Ok(InsertLatency {
        p50_ms: percentile(&latencies_us, 50.0),
        mean_ms: total_us as f64 / latencies_us.len().max(1) as f64 / 1000.0,
    })
}

/// Multi-row INSERTs of 1,000 ceiling rows, one transaction each, into a
/// fresh SQLite database file at `path` in WAL mode with `synchronous =
/// FULL` (so each commit is durable, as in the SQLite backend) and the
/// backend writer's 64 MiB page cache, with a unique hash index.
async fn sqlite_ceiling(path: &std::path::Path, seconds: u64, pad: usize) -> anyhow::Result<f64> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    if path.exists() {
        anyhow::bail!(
            "{} exists: the SQLite ceiling needs a fresh database file",
            path.display()
        );
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .pragma("cache_size", "-65536");
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::query(
        "CREATE TABLE ceiling (idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL, leaf_hash BLOB NOT NULL)",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query("CREATE UNIQUE INDEX ceiling_hash ON ceiling (leaf_hash)")
        .execute(&mut conn)
        .await?;
    let pad = "x".repeat(pad);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut busy = Duration::ZERO;
    let mut idx: i64 = 0;
    while Instant::now() < deadline {
        let mut rows = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let (leaf, hash) = ceiling_row(idx, &pad)?;
            rows.push((idx, leaf, hash));
            idx += 1;
        }
        let mut insert =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO ceiling (idx, leaf, leaf_hash) ");
        insert.push_values(&rows, |mut row, (idx, leaf, hash)| {
            row.push_bind(*idx)
                .push_bind(&leaf[..])
                .push_bind(&hash[..]);
        });
        // Only the insert and its commit are timed (as for COPY).
        let started = Instant::now();
        let mut tx = conn.begin().await?;
        insert.build().execute(&mut *tx).await?;
        tx.commit().await?;
        busy += started.elapsed();
    }
    conn.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(idx as f64 / busy.as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; ignore it.
    let argv: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let args = Arc::new(Args::parse_from(argv));
    for url in &args.url {
        ensure_loopback(url)?;
    }
    for url in args.copy_ceiling.iter().chain(&args.insert_latency) {
        postgres_is_loopback(url)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Arc<Args>) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = args.url[0].trim_end_matches('/').to_string();
    // A fixed path needs no log.
    let size_before = match args.mode {
        Mode::Get => None,
        _ => Some(current_tree_size(&http, &url, &args.log).await?),
    };
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        done_ops: AtomicU64::new(0),
        tree_size: AtomicU64::new(size_before.unwrap_or(0)),
    });
    if matches!(args.mode, Mode::Submit | Mode::Bulk | Mode::Content) && args.token.is_empty() {
        anyhow::bail!("--token (or STELE_TOKEN) is needed to submit or read content");
    }
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let ready = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let mut tasks = Vec::new();
    for id in 0..args.clients {
        tasks.push(tokio::spawn(client_loop(
            id,
            args.clone(),
            shared.clone(),
            run_id,
            ready.clone(),
        )));
    }
    ready.wait().await;
    let cpu_before = args.server_pid.and_then(cpu_seconds);
    let other_before = args.other_pid.and_then(cpu_seconds);
    let machine_before = machine_cpu_seconds();
    let start = Instant::now();
    let stopper = {
        let shared = shared.clone();
        let secs = args.duration;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            shared.stop.store(true, Ordering::Relaxed);
        })
    };
    let mut all = ClientStats::default();
    for t in tasks {
        let s = t.await?;
        all.latencies_us.extend(s.latencies_us);
        all.ops += s.ops;
        all.transport_errors += s.transport_errors;
        for (k, v) in s.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    stopper.abort();
    let elapsed = start.elapsed().as_secs_f64();
    // CPU seconds over the load, where both readings exist.
    let used = |after: Option<f64>, before: Option<f64>| after.zip(before).map(|(a, b)| a - b);
    let server_cpu_s = used(args.server_pid.and_then(cpu_seconds), cpu_before);
    let other_cpu_s = used(args.other_pid.and_then(cpu_seconds), other_before);
    let machine_cpu_s = used(machine_cpu_seconds(), machine_before);
    all.latencies_us.sort_unstable();
    let rate = all.ops as f64 / elapsed;
    let size_after = match size_before {
        Some(before) => Some(
            current_tree_size(&http, &url, &args.log)
                .await
                .unwrap_or(before),
        ),
        None => None,
    };
    let rss = args.server_pid.and_then(peak_rss_kib);
    let ceiling = match &args.copy_ceiling {
        Some(pg) => Some(copy_ceiling(pg, args.duration, args.pad).await?),
        None => None,
    };
    let insert = match &args.insert_latency {
        Some(pg) => Some(insert_latency(pg, args.duration, args.pad).await?),
        None => None,
    };
    let sqlite = match &args.sqlite_ceiling {
        Some(path) => Some(sqlite_ceiling(path, args.duration, args.pad).await?),
        None => None,
    };
    // At most one of the two (the arguments conflict).
    let rows_ceiling = ceiling.or(sqlite);
    let summary = serde_json::json!({
        "label": args.label,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "clients": args.clients,
        "seconds": elapsed,
        "ops": all.ops,
        "rate_per_s": rate,
        "p50_ms": percentile(&all.latencies_us, 50.0),
        "p99_ms": percentile(&all.latencies_us, 99.0),
        "max_ms": percentile(&all.latencies_us, 100.0),
        "errors_by_status": all.errors,
        "transport_errors": all.transport_errors,
        "tree_size_before": size_before,
        "tree_size_after": size_after,
        "server_peak_rss_mib": rss.map(|k| k as f64 / 1024.0),
        "server_cpu_s": server_cpu_s,
        "server_cpu_us_per_op": server_cpu_s.map(|c| c * 1e6 / all.ops.max(1) as f64),
        "other_cpu_s": other_cpu_s,
        "machine_cpu_s": machine_cpu_s,
        "machine_cpu_us_per_op": machine_cpu_s.map(|c| c * 1e6 / all.ops.max(1) as f64),
        "copy_ceiling_rows_per_s": ceiling,
        "sqlite_ceiling_rows_per_s": sqlite,
        "ratio_to_ceiling": rows_ceiling.map(|c| rate / c),
        "insert_p50_ms": insert.as_ref().map(|l| l.p50_ms),
        "insert_mean_ms": insert.as_ref().map(|l| l.mean_ms),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!("label            {}", args.label);
        println!(
            "mode             {:?} with {} clients",
            args.mode, args.clients
        );
        println!("duration         {elapsed:.1} s");
        println!("operations       {} ({rate:.0}/s)", all.ops);
        println!(
            "latency          p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            percentile(&all.latencies_us, 50.0),
            percentile(&all.latencies_us, 99.0),
            percentile(&all.latencies_us, 100.0)
        );
        println!(
            "errors           {:?} (+{} transport)",
            all.errors, all.transport_errors
        );
        if let (Some(before), Some(after)) = (size_before, size_after) {
            println!("tree size        {before} -> {after}");
        }
        if let Some(k) = rss {
            println!("server peak RSS  {:.1} MiB", k as f64 / 1024.0);
        }
        if let Some(c) = server_cpu_s {
            println!(
                "server CPU       {c:.2} s ({:.1} µs per op)",
                c * 1e6 / all.ops.max(1) as f64
            );
        }
        if let Some(c) = ceiling {
            println!("COPY ceiling     {c:.0} rows/s; ratio {:.2}", rate / c);
        }
        if let Some(c) = sqlite {
            println!("SQLite ceiling   {c:.0} rows/s; ratio {:.2}", rate / c);
        }
        if let Some(l) = &insert {
            println!(
                "INSERT latency   p50 {:.2} ms  mean {:.2} ms; p50 ratio {:.2}",
                l.p50_ms,
                l.mean_ms,
                percentile(&all.latencies_us, 50.0) / l.p50_ms
            );
        }
    }
    Ok(())
}
