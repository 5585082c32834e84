//! Read-only views of the hub for the admin console (SHOW CHANNELS, SHOW LISTENERS): taken
//! under each database's lock, one database at a time.

use std::sync::Arc;

use bytes::Bytes;

use super::{lock, Hub};

/// One channel with listeners.
#[derive(Debug, Clone)]
pub struct ChannelView {
    /// Database.
    pub database: String,
    /// Channel name.
    pub channel: Bytes,
    /// Sessions listening now.
    pub listeners: usize,
    /// Notifications published to it while it had listeners.
    pub published: u64,
    /// Notifications queued to its listeners.
    pub delivered: u64,
}

/// One session's subscription.
#[derive(Debug, Clone)]
pub struct ListenerView {
    /// The client's virtual pid.
    pub owner: i32,
    /// Database.
    pub database: String,
    /// Channels it listens on.
    pub channels: usize,
    /// Notifications queued now.
    pub queued: usize,
    /// Most notifications ever queued at once.
    pub max_queued: usize,
    /// Notifications queued to it in total.
    pub delivered: u64,
}

impl Hub {
    fn each_db(&self) -> Vec<(String, Arc<super::DbHub>)> {
        let mut v: Vec<_> = self
            .databases
            .iter()
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every channel with at least one listener, by database and name.
    pub fn channel_views(&self) -> Vec<ChannelView> {
        let mut out = Vec::new();
        for (database, db) in self.each_db() {
            let st = lock(&db.state);
            let mut rows: Vec<ChannelView> = st
                .channels
                .iter()
                .map(|(name, l)| ChannelView {
                    database: database.clone(),
                    channel: Bytes::copy_from_slice(name),
                    listeners: l.list.len(),
                    published: l.published,
                    delivered: l.delivered,
                })
                .collect();
            rows.sort_by(|a, b| a.channel.cmp(&b.channel));
            out.extend(rows);
        }
        out
    }

    /// Every subscribed session.
    pub fn listener_views(&self) -> Vec<ListenerView> {
        let mut out = Vec::new();
        for (database, db) in self.each_db() {
            let st = lock(&db.state);
            for (id, (owner, shared)) in &st.mailboxes {
                let q = lock(&shared.queue);
                out.push(ListenerView {
                    owner: *owner,
                    database: database.clone(),
                    channels: st.subscribers.get(id).map_or(0, |c| c.len()),
                    queued: q.frames.len(),
                    max_queued: q.max_len,
                    delivered: q.queued_total,
                });
            }
        }
        out.sort_by_key(|l| l.owner);
        out
    }

    /// The mailbox limit (listener_queue_limit).
    pub fn limit(&self) -> usize {
        self.limit
    }
}
