//! The pooler-overhead scenario: runs `pgbench` (from PATH) against the target with
//! `-n -M simple -T secs -c N -j 2` and `-S` or `-b tpcb-like`, parses tps, mean latency and
//! failed transactions, takes p50/p99 from pgbench's per-transaction log (`-l`, written to a
//! temporary directory), and initializes pgbench's tables on the real Postgres when missing.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::common::{Ctx, Latency, Record, Res, TargetArgs};
use crate::conn;

/// Which pgbench script.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-S`: one primary-key SELECT per transaction.
    Select,
    /// `-b tpcb-like`: three UPDATEs, a SELECT and an INSERT per transaction.
    Tpcb,
    /// Both, one after the other.
    Both,
}

impl Mode {
    /// The single modes to run, in order.
    pub fn list(self) -> Vec<Mode> {
        match self {
            Mode::Both => vec![Mode::Select, Mode::Tpcb],
            m => vec![m],
        }
    }

    /// The name used in results: select, tpcb-like.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Select => "select",
            Mode::Tpcb => "tpcb-like",
            Mode::Both => "both",
        }
    }
}

/// `bench pgbench` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Client counts to sweep.
    #[arg(long, value_delimiter = ',', default_values_t = [8u64, 64])]
    pub clients: Vec<u64>,
    /// select, tpcb or both.
    #[arg(long, value_enum, default_value = "both")]
    pub mode: Mode,
    /// Scale factor for `pgbench -i` when the tables are missing.
    #[arg(long, default_value_t = 10)]
    pub scale: u32,
}

/// Runs `pgbench -i -s scale` on the real Postgres unless pgbench_accounts exists.
pub async fn ensure_init(ctx: &Ctx, scale: u32) -> Res<()> {
    let c = conn::connect(&ctx.direct).await?;
    let row = c
        .query_one("select to_regclass('pgbench_accounts') is not null", &[])
        .await
        .map_err(|e| {
            format!(
                "looking for pgbench_accounts: {}",
                crate::conn::describe(&e)
            )
        })?;
    if row.get::<_, bool>(0) {
        return Ok(());
    }
    eprintln!("[pgbench] initializing pgbench tables, scale {scale}, on the direct URL");
    let args = vec![
        "-i".into(),
        "-q".into(),
        "-s".into(),
        scale.to_string(),
        ctx.direct_text.clone(),
    ];
    let out = run_pgbench(args, Duration::from_secs(900)).await?;
    if !out.success {
        return Err(format!("pgbench -i failed: {}", out.stderr_tail));
    }
    Ok(())
}

/// Runs one point.
pub async fn run_point(ctx: &Ctx, clients: u64, mode: Mode) -> Record {
    let mut rec = ctx.record("pgbench", "clients", clients);
    rec.variant = Some(mode.name().into());
    rec.unit = "tx/s".into();
    let secs = ctx.duration.as_secs_f64().ceil().max(1.0) as u64;
    let mut args: Vec<String> = ["-n", "-M", "simple", "-P", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend([
        "-T".into(),
        secs.to_string(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        clients.clamp(1, 2).to_string(),
    ]);
    match mode {
        Mode::Tpcb => args.extend(["-b".into(), "tpcb-like".into()]),
        _ => args.push("-S".into()),
    }
    let logs = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            rec.errors += 1;
            rec.add_note(format!("no temporary directory for pgbench's log: {e}"));
            return rec;
        }
    };
    args.extend([
        "-l".into(),
        format!("--log-prefix={}", logs.path().join("tx").display()),
    ]);
    args.push(ctx.url_text.clone());
    eprintln!(
        "[{} pgbench {} c={clients}] pgbench {}",
        ctx.target,
        mode.name(),
        args.join(" ")
    );
    match run_pgbench(args, Duration::from_secs(secs + 120)).await {
        Ok(out) => {
            let field = |prefix: &str| -> Option<f64> {
                out.stdout.lines().find_map(|l| {
                    let rest = l.trim().strip_prefix(prefix)?;
                    rest.split_whitespace().next()?.parse().ok()
                })
            };
            rec.seconds = secs as f64;
            rec.rate = field("tps =");
            rec.ops = field("number of transactions actually processed:").unwrap_or(0.0) as u64;
            rec.avg_us = field("latency average =").map(|ms| ms * 1000.0);
            rec.errors += field("number of failed transactions:").unwrap_or(0.0) as u64;
            let lat = log_latencies(logs.path());
            rec.p50_us = lat.quantile_us(0.50);
            rec.p99_us = lat.quantile_us(0.99);
            if !out.success || rec.rate.is_none() {
                rec.errors += 1;
                rec.add_note(format!("pgbench failed: {}", out.stderr_tail));
            }
        }
        Err(e) => {
            rec.errors += 1;
            rec.add_note(e);
        }
    }
    rec
}

/// Reads every per-transaction log line (`client tx latency_us script epoch epoch_us`) in
/// `dir`; skipped or failed transactions (not a number in the third field) are ignored.
fn log_latencies(dir: &std::path::Path) -> Latency {
    let mut lat = Latency::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return lat;
    };
    for e in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for us in text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        {
            lat.record(Duration::from_micros(us));
        }
    }
    lat
}

/// What a pgbench run left.
struct Output {
    success: bool,
    stdout: String,
    stderr_tail: String,
}

/// Runs pgbench with `args`, echoing its stderr (progress) and killing it after `limit`.
async fn run_pgbench(args: Vec<String>, limit: Duration) -> Res<Output> {
    let mut child = Command::new("pgbench")
        .args(&args)
        // The URL in the arguments decides where pgbench connects, not the environment.
        .env_remove("PGHOST")
        .env_remove("PGHOSTADDR")
        .env_remove("PGPORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run pgbench (is it on PATH?): {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no pgbench stdout")?;
    let stderr = child.stderr.take().ok_or("no pgbench stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut tail: Vec<String> = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  {line}");
            tail.push(line);
            if tail.len() > 3 {
                tail.remove(0);
            }
        }
        tail.join(" | ")
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr_tail = err_reader.join().unwrap_or_default();
    match status {
        Some(st) => Ok(Output {
            success: st.success(),
            stdout,
            stderr_tail,
        }),
        None => Err(format!("pgbench killed after {limit:?}: {stderr_tail}")),
    }
}
