//! The front door (issue 11): client_login_timeout over the whole login phase, logins not
//! holding max_client_conn slots, sizes bounded as Postgres bounds them, and interception
//! that does not depend on a message's size. Against a real PostgreSQL.

mod support;

use std::io::Write;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pgherald::auth::ScramVerifier;
use pgherald::config::{AuthConfig, Config, PoolMode};
use support::herald::{self, Herald};
use support::postgres::{self, DEFAULT_DB, SCRAM_PASSWORD, SCRAM_USER, SUPERUSER};
use support::raw::{Msg, Raw};

/// Generous bound for "the connection closes": the mechanism under test is what closes it.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

fn users() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let scram = ScramVerifier::from_password("carol-pw", b"0123456789abcdef", 4096);
    writeln!(f, "\"alice\" \"alice-pw\"").unwrap();
    writeln!(f, "\"carol\" \"{scram}\"").unwrap();
    f
}

fn config(kind: &str, file: &tempfile::NamedTempFile, login_timeout: f64) -> Config {
    let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 2);
    cfg.auth = Some(AuthConfig {
        kind: kind.into(),
        file: Some(file.path().to_path_buf()),
    });
    cfg.client_login_timeout = login_timeout;
    cfg
}

/// A password message (`p`) with this body.
fn password_msg(body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(b'p');
    b.put_i32(body.len() as i32 + 4);
    b.put_slice(body);
    b.to_vec()
}

/// SASLInitialResponse choosing SCRAM-SHA-256 with this client-first message.
fn sasl_initial(first: &[u8]) -> Vec<u8> {
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first);
    password_msg(&body)
}

fn auth_code(m: &Msg) -> i32 {
    assert_eq!(m.tag, b'R', "expected an authentication request, got {m:?}");
    i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]])
}

/// Read until the connection closes; the messages seen on the way.
async fn until_closed(r: &mut Raw) -> Vec<Msg> {
    let mut out = Vec::new();
    while let Some(m) = r.recv_within(CLOSE_WAIT).await {
        out.push(m);
    }
    out
}

