//! Session state a client leaves on a server in transaction mode. Command tags and statement
//! texts that may change it mark the session; when such a transaction ends, one probe reads
//! what the server really holds. Settings (`SET`, `RESET`, `SET ROLE`, `SET SESSION
//! AUTHORIZATION`) are carried to the client's next servers and undone for the next client
//! through the same SET/RESET sync as startup parameters (`params`). State that cannot be
//! carried (session advisory locks, SQL `PREPARE`, `WITH HOLD` cursors, temporary tables,
//! a `LISTEN` on the server that `adopt` did not take over) pins the client to its server
//! until it disconnects; the
//! server then gets `DISCARD ALL` before anyone else has it. Sessions that never change such
//! state pay nothing but a prefix check per CommandComplete.

use std::sync::atomic::Ordering;

use crate::backend::conn::{set_param, Params, Row};
use crate::error::ServerError;
use crate::frontend::params;
use crate::frontend::session::{Exit, Session, HOUSEKEEPING_TIMEOUT};

/// CommandComplete tags after which the server's session state may have changed.
const TAGS: [&[u8]; 8] = [
    b"SET\0",
    b"RESET\0",
    b"PREPARE\0",
    b"DECLARE CURSOR\0",
    b"CREATE TABLE\0",
    b"LISTEN\0",
    b"DISCARD",
    b"DEALLOCATE",
];

/// True if a CommandComplete body (its tag) hints at changed session state.
pub(crate) fn tag_touches(body: &[u8]) -> bool {
    TAGS.iter().any(|t| body.starts_with(t))
}

/// True if a statement text may take a session-level advisory lock (its tag says nothing:
/// `SELECT 1`). A case-insensitive search for `advisory`, anchored on its `v`.
pub(crate) fn text_touches(sql: &[u8]) -> bool {
    const WORD: &[u8] = b"advisory";
    let mut from = 2;
    while let Some(i) = sql.get(from..).and_then(|s| memchr::memchr2(b'v', b'V', s)) {
        let at = from + i - 2;
        if sql
            .get(at..at + WORD.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(WORD))
        {
            return true;
        }
        from += i + 1;
    }
    false
}

/// What the server holds for its session: settings changed from the login defaults (as name,
/// value; `session_authorization` then `role` first), and a count of objects that cannot be
/// carried to another server. Names are schema-qualified so a client's `search_path` cannot
/// redirect them.
pub(crate) const PROBE: &str = "\
SELECT 'session_authorization', pg_catalog.current_setting('session_authorization') \
UNION ALL SELECT 'role', pg_catalog.current_setting('role') \
UNION ALL (SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings \
WHERE source = 'session' ORDER BY name) \
UNION ALL SELECT NULL, (\
(SELECT count(*) FROM pg_catalog.pg_locks \
WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
+ (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql) \
+ (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable) \
+ (SELECT count(*) FROM pg_catalog.pg_class \
WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
+ (SELECT count(*) FROM pg_catalog.pg_listening_channels()))::text";

/// The probe's answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Settings the client changed that pgherald carries (reported ones excluded: they
    /// follow ParameterStatus).
    pub(crate) settings: Params,
    /// State that cannot be carried is present.
    pub(crate) pin: bool,
}

/// Read the probe's rows; `login_user` is the role the server connection logged in as.
pub(crate) fn read_probe(rows: &[Row], login_user: &str) -> Found {
    let mut found = Found {
        settings: Params::new(),
        pin: false,
    };
    for row in rows {
        match (
            row.first().cloned().flatten(),
            row.get(1).cloned().flatten(),
        ) {
            (None, count) => found.pin = count.as_deref() != Some("0"),
            (Some(name), Some(value)) => {
                let skip = match name.as_str() {
                    "session_authorization" => value == login_user,
                    "role" => value == "none",
                    n => params::is_reported(n) || n.starts_with("transaction_"),
                };
                if !skip {
                    set_param(&mut found.settings, &name, &value);
                }
            }
            (Some(_), None) => {}
        }
    }
    found
}

impl Session {
    /// Watch for state changes: transaction mode, not pinned already.
    pub(crate) fn watch_state(&self) -> bool {
        self.transaction_mode() && !self.pinned
    }

