//! Configuration: embedded defaults, then `kalamdb.toml` (or `--config FILE`), then
//! `KALAMDB_*` environment variables, then command-line flags.

use std::path::{Path, PathBuf};

use kalamdb_engine::engine::EngineConfig;
use kalamdb_engine::faults::Faults;
use kalamdb_engine::schema::FlushPolicy;
use kalamdb_schema_gen::schema::GraphqlLimits;
use kalamdb_storage::cold::ColdStoreOptions;
use kalamdb_storage::hot_store::Durability;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    Sync,
    Async,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where RocksDB (and by default the Parquet segments) live.
    pub data_dir: PathBuf,
    /// `ADDR:PORT`; port 0 picks a free port.
    pub listen: String,
    pub durability: DurabilitySetting,
    /// bcrypt cost for new password hashes.
    pub bcrypt_cost: u32,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Whether root may log in from non-loopback addresses.
    pub root_remote_login: bool,
    /// Given to root at first start (`KALAMDB_ROOT_PASSWORD`).
    pub root_password: Option<String>,
    /// Apply the demo schema and demo user at start.
    pub demo: bool,
    /// Lifetime of access tokens, in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of refresh tokens, in seconds.
    pub refresh_token_ttl_secs: u64,
    /// Deepest selection nesting a GraphQL document may have.
    pub max_query_depth: usize,
    /// Most fields a GraphQL document may select (each field costs 1).
    pub max_query_complexity: usize,
    /// Most rows one list in a GraphQL result may hold.
    pub max_result_rows: usize,
    /// How deep a `where` may nest.
    pub max_filter_depth: usize,
    /// How many conditions and list values a `where` may hold.
    pub max_filter_nodes: usize,
    /// Serve `GET /v1/bench/noop`, the load generator's baseline.
    pub bench_noop: bool,
    /// Answer queries made only of `_by_pk` lookups of plain columns directly, without
    /// the general executor (the same answers; off only to compare the two).
    pub graphql_fast_path: bool,
    pub ws_init_timeout_ms: u64,
    pub ws_keepalive_secs: u64,
    pub ws_max_queued_bytes: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_subscriptions_per_user: usize,
    pub change_log_retention_secs: u64,
    pub live_queue_capacity: usize,
    pub login_max_failures: u32,
    pub login_lockout_secs: u64,
    /// Proxies whose `X-Forwarded-For` is believed; from anyone else it is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// External issuers whose access tokens are accepted.
    pub trusted_issuers: Vec<crate::external_auth::TrustedIssuer>,
    /// Least time between two fetches of one issuer's keys for unknown `kid`s.
    pub jwks_min_refetch_secs: u64,
    /// Sign-in providers (OAuth 2.0 / OIDC).
    pub oauth_providers: Vec<crate::oauth::OAuthProvider>,
    /// Where Parquet segments go (default: `<data_dir>/cold`).
    pub cold_dir: Option<PathBuf>,
    /// An S3-compatible object store for the segments instead (`s3://bucket[/prefix]`).
    pub cold_store_url: Option<String>,
    /// Its options (`aws_endpoint`, `aws_region`, `aws_access_key_id`, ...), over the
    /// standard `AWS_*` environment variables.
    pub cold_store_options: ColdStoreOptions,
    /// `rows:N,interval:S` for tables created without `FLUSH_POLICY`; empty: none.
    pub default_flush_policy: String,
    pub max_concurrent_jobs: usize,
    pub job_max_retries: u32,
    pub job_backoff_ms: u64,
    pub ttl_check_secs: u64,
    pub deleted_retention_secs: u64,
    pub retention_check_secs: u64,
    pub segment_delete_grace_ms: u64,
    /// Test-only fault injection, from `KALAMDB_TEST_FAULTS` only.
    #[serde(skip)]
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        // the engine's and the GraphQL layer's own defaults, stated once
        let engine = EngineConfig::new("./data");
        let graphql = GraphqlLimits::default();
        Self {
            data_dir: PathBuf::from("./data"),
            listen: "127.0.0.1:8080".into(),
            durability: DurabilitySetting::Sync,
            bcrypt_cost: engine.bcrypt_cost,
            max_body_bytes: 1 << 20,
            root_remote_login: engine.root_remote_login,
            root_password: None,
            demo: false,
            access_token_ttl_secs: engine.access_token_ttl_secs,
            refresh_token_ttl_secs: engine.refresh_token_ttl_secs,
            max_query_depth: graphql.max_depth,
            max_query_complexity: graphql.max_complexity,
            max_result_rows: graphql.max_rows,
            max_filter_depth: engine.max_filter_depth,
            max_filter_nodes: engine.max_filter_nodes,
            bench_noop: false,
            graphql_fast_path: true,
            ws_init_timeout_ms: 10_000,
            ws_keepalive_secs: 15,
            ws_max_queued_bytes: 4 << 20,
            max_subscriptions_per_connection: 200,
            max_subscriptions_per_user: 2000,
            change_log_retention_secs: engine.change_log_retention_secs,
            live_queue_capacity: engine.live_queue_capacity,
            login_max_failures: engine.login_max_failures,
            login_lockout_secs: engine.login_lockout_secs,
            trusted_proxies: Vec::new(),
            trusted_issuers: Vec::new(),
            jwks_min_refetch_secs: 30,
            oauth_providers: Vec::new(),
            cold_dir: None,
            cold_store_url: None,
            cold_store_options: ColdStoreOptions::default(),
            default_flush_policy: engine.default_flush_policy.map(|p| p.render()).unwrap_or_default(),
            max_concurrent_jobs: engine.max_concurrent_jobs,
            job_max_retries: engine.job_max_retries,
            job_backoff_ms: engine.job_backoff_ms,
            ttl_check_secs: engine.ttl_check_secs,
            deleted_retention_secs: engine.deleted_retention_secs,
            retention_check_secs: engine.retention_check_secs,
            segment_delete_grace_ms: engine.segment_delete_grace_ms,
            faults: Faults::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("bad config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("bad value for {0}: {1}")]
    Env(&'static str, String),
    #[error("bad setting {0}: {1}")]
    Invalid(&'static str, String),
}

impl Config {
    /// Reads `file` (or `./kalamdb.toml` when present), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let default_file = PathBuf::from("kalamdb.toml");
        let path = match file {
            Some(p) => Some(p.to_path_buf()),
            None if default_file.exists() => Some(default_file),
            None => None,
        };
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|e| ConfigError::Read(p.clone(), e))?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse(p, e))?
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.flush_policy()?;
        Ok(cfg)
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(key: &'static str, v: String) -> Result<T, ConfigError> {
            v.parse().map_err(|_| ConfigError::Env(key, v))
        }
        if let Some(v) = get("KALAMDB_COLD_DIR") {
            self.cold_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get("KALAMDB_COLD_STORE_URL") {
            self.cold_store_url = Some(v);
        }
        if let Some(v) = get("KALAMDB_TEST_FAULTS") {
            self.faults = Faults::parse(&v).map_err(|e| ConfigError::Env("KALAMDB_TEST_FAULTS", e.to_string()))?;
        }
        if let Some(v) = get("KALAMDB_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("KALAMDB_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("KALAMDB_DURABILITY") {
            self.durability = match v.as_str() {
                "sync" => DurabilitySetting::Sync,
                "async" => DurabilitySetting::Async,
                _ => return Err(ConfigError::Env("KALAMDB_DURABILITY", v)),
            };
        }
        if let Some(v) = get("KALAMDB_BCRYPT_COST") {
            self.bcrypt_cost = parse("KALAMDB_BCRYPT_COST", v)?;
        }
        if let Some(v) = get("KALAMDB_MAX_BODY_BYTES") {
            self.max_body_bytes = parse("KALAMDB_MAX_BODY_BYTES", v)?;
        }
        if let Some(v) = get("KALAMDB_BENCH_NOOP") {
            self.bench_noop = parse("KALAMDB_BENCH_NOOP", v)?;
        }
        if let Some(v) = get("KALAMDB_GRAPHQL_FAST_PATH") {
            self.graphql_fast_path = parse("KALAMDB_GRAPHQL_FAST_PATH", v)?;
        }
        if let Some(v) = get("KALAMDB_ROOT_PASSWORD") {
            self.root_password = Some(v);
        }
        if let Some(v) = get("KALAMDB_TRUSTED_PROXIES") {
            self.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse())
                .collect::<Result<_, _>>()
                .map_err(|_| ConfigError::Env("KALAMDB_TRUSTED_PROXIES", v.clone()))?;
        }
        Ok(())
    }

    /// The default flush policy, parsed.
    pub fn flush_policy(&self) -> Result<Option<FlushPolicy>, ConfigError> {
        if self.default_flush_policy.trim().is_empty() {
            return Ok(None);
        }
        FlushPolicy::parse(&self.default_flush_policy)
            .map(Some)
            .map_err(|e| ConfigError::Invalid("default_flush_policy", e.to_string()))
    }

    pub fn engine_config(&self) -> EngineConfig {
        let mut e = EngineConfig::new(&self.data_dir);
        e.durability = match self.durability {
            DurabilitySetting::Sync => Durability::Sync,
            DurabilitySetting::Async => Durability::Async,
        };
        e.bcrypt_cost = self.bcrypt_cost;
        e.root_password = self.root_password.clone();
        e.root_remote_login = self.root_remote_login;
        e.access_token_ttl_secs = self.access_token_ttl_secs;
        e.refresh_token_ttl_secs = self.refresh_token_ttl_secs;
        e.max_filter_depth = self.max_filter_depth;
        e.max_filter_nodes = self.max_filter_nodes;
        e.change_log_retention_secs = self.change_log_retention_secs;
        e.live_queue_capacity = self.live_queue_capacity;
        e.login_max_failures = self.login_max_failures;
        e.login_lockout_secs = self.login_lockout_secs;
        e.cold_dir = self.cold_dir.clone();
        e.cold_url = self.cold_store_url.clone();
        e.cold_options = self.cold_store_options.clone();
        // validated when the config was loaded
        e.default_flush_policy = self.flush_policy().ok().flatten();
        e.max_concurrent_jobs = self.max_concurrent_jobs;
        e.job_max_retries = self.job_max_retries;
        e.job_backoff_ms = self.job_backoff_ms;
        e.ttl_check_secs = self.ttl_check_secs;
        e.deleted_retention_secs = self.deleted_retention_secs;
        e.retention_check_secs = self.retention_check_secs;
        e.segment_delete_grace_ms = self.segment_delete_grace_ms;
        e.faults = self.faults.clone();
        e
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the
    /// nearest address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_addr(&self, peer: std::net::IpAddr, headers: &axum::http::HeaderMap) -> std::net::IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let forwarded: Vec<std::net::IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|ip| !self.trusted_proxies.contains(ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
    }

    pub fn graphql_limits(&self) -> GraphqlLimits {
        GraphqlLimits {
            max_depth: self.max_query_depth,
            max_complexity: self.max_query_complexity,
            max_rows: self.max_result_rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_issuers_parse_as_the_readme_shows() {
        use kalamdb_auth::identity::Role;
        let c: Config = toml::from_str(
            r#"
            [[trusted_issuers]]
            issuer = "https://login.example.com/"
            jwks_uri = "https://login.example.com/.well-known/jwks.json"
            audience = "kalamdb"
            roles = { "kalam-service" = "service", "kalam-dba" = "dba" }
            default_role = "user"
            "#,
        )
        .unwrap();
        let i = &c.trusted_issuers[0];
        assert_eq!((i.user_claim.as_str(), i.role_claim.as_str()), ("sub", "roles"));
        assert_eq!(i.roles["kalam-dba"], Role::Dba);
        assert_eq!(i.default_role, Some(Role::User));
        assert!(toml::from_str::<Config>("[[trusted_issuers]]\nissuer = \"x\"\n").is_err());
    }

    #[test]
    fn x_forwarded_for_is_believed_from_trusted_proxies_only() {
        let mut c = Config::default();
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.2".parse().unwrap());
        let proxy: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        // untrusted peer: the header is ignored
        assert_eq!(c.client_addr(proxy, &h), proxy);
        // trusted: the nearest untrusted hop
        c.trusted_proxies = vec![proxy, "10.0.0.2".parse().unwrap()];
        assert_eq!(
            c.client_addr(proxy, &h),
            "203.0.113.9".parse::<std::net::IpAddr>().unwrap()
        );
        // garbage in the header falls back to the peer
        h.insert("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(c.client_addr(proxy, &h), proxy);
    }

    #[test]
    fn env_overrides_defaults() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "KALAMDB_LISTEN" => Some("127.0.0.1:0".into()),
            "KALAMDB_DURABILITY" => Some("async".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
        c.apply_env(|k| (k == "KALAMDB_TRUSTED_PROXIES").then(|| "127.0.0.1, ::1".into()))
            .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(
            c.apply_env(|k| (k == "KALAMDB_TRUSTED_PROXIES").then(|| "nope".into()))
                .is_err()
        );
        assert_eq!(c.durability, DurabilitySetting::Async);
        assert!(
            c.apply_env(|k| (k == "KALAMDB_BCRYPT_COST").then(|| "x".into()))
                .is_err()
        );
    }

    #[test]
    fn toml_file_is_strict() {
        let c: Config = toml::from_str("listen = \"0.0.0.0:9\"\ndurability = \"sync\"").unwrap();
        assert_eq!(c.listen, "0.0.0.0:9");
        assert!(toml::from_str::<Config>("lisen = 1").is_err());
    }
}
