//! The `suite` subcommand: every scenario against Postgres, PgBouncer and pgherald (those
//! given), alternating targets point by point for each repetition, every result appended to
//! a JSON-lines file, then median tables (stdout and summary.md) and SVG plots. It starts
//! nothing: the servers must already be running.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{raise_fd_limit, Ctx, Record, Res, TargetArgs};
use crate::{conn, fanout, memory, pgbench, pingpong, report, writers};

/// Scenarios the suite can run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// NOTIFYing writers against INSERT-only writers.
    Writers,
    /// Notification round trips beside idle listeners.
    Pingpong,
    /// One publisher, many listeners.
    Fanout,
    /// pgbench -S and tpcb-like.
    Pgbench,
    /// Pooler memory per idle client and listener.
    Memory,
}

/// `bench suite` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The real Postgres (target "postgres"; also used for pg_locks, tables and limits).
    #[arg(long)]
    pub postgres_url: String,
    /// PgBouncer in front of it (target "pgbouncer"); skipped when absent.
    #[arg(long)]
    pub pgbouncer_url: Option<String>,
    /// pgherald in front of it (target "pgherald"); skipped when absent.
    #[arg(long)]
    pub pgherald_url: Option<String>,
    /// pgherald's process id, for the memory scenario.
    #[arg(long)]
    pub pgherald_pid: Option<u32>,
    /// PgBouncer's process id, for the memory scenario.
    #[arg(long)]
    pub pgbouncer_pid: Option<u32>,
    /// Repetitions of every point per target.
    #[arg(long, default_value_t = 2)]
    pub reps: u32,
    /// Measured seconds per point.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Per-wait bound for notifications and replies, ms.
    #[arg(long, default_value_t = 2000)]
    pub wait_ms: u64,
    /// Connection attempts in flight while opening many connections.
    #[arg(long, default_value_t = 32)]
    pub connect_concurrency: usize,
    /// Where the JSON lines, summary.md and the plots go.
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::Writers, Scenario::Pingpong, Scenario::Fanout, Scenario::Pgbench, Scenario::Memory])]
    pub scenarios: Vec<Scenario>,
    /// Writer client counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 8, 32, 128, 512])]
    pub writer_clients: Vec<u64>,
    /// Writer variants.
    #[arg(long, value_enum, default_value = "both")]
    pub writer_variant: writers::Variant,
    /// Unmeasured seconds before each writers point.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_seconds: f64,
    /// Idle listener counts for ping-pong.
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 10, 100, 1000, 10000])]
    pub idle_listeners: Vec<u64>,
    /// Ping-pong gives up a point after this many lost round trips in a row.
    #[arg(long, default_value_t = 3)]
    pub max_consecutive_lost: u32,
    /// Listener counts for fan-out.
    #[arg(long, value_delimiter = ',', default_values_t = [10u64, 100, 1000, 10000])]
    pub fanout_listeners: Vec<u64>,
    /// Notifications the fan-out publisher may be ahead of the slowest listener.
    #[arg(long, default_value_t = 16)]
    pub fanout_window: u64,
    /// pgbench client counts.
    #[arg(long, value_delimiter = ',', default_values_t = [8u64, 64])]
    pub pgbench_clients: Vec<u64>,
    /// pgbench scale factor for initialization when its tables are missing.
    #[arg(long, default_value_t = 10)]
    pub pgbench_scale: u32,
    /// Idle connections per memory batch.
    #[arg(long, default_value_t = 10_000)]
    pub memory_clients: u64,
    /// Seconds to let a pooler settle before each memory reading.
    #[arg(long, default_value_t = 2.0)]
    pub settle_seconds: f64,
}

/// One point of the plan: a closure-free description, so the plan can be counted first.
#[derive(Debug, Clone, Copy)]
enum Point {
    Writers(u64, bool),
    Pingpong(u64),
    Fanout(u64),
    Pgbench(u64, pgbench::Mode),
}

