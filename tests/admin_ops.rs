//! Operating pgherald: live reload (RELOAD and SIGHUP) while pgbench runs, PAUSE/RESUME
//! under load with LISTEN/NOTIFY still served, and /metrics parsed by a Prometheus parser.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use pgherald::config::{Config, PoolMode};
use support::console::{self, get};
use support::herald::{self, Herald};
use support::postgres::{self, DB1, DB2, SUPERUSER};
use support::raw::Raw;

const WAIT: Duration = Duration::from_secs(30);

fn pgbench(port: u16, user: &str, password: &str, args: &[&str]) -> Command {
    let mut c = Command::new(postgres::bindir().join("pgbench"));
    c.env("PGPASSWORD", password).env("PGCONNECT_TIMEOUT", "10");
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user]);
    c.args(args);
    c
}

fn ok(out: &Output) -> String {
    let s =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{s}");
    s
}

fn write_config(path: &Path, pg_port: u16, pool_size: &str, userlist: &Path) {
    let text = format!(
        "listen = \"127.0.0.1:0\"\n\
         upstream = \"postgres://{SUPERUSER}@127.0.0.1:{pg_port}\"\n\
         default_pool_size = {pool_size}\n\
         admin_users = \"admin_u\"\n\
         [auth]\ntype = \"md5\"\nfile = \"{}\"\n",
        userlist.display()
    );
    std::fs::write(path, text).unwrap();
}

