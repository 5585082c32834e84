//! Postgres's pipeline rule, kept for the Executes pgherald answers itself.
//!
//! Once an Execute completes in an extended-protocol batch without committing at once (any
//! statement but transaction control), Postgres marks the transaction as a pipeline
//! (`XACT_FLAGS_PIPELINING`, postgres.c), and until that transaction ends every statement that
//! must run outside a transaction (DISCARD ALL, VACUUM, CREATE DATABASE, …) fails with
//! `25001 <statement> cannot be executed within a pipeline`. An Execute pgherald answers (LISTEN,
//! NOTIFY, pg_notify, pg_listening_channels) never reaches the server, which would then run such
//! a statement. So before the next Execute it forwards in the same batch, pgherald has the server
//! run a harmless statement in its place: `SHOW`, which takes no snapshot (a later `SET
//! TRANSACTION ISOLATION LEVEL` still works) and changes nothing. The server then sets the flag
//! itself and raises exactly Postgres's errors, in Postgres's order of checks (`cannot run inside
//! a transaction block` comes first). Its replies are swallowed.

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::plan::Entry;
use crate::protocol::framer;

/// Name of the statement and portal pgherald uses (closed again at once).
const NAME: &str = "pgherald_pipeline";
/// The statement: no snapshot, no side effect, one row.
const STATEMENT: &str = "SHOW server_version_num";

/// Append to `out` the messages that run [`STATEMENT`] under [`NAME`] (a leftover statement of
/// that name from a batch that failed half-way is closed first), then the client's own message
/// `tag` with `body`. Returns the reply-plan entries of pgherald's messages, in order.
pub(crate) fn mark_then(out: &mut BytesMut, tag: u8, body: &[u8]) -> std::io::Result<Vec<Entry>> {
    frontend::close(b'S', NAME, out)?;
    frontend::parse(NAME, STATEMENT, [], out)?;
    frontend::bind(
        NAME,
        NAME,
        [],
        [],
        |_: (), _| Ok(postgres_protocol::IsNull::No),
        [],
        out,
    )
    .map_err(|_| std::io::Error::other("bind"))?;
    frontend::execute(NAME, 0, out)?;
    frontend::close(b'P', NAME, out)?;
    frontend::close(b'S', NAME, out)?;
    if !framer::put(out, tag, body) {
        return Err(std::io::Error::other("message too long"));
    }
    Ok(vec![
        Entry::InjectedQuiet,
        Entry::InjectedQuiet,
        Entry::InjectedQuiet,
        Entry::InjectedRun,
        Entry::InjectedQuiet,
        Entry::InjectedQuiet,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_messages_then_the_clients_own() {
        let mut out = BytesMut::new();
        let entries = mark_then(&mut out, b'E', b"\0\0\0\0\0").unwrap();
        let mut tags = Vec::new();
        let mut rest = &out[..];
        while let Some(h) = framer::header(rest).unwrap() {
            tags.push(h.tag);
            rest = &rest[h.total..];
        }
        assert!(rest.is_empty());
        assert_eq!(tags, b"CPBECCE");
        assert_eq!(entries.len(), 6);
        assert!(matches!(entries[3], Entry::InjectedRun));
    }
}
