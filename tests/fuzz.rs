//! Structured fuzzing on stable Rust (issue 11): proptest generators of valid-then-corrupted
//! input for the framer, the startup packet, SCRAM and the LISTEN/NOTIFY classifier, then the
//! same against a running pgherald: corrupted client frame sequences, generated statements
//! compared with Postgres's own answers, and a hostile upstream server. A panic, a hang or
//! a pgherald that stops serving is a failure. Few cases by default; set
//! `PGHERALD_FUZZ_SECS` for a long run.

mod support;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pgherald::auth::{ScramServer, ScramVerifier};
use pgherald::protocol::{framer, startup};
use proptest::prelude::*;
use support::fuzz;

/// A mutation applied to a valid byte sequence.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite the byte at this position (modulo the length).
    Set(usize, u8),
    /// Cut the sequence here.
    Truncate(usize),
    /// Insert these bytes here.
    Insert(usize, Vec<u8>),
    /// Overwrite four bytes with this big-endian number (a length word, say).
    Word(usize, i32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (
            any::<usize>(),
            prop_oneof![
                Just(-1),
                Just(0),
                Just(3),
                Just(4),
                Just(0x3fff_ffff),
                any::<i32>()
            ]
        )
            .prop_map(|(i, w)| Mutation::Word(i, w)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize| {
            if bytes.is_empty() {
                0
            } else {
                i % (bytes.len() + 1)
            }
        };
        match m {
            Mutation::Set(i, b) => {
                if !bytes.is_empty() {
                    let i = i % bytes.len();
                    bytes[i] = *b;
                }
            }
            Mutation::Truncate(i) => {
                let i = at(*i);
                bytes.truncate(i);
            }
            Mutation::Insert(i, v) => {
                let i = at(*i);
                bytes.splice(i..i, v.iter().copied());
            }
            Mutation::Word(i, w) => {
                if bytes.len() >= 4 {
                    let i = i % (bytes.len() - 3);
                    bytes[i..i + 4].copy_from_slice(&w.to_be_bytes());
                }
            }
        }
    }
    bytes
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    assert!(framer::put(&mut b, tag, body));
    b.to_vec()
}

fn frames() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec(
        (
            prop::sample::select(b"QPBDESHCXdcfF".to_vec()),
            prop::collection::vec(any::<u8>(), 0..48),
        ),
        0..8,
    )
}

#[test]
fn framer_splits_valid_then_corrupted_sequences() {
    let strategy = (frames(), prop::collection::vec(mutation(), 0..3));
    fuzz::run(512, strategy, |(msgs, mutations)| {
        let valid: Vec<u8> = msgs.iter().flat_map(|(t, b)| frame(*t, b)).collect();
        // Valid: split back exactly.
        let mut rest = &valid[..];
        for (tag, body) in &msgs {
            let h = framer::header(rest).unwrap().unwrap();
            prop_assert_eq!(h.tag, *tag);
            prop_assert_eq!(framer::body(rest, h), &body[..]);
            rest = &rest[h.total..];
        }
        prop_assert!(rest.is_empty());
        // Corrupted: every step either waits, fails, or consumes a whole frame.
        let bad = apply(valid, &mutations);
        let mut rest = &bad[..];
        while let Ok(Some(h)) = framer::header(rest) {
            prop_assert!(h.total >= framer::HEADER_LEN);
            if rest.len() < h.total {
                break;
            }
            let _ = framer::fields(framer::body(rest, h)).count();
            rest = &rest[h.total..];
        }
        Ok(())
    });
}

fn startup_body(params: &[(String, String)]) -> Vec<u8> {
    let mut b = 196608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        b.extend_from_slice(k.as_bytes());
        b.push(0);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    b.push(0);
    b
}

#[test]
fn startup_packets_decode_or_fail_cleanly() {
    let params = prop::collection::vec(("[a-z_]{1,12}", "[ -~]{0,20}"), 0..5);
    let codes = prop::sample::select(vec![
        80877102u32,
        80877103,
        80877104,
        196608,
        196609,
        131072,
    ]);
    let strategy = (params, codes, prop::collection::vec(mutation(), 0..3));
    fuzz::run(512, strategy, |(params, code, mutations)| {
        let body = startup_body(&params);
        match startup::decode(&body) {
            Ok(startup::StartupPacket::Startup {
                minor: 0,
                params: got,
            }) => {
                prop_assert_eq!(got, params)
            }
            other => prop_assert!(false, "{other:?}"),
        }
        let mut other = code.to_be_bytes().to_vec();
        other.extend_from_slice(&body[4..]);
        let bad = apply(other, &mutations);
        if bad.len() >= 4 {
            let _ = startup::decode(&bad);
        }
        Ok(())
    });
}

#[test]
fn scram_server_survives_corrupted_messages() {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    let verifier = ScramVerifier::from_password("pw", b"0123456789abcdef", 4096);
    let strategy = (
        prop::collection::vec(mutation(), 0..3),
        prop::collection::vec(mutation(), 0..3),
    );
    fuzz::run(128, strategy, |(m1, m2)| {
        let mut server = ScramServer::new(verifier.clone());
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let first = apply(client.message().to_vec(), &m1);
        let Ok(server_first) = server.handle_client_first(&first) else {
            return Ok(());
        };
        if client.update(&server_first).is_err() {
            return Ok(());
        }
        let fin = apply(client.message().to_vec(), &m2);
        let untouched = m1.is_empty() && m2.is_empty();
        match server.handle_client_final(&fin) {
            Ok(v) => prop_assert!(client.finish(&v).is_ok()),
            Err(e) => prop_assert!(!untouched, "valid exchange failed: {e:?}"),
        }
        Ok(())
    });
}

