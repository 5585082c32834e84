//! A new pool's shape from the configuration, with PgBouncer's precedence: `[users]`
//! pool_mode over the database's over the global one; the database's pool_size and
//! reserve_pool_size over the user's over the global ones; the idle check and reuse order
//! from `[pgbouncer]`.

use std::time::Duration;

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
}
