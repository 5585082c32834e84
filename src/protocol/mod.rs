//! The Postgres wire protocol as pgherald needs it: header-only framing for forwarding,
//! the startup phase, and encoders for the messages pgherald writes itself.

pub mod framer;
pub mod reply;
pub mod startup;
