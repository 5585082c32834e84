//! Pools of server connections per (database, user): a fair FIFO wait queue bounded by
//! `query_wait_timeout`, idle connections reused newest first, idle and lifetime limits.
//! Size, timeouts, login and reset query come from a settings snapshot that a reload
//! replaces; connections opened under older settings are closed when next released.
//! `min_pool_size` is kept by [`Pools::fill_all`]; connections count against the shared
//! caps of `super::caps` from login to close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::caps::{Hold, Limits};
use super::conn::{Login, Params, ServerConn};
use crate::config::{PoolMode, Timeouts};
use crate::error::{PoolError, ServerError};

pub use super::stats::{PoolStats, WAIT_BUCKETS};

mod limits;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// Database name as the client asked for it.
    pub database: String,
    /// Client user name.
    pub user: String,
}

/// The reloadable part of a pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// How server connections log in.
    pub login: Login,
    /// Maximum server connections.
    pub size: usize,
    /// Query run before a session-mode server is reused (empty: none).
    pub reset_query: String,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// min_pool_size and the shared caps (max_db_connections, max_user_connections).
    pub limits: Limits,
}

/// What SHOW SERVERS shows of one server connection.
#[derive(Debug)]
pub struct ServerInfo {
    /// Backend pid.
    pub pid: i32,
    /// Server address.
    pub addr: SocketAddr,
    /// Local address of the connection.
    pub local: Option<SocketAddr>,
    /// When it was opened.
    pub connect_time: SystemTime,
    /// Lent to a client right now.
    pub active: AtomicBool,
    /// Settings generation it was opened under.
    generation: u64,
}

/// Removes a server from its pool's list when the connection goes away.
#[derive(Debug)]
struct Registered {
    list: Arc<Mutex<HashMap<i32, Arc<ServerInfo>>>>,
    info: Arc<ServerInfo>,
    caps: Hold,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.info.pid);
    }
}

/// Counts a connection lent out for as long as the lender holds it.
#[derive(Debug)]
struct Lent(Arc<AtomicUsize>);

