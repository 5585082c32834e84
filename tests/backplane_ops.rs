//! Operating several instances that share a backplane (issue 15, items 5 and 6): a
//! CancelRequest sent to any instance cancels the query wherever the client's session
//! lives, as a load balancer may send the cancel connection anywhere; and a rolling restart
//! with `so_reuseport` (PgBouncer 1.23's: the new process binds the same port, SIGTERM makes
//! the old one stop accepting and wait for its clients), with notifications flowing between
//! the two processes during the handover; and an instance killed with SIGKILL in the middle
//! of its commits (guarantees 2 and 3): listeners on the other instance get every
//! acknowledged commit exactly once, in each sender's order, and nothing never sent.

#[path = "support/notes.rs"]
mod notes;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use notes::backend_pid;
use pgherald::config::{Config, PoolMode};
use support::herald::{self, Herald};
use support::listen::{self, Listener};
use support::postgres::{self as pgsupport, shared, DEFAULT_DB, SUPERUSER};
use support::redis::TestRedis;
use tokio_postgres::NoTls;

fn config(backplane: &str) -> Config {
    Config {
        backplane: Some(backplane.to_string()),
        backplane_timeout: 2.0,
        ..herald::config(shared(), PoolMode::Transaction, 4)
    }
}

/// Wait until Postgres shows a statement containing `marker` running.
async fn running(marker: &str) {
    let direct = shared().connect(SUPERUSER, None, DEFAULT_DB).await;
    let q = format!(
        "select count(*) from pg_stat_activity where state = 'active' and query like '%{marker}%' and pid <> pg_backend_pid()"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = direct.query_one(&q, &[]).await.expect("count").get(0);
        if n > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the query never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 15 item 5: the cancel connection reaches instance B, the session lives on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_another_instance() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let a = Herald::start(config(&redis.url(None))).await;
    let b = Herald::start(config(&redis.url(None))).await;
    let c = a.connect(SUPERUSER, None, DEFAULT_DB).await;
    let token = c.cancel_token();
    let mut sleeper = tokio::spawn(async move {
        c.simple_query("select pg_sleep(600) /* xinst-cancel */")
            .await
    });
    running("xinst-cancel").await;
    // B subscribes to forwarded cancels in the background at start: send again until the
    // query ends (a cancel that finds no subscriber is dropped, like a lost CancelRequest).
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        let to_b = tokio::net::TcpStream::connect(b.addr)
            .await
            .expect("connect to B");
        token
            .cancel_query_raw(to_b, NoTls)
            .await
            .expect("send the CancelRequest to B");
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(2), &mut sleeper).await {
            break r.expect("join");
        }
        assert!(
            Instant::now() < deadline,
            "the cancel sent to B never reached A's query"
        );
    };
    let err = result.expect_err("the query must be cancelled through B");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err:?}"
    );
    drop(redis);
}

