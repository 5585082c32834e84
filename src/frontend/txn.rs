//! Transaction bookkeeping for intercepted LISTEN / UNLISTEN / NOTIFY (NOTIFY-SPEC B).
//! `PendingTxn` holds one session's not-yet-committed actions with savepoint marks and turns
//! them into a deduplicated `Committed` at commit; `ListenSet` is the session's committed channels.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::pubsub::Notification;

/// One intercepted statement's effect, recorded until its transaction ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `LISTEN channel`.
    Listen(Vec<u8>),
    /// `UNLISTEN channel`.
    Unlisten(Vec<u8>),
    /// `UNLISTEN *`.
    UnlistenAll,
    /// `NOTIFY channel, 'payload'` or `pg_notify(...)`; an omitted or NULL payload is empty.
    Notify {
        /// Channel name bytes (already folded / truncated by the parser).
        channel: Vec<u8>,
        /// Payload bytes.
        payload: Vec<u8>,
    },
}

/// One transaction's notifications in the order Postgres would publish them: the session's
/// own (`own`, issued through pgherald; the first `before` of them before the transaction's
/// first statement ran on the server), with what the server raised (`raised`, in its order)
/// between those before and those after, and duplicates (same channel and payload) after
/// the first dropped (item 13). Exact unless own NOTIFYs fall between two server statements
/// that both raise.
pub fn merge_raised(
    own: &[Notification],
    before: usize,
    raised: Vec<Notification>,
) -> Vec<Notification> {
    let before = before.min(own.len());
    let mut seen: HashSet<(&[u8], &[u8])> = HashSet::new();
    let mut out = Vec::with_capacity(own.len() + raised.len());
    let order = own[..before]
        .iter()
        .chain(raised.iter())
        .chain(own[before..].iter());
    for n in order {
        if seen.insert((&n.channel[..], &n.payload[..])) {
            out.push(n.clone());
        }
    }
    out
}

/// A committed change to the listen set, applied in statement order (item 15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenOp {
    /// Start listening on a channel (no-op if already held).
    Listen(Vec<u8>),
    /// Stop listening on a channel (silent if not held).
    Unlisten(Vec<u8>),
    /// Stop listening on every channel.
    UnlistenAll,
}

/// What a successful COMMIT hands to the session: listen changes first, then deliveries (item 17).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    /// LISTEN / UNLISTEN operations in statement order.
    pub listen_ops: Vec<ListenOp>,
    /// `(channel, payload)` in issue order, duplicates within the transaction removed (item 13).
    pub notifications: Vec<(Vec<u8>, Vec<u8>)>,
    /// How many of `notifications` were issued before the transaction's first statement ran
    /// on the server (all of them when none did).
    pub before_server: usize,
}

/// The pending intercepted actions of one session's current transaction (explicit or implicit).
///
/// Actions are a flat list; a savepoint is a name plus the list length when it was taken, so
/// `ROLLBACK TO` is a truncate and `RELEASE` only forgets marks.
#[derive(Debug, Default, Clone)]
pub struct PendingTxn {
    actions: Vec<Action>,
    savepoints: Vec<(Vec<u8>, usize)>,
    /// How many actions were recorded when the transaction's first statement ran on the
    /// server (None: none yet).
    server_mark: Option<usize>,
}

impl PendingTxn {
    /// An empty transaction state.
    pub fn new() -> Self {
        Self::default()
    }

    /// A statement of this transaction ran on the server: what the server raises comes
    /// after the actions recorded so far.
    pub fn mark_server(&mut self) {
        self.server_mark.get_or_insert(self.actions.len());
    }

    /// A statement of this transaction ran on the server.
    pub fn ran_on_server(&self) -> bool {
        self.server_mark.is_some()
    }

    /// The transaction ended: forget where the server ran.
    pub fn end(&mut self) {
        self.server_mark = None;
    }

