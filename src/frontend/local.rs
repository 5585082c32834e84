//! pgherald's own replies: when an entry that pgherald answers itself (an intercepted
//! Query, an intercepted extended-protocol message, a deferred BEGIN's COMMIT) reaches the
//! head of the reply plan, its reply is written here, with the transaction bookkeeping it
//! implies.

use super::deferred::Control;
use super::intercept::write_failure;
use super::outbound::Act;
use super::plan::{Entry, LocalReply};
use super::session::Session;
use crate::protocol::origin::Stage;
use crate::protocol::reply;

impl Session {
    /// Run pgherald's own replies that have reached the head of the plan.
    pub(crate) fn advance_locals(&mut self) {
        while self.ch.unconvertible.is_none()
            && self.ready_after_relay.is_none()
            && self.plan.front().is_some_and(Entry::is_local)
        {
            let Some(entry) = self.plan.pop_front() else {
                return;
            };
            match entry {
                Entry::LocalQuery(q) => {
                    if let Some(p) = q.preamble {
                        self.client.out.extend_from_slice(&p);
                    }
                    let status = self.status;
                    let mut failed = false;
                    for i in &q.stmts {
                        if !self.run_intercept(i, status, true, 0) {
                            failed = true;
                            break;
                        }
                    }
                    self.local_ready(status, failed);
                }
                Entry::Local(LocalReply::Sync) => {
                    let failed = self.batch_failed;
                    self.batch_failed = false;
                    self.local_error = false;
                    let status = self.live;
                    self.local_ready(status, failed);
                }
                Entry::Local(_) if self.batch_failed => {}
                Entry::Local(r) => self.local_reply(r),
                _ => {}
            }
        }
    }

    pub(super) fn local_ready(&mut self, status: u8, failed: bool) {
        self.finish_transaction(status, failed, false);
        if self.ch.drain_after_relay {
            // The commit waits for the relay: its own notifications, then this, follow it.
            self.ready_after_relay = Some(status);
        } else if self.ch.unconvertible.is_none() {
            reply::ready_for_query(&mut self.client.out, status);
        }
    }

    /// An intercepted message in an aborted transaction block: 25P02, and the batch fails.
    fn aborted_error(&mut self, stage: Stage) {
        write_failure(&mut self.client.out, &super::intercept::ABORTED.at(stage));
        self.local_error = true;
        self.batch_error(Act::Swallow);
    }

    fn local_reply(&mut self, r: LocalReply) {
        if !matches!(r, LocalReply::Close | LocalReply::Sync | LocalReply::Flush)
            && self.live == b'I'
        {
            // As in Postgres, an extended-protocol message opens an implicit transaction.
            self.implicit = true;
        }
        if let LocalReply::Flush = r {
            // Postgres reads the client's Flush after the commit: its own notifications are
            // queued then, and the Flush sends them with everything before.
            if self.deliverable() {
                self.ch.drain_into(&mut self.client.out);
            }
            return self.hold.flush_held();
        }
        let out = &mut self.client.out;
        match r {
            LocalReply::ParseKnown => reply::parse_complete(out),
            LocalReply::Flush => {}
            LocalReply::Parse(notices) => {
                if let Some(n) = notices {
                    out.extend_from_slice(&n);
                }
                if self.live == b'E' {
                    self.aborted_error(Stage::Parse);
                } else {
                    reply::parse_complete(&mut self.client.out);
                }
            }
            LocalReply::Bind if self.live == b'E' => self.aborted_error(Stage::Bind),
            LocalReply::Bind => reply::bind_complete(out),
            LocalReply::Close => reply::close_complete(out),
            LocalReply::DescribeStatement { params, rows } => {
                reply::parameter_description(out, &params);
                match rows {
                    Some(c) => reply::row_description(out, c, 0),
                    None => reply::no_data(out),
                }
            }
            LocalReply::DescribePortal { rows, format } => match rows {
                Some(c) => reply::row_description(out, c, format),
                None => reply::no_data(out),
            },
            LocalReply::Execute { action, format } => {
                let live = self.live;
                if !self.run_intercept(&action, live, false, format) {
                    self.local_error = true;
                    self.batch_error(Act::Swallow);
                }
            }
            LocalReply::Sync => {}
            LocalReply::Control(c) => {
                reply::command_complete(&mut self.client.out, c.tag());
                let (status, failed) = match c {
                    Control::Begin | Control::Start => (b'T', false),
                    Control::Commit => (b'I', false),
                    Control::Rollback => (b'I', true),
                };
                self.local_ready(status, failed);
            }
        }
    }
}
