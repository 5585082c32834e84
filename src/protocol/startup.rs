//! The untagged first packet a client sends: SSLRequest, GSSENCRequest, CancelRequest or
//! StartupMessage, and protocol version checks.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::ClientError;

/// Postgres's limit on a startup packet's contents (MAX_STARTUP_PACKET_LENGTH), not
/// counting the 4-byte length word.
pub const MAX_STARTUP_LEN: usize = 10_000;
const CANCEL_CODE: u32 = 80877102;
const SSL_CODE: u32 = 80877103;
const GSSENC_CODE: u32 = 80877104;

/// What the first packet asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// SSLRequest.
    Ssl,
    /// GSSENCRequest.
    GssEnc,
    /// CancelRequest with the key the client was given.
    Cancel {
        /// Process ID from BackendKeyData.
        pid: i32,
        /// Secret from BackendKeyData.
        secret: i32,
    },
    /// StartupMessage with protocol 3.x.
    Startup {
        /// Minor protocol version requested.
        minor: u16,
        /// Parameters in the order sent.
        params: Vec<(String, String)>,
    },
    /// A protocol major version we do not speak.
    Unsupported {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
}

/// Read and decode one startup-phase packet.
pub async fn read<R: AsyncRead + Unpin>(rd: &mut R) -> Result<StartupPacket, ClientError> {
    let len = match rd.read_u32().await {
        Ok(l) => l as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ClientError::Closed),
        Err(e) => return Err(e.into()),
    };
    if !(8..=MAX_STARTUP_LEN + 4).contains(&len) {
        return Err(ClientError::Protocol(
            "invalid length of startup packet".into(),
        ));
    }
    let mut body = vec![0u8; len - 4];
    rd.read_exact(&mut body).await?;
    decode(&body)
}

/// Decode a startup packet body (everything after the length word).
pub fn decode(body: &[u8]) -> Result<StartupPacket, ClientError> {
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_CODE => Ok(StartupPacket::Ssl),
        GSSENC_CODE => Ok(StartupPacket::GssEnc),
        CANCEL_CODE => {
            if rest.len() != 8 {
                return Err(ClientError::Protocol(
                    "invalid length of cancel request".into(),
                ));
            }
            Ok(StartupPacket::Cancel {
                pid: i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
                secret: i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
            })
        }
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != 3 {
                return Ok(StartupPacket::Unsupported { major, minor });
            }
            Ok(StartupPacket::Startup {
                minor,
                params: params(rest)?,
            })
        }
    }
}

fn params(mut b: &[u8]) -> Result<Vec<(String, String)>, ClientError> {
    let bad = || {
        ClientError::Protocol(
            "invalid startup packet layout: expected terminator as last byte".into(),
        )
    };
    let mut out = Vec::new();
    loop {
        let (key, rest) = crate::protocol::framer::cstr(b).ok_or_else(bad)?;
        if key.is_empty() {
            if !rest.is_empty() {
                return Err(bad());
            }
            return Ok(out);
        }
        let (value, rest) = crate::protocol::framer::cstr(rest).ok_or_else(bad)?;
        out.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        b = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_startup() {
        let mut b = 196608u32.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0bob\0database\0db\0\0");
        assert_eq!(
            decode(&b).unwrap(),
            StartupPacket::Startup {
                minor: 0,
                params: vec![
                    ("user".into(), "bob".into()),
                    ("database".into(), "db".into())
                ]
            }
        );
    }

    #[test]
    fn decodes_requests() {
        assert_eq!(decode(&SSL_CODE.to_be_bytes()).unwrap(), StartupPacket::Ssl);
        assert_eq!(
            decode(&GSSENC_CODE.to_be_bytes()).unwrap(),
            StartupPacket::GssEnc
        );
        let mut c = CANCEL_CODE.to_be_bytes().to_vec();
        c.extend_from_slice(&7i32.to_be_bytes());
        c.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            decode(&c).unwrap(),
            StartupPacket::Cancel { pid: 7, secret: 9 }
        );
        assert_eq!(
            decode(&(2u32 << 16).to_be_bytes()).unwrap(),
            StartupPacket::Unsupported { major: 2, minor: 0 }
        );
    }

    #[test]
    fn rejects_unterminated() {
        let mut b = 196608u32.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0bob");
        assert!(decode(&b).is_err());
    }
}
