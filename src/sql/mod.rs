//! SQL inspection for interception: the cheap [`prefilter`], and [`classify`], which splits the text
//! of a simple Query (or of a Parse message) into statements and says which of them pgherald must
//! serve itself, with their arguments decoded by PostgreSQL 15's exact lexical rules; and
//! [`listening`], which finds `pg_listening_channels()` calls inside statements that are forwarded,
//! for rewriting with an [`edit::Editor`] that keeps positions mappable back to the client's text.
//!
//! Pure functions, no I/O, no panics on any input. The lexer is hand-written after PostgreSQL's
//! `scan.l` (it needs exact token texts and error positions, which a general-purpose SQL tokenizer
//! does not give); only the handful of statement shapes pgherald intercepts are parsed.
//!
//! Facts a caller needs (all verified against a PostgreSQL 15 server):
//!
//! - Postgres parses the whole Query string before running any of it. A [`Kind::SyntaxError`] in any
//!   statement therefore fails the whole Query, and nothing in it runs. Postgres reports the *first*
//!   error in the string: if a statement before the erroneous one is [`Kind::Other`] (which may hide
//!   its own syntax error), forward the Query unchanged and let Postgres answer.
//! - Notices ([`Notice`]: identifier truncation, nonstandard-escape warnings) are raised while
//!   lexing, i.e. before any statement of the Query runs, in text order.
//! - `$n` parameters only mean something in a Parse message; in a simple Query, `pg_notify($1, ..)`
//!   must be forwarded (Postgres answers `42P02 there is no parameter $1`).
//! - Assumes the server encoding is UTF8 and `escape_string_warning` is on (the defaults).

mod classify;
mod ctx;
pub mod edit;
mod ident;
mod lexer;
pub mod listening;
mod literal;
mod prefilter;
mod select;
#[cfg(test)]
mod tests;
mod txn;

pub use classify::classify;
pub use prefilter::prefilter;

/// SQLSTATE `42601` syntax_error.
pub const SYNTAX_ERROR: &str = "42601";

/// One statement of a Query string: its byte range in the input and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Bytes of the statement in the input: from its first token to the end of its last token
    /// (surrounding whitespace, comments and the terminating `;` excluded). For [`Kind::Empty`],
    /// the whole stretch between separators.
    pub range: std::ops::Range<usize>,
    /// What the statement is.
    pub kind: Kind,
}

/// What one statement is, as far as pgherald cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `LISTEN channel`: the channel folded and truncated as Postgres does.
    Listen {
        /// Channel name bytes, at most 63.
        channel: Vec<u8>,
        /// `NOTICE 42622 identifier ".." will be truncated to ".."` when the name was too long.
        truncated: Option<Notice>,
    },
    /// `UNLISTEN channel`.
    Unlisten {
        /// Channel name bytes, at most 63.
        channel: Vec<u8>,
        /// Truncation notice, as for [`Kind::Listen`].
        truncated: Option<Notice>,
    },
    /// `UNLISTEN *`.
    UnlistenAll,
    /// `NOTIFY channel [, 'payload']`; an omitted payload is empty.
    Notify {
        /// Channel name bytes, at most 63.
        channel: Vec<u8>,
        /// Decoded payload bytes (the 8000-byte limit is the caller's to check).
        payload: Vec<u8>,
        /// Truncation notice for the channel, as for [`Kind::Listen`]; it comes before `warnings`.
        truncated: Option<Notice>,
        /// `WARNING 22P06 nonstandard use of ..` raised by the payload literal when
        /// `standard_conforming_strings` is off.
        warnings: Vec<Notice>,
    },
    /// Standalone `SELECT pg_notify(a, b)` (also `pg_catalog.pg_notify`); each argument is a string
    /// constant, `NULL` or `$n`, optionally cast `::text`.
    PgNotify {
        /// First argument: the channel, taken byte for byte (no folding, no truncation).
        channel: Arg,
        /// Second argument: the payload (`NULL` means empty).
        payload: Arg,
        /// Nonstandard-escape warnings raised by the literals, in text order.
        warnings: Vec<Notice>,
    },
    /// Standalone `SELECT pg_listening_channels()` or `SELECT * FROM pg_listening_channels()`
    /// (also `pg_catalog.`-qualified).
    ListeningChannels,
    /// `BEGIN [WORK | TRANSACTION] [modes]`, `START TRANSACTION [modes]`.
    Begin,
    /// `COMMIT`, `END` (with optional `WORK | TRANSACTION` and `AND NO CHAIN`).
    Commit,
    /// `ROLLBACK`, `ABORT` (with optional `WORK | TRANSACTION` and `AND NO CHAIN`).
    Rollback,
    /// `COMMIT AND CHAIN` / `END AND CHAIN`: commits, then opens a new transaction block.
    CommitChain,
    /// `ROLLBACK AND CHAIN` / `ABORT AND CHAIN`: rolls back, then opens a new block.
    RollbackChain,
    /// `SAVEPOINT name`, the name folded and truncated like a channel.
    Savepoint(Vec<u8>),
    /// `RELEASE [SAVEPOINT] name`.
    Release(Vec<u8>),
    /// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name`.
    RollbackTo(Vec<u8>),
    /// `PREPARE TRANSACTION 'gid'`.
    PrepareTransaction,
    /// `COMMIT PREPARED 'gid'`.
    CommitPrepared,
    /// `ROLLBACK PREPARED 'gid'`.
    RollbackPrepared,
    /// `DISCARD ALL`.
    DiscardAll,
    /// `DEALLOCATE [PREPARE] name`: the name folded like a channel (never truncated: a longer
    /// one is [`Kind::Other`]).
    Deallocate(Vec<u8>),
    /// `DEALLOCATE [PREPARE] ALL`.
    DeallocateAll,
    /// A statement pgherald would intercept but which Postgres rejects at parse time.
    SyntaxError {
        /// SQLSTATE, `42601`.
        sqlstate: &'static str,
        /// Message exactly as Postgres words it, e.g. `syntax error at or near "5"`.
        message: String,
        /// 1-based character (not byte) position in the whole Query string, as Postgres reports it.
        position: u32,
    },
    /// Anything else: forwarded to Postgres untouched.
    Other,
    /// An empty statement: only whitespace and comments before its `;`.
    Empty,
}

/// One argument of `pg_notify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A decoded string constant; `None` is `NULL`.
    Literal(Option<Vec<u8>>),
    /// A `$n` parameter (1-based).
    Param(u16),
}

/// A notice or warning Postgres would send (as a NoticeResponse) while parsing the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `"NOTICE"` or `"WARNING"`.
    pub severity: &'static str,
    /// SQLSTATE, e.g. `42622` or `22P06`.
    pub sqlstate: &'static str,
    /// Primary message, exactly as Postgres words it.
    pub message: String,
    /// The `H` (hint) field, when Postgres sends one.
    pub hint: Option<&'static str>,
    /// The `P` field (1-based character position in the Query string), when Postgres sends one.
    pub position: Option<u32>,
}
