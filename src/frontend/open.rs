//! Opening a session: the login phase (startup, client_login_timeout, routing to the admin
//! console, DISABLE, the database's target, authentication, the client limit), then the
//! pool, the relay and the client registry; then the session loop takes over.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::backend::conn::{get_param, Login, Params};
use crate::backend::pool::{Pool, PoolKey};
use crate::backend::prepared::ClientStatements;
use crate::backend::stats::SessionCounts;
use crate::config::Target;
use crate::frontend::admission::{within_login_timeout, ClientSlot, LoginSlot, GOODBYE_TIMEOUT};
use crate::frontend::channels::Channels;
use crate::frontend::client::ClientIo;
use crate::frontend::extended::Extended;
use crate::frontend::hold::Hold;
use crate::frontend::login;
use crate::frontend::registry::NewClient;
use crate::frontend::session::Session;
use crate::frontend::timeouts::ClientTimeouts;
use crate::live::Snapshot;
use crate::pubsub::relay::RelaySettings;
use crate::App;

/// Counts a client in its pool's `clients` for as long as it lives.
struct InPool(Arc<Pool>);

impl Drop for InPool {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a finished login phase hands to the session.
struct LoggedIn {
    start: login::Startup,
    /// The database's target; None for the admin console.
    target: Option<Target>,
    slot: ClientSlot,
    snap: Arc<Snapshot>,
}

/// The login phase: startup packet (and any SSL negotiation), admission checks and
/// authentication. `started` turns true once the client speaks the protocol (it sent its
/// StartupMessage), so a timeout can be reported to it. `None`: the connection is done.
async fn log_in(app: &Arc<App>, client: &mut ClientIo, started: &mut bool) -> Option<LoggedIn> {
    let start = match login::startup(client, app).await {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!("startup failed: {e}");
            return None;
        }
    };
    *started = true;
    let snap = app.live.get();
    if *app.shutdown.borrow() {
        client
            .fatal("57P03", "the database system is shutting down")
            .await;
        return None;
    }
    let target = if crate::admin::is_console(&start.database) {
        None
    } else if app.pause.is_disabled(&start.database) {
        let msg = format!("database \"{}\" is disabled", start.database);
        client.fatal("08P01", &msg).await;
        return None;
    } else if let Some(t) = snap.config.target(&start.database) {
        Some(t)
    } else {
        client
            .fatal(
                "3D000",
                &format!("database \"{}\" does not exist", start.database),
            )
            .await;
        return None;
    };
    if let Err(e) =
        crate::auth::exchange::authenticate(client, app, &snap, &start, target.as_ref()).await
    {
        tracing::info!(user = %start.user, "authentication failed: {e}");
        if target.is_some() {
            let key = PoolKey {
                database: start.database.clone(),
                user: start.user.clone(),
            };
            crate::admin::metrics::login_failed(app, &key);
        }
        return None;
    }
    // Only a logged-in client takes a max_client_conn slot: logins in progress are
    // bounded by their own cap and client_login_timeout.
    let Some(slot) = ClientSlot::take(app) else {
        client
            .fatal("53300", "sorry, too many clients already")
            .await;
        return None;
    };
    Some(LoggedIn {
        start,
        target,
        slot,
        snap,
    })
}

