//! Operating pgherald like PgBouncer: the SQL console on the virtual database `pgbouncer`
//! (alias `pgherald`), pause/disable state, and the Prometheus `/metrics` endpoint.

pub mod commands;
pub mod console;
pub mod metrics;
pub mod pause;
pub mod rows;
pub mod show;

/// Database names that reach the console instead of a server.
pub const CONSOLE_DATABASES: [&str; 2] = ["pgbouncer", "pgherald"];

/// Is `database` the console?
pub fn is_console(database: &str) -> bool {
    CONSOLE_DATABASES.contains(&database)
}
