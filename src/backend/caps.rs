//! Caps shared by several pools, as PgBouncer's `max_db_connections` (server connections of
//! one database, whatever the user) and `max_user_connections` (server connections of one
//! user, whatever the database). A cap is a semaphore whose permits travel with each server
//! connection from its login to its close, idle time included. A client that needs a new
//! connection while a cap is full first closes the most idle connection of another pool under
//! that cap (PgBouncer's eviction), then waits in FIFO order within `query_wait_timeout`.
//! A cap of 0 means none: pools under no cap do no extra work.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::PoolError;

/// How often a client waiting for a full cap looks again for an idle connection to close.
const EVICT_RETRY: Duration = Duration::from_millis(100);

/// A pool as a cap sees it: something whose idle connections can be closed to make room.
pub trait Member: Send + Sync + std::fmt::Debug {
    /// Since when the pool's most idle connection has been idle, if it has one.
    fn oldest_idle(&self) -> Option<Instant>;
    /// Close the pool's most idle connection; false if it had none.
    fn evict_oldest(&self) -> bool;
}

/// One cap: a limit on the server connections of a set of pools.
#[derive(Debug)]
pub struct Cap {
    /// What it caps, for logs (`database app`, `user batch`).
    pub name: String,
    sem: Arc<Semaphore>,
    limit: Mutex<usize>,
    members: Mutex<Vec<Weak<dyn Member>>>,
}

impl Cap {
    fn new(name: String, limit: usize) -> Cap {
        Cap {
            name,
            sem: Arc::new(Semaphore::new(limit)),
            limit: Mutex::new(limit),
            members: Mutex::new(Vec::new()),
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        *self.limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Server connections counted against the cap right now (closing ones included until
    /// Postgres has let them go).
    pub fn used(&self) -> usize {
        self.limit().saturating_sub(self.sem.available_permits())
    }

    /// Apply a reloaded limit. Lowering it closes nothing: new connections wait until
    /// enough of the old ones have closed.
    fn resize(&self, next: usize) {
        let mut limit = self.limit.lock().unwrap_or_else(|e| e.into_inner());
        if next > *limit {
            self.sem.add_permits(next - *limit);
        } else if next < *limit {
            let mut owed = *limit - next;
            owed -= self.sem.forget_permits(owed);
            if owed > 0 {
                let sem = self.sem.clone();
                tokio::spawn(async move {
                    if let Ok(p) = sem.acquire_many_owned(owed as u32).await {
                        p.forget();
                    }
                });
            }
        }
        *limit = next;
    }

    /// Count `m`'s connections under this cap as candidates for eviction.
    pub fn join(&self, m: Weak<dyn Member>) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|w| w.strong_count() > 0);
        if !members.iter().any(|w| Weak::ptr_eq(w, &m)) {
            members.push(m);
        }
    }

    /// Close the most idle connection among the member pools; false if none is idle.
    fn evict(&self) -> bool {
        let members: Vec<Arc<dyn Member>> = self
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let oldest = members
            .iter()
            .filter_map(|m| m.oldest_idle().map(|t| (t, m)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, m)) => {
                tracing::debug!(cap = %self.name, "closing an idle server connection to make room");
                m.evict_oldest()
            }
            None => false,
        }
    }

    /// A permit now, or after evicting idle connections and waiting until `deadline`
    /// (None: no deadline).
    async fn take(&self, deadline: Option<Instant>) -> Result<OwnedSemaphorePermit, PoolError> {
        if let Ok(p) = self.sem.clone().try_acquire_owned() {
            return Ok(p);
        }
        let acquire = self.sem.clone().acquire_owned();
        tokio::pin!(acquire);
        loop {
            self.evict();
            let mut pause = EVICT_RETRY;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(PoolError::WaitTimeout);
                }
                pause = pause.min(left);
            }
            tokio::select! {
                p = &mut acquire => return p.map_err(|_| PoolError::Closed),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// The caps a pool is under, and its `min_pool_size`: part of its reloadable settings.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// min_pool_size (capped at the pool's size where it is used).
    pub min: usize,
    /// Keep `min` even while no client is connected (the database has a forced user).
    pub min_without_clients: bool,
    /// max_db_connections of the pool's database.
    pub db: Option<Arc<Cap>>,
    /// max_user_connections of the pool's server user.
    pub user: Option<Arc<Cap>>,
}

/// The permits one server connection holds; dropping it frees them.
#[derive(Debug, Default)]
pub struct Hold {
    db: Option<OwnedSemaphorePermit>,
    user: Option<OwnedSemaphorePermit>,
}

impl Hold {
    /// True if the connection counts against no cap.
    pub fn is_empty(&self) -> bool {
        self.db.is_none() && self.user.is_none()
    }
}

impl Limits {
    /// True if the pool is under no cap.
    #[inline]
    pub fn uncapped(&self) -> bool {
        self.db.is_none() && self.user.is_none()
    }

