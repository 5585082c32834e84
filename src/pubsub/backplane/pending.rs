//! Atomic commits of transactions that ran on the server (issue 15, guarantee 4), as
//! Postgres does it for its own queue: before the client's COMMIT goes to the server, the
//! transaction's notifications are recorded in the database's log as a *pending* entry
//! tagged with the server transaction's xid (xid8, so wraparound never confuses two) and
//! the upstream database. Nobody delivers a pending entry. Once the server answers the
//! COMMIT, the committing instance appends a small *resolution* entry naming it: `c`
//! (committed: every instance delivers the batch at the resolution's place in the log, so
//! every listener everywhere sees one order) or `a` (the COMMIT failed: nobody delivers).
//!
//! An instance that holds a pending entry unresolved for `2 × backplane_timeout` asks
//! Postgres (`pg_xact_status`, through [`super::XactResolver`]) and appends the resolution
//! itself: committed → `c`, aborted → `a`, in progress → asked again later. Exactly one
//! resolution per pending entry reaches the log: the script that appends one first sets a
//! marker key with NX, and a later attempt (the original instance's late confirmation, or
//! another instance's resolver) gets the first one back instead. Readers apply only the
//! first resolution they see of an entry, so each batch is delivered at most once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamId;
use tokio::sync::oneshot;

use super::redis::{parse_id, Inner};
use super::{decode_batch, encode_batch, Outcome, XactStatus};
use crate::pubsub::hub::Notification;

/// Records a pending batch; KEYS: log, meta; ARGV: candidate generation, retention, data,
/// xid, upstream database.
const PREPARE: &str = r"
redis.call('HSETNX', KEYS[2], 'g', ARGV[1])
local g = redis.call('HGET', KEYS[2], 'g')
local s = redis.call('HINCRBY', KEYS[2], 's', 1)
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'g', g, 's', s,
  'k', 'p', 'x', ARGV[4], 'u', ARGV[5], 'd', ARGV[3])
";

/// Resolves a pending entry once; KEYS: log, meta, marker; ARGV: candidate generation,
/// retention, pending entry ID, `c` or `a`, marker lifetime (s). Returns "KIND ID" of the
/// resolution that counts (this one, or the one recorded before).
const RESOLVE: &str = r"
local prior = redis.call('GET', KEYS[3])
if prior then return prior end
redis.call('HSETNX', KEYS[2], 'g', ARGV[1])
local g = redis.call('HGET', KEYS[2], 'g')
local s = redis.call('HINCRBY', KEYS[2], 's', 1)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'g', g, 's', s,
  'k', ARGV[4], 'r', ARGV[3])
local v = ARGV[4] .. ' ' .. id
redis.call('SET', KEYS[3], v, 'EX', ARGV[5])
return v
";

/// How long the marker of a resolution lives (a day: far past any pending entry's life).
const MARKER_TTL_SECS: u64 = 86_400;
/// Resolved entry IDs a reader remembers, to ignore a second resolution of one.
const REMEMBERED: usize = 65_536;

/// What one log entry is.
pub(super) enum Kind {
    /// A committed batch (a NOTIFY-only transaction): delivered at its place.
    Batch(Option<Vec<Notification>>),
    /// A pending batch of server transaction `xid`.
    Pending(u64, Option<Vec<Notification>>),
    /// The resolution of pending entry `of`.
    Resolution { of: String, committed: bool },
}

fn field(entry: &StreamId, name: &str) -> Option<Vec<u8>> {
    entry
        .map
        .get(name)
        .and_then(|v| redis::from_redis_value::<Vec<u8>>(v).ok())
}

/// Classify an entry read from the log.
pub(super) fn kind(entry: &StreamId) -> Kind {
    let batch = || field(entry, "d").and_then(|d| decode_batch(Bytes::from(d)));
    let text = |name| field(entry, name).and_then(|v| String::from_utf8(v).ok());
    match field(entry, "k").as_deref() {
        Some(b"p") => Kind::Pending(text("x").and_then(|x| x.parse().ok()).unwrap_or(0), batch()),
        Some(k @ (b"c" | b"a")) => Kind::Resolution {
            of: text("r").unwrap_or_default(),
            committed: k == b"c",
        },
        _ => Kind::Batch(batch()),
    }
}

