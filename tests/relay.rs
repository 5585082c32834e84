//! The upstream relay: notifications raised inside Postgres (triggers, pg_notify inside a
//! larger statement, clients connected to Postgres directly) reach pgherald's listeners;
//! forward_notify sends pgherald's own notifications to Postgres without duplicates.

mod support;

use std::time::{Duration, Instant};

use pgherald::config::PoolMode;
use support::herald::{self, Herald};
use support::listen::{self, Listener};
use support::postgres::{self, DB2, SUPERUSER};

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn relay_listens(h: &Herald, channel: &str, yes: bool) {
    let app = h.app.clone();
    wait_until(&format!("relay listening on {channel} is {yes}"), || {
        app.relays
            .listening(DB2)
            .iter()
            .any(|c| &c[..] == channel.as_bytes())
            == yes
    })
    .await;
}

async fn through(h: &Herald) -> Listener {
    listen::connect(&h.conn_str(SUPERUSER, None, DB2)).await
}

async fn direct() -> Listener {
    listen::connect(&postgres::shared().conn_str(SUPERUSER, None, DB2)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_notifications_carry_the_inserting_clients_pid() {
    let h = Herald::start(herald::config(postgres::shared(), PoolMode::Transaction, 2)).await;
    let mut l = through(&h).await;
    l.client.batch_execute("LISTEN relay_trig").await.unwrap();
    relay_listens(&h, "relay_trig", true).await;
    let mut x = through(&h).await;
    x.client
        .batch_execute(
            "DROP TABLE IF EXISTS relay_t; CREATE TABLE relay_t(id int);
             CREATE OR REPLACE FUNCTION relay_f() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_notify('relay_trig', NEW.id::text); RETURN NEW; END $$;
             CREATE TRIGGER relay_tr AFTER INSERT ON relay_t FOR EACH ROW EXECUTE FUNCTION relay_f();",
        )
        .await
        .unwrap();
    let x_pid = x.own_pid("relay_x_self").await;
    x.client
        .batch_execute("INSERT INTO relay_t VALUES (41)")
        .await
        .unwrap();
    let n = l.next().await;
    assert_eq!((n.channel(), n.payload()), ("relay_trig", "41"));
    assert_eq!(
        n.process_id(),
        x_pid,
        "the pid of the pgherald client that committed"
    );
    // pg_notify buried in a larger statement: once per distinct payload (Postgres dedups).
    x.client
        .batch_execute("INSERT INTO relay_t VALUES (41), (42)")
        .await
        .unwrap();
    let got: Vec<String> = vec![
        l.next().await.payload().into(),
        l.next().await.payload().into(),
    ];
    assert_eq!(got, ["41", "42"]);
    x.client
        .simple_query("SELECT pg_notify('relay_trig', 'row ' || id::text) FROM relay_t")
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(l.next().await.payload().to_string());
    }
    got.sort();
    assert_eq!(got, ["row 41", "row 42"]);
    assert!(
        l.nothing_within(Duration::from_millis(300)).await,
        "no duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_clients_reach_pgherald_listeners() {
    let h = Herald::start(herald::config(postgres::shared(), PoolMode::Transaction, 2)).await;
    let mut l = through(&h).await;
    l.client.batch_execute("LISTEN relay_direct").await.unwrap();
    relay_listens(&h, "relay_direct", true).await;
    let d = direct().await;
    let rows = d
        .client
        .query("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    let direct_pid: i32 = rows[0].get(0);
    d.client
        .batch_execute("NOTIFY relay_direct, 'from outside'")
        .await
        .unwrap();
    let n = l.next().await;
    assert_eq!(n.payload(), "from outside");
    assert_eq!(
        n.process_id(),
        direct_pid,
        "a foreign backend keeps its own pid"
    );
    // No local listener left: the relay stops listening.
    l.client
        .batch_execute("UNLISTEN relay_direct")
        .await
        .unwrap();
    relay_listens(&h, "relay_direct", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_notify_reaches_direct_listeners_once() {
    let mut cfg = herald::config(postgres::shared(), PoolMode::Transaction, 2);
    cfg.forward_notify = true;
    let h = Herald::start(cfg).await;
    let mut d = direct().await;
    d.client.batch_execute("LISTEN relay_fwd").await.unwrap();
    let mut l = through(&h).await;
    l.client.batch_execute("LISTEN relay_fwd").await.unwrap();
    relay_listens(&h, "relay_fwd", true).await;
    let s = through(&h).await;
    s.client
        .batch_execute("NOTIFY relay_fwd, 'one'; NOTIFY relay_fwd, 'two'")
        .await
        .unwrap();
    s.client
        .batch_execute("BEGIN; NOTIFY relay_fwd, 'three'; COMMIT")
        .await
        .unwrap();
    for want in ["one", "two", "three"] {
        assert_eq!(d.next().await.payload(), want, "direct listener");
        assert_eq!(l.next().await.payload(), want, "pgherald listener");
    }
    assert!(d.nothing_within(Duration::from_millis(300)).await);
    assert!(
        l.nothing_within(Duration::from_millis(300)).await,
        "the relay skipped its own echoes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_reconnects_after_termination() {
    let h = Herald::start(herald::config(postgres::shared(), PoolMode::Transaction, 2)).await;
    let mut l = through(&h).await;
    l.client
        .batch_execute("LISTEN relay_reconnect")
        .await
        .unwrap();
    relay_listens(&h, "relay_reconnect", true).await;
    let app = h.app.clone();
    let pid = app.relays.backend_pid(DB2).expect("relay connected");
    let d = direct().await;
    d.client
        .batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    wait_until("the relay reconnected", || {
        app.relays.reconnects() >= 1 && app.relays.backend_pid(DB2).is_some_and(|p| p != pid)
    })
    .await;
    relay_listens(&h, "relay_reconnect", true).await;
    d.client
        .batch_execute("NOTIFY relay_reconnect, 'after'")
        .await
        .unwrap();
    assert_eq!(l.next().await.payload(), "after");
    // The listener itself stayed connected and works.
    l.client.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_returns_only_once_the_relay_listens_upstream() {
    let h = Herald::start(herald::config(postgres::shared(), PoolMode::Transaction, 2)).await;
    let mut l = through(&h).await;
    let d = direct().await;
    for i in 0..10 {
        // No waiting for the relay: what Postgres raises right after LISTEN returns arrives.
        let ch = format!("relay_race_{i}");
        l.client
            .batch_execute(&format!("LISTEN {ch}"))
            .await
            .unwrap();
        d.client
            .batch_execute(&format!("NOTIFY {ch}, 'right after'"))
            .await
            .unwrap();
        let n = l.next().await;
        assert_eq!((n.channel(), n.payload()), (ch.as_str(), "right after"));
    }
    // Also when the LISTEN commits with an explicit COMMIT on the server.
    l.client
        .batch_execute("BEGIN; LISTEN relay_race_tx; COMMIT")
        .await
        .unwrap();
    d.client
        .batch_execute("NOTIFY relay_race_tx, 'x'")
        .await
        .unwrap();
    assert_eq!(l.next().await.channel(), "relay_race_tx");
}
