//! The upstream relay: for each database with local listeners, one dedicated server
//! connection (outside the pools) that LISTENs on exactly the channels local clients listen
//! to, and publishes what it receives into the hub — notifications raised inside Postgres by
//! triggers, functions and clients connected to Postgres directly. With `forward_notify` it
//! also sends the notifications committed through pgherald to Postgres, and skips its echoes.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::hub::{ChannelEvent, Hub, Notification};
use crate::backend::conn::{Login, ServerConn};
use crate::error::ServerError;
use crate::protocol::framer;

/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Forwarded batches kept while the relay is disconnected; older ones are dropped (logged).
const MAX_PENDING_FORWARDS: usize = 10_000;

/// How a database's relay connects and what it does.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Login of the relay connection.
    pub login: Login,
    /// Relay notifications raised in Postgres to local listeners.
    pub relay: bool,
    /// Send locally committed notifications to Postgres.
    pub forward: bool,
}

#[derive(Debug)]
enum Command {
    Listen(Bytes),
    Unlisten(Bytes),
    Forward(Vec<(Bytes, Bytes)>),
    /// Answer once everything sent before it has been confirmed by the server; with `true`,
    /// after a round trip even when nothing is pending, so that every notification Postgres
    /// raised before it has been read and published.
    Barrier(oneshot::Sender<()>, bool),
}

/// Barriers taken from a run of commands.
#[derive(Default)]
struct Acks {
    /// Answered when the commands before them are confirmed.
    confirm: Vec<oneshot::Sender<()>>,
    /// Answered after a round trip that starts after they arrived.
    round_trip: Vec<oneshot::Sender<()>>,
}

/// What the hub and sessions tell the relays, in one ordered stream.
enum Event {
    Channel(ChannelEvent),
    Barrier(String, oneshot::Sender<()>, bool),
}

/// What a relay is doing, for the admin view and tests.
#[derive(Debug, Default)]
struct View {
    channels: BTreeSet<Bytes>,
    backend_pid: Option<i32>,
    relayed: u64,
    reconnects: u64,
    last_error: Option<String>,
}

/// One relay, as SHOW RELAYS shows it.
#[derive(Debug, Clone)]
pub struct RelayView {
    /// Database.
    pub database: String,
    /// `connected` or `connecting`.
    pub state: &'static str,
    /// Channels LISTENed upstream.
    pub channels: usize,
    /// Notifications relayed from Postgres.
    pub relayed: u64,
    /// Connections lost and re-established.
    pub reconnects: u64,
    /// The last connection error.
    pub last_error: Option<String>,
}

/// State shared by the registry and the relay tasks.
#[derive(Debug)]
struct Shared {
    hub: Arc<Hub>,
    /// Server backend pid → pgherald pid of the client that last held that server.
    owners: DashMap<i32, i32>,
    /// Databases where a notification raised by one of pgherald's own server connections
    /// has been relayed (clients there make Postgres raise notifications).
    raised: DashMap<String, ()>,
    /// Clients (pgherald pid) whose relayed notifications are held for them to publish
    /// together with their own NOTIFYs of the same transaction.
    captures: DashMap<i32, Vec<Notification>>,
    connect_timeout: Duration,
    reconnects: AtomicU64,
    /// Failed attempts to connect or log in.
    connect_failures: AtomicU64,
    relayed: AtomicU64,
}

/// All relays of the process.
#[derive(Debug)]
pub struct Relays {
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    settings: DashMap<String, RelaySettings>,
    /// Client-facing database name → upstream key (for the admin view and tests).
    names: DashMap<String, String>,
    tasks: DashMap<String, mpsc::UnboundedSender<Command>>,
    views: DashMap<String, Arc<Mutex<View>>>,
}

