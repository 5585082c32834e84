//! Migrating from PgBouncer: a real pgbouncer.ini and userlist.txt served by pgherald, SCRAM
//! and md5 pass-through with no plaintext password in any of pgherald's files, the same
//! files served by the real PgBouncer with the same results, and bad files refused with
//! one error naming the file and line before anything listens.

mod support;

use std::process::Command;

use pgherald::config::ini;
use support::herald::Herald;
use support::pgbouncer::{self, Bouncer, Files};
use support::postgres::{
    self, TestPostgres, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER, SUPERUSER,
};

/// The secret Postgres stores for `role` (a SCRAM verifier or an md5 hash).
async fn stored_secret(pg: &TestPostgres, role: &str) -> String {
    let su = pg.connect(SUPERUSER, None, postgres::DEFAULT_DB).await;
    let row = su
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap();
    row.get(0)
}

/// pgherald serving `files` (its own port, so PgBouncer can have the ini's).
async fn herald_from(files: &Files) -> (Herald, Vec<String>) {
    let loaded = ini::load(&files.ini).unwrap_or_else(|e| panic!("{e}"));
    let mut config = loaded.config;
    config.listen = "127.0.0.1:0".into();
    (Herald::start(config).await, loaded.warnings)
}

async fn connect(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user={user} password={password} dbname={db}"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(c)
}

/// Who the server says we are, and a query result.
async fn whoami(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<(String, String), String> {
    let c = connect(port, user, password, db)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(d) => format!("{} {}", d.code().code(), d.message()),
            None => e.to_string(),
        })?;
    let row = c
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok((row.get(0), row.get(1)))
}

fn secrets_in_clear(files: &Files, passwords: &[&str]) {
    for f in [&files.ini, &files.userlist] {
        let text = std::fs::read_to_string(f).unwrap();
        for p in passwords {
            assert!(
                !text.contains(p),
                "{} holds a plaintext password",
                f.display()
            );
        }
    }
}

async fn scram_files(pg: &TestPostgres, pgbouncer: &str) -> Files {
    let scram = stored_secret(pg, SCRAM_USER).await;
    let md5 = stored_secret(pg, MD5_USER).await;
    assert!(scram.starts_with("SCRAM-SHA-256$") && md5.starts_with("md5"));
    let files = pgbouncer::write(
        &format!(
            "db1 = host=127.0.0.1 port={port}\nalias = host=127.0.0.1 port={port} dbname=db2 pool_size=2\ntz = host=127.0.0.1 port={port} dbname=db1 timezone=Asia/Tokyo application_name=from_ini connect_query='SELECT 1'\n* = host=127.0.0.1 port={port}",
            port = pg.port
        ),
        pgbouncer,
        &[(SCRAM_USER, &scram), (MD5_USER, &md5)],
    );
    secrets_in_clear(&files, &[SCRAM_PASSWORD, MD5_PASSWORD]);
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_and_md5_pass_through_with_no_plaintext_anywhere() {
    let pg = postgres::shared();
    // auth_type md5 (PgBouncer's default) asks SCRAM of users with a SCRAM secret.
    let files = scram_files(pg, "auth_type = md5\npool_mode = transaction").await;
    let (h, warnings) = herald_from(&files).await;
    assert_eq!(
        warnings,
        vec!["unix_socket_dir: not applicable; pgherald listens on TCP only".to_string()]
    );
    // The server login as u_scram is SCRAM with the keys the client proved.
    assert_eq!(
        whoami(h.port(), SCRAM_USER, SCRAM_PASSWORD, "db1")
            .await
            .unwrap(),
        (SCRAM_USER.to_string(), "db1".to_string())
    );
    assert_eq!(
        whoami(h.port(), SCRAM_USER, SCRAM_PASSWORD, "alias")
            .await
            .unwrap(),
        (SCRAM_USER.to_string(), "db2".to_string())
    );
    // The `*` fallback.
    assert_eq!(
        whoami(h.port(), SCRAM_USER, SCRAM_PASSWORD, postgres::DEFAULT_DB)
            .await
            .unwrap()
            .1,
        postgres::DEFAULT_DB
    );
    // md5 pass-through: the hash from pg_authid answers Postgres's md5 challenge.
    assert_eq!(
        whoami(h.port(), MD5_USER, MD5_PASSWORD, "db1")
            .await
            .unwrap()
            .0,
        MD5_USER
    );
    let e = whoami(h.port(), SCRAM_USER, "wrong", "db1")
        .await
        .unwrap_err();
    assert_eq!(
        e,
        format!("28P01 password authentication failed for user \"{SCRAM_USER}\"")
    );
    // Many transactions over a pool of 2 with pass-through logins.
    let clients: Vec<_> = futures_util::future::join_all(
        (0..6).map(|_| connect(h.port(), SCRAM_USER, SCRAM_PASSWORD, "alias")),
    )
    .await;
    for c in &clients {
        let c = c.as_ref().unwrap();
        for i in 0..20i32 {
            let row = c.query_one("SELECT $1::int + 1", &[&i]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), i + 1);
        }
    }
}

