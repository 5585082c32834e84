//! A session's LISTEN/NOTIFY state: the actions pending in its transaction, the channels
//! it listens on, its hub subscription and mailbox, commit, and delivery of notifications
//! (converted to the client's encoding when it differs from the server's).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::txn::{ListenOp, ListenSet, PendingTxn};
use crate::protocol::encoding::{Conversion, EncodingError};
use crate::protocol::reply;
use crate::pubsub::backplane::{Backplane, Pending, Prepared};
use crate::pubsub::relay::Relays;
use crate::pubsub::{Delivery, Hub, Mailbox, Notification, Subscriber};

/// The LISTEN/NOTIFY side of one client session.
#[derive(Debug)]
pub struct Channels {
    hub: Arc<Hub>,
    /// Where committed notifications also go when the database forwards to Postgres.
    forward: Option<Arc<Relays>>,
    database: String,
    pid: i32,
    /// Actions of the current transaction, not yet committed.
    pub txn: PendingTxn,
    /// Committed channels, in the order first listened.
    pub listens: ListenSet,
    sub: Option<Subscriber>,
    mailbox: Option<Mailbox>,
    /// A LISTEN has committed in this session (NOTIFY-SPEC item 19).
    pub ever_listened: bool,
    /// The mailbox overflowed with this limit: the session must end with FATAL 54000.
    pub overflow: Option<usize>,
    /// Relays, to wait for their upstream LISTEN.
    relays: Option<Arc<Relays>>,
    /// Between the session's client_encoding and the server encoding: what the session
    /// takes from the client is converted to the server encoding, what it delivers back.
    pub conv: Conversion,
    /// A notification the client's encoding cannot represent: like Postgres, the session
    /// ends with FATAL 22P05 in that notification's place; nothing is delivered after it.
    pub unconvertible: Option<EncodingError>,
    /// Confirmation that the relay LISTENs upstream on newly committed channels; the
    /// session waits for it before the client sees its LISTEN complete.
    pub relay_wait: Option<tokio::sync::oneshot::Receiver<()>>,
    /// The mailbox is drained into the client's output once `relay_wait` resolves: what the
    /// server raised in the transaction just committed precedes its ReadyForQuery (item 26).
    pub drain_after_relay: bool,
    /// Notifications raised inside Postgres are relayed for this database.
    relay_on: bool,
    /// Channels reserved in the hub ahead of LISTENs not committed yet (see `reserve`).
    reserved: Vec<Vec<u8>>,
    /// The relay holds what this session's server connections raise (see `capture_ahead`).
    capturing: bool,
    /// Statements ran on the server since the relay last caught up with this session.
    server_unsynced: bool,
    /// Committed transactions' own notifications, waiting for `relay_wait` to be merged
    /// with what the server raised: each batch and how many came before the server ran.
    held: Vec<(Vec<Notification>, usize)>,
    /// Several instances share notifications through this (None: the in-memory hub only).
    backplane: Option<Arc<dyn Backplane>>,
    /// Answers the session waits for before the client sees its commit or LISTEN complete:
    /// a commit's batch recorded on the backplane (true), or the backplane reader of the
    /// database positioned (false).
    pub backplane_waits: Vec<(Pending, bool)>,
    /// Notifications for this listener were lost on the backplane: the session must end.
    pub lost: bool,
    /// The pending backplane entry of the transaction whose COMMIT is on its way to the
    /// server (`frontend::atomic`): resolved when the server answers it.
    pub staged: Option<String>,
    /// Where the hub's publish sequence stood when this registered listener last stopped
    /// reading (entered a transaction or a request): channels it LISTENs before it reads
    /// again also get what was published since (item 18).
    window: Option<u64>,
}

impl Channels {
    /// State for a session of `pid` in `database`.
    pub fn new(
        hub: Arc<Hub>,
        relays: Option<Arc<Relays>>,
        forward: bool,
        database: String,
        pid: i32,
    ) -> Channels {
        let relay_on = relays.as_ref().is_some_and(|r| r.relays(&database));
        Channels {
            hub,
            forward: relays.clone().filter(|_| forward),
            relays,
            relay_wait: None,
            drain_after_relay: false,
            relay_on,
            reserved: Vec::new(),
            capturing: false,
            server_unsynced: false,
            held: Vec::new(),
            backplane: None,
            backplane_waits: Vec::new(),
            lost: false,
            staged: None,
            window: None,
            database,
            pid,
            txn: PendingTxn::new(),
            listens: ListenSet::new(),
            sub: None,
            mailbox: None,
            ever_listened: false,
            overflow: None,
            conv: Conversion::default(),
            unconvertible: None,
        }
    }

