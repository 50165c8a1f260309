//! Application assembly: the engine, the router and the server loop.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::FutureExt;
use kalamdb_auth::identity::Role;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::error::ErrorCode;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::ApiError;
use crate::graphql::http as graphql_http;
use crate::graphql::realtime::Realtime;
use crate::sql_handler;
use kalamdb_schema_gen::registry::SchemaRegistry;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: Arc<Config>,
    pub schemas: Arc<SchemaRegistry>,
    pub realtime: Arc<Realtime>,
    /// Bearer tokens of trusted external issuers.
    pub external: Arc<crate::auth::external::ExternalTokens>,
    /// Sign-in with OAuth / OIDC providers.
    pub oauth: Arc<crate::auth::oauth::OAuth>,
    pub metrics: Arc<crate::metrics::ApiMetrics>,
}

/// Turns a panic in a handler into a 500 with a generic message; the server goes on.
async fn catch_panics(req: Request, next: Next) -> Response {
    match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::error!("handler panicked");
            ApiError::new(ErrorCode::Internal, "internal error").into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 while the server can take writes, 503 while its storage is full
/// (reads still work then; a load balancer may keep sending them).
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    use axum::http::StatusCode;
    if state.engine.storage_full().await {
        let body = serde_json::json!({
            "status": "storage_full",
            "message": kalamdb_engine::error::EngineError::StorageFull.to_string(),
        });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    } else {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    }
}

/// The load generator's baseline: the cheapest request the server can answer.
async fn bench_noop_handler() -> &'static str {
    "{}"
}

/// Opens the engine (applying the demo schema when configured) and builds the router.
pub async fn build_app(config: Config) -> anyhow::Result<(Router, AppState)> {
    let engine = Engine::open(config.engine.clone()).await?;
    if config.demo {
        crate::demo::apply(&engine).await?;
    }
    let schemas = Arc::new(SchemaRegistry::new(engine.clone(), config.graphql_limits()));
    let bench_noop = config.bench_noop;
    let realtime = Arc::new(Realtime::new(config.max_subscriptions_per_user));
    let external = Arc::new(crate::auth::external::ExternalTokens::new(
        &config.trusted_issuers,
        std::time::Duration::from_secs(config.jwks_min_refetch_secs),
    ));
    let oauth = Arc::new(crate::auth::oauth::OAuth::new(
        &config.oauth_providers,
        std::time::Duration::from_secs(config.jwks_min_refetch_secs),
    ));
    let state = AppState {
        engine,
        config: Arc::new(config),
        schemas,
        realtime,
        external,
        oauth,
        metrics: Arc::new(crate::metrics::ApiMetrics::new()),
    };
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::handle))
        .route("/v1/sql", post(sql_handler::handle))
        .route("/v1/graphql", get(graphql_http::get).post(graphql_http::post))
        .route("/v1/auth/login", post(crate::auth::login::login))
        .route("/v1/auth/refresh", post(crate::auth::login::refresh))
        .route("/v1/auth/logout", post(crate::auth::login::logout))
        .route("/v1/auth/exchange", post(crate::auth::oauth::exchange))
        .route("/v1/auth/providers", get(crate::auth::oauth::providers))
        .route("/v1/auth/oauth/{provider}/start", get(crate::auth::oauth::start))
        .route("/v1/auth/oauth/{provider}/callback", get(crate::auth::oauth::callback))
        .merge(kalamdb_playground::router());
    if bench_noop {
        router = router.route("/v1/bench/noop", get(bench_noop_handler));
    }
    let router = router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::count_requests,
        ))
        .layer(middleware::from_fn(catch_panics))
        .with_state(state.clone());
    Ok((router, state))
}

/// The sorted, stable SDL of the schema `role` sees.
pub async fn schema_sdl(config: Config, role: Role) -> anyhow::Result<String> {
    let engine = Engine::open(config.engine.clone()).await?;
    if config.demo {
        crate::demo::apply(&engine).await?;
    }
    let schema = kalamdb_schema_gen::schema::build_schema(&engine, role, &config.graphql_limits())?;
    Ok(kalamdb_schema_gen::schema::sorted_sdl(&schema))
}

/// Serves `router` on `listener` until `shutdown` resolves, then closes every WebSocket
/// with a close frame and drains requests for the shutdown grace period.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: &AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let realtime = state.realtime.clone();
    let before_drain = async move {
        realtime.shut_down(std::time::Duration::from_secs(5)).await;
    };
    crate::listen::serve(
        listener,
        router,
        state.config.connection_limits(),
        shutdown,
        before_drain,
    )
    .await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