impl Point {
    fn describe(&self) -> String {
        match self {
            Point::Writers(c, n) => format!(
                "writers {} clients={c}",
                if *n { "notify" } else { "insert" }
            ),
            Point::Pingpong(i) => format!("pingpong idle_listeners={i}"),
            Point::Fanout(l) => format!("fanout listeners={l}"),
            Point::Pgbench(c, m) => format!("pgbench {} clients={c}", m.name()),
        }
    }
}

struct Target {
    ctx: Ctx,
    pid: Option<u32>,
}

/// Has PgBouncer close its server connections (admin console `RECONNECT`; the user must be
/// in its admin_users), so LISTENs that clients left on them go away.
async fn pgbouncer_reconnect(ctx: &Ctx) -> Res<()> {
    let mut cfg = ctx.url.clone();
    cfg.dbname("pgbouncer");
    let c = conn::connect(&cfg).await?;
    tokio::time::timeout(Duration::from_secs(10), c.simple_query("RECONNECT"))
        .await
        .map_err(|_| "no answer to RECONNECT".to_string())?
        .map_err(|e| format!("RECONNECT: {}", crate::conn::describe(&e)))?;
    Ok(())
}

/// Runs the suite: checks the targets, runs the plan, writes results, tables and plots.
pub async fn run(a: Args) -> Res<()> {
    let mut targets = Vec::new();
    for (name, url, pid) in [
        ("postgres", Some(a.postgres_url.clone()), None),
        ("pgbouncer", a.pgbouncer_url.clone(), a.pgbouncer_pid),
        ("pgherald", a.pgherald_url.clone(), a.pgherald_pid),
    ] {
        let Some(url) = url else { continue };
        let ctx = Ctx::new(&TargetArgs {
            url,
            direct_url: Some(a.postgres_url.clone()),
            target: name.into(),
            seconds: a.seconds,
            wait_ms: a.wait_ms,
            connect_concurrency: a.connect_concurrency,
            pooler_pid: pid,
        })?;
        // Fail fast on a target that is not up; the suite never starts one.
        let c = conn::connect(&ctx.url)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        c.simple_query("select 1")
            .await
            .map_err(|e| format!("{name}: select 1: {}", crate::conn::describe(&e)))?;
        if let Some(pid) = pid {
            memory::rss(pid).map_err(|e| format!("{name} pid {pid}: {e}"))?;
        }
        targets.push(Target { ctx, pid });
    }
    let need = [
        a.idle_listeners.iter().max().copied().unwrap_or(0),
        a.fanout_listeners.iter().max().copied().unwrap_or(0),
        a.writer_clients.iter().max().copied().unwrap_or(0),
        a.memory_clients,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    raise_fd_limit(need + 1024);

    let mut plan: Vec<Point> = Vec::new();
    for s in &a.scenarios {
        match s {
            Scenario::Writers => {
                for &c in &a.writer_clients {
                    for n in a.writer_variant.flags() {
                        plan.push(Point::Writers(c, n));
                    }
                }
            }
            Scenario::Pingpong => plan.extend(a.idle_listeners.iter().map(|&i| Point::Pingpong(i))),
            Scenario::Fanout => plan.extend(a.fanout_listeners.iter().map(|&l| Point::Fanout(l))),
            Scenario::Pgbench => {
                for m in [pgbench::Mode::Select, pgbench::Mode::Tpcb] {
                    plan.extend(a.pgbench_clients.iter().map(|&c| Point::Pgbench(c, m)));
                }
            }
            Scenario::Memory => {}
        }
    }

    std::fs::create_dir_all(&a.out_dir)
        .map_err(|e| format!("creating {}: {e}", a.out_dir.display()))?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let jsonl = a.out_dir.join(format!("suite-{stamp}.jsonl"));
    let mut file =
        std::fs::File::create(&jsonl).map_err(|e| format!("creating {}: {e}", jsonl.display()))?;
    let mut records: Vec<Record> = Vec::new();
    let mut save = |rec: Record, records: &mut Vec<Record>| {
        let _ = writeln!(file, "{}", rec.to_line());
        let _ = file.flush();
        eprintln!(
            "  → {} {} {}={}: {} {} p50 {:?} p99 {:?} µs, errors {}, lost {}{}",
            rec.target,
            rec.scenario,
            rec.param,
            rec.value,
            rec.rate.map_or("–".into(), |r| format!("{r:.1}")),
            rec.unit,
            rec.p50_us,
            rec.p99_us,
            rec.errors,
            rec.lost,
            rec.note
                .as_deref()
                .map_or(String::new(), |n| format!(" ({n})"))
        );
        records.push(rec);
    };

    if a.scenarios.contains(&Scenario::Writers) {
        writers::prepare(&targets[0].ctx).await?;
    }
    if a.scenarios.contains(&Scenario::Pgbench) {
        pgbench::ensure_init(&targets[0].ctx, a.pgbench_scale).await?;
    }
    let total = plan.len() * a.reps as usize * targets.len();
    let started = Instant::now();
    let mut done = 0usize;
    let warmup = Duration::from_secs_f64(a.warmup_seconds.max(0.0));
    for point in &plan {
        for rep in 1..=a.reps {
            for t in &targets {
                let mut ctx = t.ctx.clone();
                ctx.rep = Some(rep);
                let eta = if done > 0 {
                    let per = started.elapsed().as_secs_f64() / done as f64;
                    let left = (per * (total - done) as f64).round() as u64;
                    format!(", about {}m{:02}s left", left / 60, left % 60)
                } else {
                    String::new()
                };
                eprintln!(
                    "[suite {}/{total}{eta}] {} rep {rep}/{} → {}",
                    done + 1,
                    point.describe(),
                    a.reps,
                    ctx.target
                );
                // A hard bound on each point, beyond the scenario's own bounded waits.
                let bound = ctx.duration * 2 + warmup + Duration::from_secs(600);
                let run = async {
                    match *point {
                        Point::Writers(c, n) => writers::run_point(&ctx, c, n, warmup).await,
                        Point::Pingpong(i) => {
                            pingpong::run_point(&ctx, i, a.max_consecutive_lost).await
                        }
                        Point::Fanout(l) => fanout::run_point(&ctx, l, a.fanout_window).await,
                        Point::Pgbench(c, m) => pgbench::run_point(&ctx, c, m).await,
                    }
                };
                let rec = match tokio::time::timeout(bound, run).await {
                    Ok(r) => r,
                    Err(_) => {
                        let mut r = ctx.record("unknown", "", 0);
                        r.errors = 1;
                        r.add_note(format!(
                            "{} did not finish within {bound:?}",
                            point.describe()
                        ));
                        r
                    }
                };
                save(rec, &mut records);
                done += 1;
                if ctx.target == "pgbouncer"
                    && matches!(point, Point::Pingpong(_) | Point::Fanout(_))
                {
                    // PgBouncer ran those LISTENs on pooled server connections, which keep
                    // listening; Postgres would go on signalling them in later points.
                    if let Err(e) = pgbouncer_reconnect(&ctx).await {
                        eprintln!("[suite] warning: PgBouncer RECONNECT failed ({e}); stale LISTENs may stay on its server connections");
                    }
                }
                // Let closed connections drain out of the servers before the next point.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    if a.scenarios.contains(&Scenario::Memory) {
        // One repetition: a second one in the same process would reuse memory freed by the first.
        for t in &targets {
            let Some(pid) = t.pid else {
                if t.ctx.target != "postgres" {
                    eprintln!(
                        "[suite] memory: no --{}-pid, skipping {}",
                        t.ctx.target, t.ctx.target
                    );
                }
                continue;
            };
            let listeners = t.ctx.target == "pgherald";
            eprintln!(
                "[suite] memory → {} ({} idle clients{})",
                t.ctx.target,
                a.memory_clients,
                if listeners { ", then each LISTENs" } else { "" }
            );
            let settle = Duration::from_secs_f64(a.settle_seconds.max(0.0));
            for rec in memory::run(&t.ctx, pid, a.memory_clients, listeners, settle).await {
                save(rec, &mut records);
            }
        }
    }

    eprintln!("[suite] results: {}", jsonl.display());
    let md = report::write_all(&records, &a.out_dir)?;
    println!("{md}");
    Ok(())
}
