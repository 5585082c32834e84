//! Throwaway PostgreSQL server for pgherald's integration tests.
//!
//! This module owns the whole life of a real, disposable PostgreSQL server
//! (version 15 on the CI image): finding the server binaries, `initdb` into a
//! fresh temporary directory, writing `postgresql.conf` and `pg_hba.conf`,
//! starting the server on a random free port of 127.0.0.1 plus a unix socket
//! in its own directory, creating the test roles and databases, and stopping
//! the server and deleting its directory again.
//!
//! [`shared()`] starts one server per test binary, lazily, the first time a
//! test asks for it. Statics are never dropped, so the server runs under a
//! small shell watchdog whose standard input is a pipe held open by the test
//! process: when the test process exits (normally, by panic, or killed by any
//! signal) the kernel closes that pipe, the watchdog sees end-of-file, stops
//! the server with a fast shutdown (SIGINT) and removes the directory.
//! [`TestPostgres::start()`] gives a private server that is stopped the same
//! way when the value is dropped.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as CI
//! does), `initdb` and the server run as the `postgres` OS user (through
//! `runuser`, or `su` where `runuser` is missing) and the temporary directory
//! is given to that user; otherwise they run as the current user.
//!
//! Every statement that reaches the server is logged (`log_statement = all`)
//! to a file that tests can read with [`TestPostgres::log_contents()`].

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::os::{
    conf_quote, conn_quote, find_bindir, path_str, running_as_root, server_user_command,
    server_user_ids, sh_quote, sql_literal, SERVER_OS_USER,
};
use tokio_postgres::{Client, NoTls};

/// Superuser role; authenticates with `trust` over TCP and the unix socket.
pub const SUPERUSER: &str = "postgres";
/// Role that authenticates with `trust` (no password).
pub const TRUST_USER: &str = "u_trust";
/// Role that authenticates with the cleartext `password` method.
pub const CLEAR_USER: &str = "u_clear";
/// Password of [`CLEAR_USER`].
pub const CLEAR_PASSWORD: &str = "pw_clear";
/// Role that authenticates with `md5`; its password is stored md5-hashed.
pub const MD5_USER: &str = "u_md5";
/// Password of [`MD5_USER`].
pub const MD5_PASSWORD: &str = "pw_md5";
/// Role that authenticates with `scram-sha-256`; its password is stored as a SCRAM verifier.
pub const SCRAM_USER: &str = "u_scram";
/// Password of [`SCRAM_USER`].
pub const SCRAM_PASSWORD: &str = "pw_scram";
/// Every test role with its password (`None` for the trust-authenticated ones).
pub const USERS: [(&str, Option<&str>); 5] = [
    (SUPERUSER, None),
    (TRUST_USER, None),
    (CLEAR_USER, Some(CLEAR_PASSWORD)),
    (MD5_USER, Some(MD5_PASSWORD)),
    (SCRAM_USER, Some(SCRAM_PASSWORD)),
];
/// The default database, which exists in every cluster.
pub const DEFAULT_DB: &str = "postgres";
/// First extra test database (owner `postgres`, open to every role).
pub const DB1: &str = "db1";
/// Second extra test database (owner `postgres`, open to every role).
pub const DB2: &str = "db2";
/// Every database of the test server; every role may connect to each and create objects in its `public` schema.
pub const DATABASES: [&str; 3] = [DEFAULT_DB, DB1, DB2];
/// Address the server listens on.
pub const HOST: &str = "127.0.0.1";

/// How long to wait for a freshly started server to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times to retry with a new port when another process took the one we picked.
const START_ATTEMPTS: u32 = 5;
/// Name of the server log inside the temporary directory.
const LOG_FILE: &str = "postgres.log";
/// Name of the file the watchdog writes the server's exit status to.
const EXITED_MARKER: &str = "postgres.exited";
/// Name of the watchdog's own diagnostics file inside the temporary directory.
const WATCHDOG_LOG: &str = "watchdog.log";
/// Longest unix socket path Linux accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A running throwaway PostgreSQL server.
///
/// Get the per-binary one with [`shared()`], or a private one with
/// [`TestPostgres::start()`].
pub struct TestPostgres {
    /// TCP address the server listens on: always `"127.0.0.1"`.
    pub host: String,
    /// TCP port the server listens on (also the number in its unix socket's name).
    pub port: u16,
    /// Temporary directory holding everything below; removed when the server stops.
    pub base_dir: PathBuf,
    /// The cluster's data directory (`PGDATA`).
    pub data_dir: PathBuf,
    /// Directory holding the unix socket `.s.PGSQL.<port>`; usable as `host=` in a connection string.
    pub socket_dir: PathBuf,
    /// The server log, written by the server's stderr.
    log_path: PathBuf,
    /// The watchdog shell; its stdin pipe is what keeps the server alive. Dropped first.
    watchdog: Watchdog,
    /// Removes the directory should the watchdog not have done it; dropped after the watchdog is gone.
    _tempdir: TempDir,
}