impl Drop for Lent {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A server connection lent to one client. Dropping it closes the connection and frees
/// its slot; `Pool::checkin` returns it instead.
#[derive(Debug)]
pub struct Checkout {
    /// The connection.
    pub conn: ServerConn,
    reg: Registered,
    _lent: Lent,
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

#[derive(Debug)]
struct Idle {
    conn: ServerConn,
    reg: Registered,
}

/// One pool.
#[derive(Debug)]
pub struct Pool {
    /// Identity.
    pub key: PoolKey,
    /// Pool mode (fixed for the pool's life).
    pub mode: PoolMode,
    settings: ArcSwap<PoolSettings>,
    generation: AtomicU64,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// The parameters of the newest server login, and when it happened.
    welcome: Mutex<Option<(Params, Instant)>>,
    servers: Arc<Mutex<HashMap<i32, Arc<ServerInfo>>>>,
    lent: Arc<AtomicUsize>,
    /// Server connections logging in right now.
    pub connecting: AtomicUsize,
    /// Clients of this pool waiting for a server right now.
    pub waiting: AtomicUsize,
    /// Clients logged in to this pool right now.
    pub clients: AtomicUsize,
    /// Counters.
    pub stats: PoolStats,
    extras: PoolExtras,
    reserve: Arc<Semaphore>,
    /// A task is opening connections for min_pool_size.
    filling: AtomicBool,
}

impl Pool {
    /// A pool with no connections yet.
    pub fn new(key: PoolKey, mode: PoolMode, settings: PoolSettings) -> Pool {
        Pool {
            key,
            mode,
            slots: Arc::new(Semaphore::new(settings.size)),
            settings: ArcSwap::from_pointee(settings),
            generation: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            welcome: Mutex::new(None),
            servers: Default::default(),
            lent: Default::default(),
            connecting: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            clients: AtomicUsize::new(0),
            stats: PoolStats::default(),
            extras: PoolExtras::default(),
            reserve: Arc::new(Semaphore::new(0)),
            filling: AtomicBool::new(false),
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

    /// The current settings.
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// How server connections log in (current settings).
    pub fn login(&self) -> Login {
        self.settings.load().login.clone()
    }

    /// Maximum server connections (current settings).
    pub fn size(&self) -> usize {
        self.settings.load().size
    }

    /// Apply reloaded settings: the pool grows or shrinks, a changed login makes every
    /// connection close when next released (as RECONNECT does).
    pub fn reconfigure(&self, next: PoolSettings) {
        let old = self.settings.load_full();
        let relogin = old.login != next.login;
        if next.size > old.size {
            self.slots.add_permits(next.size - old.size);
        } else if next.size < old.size {
            let mut owed = old.size - next.size;
            owed -= self.slots.forget_permits(owed);
            if owed > 0 {
                let slots = self.slots.clone();
                tokio::spawn(async move {
                    if let Ok(p) = slots.acquire_many_owned(owed as u32).await {
                        p.forget();
                    }
                });
            }
        }
        self.settings.store(Arc::new(next));
        if relogin {
            self.reconnect();
        }
    }

    /// Close idle server connections now and the lent ones when they come back.
    pub fn reconnect(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let drained: Vec<Idle> = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        self.close_all(drained);
    }

    /// Close idle server connections (PAUSE, KILL).
    pub fn close_idle(&self) {
        let drained: Vec<Idle> = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        self.close_all(drained);
    }

    fn close_all(&self, list: Vec<Idle>) {
        for i in list {
            self.close(i.conn, i.reg);
        }
    }

    /// Close a server connection. One counted against a cap keeps its place until Postgres
    /// has let it go, so Postgres never sees more than the cap.
    fn close(&self, conn: ServerConn, reg: Registered) {
        self.stats.closed.fetch_add(1, Ordering::Relaxed);
        if reg.caps.is_empty() {
            drop(reg);
            tokio::spawn(conn.terminate());
        } else {
            tokio::spawn(async move {
                conn.terminate_and_wait().await;
                drop(reg);
            });
        }
    }

    /// Server connections opened before the last RECONNECT or login change still open.
    pub fn stale_servers(&self) -> usize {
        let now = self.generation.load(Ordering::Acquire);
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.generation < now)
            .count()
    }

    fn expired(&self, c: &ServerConn, timeouts: &Timeouts, now: Instant) -> bool {
        let life = timeouts.server_lifetime;
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
        let settings = self.settings.load_full();
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.waiting.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let res = self.wait_slot(&settings.timeouts).await;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                self.stats.record_wait(started.elapsed());
                res?
            }
        };
        let generation = self.generation.load(Ordering::Acquire);
        let now = Instant::now();
        if fresh {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if !idle.is_empty() {
                let oldest = idle.remove(0);
                drop(idle);
                self.close(oldest.conn, oldest.reg);
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
            let Some(mut idle) = candidate else { break };
            if self.expired(&idle.conn, &settings.timeouts, now)
                || idle.reg.info.generation < generation
                || !idle.conn.looks_alive()
                || !self.check(&mut idle.conn, now).await
            {
                self.close(idle.conn, idle.reg);
                continue;
            }
            return Ok(self.lend(idle.conn, idle.reg, permit));
        }
        let caps = if settings.limits.uncapped() {
            Hold::default()
        } else {
            self.cap_wait(&settings).await?
        };
        self.connecting.fetch_add(1, Ordering::Relaxed);
        let res = self.connect_retrying(&settings).await;
        self.connecting.fetch_sub(1, Ordering::Relaxed);
        let conn = match res {
            Ok(c) => c,
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        let reg = self.register(&conn, generation, caps);
        Ok(self.lend(conn, reg, permit))
    }

    /// Count a new server connection in.
    fn register(&self, conn: &ServerConn, generation: u64, caps: Hold) -> Registered {
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        *self.welcome.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((conn.params.clone(), Instant::now()));
        let info = Arc::new(ServerInfo {
            pid: conn.cancel.pid,
            addr: conn.cancel.addr,
            local: conn.local,
            connect_time: SystemTime::now(),
            active: AtomicBool::new(false),
            generation,
        });
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.pid, info.clone());
        Registered {
            list: self.servers.clone(),
            info,
            caps,
        }
    }

    async fn wait_slot(&self, timeouts: &Timeouts) -> Result<OwnedSemaphorePermit, PoolError> {
        self.stats.waits.fetch_add(1, Ordering::Relaxed);
        let wait = self.slot();
        let limit = timeouts.query_wait;
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
        res
    }

    fn lend(&self, conn: ServerConn, reg: Registered, permit: OwnedSemaphorePermit) -> Checkout {
        self.lent.fetch_add(1, Ordering::Relaxed);
        reg.info.active.store(true, Ordering::Relaxed);
        Checkout {
            conn,
            reg,
            _lent: Lent(self.lent.clone()),
            _permit: permit,
        }
    }

