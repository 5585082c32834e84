//! Access never outlives Postgres's decision (issue 11): a client login that Postgres would
//! now refuse is refused through pgherald too, with Postgres's own error, even when the pool
//! has a greeting cached and the client would never reach a server (LISTEN/NOTIFY only).

mod support;

use pgherald::config::PoolMode;
use support::herald::{self, Herald};
use support::postgres::{self, DEFAULT_DB, SUPERUSER, TRUST_USER};

/// A database only `TRUST_USER` (and superusers) may connect to, created afresh.
async fn private_db(name: &str) {
    let pg = postgres::shared()
        .connect(SUPERUSER, None, DEFAULT_DB)
        .await;
    pg.simple_query(&format!("drop database if exists {name} with (force)"))
        .await
        .unwrap();
    pg.simple_query(&format!("create database {name}"))
        .await
        .unwrap();
    pg.simple_query(&format!(
        "revoke connect on database {name} from public; grant connect on database {name} to {TRUST_USER}"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_connect_refuses_the_next_login_with_postgres_error() {
    let db = "access_revoke";
    private_db(db).await;
    let mut config = herald::config_as_client_user(postgres::shared(), PoolMode::Transaction, 2);
    // Every login re-checks: the bounded time is zero here, 30 s by default.
    config.login_recheck_interval = 0.0;
    let h = Herald::start(config).await;
    // A listener that only LISTENs and NOTIFYs never needs a server after its login.
    let a = h.connect(TRUST_USER, None, db).await;
    a.simple_query("listen c; notify c, 'x'").await.unwrap();
    let pg = postgres::shared()
        .connect(SUPERUSER, None, DEFAULT_DB)
        .await;
    pg.simple_query(&format!(
        "revoke connect on database {db} from {TRUST_USER}"
    ))
    .await
    .unwrap();
    let e = h
        .try_connect(TRUST_USER, None, db)
        .await
        .expect_err("login refused after REVOKE CONNECT");
    let e = e.as_db_error().expect("Postgres's error");
    assert_eq!(e.code().code(), "42501");
    assert_eq!(
        e.message(),
        format!("permission denied for database \"{db}\"")
    );
    assert_eq!(e.detail(), Some("User does not have CONNECT privilege."));
    // NOLOGIN is Postgres's 28000.
    pg.simple_query(&format!("grant connect on database {db} to {TRUST_USER}"))
        .await
        .unwrap();
    h.connect(TRUST_USER, None, db).await;
    pg.simple_query(&format!("alter role {TRUST_USER} nologin"))
        .await
        .unwrap();
    let refused = h.try_connect(TRUST_USER, None, db).await;
    pg.simple_query(&format!("alter role {TRUST_USER} login"))
        .await
        .unwrap();
    let e = refused.expect_err("login refused after NOLOGIN");
    assert_eq!(
        e.as_db_error().expect("Postgres's error").code().code(),
        "28000"
    );
}
