//! The driver compatibility suite over TLS (README "TLS", "Driver compatibility"): the scripts
//! of `tests/drivers/` (psycopg, asyncpg, node-postgres, pgjdbc) run against a pgherald with
//! `client_tls_sslmode = "require"` and a certificate for localhost and 127.0.0.1 made in the
//! test, each driver verifying it (`DRIVER_SSLMODE=verify-full`, `DRIVER_SSLROOTCERT` = the
//! test CA), and pgherald reaching the test Postgres (`ssl = on`) with
//! `server_tls_sslmode = "verify-full"`. Every check of the plaintext suite runs, LISTEN/NOTIFY
//! included, with fewer transactions per connection.
//!
//! A driver that fell back to plaintext would get `FATAL: SSL required` from pgherald, so these
//! tests cannot pass in clear; `plaintext_script_is_refused` proves that: the same psycopg script
//! without the TLS environment fails against this pgherald.

mod support;

use std::ffi::OsString;

use pgherald::config::Config;
use pgherald::tls::SslMode;
use support::herald;
use support::postgres;
use support::scripts::{run_driver, try_driver, Driver, Run, POOL_MODE, POOL_SIZE};
use support::tls::{self as pki, Ca, Leaf};

/// Transactions per client connection: fewer than the plaintext suite's 50 (the handshakes
/// are what is new here), enough for every script's statements to become server-prepared.
const ITERATIONS: usize = 10;

/// The test CA, pgherald's certificate for clients, and the test server with TLS on.
struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
    /// A CA that signed nothing pgherald presents.
    other_ca: Ca,
    /// pgherald's certificate: localhost and 127.0.0.1, so verify-full passes for either.
    herald: Leaf,
}

async fn pki() -> &'static Pki {
    static PKI: tokio::sync::OnceCell<Pki> = tokio::sync::OnceCell::const_new();
    PKI.get_or_init(|| async {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "driver-ca");
        let other_ca = Ca::new(dir.path(), "other-ca");
        let herald = ca.issue("herald", "pgherald", &["localhost", "127.0.0.1"], false);
        let server = ca.issue("postgres", "postgres", &["localhost", "127.0.0.1"], false);
        pki::enable_postgres_tls(postgres::shared(), &server).await;
        Pki {
            _dir: dir,
            ca,
            other_ca,
            herald,
        }
    })
    .await
}

/// The suite's pgherald with TLS on both sides: clients must use TLS, Postgres is verified.
fn tls_config(k: &Pki) -> Config {
    let mut cfg = herald::config(postgres::shared(), POOL_MODE, POOL_SIZE);
    cfg.client_tls_sslmode = SslMode::Require;
    cfg.client_tls_cert_file = Some(k.herald.cert_file.clone());
    cfg.client_tls_key_file = Some(k.herald.key_file.clone());
    cfg.server_tls_sslmode = SslMode::VerifyFull;
    cfg.server_tls_ca_file = Some(k.ca.pem_file.clone());
    cfg
}

/// The scripts' TLS wish: verify-full against `ca` (host 127.0.0.1).
fn tls_run(ca: &Ca) -> Run {
    Run {
        iterations: ITERATIONS,
        env: vec![
            ("DRIVER_SSLMODE", OsString::from("verify-full")),
            ("DRIVER_SSLROOTCERT", ca.pem_file.clone().into_os_string()),
        ],
    }
}

/// Runs `driver`'s script against a fresh TLS pgherald, expecting it to fail with `expected`
/// in its output; returns that output.
async fn refused(driver: Driver, run: Run, expected: &str) -> String {
    let h = herald::Herald::start(tls_config(pki().await)).await;
    let report = match try_driver(driver, h.port(), run).await {
        Ok(stdout) => panic!(
            "the {} script passed but should have failed with {expected:?}:\n{stdout}",
            driver.name()
        ),
        Err(report) => report,
    };
    assert!(report.contains(expected), "{report}");
    report
}

/// Runs `driver`'s script over TLS against a fresh pgherald.
async fn over_tls(driver: Driver) {
    let k = pki().await;
    run_driver(driver, tls_config(k), tls_run(&k.ca)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_tls() {
    over_tls(Driver::Psycopg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_tls() {
    over_tls(Driver::Asyncpg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_tls() {
    over_tls(Driver::NodePostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_tls() {
    over_tls(Driver::Pgjdbc).await;
}

/// With `DRIVER_SSLMODE=disable` the psycopg script connects in plaintext, and this pgherald
/// refuses it with PgBouncer's error: so the TLS runs above cannot pass in clear. (Without any
/// TLS environment libpq's default `prefer` would negotiate TLS without verifying it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_script_is_refused() {
    let run = Run {
        iterations: ITERATIONS,
        env: vec![("DRIVER_SSLMODE", OsString::from("disable"))],
    };
    refused(Driver::Psycopg, run, "SSL required").await;
}

/// The scripts that build their own TLS settings from the environment (asyncpg's
/// `ssl.SSLContext`, node-postgres's `ssl` option) really verify pgherald's certificate:
/// with another CA as `DRIVER_SSLROOTCERT` they fail in the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_verify_the_certificate() {
    let k = pki().await;
    refused(
        Driver::Asyncpg,
        tls_run(&k.other_ca),
        "CERTIFICATE_VERIFY_FAILED",
    )
    .await;
    refused(
        Driver::NodePostgres,
        tls_run(&k.other_ca),
        "unable to verify",
    )
    .await;
}

/// sqlx (rustls, `verify-full` against the test CA) through the TLS pgherald: bound queries,
/// LISTEN with its `PgListener` and a `pg_notify` from the pool. A plaintext connection to
/// the same pgherald is refused, so this cannot pass in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_tls() {
    use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgSslMode};
    use sqlx::Connection as _;
    let k = pki().await;
    let h = herald::Herald::start(tls_config(k)).await;
    let opts = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(h.port())
        .username(postgres::SUPERUSER)
        .database(postgres::DEFAULT_DB);
    let tls = opts
        .clone()
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(&k.ca.pem_file);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(tls)
        .await
        .expect("sqlx connects over TLS");
    let mut listener = PgListener::connect_with(&pool).await.expect("listener");
    listener.listen("sqlx_tls").await.expect("LISTEN");
    for i in 0..ITERATIONS as i32 {
        let v: i32 = sqlx::query_scalar("SELECT $1::int4 + 1")
            .bind(i)
            .fetch_one(&pool)
            .await
            .expect("query");
        assert_eq!(v, i + 1);
        sqlx::query("SELECT pg_notify('sqlx_tls', $1)")
            .bind(format!("n{i}"))
            .execute(&pool)
            .await
            .expect("pg_notify");
        let n = tokio::time::timeout(std::time::Duration::from_secs(60), listener.recv())
            .await
            .expect("a notification within a minute")
            .expect("listener open");
        assert_eq!(
            (n.channel(), n.payload()),
            ("sqlx_tls", format!("n{i}").as_str())
        );
    }
    let plain = opts.ssl_mode(PgSslMode::Disable);
    let err = sqlx::PgConnection::connect_with(&plain)
        .await
        .expect_err("plaintext is refused");
    assert!(err.to_string().contains("SSL required"), "{err}");
}