/// Statements around LISTEN/UNLISTEN/NOTIFY/pg_notify, valid and not.
fn statement() -> impl Strategy<Value = String> {
    let space = prop::sample::select(vec![" ", "  ", "\n", "\t", " /* c */ ", " -- c\n", "/**/"]);
    let verb = prop::sample::select(vec![
        "LISTEN", "listen", "UNLISTEN", "Unlisten", "NOTIFY", "notify", "NoTiFy",
    ]);
    let channel = prop::sample::select(vec![
        "c".to_string(),
        "Chan_1".into(),
        "\"Quoted\"".into(),
        "\"a \"\" b\"".into(),
        "*".into(),
        "".into(),
        "5".into(),
        "select".into(),
        "x".repeat(70),
        "\"\"".into(),
        "U&\"d\\0061t\"".into(),
        "é".into(),
    ]);
    let payload = prop::sample::select(vec![
        "".to_string(),
        ", 'p'".into(),
        ", 'it''s'".into(),
        ", E'\\x41'".into(),
        ", $$dollar$$".into(),
        ", $t$x$t$".into(),
        ",".into(),
        ", 5".into(),
        ", 'a' 'b'".into(),
        ", NULL".into(),
        format!(", '{}'", "y".repeat(8001)),
        ", 'unterminated".into(),
    ]);
    let tail = prop::sample::select(vec!["", ";", "; ;", " extra", "; SELECT 1", ";;"]);
    let notify = (
        verb,
        space.clone(),
        channel.clone(),
        payload,
        space.clone(),
        tail.clone(),
    )
        .prop_map(|(v, s, c, p, s2, t)| format!("{v}{s}{c}{p}{s2}{t}"));
    let arg = prop::sample::select(vec![
        "'c'",
        "'C h'",
        "NULL",
        "5",
        "'x'::text",
        "''",
        "'p'",
        "E'\\n'",
        "$$d$$",
    ]);
    let pg_notify = (
        prop::sample::select(vec!["SELECT", "select", "SELECT *, 1 FROM (SELECT"]),
        prop::sample::select(vec!["pg_notify", "pg_catalog.pg_notify", "PG_NOTIFY"]),
        arg.clone(),
        arg,
        tail,
    )
        .prop_map(|(s, f, a, b, t)| {
            let close = if s.contains('(') { ") q" } else { "" };
            format!("{s} {f}({a}, {b}){close}{t}")
        });
    prop_oneof![3 => notify, 1 => pg_notify]
}

#[test]
fn classifier_never_panics_and_prefilter_has_no_false_negatives() {
    fuzz::run(1024, (statement(), any::<bool>()), |(sql, scs)| {
        let stmts = pgherald::sql::classify(&sql, scs);
        for st in &stmts {
            prop_assert!(st.range.end <= sql.len());
            let intercepted = matches!(
                st.kind,
                pgherald::sql::Kind::Listen { .. }
                    | pgherald::sql::Kind::Unlisten { .. }
                    | pgherald::sql::Kind::UnlistenAll
                    | pgherald::sql::Kind::Notify { .. }
                    | pgherald::sql::Kind::PgNotify { .. }
            );
            if intercepted {
                prop_assert!(pgherald::sql::prefilter(sql.as_bytes(), false), "{sql}");
            }
        }
        Ok(())
    });
}

#[path = "fuzz/live.rs"]
mod live;

/// Generous bound for one fuzz case against a running pgherald: exceeding it is a hang.
pub const CASE_WAIT: Duration = Duration::from_secs(30);

/// Frames for the live tests: a few well-formed requests, then arbitrary ones.
pub fn client_frames() -> impl Strategy<Value = Vec<u8>> {
    let valid = prop::sample::select(vec![
        frame(b'Q', b"SELECT 1\0"),
        frame(b'Q', b"LISTEN fz; NOTIFY fz, 'x'\0"),
        frame(b'Q', b"BEGIN; NOTIFY fz; COMMIT\0"),
        frame(b'P', b"\0SELECT pg_notify('fz','y')\0\0\0"),
        frame(b'B', b"\0\0\0\0\0\0\0\0"),
        frame(b'E', b"\0\0\0\0\0"),
        frame(b'S', b""),
        frame(b'H', b""),
        frame(b'D', b"S\0"),
        frame(b'C', b"S\0"),
    ]);
    (
        prop::collection::vec(valid, 0..6),
        prop::collection::vec(mutation(), 0..3),
    )
        .prop_map(|(v, m)| apply(v.concat(), &m))
}

/// Encode a backend message.
pub fn backend(tag: u8, body: impl AsRef<[u8]>) -> Vec<u8> {
    frame(tag, body.as_ref())
}

/// `name\0value\0` for ParameterStatus.
pub fn param(name: &str, value: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_slice(name.as_bytes());
    b.put_u8(0);
    b.put_slice(value.as_bytes());
    b.put_u8(0);
    backend(b'S', b)
}
