//! The backplane: how several pgherald instances share LISTEN/NOTIFY. One small trait that
//! an engine implements (Redis Streams in `redis.rs`), the outcome of recording a commit, and
//! the engine-neutral encoding of a committed batch. Without a backplane (the default) none
//! of this runs: sessions publish straight into the in-memory hub.
//!
//! Contract for an engine: every committed batch of a database is recorded as one entry of
//! that database's totally ordered log; every instance delivers the log's entries into its
//! own hub in log order (so every listener everywhere sees one order); an instance that
//! finds entries it never read are gone (retention, an engine restart that lost data) makes
//! the database's current listeners end with "notifications may have been lost"
//! ([`crate::pubsub::Hub::lose`]), logs it and counts it.
//!
//! A transaction that ran statements on the server is recorded before its COMMIT as a
//! pending entry tagged with its xid, and delivered at the place of its resolution (see
//! `pending.rs`); [`XactResolver`] lets any instance resolve it from Postgres.

mod cancel;
mod pending;
pub mod redis;
pub mod xact;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::hub::{Hub, Notification};

/// What became of a batch handed to [`Backplane::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded, and already in this instance's hub (the sender's own copy is queued).
    Delivered,
    /// Recorded, but this instance has not read it back within `backplane_timeout`: it will
    /// be delivered when it is read.
    Recorded,
    /// Not recorded: nothing is delivered anywhere. The text says why.
    Failed(String),
}

/// The answer to one `publish` or `follow`.
pub type Pending = oneshot::Receiver<Outcome>;

/// The answer to one `prepare`: the pending entry's handle, or why it was not recorded.
pub type Prepared = oneshot::Receiver<Result<String, String>>;

/// What Postgres says of a transaction (`pg_xact_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XactStatus {
    /// Committed: its pending notifications are delivered.
    Committed,
    /// Aborted (or never committed before a crash): they are dropped.
    Aborted,
    /// Still running: asked again later.
    InProgress,
}

/// Asks Postgres what became of a transaction, through a server connection of its own.
pub trait XactResolver: Send + Sync + fmt::Debug {
    /// The status of top-level transaction `xid` (an xid8, epoch included) in upstream
    /// database `database` (the hub key), or why it could not be had.
    fn status(
        &self,
        database: &str,
        xid: u64,
    ) -> Pin<Box<dyn Future<Output = Result<XactStatus, String>> + Send + '_>>;
}

/// Counters of a backplane since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackplaneStats {
    /// Batches recorded.
    pub published: u64,
    /// Batches that could not be recorded (their COMMIT failed).
    pub failed: u64,
    /// Entries read from the log and delivered into the hub.
    pub received: u64,
    /// Gaps found in a database's log (entries gone before this instance read them).
    pub gaps: u64,
    /// Listeners ended because of such a gap.
    pub lost_listeners: u64,
    /// Connections to the engine lost and re-established.
    pub reconnects: u64,
    /// Batches of transactions that ran on the server, recorded as pending before COMMIT.
    pub prepared: u64,
    /// Pending batches this instance resolved from Postgres (`pg_xact_status`) because
    /// their confirmation never came.
    pub resolved_from_postgres: u64,
}

/// A shared, ordered log of committed notifications per database.
pub trait Backplane: Send + Sync + fmt::Debug {
    /// Record one committed transaction's notifications of `database` (the hub key) as one
    /// entry, after every batch handed to this instance before it. The answer comes within
    /// about twice `backplane_timeout`.
    fn publish(&self, database: &str, batch: Vec<Notification>) -> Pending;
    /// Deliver `database`'s log into the hub from its current end on. Returns what to wait
    /// for the first time (the reader is positioned), None once it runs.
    fn follow(&self, database: &str) -> Option<Pending>;
    /// Counters.
    fn stats(&self) -> BackplaneStats;
    /// Record `batch` of `database` as pending on the server transaction `xid`, before its
    /// COMMIT goes to the server: nobody delivers it until it is resolved. The answer comes
    /// within about `backplane_timeout`.
    fn prepare(&self, database: &str, xid: u64, batch: Vec<Notification>) -> Prepared;
    /// Resolve pending entry `entry`: its transaction committed (every instance delivers
    /// the batch at the resolution's place in the log) or not (nobody does). Only the first
    /// resolution of an entry counts. Delivered: this instance has read it back.
    fn resolve(&self, database: &str, entry: &str, committed: bool) -> Pending;
    /// How to ask Postgres about pending entries whose confirmation does not come.
    fn set_resolver(&self, resolver: Arc<dyn XactResolver>);
    /// A number for this instance, distinct from the other instances' (None when the engine
    /// cannot be reached now): BackendKeyData pids are taken from its block, so that a pid
    /// names one client across the cluster (item 28).
    fn instance_number(&self) -> Pin<Box<dyn Future<Output = Option<u32>> + Send + '_>>;
    /// Pass a CancelRequest for a pid of another instance's block on to the other instances
    /// (best effort, as a CancelRequest is).
    fn forward_cancel(&self, pid: i32, secret: i32);
    /// The CancelRequests other instances pass on, as (pid, secret), from now on.
    fn forwarded_cancels(&self) -> mpsc::UnboundedReceiver<(i32, i32)>;
}