/// A pending entry a reader holds.
struct Open {
    xid: u64,
    batch: Vec<Notification>,
    /// When to ask Postgres (again).
    check_at: Instant,
}

/// A reader's pending entries and the ones it has resolved.
#[derive(Default)]
pub(super) struct Book {
    open: HashMap<String, Open>,
    done: HashSet<String>,
    done_order: VecDeque<String>,
}

impl std::fmt::Debug for Book {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Book")
            .field("open", &self.open.len())
            .finish()
    }
}

/// What a resolution entry asks the reader to do.
pub(super) enum Apply {
    /// Deliver this batch now.
    Deliver(Vec<Notification>),
    /// Nothing (aborted, or already resolved).
    Nothing,
    /// The pending entry was written before this reader started: fetch it.
    Fetch,
}

impl Book {
    /// A pending entry was read.
    pub(super) fn open(&mut self, id: &str, xid: u64, batch: Vec<Notification>, after: Duration) {
        if !self.done.contains(id) {
            let check_at = Instant::now() + after;
            self.open.insert(
                id.to_owned(),
                Open {
                    xid,
                    batch,
                    check_at,
                },
            );
        }
    }

    /// A resolution of `of` was read.
    pub(super) fn resolve(&mut self, of: &str, committed: bool) -> Apply {
        if self.done.contains(of) {
            return Apply::Nothing;
        }
        self.remember(of);
        match (self.open.remove(of), committed) {
            (Some(o), true) => Apply::Deliver(o.batch),
            (None, true) => Apply::Fetch,
            _ => Apply::Nothing,
        }
    }

    fn remember(&mut self, id: &str) {
        self.done.insert(id.to_owned());
        self.done_order.push_back(id.to_owned());
        if self.done_order.len() > REMEMBERED {
            if let Some(old) = self.done_order.pop_front() {
                self.done.remove(&old);
            }
        }
    }

    /// Pending entries due for a question to Postgres, as (ID, xid); each is asked again
    /// `every` later if still open then.
    pub(super) fn due(&mut self, every: Duration) -> Vec<(String, u64)> {
        let now = Instant::now();
        self.open
            .iter_mut()
            .filter(|(_, o)| o.check_at <= now)
            .map(|(id, o)| {
                o.check_at = now + every;
                (id.clone(), o.xid)
            })
            .collect()
    }
}

/// What entry `entry` delivers now, in log order: a committed batch at its place, nothing
/// for a pending entry (held in `book`) or an abort, the pending batch at a committed
/// resolution's place. None: the entry is not understood.
pub(super) async fn batch_of(
    inner: &Inner,
    database: &str,
    conn: &mut MultiplexedConnection,
    log: &str,
    entry: &StreamId,
    book: &mut Book,
) -> redis::RedisResult<Option<Vec<Notification>>> {
    Ok(match kind(entry) {
        Kind::Batch(batch) => batch,
        Kind::Pending(xid, batch) => {
            if let Some(batch) = batch {
                book.open(&entry.id, xid, batch, resolve_after(inner));
            }
            Some(Vec::new())
        }
        Kind::Resolution { of, committed } => match book.resolve(&of, committed) {
            Apply::Deliver(batch) => Some(batch),
            Apply::Nothing => Some(Vec::new()),
            Apply::Fetch => match fetch(conn, log, &of).await? {
                Some(batch) => Some(batch),
                None => {
                    inner.gap(
                        database,
                        "a committed pending entry was trimmed (backplane_retention) before this instance read it",
                    );
                    Some(Vec::new())
                }
            },
        },
    })
}

/// How long a pending entry may wait for its confirmation before Postgres is asked.
pub(super) fn resolve_after(inner: &Inner) -> Duration {
    (inner.settings.timeout * 2).max(Duration::from_millis(500))
}

