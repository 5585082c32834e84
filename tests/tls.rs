//! TLS on both sides through real components: psql and tokio-postgres (rustls) clients
//! with certificates made in the test, pgherald in the middle, and the test PostgreSQL
//! with `ssl = on` and its own certificate.

mod support;

use std::path::Path;
use std::sync::Arc;

use pgherald::config::{Config, PoolMode};
use pgherald::tls::SslMode;
use support::herald::{self, Herald};
use support::postgres::{self, DEFAULT_DB, SUPERUSER};
use support::tls::{self as pki, Ca, Leaf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Certificates shared by the tests of this binary, and the server with TLS on.
struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
    other_ca: Ca,
    /// pgherald's certificate for clients: localhost and 127.0.0.1.
    herald: Leaf,
    /// Same names, expired.
    herald_expired: Leaf,
    /// A client certificate with CN u_trust.
    client: Leaf,
    /// A client certificate from the other CA.
    client_other: Leaf,
}

async fn pki() -> &'static Pki {
    static PKI: tokio::sync::OnceCell<Pki> = tokio::sync::OnceCell::const_new();
    PKI.get_or_init(|| async {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "test-ca");
        let other_ca = Ca::new(dir.path(), "other-ca");
        let herald = ca.issue("herald", "pgherald", &["localhost", "127.0.0.1"], false);
        let herald_expired = ca.issue("expired", "pgherald", &["localhost", "127.0.0.1"], true);
        let client = ca.issue("client", "u_trust", &[], false);
        let client_other = other_ca.issue("client-other", "u_trust", &[], false);
        // The server's certificate names only "localhost", so 127.0.0.1 is a wrong host name.
        let server = ca.issue("postgres", "postgres", &["localhost"], false);
        pki::enable_postgres_tls(postgres::shared(), &server).await;
        Pki {
            _dir: dir,
            ca,
            other_ca,
            herald,
            herald_expired,
            client,
            client_other,
        }
    })
    .await
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// A pgherald with client TLS in `mode` using `leaf`, servers over plain TCP.
fn client_tls_config(mode: SslMode, leaf: &Leaf, ca: &Ca) -> Config {
    let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 2);
    cfg.client_tls_sslmode = mode;
    cfg.client_tls_cert_file = Some(leaf.cert_file.clone());
    cfg.client_tls_key_file = Some(leaf.key_file.clone());
    cfg.client_tls_ca_file = Some(ca.pem_file.clone());
    cfg
}

/// Run psql with a connection string; (success, stdout, stderr).
async fn psql(conn: String, sql: &'static str) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("psql")
            .args([conn.as_str(), "-XAtqc", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("run psql");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    })
    .await
    .unwrap()
}

