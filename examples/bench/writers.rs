//! The writers scenario: N clients loop `BEGIN; INSERT a row; NOTIFY on a per-client channel
//! with a 50-byte payload; COMMIT` (or the same without NOTIFY), each statement a simple
//! Query, while a sampler counts waiters on NOTIFY's commit lock in the real Postgres.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;

use crate::common::{Ctx, Latency, Progress, Record, Res, TargetArgs};
use crate::conn;
use crate::locks::Sampler;

/// The table every writer inserts into (created on the real Postgres).
pub const TABLE: &str = "pgherald_bench_writes";
/// Longest one transaction may take before its client is given up.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Which transactions the writers run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// With the NOTIFY.
    Notify,
    /// INSERT only.
    Insert,
    /// Both, one after the other.
    Both,
}

impl Variant {
    /// The NOTIFY flags to run, in order.
    pub fn flags(self) -> Vec<bool> {
        match self {
            Variant::Notify => vec![true],
            Variant::Insert => vec![false],
            Variant::Both => vec![true, false],
        }
    }
}

/// `bench writers` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Client counts to sweep.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 8, 32, 128, 512])]
    pub clients: Vec<u64>,
    /// notify, insert or both.
    #[arg(long, value_enum, default_value = "both")]
    pub variant: Variant,
    /// Unmeasured seconds before each point's window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_seconds: f64,
}

/// Creates the table on the real Postgres if it is missing.
pub async fn prepare(ctx: &Ctx) -> Res<()> {
    let c = conn::connect(&ctx.direct).await?;
    c.batch_execute(&format!(
        "create table if not exists {TABLE} (id bigserial primary key, client int not null, payload text not null)"
    ))
    .await
    .map_err(|e| format!("creating {TABLE}: {}", crate::conn::describe(&e)))
}

/// Runs one point: `clients` writers for the warm-up plus the measured window.
pub async fn run_point(ctx: &Ctx, clients: u64, notify: bool, warmup: Duration) -> Record {
    let variant = if notify { "notify" } else { "insert" };
    let mut rec = ctx.record("writers", "clients", clients);
    rec.variant = Some(variant.into());
    rec.unit = "tx/s".into();
    if let Err(e) = measure(ctx, clients, notify, warmup, &mut rec).await {
        rec.errors += 1;
        rec.add_note(e);
    }
    rec
}

async fn measure(
    ctx: &Ctx,
    requested: u64,
    notify: bool,
    warmup: Duration,
    rec: &mut Record,
) -> Res<()> {
    let label = format!(
        "{} writers {} c={requested}",
        ctx.target,
        rec.variant.as_deref().unwrap_or("")
    );
    let clients = ctx.cap_to_server(requested, 2, "clients", rec).await?;
    prepare(ctx).await?;
    let direct = conn::connect(&ctx.direct).await?;
    direct
        .batch_execute(&format!("truncate {TABLE}"))
        .await
        .map_err(|e| format!("truncate {TABLE}: {}", crate::conn::describe(&e)))?;
    drop(direct);
    let opened = conn::open_many(
        &ctx.url,
        clients,
        ctx.concurrency,
        &label,
        |_| None,
        |_| |_| {},
    )
    .await;
    rec.value = opened.clients.len() as u64;
    rec.errors += opened.errors;
    if let Some(e) = opened.first_error {
        rec.add_note(format!(
            "{} of {clients} connections failed, first: {e}",
            opened.errors
        ));
    }
    if opened.clients.is_empty() {
        return Err("no client connected".into());
    }

    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + ctx.duration;
    let mut tasks = Vec::new();
    for (i, client) in opened.clients.into_iter().enumerate() {
        let (done, errors, first_error, stop) = (
            done.clone(),
            errors.clone(),
            first_error.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Latency::new();
            let mut n = 0u64;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = tokio::time::timeout(TXN_TIMEOUT, txn(&client, i, n, notify)).await;
                n += 1;
                let t1 = Instant::now();
                match r {
                    Ok(Ok(())) => {
                        if t1 >= measure_from && t1 <= deadline {
                            lat.record(t1 - t0);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Err(e)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(conn::describe(&e));
                        if client.is_closed() {
                            break;
                        }
                        let _ = tokio::time::timeout(TXN_TIMEOUT, client.batch_execute("ROLLBACK"))
                            .await;
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(format!("a transaction took over {TXN_TIMEOUT:?}"));
                        break;
                    }
                }
            }
            lat
        }));
    }

    tokio::time::sleep_until(measure_from).await;
    let cpu_before = crate::cpu::snapshot(ctx.pooler_pid);
    let sampler = Sampler::start(&ctx.direct).await;
    let progress = {
        let (done, errors) = (done.clone(), errors.clone());
        let lock = sampler.as_ref().ok().map(|s| s.stats.clone());
        let prev = AtomicU64::new(0);
        Progress::start(label.clone(), move || {
            let now = done.load(Ordering::Relaxed);
            let last = prev.swap(now, Ordering::Relaxed);
            let waiting = lock
                .as_ref()
                .map_or(0, |l| l.max_waiting.load(Ordering::Relaxed));
            format!(
                "{} tx/s, {now} done, {} errors, max lock waiters {waiting}",
                now - last,
                errors.load(Ordering::Relaxed)
            )
        })
    };
    tokio::time::sleep_until(deadline).await;
    let cpu_after = crate::cpu::snapshot(ctx.pooler_pid);
    stop.store(true, Ordering::Relaxed);
    drop(progress);
    match sampler {
        Ok(s) => s.finish().await.fill(rec),
        Err(e) => rec.add_note(format!("no lock sampling: {e}")),
    }

    let mut lat = Latency::new();
    let join_by = Instant::now() + TXN_TIMEOUT + Duration::from_secs(5);
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout_at(join_by, t).await {
            Ok(Ok(l)) => lat.merge(&l),
            _ => abort.abort(),
        }
    }
    rec.set_rate(done.load(Ordering::Relaxed), ctx.duration, "tx/s", &lat);
    rec.errors += errors.load(Ordering::Relaxed);
    rec.set_cpu(cpu_before, cpu_after);
    if let Some(e) = first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        rec.add_note(format!("first transaction error: {e}"));
    }
    Ok(())
}

/// One writer transaction, statement by statement as an application sends them.
async fn txn(c: &Client, client: usize, n: u64, notify: bool) -> Result<(), tokio_postgres::Error> {
    // 50 bytes: the counter, zero-padded.
    let payload = format!("{n:050}");
    c.batch_execute("BEGIN").await?;
    c.batch_execute(&format!(
        "INSERT INTO {TABLE} (client, payload) VALUES ({client}, '{payload}')"
    ))
    .await?;
    if notify {
        c.batch_execute(&format!("NOTIFY bench_w{client}, '{payload}'"))
            .await?;
    }
    c.batch_execute("COMMIT").await
}
