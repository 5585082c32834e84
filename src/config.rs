//! Configuration: the TOML file's structs, CLI overrides, defaults and validation.
//!
//! Names and defaults follow PgBouncer where the setting exists there. Validation errors
//! name the offending key. The only I/O here is reading the file itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod ini;
mod target;

pub use target::{parse_upstream, Target, Upstream};

pub use crate::tls::names::SslMode;
use crate::tls::TlsFiles;

/// A configuration problem, phrased as one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path given.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for our schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// Path given.
        path: PathBuf,
        /// What toml said, including the key.
        message: String,
    },
    /// A problem at a line of a PgBouncer ini file (or a file it includes).
    #[error("{file}:{line}: {message}")]
    At {
        /// The file at fault.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid value for `{key}`: {problem}")]
    Invalid {
        /// The key at fault.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// Pooling mode, as PgBouncer names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A client holds one server connection from its first query until it disconnects.
    Session,
    /// A client holds a server connection only for the length of a transaction.
    Transaction,
}

impl std::str::FromStr for PoolMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "session" => Ok(PoolMode::Session),
            "transaction" => Ok(PoolMode::Transaction),
            other => Err(format!(
                "unknown pool mode `{other}` (expected session or transaction)"
            )),
        }
    }
}

/// The whole configuration, after defaults and overrides.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address clients connect to (PgBouncer: listen_addr + listen_port).
    pub listen: String,
    /// Fallback upstream for databases not listed: `postgres://user[:password]@host:port`.
    pub upstream: Option<String>,
    /// Default pool mode.
    pub pool_mode: PoolMode,
    /// Server connections per (database, user) pool.
    pub default_pool_size: usize,
    /// Server connections a pool keeps open once it has had a client (0: none).
    pub min_pool_size: usize,
    /// Server connections per database, all users together (0: no cap).
    pub max_db_connections: usize,
    /// Server connections per server user, all databases together (0: no cap).
    pub max_user_connections: usize,
    /// Maximum client connections.
    pub max_client_conn: usize,
    /// Seconds a client may wait for a server connection.
    pub query_wait_timeout: f64,
    /// Seconds an idle server connection is kept.
    pub server_idle_timeout: f64,
    /// Seconds a server connection lives at most (closed when next idle).
    pub server_lifetime: f64,
    /// Seconds to wait for a new server connection to log in.
    pub server_connect_timeout: f64,
    /// Query run on a server before another session-mode client gets it. Empty disables.
    pub server_reset_query: String,
    /// Seconds a pool's greeting may be reused for client logins before a fresh server
    /// login confirms that Postgres still admits the pool's user (0: every login checks).
    pub login_recheck_interval: f64,
    /// Seconds that shutdown waits for clients to finish.
    pub shutdown_timeout: f64,
    /// Bind the listening socket with SO_REUSEPORT, so that several processes share one port
    /// (rolling restarts; PgBouncer's `so_reuseport`). Takes effect at start.
    pub so_reuseport: bool,
    /// Seconds a client has from accept to the end of authentication (PgBouncer's
    /// client_login_timeout; zero disables).
    pub client_login_timeout: f64,
    /// Notifications a listener may have queued before it is disconnected.
    pub listener_queue_limit: usize,
    /// Named statements prepared per server connection in transaction pooling (0: do not
    /// manage named statements).
    pub max_prepared_statements: usize,
    /// Relay notifications raised inside Postgres to local listeners (per-database default).
    pub relay: bool,
    /// Also send notifications committed through pgherald to Postgres (per-database default).
    pub forward_notify: bool,
    /// Role the relay connection logs in as (per-database default; else the database's
    /// `user`). Never a client's role.
    pub relay_user: Option<String>,
    /// Password for `relay_user`.
    pub relay_password: Option<String>,
    /// Answer a bare BEGIN at once and send it to the server with the block's first
    /// statement that needs one (saves a round trip per transaction).
    pub defer_begin: bool,
    /// Databases by the name clients use.
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// Client authentication.
    pub auth: Option<AuthConfig>,
    /// Users allowed every admin console command (PgBouncer: comma-separated list).
    pub admin_users: String,
    /// Users allowed the admin console's read-only SHOW commands.
    pub stats_users: String,
    /// Address serving Prometheus `/metrics` over HTTP (off when unset).
    pub metrics_listen: Option<String>,
    /// Seconds between the averages of SHOW STATS / STATS_AVERAGES (PgBouncer's stats_period).
    pub stats_period: f64,
    /// tracing filter (e.g. `info`, `pgherald=debug`); RUST_LOG wins when set. Reloadable.
    pub log_level: Option<String>,
    /// TLS towards clients: disable (default), allow, prefer, require, verify-ca, verify-full.
    pub client_tls_sslmode: SslMode,
    /// pgherald's private key for clients (PEM).
    pub client_tls_key_file: Option<PathBuf>,
    /// pgherald's certificate (chain) for clients (PEM).
    pub client_tls_cert_file: Option<PathBuf>,
    /// CA that client certificates must chain to (verify-ca, verify-full).
    pub client_tls_ca_file: Option<PathBuf>,
    /// TLS versions offered to clients (PgBouncer syntax; default `secure`).
    pub client_tls_protocols: String,
    /// TLS 1.2 cipher suites offered to clients (default `default`: all rustls has).
    pub client_tls_ciphers: String,
    /// TLS towards servers: disable, allow, prefer (default), require, verify-ca, verify-full.
    pub server_tls_sslmode: SslMode,
    /// CA the server certificate must chain to (verify-ca, verify-full).
    pub server_tls_ca_file: Option<PathBuf>,
    /// Client certificate pgherald presents to servers (PEM).
    pub server_tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub server_tls_key_file: Option<PathBuf>,
    /// TLS versions towards servers.
    pub server_tls_protocols: String,
    /// TLS 1.2 cipher suites towards servers.
    pub server_tls_ciphers: String,
    /// Share LISTEN/NOTIFY with other instances through this backplane
    /// (`redis://host:port/db`); none by default (one instance, in-memory hub).
    pub backplane: Option<String>,
    /// Seconds a COMMIT may wait for the backplane to record its notifications.
    pub backplane_timeout: f64,
    /// Entries kept per database on the backplane (older ones are trimmed).
    pub backplane_retention: usize,
    /// Prefix of the backplane's key names (instances sharing notifications use the same).
    pub backplane_prefix: String,
    /// Role that looks up unknown users' secrets with `auth_query` (per-database default).
    pub auth_user: Option<String>,
    /// Query that returns (user name, secret) for `$1` (PgBouncer 1.25's default).
    pub auth_query: String,
    /// Database `auth_query` runs in (default: the database the client asked for).
    pub auth_dbname: Option<String>,
    /// Seconds a client may sit idle, outside a transaction, before it is disconnected (0: never).
    pub client_idle_timeout: f64,
    /// Seconds a client may sit idle inside a transaction before it is disconnected (0: never).
    pub idle_transaction_timeout: f64,
    /// Seconds a query may run before it is cancelled and its client disconnected (0: never).
    pub query_timeout: f64,
    /// Startup parameters accepted and ignored (comma-separated; others unknown are refused).
    pub ignore_startup_parameters: String,
    /// Append ` - host:port` of the client to its application_name.
    pub application_name_add_host: bool,
    /// Extra server connections a pool may open for clients that waited `reserve_pool_timeout`.
    pub reserve_pool_size: usize,
    /// Seconds a client waits before the reserve pool is used.
    pub reserve_pool_timeout: f64,
    /// Query that checks an idle server connection before reuse (empty: a cheap liveness check).
    pub server_check_query: String,
    /// Seconds an idle server connection may rest before it is checked again.
    pub server_check_delay: f64,
    /// Reuse idle server connections in turn (FIFO) instead of the most recent one (LIFO).
    pub server_round_robin: bool,
    /// Per-user settings (PgBouncer's `[users]` section).
    pub users: BTreeMap<String, UserConfig>,
    /// pg_hba.conf-format file choosing each login's method when `[auth] type = "hba"`.
    pub auth_hba_file: Option<PathBuf>,
}

