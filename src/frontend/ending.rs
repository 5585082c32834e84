//! How a session ends: why (`Exit`), what the client is told for each reason (Postgres's
//! or PgBouncer's FATAL), and the server it held, returned clean to its pool or closed.

use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;

use crate::error::{ClientError, PoolError, ServerError};
use crate::frontend::session::{Session, HOUSEKEEPING_TIMEOUT};
use crate::protocol::encoding::EncodingError;
use crate::protocol::framer;

/// Why a session ends.
#[derive(Debug)]
pub(crate) enum Exit {
    /// The client closed or sent Terminate.
    ClientGone,
    /// The client broke the protocol: FATAL 08P01 with this message.
    ClientProtocol(String),
    /// The server connection died or misbehaved.
    ServerGone(ServerError),
    /// No server connection could be had.
    Pool(PoolError),
    /// Shutdown reached an idle client.
    Shutdown,
    /// The client's notification mailbox overflowed at this limit.
    Overflow(usize),
    /// A notification the client's encoding cannot represent (FATAL, as in Postgres).
    Unconvertible(EncodingError),
    /// A commit's notifications could not be recorded on the backplane (why).
    Backplane(String),
    /// The backplane lost notifications this listener was owed.
    Lost,
    /// client_idle_timeout, idle_transaction_timeout or query_timeout: PgBouncer's text.
    Timeout(&'static str),
    /// The console killed the client (KILL, KILL_CLIENT).
    Killed,
}

impl From<ClientError> for Exit {
    fn from(e: ClientError) -> Exit {
        match e {
            ClientError::Protocol(m) => Exit::ClientProtocol(m),
            _ => Exit::ClientGone,
        }
    }
}

impl From<framer::FrameError> for Exit {
    fn from(e: framer::FrameError) -> Exit {
        Exit::ClientProtocol(e.to_string())
    }
}

impl Session {
    /// Tell the client why the session ends (when it should know) and leave the server clean.
    pub(crate) async fn finish(mut self, exit: Exit) {
        match &exit {
            Exit::ClientGone => {}
            Exit::ClientProtocol(m) => self.client.fatal("08P01", m).await,
            Exit::Overflow(limit) => {
                let detail = format!(
                    "This client had {limit} notifications queued (listener_queue_limit) and was not reading them."
                );
                tracing::warn!(limit, "listener disconnected: notification queue overflow");
                self.client
                    .fatal_detail(
                        "54000",
                        "too many notifications in the NOTIFY queue",
                        Some(&detail),
                    )
                    .await
            }
            Exit::Unconvertible(e) => self.client.fatal(e.sqlstate(), &e.to_string()).await,
            Exit::Backplane(why) => self.backplane_failed(why).await,
            Exit::Lost => self.backplane_lost().await,
            Exit::Timeout(reason) => {
                tracing::info!("closing because: {reason}");
                if *reason == "query timeout" {
                    // Stop the query on the server, then close the connection as PgBouncer.
                    self.app
                        .cancels
                        .cancel(self.cancel.pid, self.cancel.secret)
                        .await;
                }
                if let Some(co) = self.server.take() {
                    self.cancel.set_target(None);
                    tokio::spawn(co.conn.terminate());
                }
                self.client.fatal("08P01", reason).await
            }
            Exit::Killed => self.client.fatal("08P01", "admin forced disconnect").await,
            Exit::Shutdown => {
                self.client
                    .fatal(
                        "57P01",
                        "terminating connection due to administrator command",
                    )
                    .await
            }
            Exit::Pool(PoolError::WaitTimeout) => {
                self.client
                    .fatal_detail(
                        "08P01",
                        "query_wait_timeout",
                        Some("no server connection became available within query_wait_timeout"),
                    )
                    .await
            }
            Exit::Pool(PoolError::Server(ServerError::Refused {
                code,
                message,
                detail,
                ..
            })) => {
                self.client
                    .fatal_detail(code, message, detail.as_deref())
                    .await
            }
            Exit::Pool(e) => {
                self.client
                    .fatal("08006", &format!("server connection failed: {e}"))
                    .await
            }
            Exit::ServerGone(e) => {
                // Forward what the server said before it went (its FATAL), then our own.
                let _ = self.drain_server_remainder().await;
                if !self.server_fatal {
                    let msg = match e {
                        ServerError::Refused { message, .. } => message.clone(),
                        _ => "server closed the connection unexpectedly".to_string(),
                    };
                    self.client.fatal("08006", &msg).await;
                }
                self.server = None;
            }
        }
        if matches!(exit, Exit::Overflow(_)) {
            self.pool.stats.overflows.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.client.wr.shutdown().await;
        self.cleanup_server().await;
        self.counts.flush(&self.pool.stats);
        tracing::debug!(?exit, "session ended");
    }

    async fn drain_server_remainder(&mut self) -> Result<(), Exit> {
        self.writing = true;
        self.on_server_data().await
    }

    /// The client is gone: return its server clean, or close it.
    async fn cleanup_server(&mut self) {
        let Some(mut co) = self.server.take() else {
            return;
        };
        self.reg.info.server_pid.store(0, Ordering::Relaxed);
        self.cancel.set_target(None);
        if !self.quiet() || self.server_fatal {
            tokio::spawn(co.conn.terminate());
            return;
        }
        // A deferred block never reached the server: it is idle.
        let mut status = if self.deferred { b'I' } else { self.status };
        // In transaction mode the server is reset when the client may have left state on it:
        // pinned, a transaction that changed state, or gone in the middle of a transaction.
        let reset = if !self.transaction_mode() {
            self.pool.settings().reset_query.clone()
        } else if self.pinned || self.touched || status != b'I' {
            "DISCARD ALL".to_string()
        } else {
            String::new()
        };
        if status != b'I' {
            match tokio::time::timeout(HOUSEKEEPING_TIMEOUT, co.conn.run_quiet("ROLLBACK")).await {
                Ok(Ok(s)) => status = s,
                _ => return,
            }
        }
        if !reset.is_empty() {
            match tokio::time::timeout(HOUSEKEEPING_TIMEOUT, co.conn.run_quiet(&reset)).await {
                Ok(Ok(s)) => status = s,
                _ => return,
            }
            co.conn.extra.clear();
            co.conn.prepared.clear();
        }
        self.pool.checkin(co, status);
    }
}
