//! The Redis (or Valkey) Streams backplane. Each database has one stream, `PREFIX:{DB}:log`,
//! and a small hash `PREFIX:{DB}:meta` holding the stream's generation and sequence. A Lua
//! script records a committed batch as one entry numbered `s` = previous + 1 (atomically),
//! trimmed to `backplane_retention` entries. One publisher task per instance sends batches in
//! the order it gets them, pipelined. One reader task per database reads the stream with
//! XREAD BLOCK from the last entry it saw, delivers entries into the hub in stream order,
//! and checks the numbering: a jump (entries trimmed before it read them) or a new
//! generation (Redis lost its data) ends the database's listeners with a FATAL, logged and
//! counted. After an outage it resumes from the last entry it saw. Pending entries of
//! transactions that ran on the server, and their resolutions, share the stream and its
//! numbering (`pending.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::{mpsc, oneshot};

use super::pending::{self, Book};
use super::{
    encode_batch, Backplane, BackplaneError, BackplaneSettings, BackplaneStats, Outcome, Pending,
    Prepared, XactResolver,
};
use crate::pubsub::hub::{Hub, Notification};

/// Records one batch; KEYS: log, meta; ARGV: candidate generation, retention, data, this
/// instance's id, the batch's number at this instance. A batch already recorded (a retry
/// after a lost reply) is not recorded twice: the last entry this instance recorded is
/// returned instead.
const RECORD: &str = r"
local mine = 'i:' .. ARGV[4]
local last = redis.call('HMGET', KEYS[2], mine, mine .. ':id')
if last[1] and tonumber(last[1]) >= tonumber(ARGV[5]) then
  return last[2]
end
redis.call('HSETNX', KEYS[2], 'g', ARGV[1])
local g = redis.call('HGET', KEYS[2], 'g')
local s = redis.call('HINCRBY', KEYS[2], 's', 1)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'g', g, 's', s, 'd', ARGV[3])
redis.call('HSET', KEYS[2], mine, ARGV[5], mine .. ':id', id)
return id
";

/// Batches sent in one pipeline at most.
const MAX_PIPELINE: usize = 256;
/// Entries read per XREAD at most.
const READ_COUNT: usize = 512;
/// How long one XREAD waits for new entries.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Pause before a failed write is tried again on a new connection.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A stream entry ID, ordered as Redis orders them.
pub(super) type EntryId = (u64, u64);

pub(super) fn parse_id(s: &str) -> Option<EntryId> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One batch waiting for the publisher task.
struct Request {
    /// Number of the batch at this instance, given in queue order by the publisher task
    /// (the order it is recorded in), kept across retries.
    number: u64,
    database: String,
    data: Bytes,
    reply: oneshot::Sender<Outcome>,
}

/// The Redis Streams backplane of one instance.
#[derive(Debug)]
pub struct RedisBackplane {
    inner: Arc<Inner>,
    requests: mpsc::UnboundedSender<Request>,
}

#[derive(Debug)]
pub(super) struct Inner {
    client: redis::Client,
    hub: Arc<Hub>,
    pub(super) settings: BackplaneSettings,
    /// This instance's candidate generation, used when a database's log starts.
    pub(super) generation: String,
    readers: DashMap<String, Arc<Reader>>,
    published: AtomicU64,
    pub(super) failed: AtomicU64,
    /// Pending batches recorded, and pending batches resolved from Postgres here.
    pub(super) prepared: AtomicU64,
    pub(super) resolved_from_postgres: AtomicU64,
    /// Asks Postgres about pending entries (set at start).
    pub(super) resolver: OnceLock<Arc<dyn XactResolver>>,
    /// The connection pending entries and resolutions are written on.
    pub(super) side: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    received: AtomicU64,
    gaps: AtomicU64,
    lost_listeners: AtomicU64,
    reconnects: AtomicU64,
}

/// What the reader of one database has delivered, and who waits for it.
#[derive(Debug, Default)]
struct Reader {
    positioned: AtomicBool,
    state: Mutex<ReaderState>,
}

