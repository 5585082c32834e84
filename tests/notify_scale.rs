//! Proof of what pgherald buys at scale, measured on a real Postgres:
//! - 64 concurrent notifying writers through pgherald never make Postgres take NOTIFY's
//!   commit-time lock on "object 0 of class 1262" (async.c PreCommit_Notify; DESIGN intro),
//!   while the same writers sent directly to Postgres do (the control: the sampler can see it);
//! - 2,000 listeners behind a pool of two hold no server connection and all receive every
//!   notification, in order (DESIGN "Pub/sub hub": listening costs no server connection).
//!
//! No assertion depends on timing; waits are bounded by generous timeouts that fail loudly.

#[path = "support/notes.rs"]
mod notes;
mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgherald::config::PoolMode;
use support::herald::{self, Herald};
use support::listen;
use support::postgres::{self, DB1, DEFAULT_DB, SUPERUSER, TRUST_USER};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

async fn run(c: &Client, sql: &str) {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The first column of the first row of a simple Query.
async fn one(c: &Client, sql: &str) -> String {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// NOTIFY's commit-time lock: `LockSharedObject(DatabaseRelationId, InvalidOid, 0,
/// AccessExclusiveLock)`, held or awaited.
const NOTIFY_LOCK: &str =
    "SELECT count(*) FROM pg_locks WHERE locktype = 'object' AND classid = 1262 AND objid = 0";

/// Samples [`NOTIFY_LOCK`] every 5 ms on a direct connection until stopped.
struct Sampler {
    max: Arc<AtomicI64>,
    samples: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    async fn start() -> Sampler {
        let pg = postgres::shared()
            .connect(SUPERUSER, None, DEFAULT_DB)
            .await;
        let (max, samples) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicUsize::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, n, s) = (max.clone(), samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !s.load(Ordering::SeqCst) {
                tick.tick().await;
                let count: i64 = one(&pg, NOTIFY_LOCK).await.parse().expect("a count");
                m.fetch_max(count, Ordering::SeqCst);
                n.fetch_add(1, Ordering::SeqCst);
            }
        });
        Sampler {
            max,
            samples,
            stop,
            task,
        }
    }

    /// Stops sampling; returns (largest count seen, number of samples).
    async fn finish(self) -> (i64, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("sampler task");
        (
            self.max.load(Ordering::SeqCst),
            self.samples.load(Ordering::SeqCst),
        )
    }
}

/// `writers` clients of `conn_str`, each repeating `BEGIN; INSERT; NOTIFY ch_<i>, '<50 bytes>';
/// COMMIT` until `stop` (even writers statement by statement, odd ones as one Query), then
/// `NOTIFY ch_<i>, 'done'` if `done`. Returns each writer's committed transactions.
async fn write_load(
    conn_str: &str,
    table: &'static str,
    writers: usize,
    stop: Arc<AtomicBool>,
    done: bool,
) -> Vec<usize> {
    let mut clients = Vec::new();
    for _ in 0..writers {
        let (c, conn) = tokio_postgres::connect(conn_str, NoTls)
            .await
            .expect("writer connects");
        tokio::spawn(conn);
        clients.push(c);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let insert = format!("INSERT INTO {table} VALUES ({i}, {n})");
                    let notify = format!("NOTIFY ch_{i}, '{n:0>50}'");
                    if i % 2 == 0 {
                        for sql in ["BEGIN", &insert, &notify, "COMMIT"] {
                            run(&c, sql).await;
                        }
                    } else {
                        run(&c, &format!("BEGIN; {insert}; {notify}; COMMIT")).await;
                    }
                    n += 1;
                }
                if done {
                    run(&c, &format!("NOTIFY ch_{i}, 'done'")).await;
                }
                n
            })
        })
        .collect();
    let mut committed = Vec::new();
    for t in tasks {
        committed.push(t.await.expect("writer task"));
    }
    committed
}

