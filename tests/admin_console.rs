//! The admin console on the virtual database `pgbouncer` (alias `pgherald`): every SHOW's
//! columns, names, types and order against PgBouncer 1.25.2's (src/admin.c, src/stats.c,
//! doc/usage.md), access by admin_users / stats_users, PgBouncer's error texts, psql and
//! tokio-postgres as console clients, KILL_CLIENT.

mod support;

use std::process::Command;

use pgherald::config::{Config, PoolMode};
use support::console::{self, get, oids};
use support::herald::{self, Herald};
use support::postgres::{self, DEFAULT_DB, SUPERUSER};
use support::raw::Raw;

/// PgBouncer 1.25.2's columns: (command, PgBouncer's type letters, names in order).
const PGBOUNCER_1_25: &[(&str, &str, &[&str])] = &[
    (
        "SHOW POOLS",
        "ssiiiiiiiiiiiiiss",
        &[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode",
            "load_balance_hosts",
        ],
    ),
    ("SHOW CLIENTS", "ssssssisiTTiiississii", SOCKET),
    ("SHOW SERVERS", "ssssssisiTTiiississii", SOCKET),
    (
        "SHOW STATS",
        "sNNNNNNNNNNNNNNNNNNNNNNNN",
        &[
            "database",
            "total_server_assignment_count",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "total_client_parse_count",
            "total_server_parse_count",
            "total_bind_count",
            "total_client_login_count",
            "avg_server_assignment_count",
            "avg_xact_count",
            "avg_query_count",
            "avg_recv",
            "avg_sent",
            "avg_xact_time",
            "avg_query_time",
            "avg_wait_time",
            "avg_client_parse_count",
            "avg_server_parse_count",
            "avg_bind_count",
            "avg_client_login_count",
        ],
    ),
    (
        "SHOW STATS_TOTALS",
        "sNNNNNNNNNNNN",
        &[
            "database",
            "server_assignment_count",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
            "client_parse_count",
            "server_parse_count",
            "bind_count",
            "client_login_count",
        ],
    ),
    (
        "SHOW STATS_AVERAGES",
        "sNNNNNNNNNNNN",
        &[
            "database",
            "server_assignment_count",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
            "avg_client_parse_count",
            "avg_server_parse_count",
            "avg_bind_count",
            "avg_client_login_count",
        ],
    ),
    (
        "SHOW DATABASES",
        "ssissiiiissiiiiii",
        &[
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "min_pool_size",
            "reserve_pool_size",
            "server_lifetime",
            "pool_mode",
            "load_balance_hosts",
            "max_connections",
            "current_connections",
            "max_client_connections",
            "current_client_connections",
            "paused",
            "disabled",
        ],
    ),
    (
        "SHOW USERS",
        "ssssiiii",
        &[
            "name",
            "pool_size",
            "reserve_pool_size",
            "pool_mode",
            "max_user_connections",
            "current_connections",
            "max_user_client_connections",
            "current_client_connections",
        ],
    ),
    (
        "SHOW CONFIG",
        "ssss",
        &["key", "value", "default", "changeable"],
    ),
    ("SHOW LISTS", "si", &["list", "items"]),
    ("SHOW STATE", "ss", &["key", "value"]),
    ("SHOW VERSION", "s", &["version"]),
];

const SOCKET: &[&str] = &[
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];

fn admin_config() -> Config {
    Config {
        admin_users: "admin_u".into(),
        stats_users: "stats_u, other".into(),
        ..herald::config(postgres::shared(), PoolMode::Transaction, 2)
    }
}