/// Issue 16: the driver suite (psycopg, asyncpg, node-postgres, pgjdbc) through a
/// production-style pgbouncer.ini: several databases and the `*` fallback, transaction
/// pooling, a reserve pool, PgBouncer's timeouts, `auth_user` + `auth_query`. The drivers log
/// in as a SCRAM user who is not in the auth file (auth_query finds the verifier) and whose
/// password is in none of pgherald's files: every login to Postgres is SCRAM pass-through.
/// LISTEN/NOTIFY included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_through_a_production_ini() {
    use support::scripts::{try_driver, Driver, Run, POOL_SIZE};
    let pg = postgres::shared();
    let su = pg.connect(SUPERUSER, None, postgres::DEFAULT_DB).await;
    su.batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {SCRAM_USER}"))
        .await
        .unwrap();
    let md5 = stored_secret(pg, MD5_USER).await;
    let files = pgbouncer::write(
        &format!(
            "db1 = host=127.0.0.1 port={port} pool_size={POOL_SIZE}\n\
             reports = host=127.0.0.1 port={port} dbname=db2 pool_mode=session\n\
             * = host=127.0.0.1 port={port}",
            port = pg.port
        ),
        &format!(
            "auth_type = scram-sha-256\nauth_user = {SUPERUSER}\npool_mode = transaction\n\
             default_pool_size = {POOL_SIZE}\nreserve_pool_size = 1\nreserve_pool_timeout = 60\n\
             query_timeout = 120\nidle_transaction_timeout = 60\nclient_idle_timeout = 600\n\
             server_idle_timeout = 60\nserver_lifetime = 3600\nmax_client_conn = 200"
        ),
        &[(MD5_USER, &md5)],
    );
    secrets_in_clear(&files, &[SCRAM_PASSWORD, MD5_PASSWORD]);
    let userlist = std::fs::read_to_string(&files.userlist).unwrap();
    assert!(
        !userlist.contains(SCRAM_USER),
        "the drivers' user must come from auth_query"
    );
    let (h, _) = herald_from(&files).await;
    for driver in [
        Driver::Psycopg,
        Driver::Asyncpg,
        Driver::NodePostgres,
        Driver::Pgjdbc,
    ] {
        let run = Run {
            iterations: 10,
            env: vec![
                ("DRIVER_USER", SCRAM_USER.into()),
                ("PGPASSWORD", SCRAM_PASSWORD.into()),
            ],
        };
        let out = try_driver(driver, h.port(), run)
            .await
            .unwrap_or_else(|r| panic!("{} through the ini: {r}", driver.name()));
        assert!(out.contains("checks passed"), "{}: {out}", driver.name());
        pg.assert_no_notify_reached(driver.name(), driver.channel());
    }
}

/// The same files served by PgBouncer and by pgherald give the same answers and errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_by_side_with_pgbouncer() {
    let pg = postgres::shared();
    for auth_type in ["md5", "scram-sha-256"] {
        side_by_side(pg, auth_type).await;
    }
}