#[derive(Debug, Default)]
struct ReaderState {
    /// Last entry delivered into the hub.
    delivered: Option<EntryId>,
    /// Publishers waiting for their entry to be delivered here.
    waiters: Vec<(EntryId, oneshot::Sender<()>)>,
    /// Waiting for the reader to be positioned.
    ready: Vec<oneshot::Sender<Outcome>>,
}

impl RedisBackplane {
    /// A backplane on the Redis the URL names; nothing connects until it is used.
    pub fn new(settings: BackplaneSettings, hub: Arc<Hub>) -> Result<Self, BackplaneError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| BackplaneError::Url(e.to_string()))?;
        let inner = Arc::new(Inner {
            client,
            hub,
            generation: format!("{:016x}", rand::random::<u64>()),
            settings,
            readers: DashMap::new(),
            published: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            prepared: AtomicU64::new(0),
            resolved_from_postgres: AtomicU64::new(0),
            resolver: OnceLock::new(),
            side: tokio::sync::Mutex::new(None),
            received: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            lost_listeners: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        });
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(publisher(Arc::clone(&inner), rx));
        Ok(RedisBackplane { inner, requests })
    }
}

impl Backplane for RedisBackplane {
    fn publish(&self, database: &str, batch: Vec<Notification>) -> Pending {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            number: 0,
            database: database.to_owned(),
            data: encode_batch(&batch),
            reply,
        };
        if let Err(e) = self.requests.send(req) {
            let _ = e.0.reply.send(Outcome::Failed("backplane stopped".into()));
        }
        rx
    }

    fn follow(&self, database: &str) -> Option<Pending> {
        self.inner.follow(database)
    }

    fn instance_number(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<u32>> + Send + '_>> {
        Box::pin(async move {
            let mut c = self.inner.connect(self.inner.settings.timeout).await.ok()?;
            let key = format!("{}:instances", self.inner.settings.prefix);
            let n: u64 = redis::cmd("INCR").arg(key).query_async(&mut c).await.ok()?;
            Some(n as u32)
        })
    }

    fn forward_cancel(&self, pid: i32, secret: i32) {
        let i = &self.inner;
        tokio::spawn(super::cancel::publish(
            i.client.clone(),
            super::cancel::channel(&i.settings.prefix),
            pid,
            secret,
            i.settings.timeout,
        ));
    }

    fn forwarded_cancels(&self) -> mpsc::UnboundedReceiver<(i32, i32)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let i = &self.inner;
        tokio::spawn(super::cancel::subscribe(
            i.client.clone(),
            super::cancel::channel(&i.settings.prefix),
            tx,
        ));
        rx
    }

    fn stats(&self) -> BackplaneStats {
        let i = &self.inner;
        BackplaneStats {
            published: i.published.load(Ordering::Relaxed),
            failed: i.failed.load(Ordering::Relaxed),
            received: i.received.load(Ordering::Relaxed),
            gaps: i.gaps.load(Ordering::Relaxed),
            lost_listeners: i.lost_listeners.load(Ordering::Relaxed),
            reconnects: i.reconnects.load(Ordering::Relaxed),
            prepared: i.prepared.load(Ordering::Relaxed),
            resolved_from_postgres: i.resolved_from_postgres.load(Ordering::Relaxed),
        }
    }

    fn prepare(&self, database: &str, xid: u64, batch: Vec<Notification>) -> Prepared {
        pending::prepare(&self.inner, database, xid, batch)
    }

    fn resolve(&self, database: &str, entry: &str, committed: bool) -> Pending {
        pending::resolve(&self.inner, database, entry, committed)
    }

    fn set_resolver(&self, resolver: Arc<dyn XactResolver>) {
        let _ = self.inner.resolver.set(resolver);
    }
}

impl Inner {
    pub(super) fn keys(&self, database: &str) -> (String, String) {
        let p = &self.settings.prefix;
        (
            format!("{p}:{{{database}}}:log"),
            format!("{p}:{{{database}}}:meta"),
        )
    }