    /// Share notifications with other instances through `backplane`. Notifications raised
    /// inside Postgres stay with each instance's relay (every relay receives them from
    /// Postgres), so they are never captured into a commit's batch here.
    pub fn set_backplane(&mut self, backplane: Option<Arc<dyn Backplane>>) {
        self.backplane = backplane;
    }

    /// Commit the pending actions: LISTEN/UNLISTEN take effect first, then the
    /// notifications are published in one ordered step (items 15, 17).
    pub fn commit(&mut self) {
        if self.txn.is_empty() {
            self.txn.end();
            if self.staged.is_some() {
                self.publish(Vec::new());
            }
            if self.capturing {
                // What the server raised in this transaction goes out at its commit.
                self.hold(Vec::new(), 0);
            }
            return;
        }
        let c = self.txn.take_commit();
        if !c.listen_ops.is_empty() {
            // Any committed LISTEN registers the session, even one the same transaction
            // UNLISTENed again (item 19).
            if c.listen_ops
                .iter()
                .any(|op| matches!(op, ListenOp::Listen(_)))
            {
                self.ever_listened = true;
            }
            let registered = !self.listens.is_empty();
            let (added, removed) = self.listens.apply(&c.listen_ops);
            if !added.is_empty() {
                self.subscribe();
            }
            if let Some(sub) = &self.sub {
                sub.update_since(&added, &removed, self.window);
            }
            match (registered, self.listens.is_empty()) {
                (true, true) => self.unregister(),
                // Registered from this commit on: if it is not reading yet, a later
                // LISTEN before it does still gets what others commit from here (item 18).
                (false, false) if self.window.is_none() => {
                    self.window = self.sub.as_ref().map(Subscriber::open_window);
                }
                _ => {}
            }
            if !added.is_empty() {
                // After `update`, which tells the relay about the new channels.
                self.relay_wait = self.relays.as_ref().and_then(|r| r.barrier(&self.database));
            }
        }
        if !c.notifications.is_empty() || self.capturing {
            let batch: Vec<Notification> = c
                .notifications
                .into_iter()
                .map(|(channel, payload)| Notification {
                    pid: self.pid,
                    channel: Bytes::from(channel),
                    payload: Bytes::from(payload),
                })
                .collect();
            if self.staged.is_some() {
                self.publish(batch);
            } else if self.capturing || (self.server_unsynced && !batch.is_empty() && self.raised())
            {
                // Also a transaction of pgherald's alone, right after one that ran on the
                // server: what that one raised in Postgres goes first (commit order).
                self.hold(batch, c.before_server);
            } else {
                self.publish(batch);
            }
        }
    }

    /// The session stops reading notifications (a request arrives while it is deliverable):
    /// a registered listener (one listening on something, as Postgres counts it) opens a
    /// window in the hub.
    pub fn open_window(&mut self) {
        if self.window.is_none() && !self.listens.is_empty() {
            self.window = self.sub.as_ref().map(Subscriber::open_window);
        }
    }

    /// The session reads notifications again: close its window.
    pub fn close_window(&mut self) {
        if let (Some(start), Some(sub)) = (self.window.take(), &self.sub) {
            sub.close_window(start);
        }
    }

    /// A commit left the session listening on nothing: as Postgres's `asyncQueueUnregister`,
    /// it gives up its place in the queue. What was queued and not yet delivered is dropped,
    /// and a LISTEN before it reads again is a first LISTEN (item 16): its window ends here.
    fn unregister(&mut self) {
        self.close_window();
        if let Some(sub) = &self.sub {
            sub.forget_queued();
        }
    }

    /// The server connection committed LISTENs on `channels` (code on the server ran them):
    /// the session listens on them from now on, as if it had committed them itself.
    pub fn adopt(&mut self, channels: Vec<Vec<u8>>) {
        for c in channels {
            self.txn.push(super::txn::Action::Listen(c));
        }
        self.commit();
    }

