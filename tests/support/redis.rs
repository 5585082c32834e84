//! A throwaway `redis-server` for the backplane tests: a free port on 127.0.0.1, a temp
//! directory, no automatic persistence (`--save "" --appendonly no`). It can be stopped with
//! its data saved (an outage) or killed (its data lost), and started again on the same port.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) test Redis.
pub struct TestRedis {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The redis-server binary, or None (the caller skips with a message).
pub fn binary() -> Option<PathBuf> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl TestRedis {
    /// Start one; None (after printing why) when redis-server is not installed.
    pub fn start() -> Option<TestRedis> {
        if binary().is_none() {
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut r = TestRedis {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        r.spawn();
        Some(r)
    }

    /// `redis://127.0.0.1:PORT`, with `user:password@` when given.
    pub fn url(&self, login: Option<(&str, &str)>) -> String {
        match login {
            Some((u, p)) => format!("redis://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn spawn(&mut self) {
        let bin = binary().expect("redis-server");
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            // Small stream nodes, so that approximate trimming (MAXLEN ~) trims small logs.
            .args(["--stream-node-max-entries", "8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.try_cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Run a redis-cli command as the default user; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).expect("redis-cli")
    }

    /// An outage: stop with the data saved to the temp directory.
    pub fn stop_saving(&mut self) {
        let _ = self.try_cli(&["SHUTDOWN", "SAVE"]);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// A crash that loses the data: SIGKILL, and no dump left behind.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
    }

    /// Start again on the same port (loading what `stop_saving` saved).
    pub fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
