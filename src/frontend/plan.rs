//! The reply plan: a FIFO with one entry per client message sent to the server (what the
//! server owes for it) and one per message pgherald answers itself. Server replies are
//! matched against the head in order; pgherald's own replies are written when their entry
//! reaches the head, so the client sees every reply in the order it asked.

use std::collections::VecDeque;

use bytes::BytesMut;

use super::intercept::Intercept;
use crate::sql::edit::PositionMap;

/// What a forwarded statement does to the pending LISTEN/NOTIFY state once the server
/// confirms it with CommandComplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    None,
    /// BEGIN / START TRANSACTION: a transaction block is open.
    Begin,
    /// COMMIT/END: `C('COMMIT')` commits, `C('ROLLBACK')` (aborted block) discards.
    Commit,
    /// ROLLBACK/ABORT: discards.
    Rollback,
    /// COMMIT AND CHAIN: as `Commit`, and a new transaction block is open.
    CommitChain,
    /// ROLLBACK AND CHAIN: discards, and a new transaction block is open.
    RollbackChain,
    /// SAVEPOINT name.
    Savepoint(Vec<u8>),
    /// RELEASE [SAVEPOINT] name.
    Release(Vec<u8>),
    /// ROLLBACK TO [SAVEPOINT] name.
    RollbackTo(Vec<u8>),
    /// DISCARD ALL: every listen of the session ends.
    DiscardAll,
    /// PREPARE TRANSACTION (refused by pgherald after LISTEN/UNLISTEN/NOTIFY).
    PrepareTransaction,
}

impl Effect {
    /// The statement ends the transaction (block or implicit) when it completes or fails.
    pub fn ends_transaction(&self) -> bool {
        matches!(
            self,
            Effect::Commit
                | Effect::Rollback
                | Effect::CommitChain
                | Effect::RollbackChain
                | Effect::PrepareTransaction
        )
    }
}

/// One statement of a forwarded simple Query.
#[derive(Debug)]
pub enum Step {
    /// A statement of the client's, passed through; its effect applies at its `C`.
    Forward(Effect),
    /// An intercepted statement whose placeholder (`SELECT`) runs on the server; the
    /// placeholder's reply is swallowed and the statement's own reply written instead.
    Placeholder(Intercept),
    /// An intercepted statement that fails: its placeholder (`SELECT 1/0`) fails on the
    /// server so the server's transaction state follows; its error replaces the server's.
    Failing(Intercept),
    /// `PREPARE TRANSACTION` after LISTEN/UNLISTEN/NOTIFY: the placeholder `ROLLBACK`
    /// ends the server's transaction; the client gets 0A000.
    PrepareRefused,
    /// The filler pgherald inserted after a COMMIT (`simple::FILLER`): its whole reply is
    /// swallowed.
    Filler,
}

/// The plan of one forwarded simple Query.
#[derive(Debug, Default)]
pub struct QueryPlan {
    /// Statements still to answer, in order. Empty: pass everything through to `Z`.
    pub steps: VecDeque<Step>,
    /// Notices the lexer raises before any statement runs (identifier truncation and such).
    pub preamble: Option<BytesMut>,
    /// A statement failed: at `Z(I)` the implicit transaction's actions are discarded.
    pub failed: bool,
    /// The head step's placeholder reply has started (T/D seen).
    pub in_step: bool,
    /// Fillers (`simple::FILLER`) in the text sent: the client's replies are held while
    /// this is not zero.
    pub fillers: usize,
    /// The text went out edited (`pg_listening_channels()` rewritten, fillers inserted):
    /// positions in the server's errors and notices map back to the client's text through
    /// this.
    pub positions: Option<PositionMap>,
}

impl QueryPlan {
    /// A Query pgherald does not need to follow statement by statement.
    pub fn opaque() -> QueryPlan {
        QueryPlan::default()
    }
}

/// A simple Query answered entirely by pgherald.
#[derive(Debug)]
pub struct LocalQuery {
    /// Lexer notices written first.
    pub preamble: Option<BytesMut>,
    /// The statements, in order.
    pub stmts: Vec<Intercept>,
}

/// pgherald's own reply to one intercepted extended-protocol message.
#[derive(Debug)]
pub enum LocalReply {
    /// ParseComplete of an intercepted statement, after the lexer's notices (if any).
    Parse(Option<BytesMut>),
    /// ParseComplete of a client's named statement the server already has.
    ParseKnown,
    /// BindComplete.
    Bind,
    /// CloseComplete.
    Close,
    /// Describe of an intercepted statement: ParameterDescription then RowDescription/NoData.
    DescribeStatement {
        /// Parameter type OIDs.
        params: Vec<u32>,
        /// The statement returns a row (pg_notify, pg_listening_channels).
        rows: Option<crate::protocol::reply::Column>,
    },
    /// Describe of an intercepted portal: RowDescription/NoData.
    DescribePortal {
        /// Result column, if any.
        rows: Option<crate::protocol::reply::Column>,
        /// Result format of that column.
        format: i16,
    },
    /// Execute of an intercepted portal.
    Execute {
        /// What to run.
        action: Intercept,
        /// Result format (for pg_notify / pg_listening_channels rows).
        format: i16,
    },
    /// Sync of a batch that sent nothing to the server.
    Sync,
    /// The client's Flush while replies are held (`hold`): what the server answered before
    /// it goes to the client now, as Postgres would flush it.
    Flush,
    /// A transaction-control Query answered for a deferred block (`deferred` module).
    Control(super::deferred::Control),
}

