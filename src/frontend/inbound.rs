//! Client → server: split client frames by header, turn each into a reply-plan entry, and
//! forward runs of frames untouched; intercepted messages are answered (or rewritten) here.

use bytes::{Buf, Bytes, BytesMut};

use crate::backend::prepared::{self, Prepared};

use super::deferred::Control;
use super::extended::Decision;
use super::pipeline;
use super::plan::{Effect, Entry, LocalReply, QueryPlan};
use super::session::{Exit, Session, STREAM_THRESHOLD};
use super::simple::{self, Route};
use crate::protocol::framer;
use crate::sql::edit::PositionMap;

/// What to do with one client message.
enum Inbound {
    /// Forward it; push the entry (if any).
    Forward(Option<Entry>),
    /// Do not forward; push these entries (answered locally when they reach the head).
    Local(Entry),
    /// Send these bytes to the server instead, expecting these entries.
    Replace(Vec<u8>, Vec<Entry>),
    /// A named prepared statement in transaction pooling: handled with a server in hand.
    Prepared(Named),
    /// Drop it.
    Drop,
    /// Terminate.
    Terminate,
    /// A COMMIT to stage first (`atomic`): record the pending batch, then decide again.
    Stage,
}

/// A use of a client's named statement that must be mapped to the server's name.
enum Named {
    /// Parse (the whole body), with the map back to the client's text if pgherald rewrote it.
    Parse(Vec<u8>, Option<PositionMap>),
    /// Bind or Describe of statement `stmt`: send `frame` (already renamed), expect `entry`.
    Use {
        stmt: Prepared,
        frame: Bytes,
        entry: Entry,
    },
}

/// PREPARE TRANSACTION after LISTEN/UNLISTEN/NOTIFY in the extended protocol: roll the
/// server's transaction back, then fail the batch so the server skips to Sync (item 19).
fn refuse_prepare() -> Inbound {
    use postgres_protocol::message::frontend;
    let mut out = BytesMut::new();
    let encoded = frontend::parse("", "ROLLBACK", [], &mut out)
        .and_then(|_| {
            frontend::bind(
                "",
                "",
                [],
                [],
                |_: (), _| Ok(postgres_protocol::IsNull::No),
                [],
                &mut out,
            )
            .map_err(|_| std::io::Error::other("bind"))
        })
        .and_then(|_| frontend::execute("", 0, &mut out))
        .and_then(|_| frontend::parse(FAIL_STATEMENT, "!", [], &mut out));
    if encoded.is_err() {
        return Inbound::Terminate;
    }
    Inbound::Replace(
        out.to_vec(),
        vec![
            Entry::InjectedQuiet,
            Entry::InjectedQuiet,
            Entry::RefusedPrepare,
            Entry::InjectedFailure(None),
        ],
    )
}

/// The name of pgherald's failing placeholder statement (never created: its SQL is invalid).
const FAIL_STATEMENT: &str = "pgherald_fail";

impl Session {
    /// Handle everything the client sent that is complete.
    pub(crate) async fn on_client_data(&mut self) -> Result<(), Exit> {
        let mut buf = std::mem::take(&mut self.client.buf);
        let res = self.process_client(&mut buf).await;
        self.client.buf = buf;
        res
    }

