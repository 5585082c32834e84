//! pgherald: a Postgres connection pooler that serves LISTEN/NOTIFY itself.
//!
//! Clients speak the Postgres wire protocol to pgherald; pgherald pools server connections
//! per (database, user) in session or transaction mode, PgBouncer-style. See the README for
//! configuration and semantics, and `shared/DESIGN.md` for the architecture.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod config;
pub mod error;
pub mod frontend;
pub mod live;
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

use crate::backend::cancel::CancelRegistry;
use crate::backend::pool::{PoolSettings, Pools};
use crate::config::Config;
pub use crate::error::Error;
use crate::frontend::registry::{Control, Registry};
use crate::live::{Live, Snapshot};

/// Shared state of one running pgherald.
#[derive(Debug)]
pub struct App {
    /// The running configuration (reloadable snapshot).
    pub live: Live,
    /// All pools.
    pub pools: Pools,
    /// Virtual cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Logged-in clients.
    pub registry: Arc<Registry>,
    /// Paused and disabled databases.
    pub pause: admin::pause::Pause,
    /// Stats averages of the last stats_period.
    pub averages: admin::show::Averages,
    /// Asks `Server::run` to stop (the console's SHUTDOWN).
    pub stop: watch::Sender<bool>,
    /// Where /metrics is served, once bound.
    pub metrics_addr: std::sync::Mutex<Option<SocketAddr>>,
    /// Secrets proven by client logins, for pass-through server logins.
    pub keyring: Arc<auth::passthrough::Keyring>,
    /// Idle connections of auth_query lookups.
    pub auth_conns: backend::auth_query::AuthConns,
    /// max_db_connections and max_user_connections, shared by the pools they cap.
    pub caps: backend::caps::Caps,
    /// The LISTEN/NOTIFY hub.
    pub hub: Arc<pubsub::Hub>,
    /// Upstream relays, one per database with local listeners.
    pub relays: Arc<pubsub::relay::Relays>,
    /// Shares notifications with other instances (`backplane`); None: this instance alone.
    pub backplane: Option<Arc<dyn pubsub::backplane::Backplane>>,
    /// Server-side names of named prepared statements (transaction pooling).
    pub prepared: backend::prepared::Registry,
    /// Clients logged in (counted against `max_client_conn`).
    pub clients: AtomicUsize,
    /// Connections still in their login phase (capped at `LOGIN_FACTOR × max_client_conn`).
    pub logins: AtomicUsize,
    /// Becomes true when shutdown starts.
    pub shutdown: watch::Receiver<bool>,
    /// Set before shutdown by SIGTERM: wait for every client to disconnect (PgBouncer's
    /// "super safe shutdown", for rolling restarts) instead of closing idle clients.
    pub wait_for_clients: std::sync::atomic::AtomicBool,
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
        Self::bind_from(config, live::Source::default()).await
    }

    /// `bind`, remembering where the configuration came from so that SIGHUP and RELOAD
    /// read it again.
    pub async fn bind_from(config: Config, source: live::Source) -> Result<Server, Error> {
        let snapshot = Snapshot::build(config)?;
        let addr = snapshot.config.listen_addr()?;
        let listener = if snapshot.config.so_reuseport {
            bind_reuseport(addr)?
        } else {
            TcpListener::bind(addr).await?
        };
        let (stop, shutdown) = watch::channel(false);
        let hub = pubsub::Hub::new(snapshot.config.listener_queue_limit);
        let relays = pubsub::relay::Relays::start(hub.clone(), snapshot.timeouts.server_connect);
        let backplane = open_backplane(&snapshot.config, &hub)?;
        let cancels = match &backplane {
            Some(bp) => pid_block(bp.as_ref()).await,
            None => CancelRegistry::new(),
        };
        if let Some(bp) = &backplane {
            bp.set_resolver(Arc::new(pubsub::backplane::xact::PostgresResolver::new(
                relays.clone(),
                snapshot.timeouts.server_connect,
            )));
            tokio::spawn(serve_forwarded_cancels(
                bp.forwarded_cancels(),
                cancels.clone(),
            ));
        }
        let live = Live::new(snapshot);
        *live.source.lock().unwrap_or_else(|e| e.into_inner()) = source;
        let app = Arc::new(App {
            hub,
            relays,
            backplane,
            live,
            pools: Pools::default(),
            cancels,
            registry: Default::default(),
            pause: Default::default(),
            averages: Default::default(),
            stop: stop.clone(),
            metrics_addr: Default::default(),
            keyring: auth::passthrough::Keyring::new(),
            auth_conns: Default::default(),
            caps: Default::default(),
            prepared: Default::default(),
            clients: AtomicUsize::new(0),
            logins: AtomicUsize::new(0),
            shutdown,
            wait_for_clients: Default::default(),
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
        let hup = tokio::spawn(hangup_loop(app.clone()));
        let metrics = match admin::metrics::start(app.clone()).await {
            Ok(m) => m,
            Err(e) => {
                reaper.abort();
                hup.abort();
                return Err(e.into());
            }
        };
        let mut internal = app.shutdown.clone();
        tokio::select! {
            _ = frontend::listener::accept_loop(listener, app.clone(), &mut shutdown) => {}
            _ = internal.wait_for(|s| *s) => {}
        }
        let _ = stop.send(true);
        if app.wait_for_clients.load(Ordering::Acquire) {
            tracing::info!(
                "shutting down: no new connections; waiting for every client to disconnect"
            );
            // Until the last client leaves, or SIGINT turns this into the shutdown below.
            while app.clients.load(Ordering::Acquire) > 0
                && app.wait_for_clients.load(Ordering::Acquire)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if app.clients.load(Ordering::Acquire) > 0 {
            app.registry.control_all(None, Control::CloseWhenIdle);
            let limit = app.live.get().timeouts.shutdown;
            tracing::info!("shutting down: waiting up to {limit:?} for clients");
            let deadline = tokio::time::Instant::now() + limit;
            while app.clients.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        reaper.abort();
        hup.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// A listening socket other processes may bind too (SO_REUSEPORT): the kernel spreads new
/// connections over them, and one that closes its socket gets no more.
fn bind_reuseport(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The backplane the configuration names, if any (connections are made when used).
fn open_backplane(
    config: &Config,
    hub: &Arc<pubsub::Hub>,
) -> Result<Option<Arc<dyn pubsub::backplane::Backplane>>, Error> {
    use pubsub::backplane::{open, BackplaneSettings};
    let invalid =
        |key: String, problem: String| Error::Config(config::ConfigError::Invalid { key, problem });
    let Some(settings) = BackplaneSettings::from_config(config).map_err(|(k, p)| invalid(k, p))?
    else {
        return Ok(None);
    };
    let url = settings.url.clone();
    let bp = open(settings, hub.clone()).map_err(|e| invalid("backplane".into(), e.to_string()))?;
    tracing::info!(backplane = %redact(&url), "sharing notifications with other instances");
    Ok(Some(bp))
}

/// Virtual cancel keys whose pids come from this instance's own block, so that a pid names
/// one client across the instances sharing the backplane.
async fn pid_block(bp: &dyn pubsub::backplane::Backplane) -> Arc<CancelRegistry> {
    let n = match bp.instance_number().await {
        Some(n) => n,
        None => {
            let n = rand::random::<u32>();
            tracing::warn!("backplane unreachable at start: pid block chosen at random; pids may repeat on another instance");
            n
        }
    };
    let (lo, hi) = pubsub::backplane::pid_range(n);
    CancelRegistry::with_pids(lo, hi)
}

/// Cancel this instance's clients' queries for CancelRequests other instances received.
async fn serve_forwarded_cancels(
    mut forwarded: tokio::sync::mpsc::UnboundedReceiver<(i32, i32)>,
    cancels: Arc<CancelRegistry>,
) {
    while let Some((pid, secret)) = forwarded.recv().await {
        if cancels.owns(pid) {
            cancels.cancel(pid, secret).await;
        }
    }
}

/// A URL without its password, for logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl App {
    /// Read the configuration and auth file again and apply them: pools take their new
    /// sizes, timeouts and logins; new clients see new databases and users. On error the
    /// running configuration stays and the error names the key.
    pub fn reload(&self) -> Result<(), config::ConfigError> {
        let snap = match self.live.rebuild() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("reload failed, keeping the running configuration: {e}");
                return Err(e);
            }
        };
        for pool in self.pools.all() {
            if let Some(settings) = pool_settings(
                &snap,
                &pool.key.database,
                &pool.key.user,
                &self.keyring,
                &self.caps,
            ) {
                pool.reconfigure(settings);
                pool.join_caps();
            }
        }
        tracing::info!("configuration reloaded");
        Ok(())
    }
}

/// The settings of the pool for (`database`, `user`) under `snap`, or None when the database
/// is no longer configured.
pub fn pool_settings(
    snap: &Snapshot,
    database: &str,
    user: &str,
    keyring: &Arc<auth::passthrough::Keyring>,
    caps: &backend::caps::Caps,
) -> Option<PoolSettings> {
    let target = snap.config.target(database)?;
    let server_user = target.user.clone().unwrap_or_else(|| user.to_string());
    let password = target
        .password
        .clone()
        .or_else(|| crate::auth::exchange::plain_password(&snap.users, &server_user));
    let limits =
        frontend::pool_settings::limits(&snap.config, &target, database, &server_user, caps);
    Some(PoolSettings {
        limits,
        login: backend::conn::Login {
            host: target.host.clone(),
            port: target.port,
            database: target.dbname.clone(),
            user: server_user,
            passthrough: (password.is_none() && target.user.is_none()).then(|| keyring.clone()),
            params: target.startup.clone(),
            connect_query: target.connect_query.clone(),
            password,
            tls: snap.server_tls.get(&target.tls).ok()?,
        },
        size: frontend::pool_settings::shape(&snap.config, &target, database, user).1,
        reset_query: snap.config.server_reset_query.clone(),
        timeouts: snap.timeouts.clone(),
    })
}

async fn hangup_loop(app: Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the configuration");
        let _ = app.reload();
    }
}

async fn reap_loop(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        app.pools.reap_all();
        let gates = app.pause.gates();
        app.pools.fill_all(|db| !gates.is_paused(db));
        app.averages.tick(&app);
    }
}

/// Bind and serve until `shutdown` becomes true; SIGHUP and RELOAD re-read `source`.
pub async fn run(
    config: Config,
    source: live::Source,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let server = Server::bind_from(config, source).await?;
    tracing::info!("listening on {}", server.local_addr()?);
    server.run(shutdown).await
}