/// Fetch pending entry `of` (written before this reader started) for a committed resolution;
/// None when it is gone (trimmed) or not a pending entry.
async fn fetch(
    conn: &mut MultiplexedConnection,
    log: &str,
    of: &str,
) -> redis::RedisResult<Option<Vec<Notification>>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(log)
        .arg(of)
        .arg(of)
        .query_async(conn)
        .await?;
    Ok(reply.ids.first().and_then(|e| match kind(e) {
        Kind::Pending(_, batch) => batch,
        _ => None,
    }))
}

/// Ask Postgres about due pending entries of `database`, each in its own task, and append
/// their resolution when Postgres knows it.
pub(super) fn ask_postgres(inner: &Arc<Inner>, database: &str, due: Vec<(String, u64)>) {
    let Some(resolver) = inner.resolver.get().cloned() else {
        return;
    };
    for (id, xid) in due {
        let (inner, resolver, database) = (inner.clone(), resolver.clone(), database.to_owned());
        tokio::spawn(async move {
            let committed = match resolver.status(&database, xid).await {
                Ok(XactStatus::Committed) => true,
                Ok(XactStatus::Aborted) => false,
                Ok(XactStatus::InProgress) => return,
                Err(e) => {
                    tracing::warn!(database, xid, "cannot resolve a pending commit yet: {e}");
                    return;
                }
            };
            tracing::warn!(
                database,
                xid,
                committed,
                "pending notifications were not confirmed in time; resolved from pg_xact_status"
            );
            match write_resolution(&inner, &database, &id, committed).await {
                Ok(_) => {
                    inner.resolved_from_postgres.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(database, "cannot record a resolution: {e}"),
            }
        });
    }
}

/// A connection for pending entries and resolutions, kept between uses.
async fn side_conn(inner: &Inner) -> Result<MultiplexedConnection, String> {
    let mut slot = inner.side.lock().await;
    if let Some(c) = slot.as_ref() {
        return Ok(c.clone());
    }
    let c = inner.connect(inner.settings.timeout).await?;
    *slot = Some(c.clone());
    Ok(c)
}

async fn drop_side_conn(inner: &Inner) {
    *inner.side.lock().await = None;
}

/// Record a pending batch; Ok(its entry ID). One attempt, bounded by `backplane_timeout`:
/// a failure leaves the transaction uncommitted, and an entry recorded whose reply got lost
/// resolves as aborted (its transaction is rolled back).
pub(super) fn prepare(
    inner: &Arc<Inner>,
    database: &str,
    xid: u64,
    batch: Vec<Notification>,
) -> oneshot::Receiver<Result<String, String>> {
    let (tx, rx) = oneshot::channel();
    let (inner, database) = (inner.clone(), database.to_owned());
    let data = encode_batch(&batch);
    tokio::spawn(async move {
        let work = async {
            // The reader must be positioned before the entry exists, or it would start past it.
            if let Some(ready) = inner.follow(&database) {
                match ready.await {
                    Ok(Outcome::Failed(e)) => return Err(e),
                    Err(_) => return Err("backplane stopped".to_string()),
                    _ => {}
                }
            }
            let mut c = side_conn(&inner).await?;
            let (log, meta) = inner.keys(&database);
            redis::Script::new(PREPARE)
                .key(log)
                .key(meta)
                .arg(&inner.generation)
                .arg(inner.settings.retention)
                .arg(&data[..])
                .arg(xid)
                .arg(&database)
                .invoke_async::<String>(&mut c)
                .await
                .map_err(|e| e.to_string())
        };
        let res = match tokio::time::timeout(inner.settings.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within backplane_timeout ({:?})",
                inner.settings.timeout
            )),
        };
        match &res {
            Ok(_) => {
                inner.prepared.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                inner.failed.fetch_add(1, Ordering::Relaxed);
                drop_side_conn(&inner).await;
            }
        }
        let _ = tx.send(res);
    });
    rx
}