/// Serve one accepted client connection to its end. `login_slot` counts it among the
/// connections logging in until authentication ends.
pub async fn serve(app: Arc<App>, stream: TcpStream, login_slot: LoginSlot) {
    let mut client = ClientIo::new(stream);
    let mut started = false;
    let logged_in = within_login_timeout(&app, log_in(&app, &mut client, &mut started)).await;
    drop(login_slot);
    let LoggedIn {
        start,
        target,
        slot: _slot,
        snap,
    } = match logged_in {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(timeout) => {
            tracing::info!("closing because: {timeout}");
            if started {
                // PgBouncer's report; before the StartupMessage (or inside a TLS
                // handshake) the connection is closed without a word, as Postgres does.
                let reason = timeout.to_string();
                let _ = tokio::time::timeout(GOODBYE_TIMEOUT, client.fatal("08P01", &reason)).await;
            }
            return;
        }
    };
    let Some(target) = target else {
        crate::admin::console::serve(app, client, start, snap).await;
        return;
    };
    tracing::debug!(user = %start.user, database = %start.database, "logged in");
    if let Err(e) = snap.server_tls.get(&target.tls) {
        tracing::warn!("server TLS settings unusable: {e}");
        client
            .fatal("08006", &format!("server connection failed: {e}"))
            .await;
        return;
    }
    let Some(settings) =
        crate::pool_settings(&snap, &start.database, &start.user, &app.keyring, &app.caps)
    else {
        return;
    };
    let key = PoolKey {
        database: start.database.clone(),
        user: start.user.clone(),
    };
    let (mode, _, extras) =
        super::pool_settings::shape(&snap.config, &target, &start.database, &start.user);
    let pool = app.pools.get_or_create(key, |key| {
        Pool::new(key, mode, settings).with_extras(extras)
    });
    pool.stats.logins.fetch_add(1, Ordering::Relaxed);
    pool.clients.fetch_add(1, Ordering::Relaxed);
    let _in_pool = InPool(pool.clone());
    // The hub and the relay are keyed by the upstream database, so aliases share them.
    let hub_key = target.upstream_key();
    let relay_login = target.relay_user.clone().map(|user| Login {
        password: target
            .relay_password
            .clone()
            .or_else(|| crate::auth::exchange::plain_password(&snap.users, &user)),
        user,
        ..pool.login()
    });
    let configured = relay_login.is_some();
    let registered = app.relays.register(
        &hub_key,
        &start.database,
        RelaySettings {
            login: relay_login.unwrap_or_else(|| pool.login()),
            relay: target.relay && configured,
            forward: target.forward_notify && configured,
        },
    );
    if registered && !configured && (target.relay || target.forward_notify) {
        tracing::warn!(
            database = %start.database,
            "relay off: no relay_user and no fixed user for this database; notifications raised inside Postgres are not relayed"
        );
    }
    let cancel = app.cancels.register();
    let app_name = get_param(&start.settings, "application_name");
    let (reg, control) = app.registry.register(NewClient {
        id: cancel.pid,
        user: &start.user,
        database: &start.database,
        addr: client.peer,
        local: client.local,
        application_name: app_name.unwrap_or_default(),
    });
    let closing = *app.shutdown.borrow();
    let forward = app.relays.forwards(&hub_key);
    let mut ch = Channels::new(
        app.hub.clone(),
        Some(app.relays.clone()),
        forward,
        hub_key,
        cancel.pid,
    );
    ch.set_backplane(app.backplane.clone());
    let limits = ClientTimeouts::for_user(&snap.config, &start.user);
    let mut session = Session {
        cancel,
        control,
        reg,
        cfg: snap,
        counts: SessionCounts::default(),
        busy_since: None,
        xact_since: None,
        limits,
        last_client: std::time::Instant::now(),
        query_since: None,
        app,
        pool,
        client,
        server: None,
        wants: Params::new(),
        server_encoding: None,
        plan: VecDeque::new(),
        batch_open: false,
        batch_forwarded: false,
        batch_failed: false,
        local_error: false,
        local_executed: false,
        status: b'I',
        live: b'I',
        implicit: false,
        hold: Hold::default(),
        client_pass: 0,
        server_pass: 0,
        writing: false,
        server_fatal: false,
        closing,
        ch,
        ext: Extended::default(),
        stmts: ClientStatements::default(),
        births: Default::default(),
        deferred: false,
        owe_begin: false,
        flush_follows: false,
        ready_after_relay: None,
        touched: false,
        pinned: false,
        server_listen_hint: false,
    };
    let exit = match session.greet(start.settings).await {
        Ok(()) => session.run().await,
        Err(e) => e,
    };
    session.finish(exit).await;
}