/// A pgherald process of the crate's binary, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(dir: &Path, name: &str, port: u16, backplane: &str) -> Proc {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\n\
                 upstream = \"postgres://{SUPERUSER}@127.0.0.1:{}\"\n\
                 pool_mode = \"transaction\"\n\
                 default_pool_size = 8\n\
                 so_reuseport = true\n\
                 backplane = \"{backplane}\"\n",
                shared().port
            ),
        )
        .expect("write config");
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_pgherald"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start pgherald");
        let p = Proc { child, log };
        p.wait_log("listening on");
        p
    }

    fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(text) {
                return;
            }
            assert!(Instant::now() < deadline, "no `{text}` in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// The exit status, waiting up to a minute.
    fn exit_status(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            assert!(Instant::now() < deadline, "still running:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Payloads until `want` have arrived.
async fn payloads(l: &mut Listener, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < want {
        got.push(
            l.next_within(Duration::from_secs(60))
                .await
                .payload()
                .to_string(),
        );
    }
    got
}

/// Issue 15 item 6: two processes on one port; SIGTERM to the old one while pgbench runs
/// through it. Its clients finish undisturbed (0 failed transactions), new clients reach
/// the new process, notifications cross between the two, and the old process exits 0 once
/// its last client has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_with_so_reuseport() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let conn = format!("host=127.0.0.1 port={port} user={SUPERUSER} dbname={DEFAULT_DB}");
    let mut old = Proc::start(dir.path(), "old", port, &redis.url(None));
    let mut l_old = listen::connect(&conn).await;
    l_old
        .client
        .batch_execute("LISTEN roll")
        .await
        .expect("listen");
    let s_old = listen::connect(&conn).await;
    let old_block = backend_pid(&l_old.client).await / pgherald::pubsub::backplane::PID_BLOCK;
    let script = dir.path().join("select.sql");
    std::fs::write(&script, "select 1;\n").expect("script");
    let bench = std::thread::spawn(move || {
        Command::new(pgsupport::bindir().join("pgbench"))
            .args(["-n", "-c", "4", "-j", "2", "-T", "6", "-h", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-U", SUPERUSER, DEFAULT_DB, "-f"])
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .expect("pgbench")
    });
    let new = Proc::start(dir.path(), "new", port, &redis.url(None));
    old.signal("-TERM");
    old.wait_log("waiting for every client to disconnect");
    // The old process no longer accepts: these reach the new one.
    let mut l_new = listen::connect(&conn).await;
    l_new
        .client
        .batch_execute("LISTEN roll")
        .await
        .expect("listen");
    let s_new = listen::connect(&conn).await;
    let new_block = backend_pid(&l_new.client).await / pgherald::pubsub::backplane::PID_BLOCK;
    assert_ne!(
        old_block, new_block,
        "the new client must be on the new process"
    );
    let mut want = Vec::new();
    for i in 0..20 {
        for (who, s) in [("old", &s_old), ("new", &s_new)] {
            s.client
                .batch_execute(&format!("NOTIFY roll, '{who}{i}'"))
                .await
                .expect("notify");
            want.push(format!("{who}{i}"));
        }
    }
    let got_old = payloads(&mut l_old, want.len()).await;
    let got_new = payloads(&mut l_new, want.len()).await;
    assert_eq!(got_old, want, "listener on the old process");
    assert_eq!(got_new, want, "listener on the new process");
    let out = bench.join().expect("pgbench thread");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench: {text}");
    assert!(
        !text.contains("aborted") && text.contains("number of failed transactions: 0"),
        "pgbench: {text}"
    );
    // Still serving its last clients; it leaves once they have gone.
    assert!(
        old.child.try_wait().expect("wait").is_none(),
        "the old process left early"
    );
    drop((l_old, s_old));
    assert!(old.exit_status().success(), "the old process must exit 0");
    let c = listen::connect(&conn).await;
    c.client
        .batch_execute("select 1")
        .await
        .expect("the new process serves");
    drop(new);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Issue 15's fault "kill -9 one pgherald instance mid-commit": four senders commit NOTIFYs
/// through instance A as fast as they can while a listener on instance B reads; A is killed
/// with SIGKILL. Every NOTIFY whose COMMIT A acknowledged reaches B's listener exactly once,
/// each sender's in its order; one whose acknowledgement was lost may arrive or not (an
/// unknown outcome, as with a Postgres backend killed during COMMIT), never twice, never
/// out of order; B's listener stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_killed_mid_commit_loses_nothing_acknowledged() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (pa, pb) = (free_port(), free_port());
    let conn =
        |port: u16| format!("host=127.0.0.1 port={port} user={SUPERUSER} dbname={DEFAULT_DB}");
    let mut a = Proc::start(dir.path(), "a", pa, &redis.url(None));
    let _b = Proc::start(dir.path(), "b", pb, &redis.url(None));
    let mut l_b = listen::connect(&conn(pb)).await;
    l_b.client
        .batch_execute("LISTEN kill9")
        .await
        .expect("listen");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for w in 0..4 {
        let s = listen::connect(&conn(pa)).await;
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            // The highest i whose COMMIT was acknowledged, and the highest sent.
            let (mut acked, mut sent) = (None, None);
            for i in 0..1_000_000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                sent = Some(i);
                let sql = format!("BEGIN; NOTIFY kill9, 'w{w}-{i}'; COMMIT");
                match s.client.batch_execute(&sql).await {
                    Ok(()) => acked = Some(i),
                    Err(_) => break,
                }
            }
            (acked, sent)
        }));
    }
    // Let commits flow, then kill A in the middle of them.
    let first = payloads(&mut l_b, 200).await;
    a.signal("-KILL");
    let _ = a.exit_status();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut outcome = Vec::new();
    for s in senders {
        outcome.push(s.await.expect("sender"));
    }
    // Everything acknowledged must arrive: read until each sender's last acknowledged
    // payload has been seen, then whatever else comes in a quiet second.
    let parse = |p: &str| -> (usize, u32) {
        let (w, i) = p
            .trim_start_matches('w')
            .split_once('-')
            .expect("payload form");
        (w.parse().expect("sender"), i.parse().expect("number"))
    };
    let mut last_seen: Vec<Option<u32>> = vec![None; outcome.len()];
    for p in &first {
        let (w, i) = parse(p);
        last_seen[w] = last_seen[w].max(Some(i));
    }
    let mut got = first;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = outcome
            .iter()
            .zip(&last_seen)
            .all(|((acked, _), seen)| acked.is_none() || seen >= acked);
        let wait = if done {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        match tokio::time::timeout(wait, l_b.rx.recv()).await {
            Ok(Some(n)) => {
                let (w, i) = parse(n.payload());
                last_seen[w] = last_seen[w].max(Some(i));
                got.push(n.payload().to_string());
            }
            Ok(None) => panic!("B's listener was disconnected"),
            Err(_) if done => break,
            Err(_) => assert!(
                Instant::now() < deadline,
                "acknowledged commits missing: {outcome:?} seen {last_seen:?}"
            ),
        }
    }
    // Exactly once, in each sender's order, only what was sent, nothing acknowledged missing.
    let mut next = vec![0u32; outcome.len()];
    for p in &got {
        let (w, i) = parse(p);
        assert_eq!(
            i, next[w],
            "sender {w}: gap, duplicate or reordering at {p} in {got:?}"
        );
        next[w] += 1;
        let (_, sent) = outcome[w];
        assert!(Some(i) <= sent, "{p} was never sent");
    }
    for (w, (acked, _)) in outcome.iter().enumerate() {
        if let Some(acked) = acked {
            assert!(next[w] > *acked, "sender {w}: acknowledged {acked} missing");
        }
    }
    assert!(got.len() >= 200);
}
