//! The per-client session: greet the client, then forward frames both ways between the
//! client and a pooled server connection, taking a server when the client needs one and
//! giving it back at the end of each transaction (transaction mode) or at disconnect.
//!
//! Frames are split by header only. Client frames are turned into reply-plan entries
//! (`inbound`), server frames are matched against the plan (`outbound`); this module owns
//! the session's state, the login greeting, server checkout/release and the I/O loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::backend::cancel::CancelHandle;
use crate::backend::conn::{get_param, set_param, Params};
use crate::backend::pool::{Checkout, Pool};
use crate::backend::prepared::ClientStatements;
use crate::backend::stats::SessionCounts;
use crate::config::PoolMode;
use crate::error::ServerError;
use crate::frontend::channels::Channels;
use crate::frontend::client::ClientIo;
use crate::frontend::extended::Extended;
use crate::frontend::hold::Hold;
use crate::frontend::params;
use crate::frontend::plan::Entry;
use crate::frontend::registry::{self, Control, Registration};
use crate::frontend::timeouts::{Activity, ClientTimeouts};
use crate::live::Snapshot;
use crate::protocol::encoding::Conversion;
use crate::protocol::reply;
use crate::App;

/// Frames larger than this are streamed through instead of being buffered whole.
pub(crate) const STREAM_THRESHOLD: usize = 256 * 1024;
/// While writing to the server, at most this much server output is buffered before it
/// is forwarded to the client.
const SERVER_BACKLOG: usize = 4 * 1024 * 1024;
/// Housekeeping on a server (ROLLBACK, reset query) must finish within this.
pub(crate) const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) use crate::frontend::ending::Exit;

/// One client's session.
pub(crate) struct Session {
    pub(crate) app: Arc<App>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) client: ClientIo,
    pub(crate) server: Option<Checkout>,
    pub(crate) cancel: CancelHandle,
    /// What the console or shutdown asks of this session.
    pub(crate) control: watch::Receiver<Control>,
    /// This client's entry in the registry.
    pub(crate) reg: Registration,
    /// The configuration as of login.
    pub(crate) cfg: Arc<Snapshot>,
    /// Counts not yet added to the pool's.
    pub(crate) counts: SessionCounts,
    /// The server works on a request since.
    pub(crate) busy_since: Option<Instant>,
    /// The current transaction started.
    pub(crate) xact_since: Option<Instant>,
    /// Settings the client expects on whatever server runs its queries.
    pub(crate) wants: Params,
    /// The server encoding, as the server reported it at login.
    pub(crate) server_encoding: Option<String>,
    /// What the server (and pgherald) still owe the client, in order.
    pub(crate) plan: VecDeque<Entry>,
    /// Extended-protocol messages received since the last Sync.
    pub(crate) batch_open: bool,
    /// Some message of the current extended batch went to the server.
    pub(crate) batch_forwarded: bool,
    /// The current extended batch hit an error: replies are skipped until Sync.
    pub(crate) batch_failed: bool,
    /// pgherald raised the batch's error itself: the server's own error for the batch
    /// (if any) is swallowed.
    pub(crate) local_error: bool,
    /// pgherald answered an Execute of the current batch itself and the server has not run an
    /// Execute since: the server lacks Postgres's pipeline mark (see `pipeline`).
    pub(crate) local_executed: bool,
    /// Transaction status of the last ReadyForQuery the client saw.
    pub(crate) status: u8,
    /// The server's transaction status as of the replies processed so far (changes within
    /// a batch or Query at BEGIN, COMMIT, ROLLBACK and errors).
    pub(crate) live: u8,
    /// Postgres would have an implicit transaction open: an extended-protocol message was
    /// answered outside any block, and no Sync, error or COMMIT/ROLLBACK ended it since.
    pub(crate) implicit: bool,
    /// Replies held back while a Query with fillers runs.
    pub(crate) hold: Hold,
    /// Bytes of a large client frame still to stream to the server.
    pub(crate) client_pass: usize,
    /// Bytes of a large server frame still to stream to the client.
    pub(crate) server_pass: usize,
    /// A write to the server is in progress: never release it now.
    pub(crate) writing: bool,
    /// The server sent a FATAL error.
    pub(crate) server_fatal: bool,
    /// Shutdown is under way: close as soon as the client is idle.
    pub(crate) closing: bool,
    /// LISTEN/NOTIFY state.
    pub(crate) ch: Channels,
    /// Intercepted prepared statements and portals.
    pub(crate) ext: Extended,
    /// The client's named statements (transaction pooling).
    pub(crate) stmts: ClientStatements,
    /// When statement names were Parsed, for `DEALLOCATE` answered in reply order.
    pub(crate) births: super::dealloc::Births,
    /// The client is in a block whose BEGIN pgherald answered and the server has not seen.
    pub(crate) deferred: bool,
    /// The deferred BEGIN goes to the server in front of the next write.
    pub(crate) owe_begin: bool,
    /// The client message being decided is followed, in what has arrived, by a Sync or Flush.
    pub(crate) flush_follows: bool,
    /// pgherald's own ReadyForQuery, due once the relay round trip its commit waits for is
    /// done (`relay_sync`); pgherald's later replies wait behind it.
    pub(crate) ready_after_relay: Option<u8>,
    /// Transaction mode: something since the server was taken may have changed its session
    /// state (`state`); it is probed before the server goes back.
    pub(crate) touched: bool,
    /// Transaction mode: the client left state on its server that cannot be carried, so it
    /// keeps that server until it disconnects.
    pub(crate) pinned: bool,
    /// A statement sent to the server may have made it LISTEN (`adopt`).
    pub(crate) server_listen_hint: bool,
    /// client_idle_timeout, idle_transaction_timeout, query_timeout for this client.
    pub(crate) limits: ClientTimeouts,
    /// When the client last sent something (kept only when a limit is on).
    pub(crate) last_client: std::time::Instant,
    /// Since when the server owes replies (kept only when a limit is on).
    pub(crate) query_since: Option<std::time::Instant>,
}

