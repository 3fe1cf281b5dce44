//! HTTP API: axum routes over the [`Engine`].
//!
//! API boundary: only this module knows about HTTP. Handlers parse and
//! check their input, call one engine method, and shape its answer; every
//! error becomes an RFC 9457 problem document in one place
//! ([`problem::Problem`]), including unknown routes, wrong methods, bad
//! extractor input and panics.
//!
//! [`router`] builds the app; the caller binds the socket and hands it to
//! [`serve`] (tests bind `127.0.0.1:0`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tracing::Instrument;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::engine::Engine;
use crate::metrics::{HttpLabels, Metrics};

mod content;
pub mod extract;
pub mod limits;
pub mod ops;
pub mod problem;
pub mod read;
mod receipt_json;
pub mod records;
pub mod serve;
mod types;
pub mod web;

pub use serve::{ConnectionLimits, ServeOptions, Tls, TlsFiles};

use problem::Problem;

/// Request limits enforced by the HTTP layer (also the `[limits]` section
/// of the configuration).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest body of `POST /logs/{log}/records`, in bytes (`413` above).
    pub max_body_bytes: usize,
    /// Largest `document` of a private record, in bytes (decoded; at most
    /// 1 MiB). Sent as base64 it must also fit `max_body_bytes` (the
    /// default 36 KiB does, with room for the rest of the record): raise
    /// both for larger documents. Default 36864.
    pub max_document_bytes: usize,
    /// Most records in one `POST /logs/{log}/records/bulk` (at most 1000).
    pub max_bulk_records: usize,
    /// Largest body of a bulk request, in bytes.
    pub max_bulk_body_bytes: usize,
    /// Longest a client may take to send a request body, in milliseconds
    /// (`408` after). Default 10000.
    pub body_timeout_ms: u64,
    /// Writes (`POST .../records`) in flight at once; beyond, `503` at
    /// once. Default 4096.
    pub max_in_flight_writes: usize,
    /// Public reads in flight at once; beyond, `503` at once. Reads and
    /// writes have separate capacity, so a flood of one never starves the
    /// other. Default 4096.
    pub max_in_flight_reads: usize,
    /// Bytes of request bodies held at once by all requests together
    /// (each takes its share before it is read); beyond, `503` at once.
    /// Bounds memory whatever the concurrency. Default 64 MiB (at least
    /// `max_bulk_body_bytes`).
    pub max_body_bytes_in_flight: usize,
    /// Public reads per second per client address (IPv6: per /64); beyond,
    /// `429`. 0 (the default) turns it off: behind a proxy or CDN every
    /// client shares its address.
    pub reads_per_address_per_s: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 65_536,
            max_document_bytes: 36 * 1024,
            max_bulk_records: crate::records::MAX_BULK_RECORDS,
            max_bulk_body_bytes: 16 << 20,
            body_timeout_ms: 10_000,
            max_body_bytes_in_flight: 64 << 20,
            max_in_flight_writes: 4096,
            max_in_flight_reads: 4096,
            reads_per_address_per_s: 0,
        }
    }
}