async fn side_by_side(pg: &TestPostgres, auth_type: &str) {
    let files = scram_files(
        pg,
        &format!("auth_type = {auth_type}\npool_mode = transaction\nignore_startup_parameters = extra_float_digits"),
    )
    .await;
    let bouncer = Bouncer::start(&files);
    let (h, _) = herald_from(&files).await;
    let cases: &[(&str, &str, &str)] = &[
        (SCRAM_USER, SCRAM_PASSWORD, "db1"),
        (SCRAM_USER, SCRAM_PASSWORD, "alias"),
        (SCRAM_USER, SCRAM_PASSWORD, "postgres"),
        (SCRAM_USER, "wrong", "db1"),
        ("nobody", "x", "db1"),
        (MD5_USER, MD5_PASSWORD, "db2"),
        (MD5_USER, "wrong", "db2"),
    ];
    for (user, pw, db) in cases {
        let theirs = whoami(bouncer.port, user, pw, db).await;
        let ours = whoami(h.port(), user, pw, db).await;
        // One known difference: a failed login gets Postgres's FATAL (28P01 naming the
        // user) from pgherald, where PgBouncer says 08P01 "SASL authentication failed"
        // (SCRAM) or "password authentication failed" (md5).
        let theirs = theirs.map_err(|e| {
            if e == "08P01 SASL authentication failed"
                || e == "08P01 password authentication failed"
            {
                format!("28P01 password authentication failed for user \"{user}\"")
            } else {
                e
            }
        });
        assert_eq!(
            ours,
            theirs,
            "{auth_type}: {user}/{pw}/{db}; pgbouncer log:\n{}",
            bouncer.log()
        );
    }
    // The database entry's startup settings reach the server.
    for port in [bouncer.port, h.port()] {
        let c = connect(port, SCRAM_USER, SCRAM_PASSWORD, "tz")
            .await
            .unwrap();
        let row = c
            .query_one(
                "SELECT current_setting('TimeZone'), current_setting('application_name')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, String>(1)),
            ("Asia/Tokyo".into(), "from_ini".into()),
            "port {port}"
        );
    }
    // psql through both.
    for port in [bouncer.port, h.port()] {
        let out = Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                SCRAM_USER,
                "-d",
                "alias",
                "-c",
                "SELECT current_user || '@' || current_database()",
            ])
            .env("PGPASSWORD", SCRAM_PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{SCRAM_USER}@db2")
        );
    }
}

/// A bad file: one error line naming the file and line, exit status 2, nothing listening.
#[test]
fn bad_files_are_refused_before_anything_listens() {
    let hba_dir = tempfile::tempdir().unwrap();
    let hba = hba_dir.path().join("hba.conf");
    std::fs::write(&hba, "# hosts\nhost all all samehost trust\n").unwrap();
    let bad_hba = format!("auth_type = hba\nauth_hba_file = {}", hba.display());
    let cases: &[(&str, &str, &str)] = &[
        (
            "",
            "listen_prt = 5",
            "pgbouncer.ini:8: unknown parameter: pgbouncer/listen_prt",
        ),
        (
            "db = host=127.0.0.1 flavour=x",
            "",
            "pgbouncer.ini:2: unrecognized connection parameter: flavour",
        ),
        ("", "this is not a setting", "pgbouncer.ini:8: syntax error"),
        (
            "",
            "auth_type = hba",
            "pgbouncer.ini:8: auth_type hba needs auth_hba_file",
        ),
        ("", &bad_hba, "hba.conf:2: invalid IP address \"samehost\""),
    ];
    for (dbs, extra, want) in cases {
        let files = pgbouncer::write(dbs, extra, &[("u", "SCRAM-SHA-256$4096:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")]);
        refused_at_start(&files, want);
    }
    // A missing auth file.
    let files = pgbouncer::write("", "", &[]);
    std::fs::remove_file(&files.userlist).unwrap();
    refused_at_start(&files, "pgbouncer.ini:7: could not load auth_file");
}

/// pgherald started on `files` exits 2 with one error line containing `want`, and nothing
/// listens on the ini's port.
fn refused_at_start(files: &Files, want: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgherald"))
        .arg(&files.ini)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(want), "want {want} in:\n{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("pgherald:")).count(),
        1,
        "{err}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", files.port)).is_err());
}