    async fn process_client(&mut self, buf: &mut BytesMut) -> Result<(), Exit> {
        loop {
            if self.client_pass > 0 {
                let n = self.client_pass.min(buf.len());
                if n == 0 {
                    return Ok(());
                }
                self.write_server(&buf[..n]).await?;
                buf.advance(n);
                self.client_pass -= n;
                continue;
            }
            let mut run = 0;
            let mut special = None;
            while let Some(h) = framer::header(&buf[run..])? {
                let avail = buf.len() - run;
                if avail < h.total {
                    // Query and Parse are read whole whatever their size: what they say
                    // decides interception. Large data-carrying frames stream through.
                    if h.total > STREAM_THRESHOLD
                        && self.streams(h.tag, &buf[run + framer::HEADER_LEN..])
                    {
                        let entry = self.big_entry(h.tag);
                        self.push_forwarded(entry);
                        self.client_pass = h.total - avail;
                        run = buf.len();
                    } else {
                        buf.reserve(h.total - avail);
                    }
                    break;
                }
                let body = &buf[run + framer::HEADER_LEN..run + h.total];
                self.flush_follows = matches!(buf.get(run + h.total), Some(b'S' | b'H'));
                match self.decide(h.tag, body)? {
                    Inbound::Forward(entry) => {
                        self.push_forwarded(entry);
                        run += h.total;
                    }
                    other => {
                        special = Some((other, h.total));
                        break;
                    }
                }
            }
            if run > 0 {
                if self.server.is_none() {
                    self.acquire().await?;
                }
                self.write_server(&buf[..run]).await?;
                buf.advance(run);
                if self.plan.front().is_some_and(Entry::is_local) {
                    // A client Flush marker the server had nothing left to answer before.
                    self.advance_locals();
                    self.relay_sync().await?;
                    self.flush_out().await?;
                }
            }
            let Some((what, total)) = special else {
                if self.client_pass > 0 {
                    continue;
                }
                return self.settle().await;
            };
            if matches!(what, Inbound::Stage) {
                if !self.stage_commit().await? {
                    // Refused and answered: the COMMIT never reaches the server.
                    buf.advance(total);
                }
                continue;
            }
            buf.advance(total);
            match what {
                Inbound::Local(entry) => {
                    self.plan.push_back(entry);
                    self.advance_locals();
                    self.relay_sync().await?;
                    self.flush_out().await?;
                    self.delivery_failed()?;
                }
                Inbound::Replace(bytes, entries) => {
                    if self.server.is_none() {
                        self.acquire().await?;
                    }
                    self.batch_forwarded |= self.batch_open;
                    self.undefer();
                    for e in entries {
                        self.expect(e);
                    }
                    self.write_server(&bytes).await?;
                }
                Inbound::Prepared(named) => {
                    if self.server.is_none() {
                        self.acquire().await?;
                    }
                    self.batch_forwarded |= self.batch_open;
                    self.undefer();
                    self.named(named).await?;
                }
                Inbound::Drop | Inbound::Forward(_) | Inbound::Stage => {}
                Inbound::Terminate => return Err(Exit::ClientGone),
            }
        }
    }

    /// An Execute of COMMIT that publishes notifications, in a batch the client may not flush:
    /// Postgres delivers them to others at once (item 25), but a proxy sees the commit only
    /// when the server sends its replies. pgherald adds a Flush after the Execute and holds
    /// the client's replies as Postgres would buffer them (`hold`). Not when an earlier
    /// request's replies are still due (the hold would start too early), nor when the
    /// client's own Sync or Flush follows at once.
    fn flush_commit(&mut self, tag: u8, body: &[u8], inbound: Inbound) -> Result<Inbound, Exit> {
        let commits = |e: Option<&Entry>| {
            matches!(
                e,
                Some(Entry::Execute(Effect::Commit | Effect::CommitChain))
            )
        };
        let candidate = match &inbound {
            Inbound::Forward(e) => commits(e.as_ref()),
            Inbound::Replace(_, entries) => commits(entries.last()),
            _ => false,
        };
        if !candidate
            || self.flush_follows
            || !(self.ch.txn.notifies() || self.plan.iter().any(Entry::notifies))
            || self
                .plan
                .iter()
                .any(|e| matches!(e, Entry::Sync | Entry::Query(_) | Entry::Function))
        {
            return Ok(inbound);
        }
        let (mut frames, entries) = match inbound {
            Inbound::Replace(frames, entries) => (frames, entries),
            Inbound::Forward(e) => {
                let mut out = BytesMut::new();
                if !framer::put(&mut out, tag, body) {
                    return Err(Exit::ClientProtocol("message too long".into()));
                }
                (out.to_vec(), e.into_iter().collect())
            }
            other => return Ok(other),
        };
        frames.extend_from_slice(&[b'H', 0, 0, 0, 4]);
        self.hold_from_here();
        Ok(Inbound::Replace(frames, entries))
    }

    /// After the client's input is handled: give a transaction-mode server back if idle.
    async fn settle(&mut self) -> Result<(), Exit> {
        if self.server.is_some() && self.transaction_mode() && self.idle() && !self.writing {
            self.give_back().await?;
        }
        Ok(())
    }

    /// CopyDone/CopyFail end a COPY FROM STDIN. The server ignored every Sync the client
    /// sent between the COPY's Execute (or Query) and now, so they owe no ReadyForQuery.
    fn syncs_ignored_in_copy(&mut self) {
        let mut removed = false;
        while let Some(i) = self
            .plan
            .iter()
            .rposition(|e| matches!(e, Entry::Sync | Entry::Execute(_) | Entry::Query(_)))
        {
            if !matches!(self.plan[i], Entry::Sync) {
                break;
            }
            self.plan.remove(i);
            removed = true;
        }
        if removed {
            self.batch_open = true;
            self.batch_forwarded = true;
        }
    }

