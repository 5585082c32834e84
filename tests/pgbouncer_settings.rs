//! PgBouncer's timeouts and startup settings, run side by side: the same pgbouncer.ini
//! served by the real PgBouncer and by pgherald, the same client scenario against both,
//! the same FATAL texts. client_idle_timeout, idle_transaction_timeout, query_timeout,
//! ignore_startup_parameters, application_name_add_host.

mod support;

use std::time::Duration;

use pgherald::config::ini;
use support::herald::Herald;
use support::pgbouncer::{self, Bouncer, Files};
use support::postgres::{self, TestPostgres, SUPERUSER};
use support::raw::Raw;

/// Ceiling for waits that end by themselves when things work (never a pass/fail threshold).
const PATIENCE: Duration = Duration::from_secs(60);

fn files(pg: &TestPostgres, settings: &str) -> Files {
    pgbouncer::write(
        &format!("db1 = host=127.0.0.1 port={} user={SUPERUSER}", pg.port),
        &format!("auth_type = trust\npool_mode = transaction\n{settings}"),
        &[(SUPERUSER, ""), ("listener", "")],
    )
}

async fn herald(files: &Files) -> Herald {
    let mut config = ini::load(&files.ini)
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    config.listen = "127.0.0.1:0".into();
    Herald::start(config).await
}

/// Connect; the second value resolves to the connection's end (the FATAL that ended it).
async fn connect(
    port: u16,
    extra: &str,
) -> (tokio_postgres::Client, tokio::task::JoinHandle<String>) {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user={SUPERUSER} dbname=db1 {extra}"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let end = tokio::spawn(async move {
        match conn.await {
            Ok(()) => "closed".to_string(),
            Err(e) => match e.as_db_error() {
                Some(d) => format!("{} {} {}", d.severity(), d.code().code(), d.message()),
                None => e.to_string(),
            },
        }
    });
    (c, end)
}

/// The FATAL that ended a connection whose request failed with `err`: tokio-postgres hands it
/// to the request or to the connection, whichever reads it.
async fn fatal(err: tokio_postgres::Error, end: tokio::task::JoinHandle<String>) -> String {
    let conn = ended(end).await;
    match err.as_db_error() {
        Some(d) => format!("{} {} {}", d.severity(), d.code().code(), d.message()),
        None => conn,
    }
}

async fn ended(end: tokio::task::JoinHandle<String>) -> String {
    tokio::time::timeout(PATIENCE, end)
        .await
        .expect("the connection ends")
        .unwrap()
}

