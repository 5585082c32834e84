//! Every `[pgbouncer]` setting of PgBouncer 1.25, with what pgherald makes of it. The
//! loader applies the supported ones and reports every other one once at start; the
//! README's migration table lists the same rows (a unit test keeps them in step).

/// What pgherald does with a PgBouncer setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Applied, with PgBouncer's meaning.
    Same,
    /// Applied, with a difference worth knowing (said here).
    Different(&'static str),
    /// Not supported: what pgherald does instead.
    Unsupported(&'static str),
    /// Meaningless for pgherald (logging, daemonizing, DNS...): what replaces it.
    NotApplicable(&'static str),
}

/// One `[pgbouncer]` key.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Key as PgBouncer spells it.
    pub name: &'static str,
    /// What pgherald does with it.
    pub support: Support,
}

use Support::*;

const fn s(name: &'static str, support: Support) -> Setting {
    Setting { name, support }
}

/// All keys, in PgBouncer's (alphabetical) order.
pub const SETTINGS: &[Setting] = &[
    s("admin_users", Same),
    s("application_name_add_host", Same),
    s("auth_dbname", Same),
    s("auth_file", Same),
    s("auth_hba_file", Different("pg_hba.conf format as PgBouncer reads it, except `@file` lists and `map=` options (refused, naming the line); `local` and `peer` lines never match (pgherald listens on TCP only)")),
    s("auth_ident_file", Unsupported("not read; ident/peer maps are not supported")),
    s("auth_ldap_options", Unsupported("not read; auth_type ldap is refused")),
    s("auth_query", Different("an unknown user (no row) fails like a wrong password (28P01) where PgBouncer says \"no such user\"")),
    s("auth_type", Different("trust, md5, scram-sha-256 and cert as PgBouncer, failures with Postgres's FATAL 28P01 text; plain is served as md5 and any as trust; hba with auth_hba_file; pam and ldap are refused")),
    s("auth_user", Same),
    s("autodb_idle_timeout", Unsupported("pools of `*` databases stay until their server connections time out (server_idle_timeout)")),
    s("cancel_wait_timeout", Unsupported("a cancel request is forwarded at once and not retried")),
    s("client_idle_timeout", Different("same limit and FATAL text; clients that have LISTENed are waiting for notifications and are spared")),
    s("client_login_timeout", Same),
    s("client_tls13_ciphers", NotApplicable("rustls offers its TLS 1.3 suites")),
    s("client_tls_ca_file", Same),
    s("client_tls_cert_file", Same),
    s("client_tls_ciphers", Different("rustls suites only; OpenSSL cipher strings other than default/secure/all are refused")),
    s("client_tls_dheparams", NotApplicable("rustls uses ECDHE only")),
    s("client_tls_ecdhcurve", NotApplicable("rustls picks the curve")),
    s("client_tls_key_file", Same),
    s("client_tls_protocols", Different("TLS 1.2 and 1.3 only")),
    s("client_tls_sslmode", Same),
    s("conffile", NotApplicable("the file given on the command line")),
    s("default_pool_size", Same),
    s("disable_pqexec", Unsupported("multi-statement simple queries are always allowed")),
    s("dns_max_ttl", NotApplicable("host names are resolved at each new server connection")),
    s("dns_nxdomain_ttl", NotApplicable("host names are resolved at each new server connection")),
    s("dns_zone_check_period", NotApplicable("host names are resolved at each new server connection")),
    s("idle_transaction_timeout", Same),
    s("ignore_startup_parameters", Different("the listed parameters are dropped as in PgBouncer; other startup parameters are applied on the server (PgBouncer refuses them)")),
    s("job_name", NotApplicable("logs are tagged by tracing, not by a job name")),
    s("listen_addr", Different("one TCP address: `*` is 0.0.0.0, `localhost` is 127.0.0.1, a list uses its first entry")),
    s("listen_backlog", NotApplicable("the operating system's default backlog")),
    s("listen_port", Same),
    s("log_connections", NotApplicable("connections are logged at debug level (RUST_LOG)")),
    s("log_disconnections", NotApplicable("disconnections are logged at debug level (RUST_LOG)")),
    s("log_pooler_errors", NotApplicable("errors sent to clients are logged at info level")),
    s("log_stats", NotApplicable("no periodic stats line in the log")),
    s("logfile", NotApplicable("logs go to stderr (run under systemd or redirect)")),
    s("login_notify_message", Unsupported("no notice is sent at login")),
    s("max_client_conn", Same),
    s("max_db_client_connections", Unsupported("only max_client_conn limits clients")),
    s("max_db_connections", Same),
    s("max_packet_size", Unsupported("frames of any length are streamed through")),
    s("max_prepared_statements", Same),
    s("max_user_client_connections", Unsupported("only max_client_conn limits clients")),
    s("max_user_connections", Same),
    s("min_pool_size", Different("kept, as PgBouncer, for pools with a client and for databases with a forced user; pgherald creates a pool at its first client, so a forced-user database is filled from its first login rather than from start")),
    s("peer_id", Unsupported("no peering: cancel requests reach the instance the client is on")),
    s("pidfile", NotApplicable("no pid file; pgherald runs in the foreground")),
    s("pkt_buf", NotApplicable("buffers grow as frames need")),
    s("pool_idle_timeout", Unsupported("empty pools stay")),
    s("pool_mode", Different("session and transaction; statement is refused")),
    s("query_timeout", Different("same limit and FATAL text; pgherald also cancels the query on the server before closing the connection")),
    s("query_wait_notify", Unsupported("no notice while a client waits for a server")),
    s("query_wait_timeout", Same),
    s("reserve_pool_size", Same),
    s("reserve_pool_timeout", Same),
    s("resolv_conf", NotApplicable("the system resolver")),
    s("sbuf_loopcnt", NotApplicable("tokio schedules fairly")),
    s("scram_iterations", Unsupported("verifiers made for plaintext secrets use 4096 iterations")),
    s("server_check_delay", Same),
    s("server_check_query", Same),
    s("server_connect_timeout", Same),
    s("server_fast_close", Unsupported("server connections are closed when their client leaves them")),
    s("server_idle_timeout", Same),
    s("server_lifetime", Same),
    s("server_login_retry", Different("a server that refuses logins is retried every 200 ms within query_wait_timeout")),
    s("server_reset_query", Same),
    s("server_reset_query_always", Unsupported("in transaction mode DISCARD ALL runs when a client left state on its server")),
    s("server_round_robin", Same),
    s("server_tls13_ciphers", NotApplicable("rustls offers its TLS 1.3 suites")),
    s("server_tls_ca_file", Same),
    s("server_tls_cert_file", Same),
    s("server_tls_ciphers", Different("rustls suites only")),
    s("server_tls_key_file", Same),
    s("server_tls_protocols", Different("TLS 1.2 and 1.3 only")),
    s("server_tls_sslmode", Same),
    s("service_name", NotApplicable("Windows only")),
    s("so_reuseport", Same),
    s("stats_period", Same),
    s("stats_users", Same),
    s("suspend_timeout", NotApplicable("no online restart (SUSPEND/-R)")),
    s("syslog", NotApplicable("logs go to stderr")),
    s("syslog_facility", NotApplicable("logs go to stderr")),
    s("syslog_ident", NotApplicable("logs go to stderr")),
    s("tcp_defer_accept", NotApplicable("the operating system's default")),
    s("tcp_keepalive", NotApplicable("the operating system's keepalive settings")),
    s("tcp_keepcnt", NotApplicable("the operating system's keepalive settings")),
    s("tcp_keepidle", NotApplicable("the operating system's keepalive settings")),
    s("tcp_keepintvl", NotApplicable("the operating system's keepalive settings")),
    s("tcp_socket_buffer", NotApplicable("the operating system's socket buffers")),
    s("tcp_user_timeout", NotApplicable("the operating system's default")),
    s("track_extra_parameters", Different("pgherald tracks client_encoding, DateStyle, TimeZone, IntervalStyle, standard_conforming_strings, application_name and every other setting a client SETs")),
    s("transaction_timeout", Unsupported("no limit on a transaction's length; use idle_transaction_timeout or Postgres's transaction_timeout")),
    s("unix_socket_dir", NotApplicable("pgherald listens on TCP only")),
    s("unix_socket_group", NotApplicable("pgherald listens on TCP only")),
    s("unix_socket_mode", NotApplicable("pgherald listens on TCP only")),
    s("user", NotApplicable("start pgherald as the user it should run as")),
    s("verbose", NotApplicable("set RUST_LOG=debug")),
];

/// The setting called `name` (case-sensitive, as PgBouncer).
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_in_the_readme() {
        for w in SETTINGS.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        let readme = include_str!("../../../README.md");
        for s in SETTINGS {
            let row = format!("| `{}` |", s.name);
            assert!(readme.contains(&row), "README lacks the row for {}", s.name);
        }
    }
}
