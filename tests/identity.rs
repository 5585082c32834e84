//! Relay identity and hub identity (issue 11): the relay logs in as a configured role, never
//! as whichever client came first, so revoking one client user's rights never silences it;
//! and two `[databases]` names that point at the same upstream database share notifications.

mod support;

use std::time::{Duration, Instant};

use pgherald::config::{DatabaseConfig, PoolMode};
use support::herald::{self, Herald};
use support::listen::{self, Listener};
use support::postgres::{self, DB1, DEFAULT_DB, SUPERUSER, TRUST_USER};

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_keeps_delivering_after_a_client_user_loses_connect() {
    let db = "identity_revoke";
    let pg = postgres::shared()
        .connect(SUPERUSER, None, DEFAULT_DB)
        .await;
    pg.simple_query(&format!("drop database if exists {db} with (force)"))
        .await
        .unwrap();
    pg.simple_query(&format!("create database {db}"))
        .await
        .unwrap();
    // Servers log in as each client's own role; the relay as relay_user.
    let mut config = herald::config_as_client_user(postgres::shared(), PoolMode::Transaction, 2);
    config.relay_user = Some(SUPERUSER.into());
    let h = Herald::start(config).await;
    // The revoked user is the first to reach the database.
    let mut first = listen::connect(&h.conn_str(TRUST_USER, None, db)).await;
    first.client.batch_execute("LISTEN ident_c").await.unwrap();
    let mut other = listen::connect(&h.conn_str(SUPERUSER, None, db)).await;
    other.client.batch_execute("LISTEN ident_c").await.unwrap();
    pg.simple_query(&format!(
        "revoke connect on database {db} from public, {TRUST_USER}"
    ))
    .await
    .unwrap();
    // The relay logs in again (as after any network trouble).
    let app = h.app.clone();
    let pid = app.relays.backend_pid(db).expect("relay connected");
    pg.simple_query(&format!("select pg_terminate_backend({pid})"))
        .await
        .unwrap();
    wait_until("the relay reconnected", || {
        app.relays.backend_pid(db).is_some_and(|p| p != pid)
            && app
                .relays
                .listening(db)
                .iter()
                .any(|c| &c[..] == b"ident_c")
    })
    .await;
    let d = listen::connect(&postgres::shared().conn_str(SUPERUSER, None, db)).await;
    d.client
        .batch_execute(
            "CREATE TABLE ident_t(id int);
             CREATE FUNCTION ident_f() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_notify('ident_c', NEW.id::text); RETURN NEW; END $$;
             CREATE TRIGGER ident_tr AFTER INSERT ON ident_t FOR EACH ROW EXECUTE FUNCTION ident_f();
             INSERT INTO ident_t VALUES (7)",
        )
        .await
        .unwrap();
    assert_eq!(other.next().await.payload(), "7");
    assert_eq!(first.next().await.payload(), "7");
    assert_eq!(app.relays.connect_failures(), 0);
    drop(d);
    pg.simple_query(&format!("drop database {db} with (force)"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_log_in_is_counted() {
    let mut config = herald::config(postgres::shared(), PoolMode::Transaction, 2);
    config.relay_user = Some("ident_no_such_role".into());
    let h = Herald::start(config).await;
    let l = listen::connect(&h.conn_str(SUPERUSER, None, DB1)).await;
    l.client.batch_execute("LISTEN ident_nobody").await.unwrap();
    let app = h.app.clone();
    wait_until("a failed relay login was counted", || {
        app.relays.connect_failures() >= 1
    })
    .await;
    // Clients are unaffected.
    l.client.batch_execute("NOTIFY ident_nobody").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_names_for_one_upstream_database_share_notifications() {
    let pg = postgres::shared();
    let mut config = herald::config(pg, PoolMode::Transaction, 2);
    for alias in ["ident_a", "ident_b"] {
        config.databases.insert(
            alias.into(),
            DatabaseConfig {
                host: Some(pg.host.clone()),
                port: Some(pg.port),
                dbname: Some(DB1.into()),
                user: Some(SUPERUSER.into()),
                ..DatabaseConfig::default()
            },
        );
    }
    let h = Herald::start(config).await;
    let mut a: Listener = listen::connect(&h.conn_str(SUPERUSER, None, "ident_a")).await;
    a.client.batch_execute("LISTEN ident_shared").await.unwrap();
    let b = listen::connect(&h.conn_str(SUPERUSER, None, "ident_b")).await;
    b.client
        .batch_execute("NOTIFY ident_shared, 'via b'")
        .await
        .unwrap();
    assert_eq!(a.next().await.payload(), "via b");
    // The database's own name is the same database too.
    let c = listen::connect(&h.conn_str(SUPERUSER, None, DB1)).await;
    c.client
        .batch_execute("SELECT pg_notify('ident_shared', 'via db1')")
        .await
        .unwrap();
    assert_eq!(a.next().await.payload(), "via db1");
}
