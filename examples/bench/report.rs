//! Turns result records into medians per (scenario, variant, parameter, target), Markdown
//! tables, and the writers / ping-pong / fan-out SVG plots; also the `report` subcommand,
//! which does this again from saved JSON-lines files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{human_bytes, Record, Res};
use crate::plot::{self, Series};

/// `bench report` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// JSON-lines files written by `suite` or by the scenario subcommands.
    #[arg(required = true)]
    pub input: Vec<PathBuf>,
    /// Where summary.md and the SVG plots go.
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
}

/// Medians of one (scenario, variant, requested value, target) group.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Repetitions aggregated.
    pub reps: usize,
    /// Smallest parameter value actually used (below `requested` when capped).
    pub used: u64,
    /// Median rate.
    pub rate: Option<f64>,
    /// Median of the p50s, µs.
    pub p50: Option<f64>,
    /// Median of the p99s, µs.
    pub p99: Option<f64>,
    /// Median mean latency, µs (pgbench).
    pub avg: Option<f64>,
    /// Median of the most lock waiters seen.
    pub lock_max: Option<f64>,
    /// Median share of samples with lock waiters.
    pub lock_share: Option<f64>,
    /// Median bytes per connection (memory).
    pub bytes: Option<f64>,
    /// Median RSS before and after (memory).
    pub rss: (Option<f64>, Option<f64>),
    /// Median CPU µs per operation: pooler, Postgres, load tool (writers).
    pub cpu: [Option<f64>; 3],
    /// Errors summed over repetitions.
    pub errors: u64,
    /// Lost notifications summed over repetitions.
    pub lost: u64,
    /// Notes of repetitions that had errors, losses or caps.
    pub notes: Vec<String>,
}

/// (scenario, variant, requested, target order, target)
type Key = (String, String, u64, usize, String);

/// Reads JSON-lines files; lines that are not records are skipped.
pub fn load(paths: &[PathBuf]) -> Res<Vec<Record>> {
    let mut out = Vec::new();
    for p in paths {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Record>(l).ok()),
        );
    }
    Ok(out)
}

fn target_rank(t: &str) -> usize {
    match t {
        "postgres" => 0,
        "pgbouncer" => 1,
        "pgherald" => 2,
        _ => 3,
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    })
}

/// Groups records and takes medians.
pub fn summarize(records: &[Record]) -> BTreeMap<Key, Summary> {
    let mut groups: BTreeMap<Key, Vec<&Record>> = BTreeMap::new();
    for r in records {
        let key = (
            r.scenario.clone(),
            r.variant.clone().unwrap_or_default(),
            r.requested,
            target_rank(&r.target),
            r.target.clone(),
        );
        groups.entry(key).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(k, rs)| {
            let col = |f: &dyn Fn(&Record) -> Option<f64>| {
                median(rs.iter().filter_map(|r| f(r)).collect())
            };
            let mut notes: Vec<String> = Vec::new();
            for r in &rs {
                if r.errors > 0 || r.lost > 0 || r.value != r.requested {
                    if let Some(n) = &r.note {
                        if !notes.contains(n) && notes.len() < 2 {
                            notes.push(n.clone());
                        }
                    }
                }
            }
            let s = Summary {
                reps: rs.len(),
                used: rs.iter().map(|r| r.value).min().unwrap_or(0),
                rate: col(&|r| r.rate),
                p50: col(&|r| r.p50_us.map(|v| v as f64)),
                p99: col(&|r| r.p99_us.map(|v| v as f64)),
                avg: col(&|r| r.avg_us),
                lock_max: col(&|r| r.lock_max_waiting.map(|v| v as f64)),
                lock_share: col(&|r| match (r.lock_samples_waiting, r.lock_samples) {
                    (Some(w), Some(n)) if n > 0 => Some(w as f64 / n as f64),
                    _ => None,
                }),
                bytes: col(&|r| r.bytes_per_conn),
                rss: (
                    col(&|r| r.rss_before.map(|v| v as f64)),
                    col(&|r| r.rss_after.map(|v| v as f64)),
                ),
                cpu: [
                    col(&|r| r.cpu_pooler_us),
                    col(&|r| r.cpu_postgres_us),
                    col(&|r| r.cpu_client_us),
                ],
                errors: rs.iter().map(|r| r.errors).sum(),
                lost: rs.iter().map(|r| r.lost).sum(),
                notes,
            };
            (k, s)
        })
        .collect()
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 || v.fract() == 0.0 => format_thousands(v.round().max(0.0) as u64),
        Some(v) => format!("{v:.1}"),
        None => "–".into(),
    }
}

