//! `auth_type = hba` with `auth_hba_file`, side by side: the same pgbouncer.ini, userlist.txt
//! and pg_hba.conf-format file served by PgBouncer and by pgherald, the same logins (trust,
//! reject, md5 with the right and a wrong password, no matching line, a hostssl line a
//! plaintext client does not match) give the same outcome and the same refusals (where no
//! line matches, PgBouncer 1.23+'s text, which 1.18 words differently).

mod support;

use pgherald::config::ini;
use support::herald::Herald;
use support::pgbouncer::{self, Bouncer};
use support::postgres::{self, MD5_PASSWORD, MD5_USER, SUPERUSER, TRUST_USER};

async fn login(port: u16, user: &str, password: Option<&str>, db: &str) -> String {
    let mut cs = format!("host=127.0.0.1 port={port} user={user} dbname={db}");
    if let Some(p) = password {
        cs.push_str(&format!(" password={p}"));
    }
    match tokio_postgres::connect(&cs, tokio_postgres::NoTls).await {
        Ok((c, conn)) => {
            tokio::spawn(conn);
            let who: String = c
                .query_one("SELECT current_user::text", &[])
                .await
                .unwrap()
                .get(0);
            format!("ok {who}")
        }
        // Wrong passwords differ by design (pgherald sends Postgres's 28P01 text).
        Err(e) if password == Some("wrong") => format!("refused ({})", e.as_db_error().is_some()),
        Err(e) => match e.as_db_error() {
            Some(d) => format!("{} {} {}", d.severity(), d.code().code(), d.message()),
            None => e.to_string(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_file_chooses_each_logins_method_like_pgbouncer() {
    let pg = postgres::shared();
    let files = pgbouncer::write(
        &format!("* = host=127.0.0.1 port={}", pg.port),
        "auth_type = hba\npool_mode = transaction",
        &[
            (SUPERUSER, ""),
            (TRUST_USER, ""),
            (MD5_USER, MD5_PASSWORD),
            (postgres::CLEAR_USER, postgres::CLEAR_PASSWORD),
        ],
    );
    let hba = files.dir.path().join("hba.conf");
    std::fs::write(
        &hba,
        format!(
            "# TYPE DATABASE USER ADDRESS METHOD\n\
             host db1 {TRUST_USER} 127.0.0.1/32 trust\n\
             host db1 {SUPERUSER} 127.0.0.1 255.255.255.255 reject\n\
             host all {MD5_USER} 127.0.0.0/8 md5\n\
             hostssl all all all trust\n"
        ),
    )
    .unwrap();
    let ini_text = std::fs::read_to_string(&files.ini).unwrap();
    std::fs::write(
        &files.ini,
        ini_text.replace(
            "[pgbouncer]\n",
            &format!("[pgbouncer]\nauth_hba_file = {}\n", hba.display()),
        ),
    )
    .unwrap();
    let scenario = |port: u16| async move {
        vec![
            login(port, TRUST_USER, None, "db1").await,
            login(port, SUPERUSER, None, "db1").await,
            login(port, MD5_USER, Some(MD5_PASSWORD), "db2").await,
            login(port, MD5_USER, Some("wrong"), "db2").await,
            login(
                port,
                postgres::CLEAR_USER,
                Some(postgres::CLEAR_PASSWORD),
                "db1",
            )
            .await,
            login(port, TRUST_USER, None, "db2").await,
        ]
    };
    let bouncer = Bouncer::start(&files);
    let theirs = scenario(bouncer.port).await;
    let mut config = ini::load(&files.ini)
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    config.listen = "127.0.0.1:0".into();
    let h = Herald::start(config).await;
    let ours = scenario(h.port()).await;
    assert_eq!(ours[..4], theirs[..4], "pgbouncer log:\n{}", bouncer.log());
    assert_eq!(ours[0], format!("ok {TRUST_USER}"));
    assert_eq!(ours[1], "FATAL 08P01 login rejected");
    assert_eq!(ours[2], format!("ok {MD5_USER}"));
    assert_eq!(ours[3], "refused (true)");
    // No line matches: PgBouncer 1.18 says "login rejected", 1.23 and later (and pgherald)
    // "no authentication method is found"; both refuse.
    for i in [4, 5] {
        assert_eq!(theirs[i], "FATAL 08P01 login rejected");
        assert_eq!(ours[i], "FATAL 08P01 no authentication method is found");
    }
}