/// Pids per instance block (2^20); blocks 1..=2047 fit in a positive i32.
pub const PID_BLOCK: i32 = 1 << 20;

/// The pid range of instance number `n`.
pub fn pid_range(n: u32) -> (i32, i32) {
    let block = (n % 2047) as i32 + 1;
    (block * PID_BLOCK, block * PID_BLOCK + (PID_BLOCK - 1))
}

/// How the backplane is set up (from the configuration).
#[derive(Debug, Clone)]
pub struct BackplaneSettings {
    /// Engine URL; `redis://` and `rediss://` (Redis or Valkey) are supported.
    pub url: String,
    /// How long a COMMIT may wait for the engine to record its notifications.
    pub timeout: Duration,
    /// Entries kept per database log (older ones are trimmed).
    pub retention: usize,
    /// Prefix of the engine's key names.
    pub prefix: String,
}

impl BackplaneSettings {
    /// The backplane the configuration asks for (None: none), or the offending key and why.
    pub fn from_config(c: &crate::config::Config) -> Result<Option<Self>, (String, String)> {
        let Some(url) = c.backplane.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let bad = |k: &str, p: &str| Err((k.to_string(), p.to_string()));
        if !c.backplane_timeout.is_finite() || c.backplane_timeout <= 0.0 {
            return bad("backplane_timeout", "must be a positive number of seconds");
        }
        if c.backplane_retention < 100 {
            return bad("backplane_retention", "must be at least 100 entries");
        }
        if c.backplane_prefix.is_empty() {
            return bad("backplane_prefix", "must not be empty");
        }
        // Forwarded copies would come back through every instance's relay as well.
        if c.forward_notify || c.databases.values().any(|d| d.forward_notify == Some(true)) {
            return bad("forward_notify", "cannot be combined with a backplane");
        }
        Ok(Some(BackplaneSettings {
            url: url.to_string(),
            timeout: Duration::from_secs_f64(c.backplane_timeout),
            retention: c.backplane_retention,
            prefix: c.backplane_prefix.clone(),
        }))
    }
}

/// Errors opening a backplane.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    /// The URL names no supported engine or is malformed.
    #[error("backplane: {0}")]
    Url(String),
}

/// Open the engine the URL names. Connections are made lazily and re-made as needed.
pub fn open(
    settings: BackplaneSettings,
    hub: Arc<Hub>,
) -> Result<Arc<dyn Backplane>, BackplaneError> {
    let scheme = settings.url.split(':').next().unwrap_or_default();
    match scheme {
        "redis" | "rediss" | "valkey" | "valkeys" | "redis+unix" | "unix" => {
            Ok(Arc::new(redis::RedisBackplane::new(settings, hub)?))
        }
        _ => Err(BackplaneError::Url(format!(
            "unsupported backplane URL scheme {scheme:?} (expected redis://)"
        ))),
    }
}

/// Encode a batch: per notification, pid (i32), channel length (u32), channel, payload
/// length (u32), payload; all big-endian.
pub fn encode_batch(batch: &[Notification]) -> Bytes {
    let size: usize = batch
        .iter()
        .map(|n| 12 + n.channel.len() + n.payload.len())
        .sum();
    let mut out = BytesMut::with_capacity(size);
    for n in batch {
        out.put_i32(n.pid);
        out.put_u32(n.channel.len() as u32);
        out.put_slice(&n.channel);
        out.put_u32(n.payload.len() as u32);
        out.put_slice(&n.payload);
    }
    out.freeze()
}

/// Decode what `encode_batch` wrote; None when the bytes are not such a batch.
pub fn decode_batch(mut data: Bytes) -> Option<Vec<Notification>> {
    let mut batch = Vec::new();
    while data.has_remaining() {
        if data.remaining() < 8 {
            return None;
        }
        let pid = data.get_i32();
        let channel = take(&mut data)?;
        if data.remaining() < 4 {
            return None;
        }
        let payload = take(&mut data)?;
        batch.push(Notification {
            pid,
            channel,
            payload,
        });
    }
    Some(batch)
}

fn take(data: &mut Bytes) -> Option<Bytes> {
    let len = data.get_u32() as usize;
    (data.remaining() >= len).then(|| data.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_garbage_is_refused() {
        let b = vec![
            Notification {
                pid: -7,
                channel: Bytes::from_static(b"c\xff"),
                payload: Bytes::new(),
            },
            Notification {
                pid: 42,
                channel: Bytes::from_static(b"d"),
                payload: Bytes::from_static(b"x y"),
            },
        ];
        let e = encode_batch(&b);
        assert_eq!(decode_batch(e.clone()), Some(b));
        assert_eq!(decode_batch(Bytes::new()), Some(vec![]));
        for cut in 1..e.len() {
            if cut != 14 {
                assert_eq!(decode_batch(e.slice(..cut)), None, "cut at {cut}");
            }
        }
    }
}
