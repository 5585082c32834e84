//! Holding a Query's replies back the way Postgres buffers them. A Query that pgherald sends
//! with fillers (`simple::FILLER`) makes the server flush its output early, at each filler;
//! the client must still get the Query's replies when Postgres would have sent them: at a
//! notice or an error, once 8 kB are buffered, at CopyInResponse and at ReadyForQuery.
//! Error and notice positions are mapped back to the client's own text.
//!
//! The hold never sends anything earlier than Postgres would. It can send the tail of a full
//! buffer later: the server's own buffer boundaries are moved by the filler's reply, so when
//! such a Query has sent more than 8 kB and then waits, up to 8 kB of it may still sit in the
//! server's buffer where Postgres would have sent it.

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;

use super::outbound::Act;
use super::plan::Entry;
use super::session::{Exit, Session};
use super::simple::FILLER;
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

    /// The action for a server message of a Query with fillers: its position mapped back,
    /// and where Postgres would flush, a break of the run so that the hold can be released
    /// right after it.
    pub(super) fn held(&mut self, tag: u8, body: &[u8], mut act: Act) -> Act {
        if matches!(tag, b'E' | b'N') && matches!(act, Act::Pass | Act::Before) {
            if let Some(Entry::Query(q)) = self.plan.front() {
                if let Some(p) = mapped_position(body, &q.fillers) {
                    with_position(&mut self.client.out, tag, body, p);
                    act = Act::Swallow;
                }
            }
        }
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
    pub(super) fn start_hold(&mut self) {
        if std::mem::take(&mut self.hold.arm) {
            self.hold.buf = Some(BytesMut::new());
        }
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

/// The position an ErrorResponse/NoticeResponse body's `P` field has in the client's text,
/// when fillers before it moved it (`fillers`: their 0-based character offsets).
fn mapped_position(body: &[u8], fillers: &[u32]) -> Option<u32> {
    let p: u32 = std::str::from_utf8(framer::field(body, b'P')?)
        .ok()?
        .parse()
        .ok()?;
    let before = fillers.iter().filter(|&&f| f < p).count() as u32;
    (before > 0).then(|| p.saturating_sub(before * FILLER.len() as u32).max(1))
}

/// The message `tag` with `body`'s fields, its `P` field set to `position`.
fn with_position(out: &mut BytesMut, tag: u8, body: &[u8], position: u32) {
    let start = out.len();
    out.put_u8(tag);
    out.put_u32(0);
    for (code, value) in framer::fields(body) {
        out.put_u8(code);
        if code == b'P' {
            out.extend_from_slice(position.to_string().as_bytes());
        } else {
            out.extend_from_slice(value);
        }
        out.put_u8(0);
    }
    out.put_u8(0);
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_body(p: &str) -> Vec<u8> {
        let mut b = b"SERROR\0C42601\0Msyntax error\0P".to_vec();
        b.extend_from_slice(p.as_bytes());
        b.extend_from_slice(b"\0\0");
        b
    }

    #[test]
    fn positions_after_a_filler_move_back() {
        // Fillers at offsets 20 and 40 (the second already counts the first).
        let f = [20, 40];
        assert_eq!(mapped_position(&error_body("5"), &f), None);
        assert_eq!(mapped_position(&error_body("20"), &f), None);
        assert_eq!(mapped_position(&error_body("30"), &f), Some(21));
        assert_eq!(mapped_position(&error_body("50"), &f), Some(32));
        assert_eq!(mapped_position(b"SERROR\0\0", &f), None);
        assert_eq!(mapped_position(&error_body("x"), &f), None);
    }

    #[test]
    fn rewritten_message_keeps_other_fields() {
        let body = error_body("30");
        let mut out = BytesMut::new();
        with_position(&mut out, b'E', &body, 21);
        let h = framer::header(&out).unwrap().unwrap();
        assert_eq!(h.total, out.len());
        let fields: Vec<_> = framer::fields(&out[5..]).collect();
        assert_eq!(
            fields,
            vec![
                (b'S', &b"ERROR"[..]),
                (b'C', b"42601"),
                (b'M', b"syntax error"),
                (b'P', b"21")
            ]
        );
    }
}