    /// Send a named-statement message under the server's names, preparing the statement on
    /// this server first when it lacks it (evicting the least recently used past the limit).
    async fn named(&mut self, named: Named) -> Result<(), Exit> {
        let (stmt, then) = match named {
            Named::Parse(body, positions) => {
                let Some((name, stmt)) = self.stmts.parse(&self.app.prepared, &body) else {
                    return Err(Exit::ClientProtocol("invalid message format".into()));
                };
                let have = self
                    .server
                    .as_mut()
                    .is_some_and(|co| co.conn.prepared.touch(stmt.id));
                if have {
                    self.plan
                        .push_back(Entry::Local(super::plan::LocalReply::ParseKnown));
                    self.advance_locals();
                    self.client.flush().await?;
                    return self.delivery_failed();
                }
                let entry = Entry::PrepareParse {
                    id: stmt.id,
                    name,
                    positions,
                };
                self.prepare_on_server(&stmt, entry).await?;
                return Ok(());
            }
            Named::Use { stmt, frame, entry } => (stmt, (frame, entry)),
        };
        let have = self
            .server
            .as_mut()
            .is_some_and(|co| co.conn.prepared.touch(stmt.id));
        if !have {
            self.prepare_on_server(&stmt, Entry::InjectedParse { id: stmt.id })
                .await?;
        }
        self.plan.push_back(then.1);
        self.write_server(&then.0).await
    }

    async fn prepare_on_server(&mut self, stmt: &Prepared, entry: Entry) -> Result<(), Exit> {
        let max = self.cfg.config.max_prepared_statements;
        let evict = self
            .server
            .as_mut()
            .and_then(|co| co.conn.prepared.insert(stmt.id, max));
        if let Some(old) = evict {
            self.plan.push_back(Entry::InjectedClose);
            self.write_server(&prepared::close_frame(old)).await?;
        }
        self.plan.push_back(entry);
        self.write_server(&stmt.parse).await
    }

    /// In transaction pooling, a message naming a client's prepared statement.
    fn named_use(&mut self, tag: u8, body: &[u8], d: &Decision) -> Option<Named> {
        if !self.transaction_mode() || self.cfg.config.max_prepared_statements == 0 {
            return None;
        }
        match (tag, d) {
            (b'P', Decision::Forward(e @ (Entry::Parse | Entry::ParseRewritten(_)))) => {
                let named = body.first().is_some_and(|b| *b != 0);
                let positions = match e {
                    Entry::ParseRewritten(map) => Some(map.clone()),
                    _ => None,
                };
                named.then(|| Named::Parse(body.to_vec(), positions))
            }
            (b'B', Decision::Forward(Entry::Bind)) if !self.stmts.is_empty() => {
                let (_, rest) = framer::cstr(body)?;
                let (name, _) = framer::cstr(rest)?;
                let stmt = self.stmts.get(name)?.clone();
                let frame = prepared::bind_frame(body, stmt.id)?;
                Some(Named::Use {
                    stmt,
                    frame,
                    entry: Entry::Bind,
                })
            }
            (
                b'D',
                Decision::Forward(e @ (Entry::DescribeStatement | Entry::DescribeRewritten)),
            ) if !self.stmts.is_empty() => {
                let (name, _) = framer::cstr(body.get(1..)?)?;
                let stmt = self.stmts.get(name)?.clone();
                let frame = prepared::describe_frame(stmt.id);
                let entry = match e {
                    Entry::DescribeRewritten => Entry::DescribeRewritten,
                    _ => Entry::DescribeStatement,
                };
                Some(Named::Use { stmt, frame, entry })
            }
            _ => None,
        }
    }

    /// A deferred block's first message for the server: the server is owed its BEGIN.
    fn undefer(&mut self) {
        if self.deferred {
            self.deferred = false;
            self.owe_begin = true;
            self.plan.push_back(Entry::HiddenBegin);
        }
    }

    /// A bare BEGIN outside a transaction, or the COMMIT/ROLLBACK of a deferred block,
    /// answered without the server (`deferred` module).
    fn control(&mut self, sql: &[u8]) -> Option<Entry> {
        if !self.cfg.config.defer_begin || !self.plan.is_empty() || self.batch_open {
            return None;
        }
        let c = super::deferred::classify(sql)?;
        match c {
            Control::Begin | Control::Start if self.status == b'I' && !self.deferred => {
                self.deferred = true;
            }
            Control::Commit | Control::Rollback if self.deferred => {
                self.deferred = false;
            }
            _ => return None,
        }
        Some(Entry::Local(super::plan::LocalReply::Control(c)))
    }