fn write_users(path: &Path, users: &[&str]) {
    let text: String = users
        .iter()
        .map(|u| format!("\"{u}\" \"{u}-pw\"\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

async fn console(h: &Herald) -> tokio_postgres::Client {
    h.connect("admin_u", Some("admin_u-pw"), "pgbouncer").await
}

async fn show(c: &tokio_postgres::Client, cmd: &str) -> Vec<tokio_postgres::SimpleQueryRow> {
    c.simple_query(cmd)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

async fn pool_size_of(c: &tokio_postgres::Client, db: &str) -> String {
    show(c, "SHOW DATABASES")
        .await
        .iter()
        .find(|r| r.get("name") == Some(db))
        .and_then(|r| r.get("pool_size").map(str::to_string))
        .unwrap_or_default()
}

async fn servers_of(c: &tokio_postgres::Client, db: &str) -> usize {
    show(c, "SHOW POOLS")
        .await
        .iter()
        .filter(|r| r.get("database") == Some(db))
        .map(|r| {
            let n = |k| r.get(k).unwrap_or("0").parse::<usize>().unwrap();
            n("sv_active") + n("sv_idle")
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_while_pgbench_runs() {
    let pg = postgres::shared();
    let dir = tempfile::tempdir().unwrap();
    let (cfg_path, users_path) = (
        dir.path().join("pgherald.toml"),
        dir.path().join("users.txt"),
    );
    write_users(&users_path, &["admin_u", "alice", "carol"]);
    write_config(&cfg_path, pg.port, "2", &users_path);
    let config = Config::from_file(&cfg_path).unwrap();
    let source = pgherald::live::Source {
        path: Some(cfg_path.clone()),
        overrides: Default::default(),
    };
    let h = Herald::start_from(config, source).await;
    let port = h.port();
    tokio::task::spawn_blocking(move || {
        ok(
            &pgbench(port, "alice", "alice-pw", &["-i", "-s", "1", "-q", DB1])
                .output()
                .unwrap(),
        )
    })
    .await
    .unwrap();
    let bench = tokio::task::spawn_blocking(move || {
        pgbench(
            port,
            "alice",
            "alice-pw",
            &["-S", "-c", "6", "-j", "2", "-T", "6", "-n", DB1],
        )
        .output()
        .unwrap()
    });
    let admin = console(&h).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pool_size_of(&admin, DB1).await, "2");
    // A new pool size and a changed user list, while pgbench runs.
    write_users(&users_path, &["admin_u", "alice", "bob"]);
    write_config(&cfg_path, pg.port, "4", &users_path);
    admin.batch_execute("RELOAD").await.unwrap();
    assert_eq!(pool_size_of(&admin, DB1).await, "4");
    let deadline = tokio::time::Instant::now() + WAIT;
    while servers_of(&admin, DB1).await < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pool never grew past 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bob = h.connect("bob", Some("bob-pw"), DB1).await;
    bob.simple_query("select 1").await.unwrap();
    let e = h
        .try_connect("carol", Some("carol-pw"), DB1)
        .await
        .expect_err("carol removed");
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("28P01"));
    // An invalid file changes nothing; RELOAD says which key.
    std::fs::write(&cfg_path, "default_pool_size = \"many\"\n").unwrap();
    let e = admin.batch_execute("RELOAD").await.unwrap_err();
    let db = e.as_db_error().expect("RELOAD error");
    assert_eq!(
        db.message(),
        "RELOAD failed, see logs for additional details"
    );
    assert!(
        db.detail().is_some_and(|d| d.contains("default_pool_size")),
        "{db:?}"
    );
    assert_eq!(pool_size_of(&admin, DB1).await, "4");
    let out = ok(&bench.await.unwrap());
    assert!(out.contains("number of failed transactions: 0 "), "{out}");
    // SIGHUP reloads too.
    write_config(&cfg_path, pg.port, "5", &users_path);
    let st = Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = tokio::time::Instant::now() + WAIT;
    while pool_size_of(&admin, DB1).await != "5" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Clients connected before every reload are still there.
    bob.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_under_load_keeps_listen_notify() {
    let cfg = Config {
        admin_users: "admin_u".into(),
        ..herald::config(postgres::shared(), PoolMode::Transaction, 2)
    };
    let h = Herald::start(cfg).await;
    let port = h.port();
    tokio::task::spawn_blocking(move || {
        ok(&pgbench(port, SUPERUSER, "", &["-i", "-s", "1", "-q", DB2])
            .output()
            .unwrap())
    })
    .await
    .unwrap();
    let bench = tokio::task::spawn_blocking(move || {
        pgbench(
            port,
            SUPERUSER,
            "",
            &["-S", "-c", "4", "-j", "2", "-T", "5", "-n", DB2],
        )
        .output()
        .unwrap()
    });
    let mut notes = support::listen::connect(&h.conn_str(SUPERUSER, None, DB2)).await;
    notes
        .client
        .batch_execute("LISTEN paused_ch")
        .await
        .unwrap();
    // A client that logs in before the pause (a login while paused waits too, as in PgBouncer).
    let (probe, conn) = tokio_postgres::connect(
        &(h.conn_str(SUPERUSER, None, DB2) + " application_name=paused_probe"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (mut admin, _) = Raw::login(h.port(), "admin_u", "pgbouncer").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, _, err) = console::query(&mut admin, &format!("PAUSE {DB2}")).await;
    assert!(err.is_none(), "{err:?}");
    // Paused: no server connection is lent or kept.
    let (cols, rows, _) = console::query(&mut admin, "SHOW POOLS").await;
    let row = rows
        .iter()
        .find(|r| get(&cols, r, "database") == Some(DB2))
        .unwrap();
    assert_eq!(get(&cols, row, "sv_active"), Some("0"));
    assert_eq!(get(&cols, row, "sv_idle"), Some("0"));
    let (cols, rows, _) = console::query(&mut admin, "SHOW DATABASES").await;
    let row = rows
        .iter()
        .find(|r| get(&cols, r, "name") == Some(DB2))
        .unwrap();
    assert_eq!(get(&cols, row, "paused"), Some("1"));
    // LISTEN/NOTIFY keep working: pgherald serves them without a server.
    let n = h.connect(SUPERUSER, None, DB2).await;
    n.batch_execute("NOTIFY paused_ch, 'while paused'")
        .await
        .unwrap();
    let got = notes.next_within(WAIT).await;
    assert_eq!(got.payload(), "while paused");
    // A query waits instead of failing, and no server is assigned while paused.
    let assigned = |cols: &[(String, u32)], rows: &[Vec<Option<String>>]| {
        rows.iter()
            .find(|r| get(cols, r, "database") == Some(DB2))
            .and_then(|r| get(cols, r, "server_assignment_count").map(str::to_string))
    };
    let (cols, rows, _) = console::query(&mut admin, "SHOW STATS_TOTALS").await;
    let before = assigned(&cols, &rows);
    let q = tokio::spawn(async move { probe.simple_query("select 42").await.map(|_| ()) });
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (cols, rows, _) = console::query(&mut admin, "SHOW CLIENTS").await;
        if rows.iter().any(|r| {
            get(&cols, r, "application_name") == Some("paused_probe")
                && get(&cols, r, "state") == Some("waiting")
        }) {
            break;
        }
        assert!(
            !q.is_finished(),
            "a query ran while its database was paused"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no client waits while paused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cols, rows, _) = console::query(&mut admin, "SHOW STATS_TOTALS").await;
    assert_eq!(
        assigned(&cols, &rows),
        before,
        "servers were assigned while paused"
    );
    assert!(!q.is_finished());
    let (_, _, err) = console::query(&mut admin, &format!("RESUME {DB2}")).await;
    assert!(err.is_none(), "{err:?}");
    q.await
        .unwrap()
        .expect("the waiting query runs after RESUME");
    let out = ok(&bench.await.unwrap());
    assert!(out.contains("number of failed transactions: 0 "), "{out}");
}

async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("a Prometheus text parser accepts it")
}

fn value(s: &prometheus_parse::Scrape, name: &str, db: &str) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && x.labels.get("database") == Some(db))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let cfg = Config {
        metrics_listen: Some("127.0.0.1:0".into()),
        ..herald::config(postgres::shared(), PoolMode::Transaction, 2)
    };
    let h = Herald::start(cfg).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let addr = loop {
        if let Some(a) = *h.app.metrics_addr.lock().unwrap() {
            break a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never bound"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let c = h.connect(SUPERUSER, None, DB1).await;
    c.simple_query("select 1").await.unwrap();
    let before = scrape(addr).await;
    let l = h.connect(SUPERUSER, None, DB1).await;
    l.batch_execute("LISTEN m_ch").await.unwrap();
    for _ in 0..5 {
        c.simple_query("select 1").await.unwrap();
    }
    c.batch_execute("NOTIFY m_ch").await.unwrap();
    let after = scrape(addr).await;
    for name in [
        "pgherald_transactions_total",
        "pgherald_queries_total",
        "pgherald_received_bytes_total",
        "pgherald_sent_bytes_total",
        "pgherald_server_assignments_total",
        "pgherald_pool_wait_seconds_count",
    ] {
        let (b, a) = (value(&before, name, DB1), value(&after, name, DB1));
        assert!(
            a >= b + 5.0 || (name.contains("bytes") && a > b),
            "{name}: {b} -> {a}"
        );
    }
    let global =
        |s: &prometheus_parse::Scrape, n: &str| s.samples.iter().filter(|x| x.metric == n).count();
    assert_eq!(global(&after, "pgherald_notifications_published_total"), 1);
    assert_eq!(value(&after, "pgherald_clients_active", DB1), 2.0);
    // Labels: database and user only (plus the histogram's le).
    for x in &after.samples {
        for (k, _) in x.labels.iter() {
            assert!(
                ["database", "user", "le"].contains(&k.as_str()),
                "{} has {k}",
                x.metric
            );
        }
    }
    let hist = after.samples.iter().any(|x| {
        x.metric == "pgherald_pool_wait_seconds"
            && matches!(x.value, prometheus_parse::Value::Histogram(_))
    });
    let buckets = after
        .samples
        .iter()
        .any(|x| x.metric.starts_with("pgherald_pool_wait_seconds"));
    assert!(hist || buckets, "wait histogram missing");
}
