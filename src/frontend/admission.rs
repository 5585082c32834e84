//! Who may hold a connection: connections still logging in (capped separately, so stalled
//! logins cannot lock users out), logged-in clients (`max_client_conn`), and the
//! `client_login_timeout` that bounds the whole login phase.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::App;

/// Connections that have not finished logging in may number this many times
/// `max_client_conn` (Postgres likewise lets twice its backend slots exist as children,
/// so connections still authenticating do not take the slots of logged-in ones).
pub const LOGIN_FACTOR: usize = 2;

/// Counts a connection that is still logging in; dropped when its login phase ends.
#[derive(Debug)]
pub struct LoginSlot(Arc<App>);

impl LoginSlot {
    /// Take a login slot, or None when `LOGIN_FACTOR × max_client_conn` connections are
    /// logging in already.
    pub fn take(app: &Arc<App>) -> Option<LoginSlot> {
        let max = app
            .live
            .get()
            .config
            .max_client_conn
            .saturating_mul(LOGIN_FACTOR);
        take(&app.logins, max).then(|| LoginSlot(app.clone()))
    }
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        self.0.logins.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a logged-in client against `max_client_conn` for as long as it lives.
#[derive(Debug)]
pub struct ClientSlot(Arc<App>);

impl ClientSlot {
    /// Take a client slot, or None when `max_client_conn` clients are logged in.
    pub fn take(app: &Arc<App>) -> Option<ClientSlot> {
        let max = app.live.get().config.max_client_conn;
        take(&app.clients, max).then(|| ClientSlot(app.clone()))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

fn take(counter: &std::sync::atomic::AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// The login phase ran out of `client_login_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("client_login_timeout")]
pub struct LoginTimeout;

/// Run the login phase `login` within `client_login_timeout` (no limit when zero).
pub async fn within_login_timeout<T>(
    app: &App,
    login: impl Future<Output = T>,
) -> Result<T, LoginTimeout> {
    let limit = app.live.get().timeouts.client_login;
    if limit.is_zero() {
        return Ok(login.await);
    }
    tokio::time::timeout(limit, login)
        .await
        .map_err(|_| LoginTimeout)
}

/// How long pgherald tries to tell a timed-out client why it is closed.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
