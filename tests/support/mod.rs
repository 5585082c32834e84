//! Shared support of the integration tests: a throwaway PostgreSQL, pgherald in-process,
//! and a raw protocol client that sees every message.
#![allow(dead_code)]

pub mod console;
pub mod fuzz;
pub mod herald;
pub mod listen;
pub mod os;
pub mod pgbouncer;
pub mod postgres;
pub mod raw;
pub mod redis;
pub mod scripts;
pub mod tls;
