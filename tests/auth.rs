//! Client authentication (trust, md5, scram-sha-256 from a userlist file) and server login
//! (trust, cleartext, md5, scram-sha-256), through real sockets.

mod support;

use std::io::Write;

use pgherald::auth::ScramVerifier;
use pgherald::config::{AuthConfig, PoolMode};
use support::herald::{self, Herald};
use support::postgres::{
    self, CLEAR_PASSWORD, CLEAR_USER, DEFAULT_DB, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD,
    SCRAM_USER, TRUST_USER,
};

fn md5_secret(user: &str, password: &str) -> String {
    let digest = pgherald::auth::md5_password_hash(password.as_bytes(), user.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("md5{hex}")
}

fn userlist(lines: &[(&str, String)]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "; users for the auth tests").unwrap();
    for (u, s) in lines {
        writeln!(f, "\"{u}\" \"{s}\"").unwrap();
    }
    f
}

async fn with_auth(kind: &str, file: &tempfile::NamedTempFile, as_client_user: bool) -> Herald {
    let pg = postgres::shared();
    let mut cfg = if as_client_user {
        herald::config_as_client_user(pg, PoolMode::Transaction, 2)
    } else {
        herald::config(pg, PoolMode::Transaction, 2)
    };
    cfg.auth = Some(AuthConfig {
        kind: kind.into(),
        file: Some(file.path().to_path_buf()),
    });
    Herald::start(cfg).await
}

async fn works(h: &Herald, user: &str, password: Option<&str>) {
    let c = h.connect(user, password, DEFAULT_DB).await;
    let r = c.simple_query("select 1").await.unwrap();
    assert!(r
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))));
}

async fn refused(h: &Herald, user: &str, password: Option<&str>) {
    let e = h
        .try_connect(user, password, DEFAULT_DB)
        .await
        .expect_err("login must fail");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got {e:?}"));
    assert_eq!(db.code().code(), "28P01");
    assert_eq!(
        db.message(),
        format!("password authentication failed for user \"{user}\"")
    );
}

fn users() -> tempfile::NamedTempFile {
    let scram = ScramVerifier::from_password("carol-pw", b"0123456789abcdef", 4096).to_string();
    userlist(&[
        ("alice", "alice-pw".into()),
        ("bob", md5_secret("bob", "bob-pw")),
        ("carol", scram),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_clients() {
    let f = users();
    let h = with_auth("md5", &f, false).await;
    works(&h, "alice", Some("alice-pw")).await;
    works(&h, "bob", Some("bob-pw")).await;
    // A SCRAM verifier cannot answer md5: Postgres then uses SCRAM, and so does pgherald.
    works(&h, "carol", Some("carol-pw")).await;
    refused(&h, "alice", Some("wrong")).await;
    refused(&h, "bob", Some("alice-pw")).await;
    refused(&h, "nobody", Some("x")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_clients() {
    let f = users();
    let h = with_auth("scram-sha-256", &f, false).await;
    works(&h, "alice", Some("alice-pw")).await;
    works(&h, "carol", Some("carol-pw")).await;
    // An md5 secret cannot do SCRAM: refused, as PgBouncer and Postgres refuse it.
    refused(&h, "bob", Some("bob-pw")).await;
    refused(&h, "alice", Some("wrong")).await;
    refused(&h, "carol", Some("alice-pw")).await;
    refused(&h, "nobody", Some("x")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_trust() {
    let f = users();
    let h = with_auth("trust", &f, false).await;
    works(&h, "anyone", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_methods() {
    // Log in to Postgres as the client's own user, with the password from the userlist:
    // u_trust (trust), u_clear (cleartext), u_md5 (md5), u_scram (scram-sha-256).
    let f = userlist(&[
        (TRUST_USER, "t".into()),
        (CLEAR_USER, CLEAR_PASSWORD.into()),
        (MD5_USER, MD5_PASSWORD.into()),
        (SCRAM_USER, SCRAM_PASSWORD.into()),
        ("u_nosuch", "whatever".into()),
    ]);
    let h = with_auth("scram-sha-256", &f, true).await;
    for (user, pw) in [
        (TRUST_USER, "t"),
        (CLEAR_USER, CLEAR_PASSWORD),
        (MD5_USER, MD5_PASSWORD),
        (SCRAM_USER, SCRAM_PASSWORD),
    ] {
        let c = h.connect(user, Some(pw), DEFAULT_DB).await;
        let r = c
            .query_typed("select current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(r[0].get::<_, &str>(0), user);
    }
    // The server refuses a role that does not exist: the client gets Postgres's error.
    let e = h
        .try_connect("u_nosuch", Some("whatever"), DEFAULT_DB)
        .await
        .err()
        .unwrap();
    assert_eq!(e.as_db_error().unwrap().code().code(), "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_password_reaches_the_client() {
    let f = userlist(&[(MD5_USER, "not-the-password".into())]);
    let h = with_auth("md5", &f, true).await;
    let e = h
        .try_connect(MD5_USER, Some("not-the-password"), DEFAULT_DB)
        .await
        .err()
        .unwrap();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "28P01");
    assert!(db.message().contains(MD5_USER), "{db:?}");
}
