//! Configuration: embedded defaults, then `kalamdb.toml` (or `--config FILE`), then
//! `KALAMDB_*` environment variables, then command-line flags.
//!
//! Each setting is defined once: the engine's in [`EngineConfig`] (flattened here), the
//! server's own below, each with its default in its `Default`. The file and the
//! environment both go through serde: a file key or a `KALAMDB_<KEY>` variable names a
//! field, unknown file keys are refused, and an environment value is read as the type of
//! the setting's default (comma-separated for lists).

use std::path::{Path, PathBuf};

use kalamdb_engine::engine::EngineConfig;
use kalamdb_engine::faults::Faults;
use kalamdb_schema_gen::schema::GraphqlLimits;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The engine's settings (data directory, durability, accounts, cold tier, jobs).
    #[serde(flatten)]
    pub engine: EngineConfig,
    /// `ADDR:PORT`; port 0 picks a free port.
    pub listen: String,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Apply the demo schema and demo user at start.
    pub demo: bool,
    /// Deepest selection nesting a GraphQL document may have.
    pub max_query_depth: usize,
    /// Most fields a GraphQL document may select (each field costs 1).
    pub max_query_complexity: usize,
    /// Most rows one list in a GraphQL result may hold.
    pub max_result_rows: usize,
    /// Most bytes of row data one GraphQL response may carry (`RESULT_TOO_LARGE`).
    pub max_response_bytes: usize,
    /// Serve `GET /v1/bench/noop`, the load generator's baseline.
    pub bench_noop: bool,
    /// Answer the documents `schema_gen::fast` serves without the general executor (the
    /// same answers; off only to compare the two).
    pub graphql_fast_path: bool,
    pub ws_init_timeout_ms: u64,
    pub ws_keepalive_secs: u64,
    pub ws_max_queued_bytes: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_subscriptions_per_user: usize,
    /// Proxies whose `X-Forwarded-For` is believed; from anyone else it is ignored.
    /// They are also exempt from `max_connections_per_ip`.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Most connections open at once (WebSockets included); more are refused with 503.
    pub max_connections: usize,
    /// Most connections open at once from one address.
    pub max_connections_per_ip: usize,
    /// How long a client has to send a request's headers, on a new connection and
    /// between keep-alive requests; idle and half-sent connections close after it.
    pub header_read_timeout_secs: u64,
    /// How long shutdown waits for requests in flight before dropping them.
    pub shutdown_grace_secs: u64,
    /// External issuers whose access tokens are accepted.
    pub trusted_issuers: Vec<crate::auth::external::TrustedIssuer>,
    /// Least time between two fetches of one issuer's keys for unknown `kid`s.
    pub jwks_min_refetch_secs: u64,
    /// Sign-in providers (OAuth 2.0 / OIDC).
    pub oauth_providers: Vec<crate::auth::oauth::OAuthProvider>,
}

