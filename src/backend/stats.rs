//! Per-pool counters for SHOW STATS and /metrics: relaxed atomics bumped at checkout, at
//! transaction boundaries and on rare events, never per forwarded message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the pool wait-time histogram buckets.
pub const WAIT_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];

/// Counters of a pool.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Server connections opened.
    pub opened: AtomicU64,
    /// Server connections closed (idle timeout, lifetime, broken, dirty).
    pub closed: AtomicU64,
    /// Server connections that could not be opened.
    pub connect_failures: AtomicU64,
    /// Checkouts that had to wait.
    pub waits: AtomicU64,
    /// Checkouts that timed out.
    pub wait_timeouts: AtomicU64,
    /// Microseconds spent waiting for a server.
    pub wait_us: AtomicU64,
    /// Waits by bucket of `WAIT_BUCKETS` (the last slot: above every bound).
    pub wait_buckets: [AtomicU64; WAIT_BUCKETS.len() + 1],
    /// Times a server connection was assigned to a client.
    pub assignments: AtomicU64,
    /// Transactions completed.
    pub xacts: AtomicU64,
    /// Queries (requests answered by a ReadyForQuery) completed.
    pub queries: AtomicU64,
    /// Microseconds spent in transactions.
    pub xact_us: AtomicU64,
    /// Microseconds spent in queries.
    pub query_us: AtomicU64,
    /// Bytes received from clients.
    pub received: AtomicU64,
    /// Bytes sent to clients.
    pub sent: AtomicU64,
    /// Client logins.
    pub logins: AtomicU64,
    /// Client logins refused (authentication failed).
    pub login_failures: AtomicU64,
    /// Listeners disconnected because their notification queue was full.
    pub overflows: AtomicU64,
}

impl PoolStats {
    /// Record one wait for a server.
    pub fn record_wait(&self, d: Duration) {
        self.wait_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        let s = d.as_secs_f64();
        let i = WAIT_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(WAIT_BUCKETS.len());
        self.wait_buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The totals SHOW STATS reports.
    pub fn totals(&self) -> Totals {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            assignments: l(&self.assignments),
            xacts: l(&self.xacts),
            queries: l(&self.queries),
            received: l(&self.received),
            sent: l(&self.sent),
            xact_us: l(&self.xact_us),
            query_us: l(&self.query_us),
            wait_us: l(&self.wait_us),
            logins: l(&self.logins),
        }
    }
}

/// A copy of the counters SHOW STATS reports, summed per database.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// server_assignment_count
    pub assignments: u64,
    /// xact_count
    pub xacts: u64,
    /// query_count
    pub queries: u64,
    /// bytes received from clients
    pub received: u64,
    /// bytes sent to clients
    pub sent: u64,
    /// xact_time (µs)
    pub xact_us: u64,
    /// query_time (µs)
    pub query_us: u64,
    /// wait_time (µs)
    pub wait_us: u64,
    /// client_login_count
    pub logins: u64,
}

impl Totals {
    /// Add another pool's totals.
    pub fn add(&mut self, o: &Totals) {
        self.assignments += o.assignments;
        self.xacts += o.xacts;
        self.queries += o.queries;
        self.received += o.received;
        self.sent += o.sent;
        self.xact_us += o.xact_us;
        self.query_us += o.query_us;
        self.wait_us += o.wait_us;
        self.logins += o.logins;
    }
}

/// What a session counted since it last handed its counts to the pool.
#[derive(Debug, Default)]
pub struct SessionCounts {
    /// Bytes read from the client.
    pub received: u64,
    /// Bytes read from the server (sent on to the client).
    pub sent: u64,
    /// Queries.
    pub queries: u64,
    /// Transactions.
    pub xacts: u64,
    /// Query time, µs.
    pub query_us: u64,
    /// Transaction time, µs.
    pub xact_us: u64,
}

impl SessionCounts {
    /// Add to the pool's counters and start again.
    pub fn flush(&mut self, s: &PoolStats) {
        let add = |a: &AtomicU64, v: u64| {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&s.received, self.received);
        add(&s.sent, self.sent);
        add(&s.queries, self.queries);
        add(&s.xacts, self.xacts);
        add(&s.query_us, self.query_us);
        add(&s.xact_us, self.xact_us);
        *self = SessionCounts::default();
    }
}
