//! Every logged-in client, for the admin console (SHOW CLIENTS, KILL_CLIENT) and for
//! shutdown: each entry carries a control channel its session watches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::watch;

/// What the console or shutdown asks of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Carry on.
    Run,
    /// Close as soon as the client is idle (shutdown).
    CloseWhenIdle,
    /// Close now (KILL, KILL_CLIENT).
    Kill,
}

/// One client.
#[derive(Debug)]
pub struct ClientInfo {
    /// The client's id: its virtual backend pid.
    pub id: i32,
    /// Login user.
    pub user: String,
    /// Database asked for.
    pub database: String,
    /// Peer address.
    pub addr: Option<SocketAddr>,
    /// Local address.
    pub local: Option<SocketAddr>,
    /// application_name from the startup packet.
    pub application_name: String,
    /// Login time.
    pub connect_time: SystemTime,
    /// Unix µs of the last server assignment (PgBouncer's request_time).
    pub request_us: AtomicU64,
    /// Unix µs since which the client waits for a server (0: not waiting).
    pub waiting_since_us: AtomicU64,
    /// Backend pid of the server it holds (0: none).
    pub server_pid: AtomicI32,
    control: watch::Sender<Control>,
}

impl ClientInfo {
    /// Ask the session to stop.
    pub fn control(&self, c: Control) {
        self.control.send_replace(c);
    }
}

/// Unix time in microseconds.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The registry.
#[derive(Debug, Default)]
pub struct Registry {
    map: DashMap<i32, Arc<ClientInfo>>,
}

/// Removes a client from the registry when its session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    /// The entry.
    pub info: Arc<ClientInfo>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map.remove(&self.info.id);
    }
}

/// What identifies a new client.
#[derive(Debug)]
pub struct NewClient<'a> {
    /// Virtual pid.
    pub id: i32,
    /// User.
    pub user: &'a str,
    /// Database.
    pub database: &'a str,
    /// Peer.
    pub addr: Option<SocketAddr>,
    /// Local end.
    pub local: Option<SocketAddr>,
    /// application_name.
    pub application_name: &'a str,
}

impl Registry {
    /// Add a client; the receiver tells its session what the console wants.
    pub fn register(
        self: &Arc<Self>,
        c: NewClient<'_>,
    ) -> (Registration, watch::Receiver<Control>) {
        let (tx, rx) = watch::channel(Control::Run);
        let info = Arc::new(ClientInfo {
            id: c.id,
            user: c.user.to_string(),
            database: c.database.to_string(),
            addr: c.addr,
            local: c.local,
            application_name: c.application_name.to_string(),
            connect_time: SystemTime::now(),
            request_us: AtomicU64::new(0),
            waiting_since_us: AtomicU64::new(0),
            server_pid: AtomicI32::new(0),
            control: tx,
        });
        self.map.insert(c.id, info.clone());
        (
            Registration {
                registry: self.clone(),
                info,
            },
            rx,
        )
    }

    /// All clients, by id.
    pub fn all(&self) -> Vec<Arc<ClientInfo>> {
        let mut v: Vec<_> = self.map.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// One client.
    pub fn get(&self, id: i32) -> Option<Arc<ClientInfo>> {
        self.map.get(&id).map(|e| e.value().clone())
    }

    /// Send `c` to every client of `database` (all when None).
    pub fn control_all(&self, database: Option<&str>, c: Control) -> usize {
        let mut n = 0;
        for e in self.map.iter() {
            if database.is_none_or(|d| d == e.database) {
                e.control(c);
                n += 1;
            }
        }
        n
    }

    /// Clients now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No clients.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Mark the client as waiting (or not) for a server.
pub fn set_waiting(info: &ClientInfo, waiting: bool) {
    let v = if waiting { now_us().max(1) } else { 0 };
    info.waiting_since_us.store(v, Ordering::Relaxed);
}
