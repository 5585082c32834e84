//! The memory scenario: resident memory (VmRSS from /proc/PID/status) of the pooler process
//! before and after opening N idle client connections, then after each of them LISTENs on a
//! distinct channel; reported as bytes per idle client and per idle listener.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio_postgres::Client;

use crate::common::{human_bytes, run_id, Ctx, Progress, Record, Res, TargetArgs};
use crate::conn;

/// `bench memory` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Process id of the pooler whose memory is measured.
    #[arg(long)]
    pub pid: u32,
    /// Idle connections per batch.
    #[arg(long, default_value_t = 10_000)]
    pub clients: u64,
    /// Then have every one of those connections LISTEN on a channel of its own and measure again.
    #[arg(long)]
    pub listeners: bool,
    /// Seconds to let the process settle before each reading.
    #[arg(long, default_value_t = 2.0)]
    pub settle_seconds: f64,
}

/// Reads VmRSS of `pid`, in bytes.
pub fn rss(pid: u32) -> Res<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS in {path}"))
}

/// Measures; one record per reading: `clients` (bytes per idle client), and with `listeners`
/// also `listen` (bytes each of those clients adds by LISTENing on a channel of its own) and
/// `listeners` (the two together: bytes per idle listener).
pub async fn run(ctx: &Ctx, pid: u32, n: u64, listeners: bool, settle: Duration) -> Vec<Record> {
    let mut out = Vec::new();
    let mut rec = ctx.record("memory", "connections", n);
    rec.variant = Some("clients".into());
    rec.unit = "bytes/conn".into();
    let opened = match open_idle(ctx, pid, n, settle, &mut rec).await {
        Ok(o) => Some(o),
        Err(e) => {
            rec.errors += 1;
            rec.add_note(e);
            None
        }
    };
    show(ctx, &rec);
    out.push(rec.clone());
    if let (true, Some(opened)) = (listeners, &opened) {
        let mut listen = ctx.record("memory", "connections", n);
        listen.variant = Some("listen".into());
        listen.unit = "bytes/conn".into();
        if let Err(e) = add_listen(ctx, pid, &opened.clients, settle, &mut listen).await {
            listen.errors += 1;
            listen.add_note(e);
        }
        show(ctx, &listen);
        let mut total = listen.clone();
        total.variant = Some("listeners".into());
        total.rss_before = rec.rss_before;
        total.bytes_per_conn = match (rec.bytes_per_conn, listen.bytes_per_conn) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        total.rate = total.bytes_per_conn;
        total.note = Some("idle client plus its LISTEN".into());
        show(ctx, &total);
        out.push(listen);
        out.push(total);
    }
    drop(opened);
    out
}

fn show(ctx: &Ctx, rec: &Record) {
    eprintln!(
        "[{} memory {} n={}] rss {} -> {}: {} per connection",
        ctx.target,
        rec.variant.as_deref().unwrap_or(""),
        rec.value,
        human_bytes(rec.rss_before.unwrap_or(0) as f64),
        human_bytes(rec.rss_after.unwrap_or(0) as f64),
        human_bytes(rec.bytes_per_conn.unwrap_or(0.0))
    );
}

/// Opens `n` idle connections and measures the process before and after.
async fn open_idle(
    ctx: &Ctx,
    pid: u32,
    n: u64,
    settle: Duration,
    rec: &mut Record,
) -> Res<conn::Opened> {
    tokio::time::sleep(settle).await;
    let before = rss(pid)?;
    rec.rss_before = Some(before);
    let label = format!("{} memory", ctx.target);
    let opened = conn::open_many(&ctx.url, n, ctx.concurrency, &label, |_| None, |_| |_| {}).await;
    rec.value = opened.clients.len() as u64;
    rec.errors += opened.errors;
    if let Some(e) = &opened.first_error {
        rec.add_note(format!(
            "{} of {n} connections failed, first: {e}",
            opened.errors
        ));
    }
    tokio::time::sleep(settle).await;
    let after = rss(pid)?;
    rec.rss_after = Some(after);
    if rec.value > 0 {
        rec.bytes_per_conn = Some((after as f64 - before as f64) / rec.value as f64);
        rec.rate = rec.bytes_per_conn;
    }
    Ok(opened)
}

/// Has every open connection LISTEN on a channel of its own and measures what that added.
async fn add_listen(
    ctx: &Ctx,
    pid: u32,
    clients: &[Client],
    settle: Duration,
    rec: &mut Record,
) -> Res<()> {
    let before = rss(pid)?;
    rec.rss_before = Some(before);
    let run = run_id();
    let done = Arc::new(AtomicU64::new(0));
    let _progress = {
        let done = done.clone();
        let n = clients.len();
        Progress::start(format!("{} memory LISTEN", ctx.target), move || {
            format!("{}/{n} listening", done.load(Ordering::Relaxed))
        })
    };
    let results: Vec<Result<(), String>> = stream::iter(clients.iter().enumerate())
        .map(|(i, c)| {
            let done = done.clone();
            async move {
                let sql = format!("LISTEN mem_{run}_{i}");
                let r = tokio::time::timeout(
                    ctx.wait.max(Duration::from_secs(15)),
                    c.batch_execute(&sql),
                )
                .await
                .map_err(|_| format!("{sql}: no answer in time"))?
                .map_err(|e| format!("{sql}: {}", crate::conn::describe(&e)));
                done.fetch_add(1, Ordering::Relaxed);
                r
            }
        })
        .buffer_unordered(ctx.concurrency)
        .collect()
        .await;
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    rec.errors += failed.len() as u64;
    if let Some(e) = failed.first() {
        rec.add_note(format!("{} LISTENs failed, first: {e}", failed.len()));
    }
    rec.value = (results.len() - failed.len()) as u64;
    tokio::time::sleep(settle).await;
    let after = rss(pid)?;
    rec.rss_after = Some(after);
    if rec.value > 0 {
        rec.bytes_per_conn = Some((after as f64 - before as f64) / rec.value as f64);
        rec.rate = rec.bytes_per_conn;
    }
    Ok(())
}
