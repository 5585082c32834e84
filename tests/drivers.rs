//! The driver compatibility suite (README "Driver compatibility"): real client drivers of other
//! languages run as subprocesses against pgherald in transaction mode, with more client
//! connections than the pool holds. Each script under `tests/drivers/` checks, with the driver's
//! ordinary API: a parameterized prepared query repeated across many transactions, a transaction
//! rolled back, and LISTEN on one connection with NOTIFY and `SELECT pg_notify($1, $2)` from
//! another, received through the driver's notification API with the right channel, payload and
//! sender pid (the one the sender was given at login). Each script prints what it checked and
//! exits non-zero on failure.
//!
//! The toolchains and packages are installed by `.ci/run`. A missing one fails its test with a
//! message naming what to install: the suite never skips. The Rust drivers (tokio-postgres,
//! sqlx) are in `tests/drivers_rust.rs`.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgherald::config::PoolMode;
use support::herald::{self, Herald};
use support::postgres::{self, DEFAULT_DB, SUPERUSER};

/// Pool mode of the suite: transaction pooling is what drivers find hardest.
const POOL_MODE: PoolMode = PoolMode::Transaction;
/// Server connections per pool: fewer than [`CLIENTS`]. The scripts' check that a prepared
/// statement runs on every server connection (`DRIVER_POOL_SIZE`) needs exactly 2.
const POOL_SIZE: usize = 2;
/// Concurrent client connections each script runs the prepared-query scenario on.
const CLIENTS: usize = 6;
/// Transactions per client connection.
const ITERATIONS: usize = 50;
/// A script still running after this is killed and its test fails.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
/// Debian's libpostgresql-jdbc-java puts pgjdbc here; `PGJDBC_JAR` overrides it.
const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// `tests/drivers` in the source tree.
fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// `name` looked up in `PATH` (or taken as is when it holds a slash).
fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The program, or a failed test that says what to install.
fn require(program: &str, driver: &str, install: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!(
            "`{program}` was not found (on PATH), so the {driver} driver test cannot run: install {install} \
             (.ci/run does). The driver suite fails rather than skips when a toolchain is missing."
        )
    })
}

/// The Python interpreter: `$PYTHON`, else `python3`.
fn python() -> PathBuf {
    let name = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    require(&name, "Python", "CPython 3 with pip")
}

/// Runs one driver script against a fresh pgherald and checks that it passed.
async fn run_driver(
    driver: &'static str,
    channel: &'static str,
    command: impl FnOnce() -> Command + Send + 'static,
) {
    let pg = postgres::shared();
    let h = Herald::start(herald::config(pg, POOL_MODE, POOL_SIZE)).await;
    let port = h.port();
    let outcome = tokio::task::spawn_blocking(move || run_script(driver, command(), port))
        .await
        .expect("the script runner panicked");
    let stdout = match outcome {
        Ok(stdout) => stdout,
        Err(report) => panic!("{driver} driver test failed: {report}"),
    };
    assert!(
        stdout.contains("checks passed"),
        "{driver}: the script exited 0 without its closing line:\n{stdout}"
    );
    if POOL_MODE == PoolMode::Transaction {
        assert!(
            stdout.contains("prepared statement ran on both server connections"),
            "{driver}: the script did not check that a prepared statement ran on both servers:\n{stdout}"
        );
    }
    pg.assert_no_notify_reached(driver, channel);
    drop(h);
}

/// Runs `cmd HOST PORT USER DBNAME` with the suite's environment; `Ok(stdout)` if it exits 0,
/// otherwise a report with its exit status, stdout and stderr.
fn run_script(driver: &str, mut cmd: Command, port: u16) -> Result<String, String> {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k); // libpq-style settings of the caller must not leak in
        }
    }
    for k in ["DRIVER_CLIENTS", "DRIVER_ITERATIONS", "DRIVER_POOL_SIZE"] {
        cmd.env_remove(k);
    }
    cmd.args(["127.0.0.1", &port.to_string(), SUPERUSER, DEFAULT_DB])
        .env("DRIVER_CLIENTS", CLIENTS.to_string())
        .env("DRIVER_ITERATIONS", ITERATIONS.to_string());
    if POOL_MODE == PoolMode::Transaction {
        // The scripts then pin one connection's prepared statement onto each server in turn.
        cmd.env("DRIVER_POOL_SIZE", POOL_SIZE.to_string());
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    println!("{driver}: running {shown}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{driver}: cannot start {shown}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    println!("{stdout}");
    if !stderr.is_empty() {
        println!("{driver} stderr:\n{stderr}");
    }
    match status {
        Some(s) if s.success() => Ok(stdout),
        Some(s) => Err(format!(
            "{shown} exited with {s}\n--- stdout\n{stdout}--- stderr\n{stderr}"
        )),
        None => Err(format!(
            "{shown} was killed after {SCRIPT_TIMEOUT:?}\n--- stdout\n{stdout}--- stderr\n{stderr}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg() {
    let python = python();
    run_driver("psycopg", "drv_psycopg_ch", move || {
        let mut cmd = Command::new(python);
        cmd.arg(drivers_dir().join("python/test_psycopg.py"));
        cmd
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    let python = python();
    run_driver("asyncpg", "drv_asyncpg_ch", move || {
        let mut cmd = Command::new(python);
        cmd.arg(drivers_dir().join("python/test_asyncpg.py"));
        cmd
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let node = require("node", "node-postgres", "Node.js (Debian's nodejs and npm)");
    let dir = drivers_dir().join("node");
    assert!(
        dir.join("node_modules/pg/package.json").is_file(),
        "node-postgres is not installed in {}: run `npm ci` there (.ci/run does)",
        dir.display()
    );
    run_driver("node-postgres", "drv_node_ch", move || {
        let mut cmd = Command::new(node);
        cmd.arg(dir.join("test_pg.js")).current_dir(dir);
        cmd
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc() {
    let install = "a Java 17 JDK (Debian's openjdk-17-jdk-headless)";
    let javac = require("javac", "pgjdbc", install);
    let java = require("java", "pgjdbc", install);
    let jar = PathBuf::from(std::env::var("PGJDBC_JAR").unwrap_or_else(|_| PGJDBC_JAR.into()));
    assert!(
        jar.is_file(),
        "pgjdbc is missing: {} does not exist; install Debian's libpostgresql-jdbc-java \
         (.ci/run does) or point PGJDBC_JAR at a pgjdbc jar",
        jar.display()
    );
    let classes = tempfile::tempdir().expect("temporary directory for the classes");
    let out = Command::new(&javac)
        .arg("-cp")
        .arg(&jar)
        .arg("-d")
        .arg(classes.path())
        .arg(drivers_dir().join("java/DriverTest.java"))
        .output()
        .expect("run javac");
    assert!(
        out.status.success(),
        "javac failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let class_path = std::env::join_paths([classes.path(), jar.as_path()]).expect("class path");
    run_driver("pgjdbc", "drv_jdbc_ch", move || {
        let mut cmd = Command::new(java);
        cmd.arg("-cp").arg(class_path).arg("DriverTest");
        cmd
    })
    .await;
}
