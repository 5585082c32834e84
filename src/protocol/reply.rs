//! Encoders for the messages pgherald writes itself (built on pgwire's message types).
//!
//! Forwarded traffic never goes through here; these are for login, errors pgherald raises,
//! and (later) the replies to intercepted statements.

use bytes::BytesMut;
use pgwire::messages::data::{
    DataRow, FieldDescription, NoData, ParameterDescription, RowDescription,
};
use pgwire::messages::extendedquery::{BindComplete, CloseComplete, ParseComplete};
use pgwire::messages::response::{
    CommandComplete, ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};
use pgwire::messages::Message;

use super::origin::{self, Stage};

/// Type OID of `text`.
pub const TEXT_OID: u32 = 25;
/// Type OID of `void`.
pub const VOID_OID: u32 = 2278;

/// Append one pgwire message. Encoding into memory fails only past pgwire's size limits;
/// such a message is dropped whole (nothing of it stays in `buf`) and logged.
fn put<M: Message>(buf: &mut BytesMut, m: &M) {
    let before = buf.len();
    if let Err(e) = m.encode(buf) {
        buf.truncate(before);
        tracing::error!("encoding a reply failed: {e}");
    }
}

/// Severity of an error pgherald raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement fails; the session goes on.
    Error,
    /// The session ends after this message.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// ErrorResponse with severity, SQLSTATE and message (and optional detail).
pub fn error(buf: &mut BytesMut, sev: Severity, code: &str, message: &str, detail: Option<&str>) {
    let mut fields = vec![
        (b'S', sev.as_str().to_string()),
        (b'V', sev.as_str().to_string()),
        (b'C', code.to_string()),
        (b'M', message.to_string()),
    ];
    if let Some(d) = detail {
        fields.push((b'D', d.to_string()));
    }
    push_origin(&mut fields, code, message);
    put(buf, &ErrorResponse::new(fields));
}

/// Postgres 15's `F`, `L`, `R` for this error or notice, last as Postgres sends them.
fn push_origin(fields: &mut Vec<(u8, String)>, code: &str, message: &str) {
    if let Some(o) = origin::of(code, message.as_bytes(), Stage::Query) {
        fields.push((b'F', o.file.to_string()));
        fields.push((b'L', o.line.to_string()));
        fields.push((b'R', o.routine.to_string()));
    }
}

/// NoticeResponse (severity NOTICE or WARNING).
pub fn notice(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    notice_full(buf, severity, code, message, None, None);
}

/// ReadyForQuery with the given status byte (`I`, `T` or `E`).
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let s = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    put(buf, &ReadyForQuery::new(s));
}

/// CommandComplete with a tag such as `LISTEN`.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    put(buf, &CommandComplete::new(tag.to_string()));
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put(
        buf,
        &ParameterStatus::new(name.to_string(), value.to_string()),
    );
}

/// BackendKeyData with pgherald's virtual key.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    put(buf, &BackendKeyData::new(pid, SecretKey::I32(secret)));
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    put(buf, &Authentication::Ok);
}

/// AuthenticationMD5Password with a salt.
pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    put(buf, &Authentication::MD5Password(salt.to_vec()));
}

/// AuthenticationSASL offering SCRAM-SHA-256.
pub fn auth_sasl(buf: &mut BytesMut, plus: bool) {
    let mut mechanisms = Vec::with_capacity(2);
    if plus {
        mechanisms.push("SCRAM-SHA-256-PLUS".to_string());
    }
    mechanisms.push("SCRAM-SHA-256".to_string());
    put(buf, &Authentication::SASL(mechanisms));
}

/// AuthenticationSASLContinue. Framed here rather than by pgwire, whose limit for
/// Authentication messages is below what a client's SCRAM nonce can make it (Postgres
/// answers a client-first message of any accepted size).
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) -> bool {
    auth_sasl_data(buf, 11, data)
}

/// AuthenticationSASLFinal.
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) -> bool {
    auth_sasl_data(buf, 12, data)
}

