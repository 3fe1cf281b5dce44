//! The record-type registry: `POST /logs/{log}/types` (a registry admin
//! applies a definition), `GET /logs/{log}/types` and
//! `GET /logs/{log}/types/{name}` (public).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;

use super::extract::{Bearer, JsonBytes, PathParams};
use super::problem::{Problem, ReadProblems, WriteProblems};
use super::{receipt_json, records::json_response, AppState};
use crate::registry::{CompiledType, TypeDefinition};
use crate::wire;

fn version_body(t: &Arc<CompiledType>) -> wire::TypeVersion {
    wire::TypeVersion {
        name: t.def.name.to_string(),
        version: t.def.version,
        index: t.index,
        agency: t.agency.clone(),
        definition: serde_json::from_str(&t.canonical).unwrap_or_default(),
    }
}

/// Apply a record-type definition.
///
/// The definition becomes an entry of the log (type `stele.type`) and is in
/// force for every record sequenced after it. Only an agency registered
/// with `--registry-admin` may. Version 1 defines a type; each later version
/// is the previous one plus one. The same definition applied again by the
/// same agency answers with its existing entry (`200`).
#[utoipa::path(
    post,
    path = "/logs/{log}/types",
    tag = "types",
    params(("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$")),
    request_body(content = Object, content_type = "application/json", description = "A type definition: name, version, description, schema (JSON Schema draft 2020-12), subject {required, pattern}, visibility, writers, readers"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Applied: the receipt of its registry entry", body = wire::Receipt),
        (status = 200, description = "The same definition was applied before: its entry's receipt", body = wire::Receipt),
        (status = 400, description = "Not JSON (`urn:stele:problem:malformed`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The agency is not a registry admin (`urn:stele:problem:forbidden`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The version exists already or skips one (`urn:stele:problem:conflict`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Definition too large (`urn:stele:problem:too-large`)", body = wire::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid definition: unknown field, reserved name, a schema that does not compile, a bad subject pattern (`urn:stele:problem:invalid-field`)", body = wire::Problem, content_type = "application/problem+json"),
        WriteProblems,
    )
)]
pub async fn apply(
    State(state): State<AppState>,
    PathParams(log): PathParams<String>,
    Bearer(agency): Bearer,
    JsonBytes(body, _held): JsonBytes,
) -> Result<Response, Problem> {
    let text = std::str::from_utf8(&body)
        .map_err(|e| Problem::malformed(format!("body is not UTF-8: {e}")))?;
    let def = TypeDefinition::from_value(crate::records::parse_strict_json(text)?)?;
    let entry = state.engine.apply_type(&log, &agency, def).await?;
    let status = if entry.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, receipt_json::receipt(&entry)))
}

/// List the record types.
///
/// The version in force of every type registered in the log.
#[utoipa::path(
    get,
    path = "/logs/{log}/types",
    tag = "types",
    params(("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$")),
    responses(
        (status = 200, description = "The types", body = wire::Types),
        (status = 404, description = "Unknown log", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    PathParams(log): PathParams<String>,
) -> Result<Json<wire::Types>, Problem> {
    let (registry, tree_size) = state.engine.registry(&log)?;
    let types = registry
        .types()
        .filter_map(|(_, versions)| versions.last().map(version_body))
        .collect();
    Ok(Json(wire::Types { tree_size, types }))
}

/// One record type, every version.
///
/// Each version with the index of the entry that defined it, that entry's
/// leaf and its inclusion proof against the answer's checkpoint.
#[utoipa::path(
    get,
    path = "/logs/{log}/types/{name}",
    tag = "types",
    params(
        ("log" = String, Path, description = "Log name", pattern = "^[a-z0-9-]{1,64}$"),
        ("name" = String, Path, description = "Record type, e.g. land.transfer"),
    ),
    responses(
        (status = 200, description = "Every version, oldest first", body = wire::TypeHistory),
        (status = 404, description = "Unknown log or type", body = wire::Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
pub async fn show(
    State(state): State<AppState>,
    PathParams((log, name)): PathParams<(String, String)>,
) -> Result<Json<wire::TypeHistory>, Problem> {
    let (tree_size, checkpoint, versions) = state.engine.type_history(&log, &name).await?;
    Ok(Json(wire::TypeHistory {
        name,
        tree_size,
        checkpoint,
        versions: versions
            .into_iter()
            .map(|v| wire::ProvenTypeVersion {
                version: version_body(&v.version),
                leaf: v.leaf,
                inclusion_proof: v.proof,
            })
            .collect(),
    }))
}