    /// server_check_query on a connection idle for server_check_delay or longer: true if it
    /// may be reused.
    async fn check(&self, conn: &mut ServerConn, now: Instant) -> bool {
        let q = &self.extras.check_query;
        if q.is_empty() || now.duration_since(conn.idle_since) < self.extras.check_delay {
            return true;
        }
        let limit = self.settings.load().timeouts.server_connect;
        let res = tokio::time::timeout(limit, conn.run_quiet(q)).await;
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
    async fn connect_retrying(&self, s: &PoolSettings) -> Result<ServerConn, ServerError> {
        let patience = if s.timeouts.query_wait.is_zero() {
            s.timeouts.server_connect
        } else {
            s.timeouts.query_wait
        };
        let deadline = Instant::now() + patience;
        loop {
            let res = ServerConn::connect(&s.login, s.timeouts.server_connect).await;
            match res {
                Err(e) if transient(&e) && Instant::now() + RETRY_DELAY < deadline => {
                    tracing::debug!(database = %self.key.database, "server not ready, retrying: {e}");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                other => return other,
            }
        }
    }

    /// Return a connection whose last ReadyForQuery said `status`; anything not idle, past
    /// its lifetime, or opened under older settings is closed instead.
    pub fn checkin(&self, c: Checkout, status: u8) {
        let now = Instant::now();
        c.reg.info.active.store(false, Ordering::Relaxed);
        let settings = self.settings.load();
        if status != b'I'
            || self.expired(&c.conn, &settings.timeouts, now)
            || !c.conn.buf.is_empty()
            || c.reg.info.generation < self.generation.load(Ordering::Acquire)
        {
            self.close(c.conn, c.reg);
            return;
        }
        self.checkin_idle(c.conn, c.reg, now);
    }

    fn checkin_idle(&self, mut conn: ServerConn, reg: Registered, now: Instant) {
        conn.idle_since = now;
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Idle { conn, reg });
    }

    /// The parameters of the newest server login, to greet clients with, while that login is
    /// younger than `login_recheck_interval`; after that a client login needs a new one.
    pub fn welcome(&self) -> Option<Params> {
        let welcome = self.welcome.lock().unwrap_or_else(|e| e.into_inner());
        match &*welcome {
            Some((params, at)) if at.elapsed() < self.settings.load().timeouts.login_recheck => {
                Some(params.clone())
            }
            _ => None,
        }
    }

    /// Close idle connections past `server_idle_timeout` (unless the pool is down to
    /// min_pool_size) or `server_lifetime`.
    pub fn reap(&self) {
        let now = Instant::now();
        let settings = self.settings.load_full();
        let idle_limit = settings.timeouts.server_idle;
        let mut spare = match settings.limits.min {
            0 => usize::MAX,
            min => self.have().saturating_sub(min),
        };
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let (keep, drop): (Vec<_>, Vec<_>) = idle.drain(..).partition(|i| {
            if self.expired(&i.conn, &settings.timeouts, now) {
                return false;
            }
            let idled =
                !idle_limit.is_zero() && now.duration_since(i.conn.idle_since) >= idle_limit;
            if idled && spare > 0 {
                spare -= 1;
                return false;
            }
            true
        });
        *idle = keep;
        drop_idle(self, drop);
    }

    /// Idle server connections right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Server connections lent out right now.
    pub fn active_count(&self) -> usize {
        self.lent.load(Ordering::Relaxed)
    }

    /// The pool's server connections, for SHOW SERVERS.
    pub fn servers(&self) -> Vec<Arc<ServerInfo>> {
        let mut v: Vec<_> = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|s| s.pid);
        v
    }
}

fn drop_idle(pool: &Pool, list: Vec<Idle>) {
    if !list.is_empty() {
        pool.close_all(list);
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
        let mut made = false;
        let pool = self
            .map
            .entry(key.clone())
            .or_insert_with(|| {
                made = true;
                Arc::new(make(key))
            })
            .clone();
        if made {
            pool.join_caps();
        }
        pool
    }

    /// Run `reap` on every pool.
    pub fn reap_all(&self) {
        for p in self.map.iter() {
            p.reap();
        }
    }

    /// Open connections for min_pool_size in the pools of databases `open` allows.
    pub fn fill_all(&self, open: impl Fn(&str) -> bool) {
        let pools: Vec<Arc<Pool>> = self.map.iter().map(|p| p.clone()).collect();
        for p in pools {
            if open(&p.key.database) {
                p.fill();
            }
        }
    }

    /// A snapshot of all pools, ordered by (database, user).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<Arc<Pool>> = self.map.iter().map(|p| p.clone()).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The pools of one database.
    pub fn of_database(&self, database: &str) -> Vec<Arc<Pool>> {
        self.all()
            .into_iter()
            .filter(|p| p.key.database == database)
            .collect()
    }
}
