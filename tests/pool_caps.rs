//! PgBouncer's connection limits against a real Postgres: `max_db_connections` (every pool of
//! a database together), `max_user_connections` (every pool of a server user together),
//! both with eviction of idle connections of another pool, and `min_pool_size`. The count of
//! server connections is read from Postgres's own pg_stat_activity while more clients than
//! the cap run queries; every client's query must still complete (they wait their turn).
//! The last test serves the same pgbouncer.ini with PgBouncer and with pgherald.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgherald::config::{ini, Config, DatabaseConfig, PoolMode, UserConfig};
use support::herald::{self, Herald};
use support::pgbouncer::{self, Bouncer};
use support::postgres::{self, TestPostgres, SUPERUSER, TRUST_USER};

/// Ceiling for waits that end by themselves when things work (never a pass/fail threshold).
const PATIENCE: Duration = Duration::from_secs(60);

async fn create_databases(pg: &TestPostgres, names: &[&str]) {
    let su = pg.connect(SUPERUSER, None, postgres::DEFAULT_DB).await;
    for n in names {
        su.batch_execute(&format!("CREATE DATABASE {n}"))
            .await
            .unwrap();
    }
}

/// Server connections in pg_stat_activity matching `filter` (an SQL condition).
async fn count(su: &tokio_postgres::Client, filter: &str) -> i64 {
    su.query_one(
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND {filter}"
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Samples `filter`'s count until dropped; `peak` is the highest seen.
struct Sampler {
    peak: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    async fn start(pg: &TestPostgres, filter: &str) -> Sampler {
        let su = pg.connect(SUPERUSER, None, postgres::DEFAULT_DB).await;
        let peak = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, filter) = (peak.clone(), stop.clone(), filter.to_string());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Acquire) {
                let n = count(&su, &filter).await;
                p.fetch_max(n, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Sampler { peak, stop, task }
    }

    async fn peak(self) -> i64 {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
        self.peak.load(Ordering::Acquire)
    }
}

/// Run `rounds` × `SELECT pg_sleep(0.2)` on one connection per (user, database), all at
/// once; returns the errors (none when every query completed).
async fn burst(port: u16, clients: &[(&str, &str)], rounds: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for (user, db) in clients {
        let cs = format!("host=127.0.0.1 port={port} user={user} dbname={db}");
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            for _ in 0..rounds {
                c.batch_execute("SELECT pg_sleep(0.2)")
                    .await
                    .map_err(|e| format!("{e}: {:?}", e.as_db_error().map(|d| d.message())))?;
            }
            Ok::<(), String>(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e);
        }
    }
    errors
}

/// Wait until `filter`'s count is `want`; false if it never is within PATIENCE.
async fn reaches(su: &tokio_postgres::Client, filter: &str, want: i64) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < PATIENCE {
        if count(su, filter).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `n` clients of `user` on `db`, each inside a transaction (so each holds a server
/// connection of its own), then committed: the pool is left with `n` idle connections.
async fn leave_idle(h: &Herald, user: &str, db: &str, n: usize) {
    let mut clients = Vec::new();
    for _ in 0..n {
        let c = h.connect(user, None, db).await;
        c.batch_execute("BEGIN; SELECT 1").await.unwrap();
        clients.push(c);
    }
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }
}

fn db(pg: &TestPostgres, dbname: &str) -> DatabaseConfig {
    DatabaseConfig {
        host: Some(pg.host.clone()),
        port: Some(pg.port),
        dbname: Some(dbname.into()),
        ..DatabaseConfig::default()
    }
}

fn config(pg: &TestPostgres) -> Config {
    Config {
        query_wait_timeout: 20.0,
        ..herald::config_as_client_user(pg, PoolMode::Transaction, 10)
    }
}

/// max_db_connections = 2 over two users' pools: an idle connection of one user's pool is
/// closed for the other's client; eight clients of both users never get more than 2 server
/// connections, and all their queries complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_caps_every_pool_of_a_database() {
    let pg = postgres::shared();
    create_databases(pg, &["caps_db"]).await;
    let mut c = config(pg);
    c.databases.insert(
        "capdb".into(),
        DatabaseConfig {
            max_db_connections: Some(2),
            ..db(pg, "caps_db")
        },
    );
    let h = Herald::start(c).await;
    let filter = "datname = 'caps_db'";
    let sampler = Sampler::start(pg, filter).await;
    // The superuser's pool takes both connections, which then sit idle.
    leave_idle(&h, SUPERUSER, "capdb", 2).await;
    // Another user's client gets one of them closed for it (else it would wait out
    // query_wait_timeout: the idle ones live for server_idle_timeout).
    let other = h.connect(TRUST_USER, None, "capdb").await;
    let user: String = other
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, TRUST_USER);
    drop(other);
    let clients: Vec<(&str, &str)> = [SUPERUSER, TRUST_USER]
        .iter()
        .flat_map(|u| [(*u, "capdb"); 4])
        .collect();
    let errors = burst(h.port(), &clients, 3).await;
    let peak = sampler.peak().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(peak, 2, "server connections of caps_db at most");
}

