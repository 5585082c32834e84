//! The console's commands that act: RELOAD, PAUSE, RESUME, DISABLE, ENABLE, KILL,
//! KILL_CLIENT, RECONNECT, WAIT_CLOSE, SHUTDOWN — with PgBouncer's error texts — and
//! SHOW CONFIG and pgherald's SHOW CHANNELS / LISTENERS / RELAYS.

use std::time::Duration;

use super::rows::{Table, Val};
use crate::frontend::registry::Control;
use crate::App;

/// A console error: ERROR with PgBouncer's text (SQLSTATE 08P01 unless given).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    /// SQLSTATE.
    pub code: &'static str,
    /// Message.
    pub message: String,
    /// Detail, if any.
    pub detail: Option<String>,
}

/// An error with SQLSTATE 08P01, as PgBouncer's `admin_error`.
pub fn err(message: impl Into<String>) -> AdminError {
    AdminError {
        code: "08P01",
        message: message.into(),
        detail: None,
    }
}

const POLL: Duration = Duration::from_millis(20);

fn known_database(app: &App, db: &str) -> bool {
    app.live.get().config.databases.contains_key(db) || !app.pools.of_database(db).is_empty()
}

fn check_db(app: &App, db: &str, verb: &str) -> Result<(), AdminError> {
    if super::is_console(db) {
        return Err(err(format!("cannot {verb} admin db: {db}")));
    }
    if !known_database(app, db) {
        return Err(err(format!("no such database: {db}")));
    }
    Ok(())
}

/// RELOAD.
pub fn reload(app: &App) -> Result<(), AdminError> {
    app.reload().map_err(|e| AdminError {
        code: "F0000",
        message: "RELOAD failed, see logs for additional details".into(),
        detail: Some(e.to_string()),
    })
}

