//! PgBouncer's `pgbouncer.ini`, read as PgBouncer reads it and translated into [`Config`]:
//! `[pgbouncer]` settings, `[databases]` connection strings (the `*` fallback included),
//! `[users]` settings and `%include`. A key PgBouncer would refuse is an error naming its
//! file and line; a key pgherald does not support is reported once, naming it and what
//! pgherald does instead. Starts from PgBouncer's defaults (session pooling, md5 auth),
//! not pgherald's.

pub mod connstr;
pub mod lex;
pub mod settings;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{AuthConfig, Config, ConfigError, DatabaseConfig, PoolMode, UserConfig};
use lex::{at, Item, Kind, Reader};
use settings::Support;

/// PgBouncer 1.25's default `auth_query`.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin";

/// A translated ini file and what to report once at start.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// One line per setting pgherald does not support or reads differently.
    pub warnings: Vec<String>,
}

/// True if `text` is a PgBouncer ini file rather than pgherald's TOML: it has the
/// `[pgbouncer]` section PgBouncer requires, or starts with `%include`.
pub fn is_ini(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "[pgbouncer]") || text.trim_start().starts_with("%include")
}

/// Read a configuration file: PgBouncer's ini when `ini` is set or the file has its form,
/// else pgherald's TOML. Returns the configuration, the notes to log once at start (ini
/// only) and whether it was an ini file.
pub fn load_any(path: &Path, ini: bool) -> Result<(Config, Vec<String>, bool), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if ini || is_ini(&text) {
        let l = from_text(path, &text, &mut |p: &Path| std::fs::read_to_string(p))?;
        Ok((l.config, l.warnings, true))
    } else {
        Ok((Config::from_file(path)?, Vec::new(), false))
    }
}

/// Read `path` (and the files it includes, and its auth_file) and translate it.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_text(path, &text, &mut |p: &Path| std::fs::read_to_string(p))
}

/// Translate the ini text of `path`; includes and the auth file are read through `read`.
pub fn from_text(path: &Path, text: &str, read: &mut Reader<'_>) -> Result<Loaded, ConfigError> {
    let items = lex::lex(path, text, read)?;
    let mut b = Builder::new();
    for item in items {
        b.item(item)?;
    }
    b.finish(path, read)
}

/// Where a value came from, for errors found after the whole file is read.
#[derive(Debug, Clone)]
struct Origin {
    file: PathBuf,
    line: usize,
}

struct Builder {
    config: Config,
    warnings: Vec<String>,
    warned: BTreeSet<String>,
    section: Option<String>,
    got_main: bool,
    listen_addr: (String, Option<Origin>),
    listen_port: u16,
    auth_type: (String, Option<Origin>),
    auth_file: Option<(PathBuf, Origin)>,
    no_host: Vec<String>,
}

/// `strtol(s, &end, 0)` with nothing left over: decimal, 0x hex or 0 octal.
fn int(v: &str) -> Result<i64, String> {
    let t = v.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let parsed = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8)
    } else {
        t.parse()
    };
    parsed
        .map(|n| if neg { -n } else { n })
        .map_err(|_| "not an integer".to_string())
}

fn count(v: &str) -> Result<usize, String> {
    let n = int(v)?;
    usize::try_from(n).map_err(|_| "must not be negative".to_string())
}

fn flag(v: &str) -> Result<bool, String> {
    int(v).map(|n| n != 0)
}

/// Seconds, as PgBouncer's time settings: a non-negative decimal number.
fn time(v: &str) -> Result<f64, String> {
    match v.trim_start().parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        _ => Err("not a non-negative number of seconds".into()),
    }
}

fn opt_str(v: &str) -> Option<String> {
    Some(v.to_string()).filter(|s| !s.is_empty())
}

fn opt_path(v: &str) -> Option<PathBuf> {
    opt_str(v).map(PathBuf::from)
}