/// Returns the server shared by every test of this test binary, starting it on first use.
///
/// Safe to call from sync tests and from inside any tokio runtime. The server
/// lives until the test process exits. If it cannot be started, every caller
/// panics with the same message, which includes the server log's tail.
pub fn shared() -> &'static TestPostgres {
    static SHARED: OnceLock<Result<TestPostgres, String>> = OnceLock::new();
    match SHARED.get_or_init(TestPostgres::try_start) {
        Ok(pg) => pg,
        Err(msg) => panic!("the shared test PostgreSQL server could not be started: {msg}"),
    }
}

/// Returns the directory holding the PostgreSQL server binaries (`initdb`, `postgres`, `pg_ctl`, `pgbench`, ...).
///
/// Looks at `pg_config --bindir` first, then `/usr/lib/postgresql/15/bin`,
/// then the newest `/usr/lib/postgresql/*/bin`; only a directory that holds
/// both `initdb` and `postgres` counts. Panics if none does.
pub fn bindir() -> PathBuf {
    static BINDIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    BINDIR.get_or_init(find_bindir).clone().expect(
        "no PostgreSQL server binaries found: tried `pg_config --bindir`, \
             /usr/lib/postgresql/15/bin and /usr/lib/postgresql/*/bin \
             (install them, e.g. `apt-get install postgresql-15`)",
    )
}

impl TestPostgres {
    /// Starts a private server, with the same roles, databases and settings as [`shared()`].
    ///
    /// Dropping the value stops the server and deletes its directory, waiting
    /// for both (up to 60 s); the server is also stopped if the test process exits first.
    /// Panics with the server log's tail if the server cannot be started.
    pub fn start() -> TestPostgres {
        match TestPostgres::try_start() {
            Ok(pg) => pg,
            Err(msg) => panic!("a test PostgreSQL server could not be started: {msg}"),
        }
    }

    /// Connection string in tokio-postgres key=value form for TCP to this server.
    ///
    /// Values are quoted, so any password is safe. Example:
    /// `host='127.0.0.1' port='5432' user='u_md5' dbname='db1' password='pw_md5'`.
    pub fn conn_str(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let mut s = format!(
            "host={} port={} user={} dbname={}",
            conn_quote(&self.host),
            self.port,
            conn_quote(user),
            conn_quote(db)
        );
        if let Some(pw) = password {
            s.push_str(" password=");
            s.push_str(&conn_quote(pw));
        }
        s
    }

    /// Connection string in tokio-postgres key=value form for this server's unix socket.
    pub fn socket_conn_str(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let dir = self
            .socket_dir
            .to_str()
            .expect("socket dir path is not UTF-8");
        let mut s = format!(
            "host={} port={} user={} dbname={}",
            conn_quote(dir),
            self.port,
            conn_quote(user),
            conn_quote(db)
        );
        if let Some(pw) = password {
            s.push_str(" password=");
            s.push_str(&conn_quote(pw));
        }
        s
    }

    /// `postgres://postgres@127.0.0.1:PORT`: the superuser (trust) over TCP, default database.
    pub fn superuser_url(&self) -> String {
        format!("postgres://{SUPERUSER}@{}:{}", self.host, self.port)
    }

