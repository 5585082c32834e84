//! Atomic COMMIT of a transaction that ran statements on the server and notifies through
//! pgherald, with a backplane (issue 15, guarantee 4; `pubsub::backplane::pending` has the
//! log side). Before the client's `COMMIT` goes to the server, the session asks the server
//! for the transaction's xid (`pg_current_xact_id()`, xid8) and records the notifications on
//! the backplane as pending on it. If that fails within `backplane_timeout`, the COMMIT is
//! never sent: the server's transaction is rolled back and the client gets ERROR 40000 (a
//! class-40 "transaction rollback": nothing was committed anywhere, the whole transaction may
//! be retried), its session intact. Otherwise the COMMIT goes on; the server's answer
//! resolves the pending entry (`Channels::publish` confirms it, `Channels::discard` aborts
//! it), and if this instance dies in between, another one resolves it from Postgres.
//!
//! Only a Query that is exactly `COMMIT`/`END` (what drivers send to commit), arriving with
//! nothing else in flight inside a server transaction block, is staged; other commits keep
//! the path of NOTIFY-only transactions (README, "Not supported (yet)"). Without a
//! backplane none of this runs.

use std::sync::OnceLock;

use super::deferred::Control;
use super::session::{Exit, Session, HOUSEKEEPING_TIMEOUT};
use crate::error::ServerError;
use crate::protocol::reply::{self, Severity};

/// Test hook: with `PGHERALD_TEST_EXIT_AFTER_SERVER_COMMIT` set in its environment (read
/// once, at the first staged commit), the process exits at once when the server has
/// confirmed a staged COMMIT, before the backplane hears of it: the crash the pending
/// entries' resolution from Postgres exists for. Never set it in production.
pub(crate) fn test_exit_hook() {
    static EXIT: OnceLock<bool> = OnceLock::new();
    if *EXIT.get_or_init(|| std::env::var_os("PGHERALD_TEST_EXIT_AFTER_SERVER_COMMIT").is_some()) {
        eprintln!("PGHERALD_TEST_EXIT_AFTER_SERVER_COMMIT: exiting after the server COMMIT");
        std::process::exit(86);
    }
}

impl Session {
    /// A Query (`sql`) whose commit must be staged first: exactly COMMIT/END, inside a
    /// server transaction block with nothing in flight, and a batch to stage.
    pub(crate) fn stages_commit(&self, sql: &[u8]) -> bool {
        self.status == b'T'
            && !self.deferred
            && self.server.is_some()
            && self.quiet()
            && self.ch.stage_batch().is_some()
            && matches!(super::deferred::classify(sql), Some(Control::Commit))
    }

    /// Record the pending batch before the COMMIT goes to the server. Ok(true): staged, the
    /// COMMIT goes on. Ok(false): not recorded; the transaction was rolled back and the
    /// client told (the COMMIT is dropped).
    pub(crate) async fn stage_commit(&mut self) -> Result<bool, Exit> {
        let Some(batch) = self.ch.stage_batch() else {
            return Ok(true);
        };
        let xid = match self.current_xid().await? {
            Ok(xid) => xid,
            Err(why) => return self.refuse_commit(&why).await,
        };
        let Some(prepared) = self.ch.prepare(xid, batch) else {
            return Ok(true);
        };
        let timeout = std::time::Duration::from_secs_f64(self.cfg.config.backplane_timeout);
        let why = match tokio::time::timeout(timeout * 2, prepared).await {
            Ok(Ok(Ok(entry))) => {
                tracing::debug!(xid, entry, "notifications pending on the backplane");
                self.ch.staged = Some(entry);
                return Ok(true);
            }
            Ok(Ok(Err(why))) => why,
            Ok(Err(_)) => "backplane stopped".to_string(),
            Err(_) => format!("no answer within backplane_timeout ({timeout:?})"),
        };
        self.refuse_commit(&why).await
    }

    /// The server transaction's xid (assigned now if it had none). Err(Exit): the server
    /// connection broke; Ok(Err): the server refused (the transaction is aborted there).
    async fn current_xid(&mut self) -> Result<Result<u64, String>, Exit> {
        let Some(co) = self.server.as_mut() else {
            return Ok(Err("no server connection".into()));
        };
        let res = tokio::time::timeout(
            HOUSEKEEPING_TIMEOUT,
            co.conn.query_rows("SELECT pg_current_xact_id()"),
        )
        .await;
        match res {
            Ok(Ok((rows, _))) => Ok(rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| "the server gave no transaction id".to_string())),
            Ok(Err(ServerError::Refused { message, .. })) => {
                Ok(Err(format!("pg_current_xact_id() failed: {message}")))
            }
            Ok(Err(e)) => Err(Exit::ServerGone(e)),
            Err(_) => Err(Exit::ServerGone(ServerError::ConnectTimeout)),
        }
    }

    /// The pending batch could not be recorded: roll the server's transaction back and fail
    /// the client's COMMIT with ERROR 40000; nothing is committed anywhere.
    async fn refuse_commit(&mut self, why: &str) -> Result<bool, Exit> {
        tracing::warn!("COMMIT refused: notifications not recorded on the backplane: {why}");
        if let Some(co) = self.server.as_mut() {
            match tokio::time::timeout(HOUSEKEEPING_TIMEOUT, co.conn.run_quiet("ROLLBACK")).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Exit::ServerGone(e)),
                Err(_) => return Err(Exit::ServerGone(ServerError::ConnectTimeout)),
            }
        }
        self.ch.discard();
        self.ch.drop_reserved();
        self.status = b'I';
        self.live = b'I';
        self.implicit = false;
        let out = &mut self.client.out;
        reply::error(
            out,
            Severity::Error,
            "40000",
            &format!("could not record the transaction's notifications on the backplane: {why}"),
            Some("The transaction was rolled back: nothing was committed and no notification was sent."),
        );
        self.ch.drain_into(&mut self.client.out);
        reply::ready_for_query(&mut self.client.out, b'I');
        self.client.flush().await?;
        Ok(false)
    }
}
