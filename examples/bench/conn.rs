//! Client connections for the load tool: loopback-only config parsing, connecting with
//! bounded waits, driving each connection so its notifications reach a callback or an mpsc
//! channel, and opening thousands of (idle, optionally LISTENing) connections at once.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::sync::mpsc;
use tokio_postgres::config::Host;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Notification};

use crate::common::{Progress, Res};

/// Bound on TCP connect plus startup and authentication.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Parses a connection string or URL and refuses anything but loopback TCP or a unix socket.
pub fn local_config(text: &str) -> Res<Config> {
    let mut cfg =
        Config::from_str(text).map_err(|e| format!("bad connection string {text:?}: {e}"))?;
    if cfg.get_hosts().is_empty() {
        return Err(format!(
            "{text:?} names no host: give host=127.0.0.1 (or a URL with one)"
        ));
    }
    for h in cfg.get_hosts() {
        if let Host::Tcp(name) = h {
            let local = name == "localhost"
                || name
                    .parse::<IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(false);
            if !local {
                return Err(format!(
                    "{text:?}: host {name} is not loopback; this tool talks to 127.0.0.1 only"
                ));
            }
        }
    }
    if let Some(ip) = cfg.get_hostaddrs().iter().find(|ip| !ip.is_loopback()) {
        return Err(format!("{text:?}: hostaddr {ip} is not loopback"));
    }
    cfg.connect_timeout(CONNECT_TIMEOUT);
    Ok(cfg)
}

/// Connects and spawns the connection; notifications go to `on_note`. The connection task
/// ends when the client is dropped or the server closes it.
pub async fn connect_with<F>(cfg: &Config, mut on_note: F) -> Res<Client>
where
    F: FnMut(Notification) + Send + 'static,
{
    let (client, mut connection) = tokio::time::timeout(CONNECT_TIMEOUT, cfg.connect(NoTls))
        .await
        .map_err(|_| format!("connect: no answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("connect: {}", crate::conn::describe(&e)))?;
    tokio::spawn(async move {
        loop {
            match futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => on_note(n),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
    Ok(client)
}

/// Connects, ignoring notifications.
pub async fn connect(cfg: &Config) -> Res<Client> {
    connect_with(cfg, |_| {}).await
}

/// Connects and forwards notifications to the returned channel, which ends with the
/// connection.
pub async fn connect_listener(
    cfg: &Config,
) -> Res<(Client, mpsc::UnboundedReceiver<Notification>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = connect_with(cfg, move |n| {
        let _ = tx.send(n);
    })
    .await?;
    Ok((client, rx))
}

/// Connections opened by [`open_many`].
pub struct Opened {
    /// The live clients; dropping them closes the connections.
    pub clients: Vec<Client>,
    /// Attempts that failed (connect or setup statement) or were skipped after most failed.
    pub errors: u64,
    /// The first failure's text.
    pub first_error: Option<String>,
}

/// Opens `n` connections, `concurrency` at a time, runs `setup(i)` (e.g. a LISTEN) on each
/// that has one, and hands connection i's notifications to `sink(i)`. Shows progress.
pub async fn open_many<S, F>(
    cfg: &Config,
    n: u64,
    concurrency: usize,
    label: &str,
    setup: impl Fn(u64) -> Option<String>,
    sink: S,
) -> Opened
where
    S: Fn(u64) -> F,
    F: FnMut(Notification) + Send + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let _progress = (n >= 200).then(|| {
        let (d, f) = (done.clone(), failed.clone());
        Progress::start(format!("{label} opening"), move || {
            format!(
                "{}/{n} connections open, {} failed",
                d.load(Ordering::Relaxed),
                f.load(Ordering::Relaxed)
            )
        })
    });
    let attempts = (0..n).map(|i: u64| {
        let sql = setup(i);
        let on_note = sink(i);
        let (done, failed, first_error) = (done.clone(), failed.clone(), first_error.clone());
        async move {
            // Give up early when most attempts fail: the rest would fail the same way, slowly.
            let (ok, bad) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
            if bad > 64 && bad > ok {
                failed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let r = async {
                let c = connect_with(cfg, on_note).await?;
                if let Some(sql) = sql {
                    tokio::time::timeout(CONNECT_TIMEOUT, c.batch_execute(&sql))
                        .await
                        .map_err(|_| format!("{sql}: no answer within {CONNECT_TIMEOUT:?}"))?
                        .map_err(|e| format!("{sql}: {}", crate::conn::describe(&e)))?;
                }
                Ok::<_, String>(c)
            }
            .await;
            match r {
                Ok(c) => {
                    done.fetch_add(1, Ordering::Relaxed);
                    Some(c)
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    None
                }
            }
        }
    });
    let clients: Vec<Client> = stream::iter(attempts)
        .buffer_unordered(concurrency)
        .filter_map(|c| async move { c })
        .collect()
        .await;
    let errors = failed.load(Ordering::Relaxed);
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    Opened {
        clients,
        errors,
        first_error,
    }
}

/// A tokio-postgres error with the server's SQLSTATE and message, or the cause of a client
/// side failure (its own Display says only "db error" or "error connecting to server").
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Quotes a string as an SQL literal (the tool only ever sends its own ASCII strings).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