/// What the server owes for one forwarded client message, or a reply pgherald makes itself.
#[derive(Debug)]
pub enum Entry {
    /// Simple Query: replies up to and including `Z`.
    Query(QueryPlan),
    /// A simple Query pgherald answers itself.
    LocalQuery(LocalQuery),
    /// FunctionCall: replies up to and including `Z`.
    Function,
    /// Parse: `1` (or an error).
    Parse,
    /// Parse of a statement whose `pg_listening_channels()` calls pgherald rewrote: `1`, or
    /// an error whose position maps back through this.
    ParseRewritten(PositionMap),
    /// Bind: `2`.
    Bind,
    /// Close: `3`.
    Close,
    /// Describe of a statement: `t` then `T`/`n`.
    DescribeStatement,
    /// Describe of a statement that takes the listen set as a hidden last parameter: `t`
    /// (passed on without it) then `T`/`n`.
    DescribeRewritten,
    /// Describe of a portal: `T`/`n`.
    DescribePortal,
    /// Execute: rows, then `C`, `I` or `s`; its effect applies at `C`.
    Execute(Effect),
    /// Sync: `Z`.
    Sync,
    /// Parse of a client's named statement under pgherald's name `id` (transaction
    /// pooling): `1`; on error the statement is forgotten.
    PrepareParse {
        /// Statement number.
        id: u64,
        /// The client's name for it.
        name: Vec<u8>,
        /// Map back to the client's text, when pgherald rewrote it.
        positions: Option<PositionMap>,
    },
    /// A Parse pgherald sent to prepare statement `id` before using it: its `1` is swallowed.
    InjectedParse {
        /// Statement number.
        id: u64,
    },
    /// A Close pgherald sent to evict a statement: its `3` is swallowed.
    InjectedClose,
    /// A failing placeholder pgherald sent (Parse of invalid SQL) so that the server fails
    /// the batch as Postgres would; its error is replaced with this one.
    InjectedFailure(Option<super::intercept::Failure>),
    /// A message pgherald sent whose reply (`1`, `2`, `3`) is swallowed.
    InjectedQuiet,
    /// An Execute pgherald sent (see `pipeline`): its rows and `C` are swallowed.
    InjectedRun,
    /// The ROLLBACK pgherald ran in place of a refused PREPARE TRANSACTION: at its `C` the
    /// client gets 0A000 (NOTIFY-SPEC item 19).
    RefusedPrepare,
    /// pgherald's reply to an intercepted extended message.
    Local(LocalReply),
    /// The deferred `BEGIN` pgherald wrote ahead of a block's first forwarded message: its
    /// `C` and `Z` are swallowed (the client had its reply already).
    HiddenBegin,
}

impl Entry {
    /// Channels this entry LISTENs on if it succeeds (an intercepted LISTEN in a forwarded
    /// or local Query, or an intercepted Execute).
    pub fn listens(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let (steps, stmts, one) = match self {
            Entry::Query(q) => (Some(&q.steps), None, None),
            Entry::LocalQuery(l) => (None, Some(&l.stmts), None),
            Entry::Local(LocalReply::Execute { action, .. }) => (None, None, Some(action)),
            _ => (None, None, None),
        };
        let from_steps = steps.into_iter().flatten().filter_map(|s| match s {
            Step::Placeholder(i) => Some(i),
            _ => None,
        });
        let intercepts = from_steps.chain(stmts.into_iter().flatten()).chain(one);
        intercepts.filter_map(|i| match i {
            Intercept::Listen(c) => Some(&c[..]),
            _ => None,
        })
    }

    /// This entry NOTIFYs through pgherald if it succeeds.
    pub fn notifies(&self) -> bool {
        let notify =
            |i: &Intercept| matches!(i, Intercept::Notify { .. } | Intercept::PgNotify { .. });
        match self {
            Entry::Query(q) => q
                .steps
                .iter()
                .any(|s| matches!(s, Step::Placeholder(i) if notify(i))),
            Entry::LocalQuery(l) => l.stmts.iter().any(notify),
            Entry::Local(LocalReply::Execute { action, .. }) => notify(action),
            _ => false,
        }
    }

    /// True for entries answered by pgherald without the server.
    pub fn is_local(&self) -> bool {
        matches!(self, Entry::Local(_) | Entry::LocalQuery(_))
    }

    /// The client message behind this entry opens an implicit transaction on Postgres when
    /// none is open (Parse, Bind, Describe, Execute; not Close, Sync or pgherald's own).
    pub fn opens_transaction(&self) -> bool {
        matches!(
            self,
            Entry::Parse
                | Entry::Bind
                | Entry::DescribeStatement
                | Entry::DescribePortal
                | Entry::Execute(_)
                | Entry::PrepareParse { .. }
        )
    }
}