/// What every handler can reach: one pointer, so that each request's copy
/// costs one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
pub struct Shared {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Whether `/metrics` is served here (false when it has a listener of
    /// its own, `metrics_listen`).
    pub metrics_here: bool,
    /// What request bodies may hold at once (`limits.max_body_bytes_in_flight`).
    pub body_budgets: extract::BodyBudgets,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The state of a router over `engine` with these limits; `/metrics`
    /// is served by it when `metrics_here`.
    pub fn new(
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
        limits: Limits,
        metrics_here: bool,
    ) -> Self {
        AppState(Arc::new(Shared {
            body_budgets: extract::BodyBudgets::new(limits.max_body_bytes_in_flight),
            engine,
            metrics,
            limits,
            metrics_here,
        }))
    }
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stele",
        description = "A verifiable record log: agencies submit records and get receipts anyone can verify offline; \
                       checkpoints, tiles and proofs let anyone audit the log. Errors are RFC 9457 problem documents \
                       (`application/problem+json`) with a stable `type` `urn:stele:problem:<slug>`."
    ),
    paths(
        read::logs,
        read::checkpoint,
        read::tile,
        read::entry,
        read::entry_by_hash,
        read::receipt,
        read::witness_policy,
        read::inclusion,
        read::consistency,
        records::submit,
        records::submit_bulk,
        content::read,
        content::erase,
        content::disclose,
        content::accesses,
        types::apply,
        types::list,
        types::show,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi_json,
    ),
    components(schemas(crate::wire::Problem, crate::wire::Violation, crate::wire::Attributes, crate::wire::AttributeValue)),
    modifiers(&BearerAuth),
    tags(
        (name = "logs", description = "The logs of this deployment"),
        (name = "records", description = "Agencies submit records, and read and erase private records' content (bearer token)"),
        (name = "types", description = "The record-type registry: every change is an entry of the log"),
        (name = "entries", description = "Entries by index or leaf hash"),
        (name = "proofs", description = "Inclusion and consistency proofs"),
        (name = "tiles", description = "C2SP tlog-tiles: checkpoint, hash tiles, entry bundles"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some("Agency token `<agency>.<secret>` from `stele agency add`".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// Builds the application.
pub fn router(state: AppState) -> Router {
    let limits = state.limits.clone();
    let retry_after = state.engine.retry_after();
    let writes = Router::new()
        .route(
            "/logs/{log}/records",
            post(records::submit).layer(DefaultBodyLimit::max(limits.max_body_bytes)),
        )
        .route(
            "/logs/{log}/records/bulk",
            post(records::submit_bulk).layer(DefaultBodyLimit::max(limits.max_bulk_body_bytes)),
        )
        .route(
            "/logs/{log}/records/{index}/content",
            get(content::read).delete(content::erase),
        )
        .route(
            "/logs/{log}/records/{index}/disclosure",
            post(content::disclose),
        )
        .route(
            "/logs/{log}/types",
            post(types::apply).layer(DefaultBodyLimit::max(limits.max_bulk_body_bytes)),
        )
        .route_layer(middleware::from_fn_with_state(
            limits::InFlight::new("write", limits.max_in_flight_writes, retry_after),
            limits::shed,
        ));
    let reads = Router::new()
        .route("/logs", get(read::logs))
        .route("/logs/{log}/checkpoint", get(read::checkpoint))
        .route("/logs/{log}/tile/{*path}", get(read::tile))
        .route("/logs/{log}/entries", get(read::entry_by_hash))
        .route("/logs/{log}/entries/{index}", get(read::entry))
        .route("/logs/{log}/entries/{index}/receipt", get(read::receipt))
        .route("/logs/{log}/witness-policy", get(read::witness_policy))
        .route(
            "/logs/{log}/records/{index}/accesses",
            get(content::accesses),
        )
        .route("/logs/{log}/proofs/inclusion", get(read::inclusion))
        .route("/logs/{log}/proofs/consistency", get(read::consistency))
        .route("/logs/{log}/types", get(types::list))
        .route("/logs/{log}/types/{name}", get(types::show))
        .route_layer(middleware::from_fn_with_state(
            limits::PerAddress::new(limits.reads_per_address_per_s),
            limits::per_address,
        ))
        .route_layer(middleware::from_fn_with_state(
            limits::InFlight::new("read", limits.max_in_flight_reads, retry_after),
            limits::shed,
        ));
    let api = Router::new()
        .merge(writes)
        .merge(reads)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi_json))
        .route("/docs", get(ops::docs))
        .route("/docs/swagger-ui.css", get(ops::docs_css))
        .route("/docs/swagger-ui-bundle.js", get(ops::docs_js))
        .route("/docs/init.js", get(ops::docs_init_js))
        .route("/docs/LICENSE", get(ops::docs_license))
        .merge(web::routes::<AppState>());
    let api = if state.metrics_here {
        api.route("/metrics", get(ops::metrics))
    } else {
        api
    };
    let api = api
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    // Outermost last: drop a client's unusable request id, assign one,
    // copy it to the response, then observe (span, metrics, and the
    // security headers on every answer), then turn panics into problems.
    api.layer(CatchPanicLayer::custom(panic_to_problem))
        .layer(middleware::from_fn_with_state(state, observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(RequestIds::default()))
        .layer(middleware::from_fn(drop_unusable_request_id))
}

/// The router of `/metrics` alone, for `metrics_listen`.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics_of))
        .with_state(metrics)
        .layer(middleware::from_fn(limits::security_headers))
}

/// Longest client-chosen request id kept (and logged).
const MAX_REQUEST_ID: usize = 64;

/// A client's `x-request-id` is kept (in logs and the answer) only if it is
/// short and plain (`[A-Za-z0-9._:-]`, at most 64 characters); otherwise the
/// server assigns one.
async fn drop_unusable_request_id(mut req: Request, next: Next) -> Response {
    let usable = req.headers().get("x-request-id").map(|v| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_REQUEST_ID
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
    });
    if usable == Some(false) {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

/// Request ids `<process start, hex ms>-<counter>`, unless the client sent
/// an `x-request-id` of its own (kept as is).
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        RequestIds {
            prefix: format!("{start:x}").into(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _req: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// Serves `router` on `listener` with the default [`ServeOptions`] (plain
/// HTTP) until `shutdown` completes; see [`serve::serve`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve::serve(listener, router, ServeOptions::default(), shutdown).await
}

async fn not_found() -> Problem {
    Problem::not_found("no such resource")
}

async fn method_not_allowed(method: Method) -> Problem {
    Problem::method_not_allowed(format!("method {method} is not allowed on this resource"))
}

fn panic_to_problem(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("(non-string panic payload)");
    tracing::error!(panic = what, "handler panicked");
    let e = std::io::Error::other(format!("handler panicked: {what}"));
    Problem::internal(&e).into_response()
}

/// One span per request (method, path, status, latency) and the
/// requests-by-status counter.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let span = tracing::info_span!(
        "request",
        method = %method,
        path = %BoundedPath(req.uri().path()),
        request_id = %req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-"),
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    span.record("status", status.as_u16());
    let micros = start.elapsed().as_micros();
    span.record("latency_ms", micros as f64 / 1e3);
    // Only standard methods become label values, so hostile requests cannot
    // grow the metric families without bound.
    let method_label = match method.as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "OPTIONS" | "PATCH") => m.to_string(),
        _ => "OTHER".to_string(),
    };
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method_label,
            route,
            status: status.as_u16(),
        })
        .inc();
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(target: "stele::http", "request failed");
        } else {
            tracing::info!(target: "stele::http", "request");
        }
    });
    limits::add_security_headers(resp.headers_mut());
    resp
}

/// A request path as logged: at most 200 characters, then `…`.
struct BoundedPath<'a>(&'a str);

impl std::fmt::Display for BoundedPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(200) {
            Some((cut, _)) => write!(f, "{}…", &self.0[..cut]),
            None => f.write_str(self.0),
        }
    }
}