/// max_user_connections = 3 for one user ([users] entry) over two databases: its idle
/// connections in one database are closed for its client in the other; eight clients never
/// get it more than 3 server connections. Another user is not capped by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_caps_a_user_across_databases() {
    let pg = postgres::shared();
    create_databases(pg, &["caps_user_a", "caps_user_b"]).await;
    let mut c = config(pg);
    c.databases.insert("capa".into(), db(pg, "caps_user_a"));
    c.databases.insert("capb".into(), db(pg, "caps_user_b"));
    c.users.insert(
        TRUST_USER.into(),
        UserConfig {
            max_user_connections: Some(3),
            ..UserConfig::default()
        },
    );
    let h = Herald::start(c).await;
    let filter = format!("usename = '{TRUST_USER}' AND datname IN ('caps_user_a', 'caps_user_b')");
    let sampler = Sampler::start(pg, &filter).await;
    leave_idle(&h, TRUST_USER, "capa", 3).await;
    let other = h.connect(TRUST_USER, None, "capb").await;
    other.batch_execute("SELECT 1").await.unwrap();
    drop(other);
    let mut clients = vec![(TRUST_USER, "capa"); 4];
    clients.extend([(TRUST_USER, "capb"); 4]);
    clients.extend([(SUPERUSER, "capa"); 4]);
    let su_sampler = Sampler::start(pg, "usename = 'postgres' AND datname = 'caps_user_a'").await;
    let errors = burst(h.port(), &clients, 3).await;
    let peak = sampler.peak().await;
    let su_peak = su_sampler.peak().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(peak, 3, "server connections of {TRUST_USER} at most");
    assert!(su_peak > 0, "the superuser's pool was used");
}

/// RELOAD resizes a cap in place: max_db_connections 1, then 3 for the next connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_resizes_a_cap() {
    let pg = postgres::shared();
    create_databases(pg, &["caps_reload"]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgherald.toml");
    let write = |cap: usize| {
        let mut c = config(pg);
        c.databases.insert(
            "capr".into(),
            DatabaseConfig {
                max_db_connections: Some(cap),
                ..db(pg, "caps_reload")
            },
        );
        std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
        c
    };
    let source = pgherald::live::Source {
        path: Some(path.clone()),
        overrides: Default::default(),
    };
    let h = Herald::start_from(write(1), source).await;
    let filter = "datname = 'caps_reload'";
    let mut peaks = Vec::new();
    for cap in [1, 3] {
        if cap != 1 {
            write(cap);
            h.app.reload().unwrap();
        }
        let sampler = Sampler::start(pg, filter).await;
        let errors = burst(h.port(), &[(SUPERUSER, "capr"); 6], 2).await;
        assert!(errors.is_empty(), "{errors:?}");
        peaks.push(sampler.peak().await);
    }
    assert_eq!(peaks, [1, 3]);
}

