//! Server side: connections to Postgres, the pools that lend them, cancel-key routing,
//! prepared-statement bookkeeping, the caps shared across pools, and the pools' counters.

pub mod auth_query;
pub mod cancel;
pub mod caps;
pub mod conn;
pub mod pool;
pub mod prepared;
pub mod stats;