impl Session {
    pub(crate) fn transaction_mode(&self) -> bool {
        self.pool.mode == PoolMode::Transaction
    }

    /// Nothing is in flight in either direction.
    pub(crate) fn quiet(&self) -> bool {
        self.plan.is_empty() && !self.batch_open && self.client_pass == 0 && self.server_pass == 0
    }

    /// Quiet and outside a transaction: notifications are pushed at once (item 21) and a
    /// transaction-mode server can go back to the pool.
    pub(crate) fn idle(&self) -> bool {
        self.status == b'I' && self.quiet()
    }

    /// Follow the client's client_encoding (login, SET, RESET): pgherald converts what it
    /// takes from the client and what it writes to it between that and the server encoding.
    pub(crate) fn follow_encoding(&mut self) {
        let client = self
            .wants
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("client_encoding"))
            .map(|(_, v)| v.as_str());
        self.ch.conv = Conversion::new(client, self.server_encoding.as_deref());
    }

    /// A notification could not be converted for the client: the session ends (the caller
    /// has written everything that precedes it).
    pub(crate) fn delivery_failed(&mut self) -> Result<(), Exit> {
        match self.ch.unconvertible.take() {
            Some(e) => Err(Exit::Unconvertible(e)),
            None => Ok(()),
        }
    }

    /// Postgres would deliver notifications now (spec C, items 21 and 25): every message the
    /// client sent so far is answered, and no transaction is open, not even the implicit one
    /// of an extended batch — after an error or a COMMIT in a batch without Sync, too.
    pub(crate) fn deliverable(&self) -> bool {
        self.plan.is_empty()
            && self.client_pass == 0
            && self.server_pass == 0
            && self.live == b'I'
            && !self.implicit
    }

    /// Write what the mailbox holds, when Postgres would deliver it now.
    pub(crate) async fn deliver_pending(&mut self) -> Result<(), Exit> {
        if self.ch.has_mailbox() && self.deliverable() {
            self.ch.drain_into(&mut self.client.out);
            self.flush_out().await?;
            self.delivery_failed()?;
        }
        Ok(())
    }

    /// The session's standard_conforming_strings.
    pub(crate) fn scs(&self) -> bool {
        get_param(&self.wants, "standard_conforming_strings") != Some("off")
    }

    /// AuthenticationOk was sent; now ParameterStatus, BackendKeyData, ReadyForQuery.
    pub(crate) async fn greet(&mut self, settings: Params) -> Result<(), Exit> {
        let welcome = self.pool.welcome();
        let need_server = match &welcome {
            None => true,
            Some(w) => settings
                .iter()
                .any(|(k, v)| !params::is_reported(k) || get_param(w, k) != Some(v.as_str())),
        };
        if let Some(w) = &welcome {
            for name in params::TRACKED {
                if let Some(v) = get_param(w, name) {
                    set_param(&mut self.wants, name, v);
                }
            }
        }
        for (k, v) in &settings {
            set_param(&mut self.wants, k, v);
        }
        let reported = if need_server {
            // No greeting, or one too old to stand for Postgres's decision: a real login.
            self.acquire_from(welcome.is_none()).await?;
            let server = &self.server.as_ref().ok_or(Exit::ClientGone)?.conn;
            for name in params::TRACKED {
                if get_param(&self.wants, name).is_none() {
                    if let Some(v) = get_param(&server.params, name) {
                        set_param(&mut self.wants, name, v);
                    }
                }
            }
            let reported = server.params.clone();
            if self.transaction_mode() {
                self.release();
            }
            reported
        } else {
            let mut w = welcome.unwrap_or_default();
            for (k, v) in &self.wants {
                if params::is_reported(k) {
                    set_param(&mut w, k, v);
                }
            }
            w
        };
        self.server_encoding = get_param(&reported, "server_encoding").map(str::to_string);
        self.follow_encoding();
        for (k, v) in &reported {
            reply::parameter_status(&mut self.client.out, k, v);
        }
        reply::backend_key_data(&mut self.client.out, self.cancel.pid, self.cancel.secret);
        reply::ready_for_query(&mut self.client.out, b'I');
        self.client.flush().await?;
        Ok(())
    }

    /// Take a server connection and make its settings match the client's.
    pub(crate) async fn acquire(&mut self) -> Result<(), Exit> {
        self.acquire_from(false).await
    }

    /// `acquire`, from a fresh server login when `fresh` (see `Pool::checkout_fresh`).
    async fn acquire_from(&mut self, fresh: bool) -> Result<(), Exit> {
        let info = &self.reg.info;
        let t = registry::now_us();
        info.waiting_since_us.store(t, Ordering::Relaxed);
        self.app.pause.wait_resumed(&self.pool.key.database).await;
        let res = if fresh {
            self.pool.checkout_fresh().await
        } else {
            self.pool.checkout().await
        };
        info.waiting_since_us.store(0, Ordering::Relaxed);
        info.request_us.store(t, Ordering::Relaxed);
        let mut co = res.map_err(Exit::Pool)?;
        self.pool.stats.assignments.fetch_add(1, Ordering::Relaxed);
        info.server_pid.store(co.conn.cancel.pid, Ordering::Relaxed);
        let sql = params::sync_sql(&self.wants, &co.conn.params, &co.conn.extra);
        if !sql.is_empty() {
            let res = tokio::time::timeout(HOUSEKEEPING_TIMEOUT, co.conn.run_quiet(&sql)).await;
            match res {
                Ok(Ok(_)) => {
                    params::after_sync(&mut self.wants, &co.conn.params, &mut co.conn.extra);
                    self.follow_encoding();
                }
                Ok(Err(e @ ServerError::Refused { .. })) => {
                    self.pool.checkin(co, b'I');
                    return Err(Exit::ServerGone(e));
                }
                Ok(Err(e)) => return Err(Exit::ServerGone(e)),
                Err(_) => return Err(Exit::ServerGone(ServerError::ConnectTimeout)),
            }
        }
        self.cancel.set_target(Some(co.conn.cancel));
        self.app
            .relays
            .note_owner(co.conn.cancel.pid, self.cancel.pid);
        self.server = Some(co);
        Ok(())
    }

    /// Wait (bounded) for the relay round trip the session asked for (its LISTEN upstream, or
    /// what the server raised in a transaction just committed), then publish the commit held
    /// for it, queue the session's own notifications, and the ReadyForQuery and replies of
    /// pgherald's that wait behind them.
    pub(crate) async fn relay_sync(&mut self) -> Result<(), Exit> {
        if !self.ch.backplane_waits.is_empty() {
            self.settle_backplane().await?;
        }
        loop {
            if let Some(rx) = self.ch.relay_wait.take() {
                if tokio::time::timeout(HOUSEKEEPING_TIMEOUT, rx)
                    .await
                    .is_err()
                {
                    tracing::warn!("relay did not confirm LISTEN in time");
                }
            }
            self.ch.publish_held();
            if std::mem::take(&mut self.ch.drain_after_relay) {
                self.ch.drain_into(&mut self.client.out);
            }
            let Some(status) = self.ready_after_relay.take() else {
                return Ok(());
            };
            if self.ch.unconvertible.is_none() {
                reply::ready_for_query(&mut self.client.out, status);
            }
            // pgherald's replies queued behind that ReadyForQuery.
            self.advance_locals();
            if self.ch.relay_wait.is_none() && self.ready_after_relay.is_none() {
                return Ok(());
            }
        }
    }

    /// Before anything goes to the server: LISTENs that may commit with it (pending in the
    /// transaction or queued in the plan) get their channels reserved and the relay LISTENing
    /// upstream first, so what the server raises with or right after them is not missed; and
    /// NOTIFYs that may commit with it have the relay hold what the server raises meanwhile
    /// (`Channels::capture_ahead`).
    async fn prepare_relay(&mut self) {
        if !self.ch.relay_on() {
            return;
        }
        let notifies = self.ch.txn.notifies() || self.plan.iter().any(Entry::notifies);
        if let Some(rx) = self.ch.server_ran(notifies) {
            if tokio::time::timeout(HOUSEKEEPING_TIMEOUT, rx)
                .await
                .is_err()
            {
                tracing::warn!("relay did not answer in time");
            }
        }
        self.ch.capture_ahead(notifies);
        let ahead: Vec<Vec<u8>> = self
            .ch
            .txn
            .listens()
            .chain(self.plan.iter().flat_map(Entry::listens))
            .filter(|c| self.ch.unheld(c))
            .map(<[u8]>::to_vec)
            .collect();
        if ahead.is_empty() {
            return;
        }
        if let Some(rx) = self.ch.reserve(ahead) {
            if tokio::time::timeout(HOUSEKEEPING_TIMEOUT, rx)
                .await
                .is_err()
            {
                tracing::warn!("relay did not confirm LISTEN in time");
            }
        }
        self.ch.admit_own();
    }

    /// Give the server back to the pool.
    pub(crate) fn release(&mut self) {
        if let Some(co) = self.server.take() {
            self.reg.info.server_pid.store(0, Ordering::Relaxed);
            self.counts.flush(&self.pool.stats);
            self.cancel.set_target(None);
            self.pool.checkin(co, self.status);
        }
    }

    pub(crate) async fn run(&mut self) -> Exit {
        loop {
            if self.closing && self.idle() {
                return Exit::Shutdown;
            }
            let held = self.server.is_some();
            let limit = if self.limits.any() {
                self.track_activity(false);
                self.limits.next(Activity {
                    holds_server: held,
                    status: self.status,
                    last_client: self.last_client,
                    busy_since: self.query_since,
                    listening: self.ch.has_mailbox(),
                })
            } else {
                None
            };
            tokio::select! {
                r = self.client.read_more() => match r {
                    Ok(0) | Err(_) => return Exit::ClientGone,
                    Ok(n) => {
                        self.counts.received += n as u64;
                        if self.deliverable() {
                            self.ch.open_window();
                        }
                        if self.limits.any() {
                            self.track_activity(true);
                        }
                        if let Err(e) = self.on_client_data().await { return e }
                    }
                },
                r = read_server(&mut self.server), if held => match r {
                    Ok(0) => return Exit::ServerGone(ServerError::Closed),
                    Err(e) => return Exit::ServerGone(e.into()),
                    Ok(n) => {
                        self.counts.sent += n as u64;
                        if let Err(e) = self.on_server_data().await { return e }
                    }
                },
                _ = sleep_until(limit), if limit.is_some() => {
                    return Exit::Timeout(limit.map_or("timeout", |l| l.1));
                }
                d = self.ch.recv(), if self.deliverable() => {
                    if let Some(d) = d {
                        self.ch.deliver(d, &mut self.client.out);
                        self.ch.drain_into(&mut self.client.out);
                        if let Err(e) = self.flush_out().await {
                            return e;
                        }
                        if let Err(e) = self.delivery_failed() {
                            return e;
                        }
                    }
                }
                r = self.control.changed(), if !self.closing => {
                    let c = *self.control.borrow_and_update();
                    match (r, c) {
                        (Err(_), _) | (_, Control::CloseWhenIdle) => self.closing = true,
                        (_, Control::Kill) => return Exit::Killed,
                        (_, Control::Run) => {}
                    }
                }
            }
            if let Some(limit) = self.ch.overflow {
                return Exit::Overflow(limit);
            }
            if self.ch.lost {
                return Exit::Lost;
            }
            if self.deliverable() {
                self.ch.close_window();
            }
        }
    }

    /// Keep what the timeouts measure: the client's last message (`client_spoke`), and
    /// since when the server owes replies.
    fn track_activity(&mut self, client_spoke: bool) {
        let now = std::time::Instant::now();
        if client_spoke {
            self.last_client = now;
        }
        if self.plan.is_empty() {
            self.query_since = None;
        } else if self.query_since.is_none() {
            self.query_since = Some(now);
        }
    }

    /// Write `data` to the server, reading server output meanwhile so that neither side
    /// can block the other (output past the backlog is forwarded to the client). A deferred
    /// BEGIN the server is owed goes first, in the same write.
    pub(crate) async fn write_server(&mut self, data: &[u8]) -> Result<(), Exit> {
        if self.busy_since.is_none() {
            let now = Instant::now();
            self.busy_since = Some(now);
            self.xact_since.get_or_insert(now);
        }
        self.prepare_relay().await;
        let prefix: &[u8] = if std::mem::take(&mut self.owe_begin) {
            super::deferred::HIDDEN_BEGIN
        } else {
            &[]
        };
        self.writing = true;
        let total = prefix.len() + data.len();
        let mut off = 0;
        // Fast path: a socket with room takes the whole write at once, without a select.
        if let Some(co) = self.server.as_mut() {
            let tried = if prefix.is_empty() {
                co.conn.wr.try_write(data)
            } else {
                co.conn.wr.try_write_vectored(&[
                    std::io::IoSlice::new(prefix),
                    std::io::IoSlice::new(data),
                ])
            };
            match tried {
                Ok(n) => off = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Exit::ServerGone(e.into())),
            }
        }
        while off < total {
            let Some(co) = self.server.as_mut() else {
                return Err(Exit::ServerGone(ServerError::Closed));
            };
            let conn = &mut co.conn;
            let room = conn.buf.len() < SERVER_BACKLOG;
            if room && conn.buf.capacity() - conn.buf.len() < 4096 {
                conn.buf.reserve(16 * 1024);
            }
            let chunk = match prefix.get(off..) {
                Some(rest) if !rest.is_empty() => rest,
                _ => &data[off - prefix.len()..],
            };
            tokio::select! {
                w = conn.wr.write(chunk) => match w {
                    Ok(0) => return Err(Exit::ServerGone(ServerError::Closed)),
                    Ok(w) => off += w,
                    Err(e) => return Err(Exit::ServerGone(e.into())),
                },
                r = tokio::io::AsyncReadExt::read_buf(&mut conn.rd, &mut conn.buf), if room => match r {
                    Ok(0) => return Err(Exit::ServerGone(ServerError::Closed)),
                    Ok(_) => {}
                    Err(e) => return Err(Exit::ServerGone(e.into())),
                },
            }
            if !room {
                self.on_server_data().await?;
            }
        }
        self.writing = false;
        if self
            .server
            .as_ref()
            .is_some_and(|co| !co.conn.buf.is_empty())
        {
            self.on_server_data().await?;
        }
        Ok(())
    }
}

/// Sleep until the limit's instant (the caller polls this only when there is one).
async fn sleep_until(limit: Option<(std::time::Instant, &'static str)>) {
    match limit {
        Some((at, _)) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn read_server(server: &mut Option<Checkout>) -> std::io::Result<usize> {
    match server {
        Some(co) => {
            let conn = &mut co.conn;
            if conn.buf.capacity() - conn.buf.len() < 4096 {
                conn.buf.reserve(16 * 1024);
            }
            tokio::io::AsyncReadExt::read_buf(&mut conn.rd, &mut conn.buf).await
        }
        None => std::future::pending().await,
    }
}
