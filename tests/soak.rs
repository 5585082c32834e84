//! Soak test (issue 11), off by default: `PGHERALD_SOAK=1 cargo test --release --test soak`
//! (otherwise it prints a note and passes). Many clients connect, LISTEN, run queries,
//! disconnect or are killed mid-transaction while one sender NOTIFYs a numbered sequence
//! (and rolls some NOTIFYs back); one checker listens throughout and must see every number
//! once, in order, and nothing rolled back. File descriptors must return to what they were
//! (bounded by the pool, not by the number of clients); RSS is printed at each stage.
//! `PGHERALD_SOAK_CLIENTS` (default 500 concurrent churners) and `PGHERALD_SOAK_SECS`
//! (default 600) size it; the full run is 10,000 clients for 10 minutes.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgherald::config::PoolMode;
use rand::Rng;
use support::herald::{self, Herald};
use support::listen;
use support::postgres::{self, DB1, SUPERUSER};
use support::raw::Raw;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
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
    let mut config = herald::config(postgres::shared(), PoolMode::Transaction, 8);
    config.max_client_conn = clients as usize + 16;
    let h = Herald::start(config).await;
    let conn = h.conn_str(SUPERUSER, None, DB1);
    let mut checker = listen::connect(&conn).await;
    checker
        .client
        .batch_execute("LISTEN soak_seq")
        .await
        .unwrap();
    let sender = h.connect(SUPERUSER, None, DB1).await;
    sender
        .batch_execute("NOTIFY soak_seq, 'warm'")
        .await
        .unwrap();
    assert_eq!(checker.next().await.payload(), "warm");
    let (fd0, rss0) = (fds(), rss_kib());
    println!("soak: {clients} churners for {secs} s; start: {fd0} fds, {rss0} KiB RSS");

    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (stop, cycles, conn, port) = (stop.clone(), cycles.clone(), conn.clone(), h.port());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let kind = rand::thread_rng().gen_range(0..3);
                match kind {
                    0 => {
                        // Killed mid-transaction, holding a session advisory lock.
                        let (mut raw, _) = Raw::login(port, SUPERUSER, DB1).await;
                        raw.query("begin; select pg_advisory_lock(7); listen soak_seq")
                            .await;
                        let _ = raw.until_ready().await;
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
                "soak: {sent} sent, {} client cycles, {} fds, {} KiB RSS",
                cycles.load(Ordering::Relaxed),
                fds(),
                rss_kib()
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
    while fds() > fd0 + 8 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pg = postgres::shared().connect(SUPERUSER, None, DB1).await;
    let locks = pg
        .simple_query("select count(*) from pg_locks where locktype = 'advisory'")
        .await
        .unwrap();
    println!(
        "soak: end: {sent} notifications checked, {} client cycles, {} fds (start {fd0}), {} KiB RSS (start {rss0}), advisory locks left: {:?}",
        cycles.load(Ordering::Relaxed),
        fds(),
        rss_kib(),
        locks.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
    );
    assert!(
        fds() <= fd0 + 8,
        "file descriptors leak: {} > {fd0} + 8",
        fds()
    );
}
