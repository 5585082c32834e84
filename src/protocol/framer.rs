//! Header-only framing of regular protocol messages (1-byte tag, 4-byte length).
//!
//! Nothing here copies or decodes a body: callers look at the tag and length, inspect
//! the few bodies they care about in place, and forward the rest as byte runs.

use bytes::{Buf, BytesMut};

/// Size of a regular message header: tag + length.
pub const HEADER_LEN: usize = 5;

/// Largest message length pgherald accepts (Postgres's own limit is 1 GB for most).
pub const MAX_MESSAGE_LEN: usize = 0x4000_0000 + 64;

/// A message header found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type byte.
    pub tag: u8,
    /// Whole message size in bytes, header included.
    pub total: usize,
}

/// Framing failure: the peer sent a length that cannot be right.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid message length {len} for message type {tag:?}")]
pub struct FrameError {
    /// Tag byte of the bad message.
    pub tag: char,
    /// Declared length.
    pub len: i64,
}

/// Read the header at the front of `buf`, if five bytes are there.
#[inline]
pub fn header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as i64;
    if len < 4 || len as usize > MAX_MESSAGE_LEN {
        return Err(FrameError {
            tag: buf[0] as char,
            len,
        });
    }
    Ok(Some(Header {
        tag: buf[0],
        total: len as usize + 1,
    }))
}

/// The body of a complete message at the front of `buf` (which must hold it whole).
#[inline]
pub fn body(buf: &[u8], h: Header) -> &[u8] {
    &buf[HEADER_LEN..h.total]
}

/// Append a whole message (header, then `body`) to `out`; false, appending nothing, when
/// `body` is too long to frame.
pub fn put(out: &mut BytesMut, tag: u8, body: &[u8]) -> bool {
    let Some(len) = body
        .len()
        .checked_add(4)
        .filter(|n| *n <= MAX_MESSAGE_LEN)
        .and_then(|n| i32::try_from(n).ok())
    else {
        return false;
    };
    out.reserve(HEADER_LEN + body.len());
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    true
}

/// Read a NUL-terminated string at the front of `b`, returning it and the rest.
pub fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, b)?;
    Some((&b[..end], &b[end + 1..]))
}

/// Drop `n` bytes from the front of a buffer (after they were forwarded).
#[inline]
pub fn consume(buf: &mut BytesMut, n: usize) {
    buf.advance(n);
}

/// Fields of an ErrorResponse or NoticeResponse body: (code, value) pairs.
pub fn fields(mut body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&code, rest) = body.split_first()?;
        if code == 0 {
            return None;
        }
        let (value, rest) = cstr(rest)?;
        body = rest;
        Some((code, value))
    })
}

/// The value of one field of an ErrorResponse/NoticeResponse body.
pub fn field(body: &[u8], code: u8) -> Option<&[u8]> {
    fields(body).find(|(c, _)| *c == code).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(header(b"Z\0\0\0").unwrap(), None);
        let h = header(b"Z\0\0\0\x05I").unwrap().unwrap();
        assert_eq!((h.tag, h.total), (b'Z', 6));
        assert_eq!(body(b"Z\0\0\0\x05I", h), b"I");
    }

    #[test]
    fn bad_lengths_rejected() {
        assert!(header(b"Q\0\0\0\x03").is_err());
        assert!(header(b"Q\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn error_fields() {
        let b = b"SFATAL\0C57P01\0Mbye\0\0";
        assert_eq!(field(b, b'C'), Some(&b"57P01"[..]));
        assert_eq!(field(b, b'M'), Some(&b"bye"[..]));
        assert_eq!(field(b, b'D'), None);
        assert_eq!(field(b"SFATAL", b'C'), None);
    }
}
