//! The fan-out scenario: one publisher NOTIFYs one channel that N connections LISTEN on.
//! The publisher keeps at most --window notifications ahead of the slowest listener, so the
//! rate is what the system sustains, not how deep a queue grows. Each payload carries its
//! sequence number and send time: listeners measure end-to-end latency and count gaps, and
//! whatever has not arrived --wait-ms after the last progress is reported lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Notification;

use crate::common::{run_id, Ctx, Latency, Progress, Record, Res, TargetArgs};
use crate::conn;

/// Latency histograms are sharded to keep listeners from contending on one lock.
const SHARDS: usize = 16;

/// `bench fanout` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Listener counts to sweep.
    #[arg(long, value_delimiter = ',', default_values_t = [10u64, 100, 1000, 10000])]
    pub listeners: Vec<u64>,
    /// Notifications the publisher may be ahead of the slowest listener.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
}

/// What all listeners of one point share.
struct Shared {
    base: std::time::Instant,
    channel: String,
    /// receipts[seq % len]: listeners that have received `seq`; a slot is reused only after
    /// every listener got its previous sequence number (the window is far smaller).
    receipts: Vec<AtomicU64>,
    shards: Vec<Mutex<Latency>>,
    delivered: AtomicU64,
    out_of_order: AtomicU64,
    last_delivery_ns: AtomicU64,
}

/// One listener's view: the last sequence number it received.
#[derive(Default)]
struct Seen {
    last: AtomicU64,
}

impl Shared {
    fn on_note(&self, shard: usize, seen: &Seen, n: &Notification) {
        if n.channel() != self.channel {
            return;
        }
        let Some((seq, sent)) = n
            .payload()
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        else {
            return;
        };
        let now = self.base.elapsed().as_nanos() as u64;
        if let Ok(mut h) = self.shards[shard % SHARDS].lock() {
            h.record(Duration::from_nanos(now.saturating_sub(sent)));
        }
        self.receipts[(seq % self.receipts.len() as u64) as usize].fetch_add(1, Ordering::Relaxed);
        let prev = seen.last.swap(seq, Ordering::Relaxed);
        if seq != prev + 1 {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
    }
}

/// Runs one point with `listeners` listeners (capped by max_connections on Postgres itself).
pub async fn run_point(ctx: &Ctx, listeners: u64, window: u64) -> Record {
    let mut rec = ctx.record("fanout", "listeners", listeners);
    rec.unit = "notifications/s".into();
    if let Err(e) = measure(ctx, listeners, window.clamp(1, 10_000), &mut rec).await {
        rec.errors += 1;
        rec.add_note(e);
    }
    rec
}

async fn measure(ctx: &Ctx, requested: u64, window: u64, rec: &mut Record) -> Res<()> {
    let label = format!("{} fanout listeners={requested}", ctx.target);
    let n = ctx.cap_to_server(requested, 3, "listeners", rec).await?;
    let shared = Arc::new(Shared {
        base: std::time::Instant::now(),
        channel: format!("fan_{}", run_id()),
        receipts: (0..2 * window + 16).map(|_| AtomicU64::new(0)).collect(),
        shards: (0..SHARDS).map(|_| Mutex::new(Latency::new())).collect(),
        delivered: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
    });
    // Per listener, for gap detection.
    let seen: Arc<Vec<Seen>> = Arc::new((0..n).map(|_| Seen::default()).collect());
    let listen = format!("LISTEN {}", shared.channel);
    let opened = conn::open_many(
        &ctx.url,
        n,
        ctx.concurrency,
        &label,
        |_| Some(listen.clone()),
        |i| {
            let (shared, seen) = (shared.clone(), seen.clone());
            move |note: Notification| shared.on_note(i as usize, &seen[i as usize], &note)
        },
    )
    .await;
    rec.errors += opened.errors;
    if let Some(e) = &opened.first_error {
        rec.add_note(format!(
            "{} of {n} listeners failed, first: {e}",
            opened.errors
        ));
    }
    let live = opened.clients.len() as u64;
    rec.value = live;
    if live == 0 {
        return Err("no listener connected".into());
    }
    let received = |seq: u64| -> u64 {
        shared.receipts[(seq % shared.receipts.len() as u64) as usize].load(Ordering::Relaxed)
    };

    let publisher = conn::connect(&ctx.url).await?;
    let progress = {
        let shared = shared.clone();
        let prev = AtomicU64::new(0);
        Progress::start(label, move || {
            let now = shared.delivered.load(Ordering::Relaxed);
            format!(
                "{} delivered/s, {now} delivered",
                now - prev.swap(now, Ordering::Relaxed)
            )
        })
    };
    let start_ns = shared.base.elapsed().as_nanos() as u64;
    let start = Instant::now();
    let deadline = start + ctx.duration;
    let mut seq = 0u64;
    let mut errors = 0u64;
    let mut stalled = false;
    let mut progress_at = (0u64, Instant::now());
    while Instant::now() < deadline {
        // Keep at most `window` notifications ahead of the slowest listener: every listener
        // must have received `next - window` before `next` goes out.
        let next = seq + 1;
        while next > window && received(next - window) < live {
            let d = shared.delivered.load(Ordering::Relaxed);
            if d != progress_at.0 {
                progress_at = (d, Instant::now());
            } else if progress_at.1.elapsed() >= ctx.wait {
                stalled = true;
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        if stalled || Instant::now() >= deadline {
            break;
        }
        // Clear the slot this sequence number reuses (its previous user was acknowledged).
        shared.receipts[(next % shared.receipts.len() as u64) as usize].store(0, Ordering::Relaxed);
        seq = next;
        let sent = shared.base.elapsed().as_nanos() as u64;
        let sql = format!("NOTIFY {}, '{seq}:{sent}'", shared.channel);
        match tokio::time::timeout(ctx.wait, publisher.batch_execute(&sql)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                errors += 1;
                seq -= 1;
                rec.add_note(format!("NOTIFY failed: {}", crate::conn::describe(&e)));
                break;
            }
            Err(_) => {
                errors += 1;
                rec.add_note("NOTIFY got no answer in time");
                break;
            }
        }
    }
    let published = seq;
    // Drain: wait while listeners still make progress, at most --wait-ms without any.
    let mut last = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    while last.0 < published * live && last.1.elapsed() < ctx.wait {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let d = shared.delivered.load(Ordering::Relaxed);
        if d != last.0 {
            last = (d, Instant::now());
        }
    }
    drop(progress);
    if stalled {
        rec.add_note(format!(
            "publishing stopped: the slowest listener made no progress for {:?}",
            ctx.wait
        ));
    }
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let expected = published * live;
    rec.lost = expected.saturating_sub(delivered);
    let ooo = shared.out_of_order.load(Ordering::Relaxed);
    if ooo > 0 {
        rec.add_note(format!("{ooo} deliveries out of order or after a gap"));
    }
    let end_ns = shared.last_delivery_ns.load(Ordering::Relaxed);
    let span = if delivered > 0 && end_ns > start_ns {
        Duration::from_nanos(end_ns - start_ns)
    } else {
        start.elapsed()
    };
    let mut lat = Latency::new();
    for s in &shared.shards {
        if let Ok(h) = s.lock() {
            lat.merge(&h);
        }
    }
    rec.set_rate(delivered, span, "notifications/s", &lat);
    rec.errors += errors;
    rec.add_note(format!("{published} published to {live} listeners"));
    drop(opened);
    Ok(())
}
