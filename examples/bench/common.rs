//! What every scenario shares: the target flags and their resolved context, the JSON result
//! record, latency histograms, the once-a-second progress line, and the file-descriptor limit.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio_postgres::Config;

use crate::conn;

/// Errors are reported as text: every one ends up in a result's `note` or on stderr.
pub type Res<T> = Result<T, String>;

/// Flags naming the system under test, shared by every scenario subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Connection string or URL of the system under test (loopback or unix socket only).
    #[arg(long)]
    pub url: String,
    /// The real Postgres behind it: pg_locks sampling, table setup, server limits.
    /// Defaults to --url (then the target counts as Postgres itself).
    #[arg(long)]
    pub direct_url: Option<String>,
    /// Label written into every result: postgres, pgbouncer, pgherald, ….
    #[arg(long, default_value = "target")]
    pub target: String,
    /// Measured seconds per data point.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Longest wait for one notification or reply before it counts as lost, in ms.
    #[arg(long, default_value_t = 2000)]
    pub wait_ms: u64,
    /// Connection attempts in flight while opening many connections.
    #[arg(long, default_value_t = 32)]
    pub connect_concurrency: usize,
    /// Process id of the pooler under test: its CPU time per operation is recorded.
    #[arg(long)]
    pub pooler_pid: Option<u32>,
}

/// A resolved target: parsed, loopback-checked connection configs plus run settings.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Result label.
    pub target: String,
    /// The system under test.
    pub url: Config,
    /// The same, as given (for pgbench).
    pub url_text: String,
    /// The real Postgres.
    pub direct: Config,
    /// The same, as given (for pgbench).
    pub direct_text: String,
    /// True when the target is Postgres itself, whose max_connections caps idle connections.
    pub is_direct: bool,
    /// Measured duration per point.
    pub duration: Duration,
    /// Per-wait bound for notifications and replies.
    pub wait: Duration,
    /// Parallel connection attempts.
    pub concurrency: usize,
    /// Repetition number set by the suite.
    pub rep: Option<u32>,
    /// The pooler's process id, for CPU accounting.
    pub pooler_pid: Option<u32>,
}

impl Ctx {
    /// Checks both URLs (loopback only) and the numbers.
    pub fn new(a: &TargetArgs) -> Res<Ctx> {
        let direct_text = a.direct_url.clone().unwrap_or_else(|| a.url.clone());
        if !(a.seconds > 0.0 && a.seconds <= 3600.0) {
            return Err(format!("--seconds must be in (0, 3600], got {}", a.seconds));
        }
        Ok(Ctx {
            target: a.target.clone(),
            url: conn::local_config(&a.url)?,
            url_text: a.url.clone(),
            direct: conn::local_config(&direct_text)?,
            is_direct: direct_text == a.url || a.target == "postgres",
            direct_text,
            duration: Duration::from_secs_f64(a.seconds),
            wait: Duration::from_millis(a.wait_ms.max(10)),
            concurrency: a.connect_concurrency.clamp(1, 1024),
            rep: None,
            pooler_pid: a.pooler_pid,
        })
    }

    /// A result record pre-filled with this target's label and repetition.
    pub fn record(&self, scenario: &str, param: &str, value: u64) -> Record {
        Record {
            target: self.target.clone(),
            scenario: scenario.into(),
            param: param.into(),
            value,
            requested: value,
            rep: self.rep,
            unix_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            ..Record::default()
        }
    }

    /// How many more client connections the real Postgres accepts now (minus a margin of
    /// `keep` for the tool's own connections), for capping idle connections honestly.
    pub async fn server_free_slots(&self, keep: u64) -> Res<u64> {
        let c = conn::connect(&self.direct).await?;
        let row = c
            .query_one(
                "select current_setting('max_connections')::int8
                      - current_setting('superuser_reserved_connections')::int8
                      - (select count(*) from pg_stat_activity where backend_type = 'client backend')",
                &[],
            )
            .await
            .map_err(|e| format!("reading max_connections: {}", crate::conn::describe(&e)))?;
        let free: i64 = row.get(0);
        // This connection goes away, which frees one slot again.
        Ok(((free + 1).max(0) as u64).saturating_sub(keep))
    }

    /// On the Postgres-direct target, cap `wanted` connections at what the server has free
    /// (keeping `keep` for the tool), noting `what` in the record when it does.
    pub async fn cap_to_server(
        &self,
        wanted: u64,
        keep: u64,
        what: &str,
        rec: &mut Record,
    ) -> Res<u64> {
        if !self.is_direct {
            return Ok(wanted);
        }
        let free = self.server_free_slots(keep).await?;
        if free < wanted {
            rec.add_note(format!(
                "{what} capped at {free} by the server's max_connections"
            ));
            return Ok(free);
        }
        Ok(wanted)
    }
}

