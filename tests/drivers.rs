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
//! sqlx) are in `tests/drivers_rust.rs`; the same scripts over TLS in `tests/drivers_tls.rs`;
//! running them is `tests/support/scripts.rs`.

mod support;

use support::herald;
use support::postgres;
use support::scripts::{run_driver, Driver, Run, POOL_MODE, POOL_SIZE};

/// Transactions per client connection.
const ITERATIONS: usize = 50;

/// Runs `driver`'s script in plaintext against a fresh pgherald.
async fn plaintext(driver: Driver) {
    let config = herald::config(postgres::shared(), POOL_MODE, POOL_SIZE);
    let run = Run {
        iterations: ITERATIONS,
        env: Vec::new(),
    };
    run_driver(driver, config, run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg() {
    plaintext(Driver::Psycopg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    plaintext(Driver::Asyncpg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    plaintext(Driver::NodePostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc() {
    plaintext(Driver::Pgjdbc).await;
}
