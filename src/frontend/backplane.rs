//! A session's side of the backplane (several instances): before the client sees a commit
//! complete, wait until the backplane has recorded its notifications and this instance has
//! read them back (the sender's own copy then precedes its ReadyForQuery, item 26); a commit
//! the backplane could not record ends the session with a FATAL and is delivered nowhere. A
//! listener the backplane lost notifications for ends with a FATAL saying so.

use super::session::{Exit, Session};
use crate::pubsub::backplane::Outcome;

/// Wait for every backplane answer the session asked for (each is bounded by the backplane,
/// about twice `backplane_timeout`). A commit that was not recorded: Err, with the replies
/// queued for it dropped, so the client never sees it complete.
impl Session {
    pub(crate) async fn settle_backplane(&mut self) -> Result<(), Exit> {
        let s = self;
        let mut failed = None;
        for (rx, commit) in std::mem::take(&mut s.ch.backplane_waits) {
            match rx.await {
                Ok(Outcome::Delivered) | Ok(Outcome::Recorded) => {}
                Ok(Outcome::Failed(why)) if commit => failed = failed.or(Some(why)),
                Err(_) if commit => failed = failed.or(Some("backplane stopped".to_string())),
                Ok(Outcome::Failed(why)) => {
                    tracing::warn!("backplane reader not positioned before LISTEN completed: {why}")
                }
                Err(_) => {}
            }
        }
        match failed {
            Some(why) => {
                s.client.out.clear();
                Err(Exit::Backplane(why))
            }
            None => Ok(()),
        }
    }

    /// The FATAL for a commit whose notifications the backplane did not record.
    pub(crate) async fn backplane_failed(&mut self, why: &str) {
        let client = &mut self.client;
        tracing::warn!("COMMIT failed: notifications not recorded on the backplane: {why}");
        client
            .fatal_detail(
                "08006",
                &format!(
                    "could not record the transaction's notifications on the backplane: {why}"
                ),
                Some(
                    "The notifications were delivered to no one. Statements the transaction ran \
                 on the server may have committed there.",
                ),
            )
            .await
    }

    /// The FATAL for a listener whose notifications the backplane lost.
    pub(crate) async fn backplane_lost(&mut self) {
        let client = &mut self.client;
        tracing::warn!("listener disconnected: backplane lost notifications it was owed");
        client
            .fatal_detail(
                "08006",
                "terminating connection because notifications may have been lost",
                Some(
                    "The backplane no longer holds notifications this pgherald had not read \
                 (backplane_retention, or Redis lost its data). Reconnect and LISTEN again.",
                ),
            )
            .await
    }
}
