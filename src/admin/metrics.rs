//! Prometheus `/metrics` on `metrics_listen`: a prometheus-client collector reads the
//! counters the pools, the hub and the relays keep anyway, at scrape time, so the hot path
//! pays nothing for metrics. Labels are `database` and `user` only. The HTTP framing is a
//! minimal GET handler; the exposition format is the crate's (OpenMetrics text).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use dashmap::DashMap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::backend::pool::{PoolKey, WAIT_BUCKETS};
use crate::App;

/// Login failures by database (user names are not labels: a client chooses them freely).
fn login_failures() -> &'static DashMap<String, AtomicU64> {
    static M: OnceLock<DashMap<String, AtomicU64>> = OnceLock::new();
    M.get_or_init(DashMap::new)
}

/// Count a refused login.
pub fn login_failed(_app: &App, key: &PoolKey) {
    login_failures()
        .entry(key.database.clone())
        .or_default()
        .fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug)]
struct Herald(Weak<App>);

type Labels = [(&'static str, String); 2];

fn labels(k: &PoolKey) -> Labels {
    [("database", k.database.clone()), ("user", k.user.clone())]
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(l)?)?;
    }
    Ok(())
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(l)?)?;
    }
    Ok(())
}

impl Collector for Herald {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(app) = self.0.upgrade() else {
            return Ok(());
        };
        let pools = app.pools.all();
        let per = |f: &dyn Fn(&crate::backend::pool::Pool) -> u64| -> Vec<(Labels, u64)> {
            pools.iter().map(|p| (labels(&p.key), f(p))).collect()
        };
        let g = |f: &dyn Fn(&crate::backend::pool::Pool) -> usize| -> Vec<(Labels, i64)> {
            pools
                .iter()
                .map(|p| (labels(&p.key), f(p) as i64))
                .collect()
        };
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let waiting = |p: &crate::backend::pool::Pool| p.waiting.load(Ordering::Relaxed);
        gauges(
            &mut enc,
            "pgherald_clients_active",
            "Clients logged in and not waiting for a server.",
            &g(&|p| p.clients.load(Ordering::Relaxed).saturating_sub(waiting(p))),
        )?;
        gauges(
            &mut enc,
            "pgherald_clients_waiting",
            "Clients waiting for a server connection.",
            &g(&waiting),
        )?;
        gauges(
            &mut enc,
            "pgherald_servers_active",
            "Server connections lent to a client.",
            &g(&|p| p.active_count()),
        )?;
        gauges(
            &mut enc,
            "pgherald_servers_idle",
            "Idle server connections in the pool.",
            &g(&|p| p.idle_count()),
        )?;
        gauges(
            &mut enc,
            "pgherald_servers_login",
            "Server connections logging in.",
            &g(&|p| p.connecting.load(Ordering::Relaxed)),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "pgherald_pool_wait_seconds",
                "Time clients waited for a server connection.",
                None,
                MetricType::Histogram,
            )?;
            for p in &pools {
                let s = &p.stats;
                let waited: u64 = s.wait_buckets.iter().map(l).sum();
                // Checkouts that found a free slot waited zero seconds.
                let instant = l(&s.assignments).saturating_sub(waited);
                let mut buckets: Vec<(f64, u64)> = WAIT_BUCKETS
                    .iter()
                    .zip(&s.wait_buckets)
                    .map(|(b, c)| (*b, l(c)))
                    .collect();
                buckets[0].1 += instant;
                buckets.push((f64::INFINITY, l(&s.wait_buckets[WAIT_BUCKETS.len()])));
                let count = waited + instant;
                let sum = l(&s.wait_us) as f64 / 1e6;
                let key = labels(&p.key);
                m.encode_family(&key)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, count, &buckets, None,
                    )?;
            }
        }
        counters(
            &mut enc,
            "pgherald_server_assignments",
            "Server connections assigned to clients.",
            &per(&|p| l(&p.stats.assignments)),
        )?;
        counters(
            &mut enc,
            "pgherald_transactions",
            "Transactions completed through the pool.",
            &per(&|p| l(&p.stats.xacts)),
        )?;
        counters(
            &mut enc,
            "pgherald_transaction_seconds",
            "Time spent in transactions.",
            &per(&|p| l(&p.stats.xact_us) / 1_000_000),
        )?;
        counters(
            &mut enc,
            "pgherald_queries",
            "Queries completed through the pool.",
            &per(&|p| l(&p.stats.queries)),
        )?;
        counters(
            &mut enc,
            "pgherald_query_seconds",
            "Time spent in queries.",
            &per(&|p| l(&p.stats.query_us) / 1_000_000),
        )?;
        counters(
            &mut enc,
            "pgherald_received_bytes",
            "Bytes received from clients.",
            &per(&|p| l(&p.stats.received)),
        )?;
        counters(
            &mut enc,
            "pgherald_sent_bytes",
            "Bytes sent to clients.",
            &per(&|p| l(&p.stats.sent)),
        )?;
        counters(
            &mut enc,
            "pgherald_client_logins",
            "Client logins.",
            &per(&|p| l(&p.stats.logins)),
        )?;
        counters(
            &mut enc,
            "pgherald_server_connect_failures",
            "Server connections that could not be opened.",
            &per(&|p| l(&p.stats.connect_failures)),
        )?;
        counters(
            &mut enc,
            "pgherald_listener_overflow_disconnects",
            "Listeners disconnected for a full notification queue.",
            &per(&|p| l(&p.stats.overflows)),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "pgherald_login_failures",
                "Client logins refused.",
                None,
                MetricType::Counter,
            )?;
            let rows: BTreeMap<String, u64> = login_failures()
                .iter()
                .map(|e| (e.key().clone(), l(e.value())))
                .collect();
            for (db, v) in rows {
                ConstCounter::new(v).encode(m.encode_family(&[("database", db)])?)?;
            }
        }
        let hub = app.hub.stats();
        {
            let m = enc.encode_descriptor(
                "pgherald_notifications_published",
                "Notifications published.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(hub.published).encode(m)?;
        }
        {
            let m = enc.encode_descriptor(
                "pgherald_notifications_delivered",
                "Notifications queued to listeners.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(hub.delivered).encode(m)?;
        }
        {
            let mut depth: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            for v in app.hub.listener_views() {
                let e = depth.entry(v.database).or_default();
                e.0 += v.queued as i64;
                e.1 = e.1.max(v.queued as i64);
            }
            let mut m = enc.encode_descriptor(
                "pgherald_listener_queue_depth",
                "Notifications queued to listeners now (sum per database).",
                None,
                MetricType::Gauge,
            )?;
            for (db, (sum, _)) in &depth {
                ConstGauge::new(*sum).encode(m.encode_family(&[("database", db.clone())])?)?;
            }
            let mut m = enc.encode_descriptor(
                "pgherald_listener_queue_depth_max",
                "Longest listener queue now, per database.",
                None,
                MetricType::Gauge,
            )?;
            for (db, (_, max)) in &depth {
                ConstGauge::new(*max).encode(m.encode_family(&[("database", db.clone())])?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "pgherald_relay_reconnects",
                "Relay connections lost and re-established.",
                None,
                MetricType::Counter,
            )?;
            for r in app.relays.views() {
                ConstCounter::new(r.reconnects)
                    .encode(m.encode_family(&[("database", r.database)])?)?;
            }
        }
        if let Some(bp) = &app.backplane {
            let s = bp.stats();
            for (name, help, v) in [
                (
                    "pgherald_backplane_published",
                    "Committed batches recorded on the backplane.",
                    s.published,
                ),
                (
                    "pgherald_backplane_failed",
                    "Batches the backplane could not record (their COMMIT failed).",
                    s.failed,
                ),
                (
                    "pgherald_backplane_received",
                    "Backplane entries read and delivered to this instance's listeners.",
                    s.received,
                ),
                (
                    "pgherald_backplane_gaps",
                    "Backplane entries gone before this instance read them.",
                    s.gaps,
                ),
                (
                    "pgherald_backplane_lost_listeners",
                    "Listeners ended because of a backplane gap.",
                    s.lost_listeners,
                ),
                (
                    "pgherald_backplane_reconnects",
                    "Backplane connections lost and re-established.",
                    s.reconnects,
                ),
                (
                    "pgherald_backplane_prepared",
                    "Notifications of transactions that ran on the server, recorded as pending before their COMMIT.",
                    s.prepared,
                ),
                (
                    "pgherald_backplane_resolved_from_postgres",
                    "Pending notifications whose confirmation never came, resolved here with pg_xact_status.",
                    s.resolved_from_postgres,
                ),
            ] {
                let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
                ConstCounter::new(v).encode(m)?;
            }
        }
        Ok(())
    }
}

/// The scrape body for `app`.
pub fn render(app: &Arc<App>) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Herald(Arc::downgrade(app))));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

/// Bind `metrics_listen` (when set) and serve `/metrics` until aborted.
pub async fn start(app: Arc<App>) -> std::io::Result<Option<JoinHandle<()>>> {
    let Some(addr) = app.live.get().config.metrics_listen.clone() else {
        return Ok(None);
    };
    let listener = TcpListener::bind(&addr).await?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    let weak = Arc::downgrade(&app);
    *app.metrics_addr.lock().unwrap_or_else(|e| e.into_inner()) = listener.local_addr().ok();
    Ok(Some(tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let Some(app) = weak.upgrade() else { return };
            tokio::spawn(http(sock, app));
        }
    })))
}

async fn http(mut sock: TcpStream, app: Arc<App>) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 16 * 1024 {
            return;
        }
    }
    let line = buf.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, ctype, body) = match (method, path) {
        (Some(b"GET"), Some(p)) if p == b"/metrics" || p.starts_with(b"/metrics?") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(&app),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
    let _ = sock.shutdown().await;
}
