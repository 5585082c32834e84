//! The intercepted statements themselves: LISTEN, UNLISTEN, NOTIFY, standalone pg_notify,
//! pg_listening_channels and DEALLOCATE of pgherald's own statements — their errors and the
//! replies pgherald writes for them.

use std::borrow::Cow;

use bytes::BytesMut;

use super::channels::Channels;
use super::txn::Action;
use crate::protocol::encoding::EncodingError;
use crate::protocol::origin::{self, Stage};
use crate::protocol::reply::{self, LISTENING_CHANNELS_COLUMN, PG_NOTIFY_COLUMN};
use crate::sql::{Arg, Kind};

/// Largest payload Postgres accepts, in bytes (NOTIFY-SPEC item 8).
pub const MAX_PAYLOAD: usize = 7999;
/// Longest channel name `pg_notify` accepts, in bytes (item 7).
pub const MAX_CHANNEL: usize = 63;

/// An intercepted statement with its arguments resolved, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intercept {
    /// LISTEN channel.
    Listen(Vec<u8>),
    /// UNLISTEN channel.
    Unlisten(Vec<u8>),
    /// UNLISTEN *.
    UnlistenAll,
    /// NOTIFY channel, payload.
    Notify {
        /// Channel bytes.
        channel: Vec<u8>,
        /// Payload bytes.
        payload: Vec<u8>,
    },
    /// SELECT pg_notify(channel, payload); None is NULL.
    PgNotify {
        /// Channel argument.
        channel: Option<Vec<u8>>,
        /// Payload argument.
        payload: Option<Vec<u8>>,
    },
    /// SELECT pg_listening_channels().
    ListeningChannels,
    /// `DEALLOCATE name` of a statement pgherald keeps for the client (`dealloc.rs`), whose
    /// record the session drops before this runs.
    Deallocate {
        /// Statement name.
        name: Vec<u8>,
        /// The client's Parse count when pgherald read it (`dealloc::Births`).
        seq: u64,
    },
}

/// An error pgherald raises for an intercepted statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// SQLSTATE.
    pub code: &'static str,
    /// Message.
    pub message: Cow<'static, str>,
    /// Context (the `W` field), e.g. which Bind parameter failed.
    pub context: Option<String>,
    /// The protocol message it fails (Postgres's `R` field for 25P02 depends on it).
    pub stage: Stage,
}

impl Failure {
    /// A failure with a fixed message and no context.
    pub const fn fixed(code: &'static str, message: &'static str) -> Failure {
        Failure {
            code,
            message: Cow::Borrowed(message),
            context: None,
            stage: Stage::Query,
        }
    }

    /// The same failure, raised while Postgres handles `stage`.
    pub fn at(self, stage: Stage) -> Failure {
        Failure { stage, ..self }
    }

    /// An encoding error, with its context.
    pub fn encoding(e: &EncodingError, context: Option<String>) -> Failure {
        Failure {
            code: e.sqlstate(),
            message: Cow::Owned(e.to_string()),
            context,
            stage: Stage::Query,
        }
    }
}

/// 25P02: the transaction block is aborted.
pub const ABORTED: Failure = Failure::fixed(
    "25P02",
    "current transaction is aborted, commands ignored until end of transaction block",
);

impl Intercept {
    /// The intercept for a classified statement; None for statements that are forwarded
    /// (including pg_notify with `$n` parameters, which only the extended protocol binds).
    pub fn from_kind(kind: &Kind) -> Option<Intercept> {
        Some(match kind {
            Kind::Listen { channel, .. } => Intercept::Listen(channel.clone()),
            Kind::Unlisten { channel, .. } => Intercept::Unlisten(channel.clone()),
            Kind::UnlistenAll => Intercept::UnlistenAll,
            Kind::Notify {
                channel, payload, ..
            } => Intercept::Notify {
                channel: channel.clone(),
                payload: payload.clone(),
            },
            Kind::PgNotify {
                channel: Arg::Literal(c),
                payload: Arg::Literal(p),
                ..
            } => Intercept::PgNotify {
                channel: c.clone(),
                payload: p.clone(),
            },
            Kind::ListeningChannels => Intercept::ListeningChannels,
            _ => return None,
        })
    }

    /// The error this statement raises whatever the transaction state (items 8, 9, 7).
    pub fn static_error(&self) -> Option<Failure> {
        let too_long = Failure::fixed("22023", "payload string too long");
        match self {
            Intercept::Notify { payload, .. } if payload.len() > MAX_PAYLOAD => Some(too_long),
            Intercept::PgNotify { channel, payload } => match channel.as_deref() {
                None | Some([]) => Some(Failure::fixed("22023", "channel name cannot be empty")),
                Some(c) if c.len() > MAX_CHANNEL => {
                    Some(Failure::fixed("22023", "channel name too long"))
                }
                _ if payload.as_ref().is_some_and(|p| p.len() > MAX_PAYLOAD) => Some(too_long),
                _ => None,
            },
            _ => None,
        }
    }