    /// The upstream database this session's notifications are keyed by.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// A statement going to the server mentions NOTIFY and pgherald does not answer it: it
    /// may raise notifications inside Postgres (`pg_notify` in a larger statement, a
    /// function or rule it creates or calls), so the database counts as one where
    /// pgherald's clients make Postgres raise.
    pub fn note_may_raise(&mut self) {
        if self.relay_on {
            if let Some(r) = &self.relays {
                r.mark_raised(&self.database);
            }
        }
    }

    /// Statements of this session go to the server. Returns the relay round trip to wait
    /// for first when they start capturing (`capture_ahead` with `notifies`) right after a
    /// transaction of this session that ran on the server and was not synced with the
    /// relay: what that one raised must be published before the capture begins, not with
    /// this transaction (commit order, dedup only within a transaction).
    pub fn server_ran(&mut self, notifies: bool) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let behind = std::mem::replace(&mut self.server_unsynced, true);
        if !(behind && notifies && !self.capturing && self.held.is_empty() && self.raised()) {
            return None;
        }
        self.relays.as_ref().and_then(|r| r.sync(&self.database))
    }

    /// pgherald's clients make Postgres raise notifications in this database.
    fn raised(&self) -> bool {
        self.relay_on
            && self
                .relays
                .as_ref()
                .is_some_and(|r| r.raised(&self.database))
    }

    /// What the server raised in this transaction is still on its way to the relay: publish
    /// the commit once a round trip there has brought it.
    fn hold(&mut self, batch: Vec<Notification>, before_server: usize) {
        self.held.push((batch, before_server));
        self.server_unsynced = false;
        self.relay_wait = self.relays.as_ref().and_then(|r| r.sync(&self.database));
        if self.relay_wait.is_none() {
            self.publish_held();
        }
    }

    fn publish(&mut self, batch: Vec<Notification>) {
        if let Some(entry) = self.staged.take() {
            // The server committed a staged transaction: confirm its pending entry, which
            // holds the same batch (`frontend::atomic`).
            super::atomic::test_exit_hook();
            if let Some(bp) = &self.backplane {
                self.backplane_waits
                    .push((bp.resolve(&self.database, &entry, true), true));
                self.drain_after_relay = true;
            }
            return;
        }
        if batch.is_empty() {
            return;
        }
        if let Some(bp) = &self.backplane {
            // Delivered here (the sender's copy included) when this instance reads it back.
            self.backplane_waits
                .push((bp.publish(&self.database, batch), true));
            self.drain_after_relay = true;
            return;
        }
        self.hub.publish(&self.database, &batch);
        if let Some(relays) = &self.forward {
            relays.forward(
                &self.database,
                batch.into_iter().map(|n| (n.channel, n.payload)).collect(),
            );
        }
    }

    /// Discard the pending actions (rollback).
    pub fn discard(&mut self) {
        self.txn.clear();
        if let (Some(entry), Some(bp)) = (self.staged.take(), &self.backplane) {
            // The server did not commit a staged transaction: nobody delivers its batch.
            drop(bp.resolve(&self.database, &entry, false));
        }
        if self.capturing && self.held.is_empty() {
            // What was held came from transactions that committed on the server.
            self.publish_captured();
        }
    }

    /// Before the server runs statements of a transaction that also NOTIFYs through
    /// pgherald (`notifies`), in a database where pgherald's clients make Postgres raise
    /// notifications: have the relay hold what this session's server connections raise, so
    /// that both kinds are published in one step at the commit, deduplicated against each
    /// other (item 13), Postgres's between the NOTIFYs issued before the transaction's first
    /// server statement and those after it (item 27).
    pub fn capture_ahead(&mut self, notifies: bool) {
        if !notifies || self.capturing || !self.relay_on || self.backplane.is_some() {
            return;
        }
        if let Some(r) = self.relays.as_ref().filter(|r| r.raised(&self.database)) {
            r.capture(self.pid);
            self.capturing = true;
        }
    }

    /// Publish a held commit together with what the relay held meanwhile (after the round
    /// trip `relay_wait` asked for).
    /// The first held commit takes everything the relay held: the server raised it in that
    /// transaction (or, rarely, in a later one of the same Query, when two commit before
    /// pgherald has read the first one's reply).
    pub fn publish_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut raised = self.take_captured();
        for (own, before) in std::mem::take(&mut self.held) {
            if raised.is_empty() {
                self.publish(own);
                continue;
            }
            let merged = super::txn::merge_raised(&own, before, std::mem::take(&mut raised));
            self.hub.publish_relayed(&self.database, &merged);
            if let Some(relays) = self.forward.as_ref().filter(|_| !own.is_empty()) {
                relays.forward(
                    &self.database,
                    own.into_iter().map(|n| (n.channel, n.payload)).collect(),
                );
            }
        }
    }

    fn take_captured(&mut self) -> Vec<Notification> {
        if !std::mem::take(&mut self.capturing) {
            return Vec::new();
        }
        self.relays
            .as_ref()
            .map(|r| r.take_capture(self.pid))
            .unwrap_or_default()
    }

    fn publish_captured(&mut self) {
        let raised = self.take_captured();
        if !raised.is_empty() {
            self.hub.publish_relayed(&self.database, &raised);
        }
    }

    fn subscribe(&mut self) {
        if self.sub.is_none() {
            let (sub, mailbox) = self.hub.subscriber_of(&self.database, self.pid);
            self.sub = Some(sub);
            self.mailbox = Some(mailbox);
            if let Some(ready) = self
                .backplane
                .as_ref()
                .and_then(|b| b.follow(&self.database))
            {
                self.backplane_waits.push((ready, false));
            }
        }
    }

    /// Several instances share notifications (a backplane is configured).
    #[inline]
    pub fn backplane_on(&self) -> bool {
        self.backplane.is_some()
    }

    /// With a backplane, and nothing staged yet: the batch the pending transaction would
    /// publish if it committed now, when it ran statements on the server and notifies
    /// (None otherwise; never without a backplane).
    pub fn stage_batch(&self) -> Option<Vec<Notification>> {
        if self.backplane.is_none() || self.staged.is_some() || !self.txn.ran_on_server() {
            return None;
        }
        let batch: Vec<Notification> = self
            .txn
            .clone()
            .take_commit()
            .notifications
            .into_iter()
            .map(|(channel, payload)| Notification {
                pid: self.pid,
                channel: Bytes::from(channel),
                payload: Bytes::from(payload),
            })
            .collect();
        (!batch.is_empty()).then_some(batch)
    }

    /// Record `batch` as pending on server transaction `xid` (see `stage_batch`).
    pub fn prepare(&self, xid: u64, batch: Vec<Notification>) -> Option<Prepared> {
        Some(self.backplane.as_ref()?.prepare(&self.database, xid, batch))
    }

    /// True when the relay brings this database's server-raised notifications.
    pub fn relay_on(&self) -> bool {
        self.relay_on
    }

    /// `channel` is neither listened to nor reserved.
    pub fn unheld(&self, channel: &[u8]) -> bool {
        !self.listens.contains(channel) && !self.reserved.iter().any(|r| r == channel)
    }

    /// Before the server runs what may commit a LISTEN on `channels`: reserve the ones not
    /// held yet, so the relay LISTENs upstream before the server commits. Returns the relay
    /// round trip to wait for (then call `admit_own`) when a channel was new. A notification the
    /// session's own transaction raises in Postgres commits together with the LISTEN and
    /// Postgres delivers it (item 16); it may reach the relay before the session sees the
    /// commit, so the reservation takes it and delivery keeps it only if the LISTEN commits.
    pub fn reserve(
        &mut self,
        channels: Vec<Vec<u8>>,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let new: Vec<Vec<u8>> = channels.into_iter().filter(|c| self.unheld(c)).collect();
        if new.is_empty() {
            return None;
        }
        self.subscribe();
        if let Some(sub) = &self.sub {
            sub.reserve(&new);
        }
        self.reserved.extend(new);
        // A round trip, not only the LISTEN's confirmation: what the session's earlier
        // transactions raised must be in the hub before its own notifications are admitted.
        self.relays.as_ref().and_then(|r| r.sync(&self.database))
    }

    /// The relay LISTENs upstream on the reserved channels: from now on they take what the
    /// session's own server connections raise.
    pub fn admit_own(&self) {
        if let Some(sub) = &self.sub {
            sub.admit_own(self.pid);
        }
    }

    /// The reserved channels that no LISTEN committed go (at the end of a transaction with
    /// nothing more in flight).
    pub fn drop_reserved(&mut self) {
        if !self.reserved.is_empty() {
            self.reserved.clear();
            if let Some(sub) = &self.sub {
                sub.drop_reserved();
            }
        }
    }

    /// True while channels are reserved (a LISTEN of this transaction may commit).
    pub fn has_reserved(&self) -> bool {
        !self.reserved.is_empty()
    }

    /// A transaction has committed (`server`: one the server ran): what it raised inside Postgres must reach
    /// the session before the ReadyForQuery (item 26). When the session listens and either
    /// has had notifications from Postgres before or reserved channels in this transaction
    /// (`fresh`), ask the relay for a round trip and drain after it; false: drain now.
    /// Sessions fed only by pgherald's own NOTIFYs never pay the round trip.
    pub fn sync_relay(&mut self, fresh: bool, server: bool) -> bool {
        if !self.held.is_empty() {
            // The commit waits for the relay already; its self-delivery follows it.
            self.drain_after_relay = true;
            return true;
        }
        if !server {
            return false;
        }
        // In a database where pgherald's clients make Postgres raise notifications, the
        // first one too (item 26); a session that never listens never gets here.
        let fed = fresh || self.raised() || self.sub.as_ref().is_some_and(Subscriber::fed);
        if !self.relay_on || self.listens.is_empty() || !fed {
            return false;
        }
        match self
            .relays
            .as_ref()
            .and_then(|r| r.sync_now(&self.database))
        {
            Some(rx) => {
                self.server_unsynced = false;
                self.relay_wait = Some(rx);
                self.drain_after_relay = true;
                true
            }
            None => false,
        }
    }

    /// DISCARD ALL: stop listening on everything.
    pub fn unlisten_everything(&mut self) {
        let registered = !self.listens.is_empty();
        self.listens.clear();
        if let Some(sub) = &self.sub {
            sub.unlisten_all();
        }
        if registered {
            self.unregister();
        }
    }

    /// Write every queued notification the session still listens to into `out`
    /// (the channel filter applies at delivery, item 18).
    pub fn drain_into(&mut self, out: &mut BytesMut) {
        while self.unconvertible.is_none() {
            let Some(d) = self.mailbox.as_mut().and_then(Mailbox::try_recv) else {
                return;
            };
            self.deliver(d, out);
        }
    }

    /// Handle one delivery: a frame still wanted goes to `out` (converted to the client's
    /// encoding when needed); an overflow or an unconvertible notification is recorded.
    pub fn deliver(&mut self, d: Delivery, out: &mut BytesMut) {
        if self.unconvertible.is_some() {
            return;
        }
        match d {
            Delivery::Frame(f) => {
                if !channel_of(&f).is_some_and(|c| self.listens.contains(c)) {
                    return;
                }
                if self.conv.passes_through() {
                    out.extend_from_slice(&f);
                } else if let Err(e) = convert_frame(&f, self.conv, out) {
                    self.unconvertible = Some(e);
                }
            }
            Delivery::Overflow { limit } => self.overflow = Some(limit),
            Delivery::Lost => self.lost = true,
        }
    }

    /// Wait for the next delivery; never resolves for a session that never listened.
    pub async fn recv(&mut self) -> Option<Delivery> {
        match self.mailbox.as_mut() {
            Some(m) => m.recv().await,
            None => std::future::pending().await,
        }
    }

    /// True when a mailbox exists (the session has listened at some point).
    pub fn has_mailbox(&self) -> bool {
        self.mailbox.is_some()
    }
}