/// One result: a JSON line on stdout, and a row in the suite's tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// Target label (postgres, pgbouncer, pgherald, …).
    pub target: String,
    /// writers, pingpong, fanout, pgbench or memory.
    pub scenario: String,
    /// Scenario variant: notify / insert (writers), select / tpcb-like (pgbench),
    /// clients / listeners (memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Name of the swept parameter: clients, idle_listeners, listeners.
    pub param: String,
    /// The parameter's value actually used.
    pub value: u64,
    /// The value asked for; differs from `value` when a server limit capped it.
    pub requested: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Completed operations in the measured window (transactions, round trips, deliveries).
    pub ops: u64,
    /// Operations per second.
    pub rate: Option<f64>,
    /// Unit of `rate`.
    pub unit: String,
    /// Median latency in µs.
    pub p50_us: Option<u64>,
    /// 99th percentile latency in µs.
    pub p99_us: Option<u64>,
    /// Mean latency in µs, where only a mean is known (pgbench).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_us: Option<f64>,
    /// pg_locks samples taken (NOTIFY's lock: object 0 of class 1262).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_samples: Option<u64>,
    /// Samples in which at least one backend waited for that lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_samples_waiting: Option<u64>,
    /// Most backends seen waiting for it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_max_waiting: Option<u64>,
    /// Resident memory of the measured process before opening connections (memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_before: Option<u64>,
    /// Resident memory after opening them (memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_after: Option<u64>,
    /// (rss_after - rss_before) / value (memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_conn: Option<f64>,
    /// CPU µs per operation of the pooler process (writers, ping-pong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pooler_us: Option<f64>,
    /// CPU µs per operation of all Postgres processes (writers, ping-pong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_postgres_us: Option<f64>,
    /// CPU µs per operation of the load tool (writers, ping-pong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_client_us: Option<f64>,
    /// Failed operations and connections.
    pub errors: u64,
    /// Notifications that never arrived within the wait bound.
    pub lost: u64,
    /// Repetition number (suite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rep: Option<u32>,
    /// Seconds since the epoch at the start of the point.
    #[serde(default)]
    pub unix_time: u64,
    /// Caps, first error, aborts: anything a reader must know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Record {
    /// Appends to the note.
    pub fn add_note(&mut self, text: impl AsRef<str>) {
        let text = text.as_ref();
        self.note = Some(match self.note.take() {
            Some(n) => format!("{n}; {text}"),
            None => text.to_string(),
        });
    }

    /// Fills rate and latency fields from a count, a window and a histogram.
    pub fn set_rate(&mut self, ops: u64, window: Duration, unit: &str, lat: &Latency) {
        self.ops = ops;
        self.seconds = window.as_secs_f64();
        self.unit = unit.into();
        self.rate = (self.seconds > 0.0).then(|| ops as f64 / self.seconds);
        self.p50_us = lat.quantile_us(0.50);
        self.p99_us = lat.quantile_us(0.99);
    }

    /// CPU µs per operation between two snapshots (call after `set_rate`).
    pub fn set_cpu(&mut self, before: crate::cpu::Snapshot, after: crate::cpu::Snapshot) {
        if let Some(cpu) = crate::cpu::per_op(before, after, self.ops) {
            self.cpu_pooler_us = cpu.pooler;
            self.cpu_postgres_us = Some(cpu.postgres);
            self.cpu_client_us = Some(cpu.client);
        }
    }

    /// The JSON line.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// A latency histogram in µs, 1 µs .. 10 min, 3 significant digits.
pub struct Latency(Histogram<u64>);

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        Latency(
            Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("static histogram bounds are valid"),
        )
    }

    /// Records one duration (clamped into range).
    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record(d.as_micros().max(1) as u64);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so this cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The value at quantile `q`, or None when empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q))
    }
}

/// Prints `[label] elapsed status` to stderr every second until dropped.
pub struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    /// Starts printing; `status` is called once a second.
    pub fn start(label: String, status: impl Fn() -> String + Send + Sync + 'static) -> Progress {
        let status = Arc::new(status);
        Progress(tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "[{label}] {:>4.0}s  {}",
                    start.elapsed().as_secs_f64(),
                    status()
                );
            }
        }))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Raises the open-files limit to at least `want` (root may raise the hard limit too) and
/// returns the soft limit in force afterwards.
pub fn raise_fd_limit(want: u64) -> u64 {
    use rlimit::Resource;
    let Ok((soft, hard)) = rlimit::getrlimit(Resource::NOFILE) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    if rlimit::setrlimit(Resource::NOFILE, want, hard.max(want)).is_err() {
        let _ = rlimit::setrlimit(Resource::NOFILE, hard, hard);
    }
    let now = rlimit::getrlimit(Resource::NOFILE).map_or(soft, |l| l.0);
    if now < want {
        eprintln!(
            "warning: open files limit is {now}, below the {want} this run may need; \
             raise it with `ulimit -n {want}` (as root) before starting"
        );
    }
    now
}

/// Formats a byte count for humans.
pub fn human_bytes(b: f64) -> String {
    if b.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b.abs() >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A run id that keeps channel names of different points apart.
pub fn run_id() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64 % 1_000_000_000)
        .unwrap_or(0)
}
