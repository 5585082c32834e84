//! CPU time spent during a measured window by the three parties sharing this machine's cores:
//! the pooler under test (by pid), every Postgres process, and the load tool itself, read from
//! `/proc/PID/stat` (user + system time, in clock ticks of 10 ms).

use std::fs;

/// Linux's USER_HZ: `/proc` reports times in these ticks per second.
const TICKS_PER_SECOND: f64 = 100.0;

/// Cumulative CPU ticks at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pooler: Option<u64>,
    postgres: u64,
    client: u64,
}

/// CPU µs per operation over a window.
#[derive(Debug, Clone, Copy)]
pub struct PerOp {
    /// The pooler process (None when measuring Postgres directly or without a pid).
    pub pooler: Option<f64>,
    /// All Postgres processes together.
    pub postgres: f64,
    /// The load tool.
    pub client: f64,
}

/// (comm, utime + stime) of a process.
fn stat(pid: &str) -> Option<(String, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields after the comm: state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = text.get(close + 2..)?.split(' ').collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Reads the counters now.
pub fn snapshot(pooler: Option<u32>) -> Snapshot {
    let mut postgres = 0;
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some((comm, t)) = stat(pid) {
                if comm == "postgres" {
                    postgres += t;
                }
            }
        }
    }
    Snapshot {
        pooler: pooler.and_then(|p| stat(&p.to_string())).map(|(_, t)| t),
        postgres,
        client: stat("self").map_or(0, |(_, t)| t),
    }
}

/// CPU µs per operation between two snapshots (Postgres processes that exited in between
/// are not counted, so short-lived backends make the Postgres figure a lower bound).
pub fn per_op(before: Snapshot, after: Snapshot, ops: u64) -> Option<PerOp> {
    if ops == 0 {
        return None;
    }
    let us = |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1e6 / ops as f64;
    Some(PerOp {
        pooler: before
            .pooler
            .zip(after.pooler)
            .map(|(b, a)| us(a.saturating_sub(b))),
        postgres: us(after.postgres.saturating_sub(before.postgres)),
        client: us(after.client.saturating_sub(before.client)),
    })
}
