//! psql and pgbench through pgherald in transaction mode.

mod support;

use std::process::Command;

use pgherald::config::PoolMode;
use support::herald::{self, Herald};
use support::postgres::{self, DB2, DEFAULT_DB, SUPERUSER};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stdout}\n{stderr}");
    stdout + &stderr
}

fn tool(name: &str) -> Command {
    let path = postgres::bindir().join(name);
    let mut c = Command::new(if path.exists() { path } else { name.into() });
    c.env("PGCONNECT_TIMEOUT", "10");
    c
}

/// psql in unaligned tuples-only mode, as the superuser, to 127.0.0.1:`port`.
fn psql(port: &str) -> Command {
    let mut c = tool("psql");
    c.args([
        "-X",
        "-A",
        "-t",
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-U",
        SUPERUSER,
        "-d",
        DEFAULT_DB,
    ]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_through_pgherald() {
    let h = Herald::start(herald::config(postgres::shared(), PoolMode::Transaction, 2)).await;
    let port = h.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run(psql(&port).args([
            "-c",
            "drop table if exists psql_t",
            "-c",
            "create table psql_t(id int primary key, note text)",
            "-c",
            "insert into psql_t values (1, 'one'), (2, 'two')",
            "-c",
            "\\d psql_t",
            "-c",
            "select string_agg(note, '+' order by id) from psql_t",
        ]))
    })
    .await
    .unwrap();
    assert!(out.contains("one+two"), "{out}");
    assert!(out.contains("note"), "\\d output missing: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_and_tpcb_like() {
    let h = Herald::start(herald::config(postgres::shared(), PoolMode::Transaction, 4)).await;
    let port = h.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let base = ["-h", "127.0.0.1", "-p", port.as_str(), "-U", SUPERUSER];
        run(tool("pgbench")
            .args(base)
            .args(["-i", "-s", "1", "-q", DB2]));
        let mut all = String::new();
        for mode in [["-b", "select-only"], ["-b", "tpcb-like"]] {
            let out = run(tool("pgbench")
                .args(base)
                .args(mode)
                .args(["-c", "8", "-j", "2", "-T", "4", "-n", DB2]));
            assert!(out.contains("number of failed transactions: 0 "), "{out}");
            assert!(out.contains("tps = "), "{out}");
            all.push_str(&out);
        }
        all
    })
    .await
    .unwrap();
    println!("{out}");
}

#[test]
fn bad_config_is_one_line_naming_the_key_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "default_pool_size = 0\nupstream = \"postgres://x@127.0.0.1:1\"\n",
            "default_pool_size",
        ),
        ("pool_mode = \"statement\"\n", "statement"),
        (
            "listen = \"0.0.0.0:6432\"\nupstream = \"postgres://x@127.0.0.1:1\"\n",
            "listen",
        ),
        ("no_such_key = 1\n", "no_such_key"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pgherald"))
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key), "{stderr}");
    }
}

#[test]
fn binary_serves_and_exits_0_on_sigterm() {
    let pg = postgres::shared();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgherald"))
        .args([
            "--upstream",
            &pg.superuser_url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "pgherald did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = run(psql(&port.to_string()).args(["-c", "select 40 + 2"]));
    assert!(out.contains("42"), "{out}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