    /// Give an idle transaction-mode server back, unless the client is pinned to it; after a
    /// transaction that may have changed session state, probe the server first.
    pub(crate) async fn give_back(&mut self) -> Result<(), Exit> {
        if self.pinned {
            return Ok(());
        }
        if std::mem::take(&mut self.touched) {
            let probed = self.survey().await;
            self.drop_lost_server(probed)?;
            if self.pinned {
                return Ok(());
            }
        }
        self.release();
        Ok(())
    }

    /// What to do when housekeeping on the held server failed after the client's
    /// transaction ended. In transaction mode (not pinned) the client has nothing on that
    /// server: the connection is closed, not pooled, and the client stays; its next
    /// transaction gets another server (a Postgres crash restart between two transactions
    /// costs the client nothing). Otherwise the server was the client's session: it ends.
    pub(crate) fn drop_lost_server(&mut self, res: Result<(), Exit>) -> Result<(), Exit> {
        match res {
            Err(Exit::ServerGone(e)) if self.watch_state() => {
                tracing::debug!(error = %e, "server lost between transactions; client kept");
                if let Some(co) = self.server.take() {
                    self.reg.info.server_pid.store(0, Ordering::Relaxed);
                    self.counts.flush(&self.pool.stats);
                    self.cancel.set_target(None);
                    self.pool.stats.closed.fetch_add(1, Ordering::Relaxed);
                    drop(co);
                }
                Ok(())
            }
            other => other,
        }
    }

    /// Probe the held server: carry its settings into the client's wants (and record them as
    /// what this server has applied, so the next client's sync undoes them), or pin.
    async fn survey(&mut self) -> Result<(), Exit> {
        let login_user = self.pool.login().user;
        let Some(co) = self.server.as_mut() else {
            return Ok(());
        };
        let res = tokio::time::timeout(HOUSEKEEPING_TIMEOUT, co.conn.query_rows(PROBE)).await;
        match res {
            Ok(Ok((rows, b'I'))) => {
                let found = read_probe(&rows, &login_user);
                if found.pin {
                    tracing::debug!("client pinned to its server: session state left on it");
                    self.pinned = true;
                    return Ok(());
                }
                self.wants.retain(|(k, _)| params::is_reported(k));
                for (k, v) in &found.settings {
                    set_param(&mut self.wants, k, v);
                }
                co.conn.extra = found.settings;
                Ok(())
            }
            // Unexpected status, or the probe failed (e.g. a tiny statement_timeout the
            // client set): keep the server rather than guess.
            Ok(Ok(_)) | Ok(Err(ServerError::Refused { .. })) => {
                tracing::debug!("session state probe inconclusive: client pinned");
                self.pinned = true;
                Ok(())
            }
            Ok(Err(e)) => Err(Exit::ServerGone(e)),
            Err(_) => Err(Exit::ServerGone(ServerError::ConnectTimeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(a: Option<&str>, b: Option<&str>) -> Row {
        vec![a.map(str::to_string), b.map(str::to_string)]
    }

    #[test]
    fn tags_and_texts() {
        assert!(tag_touches(b"SET\0"));
        assert!(tag_touches(b"DISCARD ALL\0"));
        assert!(!tag_touches(b"SELECT 1\0"));
        assert!(!tag_touches(b"SETOF\0"));
        assert!(text_touches(b"select pg_advisory_lock(1)"));
        assert!(text_touches(b"SELECT PG_TRY_ADVISORY_LOCK(1)"));
        assert!(text_touches(b"ADVISORY"));
        assert!(!text_touches(b"select v from t where x = 'adv'"));
        assert!(!text_touches(b"v"));
    }

    #[test]
    fn probe_rows() {
        let rows = vec![
            row(Some("session_authorization"), Some("postgres")),
            row(Some("role"), Some("alice")),
            row(Some("TimeZone"), Some("UTC")),
            row(Some("work_mem"), Some("64MB")),
            row(None, Some("0")),
        ];
        let f = read_probe(&rows, "postgres");
        assert!(!f.pin);
        assert_eq!(
            f.settings,
            vec![
                ("role".to_string(), "alice".to_string()),
                ("work_mem".to_string(), "64MB".to_string())
            ]
        );
        assert!(read_probe(&[row(None, Some("2"))], "postgres").pin);
    }
}
