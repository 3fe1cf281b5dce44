//! The witness's HTTP interface (submission and monitoring prefix `/`):
//!
//! | request | answer |
//! |---|---|
//! | `POST /add-checkpoint` | C2SP tlog-witness: `200` with the cosignature line, or the spec's `400`, `403`, `404`, `409`, `422` ([`stele_core::witness`]); `413` over [`MAX_REQUEST_BYTES`]; `503` (with `Retry-After`) when the database is unavailable or the clock is behind |
//! | `GET /<hex SHA-256 of the origin>/checkpoint` | the latest cosigned checkpoint of that log: its text, the log's verified signatures and this witness's cosignature (`text/plain`); `404` if it never cosigned one |
//! | `GET /healthz` | `ok` |
//!
//! Every answer is `text/plain` (the `409` for a stale size is
//! `text/x.tlog.size`). This is the one place the witness's outcomes become
//! statuses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use stele_core::witness::{
    monitoring_path, AddCheckpointRequest, Rejection, Witness, MAX_REQUEST_BYTES,
};

use super::{StoreError, StoredCheckpoint, WitnessStore};

/// A source of UNIX seconds (the system clock in production, injected in tests).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// How many times a request re-reads and re-decides when its
/// compare-and-set lost a race (the second decision answers `409`).
const CAS_ATTEMPTS: usize = 3;

/// Everything a request needs.
pub struct WitnessApp {
    witness: Witness,
    store: Arc<dyn WitnessStore>,
    clock: Clock,
    /// Test-only pause between the durable write and the answer.
    pause_after_write: Option<Duration>,
    /// Monitoring path segment (hex SHA-256 of the origin) → origin.
    by_hash: HashMap<String, String>,
}

impl WitnessApp {
    pub fn new(
        witness: Witness,
        store: Arc<dyn WitnessStore>,
        clock: Clock,
        pause_after_write: Option<Duration>,
    ) -> Arc<Self> {
        let by_hash = witness
            .origins()
            .map(|o| {
                let path = monitoring_path(o);
                let hash = path.trim_start_matches('/').trim_end_matches("/checkpoint");
                (hash.to_owned(), o.to_owned())
            })
            .collect();
        Arc::new(WitnessApp {
            witness,
            store,
            clock,
            pause_after_write,
            by_hash,
        })
    }

    pub fn witness(&self) -> &Witness {
        &self.witness
    }
}

/// The router; the caller binds the socket.
pub fn router(app: Arc<WitnessApp>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/{origin_hash}/checkpoint", get(monitor_checkpoint))
        .route("/healthz", get(|| async { text(StatusCode::OK, "ok\n") }))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n") })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: Arc<WitnessApp>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn unavailable(why: &str) -> Response {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Unavailable(why) => {
            tracing::warn!(error = %why, "witness storage unavailable");
            unavailable("storage unavailable; try again")
        }
        StoreError::Other(why) => {
            tracing::error!(error = %why, "witness storage error");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

fn rejection(r: &Rejection, body: &Bytes) -> Response {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    match r {
        // Possible evidence of a misbehaving log: keep the request.
        Rejection::RootMismatch { .. } | Rejection::InvalidProof { .. } => tracing::warn!(
            reason = %r,
            request = %String::from_utf8_lossy(body),
            "refused an inconsistent checkpoint (evidence)"
        ),
        _ => tracing::info!(status = status.as_u16(), reason = %r, "refused"),
    }
    if let Rejection::ClockBehind { .. } = r {
        return unavailable(&r.to_string());
    }
    let (content_type, body) = r.body();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("a static content type"),
    );
    resp
}

async fn add_checkpoint(State(app): State<Arc<WitnessApp>>, body: Bytes) -> Response {
    let request = match AddCheckpointRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return rejection(&Rejection::Malformed(e.to_string()), &body),
    };
    let Some(origin) = request.origin().map(str::to_owned) else {
        return rejection(&Rejection::Malformed("no origin line".into()), &body);
    };
    if app.witness.log_keys(&origin).is_none() {
        return rejection(&Rejection::UnknownOrigin(origin), &body);
    }
    for _ in 0..CAS_ATTEMPTS {
        let stored = match app.store.latest(&origin).await {
            Ok(s) => s,
            Err(e) => return store_error(e),
        };
        let state = stored.as_ref().map(|s| &s.state);
        let cosigned = match app.witness.add_checkpoint(&request, state, (app.clock)()) {
            Ok(c) => c,
            Err(r) => return rejection(&r, &body),
        };
        let new = StoredCheckpoint {
            origin: origin.clone(),
            state: cosigned.state.clone(),
            note: cosigned.note,
        };
        match app.store.compare_and_set(state, &new).await {
            Ok(true) => {
                // Durable. A crash from here on loses only this answer;
                // the log's retry gets 409 with the new size.
                if let Some(pause) = app.pause_after_write {
                    tokio::time::sleep(pause).await;
                }
                tracing::info!(origin = %origin, size = new.state.size, "cosigned");
                return text(StatusCode::OK, cosigned.response);
            }
            // Another request moved the state: decide again on the new one.
            Ok(false) => continue,
            Err(e) => return store_error(e),
        }
    }
    unavailable("the state kept changing; try again")
}

async fn monitor_checkpoint(
    State(app): State<Arc<WitnessApp>>,
    Path(origin_hash): Path<String>,
) -> Response {
    let Some(origin) = app.by_hash.get(&origin_hash) else {
        return text(StatusCode::NOT_FOUND, "unknown log\n");
    };
    match app.store.latest(origin).await {
        Ok(Some(stored)) => {
            let mut r = text(StatusCode::OK, stored.note);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Ok(None) => text(
            StatusCode::NOT_FOUND,
            "this witness has not cosigned a checkpoint of that log\n",
        ),
        Err(e) => store_error(e),
    }
}