    /// The column this statement returns, if it returns rows.
    pub fn column(&self) -> Option<reply::Column> {
        match self {
            Intercept::PgNotify { .. } => Some(PG_NOTIFY_COLUMN),
            Intercept::ListeningChannels => Some(LISTENING_CHANNELS_COLUMN),
            _ => None,
        }
    }

    /// Run the statement in transaction state `status` and write its reply to `out`
    /// (`describe_rows`: a simple Query also writes the RowDescription). Returns false if
    /// it raised an error (already written).
    pub fn run(
        &self,
        ch: &mut Channels,
        status: u8,
        describe_rows: bool,
        format: i16,
        out: &mut BytesMut,
    ) -> bool {
        if status == b'E' {
            // Only a simple Query describes rows here; otherwise this is an Execute.
            let stage = if describe_rows {
                Stage::Query
            } else {
                Stage::Execute
            };
            write_failure(out, &ABORTED.at(stage));
            return false;
        }
        if describe_rows {
            if let Some(col) = self.column() {
                reply::row_description(out, col, format);
            }
        }
        if let Some(f) = self.static_error() {
            write_failure(out, &f);
            return false;
        }
        match self {
            Intercept::Listen(c) => {
                ch.txn.push(Action::Listen(c.clone()));
                reply::command_complete(out, "LISTEN");
            }
            Intercept::Unlisten(c) => {
                ch.txn.push(Action::Unlisten(c.clone()));
                reply::command_complete(out, "UNLISTEN");
            }
            Intercept::UnlistenAll => {
                ch.txn.push(Action::UnlistenAll);
                reply::command_complete(out, "UNLISTEN");
            }
            Intercept::Notify { channel, payload } => {
                ch.txn.push(Action::Notify {
                    channel: channel.clone(),
                    payload: payload.clone(),
                });
                reply::command_complete(out, "NOTIFY");
            }
            Intercept::PgNotify { channel, payload } => {
                ch.txn.push(Action::Notify {
                    channel: channel.clone().unwrap_or_default(),
                    payload: payload.clone().unwrap_or_default(),
                });
                reply::data_row(out, b"");
                reply::command_complete(out, "SELECT 1");
            }
            Intercept::Deallocate { .. } => reply::command_complete(out, "DEALLOCATE"),
            Intercept::ListeningChannels => {
                let mut n = 0;
                for c in ch.listens.iter() {
                    // Each row is converted as it is sent: rows before one the client's
                    // encoding cannot represent are sent, then the error.
                    match ch.conv.to_client(c) {
                        Ok(c) => reply::data_row(out, &c),
                        Err(e) => {
                            write_failure(out, &Failure::encoding(&e, None));
                            return false;
                        }
                    }
                    n += 1;
                }
                reply::command_complete(out, &format!("SELECT {n}"));
            }
        }
        true
    }
}

/// Write an ERROR for a failure, with Postgres 15's `F`, `L`, `R` for it.
pub fn write_failure(out: &mut BytesMut, f: &Failure) {
    let mut fields: Vec<(u8, &[u8])> = vec![
        (b'S', b"ERROR"),
        (b'V', b"ERROR"),
        (b'C', f.code.as_bytes()),
        (b'M', f.message.as_bytes()),
    ];
    if let Some(w) = &f.context {
        fields.push((b'W', w.as_bytes()));
    }
    let origin = origin::of(f.code, f.message.as_bytes(), f.stage);
    if let Some(o) = &origin {
        fields.push((b'F', o.file.as_bytes()));
        fields.push((b'L', o.line.as_bytes()));
        fields.push((b'R', o.routine.as_bytes()));
    }
    reply::fields(out, b'E', &fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_errors_follow_the_spec() {
        let n = |p: usize| Intercept::Notify {
            channel: b"c".to_vec(),
            payload: vec![b'x'; p],
        };
        assert_eq!(n(7999).static_error(), None);
        assert_eq!(
            n(8000).static_error().unwrap().message,
            "payload string too long"
        );
        let pg = |c: Option<&[u8]>| Intercept::PgNotify {
            channel: c.map(<[u8]>::to_vec),
            payload: None,
        };
        assert_eq!(
            pg(None).static_error().unwrap().message,
            "channel name cannot be empty"
        );
        assert_eq!(
            pg(Some(b"")).static_error().unwrap().message,
            "channel name cannot be empty"
        );
        assert_eq!(
            pg(Some(&[b'a'; 64])).static_error().unwrap().message,
            "channel name too long"
        );
        assert_eq!(pg(Some(&[b'a'; 63])).static_error(), None);
    }
}
