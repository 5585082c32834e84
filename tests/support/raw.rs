//! A raw protocol client for tests that must see every backend message in order.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Type byte.
    pub tag: u8,
    /// Body after the length word.
    pub body: Vec<u8>,
}

impl Msg {
    /// A field (`C` code, `M` message, `S` severity) of an ErrorResponse/NoticeResponse.
    pub fn field(&self, code: u8) -> Option<String> {
        pgherald::protocol::framer::field(&self.body, code)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// A connection speaking the protocol by hand.
pub struct Raw {
    /// The socket.
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Open a TCP connection.
    pub async fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("tcp connect");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connect and log in with trust auth, reading up to the first ReadyForQuery.
    pub async fn login(port: u16, user: &str, db: &str) -> (Raw, Vec<Msg>) {
        let mut r = Raw::connect(port).await;
        r.startup(3, 0, &[("user", user), ("database", db)]).await;
        let msgs = r.until_ready().await;
        assert!(msgs.iter().all(|m| m.tag != b'E'), "login failed: {msgs:?}");
        (r, msgs)
    }

    /// Send a StartupMessage with the given protocol version.
    pub async fn startup(&mut self, major: u16, minor: u16, params: &[(&str, &str)]) {
        let mut body = Vec::new();
        body.extend_from_slice(&((major as u32) << 16 | minor as u32).to_be_bytes());
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        self.send(&msg).await;
    }

    /// Write raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Send a simple Query.
    pub async fn query(&mut self, sql: &str) {
        let mut b = BytesMut::new();
        frontend::query(sql, &mut b).expect("encode query");
        self.send(&b).await;
    }

    /// Read exactly `n` raw bytes (e.g. the answer to SSLRequest).
    pub async fn read_raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("timed out reading")
                    .expect("read");
            assert!(read > 0, "connection closed");
        }
        self.buf.split_to(n).to_vec()
    }

    /// Next message, or None if the connection closed; panics after `wait` without one.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return Some(Msg { tag, body });
                }
            }
            let read = tokio::time::timeout(wait, self.stream.read_buf(&mut self.buf))
                .await
                .expect("timed out waiting for a message");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Next message (10 s limit).
    pub async fn recv(&mut self) -> Option<Msg> {
        self.recv_within(Duration::from_secs(10)).await
    }

    /// Messages up to and including the next ReadyForQuery (or until the connection closes).
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// True if nothing arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        tokio::time::timeout(wait, self.stream.read_buf(&mut self.buf))
            .await
            .is_err()
    }
}
