//! Private records' content: `GET` and `DELETE
//! /logs/{log}/records/{index}/content` (bearer token). A read appends a
//! `stele.access` entry before it answers; an erasure appends a
//! `stele.erasure` entry whose commit destroys the content.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;

use super::extract::{parse_u63, Bearer, PathParams, QueryPairs};
use super::problem::{Problem, ReadProblems, WriteProblems};
use super::records::{json_response, receipt_response};
use super::AppState;
use crate::wire;

/// The header that states why content is read (percent-encoded UTF-8).
pub const PURPOSE_HEADER: &str = "stele-purpose";

fn purpose(headers: &HeaderMap) -> Result<String, Problem> {
    let Some(raw) = headers.get(PURPOSE_HEADER) else {
        return Err(Problem::invalid(
            "Stele-Purpose",
            "a content read must state its purpose in the Stele-Purpose header \
             (percent-encoded UTF-8; it is public, in the access entry)",
        ));
    };
    percent_encoding::percent_decode(raw.as_bytes())
        .decode_utf8()
        .map(|p| p.into_owned())
        .map_err(|_| Problem::invalid("Stele-Purpose", "must be percent-encoded UTF-8"))
}

/// Read a private record's content.
///
/// For an agency the record's type names among its readers (in the
/// version in force). Before the content is sent, a `stele.access` entry
/// (this agency, the purpose, the record's index) is integrated into the
/// log, durably: no content leaves without its access entry. The answer
/// carries the content, its salt, the record's receipt and the access
/// entry's receipt; the client recomputes the commitment from the content
/// and salt and checks it against the signed, included leaf (`stele
/// fetch` does). A failed check is never answered with content: a payload
/// that does not match its commitment is a `500` and counted
/// (`stele_content_reads_total{outcome="corrupt"}`).
#[utoipa::path(
    get,
    path = "/logs/{log}/records/{index}/content",
    tag = "records",
    params(
        ("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"),
        ("index" = u64, Path, description = "Index of the private record", minimum = 0, maximum = 9223372036854775807_u64),
        ("Stele-Purpose" = String, Header, description = "Why the content is read, 1 to 200 characters, percent-encoded UTF-8 (`treatment%20follow-up`). Public: it is written into the access entry"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The content, released after its access entry", body = wire::Content),
        (status = 403, description = "The record's type does not grant this agency read (`urn:stele:problem:forbidden`); no access entry is appended", body = wire::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown log, no such entry, or the entry is not a private record", body = wire::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The content was erased (`urn:stele:problem:erased`; `tombstone` is the erasure entry's index)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No or bad Stele-Purpose header, or index not a decimal integer below 2^63 (`urn:stele:problem:invalid-field`)", body = wire::Problem, content_type = "application/problem+json"),
        WriteProblems,
    )
)]
pub async fn read(
    State(state): State<AppState>,
    PathParams((log, index)): PathParams<(String, String)>,
    Bearer(agency): Bearer,
    query: QueryPairs,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    query.only(&[])?;
    let index = parse_u63("index", &index)?;
    let purpose = purpose(&headers)?;
    let c = state
        .engine
        .read_content(&log, &agency, index, &purpose)
        .await?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = wire::Content {
        index,
        content: serde_json::from_slice(&c.content)
            .map_err(|e| Problem::from(crate::engine::LogError::internal(e)))?,
        salt: b64.encode(c.salt),
        commitment: crate::records::private::commitment(&c.salt, &c.content),
        receipt: c.record.receipt(),
        access: c.access.receipt(),
    };
    Ok(private_json(StatusCode::OK, &body))
}

