//! The client side: accepting connections, the login phase, and the per-client session
//! that forwards traffic between the client and a pooled server connection.

pub mod admission;
mod adopt;
mod atomic;
mod backplane;
pub mod channels;
pub mod client;
mod dealloc;
pub mod deferred;
mod ending;
pub mod extended;
mod hold;
mod inbound;
pub mod intercept;
pub mod listener;
pub mod listening;
mod local;
pub mod login;
pub mod lookup;
mod open;
mod outbound;
pub mod params;
mod pipeline;
pub mod plan;
pub mod pool_settings;
pub mod registry;
pub mod session;
pub mod simple;
mod state;
pub mod timeouts;
pub mod txn;