fn pool_mode(v: &str) -> Result<PoolMode, String> {
    match v.to_ascii_lowercase().as_str() {
        "session" => Ok(PoolMode::Session),
        "transaction" => Ok(PoolMode::Transaction),
        "statement" => {
            Err("pool_mode statement is not supported by pgherald (use transaction)".into())
        }
        _ => Err(format!("invalid pool mode: {v}")),
    }
}

impl Builder {
    fn new() -> Builder {
        Builder {
            config: Config {
                // PgBouncer's defaults where they differ from pgherald's own.
                pool_mode: PoolMode::Session,
                ..Config::default()
            },
            warnings: Vec::new(),
            warned: BTreeSet::new(),
            section: None,
            got_main: false,
            listen_addr: (String::new(), None),
            listen_port: 6432,
            auth_type: ("md5".into(), None),
            auth_file: None,
            no_host: Vec::new(),
        }
    }

    /// Report `message` once per `id`.
    fn warn(&mut self, id: &str, message: String) {
        if self.warned.insert(id.to_string()) {
            self.warnings.push(message);
        }
    }

    fn item(&mut self, item: Item) -> Result<(), ConfigError> {
        let Item { file, line, kind } = item;
        let origin = Origin { file, line };
        let err = |m: String| at(&origin.file, origin.line, m);
        match kind {
            Kind::Section(name) => {
                match name.as_str() {
                    "pgbouncer" => self.got_main = true,
                    "databases" | "users" => {}
                    "peers" => self.warn(
                        "[peers]",
                        "[peers]: not supported; pgherald does not forward cancel requests to peers".into(),
                    ),
                    _ => return Err(err(format!("invalid section \"{name}\""))),
                }
                self.section = Some(name);
                Ok(())
            }
            Kind::Pair { key, value } => match self.section.clone().as_deref() {
                None => Err(err(format!("value without section: {key}"))),
                Some("pgbouncer") => self.global(&key, &value, &origin),
                Some("databases") => self.database(&key, &value, &origin),
                Some("users") => self.user(&key, &value, &origin),
                _ => Ok(()),
            },
        }
    }

    fn global(&mut self, key: &str, value: &str, origin: &Origin) -> Result<(), ConfigError> {
        let Some(setting) = settings::find(key) else {
            return Err(at(
                &origin.file,
                origin.line,
                format!("unknown parameter: pgbouncer/{key}"),
            ));
        };
        match setting.support {
            Support::Unsupported(note) => {
                self.warn(key, format!("{key}: not supported; {note}"));
                return Ok(());
            }
            Support::NotApplicable(note) => {
                self.warn(key, format!("{key}: not applicable; {note}"));
                return Ok(());
            }
            // Applied; the cases where the difference shows are reported where they arise.
            Support::Different(_) | Support::Same => {}
        }
        self.apply(key, value, origin).map_err(|why| {
            at(
                &origin.file,
                origin.line,
                format!("invalid value \"{value}\" for parameter {key}: {why}"),
            )
        })
    }

