//! The Postgres wire protocol as pgherald needs it: header-only framing for forwarding,
//! the startup phase, encoders for the messages pgherald writes itself, and character
//! encoding conversion.

pub mod encoding;
pub mod framer;
pub mod origin;
pub mod reply;
pub mod startup;
