//! The cross-instance scenario: writers spread round-robin over several pgherald instances
//! that share a backplane each commit `NOTIFY` (autocommit); one listener per instance.
//! Reports commits/s and, per listener, how many arrived and the commit-to-delivery latency
//! of notifications sent through another instance (p50/p99). With one URL it measures a
//! single instance the same way, for a side-by-side row.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{run_id, Ctx, Latency, Record, Res, TargetArgs};
use crate::conn;

/// `bench cross` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Further instances sharing --url's backplane (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub peer_url: Vec<String>,
    /// Writer counts to sweep (spread over all instances).
    #[arg(long, value_delimiter = ',', default_values_t = [32u64, 128])]
    pub clients: Vec<u64>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One point with `clients` writers.
pub async fn run_point(ctx: &Ctx, peers: &[String], clients: u64) -> Record {
    let mut rec = ctx.record("cross", "clients", clients);
    rec.unit = "commits/s".into();
    if let Err(e) = measure(ctx, peers, clients, &mut rec).await {
        rec.errors += 1;
        rec.add_note(e);
    }
    rec
}

async fn measure(ctx: &Ctx, peers: &[String], clients: u64, rec: &mut Record) -> Res<()> {
    let mut urls = vec![ctx.url.clone()];
    for p in peers {
        urls.push(conn::local_config(p)?);
    }
    let chan = format!("cross_{}", run_id());
    // One listener per instance; instance index travels in the payload with the send time.
    let mut listeners = Vec::new();
    for u in &urls {
        let (c, rx) = conn::connect_listener(u).await?;
        c.batch_execute(&format!("LISTEN {chan}"))
            .await
            .map_err(|e| conn::describe(&e))?;
        listeners.push((c, rx));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..clients {
        let inst = (w as usize) % urls.len();
        let c = conn::connect(&urls[inst]).await?;
        let (stop, commits, errors, chan) =
            (stop.clone(), commits.clone(), errors.clone(), chan.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sql = format!("NOTIFY {chan}, '{inst}:{}'", now_us());
                match c.batch_execute(&sql).await {
                    Ok(()) => commits.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let readers: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(me, (c, mut rx))| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _keep = c;
                let (mut got, mut lat) = (0u64, Latency::new());
                loop {
                    match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
                        Ok(Some(n)) => {
                            got += 1;
                            let (from, sent) = n.payload().split_once(':').unwrap_or(("", "0"));
                            if from != me.to_string() {
                                let sent: u64 = sent.parse().unwrap_or(0);
                                lat.record(Duration::from_micros(now_us().saturating_sub(sent)));
                            }
                        }
                        Ok(None) => break,
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
                (got, lat)
            })
        })
        .collect();
    tokio::time::sleep(ctx.duration).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let sent = commits.load(Ordering::Relaxed);
    let mut lat = Latency::new();
    for (i, r) in readers.into_iter().enumerate() {
        let (got, l) = r.await.map_err(|e| e.to_string())?;
        lat.merge(&l);
        if got != sent {
            rec.add_note(format!("listener on instance {i} got {got} of {sent}"));
        }
    }
    rec.seconds = ctx.duration.as_secs_f64();
    rec.ops = sent;
    rec.rate = Some(sent as f64 / rec.seconds);
    rec.errors += errors.load(Ordering::Relaxed);
    rec.p50_us = lat.quantile_us(0.5);
    rec.p99_us = lat.quantile_us(0.99);
    Ok(())
}
