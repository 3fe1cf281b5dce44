//! Public reads: logs, checkpoints, tiles, entries, proofs. No
//! authentication; nothing here writes.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use stele_core::tile::TilePath;

use super::extract::{parse_u63, PathParams, QueryPairs};
use super::problem::{Problem, ReadProblems};
use super::AppState;
use crate::engine::Locator;
use crate::wire;

pub use crate::engine::{CACHE_CHECKPOINT, CACHE_IMMUTABLE, CACHE_PARTIAL};

/// List the logs.
#[utoipa::path(
    get,
    path = "/logs",
    tag = "logs",
    responses(
        (status = 200, description = "The logs with their verifier keys and sizes", body = wire::Logs),
        (status = 429, description = "Too many requests from this address (`urn:stele:problem:rate-limited`); see Retry-After", body = wire::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many reads in flight (`urn:stele:problem:unavailable`); see Retry-After", body = wire::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logs(State(state): State<AppState>) -> Json<wire::Logs> {
    let logs = state
        .engine
        .logs()
        .await
        .into_iter()
        .map(|l| wire::LogInfo {
            name: l.name,
            origin: l.origin,
            vkey: l.vkey,
            tree_size: l.tree_size,
        })
        .collect();
    Json(wire::Logs { logs })
}

/// The latest signed checkpoint (C2SP signed note).
#[utoipa::path(
    get,
    path = "/logs/{log}/checkpoint",
    tag = "tiles",
    params(("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$")),
    responses(
        (status = 200, description = "Signed note text", body = String, content_type = "text/plain; charset=utf-8"),
        (status = 404, description = "Unknown log", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn checkpoint(
    State(state): State<AppState>,
    PathParams(log): PathParams<String>,
) -> Result<Response, Problem> {
    let note = state.engine.checkpoint(&log).await?;
    Ok(plain_text(note, Some(CACHE_CHECKPOINT)))
}

/// A `text/plain; charset=utf-8` answer, with `Cache-Control` if given.
fn plain_text(body: String, cache: Option<&'static str>) -> Response {
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response();
    if let Some(c) = cache {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(c));
    }
    resp
}

/// A C2SP tlog-tiles hash tile or entry bundle.
///
/// `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]` with the spec's
/// index encoding (`x001/x234/067`). A path that is not in canonical form,
/// or a tile the tree does not have, is `404`.
#[utoipa::path(
    get,
    path = "/logs/{log}/tile/{path}",
    tag = "tiles",
    params(
        ("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"),
        ("path" = String, Path, description = "Tile path after `tile/`, e.g. `0/x001/234.p/7` or `entries/000`"),
    ),
    responses(
        (status = 200, description = "Tile bytes; full tiles are immutable", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 404, description = "Unknown log, bad path, or no such tile", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn tile(
    State(state): State<AppState>,
    PathParams((log, path)): PathParams<(String, String)>,
) -> Result<Response, Problem> {
    let rel = format!("tile/{}", path.trim_start_matches('/'));
    let tile = TilePath::parse(&rel)
        .map_err(|e| Problem::not_found(format!("no such tile path {rel:?}: {e}")))?;
    let data = state.engine.tile(&log, tile).await?;
    let cache = if data.immutable {
        CACHE_IMMUTABLE
    } else {
        CACHE_PARTIAL
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        data.data,
    )
        .into_response())
}

/// One entry by index.
#[utoipa::path(
    get,
    path = "/logs/{log}/entries/{index}",
    tag = "entries",
    params(("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"), ("index" = u64, Path, description = "Entry index", minimum = 0, maximum = 9223372036854775807_u64)),
    responses(
        (status = 200, description = "The entry", body = wire::Entry),
        (status = 404, description = "Unknown log, or index beyond the log", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Index not a decimal integer below 2^63", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn entry(
    State(state): State<AppState>,
    PathParams((log, index)): PathParams<(String, String)>,
) -> Result<Json<wire::Entry>, Problem> {
    let index = parse_u63("index", &index)?;
    Ok(Json(entry_body(state.engine.entry(&log, index).await?)))
}

/// A receipt for one entry, against the latest witnessed checkpoint.
///
/// With a witness policy: the inclusion proof of the entry in the latest
/// checkpoint a quorum of the log's witnesses cosigned, and that
/// checkpoint with their cosignature lines (a *witnessed* receipt; the
/// `Stele-Receipt-Kind` header says `witnessed`). `503` with
/// `Retry-After` while no witnessed checkpoint covers the entry yet.
/// Without a policy: against the latest checkpoint (`log-signed`).
#[utoipa::path(
    get,
    path = "/logs/{log}/entries/{index}/receipt",
    tag = "entries",
    params(("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"), ("index" = u64, Path, description = "Entry index", minimum = 0, maximum = 9223372036854775807_u64)),
    responses(
        (status = 200, description = "The receipt", body = wire::Receipt,
            headers(("Stele-Receipt-Kind" = String, description = "`witnessed` (the checkpoint carries the witness quorum's cosignatures) or `log-signed`"))),
        (status = 404, description = "Unknown log, or index beyond the log", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Index not a decimal integer below 2^63", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn receipt(
    State(state): State<AppState>,
    PathParams((log, index)): PathParams<(String, String)>,
) -> Result<Response, Problem> {
    let index = parse_u63("index", &index)?;
    let r = state.engine.receipt(&log, index, None).await?;
    Ok(super::records::receipt_response(StatusCode::OK, &r))
}

/// The log's witness policy (C2SP tlog-policy), to pin.
///
/// The witnesses whose cosignatures the log collects and the quorum a
/// published checkpoint meets. Verifiers pin this file
/// (`stele verify --policy`, the web page).
#[utoipa::path(
    get,
    path = "/logs/{log}/witness-policy",
    tag = "tiles",
    params(("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$")),
    responses(
        (status = 200, description = "The policy file", body = String, content_type = "text/plain; charset=utf-8"),
        (status = 404, description = "Unknown log, or a log without a witness policy", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn witness_policy(
    State(state): State<AppState>,
    PathParams(log): PathParams<String>,
) -> Result<Response, Problem> {
    Ok(plain_text(state.engine.witness_policy(&log)?, None))
}

/// Look an entry up by its leaf hash.
#[utoipa::path(
    get,
    path = "/logs/{log}/entries",
    tag = "entries",
    params(
        ("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"),
        ("leaf_hash" = String, Query, description = "Hex SHA-256 leaf hash", pattern = "^[0-9a-fA-F]{64}$"),
    ),
    responses(
        (status = 200, description = "The entry", body = wire::Entry),
        (status = 404, description = "Unknown log or leaf hash", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or bad leaf_hash", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn entry_by_hash(
    State(state): State<AppState>,
    PathParams(log): PathParams<String>,
    query: QueryPairs,
) -> Result<Json<wire::Entry>, Problem> {
    query.only(&["leaf_hash"])?;
    let hash = query
        .hash("leaf_hash")?
        .ok_or_else(|| Problem::invalid("leaf_hash", "leaf_hash is required"))?;
    Ok(Json(entry_body(
        state.engine.entry_by_leaf_hash(&log, &hash).await?,
    )))
}

/// Inclusion proof of one entry.
///
/// Name the entry by `index` or by `leaf_hash` (exactly one). Against the
/// latest checkpoint unless `tree_size` is given.
#[utoipa::path(
    get,
    path = "/logs/{log}/proofs/inclusion",
    tag = "proofs",
    params(
        ("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"),
        ("index" = Option<u64>, Query, description = "Entry index (give index or leaf_hash, not both)", minimum = 0, maximum = 9223372036854775807_u64),
        ("leaf_hash" = Option<String>, Query, description = "Hex SHA-256 leaf hash (give index or leaf_hash, not both)", pattern = "^[0-9a-fA-F]{64}$"),
        ("tree_size" = Option<u64>, Query, description = "Tree size to prove against (default: latest); above index, at most the latest size", minimum = 0, maximum = 9223372036854775807_u64),
    ),
    responses(
        (status = 200, description = "The proof and the checkpoint it leads to", body = wire::Inclusion),
        (status = 404, description = "Unknown log, entry or leaf hash", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad parameter, index >= tree_size, or tree_size beyond the log", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn inclusion(
    State(state): State<AppState>,
    PathParams(log): PathParams<String>,
    query: QueryPairs,
) -> Result<Json<wire::Inclusion>, Problem> {
    query.only(&["index", "leaf_hash", "tree_size"])?;
    let index = query.u63("index")?;
    let hash = query.hash("leaf_hash")?;
    let tree_size = query.u63("tree_size")?;
    let at = match (index, hash) {
        (Some(i), None) => Locator::Index(i),
        (None, Some(h)) => Locator::LeafHash(h),
        (Some(_), Some(_)) => {
            return Err(Problem::invalid(
                "leaf_hash",
                "give either index or leaf_hash, not both",
            ))
        }
        (None, None) => return Err(Problem::invalid("index", "index or leaf_hash is required")),
    };
    if let (Some(i), Some(size)) = (index, tree_size) {
        if i >= size {
            return Err(Problem::invalid(
                "index",
                format!("index {i} is not below tree_size {size}"),
            ));
        }
    }
    let p = state.engine.inclusion_proof(&log, at, tree_size).await?;
    Ok(Json(wire::Inclusion {
        index: p.index,
        tree_size: p.tree_size,
        leaf_hash: p.leaf_hash,
        inclusion_proof: p.proof,
        checkpoint: p.checkpoint,
    }))
}

/// Consistency proof between two tree sizes.
#[utoipa::path(
    get,
    path = "/logs/{log}/proofs/consistency",
    tag = "proofs",
    params(
        ("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"),
        ("from" = u64, Query, description = "Older tree size, at most `to`", minimum = 0, maximum = 9223372036854775807_u64),
        ("to" = Option<u64>, Query, description = "Newer tree size (default: latest), at most the latest size", minimum = 0, maximum = 9223372036854775807_u64),
    ),
    responses(
        (status = 200, description = "The proof and the checkpoint at `to`", body = wire::Consistency),
        (status = 404, description = "Unknown log", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad parameter, from > to, or a size beyond the log", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn consistency(
    State(state): State<AppState>,
    PathParams(log): PathParams<String>,
    query: QueryPairs,
) -> Result<Json<wire::Consistency>, Problem> {
    query.only(&["from", "to"])?;
    let from = query
        .u63("from")?
        .ok_or_else(|| Problem::invalid("from", "from is required"))?;
    let to = query.u63("to")?;
    if let Some(to) = to {
        if from > to {
            return Err(Problem::invalid(
                "from",
                format!("from ({from}) is greater than to ({to})"),
            ));
        }
    }
    let p = state.engine.consistency_proof(&log, from, to).await?;
    Ok(Json(wire::Consistency {
        from: p.from,
        to: p.to,
        consistency_proof: p.proof,
        checkpoint: p.checkpoint,
    }))
}

fn entry_body(e: crate::engine::EntryView) -> wire::Entry {
    wire::Entry {
        index: e.index,
        leaf: e.leaf,
        leaf_hash: e.leaf_hash,
    }
}
