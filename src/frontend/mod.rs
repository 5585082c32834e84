//! The client side: accepting connections, the login phase, and the per-client session
//! that forwards traffic between the client and a pooled server connection.

pub mod client;
pub mod listener;
pub mod login;
pub mod params;
pub mod session;
pub mod txn;
