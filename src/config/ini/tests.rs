//! Unit tests of the ini translation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

fn load_files(files: &[(&str, &str)]) -> Result<Loaded, String> {
    let map: HashMap<PathBuf, String> = files
        .iter()
        .map(|(n, t)| (PathBuf::from(n), t.to_string()))
        .collect();
    let mut read = |p: &Path| {
        map.get(p)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    };
    from_text(Path::new(files[0].0), files[0].1, &mut read).map_err(|e| e.to_string())
}

fn load(text: &str) -> Result<Loaded, String> {
    load_files(&[("pgbouncer.ini", text), ("users.txt", "\"u\" \"p\"\n")])
}

#[test]
fn production_style_file_translates() {
    let l = load(
        "[databases]\n\
         app = host=10.0.0.5 port=5433 dbname=app_prod pool_size=30 min_pool_size=5 reserve_pool=3 max_db_connections=40 pool_mode=transaction\n\
         reports = host=10.0.0.6 user=ro password='it''s' auth_user=lookup client_encoding=UTF8 datestyle=ISO timezone=UTC application_name=rep connect_query='SET x=1'\n\
         * = host=10.0.0.7 auth_query='SELECT usename, passwd FROM pg_shadow WHERE usename=$1'\n\
         [users]\n\
         batch = pool_mode=session pool_size=2 max_user_connections=4 query_timeout=30\n\
         [pgbouncer]\n\
         listen_addr = *\nlisten_port = 6543\nauth_type = scram-sha-256\nauth_file = users.txt\n\
         auth_user = lookup\nmax_client_conn = 0x100\ndefault_pool_size = 010\nquery_timeout = 2.5\n\
         idle_transaction_timeout = 60\nclient_idle_timeout=600\nserver_round_robin = 1\n\
         reserve_pool_size = 2\nreserve_pool_timeout = 3\nignore_startup_parameters = extra_float_digits, search_path\n\
         min_pool_size = 1\nmax_db_connections = 50\nmax_user_connections = 0x20\n",
    )
    .unwrap();
    let c = &l.config;
    assert_eq!(c.listen, "0.0.0.0:6543");
    assert_eq!(c.max_client_conn, 256);
    assert_eq!(c.default_pool_size, 8);
    assert_eq!(c.pool_mode, PoolMode::Session, "PgBouncer's default");
    assert_eq!(
        (
            c.query_timeout,
            c.idle_transaction_timeout,
            c.client_idle_timeout
        ),
        (2.5, 60.0, 600.0)
    );
    assert!(c.server_round_robin);
    assert_eq!((c.reserve_pool_size, c.reserve_pool_timeout), (2, 3.0));
    assert_eq!(c.auth.as_ref().unwrap().kind, "scram-sha-256");
    assert_eq!(
        c.auth.as_ref().unwrap().file.as_deref(),
        Some(Path::new("users.txt"))
    );
    assert_eq!(c.auth_user.as_deref(), Some("lookup"));
    assert_eq!(c.auth_query, DEFAULT_AUTH_QUERY);
    let app = &c.databases["app"];
    assert_eq!(app.host.as_deref(), Some("10.0.0.5"));
    assert_eq!(app.port, Some(5433));
    assert_eq!(app.dbname.as_deref(), Some("app_prod"));
    assert_eq!((app.pool_size, app.reserve_pool_size), (Some(30), Some(3)));
    assert_eq!(app.pool_mode, Some(PoolMode::Transaction));
    let rep = &c.databases["reports"];
    assert_eq!(rep.password.as_deref(), Some("it's"));
    assert_eq!(rep.connect_query.as_deref(), Some("SET x=1"));
    assert_eq!(rep.timezone.as_deref(), Some("UTC"));
    assert!(c.databases["*"]
        .auth_query
        .as_deref()
        .unwrap()
        .contains("pg_shadow"));
    assert_eq!(c.users["batch"].pool_size, Some(2));
    assert_eq!(c.users["batch"].pool_mode, Some(PoolMode::Session));
    c.validate().unwrap();
    // The `*` fallback serves any database name, with the client's name as dbname.
    let t = c.target("anything").unwrap();
    assert_eq!(
        (t.host.as_str(), t.dbname.as_str()),
        ("10.0.0.7", "anything")
    );
    // The limits, global and per database / user.
    assert_eq!(
        (
            c.min_pool_size,
            c.max_db_connections,
            c.max_user_connections
        ),
        (1, 50, 32)
    );
    assert_eq!(
        (app.min_pool_size, app.max_db_connections),
        (Some(5), Some(40))
    );
    assert_eq!(c.users["batch"].max_user_connections, Some(4));
    // Everything in this file is supported: nothing is reported.
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn unsupported_settings_are_reported_once_each() {
    let l = load(
        "[pgbouncer]\nlogfile = /var/log/x.log\nlogfile = /var/log/y.log\npidfile = /run/p.pid\n\
         listen_addr = 127.0.0.1, ::1\nauth_file = users.txt\nauth_type = plain\n\
         transaction_timeout = 5\n[peers]\n1 = host=x\n[databases]\nlocal = dbname=x\nlb = host=a,b load_balance_hosts=disable\n",
    )
    .unwrap();
    let w = l.warnings.join("\n");
    for needle in [
        "logfile: not applicable",
        "pidfile",
        "listen_addr: several",
        "auth_type plain",
        "transaction_timeout: not supported",
        "[peers]",
        "(local)",
        "connects to the first, a",
        "load_balance_hosts per database",
    ] {
        assert!(w.contains(needle), "missing {needle} in\n{w}");
    }
    assert_eq!(w.matches("logfile").count(), 1, "{w}");
    assert_eq!(l.config.listen, "127.0.0.1:6432");
    assert_eq!(l.config.auth.unwrap().kind, "md5");
}

#[test]
fn errors_name_file_and_line() {
    let cases = [
        (
            "[pgbouncer]\nauth_file = users.txt\nlisten_prt = 1\n",
            "pgbouncer.ini:3: unknown parameter: pgbouncer/listen_prt",
        ),
        (
            "[pgbouncer]\nauth_file = users.txt\n[databases]\napp = host=x bogus=1\n",
            "pgbouncer.ini:4: unrecognized connection parameter: bogus",
        ),
        (
            "[pgbouncer]\nauth_file = users.txt\n[databases]\napp = host=x port=zero\n",
            "pgbouncer.ini:4: invalid port: zero",
        ),
        (
            "[pgbouncer]\nauth_file = users.txt\nmax_client_conn = lots\n",
            "pgbouncer.ini:3: invalid value \"lots\" for parameter max_client_conn",
        ),
        (
            "[pgbouncer]\nauth_file = missing.txt\n",
            "pgbouncer.ini:2: could not load auth_file \"missing.txt\"",
        ),
        (
            "[pgbouncer]\nauth_file = users.txt\nauth_type = hba\n",
            "pgbouncer.ini:3: auth_type hba needs auth_hba_file",
        ),
        (
            "[pgbouncer]\nauth_file = users.txt\npool_mode = statement\n",
            "pgbouncer.ini:3: invalid value \"statement\"",
        ),
        (
            "[pgbouncer]\nauth_file = users.txt\n[databases]\npgbouncer = host=x\n",
            "pgbouncer.ini:4: database name \"pgbouncer\" is reserved",
        ),
        (
            "[pgbouncer]\nauth_file = users.txt\n[databases]\nx = host=/tmp\n",
            "pgbouncer.ini:4: invalid host \"/tmp\"",
        ),
        (
            "[pgbouncer]\nauth_file = users.txt\n[extra]\n",
            "pgbouncer.ini:3: invalid section \"extra\"",
        ),
        (
            "listen_port = 5\n[pgbouncer]\n",
            "pgbouncer.ini:1: value without section",
        ),
        ("[databases]\n", "main section [pgbouncer] missing"),
        (
            "[pgbouncer]\n",
            "pgbouncer.ini:1: auth_type md5 needs auth_file or auth_user",
        ),
        (
            "[pgbouncer]\nauth_file = users.txt\n[users]\nbob = pool_size=x\n",
            "pgbouncer.ini:4: invalid pool_size \"x\" for user bob",
        ),
    ];
    for (text, want) in cases {
        let e = load(text).unwrap_err();
        assert!(e.contains(want), "{text:?}\n got: {e}\nwant: {want}");
    }
}

#[test]
fn includes_are_followed() {
    let l = load_files(&[
        (
            "main.ini",
            "[pgbouncer]\n%include common.ini\nlisten_port = 7000\n",
        ),
        (
            "common.ini",
            "auth_type = trust\nlisten_addr = localhost\n[databases]\n* = host=db\n[pgbouncer]\n",
        ),
    ])
    .unwrap();
    assert_eq!(l.config.listen, "127.0.0.1:7000");
    assert_eq!(l.config.auth.unwrap().kind, "trust");
    assert!(l.config.databases.contains_key("*"));
    let e = load_files(&[
        (
            "main.ini",
            "[pgbouncer]\nauth_type = trust\n%include common.ini\n",
        ),
        ("common.ini", "\nbad line\n"),
    ])
    .unwrap_err();
    assert!(e.starts_with("common.ini:2: syntax error"), "{e}");
}

#[test]
fn recognised_by_its_form() {
    assert!(is_ini(
        "; comment\n[databases]\n[pgbouncer]\nlisten_port=1\n"
    ));
    assert!(is_ini("%include /etc/pgbouncer/common.ini\n"));
    assert!(!is_ini(
        "listen = \"127.0.0.1:6432\"\n[databases.app]\nhost = \"x\"\n"
    ));
    assert!(!is_ini(include_str!("../../../config/pgherald.toml")));
}

#[test]
fn debian_shipped_files_load_with_warnings_only() {
    // Debian's pgbouncer package ships these; CI installs it (.ci/run).
    for path in [
        "/etc/pgbouncer/pgbouncer.ini",
        "/usr/share/doc/pgbouncer/examples/pgbouncer.ini",
    ] {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let mut read = |p: &Path| {
            if p.ends_with("userlist.txt") {
                Ok(String::new())
            } else {
                std::fs::read_to_string(p)
            }
        };
        let l =
            from_text(Path::new(path), &text, &mut read).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            !l.warnings.is_empty(),
            "{path}: it sets logfile and pidfile"
        );
        assert!(
            l.warnings.iter().any(|w| w.starts_with("logfile:")),
            "{:?}",
            l.warnings
        );
        l.config
            .validate()
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
