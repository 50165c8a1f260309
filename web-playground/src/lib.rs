//! kalamdb-playground: the pages served from `/`. Until the GraphiQL bundle lands,
//! `/` is a small landing page that tells a visitor where the APIs are.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

const INDEX: &str = include_str!("index.html");

/// Routes for the browser-facing pages; merged into the API router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(|| async { Html(INDEX) }))
}
