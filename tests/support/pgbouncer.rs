//! PgBouncer side by side with pgherald: a directory holding a pgbouncer.ini and a
//! userlist.txt that both read, and the real `pgbouncer` binary started on it (as the
//! `postgres` OS user when the tests run as root, since PgBouncer refuses root).

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::os;

/// Where Debian's package installs PgBouncer (CI installs it, see .ci/run).
pub const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// A directory with the files a migration test shares between PgBouncer and pgherald.
pub struct Files {
    /// The directory (world-readable, so PgBouncer's OS user can read it).
    pub dir: tempfile::TempDir,
    /// `pgbouncer.ini`.
    pub ini: PathBuf,
    /// `userlist.txt`.
    pub userlist: PathBuf,
    /// The port written as listen_port.
    pub port: u16,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Write `userlist` lines (`"user" "secret"`) and an ini whose `[pgbouncer]` section gets
/// listen_addr, listen_port, auth_file and unix_socket_dir added to `pgbouncer`.
pub fn write(databases: &str, pgbouncer: &str, users: &[(&str, &str)]) -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let userlist = dir.path().join("userlist.txt");
    let mut f = std::fs::File::create(&userlist).unwrap();
    for (u, s) in users {
        writeln!(f, "\"{u}\" \"{s}\"").unwrap();
    }
    let port = free_port();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\n{databases}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_file = {}\n{pgbouncer}\n",
            userlist.display()
        ),
    )
    .unwrap();
    for p in [&ini, &userlist] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    Files {
        dir,
        ini,
        userlist,
        port,
    }
}

/// A running PgBouncer; dropping it stops it.
pub struct Bouncer {
    child: Child,
    /// Its port.
    pub port: u16,
    log: PathBuf,
}

impl Bouncer {
    /// Start PgBouncer on `files`, waiting until it accepts connections. Panics with its
    /// log if it does not, or if the binary is missing (install Debian's pgbouncer).
    pub fn start(files: &Files) -> Bouncer {
        assert!(
            Path::new(PGBOUNCER).exists(),
            "{PGBOUNCER} is missing: install Debian's pgbouncer package (apt-get install pgbouncer)"
        );
        let log = files.dir.path().join("pgbouncer.log");
        let child = os::server_user_command(&[PGBOUNCER, files.ini.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start pgbouncer");
        let mut b = Bouncer {
            child,
            port: files.port,
            log,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", b.port)).is_err() {
            if let Ok(Some(status)) = b.child.try_wait() {
                panic!("pgbouncer exited ({status}): {}", b.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "pgbouncer did not listen: {}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // runuser forwards SIGTERM to PgBouncer; the child is ours.
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
