//! Holding replies back the way Postgres buffers them. A Query that pgherald sends with
//! fillers (`simple::FILLER`), or an extended batch where pgherald added a Flush after a
//! COMMIT, makes the server flush its output early; the client must still get the replies
//! when Postgres would have sent them: at a notice or an error, once 8 kB are buffered, at
//! CopyInResponse, at the client's own Flush and at ReadyForQuery.
//! (Error and notice positions are mapped back through the plan's position map.)
//!
//! The hold never sends anything earlier than Postgres would. It can send the tail of a full
//! buffer later: the server's own buffer boundaries are moved by the filler's reply, so when
//! such a Query has sent more than 8 kB and then waits, up to 8 kB of it may still sit in the
//! server's buffer where Postgres would have sent it.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::outbound::Act;
use super::session::{Exit, Session};
use crate::error::ClientError;
use crate::protocol::framer;

/// Postgres's output buffer: it is sent whenever it is full and more output follows.
const SEND_BUFFER: usize = 8192;

/// The hold on one Query's replies.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    /// Bytes for the client, held back; None when nothing is held.
    buf: Option<BytesMut>,
    /// The message being routed is the first of a Query with fillers: hold from it on.
    arm: bool,
    /// After the message being routed, write what is held (true: and stop holding).
    release: Option<bool>,
}

impl Hold {
    /// A Query's replies are being held.
    pub(crate) fn active(&self) -> bool {
        self.buf.is_some()
    }

    /// The client flushed: what is held goes out at the next release, and holding goes on.
    pub(crate) fn flush_held(&mut self) {
        if self.active() && self.release.is_none() {
            self.release = Some(false);
        }
    }
}

impl Session {
    /// Write bytes for the client, or hold them while a Query with fillers runs.
    pub(super) async fn write_client(&mut self, bytes: &[u8]) -> Result<(), Exit> {
        if let Some(held) = self.hold.buf.as_mut() {
            held.extend_from_slice(bytes);
            // Postgres sends its buffer whenever it is full and more output follows.
            let full = held.len().saturating_sub(1) / SEND_BUFFER * SEND_BUFFER;
            if full == 0 {
                return Ok(());
            }
            let out = held.split_to(full);
            return self.write_through(&out).await;
        }
        self.write_through(bytes).await
    }

    async fn write_through(&mut self, bytes: &[u8]) -> Result<(), Exit> {
        if !bytes.is_empty() {
            self.client
                .wr
                .write_all(bytes)
                .await
                .map_err(ClientError::from)?;
        }
        Ok(())
    }

    /// The action for a server message of a Query with fillers: where Postgres would flush,
    /// a break of the run so that the hold can be released right after it.
    pub(super) fn held(&mut self, tag: u8, act: Act) -> Act {
        if !self.hold.active() {
            self.hold.arm = true;
        }
        match tag {
            b'Z' => self.hold.release = Some(true),
            b'E' | b'N' | b'G' | b'W' => self.hold.release = Some(false),
            // pgherald's own notices and errors (lexer notices, intercepted statements'
            // errors) flush as Postgres's do.
            _ if raises(&self.client.out) => self.hold.release = Some(false),
            _ => {}
        }
        if act == Act::Pass && (self.hold.arm || self.hold.release.is_some()) {
            Act::After
        } else {
            act
        }
    }

    /// Start holding if the message being handled is a held Query's first.
    /// From now on, the client's replies are held as Postgres buffers them until the
    /// client's Sync or Flush (a Flush pgherald added for itself, see `inbound`).
    pub(super) fn hold_from_here(&mut self) {
        if self.hold.buf.is_none() {
            self.hold.buf = Some(BytesMut::new());
        }
    }

    /// Write what pgherald queued for the client; while replies are held, behind them.
    pub(crate) async fn flush_out(&mut self) -> Result<(), Exit> {
        if !self.hold.active() {
            return self.client.flush().await.map_err(Exit::from);
        }
        let out = std::mem::take(&mut self.client.out);
        self.write_client(&out).await?;
        self.client.out = out;
        self.client.out.clear();
        self.release_hold().await
    }

    pub(super) fn start_hold(&mut self) {
        if std::mem::take(&mut self.hold.arm) {
            self.hold.buf = Some(BytesMut::new());
        }
    }

    /// The session ends mid-Query: write everything held, and stop holding.
    pub(super) async fn end_hold(&mut self) -> Result<(), Exit> {
        self.hold.release = Some(true);
        self.release_hold().await
    }

    /// After a message where Postgres flushes: write what is held.
    pub(super) async fn release_hold(&mut self) -> Result<(), Exit> {
        let Some(end) = self.hold.release.take() else {
            return Ok(());
        };
        let held = if end {
            self.hold.buf.take()
        } else {
            self.hold.buf.as_mut().map(std::mem::take)
        };
        match held {
            Some(b) => self.write_through(&b).await,
            None => Ok(()),
        }
    }
}

/// `out` holds a NoticeResponse or an ErrorResponse.
fn raises(mut out: &[u8]) -> bool {
    while let Ok(Some(h)) = framer::header(out) {
        if matches!(h.tag, b'N' | b'E') {
            return true;
        }
        out = out.get(h.total..).unwrap_or_default();
    }
    false
}
