//! The SHOW commands, with PgBouncer 1.25's columns, names, types and order (src/admin.c and
//! src/stats.c of PgBouncer 1.25.2), plus pgherald's SHOW CHANNELS / LISTENERS / RELAYS.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::rows::{Table, Val};
use crate::backend::stats::Totals;
use crate::config::PoolMode;
use crate::frontend::registry::now_us;
use crate::App;

/// PgBouncer's SHOW CLIENTS / SHOW SERVERS columns.
pub const SOCKET_COLUMNS: [&str; 21] = [
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];
const SOCKET_TYPES: &str = "ssssssisiTTiiississii";

fn mode_name(m: PoolMode) -> &'static str {
    match m {
        PoolMode::Session => "session",
        PoolMode::Transaction => "transaction",
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`, as PgBouncer prints timestamps.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn from_us(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

fn addr_parts(a: Option<std::net::SocketAddr>) -> (Val, Val) {
    match a {
        Some(a) => (a.ip().to_string().into(), i64::from(a.port()).into()),
        None => (Val::Null, Val::Null),
    }
}

/// SHOW POOLS.
pub fn pools(app: &App) -> Table {
    let mut t = Table::new(
        "ssiiiiiiiiiiiiiss",
        &[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode",
            "load_balance_hosts",
        ],
    );
    let now = now_us();
    let clients = app.registry.all();
    for p in app.pools.all() {
        let waiting = p.waiting.load(Ordering::Relaxed);
        let all = p.clients.load(Ordering::Relaxed);
        let oldest = clients
            .iter()
            .filter(|c| c.database == p.key.database && c.user == p.key.user)
            .map(|c| c.waiting_since_us.load(Ordering::Relaxed))
            .filter(|&w| w != 0)
            .min();
        let maxwait = if waiting > 0 {
            oldest.map_or(0, |w| now.saturating_sub(w))
        } else {
            0
        };
        t.row(vec![
            p.key.database.as_str().into(),
            p.key.user.as_str().into(),
            all.saturating_sub(waiting).into(),
            waiting.into(),
            0i64.into(),
            0i64.into(),
            p.active_count().into(),
            0i64.into(),
            0i64.into(),
            p.idle_count().into(),
            0i64.into(),
            0i64.into(),
            p.connecting.load(Ordering::Relaxed).into(),
            ((maxwait / 1_000_000) as i64).into(),
            ((maxwait % 1_000_000) as i64).into(),
            mode_name(p.mode).into(),
            Val::Null,
        ]);
    }
    t
}

/// SHOW CLIENTS.
pub fn clients(app: &App) -> Table {
    let mut t = Table::new(SOCKET_TYPES, &SOCKET_COLUMNS);
    let now = now_us();
    for c in app.registry.all() {
        let waiting = c.waiting_since_us.load(Ordering::Relaxed);
        let wait = if waiting == 0 {
            0
        } else {
            now.saturating_sub(waiting)
        };
        let server = c.server_pid.load(Ordering::Relaxed);
        let state = if waiting != 0 {
            "waiting"
        } else if server != 0 {
            "active"
        } else {
            "idle"
        };
        let (addr, port) = addr_parts(c.addr);
        let (laddr, lport) = addr_parts(c.local);
        let req = c.request_us.load(Ordering::Relaxed);
        t.row(vec![
            "C".into(),
            c.user.as_str().into(),
            c.database.as_str().into(),
            "none".into(),
            state.into(),
            addr,
            port,
            laddr,
            lport,
            timestamp(c.connect_time).into(),
            timestamp(if req == 0 {
                c.connect_time
            } else {
                from_us(req)
            })
            .into(),
            ((wait / 1_000_000) as i64).into(),
            ((wait % 1_000_000) as i64).into(),
            0i64.into(),
            format!("{:#x}", c.id).into(),
            if server == 0 {
                String::new()
            } else {
                format!("{server:#x}")
            }
            .into(),
            0i64.into(),
            "".into(),
            c.application_name.as_str().into(),
            0i64.into(),
            i64::from(c.id).into(),
        ]);
    }
    t
}

/// SHOW SERVERS.
pub fn servers(app: &App) -> Table {
    let mut t = Table::new(SOCKET_TYPES, &SOCKET_COLUMNS);
    let owners: BTreeMap<i32, i32> = app
        .registry
        .all()
        .iter()
        .map(|c| (c.server_pid.load(Ordering::Relaxed), c.id))
        .filter(|(s, _)| *s != 0)
        .collect();
    for p in app.pools.all() {
        let login = p.login();
        for s in p.servers() {
            let active = s.active.load(Ordering::Relaxed);
            let (addr, port) = addr_parts(Some(s.addr));
            let (laddr, lport) = addr_parts(s.local);
            let link = owners
                .get(&s.pid)
                .map_or(String::new(), |c| format!("{c:#x}"));
            t.row(vec![
                "S".into(),
                login.user.as_str().into(),
                p.key.database.as_str().into(),
                "none".into(),
                if active { "active" } else { "idle" }.into(),
                addr,
                port,
                laddr,
                lport,
                timestamp(s.connect_time).into(),
                timestamp(s.connect_time).into(),
                0i64.into(),
                0i64.into(),
                0i64.into(),
                format!("{:#x}", s.pid).into(),
                link.into(),
                s.pid.into(),
                "".into(),
                "".into(),
                0i64.into(),
                s.pid.into(),
            ]);
        }
    }
    t
}

fn per_database(app: &App) -> BTreeMap<String, Totals> {
    let mut m: BTreeMap<String, Totals> = BTreeMap::new();
    for p in app.pools.all() {
        m.entry(p.key.database.clone())
            .or_default()
            .add(&p.stats.totals());
    }
    m
}

/// Averages per second (counts, bytes) and per transaction/query (times) over the last
/// `stats_period`, as PgBouncer computes them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Avg {
    /// Per-second and per-event averages in SHOW STATS order.
    pub v: [u64; 12],
}

/// The averages of the last completed stats period.
#[derive(Debug, Default)]
pub struct Averages {
    inner: Mutex<AvgState>,
}

#[derive(Debug, Default)]
struct AvgState {
    last: Option<(Instant, BTreeMap<String, Totals>)>,
    avg: BTreeMap<String, Avg>,
}

impl Averages {
    /// Called every second: at the end of each stats period, compute the averages.
    pub fn tick(&self, app: &App) {
        let period = Duration::from_secs_f64(app.live.get().config.stats_period);
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let due = st
            .last
            .as_ref()
            .is_none_or(|(t, _)| now.duration_since(*t) >= period);
        if !due {
            return;
        }
        let cur = per_database(app);
        if let Some((t, old)) = &st.last {
            let secs = now.duration_since(*t).as_secs_f64().max(1e-9);
            let mut avg = BTreeMap::new();
            for (db, c) in &cur {
                let o = old.get(db).copied().unwrap_or_default();
                let d = |a: u64, b: u64| a.saturating_sub(b);
                let rate = |a: u64, b: u64| (d(a, b) as f64 / secs) as u64;
                let per = |a: u64, b: u64, n: u64| d(a, b).checked_div(n).unwrap_or(0);
                let xacts = d(c.xacts, o.xacts);
                let queries = d(c.queries, o.queries);
                let assign = d(c.assignments, o.assignments);
                avg.insert(
                    db.clone(),
                    Avg {
                        v: [
                            rate(c.assignments, o.assignments),
                            rate(c.xacts, o.xacts),
                            rate(c.queries, o.queries),
                            rate(c.received, o.received),
                            rate(c.sent, o.sent),
                            per(c.xact_us, o.xact_us, xacts),
                            per(c.query_us, o.query_us, queries),
                            per(c.wait_us, o.wait_us, assign),
                            0,
                            0,
                            0,
                            rate(c.logins, o.logins),
                        ],
                    },
                );
            }
            st.avg = avg;
        }
        st.last = Some((now, cur));
    }

    fn get(&self, db: &str) -> Avg {
        let st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        st.avg.get(db).copied().unwrap_or_default()
    }
}

fn totals_row(t: &Totals) -> Vec<Val> {
    vec![
        t.assignments.into(),
        t.xacts.into(),
        t.queries.into(),
        t.received.into(),
        t.sent.into(),
        t.xact_us.into(),
        t.query_us.into(),
        t.wait_us.into(),
        0u64.into(),
        0u64.into(),
        0u64.into(),
        t.logins.into(),
    ]
}

/// SHOW STATS.
pub fn stats(app: &App) -> Table {
    let mut t = Table::new(
        "sNNNNNNNNNNNNNNNNNNNNNNNN",
        &[
            "database",
            "total_server_assignment_count",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "total_client_parse_count",
            "total_server_parse_count",
            "total_bind_count",
            "total_client_login_count",
            "avg_server_assignment_count",
            "avg_xact_count",
            "avg_query_count",
            "avg_recv",
            "avg_sent",
            "avg_xact_time",
            "avg_query_time",
            "avg_wait_time",
            "avg_client_parse_count",
            "avg_server_parse_count",
            "avg_bind_count",
            "avg_client_login_count",
        ],
    );
    for (db, tot) in per_database(app) {
        let mut row = vec![Val::from(db.as_str())];
        row.extend(totals_row(&tot));
        row.extend(app.averages.get(&db).v.iter().map(|v| Val::from(*v)));
        t.row(row);
    }
    t
}

/// SHOW STATS_TOTALS.
pub fn stats_totals(app: &App) -> Table {
    let mut t = Table::new(
        "sNNNNNNNNNNNN",
        &[
            "database",
            "server_assignment_count",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
            "client_parse_count",
            "server_parse_count",
            "bind_count",
            "client_login_count",
        ],
    );
    for (db, tot) in per_database(app) {
        let mut row = vec![Val::from(db.as_str())];
        row.extend(totals_row(&tot));
        t.row(row);
    }
    t
}

/// SHOW STATS_AVERAGES.
pub fn stats_averages(app: &App) -> Table {
    let mut t = Table::new(
        "sNNNNNNNNNNNN",
        &[
            "database",
            "server_assignment_count",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
            "avg_client_parse_count",
            "avg_server_parse_count",
            "avg_bind_count",
            "avg_client_login_count",
        ],
    );
    for db in per_database(app).keys() {
        let mut row = vec![Val::from(db.as_str())];
        row.extend(app.averages.get(db).v.iter().map(|v| Val::from(*v)));
        t.row(row);
    }
    t
}

/// SHOW DATABASES.
pub fn databases(app: &App) -> Table {
    let mut t = Table::new(
        "ssissiiiissiiiiii",
        &[
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "min_pool_size",
            "reserve_pool_size",
            "server_lifetime",
            "pool_mode",
            "load_balance_hosts",
            "max_connections",
            "current_connections",
            "max_client_connections",
            "current_client_connections",
            "paused",
            "disabled",
        ],
    );
    let snap = app.live.get();
    let gates = app.pause.gates();
    let mut names: Vec<String> = snap.config.databases.keys().cloned().collect();
    for p in app.pools.all() {
        if !names.contains(&p.key.database) {
            names.push(p.key.database.clone());
        }
    }
    names.sort();
    names.dedup();
    let clients = app.registry.all();
    for name in names {
        let Some(target) = snap.config.target(&name) else {
            continue;
        };
        let servers: usize = app
            .pools
            .of_database(&name)
            .iter()
            .map(|p| p.active_count() + p.idle_count())
            .sum();
        let n_clients = clients.iter().filter(|c| c.database == name).count();
        let explicit = snap.config.databases.get(&name);
        t.row(vec![
            name.as_str().into(),
            target.host.as_str().into(),
            i64::from(target.port).into(),
            target.dbname.as_str().into(),
            target.user.clone().into(),
            target.pool_size.into(),
            explicit
                .and_then(|d| d.min_pool_size)
                .unwrap_or(snap.config.min_pool_size)
                .into(),
            0i64.into(),
            (snap.config.server_lifetime as i64).into(),
            explicit
                .and_then(|d| d.pool_mode)
                .map(|m| mode_name(m).to_string())
                .into(),
            Val::Null,
            explicit
                .and_then(|d| d.max_db_connections)
                .filter(|n| *n > 0)
                .unwrap_or(snap.config.max_db_connections)
                .into(),
            servers.into(),
            0i64.into(),
            n_clients.into(),
            gates.is_paused(&name).into(),
            gates.disabled.contains(&name).into(),
        ]);
    }
    t
}

/// SHOW USERS.
pub fn users(app: &App) -> Table {
    let mut t = Table::new(
        "ssssiiii",
        &[
            "name",
            "pool_size",
            "reserve_pool_size",
            "pool_mode",
            "max_user_connections",
            "current_connections",
            "max_user_client_connections",
            "current_client_connections",
        ],
    );
    let snap = app.live.get();
    let mut names: Vec<String> = snap.users.users().map(str::to_string).collect();
    for p in app.pools.all() {
        names.push(p.key.user.clone());
    }
    names.sort();
    names.dedup();
    let pools = app.pools.all();
    let clients = app.registry.all();
    for name in names {
        let servers: usize = pools
            .iter()
            .filter(|p| p.key.user == name)
            .map(|p| p.active_count() + p.idle_count())
            .sum();
        let n = clients.iter().filter(|c| c.user == name).count();
        t.row(vec![
            name.as_str().into(),
            "".into(),
            "".into(),
            Val::Null,
            snap.config
                .users
                .get(&name)
                .and_then(|u| u.max_user_connections)
                .filter(|n| *n > 0)
                .unwrap_or(snap.config.max_user_connections)
                .into(),
            servers.into(),
            0i64.into(),
            n.into(),
        ]);
    }
    t
}

/// SHOW LISTS.
pub fn lists(app: &App) -> Table {
    let mut t = Table::new("si", &["list", "items"]);
    let snap = app.live.get();
    let pools = app.pools.all();
    let servers: usize = pools
        .iter()
        .map(|p| p.active_count() + p.idle_count())
        .sum();
    let rows: [(&str, usize); 14] = [
        ("databases", snap.config.databases.len()),
        ("users", snap.users.len()),
        ("peers", 0),
        ("pools", pools.len()),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", app.registry.len()),
        ("login_clients", 0),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ];
    for (k, v) in rows {
        t.row(vec![k.into(), v.into()]);
    }
    t
}

/// SHOW STATE.
pub fn state(app: &App) -> Table {
    let mut t = Table::new("ss", &["key", "value"]);
    let paused = app.pause.gates().all;
    let yes = |b: bool| if b { "yes" } else { "no" };
    t.row(vec!["active".into(), yes(!paused).into()]);
    t.row(vec!["paused".into(), yes(paused).into()]);
    t.row(vec!["suspended".into(), "no".into()]);
    t
}

/// SHOW VERSION.
pub fn version() -> Table {
    let mut t = Table::new("s", &["version"]);
    t.row(vec![concat!("pgherald ", env!("CARGO_PKG_VERSION")).into()]);
    t
}