async fn drain_servers(app: &App, db: Option<&str>) {
    loop {
        let pools: Vec<_> = app
            .pools
            .all()
            .into_iter()
            .filter(|p| db.is_none_or(|d| d == p.key.database))
            .collect();
        for p in &pools {
            p.close_idle();
        }
        if pools.iter().all(|p| p.active_count() == 0) {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// PAUSE [db]: no new server assignments; returns when the servers are released and closed.
pub async fn pause(app: &App, db: Option<&str>) -> Result<(), AdminError> {
    let gates = app.pause.gates();
    if gates.all {
        return Err(err("already suspended/paused"));
    }
    if let Some(d) = db {
        check_db(app, d, "pause")?;
        app.pause.update(|g| {
            g.paused.insert(d.to_string());
        });
    } else {
        app.pause.update(|g| g.all = true);
    }
    drain_servers(app, db).await;
    Ok(())
}

/// RESUME [db].
pub fn resume(app: &App, db: Option<&str>) -> Result<(), AdminError> {
    let gates = app.pause.gates();
    match db {
        None => {
            if !gates.all && gates.paused.is_empty() {
                return Err(err("pooler is not paused/suspended"));
            }
            app.pause.update(|g| {
                g.all = false;
                g.paused.clear();
            });
        }
        Some(d) => {
            if !known_database(app, d) {
                return Err(err(format!("no such database: {d}")));
            }
            if !gates.paused.contains(d) {
                return Err(err(format!("database {d} is not paused")));
            }
            app.pause.update(|g| {
                g.paused.remove(d);
            });
        }
    }
    Ok(())
}

/// DISABLE db / ENABLE db.
pub fn disable(app: &App, db: Option<&str>, on: bool) -> Result<(), AdminError> {
    let verb = if on { "disable" } else { "enable" };
    let d = db.ok_or_else(|| err("a database is required"))?;
    check_db(app, d, verb)?;
    app.pause.update(|g| {
        if on {
            g.disabled.insert(d.to_string());
        } else {
            g.disabled.remove(d);
        }
    });
    Ok(())
}

/// KILL [db]: drop every client and server connection of the database (all when none);
/// new clients wait until RESUME.
pub async fn kill(app: &App, db: Option<&str>) -> Result<(), AdminError> {
    if app.pause.gates().all {
        return Err(err("already suspended/paused"));
    }
    match db {
        Some(d) => {
            check_db(app, d, "kill")?;
            app.pause.update(|g| {
                g.paused.insert(d.to_string());
            });
        }
        None => app.pause.update(|g| g.all = true),
    }
    app.registry.control_all(db, Control::Kill);
    for p in app.pools.all() {
        if db.is_none_or(|d| d == p.key.database) {
            p.reconnect();
        }
    }
    Ok(())
}

/// KILL_CLIENT id.
pub fn kill_client(app: &App, arg: Option<&str>) -> Result<(), AdminError> {
    let id: i32 = arg
        .and_then(|a| {
            let a = a.trim();
            match a.strip_prefix("0x") {
                Some(h) => i32::from_str_radix(h, 16).ok(),
                None => a.parse().ok(),
            }
        })
        .ok_or_else(|| err("invalid client pointer supplied"))?;
    let c = app
        .registry
        .get(id)
        .ok_or_else(|| err("client not found"))?;
    c.control(Control::Kill);
    Ok(())
}

/// RECONNECT [db]: close server connections when next released.
pub fn reconnect(app: &App, db: Option<&str>) -> Result<(), AdminError> {
    if let Some(d) = db {
        check_db(app, d, "reconnect")?;
    }
    for p in app.pools.all() {
        if db.is_none_or(|d| d == p.key.database) {
            p.reconnect();
        }
    }
    Ok(())
}

/// WAIT_CLOSE [db]: wait until the connections RECONNECT or a reload marked are closed.
pub async fn wait_close(app: &App, db: Option<&str>) -> Result<(), AdminError> {
    if let Some(d) = db {
        check_db(app, d, "wait_close")?;
    }
    loop {
        let stale: usize = app
            .pools
            .all()
            .iter()
            .filter(|p| db.is_none_or(|d| d == p.key.database))
            .map(|p| p.stale_servers())
            .sum();
        if stale == 0 {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// SHUTDOWN: stop the process.
pub fn shutdown(app: &App) {
    tracing::info!("SHUTDOWN command issued");
    let _ = app.stop.send(true);
}

/// Keys whose change needs a restart.
const FIXED: [&str; 3] = ["listen", "metrics_listen", "listener_queue_limit"];

fn show_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn mask_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => s.to_string(),
    }
}

/// SHOW CONFIG: every top-level setting of the running configuration.
pub fn config(app: &App) -> Table {
    let mut t = Table::new("ssss", &["key", "value", "default", "changeable"]);
    let snap = app.live.get();
    let cur = toml::Value::try_from(&snap.config).ok();
    let def = toml::Value::try_from(crate::config::Config::default()).ok();
    let (Some(toml::Value::Table(cur)), Some(toml::Value::Table(def))) = (cur, def) else {
        return t;
    };
    let mut keys: Vec<&String> = cur.keys().chain(def.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let v = cur.get(k);
        if matches!(v, Some(toml::Value::Table(_))) {
            continue;
        }
        let mut value = v.map(show_value).unwrap_or_default();
        if k == "upstream" {
            value = mask_url(&value);
        }
        let default = def.get(k).map(show_value).unwrap_or_default();
        let changeable = if FIXED.contains(&k.as_str()) {
            "no"
        } else {
            "yes"
        };
        t.row(vec![
            k.as_str().into(),
            value.into(),
            default.into(),
            changeable.into(),
        ]);
    }
    t
}

/// SHOW CHANNELS.
pub fn channels(app: &App) -> Table {
    let mut t = Table::new(
        "ssiqq",
        &["database", "channel", "listeners", "published", "delivered"],
    );
    for c in app.hub.channel_views() {
        t.row(vec![
            c.database.into(),
            String::from_utf8_lossy(&c.channel).into_owned().into(),
            c.listeners.into(),
            Val::Int(c.published as i64),
            Val::Int(c.delivered as i64),
        ]);
    }
    t
}

/// SHOW LISTENERS.
pub fn listeners(app: &App) -> Table {
    let mut t = Table::new(
        "issiiiq",
        &[
            "client",
            "database",
            "user",
            "channels",
            "queued_now",
            "max_queued",
            "delivered",
        ],
    );
    for l in app.hub.listener_views() {
        let user = app.registry.get(l.owner).map(|c| c.user.clone());
        t.row(vec![
            l.owner.into(),
            l.database.into(),
            user.into(),
            l.channels.into(),
            l.queued.into(),
            l.max_queued.into(),
            Val::Int(l.delivered as i64),
        ]);
    }
    t
}

/// SHOW RELAYS.
pub fn relays(app: &App) -> Table {
    let mut t = Table::new(
        "ssiqqs",
        &[
            "database",
            "state",
            "channels",
            "relayed",
            "reconnects",
            "last_error",
        ],
    );
    for r in app.relays.views() {
        t.row(vec![
            r.database.into(),
            r.state.into(),
            r.channels.into(),
            Val::Int(r.relayed as i64),
            Val::Int(r.reconnects as i64),
            r.last_error.into(),
        ]);
    }
    t
}