    /// Records an action at the current position.
    pub fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    /// `SAVEPOINT name`. A repeated name shadows the older one, as in Postgres.
    pub fn savepoint(&mut self, name: &[u8]) {
        self.savepoints.push((name.to_vec(), self.actions.len()));
    }

    /// `RELEASE [SAVEPOINT] name`: keeps the actions, forgets the newest savepoint `name` and all
    /// savepoints newer than it. Returns false (changing nothing) if no such savepoint exists.
    pub fn release(&mut self, name: &[u8]) -> bool {
        match self.find(name) {
            Some(i) => {
                self.savepoints.truncate(i);
                true
            }
            None => false,
        }
    }

    /// `ROLLBACK TO [SAVEPOINT] name`: discards actions recorded since the newest savepoint `name`,
    /// which stays open; newer savepoints are dropped. Returns false if no such savepoint exists.
    pub fn rollback_to(&mut self, name: &[u8]) -> bool {
        match self.find(name) {
            Some(i) => {
                let mark = self.savepoints[i].1;
                self.actions.truncate(mark);
                if let Some(m) = self.server_mark.as_mut() {
                    *m = (*m).min(mark);
                }
                self.savepoints.truncate(i + 1);
                true
            }
            None => false,
        }
    }

    /// True when nothing is pending and no savepoint is open.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.savepoints.is_empty()
    }

    /// Channels of the surviving LISTENs, in issue order (repeats included).
    pub fn listens(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.actions.iter().filter_map(|a| match a {
            Action::Listen(c) => Some(&c[..]),
            _ => None,
        })
    }

    /// A NOTIFY survives.
    pub fn notifies(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Notify { .. }))
    }

    /// Number of surviving actions.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether `PREPARE TRANSACTION` must fail with 0A000 (item 19): a surviving LISTEN or
    /// NOTIFY, or a surviving UNLISTEN once the session has ever committed a LISTEN.
    pub fn blocks_prepare(&self, ever_listened: bool) -> bool {
        self.actions.iter().any(|a| match a {
            Action::Listen(_) | Action::Notify { .. } => true,
            Action::Unlisten(_) | Action::UnlistenAll => ever_listened,
        })
    }

    /// COMMIT: returns the surviving actions split into listen ops and deduplicated
    /// notifications, and leaves `self` empty. Dedup is one hashing pass, O(total bytes).
    pub fn take_commit(&mut self) -> Committed {
        self.savepoints.clear();
        let mark = self.server_mark.take().unwrap_or(usize::MAX);
        let actions = std::mem::take(&mut self.actions);
        let n_actions = actions.len();
        let keep = notify_keep_flags(&actions);
        let mut out = Committed {
            listen_ops: Vec::new(),
            notifications: Vec::with_capacity(keep.iter().filter(|k| **k).count()),
            before_server: 0,
        };
        for (i, (a, keep)) in actions.into_iter().zip(keep).enumerate() {
            if i == mark {
                out.before_server = out.notifications.len();
            }
            match a {
                Action::Listen(c) => out.listen_ops.push(ListenOp::Listen(c)),
                Action::Unlisten(c) => out.listen_ops.push(ListenOp::Unlisten(c)),
                Action::UnlistenAll => out.listen_ops.push(ListenOp::UnlistenAll),
                Action::Notify { channel, payload } => {
                    if keep {
                        out.notifications.push((channel, payload));
                    }
                }
            }
        }
        if out.before_server == 0 && mark >= n_actions {
            out.before_server = out.notifications.len();
        }
        out
    }

    /// ROLLBACK (or any abort): forgets everything.
    pub fn clear(&mut self) {
        self.actions.clear();
        self.savepoints.clear();
        self.server_mark = None;
    }

    fn find(&self, name: &[u8]) -> Option<usize> {
        self.savepoints
            .iter()
            .rposition(|(n, _)| n.as_slice() == name)
    }
}