    fn apply(&mut self, key: &str, v: &str, origin: &Origin) -> Result<(), String> {
        let c = &mut self.config;
        match key {
            "admin_users" => c.admin_users = v.to_string(),
            "stats_users" => c.stats_users = v.to_string(),
            "stats_period" => c.stats_period = int(v)? as f64,
            "application_name_add_host" => c.application_name_add_host = flag(v)?,
            "auth_dbname" => c.auth_dbname = opt_str(v),
            "auth_file" => {
                self.auth_file = opt_path(v).map(|p| (p, origin.clone()));
            }
            "auth_query" => c.auth_query = v.to_string(),
            "auth_hba_file" => c.auth_hba_file = opt_path(v),
            "auth_type" => {
                let t = v.to_ascii_lowercase();
                const KNOWN: &[&str] = &[
                    "any",
                    "trust",
                    "plain",
                    "md5",
                    "cert",
                    "hba",
                    "ldap",
                    "pam",
                    "scram-sha-256",
                ];
                if !KNOWN.contains(&t.as_str()) {
                    return Err("unknown auth_type".into());
                }
                self.auth_type = (t, Some(origin.clone()));
            }
            "auth_user" => c.auth_user = opt_str(v),
            "client_idle_timeout" => c.client_idle_timeout = time(v)?,
            "client_login_timeout" => c.client_login_timeout = time(v)?,
            "client_tls_ca_file" => c.client_tls_ca_file = opt_path(v),
            "client_tls_cert_file" => c.client_tls_cert_file = opt_path(v),
            "client_tls_key_file" => c.client_tls_key_file = opt_path(v),
            "client_tls_ciphers" => c.client_tls_ciphers = v.to_string(),
            "client_tls_protocols" => c.client_tls_protocols = v.to_string(),
            "client_tls_sslmode" => c.client_tls_sslmode = v.to_ascii_lowercase().parse()?,
            "default_pool_size" => c.default_pool_size = count(v)?,
            "idle_transaction_timeout" => c.idle_transaction_timeout = time(v)?,
            "ignore_startup_parameters" => c.ignore_startup_parameters = v.to_string(),
            "listen_addr" => self.listen_addr = (v.to_string(), Some(origin.clone())),
            "listen_port" => {
                self.listen_port = u16::try_from(int(v)?).map_err(|_| "not a port number")?
            }
            "max_client_conn" => c.max_client_conn = count(v)?,
            "max_prepared_statements" => c.max_prepared_statements = count(v)?,
            "max_db_connections" => c.max_db_connections = count(v)?,
            "max_user_connections" => c.max_user_connections = count(v)?,
            "min_pool_size" => c.min_pool_size = count(v)?,
            "pool_mode" => c.pool_mode = pool_mode(v)?,
            "query_timeout" => c.query_timeout = time(v)?,
            "query_wait_timeout" => c.query_wait_timeout = time(v)?,
            "reserve_pool_size" => c.reserve_pool_size = count(v)?,
            "reserve_pool_timeout" => c.reserve_pool_timeout = time(v)?,
            "server_check_delay" => c.server_check_delay = time(v)?,
            "server_check_query" => c.server_check_query = v.to_string(),
            "server_connect_timeout" => c.server_connect_timeout = time(v)?,
            "server_idle_timeout" => c.server_idle_timeout = time(v)?,
            "server_lifetime" => c.server_lifetime = time(v)?,
            "server_login_retry" => {
                time(v)?;
                if let Some(settings::Setting {
                    support: Support::Different(note),
                    ..
                }) = settings::find(key)
                {
                    self.warn(key, format!("{key}: {note}"));
                }
            }
            "server_reset_query" => c.server_reset_query = v.to_string(),
            "server_round_robin" => c.server_round_robin = flag(v)?,
            "so_reuseport" => c.so_reuseport = flag(v)?,
            "server_tls_ca_file" => c.server_tls_ca_file = opt_path(v),
            "server_tls_cert_file" => c.server_tls_cert_file = opt_path(v),
            "server_tls_key_file" => c.server_tls_key_file = opt_path(v),
            "server_tls_ciphers" => c.server_tls_ciphers = v.to_string(),
            "server_tls_protocols" => c.server_tls_protocols = v.to_string(),
            "server_tls_sslmode" => c.server_tls_sslmode = v.to_ascii_lowercase().parse()?,
            // Read for its syntax only; pgherald's tracking covers it.
            "track_extra_parameters" => {}
            other => return Err(format!("{other} is not handled")),
        }
        Ok(())
    }

