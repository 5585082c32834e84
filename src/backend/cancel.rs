//! Virtual cancel keys: each client gets a (pid, secret) unique in the process, mapped to
//! whichever server connection is running that client's query right now.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::conn::CancelTarget;

#[derive(Debug)]
struct Slot {
    secret: i32,
    target: Mutex<Option<CancelTarget>>,
}

/// All live virtual keys.
#[derive(Debug)]
pub struct CancelRegistry {
    next: AtomicI32,
    /// Pids are taken from `lo..hi`, wrapping.
    lo: i32,
    hi: i32,
    slots: DashMap<i32, Arc<Slot>>,
}

/// A client's registration; dropping it frees the pid.
#[derive(Debug)]
pub struct CancelHandle {
    /// Virtual process ID given to the client (also the `A` pid of its notifications).
    pub pid: i32,
    /// Virtual secret.
    pub secret: i32,
    slot: Arc<Slot>,
    registry: Arc<CancelRegistry>,
}

impl CancelRegistry {
    /// An empty registry.
    pub fn new() -> Arc<CancelRegistry> {
        Self::with_range(10_000, i32::MAX, 10_000 + (rand::random::<u16>() as i32))
    }

    /// A registry whose pids come from `lo..hi` only (several instances sharing a backplane
    /// each take their own block), starting at a random place in it.
    pub fn with_pids(lo: i32, hi: i32) -> Arc<CancelRegistry> {
        let span = (hi - lo).max(1) as u32;
        Self::with_range(lo, hi, lo + (rand::random::<u32>() % span) as i32)
    }

    fn with_range(lo: i32, hi: i32, start: i32) -> Arc<CancelRegistry> {
        Arc::new(CancelRegistry {
            next: AtomicI32::new(start),
            lo,
            hi,
            slots: DashMap::new(),
        })
    }

    /// Allocate a fresh virtual key for a client.
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let secret = rand::random::<i32>();
        let slot = Arc::new(Slot {
            secret,
            target: Mutex::new(None),
        });
        loop {
            let mut pid = self.next.fetch_add(1, Ordering::Relaxed);
            if pid <= 0 || pid < self.lo || pid >= self.hi {
                // Wrapped: start over; taken pids are skipped below.
                self.next.store(self.lo, Ordering::Relaxed);
                pid = self.next.fetch_add(1, Ordering::Relaxed);
            }
            if let dashmap::Entry::Vacant(v) = self.slots.entry(pid) {
                v.insert(slot.clone());
                return CancelHandle {
                    pid,
                    secret,
                    slot,
                    registry: self.clone(),
                };
            }
        }
    }

    /// Handle a CancelRequest: forward it to the server running that client's query.
    /// A wrong key or an idle client does nothing, as in Postgres.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = match self.slots.get(&pid) {
            Some(slot) if slot.secret == secret => {
                *slot.target.lock().unwrap_or_else(|e| e.into_inner())
            }
            _ => None,
        };
        let Some(t) = target else {
            tracing::debug!(pid, "cancel request matched no running query");
            return;
        };
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(t.pid, t.secret, &mut out);
        match TcpStream::connect(t.addr).await {
            Ok(mut s) => {
                if let Err(e) = s.write_all(&out).await {
                    tracing::warn!("forwarding cancel request failed: {e}");
                }
            }
            Err(e) => tracing::warn!("connecting to forward a cancel request failed: {e}"),
        }
    }

    /// True if `pid` is from this registry's block: its client, if any, is on this instance.
    pub fn owns(&self, pid: i32) -> bool {
        (self.lo..self.hi).contains(&pid)
    }

    /// Number of registered clients.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no client is registered.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl CancelHandle {
    /// Point the key at a server connection (or at none when the server is released).
    pub fn set_target(&self, t: Option<CancelTarget>) {
        *self.slot.target.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.slots.remove(&self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_freed() {
        let r = CancelRegistry::new();
        let a = r.register();
        let b = r.register();
        assert_ne!(a.pid, b.pid);
        assert_eq!(r.len(), 2);
        drop(a);
        assert_eq!(r.len(), 1);
    }
}
