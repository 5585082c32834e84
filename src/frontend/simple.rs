//! Planning a simple Query: forward it untouched (the fast path), follow it statement by
//! statement, rewrite it with placeholders for intercepted statements, or answer it locally.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::BytesMut;

use super::channels::Channels;
use super::dealloc::Dropping;
use super::intercept::Intercept;
use super::plan::{Effect, LocalQuery, QueryPlan, Step};
use super::txn::{Action, ListenSet, PendingTxn};
use crate::protocol::encoding::Conversion;
use crate::protocol::reply;
use crate::sql::edit::Editor;
use crate::sql::{self, listening, Kind};

/// Inserted right after a COMMIT (before its `;`) that ends a transaction with pending
/// LISTEN/UNLISTEN/NOTIFY when a statement of the client's follows in the same Query.
/// Postgres sends a Query's replies only when it ends (or fills 8 kB, or raises a notice),
/// so without it pgherald would see the COMMIT, and publish its notifications, only when
/// the whole Query is done. `SHOW ALL` answers some 30 kB, which makes the server flush
/// what precedes it; it takes no snapshot, changes no state and cannot fail, and in a
/// multi-statement Query the statements after a COMMIT run in one implicit block with or
/// without it. pgherald swallows its reply, holds the client's replies as Postgres would
/// have buffered them (`hold.rs`) and maps error positions back to the client's text.
pub const FILLER: &str = ";SHOW ALL";

/// What to do with one Query message.
#[derive(Debug)]
pub enum Route {
    /// Forward unchanged; nothing to follow.
    Forward,
    /// Forward unchanged, following statements for their transaction effects.
    Tracked(QueryPlan),
    /// Forward this text instead, in the client's encoding: intercepted statements replaced
    /// by placeholders of the same length, `pg_listening_channels()` calls by the session's
    /// channels, fillers after COMMITs (positions in the server's replies map back through
    /// the plan).
    Rewrite(Vec<u8>, QueryPlan),
    /// Answer without the server.
    Local(LocalQuery),
}

