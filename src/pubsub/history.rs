//! One database's recent notifications, kept while a registered listener is inside a
//! transaction (a "window"): Postgres reads its queue at the end of the transaction with
//! the channel set as of that commit, so a channel LISTENed inside it also gets what others
//! committed there since the transaction began (NOTIFY-SPEC item 18).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

/// Sequence numbers of published notifications and the notifications open windows need.
#[derive(Default)]
pub(super) struct History {
    /// Sequence number of the last notification published in the database.
    seq: u64,
    /// `(seq, channel, frame)` of notifications published while a window was open, oldest
    /// first; only what some open window still needs.
    kept: VecDeque<(u64, Bytes, Bytes)>,
    /// Open windows: start sequence number → how many windows start there.
    windows: BTreeMap<u64, usize>,
    /// Notifications dropped for the bound while a window needed them (logged once each).
    dropped: bool,
}

impl History {
    /// The sequence number of the next notification published.
    pub(super) fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Keep a published notification if an open window needs it; at most `bound` are kept
    /// (the oldest go first, logged once).
    pub(super) fn record(&mut self, seq: u64, channel: &Bytes, frame: &Bytes, bound: usize) {
        if self.windows.is_empty() {
            return;
        }
        if self.kept.len() >= bound {
            self.kept.pop_front();
            if !std::mem::replace(&mut self.dropped, true) {
                tracing::warn!(
                    bound,
                    "a listener's transaction outlasted the kept notifications; channels it \
                     LISTENs in it miss the oldest ones (NOTIFY-SPEC item 18)"
                );
            }
        }
        self.kept.push_back((seq, channel.clone(), frame.clone()));
    }

    /// Open a window at the current position; returns its start.
    pub(super) fn open(&mut self) -> u64 {
        *self.windows.entry(self.seq).or_default() += 1;
        self.seq
    }

    /// Close a window opened at `start`; forget what no open window needs any more.
    pub(super) fn close(&mut self, start: u64) {
        if let Some(n) = self.windows.get_mut(&start) {
            *n -= 1;
            if *n == 0 {
                self.windows.remove(&start);
            }
        }
        match self.windows.keys().next() {
            None => {
                self.kept.clear();
                self.dropped = false;
            }
            Some(&oldest) => {
                while self.kept.front().is_some_and(|(s, _, _)| *s <= oldest) {
                    self.kept.pop_front();
                }
            }
        }
    }

    /// What was published after `start` on a channel `wanted` accepts, in publish order.
    pub(super) fn since(&self, start: u64, wanted: impl Fn(&[u8]) -> bool) -> Vec<(u64, Bytes)> {
        let first = self.kept.partition_point(|(s, _, _)| *s <= start);
        self.kept
            .range(first..)
            .filter(|(_, c, _)| wanted(c))
            .map(|(s, _, f)| (*s, f.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_open_windows_need() {
        let mut h = History::default();
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let s1 = h.next();
        h.record(s1, &b("a"), &b("f1"), 10);
        assert!(h.kept.is_empty(), "no window: nothing kept");
        let w = h.open();
        let s2 = h.next();
        h.record(s2, &b("a"), &b("f2"), 10);
        let w2 = h.open();
        let s3 = h.next();
        h.record(s3, &b("b"), &b("f3"), 10);
        assert_eq!(h.since(w, |c| c == b"b"), [(s3, b("f3"))]);
        assert_eq!(h.since(w, |_| true).len(), 2);
        assert_eq!(h.since(w2, |_| true), [(s3, b("f3"))]);
        h.close(w);
        assert_eq!(h.kept.len(), 1, "only what the later window needs");
        h.close(w2);
        assert!(h.kept.is_empty());
        let w = h.open();
        for _ in 0..5 {
            let s = h.next();
            h.record(s, &b("a"), &b("x"), 3);
        }
        assert_eq!(h.since(w, |_| true).len(), 3, "bounded");
    }
}