fn lock(v: &Mutex<View>) -> std::sync::MutexGuard<'_, View> {
    v.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relays {
    /// Create the relays and start routing the hub's channel events to them.
    pub fn start(hub: Arc<Hub>, connect_timeout: Duration) -> Arc<Relays> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let watcher = tx.clone();
        hub.watch(Box::new(move |ev| {
            let _ = watcher.send(Event::Channel(ev));
        }));
        let relays = Arc::new(Relays {
            events: tx,
            shared: Arc::new(Shared {
                hub,
                owners: DashMap::new(),
                raised: DashMap::new(),
                captures: DashMap::new(),
                connect_timeout,
                reconnects: AtomicU64::new(0),
                connect_failures: AtomicU64::new(0),
                relayed: AtomicU64::new(0),
            }),
            settings: DashMap::new(),
            names: DashMap::new(),
            tasks: DashMap::new(),
            views: DashMap::new(),
        });
        let weak = Arc::downgrade(&relays);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let Some(relays) = weak.upgrade() else { return };
                match ev {
                    Event::Channel(ev) => {
                        let cmd = if ev.active {
                            Command::Listen(ev.channel)
                        } else {
                            Command::Unlisten(ev.channel)
                        };
                        relays.send(&ev.database, cmd, |s| s.relay);
                    }
                    Event::Barrier(database, ack, round_trip) => {
                        if let Some(tx) = relays.tasks.get(&database) {
                            let _ = tx.send(Command::Barrier(ack, round_trip));
                        }
                    }
                }
            }
        });
        relays
    }

    /// Remember how to reach the upstream database `key` (the first registration wins),
    /// which clients call `name`. True when this registration was the first.
    pub fn register(&self, key: &str, name: &str, settings: RelaySettings) -> bool {
        if !self.names.contains_key(name) {
            self.names.insert(name.to_owned(), key.to_owned());
        }
        if self.settings.contains_key(key) {
            return false;
        }
        let mut first = false;
        self.settings.entry(key.to_owned()).or_insert_with(|| {
            first = true;
            settings
        });
        first
    }

    /// How this instance logs in to the upstream database `key` (the relay's login), once a
    /// client of it has connected here.
    pub fn login(&self, key: &str) -> Option<Login> {
        self.settings.get(key).map(|s| s.login.clone())
    }

    /// The upstream key of a database as clients name it (or `database` itself).
    fn resolve(&self, database: &str) -> String {
        self.names
            .get(database)
            .map(|k| k.clone())
            .unwrap_or_else(|| database.to_owned())
    }

    /// A future that resolves once the relay of `database` has LISTENed upstream on every
    /// channel announced so far (None when the database has no relay). A client's LISTEN
    /// returns only after this, so nothing Postgres raises right after it is missed.
    pub fn barrier(&self, database: &str) -> Option<oneshot::Receiver<()>> {
        self.barrier_event(database, false)
    }

    /// A future that resolves once the relay of `database` has read everything Postgres sent
    /// it before now (a round trip on the relay connection): the notifications a server
    /// connection raised in a transaction it has just committed are then in the hub.
    /// None when the database has no relay.
    pub fn sync(&self, database: &str) -> Option<oneshot::Receiver<()>> {
        self.barrier_event(database, true)
    }

    /// `sync` straight to the relay task, not ordered after channel changes not yet handed
    /// to it (one task hop less): for reading what the server has already sent.
    pub fn sync_now(&self, database: &str) -> Option<oneshot::Receiver<()>> {
        let tx = self.tasks.get(database)?;
        let (ack, rx) = oneshot::channel();
        tx.send(Command::Barrier(ack, true)).ok()?;
        Some(rx)
    }

    /// True when notifications raised in Postgres are relayed for `database`.
    pub fn relays(&self, database: &str) -> bool {
        self.settings.get(database).is_some_and(|s| s.relay)
    }

    fn barrier_event(&self, database: &str, round_trip: bool) -> Option<oneshot::Receiver<()>> {
        if !self.relays(database) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.events
            .send(Event::Barrier(database.to_owned(), tx, round_trip))
            .ok()?;
        Some(rx)
    }

    /// A client with pgherald pid `client_pid` now holds the server backend `server_pid`.
    pub fn note_owner(&self, server_pid: i32, client_pid: i32) {
        self.shared.owners.insert(server_pid, client_pid);
    }

    /// True once a notification raised by one of pgherald's own server connections has been
    /// relayed in `database`, or when the relay found functions or rules there that raise
    /// notifications (checked each time it connects).
    pub fn raised(&self, database: &str) -> bool {
        self.shared.raised.contains_key(database)
    }

    /// A statement sent to the server in `database` may raise notifications there (it
    /// mentions NOTIFY and pgherald did not answer it): count the database as one where
    /// pgherald's clients make Postgres raise (see [`Relays::raised`]).
    pub fn mark_raised(&self, database: &str) {
        if !self.shared.raised.contains_key(database) {
            self.shared.raised.insert(database.to_owned(), ());
        }
    }

    /// Hold what the relay brings from the server connections of client `client_pid` for it
    /// (see `take_capture`) instead of publishing it.
    pub fn capture(&self, client_pid: i32) {
        self.shared.captures.entry(client_pid).or_default();
    }

    /// What was held for `client_pid`, in arrival order; holding stops.
    pub fn take_capture(&self, client_pid: i32) -> Vec<Notification> {
        self.shared
            .captures
            .remove(&client_pid)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    /// True when locally committed notifications of `database` go to Postgres too.
    pub fn forwards(&self, database: &str) -> bool {
        self.settings.get(database).is_some_and(|s| s.forward)
    }

    /// Send one committed transaction's notifications to Postgres (forward_notify).
    pub fn forward(&self, database: &str, batch: Vec<(Bytes, Bytes)>) {
        self.send(database, Command::Forward(batch), |s| s.forward);
    }

    /// Channels the relay of `database` listens on right now (the admin view).
    pub fn listening(&self, database: &str) -> Vec<Bytes> {
        self.views
            .get(&self.resolve(database))
            .map(|v| lock(&v).channels.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Backend pid of the relay connection of `database`, while connected.
    pub fn backend_pid(&self, database: &str) -> Option<i32> {
        self.views
            .get(&self.resolve(database))
            .and_then(|v| lock(&v).backend_pid)
    }

    /// Every relay, by database.
    pub fn views(&self) -> Vec<RelayView> {
        let mut v: Vec<RelayView> = self
            .views
            .iter()
            .map(|e| {
                let v = lock(e.value());
                RelayView {
                    database: e.key().clone(),
                    state: if v.backend_pid.is_some() {
                        "connected"
                    } else {
                        "connecting"
                    },
                    channels: v.channels.len(),
                    relayed: v.relayed,
                    reconnects: v.reconnects,
                    last_error: v.last_error.clone(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.database.cmp(&b.database));
        v
    }

    /// Relay connections lost and re-established since start.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Failed attempts of a relay to connect or log in since start (one WARN each).
    pub fn connect_failures(&self) -> u64 {
        self.shared.connect_failures.load(Ordering::Relaxed)
    }

    /// Notifications relayed from Postgres into the hub since start.
    pub fn relayed(&self) -> u64 {
        self.shared.relayed.load(Ordering::Relaxed)
    }

    fn send(&self, database: &str, cmd: Command, enabled: impl Fn(&RelaySettings) -> bool) {
        let Some(settings) = self.settings.get(database).map(|s| s.clone()) else {
            return;
        };
        if !enabled(&settings) {
            return;
        }
        let tx = self
            .tasks
            .entry(database.to_owned())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let task = Task {
                    database: database.to_owned(),
                    settings,
                    shared: self.shared.clone(),
                    view: self.views.entry(database.to_owned()).or_default().clone(),
                    active: BTreeSet::new(),
                    pending: VecDeque::new(),
                };
                tokio::spawn(task.run(rx));
                tx
            })
            .clone();
        let _ = tx.send(cmd);
    }
}

/// One database's relay connection and what it should be listening on.
struct Task {
    database: String,
    settings: RelaySettings,
    shared: Arc<Shared>,
    view: Arc<Mutex<View>>,
    /// Channels local clients listen on (what the relay should LISTEN on).
    active: BTreeSet<Bytes>,
    /// Forwarded batches not yet sent.
    pending: VecDeque<Vec<(Bytes, Bytes)>>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            match ServerConn::connect(&self.settings.login, self.shared.connect_timeout).await {
                Ok(mut conn) => {
                    if !first {
                        self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                        lock(&self.view).reconnects += 1;
                        tracing::warn!(
                            database = %self.database,
                            "relay reconnected; notifications raised in Postgres while it was away may be lost"
                        );
                    }
                    first = false;
                    backoff = Duration::from_millis(100);
                    lock(&self.view).backend_pid = Some(conn.cancel.pid);
                    match self.serve(&mut conn, &mut rx).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(database = %self.database, "relay connection lost: {e}");
                            lock(&self.view).last_error = Some(e.to_string());
                        }
                    }
                    let mut v = lock(&self.view);
                    v.backend_pid = None;
                    v.channels.clear();
                }
                Err(e) => {
                    first = false;
                    lock(&self.view).last_error = Some(e.to_string());
                    self.shared.connect_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        database = %self.database,
                        user = %self.settings.login.user,
                        retry_in = ?backoff,
                        "relay cannot connect: {e}"
                    );
                }
            }
            // Keep following what local clients listen on while away.
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    cmd = rx.recv() => match cmd {
                        Some(c) => {
                            // A barrier while away answers at once: clients are not held up.
                            self.absorb(c, &mut Acks::default());
                        }
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Record a command's effect on the wanted state; barriers go to `acks`.
    fn absorb(&mut self, cmd: Command, acks: &mut Acks) -> Option<String> {
        match cmd {
            Command::Barrier(ack, false) => {
                acks.confirm.push(ack);
                None
            }
            Command::Barrier(ack, true) => {
                acks.round_trip.push(ack);
                None
            }
            Command::Listen(c) => {
                if self.active.insert(c.clone()) {
                    ident(&c).map(|q| format!("LISTEN {q};"))
                } else {
                    None
                }
            }
            Command::Unlisten(c) => {
                if self.active.remove(&c) {
                    ident(&c).map(|q| format!("UNLISTEN {q};"))
                } else {
                    None
                }
            }
            Command::Forward(batch) => {
                if self.pending.len() >= MAX_PENDING_FORWARDS {
                    self.pending.pop_front();
                    tracing::warn!(database = %self.database, "relay forward queue full; oldest batch dropped");
                }
                self.pending.push_back(batch);
                None
            }
        }
    }

    async fn serve(
        &mut self,
        conn: &mut ServerConn,
        rx: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), ServerError> {
        let mut sql = String::from("SET application_name = 'pgherald relay';");
        for c in &self.active {
            if let Some(q) = ident(c) {
                sql.push_str(&format!("LISTEN {q};"));
            }
        }
        // Before any LISTEN, so that no notification can arrive in between.
        if !self.shared.raised.contains_key(&self.database) && has_rows(conn, RAISERS).await? {
            self.shared.raised.insert(self.database.clone(), ());
        }
        conn.run_quiet(&sql).await?;
        lock(&self.view).channels = self.active.clone();
        let own_pid = conn.cancel.pid;
        // Barrier acks per Query in flight, answered at its ReadyForQuery.
        let mut waiting: VecDeque<Vec<oneshot::Sender<()>>> = VecDeque::new();
        // Round trips asked for while a Query was in flight: one empty statement for all of
        // them once nothing is in flight, so a burst of them costs one round trip.
        let mut queued: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let mut sql = String::new();
            self.take_forwards(&mut sql);
            if !sql.is_empty() {
                send_query(conn, &sql).await?;
                waiting.push_back(Vec::new());
                continue;
            }
            tokio::select! {
                msg = conn.next_message() => {
                    let (tag, body) = msg?;
                    match tag {
                        b'A' => self.relay(&body, own_pid),
                        b'Z' => {
                            for ack in waiting.pop_front().unwrap_or_default() {
                                let _ = ack.send(());
                            }
                            if waiting.is_empty() && !queued.is_empty() {
                                send_query(conn, ";").await?;
                                waiting.push_back(std::mem::take(&mut queued));
                            }
                        }
                        b'E' => {
                            let text = String::from_utf8_lossy(framer::field(&body, b'M').unwrap_or_default()).into_owned();
                            if framer::field(&body, b'V') == Some(b"FATAL") {
                                return Err(ServerError::Protocol(text));
                            }
                            tracing::warn!(database = %self.database, "relay command failed: {text}");
                        }
                        _ => {}
                    }
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    let mut sql = String::new();
                    let mut acks = Acks::default();
                    sql.extend(self.absorb(cmd, &mut acks));
                    while let Ok(cmd) = rx.try_recv() {
                        sql.extend(self.absorb(cmd, &mut acks));
                    }
                    let Acks { mut confirm, round_trip } = acks;
                    if !sql.is_empty() {
                        send_query(conn, &sql).await?;
                        lock(&self.view).channels = self.active.clone();
                        confirm.extend(round_trip);
                        waiting.push_back(confirm);
                    } else if !round_trip.is_empty() && waiting.is_empty() {
                        // An empty statement: the server answers after the notifications it owes.
                        send_query(conn, ";").await?;
                        confirm.extend(round_trip);
                        waiting.push_back(confirm);
                    } else if let Some(last) = waiting.back_mut() {
                        last.extend(confirm);
                        queued.extend(round_trip);
                    } else {
                        for ack in confirm {
                            let _ = ack.send(());
                        }
                    }
                }
            }
        }
    }

    /// Pending forwarded batches as one Query, one transaction per pgherald commit.
    fn take_forwards(&mut self, sql: &mut String) {
        while let Some(batch) = self.pending.pop_front() {
            sql.push_str("BEGIN;");
            for (channel, payload) in &batch {
                if let (Some(c), Ok(p)) = (ident(channel), std::str::from_utf8(payload)) {
                    sql.push_str(&format!("NOTIFY {c}, {};", literal(p)));
                }
            }
            sql.push_str("COMMIT;");
        }
    }

    /// A notification arrived from Postgres: publish it to local listeners, unless it is
    /// the echo of one pgherald forwarded itself.
    fn relay(&self, body: &[u8], own_pid: i32) {
        let Some(pid) = body
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return;
        };
        if pid == own_pid {
            return;
        }
        let Some((channel, rest)) = framer::cstr(&body[4..]) else {
            return;
        };
        let Some((payload, _)) = framer::cstr(rest) else {
            return;
        };
        let owner = self.shared.owners.get(&pid).map(|p| *p);
        self.shared.relayed.fetch_add(1, Ordering::Relaxed);
        lock(&self.view).relayed += 1;
        let n = Notification {
            pid: owner.unwrap_or(pid),
            channel: Bytes::copy_from_slice(channel),
            payload: Bytes::copy_from_slice(payload),
        };
        if let Some(owner) = owner {
            if !self.shared.raised.contains_key(&self.database) {
                self.shared.raised.insert(self.database.clone(), ());
            }
            if let Some(mut held) = self.shared.captures.get_mut(&owner) {
                held.push(n);
                return;
            }
        }
        self.shared.hub.publish_relayed(&self.database, &[n]);
    }
}

