//! TLS from pgherald to PostgreSQL: the test server has `ssl = on` with a certificate
//! for "localhost" made here; pgherald verifies it (upstream URL parameters as libpq reads
//! them, or server_tls_* keys per database), the relay connection too, and each failure
//! reaches the client as a FATAL saying the server connection failed.

mod support;

use std::time::{Duration, Instant};

use pgherald::config::{Config, DatabaseConfig, PoolMode};
use pgherald::tls::SslMode;
use support::herald::{self, Herald};
use support::listen;
use support::postgres::{self, TestPostgres, DB2, DEFAULT_DB, SUPERUSER};
use support::tls::{self as pki, Ca};

struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
    other_ca: Ca,
}

async fn pki() -> &'static Pki {
    static PKI: tokio::sync::OnceCell<Pki> = tokio::sync::OnceCell::const_new();
    PKI.get_or_init(|| async {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "server-ca");
        let other_ca = Ca::new(dir.path(), "other-ca");
        let server = ca.issue("postgres", "postgres", &["localhost"], false);
        pki::enable_postgres_tls(postgres::shared(), &server).await;
        Pki {
            _dir: dir,
            ca,
            other_ca,
        }
    })
    .await
}

/// pgherald in front of `pg` through the upstream URL `url` (host and port filled in).
fn config_url(pg: &TestPostgres, host: &str, query: &str) -> Config {
    Config {
        upstream: Some(format!(
            "postgres://{SUPERUSER}@{host}:{}/?{query}",
            pg.port
        )),
        ..herald::config(pg, PoolMode::Transaction, 2)
    }
}

async fn ssl_in_use(c: &tokio_postgres::Client) -> bool {
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn login_error(h: &Herald) -> String {
    let e = h
        .try_connect(SUPERUSER, None, DEFAULT_DB)
        .await
        .expect_err("the server connection must fail");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("a FATAL expected, got {e:?}"));
    assert_eq!(db.severity(), "FATAL");
    assert_eq!(db.code().code(), "08006");
    db.message().to_string()
}

/// A pgherald whose upstream URL asks for verify-full against the test CA.
async fn verify_full_herald() -> Herald {
    let k = pki().await;
    let ca = k.ca.pem_file.to_str().unwrap();
    Herald::start(config_url(
        postgres::shared(),
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_from_the_upstream_url() {
    let h = verify_full_herald().await;
    let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    assert!(
        ssl_in_use(&c).await,
        "pgherald's server connection uses TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_by_default_uses_tls_when_the_server_has_it() {
    pki().await;
    let h = Herald::start(herald::config(postgres::shared(), PoolMode::Transaction, 2)).await;
    let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    assert!(ssl_in_use(&c).await);
    let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 2);
    cfg.server_tls_sslmode = SslMode::Disable;
    let h = Herald::start(cfg).await;
    let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    assert!(!ssl_in_use(&c).await, "disable: plain TCP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_failures_reach_the_client_as_fatal() {
    let k = pki().await;
    let pg = postgres::shared();
    // Wrong CA (per-database keys).
    let mut cfg = herald::config(pg, PoolMode::Transaction, 2);
    cfg.upstream = None;
    cfg.databases.insert(
        DEFAULT_DB.into(),
        DatabaseConfig {
            host: Some("localhost".into()),
            port: Some(pg.port),
            user: Some(SUPERUSER.into()),
            server_tls_sslmode: Some(SslMode::VerifyFull),
            server_tls_ca_file: Some(k.other_ca.pem_file.clone()),
            ..Default::default()
        },
    );
    let h = Herald::start(cfg).await;
    assert_eq!(
        login_error(&h).await,
        "server connection failed: TLS handshake failed: invalid peer certificate: UnknownIssuer"
    );
    // Wrong host name: the certificate names localhost, pgherald dials 127.0.0.1.
    let ca = k.ca.pem_file.to_str().unwrap();
    let h = Herald::start(config_url(
        pg,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    let msg = login_error(&h).await;
    assert!(
        msg.starts_with("server connection failed: TLS handshake failed: invalid peer certificate: certificate not valid for name \"127.0.0.1\""),
        "{msg}"
    );
    // verify-ca does not check the name.
    let h = Herald::start(config_url(
        pg,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await;
    let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    assert!(ssl_in_use(&c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_plaintext_server() {
    let pg = TestPostgres::start();
    let h = Herald::start(config_url(&pg, "127.0.0.1", "sslmode=require")).await;
    assert_eq!(
        login_error(&h).await,
        "server connection failed: server refused SSL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_server_certificate() {
    let k = pki().await;
    let pg = TestPostgres::start();
    let expired = k.ca.issue("expired-pg", "postgres", &["localhost"], true);
    pki::enable_postgres_tls(&pg, &expired).await;
    let ca = k.ca.pem_file.to_str().unwrap();
    let h = Herald::start(config_url(
        &pg,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    let msg = login_error(&h).await;
    assert!(
        msg.starts_with("server connection failed: TLS handshake failed: invalid peer certificate: certificate expired"),
        "{msg}"
    );
}

/// The relay's upstream LISTEN connection uses the same TLS settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_connects_with_tls() {
    let h = verify_full_herald().await;
    let mut l = listen::connect(&h.conn_str(SUPERUSER, None, DB2)).await;
    l.client.batch_execute("LISTEN tls_relay").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !h
        .app
        .relays
        .listening(DB2)
        .iter()
        .any(|c| &c[..] == b"tls_relay")
    {
        assert!(Instant::now() < deadline, "relay never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = postgres::shared().connect(SUPERUSER, None, DB2).await;
    d.batch_execute("NOTIFY tls_relay, 'via the relay'")
        .await
        .unwrap();
    assert_eq!(l.next().await.payload(), "via the relay");
    let row = d
        .query_one(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = $1 AND a.query ILIKE 'LISTEN%tls_relay%'",
            &[&DB2],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "one relay connection");
    assert!(row.get::<_, bool>(1), "the relay connection uses TLS");
}
