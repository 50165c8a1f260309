//! The server's metrics, served at `GET /metrics` in Prometheus' text format. Each
//! crate that has something to count keeps it in a `metrics` module of its own; this
//! one counts the HTTP side and renders the whole set.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::app::AppState;

/// What a request asks for, as the request counter labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// GraphQL over HTTP.
    Graphql,
    /// A WebSocket upgrade on `/v1/graphql` (one per connection, not per message).
    GraphqlWs,
    Sql,
    /// `/v1/auth/*`: login, refresh, logout, OAuth.
    Auth,
    Metrics,
    Health,
    /// The playground's page and assets, and anything else.
    Other,
}

impl RequestKind {
    pub const ALL: [RequestKind; 7] = [
        RequestKind::Graphql,
        RequestKind::GraphqlWs,
        RequestKind::Sql,
        RequestKind::Auth,
        RequestKind::Metrics,
        RequestKind::Health,
        RequestKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Graphql => "graphql",
            RequestKind::GraphqlWs => "graphql_ws",
            RequestKind::Sql => "sql",
            RequestKind::Auth => "auth",
            RequestKind::Metrics => "metrics",
            RequestKind::Health => "health",
            RequestKind::Other => "other",
        }
    }

    /// The kind of a request, from its path and whether it asks for a WebSocket.
    pub fn of(method: &Method, path: &str, upgrade: bool) -> Self {
        match path {
            "/v1/graphql" if upgrade && method == Method::GET => RequestKind::GraphqlWs,
            "/v1/graphql" => RequestKind::Graphql,
            "/v1/sql" => RequestKind::Sql,
            "/metrics" => RequestKind::Metrics,
            "/healthz" => RequestKind::Health,
            p if p.starts_with("/v1/auth/") => RequestKind::Auth,
            _ => RequestKind::Other,
        }
    }
}

/// The API's metrics and the registry they live in.
pub struct ApiMetrics {
    registry: Registry,
    /// `kalamdb_http_requests_total{kind}`, one counter per [`RequestKind`], in
    /// `RequestKind::ALL` order so that counting is an index and an atomic add.
    requests: Vec<IntCounter>,
}

impl ApiMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let family = IntCounterVec::new(
            Opts::new(
                "kalamdb_http_requests_total",
                "HTTP requests received, by what they ask for.",
            ),
            &["kind"],
        )
        .expect("a valid metric definition");
        registry
            .register(Box::new(family.clone()))
            .expect("registered once in a new registry");
        let requests = RequestKind::ALL
            .iter()
            .map(|k| family.with_label_values(&[k.as_str()]))
            .collect();
        Self { registry, requests }
    }

    pub fn request(&self, kind: RequestKind) {
        if let Some(c) = self.requests.get(kind as usize) {
            c.inc();
        }
    }

    /// Every metric in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: counts each request by kind.
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let upgrade = req.headers().contains_key(header::UPGRADE);
    state
        .metrics
        .request(RequestKind::of(req.method(), req.uri().path(), upgrade));
    next.run(req).await
}

/// `GET /metrics`.
pub async fn handle(State(state): State<AppState>) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_kind_in_the_text_format() {
        let m = ApiMetrics::new();
        for (method, path, upgrade) in [
            (Method::POST, "/v1/graphql", false),
            (Method::GET, "/v1/graphql", false),
            (Method::GET, "/v1/graphql", true),
            (Method::POST, "/v1/sql", false),
            (Method::POST, "/v1/auth/login", false),
            (Method::GET, "/", false),
        ] {
            m.request(RequestKind::of(&method, path, upgrade));
        }
        let text = m.render();
        for line in [
            "# TYPE kalamdb_http_requests_total counter",
            "kalamdb_http_requests_total{kind=\"graphql\"} 2",
            "kalamdb_http_requests_total{kind=\"graphql_ws\"} 1",
            "kalamdb_http_requests_total{kind=\"sql\"} 1",
            "kalamdb_http_requests_total{kind=\"auth\"} 1",
            "kalamdb_http_requests_total{kind=\"other\"} 1",
            "kalamdb_http_requests_total{kind=\"metrics\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