/// Decide the route of a Query's SQL text.
///
/// `status` is the transaction status the client last saw; `scs` the session's
/// standard_conforming_strings. The text is classified in the server encoding (`ch.conv`);
/// text that cannot be taken that way is forwarded: Postgres converts the whole Query before
/// running any of it, so it either answers with its own error or runs the statements itself.
///
/// `owned` tells the statement names pgherald keeps for the client: `DEALLOCATE` of one is
/// answered here, stamped with `seq` (`dealloc.rs`).
pub fn route(
    sql: &[u8],
    ch: &Channels,
    status: u8,
    scs: bool,
    owned: &dyn Fn(&[u8]) -> bool,
    seq: u64,
) -> Route {
    if !sql::prefilter(sql, !ch.txn.is_empty()) {
        return Route::Forward;
    }
    let Some(text) = ch.conv.statement_text(sql) else {
        return Route::Forward;
    };
    let text = &*text;
    let stmts = sql::classify(text, scs);
    if stmts
        .iter()
        .any(|s| matches!(s.kind, Kind::SyntaxError { .. }))
    {
        // Postgres rejects the whole string before running anything, with the same words.
        return Route::Forward;
    }
    let stmts: Vec<_> = stmts
        .into_iter()
        .filter(|s| s.kind != Kind::Empty)
        .collect();
    if stmts.is_empty() {
        return Route::Forward;
    }
    let mut preamble = BytesMut::new();
    for s in &stmts {
        notices(&s.kind, ch.conv, &mut preamble);
    }
    let preamble = (!preamble.is_empty()).then_some(preamble);
    let mut dropping = Dropping::new(owned, seq);
    let intercepts: Vec<Option<Intercept>> =
        stmts.iter().map(|s| dropping.intercept(&s.kind)).collect();
    let any_error = intercepts
        .iter()
        .flatten()
        .any(|i| i.static_error().is_some());
    if intercepts.iter().all(Option::is_some) && !(status == b'T' && any_error) {
        return Route::Local(LocalQuery {
            preamble,
            stmts: intercepts.into_iter().flatten().collect(),
        });
    }
    // What a PREPARE TRANSACTION would see: the pending actions as the statements before it
    // leave them (savepoints included), simulated on a copy. Likewise the committed channels
    // a `pg_listening_channels()` call sees, when a COMMIT earlier in the Query changes them.
    let mut simulated = ch.txn.clone();
    let mut listens = Listens::new(ch, status);
    let mut steps = VecDeque::with_capacity(stmts.len() + 1);
    let mut editor = Editor::new(text);
    let mut any_effect = false;
    let any_intercept = intercepts.iter().any(Option::is_some);
    // A COMMIT of pending actions followed by a statement of the client's (that may take
    // long) gets a filler, so that the commit is seen (and published) at once, as Postgres
    // publishes it.
    let last_plain = intercepts.iter().rposition(Option::is_none);
    let mut fillers = 0;
    for (n, (s, i)) in stmts.iter().zip(intercepts).enumerate() {
        // Actions pending, not savepoints only (`is_empty` counts those too).
        #[allow(clippy::len_zero)]
        let commits = simulated.len() > 0 && matches!(s.kind, Kind::Commit | Kind::CommitChain);
        listens.see(&mut simulated, &s.kind, i.is_some());
        simulate(&mut simulated, &s.kind, i.as_ref());
        let prepare_refused = simulated.blocks_prepare(ch.ever_listened);
        let (step, placeholder) = match i {
            Some(i) if i.static_error().is_some() => (Step::Failing(i), Some("SELECT 1/0")),
            Some(i) => (Step::Placeholder(i), Some("SELECT")),
            None if s.kind == Kind::PrepareTransaction && prepare_refused => {
                (Step::PrepareRefused, Some("ROLLBACK"))
            }
            None => {
                let e = effect(&s.kind);
                any_effect |= e != Effect::None;
                if s.kind == Kind::Other {
                    listens.rewrite(&mut editor, text, s.range.clone(), scs);
                }
                (Step::Forward(e), None)
            }
        };
        if let Some(p) = placeholder {
            // Same length in characters, so that positions in server errors stay right.
            let pad = text[s.range.clone()]
                .chars()
                .count()
                .saturating_sub(p.len());
            let padded = format!("{p}{}", " ".repeat(pad));
            editor.replace(s.range.clone(), &padded);
        }
        steps.push_back(step);
        if commits && last_plain.is_some_and(|f| f > n) && editor.insert(s.range.end, FILLER) {
            // The filler's reply follows its COMMIT's.
            steps.push_back(Step::Filler);
            fillers += 1;
        }
    }
    let mut plan = QueryPlan {
        steps,
        preamble,
        fillers,
        ..QueryPlan::default()
    };
    if !any_intercept && !editor.changed() {
        return if any_effect || !ch.txn.is_empty() || plan.preamble.is_some() {
            Route::Tracked(plan)
        } else {
            Route::Forward
        };
    }
    let (rewritten, map) = editor.finish();
    plan.positions = (!map.is_identity()).then_some(map);
    // Back to the client's encoding: every character came from the client's own text.
    match ch.conv.to_client(rewritten.as_bytes()) {
        Ok(bytes) => Route::Rewrite(bytes.into_owned(), plan),
        Err(_) => Route::Forward,
    }
}

/// The committed channels as each statement of a Query will see them, and the constant that
/// stands for `pg_listening_channels()` there.
struct Listens<'a> {
    ch: &'a Channels,
    /// The block is aborted: the next COMMIT rolls back.
    aborted: bool,
    /// The set once a COMMIT in this Query changed it.
    changed: Option<ListenSet>,
    /// The constant for the current set, once built.
    constant: Option<String>,
}

