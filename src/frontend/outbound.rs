//! Server → client: split server frames by header, match each against the head of the
//! reply plan, forward runs untouched, swallow placeholder replies and write pgherald's own
//! replies and notifications at exactly the places Postgres would.

use bytes::{Buf, BytesMut};

use super::intercept::{write_failure, Failure};
use super::listening;
use super::plan::{Effect, Entry, LocalReply, Step};
use super::session::{Exit, Session, STREAM_THRESHOLD};
use crate::backend::conn::{get_param, parse_parameter_status, set_param};
use crate::error::ServerError;
use crate::frontend::params;
use crate::protocol::framer;

/// What to do with one server message. pgherald's own bytes for the client, if any, are
/// in `client.out` and go where the variant says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    /// Forward it.
    Pass,
    /// Drop it; pgherald's bytes take its place.
    Swallow,
    /// pgherald's bytes first (before any ParameterStatus run right before it), then it.
    Before,
    /// It first, then pgherald's bytes.
    After,
    /// pgherald's bytes take its place (and that of a ParameterStatus run right before it),
    /// then the session ends: a notification the client's encoding cannot represent.
    Close,
}

const PREPARE_REFUSED: Failure = Failure::fixed(
    "0A000",
    "cannot PREPARE a transaction that has executed LISTEN, UNLISTEN, or NOTIFY",
);

