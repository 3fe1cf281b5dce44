//! Operations endpoints: liveness, readiness, metrics, the OpenAPI document
//! and its interactive docs page (Swagger UI, vendored under `assets/`).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::OpenApi;

use super::problem::Problem;
use super::AppState;
use crate::metrics::Metrics;
use crate::wire;

/// Liveness: the process is up and answering.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", body = wire::Status)))]
pub async fn healthz() -> Json<wire::Status> {
    Json(wire::Status {
        status: "ok".into(),
    })
}

/// Readiness: the database answers and every sequencer is running.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = wire::Status),
        (status = 503, description = "Not ready; `detail` says why", body = wire::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<wire::Status>, Problem> {
    match state.engine.ready().await {
        Ok(()) => Ok(Json(wire::Status {
            status: "ready".into(),
        })),
        Err(reason) => Err(Problem::unavailable(
            format!("not ready: {reason}"),
            Duration::from_secs(1),
        )),
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    metrics_of(State(state.metrics.clone())).await
}

/// `/metrics` on a listener of its own.
pub async fn metrics_of(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics.render(),
    )
        .into_response()
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON.as_str(),
    )
        .into_response()
}

/// The generated document, pretty-printed with a final newline (exactly the
/// text of the checked-in `openapi/stele.json`).
pub static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    let mut s = super::ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
});

const DOCS_HTML: &str = include_str!("assets/docs.html");
const DOCS_INIT_JS: &str = include_str!("assets/docs-init.js");
const SWAGGER_UI_CSS: &[u8] = include_bytes!("assets/swagger-ui/swagger-ui.css");
const SWAGGER_UI_JS: &[u8] = include_bytes!("assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_UI_LICENSE: &str = include_str!("assets/swagger-ui/LICENSE");

/// Cache policy of the vendored assets: they change only with the binary.
const ASSET_CACHE: &str = "public, max-age=3600";

/// The docs page runs Swagger UI from this origin only; it sets inline
/// styles and draws icons from `data:` URLs, nothing more.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                        base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub async fn docs() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DOCS_CSP),
            ),
        ],
        DOCS_HTML,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE)),
        ],
        body,
    )
        .into_response()
}

pub async fn docs_css() -> Response {
    asset("text/css; charset=utf-8", SWAGGER_UI_CSS)
}

pub async fn docs_js() -> Response {
    asset("text/javascript; charset=utf-8", SWAGGER_UI_JS)
}

pub async fn docs_init_js() -> Response {
    asset("text/javascript; charset=utf-8", DOCS_INIT_JS.as_bytes())
}

pub async fn docs_license() -> Response {
    asset("text/plain; charset=utf-8", SWAGGER_UI_LICENSE.as_bytes())
}