/// A JSON answer about a private record: never kept by a cache.
fn private_json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(body).expect("a wire type always serializes");
    let mut resp = json_response(status, body);
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Erase a private record's content.
///
/// By the agency that wrote the record, or an agency registered as an
/// eraser (`stele agency add --eraser`, a data-protection officer).
/// Appends a `stele.erasure` entry
/// (the reason, the record's index) whose commit destroys the sealed
/// content, its data key and salt, and the record's deduplication key, in
/// one transaction. The record's entry, every checkpoint and every proof
/// stay valid. Answers the erasure entry's receipt; later reads answer
/// `410` naming it. Erasing again answers `410`.
#[utoipa::path(
    delete,
    path = "/logs/{log}/records/{index}/content",
    tag = "records",
    params(
        ("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"),
        ("index" = u64, Path, description = "Index of the private record", minimum = 0, maximum = 9223372036854775807_u64),
        ("reason" = String, Query, description = "Why: `subject-request`, `retention-expired`, `legal-order` or `recorded-in-error` (public, in the erasure entry)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Erased: the erasure entry's receipt", body = wire::Receipt,
            headers(("Stele-Receipt-Kind" = String, description = "`log-signed`"))),
        (status = 403, description = "Another agency wrote the record, and this one is no eraser (`urn:stele:problem:forbidden`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown log, no such entry, or the entry is not a private record", body = wire::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Already erased (`urn:stele:problem:erased`; `tombstone` names the erasure entry)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No or unknown reason, or a bad index (`urn:stele:problem:invalid-field`)", body = wire::Problem, content_type = "application/problem+json"),
        WriteProblems,
    )
)]
pub async fn erase(
    State(state): State<AppState>,
    PathParams((log, index)): PathParams<(String, String)>,
    Bearer(agency): Bearer,
    query: QueryPairs,
) -> Result<Response, Problem> {
    query.only(&["reason"])?;
    let index = parse_u63("index", &index)?;
    let reason = query.get("reason").ok_or_else(|| {
        Problem::invalid(
            "reason",
            format!(
                "an erasure states its reason: one of {}",
                crate::records::private::REASONS.join(", ")
            ),
        )
    })?;
    let r = state
        .engine
        .erase_content(&log, &agency, index, reason)
        .await?;
    Ok(receipt_response(StatusCode::OK, &r))
}

/// Issue a disclosure of a private record for its data subject.
///
/// By the agency that wrote the record. The answer carries the record's
/// salt (with it the subject checks the content they are shown against the
/// record's leaf) and a fresh capability to list every entry about the
/// record (`GET .../accesses`); the server keeps only the capability's
/// hash, and a new disclosure replaces the last one.
#[utoipa::path(
    post,
    path = "/logs/{log}/records/{index}/disclosure",
    tag = "records",
    params(
        ("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"),
        ("index" = u64, Path, description = "Index of the private record", minimum = 0, maximum = 9223372036854775807_u64),
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The disclosure, shown once", body = wire::Disclosure),
        (status = 403, description = "Another agency wrote the record (`urn:stele:problem:forbidden`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown log, no such entry, or the entry is not a private record", body = wire::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The content was erased (`urn:stele:problem:erased`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Index not a decimal integer below 2^63", body = wire::Problem, content_type = "application/problem+json"),
        WriteProblems,
    )
)]
pub async fn disclose(
    State(state): State<AppState>,
    PathParams((log, index)): PathParams<(String, String)>,
    Bearer(agency): Bearer,
    query: QueryPairs,
) -> Result<Response, Problem> {
    query.only(&[])?;
    let index = parse_u63("index", &index)?;
    let d = state.engine.issue_disclosure(&log, &agency, index).await?;
    let body = wire::Disclosure {
        log: state.engine.origin(&log)?,
        index,
        salt: base64::engine::general_purpose::STANDARD.encode(d.salt),
        commitment: d.commitment,
        capability: d.capability,
    };
    Ok(private_json(StatusCode::CREATED, &body))
}

/// The header that carries a disclosure's capability.
pub const DISCLOSURE_HEADER: &str = "stele-disclosure";

fn proven(e: crate::engine::ProvenEntry) -> wire::ProvenEntry {
    wire::ProvenEntry {
        index: e.index,
        leaf: e.leaf,
        inclusion_proof: e.proof,
    }
}

/// Who read a private record, when and why: for its data subject.
///
/// With the capability of the record's disclosure (header
/// `Stele-Disclosure`): the record's entry and every `stele.access` entry
/// (the reader, the stated purpose, the time) and `stele.erasure` entry
/// about it, oldest first, each with its inclusion proof in the tree of the
/// latest checkpoint. Without it, or with another: `403` and nothing about
/// the record.
#[utoipa::path(
    get,
    path = "/logs/{log}/records/{index}/accesses",
    tag = "records",
    params(
        ("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"),
        ("index" = u64, Path, description = "Index of the private record", minimum = 0, maximum = 9223372036854775807_u64),
        ("Stele-Disclosure" = String, Header, description = "The capability of the record's disclosure"),
    ),
    responses(
        (status = 200, description = "The entries about the record, proven", body = wire::Accesses),
        (status = 403, description = "No or another capability (`urn:stele:problem:forbidden`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown log", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Index not a decimal integer below 2^63", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn accesses(
    State(state): State<AppState>,
    PathParams((log, index)): PathParams<(String, String)>,
    query: QueryPairs,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    query.only(&[])?;
    let index = parse_u63("index", &index)?;
    let cap = headers
        .get(DISCLOSURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let a = state.engine.accesses(&log, index, cap).await?;
    let body = wire::Accesses {
        tree_size: a.size,
        checkpoint: a.checkpoint,
        record: proven(a.record),
        entries: a.events.into_iter().map(proven).collect(),
    };
    Ok(private_json(StatusCode::OK, &body))
}
