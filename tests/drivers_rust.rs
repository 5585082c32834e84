//! The Rust drivers of the driver compatibility suite (README "Driver compatibility"):
//! tokio-postgres and sqlx through pgherald in transaction mode, with more client connections
//! than the pool holds. For each driver: a parameterized prepared query repeated across many
//! transactions (named protocol-level statements prepared once and reused, so they run on
//! whichever server connection each transaction gets), a transaction rolled back, and LISTEN on
//! one connection with NOTIFY and `SELECT pg_notify($1, $2)` from another, received through the
//! driver's own notification API with the right channel, payload and sender pid.
//!
//! The other drivers (psycopg, asyncpg, node-postgres, pgjdbc) are in `tests/drivers.rs`.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use pgherald::config::PoolMode;
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::Connection as _;
use support::herald::{self, Herald};
use support::listen::{self, Listener};
use support::postgres::{self, DEFAULT_DB, SUPERUSER};
use tokio::io::AsyncReadExt;
use tokio::sync::Barrier;
use tokio_postgres::NoTls;

/// Pool mode of the suite: transaction pooling is what drivers find hardest.
const POOL_MODE: PoolMode = PoolMode::Transaction;
/// Server connections per pool: fewer than [`CLIENTS`].
const POOL_SIZE: usize = 2;
/// Concurrent client connections running the prepared-query scenario.
const CLIENTS: usize = 6;
/// Transactions per client connection.
const ITERATIONS: usize = 50;
/// A payload that is not plain ASCII.
const PAYLOAD2: &str = "from pg_notify: h\u{e9}llo \u{2713}";
/// How long to wait for a notification.
const WAIT: Duration = Duration::from_secs(10);
/// How long to watch for notifications that must not come.
const QUIET: Duration = Duration::from_millis(500);

async fn start() -> Herald {
    Herald::start(herald::config(postgres::shared(), POOL_MODE, POOL_SIZE)).await
}

/// How many server backends each connection's prepared statements ran on (for information:
/// with FIFO hand-over, every connection may well stay on one server).
fn report_hops(driver: &str, per_client: &[HashSet<i32>]) {
    let hops = per_client.iter().map(HashSet::len).max().unwrap_or(0);
    println!("{driver}: most server backends seen by one connection: {hops}");
}

/// The two server pids the prepared statement ran on, the holders' two pids: it must have run
/// on H2's server first, then on H1's.
fn check_both_servers(driver: &str, ran_on: (i32, i32), holders: (i32, i32)) {
    let (a, b) = ran_on;
    let (p1, p2) = holders;
    assert!(
        p1 != p2 && (a, b) == (p2, p1),
        "{driver}: the prepared statement should have run on both server connections: \
         it ran on {a} then {b}; the holders were on {p1} and {p2}"
    );
    println!(
        "{driver}: one connection's prepared statement ran on both server connections ({a}, {b})"
    );
}

/// The workers' results; a panicked worker task fails the test.
fn joined<T>(tasks: Vec<Result<T, tokio::task::JoinError>>) -> Vec<T> {
    tasks
        .into_iter()
        .map(|t| t.expect("worker task panicked"))
        .collect()
}

// ---------------------------------------------------------------- tokio-postgres

/// The pid a tokio-postgres client was given at login (its BackendKeyData), read from the
/// CancelRequest its cancel token writes: tokio-postgres has no other public accessor.
async fn login_pid(client: &tokio_postgres::Client) -> i32 {
    let (mut ours, theirs) = tokio::io::duplex(64);
    client
        .cancel_token()
        .cancel_query_raw(theirs, NoTls)
        .await
        .expect("write the cancel request into a pipe");
    let mut msg = [0u8; 16];
    ours.read_exact(&mut msg)
        .await
        .expect("read the cancel request");
    assert_eq!(
        &msg[..8],
        &[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e],
        "a CancelRequest"
    );
    i32::from_be_bytes([msg[8], msg[9], msg[10], msg[11]])
}

/// A tokio-postgres error with the server's message (its Display says only "db error").
fn tp_error(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => err.to_string(),
    }
}

async fn tp_connect(h: &Herald) -> tokio_postgres::Client {
    h.connect(SUPERUSER, None, DEFAULT_DB).await
}

