//! pgherald: a Postgres connection pooler that serves LISTEN/NOTIFY itself.
//!
//! Clients speak the Postgres wire protocol to pgherald; pgherald pools server connections
//! per (database, user) in session or transaction mode, PgBouncer-style. See the README for
//! configuration and semantics, and `shared/DESIGN.md` for the architecture.

pub mod auth;
pub mod backend;
pub mod config;
pub mod error;
pub mod frontend;
pub mod protocol;
pub mod pubsub;
pub mod sql;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{AuthType, UserList};
use crate::backend::cancel::CancelRegistry;
use crate::backend::pool::Pools;
use crate::config::{Config, Timeouts};
pub use crate::error::Error;

/// Shared state of one running pgherald.
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// Its timeouts as durations.
    pub timeouts: Timeouts,
    /// All pools.
    pub pools: Pools,
    /// Virtual cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Client authentication method.
    pub auth_type: AuthType,
    /// Users and secrets from the auth file.
    pub users: UserList,
    /// Secrets proven by client logins, for pass-through server logins.
    pub keyring: Arc<auth::passthrough::Keyring>,
    /// Idle connections of auth_query lookups.
    pub auth_conns: backend::auth_query::AuthConns,
    /// The LISTEN/NOTIFY hub.
    pub hub: Arc<pubsub::Hub>,
    /// Upstream relays, one per database with local listeners.
    pub relays: Arc<pubsub::relay::Relays>,
    /// Server-side names of named prepared statements (transaction pooling).
    pub prepared: backend::prepared::Registry,
    /// Clients logged in (counted against `max_client_conn`).
    pub clients: AtomicUsize,
    /// Connections still in their login phase (capped at `LOGIN_FACTOR × max_client_conn`).
    pub logins: AtomicUsize,
    /// Becomes true when shutdown starts.
    pub shutdown: watch::Receiver<bool>,
    /// Client-facing TLS (client_tls_*), loaded at start.
    pub client_tls: tls::ClientTls,
    /// Server-facing TLS connectors by settings.
    pub server_tls: tls::ServerTlsCache,
}

/// A bound, not yet running pgherald.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    stop: watch::Sender<bool>,
}

impl Server {
    /// Validate the configuration, load the auth file and bind the listening socket.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        config.validate()?;
        let timeouts = config.timeouts()?;
        let (auth_type, users) = load_auth(&config)?;
        let tls_err = |e: tls::TlsError| {
            Error::Config(config::ConfigError::Invalid {
                key: e.key,
                problem: e.problem,
            })
        };
        let client_tls = tls::ClientTls::build(&config.client_tls()).map_err(tls_err)?;
        let server_tls = tls::ServerTlsCache::default();
        for name in config.databases.keys() {
            if let Some(t) = config.target(name) {
                server_tls.get(&t.tls).map_err(tls_err)?;
            }
        }
        let addr = config.listen_addr()?;
        let listener = TcpListener::bind(addr).await?;
        let (stop, shutdown) = watch::channel(false);
        let hub = pubsub::Hub::new(config.listener_queue_limit);
        let relays = pubsub::relay::Relays::start(hub.clone(), timeouts.server_connect);
        let app = Arc::new(App {
            hub,
            relays,
            config,
            timeouts,
            pools: Pools::default(),
            cancels: CancelRegistry::new(),
            auth_type,
            users,
            keyring: auth::passthrough::Keyring::new(),
            auth_conns: Default::default(),
            prepared: Default::default(),
            clients: AtomicUsize::new(0),
            logins: AtomicUsize::new(0),
            shutdown,
            client_tls,
            server_tls,
        });
        Ok(Server {
            listener,
            app,
            stop,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state, for inspection.
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serve until `shutdown` becomes true, then stop accepting and give clients up to
    /// `shutdown_timeout` to finish.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let Server {
            listener,
            app,
            stop,
        } = self;
        let reaper = tokio::spawn(reap_loop(app.clone()));
        frontend::listener::accept_loop(listener, app.clone(), &mut shutdown).await;
        let _ = stop.send(true);
        tracing::info!(
            "shutting down: waiting up to {:?} for clients",
            app.timeouts.shutdown
        );
        let deadline = tokio::time::Instant::now() + app.timeouts.shutdown;
        while app.clients.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reaper.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

fn load_auth(config: &Config) -> Result<(AuthType, UserList), Error> {
    let invalid = |key: &str, problem: String| {
        Error::Config(config::ConfigError::Invalid {
            key: key.into(),
            problem,
        })
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

async fn reap_loop(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        app.pools.reap_all();
    }
}

/// Bind and serve until `shutdown` becomes true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), Error> {
    let server = Server::bind(config).await?;
    tracing::info!("listening on {}", server.local_addr()?);
    server.run(shutdown).await
}