fn assert_login_timeout(msgs: &[Msg]) {
    let e = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("expected FATAL client_login_timeout, got {msgs:?}"));
    assert_eq!(e.field(b'S').as_deref(), Some("FATAL"));
    assert_eq!(e.field(b'C').as_deref(), Some("08P01"));
    assert_eq!(e.field(b'M').as_deref(), Some("client_login_timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_startup_is_closed_after_client_login_timeout() {
    let f = users();
    let h = Herald::start(config("md5", &f, 0.3)).await;
    // Nothing at all: closed without a word (the client speaks no protocol yet).
    let mut r = Raw::connect(h.port()).await;
    assert!(until_closed(&mut r).await.is_empty());
    // Half a startup packet: the same.
    let mut r = Raw::connect(h.port()).await;
    r.send(&[0, 0, 0, 40, 0, 3]).await;
    assert!(until_closed(&mut r).await.is_empty());
    // An SSLRequest answered, then silence.
    let mut r = Raw::connect(h.port()).await;
    r.send(&[0, 0, 0, 8, 4, 210, 22, 47]).await;
    assert_eq!(r.read_raw(1).await, b"N");
    assert!(until_closed(&mut r).await.is_empty());
    assert_eq!(h.app.logins.load(std::sync::atomic::Ordering::Acquire), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_md5_is_closed_after_client_login_timeout() {
    let f = users();
    let h = Herald::start(config("md5", &f, 0.3)).await;
    let mut r = Raw::connect(h.port()).await;
    r.startup(3, 0, &[("user", "alice"), ("database", DEFAULT_DB)])
        .await;
    let m = r.recv().await.expect("md5 request");
    assert_eq!(auth_code(&m), 5);
    assert_login_timeout(&until_closed(&mut r).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_scram_is_closed_after_client_login_timeout() {
    let f = users();
    let h = Herald::start(config("scram-sha-256", &f, 0.3)).await;
    let mut r = Raw::connect(h.port()).await;
    r.startup(3, 0, &[("user", "carol"), ("database", DEFAULT_DB)])
        .await;
    assert_eq!(auth_code(&r.recv().await.expect("SASL")), 10);
    r.send(&sasl_initial(b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL"))
        .await;
    assert_eq!(auth_code(&r.recv().await.expect("SASLContinue")), 11);
    // The client-final message never comes.
    assert_login_timeout(&until_closed(&mut r).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_logins_do_not_take_client_slots() {
    let f = users();
    let mut cfg = config("md5", &f, 60.0);
    cfg.max_client_conn = 3;
    let h = Herald::start(cfg).await;
    // max_client_conn stalled logins, each past its startup packet and stuck in md5.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut r = Raw::connect(h.port()).await;
        r.startup(3, 0, &[("user", "alice"), ("database", DEFAULT_DB)])
            .await;
        assert_eq!(auth_code(&r.recv().await.expect("md5 request")), 5);
        stalled.push(r);
    }
    // A real user still gets in.
    let c = h.connect("alice", Some("alice-pw"), DEFAULT_DB).await;
    c.simple_query("select 1").await.unwrap();
    // And the limit still holds for logged-in clients.
    let c2 = h.connect("alice", Some("alice-pw"), DEFAULT_DB).await;
    let c3 = h.connect("alice", Some("alice-pw"), DEFAULT_DB).await;
    let e = h
        .try_connect("alice", Some("alice-pw"), DEFAULT_DB)
        .await
        .expect_err("max_client_conn reached");
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("53300"));
    drop((c2, c3, stalled));
}

/// A StartupMessage of exactly `total` bytes (length word included).
fn startup_of_len(user: &str, total: usize) -> Vec<u8> {
    let fixed = 4 + 4 + "user\0".len() + user.len() + 1 + "application_name\0".len() + 1 + 1;
    let pad = "x".repeat(total - fixed);
    let mut b = BytesMut::new();
    b.put_i32(total as i32);
    b.put_i32(196608);
    for (k, v) in [("user", user), ("application_name", pad.as_str())] {
        b.put_slice(k.as_bytes());
        b.put_u8(0);
        b.put_slice(v.as_bytes());
        b.put_u8(0);
    }
    b.put_u8(0);
    assert_eq!(b.len(), total);
    b.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_packet_limit_is_postgres_own() {
    let pg = postgres::shared();
    let h = Herald::start(herald::config(pg, PoolMode::Transaction, 1)).await;
    for port in [pg.port, h.port()] {
        // 10,000 bytes of contents plus the length word: accepted.
        let mut r = Raw::connect(port).await;
        r.send(&startup_of_len(SUPERUSER, 10_004)).await;
        let msgs = r.until_ready().await;
        assert!(
            msgs.iter().all(|m| m.tag != b'E') && msgs.last().map(|m| m.tag) == Some(b'Z'),
            "port {port}: {msgs:?}"
        );
        // One byte more: Postgres logs "invalid length of startup packet" (08P01) and
        // closes the connection without a word (COMMERROR); so does pgherald.
        let mut r = Raw::connect(port).await;
        r.send(&startup_of_len(SUPERUSER, 10_005)).await;
        let msgs = until_closed(&mut r).await;
        assert!(msgs.is_empty(), "port {port}: {msgs:?}");
    }
}

/// Log in as `user` up to the SASL request, send a client-first message carrying `nonce`.
async fn scram_first(port: u16, user: &str, nonce: &str) -> Raw {
    let mut r = Raw::connect(port).await;
    r.startup(3, 0, &[("user", user), ("database", DEFAULT_DB)])
        .await;
    let m = r.recv().await.expect("SASL");
    assert_eq!(m.tag, b'R', "port {port}: {m:?}");
    assert_eq!(auth_code(&m), 10);
    r.send(&sasl_initial(format!("n,,n=,r={nonce}").as_bytes()))
        .await;
    r
}

fn assert_auth_failed(msgs: &[Msg], port: u16) {
    assert_eq!(msgs.len(), 1, "port {port}: {msgs:?}");
    assert_eq!(msgs[0].field(b'S').as_deref(), Some("FATAL"));
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("28P01"), "port {port}");
    assert_eq!(
        msgs[0].field(b'M'),
        Some(format!(
            "password authentication failed for user \"{SCRAM_USER}\""
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_messages_are_bounded_as_postgres_bounds_them() {
    let pg = postgres::shared();
    let scram = ScramVerifier::from_password(SCRAM_PASSWORD, b"0123456789abcdef", 4096);
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "\"{SCRAM_USER}\" \"{scram}\"").unwrap();
    let h = Herald::start(config("scram-sha-256", &f, 60.0)).await;
    for port in [pg.port, h.port()] {
        // A SASL message of 1,024 bytes (length word) is within Postgres's limit.
        let nonce = "n".repeat(1024 - 4 - 14 - 4 - "n,,n=,r=".len());
        let mut r = scram_first(port, SCRAM_USER, &nonce).await;
        let m = r.recv().await.expect("SASLContinue");
        assert_eq!(auth_code(&m), 11, "port {port}");
        let text = String::from_utf8_lossy(&m.body[4..]).into_owned();
        assert!(text.starts_with(&format!("r={nonce}")), "port {port}");
        // One byte more, or a 30 kB nonce: the login fails as a wrong password does.
        for n in [nonce.len() + 1, 30_000] {
            let mut r = scram_first(port, SCRAM_USER, &"n".repeat(n)).await;
            assert_auth_failed(&until_closed(&mut r).await, port);
        }
        // The same for an oversized client-final message.
        let mut r = scram_first(port, SCRAM_USER, "abc").await;
        assert_eq!(auth_code(&r.recv().await.expect("SASLContinue")), 11);
        r.send(&password_msg(&vec![b'c'; 30_000])).await;
        assert_auth_failed(&until_closed(&mut r).await, port);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_password_message_is_refused() {
    let f = users();
    let h = Herald::start(config("md5", &f, 60.0)).await;
    let mut r = Raw::connect(h.port()).await;
    r.startup(3, 0, &[("user", "alice"), ("database", DEFAULT_DB)])
        .await;
    assert_eq!(auth_code(&r.recv().await.expect("md5 request")), 5);
    let mut pw = vec![b'a'; 70_000];
    pw.push(0);
    r.send(&password_msg(&pw)).await;
    let msgs = until_closed(&mut r).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("08P01"));
}

/// `statement` followed by a comment that makes the Query `size` bytes of text.
fn padded(statement: &str, size: usize) -> String {
    let mut q = format!("{statement}; /* ");
    q.push_str(&"x".repeat(size - q.len() - 3));
    q.push_str(" */");
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interception_does_not_depend_on_query_size() {
    let h = Herald::start(herald::config(postgres::shared(), PoolMode::Transaction, 1)).await;
    let conn = h.conn_str(SUPERUSER, None, DEFAULT_DB);
    let mut listener = support::listen::connect(&conn).await;
    // A 300 KiB Query (above the size at which frames stream through) with a LISTEN in it.
    let big = padded("SELECT 1; LISTEN big_q", 300 * 1024);
    listener.client.batch_execute(&big).await.unwrap();
    let rows = listener
        .client
        .simple_query("SELECT pg_listening_channels()")
        .await
        .unwrap();
    assert!(rows.iter().any(|m| matches!(m,
        tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("big_q"))));
    let sender = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    sender.batch_execute("NOTIFY big_q, 'hello'").await.unwrap();
    let n = listener.next().await;
    assert_eq!((n.channel(), n.payload()), ("big_q", "hello"));
    // A big NOTIFY sent in a big Query, with its payload past Postgres's limit: 22023.
    let payload = "p".repeat(300 * 1024);
    let e = sender
        .batch_execute(&format!("NOTIFY big_q, '{payload}'"))
        .await
        .expect_err("payload too long");
    let db = e.as_db_error().expect("ErrorResponse");
    assert_eq!(db.code().code(), "22023");
    assert_eq!(db.message(), "payload string too long");
    // A big Parse (extended protocol) is intercepted too.
    let stmt = padded("NOTIFY big_q, 'extended'", 300 * 1024);
    sender.execute(stmt.as_str(), &[]).await.unwrap();
    let n = listener.next().await;
    assert_eq!(n.payload(), "extended");
}

/// A Bind above the size at which frames stream through is read whole when pgherald must
/// look at it, and behaves like a small one: a named statement re-prepared under pgherald's
/// name (transaction mode), an intercepted `pg_notify($1, $2)` (Postgres's 22023 for the
/// payload, the session unharmed), a statement rewritten to take the session's channels; in
/// both pool modes. A Bind of a plain unnamed statement still streams (`pooler.rs`'s 64 MB row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_bind_is_handled_like_a_small_one() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let h = Herald::start(herald::config(postgres::shared(), mode, 1)).await;
        let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
        let big = "b".repeat(300 * 1024);
        let st = c.prepare("SELECT length($1::text)").await.unwrap();
        let r = c.query_one(&st, &[&big]).await.unwrap();
        assert_eq!(r.get::<_, i32>(0), 300 * 1024, "{mode:?}");

        let conn = h.conn_str(SUPERUSER, None, DEFAULT_DB);
        let mut listener = support::listen::connect(&conn).await;
        listener.client.batch_execute("LISTEN big_b").await.unwrap();
        let notify = c.prepare("SELECT pg_notify($1, $2)").await.unwrap();
        let e = c
            .query(&notify, &[&"big_b", &big])
            .await
            .expect_err("payload too long");
        let db = e.as_db_error().expect("ErrorResponse");
        assert_eq!(
            (db.code().code(), db.message()),
            ("22023", "payload string too long"),
            "{mode:?}"
        );
        c.query(&notify, &[&"big_b", &"small"]).await.unwrap();
        let n = listener.next().await;
        assert_eq!((n.channel(), n.payload()), ("big_b", "small"), "{mode:?}");

        c.batch_execute("LISTEN big_c").await.unwrap();
        let st = c
            .prepare("SELECT length($1::text), c FROM pg_listening_channels() c")
            .await
            .unwrap();
        let r = c.query(&st, &[&big]).await.unwrap();
        assert_eq!(r.len(), 1, "{mode:?}");
        assert_eq!(
            (r[0].get::<_, i32>(0), r[0].get::<_, &str>(1)),
            (300 * 1024, "big_c"),
            "{mode:?}"
        );
    }
}
