//! A client socket: the two halves, the reused read buffer, and a buffer for the messages
//! pgherald writes itself.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ClientError;
use crate::protocol::framer;
use crate::protocol::reply::{self, Severity};
use crate::tls::{stream, NetRead, NetWrite};

/// Largest length word of a password message (Postgres's PG_MAX_AUTH_TOKEN_LENGTH).
pub const MAX_PASSWORD_MESSAGE: usize = 65_535;
/// Largest length word of a SASL message (Postgres's PG_MAX_SASL_MESSAGE_LENGTH).
pub const MAX_SASL_MESSAGE: usize = 1024;
/// Read buffer size; an idle client keeps no more than this.
const READ_CHUNK: usize = 4 * 1024;
/// A read buffer that grew past this (a large message) is given back once empty.
const SHRINK_ABOVE: usize = 64 * 1024;

/// A connected client.
#[derive(Debug)]
pub struct ClientIo {
    /// Read half (plain or TLS, chosen at login).
    pub rd: NetRead,
    /// Write half.
    pub wr: NetWrite,
    /// With TLS: the client certificate's subject CN, if it sent one.
    pub cert_cn: Option<String>,
    /// With TLS: pgherald's certificate's channel binding data (SCRAM-SHA-256-PLUS).
    pub end_point: Option<Vec<u8>>,
    /// The client's address (as accepted, before any TLS).
    pub peer: Option<std::net::SocketAddr>,
    /// pgherald's address of this connection.
    pub local: Option<std::net::SocketAddr>,
    /// Reused read buffer; unprocessed client bytes.
    pub buf: BytesMut,
    /// Messages pgherald composed for the client, written by `flush`.
    pub out: BytesMut,
}

impl ClientIo {
    /// Wrap an accepted socket.
    pub fn new(stream: TcpStream) -> ClientIo {
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok();
        let local = stream.local_addr().ok();
        let (rd, wr) = stream::plain(stream);
        ClientIo {
            rd,
            wr,
            cert_cn: None,
            end_point: None,
            peer,
            local,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::new(),
        }
    }

    /// True when the client speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.rd.is_tls()
    }

    /// Take the plain socket back (to start TLS on it).
    pub(crate) fn take_plain(&mut self) -> Option<TcpStream> {
        let rd = std::mem::replace(&mut self.rd, NetRead::Detached);
        let wr = std::mem::replace(&mut self.wr, NetWrite::Detached);
        stream::reunite(rd, wr)
    }

    /// Use an encrypted stream from now on.
    pub(crate) fn set_tls(&mut self, tls: stream::Tls) {
        let (rd, wr) = stream::tls(tls);
        self.rd = rd;
        self.wr = wr;
    }

    /// Write everything composed in `out`.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.out.is_empty() {
            self.wr.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Send a FATAL error and flush; the caller then drops the connection.
    pub async fn fatal(&mut self, code: &str, message: &str) {
        self.fatal_detail(code, message, None).await
    }

    /// Send a FATAL error with a DETAIL and flush.
    pub async fn fatal_detail(&mut self, code: &str, message: &str, detail: Option<&str>) {
        reply::error(&mut self.out, Severity::Fatal, code, message, detail);
        let _ = self.flush().await;
    }

    /// Read one whole message during login (never used on the forwarding path) whose length
    /// word is at most `max_len`; a longer one is refused before its body is read.
    pub async fn next_message(&mut self, max_len: usize) -> Result<(u8, BytesMut), ClientError> {
        loop {
            if let Some(h) =
                framer::header(&self.buf).map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                if h.total - 1 > max_len {
                    return Err(ClientError::TooLong(h.total - 1));
                }
                if self.buf.len() >= h.total {
                    let mut msg = self.buf.split_to(h.total);
                    msg.advance(framer::HEADER_LEN);
                    return Ok((h.tag, msg));
                }
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Read more bytes into `buf`; 0 means the client closed.
    pub async fn read_more(&mut self) -> Result<usize, ClientError> {
        if self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
            self.buf = BytesMut::with_capacity(READ_CHUNK);
        }
        if self.out.is_empty() && self.out.capacity() > SHRINK_ABOVE {
            self.out = BytesMut::new();
        }
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        Ok(self.rd.read_buf(&mut self.buf).await?)
    }
}