impl Default for Config {
    fn default() -> Self {
        let graphql = GraphqlLimits::default();
        Self {
            engine: EngineConfig::default(),
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1 << 20,
            demo: false,
            max_query_depth: graphql.max_depth,
            max_query_complexity: graphql.max_complexity,
            max_result_rows: graphql.max_rows,
            max_response_bytes: graphql.max_response_bytes,
            bench_noop: false,
            graphql_fast_path: true,
            ws_init_timeout_ms: 10_000,
            ws_keepalive_secs: 15,
            ws_max_queued_bytes: 4 << 20,
            max_subscriptions_per_connection: 200,
            max_subscriptions_per_user: 2000,
            trusted_proxies: Vec::new(),
            max_connections: 10_000,
            max_connections_per_ip: 2_048,
            header_read_timeout_secs: 10,
            shutdown_grace_secs: 10,
            trusted_issuers: Vec::new(),
            jwks_min_refetch_secs: 30,
            oauth_providers: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("bad config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("unknown setting `{0}`")]
    Unknown(String),
    #[error("bad value for {0}: {1}")]
    Env(String, String),
    #[error("bad settings: {0}")]
    Invalid(String),
}

/// Each setting's name and default, as JSON (`null` for settings without one).
fn defaults() -> serde_json::Map<String, Json> {
    match serde_json::to_value(Config::default()) {
        Ok(Json::Object(m)) => m,
        // a struct of plain fields always serializes to an object
        _ => serde_json::Map::new(),
    }
}

/// An environment value as the TOML value of a setting whose default is `default`:
/// numbers and booleans parsed, lists split at commas, anything else text. Tables
/// (`cold_store_options`) are not set from the environment.
fn env_value(default: &Json, text: &str) -> Option<toml::Value> {
    Some(match default {
        Json::Bool(_) => toml::Value::Boolean(text.trim().parse().ok()?),
        Json::Number(n) if n.is_f64() => toml::Value::Float(text.trim().parse().ok()?),
        Json::Number(_) => toml::Value::Integer(text.trim().parse().ok()?),
        Json::Array(_) => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        Json::Object(_) => return None,
        Json::Null | Json::String(_) => toml::Value::String(text.to_string()),
    })
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
        let table = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.clone(), e))?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse(p.clone(), e))?
            }
            None => toml::Table::new(),
        };
        Self::from_layers(table, |k| std::env::var(k).ok())
    }

    /// The settings of a file's table with the environment (`get`) over it.
    pub fn from_layers(mut table: toml::Table, get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = defaults();
        if let Some(unknown) = table.keys().find(|k| !defaults.contains_key(k.as_str())) {
            return Err(ConfigError::Unknown(unknown.clone()));
        }
        for (key, default) in &defaults {
            let var = format!("KALAMDB_{}", key.to_ascii_uppercase());
            if let Some(text) = get(&var) {
                let value = env_value(default, &text).ok_or_else(|| ConfigError::Env(var.clone(), text.clone()))?;
                table.insert(key.clone(), value);
            }
        }
        let mut cfg: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        if let Some(v) = get("KALAMDB_TEST_FAULTS") {
            cfg.engine.faults =
                Faults::parse(&v).map_err(|e| ConfigError::Env("KALAMDB_TEST_FAULTS".into(), e.to_string()))?;
        }
        Ok(cfg)
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

    pub fn connection_limits(&self) -> crate::listen::ConnectionLimits {
        crate::listen::ConnectionLimits {
            max_connections: self.max_connections.max(1),
            max_per_ip: self.max_connections_per_ip.max(1),
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs.max(1)),
            shutdown_grace: std::time::Duration::from_secs(self.shutdown_grace_secs),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }

    pub fn graphql_limits(&self) -> GraphqlLimits {
        GraphqlLimits {
            max_depth: self.max_query_depth,
            max_complexity: self.max_query_complexity,
            max_rows: self.max_result_rows,
            max_response_bytes: self.max_response_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_storage::hot_store::Durability;

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
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let c = Config::from_layers(
            toml::Table::new(),
            env(&[
                ("KALAMDB_LISTEN", "127.0.0.1:0"),
                ("KALAMDB_DURABILITY", "async"),
                ("KALAMDB_TRUSTED_PROXIES", "127.0.0.1, ::1"),
                ("KALAMDB_ROOT_PASSWORD", "12345"),
                ("KALAMDB_BCRYPT_COST", "4"),
                ("KALAMDB_DEFAULT_FLUSH_POLICY", ""),
                ("KALAMDB_GRAPHQL_FAST_PATH", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.engine.durability, Durability::Async);
        assert_eq!(c.engine.root_password.as_deref(), Some("12345"));
        assert_eq!(c.engine.bcrypt_cost, 4);
        assert_eq!(c.engine.default_flush_policy, None);
        assert!(!c.graphql_fast_path);
        for bad in [
            &[("KALAMDB_TRUSTED_PROXIES", "nope")][..],
            &[("KALAMDB_BCRYPT_COST", "x")],
            &[("KALAMDB_DURABILITY", "sometimes")],
            &[("KALAMDB_DEFAULT_FLUSH_POLICY", "rows:often")],
        ] {
            assert!(Config::from_layers(toml::Table::new(), env(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn toml_file_is_strict() {
        let parse = |text: &str| Config::from_layers(toml::from_str(text).unwrap(), |_| None);
        let c = parse("listen = \"0.0.0.0:9\"\ndurability = \"sync\"\nmax_concurrent_jobs = 5").unwrap();
        assert_eq!(c.listen, "0.0.0.0:9");
        assert_eq!(c.engine.max_concurrent_jobs, 5);
        assert!(matches!(parse("lisen = 1"), Err(ConfigError::Unknown(k)) if k == "lisen"));
        assert!(parse("max_concurrent_jobs = \"two\"").is_err());
        // the environment wins over the file
        let c = Config::from_layers(toml::from_str("data_dir = \"/a\"").unwrap(), |k| {
            (k == "KALAMDB_DATA_DIR").then(|| "/b".into())
        })
        .unwrap();
        assert_eq!(c.engine.data_dir, PathBuf::from("/b"));
    }
}
