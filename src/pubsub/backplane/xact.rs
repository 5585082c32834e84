//! Resolving a pending commit from Postgres: `pg_xact_status(xid8)` on a short-lived server
//! connection of this instance's own, logged in as the database's relay (its `relay_user`,
//! or the pool's fixed user). Only pending entries whose confirmation did not come in time
//! get here, so a fresh connection per question costs nothing on any hot path.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{XactResolver, XactStatus};
use crate::backend::conn::ServerConn;
use crate::pubsub::relay::Relays;

/// Asks the upstream database of a hub key, with the login its relay uses.
#[derive(Debug)]
pub struct PostgresResolver {
    relays: Arc<Relays>,
    timeout: Duration,
}

impl PostgresResolver {
    /// A resolver using the logins registered with `relays`; each question is bounded by
    /// `timeout` (connection and query each).
    pub fn new(relays: Arc<Relays>, timeout: Duration) -> PostgresResolver {
        PostgresResolver { relays, timeout }
    }

    async fn ask(&self, database: &str, xid: u64) -> Result<XactStatus, String> {
        let login = self
            .relays
            .login(database)
            .ok_or_else(|| format!("no login known for {database} on this instance"))?;
        let mut conn = ServerConn::connect(&login, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        let sql = format!("SELECT pg_xact_status('{xid}'::xid8)");
        let res = tokio::time::timeout(self.timeout, conn.query_rows(&sql)).await;
        tokio::spawn(conn.terminate());
        let (rows, _) = res
            .map_err(|_| "pg_xact_status timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let status = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .ok_or_else(|| format!("transaction {xid} is unknown to the server"))?;
        match status.as_str() {
            "committed" => Ok(XactStatus::Committed),
            "aborted" => Ok(XactStatus::Aborted),
            "in progress" => Ok(XactStatus::InProgress),
            other => Err(format!("unexpected pg_xact_status {other:?}")),
        }
    }
}

impl XactResolver for PostgresResolver {
    fn status(
        &self,
        database: &str,
        xid: u64,
    ) -> Pin<Box<dyn Future<Output = Result<XactStatus, String>> + Send + '_>> {
        let database = database.to_owned();
        Box::pin(async move { self.ask(&database, xid).await })
    }
}
