//! LISTEN run by code on the server (a DO block, a function, a procedure, or a LISTEN
//! pgherald could not intercept): in Postgres the client's session then listens, so
//! pgherald takes the channels over. When a server transaction that may have LISTENed ends,
//! one round trip reads the server connection's channels and UNLISTENs them there; the
//! client listens on them through pgherald from then on (`pg_listening_channels()`, its own
//! notifications with its own pid, the relay for what Postgres raises), and the server
//! connection never carries a listen to another client. Sessions whose statements never
//! mention LISTEN, in databases without server code that does, pay nothing.

use std::sync::OnceLock;

use dashmap::DashMap;

use super::session::{Exit, Session, HOUSEKEEPING_TIMEOUT};
use crate::backend::conn::{Row, ServerConn};
use crate::error::ServerError;

/// Reads the server connection's channels and stops it listening, in one round trip.
const TAKE: &str = "SELECT pg_catalog.pg_listening_channels(); UNLISTEN *";

/// Whether the database has functions or procedures whose source mentions LISTEN.
const LISTENING_CODE: &str = "SELECT 1 FROM pg_catalog.pg_proc WHERE prosrc ~* 'listen' \
     AND pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) \
     LIMIT 1";

/// Per upstream database (hub key): whether its server code may LISTEN, as found once.
fn listening_code() -> &'static DashMap<String, bool> {
    static KNOWN: OnceLock<DashMap<String, bool>> = OnceLock::new();
    KNOWN.get_or_init(DashMap::new)
}

/// True if a statement text sent to the server may make it LISTEN: it mentions the word
/// (a DO block, `CREATE FUNCTION`, a LISTEN pgherald forwards). Case-insensitive.
/// `pg_listening_channels` does not count.
pub(crate) fn text_listens(sql: &[u8]) -> bool {
    const WORD: &[u8] = b"listen";
    (0..sql.len().saturating_sub(WORD.len() - 1)).any(|i| {
        sql[i..i + WORD.len()].eq_ignore_ascii_case(WORD)
            && !sql
                .get(i + WORD.len()..i + WORD.len() + 3)
                .is_some_and(|r| r.eq_ignore_ascii_case(b"ing"))
    })
}

impl Session {
    /// A server transaction has ended and nothing else is in flight: if it may have
    /// LISTENed, take the server connection's channels over (see the module header).
    pub(crate) async fn adopt_server_listens(&mut self) -> Result<(), Exit> {
        let database = self.ch.database().to_string();
        let hinted = std::mem::take(&mut self.server_listen_hint);
        let Some(co) = self.server.as_mut() else {
            return Ok(());
        };
        if hinted {
            // The statement may also have created such code (`CREATE FUNCTION`): look again
            // at the next transaction's end.
            listening_code().remove(&database);
        }
        let code = match listening_code().get(&database).map(|v| *v) {
            Some(known) => known,
            None => {
                let found = housekeeping(&mut co.conn, LISTENING_CODE).await?;
                let known = found.is_some_and(|rows| !rows.is_empty());
                listening_code().insert(database.clone(), known);
                known
            }
        };
        if !hinted && !code {
            return Ok(());
        }
        let Some(rows) = housekeeping(&mut co.conn, TAKE).await? else {
            return Ok(());
        };
        let channels: Vec<Vec<u8>> = rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .filter_map(|c| {
                self.ch
                    .conv
                    .parameter(c.as_bytes())
                    .ok()
                    .map(|c| c.into_owned())
            })
            .collect();
        if channels.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            n = channels.len(),
            "took over channels LISTENed on the server"
        );
        self.ch.adopt(channels);
        if let Some(rx) = self.ch.relay_wait.take() {
            if tokio::time::timeout(HOUSEKEEPING_TIMEOUT, rx)
                .await
                .is_err()
            {
                tracing::warn!("relay did not confirm LISTEN in time");
            }
        }
        Ok(())
    }

    /// A statement text going to the server: note whether it may make the server LISTEN,
    /// and (`opaque`: pgherald answers none of it) whether it may make it raise
    /// notifications.
    pub(crate) fn note_server_text(&mut self, sql: &[u8], opaque: bool) {
        if !self.server_listen_hint && text_listens(sql) {
            self.server_listen_hint = true;
        }
        if opaque && mentions(sql, b"notify") {
            self.ch.note_may_raise();
        }
    }
}

/// The rows of a housekeeping query; None when the server refused it (e.g. a
/// statement_timeout the client set), which leaves things as they are.
async fn housekeeping(conn: &mut ServerConn, sql: &str) -> Result<Option<Vec<Row>>, Exit> {
    match tokio::time::timeout(HOUSEKEEPING_TIMEOUT, conn.query_rows(sql)).await {
        Ok(Ok((rows, _))) => Ok(Some(rows)),
        Ok(Err(ServerError::Refused { .. })) => Ok(None),
        Ok(Err(e)) => Err(Exit::ServerGone(e)),
        Err(_) => Err(Exit::ServerGone(ServerError::ConnectTimeout)),
    }
}

/// A case-insensitive search for an ASCII word.
fn mentions(sql: &[u8], word: &[u8]) -> bool {
    sql.windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_word() {
        assert!(text_listens(b"DO $$ BEGIN EXECUTE 'LISTEN x'; END $$"));
        assert!(text_listens(b"create function f() ... listen ..."));
        assert!(!text_listens(b"SELECT f()"));
        assert!(!text_listens(b"liste"));
        assert!(!text_listens(b"SELECT * FROM pg_listening_channels()"));
        assert!(text_listens(b"LISTEN"));
    }
}