impl Session {
    /// Handle everything the server sent that is complete.
    pub(crate) async fn on_server_data(&mut self) -> Result<(), Exit> {
        let Some(co) = self.server.as_mut() else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut co.conn.buf);
        let res = self.process_server(&mut buf).await;
        if let Some(co) = self.server.as_mut() {
            co.conn.buf = buf;
        }
        let ended = res? && self.idle() && !self.writing;
        if ended {
            let adopted = self.adopt_server_listens().await;
            self.drop_lost_server(adopted)?;
        }
        if ended && self.transaction_mode() {
            self.give_back().await?;
        }
        self.deliver_pending().await
    }

    /// Returns true when a ReadyForQuery left the session idle (the server may go back).
    async fn process_server(&mut self, buf: &mut BytesMut) -> Result<bool, Exit> {
        let bad = |e: framer::FrameError| Exit::ServerGone(ServerError::Protocol(e.to_string()));
        loop {
            if self.server_pass > 0 {
                let n = self.server_pass.min(buf.len());
                if n == 0 {
                    return Ok(self.idle());
                }
                self.write_client(&buf[..n]).await?;
                buf.advance(n);
                self.server_pass -= n;
                continue;
            }
            let mut run = 0;
            let mut s_run: Option<usize> = None;
            let mut action = None;
            while let Some(h) = framer::header(&buf[run..]).map_err(bad)? {
                let avail = buf.len() - run;
                if avail < h.total {
                    if h.total > STREAM_THRESHOLD && matches!(h.tag, b'D' | b'd') {
                        self.server_pass = h.total - avail;
                        run = buf.len();
                        s_run = None;
                    } else {
                        buf.reserve(h.total - avail);
                    }
                    break;
                }
                let body = &buf[run + framer::HEADER_LEN..run + h.total];
                match self.route_server(h.tag, body)? {
                    Act::Pass => {
                        if h.tag == b'S' {
                            s_run.get_or_insert(run);
                        } else {
                            s_run = None;
                        }
                        run += h.total;
                    }
                    act => {
                        action = Some((act, h.tag, h.total));
                        break;
                    }
                }
            }
            let Some((act, tag, total)) = action else {
                // Hold a trailing run of ParameterStatus back until we know what follows it:
                // notifications must precede it when a ReadyForQuery comes next (item 24).
                self.relay_sync().await?;
                let upto = if self.plan.is_empty() {
                    run
                } else {
                    s_run.unwrap_or(run)
                };
                self.write_client(&buf[..upto]).await?;
                buf.advance(upto);
                return Ok(self.idle());
            };
            self.relay_sync().await?;
            // A notification drained after the relay's round trip may end the session.
            let act = match act {
                Act::Before if tag == b'Z' && self.ch.unconvertible.is_some() => Act::Close,
                act => act,
            };
            let ours = std::mem::take(&mut self.client.out);
            let split = match act {
                Act::Before | Act::Close => s_run.unwrap_or(run),
                _ => run,
            };
            // What precedes this message belongs to earlier replies; a hold starts here.
            self.write_client(&buf[..split]).await?;
            self.start_hold();
            match act {
                Act::Swallow => self.write_client(&ours).await?,
                Act::Before => {
                    self.write_client(&ours).await?;
                    self.write_client(&buf[split..run + total]).await?;
                }
                Act::After | Act::Pass => {
                    self.write_client(&buf[split..run + total]).await?;
                    self.write_client(&ours).await?;
                }
                Act::Close => {
                    // The ParameterStatus run before the message is dropped with it.
                    self.write_client(&ours).await?;
                    self.end_hold().await?;
                    buf.advance(run + total);
                    return self.delivery_failed().map(|()| false);
                }
            }
            buf.advance(run + total);
            self.release_hold().await?;
            self.client.out = ours;
            self.client.out.clear();
            self.advance_locals();
            self.relay_sync().await?;
            self.flush_out().await?;
            self.delivery_failed()?;
            if tag == b'Z' && self.idle() {
                return Ok(true);
            }
        }
    }

    /// A ReadyForQuery from the server ends a query, and with status I a transaction: count
    /// them, and hand the session's counts to the pool at the transaction's end.
    fn count_ready(&mut self, body: &[u8]) {
        let now = std::time::Instant::now();
        if let Some(t) = self.busy_since.take() {
            self.counts.queries += 1;
            self.counts.query_us += now.duration_since(t).as_micros() as u64;
        }
        if body.first() == Some(&b'I') {
            if let Some(t) = self.xact_since.take() {
                self.counts.xacts += 1;
                self.counts.xact_us += now.duration_since(t).as_micros() as u64;
            }
            self.counts.flush(&self.pool.stats);
        }
    }

    /// Route one complete server message; the replies of a Query with fillers are held.
    fn route_server(&mut self, tag: u8, body: &[u8]) -> Result<Act, Exit> {
        if tag == b'Z' {
            self.count_ready(body);
        }
        let filled = self.hold.active()
            || matches!(self.plan.front(), Some(Entry::Query(q)) if q.fillers > 0);
        let act = self.route_plan(tag, body)?;
        Ok(if filled { self.held(tag, act) } else { act })
    }

    /// Match one complete server message against the plan.
    fn route_plan(&mut self, tag: u8, body: &[u8]) -> Result<Act, Exit> {
        tracing::trace!(tag = %(tag as char), head = ?self.plan.front().map(std::mem::discriminant), "server message");
        let aborted_before = self.live == b'E';
        if tag == b'C' && self.watch_state() && super::state::tag_touches(body) {
            self.touched = true;
        }
        if (tag == b'C' && body.starts_with(b"LISTEN\0"))
            || (tag == b'A' && !self.transaction_mode())
        {
            // The server connection listens: a LISTEN pgherald forwarded, or (session mode,
            // where the server is this client's alone) one that server code ran and a
            // notification revealed.
            self.server_listen_hint = true;
        }
        match tag {
            b'N' => return Ok(self.remap_notice(body)),
            b'A' => return Ok(Act::Pass),
            b'S' => {
                if let Some((k, v)) = parse_parameter_status(body) {
                    if let Some(co) = self.server.as_mut() {
                        set_param(&mut co.conn.params, k, v);
                    }
                    if params::is_reported(k) || get_param(&self.wants, k).is_some() {
                        set_param(&mut self.wants, k, v);
                    }
                    if k.eq_ignore_ascii_case("client_encoding") {
                        self.follow_encoding();
                    }
                }
                return Ok(Act::Pass);
            }
            b'C' if body.starts_with(b"DISCARD ALL\0") || body.starts_with(b"DEALLOCATE ALL\0") => {
                // The server dropped every prepared statement, and so did the client's view.
                if let Some(co) = self.server.as_mut() {
                    co.conn.prepared.clear();
                }
                self.stmts.clear();
                if body.starts_with(b"DEALLOCATE") {
                    // pgherald's own statements go too (DISCARD ALL's effect clears them).
                    self.ext.forget_named();
                }
            }
            b'E' => {
                if framer::field(body, b'V') == Some(b"FATAL") {
                    self.server_fatal = true;
                }
                if self.live == b'T' {
                    self.live = b'E';
                }
                // An error ends an implicit transaction (a block only aborts).
                self.implicit = false;
            }
            _ => {}
        }
        let Some(head) = self.plan.front_mut() else {
            return Ok(Act::Pass);
        };
        if tag == b'Z'
            && !matches!(
                head,
                Entry::Query(_) | Entry::Function | Entry::Sync | Entry::HiddenBegin
            )
        {
            return Ok(self.resync(body));
        }
        if head.opens_transaction() && self.live == b'I' {
            self.implicit = true;
        }
        let act = match head {
            Entry::Query(_) => return self.route_query(tag, body),
            Entry::Function => match tag {
                b'Z' => {
                    self.plan.pop_front();
                    self.finish_transaction(z_status(body), false, true);
                    self.z_act()
                }
                _ => Act::Pass,
            },
            Entry::ParseRewritten(map) => match tag {
                b'1' => self.pop(Act::Pass),
                b'E' => {
                    let remapped = !self.local_error
                        && listening::remap_position(tag, body, map, &mut self.client.out);
                    self.batch_error(if remapped { Act::Swallow } else { Act::Pass })
                }
                _ => Act::Pass,
            },
            Entry::DescribeRewritten => match tag {
                b't' if listening::hide_last_param(body, &mut self.client.out) => Act::Swallow,
                b'T' | b'n' => self.pop(Act::Pass),
                b'E' => self.batch_error(Act::Pass),
                _ => Act::Pass,
            },
            Entry::Parse | Entry::Bind | Entry::Close => match tag {
                b'1' | b'2' | b'3' => self.pop(Act::Pass),
                b'E' => self.batch_error(Act::Pass),
                _ => Act::Pass,
            },
            Entry::DescribeStatement => match tag {
                b'T' | b'n' => self.pop(Act::Pass),
                b'E' => self.batch_error(Act::Pass),
                _ => Act::Pass,
            },
            Entry::DescribePortal => match tag {
                b'T' | b'n' => self.pop(Act::Pass),
                b'E' => self.batch_error(Act::Pass),
                _ => Act::Pass,
            },
            Entry::Execute(effect) => match tag {
                b'C' => {
                    let effect = std::mem::replace(effect, Effect::None);
                    self.apply_effect(&effect, body);
                    self.pop(Act::Pass)
                }
                b'I' | b's' => self.pop(Act::Pass),
                b'E' => {
                    if effect.ends_transaction() {
                        // A failed COMMIT (or ROLLBACK, PREPARE) still ends the transaction.
                        self.ch.discard();
                        self.live = b'I';
                    }
                    self.batch_error(Act::Pass)
                }
                _ => Act::Pass,
            },
            Entry::InjectedQuiet => match tag {
                b'1' | b'2' | b'3' => self.pop(Act::Swallow),
                b'E' => self.batch_error(Act::Pass),
                _ => Act::Pass,
            },
            Entry::InjectedRun => match tag {
                b'C' => self.pop(Act::Swallow),
                b'E' => self.batch_error(Act::Pass),
                _ => Act::Swallow,
            },
            Entry::RefusedPrepare => match tag {
                b'C' => {
                    self.ch.discard();
                    self.live = b'I';
                    self.implicit = false;
                    write_failure(&mut self.client.out, &PREPARE_REFUSED);
                    self.local_error = true;
                    self.pop(Act::Swallow)
                }
                b'E' => self.batch_error(Act::Pass),
                _ => Act::Pass,
            },
            Entry::InjectedFailure(failure) => match tag {
                b'E' => {
                    if self.batch_failed {
                        // pgherald already failed this batch (e.g. 25P02 at an intercepted
                        // Parse): the server's error only keeps it in step.
                    } else if aborted_before {
                        // An aborted block: Postgres refuses the message before looking at it.
                        let stage = failure.as_ref().map(|f| f.stage).unwrap_or_default();
                        let aborted = super::intercept::ABORTED.at(stage);
                        write_failure(&mut self.client.out, &aborted);
                    } else if let Some(f) = failure.as_ref() {
                        write_failure(&mut self.client.out, f);
                    }
                    self.local_error = true;
                    self.batch_error(Act::Swallow)
                }
                _ => Act::Pass,
            },
            Entry::PrepareParse {
                id,
                name,
                positions,
            } => match tag {
                b'1' => self.pop(Act::Pass),
                b'E' => {
                    let remapped = !self.local_error
                        && positions.as_ref().is_some_and(|m| {
                            listening::remap_position(tag, body, m, &mut self.client.out)
                        });
                    let (id, name) = (*id, std::mem::take(name));
                    if let Some(co) = self.server.as_mut() {
                        co.conn.prepared.forget(id);
                    }
                    self.stmts.remove(&name);
                    self.batch_error(if remapped { Act::Swallow } else { Act::Pass })
                }
                _ => Act::Pass,
            },
            Entry::InjectedParse { id } => match tag {
                b'1' => self.pop(Act::Swallow),
                b'E' => {
                    let id = *id;
                    if let Some(co) = self.server.as_mut() {
                        co.conn.prepared.forget(id);
                    }
                    self.batch_error(Act::Pass)
                }
                _ => Act::Pass,
            },
            Entry::InjectedClose => match tag {
                b'3' => self.pop(Act::Swallow),
                b'E' => self.batch_error(Act::Swallow),
                _ => Act::Pass,
            },
            Entry::Sync => match tag {
                b'Z' => {
                    self.plan.pop_front();
                    let failed = self.batch_failed;
                    self.batch_failed = false;
                    self.local_error = false;
                    self.finish_transaction(z_status(body), failed, true);
                    self.z_act()
                }
                b'E' => {
                    self.batch_failed = true;
                    if self.local_error {
                        Act::Swallow
                    } else {
                        Act::Pass
                    }
                }
                _ => Act::Pass,
            },
            Entry::HiddenBegin => match tag {
                b'C' => Act::Swallow,
                b'Z' => {
                    self.plan.pop_front();
                    Act::Swallow
                }
                _ => Act::Pass,
            },
            Entry::Local(_) | Entry::LocalQuery(_) => Act::Pass,
        };
        Ok(act)
    }

    /// How to pass a ReadyForQuery: notifications (and a Query's preamble) go before it,
    /// pgherald's replies queued behind it after it; otherwise it joins the current run.
    fn z_act(&self) -> Act {
        if self.ch.unconvertible.is_some() {
            Act::Close
        } else if !self.client.out.is_empty() || self.ch.drain_after_relay {
            Act::Before
        } else if self.plan.front().is_some_and(Entry::is_local) {
            Act::After
        } else {
            Act::Pass
        }
    }

    /// A ReadyForQuery arrived while the plan still expected other replies: the plan is out
    /// of step with the server (a reply pgherald did not foresee). Drop what the server will
    /// never answer, up to the entry this `Z` ends, so the session recovers instead of
    /// holding its server forever.
    fn resync(&mut self, body: &[u8]) -> Act {
        tracing::warn!(head = ?self.plan.front(), "reply plan out of step at ReadyForQuery; resynchronising");
        while let Some(e) = self.plan.pop_front() {
            if matches!(e, Entry::Query(_) | Entry::Function | Entry::Sync) {
                break;
            }
            self.unanswered(e);
        }
        let failed = self.batch_failed;
        self.batch_failed = false;
        self.local_error = false;
        self.finish_transaction(z_status(body), failed, true);
        self.z_act()
    }

    /// The head entry is answered: pop it, and let pgherald's own replies behind it follow.
    fn pop(&mut self, act: Act) -> Act {
        self.plan.pop_front();
        if act == Act::Pass && self.plan.front().is_some_and(Entry::is_local) {
            Act::After
        } else {
            act
        }
    }

    /// An error in an extended batch: the server skips everything up to Sync, and so do
    /// pgherald's own replies. A second error for a batch pgherald already failed is dropped.
    pub(super) fn batch_error(&mut self, act: Act) -> Act {
        let act = if self.local_error && act == Act::Pass {
            Act::Swallow
        } else {
            act
        };
        self.batch_failed = true;
        self.implicit = false;
        while self
            .plan
            .front()
            .is_some_and(|e| !matches!(e, Entry::Sync | Entry::Local(LocalReply::Sync)))
        {
            if let Some(e) = self.plan.pop_front() {
                self.unanswered(e);
            }
        }
        if act == Act::Pass && self.plan.front().is_some_and(Entry::is_local) {
            Act::After
        } else {
            act
        }
    }

    fn route_query(&mut self, tag: u8, body: &[u8]) -> Result<Act, Exit> {
        let Some(Entry::Query(q)) = self.plan.front_mut() else {
            return Ok(Act::Pass);
        };
        let preamble = q.preamble.take();
        let had_preamble = preamble.is_some();
        if let Some(p) = preamble {
            self.client.out.extend_from_slice(&p);
        }
        let act = match tag {
            b'Z' => {
                let failed = q.failed;
                self.plan.pop_front();
                self.finish_transaction(z_status(body), failed, true);
                self.z_act()
            }
            b'E' => {
                q.failed = true;
                let step = q.steps.pop_front();
                q.steps.clear();
                match step {
                    Some(Step::Failing(i)) if framer::field(body, b'C') == Some(b"22012") => {
                        self.run_intercept(&i, b'I', true, 0);
                        Act::Swallow
                    }
                    _ if q.positions.as_ref().is_some_and(|m| {
                        listening::remap_position(tag, body, m, &mut self.client.out)
                    }) =>
                    {
                        Act::Swallow
                    }
                    _ => Act::Pass,
                }
            }
            b'C' => match q.steps.pop_front() {
                Some(Step::Forward(effect)) => {
                    self.apply_effect(&effect, body);
                    Act::Pass
                }
                Some(Step::Placeholder(i)) => {
                    let live = self.live;
                    self.run_intercept(&i, live, true, 0);
                    Act::Swallow
                }
                Some(Step::PrepareRefused) => {
                    q.failed = true;
                    q.steps.clear();
                    self.ch.discard();
                    self.live = b'I';
                    write_failure(&mut self.client.out, &PREPARE_REFUSED);
                    Act::Swallow
                }
                Some(other @ Step::Failing(_)) => {
                    q.steps.push_front(other);
                    Act::Pass
                }
                Some(Step::Filler) => Act::Swallow,
                None => {
                    self.ch.txn.mark_server();
                    Act::Pass
                }
            },
            b'T' | b'D'
                if matches!(
                    q.steps.front(),
                    Some(Step::Placeholder(_) | Step::Failing(_) | Step::Filler)
                ) =>
            {
                Act::Swallow
            }
            _ => Act::Pass,
        };
        Ok(if had_preamble && act == Act::Pass {
            Act::Before
        } else {
            act
        })
    }

    /// A NoticeResponse: its position maps back to the client's text when the statement it
    /// is about went out rewritten.
    fn remap_notice(&mut self, body: &[u8]) -> Act {
        let map = match self.plan.front() {
            Some(Entry::Query(q)) => q.positions.as_ref(),
            Some(Entry::ParseRewritten(m)) => Some(m),
            Some(Entry::PrepareParse { positions, .. }) => positions.as_ref(),
            _ => None,
        };
        match map {
            Some(m) if listening::remap_position(b'N', body, m, &mut self.client.out) => {
                Act::Swallow
            }
            _ => Act::Pass,
        }
    }

    /// A forwarded statement completed with tag `body`: apply its transaction effect.
    fn apply_effect(&mut self, effect: &Effect, body: &[u8]) {
        match effect {
            Effect::None => self.ch.txn.mark_server(),
            Effect::Begin => self.live = b'T',
            Effect::Commit | Effect::CommitChain => {
                if body.starts_with(b"COMMIT") {
                    self.ch.commit();
                } else {
                    self.ch.discard();
                }
            }
            Effect::Rollback | Effect::RollbackChain => self.ch.discard(),
            Effect::Savepoint(n) => self.ch.txn.savepoint(n),
            Effect::Release(n) => {
                self.ch.txn.release(n);
            }
            Effect::RollbackTo(n) => {
                if !self.ch.txn.rollback_to(n) {
                    self.ch.discard();
                }
                self.live = b'T';
            }
            Effect::DiscardAll => {
                self.ch.unlisten_everything();
                self.ext.clear();
            }
            Effect::PrepareTransaction => self.ch.discard(),
        }
        match effect {
            Effect::CommitChain | Effect::RollbackChain => self.live = b'T',
            e if e.ends_transaction() => {
                self.live = b'I';
                self.implicit = false;
            }
            _ => {}
        }
    }

    /// An entry the server will never answer (its batch failed, or the plan resynchronised):
    /// a statement pgherald prepared on the server under its own name does not exist there.
    fn unanswered(&mut self, e: Entry) {
        let id = match e {
            Entry::PrepareParse { id, name, .. } => {
                self.stmts.remove(&name);
                id
            }
            Entry::InjectedParse { id } => id,
            _ => return,
        };
        if let Some(co) = self.server.as_mut() {
            co.conn.prepared.forget(id);
        }
    }

    /// A ReadyForQuery ends a Query or batch: commit or discard what an implicit
    /// transaction left pending, and queue notifications to precede the `Z` (items 22–26).
    /// `server`: the ReadyForQuery is the server's, so what the transaction raised inside
    /// Postgres is fetched through the relay first (see `Channels::sync_relay`).
    pub(super) fn finish_transaction(&mut self, status: u8, failed: bool, server: bool) {
        self.status = status;
        self.live = status;
        self.implicit = false;
        if status == b'I' {
            if failed {
                self.ch.discard();
            } else {
                self.ch.commit();
            }
            let fresh = self.ch.has_reserved();
            if self.plan.is_empty() {
                self.ch.drop_reserved();
            }
            if !self.ch.sync_relay(fresh, server) {
                self.ch.drain_into(&mut self.client.out);
            }
        }
    }
}

/// The transaction status byte of a ReadyForQuery body.
fn z_status(body: &[u8]) -> u8 {
    body.first().copied().unwrap_or(b'I')
}
