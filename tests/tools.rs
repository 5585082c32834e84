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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_through_pgherald() {
    let h = Herald::start(herald::config(postgres::shared(), PoolMode::Transaction, 2)).await;
    let port = h.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run(tool("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-d",
                DEFAULT_DB,
            ])
            .args([
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
