//! The in-memory LISTEN/NOTIFY hub: channel index keyed by (database, channel bytes), one
//! ordered publish step per database, and each listener's bounded mailbox of encoded
//! NotificationResponse frames. Sessions own the protocol timing; this module only fans out.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Notify;

use super::frame::encode;
use super::history::History;
pub use super::mailbox::Mailbox;

mod view;
pub use view::{ChannelView, ListenerView};

/// One notification of a committed transaction, as the hub receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The sender's pgherald process ID (its virtual BackendKeyData pid).
    pub pid: i32,
    /// Channel name bytes, matched exactly.
    pub channel: Bytes,
    /// Payload bytes (empty for an omitted or NULL payload).
    pub payload: Bytes,
}

/// What a listener's mailbox yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A complete NotificationResponse (`A`) message, ready to write to the client.
    Frame(Bytes),
    /// The mailbox overflowed; sent once, after everything queued before the overflow.
    /// The session must disconnect the client with FATAL 54000 naming `limit`.
    Overflow {
        /// The configured per-listener queue limit.
        limit: usize,
    },
    /// Notifications for this listener were lost on the way (a backplane gap); sent once,
    /// after everything queued before. The session must end with a FATAL saying so.
    Lost,
}

/// Hub counters since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Notifications handed to `publish` (before fan-out).
    pub published: u64,
    /// Frames queued into mailboxes (one per listener per notification).
    pub delivered: u64,
    /// Listeners whose mailbox overflowed (each is to be disconnected).
    pub overflows: u64,
}

/// A channel of a database gained its first listener or lost its last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEvent {
    /// Database name.
    pub database: String,
    /// Channel bytes.
    pub channel: Bytes,
    /// True: first listener arrived; false: last listener left.
    pub active: bool,
}

/// Callback told of channel activity changes.
pub type Watcher = Box<dyn Fn(ChannelEvent) + Send + Sync>;

/// The pub/sub hub shared by all sessions as `Arc<Hub>`.
pub struct Hub {
    limit: usize,
    /// Told of channel activity changes (the upstream relay), in state order per database;
    /// called under the database lock, so it must not block.
    watcher: std::sync::OnceLock<Watcher>,
    databases: DashMap<String, Arc<DbHub>>,
    next_id: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    overflows: AtomicU64,
}

/// One database's channel index. Its mutex is also the publish-order lock: a batch is
/// enqueued into every mailbox while it is held, so all listeners see one commit order.
#[derive(Default)]
struct DbHub {
    state: Mutex<DbState>,
}

#[derive(Default)]
struct DbState {
    /// channel → its listeners. An entry exists only while it has at least one listener.
    channels: HashMap<Box<[u8]>, Listeners>,
    /// live subscriber id → the channels it is registered on, and what it admits there.
    subscribers: HashMap<u64, HashMap<Box<[u8]>, Admit>>,
    /// Publish sequence numbers and what listeners inside a transaction may still read.
    history: History,
    /// live subscriber id → its owner (the client's virtual pid) and mailbox, for SHOW.
    mailboxes: HashMap<u64, (i32, Arc<Shared>)>,
}

/// What a subscriber takes of a channel's notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Everything: the subscriber listens.
    All,
    /// Nothing yet: reserved ahead of a LISTEN that has not committed (see
    /// [`Subscriber::reserve`]); it already counts as a listener for the relay.
    Nothing,
    /// Only what this pid raised inside Postgres (relayed): the subscriber's own
    /// transaction may raise notifications there that commit together with its LISTEN.
    /// Its NOTIFYs through pgherald never need this (its listens apply before they are
    /// published), and one that committed before the LISTEN must not pass (item 16).
    From(i32),
}

impl Admit {
    fn admits(self, pid: i32, relayed: bool) -> bool {
        match self {
            Admit::All => true,
            Admit::Nothing => false,
            Admit::From(p) => relayed && p == pid,
        }
    }
}

/// One listener of a channel.
struct Listener {
    id: u64,
    shared: Arc<Shared>,
    admit: Admit,
}

/// A channel's listeners: a dense vector for fast fan-out plus an id → slot map so that
/// removal is O(1) (swap_remove).
#[derive(Default)]
struct Listeners {
    list: Vec<Listener>,
    slot: HashMap<u64, usize>,
    /// Notifications published to the channel while it had listeners.
    published: u64,
    /// Notifications queued to its listeners.
    delivered: u64,
}

