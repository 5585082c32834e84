//! Pools of server connections per (database, user): a fair FIFO wait queue bounded by
//! `query_wait_timeout`, idle connections reused newest first, idle and lifetime limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::conn::{Login, Params, ServerConn};
use crate::config::{PoolMode, Timeouts};
use crate::error::{PoolError, ServerError};

/// Pause between attempts to reach a server that is not accepting connections.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// Errors worth retrying: the server is down, starting, in recovery or full.
fn transient(e: &ServerError) -> bool {
    match e {
        ServerError::Io(_) | ServerError::Closed | ServerError::ConnectTimeout => true,
        ServerError::Refused { code, .. } => {
            matches!(code.as_str(), "57P03" | "53300" | "57P01" | "57P02")
        }
        _ => false,
    }
}

/// Identity of a pool: the database name the client asked for and the client's user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Database name as the client asked for it.
    pub database: String,
    /// Client user name.
    pub user: String,
}

/// Counters of a pool, for logs and the admin view.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Server connections opened.
    pub opened: AtomicU64,
    /// Server connections closed (idle timeout, lifetime, broken, dirty).
    pub closed: AtomicU64,
    /// Checkouts that had to wait.
    pub waits: AtomicU64,
    /// Checkouts that timed out.
    pub wait_timeouts: AtomicU64,
}

/// A server connection lent to one client. Dropping it closes the connection and frees
/// its slot; `Pool::checkin` returns it instead.
#[derive(Debug)]
pub struct Checkout {
    /// The connection.
    pub conn: ServerConn,
    _permit: OwnedSemaphorePermit,
}

/// PgBouncer's pool settings beyond size and mode: the reserve pool, the check of idle
/// connections before reuse, and the order idle connections are reused in.
#[derive(Debug, Clone, Default)]
pub struct PoolExtras {
    /// reserve_pool_size: extra connections for clients that waited `reserve_timeout`.
    pub reserve: usize,
    /// reserve_pool_timeout.
    pub reserve_timeout: std::time::Duration,
    /// server_check_query (empty: only the cheap liveness check).
    pub check_query: String,
    /// server_check_delay: idle time after which a connection is checked before reuse.
    pub check_delay: std::time::Duration,
    /// server_round_robin: reuse the longest-idle connection (FIFO) instead of the newest.
    pub round_robin: bool,
}

/// One pool.
#[derive(Debug)]
pub struct Pool {
    /// Identity.
    pub key: PoolKey,
    /// How server connections log in.
    pub login: Login,
    /// Pool mode.
    pub mode: PoolMode,
    /// Maximum server connections.
    pub size: usize,
    /// Query run before a session-mode server is reused (empty: none).
    pub reset_query: String,
    timeouts: Timeouts,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<ServerConn>>,
    /// The parameters of the newest server login, and when it happened.
    welcome: Mutex<Option<(Params, Instant)>>,
    /// Counters.
    pub stats: PoolStats,
    extras: PoolExtras,
    reserve: Arc<Semaphore>,
}

impl Pool {
    /// A pool with no connections yet.
    pub fn new(
        key: PoolKey,
        login: Login,
        mode: PoolMode,
        size: usize,
        reset_query: String,
        timeouts: Timeouts,
    ) -> Pool {
        Pool {
            key,
            login,
            mode,
            size,
            reset_query,
            timeouts,
            slots: Arc::new(Semaphore::new(size)),
            idle: Mutex::new(Vec::new()),
            welcome: Mutex::new(None),
            stats: PoolStats::default(),
            extras: PoolExtras::default(),
            reserve: Arc::new(Semaphore::new(0)),
        }
    }

    /// Set the reserve pool, the idle check and the reuse order.
    pub fn with_extras(mut self, extras: PoolExtras) -> Pool {
        self.reserve = Arc::new(Semaphore::new(extras.reserve));
        self.extras = extras;
        self
    }