/// min_pool_size: a forced-user database keeps 3 server connections once it has been used,
/// with no client left, and server_idle_timeout does not close them; a database without a
/// forced user fills to its minimum while a client is connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_keeps_connections_open() {
    let pg = postgres::shared();
    create_databases(pg, &["caps_min_forced", "caps_min_client"]).await;
    let mut c = config(pg);
    c.server_idle_timeout = 1.0;
    c.min_pool_size = 2;
    c.databases.insert(
        "minforced".into(),
        DatabaseConfig {
            user: Some(SUPERUSER.into()),
            min_pool_size: Some(3),
            ..db(pg, "caps_min_forced")
        },
    );
    c.databases
        .insert("minclient".into(), db(pg, "caps_min_client"));
    let h = Herald::start(c).await;
    let su = pg.connect(SUPERUSER, None, postgres::DEFAULT_DB).await;
    let forced = "datname = 'caps_min_forced'";
    let client = h.connect(TRUST_USER, None, "minforced").await;
    client.batch_execute("SELECT 1").await.unwrap();
    drop(client);
    assert!(reaches(&su, forced, 3).await, "3 connections kept open");
    let pids = |rows: Vec<tokio_postgres::Row>| {
        rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>()
    };
    let sql = format!("SELECT pid FROM pg_stat_activity WHERE {forced} ORDER BY pid");
    let before = pids(su.query(&sql, &[]).await.unwrap());
    // Three reaper rounds past server_idle_timeout: the minimum stays, the same connections.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pids(su.query(&sql, &[]).await.unwrap()), before);
    assert_eq!(h.app.clients.load(Ordering::Acquire), 0);

    let client = h.connect(TRUST_USER, None, "minclient").await;
    client.batch_execute("SELECT 1").await.unwrap();
    assert!(
        reaches(&su, "datname = 'caps_min_client'", 2).await,
        "the global min_pool_size while a client is connected"
    );
}

/// One pgbouncer.ini with min_pool_size, max_db_connections and a [users]
/// max_user_connections, served by PgBouncer and then by pgherald: each keeps the minimum
/// while a client is connected, and stays within both caps under the same burst. (The user
/// logs in as itself: PgBouncer 1.18 does not apply a [users] entry to a forced user, where
/// 1.25's documentation, and pgherald, count the server connection's user.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_ini_limits_are_honoured_like_pgbouncer() {
    let pg = postgres::shared();
    create_databases(pg, &["caps_ini_a", "caps_ini_b"]).await;
    let files = pgbouncer::write(
        &format!(
            "inia = host=127.0.0.1 port={p} dbname=caps_ini_a user={SUPERUSER} min_pool_size=2 max_db_connections=3\n\
             inib = host=127.0.0.1 port={p} dbname=caps_ini_b\n\
             [users]\n{TRUST_USER} = max_user_connections=2",
            p = pg.port
        ),
        "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 10\nquery_wait_timeout = 60",
        &[(SUPERUSER, ""), (TRUST_USER, "")],
    );
    let loaded = ini::load(&files.ini).unwrap_or_else(|e| panic!("{e}"));
    let w = loaded.warnings.join("\n");
    for key in [
        "min_pool_size",
        "max_db_connections",
        "max_user_connections",
    ] {
        assert!(!w.contains(key), "{w}");
    }
    let su = pg.connect(SUPERUSER, None, postgres::DEFAULT_DB).await;
    let (a, b) = ("datname = 'caps_ini_a'", "datname = 'caps_ini_b'");
    let scenario = |port: u16| {
        let su = &su;
        async move {
            // PgBouncer 1.18 keeps min_pool_size while the pool has a client (newer
            // versions also without one for forced users, as pgherald does: see above).
            let cs = format!("host=127.0.0.1 port={port} user={SUPERUSER} dbname=inia");
            let (first, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
                .await
                .unwrap();
            let conn = tokio::spawn(conn);
            first.batch_execute("SELECT 1").await.unwrap();
            let min_kept = reaches(su, a, 2).await;
            drop(first);
            let _ = conn.await;
            let (sa, sb) = (Sampler::start(pg, a).await, Sampler::start(pg, b).await);
            let mut clients = vec![(SUPERUSER, "inia"); 6];
            clients.extend([(TRUST_USER, "inib"); 6]);
            let errors = burst(port, &clients, 2).await;
            (min_kept, sa.peak().await, sb.peak().await, errors)
        }
    };
    let bouncer = Bouncer::start(&files);
    let theirs = scenario(bouncer.port).await;
    let log = bouncer.log();
    drop(bouncer);
    for f in [a, b] {
        assert!(reaches(&su, f, 0).await, "PgBouncer's connections closed");
    }
    let mut config = loaded.config;
    config.listen = "127.0.0.1:0".into();
    let h = Herald::start(config).await;
    let ours = scenario(h.port()).await;
    assert_eq!(ours, theirs, "pgbouncer log:\n{log}");
    assert_eq!(ours, (true, 3, 2, vec![]));
}