    /// A new connection whose replies may take up to `response` (XREAD BLOCK waits).
    pub(super) async fn connect(
        &self,
        response: Duration,
    ) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.settings.timeout)
            .set_response_timeout(response);
        match tokio::time::timeout(
            self.settings.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connection timed out".into()),
        }
    }

    /// Start the reader of `database` if none runs; returns what to wait for until it is
    /// positioned (None once it is).
    pub(super) fn follow(self: &Arc<Self>, database: &str) -> Option<Pending> {
        if let Some(r) = self.readers.get(database) {
            if r.positioned.load(Ordering::Acquire) {
                return None;
            }
        }
        let reader = self
            .readers
            .entry(database.to_owned())
            .or_insert_with(|| {
                let r = Arc::new(Reader::default());
                tokio::spawn(read_loop(Arc::clone(self), database.to_owned(), r.clone()));
                r
            })
            .clone();
        let (tx, rx) = oneshot::channel();
        let mut st = lock(&reader.state);
        if reader.positioned.load(Ordering::Acquire) {
            return None;
        }
        st.ready.push(tx);
        Some(rx)
    }
}

/// Send batches in arrival order, as pipelines of whatever has queued up, each bounded by
/// `backplane_timeout`; then wait (bounded too) for this instance to have read each back.
async fn publisher(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let script = redis::Script::new(RECORD);
    let mut conn: Option<MultiplexedConnection> = None;
    let mut number = 0u64;
    while let Some(first) = rx.recv().await {
        let mut reqs = vec![first];
        while reqs.len() < MAX_PIPELINE {
            match rx.try_recv() {
                Ok(r) => reqs.push(r),
                Err(_) => break,
            }
        }
        for r in &mut reqs {
            number += 1;
            r.number = number;
        }
        // The reader must be positioned before the entry exists, or it would start past it.
        for r in &reqs {
            if let Some(ready) = inner.follow(&r.database) {
                let _ = tokio::time::timeout(inner.settings.timeout, ready).await;
            }
        }
        let deadline = tokio::time::Instant::now() + inner.settings.timeout;
        let result: Result<Vec<String>, String> = loop {
            let attempt = record(&inner, &script, &mut conn, &reqs, deadline).await;
            match attempt {
                Err(e) if tokio::time::Instant::now() + RETRY_PAUSE < deadline => {
                    // A broken connection (Redis restarted): again on a new one. A batch
                    // that was recorded before the reply got lost is not recorded twice.
                    tracing::debug!("backplane write failed, retrying: {e}");
                    conn = None;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => break other,
            }
        };
        match result {
            Ok(ids) if ids.len() == reqs.len() => {
                inner
                    .published
                    .fetch_add(reqs.len() as u64, Ordering::Relaxed);
                for (r, id) in reqs.into_iter().zip(ids) {
                    let inner = Arc::clone(&inner);
                    tokio::spawn(async move {
                        let outcome = match parse_id(&id) {
                            Some(id) => inner.delivered(&r.database, id).await,
                            None => Outcome::Recorded,
                        };
                        let _ = r.reply.send(outcome);
                    });
                }
            }
            other => {
                let why = match other {
                    Err(e) => e,
                    Ok(_) => "unexpected reply".into(),
                };
                conn = None;
                inner.failed.fetch_add(reqs.len() as u64, Ordering::Relaxed);
                tracing::warn!(
                    batches = reqs.len(),
                    "backplane cannot record notifications: {why}"
                );
                for r in reqs {
                    let _ = r.reply.send(Outcome::Failed(why.clone()));
                }
            }
        }
    }
}

/// One attempt at recording `reqs` as one pipeline, on `conn` (made first if None).
async fn record(
    inner: &Inner,
    script: &redis::Script,
    conn: &mut Option<MultiplexedConnection>,
    reqs: &[Request],
    deadline: tokio::time::Instant,
) -> Result<Vec<String>, String> {
    if conn.is_none() {
        let mut c = tokio::time::timeout_at(deadline, inner.connect(inner.settings.timeout))
            .await
            .map_err(|_| "connection timed out".to_string())??;
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(RECORD)
            .query_async::<String>(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        *conn = Some(c);
    }
    let Some(c) = conn.as_mut() else {
        return Err("not connected".to_string());
    };
    let mut pipe = redis::pipe();
    for r in reqs {
        let (log, meta) = inner.keys(&r.database);
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(2)
            .arg(log)
            .arg(meta)
            .arg(&inner.generation)
            .arg(inner.settings.retention)
            .arg(&r.data[..])
            .arg(&inner.generation)
            .arg(r.number);
    }
    match tokio::time::timeout_at(deadline, pipe.query_async::<Vec<String>>(c)).await {
        Ok(Ok(ids)) => Ok(ids),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within backplane_timeout ({:?})",
            inner.settings.timeout
        )),
    }
}