    /// Connects over TCP without TLS and spawns the connection task on the current tokio runtime.
    ///
    /// Returns the error instead of panicking, e.g. to check that a wrong password is refused.
    /// Must be called inside a tokio runtime.
    pub async fn try_connect(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.conn_str(user, password, db), NoTls).await?;
        tokio::spawn(async move {
            // The connection ends with an error when the server goes away; tests see that through the client.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Connects over TCP like [`TestPostgres::try_connect`], panicking with user, database and error on failure.
    pub async fn connect(&self, user: &str, password: Option<&str>, db: &str) -> Client {
        match self.try_connect(user, password, db).await {
            Ok(client) => client,
            Err(e) => panic!(
                "could not connect to the test PostgreSQL server at {}:{} as user {user:?} to database {db:?}: {e} ({e:?})",
                self.host, self.port
            ),
        }
    }

    /// Assert that no NOTIFY or `pg_notify($1..` on `channel` reached this server (its log has
    /// every statement); `who` names the client in the failure message. pgherald serves those
    /// itself; only the relay's LISTEN/UNLISTEN of the channel may appear.
    pub fn assert_no_notify_reached(&self, who: &str, channel: &str) {
        let leaked: Vec<String> = self
            .log_contents()
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("notify"))
            .filter(|l| l.contains(channel) || l.contains("pg_notify($1"))
            .map(str::to_string)
            .collect();
        assert!(
            leaked.is_empty(),
            "{who}: Postgres received NOTIFY/pg_notify that pgherald should have served:\n{}",
            leaked.join("\n")
        );
    }

    /// Path of the server log (`log_statement = all`, `log_connections = on`).
    ///
    /// Lines start with `<time> [<pid>] <user>@<db> `.
    pub fn log_path(&self) -> PathBuf {
        self.log_path.clone()
    }

    /// The whole server log so far (invalid UTF-8 replaced); empty if it cannot be read.
    pub fn log_contents(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Current length of the server log in bytes, to pass later to [`TestPostgres::log_since`].
    pub fn log_len(&self) -> usize {
        fs::metadata(&self.log_path)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    /// The part of the server log written after byte `offset` (from [`TestPostgres::log_len`]).
    pub fn log_since(&self, offset: usize) -> String {
        let bytes = fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset..).unwrap_or_default()).into_owned()
    }

    /// Starts a server, retrying with a new port if another process took the one picked.
    fn try_start() -> Result<TestPostgres, String> {
        // Run on a thread of our own with its own runtime: callers may be
        // sync tests or be inside a (possibly current-thread) tokio runtime.
        let handle = std::thread::Builder::new()
            .name("test-postgres-start".into())
            .spawn(|| {
                let mut last = String::new();
                for _ in 0..START_ATTEMPTS {
                    match start_once() {
                        Ok(pg) => return Ok(pg),
                        Err(Failure {
                            port_taken: true,
                            message,
                        }) => last = message,
                        Err(Failure { message, .. }) => return Err(message),
                    }
                }
                Err(format!(
                    "gave up after {START_ATTEMPTS} attempts, each port was taken: {last}"
                ))
            })
            .map_err(|e| format!("cannot spawn the server start thread: {e}"))?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the server start thread panicked".into())),
        }
    }
}

/// The watchdog process (see `watchdog_script`). Dropping it stops the server and removes its directory.
struct Watchdog(Child);

impl Drop for Watchdog {
    /// Closes the watchdog's stdin, so it stops the server and removes the directory, and waits for that (at most 60 s).
    ///
    /// Must run before the [`TempDir`] is dropped: the watchdog still uses the directory until it exits.
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.0.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
    }
}

/// Why one start attempt failed.
struct Failure {
    /// The server could not bind its port: worth another attempt on another port.
    port_taken: bool,
    /// What went wrong, with the log tail where there is one.
    message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            port_taken: false,
            message,
        }
    }
}

