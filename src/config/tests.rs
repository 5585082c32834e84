//! Unit tests of the TOML configuration.

use super::*;

#[test]
fn defaults_are_pgbouncers() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.default_pool_size, 20);
    assert_eq!(c.max_client_conn, 100);
    assert_eq!(c.pool_mode, PoolMode::Transaction);
    assert_eq!(c.server_reset_query, "DISCARD ALL");
    c.validate().unwrap();
}

#[test]
fn bad_key_is_named() {
    let e = Config::from_toml("default_pool_sise = 3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("default_pool_sise"), "{e}");
    let e = Config::from_toml("default_pool_size = 0")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("default_pool_size"), "{e}");
    let e = Config::from_toml("[databases.app]\npool_size = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("databases.app.pool_size"), "{e}");
    let e = Config::from_toml("pool_mode = \"statement\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("statement"), "{e}");
}

#[test]
fn non_loopback_without_auth_refused() {
    let c = Config::from_toml("listen = \"0.0.0.0:6432\"").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("listen") && e.contains("loopback"), "{e}");
}

#[test]
fn targets_resolve() {
    let c = Config::from_toml(
        "upstream = \"postgres://bob:s%40cret@db.local:5433\"\n[databases.app]\ndbname = \"real\"\npool_size = 3\n",
    )
    .unwrap();
    let t = c.target("app").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.dbname.as_str(), t.pool_size),
        ("db.local", 5433, "real", 3)
    );
    assert_eq!(t.user.as_deref(), Some("bob"));
    assert_eq!(t.password.as_deref(), Some("s@cret"));
    assert_eq!(c.target("other").unwrap().dbname, "other");
    let c = Config::from_toml("[databases.only]\nport = 5999\n").unwrap();
    assert!(c.target("nope").is_none());
    assert_eq!(c.target("only").unwrap().user, None);
}

#[test]
fn shipped_example_parses() {
    let text = include_str!("../../config/pgherald.toml");
    let c = Config::from_toml(text).unwrap();
    c.validate().unwrap();
    assert_eq!(c.databases["app"].pool_size, Some(10));
    // The commented PgBouncer settings are top-level keys: uncommented, they parse.
    let (head, tail) = text
        .split_once("# PgBouncer's timeouts and limits")
        .unwrap();
    let (block, tail) = tail.split_once("\n\n").unwrap();
    let block: String = block
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(kv) if kv.contains(" = ") => format!("{kv}\n"),
            _ => String::new(),
        })
        .collect();
    let c = Config::from_toml(&format!("{head}{block}\n{tail}")).unwrap();
    assert_eq!(
        c.auth_hba_file.as_deref(),
        Some(Path::new("/etc/pgherald/hba.conf"))
    );
}

#[test]
fn tls_values_rustls_cannot_honour_name_the_key() {
    let err = |t: &str| {
        Config::from_toml(t)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    };
    let e = err("client_tls_protocols = \"tlsv1.1\"");
    assert!(
        e.contains("`client_tls_protocols`") && e.contains("tlsv1.1"),
        "{e}"
    );
    let e = err("server_tls_ciphers = \"HIGH:!aNULL\"");
    assert!(e.contains("`server_tls_ciphers`"), "{e}");
    let e = err("client_tls_sslmode = \"require\"");
    assert!(e.contains("`client_tls_sslmode`"), "{e}");
    let e = err("upstream = \"postgres://h/?sslmode=verify-full\"");
    assert!(e.contains("`server_tls_ca_file`"), "{e}");
    let e = err("upstream = \"postgres://h/?sslmode=sometimes\"");
    assert!(e.contains("`upstream`") && e.contains("sometimes"), "{e}");
    let c = Config::from_toml(
        "upstream = \"postgres://h/?sslmode=verify-full&sslrootcert=/ca.crt\"\n[databases.d]\nserver_tls_sslmode = \"disable\"\n",
    )
    .unwrap();
    c.validate().unwrap();
    let t = c.target("other").unwrap().tls;
    assert_eq!(
        (t.mode, t.ca_file.as_deref()),
        (SslMode::VerifyFull, Some(Path::new("/ca.crt")))
    );
    assert_eq!(c.target("d").unwrap().tls.mode, SslMode::Disable);
    assert_eq!(Config::default().server_tls_sslmode, SslMode::Prefer);
    assert_eq!(Config::default().client_tls_sslmode, SslMode::Disable);
}