fn auth_sasl_data(buf: &mut BytesMut, code: i32, data: &[u8]) -> bool {
    let mut body = Vec::with_capacity(4 + data.len());
    body.extend_from_slice(&code.to_be_bytes());
    body.extend_from_slice(data);
    crate::protocol::framer::put(buf, b'R', &body)
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_` options given.
pub fn negotiate_protocol_version(buf: &mut BytesMut, unsupported: Vec<String>) {
    put(buf, &NegotiateProtocolVersion::new(0, unsupported));
}

/// One result column pgherald describes itself.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// Type OID.
    pub type_oid: u32,
    /// Type length (`typlen`).
    pub type_size: i16,
}

/// The `pg_notify` result column: void, typlen 4.
pub const PG_NOTIFY_COLUMN: Column = Column {
    name: "pg_notify",
    type_oid: VOID_OID,
    type_size: 4,
};

/// The `pg_listening_channels` result column: text, typlen -1.
pub const LISTENING_CHANNELS_COLUMN: Column = Column {
    name: "pg_listening_channels",
    type_oid: TEXT_OID,
    type_size: -1,
};

/// RowDescription of one column in the given format (0 text, 1 binary).
pub fn row_description(buf: &mut BytesMut, col: Column, format: i16) {
    put(
        buf,
        &RowDescription::new(vec![FieldDescription::new(
            col.name.to_string(),
            0,
            0,
            col.type_oid,
            col.type_size,
            -1,
            format,
        )]),
    );
}

/// DataRow of one non-NULL value.
pub fn data_row(buf: &mut BytesMut, value: &[u8]) {
    let mut data = BytesMut::with_capacity(4 + value.len());
    data.extend_from_slice(&(value.len() as i32).to_be_bytes());
    data.extend_from_slice(value);
    put(buf, &DataRow::new(data, 1));
}

/// ParameterDescription.
pub fn parameter_description(buf: &mut BytesMut, types: &[u32]) {
    put(buf, &ParameterDescription::new(types.to_vec()));
}

/// NoData.
pub fn no_data(buf: &mut BytesMut) {
    put(buf, &NoData::new());
}

/// ParseComplete.
pub fn parse_complete(buf: &mut BytesMut) {
    put(buf, &ParseComplete::new());
}

/// BindComplete.
pub fn bind_complete(buf: &mut BytesMut) {
    put(buf, &BindComplete::new());
}

/// CloseComplete.
pub fn close_complete(buf: &mut BytesMut) {
    put(buf, &CloseComplete::new());
}

/// NotificationResponse (`A`) with channel and payload already in the client's encoding.
/// Neither may contain a NUL byte (they come from text Postgres would accept).
pub fn notification(buf: &mut BytesMut, pid: i32, channel: &[u8], payload: &[u8]) {
    let len = 4 + 4 + channel.len() + 1 + payload.len() + 1;
    buf.reserve(1 + len);
    buf.extend_from_slice(b"A");
    buf.extend_from_slice(&(len as i32).to_be_bytes());
    buf.extend_from_slice(&pid.to_be_bytes());
    buf.extend_from_slice(channel);
    buf.extend_from_slice(&[0]);
    buf.extend_from_slice(payload);
    buf.extend_from_slice(&[0]);
}

/// ErrorResponse (`E`) or NoticeResponse (`N`) from (field code, value) pairs whose values
/// are already in the client's encoding (for messages quoting the client's own text).
/// Postgres 15's `F`, `L`, `R` are added unless `fields` has them.
pub fn fields(buf: &mut BytesMut, tag: u8, fields: &[(u8, &[u8])]) {
    let get = |k: u8| fields.iter().find(|(c, _)| *c == k).map(|(_, v)| *v);
    let found = match (get(b'F'), get(b'C'), get(b'M')) {
        (None, Some(code), Some(message)) => std::str::from_utf8(code)
            .ok()
            .and_then(|code| origin::of(code, message, Stage::Query)),
        _ => None,
    };
    let mut all = fields.to_vec();
    if let Some(o) = &found {
        all.push((b'F', o.file.as_bytes()));
        all.push((b'L', o.line.as_bytes()));
        all.push((b'R', o.routine.as_bytes()));
    }
    let fields = &all[..];
    let len = 4 + fields.iter().map(|(_, v)| 1 + v.len() + 1).sum::<usize>() + 1;
    buf.reserve(1 + len);
    buf.extend_from_slice(&[tag]);
    buf.extend_from_slice(&(len as i32).to_be_bytes());
    for (code, value) in fields {
        buf.extend_from_slice(&[*code]);
        buf.extend_from_slice(value);
        buf.extend_from_slice(&[0]);
    }
    buf.extend_from_slice(&[0]);
}

/// NoticeResponse with optional hint and position, as the lexer raises them.
pub fn notice_full(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    hint: Option<&str>,
    position: Option<u32>,
) {
    let mut fields = vec![
        (b'S', severity.to_string()),
        (b'V', severity.to_string()),
        (b'C', code.to_string()),
        (b'M', message.to_string()),
    ];
    if let Some(h) = hint {
        fields.push((b'H', h.to_string()));
    }
    if let Some(p) = position {
        fields.push((b'P', p.to_string()));
    }
    push_origin(&mut fields, code, message);
    put(buf, &NoticeResponse::new(fields));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::framer;

    #[test]
    fn error_roundtrips_through_framer() {
        let mut b = BytesMut::new();
        error(
            &mut b,
            Severity::Fatal,
            "3D000",
            "database \"x\" does not exist",
            None,
        );
        let h = framer::header(&b).unwrap().unwrap();
        assert_eq!((h.tag, h.total), (b'E', b.len()));
        let body = framer::body(&b, h);
        assert_eq!(framer::field(body, b'C'), Some(&b"3D000"[..]));
        assert_eq!(framer::field(body, b'S'), Some(&b"FATAL"[..]));
    }

    #[test]
    fn notification_and_raw_fields_bytes() {
        let mut b = BytesMut::new();
        notification(&mut b, 0x01020304, b"ch", b"caf\xe9");
        assert_eq!(&b[..], b"A\0\0\0\x10\x01\x02\x03\x04ch\0caf\xe9\0");
        let mut b = BytesMut::new();
        fields(&mut b, b'N', &[(b'S', b"NOTICE"), (b'M', b"x\xe9")]);
        let h = framer::header(&b).unwrap().unwrap();
        assert_eq!((h.tag, h.total), (b'N', b.len()));
        assert_eq!(
            framer::field(framer::body(&b, h), b'M'),
            Some(&b"x\xe9"[..])
        );
    }

    #[test]
    fn ready_for_query_bytes() {
        let mut b = BytesMut::new();
        ready_for_query(&mut b, b'T');
        assert_eq!(&b[..], b"Z\0\0\0\x05T");
    }
}