/// Run `scenario` against PgBouncer and pgherald on the same file; both results must match.
async fn both<F, Fut>(settings: &str, scenario: F) -> String
where
    F: Fn(u16) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let pg = postgres::shared();
    let files = files(pg, settings);
    let bouncer = Bouncer::start(&files);
    let h = herald(&files).await;
    let theirs = scenario(bouncer.port).await;
    let ours = scenario(h.port()).await;
    assert_eq!(ours, theirs, "pgbouncer log:\n{}", bouncer.log());
    ours
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_closes_idle_clients_but_not_listeners() {
    let got = both("client_idle_timeout = 1", |port| async move {
        let (_c, end) = connect(port, "").await;
        ended(end).await
    })
    .await;
    assert_eq!(got, "FATAL 08P01 client_idle_timeout");
    // pgherald only: a listener (LISTEN keeps no server) is waiting, not idling. It
    // outlives a client that connected after it and was closed for idling.
    let pg = postgres::shared();
    let h = herald(&files(pg, "client_idle_timeout = 1")).await;
    let (listener, listener_end) = connect(h.port(), "").await;
    listener.batch_execute("LISTEN ch").await.unwrap();
    let (_idle, idle_end) = connect(h.port(), "").await;
    assert_eq!(ended(idle_end).await, "FATAL 08P01 client_idle_timeout");
    assert!(!listener_end.is_finished());
    listener.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_ends_the_transaction() {
    let pg = postgres::shared();
    let su = pg.connect(SUPERUSER, None, postgres::DB1).await;
    su.batch_execute("CREATE TABLE IF NOT EXISTS mig_idle_txn(port int)")
        .await
        .unwrap();
    let got = both("idle_transaction_timeout = 1", |port| async move {
        let (c, end) = connect(port, "").await;
        c.batch_execute(&format!("BEGIN; INSERT INTO mig_idle_txn VALUES ({port})"))
            .await
            .unwrap();
        let why = ended(end).await;
        // Nothing of the abandoned transaction is left.
        let (check, _) = connect(port, "").await;
        let n: i64 = check
            .query_one(
                "SELECT count(*) FROM mig_idle_txn WHERE port = $1",
                &[&(port as i32)],
            )
            .await
            .unwrap()
            .get(0);
        format!("{why}; rows {n}")
    })
    .await;
    assert_eq!(got, "FATAL 08P01 idle transaction timeout; rows 0");
}

async fn sleeping(app: &str) -> i64 {
    let su = postgres::shared()
        .connect(SUPERUSER, None, postgres::DEFAULT_DB)
        .await;
    su.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
        &[&app],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_stops_the_query() {
    let got = both("query_timeout = 1", |port| async move {
        let (c, end) = connect(port, &format!("application_name=mig_qt_{port}")).await;
        let err = c.batch_execute("SELECT pg_sleep(600)").await.unwrap_err();
        fatal(err, end).await
    })
    .await;
    assert_eq!(got, "FATAL 08P01 query timeout");
    // pgherald also cancels the query, where PgBouncer only closes the server connection
    // (and Postgres goes on sleeping until it next writes to the socket).
    let pg = postgres::shared();
    let h = herald(&files(pg, "query_timeout = 1")).await;
    let app = format!("mig_qt_{}", h.port());
    let (c, end) = connect(h.port(), &format!("application_name={app}")).await;
    let err = c.batch_execute("SELECT pg_sleep(600)").await.unwrap_err();
    assert_eq!(fatal(err, end).await, "FATAL 08P01 query timeout");
    let start = std::time::Instant::now();
    while sleeping(&app).await > 0 {
        assert!(
            start.elapsed() < PATIENCE,
            "the query still runs on the server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let su = pg.connect(SUPERUSER, None, postgres::DEFAULT_DB).await;
    su.batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'mig_qt_%'")
        .await
        .unwrap();
}

/// ignore_startup_parameters drops the listed parameters; application_name_add_host
/// appends the client's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters() {
    let got = both(
        "ignore_startup_parameters = search_path, extra_float_digits\napplication_name_add_host = 1",
        |port| async move {
            let mut r = Raw::connect(port).await;
            r.startup(3, 0, &[("user", SUPERUSER), ("database", "db1"), ("search_path", "nowhere"), ("application_name", "shop")])
                .await;
            let login = r.until_ready().await;
            assert!(login.iter().all(|m| m.tag != b'E'), "{login:?}");
            let local = r.stream.local_addr().unwrap();
            r.query("SELECT current_setting('search_path') || ' / ' || current_setting('application_name')").await;
            let rows = r.until_ready().await;
            let row = rows.iter().find(|m| m.tag == b'D').expect("a row");
            let text = String::from_utf8_lossy(&row.body[6..]).into_owned();
            text.replace(&local.to_string(), "CLIENT")
        },
    )
    .await;
    assert_eq!(got, "\"$user\", public / shop - CLIENT");
}

/// reserve_pool_size / reserve_pool_timeout: with the pool busy, a waiting client gets a
/// reserve connection; with the reserve busy too, the next waits out query_wait_timeout.
/// Postgres never sees more than pool_size + reserve_pool_size connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool() {
    let pg = postgres::shared();
    let settings = "reserve_pool_size = 1\nreserve_pool_timeout = 0.2\nquery_wait_timeout = 3\nserver_round_robin = 1\nserver_check_query = SELECT 1\nserver_check_delay = 0";
    let files = pgbouncer::write(
        &format!(
            "db2 = host=127.0.0.1 port={} user={SUPERUSER} pool_size=1",
            pg.port
        ),
        &format!("auth_type = trust\npool_mode = transaction\n{settings}"),
        &[(SUPERUSER, "")],
    );
    let bouncer = Bouncer::start(&files);
    let mut config = ini::load(&files.ini).unwrap().config;
    config.listen = "127.0.0.1:0".into();
    let h = Herald::start(config).await;
    let su = pg.connect(SUPERUSER, None, postgres::DEFAULT_DB).await;
    let servers = || async {
        su.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'db2' AND backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    let mut results = Vec::new();
    for port in [bouncer.port, h.port()] {
        let conn = |port| async move {
            let (c, conn) = tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user={SUPERUSER} dbname=db2"),
                tokio_postgres::NoTls,
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            c
        };
        let before = servers().await;
        let a = conn(port).await;
        a.batch_execute("BEGIN; SELECT 1").await.unwrap();
        let b = conn(port).await;
        let b_ok = b.batch_execute("BEGIN; SELECT 1").await.is_ok();
        let c = conn(port).await;
        let c_err = c.batch_execute("SELECT 1").await.unwrap_err();
        let c_msg = c_err
            .as_db_error()
            .map(|d| format!("{} {}", d.code().code(), d.message()));
        let peak = servers().await - before;
        a.batch_execute("COMMIT").await.unwrap();
        b.batch_execute("COMMIT").await.unwrap();
        results.push((b_ok, c_msg, peak));
        // Round robin and the check query: the pool's connections keep serving.
        for _ in 0..4 {
            conn(port).await.batch_execute("SELECT 1").await.unwrap();
        }
    }
    assert_eq!(results[1], results[0], "pgbouncer log:\n{}", bouncer.log());
    assert_eq!(
        results[1],
        (true, Some("08P01 query_wait_timeout".to_string()), 2)
    );
}
