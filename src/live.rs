//! The running configuration: one immutable snapshot (config, timeouts, auth file, TLS
//! certificates) behind a single handle. SIGHUP and the console's RELOAD build and validate a new snapshot from the
//! files, then swap it in; sessions and pools read the snapshot when they open something new
//! (a client login, a server connection, a checkout), never per message.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use crate::auth::{AuthType, UserList};
use crate::config::{Config, ConfigError, Overrides, Timeouts};
use crate::tls;

/// One validated configuration with everything derived from it.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration.
    pub config: Config,
    /// Its timeouts as durations.
    pub timeouts: Timeouts,
    /// Client authentication method.
    pub auth_type: AuthType,
    /// Users and secrets from the auth file.
    pub users: UserList,
    /// The auth_hba_file's rules (`auth_type = hba`).
    pub hba: Option<crate::auth::hba::Hba>,
    /// Client-facing TLS (client_tls_*), certificates loaded when the snapshot was built.
    pub client_tls: tls::ClientTls,
    /// Server-facing TLS connectors by settings, built when the snapshot was built.
    pub server_tls: tls::ServerTlsCache,
}

impl Snapshot {
    /// Validate `config` and read its auth file.
    pub fn build(config: Config) -> Result<Snapshot, ConfigError> {
        config.validate()?;
        let timeouts = config.timeouts()?;
        let (auth_type, users) = load_auth(&config)?;
        let hba = match (&config.auth_hba_file, auth_type) {
            (Some(path), AuthType::Hba) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    key: "auth_hba_file".into(),
                    problem: format!("cannot read {}: {e}", path.display()),
                })?;
                Some(
                    crate::auth::hba::Hba::parse(&text).map_err(|e| ConfigError::At {
                        file: path.clone(),
                        line: e.line,
                        message: e.message,
                    })?,
                )
            }
            _ => None,
        };
        let tls_err = |e: tls::TlsError| ConfigError::Invalid {
            key: e.key,
            problem: e.problem,
        };
        let client_tls = tls::ClientTls::build(&config.client_tls()).map_err(tls_err)?;
        let server_tls = tls::ServerTlsCache::default();
        for name in config.databases.keys() {
            if let Some(t) = config.target(name) {
                server_tls.get(&t.tls).map_err(tls_err)?;
            }
        }
        Ok(Snapshot {
            config,
            timeouts,
            auth_type,
            users,
            hba,
            client_tls,
            server_tls,
        })
    }

    /// Is `user` in admin_users?
    pub fn is_admin(&self, user: &str) -> bool {
        self.config.admin_user_list().any(|u| u == user)
    }

    /// Is `user` in stats_users?
    pub fn is_stats(&self, user: &str) -> bool {
        self.config.stats_user_list().any(|u| u == user)
    }
}

fn load_auth(config: &Config) -> Result<(AuthType, UserList), ConfigError> {
    let invalid = |key: &str, problem: String| ConfigError::Invalid {
        key: key.into(),
        problem,
    };
    let Some(auth) = &config.auth else {
        return Ok((AuthType::Trust, UserList::default()));
    };
    let kind: AuthType = auth
        .kind
        .parse()
        .map_err(|e| invalid("auth.type", format!("{e}")))?;
    let users = match &auth.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid("auth.file", format!("cannot read {}: {e}", path.display()))
            })?;
            UserList::parse(&text)
                .map_err(|e| invalid("auth.file", format!("{}: {e}", path.display())))?
        }
        None => UserList::default(),
    };
    Ok((kind, users))
}

/// Where the configuration comes from, to read it again on reload.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The TOML file (None: the configuration was built in code; reload re-reads only the
    /// auth file).
    pub path: Option<PathBuf>,
    /// Command-line settings applied over the file.
    pub overrides: Overrides,
}

impl Source {
    /// Read the configuration again.
    pub fn load(&self, running: &Config) -> Result<Config, ConfigError> {
        let mut config = match &self.path {
            // A pgbouncer.ini is re-read as such (its notes were logged at start).
            Some(path) => crate::config::ini::load_any(path, false)?.0,
            None => running.clone(),
        };
        self.overrides.apply(&mut config);
        Ok(config)
    }
}

/// The handle every reader goes through.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Snapshot>,
    /// Where to read the configuration again.
    pub source: std::sync::Mutex<Source>,
}

impl Live {
    /// Start with `snapshot`.
    pub fn new(snapshot: Snapshot) -> Live {
        Live {
            current: ArcSwap::from_pointee(snapshot),
            source: std::sync::Mutex::new(Source::default()),
        }
    }

    /// The running snapshot.
    pub fn get(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Build a snapshot from the files; nothing changes when that fails.
    pub fn rebuild(&self) -> Result<Arc<Snapshot>, ConfigError> {
        let source = self
            .source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let running = self.get();
        let config = source.load(&running.config)?;
        let next = Arc::new(Snapshot::build(config)?);
        if next.config.listen != running.config.listen {
            tracing::warn!("reload: `listen` changed; it takes effect at the next restart");
        }
        if next.config.metrics_listen != running.config.metrics_listen {
            tracing::warn!("reload: `metrics_listen` changed; it takes effect at the next restart");
        }
        let bp = |c: &crate::config::Config| {
            (
                c.backplane.clone(),
                c.backplane_timeout.to_bits(),
                c.backplane_retention,
                c.backplane_prefix.clone(),
            )
        };
        if bp(&next.config) != bp(&running.config) {
            tracing::warn!(
                "reload: a `backplane*` key changed; it takes effect at the next restart"
            );
        }
        if next.config.listener_queue_limit != running.config.listener_queue_limit {
            tracing::warn!(
                "reload: `listener_queue_limit` changed; it takes effect at the next restart"
            );
        }
        self.current.store(next.clone());
        if let Some(hook) = LOG_HOOK.get() {
            hook(next.config.log_level.as_deref());
        }
        Ok(next)
    }
}

type LogHook = Box<dyn Fn(Option<&str>) + Send + Sync>;
static LOG_HOOK: OnceLock<LogHook> = OnceLock::new();

/// Install the function that applies a reloaded `log_level` (the binary sets it up with its
/// tracing subscriber's reload handle).
pub fn set_log_hook(hook: impl Fn(Option<&str>) + Send + Sync + 'static) {
    let _ = LOG_HOOK.set(Box::new(hook));
}