impl<'a> Listens<'a> {
    fn new(ch: &'a Channels, status: u8) -> Listens<'a> {
        Listens {
            ch,
            aborted: status == b'E',
            changed: None,
            constant: None,
        }
    }

    /// Before statement `kind` is simulated: a forwarded COMMIT commits the listen changes
    /// pending in `txn` (unless the block is aborted).
    fn see(&mut self, txn: &mut PendingTxn, kind: &Kind, intercepted: bool) {
        if intercepted {
            return;
        }
        match kind {
            Kind::Commit => {
                let ops = txn.take_commit().listen_ops;
                if !self.aborted && !ops.is_empty() {
                    let set = self.changed.get_or_insert_with(|| self.ch.listens.clone());
                    set.apply(&ops);
                    self.constant = None;
                }
                self.aborted = false;
            }
            Kind::Rollback => self.aborted = false,
            _ => {}
        }
    }

    /// Rewrite the `pg_listening_channels()` calls of the forwarded statement at `range`.
    fn rewrite(&mut self, ed: &mut Editor<'_>, text: &str, range: Range<usize>, scs: bool) {
        if !listening::mentions(text.as_bytes().get(range.clone()).unwrap_or_default()) {
            return;
        }
        let found = listening::calls(text, range, scs);
        if found.calls.is_empty() {
            return;
        }
        if self.constant.is_none() {
            let set = self.changed.as_ref().unwrap_or(&self.ch.listens);
            self.constant = super::listening::constant_call(set);
        }
        if let Some(c) = &self.constant {
            super::listening::rewrite_calls(ed, &found, c);
        }
    }
}

/// Apply a statement to a copy of the pending actions, as it would if it succeeds.
fn simulate(txn: &mut PendingTxn, kind: &Kind, i: Option<&Intercept>) {
    match (i, kind) {
        (Some(Intercept::Listen(c)), _) => txn.push(Action::Listen(c.clone())),
        (Some(Intercept::Unlisten(c)), _) => txn.push(Action::Unlisten(c.clone())),
        (Some(Intercept::UnlistenAll), _) => txn.push(Action::UnlistenAll),
        (Some(Intercept::Notify { channel, payload }), _) => txn.push(Action::Notify {
            channel: channel.clone(),
            payload: payload.clone(),
        }),
        (Some(Intercept::PgNotify { channel, payload }), _) => txn.push(Action::Notify {
            channel: channel.clone().unwrap_or_default(),
            payload: payload.clone().unwrap_or_default(),
        }),
        (Some(Intercept::ListeningChannels), _) => {}
        (None, Kind::Savepoint(n)) => txn.savepoint(n),
        (None, Kind::Release(n)) => {
            txn.release(n);
        }
        (None, Kind::RollbackTo(n)) if !txn.rollback_to(n) => txn.clear(),
        (None, Kind::Commit | Kind::Rollback | Kind::CommitChain | Kind::RollbackChain) => {
            txn.clear()
        }
        _ => {}
    }
}

/// The transaction effect of a forwarded statement.
pub fn effect(kind: &Kind) -> Effect {
    match kind {
        Kind::Begin => Effect::Begin,
        Kind::Commit => Effect::Commit,
        Kind::Rollback => Effect::Rollback,
        Kind::CommitChain => Effect::CommitChain,
        Kind::RollbackChain => Effect::RollbackChain,
        Kind::Savepoint(n) => Effect::Savepoint(n.clone()),
        Kind::Release(n) => Effect::Release(n.clone()),
        Kind::RollbackTo(n) => Effect::RollbackTo(n.clone()),
        Kind::DiscardAll => Effect::DiscardAll,
        Kind::PrepareTransaction => Effect::PrepareTransaction,
        _ => Effect::None,
    }
}

/// Lexer notices of a statement (truncation, nonstandard escapes), in the order Postgres
/// raises them, in the client's encoding.
pub(crate) fn notices(kind: &Kind, conv: Conversion, out: &mut BytesMut) {
    let (truncated, warnings) = match kind {
        Kind::Listen { truncated, .. } | Kind::Unlisten { truncated, .. } => {
            (truncated.as_ref(), &[][..])
        }
        Kind::Notify {
            truncated,
            warnings,
            ..
        } => (truncated.as_ref(), &warnings[..]),
        Kind::PgNotify { warnings, .. } => (None, &warnings[..]),
        _ => (None, &[][..]),
    };
    for n in truncated.into_iter().chain(warnings) {
        match conv.to_client(n.message.as_bytes()) {
            Ok(std::borrow::Cow::Owned(message)) => {
                let position = n.position.map(|p| p.to_string());
                let mut fields: Vec<(u8, &[u8])> = vec![
                    (b'S', n.severity.as_bytes()),
                    (b'V', n.severity.as_bytes()),
                    (b'C', n.sqlstate.as_bytes()),
                    (b'M', &message),
                ];
                fields.extend(n.hint.map(|h| (b'H', h.as_bytes())));
                fields.extend(position.as_ref().map(|p| (b'P', p.as_bytes())));
                reply::fields(out, b'N', &fields);
            }
            _ => reply::notice_full(out, n.severity, n.sqlstate, &n.message, n.hint, n.position),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::txn::Action;
    use crate::pubsub::Hub;

    fn channels() -> Channels {
        Channels::new(Hub::new(100), None, false, "db".into(), 1)
    }

    fn rewrite(sql: &str, ch: &Channels) -> (String, QueryPlan) {
        match route(sql.as_bytes(), ch, b'I', true, &|_| false, 0) {
            Route::Rewrite(text, plan) => (String::from_utf8(text).expect("UTF-8"), plan),
            other => panic!("{sql:?}: {other:?}"),
        }
    }

    fn kinds(plan: &QueryPlan) -> Vec<&'static str> {
        plan.steps
            .iter()
            .map(|s| match s {
                Step::Forward(Effect::None) => "forward",
                Step::Forward(Effect::Commit) => "commit",
                Step::Forward(_) => "effect",
                Step::Placeholder(_) => "placeholder",
                Step::Failing(_) => "failing",
                Step::PrepareRefused => "refused",
                Step::Filler => "filler",
            })
            .collect()
    }

    #[test]
    fn a_commit_with_a_statement_after_it_gets_a_filler() {
        let ch = channels();
        let (text, plan) = rewrite("BEGIN; NOTIFY c, 'x'; COMMIT; SELECT 1", &ch);
        assert_eq!(text, "BEGIN; SELECT       ; COMMIT;SHOW ALL; SELECT 1");
        assert_eq!(plan.fillers, 1);
        assert_eq!(
            kinds(&plan),
            ["effect", "placeholder", "commit", "filler", "forward"]
        );
        // Two commits, each followed by a statement of the client's: two fillers; positions
        // after them map back across both.
        let (text, plan) = rewrite("NOTIFY a; END; LISTEN b; COMMIT AND CHAIN; SELECT 1", &ch);
        assert_eq!(
            text,
            "SELECT  ; END;SHOW ALL; SELECT  ; COMMIT AND CHAIN;SHOW ALL; SELECT 1"
        );
        assert_eq!(plan.fillers, 2);
        let map = plan.positions.as_ref().expect("a position map");
        assert_eq!(map.original(text.len()), 51);
        assert_eq!(
            kinds(&plan),
            [
                "placeholder",
                "commit",
                "filler",
                "placeholder",
                "effect",
                "filler",
                "forward"
            ]
        );
    }

    #[test]
    fn no_filler_without_pending_actions_or_a_statement_after() {
        let ch = channels();
        assert!(matches!(
            route(b"COMMIT; SELECT 1", &ch, b'T', true, &|_| false, 0),
            Route::Forward
        ));
        let (text, plan) = rewrite("BEGIN; NOTIFY c; COMMIT; NOTIFY d", &ch);
        assert!(!text.contains("SHOW ALL") && plan.fillers == 0);
        let (text, plan) = rewrite("BEGIN; NOTIFY c; ROLLBACK; SELECT 1", &ch);
        assert!(!text.contains("SHOW ALL") && plan.fillers == 0);
        let (text, _) = rewrite("BEGIN; NOTIFY c; COMMIT;", &ch);
        assert!(!text.contains("SHOW ALL"));
    }

    #[test]
    fn actions_pending_from_earlier_queries_count() {
        let mut ch = channels();
        ch.txn.push(Action::Listen(b"c".to_vec()));
        let (text, plan) = rewrite("COMMIT; SELECT 1", &ch);
        assert_eq!(text, "COMMIT;SHOW ALL; SELECT 1");
        assert_eq!(plan.fillers, 1);
        assert_eq!(kinds(&plan), ["commit", "filler", "forward"]);
    }
}