fn format_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// "pooler · Postgres · load tool" CPU µs per operation; "–" where not measured.
fn cpu(c: &[Option<f64>; 3]) -> String {
    if c.iter().all(Option::is_none) {
        return "–".into();
    }
    let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0}"));
    format!("{} · {} · {}", f(c[0]), f(c[1]), f(c[2]))
}

fn lat(us: Option<f64>) -> String {
    match us {
        None => "–".into(),
        Some(v) if v >= 1_000_000.0 => format!("{:.2} s", v / 1e6),
        Some(v) if v >= 1000.0 => format!("{:.2} ms", v / 1e3),
        Some(v) => format!("{v:.0} µs"),
    }
}

fn used(requested: u64, s: &Summary) -> String {
    if s.used == requested {
        format_thousands(requested)
    } else {
        format!(
            "{} (capped from {})",
            format_thousands(s.used),
            format_thousands(requested)
        )
    }
}

/// The Markdown tables of every scenario present, with notes for troubled rows.
pub fn markdown(sums: &BTreeMap<Key, Summary>) -> String {
    let mut out = String::new();
    let mut notes = String::new();
    let order = ["writers", "pingpong", "fanout", "pgbench", "memory"];
    for scenario in order {
        let mut rows: Vec<(&Key, &Summary)> =
            sums.iter().filter(|(k, _)| k.0 == scenario).collect();
        if rows.is_empty() {
            continue;
        }
        rows.sort_by(|a, b| (a.0 .2, &a.0 .1, a.0 .3).cmp(&(b.0 .2, &b.0 .1, b.0 .3)));
        let (title, head) = match scenario {
            "writers" => (
                "Writers: BEGIN; INSERT; [NOTIFY;] COMMIT",
                "| clients | variant | target | TPS | p50 | p99 | max NOTIFY-lock waiters | samples with waiters | CPU µs/tx: pooler · Postgres · load tool | errors |\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
            ),
            "pingpong" => (
                "Ping-pong: notification round trips beside idle listeners",
                "| idle listeners | target | round trips/s | p50 | p99 | lost | errors |\n|---:|---|---:|---:|---:|---:|---:|",
            ),
            "fanout" => (
                "Fan-out: one publisher, N listeners on one channel",
                "| listeners | target | delivered/s | p50 | p99 | lost | errors |\n|---:|---|---:|---:|---:|---:|---:|",
            ),
            "pgbench" => (
                "Pooler overhead: pgbench",
                "| script | clients | target | TPS | mean latency | p50 | p99 | failed |\n|---|---:|---|---:|---:|---:|---:|---:|",
            ),
            _ => (
                "Memory: resident memory per idle connection",
                "| target | connections | kind | bytes per connection | RSS before | RSS after | errors |\n|---|---:|---|---:|---:|---:|---:|",
            ),
        };
        out.push_str(&format!("### {title}\n\n{head}\n"));
        for ((_, variant, req, _, target), s) in rows {
            let line = match scenario {
                "writers" => format!(
                    "| {} | {variant} | {target} | {} | {} | {} | {} | {} | {} | {} |",
                    used(*req, s),
                    num(s.rate),
                    lat(s.p50),
                    lat(s.p99),
                    num(s.lock_max),
                    s.lock_share
                        .map_or("–".into(), |v| format!("{:.0}%", v * 100.0)),
                    cpu(&s.cpu),
                    s.errors
                ),
                "pingpong" | "fanout" => format!(
                    "| {} | {target} | {} | {} | {} | {} | {} |",
                    used(*req, s),
                    num(s.rate),
                    lat(s.p50),
                    lat(s.p99),
                    format_thousands(s.lost),
                    s.errors
                ),
                "pgbench" => format!(
                    "| {variant} | {req} | {target} | {} | {} | {} | {} | {} |",
                    num(s.rate),
                    lat(s.avg),
                    lat(s.p50),
                    lat(s.p99),
                    s.errors
                ),
                _ => format!(
                    "| {target} | {} | {variant} | {} | {} | {} | {} |",
                    used(*req, s),
                    s.bytes.map_or("–".into(), human_bytes),
                    s.rss.0.map_or("–".into(), human_bytes),
                    s.rss.1.map_or("–".into(), human_bytes),
                    s.errors
                ),
            };
            out.push_str(&line);
            out.push('\n');
            for n in &s.notes {
                let what = [
                    scenario,
                    variant.as_str(),
                    &req.to_string(),
                    target.as_str(),
                ]
                .iter()
                .filter(|w| !w.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
                notes.push_str(&format!("- {what}: {n}\n"));
            }
        }
        out.push('\n');
    }
    let reps = sums.values().map(|s| s.reps).max().unwrap_or(0);
    out.push_str(&format!(
        "Medians over up to {reps} repetition(s) per row; errors and lost are summed over them.\n"
    ));
    if !notes.is_empty() {
        out.push_str("\nNotes:\n\n");
        out.push_str(&notes);
    }
    out
}

/// One plotted line while it is assembled: points, whether any notification was lost, and
/// whether any point was capped by the server.
type Line = (Vec<(usize, f64)>, bool, bool);

/// Draws the three plots that have data; returns the files written.
pub fn plots(sums: &BTreeMap<Key, Summary>, dir: &Path) -> Res<Vec<PathBuf>> {
    let mut written = Vec::new();
    let charts = [
        (
            "writers",
            "Writers: TPS by clients (solid: with NOTIFY, dashed: INSERT only)",
            "clients",
            "transactions/s",
        ),
        (
            "pingpong",
            "Ping-pong: round trips/s by idle listeners",
            "idle LISTENing connections",
            "round trips/s",
        ),
        (
            "fanout",
            "Fan-out: notifications delivered/s by listeners",
            "listeners on the channel",
            "notifications/s",
        ),
    ];
    for (scenario, title, x_desc, y_desc) in charts {
        let keys: Vec<&Key> = sums.keys().filter(|k| k.0 == scenario).collect();
        if keys.is_empty() {
            continue;
        }
        let mut xs: Vec<u64> = keys.iter().map(|k| k.2).collect();
        xs.sort_unstable();
        xs.dedup();
        let mut lines: BTreeMap<(usize, String, String), Line> = BTreeMap::new();
        for (k, s) in sums.iter().filter(|(k, _)| k.0 == scenario) {
            if let (Some(rate), Some(i)) = (s.rate, xs.iter().position(|x| *x == k.2)) {
                let line = lines.entry((k.3, k.4.clone(), k.1.clone())).or_default();
                line.0.push((i, rate));
                line.1 |= s.lost > 0;
                line.2 |= s.used != k.2;
            }
        }
        let series: Vec<Series> = lines
            .into_iter()
            .map(|((_, target, variant), (points, lost, capped))| Series {
                label: format!(
                    "{target}{}{}{}",
                    if variant.is_empty() {
                        String::new()
                    } else {
                        format!(" {variant}")
                    },
                    if lost { " (notifications lost)" } else { "" },
                    if capped {
                        " (capped by max_connections)"
                    } else {
                        ""
                    }
                ),
                color: plot::target_color(&target),
                dashed: variant == "insert",
                points,
            })
            .collect();
        let labels: Vec<String> = xs.iter().map(|x| format_thousands(*x)).collect();
        let path = dir.join(format!("{scenario}.svg"));
        plot::line_chart(&path, title, x_desc, y_desc, &labels, &series)?;
        written.push(path);
    }
    Ok(written)
}

/// Writes summary.md and the plots into `dir`; returns the Markdown.
pub fn write_all(records: &[Record], dir: &Path) -> Res<String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let sums = summarize(records);
    let md = markdown(&sums);
    let path = dir.join("summary.md");
    std::fs::write(&path, &md).map_err(|e| format!("writing {}: {e}", path.display()))?;
    for p in plots(&sums, dir)? {
        eprintln!("wrote {}", p.display());
    }
    eprintln!("wrote {}", path.display());
    Ok(md)
}
