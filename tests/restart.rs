//! Postgres going away under pgherald: after a crash restart of the server, existing idle
//! clients and new clients work again without restarting pgherald.

mod support;

use std::time::{Duration, Instant};

use pgherald::config::PoolMode;
use support::herald::{self, Herald};
use support::postgres::{TestPostgres, DEFAULT_DB, SUPERUSER};

async fn value(c: &tokio_postgres::Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let r = c.query_typed(sql, &[]).await?;
    Ok(r[0].get::<_, String>(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_after_postgres_crash_restart() {
    let pg = tokio::task::spawn_blocking(TestPostgres::start)
        .await
        .unwrap();
    let h = Herald::start(herald::config(&pg, PoolMode::Transaction, 2)).await;
    let idle_client = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    let pid = value(&idle_client, "select pg_backend_pid()::text")
        .await
        .unwrap();
    // SIGKILL of a backend makes the postmaster terminate every backend and reinitialize:
    // every pooled server connection dies, as in a Postgres restart.
    let status = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Back, and past the crash: the killed backend is gone from a fresh connection's view.
        if let Ok(direct) = pg.try_connect(SUPERUSER, None, DEFAULT_DB).await {
            let gone =
                format!("select (count(*) = 0)::text from pg_stat_activity where pid = {pid}");
            if value(&direct, &gone).await.is_ok_and(|v| v == "true") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "postgres did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The idle client held no server: its next query gets a fresh one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match value(&idle_client, "select 'back'::text").await {
            Ok(v) => {
                assert_eq!(v, "back");
                break;
            }
            Err(e) => {
                assert!(!e.is_closed(), "an idle client must stay connected: {e:?}");
                assert!(Instant::now() < deadline, "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let fresh = h.connect(SUPERUSER, None, DEFAULT_DB).await;
    assert_eq!(value(&fresh, "select 'new'::text").await.unwrap(), "new");
}
