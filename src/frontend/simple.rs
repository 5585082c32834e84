//! Planning a simple Query: forward it untouched (the fast path), follow it statement by
//! statement, rewrite it with placeholders for intercepted statements, or answer it locally.

use std::collections::VecDeque;

use bytes::BytesMut;

use super::channels::Channels;
use super::intercept::Intercept;
use super::plan::{Effect, LocalQuery, QueryPlan, Step};
use super::txn::{Action, PendingTxn};
use crate::protocol::reply;
use crate::sql::{self, Kind};

/// What to do with one Query message.
#[derive(Debug)]
pub enum Route {
    /// Forward unchanged; nothing to follow.
    Forward,
    /// Forward unchanged, following statements for their transaction effects.
    Tracked(QueryPlan),
    /// Forward this text instead (intercepted statements replaced by placeholders of the
    /// same length, so positions in server errors stay right).
    Rewrite(String, QueryPlan),
    /// Answer without the server.
    Local(LocalQuery),
}

/// Decide the route of a Query's SQL text.
///
/// `status` is the transaction status the client last saw; `scs` the session's
/// standard_conforming_strings.
pub fn route(sql: &[u8], ch: &Channels, status: u8, scs: bool) -> Route {
    if !sql::prefilter(sql, !ch.txn.is_empty()) {
        return Route::Forward;
    }
    let Ok(text) = std::str::from_utf8(sql) else {
        return Route::Forward;
    };
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
        notices(&s.kind, &mut preamble);
    }
    let preamble = (!preamble.is_empty()).then_some(preamble);
    let intercepts: Vec<Option<Intercept>> = stmts
        .iter()
        .map(|s| Intercept::from_kind(&s.kind))
        .collect();
    let any_intercept = intercepts.iter().any(Option::is_some);
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
    // leave them (savepoints included), simulated on a copy.
    let mut simulated = ch.txn.clone();
    let mut steps = VecDeque::with_capacity(stmts.len());
    let mut rewritten = String::with_capacity(text.len());
    let mut copied = 0;
    let mut any_effect = false;
    for (s, i) in stmts.iter().zip(intercepts) {
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
                (Step::Forward(e), None)
            }
        };
        if let Some(p) = placeholder {
            let original = &text[s.range.clone()];
            rewritten.push_str(&text[copied..s.range.start]);
            rewritten.push_str(p);
            let pad = original.chars().count().saturating_sub(p.len());
            rewritten.extend(std::iter::repeat_n(' ', pad));
            copied = s.range.end;
        }
        steps.push_back(step);
    }
    let plan = QueryPlan {
        steps,
        preamble,
        failed: false,
        in_step: false,
    };
    if !any_intercept && copied == 0 {
        return if any_effect || !ch.txn.is_empty() || plan.preamble.is_some() {
            Route::Tracked(plan)
        } else {
            Route::Forward
        };
    }
    rewritten.push_str(&text[copied..]);
    Route::Rewrite(rewritten, plan)
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
        (None, Kind::RollbackTo(n)) => {
            if !txn.rollback_to(n) {
                txn.clear();
            }
        }
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
/// raises them.
pub(crate) fn notices(kind: &Kind, out: &mut BytesMut) {
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
        reply::notice_full(out, n.severity, n.sqlstate, &n.message, n.hint, n.position);
    }
}
