//! One stream type for both sides: plain TCP or rustls, as an enum chosen once at login
//! (no boxed trait object per read). The plain arms call tokio's TCP halves directly.
//!
//! A TLS write completes only when its records have left rustls for the socket, so a
//! `write_all` that returned has put everything on the wire, as with plain TCP.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// An encrypted connection (either side).
pub type Tls = TlsStream<TcpStream>;

/// The read half of a connection.
#[derive(Debug)]
pub enum NetRead {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// rustls over TCP.
    Tls(ReadHalf<Tls>),
    /// Taken away while the connection is being upgraded.
    Detached,
}

/// The write half of a connection.
#[derive(Debug)]
pub enum NetWrite {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// rustls over TCP; `accepted` is a write rustls took whose records are still going out.
    Tls {
        /// The half.
        half: WriteHalf<Tls>,
        /// Bytes of the current write already inside rustls.
        accepted: Option<usize>,
    },
    /// Taken away while the connection is being upgraded.
    Detached,
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection is being upgraded")
}

/// Split a plain socket.
pub fn plain(stream: TcpStream) -> (NetRead, NetWrite) {
    let (rd, wr) = stream.into_split();
    (NetRead::Plain(rd), NetWrite::Plain(wr))
}

/// Split an encrypted socket.
pub fn tls(stream: Tls) -> (NetRead, NetWrite) {
    let (rd, wr) = tokio::io::split(stream);
    (
        NetRead::Tls(rd),
        NetWrite::Tls {
            half: wr,
            accepted: None,
        },
    )
}

/// Put plain halves back together (to start TLS on them); None if they are not plain.
pub fn reunite(rd: NetRead, wr: NetWrite) -> Option<TcpStream> {
    match (rd, wr) {
        (NetRead::Plain(r), NetWrite::Plain(w)) => r.reunite(w).ok(),
        _ => None,
    }
}

impl NetRead {
    /// True when the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, NetRead::Tls(_))
    }

    /// True when nothing is waiting to be read and the peer has not closed: an idle
    /// server connection that is still usable.
    pub fn idle_open(&mut self) -> bool {
        match self {
            NetRead::Plain(r) => {
                let mut probe = [0u8; 1];
                matches!(r.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            NetRead::Tls(r) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
                Pin::new(r).poll_read(&mut cx, &mut buf).is_pending()
            }
            NetRead::Detached => false,
        }
    }
}

impl NetWrite {
    /// Write without waiting, as `TcpStream::try_write`. An encrypted stream always says
    /// WouldBlock (the caller then takes its awaiting path).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            NetWrite::Plain(w) => w.try_write(buf),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Vectored `try_write`.
    pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            NetWrite::Plain(w) => w.try_write_vectored(bufs),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for NetRead {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetRead::Plain(r) => Pin::new(r).poll_read(cx, buf),
            NetRead::Tls(r) => Pin::new(r).poll_read(cx, buf),
            NetRead::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for NetWrite {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetWrite::Plain(w) => Pin::new(w).poll_write(cx, buf),
            NetWrite::Tls { half, accepted } => {
                let n = match *accepted {
                    Some(n) => n,
                    None => {
                        let n = ready!(Pin::new(&mut *half).poll_write(cx, buf))?;
                        *accepted = Some(n);
                        n
                    }
                };
                ready!(Pin::new(&mut *half).poll_flush(cx))?;
                *accepted = None;
                Poll::Ready(Ok(n))
            }
            NetWrite::Detached => Poll::Ready(Err(detached())),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetWrite::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            other => {
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &**b);
                Pin::new(other).poll_write(cx, first)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        matches!(self, NetWrite::Plain(_))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetWrite::Plain(w) => Pin::new(w).poll_flush(cx),
            NetWrite::Tls { half, .. } => Pin::new(half).poll_flush(cx),
            NetWrite::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetWrite::Plain(w) => Pin::new(w).poll_shutdown(cx),
            NetWrite::Tls { half, .. } => Pin::new(half).poll_shutdown(cx),
            NetWrite::Detached => Poll::Ready(Ok(())),
        }
    }
}