/// A `[databases.NAME]` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Server host (default: the upstream's, else 127.0.0.1).
    pub host: Option<String>,
    /// Server port (default: the upstream's, else 5432).
    pub port: Option<u16>,
    /// Database name on the server (default: the name clients use).
    pub dbname: Option<String>,
    /// User pgherald logs in as (default: the upstream's, else the client's).
    pub user: Option<String>,
    /// Password for that login.
    pub password: Option<String>,
    /// Pool size for this database.
    pub pool_size: Option<usize>,
    /// min_pool_size for this database's pools.
    pub min_pool_size: Option<usize>,
    /// max_db_connections for this database (0 or unset: the global one).
    pub max_db_connections: Option<usize>,
    /// Pool mode for this database.
    pub pool_mode: Option<PoolMode>,
    /// Relay notifications raised inside Postgres (default: the global `relay`).
    pub relay: Option<bool>,
    /// Send notifications committed through pgherald to Postgres too (default: global).
    pub forward_notify: Option<bool>,
    /// Role the relay logs in as (default: the global `relay_user`, else `user`).
    pub relay_user: Option<String>,
    /// Password for the relay's role (default: the global `relay_password`, else the
    /// password of `user` when the relay logs in as `user`).
    pub relay_password: Option<String>,
    /// server_tls_sslmode for this database (default: the upstream URL's, else global).
    pub server_tls_sslmode: Option<SslMode>,
    /// server_tls_ca_file for this database.
    pub server_tls_ca_file: Option<PathBuf>,
    /// server_tls_cert_file for this database.
    pub server_tls_cert_file: Option<PathBuf>,
    /// server_tls_key_file for this database.
    pub server_tls_key_file: Option<PathBuf>,
    /// server_tls_protocols for this database.
    pub server_tls_protocols: Option<String>,
    /// auth_user for this database.
    pub auth_user: Option<String>,
    /// auth_query for this database.
    pub auth_query: Option<String>,
    /// auth_dbname for this database.
    pub auth_dbname: Option<String>,
    /// reserve_pool_size for this database.
    pub reserve_pool_size: Option<usize>,
    /// client_encoding set on this database's server connections at login.
    pub client_encoding: Option<String>,
    /// DateStyle set on this database's server connections at login.
    pub datestyle: Option<String>,
    /// TimeZone set on this database's server connections at login.
    pub timezone: Option<String>,
    /// application_name set on this database's server connections at login.
    pub application_name: Option<String>,
    /// Query run once on each new server connection, after login.
    pub connect_query: Option<String>,
}

