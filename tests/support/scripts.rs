//! The driver scripts of `tests/drivers/` (psycopg, asyncpg, node-postgres, pgjdbc) run as
//! subprocesses against a pgherald: finding each toolchain (a missing one fails the test with
//! what to install, never a skip), building pgjdbc's class, and running a script with the
//! suite's environment (`DRIVER_*`), shared by `tests/drivers.rs` (plaintext) and
//! `tests/drivers_tls.rs` (TLS).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgherald::config::{Config, PoolMode};

use super::herald::Herald;
use super::postgres::{self, DEFAULT_DB, SUPERUSER};

/// Pool mode of the suite: transaction pooling is what drivers find hardest.
pub const POOL_MODE: PoolMode = PoolMode::Transaction;
/// Server connections per pool: fewer than [`CLIENTS`]. The scripts' check that a prepared
/// statement runs on every server connection (`DRIVER_POOL_SIZE`) needs exactly 2.
pub const POOL_SIZE: usize = 2;
/// Concurrent client connections each script runs the prepared-query scenario on.
pub const CLIENTS: usize = 6;
/// A script still running after this is killed and its test fails.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
/// Debian's libpostgresql-jdbc-java puts pgjdbc here; `PGJDBC_JAR` overrides it.
const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// One of the driver scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// psycopg 3: `python/test_psycopg.py`.
    Psycopg,
    /// asyncpg: `python/test_asyncpg.py`.
    Asyncpg,
    /// node-postgres: `node/test_pg.js`.
    NodePostgres,
    /// pgjdbc: `java/DriverTest.java`.
    Pgjdbc,
}

impl Driver {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Psycopg => "psycopg",
            Driver::Asyncpg => "asyncpg",
            Driver::NodePostgres => "node-postgres",
            Driver::Pgjdbc => "pgjdbc",
        }
    }

    /// The channel its script LISTENs on.
    pub fn channel(self) -> &'static str {
        match self {
            Driver::Psycopg => "drv_psycopg_ch",
            Driver::Asyncpg => "drv_asyncpg_ch",
            Driver::NodePostgres => "drv_node_ch",
            Driver::Pgjdbc => "drv_jdbc_ch",
        }
    }

    /// Finds its toolchain (failing the test with what to install) and builds what needs
    /// building (pgjdbc's class, with javac).
    pub fn script(self) -> Script {
        match self {
            Driver::Psycopg => {
                Script::new(python(), [drivers_dir().join("python/test_psycopg.py")])
            }
            Driver::Asyncpg => {
                Script::new(python(), [drivers_dir().join("python/test_asyncpg.py")])
            }
            Driver::NodePostgres => node_script(),
            Driver::Pgjdbc => pgjdbc_script(),
        }
    }
}

/// A runnable driver script: its command line, and what it was built into.
pub struct Script {
    program: PathBuf,
    args: Vec<OsString>,
    dir: Option<PathBuf>,
    _build: Option<tempfile::TempDir>,
}

impl Script {
    fn new<A: Into<OsString>>(program: PathBuf, args: impl IntoIterator<Item = A>) -> Script {
        Script {
            program,
            args: args.into_iter().map(Into::into).collect(),
            dir: None,
            _build: None,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd
    }
}

/// How a suite runs the scripts: transactions per client and extra `DRIVER_*` environment.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// `DRIVER_ITERATIONS`: transactions per client connection.
    pub iterations: usize,
    /// Further environment, e.g. `DRIVER_SSLMODE` and `DRIVER_SSLROOTCERT`.
    pub env: Vec<(&'static str, OsString)>,
}

/// `tests/drivers` in the source tree.
pub fn drivers_dir() -> PathBuf {
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

fn node_script() -> Script {
    let node = require("node", "node-postgres", "Node.js (Debian's nodejs and npm)");
    let dir = drivers_dir().join("node");
    assert!(
        dir.join("node_modules/pg/package.json").is_file(),
        "node-postgres is not installed in {}: run `npm ci` there (.ci/run does)",
        dir.display()
    );
    let mut script = Script::new(node, [dir.join("test_pg.js")]);
    script.dir = Some(dir);
    script
}

fn pgjdbc_script() -> Script {
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
    let mut script = Script::new(
        java,
        [
            OsString::from("-cp"),
            class_path,
            OsString::from("DriverTest"),
        ],
    );
    script._build = Some(classes);
    script
}

/// Runs `driver`'s script against a fresh pgherald started with `config` (which must be in
/// [`POOL_MODE`] with [`POOL_SIZE`] servers) and checks that it passed, and that none of its
/// NOTIFYs reached Postgres.
pub async fn run_driver(driver: Driver, config: Config, run: Run) {
    assert_eq!(
        (config.pool_mode, config.default_pool_size),
        (POOL_MODE, POOL_SIZE)
    );
    let pg = postgres::shared();
    let h = Herald::start(config).await;
    let stdout = match try_driver(driver, h.port(), run).await {
        Ok(stdout) => stdout,
        Err(report) => panic!("{} driver test failed: {report}", driver.name()),
    };
    assert!(
        stdout.contains("checks passed"),
        "{}: the script exited 0 without its closing line:\n{stdout}",
        driver.name()
    );
    if POOL_MODE == PoolMode::Transaction {
        assert!(
            stdout.contains("prepared statement ran on both server connections"),
            "{}: the script did not check that a prepared statement ran on both servers:\n{stdout}",
            driver.name()
        );
    }
    pg.assert_no_notify_reached(driver.name(), driver.channel());
    drop(h);
}

/// Runs `driver`'s script against the pgherald on `port` and returns its outcome without
/// judging it: `Ok(stdout)` if it exits 0, otherwise a report with its exit status, stdout
/// and stderr.
pub async fn try_driver(driver: Driver, port: u16, run: Run) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let script = driver.script();
        run_script(driver.name(), script.command(), port, &run)
    })
    .await
    .expect("the script runner panicked")
}

/// Runs `cmd HOST PORT USER DBNAME` with the suite's environment; `Ok(stdout)` if it exits 0,
/// otherwise a report with its exit status, stdout and stderr.
fn run_script(driver: &str, mut cmd: Command, port: u16, run: &Run) -> Result<String, String> {
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str.starts_with("PG") || k_str.starts_with("DRIVER_") {
            cmd.env_remove(k); // libpq-style and suite settings of the caller must not leak in
        }
    }
    // `DRIVER_USER` in the run's environment picks the login user (its password, if any,
    // goes in `PGPASSWORD`, which every driver reads).
    let user = run
        .env
        .iter()
        .find(|(k, _)| *k == "DRIVER_USER")
        .map_or_else(
            || SUPERUSER.to_string(),
            |(_, v)| v.to_string_lossy().into_owned(),
        );
    cmd.args(["127.0.0.1", &port.to_string(), &user, DEFAULT_DB])
        .env("DRIVER_CLIENTS", CLIENTS.to_string())
        .env("DRIVER_ITERATIONS", run.iterations.to_string());
    if POOL_MODE == PoolMode::Transaction {
        // The scripts then pin one connection's prepared statement onto each server in turn.
        cmd.env("DRIVER_POOL_SIZE", POOL_SIZE.to_string());
    }
    for (k, v) in &run.env {
        cmd.env(k, v);
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
