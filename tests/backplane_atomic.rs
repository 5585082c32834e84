//! Issue 15, guarantee 4's last part: a transaction that ran statements on the server and
//! notifies through pgherald commits atomically with its notifications when a backplane is
//! configured. Before the COMMIT goes to the server, the notifications are recorded on the
//! backplane as pending on the transaction's xid; the server's answer confirms or aborts
//! them; an instance that died in between is replaced by another that resolves the pending
//! entry with `pg_xact_status`. Real PostgreSQL, real redis-server, pgherald instances in
//! process and as processes of the crate's binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgherald::config::{Config, PoolMode};
use support::herald::{self, Herald};
use support::listen::{self, Listener};
use support::postgres::{shared, DEFAULT_DB, SUPERUSER};
use support::raw::Raw;
use support::redis::TestRedis;
use tokio_postgres::error::SqlState;

fn config(backplane: &str) -> Config {
    Config {
        backplane: Some(backplane.to_string()),
        backplane_timeout: 2.0,
        ..herald::config(shared(), PoolMode::Transaction, 4)
    }
}

async fn instances(n: usize, backplane: &str) -> Vec<Herald> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Herald::start(config(backplane)).await);
    }
    v
}

async fn listener(conn: &str, channel: &str) -> Listener {
    let l = listen::connect(conn).await;
    l.client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("listen");
    l
}

fn conn_of(h: &Herald) -> String {
    h.conn_str(SUPERUSER, None, DEFAULT_DB)
}

/// The table the transactions write to (rows tagged per test).
async fn table() -> tokio_postgres::Client {
    let direct = shared().connect(SUPERUSER, None, DEFAULT_DB).await;
    direct
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS atomic_rows (tag text); \
             CREATE TABLE IF NOT EXISTS atomic_unique (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)",
        )
        .await
        .ok();
    direct
}

async fn rows(direct: &tokio_postgres::Client, tag: &str) -> i64 {
    direct
        .query_one("select count(*) from atomic_rows where tag = $1", &[&tag])
        .await
        .expect("count")
        .get(0)
}

/// The kinds (`k` field: `p` pending, `c` committed, `a` aborted) of the backplane log's
/// entries, read with redis-cli (one database, so one log).
fn log_kinds(redis: &TestRedis) -> Vec<String> {
    let keys = redis.cli(&["--scan", "--pattern", "*:log"]);
    let Some(key) = keys.lines().next() else {
        return Vec::new();
    };
    let out = redis.cli(&["XRANGE", key, "-", "+"]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "k")
        .map(|w| w[1].to_string())
        .collect()
}