/// A role for auth_query (its password stored as md5) and a SECURITY DEFINER lookup
/// function in db2, as PgBouncer's documentation suggests for a non-superuser auth_user.
async fn lookup_setup(pg: &TestPostgres) -> String {
    static ONCE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let su = pg.connect(SUPERUSER, None, postgres::DEFAULT_DB).await;
        su.batch_execute(
            "SET password_encryption = 'md5'; CREATE ROLE mig_auth LOGIN PASSWORD 'auth-pw'; RESET password_encryption",
        )
        .await
        .unwrap();
        for db in [postgres::DB1, postgres::DB2] {
            let c = pg.connect(SUPERUSER, None, db).await;
            c.batch_execute(
                "CREATE FUNCTION public.mig_lookup(name text, OUT rolname text, OUT rolpassword text) \
                 RETURNS record LANGUAGE sql SECURITY DEFINER AS \
                 'SELECT rolname::text, rolpassword FROM pg_catalog.pg_authid WHERE rolname = name AND rolcanlogin'; \
                 REVOKE ALL ON FUNCTION public.mig_lookup(text) FROM PUBLIC; \
                 GRANT EXECUTE ON FUNCTION public.mig_lookup(text) TO mig_auth",
            )
            .await
            .unwrap();
        }
        stored_secret(pg, "mig_auth").await
    })
    .await
    .clone()
}

async fn lookup_files(pg: &TestPostgres) -> Files {
    let auth_md5 = lookup_setup(pg).await;
    let files = pgbouncer::write(
        &format!(
            "db1 = host=127.0.0.1 port={port} auth_query='SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin'\n\
             db2 = host=127.0.0.1 port={port} auth_user=mig_auth auth_query='SELECT * FROM public.mig_lookup($1)'\n\
             broken = host=127.0.0.1 port={port} dbname=db2 auth_user=mig_auth auth_query='SELECT nope FROM nowhere WHERE $1 = $1'",
            port = pg.port
        ),
        "auth_type = md5\nauth_user = postgres\npool_mode = transaction\nreserve_pool_size = 1\nquery_wait_timeout = 30",
        &[("mig_auth", &auth_md5)],
    );
    secrets_in_clear(&files, &[SCRAM_PASSWORD, MD5_PASSWORD, "auth-pw"]);
    files
}

/// auth_user + auth_query per database: users missing from userlist.txt are looked up in
/// Postgres (PgBouncer 1.25's default query for db1 as the superuser; a SECURITY DEFINER
/// function as an md5 role for db2), then pass-through logs the pool in as them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_per_database() {
    let pg = postgres::shared();
    let files = lookup_files(pg).await;
    let (h, _) = herald_from(&files).await;
    for db in ["db1", "db2"] {
        for (user, pw) in [(SCRAM_USER, SCRAM_PASSWORD), (MD5_USER, MD5_PASSWORD)] {
            assert_eq!(
                whoami(h.port(), user, pw, db).await,
                Ok((user.to_string(), db.to_string()))
            );
        }
        assert_eq!(
            whoami(h.port(), SCRAM_USER, "nope", db).await,
            Err(format!(
                "28P01 password authentication failed for user \"{SCRAM_USER}\""
            ))
        );
        assert_eq!(
            whoami(h.port(), "nobody", "x", db).await,
            Err("28P01 password authentication failed for user \"nobody\"".to_string())
        );
    }
    assert_eq!(
        whoami(h.port(), SCRAM_USER, SCRAM_PASSWORD, "broken").await,
        Err("08P01 auth_query failed".to_string())
    );
    // PgBouncer 1.18 has no per-database auth_query: side by side on a file with a global
    // one (the lookup function), auth_user per database.
    let auth_md5 = lookup_setup(pg).await;
    let files = pgbouncer::write(
        &format!(
            "db1 = host=127.0.0.1 port={port}\ndb2 = host=127.0.0.1 port={port} auth_user=mig_auth",
            port = pg.port
        ),
        "auth_type = md5\nauth_user = postgres\nauth_query = SELECT * FROM public.mig_lookup($1)",
        &[("mig_auth", &auth_md5)],
    );
    let bouncer = Bouncer::start(&files);
    let (h, _) = herald_from(&files).await;
    for db in ["db1", "db2"] {
        for (user, pw) in [
            (SCRAM_USER, SCRAM_PASSWORD),
            (MD5_USER, MD5_PASSWORD),
            (SCRAM_USER, "nope"),
        ] {
            let theirs = whoami(bouncer.port, user, pw, db).await.map_err(|e| {
                e.replace(
                    "08P01 SASL authentication failed",
                    &format!("28P01 password authentication failed for user \"{user}\""),
                )
            });
            assert_eq!(
                whoami(h.port(), user, pw, db).await,
                theirs,
                "{db} {user} {pw}: {}",
                bouncer.log()
            );
        }
    }
}
