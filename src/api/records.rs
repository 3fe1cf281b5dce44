//! Writes: `POST /logs/{log}/records` and `POST /logs/{log}/records/bulk`.
//!
//! Order of checks (the first failure answers): bearer token (`401`),
//! content type (`415`), body size (`413`), body syntax and fields (`400`,
//! `422`, `413` for attributes), then the engine (unknown log `404`; the
//! log's registry: type not registered `422`, agency not a writer `403`,
//! subject or attributes breaking the type's rules `422`; pushback `503`).
//! A rejected request appends nothing.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::extract::{Bearer, JsonBytes, PathParams, QueryPairs};
use super::problem::{Problem, WriteProblems};
use super::{receipt_json, AppState};
use crate::records::{parse_bulk, parse_record};
use crate::wire;

/// Submit a record.
///
/// Returns only once the record is durably committed and covered by a
/// signed checkpoint. The same agency submitting the same body again gets
/// the existing record's receipt with `200`.
#[utoipa::path(
    post,
    path = "/logs/{log}/records",
    tag = "records",
    params(
        ("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"),
        ("wait" = Option<String>, Query, description = "`integrated` (default): answer once the record is committed, with a log-signed receipt. `witnessed`: answer once a checkpoint that covers it reached the log's witness quorum, with that checkpoint (a log with a witness policy only; `503` naming the entry if the quorum is not reached within two witnessing intervals and two witness timeouts — the record is stored all the same)", pattern = "^(integrated|witnessed)$"),
    ),
    request_body(content = wire::RecordRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Recorded", body = wire::Receipt,
            headers(("Stele-Receipt-Kind" = String, description = "`witnessed` or `log-signed`"))),
        (status = 200, description = "Duplicate: the existing record's receipt", body = wire::Receipt,
            headers(("Stele-Receipt-Kind" = String, description = "`witnessed` or `log-signed`"))),
        (status = 400, description = "Not UTF-8, not JSON, or not an object; a repeated key; a number beyond any IEEE double (`urn:stele:problem:malformed`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The agency is not a writer of this record type in this log, or its `--types` exclude it (`urn:stele:problem:forbidden`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or attributes too large (`urn:stele:problem:too-large`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown field; a number RFC 8785 would store as another number; a format control in the subject or an attribute key (`urn:stele:problem:invalid-field`, `field` names it); a record type not registered in the log (`urn:stele:problem:unknown-type`); a subject or attributes that break the type's rules (`urn:stele:problem:schema-violation`: `pointer` and `keyword` of the first violation, `errors` all of them, of every failing record)", body = wire::Problem, content_type = "application/problem+json"),
        WriteProblems,
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    PathParams(log): PathParams<String>,
    Bearer(agency): Bearer,
    query: QueryPairs,
    JsonBytes(body, _held): JsonBytes,
) -> Result<Response, Problem> {
    query.only(&["wait"])?;
    let witnessed = match query.get("wait") {
        None | Some("integrated") => false,
        Some("witnessed") => true,
        Some(_) => {
            return Err(Problem::invalid(
                "wait",
                "must be `integrated` (the default) or `witnessed`",
            ))
        }
    };
    let wait = if witnessed {
        Some(state.engine.witness_wait(&log)?)
    } else {
        None
    };
    let record = parse_record(&body)?;
    let mut submitted = state.engine.submit(&log, &agency, record).await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    if let Some(wait) = wait {
        let created = submitted.created;
        submitted = state
            .engine
            .receipt(&log, submitted.index, Some(wait))
            .await?;
        submitted.created = created;
    }
    Ok(receipt_response(status, &submitted))
}

/// A receipt with the header saying its kind.
pub(super) fn receipt_response(status: StatusCode, r: &crate::engine::Integrated) -> Response {
    let mut resp = json_response(status, receipt_json::receipt(r));
    let kind = if r.witnessed {
        "witnessed"
    } else {
        "log-signed"
    };
    resp.headers_mut()
        .insert("stele-receipt-kind", HeaderValue::from_static(kind));
    resp
}

/// Submit up to 1,000 records at once.
///
/// Validation is all-or-nothing: one invalid record rejects the request
/// (the problem's `field` names it, e.g. `records[3].type`) and nothing is
/// appended. `201` when at least one record is new, `200` when all were
/// duplicates.
#[utoipa::path(
    post,
    path = "/logs/{log}/records/bulk",
    tag = "records",
    params(("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$")),
    request_body(content = wire::BulkRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Recorded", body = wire::Receipts),
        (status = 200, description = "Every record was a duplicate", body = wire::Receipts),
        (status = 400, description = "Malformed body: not UTF-8, not JSON, not an object, a repeated key (`urn:stele:problem:malformed`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The agency is not a writer of a record's type in this log, or its `--types` exclude it (`urn:stele:problem:forbidden`; `detail` names the record)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body, a record, a record's attributes, or the number of records too large (`urn:stele:problem:too-large`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown field; a number RFC 8785 would store as another number; a format control in the subject or an attribute key (`urn:stele:problem:invalid-field`, `field` names it); a record type not registered in the log (`urn:stele:problem:unknown-type`); a subject or attributes that break the type's rules (`urn:stele:problem:schema-violation`: `pointer` and `keyword` of the first violation, `errors` all of them, of every failing record)", body = wire::Problem, content_type = "application/problem+json"),
        WriteProblems,
    )
)]
pub async fn submit_bulk(
    State(state): State<AppState>,
    PathParams(log): PathParams<String>,
    Bearer(agency): Bearer,
    query: QueryPairs,
    JsonBytes(body, _held): JsonBytes,
) -> Result<Response, Problem> {
    if let Some((name, _)) = query.0.first() {
        return Err(Problem::invalid(
            name.clone(),
            "POST records/bulk takes no query parameters (`wait=witnessed` is for single records: fetch each record's witnessed receipt at GET /logs/{log}/entries/{index}/receipt)",
        ));
    }
    let limits = &state.limits;
    let records = parse_bulk(&body, limits.max_bulk_records, limits.max_body_bytes)?;
    let submitted = state.engine.submit_bulk(&log, &agency, records).await?;
    let status = if submitted.iter().any(|s| s.created) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, receipt_json::bulk(&submitted)))
}

/// A JSON body written by `receipt_json` (the same bytes as `Json` of
/// `Receipt` / `Receipts` would give).
pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