/// Functions (triggers, procedures) or rules of the database that may raise notifications:
/// their source mentions NOTIFY, or a rule's action is one. Then clients' statements there
/// are taken to raise notifications from the first transaction on (see `Relays::raised`).
const RAISERS: &str = "SELECT 1 FROM pg_catalog.pg_proc \
     WHERE prosrc ~* 'notify' AND pronamespace NOT IN \
     ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) \
     UNION ALL SELECT 1 FROM pg_catalog.pg_rewrite WHERE ev_action::text ~ 'NOTIFY' LIMIT 1";

/// Run `sql` on the relay connection before it LISTENs: does it return a row?
async fn has_rows(conn: &mut ServerConn, sql: &str) -> Result<bool, ServerError> {
    send_query(conn, sql).await?;
    let mut rows = false;
    loop {
        let (tag, body) = conn.next_message().await?;
        match tag {
            b'D' => rows = true,
            b'E' => {
                let text = String::from_utf8_lossy(framer::field(&body, b'M').unwrap_or_default());
                tracing::debug!("relay catalog check failed: {text}");
            }
            b'Z' => return Ok(rows),
            _ => {}
        }
    }
}

async fn send_query(conn: &mut ServerConn, sql: &str) -> Result<(), ServerError> {
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out)?;
    conn.wr.write_all(&out).await?;
    Ok(())
}

/// A channel as a quoted identifier; None when it is not valid UTF-8.
fn ident(channel: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(channel).ok()?;
    Some(format!("\"{}\"", s.replace('"', "\"\"")))
}

/// A payload as an escaped string literal.
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident(b"a\"b").as_deref(), Some("\"a\"\"b\""));
        assert_eq!(ident(&[0xff]), None);
        assert_eq!(literal("it's \\ x"), "E'it''s \\\\ x'");
    }
}
