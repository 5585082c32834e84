//! The NotificationResponse frame the hub builds once per notification and clones into
//! every listener's mailbox.

use bytes::{BufMut, Bytes, BytesMut};

/// Encodes a NotificationResponse: `'A'`, i32 length, i32 pid, channel `\0`, payload `\0`.
/// Returns None (and logs) for bytes that cannot travel in the message: an embedded NUL or a
/// length past i32.
pub(super) fn encode(pid: i32, channel: &[u8], payload: &[u8]) -> Option<Bytes> {
    let body = 4 + 4 + channel.len() + 1 + payload.len() + 1;
    let len = match i32::try_from(body) {
        Ok(len) if !channel.contains(&0) && !payload.contains(&0) => len,
        _ => {
            tracing::warn!(
                pid,
                "dropping unencodable notification (NUL byte or too long)"
            );
            return None;
        }
    };
    let mut buf = BytesMut::with_capacity(1 + body);
    buf.put_u8(b'A');
    buf.put_i32(len);
    buf.put_i32(pid);
    buf.put_slice(channel);
    buf.put_u8(0);
    buf.put_slice(payload);
    buf.put_u8(0);
    Some(buf.freeze())
}