async fn traffic(h: &Herald) -> tokio_postgres::Client {
    let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    for _ in 0..3 {
        c.simple_query("select 1").await.unwrap();
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_has_pgbouncers_columns_names_types_and_order() {
    let h = Herald::start(admin_config()).await;
    let _c = traffic(&h).await;
    for db in ["pgbouncer", "pgherald"] {
        let (mut r, _) = Raw::login(h.port(), "admin_u", db).await;
        for (cmd, letters, names) in PGBOUNCER_1_25 {
            let (cols, rows, err) = console::query(&mut r, cmd).await;
            assert!(err.is_none(), "{cmd}: {err:?}");
            let got: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(&got, names, "{cmd}: column names and order");
            let types: Vec<u32> = cols.iter().map(|(_, t)| *t).collect();
            assert_eq!(types, oids(letters), "{cmd}: column types");
            for row in &rows {
                assert_eq!(row.len(), names.len(), "{cmd}: row width");
            }
        }
    }
    // The rows say what happened.
    let (mut r, _) = Raw::login(h.port(), "admin_u", "pgbouncer").await;
    let (cols, rows, _) = console::query(&mut r, "SHOW POOLS").await;
    let pool = rows
        .iter()
        .find(|row| get(&cols, row, "database") == Some(DEFAULT_DB))
        .expect("pool row");
    assert_eq!(get(&cols, pool, "user"), Some(SUPERUSER));
    assert_eq!(get(&cols, pool, "cl_active"), Some("1"));
    assert_eq!(get(&cols, pool, "pool_mode"), Some("transaction"));
    let (cols, rows, _) = console::query(&mut r, "SHOW STATS_TOTALS").await;
    let row = rows
        .iter()
        .find(|row| get(&cols, row, "database") == Some(DEFAULT_DB))
        .expect("stats row");
    let xacts: u64 = get(&cols, row, "xact_count").unwrap().parse().unwrap();
    assert!(xacts >= 3, "{row:?}");
    let (cols, rows, _) = console::query(&mut r, "SHOW CLIENTS").await;
    assert!(rows
        .iter()
        .any(|row| get(&cols, row, "user") == Some(SUPERUSER)
            && get(&cols, row, "type") == Some("C")));
    let (_, rows, _) = console::query(&mut r, "show state;").await;
    assert_eq!(rows[0], vec![Some("active".into()), Some("yes".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgheralds_own_shows() {
    let h = Herald::start(admin_config()).await;
    let l = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    l.batch_execute("LISTEN admin_ch").await.unwrap();
    let n = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    n.batch_execute("NOTIFY admin_ch, 'x'").await.unwrap();
    let (mut r, _) = Raw::login(h.port(), "stats_u", "pgherald").await;
    let (cols, rows, err) = console::query(&mut r, "SHOW CHANNELS").await;
    assert!(err.is_none(), "{err:?}");
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["database", "channel", "listeners", "published", "delivered"]
    );
    let row = rows
        .iter()
        .find(|r| get(&cols, r, "channel") == Some("admin_ch"))
        .expect("channel row");
    assert_eq!(get(&cols, row, "listeners"), Some("1"));
    assert_eq!(get(&cols, row, "published"), Some("1"));
    let (cols, rows, _) = console::query(&mut r, "SHOW LISTENERS").await;
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "client",
            "database",
            "user",
            "channels",
            "queued_now",
            "max_queued",
            "delivered"
        ]
    );
    assert!(rows.iter().any(
        |r| get(&cols, r, "user") == Some(SUPERUSER) && get(&cols, r, "channels") == Some("1")
    ));
    let (cols, _, err) = console::query(&mut r, "SHOW RELAYS").await;
    assert!(err.is_none(), "{err:?}");
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "database",
            "state",
            "channels",
            "relayed",
            "reconnects",
            "last_error"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_and_errors_are_pgbouncers() {
    let h = Herald::start(admin_config()).await;
    // Not in admin_users or stats_users: FATAL "not allowed".
    let mut r = Raw::connect(h.port()).await;
    r.startup(3, 0, &[("user", SUPERUSER), ("database", "pgbouncer")])
        .await;
    let msgs = r.until_ready().await;
    let e = msgs.iter().find(|m| m.tag == b'E').expect("refused");
    assert_eq!(e.field(b'M').as_deref(), Some("not allowed"));
    assert_eq!(e.field(b'S').as_deref(), Some("FATAL"));
    // A stats user may SHOW, not act.
    let (mut r, _) = Raw::login(h.port(), "other", "pgbouncer").await;
    let (_, _, err) = console::query(&mut r, "SHOW POOLS").await;
    assert!(err.is_none());
    for cmd in ["RELOAD", "PAUSE", "KILL_CLIENT 1", "SHUTDOWN"] {
        let (_, _, err) = console::query(&mut r, cmd).await;
        let err = err.unwrap_or_else(|| panic!("{cmd} must be refused"));
        assert_eq!(
            err.field(b'M').as_deref(),
            Some("admin access needed"),
            "{cmd}"
        );
    }
    // Unknown commands.
    let (mut r, _) = Raw::login(h.port(), "admin_u", "pgbouncer").await;
    for cmd in ["FOO", "SHOW NOTHING", "select 1", "show pools now"] {
        let (_, _, err) = console::query(&mut r, cmd).await;
        let err = err.unwrap_or_else(|| panic!("{cmd} must fail"));
        assert_eq!(
            err.field(b'M'),
            Some(format!("invalid command '{cmd}', use SHOW HELP;")),
        );
        assert_eq!(err.field(b'C').as_deref(), Some("08P01"));
    }
    let (_, _, err) = console::query(&mut r, "PAUSE nosuchdb").await;
    assert_eq!(
        err.and_then(|e| e.field(b'M')).as_deref(),
        Some("no such database: nosuchdb")
    );
    let (_, _, err) = console::query(&mut r, "RESUME").await;
    assert_eq!(
        err.and_then(|e| e.field(b'M')).as_deref(),
        Some("pooler is not paused/suspended")
    );
    let (_, _, err) = console::query(&mut r, "DISABLE").await;
    assert_eq!(
        err.and_then(|e| e.field(b'M')).as_deref(),
        Some("a database is required")
    );
    // The session still works after the errors.
    let (_, rows, err) = console::query(&mut r, "SHOW VERSION").await;
    assert!(err.is_none());
    assert!(rows[0][0].as_deref().unwrap().starts_with("pgherald "));
    // tokio-postgres: simple protocol works, the extended protocol is refused.
    let c = h.connect("admin_u", None, "pgbouncer").await;
    let msgs = c.simple_query("SHOW LISTS").await.unwrap();
    let rows = msgs
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, 14);
    let e = c.query("SHOW POOLS", &[]).await.unwrap_err();
    assert!(
        e.as_db_error().is_some_and(
            |d| d.message() == "extended query protocol not supported by admin console"
        ),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_and_disable() {
    let h = Herald::start(admin_config()).await;
    let victim = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    victim.simple_query("select 1").await.unwrap();
    let (mut r, _) = Raw::login(h.port(), "admin_u", "pgbouncer").await;
    let (cols, rows, _) = console::query(&mut r, "SHOW CLIENTS").await;
    let id = rows
        .iter()
        .find(|row| get(&cols, row, "user") == Some(SUPERUSER))
        .and_then(|row| get(&cols, row, "id"))
        .expect("client id")
        .to_string();
    let (_, _, err) = console::query(&mut r, &format!("KILL_CLIENT {id}")).await;
    assert!(err.is_none(), "{err:?}");
    let e = victim.simple_query("select 1").await.unwrap_err();
    assert!(
        format!("{e:?}").contains("admin forced disconnect") || victim.is_closed(),
        "{e:?}"
    );
    let (_, _, err) = console::query(&mut r, "KILL_CLIENT 999999").await;
    assert_eq!(
        err.and_then(|e| e.field(b'M')).as_deref(),
        Some("client not found")
    );
    // DISABLE refuses new clients with PgBouncer's message; ENABLE lets them in again.
    let (_, _, err) = console::query(&mut r, &format!("DISABLE {DEFAULT_DB}")).await;
    assert!(err.is_none(), "{err:?}");
    let e = h
        .try_connect(SUPERUSER, None, DEFAULT_DB)
        .await
        .expect_err("refused");
    assert_eq!(
        e.as_db_error().map(|d| d.message()),
        Some(format!("database \"{DEFAULT_DB}\" is disabled").as_str())
    );
    let (_, _, err) = console::query(&mut r, &format!("ENABLE {DEFAULT_DB}")).await;
    assert!(err.is_none(), "{err:?}");
    h.connect(SUPERUSER, None, DEFAULT_DB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_every_console_show() {
    let h = Herald::start(admin_config()).await;
    let _c = traffic(&h).await;
    let port = h.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(postgres::bindir().join("psql"));
        cmd.args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "admin_u",
            "-d",
            "pgbouncer",
        ]);
        for (show, _, _) in PGBOUNCER_1_25 {
            cmd.args(["-c", show]);
        }
        cmd.args(["-c", "SHOW CHANNELS", "-c", "RECONNECT", "-c", "WAIT_CLOSE"]);
        let out = cmd.output().expect("psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    assert!(out.contains("cl_waiting_cancel_req"), "{out}");
    assert!(out.contains("total_xact_count"), "{out}");
    assert!(out.contains("WAIT_CLOSE"), "{out}");
}
