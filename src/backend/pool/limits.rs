//! The pool's side of min_pool_size and of the caps shared across pools: waiting for room
//! under a cap as a waiting client, filling the pool up to min_pool_size in the background,
//! and giving up idle connections when another pool under the same cap needs room.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{Pool, PoolSettings};
use crate::backend::caps::{Hold, Member};
use crate::backend::conn::ServerConn;
use crate::error::PoolError;

impl Pool {
    /// Wait for room under the pool's caps (closing idle connections of other pools), as a
    /// waiting client: counted in `waiting`, within `query_wait_timeout`.
    pub(super) async fn cap_wait(&self, settings: &PoolSettings) -> Result<Hold, PoolError> {
        if let Some(hold) = settings.limits.try_take() {
            return Ok(hold);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.stats.waits.fetch_add(1, Ordering::Relaxed);
        let limit = settings.timeouts.query_wait;
        let started = Instant::now();
        let deadline = (!limit.is_zero()).then(|| started + limit);
        let res = settings.limits.take(deadline).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.stats.record_wait(started.elapsed());
        if let Err(PoolError::WaitTimeout) = res {
            self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    /// Open server connections, one at a time, until the pool has `min_pool_size` (at most
    /// its size) or a cap is full, as PgBouncer's janitor: only while the pool has a client,
    /// or always when the database has a forced user.
    pub(super) fn fill(self: &Arc<Self>) {
        let s = self.settings.load();
        let want = s.limits.min.min(s.size);
        if want == 0
            || (!s.limits.min_without_clients && self.clients.load(Ordering::Relaxed) == 0)
            || self.have() >= want
            || self.filling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            while pool.have() < want {
                let settings = pool.settings.load_full();
                let Some(caps) = settings.limits.try_take() else {
                    break;
                };
                let generation = pool.generation.load(Ordering::Acquire);
                pool.connecting.fetch_add(1, Ordering::Relaxed);
                let res =
                    ServerConn::connect(&settings.login, settings.timeouts.server_connect).await;
                pool.connecting.fetch_sub(1, Ordering::Relaxed);
                match res {
                    Ok(conn) => {
                        let reg = pool.register(&conn, generation, caps);
                        tracing::debug!(database = %pool.key.database, user = %pool.key.user, "opened a server connection for min_pool_size");
                        pool.checkin_idle(conn, reg, Instant::now());
                    }
                    Err(e) => {
                        pool.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(database = %pool.key.database, "min_pool_size: server connection failed: {e}");
                        break;
                    }
                }
            }
            pool.filling.store(false, Ordering::Release);
        });
    }

    /// Server connections open or logging in.
    pub(super) fn have(&self) -> usize {
        self.servers.lock().unwrap_or_else(|e| e.into_inner()).len()
            + self.connecting.load(Ordering::Relaxed)
    }

    /// Make this pool's idle connections candidates for eviction under its caps.
    pub fn join_caps(self: &Arc<Self>) {
        let limits = self.settings.load().limits.clone();
        if !limits.uncapped() {
            let me: Arc<dyn Member> = self.clone();
            limits.join(Arc::downgrade(&me));
        }
    }
}

impl Member for Pool {
    fn oldest_idle(&self) -> Option<Instant> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.iter().map(|i| i.conn.idle_since).min()
    }

    fn evict_oldest(&self) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let Some(at) = (0..idle.len()).min_by_key(|&i| idle[i].conn.idle_since) else {
            return false;
        };
        let victim = idle.remove(at);
        drop(idle);
        self.close(victim.conn, victim.reg);
        true
    }
}