async fn tp_count(c: &tokio_postgres::Client, id: i32) -> i64 {
    c.query_one("SELECT count(*) FROM drv_tokio WHERE id = $1", &[&id])
        .await
        .expect("count")
        .get(0)
}

/// One connection: prepare two statements once, wait until every connection has, then run
/// them in ITERATIONS transactions.
async fn tp_worker(
    mut c: tokio_postgres::Client,
    k: i32,
    start: Arc<Barrier>,
) -> Result<HashSet<i32>, String> {
    let e =
        |what: &str, err: tokio_postgres::Error| format!("client {k}: {what}: {}", tp_error(&err));
    let insert = c
        .prepare("INSERT INTO drv_tokio (id, client, val) VALUES ($1, $2, $3)")
        .await
        .map_err(|err| e("prepare insert", err))?;
    let select = c
        .prepare("SELECT id, client, val, pg_backend_pid() FROM drv_tokio WHERE id = $1")
        .await
        .map_err(|err| e("prepare select", err))?;
    start.wait().await;
    let mut seen = HashSet::new();
    for i in 0..ITERATIONS as i32 {
        let id = k * 100_000 + i;
        let val = format!("v{i}");
        let tx = c.transaction().await.map_err(|err| e("BEGIN", err))?;
        tx.execute(&insert, &[&id, &k, &val])
            .await
            .map_err(|err| e(&format!("insert in txn {i}"), err))?;
        let row = tx
            .query_one(&select, &[&id])
            .await
            .map_err(|err| e(&format!("select in txn {i}"), err))?;
        let got: (i32, i32, String) = (row.get(0), row.get(1), row.get(2));
        if got != (id, k, val.clone()) {
            return Err(format!("client {k} txn {i}: got {got:?}"));
        }
        seen.insert(row.get::<_, i32>(3));
        tx.commit().await.map_err(|err| e("COMMIT", err))?;
    }
    Ok(seen)
}

