//! The pgherald command line: parse flags, load the configuration, install logging and
//! signal handling, and run the pooler.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pgherald::config::{self, Config, Overrides, PoolMode};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static FILTER: std::sync::OnceLock<reload::Handle<EnvFilter, Registry>> =
    std::sync::OnceLock::new();

fn set_filter(level: &str) {
    if let Some(h) = FILTER.get() {
        let _ = h.reload(EnvFilter::new(level));
    }
}

/// A Postgres connection pooler that serves LISTEN/NOTIFY itself.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file: pgherald's TOML (see config/pgherald.toml), or PgBouncer's
    /// pgbouncer.ini (recognised by its [pgbouncer] section).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// PgBouncer's pgbouncer.ini, read as PgBouncer reads it.
    #[arg(long, conflicts_with = "config")]
    pgbouncer_ini: Option<PathBuf>,
    /// A configuration file given as PgBouncer takes it (`pgherald /etc/pgbouncer/pgbouncer.ini`).
    #[arg(conflicts_with_all = ["config", "pgbouncer_ini"])]
    file: Option<PathBuf>,
    /// Upstream server for every database: postgres://USER[:PASSWORD]@HOST:PORT.
    #[arg(long)]
    upstream: Option<String>,
    /// Address to listen on (default 127.0.0.1:6432).
    #[arg(long)]
    listen: Option<String>,
    /// session or transaction (default transaction).
    #[arg(long)]
    pool_mode: Option<PoolMode>,
    /// Server connections per (database, user) pool (default 20).
    #[arg(long)]
    pool_size: Option<usize>,
    /// Maximum client connections (default 100).
    #[arg(long)]
    max_client_conn: Option<usize>,
    /// Share LISTEN/NOTIFY with other pgherald instances through Redis Streams:
    /// redis://HOST:PORT[/DB] (see the README, "Several instances").
    #[arg(long)]
    backplane: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (filter, handle) = tracing_subscriber::reload::Layer::new(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
    );
    let _ = FILTER.set(handle);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer())
        .init();
    let file = cli
        .pgbouncer_ini
        .as_ref()
        .or(cli.config.as_ref())
        .or(cli.file.as_ref());
    let (mut config, is_ini) = match file {
        Some(path) => match config::ini::load_any(path, cli.pgbouncer_ini.is_some()) {
            Ok((c, notes, is_ini)) => {
                for note in notes {
                    tracing::warn!("{}: {note}", path.display());
                }
                (c, is_ini)
            }
            Err(e) => {
                eprintln!("pgherald: {e}");
                return ExitCode::from(2);
            }
        },
        None => (Config::default(), false),
    };
    let overrides = Overrides {
        upstream: cli.upstream,
        listen: cli.listen,
        pool_mode: cli.pool_mode,
        pool_size: cli.pool_size,
        max_client_conn: cli.max_client_conn,
    };
    overrides.apply(&mut config);
    if std::env::var_os("RUST_LOG").is_none() {
        if let Some(level) = &config.log_level {
            set_filter(level);
        }
        let handle = FILTER.get().cloned();
        pgherald::live::set_log_hook(move |level| {
            if let Some(h) = &handle {
                let _ = h.reload(EnvFilter::new(level.unwrap_or("info")));
            }
        });
    }
    if let Some(b) = cli.backplane {
        config.backplane = Some(b);
    }
    let source = pgherald::live::Source {
        path: file.cloned(),
        overrides,
    };
    if config.upstream.is_none() && config.databases.is_empty() && !is_ini {
        eprintln!("pgherald: no upstream: pass --upstream postgres://USER@HOST:PORT or list [databases] in a config file");
        return ExitCode::from(2);
    }
    if let Err(e) = config.validate() {
        eprintln!("pgherald: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgherald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match pgherald::Server::bind_from(config, source).await {
            Ok(s) => s,
            Err(e) => return failed(e),
        };
        if let Ok(addr) = server.local_addr() {
            tracing::info!("listening on {addr}");
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(signals(server.app(), tx));
        match server.run(rx).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(e),
        }
    })
}

fn failed(e: pgherald::Error) -> ExitCode {
    eprintln!("pgherald: {e}");
    match e {
        pgherald::Error::Config(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

/// PgBouncer's signals. SIGINT: stop accepting, close each client when its transaction ends
/// (waiting up to `shutdown_timeout`). SIGTERM: stop accepting and exit once every client
/// has disconnected (for rolling restarts with `so_reuseport`); a second SIGTERM, or SIGQUIT,
/// exits at once.
async fn signals(app: std::sync::Arc<pgherald::App>, tx: tokio::sync::watch::Sender<bool>) {
    use std::sync::atomic::Ordering;
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
        return;
    };
    let mut draining = false;
    loop {
        tokio::select! {
            _ = term.recv() => {
                if draining {
                    tracing::info!("second SIGTERM: immediate shutdown");
                    std::process::exit(0);
                }
                draining = true;
                tracing::info!("SIGTERM: no new connections; exiting once every client has disconnected");
                app.wait_for_clients.store(true, Ordering::Release);
                let _ = tx.send(true);
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: shutting down");
                app.wait_for_clients.store(false, Ordering::Release);
                let _ = tx.send(true);
            }
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: immediate shutdown");
                std::process::exit(0);
            }
        }
    }
}