/// For each action, whether it is a notification to keep: the first of every equal
/// `(channel, payload)` pair. Non-notify actions get `false` (ignored by the caller).
fn notify_keep_flags(actions: &[Action]) -> Vec<bool> {
    let mut seen: HashSet<(&[u8], &[u8])> = HashSet::new();
    actions
        .iter()
        .map(|a| match a {
            Action::Notify { channel, payload } => seen.insert((channel, payload)),
            _ => false,
        })
        .collect()
}

/// A session's committed LISTEN channels, iterated in the order each was first added
/// (item 3): a repeated LISTEN does not move a channel; UNLISTEN then LISTEN moves it to the end.
#[derive(Debug, Default, Clone)]
pub struct ListenSet {
    by_seq: BTreeMap<u64, Vec<u8>>,
    seq_of: HashMap<Vec<u8>, u64>,
    next_seq: u64,
}

impl ListenSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies committed ops in statement order and returns the net change against the set as it
    /// was before: `(added, removed)`, disjoint. `added` follows the new set's order, `removed`
    /// the old one's. A channel both removed and re-added is in neither (it only moves).
    pub fn apply(&mut self, ops: &[ListenOp]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        // Position (sequence number) in the old set of each touched channel, None if absent.
        let mut before: HashMap<Vec<u8>, Option<u64>> = HashMap::new();
        for op in ops {
            match op {
                ListenOp::Listen(c) | ListenOp::Unlisten(c) => {
                    if !before.contains_key(c) {
                        before.insert(c.clone(), self.seq_of.get(c.as_slice()).copied());
                    }
                    if matches!(op, ListenOp::Listen(_)) {
                        self.insert(c);
                    } else {
                        self.remove(c);
                    }
                }
                ListenOp::UnlistenAll => {
                    self.seq_of.clear();
                    for (seq, c) in std::mem::take(&mut self.by_seq) {
                        before.entry(c).or_insert(Some(seq));
                    }
                }
            }
        }
        let added = self
            .iter()
            .filter(|c| before.get(*c) == Some(&None))
            .map(<[u8]>::to_vec)
            .collect();
        let mut removed: Vec<(u64, Vec<u8>)> = before
            .into_iter()
            .filter_map(|(c, old)| old.map(|seq| (seq, c)))
            .filter(|(_, c)| !self.contains(c))
            .collect();
        removed.sort_unstable_by_key(|(seq, _)| *seq);
        (added, removed.into_iter().map(|(_, c)| c).collect())
    }

    /// Whether the session is listening on `channel` (exact bytes).
    pub fn contains(&self, channel: &[u8]) -> bool {
        self.seq_of.contains_key(channel)
    }

    /// Channels in first-added order, as `pg_listening_channels()` returns them.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.by_seq.values().map(Vec::as_slice)
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.seq_of.len()
    }

    /// True when listening on nothing.
    pub fn is_empty(&self) -> bool {
        self.seq_of.is_empty()
    }

    /// Empties the set (`UNLISTEN *` committed, `DISCARD ALL`, disconnect); returns what it held,
    /// in order.
    pub fn clear(&mut self) -> Vec<Vec<u8>> {
        self.seq_of.clear();
        std::mem::take(&mut self.by_seq).into_values().collect()
    }

    fn insert(&mut self, c: &[u8]) {
        if self.seq_of.contains_key(c) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(c.to_vec(), seq);
        self.by_seq.insert(seq, c.to_vec());
    }

    fn remove(&mut self, c: &[u8]) {
        if let Some(seq) = self.seq_of.remove(c) {
            self.by_seq.remove(&seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(c: &str, p: &str) -> Action {
        Action::Notify {
            channel: c.into(),
            payload: p.into(),
        }
    }
    fn pairs(c: &Committed) -> Vec<(String, String)> {
        let s = |b: &Vec<u8>| String::from_utf8(b.clone()).unwrap();
        c.notifications.iter().map(|(a, b)| (s(a), s(b))).collect()
    }
    fn payloads(c: &Committed) -> Vec<String> {
        pairs(c).into_iter().map(|(_, p)| p).collect()
    }
    fn chans(c: &Committed) -> Vec<String> {
        pairs(c).into_iter().map(|(c, _)| c).collect()
    }
    fn listen(c: &str) -> ListenOp {
        ListenOp::Listen(c.into())
    }
    fn unlisten(c: &str) -> ListenOp {
        ListenOp::Unlisten(c.into())
    }
    #[test]
    fn before_server_counts_notifications_issued_before_the_server_ran() {
        let mut t = PendingTxn::new();
        t.push(n("c", "1"));
        t.push(n("c", "1"));
        t.push(n("c", "2"));
        t.mark_server();
        t.push(n("c", "3"));
        t.mark_server();
        let c = t.take_commit();
        assert_eq!(
            (payloads(&c), c.before_server),
            (vec!["1".into(), "2".into(), "3".into()], 2)
        );
        // No server statement: all before. The mark goes with the transaction.
        t.push(n("c", "4"));
        assert_eq!(t.take_commit().before_server, 1);
        t.mark_server();
        t.push(n("c", "5"));
        assert_eq!(t.take_commit().before_server, 0);
        t.push(n("c", "6"));
        assert_eq!(
            t.take_commit().before_server,
            1,
            "a new transaction starts unmarked"
        );
        // ROLLBACK TO before the mark moves it back with the actions.
        t.push(n("c", "7"));
        t.savepoint(b"s");
        t.push(n("c", "8"));
        t.mark_server();
        t.rollback_to(b"s");
        t.push(n("c", "9"));
        assert_eq!(t.take_commit().before_server, 1);
        t.mark_server();
        t.clear();
        t.push(n("c", "10"));
        assert_eq!(
            t.take_commit().before_server,
            1,
            "ROLLBACK forgets the mark"
        );
    }

    #[test]
    fn merge_puts_what_the_server_raised_between_and_dedups() {
        let note = |p: &str| Notification {
            pid: 1,
            channel: bytes::Bytes::from_static(b"c"),
            payload: bytes::Bytes::copy_from_slice(p.as_bytes()),
        };
        let own = [note("a"), note("x"), note("b")];
        let got: Vec<_> = merge_raised(&own, 1, vec![note("r"), note("b"), note("r")])
            .into_iter()
            .map(|n| String::from_utf8(n.payload.to_vec()).unwrap())
            .collect();
        assert_eq!(got, ["a", "r", "b", "x"]);
        assert_eq!(merge_raised(&own, 9, vec![note("z")]).len(), 4);
    }

    fn set_of(s: &ListenSet) -> Vec<String> {
        s.iter()
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect()
    }
    fn strs(v: Vec<Vec<u8>>) -> Vec<String> {
        v.into_iter()
            .map(|c| String::from_utf8(c).unwrap())
            .collect()
    }

    #[test]
    fn item13_dedup_keeps_first_place() {
        // x, y, x, '', '', NULL, y  (NULL payload arrives as empty)
        let mut t = PendingTxn::new();
        for p in ["x", "y", "x", "", "", "", "y"] {
            t.push(n("c", p));
        }
        let c = t.take_commit();
        assert_eq!(payloads(&c), ["x", "y", ""]);
        assert!(t.is_empty());
    }

    #[test]
    fn item13_released_child_dedups_against_parent() {
        let mut t = PendingTxn::new();
        t.push(n("a", ""));
        t.savepoint(b"s");
        t.push(n("b", ""));
        t.push(n("a", ""));
        assert!(t.release(b"s"));
        assert_eq!(chans(&t.take_commit()), ["a", "b"]);
    }

    #[test]
    fn item13_rolled_back_first_does_not_hold_the_place() {
        // SAVEPOINT s; NOTIFY A; ROLLBACK TO s; NOTIFY B; NOTIFY A -> B, A
        let mut t = PendingTxn::new();
        t.savepoint(b"s");
        t.push(n("A", ""));
        assert!(t.rollback_to(b"s"));
        t.push(n("B", ""));
        t.push(n("A", ""));
        assert_eq!(chans(&t.take_commit()), ["B", "A"]);
    }

    #[test]
    fn item13_no_dedup_across_transactions_and_exact_bytes() {
        let mut t = PendingTxn::new();
        t.push(n("c", "m"));
        t.push(n("c", "m"));
        assert_eq!(payloads(&t.take_commit()), ["m"]);
        t.push(n("c", "m"));
        assert_eq!(payloads(&t.take_commit()), ["m"]);
        // Channel bytes differ (case), and the channel/payload boundary is part of the key.
        t.push(n("c", "m"));
        t.push(n("C", "m"));
        t.push(n("ab", "c"));
        t.push(n("a", "bc"));
        assert_eq!(pairs(&t.take_commit()).len(), 4);
    }

    #[test]
    fn item12_savepoint_example_delivers_1_3_4() {
        let mut t = PendingTxn::new();
        t.push(n("c", "1"));
        t.savepoint(b"s");
        t.push(n("c", "2"));
        assert!(t.rollback_to(b"s"));
        t.push(n("c", "3"));
        t.savepoint(b"t");
        t.push(n("c", "4"));
        assert!(t.release(b"t"));
        assert_eq!(payloads(&t.take_commit()), ["1", "3", "4"]);
    }

    #[test]
    fn item12_rollback_to_discards_listen_and_unlisten_and_keeps_savepoint() {
        let mut t = PendingTxn::new();
        t.push(Action::Listen(b"a".to_vec()));
        t.savepoint(b"s");
        t.push(Action::Listen(b"b".to_vec()));
        t.push(Action::Unlisten(b"a".to_vec()));
        t.savepoint(b"inner");
        t.push(Action::UnlistenAll);
        assert!(t.rollback_to(b"s"));
        assert!(!t.release(b"inner"), "newer savepoint is gone");
        t.push(Action::Listen(b"c".to_vec()));
        assert!(t.rollback_to(b"s"), "savepoint s stays open");
        t.push(Action::Listen(b"d".to_vec()));
        let c = t.take_commit();
        assert_eq!(c.listen_ops, vec![listen("a"), listen("d")]);
        assert!(c.notifications.is_empty());
    }

    #[test]
    fn repeated_savepoint_name_newest_wins() {
        let mut t = PendingTxn::new();
        t.savepoint(b"s");
        t.push(n("c", "1"));
        t.savepoint(b"s");
        t.push(n("c", "2"));
        assert!(t.rollback_to(b"s"));
        assert_eq!(t.len(), 1);
        // RELEASE drops the newest `s`; the older one is still there.
        assert!(t.release(b"s"));
        assert!(t.rollback_to(b"s"));
        assert_eq!(t.len(), 0);
        assert!(t.release(b"s"));
        assert!(!t.release(b"s"));
        assert!(t.is_empty());
    }

    #[test]
    fn release_drops_newer_savepoints_and_unknown_names_fail() {
        let mut t = PendingTxn::new();
        assert!(!t.release(b"nope"));
        assert!(!t.rollback_to(b"nope"));
        t.savepoint(b"a");
        t.savepoint(b"b");
        t.push(n("c", "x"));
        assert!(t.release(b"a"));
        assert!(!t.rollback_to(b"b"));
        assert_eq!(t.len(), 1);
        assert!(!t.is_empty());
        t.clear();
        assert!(t.is_empty());
        let mut only_mark = PendingTxn::new();
        only_mark.savepoint(b"s");
        assert!(!only_mark.is_empty());
    }

    #[test]
    fn item17_listen_ops_keep_statement_order_beside_notifications() {
        let mut t = PendingTxn::new();
        t.push(n("c2", ""));
        t.push(Action::Listen(b"c2".to_vec()));
        t.push(Action::UnlistenAll);
        t.push(Action::Unlisten(b"z".to_vec()));
        let c = t.take_commit();
        assert_eq!(
            c.listen_ops,
            vec![listen("c2"), ListenOp::UnlistenAll, unlisten("z")]
        );
        assert_eq!(chans(&c), ["c2"]);
    }

    #[test]
    fn item19_blocks_prepare() {
        let mut t = PendingTxn::new();
        assert!(!t.blocks_prepare(true));
        t.push(Action::Unlisten(b"a".to_vec()));
        assert!(!t.blocks_prepare(false));
        assert!(t.blocks_prepare(true));
        t.clear();
        t.push(Action::UnlistenAll);
        assert!(!t.blocks_prepare(false));
        assert!(t.blocks_prepare(true));
        t.clear();
        t.push(Action::Listen(b"a".to_vec()));
        assert!(t.blocks_prepare(false));
        t.clear();
        t.savepoint(b"s");
        t.push(n("c", ""));
        assert!(t.blocks_prepare(false));
        t.rollback_to(b"s");
        assert!(
            !t.blocks_prepare(false),
            "a NOTIFY rolled back to a savepoint does not count"
        );
        t.push(n("c", ""));
        t.release(b"s");
        assert!(t.blocks_prepare(false));
    }

    #[test]
    fn dedup_handles_a_large_transaction() {
        let mut t = PendingTxn::new();
        for i in 0..100_000u32 {
            t.push(n("c", &(i % 1000).to_string()));
        }
        let c = t.take_commit();
        assert_eq!(c.notifications.len(), 1000);
        assert_eq!(c.notifications[999].1, b"999");
    }

    #[test]
    fn item15_listen_set_examples() {
        let mut s = ListenSet::new();
        s.apply(&[listen("p")]);
        let (added, removed) = s.apply(&[ListenOp::UnlistenAll, listen("q")]);
        assert_eq!(set_of(&s), ["q"]);
        assert_eq!(
            (strs(added), strs(removed)),
            (vec!["q".to_string()], vec!["p".to_string()])
        );

        let mut s = ListenSet::new();
        let (added, removed) = s.apply(&[listen("r"), ListenOp::UnlistenAll]);
        assert!(s.is_empty() && added.is_empty() && removed.is_empty());

        let mut s = ListenSet::new();
        let (added, removed) = s.apply(&[listen("s"), unlisten("s"), listen("s")]);
        assert_eq!(set_of(&s), ["s"]);
        assert_eq!((strs(added), removed.len()), (vec!["s".to_string()], 0));

        // LISTEN of a held channel is a no-op; UNLISTEN of an unknown one is silent.
        let (added, removed) = s.apply(&[listen("s"), unlisten("nope")]);
        assert!(added.is_empty() && removed.is_empty());
        assert_eq!(set_of(&s), ["s"]);
    }

    #[test]
    fn item3_listen_set_order() {
        let mut s = ListenSet::new();
        s.apply(&[listen("a"), listen("b"), listen("c")]);
        s.apply(&[listen("a")]);
        assert_eq!(set_of(&s), ["a", "b", "c"]);
        // Held channel re-listened after an UNLISTEN moves to the end, with no net change.
        let (added, removed) = s.apply(&[unlisten("a"), listen("a")]);
        assert!(added.is_empty() && removed.is_empty());
        assert_eq!(set_of(&s), ["b", "c", "a"]);
        assert!(s.contains(b"a") && !s.contains(b"A"));
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn listen_set_net_diff_and_clear() {
        let mut s = ListenSet::new();
        s.apply(&[listen("a"), listen("b"), listen("c"), listen("d")]);
        let (added, removed) = s.apply(&[
            unlisten("c"),
            ListenOp::UnlistenAll,
            listen("x"),
            listen("b"),
            listen("y"),
        ]);
        assert_eq!(strs(added), ["x", "y"]);
        assert_eq!(strs(removed), ["a", "c", "d"]);
        assert_eq!(set_of(&s), ["x", "b", "y"]);
        assert_eq!(strs(s.clear()), ["x", "b", "y"]);
        assert!(s.is_empty());
        assert_eq!(s.iter().count(), 0);
    }
}
