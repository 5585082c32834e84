//! Opening a session: the client limit, routing to the admin console, DISABLE, the
//! database's target, authentication, the pool and the client registry; then the session
//! loop takes over.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::backend::conn::{get_param, Params};
use crate::backend::pool::{Pool, PoolKey};
use crate::backend::prepared::ClientStatements;
use crate::backend::stats::SessionCounts;
use crate::frontend::channels::Channels;
use crate::frontend::client::ClientIo;
use crate::frontend::extended::Extended;
use crate::frontend::hold::Hold;
use crate::frontend::login;
use crate::frontend::registry::NewClient;
use crate::frontend::session::Session;
use crate::pubsub::relay::RelaySettings;
use crate::App;

/// Counts a client against `max_client_conn` for as long as it lives.
pub(crate) struct ClientSlot(Arc<App>);

impl ClientSlot {
    fn take(app: &Arc<App>, max: usize) -> Option<ClientSlot> {
        app.clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientSlot(app.clone()))
    }
}

/// Counts a client in its pool's `clients` for as long as it lives.
struct InPool(Arc<Pool>);

impl Drop for InPool {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serve one accepted client connection to its end.
pub async fn serve(app: Arc<App>, stream: TcpStream) {
    let mut client = ClientIo::new(stream);
    let start = match login::startup(&mut client, &app).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!("startup failed: {e}");
            return;
        }
    };
    let snap = app.live.get();
    let Some(_slot) = ClientSlot::take(&app, snap.config.max_client_conn) else {
        client
            .fatal("53300", "sorry, too many clients already")
            .await;
        return;
    };
    if *app.shutdown.borrow() {
        client
            .fatal("57P03", "the database system is shutting down")
            .await;
        return;
    }
    if crate::admin::is_console(&start.database) {
        crate::admin::console::serve(app, client, start, snap).await;
        return;
    }
    if app.pause.is_disabled(&start.database) {
        let msg = format!("database \"{}\" is disabled", start.database);
        client.fatal("08P01", &msg).await;
        return;
    }
    let Some(target) = snap.config.target(&start.database) else {
        client
            .fatal(
                "3D000",
                &format!("database \"{}\" does not exist", start.database),
            )
            .await;
        return;
    };
    let key = PoolKey {
        database: start.database.clone(),
        user: start.user.clone(),
    };
    if let Err(e) = crate::auth::exchange::authenticate(&mut client, &snap, &start.user).await {
        tracing::info!(user = %start.user, "authentication failed: {e}");
        crate::admin::metrics::login_failed(&app, &key);
        return;
    }
    tracing::debug!(user = %start.user, database = %start.database, "logged in");
    let Some(settings) = crate::pool_settings(&snap, &start.database, &start.user) else {
        return;
    };
    let pool = app
        .pools
        .get_or_create(key, |key| Pool::new(key, target.pool_mode, settings));
    pool.stats.logins.fetch_add(1, Ordering::Relaxed);
    pool.clients.fetch_add(1, Ordering::Relaxed);
    let _in_pool = InPool(pool.clone());
    app.relays.register(
        &start.database,
        RelaySettings {
            login: pool.login(),
            relay: target.relay,
            forward: target.forward_notify,
        },
    );
    let cancel = app.cancels.register();
    let app_name = get_param(&start.settings, "application_name");
    let (reg, control) = app.registry.register(NewClient {
        id: cancel.pid,
        user: &start.user,
        database: &start.database,
        addr: client.rd.peer_addr().ok(),
        local: client.rd.local_addr().ok(),
        application_name: app_name.unwrap_or_default(),
    });
    let closing = *app.shutdown.borrow();
    let forward = app.relays.forwards(&start.database);
    let ch = Channels::new(
        app.hub.clone(),
        Some(app.relays.clone()),
        forward,
        start.database.clone(),
        cancel.pid,
    );
    let mut session = Session {
        cancel,
        control,
        reg,
        cfg: snap,
        counts: SessionCounts::default(),
        busy_since: None,
        xact_since: None,
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
        deferred: false,
        owe_begin: false,
        flush_follows: false,
        ready_after_relay: None,
    };
    let exit = match session.greet(start.settings).await {
        Ok(()) => session.run().await,
        Err(e) => e,
    };
    session.finish(exit).await;
}