    /// The permits for one more server connection: the database's first, then the user's
    /// (always in that order, so two waiters never hold what the other needs). Idle
    /// connections of other pools are closed to make room; waits end at `deadline`.
    pub async fn take(&self, deadline: Option<Instant>) -> Result<Hold, PoolError> {
        let mut hold = Hold::default();
        if let Some(c) = &self.db {
            hold.db = Some(c.take(deadline).await?);
        }
        if let Some(c) = &self.user {
            hold.user = Some(c.take(deadline).await?);
        }
        Ok(hold)
    }

    /// The permits if they are free now (min_pool_size never evicts or waits, as PgBouncer).
    pub fn try_take(&self) -> Option<Hold> {
        let take = |c: &Option<Arc<Cap>>| match c {
            Some(c) => c.sem.clone().try_acquire_owned().ok().map(Some),
            None => Some(None),
        };
        Some(Hold {
            db: take(&self.db)?,
            user: take(&self.user)?,
        })
    }

    /// Make `m` a candidate for eviction under each of its caps.
    pub fn join(&self, m: Weak<dyn Member>) {
        for c in [&self.db, &self.user].into_iter().flatten() {
            c.join(m.clone());
        }
    }
}

/// Every cap of the process, by database and by user; reloads resize them in place, so
/// connections opened under the old limit still count.
#[derive(Debug, Default)]
pub struct Caps {
    dbs: DashMap<String, Arc<Cap>>,
    users: DashMap<String, Arc<Cap>>,
}

fn get(map: &DashMap<String, Arc<Cap>>, kind: &str, name: &str, limit: usize) -> Option<Arc<Cap>> {
    if limit == 0 {
        return None;
    }
    let cap = map
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(Cap::new(format!("{kind} {name}"), limit)))
        .clone();
    if cap.limit() != limit {
        cap.resize(limit);
    }
    Some(cap)
}

impl Caps {
    /// The cap of database `name` at `limit` (None when 0: unlimited).
    pub fn database(&self, name: &str, limit: usize) -> Option<Arc<Cap>> {
        get(&self.dbs, "database", name, limit)
    }

    /// The cap of user `name` at `limit` (None when 0: unlimited).
    pub fn user(&self, name: &str, limit: usize) -> Option<Arc<Cap>> {
        get(&self.users, "user", name, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resize_counts_held_permits() {
        let caps = Caps::default();
        assert!(caps.database("d", 0).is_none());
        let cap = caps.database("d", 2).unwrap();
        let limits = Limits {
            db: Some(cap.clone()),
            ..Limits::default()
        };
        let a = limits.try_take().unwrap();
        let b = limits.try_take().unwrap();
        assert!(limits.try_take().is_none());
        assert_eq!(cap.used(), 2);
        caps.database("d", 1);
        drop(a);
        tokio::task::yield_now().await;
        assert!(limits.try_take().is_none(), "one held, limit 1");
        drop(b);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(limits.try_take().is_some());
        caps.database("d", 3);
        assert_eq!(cap.limit(), 3);
        let deadline = Some(Instant::now() + Duration::from_millis(50));
        let held: Vec<_> = [(); 3].iter().map(|_| limits.try_take().unwrap()).collect();
        assert!(matches!(
            limits.take(deadline).await,
            Err(PoolError::WaitTimeout)
        ));
        drop(held);
        assert!(limits.take(deadline).await.is_ok());
    }
}
