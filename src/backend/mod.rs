//! The server side: single Postgres connections, the pools that hold them, and cancel keys.

pub mod auth_query;
pub mod cancel;
pub mod conn;
pub mod pool;
pub mod prepared;
