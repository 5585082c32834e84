//! pgherald's load tool (`cargo run --release --example bench -- SCENARIO …`): the CLI and
//! its dispatch. Scenarios (writers, pingpong, fanout, pgbench, memory) print one JSON line per
//! result on stdout and a progress line on stderr every second; `suite` runs them all against
//! Postgres, PgBouncer and pgherald and renders tables and plots; `report` re-renders them.
//! The tool starts no server and talks only to loopback addresses or unix sockets.

mod common;
mod conn;
mod cpu;
mod cross;
mod fanout;
mod locks;
mod memory;
mod pgbench;
mod pingpong;
mod plot;
mod report;
mod suite;
mod writers;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use common::{raise_fd_limit, Ctx, Record, Res};

/// Load generator and benchmark suite for pgherald.
#[derive(Debug, Parser)]
#[command(name = "bench", about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// N clients: BEGIN; INSERT; NOTIFY (50-byte payload); COMMIT, against INSERT only;
    /// samples NOTIFY's lock waiters in pg_locks.
    Writers(writers::Args),
    /// Writers spread over several instances sharing a backplane; a listener on each.
    Cross(cross::Args),
    /// Two connections bounce a notification beside N idle LISTENing connections.
    Pingpong(pingpong::Args),
    /// One publisher, N listeners on one channel: delivered/s, latency, losses.
    Fanout(fanout::Args),
    /// pgbench -S and -b tpcb-like through the target.
    Pgbench(pgbench::Args),
    /// Resident memory of a pooler per idle client and per idle listener.
    Memory(memory::Args),
    /// Every scenario against every target given, alternating, with medians and plots.
    Suite(suite::Args),
    /// Medians, tables and plots from saved JSON-lines files.
    Report(report::Args),
}

fn emit(rec: &Record) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", rec.to_line());
    let _ = out.flush();
}

async fn run(cmd: Cmd) -> Res<()> {
    match cmd {
        Cmd::Writers(a) => {
            let ctx = Ctx::new(&a.target)?;
            raise_fd_limit(a.clients.iter().max().copied().unwrap_or(0) + 1024);
            let warmup = Duration::from_secs_f64(a.warmup_seconds.max(0.0));
            for &c in &a.clients {
                for notify in a.variant.flags() {
                    emit(&writers::run_point(&ctx, c, notify, warmup).await);
                }
            }
        }
        Cmd::Cross(a) => {
            let ctx = Ctx::new(&a.target)?;
            for &c in &a.clients {
                emit(&cross::run_point(&ctx, &a.peer_url, c).await);
            }
        }
        Cmd::Pingpong(a) => {
            let ctx = Ctx::new(&a.target)?;
            raise_fd_limit(a.idle_listeners.iter().max().copied().unwrap_or(0) + 1024);
            for &i in &a.idle_listeners {
                emit(&pingpong::run_point(&ctx, i, a.max_consecutive_lost).await);
            }
        }
        Cmd::Fanout(a) => {
            let ctx = Ctx::new(&a.target)?;
            raise_fd_limit(a.listeners.iter().max().copied().unwrap_or(0) + 1024);
            for &l in &a.listeners {
                emit(&fanout::run_point(&ctx, l, a.window).await);
            }
        }
        Cmd::Pgbench(a) => {
            let ctx = Ctx::new(&a.target)?;
            pgbench::ensure_init(&ctx, a.scale).await?;
            for mode in a.mode.list() {
                for &c in &a.clients {
                    emit(&pgbench::run_point(&ctx, c, mode).await);
                }
            }
        }
        Cmd::Memory(a) => {
            let ctx = Ctx::new(&a.target)?;
            raise_fd_limit(a.clients + 1024);
            let settle = Duration::from_secs_f64(a.settle_seconds.max(0.0));
            for rec in memory::run(&ctx, a.pid, a.clients, a.listeners, settle).await {
                emit(&rec);
            }
        }
        Cmd::Suite(a) => suite::run(a).await?,
        Cmd::Report(a) => {
            let records = report::load(&a.input)?;
            if records.is_empty() {
                return Err("no result records in the input".into());
            }
            println!("{}", report::write_all(&records, &a.out_dir)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
