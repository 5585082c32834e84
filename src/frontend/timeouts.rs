//! PgBouncer's client timeouts: `client_idle_timeout` (a client holding no server, silent
//! for that long), `idle_transaction_timeout` (a client inside a transaction, silent that
//! long) and `query_timeout` (a request the server has not finished answering); a client
//! that has LISTENed is waiting for notifications, not idling. Each ends
//! the client with PgBouncer's FATAL 08P01 text and closes its server connection. Off
//! (zero) by default, and then the session does no timing work at all.

use std::time::{Duration, Instant};

use crate::config::Config;

/// The three limits for one client (its `[users]` entry, else the global values).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTimeouts {
    /// client_idle_timeout (zero: off).
    pub idle: Duration,
    /// idle_transaction_timeout (zero: off).
    pub idle_transaction: Duration,
    /// query_timeout (zero: off).
    pub query: Duration,
}

/// What the session is doing, as far as the timeouts care.
#[derive(Debug, Clone, Copy)]
pub struct Activity {
    /// The session holds a server connection.
    pub holds_server: bool,
    /// Transaction status the client last saw (`I`, `T`, `E`).
    pub status: u8,
    /// When the client last sent something.
    pub last_client: Instant,
    /// Since when the server owes replies (None: nothing in flight).
    pub busy_since: Option<Instant>,
    /// The client has LISTENed: waiting for notifications is not idling, so
    /// client_idle_timeout spares it.
    pub listening: bool,
}

fn secs(v: f64) -> Duration {
    if v.is_finite() && v > 0.0 {
        Duration::from_secs_f64(v)
    } else {
        Duration::ZERO
    }
}

impl ClientTimeouts {
    /// The limits for `user`: its `[users]` entry's non-zero values win, as in PgBouncer.
    pub fn for_user(config: &Config, user: &str) -> ClientTimeouts {
        let u = config.users.get(user);
        let pick = |own: Option<f64>, global: f64| secs(own.filter(|v| *v > 0.0).unwrap_or(global));
        ClientTimeouts {
            idle: pick(
                u.and_then(|u| u.client_idle_timeout),
                config.client_idle_timeout,
            ),
            idle_transaction: pick(
                u.and_then(|u| u.idle_transaction_timeout),
                config.idle_transaction_timeout,
            ),
            query: pick(u.and_then(|u| u.query_timeout), config.query_timeout),
        }
    }

    /// Any limit is on.
    pub fn any(&self) -> bool {
        !(self.idle.is_zero() && self.idle_transaction.is_zero() && self.query.is_zero())
    }

    /// The next limit that can fire, and the reason PgBouncer gives when it does.
    pub fn next(&self, a: Activity) -> Option<(Instant, &'static str)> {
        if let Some(since) = a.busy_since {
            return (!self.query.is_zero()).then(|| (since + self.query, "query timeout"));
        }
        if a.status != b'I' {
            return (!self.idle_transaction.is_zero()).then(|| {
                (
                    a.last_client + self.idle_transaction,
                    "idle transaction timeout",
                )
            });
        }
        if !a.holds_server && !a.listening {
            // Outside a transaction and holding nothing (transaction pooling).
            return (!self.idle.is_zero())
                .then(|| (a.last_client + self.idle, "client_idle_timeout"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_limit_applies() {
        let t = ClientTimeouts {
            idle: Duration::from_secs(10),
            idle_transaction: Duration::from_secs(20),
            query: Duration::from_secs(30),
        };
        let now = Instant::now();
        let a = Activity {
            holds_server: false,
            status: b'I',
            last_client: now,
            busy_since: None,
            listening: false,
        };
        assert_eq!(
            t.next(Activity {
                listening: true,
                ..a
            }),
            None
        );
        assert_eq!(
            t.next(a),
            Some((now + Duration::from_secs(10), "client_idle_timeout"))
        );
        let a = Activity {
            holds_server: true,
            status: b'T',
            ..a
        };
        assert_eq!(
            t.next(a),
            Some((now + Duration::from_secs(20), "idle transaction timeout"))
        );
        let a = Activity {
            busy_since: Some(now),
            ..a
        };
        assert_eq!(
            t.next(a),
            Some((now + Duration::from_secs(30), "query timeout"))
        );
        // Session mode, idle outside a transaction while holding its server: nothing.
        let a = Activity {
            holds_server: true,
            status: b'I',
            busy_since: None,
            ..a
        };
        assert_eq!(t.next(a), None);
        assert!(!ClientTimeouts::default().any());
    }

    #[test]
    fn users_override_the_global_values() {
        let c = Config::from_toml(
            "query_timeout = 5\nclient_idle_timeout = 7\n[users.batch]\nquery_timeout = 60\n",
        )
        .unwrap();
        let t = ClientTimeouts::for_user(&c, "batch");
        assert_eq!(
            (t.query, t.idle),
            (Duration::from_secs(60), Duration::from_secs(7))
        );
        assert_eq!(
            ClientTimeouts::for_user(&c, "web").query,
            Duration::from_secs(5)
        );
    }
}