/// Append the resolution of pending entry `of` (unless one was appended already);
/// Ok((committed, ID)) of the resolution that counts.
async fn write_resolution(
    inner: &Inner,
    database: &str,
    of: &str,
    committed: bool,
) -> Result<(bool, String), String> {
    let mut c = side_conn(inner).await?;
    let (log, meta) = inner.keys(database);
    let marker = format!("{}:{{{database}}}:r:{of}", inner.settings.prefix);
    let v = redis::Script::new(RESOLVE)
        .key(log)
        .key(meta)
        .key(marker)
        .arg(&inner.generation)
        .arg(inner.settings.retention)
        .arg(of)
        .arg(if committed { "c" } else { "a" })
        .arg(MARKER_TTL_SECS)
        .invoke_async::<String>(&mut c)
        .await;
    let v = match v {
        Ok(v) => v,
        Err(e) => {
            drop_side_conn(inner).await;
            return Err(e.to_string());
        }
    };
    let (k, id) = v.split_once(' ').unwrap_or(("", ""));
    if (k == "c") != committed {
        tracing::error!(
            database,
            "a pending commit was resolved both ways; the first resolution stands ({k})"
        );
    }
    Ok((k == "c", id.to_owned()))
}

/// Resolve pending entry `of` after the server answered the COMMIT; retried until
/// `backplane_timeout`. Delivered once this instance has read the resolution back;
/// Recorded when it could not be written (the pending entry is then resolved from
/// Postgres by whichever instance asks first): the server committed either way.
pub(super) fn resolve(
    inner: &Arc<Inner>,
    database: &str,
    of: &str,
    committed: bool,
) -> super::Pending {
    let (tx, rx) = oneshot::channel();
    let (inner, database, of) = (inner.clone(), database.to_owned(), of.to_owned());
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + inner.settings.timeout;
        let res = loop {
            let attempt = tokio::time::timeout_at(
                deadline,
                write_resolution(&inner, &database, &of, committed),
            )
            .await;
            match attempt {
                Ok(Ok(r)) => break Some(r),
                Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("backplane resolution failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => break None,
            }
        };
        let outcome = match res {
            Some((true, id)) => match parse_id(&id) {
                Some(id) => inner.delivered(&database, id).await,
                None => Outcome::Recorded,
            },
            Some((false, _)) => Outcome::Recorded,
            None => {
                tracing::warn!(
                    database,
                    committed,
                    "cannot confirm pending notifications on the backplane; they are resolved from Postgres later"
                );
                Outcome::Recorded
            }
        };
        let _ = tx.send(outcome);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(p: &str) -> Vec<Notification> {
        vec![Notification {
            pid: 1,
            channel: Bytes::from_static(b"c"),
            payload: Bytes::copy_from_slice(p.as_bytes()),
        }]
    }

    #[test]
    fn each_pending_entry_is_applied_once_whatever_resolves_it() {
        let mut b = Book::default();
        let later = Duration::from_secs(3600);
        b.open("1-0", 10, batch("x"), later);
        b.open("2-0", 11, batch("y"), later);
        assert!(b.due(later).is_empty(), "nothing due before its time");
        assert!(matches!(b.resolve("1-0", true), Apply::Deliver(v) if v == batch("x")));
        // A late second resolution (the original instance's confirmation after another
        // instance resolved it from Postgres) changes nothing.
        assert!(matches!(b.resolve("1-0", true), Apply::Nothing));
        assert!(matches!(b.resolve("1-0", false), Apply::Nothing));
        assert!(matches!(b.resolve("2-0", false), Apply::Nothing));
        assert!(
            matches!(b.resolve("2-0", true), Apply::Nothing),
            "aborted stays aborted"
        );
        // Written before this reader started: fetched once, then known.
        assert!(matches!(b.resolve("0-5", true), Apply::Fetch));
        assert!(matches!(b.resolve("0-5", true), Apply::Nothing));
        // A pending entry seen again after its resolution is not reopened.
        b.open("1-0", 10, batch("x"), Duration::ZERO);
        assert!(b.due(later).is_empty());
    }

    #[test]
    fn unresolved_entries_come_due_and_are_asked_again_later() {
        let mut b = Book::default();
        b.open("3-0", 12, batch("z"), Duration::ZERO);
        assert_eq!(b.due(Duration::from_secs(3600)), [("3-0".to_string(), 12)]);
        assert!(
            b.due(Duration::ZERO).is_empty(),
            "asked again only after `every`"
        );
        assert!(matches!(b.resolve("3-0", true), Apply::Deliver(_)));
        assert!(b.due(Duration::ZERO).is_empty());
    }
}
