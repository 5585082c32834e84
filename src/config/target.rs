//! Where a database's server connections go: the upstream URL as libpq reads it, and the
//! `Target` a database name resolves to (its `[databases]` entry, else the `*` fallback,
//! over the upstream URL, over the global keys), TLS towards the server included.

use std::path::PathBuf;

use super::{invalid, Config, ConfigError, DatabaseConfig, PoolMode, SslMode};
use crate::tls::TlsFiles;

/// Where a database's server connections go, resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name on the server.
    pub dbname: String,
    /// Fixed login user, or None to log in as the client's user.
    pub user: Option<String>,
    /// Password for the login.
    pub password: Option<String>,
    /// Pool size.
    pub pool_size: usize,
    /// Pool mode.
    pub pool_mode: PoolMode,
    /// Relay notifications raised inside Postgres.
    pub relay: bool,
    /// Forward notifications committed through pgherald to Postgres.
    pub forward_notify: bool,
    /// Role the relay logs in as: `relay_user` (database, then global), else the fixed
    /// login user; None when neither is configured (the relay is then off).
    pub relay_user: Option<String>,
    /// Password for `relay_user`, when configured.
    pub relay_password: Option<String>,
    /// TLS towards this server.
    pub tls: TlsFiles,
    /// Startup parameters for server logins (client_encoding, datestyle, timezone,
    /// application_name of the database entry).
    pub startup: Vec<(String, String)>,
    /// Query run once on each new server connection.
    pub connect_query: Option<String>,
    /// Role that looks up secrets of users missing from the auth file (database, else global).
    pub auth_user: Option<String>,
    /// The query it runs (database, else global).
    pub auth_query: String,
    /// The `[databases]` entry whose server the lookup runs on (default: this one).
    pub auth_dbname: Option<String>,
}

impl Target {
    /// The upstream database's identity, `host:port/dbname`: what the hub and the relay are
    /// keyed by, so names that point at the same database share notifications.
    pub fn upstream_key(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }
}

/// Parsed `postgres://user[:password]@host[:port]` upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User, if the URL names one.
    pub user: Option<String>,
    /// Password, if the URL has one.
    pub password: Option<String>,
    /// `?sslmode=`, as libpq reads it.
    pub sslmode: Option<SslMode>,
    /// `?sslrootcert=`.
    pub sslrootcert: Option<PathBuf>,
    /// `?sslcert=`.
    pub sslcert: Option<PathBuf>,
    /// `?sslkey=`.
    pub sslkey: Option<PathBuf>,
}

