//! The web pages (`/`, `/receipt`, `/explorer`, `/disclosure`) and their assets, compiled
//! into the binary (no CDN, no files on disk). The pages ask the server only
//! for data (`/logs`, checkpoints, tiles, entries, proofs); every check runs
//! in the browser, and a receipt in a link travels in the URL fragment, which
//! never reaches the server.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Scripts, styles and data only from this origin; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// An asset: URL path, content type, contents.
type Asset = (&'static str, &'static str, &'static str);

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Everything the pages need: the verify page at `/`, the printable receipt
/// at `/receipt`, the explorer at `/explorer`, their scripts, catalogues and
/// vendored libraries.
pub const ASSETS: &[Asset] = &[
    ("/", HTML, include_str!("../../web/index.html")),
    ("/receipt", HTML, include_str!("../../web/receipt.html")),
    ("/explorer", HTML, include_str!("../../web/explorer.html")),
    (
        "/disclosure",
        HTML,
        include_str!("../../web/disclosure.html"),
    ),
    (
        "/assets/disclosure.js",
        JS,
        include_str!("../../web/disclosure.js"),
    ),
    (
        "/assets/style.css",
        CSS,
        include_str!("../../web/style.css"),
    ),
    ("/assets/app.js", JS, include_str!("../../web/app.js")),
    (
        "/assets/receipt.js",
        JS,
        include_str!("../../web/receipt.js"),
    ),
    (
        "/assets/explorer.js",
        JS,
        include_str!("../../web/explorer.js"),
    ),
    ("/assets/common.js", JS, include_str!("../../web/common.js")),
    ("/assets/i18n.js", JS, include_str!("../../web/i18n.js")),
    (
        "/assets/i18n/en.js",
        JS,
        include_str!("../../web/i18n/en.js"),
    ),
    (
        "/assets/i18n/zh-CN.js",
        JS,
        include_str!("../../web/i18n/zh-CN.js"),
    ),
    ("/assets/links.js", JS, include_str!("../../web/links.js")),
    (
        "/assets/records.js",
        JS,
        include_str!("../../web/records.js"),
    ),
    ("/assets/scan.js", JS, include_str!("../../web/scan.js")),
    ("/assets/policy.js", JS, include_str!("../../web/policy.js")),
    ("/assets/verify.js", JS, include_str!("../../web/verify.js")),
    (
        "/assets/vendor/noble-ed25519/index.js",
        JS,
        include_str!("../../web/vendor/noble-ed25519/index.js"),
    ),
    (
        "/assets/vendor/noble-hashes/sha2.js",
        JS,
        include_str!("../../web/vendor/noble-hashes/sha2.js"),
    ),
    (
        "/assets/vendor/noble-hashes/_md.js",
        JS,
        include_str!("../../web/vendor/noble-hashes/_md.js"),
    ),
    (
        "/assets/vendor/noble-hashes/_u64.js",
        JS,
        include_str!("../../web/vendor/noble-hashes/_u64.js"),
    ),
    (
        "/assets/vendor/noble-hashes/utils.js",
        JS,
        include_str!("../../web/vendor/noble-hashes/utils.js"),
    ),
    (
        "/assets/vendor/qr/index.js",
        JS,
        include_str!("../../web/vendor/qr/index.js"),
    ),
    (
        "/assets/vendor/qr/decode.js",
        JS,
        include_str!("../../web/vendor/qr/decode.js"),
    ),
    (
        "/assets/vendor/noble-ed25519/LICENSE",
        TEXT,
        include_str!("../../web/vendor/noble-ed25519/LICENSE"),
    ),
    (
        "/assets/vendor/noble-hashes/LICENSE",
        TEXT,
        include_str!("../../web/vendor/noble-hashes/LICENSE"),
    ),
    (
        "/assets/vendor/qr/LICENSE",
        TEXT,
        include_str!("../../web/vendor/qr/LICENSE"),
    ),
    (
        "/assets/vendor/qr/LICENSE-MIT",
        TEXT,
        include_str!("../../web/vendor/qr/LICENSE-MIT"),
    ),
];

fn serve(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Assets change with the binary; revalidate instead of caching blindly.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// Routes serving the page and its assets (no state needed).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { serve(content_type, body) }))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn serves_every_asset_with_its_type() {
        for &(path, content_type, body) in ASSETS {
            let req = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = routes::<()>().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], content_type, "{path}");
            let got = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(got, body.as_bytes(), "{path}");
        }
    }

    #[test]
    fn every_module_import_is_served() {
        // Each relative import in a served script must resolve to a served path.
        let served: Vec<&str> = ASSETS.iter().map(|a| a.0).collect();
        for &(path, _, body) in ASSETS.iter().filter(|a| a.1 == JS) {
            let dir = &path[..path.rfind('/').unwrap()];
            // `import ... from '...'` on one line, or the `} from '...'` line
            // that ends an import over several lines.
            for line in body.lines().filter(|l| {
                let l = l.trim_start();
                l.starts_with("import ") || l.starts_with("} from ")
            }) {
                let Some(spec) = line
                    .split(['"', '\''])
                    .nth(1)
                    .filter(|s| s.starts_with('.'))
                else {
                    continue;
                };
                let mut parts: Vec<&str> = dir.split('/').collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(
                    served.contains(&target.as_str()),
                    "{path} imports {spec} ({target}), which is not served"
                );
            }
        }
    }
}
