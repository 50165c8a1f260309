//! The server's metrics, served at `GET /metrics` in Prometheus' text format. Each
//! crate that has something to count keeps it in a `metrics` module of its own; this
//! one counts the HTTP side and renders the whole set.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kalamdb_engine::live::results::LiveStatsSnapshot;
use prometheus::{Counter, Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

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
            "/healthz" | "/readyz" => RequestKind::Health,
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
    live: LiveMetrics,
}

/// Live-query evaluation, copied from the engine's counters when the metrics are read.
struct LiveMetrics {
    subscriptions: IntGauge,
    full_reads: IntCounter,
    window_updates: IntCounter,
    seconds: Counter,
}

impl LiveMetrics {
    fn new(registry: &Registry) -> Self {
        fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
            registry
                .register(Box::new(m.clone()))
                .expect("registered once in a new registry");
            m
        }
        let valid = "a valid metric definition";
        Self {
            subscriptions: register(
                registry,
                IntGauge::new(
                    "kalamdb_live_subscriptions",
                    "Subscriptions open now (live queries, live aggregates, change feeds).",
                )
                .expect(valid),
            ),
            full_reads: register(
                registry,
                IntCounter::new(
                    "kalamdb_live_full_reads_total",
                    "Whole results live queries read: starts, refills of windows deletes emptied, overflowed queues.",
                )
                .expect(valid),
            ),
            window_updates: register(
                registry,
                IntCounter::new(
                    "kalamdb_live_window_updates_total",
                    "Live-query windows updated from their changes without a whole read.",
                )
                .expect(valid),
            ),
            seconds: register(
                registry,
                Counter::new(
                    "kalamdb_live_evaluation_seconds_total",
                    "Time spent evaluating live queries, on the live-query threads.",
                )
                .expect(valid),
            ),
        }
    }

    fn update(&self, s: LiveStatsSnapshot) {
        self.subscriptions.set(i64::try_from(s.active).unwrap_or(i64::MAX));
        self.full_reads
            .inc_by(s.full_reads.saturating_sub(self.full_reads.get()));
        self.window_updates
            .inc_by(s.incremental.saturating_sub(self.window_updates.get()));
        let secs = s.micros as f64 / 1e6;
        if secs > self.seconds.get() {
            self.seconds.inc_by(secs - self.seconds.get());
        }
    }
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
        let live = LiveMetrics::new(&registry);
        Self {
            registry,
            requests,
            live,
        }
    }

    pub fn request(&self, kind: RequestKind) {
        if let Some(c) = self.requests.get(kind as usize) {
            c.inc();
        }
    }

    /// Every metric in Prometheus' text exposition format, with the engine's live-query
    /// counters as they are now.
    pub fn render(&self, live: LiveStatsSnapshot) -> String {
        self.live.update(live);
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
    let mut resp = state.metrics.render(state.engine.live_stats()).into_response();
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
        let text = m.render(LiveStatsSnapshot {
            full_reads: 3,
            incremental: 5,
            micros: 1_500_000,
            active: 2,
        });
        for line in [
            "# TYPE kalamdb_http_requests_total counter",
            "kalamdb_http_requests_total{kind=\"graphql\"} 2",
            "kalamdb_http_requests_total{kind=\"graphql_ws\"} 1",
            "kalamdb_http_requests_total{kind=\"sql\"} 1",
            "kalamdb_http_requests_total{kind=\"auth\"} 1",
            "kalamdb_http_requests_total{kind=\"other\"} 1",
            "kalamdb_http_requests_total{kind=\"metrics\"} 0",
            "kalamdb_live_subscriptions 2",
            "kalamdb_live_full_reads_total 3",
            "kalamdb_live_window_updates_total 5",
            "kalamdb_live_evaluation_seconds_total 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
