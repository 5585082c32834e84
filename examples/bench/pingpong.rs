//! The ping-pong scenario: two connections bounce a notification (A NOTIFYs B's channel, B
//! NOTIFYs A's back) while N idle connections LISTEN on distinct channels. Every wait is
//! bounded: an answer that does not come within --wait-ms counts as lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::common::{run_id, Ctx, Latency, Progress, Record, Res, TargetArgs};
use crate::conn;

/// `bench pingpong` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Idle LISTENing connection counts to sweep.
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 10, 100, 1000, 10000])]
    pub idle_listeners: Vec<u64>,
    /// Give up a point after this many lost round trips in a row.
    #[arg(long, default_value_t = 3)]
    pub max_consecutive_lost: u32,
}

/// Runs one point with `idle` idle listeners (capped by max_connections on Postgres itself).
pub async fn run_point(ctx: &Ctx, idle: u64, max_consecutive_lost: u32) -> Record {
    let mut rec = ctx.record("pingpong", "idle_listeners", idle);
    rec.unit = "round trips/s".into();
    if let Err(e) = measure(ctx, idle, max_consecutive_lost.max(1), &mut rec).await {
        rec.errors += 1;
        rec.add_note(e);
    }
    rec
}

async fn measure(
    ctx: &Ctx,
    requested: u64,
    max_consecutive_lost: u32,
    rec: &mut Record,
) -> Res<()> {
    let label = format!("{} pingpong idle={requested}", ctx.target);
    let run = run_id();
    let idle = ctx
        .cap_to_server(requested, 4, "idle listeners", rec)
        .await?;
    let opened = conn::open_many(
        &ctx.url,
        idle,
        ctx.concurrency,
        &label,
        |i| Some(format!("LISTEN pp_idle_{run}_{i}")),
        |_| |_| {},
    )
    .await;
    rec.value = opened.clients.len() as u64;
    rec.errors += opened.errors;
    if let Some(e) = &opened.first_error {
        rec.add_note(format!(
            "{} of {idle} idle listeners failed, first: {e}",
            opened.errors
        ));
    }

    let (a, mut a_rx) = conn::connect_listener(&ctx.url).await?;
    let (b, mut b_rx) = conn::connect_listener(&ctx.url).await?;
    let (chan_a, chan_b) = (format!("pp_a_{run}"), format!("pp_b_{run}"));
    for (c, ch) in [(&a, &chan_a), (&b, &chan_b)] {
        tokio::time::timeout(ctx.wait, c.batch_execute(&format!("LISTEN {ch}")))
            .await
            .map_err(|_| format!("LISTEN {ch}: no answer within {:?}", ctx.wait))?
            .map_err(|e| format!("LISTEN {ch}: {}", crate::conn::describe(&e)))?;
    }

    // B echoes every payload it gets back to A's channel.
    let stop = Arc::new(AtomicBool::new(false));
    let echo_errors = Arc::new(AtomicU64::new(0));
    let echo = {
        let (stop, echo_errors, wait, chan_a) =
            (stop.clone(), echo_errors.clone(), ctx.wait, chan_a.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(100), b_rx.recv()).await {
                    Ok(Some(n)) => {
                        let sql = format!("NOTIFY {chan_a}, {}", conn::literal(n.payload()));
                        if !matches!(
                            tokio::time::timeout(wait, b.batch_execute(&sql)).await,
                            Ok(Ok(()))
                        ) {
                            echo_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        })
    };

    let trips = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let progress = {
        let (trips, lost) = (trips.clone(), lost.clone());
        let prev = AtomicU64::new(0);
        Progress::start(label, move || {
            let now = trips.load(Ordering::Relaxed);
            format!(
                "{} round trips/s, {now} done, {} lost",
                now - prev.swap(now, Ordering::Relaxed),
                lost.load(Ordering::Relaxed)
            )
        })
    };
    let mut lat = Latency::new();
    let mut errors = 0u64;
    let mut consecutive = 0u32;
    let mut seq = 0u64;
    let start = Instant::now();
    let cpu_before = crate::cpu::snapshot(ctx.pooler_pid);
    let deadline = start + ctx.duration;
    'run: while Instant::now() < deadline {
        seq += 1;
        let want = seq.to_string();
        let t0 = Instant::now();
        match tokio::time::timeout(
            ctx.wait,
            a.batch_execute(&format!("NOTIFY {chan_b}, '{want}'")),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                errors += 1;
                rec.add_note(format!("NOTIFY failed: {}", crate::conn::describe(&e)));
                break;
            }
            Err(_) => {
                errors += 1;
                rec.add_note("NOTIFY got no answer in time");
                break;
            }
        }
        let until = t0 + ctx.wait;
        loop {
            match tokio::time::timeout_at(until, a_rx.recv()).await {
                Ok(Some(n)) if n.channel() == chan_a && n.payload() == want => {
                    lat.record(t0.elapsed());
                    trips.fetch_add(1, Ordering::Relaxed);
                    consecutive = 0;
                    break;
                }
                Ok(Some(_)) => continue, // a late answer to an earlier, already lost round trip
                Ok(None) => {
                    errors += 1;
                    rec.add_note("connection A closed");
                    break 'run;
                }
                Err(_) => {
                    lost.fetch_add(1, Ordering::Relaxed);
                    consecutive += 1;
                    if consecutive >= max_consecutive_lost {
                        rec.add_note(format!(
                            "stopped after {consecutive} round trips in a row got no answer within {:?}",
                            ctx.wait
                        ));
                        break 'run;
                    }
                    break;
                }
            }
        }
    }
    let window = start.elapsed();
    let cpu_after = crate::cpu::snapshot(ctx.pooler_pid);
    drop(progress);
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(ctx.wait + Duration::from_millis(200), echo).await;
    rec.set_rate(trips.load(Ordering::Relaxed), window, "round trips/s", &lat);
    rec.set_cpu(cpu_before, cpu_after);
    rec.lost += lost.load(Ordering::Relaxed);
    rec.errors += errors + echo_errors.load(Ordering::Relaxed);
    drop(opened);
    Ok(())
}
