//! Running out of file descriptors (issue 11): when `accept` fails with EMFILE the accept
//! loop backs off and retries (README, failure table) instead of ending or spinning, so the
//! client that was waiting in the listen backlog is served as soon as descriptors are free
//! again. Alone in its test binary: it lowers this process's RLIMIT_NOFILE.

mod support;

use std::time::Duration;

use pgherald::config::PoolMode;
use rlimit::Resource;
use support::herald::{self, Herald};
use support::postgres::{shared, DEFAULT_DB, SUPERUSER};

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_survives_running_out_of_file_descriptors() {
    let h = Herald::start(herald::config(shared(), PoolMode::Transaction, 2)).await;
    // A pooled server connection, so the next login needs no new descriptor but its own.
    let warm = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    warm.simple_query("select 1").await.expect("warm up");
    let (soft, hard) = Resource::NOFILE.get().expect("getrlimit");
    Resource::NOFILE
        .set(open_fds() + 64, hard)
        .expect("lower RLIMIT_NOFILE");
    // Take every free descriptor, then give one back for the client's own socket.
    let mut hold = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hold.push(f);
    }
    assert!(!hold.is_empty());
    hold.pop();
    let url = h.conn_str(SUPERUSER, None, DEFAULT_DB);
    let client = tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        c.simple_query("select 'served'").await?;
        Ok::<_, tokio_postgres::Error>(())
    });
    // The connection waits in the backlog while pgherald's accept fails with EMFILE (at
    // least one failed attempt and one backoff fit in this wait).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !client.is_finished(),
        "served although no descriptor was free"
    );
    drop(hold);
    let served = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .expect("the accept loop never recovered")
        .expect("join");
    Resource::NOFILE
        .set(soft, hard)
        .expect("restore RLIMIT_NOFILE");
    served.expect("the waiting client is served once descriptors are free");
    // And the loop still accepts new clients.
    let after = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    after.simple_query("select 1").await.expect("a new client");
}