/// Parse an upstream URL; errors name the `upstream` key.
pub fn parse_upstream(s: &str) -> Result<Upstream, ConfigError> {
    let url =
        url::Url::parse(s).map_err(|e| invalid("upstream", format!("`{s}` is not a URL: {e}")))?;
    if url.scheme() != "postgres" && url.scheme() != "postgresql" {
        return Err(invalid("upstream", "the URL must start with postgres://"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| invalid("upstream", "the URL names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let decode = |v: &str| {
        percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = Some(decode(url.username())).filter(|u| !u.is_empty());
    let password = url.password().map(decode);
    let mut up = Upstream {
        host,
        port: url.port().unwrap_or(5432),
        user,
        password,
        sslmode: None,
        sslrootcert: None,
        sslcert: None,
        sslkey: None,
    };
    for (k, v) in url.query_pairs() {
        match &*k {
            "sslmode" => {
                up.sslmode = Some(v.parse().map_err(|e: String| invalid("upstream", e))?)
            }
            "sslrootcert" => up.sslrootcert = Some(PathBuf::from(&*v)),
            "sslcert" => up.sslcert = Some(PathBuf::from(&*v)),
            "sslkey" => up.sslkey = Some(PathBuf::from(&*v)),
            other => {
                return Err(invalid(
                    "upstream",
                    format!("unsupported URL parameter `{other}` (pgherald reads sslmode, sslrootcert, sslcert, sslkey)"),
                ))
            }
        }
    }
    Ok(up)
}

impl Config {
    /// The server-facing TLS settings of a database: its entry's keys, else the upstream
    /// URL's `sslmode`/`sslrootcert`/`sslcert`/`sslkey`, else the global keys.
    pub(super) fn server_tls(
        &self,
        db: Option<&DatabaseConfig>,
        up: Option<&Upstream>,
        name: &str,
    ) -> TlsFiles {
        let db = db.cloned().unwrap_or_default();
        let from_db = db.server_tls_sslmode.is_some();
        TlsFiles {
            prefix: if from_db || db.server_tls_ca_file.is_some() {
                format!("databases.{name}.server_tls")
            } else {
                "server_tls".into()
            },
            mode: db
                .server_tls_sslmode
                .or(up.and_then(|u| u.sslmode))
                .unwrap_or(self.server_tls_sslmode),
            ca_file: db
                .server_tls_ca_file
                .or(up.and_then(|u| u.sslrootcert.clone()))
                .or_else(|| self.server_tls_ca_file.clone()),
            cert_file: db
                .server_tls_cert_file
                .or(up.and_then(|u| u.sslcert.clone()))
                .or_else(|| self.server_tls_cert_file.clone()),
            key_file: db
                .server_tls_key_file
                .or(up.and_then(|u| u.sslkey.clone()))
                .or_else(|| self.server_tls_key_file.clone()),
            protocols: db
                .server_tls_protocols
                .unwrap_or_else(|| self.server_tls_protocols.clone()),
            ciphers: self.server_tls_ciphers.clone(),
        }
    }

    /// Resolve the server target for a database name a client asked for, or None if unknown.
    pub fn target(&self, database: &str) -> Option<Target> {
        let upstream = self
            .upstream
            .as_deref()
            .and_then(|u| parse_upstream(u).ok());
        let entry = self
            .databases
            .get(database)
            .or_else(|| self.databases.get("*"));
        if entry.is_none() && upstream.is_none() {
            return None;
        }
        let entry = entry.cloned().unwrap_or_default();
        let (uhost, uport, uuser, upass) = match &upstream {
            Some(u) => (
                Some(u.host.clone()),
                Some(u.port),
                u.user.clone(),
                u.password.clone(),
            ),
            None => (None, None, None, None),
        };
        let user = entry.user.clone().or(uuser);
        // A password belongs to the user it came with.
        let password = if entry.user.is_some() {
            entry.password.clone()
        } else {
            entry.password.clone().or(upass)
        };
        let tls = self.server_tls(Some(&entry), upstream.as_ref(), database);
        let relay_user = entry.relay_user.clone().or(self.relay_user.clone());
        let relay_password = match &relay_user {
            Some(_) if entry.relay_user.is_some() => entry.relay_password.clone(),
            Some(_) => entry.relay_password.clone().or(self.relay_password.clone()),
            None => entry
                .relay_password
                .clone()
                .or(self.relay_password.clone())
                .or(password.clone()),
        };
        let relay_user = relay_user.or(user.clone());
        let startup = [
            ("client_encoding", &entry.client_encoding),
            ("datestyle", &entry.datestyle),
            ("timezone", &entry.timezone),
            ("application_name", &entry.application_name),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .collect();
        Some(Target {
            startup,
            connect_query: entry.connect_query.clone(),
            auth_user: entry.auth_user.clone().or(self.auth_user.clone()),
            auth_query: entry.auth_query.clone().unwrap_or(self.auth_query.clone()),
            auth_dbname: entry.auth_dbname.clone().or(self.auth_dbname.clone()),
            relay_user,
            relay_password,
            tls,
            host: entry.host.or(uhost).unwrap_or_else(|| "127.0.0.1".into()),
            port: entry.port.or(uport).unwrap_or(5432),
            dbname: entry
                .dbname
                .filter(|_| self.databases.contains_key(database))
                .unwrap_or_else(|| database.to_string()),
            user,
            password,
            pool_size: entry.pool_size.unwrap_or(self.default_pool_size),
            pool_mode: entry.pool_mode.unwrap_or(self.pool_mode),
            relay: entry.relay.unwrap_or(self.relay),
            forward_notify: entry.forward_notify.unwrap_or(self.forward_notify),
        })
    }
}