/// A `[users.NAME]` entry (PgBouncer's `[users]` section).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Pool mode for this user's pools.
    pub pool_mode: Option<PoolMode>,
    /// Pool size for this user's pools.
    pub pool_size: Option<usize>,
    /// reserve_pool_size for this user's pools.
    pub reserve_pool_size: Option<usize>,
    /// max_user_connections for this user (0 or unset: the global one).
    pub max_user_connections: Option<usize>,
    /// query_timeout for this user.
    pub query_timeout: Option<f64>,
    /// idle_transaction_timeout for this user.
    pub idle_transaction_timeout: Option<f64>,
    /// client_idle_timeout for this user.
    pub client_idle_timeout: Option<f64>,
}

/// The `[auth]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// trust, md5 or scram-sha-256.
    #[serde(rename = "type")]
    pub kind: String,
    /// PgBouncer userlist.txt-format file.
    pub file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:6432".into(),
            upstream: None,
            pool_mode: PoolMode::Transaction,
            default_pool_size: 20,
            min_pool_size: 0,
            max_db_connections: 0,
            max_user_connections: 0,
            max_client_conn: 100,
            query_wait_timeout: 120.0,
            server_idle_timeout: 600.0,
            server_lifetime: 3600.0,
            server_connect_timeout: 15.0,
            server_reset_query: "DISCARD ALL".into(),
            login_recheck_interval: 30.0,
            shutdown_timeout: 30.0,
            so_reuseport: false,
            client_login_timeout: 60.0,
            listener_queue_limit: 1_000_000,
            max_prepared_statements: 200,
            relay: true,
            forward_notify: false,
            relay_user: None,
            relay_password: None,
            defer_begin: true,
            databases: BTreeMap::new(),
            auth: None,
            admin_users: String::new(),
            stats_users: String::new(),
            metrics_listen: None,
            stats_period: 60.0,
            log_level: None,
            client_tls_sslmode: SslMode::Disable,
            client_tls_key_file: None,
            client_tls_cert_file: None,
            client_tls_ca_file: None,
            client_tls_protocols: "secure".into(),
            client_tls_ciphers: "default".into(),
            server_tls_sslmode: SslMode::Prefer,
            server_tls_ca_file: None,
            server_tls_cert_file: None,
            server_tls_key_file: None,
            server_tls_protocols: "secure".into(),
            server_tls_ciphers: "default".into(),
            backplane: None,
            backplane_timeout: 5.0,
            backplane_retention: 100_000,
            backplane_prefix: "pgherald".into(),
            auth_user: None,
            auth_query: ini::DEFAULT_AUTH_QUERY.into(),
            auth_dbname: None,
            client_idle_timeout: 0.0,
            idle_transaction_timeout: 0.0,
            query_timeout: 0.0,
            ignore_startup_parameters: String::new(),
            application_name_add_host: false,
            reserve_pool_size: 0,
            reserve_pool_timeout: 5.0,
            server_check_query: String::new(),
            server_check_delay: 30.0,
            server_round_robin: false,
            users: BTreeMap::new(),
            auth_hba_file: None,
        }
    }
}