impl Drop for Channels {
    fn drop(&mut self) {
        self.close_window();
        // A disconnect must not leave what the relay holds for this session unpublished.
        self.publish_captured();
    }
}

/// Re-encode a NotificationResponse frame in the client's encoding into `out`: the channel
/// first, then the payload, as Postgres converts them.
fn convert_frame(frame: &[u8], conv: Conversion, out: &mut BytesMut) -> Result<(), EncodingError> {
    let Some(pid) = frame.get(5..9).and_then(|p| <[u8; 4]>::try_from(p).ok()) else {
        return Ok(());
    };
    let Some(channel) = channel_of(frame) else {
        return Ok(());
    };
    let rest = &frame[9 + channel.len() + 1..];
    let payload = rest.strip_suffix(&[0]).unwrap_or(rest);
    let channel = conv.to_client(channel)?;
    let payload = conv.to_client(payload)?;
    reply::notification(out, i32::from_be_bytes(pid), &channel, &payload);
    Ok(())
}

/// The channel of an encoded NotificationResponse frame.
fn channel_of(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.get(9..)?;
    let end = memchr::memchr(0, rest)?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::txn::Action;

    #[tokio::test]
    async fn commit_applies_listens_before_publishing() {
        let hub = Hub::new(100);
        let mut a = Channels::new(hub.clone(), None, false, "db".into(), 7);
        a.txn.push(Action::Notify {
            channel: b"c".to_vec(),
            payload: b"x".to_vec(),
        });
        a.txn.push(Action::Listen(b"c".to_vec()));
        a.commit();
        let mut out = BytesMut::new();
        a.drain_into(&mut out);
        assert_eq!(
            channel_of(&out),
            Some(&b"c"[..]),
            "self-delivery after LISTEN in the same txn"
        );
        // Unlisten committed: a notification already queued is filtered at delivery.
        let mut b = Channels::new(hub.clone(), None, false, "db".into(), 8);
        b.txn.push(Action::Notify {
            channel: b"c".to_vec(),
            payload: b"y".to_vec(),
        });
        b.commit();
        a.txn.push(Action::Unlisten(b"c".to_vec()));
        a.commit();
        let mut out = BytesMut::new();
        a.drain_into(&mut out);
        assert!(out.is_empty());
    }

    /// Postgres's `asyncQueueUnregister`: when a commit leaves the session listening on
    /// nothing, what it has not read yet is gone; LISTENing again before it reads starts a
    /// new window at that commit (items 16 and 18).
    #[tokio::test]
    async fn unregistering_drops_unread_and_restarts_the_window() {
        let hub = Hub::new(100);
        let mut a = Channels::new(hub.clone(), None, false, "db".into(), 7);
        let mut b = Channels::new(hub.clone(), None, false, "db".into(), 8);
        let send = |b: &mut Channels, channel: &[u8], payload: &[u8]| {
            b.txn.push(Action::Notify {
                channel: channel.to_vec(),
                payload: payload.to_vec(),
            });
            b.commit();
        };
        a.txn.push(Action::Listen(b"c".to_vec()));
        a.commit();
        a.close_window();
        a.open_window(); // a request arrives: a stops reading
        send(&mut b, b"c", b"unread");
        send(&mut b, b"e", b"before unregistering");
        a.txn.push(Action::Unlisten(b"c".to_vec()));
        a.commit();
        send(&mut b, b"e", b"while unregistered");
        a.txn.push(Action::Listen(b"c".to_vec()));
        a.commit();
        send(&mut b, b"e", b"after registering again");
        a.txn.push(Action::Listen(b"e".to_vec()));
        a.commit();
        a.close_window();
        let mut out = BytesMut::new();
        a.drain_into(&mut out);
        let mut payloads: Vec<&[u8]> = Vec::new();
        let mut rest = &out[..];
        while let Some(len) = rest.get(1..5) {
            let total = 1 + u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let (frame, tail) = rest.split_at(total);
            let end = frame.len() - 1;
            let start = frame[..end]
                .iter()
                .rposition(|b| *b == 0)
                .map_or(0, |p| p + 1);
            payloads.push(&frame[start..end]);
            rest = tail;
        }
        assert_eq!(payloads, vec![&b"after registering again"[..]]);
    }

    #[tokio::test]
    async fn delivery_converts_and_stops_at_an_unconvertible_notification() {
        use crate::protocol::encoding::SingleByte;
        let hub = Hub::new(100);
        let mut l = Channels::new(hub.clone(), None, false, "db".into(), 7);
        l.conv = Conversion::Single(SingleByte::Latin1);
        l.txn.push(Action::Listen("é".as_bytes().to_vec()));
        l.commit();
        let mut n = Channels::new(hub.clone(), None, false, "db".into(), 8);
        for p in ["café", "中", "never"] {
            n.txn.push(Action::Notify {
                channel: "é".as_bytes().to_vec(),
                payload: p.as_bytes().to_vec(),
            });
        }
        n.commit();
        let mut out = BytesMut::new();
        l.drain_into(&mut out);
        assert_eq!(&out[..], b"A\0\0\0\x0f\0\0\0\x08\xe9\0caf\xe9\0");
        let e = l.unconvertible.take().expect("FATAL 22P05 due");
        assert_eq!(e.sqlstate(), "22P05");
    }
}