/// One attempt: fresh directory, initdb, config, start under the watchdog, wait, create roles and databases.
fn start_once() -> Result<TestPostgres, Failure> {
    let bin = bindir();
    let root = running_as_root();

    // The server user must be able to reach the directory: as root use /tmp, not a TMPDIR that may be private.
    let parent = if root {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let mut parent = parent;
    if parent.as_os_str().len() + 40 > MAX_SOCKET_PATH {
        parent = PathBuf::from("/tmp"); // keep `<dir>/.s.PGSQL.<port>` within the unix socket path limit
    }
    let tempdir = tempfile::Builder::new()
        .prefix("pgherald-pg-")
        .tempdir_in(&parent)
        .map_err(|e| {
            format!(
                "cannot create a temporary directory in {}: {e}",
                parent.display()
            )
        })?;
    let base = tempdir.path().to_path_buf();
    let data = base.join("data");
    let log = base.join(LOG_FILE);
    if root {
        let (uid, gid) = server_user_ids()?;
        std::os::unix::fs::chown(&base, Some(uid), Some(gid)).map_err(|e| {
            format!(
                "cannot chown {} to the {SERVER_OS_USER} user: {e}",
                base.display()
            )
        })?;
    }

    // initdb (as the server user when root).
    let initdb = bin.join("initdb");
    let out = server_user_command(&[
        path_str(&initdb)?,
        "-D",
        path_str(&data)?,
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ])
    .current_dir(&base)
    .env("LC_ALL", "C")
    .stdin(Stdio::null())
    .output()
    .map_err(|e| format!("cannot run {}: {e}", initdb.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}{}",
            initdb.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }

    // Configuration. Overwriting the files initdb made keeps their owner, so the server user can read them.
    let conf_path = data.join("postgresql.conf");
    let mut conf = fs::read_to_string(&conf_path)
        .map_err(|e| format!("cannot read {}: {e}", conf_path.display()))?;
    conf.push_str(&format!(
        "\n# Added by pgherald's tests/support/postgres.rs\n\
         listen_addresses = '{HOST}'\n\
         unix_socket_directories = {socket_dir}\n\
         max_connections = 300\n\
         max_prepared_transactions = 64\n\
         shared_buffers = 128MB\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         logging_collector = off\n\
         log_destination = 'stderr'\n\
         log_statement = 'all'\n\
         log_connections = on\n\
         log_disconnections = on\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n\
         lc_messages = 'C'\n\
         password_encryption = 'scram-sha-256'\n",
        socket_dir = conf_quote(path_str(&base)?),
    ));
    fs::write(&conf_path, conf)
        .map_err(|e| format!("cannot write {}: {e}", conf_path.display()))?;
    let hba_path = data.join("pg_hba.conf");
    fs::write(&hba_path, hba_conf())
        .map_err(|e| format!("cannot write {}: {e}", hba_path.display()))?;

    // Pick a free port; another process may still take it before the server binds it, hence the retries.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot pick a free port on 127.0.0.1: {e}"))?
        .port();

    // Declared after `tempdir`, so on every early return it is dropped (and waited for) first.
    let mut watchdog = Watchdog(
        server_user_command(&[
            "/bin/sh",
            "-c",
            &watchdog_script(&bin, &base, &data, &log, port)?,
        ])
        .current_dir(&base)
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Own process group: a Ctrl-C meant for the test run must not kill the watchdog before it cleans up.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot spawn the server watchdog: {e}"))?,
    );

    let log_tail = |why: &str| -> String {
        let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
        let tail: Vec<&str> = text
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let watchdog_log = fs::read_to_string(base.join(WATCHDOG_LOG)).unwrap_or_default();
        format!(
            "{why} (data dir {}, port {port}); last lines of {}:\n{}{}",
            data.display(),
            log.display(),
            tail.join("\n"),
            if watchdog_log.trim().is_empty() {
                String::new()
            } else {
                format!("\nwatchdog said:\n{watchdog_log}")
            }
        )
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a tokio runtime for the server setup: {e}"))?;
    let tcp = |user: &str, db: &str| {
        format!(
            "host={HOST} port={port} user={} dbname={}",
            conn_quote(user),
            conn_quote(db)
        )
    };

    // Wait until the server accepts connections.
    let started = Instant::now();
    let mut last_error: String;
    loop {
        if base.join(EXITED_MARKER).exists() {
            let message = log_tail("the server exited during startup");
            let port_taken =
                message.contains("could not bind") || message.contains("Address already in use");
            return Err(Failure {
                port_taken,
                message,
            });
        }
        if let Ok(Some(status)) = watchdog.0.try_wait() {
            let mut stderr = String::new();
            if let Some(mut e) = watchdog.0.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            return Err(log_tail(&format!(
                "the server watchdog exited early ({status}): {stderr}"
            ))
            .into());
        }
        let attempt = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                tokio_postgres::connect(&tcp(SUPERUSER, DEFAULT_DB), NoTls),
            )
            .await
        });
        match attempt {
            Ok(Ok(_)) => break, // dropping the client closes that probe connection
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "connect timed out".into(),
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            return Err(log_tail(&format!(
                "the server did not accept connections on {HOST}:{port} within {STARTUP_TIMEOUT:?} (last error: {last_error})"
            ))
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Roles, databases and schema privileges.
    runtime
        .block_on(async {
            let su = connect_setup(&tcp(SUPERUSER, DEFAULT_DB)).await?;
            let statements = [
                format!("CREATE ROLE {TRUST_USER} LOGIN"),
                "SET password_encryption = 'scram-sha-256'".to_string(),
                format!(
                    "CREATE ROLE {CLEAR_USER} LOGIN PASSWORD {}",
                    sql_literal(CLEAR_PASSWORD)
                ),
                format!(
                    "CREATE ROLE {SCRAM_USER} LOGIN PASSWORD {}",
                    sql_literal(SCRAM_PASSWORD)
                ),
                "SET password_encryption = 'md5'".to_string(),
                format!(
                    "CREATE ROLE {MD5_USER} LOGIN PASSWORD {}",
                    sql_literal(MD5_PASSWORD)
                ),
                "RESET password_encryption".to_string(),
                format!("CREATE DATABASE {DB1} OWNER {SUPERUSER}"),
                format!("CREATE DATABASE {DB2} OWNER {SUPERUSER}"),
            ];
            for sql in &statements {
                // One statement per call: CREATE DATABASE refuses to run inside a multi-statement string.
                su.batch_execute(sql)
                    .await
                    .map_err(|e| format!("setup statement `{sql}` failed: {e}"))?;
            }
            for db in DATABASES {
                let client = connect_setup(&tcp(SUPERUSER, db)).await?;
                let sql = "GRANT ALL ON SCHEMA public TO PUBLIC";
                client
                    .batch_execute(sql)
                    .await
                    .map_err(|e| format!("setup statement `{sql}` in database {db} failed: {e}"))?;
            }
            Ok::<(), String>(())
        })
        .map_err(|e| {
            log_tail(&format!(
                "creating the test roles and databases failed: {e}"
            ))
        })?;

    Ok(TestPostgres {
        host: HOST.to_string(),
        port,
        base_dir: base.clone(),
        data_dir: data,
        socket_dir: base,
        log_path: log,
        watchdog,
        _tempdir: tempdir,
    })
}

/// Connects for setup work and drives the connection on the setup runtime.
async fn connect_setup(conn_str: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(conn_str, NoTls)
        .await
        .map_err(|e| format!("setup connection `{conn_str}` failed: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The `pg_hba.conf` of the test server: one method per test role, locally and over TCP.
fn hba_conf() -> String {
    let mut s = String::from("# Written by pgherald's tests/support/postgres.rs\n# TYPE  DATABASE  USER  ADDRESS  METHOD\n");
    let methods = [
        (SUPERUSER, "trust"),
        (TRUST_USER, "trust"),
        (CLEAR_USER, "password"),
        (MD5_USER, "md5"),
        (SCRAM_USER, "scram-sha-256"),
    ];
    for (user, method) in methods {
        s.push_str(&format!("local all {user} {method}\n"));
        s.push_str(&format!("host all {user} 127.0.0.1/32 {method}\n"));
    }
    // Roles that tests create themselves: a password is needed (md5 also accepts SCRAM-stored passwords).
    s.push_str("local all all md5\nhost all all 127.0.0.1/32 md5\n");
    s
}

/// The watchdog: starts the server, waits for its stdin to close, then stops the server and removes `base`.
///
/// Its stdin is the pipe whose only writer is the test process, so end-of-file
/// means that process is gone (or dropped its [`TestPostgres`]). If the server
/// exits on its own, the exit status goes to `base/postgres.exited` and the
/// directory stays until end-of-file, so the test can still read the log.
fn watchdog_script(
    bin: &Path,
    base: &Path,
    data: &Path,
    log: &Path,
    port: u16,
) -> Result<String, String> {
    Ok(format!(
        r#"
base={base}
exec >>"$base/{WATCHDOG_LOG}" 2>&1
# fd 3 keeps the pipe from the test process; background jobs get /dev/null as stdin.
exec 3<&0 </dev/null
{postgres} -D {data} -p {port} >>{log} 2>&1 3<&- &
pid=$!
{{
  cat <&3 >/dev/null
  if [ ! -e "$base/{EXITED_MARKER}" ]; then
    kill -INT "$pid" 2>/dev/null
    i=0
    while [ ! -e "$base/{EXITED_MARKER}" ] && [ "$i" -lt 150 ]; do sleep 0.1; i=$((i+1)); done
    [ -e "$base/{EXITED_MARKER}" ] || kill -QUIT "$pid" 2>/dev/null
  fi
}} &
exec 3<&-
wait "$pid"
echo "$?" >"$base/{EXITED_MARKER}"
wait
rm -rf "$base"
"#,
        base = sh_quote(path_str(base)?),
        postgres = sh_quote(path_str(&bin.join("postgres"))?),
        data = sh_quote(path_str(data)?),
        log = sh_quote(path_str(log)?),
    ))
}