    /// Wait for a slot: the pool's own, or after `reserve_pool_timeout` of waiting a
    /// reserve one, as PgBouncer; both within `query_wait_timeout`.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, PoolError> {
        let main = self.slots.clone().acquire_owned();
        if self.extras.reserve == 0 {
            return main.await.map_err(|_| PoolError::Closed);
        }
        tokio::pin!(main);
        tokio::select! {
            p = &mut main => return p.map_err(|_| PoolError::Closed),
            _ = tokio::time::sleep(self.extras.reserve_timeout) => {}
        }
        let reserve = self.reserve.clone().acquire_owned();
        tokio::select! {
            p = main => p.map_err(|_| PoolError::Closed),
            p = reserve => {
                tracing::info!(database = %self.key.database, user = %self.key.user, "taking a connection from the reserve pool");
                p.map_err(|_| PoolError::Closed)
            }
        }
    }

    fn expired(&self, c: &ServerConn, now: Instant) -> bool {
        let life = self.timeouts.server_lifetime;
        !life.is_zero() && now.duration_since(c.created) >= life
    }

    /// Take a server connection, waiting in FIFO order for a free slot.
    pub async fn checkout(&self) -> Result<Checkout, PoolError> {
        self.checkout_from(false).await
    }

    /// Take a server connection that has just logged in, so Postgres has decided now
    /// whether the pool's user may connect (an idle connection was admitted long ago). The
    /// oldest idle connection is closed in its place, so the pool does not grow.
    pub async fn checkout_fresh(&self) -> Result<Checkout, PoolError> {
        self.checkout_from(true).await
    }

    async fn checkout_from(&self, fresh: bool) -> Result<Checkout, PoolError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.stats.waits.fetch_add(1, Ordering::Relaxed);
                let wait = self.slot();
                let limit = self.timeouts.query_wait;
                let res = if limit.is_zero() {
                    wait.await
                } else {
                    match tokio::time::timeout(limit, wait).await {
                        Ok(r) => r,
                        Err(_) => {
                            self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                            return Err(PoolError::WaitTimeout);
                        }
                    }
                };
                res?
            }
        };
        let now = Instant::now();
        if fresh {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if !idle.is_empty() {
                let oldest = idle.remove(0);
                drop(idle);
                self.stats.closed.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(oldest.terminate());
            }
        }
        loop {
            if fresh {
                break;
            }
            let candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if self.extras.round_robin && !idle.is_empty() {
                    Some(idle.remove(0))
                } else {
                    idle.pop()
                }
            };
            let Some(mut conn) = candidate else { break };
            if self.expired(&conn, now) || !conn.looks_alive() || !self.check(&mut conn, now).await
            {
                self.stats.closed.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(conn.terminate());
                continue;
            }
            return Ok(Checkout {
                conn,
                _permit: permit,
            });
        }
        let conn = self.connect_retrying().await?;
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        *self.welcome.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((conn.params.clone(), Instant::now()));
        Ok(Checkout {
            conn,
            _permit: permit,
        })
    }

    /// server_check_query on a connection idle for server_check_delay or longer: true if it
    /// may be reused.
    async fn check(&self, conn: &mut ServerConn, now: Instant) -> bool {
        let q = &self.extras.check_query;
        if q.is_empty() || now.duration_since(conn.idle_since) < self.extras.check_delay {
            return true;
        }
        let res = tokio::time::timeout(self.timeouts.server_connect, conn.run_quiet(q)).await;
        match res {
            Ok(Ok(b'I')) => true,
            other => {
                tracing::info!(database = %self.key.database, "server_check_query failed: {other:?}");
                false
            }
        }
    }

    /// Open a server connection. While the server is starting up, in recovery or refusing
    /// connections, keep trying (as PgBouncer does) until `query_wait_timeout` (or
    /// `server_connect_timeout` when that is unlimited); login errors fail at once.
    async fn connect_retrying(&self) -> Result<ServerConn, ServerError> {
        let patience = if self.timeouts.query_wait.is_zero() {
            self.timeouts.server_connect
        } else {
            self.timeouts.query_wait
        };
        let deadline = Instant::now() + patience;
        loop {
            let res = ServerConn::connect(&self.login, self.timeouts.server_connect).await;
            match res {
                Err(e) if transient(&e) && Instant::now() + RETRY_DELAY < deadline => {
                    tracing::debug!(database = %self.key.database, "server not ready, retrying: {e}");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                other => return other,
            }
        }
    }

    /// Return a connection whose last ReadyForQuery said `status`; anything not idle, or past
    /// its lifetime, is closed instead.
    pub fn checkin(&self, mut c: Checkout, status: u8) {
        let now = Instant::now();
        if status != b'I' || self.expired(&c.conn, now) || !c.conn.buf.is_empty() {
            self.stats.closed.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(c.conn.terminate());
            return;
        }
        c.conn.idle_since = now;
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c.conn);
    }

    /// The parameters of the newest server login, to greet clients with, while that login is
    /// younger than `login_recheck_interval`; after that a client login needs a new one.
    pub fn welcome(&self) -> Option<Params> {
        let welcome = self.welcome.lock().unwrap_or_else(|e| e.into_inner());
        match &*welcome {
            Some((params, at)) if at.elapsed() < self.timeouts.login_recheck => {
                Some(params.clone())
            }
            _ => None,
        }
    }

    /// Close idle connections past `server_idle_timeout` or `server_lifetime`.
    pub fn reap(&self) {
        let now = Instant::now();
        let idle_limit = self.timeouts.server_idle;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let before = idle.len();
        let (keep, drop): (Vec<_>, Vec<_>) = idle.drain(..).partition(|c| {
            !(self.expired(c, now)
                || (!idle_limit.is_zero() && now.duration_since(c.idle_since) >= idle_limit))
        });
        *idle = keep;
        if idle.len() != before {
            self.stats
                .closed
                .fetch_add((before - idle.len()) as u64, Ordering::Relaxed);
        }
        for c in drop {
            tokio::spawn(c.terminate());
        }
    }

    /// Idle server connections right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Server connections lent out right now.
    pub fn active_count(&self) -> usize {
        self.size - self.slots.available_permits() + self.extras.reserve
            - self.reserve.available_permits()
    }
}

/// All pools of the process, created on first use.
#[derive(Debug, Default)]
pub struct Pools {
    map: DashMap<PoolKey, Arc<Pool>>,
}

impl Pools {
    /// Find a pool or create it with `make`.
    pub fn get_or_create(&self, key: PoolKey, make: impl FnOnce(PoolKey) -> Pool) -> Arc<Pool> {
        if let Some(p) = self.map.get(&key) {
            return p.clone();
        }
        self.map
            .entry(key.clone())
            .or_insert_with(|| Arc::new(make(key)))
            .clone()
    }

    /// Run `reap` on every pool.
    pub fn reap_all(&self) {
        for p in self.map.iter() {
            p.reap();
        }
    }

    /// A snapshot of all pools.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map.iter().map(|p| p.clone()).collect()
    }
}