    fn database(&mut self, name: &str, value: &str, origin: &Origin) -> Result<(), ConfigError> {
        let err = |m: String| at(&origin.file, origin.line, m);
        if name == "pgbouncer" {
            return Err(err("database name \"pgbouncer\" is reserved".into()));
        }
        let pairs = connstr::pairs(value).map_err(err)?;
        let mut d = DatabaseConfig::default();
        let bad = |k: &str, v: &str, why: String| {
            err(format!("invalid {k} \"{v}\" for database {name}: {why}"))
        };
        for (k, v) in pairs {
            let ku = k.as_str();
            match ku {
                "dbname" => d.dbname = Some(v),
                "host" => {
                    if v.starts_with('/') {
                        return Err(bad(ku, &v, "Unix sockets are not supported by pgherald; give the server's TCP address".into()));
                    }
                    let first = v.split(',').next().unwrap_or_default().trim().to_string();
                    if first != v {
                        self.warn(
                            &format!("databases/{name}/host"),
                            format!("databases/{name}: several hosts ({v}); pgherald connects to the first, {first}"),
                        );
                    }
                    d.host = Some(first);
                }
                "port" => {
                    let p = int(&v)
                        .ok()
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p != 0);
                    d.port = Some(p.ok_or_else(|| err(format!("invalid port: {v}")))?);
                }
                "user" => d.user = Some(v),
                "password" => d.password = Some(v),
                "auth_user" => d.auth_user = Some(v),
                "auth_dbname" => d.auth_dbname = Some(v),
                "auth_query" => d.auth_query = Some(v),
                "client_encoding" => d.client_encoding = Some(v),
                "datestyle" => d.datestyle = Some(v),
                "timezone" => d.timezone = Some(v),
                "application_name" => d.application_name = Some(v),
                "connect_query" => d.connect_query = Some(v),
                "pool_size" => d.pool_size = Some(count(&v).map_err(|w| bad(ku, &v, w))?),
                "reserve_pool" | "reserve_pool_size" => {
                    d.reserve_pool_size = Some(count(&v).map_err(|w| bad(ku, &v, w))?)
                }
                "pool_mode" => d.pool_mode = Some(pool_mode(&v).map_err(err)?),
                "min_pool_size" => d.min_pool_size = Some(count(&v).map_err(|w| bad(ku, &v, w))?),
                "max_db_connections" => {
                    d.max_db_connections = Some(count(&v).map_err(|w| bad(ku, &v, w))?)
                }
                "query_wait_timeout"
                | "server_lifetime"
                | "max_db_client_connections"
                | "load_balance_hosts" => {
                    self.warn(
                        &format!("databases/{ku}"),
                        format!("databases: {ku} per database is not supported; the [pgbouncer] value applies (first seen for {name})"),
                    );
                }
                _ => return Err(err(format!("unrecognized connection parameter: {k}"))),
            }
        }
        if d.host.is_none() {
            self.no_host.push(name.to_string());
        }
        self.config.databases.insert(name.to_string(), d);
        Ok(())
    }

    fn user(&mut self, name: &str, value: &str, origin: &Origin) -> Result<(), ConfigError> {
        let err = |m: String| at(&origin.file, origin.line, m);
        let pairs = connstr::pairs(value).map_err(err)?;
        let mut u = UserConfig::default();
        for (k, v) in pairs {
            let bad = |why: String| err(format!("invalid {k} \"{v}\" for user {name}: {why}"));
            match k.as_str() {
                "pool_mode" => u.pool_mode = Some(pool_mode(&v).map_err(err)?),
                "pool_size" => u.pool_size = Some(count(&v).map_err(bad)?),
                "reserve_pool_size" => u.reserve_pool_size = Some(count(&v).map_err(bad)?),
                "max_user_connections" => u.max_user_connections = Some(count(&v).map_err(bad)?),
                "query_timeout" => u.query_timeout = Some(time(&v).map_err(bad)?),
                "idle_transaction_timeout" => {
                    u.idle_transaction_timeout = Some(time(&v).map_err(bad)?)
                }
                "client_idle_timeout" => u.client_idle_timeout = Some(time(&v).map_err(bad)?),
                "transaction_timeout" | "query_wait_timeout" | "max_user_client_connections" => {
                    self.warn(
                        &format!("users/{k}"),
                        format!("users: {k} per user is not supported; the [pgbouncer] value applies (first seen for {name})"),
                    );
                }
                _ => return Err(err(format!("unrecognized user parameter: {k}"))),
            }
        }
        self.config.users.insert(name.to_string(), u);
        Ok(())
    }

    fn finish(mut self, path: &Path, read: &mut Reader<'_>) -> Result<Loaded, ConfigError> {
        if !self.got_main {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: "main section [pgbouncer] missing from config file".into(),
            });
        }
        let (addr, origin) = self.listen_addr.clone();
        let port = self.listen_port;
        let mut addrs = addr.split(',').map(str::trim).filter(|a| !a.is_empty());
        let host = match addrs.next() {
            None => {
                self.warn(
                    "listen_addr",
                    format!("listen_addr: not set, so PgBouncer would listen on its Unix socket only; pgherald listens on TCP 127.0.0.1:{port}"),
                );
                "127.0.0.1".to_string()
            }
            Some("*") => "0.0.0.0".into(),
            Some("localhost") => "127.0.0.1".into(),
            Some(a) => match a.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
                Ok(ip) => ip.to_string(),
                Err(_) => {
                    let o = origin.unwrap_or(Origin {
                        file: path.to_path_buf(),
                        line: 1,
                    });
                    return Err(at(&o.file, o.line, format!("listen_addr {a}: pgherald listens on an IP address (or * or localhost), not a host name")));
                }
            },
        };
        if addrs.next().is_some() {
            self.warn(
                "listen_addr",
                format!(
                    "listen_addr: several addresses ({addr}); pgherald listens on the first only"
                ),
            );
        }
        self.config.listen = format!("{host}:{port}");
        if !self.no_host.is_empty() {
            let list = self.no_host.join(", ");
            self.warn(
                "host",
                format!("databases without host= ({list}): PgBouncer connects over the Unix socket; pgherald connects to 127.0.0.1"),
            );
        }
        if let Some((file, o)) = &self.auth_file {
            if let Err(e) = read(file) {
                return Err(at(
                    &o.file,
                    o.line,
                    format!("could not load auth_file \"{}\": {e}", file.display()),
                ));
            }
        }
        let (kind, origin) = self.auth_type.clone();
        let kind = match kind.as_str() {
            "plain" => {
                self.warn("auth_type", "auth_type plain: pgherald asks clients for md5 instead (the password is checked against the same auth_file)".into());
                "md5"
            }
            "any" => {
                self.warn("auth_type", "auth_type any: served as trust (every user name is accepted; databases log in with their forced user)".into());
                "trust"
            }
            "hba" if self.config.auth_hba_file.is_some() => "hba",
            "hba" | "ldap" | "pam" => {
                let o = origin.unwrap_or(Origin {
                    file: path.to_path_buf(),
                    line: 1,
                });
                return Err(at(
                    &o.file,
                    o.line,
                    if kind == "hba" {
                        "auth_type hba needs auth_hba_file".to_string()
                    } else {
                        format!("auth_type {kind} is not supported by pgherald (use md5, scram-sha-256, cert, hba or trust)")
                    },
                ));
            }
            k => k,
        };
        let auth_file = self.auth_file.take().map(|(p, _)| p);
        if matches!(kind, "md5" | "scram-sha-256")
            && auth_file.is_none()
            && self.config.auth_user.is_none()
            && !self
                .config
                .databases
                .values()
                .any(|d| d.auth_user.is_some())
        {
            let o = origin.unwrap_or(Origin {
                file: path.to_path_buf(),
                line: 1,
            });
            return Err(at(
                &o.file,
                o.line,
                format!("auth_type {kind} needs auth_file or auth_user"),
            ));
        }
        self.config.auth = Some(AuthConfig {
            kind: kind.to_string(),
            file: auth_file,
        });
        Ok(Loaded {
            config: self.config,
            warnings: self.warnings,
        })
    }
}

#[cfg(test)]
mod tests;
