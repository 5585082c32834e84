//! Soak test (issue 11), off by default: `PGHERALD_SOAK=1 cargo test --release --test soak`
//! (otherwise it prints a note and passes). Many clients connect, LISTEN, run queries,
//! disconnect or are killed mid-transaction while one sender NOTIFYs a numbered sequence
//! (and rolls some NOTIFYs back); one checker listens throughout and must see every number
//! once, in order, and nothing rolled back. pgherald runs as its own process (the crate's
//! binary), so its file descriptors and RSS are measured alone: descriptors must return to
//! what they were (bounded by the pool, not by the number of clients); RSS is printed at each
//! stage. `PGHERALD_SOAK_CLIENTS` (default 500 concurrent churners) and `PGHERALD_SOAK_SECS`
//! (default 600) size it; the full run is 10,000 clients for 10 minutes (each of the
//! two processes then holds about 10,000 descriptors).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::process::{Child, Command};

use rand::Rng;
use support::listen;
use support::postgres::{self, DB1, SUPERUSER};
use support::raw::Raw;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// pgherald as a child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Start the binary on a free port, transaction mode, pool 8, room for `clients`.
async fn start(dir: &std::path::Path, clients: u64) -> (Proc, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let config = dir.join("soak.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             upstream = \"postgres://{SUPERUSER}@127.0.0.1:{}\"\n\
             pool_mode = \"transaction\"\n\
             default_pool_size = 8\n\
             max_client_conn = {}\n",
            postgres::shared().port,
            // A churner reconnects at once, while its previous session may still be
            // returning its server (ROLLBACK, DISCARD ALL) and so still counts.
            2 * clients + 16
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.join("soak.log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_pgherald"))
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start pgherald");
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "pgherald did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Proc(child), port)
}

/// Read up to ReadyForQuery with a generous wait (with 10,000 churners on two cores a
/// login or a transaction can queue for a while); an ErrorResponse fails the soak.
async fn ready(raw: &mut Raw) {
    while let Some(m) = raw.recv_within(Duration::from_secs(120)).await {
        assert!(m.tag != b'E', "error: {}", String::from_utf8_lossy(&m.body));
        if m.tag == b'Z' {
            return;
        }
    }
    panic!("connection closed before ReadyForQuery");
}

async fn connect(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_clients_churn_while_notifications_flow() {
    if std::env::var("PGHERALD_SOAK").as_deref() != Ok("1") {
        println!("soak test skipped: set PGHERALD_SOAK=1 to run it (see tests/soak.rs)");
        return;
    }
    let clients = env("PGHERALD_SOAK_CLIENTS", 500);
    let secs = env("PGHERALD_SOAK_SECS", 600);
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::tempdir().expect("tempdir");
    let (proc, port) = start(dir.path(), clients).await;
    let pid = proc.0.id();
    let conn = format!("host=127.0.0.1 port={port} user={SUPERUSER} dbname={DB1}");
    let mut checker = listen::connect(&conn).await;
    checker
        .client
        .batch_execute("LISTEN soak_seq")
        .await
        .unwrap();
    let sender = connect(&conn).await;
    sender
        .batch_execute("NOTIFY soak_seq, 'warm'")
        .await
        .unwrap();
    assert_eq!(checker.next().await.payload(), "warm");
    let (fd0, rss0) = (fds(pid), rss_kib(pid));
    println!("soak: {clients} churners for {secs} s; pgherald at start: {fd0} fds, {rss0} KiB RSS");

    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (stop, cycles, conn) = (stop.clone(), cycles.clone(), conn.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let kind = rand::thread_rng().gen_range(0..3);
                match kind {
                    0 => {
                        // Killed mid-transaction, holding a session advisory lock.
                        let mut raw = Raw::connect(port).await;
                        raw.startup(3, 0, &[("user", SUPERUSER), ("database", DB1)])
                            .await;
                        ready(&mut raw).await;
                        raw.query("begin; select pg_advisory_lock(7); listen soak_seq")
                            .await;
                        ready(&mut raw).await;
                    }
                    1 => {
                        let mut l = listen::connect(&conn).await;
                        l.client.batch_execute("LISTEN soak_seq").await.unwrap();
                        l.client
                            .batch_execute("SET work_mem = '8MB'")
                            .await
                            .unwrap();
                        let _ = tokio::time::timeout(Duration::from_secs(5), l.rx.recv()).await;
                        l.client.batch_execute("SELECT 1").await.unwrap();
                    }
                    _ => {
                        let l = listen::connect(&conn).await;
                        l.client
                            .batch_execute("BEGIN; SELECT count(*) FROM pg_class; COMMIT")
                            .await
                            .unwrap();
                    }
                }
                cycles.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    let mut next_report = Instant::now() + Duration::from_secs(30);
    let mut expect = 0u64;
    while Instant::now() < deadline {
        if sent % 10 == 9 {
            sender
                .batch_execute("BEGIN; NOTIFY soak_seq, 'rolled back'; ROLLBACK")
                .await
                .unwrap();
        }
        sender
            .batch_execute(&format!("NOTIFY soak_seq, '{sent}'"))
            .await
            .unwrap();
        sent += 1;
        // The checker keeps up: read what has arrived.
        while let Ok(n) = checker.rx.try_recv() {
            assert_eq!(
                n.payload(),
                expect.to_string(),
                "lost, duplicated or misordered"
            );
            expect += 1;
        }
        if Instant::now() > next_report {
            next_report += Duration::from_secs(30);
            println!(
                "soak: {sent} sent, {} client cycles, pgherald: {} fds, {} KiB RSS",
                cycles.load(Ordering::Relaxed),
                fds(pid),
                rss_kib(pid)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    sender
        .batch_execute("NOTIFY soak_seq, 'end'")
        .await
        .unwrap();
    loop {
        let n = checker.next().await;
        if n.payload() == "end" {
            break;
        }
        assert_eq!(
            n.payload(),
            expect.to_string(),
            "lost, duplicated or misordered"
        );
        expect += 1;
    }
    assert_eq!(expect, sent, "every notification arrived once, in order");
    // Every churner is gone: descriptors come back to the start (plus at most the pool).
    let settle = Instant::now() + Duration::from_secs(60);
    while fds(pid) > fd0 + 8 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pg = postgres::shared().connect(SUPERUSER, None, DB1).await;
    let locks = pg
        .simple_query("select count(*) from pg_locks where locktype = 'advisory'")
        .await
        .unwrap();
    println!(
        "soak: end: {sent} notifications checked, {} client cycles, pgherald: {} fds (start {fd0}), {} KiB RSS (start {rss0}), advisory locks left: {:?}",
        cycles.load(Ordering::Relaxed),
        fds(pid),
        rss_kib(pid),
        locks.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
    );
    assert!(
        fds(pid) <= fd0 + 8,
        "file descriptors leak: {} > {fd0} + 8",
        fds(pid)
    );
}
