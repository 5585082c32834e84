//! Error types, one enum per layer, each tagged with where the fault came from.
//!
//! The tag decides the reaction: a client fault gets an ErrorResponse and maybe a
//! disconnect, a server fault costs the server connection (and its client an error),
//! an internal fault is logged.

use std::io;

/// Faults caused by the client side of a session (downstream).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading from or writing to the client socket failed.
    #[error("client i/o: {0}")]
    Io(#[from] io::Error),
    /// The client broke the wire protocol; the message is what it gets in its FATAL.
    #[error("client protocol violation: {0}")]
    Protocol(String),
    /// The client went away.
    #[error("client disconnected")]
    Closed,
    /// A login message longer than its limit (the length word given).
    #[error("invalid message length {0}")]
    TooLong(usize),
    /// The TLS handshake with the client failed.
    #[error("client TLS: {0}")]
    Tls(String),
}

/// Faults of a Postgres server connection (upstream).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Socket error talking to the server.
    #[error("server i/o: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
    /// The server sent something pgherald does not understand.
    #[error("server protocol violation: {0}")]
    Protocol(String),
    /// The server refused the login or another request with an ErrorResponse.
    #[error("server error {code}: {message}")]
    Refused {
        /// SQLSTATE.
        code: String,
        /// Severity as sent (FATAL, ERROR).
        severity: String,
        /// Primary message.
        message: String,
        /// DETAIL, if the server sent one.
        detail: Option<String>,
    },
    /// The server asked for an authentication method pgherald cannot perform.
    #[error("server authentication: {0}")]
    Auth(String),
    /// TLS towards the server failed (refused, handshake, certificate check).
    #[error("{0}")]
    Tls(String),
    /// Connecting did not finish in time.
    #[error("timed out connecting to the server")]
    ConnectTimeout,
}

/// Faults of a pool checkout.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No server connection became free within `query_wait_timeout`.
    #[error("query_wait_timeout: no server connection became available in time")]
    WaitTimeout,
    /// Opening a new server connection failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The pool is shutting down.
    #[error("pool closed")]
    Closed,
}

/// Top-level error of `pgherald::run`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message names the key.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// Binding or accepting failed.
    #[error("listener: {0}")]
    Io(#[from] io::Error),
}