/// DESIGN intro and spec E: with 64 writers committing NOTIFYs through pgherald (transaction
/// mode, pool of 8) for 3 s, Postgres never holds or awaits NOTIFY's database-0 lock; every
/// writer commits, every row is there, and a listener gets exactly each committed
/// notification of its two writers, in commit order. Control: the same writers sent directly
/// to Postgres make the sampler see that lock (they run until it does, at most 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_notify_lock_with_64_writers() {
    const WRITERS: usize = 64;
    let pg = postgres::shared();
    let direct = pg.connect(SUPERUSER, None, DB1).await;
    run(&direct, "DROP TABLE IF EXISTS lock_t, lock_ctl").await;
    run(
        &direct,
        "CREATE TABLE lock_t(w int, n int); CREATE TABLE lock_ctl(w int, n int)",
    )
    .await;
    let h = Herald::start(herald::config(pg, PoolMode::Transaction, 8)).await;
    let conn = h.conn_str(SUPERUSER, None, DB1);
    let mut listener = listen::connect(&conn).await;
    run(&listener.client, "LISTEN ch_0; LISTEN ch_1").await;

    let sampler = Sampler::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let committed = write_load(&conn, "lock_t", WRITERS, stop, true).await;
    timer.await.expect("timer");
    let (max, samples) = sampler.finish().await;
    let total: usize = committed.iter().sum();
    eprintln!("through pgherald: {total} commits {committed:?}, {samples} samples, max {max}");
    assert_eq!(
        max, 0,
        "Postgres took NOTIFY's lock behind pgherald ({samples} samples)"
    );
    assert!(
        committed.iter().all(|&n| n > 0),
        "every writer commits: {committed:?}"
    );
    let rows = direct
        .query("SELECT w, count(*) FROM lock_t GROUP BY w ORDER BY w", &[])
        .await
        .expect("count rows");
    let per_writer: Vec<usize> = rows.iter().map(|r| r.get::<_, i64>(1) as usize).collect();
    assert_eq!(per_writer, committed, "rows per writer");

    let mut got = notes::until(&mut listener, "done", "listener").await;
    got.extend(notes::until(&mut listener, "done", "listener").await);
    for (w, &sent) in committed.iter().enumerate().take(2) {
        let channel = format!("ch_{w}");
        let payloads: Vec<String> = got
            .iter()
            .filter(|n| n.1 == channel)
            .map(|n| n.2.clone())
            .collect();
        let mut want: Vec<String> = (0..sent).map(|n| format!("{n:0>50}")).collect();
        want.push("done".into());
        assert!(
            payloads == want,
            "{channel}: {} received, {} committed",
            payloads.len() - 1,
            sent
        );
    }
    drop(listener);
    h.stop().await.expect("pgherald stops");

    // Control: the same writers straight to Postgres, until the sampler sees the lock.
    let sampler = Sampler::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let watcher = {
        let (stop, max) = (stop.clone(), sampler.max.clone());
        tokio::spawn(async move {
            while max.load(Ordering::SeqCst) == 0 && started.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let pg_conn = pg.conn_str(SUPERUSER, None, DB1);
    let control = write_load(&pg_conn, "lock_ctl", WRITERS, stop, false).await;
    watcher.await.expect("watcher");
    let (max, samples) = sampler.finish().await;
    let total: usize = control.iter().sum();
    eprintln!(
        "direct control: {total} commits in {:?}, {samples} samples, max {max}",
        started.elapsed()
    );
    assert!(
        max > 0,
        "the sampler never saw NOTIFY's lock with {WRITERS} direct writers"
    );
}

/// DESIGN "Pub/sub hub" and "Pools": 2,000 clients LISTEN through pgherald in transaction
/// mode with a pool of two; Postgres sees at most two connections from it, and each of the
/// 2,000 listeners receives the five notifications 1..5 exactly, in order, with the sender's
/// pid. pgherald logs in as its own role so its server connections can be told apart; the
/// upstream relay's extra connection is counted apart (at most one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_listeners_behind_a_pool_of_two() {
    const LISTENERS: usize = 2000;
    const BATCH: usize = 100;
    // Each listener costs two descriptors in this process: its socket and pgherald's.
    let need = (2 * LISTENERS + 1024) as u64;
    let limit = rlimit::increase_nofile_limit(need).expect("raise RLIMIT_NOFILE");
    assert!(
        limit >= need,
        "RLIMIT_NOFILE is {limit}, this test needs {need}"
    );
    let pg = postgres::shared();
    let mut cfg = herald::config(pg, PoolMode::Transaction, 2);
    cfg.upstream = Some(format!("postgres://{TRUST_USER}@127.0.0.1:{}", pg.port));
    cfg.max_client_conn = 2100;
    let h = Herald::start(cfg).await;
    let conn = h.conn_str(SUPERUSER, None, DEFAULT_DB);

    let mut listeners = Vec::with_capacity(LISTENERS);
    for _ in 0..LISTENERS / BATCH {
        let batch = (0..BATCH).map(|_| async {
            let l = listen::connect(&conn).await;
            run(&l.client, "LISTEN fanout").await;
            l
        });
        listeners.extend(futures_util::future::join_all(batch).await);
    }
    let direct = pg.connect(SUPERUSER, None, DEFAULT_DB).await;
    // Pooled server connections, and apart from them the upstream relay's one (README "The
    // upstream relay": outside the pools, one per database with local listeners).
    let count_sql = |relay: &str| {
        format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{TRUST_USER}' \
             AND datname = '{DEFAULT_DB}' AND application_name {relay} 'pgherald relay'"
        )
    };
    let (servers_sql, relay_sql) = (count_sql("<>"), count_sql("="));
    let servers: usize = one(&direct, &servers_sql).await.parse().expect("a count");
    assert!(
        servers <= 2,
        "{servers} server connections behind {LISTENERS} listeners"
    );
    let relays: usize = one(&direct, &relay_sql).await.parse().expect("a count");
    assert!(relays <= 1, "{relays} relay connections");

    let sender = listen::connect(&conn).await.client;
    let sender_pid = notes::backend_pid(&sender).await;
    for k in 1..=5 {
        if k % 2 == 1 {
            for sql in [
                "BEGIN".to_string(),
                format!("NOTIFY fanout, '{k}'"),
                "COMMIT".into(),
            ] {
                run(&sender, &sql).await;
            }
        } else {
            run(&sender, &format!("BEGIN; NOTIFY fanout, '{k}'; COMMIT")).await;
        }
    }
    run(&sender, "NOTIFY fanout, 'end'").await;
    let servers_after: usize = one(&direct, &servers_sql).await.parse().expect("a count");
    assert!(
        (1..=2).contains(&servers_after),
        "{servers_after} server connections after the sender's transactions (the filter must see pgherald's)"
    );

    let want: Vec<_> = ["1", "2", "3", "4", "5", "end"]
        .iter()
        .map(|p| (sender_pid, "fanout".to_string(), p.to_string()))
        .collect();
    let mut received = 0;
    for (i, l) in listeners.iter_mut().enumerate() {
        let got = notes::until(l, "end", &format!("listener {i}")).await;
        assert_eq!(got, want, "listener {i}");
        received += got.len() - 1;
    }
    assert_eq!(received, 5 * LISTENERS);
    let pool = h
        .app
        .pools
        .all()
        .into_iter()
        .find(|p| p.key.database == DEFAULT_DB);
    let pool = pool.expect("the pool");
    assert!(pool.idle_count() + pool.active_count() <= 2);
    eprintln!(
        "{LISTENERS} listeners, {servers}/{servers_after} pooled server connections, \
         {relays} relay, {received} notifications"
    );
}
