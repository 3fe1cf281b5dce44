//! The web page at `/` (stub).

/// Routes serving the page and its assets (no state needed).
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
}