impl Listeners {
    fn insert(&mut self, id: u64, shared: &Arc<Shared>, admit: Admit) {
        match self.slot.get(&id) {
            Some(&i) => self.list[i].admit = admit,
            None => {
                self.slot.insert(id, self.list.len());
                self.list.push(Listener {
                    id,
                    shared: Arc::clone(shared),
                    admit,
                });
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.slot.remove(&id) {
            self.list.swap_remove(i);
            if let Some(moved) = self.list.get(i) {
                self.slot.insert(moved.id, i);
            }
        }
    }
}

/// The state shared by a `Subscriber` (and the publishers reaching it) and its `Mailbox`.
pub(super) struct Shared {
    pub(super) queue: Mutex<Queue>,
    pub(super) notify: Notify,
    /// A notification raised inside Postgres (relayed) has been queued here.
    fed: AtomicBool,
}

#[derive(Default)]
pub(super) struct Queue {
    /// Frames with their publish sequence numbers, in publish order.
    pub(super) frames: VecDeque<(u64, Bytes)>,
    /// The limit was hit: nothing more is queued.
    pub(super) overflowed: bool,
    /// `Delivery::Overflow` has been handed out.
    pub(super) overflow_reported: bool,
    /// Notifications were lost (`Hub::lose`): nothing more is queued.
    pub(super) lost: bool,
    /// `Delivery::Lost` has been handed out.
    pub(super) lost_reported: bool,
    /// The `Mailbox` was dropped: nobody will read.
    pub(super) receiver_gone: bool,
    /// The `Subscriber` was dropped: nothing more will arrive.
    pub(super) sender_gone: bool,
    /// Most frames ever queued at once.
    pub(super) max_len: usize,
    /// Frames queued in total.
    pub(super) queued_total: u64,
}

enum Push {
    Queued,
    Skipped,
    Overflowed,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Queues one frame; called by publishers under the database lock, never blocks on I/O.
    fn push(&self, seq: u64, frame: &Bytes, limit: usize) -> Push {
        let mut q = lock(&self.queue);
        if q.overflowed || q.lost || q.receiver_gone {
            return Push::Skipped;
        }
        if q.frames.len() >= limit {
            q.overflowed = true;
            drop(q);
            self.notify.notify_one();
            return Push::Overflowed;
        }
        let was_empty = q.frames.is_empty();
        q.frames.push_back((seq, frame.clone()));
        q.max_len = q.max_len.max(q.frames.len());
        q.queued_total += 1;
        drop(q);
        // A non-empty queue is always re-checked by the receiver before it waits, so only
        // the empty → non-empty transition needs a wake-up.
        if was_empty {
            self.notify.notify_one();
        }
        Push::Queued
    }
}

impl Hub {
    /// Creates a hub whose mailboxes hold at most `listener_queue_limit` notifications
    /// (a limit of 0 is treated as 1).
    pub fn new(listener_queue_limit: usize) -> Arc<Hub> {
        Arc::new(Hub {
            limit: listener_queue_limit.max(1),
            watcher: std::sync::OnceLock::new(),
            databases: DashMap::new(),
            next_id: AtomicU64::new(1),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
        })
    }

    /// Registers a session in `database` (once, lazily, at its first LISTEN). Returns the handle
    /// that manages its channels and the receiving end of its mailbox.
    pub fn subscriber(self: &Arc<Self>, database: &str) -> (Subscriber, Mailbox) {
        self.subscriber_of(database, 0)
    }

    /// `subscriber` for the client whose virtual pid is `owner` (shown by SHOW LISTENERS).
    pub fn subscriber_of(self: &Arc<Self>, database: &str, owner: i32) -> (Subscriber, Mailbox) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            fed: AtomicBool::new(false),
        });
        // Register while holding the map entry so an empty-database cleanup cannot race us.
        let entry = self.databases.entry(database.to_owned()).or_default();
        let db = Arc::clone(entry.value());
        {
            let mut st = lock(&db.state);
            st.subscribers.insert(id, HashMap::new());
            st.mailboxes.insert(id, (owner, Arc::clone(&shared)));
        }
        drop(entry);
        let sub = Subscriber {
            hub: Arc::clone(self),
            database: database.to_owned(),
            db,
            id,
            shared: Arc::clone(&shared),
        };
        (
            sub,
            Mailbox {
                shared,
                limit: self.limit,
            },
        )
    }

    /// Publishes one committed transaction's notifications, in order, to the listeners of each
    /// channel in `database` at this moment. Frames are encoded once, outside the lock; the
    /// database lock is held only while enqueueing. Never blocks on a slow listener.
    pub fn publish(&self, database: &str, batch: &[Notification]) {
        self.publish_from(database, batch, false);
    }

    /// `publish` for notifications the relay brings from Postgres: their listeners are
    /// marked as fed by Postgres (see [`Subscriber::fed`]).
    pub fn publish_relayed(&self, database: &str, batch: &[Notification]) {
        self.publish_from(database, batch, true);
    }

    fn publish_from(&self, database: &str, batch: &[Notification], relayed: bool) {
        if batch.is_empty() {
            return;
        }
        self.published
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let Some(db) = self.databases.get(database).map(|e| Arc::clone(e.value())) else {
            return;
        };
        let frames: Vec<Option<Bytes>> = batch
            .iter()
            .map(|n| encode(n.pid, &n.channel, &n.payload))
            .collect();
        let mut delivered = 0u64;
        let mut overflowed: Vec<u64> = Vec::new();
        {
            let mut st = lock(&db.state);
            let st = &mut *st;
            for (n, frame) in batch.iter().zip(&frames) {
                let Some(frame) = frame else {
                    continue;
                };
                let seq = st.history.next();
                st.history.record(seq, &n.channel, frame, self.limit);
                let Some(listeners) = st.channels.get_mut(&n.channel[..]) else {
                    continue;
                };
                listeners.published += 1;
                for l in listeners
                    .list
                    .iter()
                    .filter(|l| l.admit.admits(n.pid, relayed))
                {
                    match l.shared.push(seq, frame, self.limit) {
                        Push::Queued => {
                            delivered += 1;
                            listeners.delivered += 1;
                            if relayed {
                                l.shared.fed.store(true, Ordering::Relaxed);
                            }
                        }
                        Push::Overflowed => overflowed.push(l.id),
                        Push::Skipped => {}
                    }
                }
            }
        }
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        if !overflowed.is_empty() {
            self.overflows
                .fetch_add(overflowed.len() as u64, Ordering::Relaxed);
            for id in overflowed {
                tracing::warn!(
                    database,
                    subscriber = id,
                    limit = self.limit,
                    "listener notification queue full; listener will be disconnected"
                );
            }
        }
    }

    /// Notifications of `database` were lost before they reached this hub: every current
    /// listener gets `Delivery::Lost` after what it has queued, and nothing more. Returns
    /// how many listeners that ends.
    pub fn lose(&self, database: &str) -> usize {
        let Some(db) = self.databases.get(database).map(|e| Arc::clone(e.value())) else {
            return 0;
        };
        let st = lock(&db.state);
        let mut ended = 0;
        let mut seen = std::collections::HashSet::new();
        for l in st.channels.values().flat_map(|c| c.list.iter()) {
            if seen.insert(l.id) {
                let mut q = lock(&l.shared.queue);
                if !q.lost && !q.overflowed {
                    q.lost = true;
                    ended += 1;
                    drop(q);
                    l.shared.notify.notify_one();
                }
            }
        }
        ended
    }

    /// Report every channel that gains its first or loses its last listener to `watcher`
    /// (set once; later calls are ignored). It is called under the database lock.
    pub fn watch(&self, watcher: Watcher) {
        let _ = self.watcher.set(watcher);
    }

    fn announce(&self, database: &str, channel: &[u8], active: bool) {
        if let Some(w) = self.watcher.get() {
            w(ChannelEvent {
                database: database.to_owned(),
                channel: Bytes::copy_from_slice(channel),
                active,
            });
        }
    }

    /// How many subscribers in `database` currently listen on `channel`.
    pub fn listener_count(&self, database: &str, channel: &[u8]) -> usize {
        self.with_db(database, |st| {
            st.channels.get(channel).map_or(0, |l| l.list.len())
        })
    }

    /// How many channels in `database` have at least one listener.
    pub fn channel_count(&self, database: &str) -> usize {
        self.with_db(database, |st| st.channels.len())
    }

    /// Counters: notifications published, frames delivered, overflow disconnects.
    pub fn stats(&self) -> HubStats {
        HubStats {
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            overflows: self.overflows.load(Ordering::Relaxed),
        }
    }

    fn with_db<R: Default>(&self, database: &str, f: impl FnOnce(&DbState) -> R) -> R {
        match self.databases.get(database).map(|e| Arc::clone(e.value())) {
            Some(db) => f(&lock(&db.state)),
            None => R::default(),
        }
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("limit", &self.limit)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A session's registration in one database; manages which channels it listens on.
/// Dropping it unlistens everything and ends its mailbox once drained.
pub struct Subscriber {
    hub: Arc<Hub>,
    database: String,
    db: Arc<DbHub>,
    id: u64,
    shared: Arc<Shared>,
}

impl Subscriber {
    /// Starts receiving notifications on `channel` (no-op if already listening).
    pub fn listen(&self, channel: &[u8]) {
        self.update(&[channel], &[] as &[&[u8]]);
    }

    /// Stops receiving notifications on `channel` (silent if not listening).
    pub fn unlisten(&self, channel: &[u8]) {
        self.update(&[] as &[&[u8]], &[channel]);
    }

    /// Stops receiving notifications on every channel (reservations included).
    pub fn unlisten_all(&self) {
        let mut st = lock(&self.db.state);
        let st = &mut *st;
        let channels = match st.subscribers.get_mut(&self.id) {
            Some(set) => std::mem::take(set),
            None => return,
        };
        for c in channels.into_keys() {
            if remove_listener(&mut st.channels, &c, self.id) {
                self.hub.announce(&self.database, &c, false);
            }
        }
    }

    /// Applies a committed transaction's net listen changes atomically with respect to
    /// publishers: a concurrent commit batch is seen either entirely before or after them.
    /// A reserved channel that is listened to now takes everything.
    pub fn update<L: AsRef<[u8]>, U: AsRef<[u8]>>(&self, listen: &[L], unlisten: &[U]) {
        self.update_since(listen, unlisten, None);
    }

    /// `update`, and when the subscriber's transaction opened a window at `since`: the
    /// channels listened to now also get what was published on them after it, merged
    /// into the mailbox in publish order (item 18), atomically with respect to publishers.
    pub fn update_since<L: AsRef<[u8]>, U: AsRef<[u8]>>(
        &self,
        listen: &[L],
        unlisten: &[U],
        since: Option<u64>,
    ) {
        let mut st = lock(&self.db.state);
        let st = &mut *st;
        let Some(mine) = st.subscribers.get_mut(&self.id) else {
            return;
        };
        for c in unlisten {
            let c = c.as_ref();
            if mine.remove(c).is_some() && remove_listener(&mut st.channels, c, self.id) {
                self.hub.announce(&self.database, c, false);
            }
        }
        for c in listen {
            self.register(&mut st.channels, mine, c.as_ref(), Admit::All);
        }
        if let Some(start) = since.filter(|_| !listen.is_empty()) {
            let missed = st
                .history
                .since(start, |c| listen.iter().any(|l| l.as_ref() == c));
            self.backfill(missed);
        }
    }

    /// Open a window: the subscriber (a registered listener) enters a transaction; what is
    /// published from now on stays readable for it until `close_window`. Returns its start.
    pub fn open_window(&self) -> u64 {
        lock(&self.db.state).history.open()
    }

    /// Close the window opened at `start` (the subscriber reads its mailbox again).
    pub fn close_window(&self, start: u64) {
        lock(&self.db.state).history.close(start);
    }

    /// The subscriber's last channel went (Postgres's `asyncQueueUnregister`): what is queued
    /// and not yet read is never delivered, even if it LISTENs again before reading.
    pub fn forget_queued(&self) {
        lock(&self.shared.queue).frames.clear();
    }

    /// Merge frames published earlier into the mailbox, by sequence number; frames already
    /// queued (a reservation admitted them) are not doubled.
    fn backfill(&self, missed: Vec<(u64, Bytes)>) {
        if missed.is_empty() {
            return;
        }
        let mut q = lock(&self.shared.queue);
        if q.overflowed || q.receiver_gone {
            return;
        }
        for (seq, frame) in missed {
            let at = q.frames.partition_point(|(s, _)| *s < seq);
            if q.frames.get(at).is_some_and(|(s, _)| *s == seq) {
                continue;
            }
            q.frames.insert(at, (seq, frame));
            q.queued_total += 1;
        }
        q.max_len = q.max_len.max(q.frames.len());
        drop(q);
        self.shared.notify.notify_one();
    }

    /// Reserves `channels` ahead of a LISTEN that commits on the server's say-so: each counts
    /// as a listener at once (so the relay LISTENs upstream) but takes nothing until
    /// [`Subscriber::admit_own`] or [`Subscriber::update`]. Channels already held are unchanged.
    pub fn reserve<C: AsRef<[u8]>>(&self, channels: &[C]) {
        let mut st = lock(&self.db.state);
        let st = &mut *st;
        let Some(mine) = st.subscribers.get_mut(&self.id) else {
            return;
        };
        for c in channels {
            if !mine.contains_key(c.as_ref()) {
                self.register(&mut st.channels, mine, c.as_ref(), Admit::Nothing);
            }
        }
    }

    /// Reserved channels take what `pid` sends from now on: notifications the subscriber's
    /// own transaction raises, which commit together with its LISTEN.
    pub fn admit_own(&self, pid: i32) {
        self.set_reserved(Some(Admit::From(pid)));
    }

    /// Drops every reservation that no committed LISTEN turned into a listen.
    pub fn drop_reserved(&self) {
        self.set_reserved(None);
    }

    /// Whether this subscriber currently listens on `channel` in the hub (reservations aside).
    pub fn is_listening(&self, channel: &[u8]) -> bool {
        lock(&self.db.state)
            .subscribers
            .get(&self.id)
            .is_some_and(|s| s.get(channel) == Some(&Admit::All))
    }

    /// Whether a notification raised inside Postgres has ever reached this subscriber.
    pub fn fed(&self) -> bool {
        self.shared.fed.load(Ordering::Relaxed)
    }

    /// Whether `channel` is listened to or reserved.
    pub fn is_registered(&self, channel: &[u8]) -> bool {
        lock(&self.db.state)
            .subscribers
            .get(&self.id)
            .is_some_and(|s| s.contains_key(channel))
    }

    /// Add or change this subscriber's registration on `c`, announcing a channel's first one.
    fn register(
        &self,
        channels: &mut HashMap<Box<[u8]>, Listeners>,
        mine: &mut HashMap<Box<[u8]>, Admit>,
        c: &[u8],
        admit: Admit,
    ) {
        if mine.get(c) == Some(&admit) {
            return;
        }
        let key: Box<[u8]> = c.into();
        mine.insert(key.clone(), admit);
        let listeners = channels.entry(key).or_default();
        if listeners.list.is_empty() {
            self.hub.announce(&self.database, c, true);
        }
        listeners.insert(self.id, &self.shared, admit);
    }

    /// Set every reservation to `admit`, or remove them all (None).
    fn set_reserved(&self, admit: Option<Admit>) {
        let mut st = lock(&self.db.state);
        let st = &mut *st;
        let Some(mine) = st.subscribers.get_mut(&self.id) else {
            return;
        };
        let reserved: Vec<Box<[u8]>> = mine
            .iter()
            .filter(|(_, a)| **a != Admit::All)
            .map(|(c, _)| c.clone())
            .collect();
        for c in reserved {
            match admit {
                Some(a) => self.register(&mut st.channels, mine, &c, a),
                None => {
                    mine.remove(&c);
                    if remove_listener(&mut st.channels, &c, self.id) {
                        self.hub.announce(&self.database, &c, false);
                    }
                }
            }
        }
    }
}

/// Remove a listener; true when the channel lost its last listener.
fn remove_listener(channels: &mut HashMap<Box<[u8]>, Listeners>, channel: &[u8], id: u64) -> bool {
    if let Some(l) = channels.get_mut(channel) {
        l.remove(id);
        if l.list.is_empty() {
            channels.remove(channel);
            return true;
        }
    }
    false
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.unlisten_all();
        let now_empty = {
            let mut st = lock(&self.db.state);
            st.subscribers.remove(&self.id);
            st.mailboxes.remove(&self.id);
            st.subscribers.is_empty()
        };
        lock(&self.shared.queue).sender_gone = true;
        self.shared.notify.notify_one();
        if now_empty {
            // Lock order is map shard → database state, as in `Hub::subscriber`.
            self.hub.databases.remove_if(&self.database, |_, db| {
                lock(&db.state).subscribers.is_empty()
            });
        }
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("database", &self.database)
            .field("id", &self.id)
            .finish()
    }
}