    fn push_forwarded(&mut self, entry: Option<Entry>) {
        if self.batch_open {
            self.batch_forwarded = true;
        }
        self.undefer();
        if let Some(e) = entry {
            self.expect(e);
        }
    }

    /// The server owes a reply for `e` — unless `e`'s message belongs to a batch that has
    /// already failed (nothing is pending before the Sync that ends it): Postgres skips
    /// every message up to that Sync without a word, and starts no transaction for them.
    fn expect(&mut self, e: Entry) {
        if self.batch_failed && self.plan.is_empty() && !matches!(e, Entry::Sync) {
            return;
        }
        self.plan.push_back(e);
    }

    /// Whether a large frame whose start is `head` may stream through unread. CopyData and
    /// FunctionCall always may; a Bind only once its portal and statement names are in and
    /// name a statement the server has under that name and pgherald does not rewrite (an
    /// intercepted, rewritten or re-prepared statement's Bind is read whole and handled like
    /// a small one).
    fn streams(&mut self, tag: u8, head: &[u8]) -> bool {
        match tag {
            b'd' | b'F' => true,
            b'B' => {
                let Some((portal, rest)) = framer::cstr(head) else {
                    return false;
                };
                let Some((stmt, _)) = framer::cstr(rest) else {
                    return false;
                };
                let managed = self.transaction_mode()
                    && self.cfg.config.max_prepared_statements > 0
                    && self.stmts.get(stmt).is_some();
                !managed && self.ext.forwards_bind(portal, stmt)
            }
            _ => false,
        }
    }

    fn big_entry(&mut self, tag: u8) -> Option<Entry> {
        match tag {
            b'F' => Some(Entry::Function),
            b'B' => {
                self.batch_open = true;
                Some(Entry::Bind)
            }
            _ => None,
        }
    }

