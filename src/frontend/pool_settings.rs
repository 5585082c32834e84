//! A new pool's shape from the configuration, with PgBouncer's precedence: `[users]`
//! pool_mode over the database's over the global one; the database's pool_size and
//! reserve_pool_size over the user's over the global ones; the idle check and reuse order
//! from `[pgbouncer]`; min_pool_size and the caps shared across pools as PgBouncer resolves
//! them (a database's value over the global one, a user's max_user_connections over the
//! global one, 0 meaning "the global one" for the caps).

use std::time::Duration;

use crate::backend::caps::{Caps, Limits};
use crate::backend::pool::PoolExtras;
use crate::config::{Config, PoolMode, Target};

/// Mode, size and extras of the pool of (`database`, `user`).
pub fn shape(
    config: &Config,
    target: &Target,
    database: &str,
    user: &str,
) -> (PoolMode, usize, PoolExtras) {
    let db = config
        .databases
        .get(database)
        .or_else(|| config.databases.get("*"));
    let u = config.users.get(user);
    let mode = u.and_then(|u| u.pool_mode).unwrap_or(target.pool_mode);
    let size = db
        .and_then(|d| d.pool_size)
        .or(u.and_then(|u| u.pool_size))
        .unwrap_or(target.pool_size);
    let reserve = db
        .and_then(|d| d.reserve_pool_size)
        .or(u.and_then(|u| u.reserve_pool_size))
        .unwrap_or(config.reserve_pool_size);
    let secs = |v: f64| Duration::from_secs_f64(if v.is_finite() && v > 0.0 { v } else { 0.0 });
    (
        mode,
        size.max(1),
        PoolExtras {
            reserve,
            reserve_timeout: secs(config.reserve_pool_timeout),
            check_query: config.server_check_query.clone(),
            check_delay: secs(config.server_check_delay),
            round_robin: config.server_round_robin,
        },
    )
}

/// min_pool_size and the caps of the pool of client-facing `database` whose server
/// connections log in as `server_user` (the forced user, else the client's).
pub fn limits(
    config: &Config,
    target: &Target,
    database: &str,
    server_user: &str,
    caps: &Caps,
) -> Limits {
    let db = config
        .databases
        .get(database)
        .or_else(|| config.databases.get("*"));
    let nonzero = |v: Option<usize>| v.filter(|n| *n > 0);
    let db_cap =
        nonzero(db.and_then(|d| d.max_db_connections)).unwrap_or(config.max_db_connections);
    let user_cap = nonzero(
        config
            .users
            .get(server_user)
            .and_then(|u| u.max_user_connections),
    )
    .unwrap_or(config.max_user_connections);
    Limits {
        min: db
            .and_then(|d| d.min_pool_size)
            .unwrap_or(config.min_pool_size),
        min_without_clients: target.user.is_some(),
        db: caps.database(database, db_cap),
        user: caps.user(server_user, user_cap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_pgbouncers() {
        let c = Config::from_toml(
            "pool_mode = \"session\"\ndefault_pool_size = 7\nreserve_pool_size = 1\n\
             [databases.a]\npool_size = 3\n[databases.b]\nreserve_pool_size = 4\n\
             [users.batch]\npool_mode = \"transaction\"\npool_size = 2\nreserve_pool_size = 9\n",
        )
        .unwrap();
        let s = |db: &str, user: &str| {
            let (m, n, e) = shape(&c, &c.target(db).unwrap(), db, user);
            (m, n, e.reserve)
        };
        assert_eq!(s("a", "web"), (PoolMode::Session, 3, 1));
        assert_eq!(s("a", "batch"), (PoolMode::Transaction, 3, 9));
        assert_eq!(s("b", "batch"), (PoolMode::Transaction, 2, 4));
        assert_eq!(s("b", "web"), (PoolMode::Session, 7, 4));
    }

    #[tokio::test]
    async fn limits_are_pgbouncers() {
        let c = Config::from_toml(
            "min_pool_size = 2\nmax_db_connections = 10\nmax_user_connections = 8\n\
             [databases.a]\nmin_pool_size = 0\nmax_db_connections = 3\nuser = \"owner\"\n\
             [databases.b]\nmax_db_connections = 0\n\
             [users.batch]\nmax_user_connections = 1\n",
        )
        .unwrap();
        let caps = Caps::default();
        let l = |db: &str, user: &str| {
            let l = limits(&c, &c.target(db).unwrap(), db, user, &caps);
            let n = |cap: &Option<std::sync::Arc<crate::backend::caps::Cap>>| {
                cap.as_ref().map_or(0, |c| c.limit())
            };
            (l.min, l.min_without_clients, n(&l.db), n(&l.user))
        };
        assert_eq!(l("a", "owner"), (0, true, 3, 8));
        assert_eq!(l("b", "batch"), (2, false, 10, 1));
        let mut off = c.clone();
        off.max_db_connections = 0;
        off.max_user_connections = 0;
        let u = limits(&off, &off.target("b").unwrap(), "b", "web", &caps);
        assert!(u.uncapped(), "0 is no cap");
    }
}