/// Send a NOTIFY-only commit through `client` until the backplane takes it (after an outage
/// the reconnect takes a moment): every listener's next notification must be this one.
async fn marker(client: &tokio_postgres::Client, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .batch_execute(&format!("NOTIFY {channel}, 'marker'"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the backplane never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The happy path: an INSERT and a NOTIFY, committed by a COMMIT of its own (what drivers
/// send). The row commits, every listener on both instances gets the notification once,
/// and the sender's own copy comes between its COMMIT's CommandComplete and ReadyForQuery
/// (items 17, 26). The log shows the pending entry and its confirmation; nobody needed
/// Postgres to resolve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_commit_is_pending_then_confirmed_on_every_instance() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let direct = table().await;
    let hs = instances(2, &redis.url(None)).await;
    let mut ls = vec![
        listener(&conn_of(&hs[0]), "atm_ok").await,
        listener(&conn_of(&hs[1]), "atm_ok").await,
    ];
    let (mut me, _) = Raw::login(hs[0].port(), SUPERUSER, DEFAULT_DB).await;
    me.query("LISTEN atm_ok").await;
    me.until_ready().await;
    me.query("BEGIN; INSERT INTO atomic_rows VALUES ('ok'); NOTIFY atm_ok, 'ok'")
        .await;
    me.until_ready().await;
    me.query("COMMIT").await;
    let msgs = me.until_ready().await;
    let tags: String = msgs.iter().map(|m| m.tag as char).collect();
    assert_eq!(tags, "CAZ", "own copy after the COMMIT's C, before Z");
    assert_eq!(rows(&direct, "ok").await, 1);
    for l in &mut ls {
        assert_eq!(l.next_within(Duration::from_secs(60)).await.payload(), "ok");
    }
    marker(&ls[0].client, "atm_ok").await;
    for l in &mut ls {
        assert_eq!(
            l.next_within(Duration::from_secs(60)).await.payload(),
            "marker",
            "delivered once"
        );
    }
    let st = hs[0].app.backplane.as_ref().unwrap().stats();
    assert_eq!(st.prepared, 1, "the mixed transaction was staged: {st:?}");
    let kinds = log_kinds(&redis);
    assert_eq!(kinds, ["p", "c"], "one pending entry, one confirmation");
    for h in &hs {
        let st = h.app.backplane.as_ref().unwrap().stats();
        assert_eq!(st.resolved_from_postgres, 0, "{st:?}");
    }
}

/// Test (a): Redis is stopped before the COMMIT of a transaction with an INSERT and a
/// NOTIFY. The COMMIT fails with ERROR 40000 and never reaches the server: the row is not
/// there, the session goes on, and once Redis is back nobody ever receives the notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backplane_down_before_commit_commits_nothing() {
    let Some(mut redis) = TestRedis::start() else {
        return;
    };
    let direct = table().await;
    let hs = instances(2, &redis.url(None)).await;
    let mut ls = vec![
        listener(&conn_of(&hs[0]), "atm_a").await,
        listener(&conn_of(&hs[1]), "atm_a").await,
    ];
    let sender = hs[0].connect(SUPERUSER, None, DEFAULT_DB).await;
    sender
        .batch_execute("BEGIN; INSERT INTO atomic_rows VALUES ('a-down'); NOTIFY atm_a, 'lost'")
        .await
        .expect("transaction");
    redis.stop_saving();
    let err = sender
        .batch_execute("COMMIT")
        .await
        .expect_err("the COMMIT must fail");
    assert_eq!(
        rows(&direct, "a-down").await,
        0,
        "the server did not commit"
    );
    assert_eq!(err.code(), Some(&SqlState::TRANSACTION_ROLLBACK), "{err:?}");
    let one: i32 = sender
        .query_one("select 1", &[])
        .await
        .expect("the session goes on, outside a transaction")
        .get(0);
    assert_eq!(one, 1);
    redis.restart();
    marker(&sender, "atm_a").await;
    for l in &mut ls {
        assert_eq!(
            l.next_within(Duration::from_secs(60)).await.payload(),
            "marker",
            "the refused transaction's notification never arrives"
        );
    }
}

/// Test (b): the server's COMMIT fails (a deferred unique constraint). The pending entry
/// is aborted by the committing instance at once (no instance has to ask Postgres), and no
/// listener on any instance receives the notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_server_commit_is_aborted_and_delivered_nowhere() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let _direct = table().await;
    let hs = instances(2, &redis.url(None)).await;
    let mut ls = vec![
        listener(&conn_of(&hs[0]), "atm_b").await,
        listener(&conn_of(&hs[1]), "atm_b").await,
    ];
    let sender = hs[0].connect(SUPERUSER, None, DEFAULT_DB).await;
    sender
        .batch_execute("BEGIN; INSERT INTO atomic_unique VALUES (7), (7); NOTIFY atm_b, 'bad'")
        .await
        .expect("the violation is deferred to COMMIT");
    let err = sender
        .batch_execute("COMMIT")
        .await
        .expect_err("the deferred constraint fails the COMMIT");
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{err:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while log_kinds(&redis) != ["p", "a"] {
        assert!(
            Instant::now() < deadline,
            "no abort recorded: {:?}",
            log_kinds(&redis)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for h in &hs {
        let st = h.app.backplane.as_ref().unwrap().stats();
        assert_eq!(
            st.resolved_from_postgres, 0,
            "the committing instance aborted it: {st:?}"
        );
    }
    marker(&sender, "atm_b").await;
    for l in &mut ls {
        assert_eq!(
            l.next_within(Duration::from_secs(60)).await.payload(),
            "marker",
            "the failed transaction's notification never arrives"
        );
    }
}

/// A pgherald process of the crate's binary, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(dir: &Path, port: u16, backplane: &str) -> Proc {
        let config = dir.join("a.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\n\
                 upstream = \"postgres://{SUPERUSER}@127.0.0.1:{}\"\n\
                 pool_mode = \"transaction\"\n\
                 default_pool_size = 4\n\
                 backplane = \"{backplane}\"\n",
                shared().port
            ),
        )
        .expect("write config");
        let log = dir.join("a.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_pgherald"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("PGHERALD_TEST_EXIT_AFTER_SERVER_COMMIT", "1")
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start pgherald");
        let p = Proc { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&p.log)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(Instant::now() < deadline, "pgherald did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Test (c): instance A dies right after the server confirmed the COMMIT, before it could
/// confirm the pending entry (the test hook `PGHERALD_TEST_EXIT_AFTER_SERVER_COMMIT`). The
/// row is committed; instance B finds the pending entry unconfirmed, asks Postgres
/// (`pg_xact_status`: committed), records the resolution, and its listeners get the
/// notification exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_dead_after_server_commit_is_resolved_from_postgres() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let direct = table().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut a = Proc::start(dir.path(), port, &redis.url(None));
    let b = Herald::start(config(&redis.url(None))).await;
    let mut l_b = listener(&conn_of(&b), "atm_c").await;
    let mut l_b2 = listener(&conn_of(&b), "atm_c").await;
    let sender = listen::connect(&format!(
        "host=127.0.0.1 port={port} user={SUPERUSER} dbname={DEFAULT_DB}"
    ))
    .await;
    sender
        .client
        .batch_execute("BEGIN; INSERT INTO atomic_rows VALUES ('c-died'); NOTIFY atm_c, 'survived'")
        .await
        .expect("transaction");
    sender
        .client
        .batch_execute("COMMIT")
        .await
        .expect_err("A exits before answering the COMMIT");
    let status = a.child.wait().expect("A's exit");
    assert_eq!(status.code(), Some(86), "the test hook ended A");
    assert_eq!(rows(&direct, "c-died").await, 1, "the server committed");
    for l in [&mut l_b, &mut l_b2] {
        let n = l.next_within(Duration::from_secs(60)).await;
        assert_eq!(n.payload(), "survived");
    }
    // B counts the resolution once its write returns, which may be after its reader
    // delivered it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = b.app.backplane.as_ref().unwrap().stats();
        if st.resolved_from_postgres == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log_kinds(&redis), ["p", "c"], "exactly one resolution");
    marker(&l_b.client, "atm_c").await;
    for l in [&mut l_b, &mut l_b2] {
        assert_eq!(
            l.next_within(Duration::from_secs(60)).await.payload(),
            "marker",
            "delivered exactly once"
        );
    }
}