    fn decide(&mut self, tag: u8, body: &[u8]) -> Result<Inbound, Exit> {
        tracing::trace!(tag = %(tag as char), plan = self.plan.len(), "client message");
        let extended = |this: &mut Self, d: Decision| -> Result<Inbound, Exit> {
            let (d, rewritten) = match d {
                Decision::Rewritten(b, entry) => (Decision::Forward(entry), Some(b)),
                d => (d, None),
            };
            if let Some(named) = this.named_use(tag, rewritten.as_deref().unwrap_or(body), &d) {
                return Ok(Inbound::Prepared(named));
            }
            if tag == b'C' && body.first() == Some(&b'S') && !this.stmts.is_empty() {
                if let (Decision::Forward(_), Some((name, _))) = (&d, framer::cstr(&body[1..])) {
                    if this.stmts.remove(name) {
                        return Ok(Inbound::Local(Entry::Local(super::plan::LocalReply::Close)));
                    }
                }
            }
            match d {
                Decision::Forward(Entry::Execute(Effect::PrepareTransaction))
                    if this.ch.txn.blocks_prepare(this.ch.ever_listened) =>
                {
                    Ok(refuse_prepare())
                }
                Decision::Forward(e) => match rewritten {
                    Some(b) => {
                        let mut out = BytesMut::new();
                        if !framer::put(&mut out, tag, &b) {
                            return Err(Exit::ClientProtocol("message too long".into()));
                        }
                        Ok(Inbound::Replace(out.to_vec(), vec![e]))
                    }
                    None => Ok(Inbound::Forward(Some(e))),
                },
                // Turned into `Forward` above.
                Decision::Rewritten(..) => Ok(Inbound::Drop),
                Decision::Local(r) => Ok(Inbound::Local(Entry::Local(r))),
                Decision::Fail(failure) => {
                    let mut out = BytesMut::new();
                    postgres_protocol::message::frontend::parse(FAIL_STATEMENT, "!", [], &mut out)
                        .map_err(|e| Exit::ClientProtocol(e.to_string()))?;
                    Ok(Inbound::Replace(
                        out.to_vec(),
                        vec![Entry::InjectedFailure(Some(failure))],
                    ))
                }
                Decision::Malformed => {
                    Err(Exit::ClientProtocol("invalid message format".to_string()))
                }
            }
        };
        Ok(match tag {
            b'Q' => {
                let sql = framer::cstr(body).map(|(s, _)| s).unwrap_or(body);
                if self.ch.backplane_on() && self.stages_commit(sql) {
                    return Ok(Inbound::Stage);
                }
                self.local_executed = false;
                if self.watch_state() && super::state::text_touches(sql) {
                    self.touched = true;
                }
                if let Some(local) = self.control(sql) {
                    return Ok(Inbound::Local(local));
                }
                let owned = |n: &[u8]| self.owns_statement(n);
                let seq = self.births.now();
                let route = simple::route(sql, &self.ch, self.status, self.scs(), &owned, seq);
                if super::dealloc::deallocates(&route) {
                    self.births.arm();
                }
                match &route {
                    // What the server runs: intercepted statements are placeholders there.
                    Route::Rewrite(text, _) => self.note_server_text(text, true),
                    Route::Forward | Route::Tracked(_) => self.note_server_text(sql, true),
                    Route::Local(_) => {}
                }
                match route {
                    Route::Forward => Inbound::Forward(Some(Entry::Query(QueryPlan::opaque()))),
                    Route::Tracked(plan) => Inbound::Forward(Some(Entry::Query(plan))),
                    Route::Local(q) => Inbound::Local(Entry::LocalQuery(q)),
                    Route::Rewrite(text, plan) => {
                        let Ok(len) = i32::try_from(4 + text.len() + 1) else {
                            return Err(Exit::ClientProtocol("query too long".into()));
                        };
                        let mut out = Vec::with_capacity(1 + 4 + text.len() + 1);
                        out.push(b'Q');
                        out.extend_from_slice(&len.to_be_bytes());
                        out.extend_from_slice(&text);
                        out.push(0);
                        Inbound::Replace(out, vec![Entry::Query(plan)])
                    }
                }
            }
            b'P' => {
                self.batch_open = true;
                if self.watch_state() && super::state::text_touches(body) {
                    self.touched = true;
                }
                let scs = self.scs();
                if let Some((name @ [_, ..], _)) = framer::cstr(body) {
                    self.births.parsed(name, !self.plan.is_empty());
                }
                let stmts = &self.stmts;
                let managed = |n: &[u8]| stmts.get(n).is_some();
                let d = self.ext.parse(body, scs, self.ch.conv, &managed);
                let forwarded = extended(self, d)?;
                if matches!(forwarded, Inbound::Forward(_) | Inbound::Replace(..)) {
                    let opaque = matches!(forwarded, Inbound::Forward(_));
                    self.note_server_text(body, opaque);
                }
                forwarded
            }
            b'B' => {
                self.batch_open = true;
                let d = self.ext.bind(body, self.ch.conv, &self.ch.listens);
                extended(self, d)?
            }
            b'D' => {
                self.batch_open = true;
                let d = self.ext.describe(body);
                extended(self, d)?
            }
            b'E' => {
                self.batch_open = true;
                let mut d = self.ext.execute(body);
                if super::dealloc::stamp(&mut d, &self.births) {
                    self.births.arm();
                }
                let inbound = match extended(self, d)? {
                    Inbound::Forward(Some(Entry::Execute(effect))) if self.local_executed => {
                        self.local_executed = false;
                        let mut out = BytesMut::new();
                        let mut entries = pipeline::mark_then(&mut out, tag, body)
                            .map_err(|e| Exit::ClientProtocol(e.to_string()))?;
                        entries.push(Entry::Execute(effect));
                        Inbound::Replace(out.to_vec(), entries)
                    }
                    local @ Inbound::Local(Entry::Local(LocalReply::Execute { .. })) => {
                        self.local_executed = true;
                        local
                    }
                    other => other,
                };
                self.flush_commit(tag, body, inbound)?
            }
            b'C' => {
                self.batch_open = true;
                let d = self.ext.close(body);
                extended(self, d)?
            }
            b'H' => {
                // Forwarded messages of this batch (sent, or about to be in this run) need the
                // server to flush; pgherald's own replies are written at once anyway. While
                // replies are held, the client's Flush releases what precedes it.
                let flush = self
                    .hold
                    .active()
                    .then_some(Entry::Local(LocalReply::Flush));
                match (self.batch_forwarded, flush) {
                    (true, flush) => Inbound::Forward(flush),
                    (false, Some(flush)) => Inbound::Local(flush),
                    (false, None) => Inbound::Drop,
                }
            }
            b'S' => {
                self.local_executed = false;
                let forwarded = self.batch_forwarded;
                self.batch_open = false;
                self.batch_forwarded = false;
                if forwarded {
                    Inbound::Forward(Some(Entry::Sync))
                } else {
                    Inbound::Local(Entry::Local(super::plan::LocalReply::Sync))
                }
            }
            b'F' => Inbound::Forward(Some(Entry::Function)),
            b'd' => Inbound::Forward(None),
            b'c' | b'f' => {
                self.syncs_ignored_in_copy();
                Inbound::Forward(None)
            }
            b'X' => Inbound::Terminate,
            other => {
                return Err(Exit::ClientProtocol(format!(
                    "invalid frontend message type {other}"
                )))
            }
        })
    }
}