impl Inner {
    /// Wait (bounded) until entry `id` of `database` is in this instance's hub.
    pub(super) async fn delivered(&self, database: &str, id: EntryId) -> Outcome {
        let Some(reader) = self.readers.get(database).map(|r| r.clone()) else {
            return Outcome::Recorded;
        };
        let rx = {
            let mut st = lock(&reader.state);
            if st.delivered.is_some_and(|d| d >= id) {
                return Outcome::Delivered;
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push((id, tx));
            rx
        };
        match tokio::time::timeout(self.settings.timeout, rx).await {
            Ok(Ok(())) => Outcome::Delivered,
            _ => {
                tracing::warn!(database, "backplane: own notifications recorded but not read back in time; they follow later");
                Outcome::Recorded
            }
        }
    }
}

/// Where a reader stands in its database's log.
#[derive(Debug, Clone, Default)]
struct Position {
    /// Last entry ID read ("0-0" before any).
    id: String,
    /// Generation of the log (None: no entry seen and no log yet).
    generation: Option<Bytes>,
    /// Sequence number of the last entry read.
    seq: u64,
}

/// Read one database's log forever: position at its end, then deliver entries in order,
/// reconnecting after errors from where it stopped.
async fn read_loop(inner: Arc<Inner>, database: String, reader: Arc<Reader>) {
    let (log, meta) = inner.keys(&database);
    let mut pos: Option<Position> = None;
    let mut book = Book::default();
    let mut backoff = Duration::from_millis(50);
    let mut broken = false;
    loop {
        let mut conn = match inner.connect(inner.settings.timeout + READ_BLOCK * 2).await {
            Ok(c) => c,
            Err(e) => {
                if !broken {
                    tracing::warn!(database, "backplane reader cannot connect: {e}");
                }
                broken = true;
                answer_ready(&reader, Outcome::Failed(e));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if broken {
            inner.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(database, "backplane reader reconnected; resuming");
        }
        broken = false;
        backoff = Duration::from_millis(50);
        let result = async {
            match &mut pos {
                None => {
                    pos = Some(position(&mut conn, &log, &meta).await?);
                    reader.positioned.store(true, Ordering::Release);
                    answer_ready(&reader, Outcome::Delivered);
                }
                Some(p) => check_generation(&inner, &database, &mut conn, &meta, p).await?,
            }
            let Some(p) = pos.as_mut() else {
                return Ok(());
            };
            loop {
                read_once(&inner, &database, &reader, &mut conn, &log, p, &mut book).await?;
            }
        }
        .await;
        if let Err(e) = result {
            let e: redis::RedisError = e;
            if pos.is_none() {
                // Nobody waits forever for a reader that cannot position itself.
                answer_ready(&reader, Outcome::Failed(e.to_string()));
            }
            tracing::warn!(database, "backplane reader lost its connection: {e}");
            broken = true;
            tokio::time::sleep(backoff).await;
        }
    }
}

fn answer_ready(reader: &Reader, outcome: Outcome) {
    for tx in std::mem::take(&mut lock(&reader.state).ready) {
        let _ = tx.send(outcome.clone());
    }
}

/// The log's current end, read atomically with its numbering.
async fn position(
    conn: &mut MultiplexedConnection,
    log: &str,
    meta: &str,
) -> redis::RedisResult<Position> {
    let (last, (generation, seq)): (Value, (Option<Vec<u8>>, Option<u64>)) = redis::pipe()
        .atomic()
        .cmd("XREVRANGE")
        .arg(log)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .cmd("HMGET")
        .arg(meta)
        .arg("g")
        .arg("s")
        .query_async(conn)
        .await?;
    let id = match &last {
        Value::Array(entries) => entries
            .first()
            .and_then(|e| match e {
                Value::Array(pair) => pair.first(),
                _ => None,
            })
            .and_then(|id| redis::from_redis_value::<String>(id).ok()),
        _ => None,
    };
    Ok(Position {
        id: id.unwrap_or_else(|| "0-0".into()),
        generation: generation.map(Bytes::from),
        seq: seq.unwrap_or(0),
    })
}

/// After a reconnect: a log whose generation changed (Redis restarted without its data, or
/// the keys were deleted) may have lost entries this instance never read.
async fn check_generation(
    inner: &Inner,
    database: &str,
    conn: &mut MultiplexedConnection,
    meta: &str,
    p: &mut Position,
) -> redis::RedisResult<()> {
    let (generation, seq): (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
        .arg(meta)
        .arg("g")
        .arg("s")
        .query_async(conn)
        .await?;
    let generation = generation.map(Bytes::from);
    if p.generation.is_some() && generation != p.generation {
        inner.gap(
            database,
            "the backplane's log was reset (Redis lost its data)",
        );
        // The new log is read from its start.
        let _ = seq;
        *p = Position {
            id: "0-0".into(),
            generation: None,
            seq: 0,
        };
    }
    Ok(())
}

/// One XREAD: deliver what came in order, checking the numbering.
#[allow(clippy::too_many_arguments)]
async fn read_once(
    inner: &Arc<Inner>,
    database: &str,
    reader: &Reader,
    conn: &mut MultiplexedConnection,
    log: &str,
    p: &mut Position,
    book: &mut Book,
) -> redis::RedisResult<()> {
    let opts = StreamReadOptions::default()
        .count(READ_COUNT)
        .block(READ_BLOCK.as_millis() as usize);
    let reply: Option<StreamReadReply> = redis::cmd("XREAD")
        .arg(&opts)
        .arg("STREAMS")
        .arg(log)
        .arg(&p.id)
        .query_async(conn)
        .await?;
    let after = pending::resolve_after(inner);
    let due = book.due(after / 2);
    if !due.is_empty() {
        pending::ask_postgres(inner, database, due);
    }
    let Some(reply) = reply else {
        return Ok(());
    };
    let mut last = None;
    for key in reply.keys {
        for entry in key.ids {
            let field = |name: &str| -> Option<Vec<u8>> {
                entry
                    .map
                    .get(name)
                    .and_then(|v| redis::from_redis_value::<Vec<u8>>(v).ok())
            };
            let generation = field("g").map(Bytes::from);
            let seq = field("s")
                .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u64>().ok())
                .unwrap_or(0);
            let fresh = p.generation.is_none() && p.seq == 0;
            if generation != p.generation && !fresh {
                inner.gap(
                    database,
                    "the backplane's log was reset (Redis lost its data)",
                );
            } else if seq != p.seq + 1 {
                inner.gap(
                    database,
                    &format!(
                        "entries {}..{} were trimmed (backplane_retention) before this instance read them",
                        p.seq + 1,
                        seq.saturating_sub(1)
                    ),
                );
            }
            p.generation = generation;
            p.seq = seq;
            p.id = entry.id.clone();
            let batch = pending::batch_of(inner, database, conn, log, &entry, book).await?;
            match batch {
                Some(batch) if !batch.is_empty() => inner.hub.publish(database, &batch),
                Some(_) => {}
                None => {
                    tracing::warn!(database, id = %entry.id, "backplane entry not understood; skipped")
                }
            }
            inner.received.fetch_add(1, Ordering::Relaxed);
            last = parse_id(&entry.id).or(last);
        }
    }
    if let Some(last) = last {
        let mut st = lock(&reader.state);
        st.delivered = Some(last);
        let waiters = std::mem::take(&mut st.waiters);
        for (id, tx) in waiters {
            if id <= last {
                let _ = tx.send(());
            } else {
                st.waiters.push((id, tx));
            }
        }
    }
    Ok(())
}

impl Inner {
    /// Entries of `database` are gone before this instance read them: its current
    /// listeners end with a FATAL saying notifications may have been lost.
    pub(super) fn gap(&self, database: &str, why: &str) {
        let n = self.hub.lose(database);
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.lost_listeners.fetch_add(n as u64, Ordering::Relaxed);
        tracing::error!(
            database,
            listeners = n,
            "notifications may have been lost: {why}; disconnecting the database's listeners"
        );
    }
}