/// Settings given on the command line: they win over the file, at start and at every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--upstream`.
    pub upstream: Option<String>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--pool-mode`.
    pub pool_mode: Option<PoolMode>,
    /// `--pool-size`.
    pub pool_size: Option<usize>,
    /// `--max-client-conn`.
    pub max_client_conn: Option<usize>,
}

impl Overrides {
    /// Write the overrides into `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(u) = &self.upstream {
            config.upstream = Some(u.clone());
        }
        if let Some(l) = &self.listen {
            config.listen = l.clone();
        }
        if let Some(m) = self.pool_mode {
            config.pool_mode = m;
        }
        if let Some(n) = self.pool_size {
            config.default_pool_size = n;
        }
        if let Some(n) = self.max_client_conn {
            config.max_client_conn = n;
        }
    }
}

fn tls_invalid(e: crate::tls::TlsError) -> ConfigError {
    invalid(&e.key, e.problem)
}

/// The dotted key whose `key = value` line holds byte `at` (for type errors, which toml
/// reports without the key).
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|u| !u.is_empty())
}

fn secs(key: &str, v: f64) -> Result<Duration, ConfigError> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(invalid(key, "must be a non-negative number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Durations and derived values, checked once.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// query_wait_timeout (zero = wait forever, as PgBouncer).
    pub query_wait: Duration,
    /// server_idle_timeout (zero = never).
    pub server_idle: Duration,
    /// server_lifetime (zero = unlimited).
    pub server_lifetime: Duration,
    /// server_connect_timeout.
    pub server_connect: Duration,
    /// shutdown_timeout.
    pub shutdown: Duration,
    /// client_login_timeout (zero = no limit).
    pub client_login: Duration,
    /// login_recheck_interval.
    pub login_recheck: Duration,
}

impl Config {
    /// Read and parse a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parse TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e
                .span()
                .and_then(|s| key_at(text, s.start))
                .filter(|k| !e.message().contains(k.as_str()))
                .map(|k| format!("`{k}`: "))
                .unwrap_or_default()
                + e.message()
                + &e.span()
                    .map(|s| {
                        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                        format!(" (line {line})")
                    })
                    .unwrap_or_default(),
        })
    }

    /// Check every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.timeouts()?;
        if self.default_pool_size == 0 {
            return Err(invalid("default_pool_size", "must be at least 1"));
        }
        if self.max_client_conn == 0 {
            return Err(invalid("max_client_conn", "must be at least 1"));
        }
        if self.listener_queue_limit == 0 {
            return Err(invalid("listener_queue_limit", "must be at least 1"));
        }
        if let Some(u) = &self.upstream {
            parse_upstream(u)?;
        }
        if let Some(m) = &self.metrics_listen {
            m.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "metrics_listen",
                    format!("`{m}` is not an address like 127.0.0.1:9127"),
                )
            })?;
        }
        if !(self.stats_period.is_finite() && self.stats_period >= 1.0) {
            return Err(invalid("stats_period", "must be at least 1 second"));
        }
        for (name, db) in &self.databases {
            if db.pool_size == Some(0) {
                return Err(invalid(
                    &format!("databases.{name}.pool_size"),
                    "must be at least 1",
                ));
            }
            if db.host.is_none() && self.upstream.is_none() && db.port.is_none() {
                // Falls back to 127.0.0.1:5432, which is PgBouncer's behaviour too.
            }
        }
        if let Some(auth) = &self.auth {
            match auth.kind.as_str() {
                "trust" => {}
                "cert" => {
                    if !self.client_tls_sslmode.verifies() {
                        return Err(invalid(
                            "auth.type",
                            "cert needs client_tls_sslmode verify-ca or verify-full (verified client certificates)",
                        ));
                    }
                }
                "hba" => {
                    if self.auth_hba_file.is_none() {
                        return Err(invalid("auth_hba_file", "auth type hba needs auth_hba_file"));
                    }
                }
                "md5" | "scram-sha-256" => {
                    let auth_user = self.auth_user.is_some()
                        || self.databases.values().any(|d| d.auth_user.is_some());
                    if auth.file.is_none() && !auth_user {
                        return Err(invalid(
                            "auth.file",
                            format!("auth type {} needs a userlist file or auth_user", auth.kind),
                        ));
                    }
                }
                other => {
                    return Err(invalid(
                        "auth.type",
                        format!(
                        "unknown auth type `{other}` (expected trust, md5, scram-sha-256, cert or hba)"
                    ),
                    ))
                }
            }
        }
        self.client_tls().check().map_err(tls_invalid)?;
        self.server_tls(None, None, "*")
            .check()
            .map_err(tls_invalid)?;
        if let Some(u) = &self.upstream {
            self.server_tls(self.databases.get("*"), Some(&parse_upstream(u)?), "*")
                .check()
                .map_err(tls_invalid)?;
        }
        for (name, db) in &self.databases {
            let up = self
                .upstream
                .as_deref()
                .and_then(|u| parse_upstream(u).ok());
            self.server_tls(Some(db), up.as_ref(), name)
                .check()
                .map_err(tls_invalid)?;
        }
        if self.auth.is_none() && !self.listen_addr()?.ip().is_loopback() {
            return Err(invalid(
                "listen",
                format!(
                    "{} is not a loopback address and no client authentication is configured; \
                     add an [auth] section (md5 or scram-sha-256 with a userlist file) or listen on 127.0.0.1",
                    self.listen
                ),
            ));
        }
        Ok(())
    }

    /// `admin_users` as a list.
    pub fn admin_user_list(&self) -> impl Iterator<Item = &str> {
        split_list(&self.admin_users)
    }

    /// `stats_users` as a list.
    pub fn stats_user_list(&self) -> impl Iterator<Item = &str> {
        split_list(&self.stats_users)
    }

    /// The socket address to listen on.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:6432", self.listen),
            )
        })
    }

    /// The timeouts as durations.
    pub fn timeouts(&self) -> Result<Timeouts, ConfigError> {
        Ok(Timeouts {
            query_wait: secs("query_wait_timeout", self.query_wait_timeout)?,
            server_idle: secs("server_idle_timeout", self.server_idle_timeout)?,
            server_lifetime: secs("server_lifetime", self.server_lifetime)?,
            server_connect: secs("server_connect_timeout", self.server_connect_timeout)?,
            shutdown: secs("shutdown_timeout", self.shutdown_timeout)?,
            client_login: secs("client_login_timeout", self.client_login_timeout)?,
            login_recheck: secs("login_recheck_interval", self.login_recheck_interval)?,
        })
    }

    /// The client-facing TLS settings.
    pub fn client_tls(&self) -> TlsFiles {
        TlsFiles {
            prefix: "client_tls".into(),
            mode: self.client_tls_sslmode,
            ca_file: self.client_tls_ca_file.clone(),
            cert_file: self.client_tls_cert_file.clone(),
            key_file: self.client_tls_key_file.clone(),
            protocols: self.client_tls_protocols.clone(),
            ciphers: self.client_tls_ciphers.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