fn conn(h: &Herald, host: &str, extra: &str) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user={SUPERUSER} dbname={DEFAULT_DB} {extra}",
        h.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verify_full_through_pgherald() {
    let k = pki().await;
    let h = Herald::start(client_tls_config(SslMode::Require, &k.herald, &k.ca)).await;
    let extra = format!("sslmode=verify-full sslrootcert={}", p(&k.ca.pem_file));
    let (ok, out, err) = psql(conn(&h, "localhost", &extra), "select 'tls:' || 1").await;
    assert!(ok, "psql failed: {err}");
    assert_eq!(out, "tls:1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_plaintext_with_pgbouncers_error() {
    let k = pki().await;
    let h = Herald::start(client_tls_config(SslMode::Require, &k.herald, &k.ca)).await;
    let (ok, _, err) = psql(conn(&h, "127.0.0.1", "sslmode=disable"), "select 1").await;
    assert!(!ok);
    assert!(err.ends_with("FATAL:  SSL required"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_certificate_failures() {
    let k = pki().await;
    let h = Herald::start(client_tls_config(SslMode::Require, &k.herald, &k.ca)).await;
    // Wrong CA.
    let extra = format!(
        "sslmode=verify-full sslrootcert={}",
        p(&k.other_ca.pem_file)
    );
    let (ok, _, err) = psql(conn(&h, "localhost", &extra), "select 1").await;
    assert!(!ok);
    assert!(
        err.ends_with("SSL error: certificate verify failed"),
        "{err}"
    );
    // Wrong host name.
    let extra = format!("sslmode=verify-full sslrootcert={}", p(&k.ca.pem_file));
    let (ok, _, err) = psql(conn(&h, "db.example", &extra), "select 1").await;
    assert!(!ok);
    assert!(
        err.contains("server certificate for \"localhost\" (and 1 other name) does not match host name \"db.example\""),
        "{err}"
    );
    // Expired certificate.
    let h = Herald::start(client_tls_config(
        SslMode::Require,
        &k.herald_expired,
        &k.ca,
    ))
    .await;
    let (ok, _, err) = psql(conn(&h, "localhost", &extra), "select 1").await;
    assert!(!ok);
    assert!(
        err.ends_with("SSL error: certificate verify failed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_wants_a_client_certificate() {
    let k = pki().await;
    let h = Herald::start(client_tls_config(SslMode::VerifyFull, &k.herald, &k.ca)).await;
    let base = format!("sslmode=verify-full sslrootcert={}", p(&k.ca.pem_file));
    let (ok, _, err) = psql(conn(&h, "localhost", &base), "select 1").await;
    assert!(!ok, "no client certificate must be refused");
    assert!(
        err.contains("SSL error: tlsv13 alert certificate required"),
        "{err}"
    );
    let other = format!(
        "{base} sslcert={} sslkey={}",
        p(&k.client_other.cert_file),
        p(&k.client_other.key_file)
    );
    let (ok, _, err) = psql(conn(&h, "localhost", &other), "select 1").await;
    assert!(!ok, "a certificate from another CA must be refused");
    assert!(err.contains("SSL error: tlsv1 alert unknown ca"), "{err}");
    let good = format!(
        "{base} sslcert={} sslkey={}",
        p(&k.client.cert_file),
        p(&k.client.key_file)
    );
    let (ok, out, err) = psql(conn(&h, "localhost", &good), "select 7").await;
    assert!(ok, "{err}");
    assert_eq!(out, "7");
}

/// Postgres 17's `sslnegotiation=direct`: a ClientHello as the first byte, ALPN postgresql.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn() {
    let k = pki().await;
    let h = Herald::start(client_tls_config(SslMode::Require, &k.herald, &k.ca)).await;
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki::client_config(&k.ca.pem_file, true));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let mut startup = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", SUPERUSER), ("database", DEFAULT_DB)],
        &mut startup,
    )
    .unwrap();
    tls.write_all(&startup).await.unwrap();
    let mut tag = [0u8; 1];
    tls.read_exact(&mut tag).await.unwrap();
    assert_eq!(tag[0], b'R', "AuthenticationOk expected over direct TLS");
    // Without ALPN a direct TLS client is refused, as Postgres refuses it.
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki::client_config(&k.ca.pem_file, false));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(&startup).await.unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "no answer without ALPN: {rest:?}");
}

/// A relay between client and pgherald that records every byte the client sends and
/// receives.
async fn recording_relay(
    to: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(to).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let (r1, r2) = (rec.clone(), rec.clone());
            tokio::spawn(async move {
                let mut b = vec![0u8; 16384];
                while let Ok(n) = cr.read(&mut b).await {
                    if n == 0 || sw.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                    r1.lock().unwrap().extend_from_slice(&b[..n]);
                }
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let mut b = vec![0u8; 16384];
                while let Ok(n) = sr.read(&mut b).await {
                    if n == 0 || cw.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                    r2.lock().unwrap().extend_from_slice(&b[..n]);
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    (addr, seen)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// tokio-postgres over rustls through pgherald: LISTEN/NOTIFY works, and a recording relay
/// in between sees no startup parameter, password, statement or payload in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_rustls_listen_notify_nothing_in_clear() {
    use futures_util::StreamExt;
    let k = pki().await;
    let h = Herald::start(client_tls_config(SslMode::Require, &k.herald, &k.ca)).await;
    let (relay, seen) = recording_relay(h.addr).await;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
        (*pki::client_config(&k.ca.pem_file, false)).clone(),
    );
    let conn_str = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={SUPERUSER} dbname={DEFAULT_DB} password=sekrit-pw application_name=clear-app-name sslmode=prefer",
        relay.port()
    );
    let (listener, conn) = tokio_postgres::connect(&conn_str, tls.clone())
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut conn = conn;
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n);
            }
        }
    });
    listener
        .batch_execute("LISTEN secret_channel")
        .await
        .unwrap();
    let (notifier, conn) = tokio_postgres::connect(&conn_str, tls).await.unwrap();
    tokio::spawn(conn);
    notifier
        .batch_execute("NOTIFY secret_channel, 'payload-in-the-clear?'")
        .await
        .unwrap();
    let n = rx.recv().await.unwrap();
    assert_eq!(n.channel(), "secret_channel");
    assert_eq!(n.payload(), "payload-in-the-clear?");
    let bytes = seen.lock().unwrap().clone();
    assert!(bytes.len() > 1000, "the relay saw the traffic");
    for clear in [
        &b"clear-app-name"[..],
        b"sekrit-pw",
        SUPERUSER.as_bytes(),
        b"secret_channel",
        b"payload-in-the-clear",
        b"LISTEN",
    ] {
        assert!(
            !contains(&bytes, clear),
            "{:?} travelled in clear",
            String::from_utf8_lossy(clear)
        );
    }
}