/// Pool of two: X runs its prepared statement while H1 holds one server in a transaction, then
/// while H2 holds the other, so the statement must run on both servers.
async fn tp_prepared_on_both_servers(h: &Herald) {
    assert_eq!(POOL_SIZE, 2, "pinning onto each server needs a pool of 2");
    let (mut x, mut h1, mut h2) = (
        tp_connect(h).await,
        tp_connect(h).await,
        tp_connect(h).await,
    );
    let q = x
        .prepare("SELECT pg_backend_pid(), count(*) FROM drv_tokio WHERE client = $1")
        .await
        .unwrap();
    x.query_one(&q, &[&0i32]).await.unwrap();
    let pid = "SELECT pg_backend_pid()";
    let t1 = h1.transaction().await.unwrap();
    let p1: i32 = t1.query_one(pid, &[]).await.unwrap().get(0); // H1 holds one server
    let tx = x.transaction().await.unwrap();
    let r1 = tx.query_one(&q, &[&0i32]).await.unwrap(); // so X gets the other
    tx.commit().await.unwrap();
    let t2 = h2.transaction().await.unwrap();
    let p2: i32 = t2.query_one(pid, &[]).await.unwrap().get(0); // H2 holds that other one
    t1.commit().await.unwrap();
    let tx = x.transaction().await.unwrap();
    let r2 = tx.query_one(&q, &[&0i32]).await.unwrap(); // so X gets H1's
    tx.commit().await.unwrap();
    t2.commit().await.unwrap();
    assert_eq!(r1.get::<_, i64>(1), ITERATIONS as i64);
    check_both_servers("tokio-postgres", (r1.get(0), r2.get(0)), (p1, p2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_through_pgherald() {
    let h = start().await;
    let admin = tp_connect(&h).await;
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS drv_tokio;
             CREATE TABLE drv_tokio (id int PRIMARY KEY, client int NOT NULL, val text NOT NULL)",
        )
        .await
        .unwrap();

    // A parameterized prepared query repeated across many transactions, CLIENTS at once.
    let clients = join_all((0..CLIENTS).map(|_| tp_connect(&h))).await;
    let start = Arc::new(Barrier::new(CLIENTS));
    let workers = clients
        .into_iter()
        .zip(0..)
        .map(|(c, k)| tokio::spawn(tp_worker(c, k, start.clone())));
    let results = joined(join_all(workers).await);
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.is_empty(),
        "prepared-query workers failed: {errors:#?}"
    );
    let n: i64 = admin
        .query_one("SELECT count(*) FROM drv_tokio", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n,
        (CLIENTS * ITERATIONS) as i64,
        "every committed row is there"
    );
    let seen: Vec<HashSet<i32>> = results.into_iter().map(Result::unwrap).collect();
    report_hops("tokio-postgres", &seen);
    if POOL_MODE == PoolMode::Transaction {
        tp_prepared_on_both_servers(&h).await;
    }

    // A transaction rolled back.
    let mut c = tp_connect(&h).await;
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO drv_tokio (id, client, val) VALUES ($1, $2, $3)",
        &[&-1i32, &-1i32, &"rolled back"],
    )
    .await
    .unwrap();
    let inside: i64 = tx
        .query_one("SELECT count(*) FROM drv_tokio WHERE id = $1", &[&-1i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inside, 1, "the row is visible inside its transaction");
    tx.rollback().await.unwrap();
    assert_eq!(
        tp_count(&c, -1).await,
        0,
        "rolled back: absent on the same connection"
    );
    assert_eq!(
        tp_count(&admin, -1).await,
        0,
        "rolled back: absent on another connection"
    );

    // LISTEN on one connection, NOTIFY and pg_notify($1, $2) from another.
    let mut l: Listener = listen::connect(&h.conn_str(SUPERUSER, None, DEFAULT_DB)).await;
    let mut s: Listener = listen::connect(&h.conn_str(SUPERUSER, None, DEFAULT_DB)).await;
    let (l_pid, s_pid) = (login_pid(&l.client).await, login_pid(&s.client).await);
    assert_ne!(l_pid, s_pid, "distinct login pids");
    assert_eq!(
        s.own_pid("drv_tokio_self").await,
        s_pid,
        "a self-notification carries the login pid"
    );
    l.client.batch_execute("LISTEN drv_tokio_ch").await.unwrap();
    let tx = s.client.transaction().await.unwrap();
    tx.batch_execute("NOTIFY drv_tokio_ch, 'discarded'")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    s.client
        .batch_execute("NOTIFY drv_tokio_ch, 'from NOTIFY'")
        .await
        .unwrap();
    let rows = s
        .client
        .query("SELECT pg_notify($1, $2)", &[&"drv_tokio_ch", &PAYLOAD2])
        .await
        .expect("SELECT pg_notify($1, $2)");
    assert_eq!(rows.len(), 1, "pg_notify returns one row");
    for payload in ["from NOTIFY", PAYLOAD2] {
        let n = l.next_within(WAIT).await;
        assert_eq!(
            (n.channel(), n.payload(), n.process_id()),
            ("drv_tokio_ch", payload, s_pid),
            "channel, payload and the sender's login pid"
        );
    }
    assert!(
        l.nothing_within(QUIET).await,
        "the rolled-back NOTIFY is discarded"
    );
    l.client
        .batch_execute("UNLISTEN drv_tokio_ch")
        .await
        .unwrap();
    s.client
        .batch_execute("NOTIFY drv_tokio_ch, 'after unlisten'")
        .await
        .unwrap();
    assert!(l.nothing_within(QUIET).await, "nothing after UNLISTEN");
    postgres::shared().assert_no_notify_reached("tokio-postgres", "drv_tokio_ch");
}

// ---------------------------------------------------------------- sqlx

fn sqlx_url(h: &Herald) -> String {
    format!(
        "postgres://{SUPERUSER}@127.0.0.1:{}/{DEFAULT_DB}?sslmode=disable",
        h.port()
    )
}

/// One connection: once every connection is there, ITERATIONS transactions of two bound
/// queries (sqlx prepares them as named statements on first use and reuses them from its
/// per-connection statement cache).
async fn sqlx_worker(
    mut c: PgConnection,
    k: i32,
    start: Arc<Barrier>,
) -> Result<HashSet<i32>, String> {
    let e = |what: &str, err: sqlx::Error| format!("client {k}: {what}: {err}");
    start.wait().await;
    let mut seen = HashSet::new();
    for i in 0..ITERATIONS as i32 {
        let id = k * 100_000 + i;
        let val = format!("v{i}");
        let mut tx = c.begin().await.map_err(|err| e("BEGIN", err))?;
        sqlx::query("INSERT INTO drv_sqlx (id, client, val) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(k)
            .bind(&val)
            .execute(&mut *tx)
            .await
            .map_err(|err| e(&format!("insert in txn {i}"), err))?;
        let (rid, rk, rval, server): (i32, i32, String, i32) =
            sqlx::query_as("SELECT id, client, val, pg_backend_pid() FROM drv_sqlx WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|err| e(&format!("select in txn {i}"), err))?;
        if (rid, rk, &rval) != (id, k, &val) {
            return Err(format!("client {k} txn {i}: got {:?}", (rid, rk, rval)));
        }
        seen.insert(server);
        tx.commit().await.map_err(|err| e("COMMIT", err))?;
    }
    c.close().await.map_err(|err| e("close", err))?;
    Ok(seen)
}

async fn sqlx_count(c: &mut PgConnection, id: i32) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM drv_sqlx WHERE id = $1")
        .bind(id)
        .fetch_one(c)
        .await
        .expect("count")
}

/// The next notification of a `PgListener`, failing the test after [`WAIT`].
async fn sqlx_next(l: &mut PgListener) -> sqlx::postgres::PgNotification {
    tokio::time::timeout(WAIT, l.recv())
        .await
        .expect("timed out waiting for a notification")
        .expect("PgListener::recv")
}

/// A `PgListener`'s own pid as notifications report it: LISTEN and NOTIFY a private channel
/// on its own connection (sqlx does not expose the pid it was given at login).
async fn sqlx_own_pid(l: &mut PgListener, channel: &str) -> u32 {
    l.listen(channel).await.expect("listen");
    sqlx::raw_sql(&format!("NOTIFY {channel}, 'me'"))
        .execute(&mut *l)
        .await
        .expect("self notify");
    let n = sqlx_next(l).await;
    assert_eq!((n.channel(), n.payload()), (channel, "me"));
    l.unlisten(channel).await.expect("unlisten");
    n.process_id()
}

/// The server pid and client 0's row count, through a cached (named) statement.
async fn sqlx_server_and_count(c: &mut PgConnection) -> (i32, i64) {
    sqlx::query_as("SELECT pg_backend_pid(), count(*) FROM drv_sqlx WHERE client = $1")
        .bind(0i32)
        .fetch_one(c)
        .await
        .expect("the cached statement")
}

/// Pool of two: X runs its cached statement while H1 holds one server in a transaction, then
/// while H2 holds the other, so the statement must run on both servers.
async fn sqlx_prepared_on_both_servers(url: &str) {
    assert_eq!(POOL_SIZE, 2, "pinning onto each server needs a pool of 2");
    let mut x = PgConnection::connect(url).await.unwrap();
    let mut h1 = PgConnection::connect(url).await.unwrap();
    let mut h2 = PgConnection::connect(url).await.unwrap();
    sqlx_server_and_count(&mut x).await; // now in x's statement cache
    let pid = "SELECT pg_backend_pid()";
    let mut t1 = h1.begin().await.unwrap();
    let p1: i32 = sqlx::query_scalar(pid).fetch_one(&mut *t1).await.unwrap(); // H1 holds one server
    let mut tx = x.begin().await.unwrap();
    let r1 = sqlx_server_and_count(&mut tx).await; // so X gets the other
    tx.commit().await.unwrap();
    let mut t2 = h2.begin().await.unwrap();
    let p2: i32 = sqlx::query_scalar(pid).fetch_one(&mut *t2).await.unwrap(); // H2 holds that other one
    t1.commit().await.unwrap();
    let mut tx = x.begin().await.unwrap();
    let r2 = sqlx_server_and_count(&mut tx).await; // so X gets H1's
    tx.commit().await.unwrap();
    t2.commit().await.unwrap();
    assert_eq!(r1.1, ITERATIONS as i64);
    check_both_servers("sqlx", (r1.0, r2.0), (p1, p2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_through_pgherald() {
    let h = start().await;
    let url = sqlx_url(&h);
    let mut admin = PgConnection::connect(&url).await.expect("sqlx connects");
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS drv_sqlx;
         CREATE TABLE drv_sqlx (id int PRIMARY KEY, client int NOT NULL, val text NOT NULL)",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    // A parameterized prepared query repeated across many transactions, CLIENTS at once.
    let clients = join_all((0..CLIENTS).map(|_| PgConnection::connect(&url))).await;
    let start = Arc::new(Barrier::new(CLIENTS));
    let workers = clients.into_iter().zip(0..).map(|(c, k)| {
        let c = c.expect("sqlx connects");
        tokio::spawn(sqlx_worker(c, k, start.clone()))
    });
    let results = joined(join_all(workers).await);
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.is_empty(),
        "prepared-query workers failed: {errors:#?}"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM drv_sqlx")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        n,
        (CLIENTS * ITERATIONS) as i64,
        "every committed row is there"
    );
    let seen: Vec<HashSet<i32>> = results.into_iter().map(Result::unwrap).collect();
    report_hops("sqlx", &seen);
    if POOL_MODE == PoolMode::Transaction {
        sqlx_prepared_on_both_servers(&url).await;
    }

    // A transaction rolled back.
    let mut c = PgConnection::connect(&url).await.unwrap();
    let mut tx = c.begin().await.unwrap();
    sqlx::query("INSERT INTO drv_sqlx (id, client, val) VALUES ($1, $2, $3)")
        .bind(-1i32)
        .bind(-1i32)
        .bind("rolled back")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        sqlx_count(&mut tx, -1).await,
        1,
        "visible inside its transaction"
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        sqlx_count(&mut c, -1).await,
        0,
        "rolled back: absent on the same connection"
    );
    assert_eq!(
        sqlx_count(&mut admin, -1).await,
        0,
        "rolled back: absent on another connection"
    );

    // LISTEN through PgListener on one connection, NOTIFY and pg_notify($1, $2) from another.
    let mut l = PgListener::connect(&url)
        .await
        .expect("PgListener connects");
    let mut s = PgListener::connect(&url)
        .await
        .expect("PgListener connects");
    let l_pid = sqlx_own_pid(&mut l, "drv_sqlx_self_l").await;
    let s_pid = sqlx_own_pid(&mut s, "drv_sqlx_self_s").await;
    assert_ne!(l_pid, s_pid, "distinct pids");
    l.listen("drv_sqlx_ch").await.unwrap();
    {
        let mut tx = sqlx::Acquire::begin(&mut s).await.unwrap();
        sqlx::raw_sql("NOTIFY drv_sqlx_ch, 'discarded'")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }
    sqlx::raw_sql("NOTIFY drv_sqlx_ch, 'from NOTIFY'")
        .execute(&mut s)
        .await
        .unwrap();
    let rows = sqlx::query("SELECT pg_notify($1, $2)")
        .bind("drv_sqlx_ch")
        .bind(PAYLOAD2)
        .fetch_all(&mut s)
        .await
        .expect("SELECT pg_notify($1, $2)");
    assert_eq!(rows.len(), 1, "pg_notify returns one row");
    for payload in ["from NOTIFY", PAYLOAD2] {
        let n = sqlx_next(&mut l).await;
        assert_eq!(
            (n.channel(), n.payload(), n.process_id()),
            ("drv_sqlx_ch", payload, s_pid),
            "channel, payload and the sender's pid"
        );
    }
    // From a sender whose login pid is known (tokio-postgres reads its BackendKeyData).
    let tp = tp_connect(&h).await;
    let tp_pid = login_pid(&tp).await;
    tp.query(
        "SELECT pg_notify($1, $2)",
        &[&"drv_sqlx_ch", &"from tokio-postgres"],
    )
    .await
    .unwrap();
    let n = sqlx_next(&mut l).await;
    assert_eq!(
        (n.channel(), n.payload(), n.process_id()),
        ("drv_sqlx_ch", "from tokio-postgres", tp_pid as u32),
        "PgNotification::process_id is the sender's login pid"
    );
    assert!(
        tokio::time::timeout(QUIET, l.recv()).await.is_err(),
        "nothing else arrives (the rolled-back NOTIFY is discarded)"
    );
    l.unlisten("drv_sqlx_ch").await.unwrap();
    sqlx::raw_sql("NOTIFY drv_sqlx_ch, 'after unlisten'")
        .execute(&mut s)
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(QUIET, l.recv()).await.is_err(),
        "nothing after UNLISTEN"
    );
    postgres::shared().assert_no_notify_reached("sqlx", "drv_sqlx_ch");
}