/// psql with `sslmode=verify-full channel_binding=require` through pgherald (SCRAM-SHA-256-PLUS
/// towards the client), and pgherald logs in to Postgres over verified TLS with
/// SCRAM-SHA-256-PLUS as the SCRAM role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_channel_binding_require_end_to_end() {
    use std::io::Write;
    use support::postgres::{SCRAM_PASSWORD, SCRAM_USER};
    let k = pki().await;
    let pg = postgres::shared();
    let mut users = tempfile::NamedTempFile::new().unwrap();
    writeln!(users, "\"{SCRAM_USER}\" \"{SCRAM_PASSWORD}\"").unwrap();
    let mut cfg = client_tls_config(SslMode::Require, &k.herald, &k.ca);
    cfg.upstream = Some(format!(
        "postgres://localhost:{}/?sslmode=verify-full&sslrootcert={}",
        pg.port,
        p(&k.ca.pem_file)
    ));
    cfg.auth = Some(pgherald::config::AuthConfig {
        kind: "scram-sha-256".into(),
        file: Some(users.path().to_path_buf()),
    });
    let h = Herald::start(cfg).await;
    let c = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={SCRAM_USER} password={SCRAM_PASSWORD} dbname={DEFAULT_DB} \
         sslmode=verify-full sslrootcert={} channel_binding=require",
        h.port(),
        p(&k.ca.pem_file)
    );
    let (ok, out, err) = psql(
        c,
        "select ssl::text from pg_stat_ssl where pid = pg_backend_pid()",
    )
    .await;
    assert!(ok, "psql failed: {err}");
    assert_eq!(out, "true", "pgherald's server connection is TLS too");
}

/// `auth_type = cert`: the verified client certificate's CN is the user name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_auth_takes_the_user_from_the_certificate() {
    let k = pki().await;
    let mut cfg = client_tls_config(SslMode::VerifyFull, &k.herald, &k.ca);
    cfg.auth = Some(pgherald::config::AuthConfig {
        kind: "cert".into(),
        file: None,
    });
    let h = Herald::start(cfg).await;
    let tls = format!(
        "sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        p(&k.ca.pem_file),
        p(&k.client.cert_file),
        p(&k.client.key_file)
    );
    let as_user = |user: &str| {
        format!(
            "host=localhost hostaddr=127.0.0.1 port={} user={user} dbname={DEFAULT_DB} {tls}",
            h.port()
        )
    };
    let (ok, out, err) = psql(as_user("u_trust"), "select 'cert ok'").await;
    assert!(ok, "{err}");
    assert_eq!(out, "cert ok");
    let (ok, _, err) = psql(as_user(SUPERUSER), "select 1").await;
    assert!(!ok);
    assert!(
        err.ends_with("FATAL:  certificate authentication failed for user \"postgres\""),
        "{err}"
    );
}

/// GSSENCRequest stays `N` with TLS on; garbage after `S` closes that connection only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_refused_and_garbage_after_sslrequest_closes_only_that_connection() {
    let k = pki().await;
    let h = Herald::start(client_tls_config(SslMode::Prefer, &k.herald, &k.ca)).await;
    let request = |code: u32| {
        let mut b = 8u32.to_be_bytes().to_vec();
        b.extend_from_slice(&code.to_be_bytes());
        b
    };
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&request(80877104)).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    s.write_all(&request(80877103)).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'S');
    s.write_all(b"this is not a TLS ClientHello at all\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(
        !contains(&rest, b"R\0\0\0"),
        "no login after garbage: {rest:?}"
    );
    // Others are unaffected.
    let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    c.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reads_renewed_certificate_files() {
    // The certificate file is replaced in place (same path, as certbot and cert-manager do),
    // and RELOAD makes new handshakes use it.
    let k = pki().await;
    let dir = tempfile::tempdir().unwrap();
    let live = Leaf {
        cert_file: dir.path().join("live.crt"),
        key_file: dir.path().join("live.key"),
    };
    let install = |from: &Leaf| {
        std::fs::copy(&from.cert_file, &live.cert_file).unwrap();
        std::fs::copy(&from.key_file, &live.key_file).unwrap();
    };
    install(&k.herald_expired);
    let mut cfg = client_tls_config(SslMode::Require, &live, &k.ca);
    cfg.admin_users = SUPERUSER.into();
    let h = Herald::start(cfg).await;
    let verify = format!("sslmode=verify-full sslrootcert={}", p(&k.ca.pem_file));
    let (ok, _, err) = psql(conn(&h, "localhost", &verify), "select 1").await;
    assert!(!ok, "an expired certificate must fail verify-full");
    install(&k.herald);
    let console = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={SUPERUSER} dbname=pgbouncer sslmode=require",
        h.port()
    );
    let (ok, _, err) = psql(console, "RELOAD").await;
    assert!(ok, "RELOAD failed: {err}");
    let (ok, out, err) = psql(conn(&h, "localhost", &verify), "select 'renewed'").await;
    assert!(
        ok,
        "the renewed certificate must be used after RELOAD: {err}"
    );
    assert_eq!(out, "renewed");
    // A certificate file that no longer loads fails the reload and keeps the running one.
    std::fs::write(&live.cert_file, "not a certificate").unwrap();
    let console = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={SUPERUSER} dbname=pgbouncer sslmode=require",
        h.port()
    );
    let (ok, _, err) = psql(console, "RELOAD").await;
    assert!(!ok && err.contains("RELOAD failed"), "{err}");
    let (ok, _, err) = psql(conn(&h, "localhost", &verify), "select 1").await;
    assert!(
        ok,
        "the running certificate must stay after a failed reload: {err}"
    );
}
