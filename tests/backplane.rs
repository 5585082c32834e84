//! Several pgherald instances sharing LISTEN/NOTIFY through a real Redis (issue 15):
//! one order for every listener on every instance (NOTIFY-SPEC section E), nothing delivered
//! unless committed (items 11, 12, 13), the sender's own copy before its ReadyForQuery
//! (items 17, 26), a Redis outage losing nothing, and a gap past retention or a Redis that
//! lost its data ending the affected listeners with a FATAL, logged and counted.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgherald::config::{Config, PoolMode};
use support::herald::{self, Herald};
use support::listen::{self, Listener};
use support::postgres::{shared, DEFAULT_DB, SUPERUSER};
use support::raw::Raw;
use support::redis::TestRedis;

fn config(backplane: &str) -> Config {
    Config {
        backplane: Some(backplane.to_string()),
        backplane_timeout: 2.0,
        ..herald::config(shared(), PoolMode::Transaction, 4)
    }
}

async fn instances(n: usize, backplane: &str) -> Vec<Herald> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Herald::start(config(backplane)).await);
    }
    v
}

async fn listener(h: &Herald, channel: &str) -> Listener {
    let l = listen::connect(&h.conn_str(SUPERUSER, None, DEFAULT_DB)).await;
    l.client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("listen");
    l
}

/// Payloads until `want` have arrived (or 60 s passed), then whatever else comes within a
/// short quiet period (nothing should).
async fn collect(l: &mut Listener, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), l.rx.recv()).await {
            Ok(Some(n)) => got.push(n.payload().to_string()),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(500), l.rx.recv()).await {
        got.push(n.payload().to_string());
    }
    got
}

/// One writer's transaction `i`: what it sends and what a listener must get from it.
fn transaction(w: usize, i: usize) -> (String, Vec<String>) {
    let p = |s: &str| format!("w{w}.{i}.{s}");
    match i % 6 {
        0 => (
            format!("BEGIN; NOTIFY bp, '{}'; ROLLBACK", p("rolledback")),
            vec![],
        ),
        1 => (
            format!(
                "BEGIN; NOTIFY bp, '{}'; SAVEPOINT s; NOTIFY bp, '{}'; ROLLBACK TO s; \
                 NOTIFY bp, '{}'; COMMIT",
                p("a"),
                p("gone"),
                p("b")
            ),
            vec![p("a"), p("b")],
        ),
        2 => (format!("NOTIFY bp, '{}'", p("solo")), vec![p("solo")]),
        3 => (
            format!(
                "BEGIN; SELECT count(*) FROM pg_class; NOTIFY bp, '{}'; COMMIT",
                p("mixed")
            ),
            vec![p("mixed")],
        ),
        4 => (
            format!(
                "BEGIN; NOTIFY bp, '{0}'; NOTIFY bp, '{1}'; NOTIFY bp, '{0}'; COMMIT",
                p("d1"),
                p("d2")
            ),
            vec![p("d1"), p("d2")],
        ),
        _ => (
            format!("SELECT pg_notify('bp', '{}')", p("fn")),
            vec![p("fn")],
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_listener_on_every_instance_sees_one_sequence() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let hs = instances(3, &redis.url(None)).await;
    let mut listeners = Vec::new();
    for h in &hs {
        for _ in 0..2 {
            listeners.push(listener(h, "bp").await);
        }
    }
    const WRITERS_PER_INSTANCE: usize = 3;
    const TXNS: usize = 36;
    let mut writers = Vec::new();
    let mut expected = Vec::new();
    for (k, h) in hs.iter().enumerate() {
        for j in 0..WRITERS_PER_INSTANCE {
            let w = k * WRITERS_PER_INSTANCE + j;
            let c = h.connect(SUPERUSER, None, DEFAULT_DB).await;
            for i in 0..TXNS {
                expected.push((w, transaction(w, i).1));
            }
            writers.push(tokio::spawn(async move {
                for i in 0..TXNS {
                    c.batch_execute(&transaction(w, i).0)
                        .await
                        .expect("transaction");
                }
            }));
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let want: usize = expected.iter().map(|(_, v)| v.len()).sum();
    let mut seqs = Vec::new();
    for l in &mut listeners {
        seqs.push(collect(l, want).await);
    }
    let all: BTreeSet<String> = expected.iter().flat_map(|(_, v)| v.clone()).collect();
    assert_eq!(all.len(), want);
    assert_eq!(seqs[0].len(), want, "complete, each exactly once");
    assert_eq!(
        seqs[0].iter().cloned().collect::<BTreeSet<_>>(),
        all,
        "exactly the committed notifications, nothing rolled back"
    );
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(s, &seqs[0], "listener {i} saw another order");
    }
    // Each writer's notifications in its commit order, each transaction's in issue order.
    let mut by_writer: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for p in &seqs[0] {
        let w: usize = p[1..p.find('.').unwrap()].parse().unwrap();
        by_writer.entry(w).or_default().push(p.clone());
    }
    for (w, got) in by_writer {
        let exp: Vec<String> = expected
            .iter()
            .filter(|(x, _)| *x == w)
            .flat_map(|(_, v)| v.clone())
            .collect();
        assert_eq!(got, exp, "writer {w}");
    }
    for h in &hs {
        let st = h.app.backplane.as_ref().unwrap().stats();
        assert_eq!(st.gaps, 0);
        assert_eq!(st.failed, 0);
    }
}

/// Items 17, 26 and 28 across instances: the sender's own copy comes before its
/// ReadyForQuery with its own pid; a listener elsewhere gets the same notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_gets_its_own_copy_before_ready_and_others_get_it_too() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let hs = instances(2, &redis.url(None)).await;
    let mut far = listener(&hs[1], "own").await;
    let (mut me, login) = Raw::login(hs[0].port(), SUPERUSER, DEFAULT_DB).await;
    let key = login
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData");
    let my_pid = i32::from_be_bytes(key.body[..4].try_into().unwrap());
    me.query("LISTEN own").await;
    me.until_ready().await;
    me.query("BEGIN; NOTIFY own, 'x'; NOTIFY own, 'y'; COMMIT")
        .await;
    let msgs = me.until_ready().await;
    let tags: String = msgs.iter().map(|m| m.tag as char).collect();
    assert!(
        tags.ends_with("CAAZ"),
        "own copies after the last C, before Z: {tags}"
    );
    let a = &msgs[msgs.len() - 3];
    assert_eq!(i32::from_be_bytes(a.body[..4].try_into().unwrap()), my_pid);
    for p in ["x", "y"] {
        let n = far.next().await;
        assert_eq!((n.payload(), n.process_id()), (p, my_pid));
    }
}

/// A Redis outage (stopped with its data, started again): COMMITs during the outage fail
/// with a clear error and reach no one (except a write Redis executed as it stopped, whose
/// reply was lost: outcome unknown); everything confirmed reaches every listener on every
/// instance, once, in one order; no listener is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_mid_stream_loses_nothing() {
    let Some(mut redis) = TestRedis::start() else {
        return;
    };
    let hs = instances(2, &redis.url(None)).await;
    let mut listeners = vec![listener(&hs[0], "bp").await, listener(&hs[1], "bp").await];
    let confirmed = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, h) in hs.iter().enumerate() {
        let conn = h.conn_str(SUPERUSER, None, DEFAULT_DB);
        let (confirmed, failed, stop) = (confirmed.clone(), failed.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut client = None;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 40 {
                if client.is_none() {
                    client = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                        .await
                        .ok()
                        .map(|(c, conn)| {
                            tokio::spawn(conn);
                            c
                        });
                }
                let Some(c) = &client else { continue };
                let p = format!("w{w}.{i}");
                match c
                    .batch_execute(&format!("BEGIN; NOTIFY bp, '{p}'; COMMIT"))
                    .await
                {
                    Ok(()) => {
                        confirmed.lock().unwrap().insert(p);
                    }
                    Err(e) => {
                        let db = e
                            .as_db_error()
                            .map(|d| (d.code().code().to_string(), d.message().to_string()));
                        failed.lock().unwrap().push((p, db));
                        client = None;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.stop_saving();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let confirmed = confirmed.lock().unwrap().clone();
    let failed = failed.lock().unwrap().clone();
    assert!(!failed.is_empty(), "the outage made some COMMITs fail");
    for (p, db) in &failed {
        let (code, msg) = db.clone().unwrap_or_else(|| panic!("{p}: no clear error"));
        assert_eq!(code, "08006", "{p}: {msg}");
        assert!(msg.contains("backplane"), "{p}: {msg}");
    }
    let mut seqs = Vec::new();
    for l in &mut listeners {
        seqs.push(collect(l, confirmed.len()).await);
    }
    let delivered: BTreeSet<String> = seqs[0].iter().cloned().collect();
    let failed_names: BTreeSet<String> = failed.iter().map(|(p, _)| p.clone()).collect();
    let missing: Vec<_> = confirmed.difference(&delivered).collect();
    let extra: Vec<_> = delivered.difference(&confirmed).collect();
    assert!(
        missing.is_empty(),
        "confirmed but not delivered: {missing:?}"
    );
    // A COMMIT whose write Redis executed just before it stopped, but whose reply was lost
    // with the connection, got the FATAL (outcome unknown, as a Postgres COMMIT whose
    // connection breaks): it may be delivered, then everywhere (the sequences below are
    // identical). At most the one write in flight per writer.
    assert!(
        extra.iter().all(|p| failed_names.contains(*p)) && extra.len() <= 2,
        "delivered but never attempted or more than in flight: {extra:?}"
    );
    if !extra.is_empty() {
        eprintln!("in flight at the outage, failed with FATAL 08006, delivered: {extra:?}");
    }
    assert_eq!(seqs[0].len(), delivered.len(), "each exactly once");
    assert_eq!(seqs[1], seqs[0], "one order on both instances");
    for h in &hs {
        let st = h.app.backplane.as_ref().unwrap().stats();
        assert_eq!((st.gaps, st.lost_listeners), (0, 0));
        assert!(st.reconnects >= 1);
    }
}

/// The FATAL a listener gets when the backplane lost what it was owed.
async fn expect_lost(l: &mut Raw) {
    loop {
        let m = l
            .recv_within(Duration::from_secs(30))
            .await
            .expect("a FATAL before the connection closes");
        if m.tag == b'E' {
            assert_eq!(m.field(b'S').as_deref(), Some("FATAL"));
            assert_eq!(m.field(b'C').as_deref(), Some("08006"));
            let msg = m.field(b'M').unwrap_or_default();
            assert!(msg.contains("notifications may have been lost"), "{msg}");
            assert!(l.recv_within(Duration::from_secs(5)).await.is_none());
            return;
        }
    }
}

async fn raw_listener(h: &Herald, channel: &str) -> Raw {
    let (mut l, _) = Raw::login(h.port(), SUPERUSER, DEFAULT_DB).await;
    l.query(&format!("LISTEN {channel}")).await;
    l.until_ready().await;
    l
}

/// An instance cut off from Redis while the stream moves past `backplane_retention`: when
/// it is back, its listeners end with a FATAL saying notifications may have been lost
/// (logged and counted); listeners elsewhere got everything and stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_past_retention_ends_listeners_with_fatal() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    redis.cli(&["ACL", "SETUSER", "b", "on", ">pw", "~*", "&*", "+@all"]);
    let small = |url: String| Config {
        backplane_retention: 100,
        ..config(&url)
    };
    let a = Herald::start(small(redis.url(None))).await;
    let b = Herald::start(small(redis.url(Some(("b", "pw"))))).await;
    let mut on_a = listener(&a, "bp").await;
    let mut on_b = raw_listener(&b, "bp").await;
    let sender = a.connect(SUPERUSER, None, DEFAULT_DB).await;
    sender.batch_execute("NOTIFY bp, 'before'").await.unwrap();
    let m = on_b.recv().await.unwrap();
    assert_eq!(m.tag, b'A');
    // Cut b off: its connections are killed and it cannot log in again.
    redis.cli(&["ACL", "SETUSER", "b", "off"]);
    redis.cli(&["CLIENT", "KILL", "USER", "b"]);
    for i in 0..300 {
        sender
            .batch_execute(&format!("NOTIFY bp, '{i}'"))
            .await
            .unwrap();
    }
    let key = redis.cli(&["KEYS", "pgherald:*:log"]);
    let len: usize = redis.cli(&["XLEN", &key]).parse().unwrap_or(0);
    assert!(
        len < 300,
        "the stream was trimmed to about backplane_retention: {len}"
    );
    redis.cli(&["ACL", "SETUSER", "b", "on"]);
    expect_lost(&mut on_b).await;
    let st = b.app.backplane.as_ref().unwrap().stats();
    assert_eq!((st.gaps, st.lost_listeners), (1, 1), "xlen {len}");
    // The same counts in /metrics, read with a Prometheus parser.
    let text = pgherald::admin::metrics::render(&b.app);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("a Prometheus text parser accepts it");
    for name in [
        "pgherald_backplane_gaps_total",
        "pgherald_backplane_lost_listeners_total",
    ] {
        let v = scrape
            .samples
            .iter()
            .find(|x| x.metric == name)
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => -1.0,
            });
        assert_eq!(v, Some(1.0), "{name} in:\n{text}");
    }
    let got = collect(&mut on_a, 301).await;
    assert_eq!(got.len(), 301);
    // b delivers again to listeners that came after the gap.
    let mut later = listener(&b, "bp").await;
    sender.batch_execute("NOTIFY bp, 'after'").await.unwrap();
    assert_eq!(later.next().await.payload(), "after");
}

/// Redis killed and restarted without its data: the listeners of every instance end with
/// the FATAL (they may have missed entries), and new ones work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_ends_listeners_with_fatal() {
    let Some(mut redis) = TestRedis::start() else {
        return;
    };
    let hs = instances(2, &redis.url(None)).await;
    let mut l0 = raw_listener(&hs[0], "bp").await;
    let mut l1 = raw_listener(&hs[1], "bp").await;
    let sender = hs[0].connect(SUPERUSER, None, DEFAULT_DB).await;
    sender.batch_execute("NOTIFY bp, 'one'").await.unwrap();
    assert_eq!(l1.recv().await.unwrap().tag, b'A');
    assert_eq!(l0.recv().await.unwrap().tag, b'A');
    redis.kill();
    redis.restart();
    expect_lost(&mut l0).await;
    expect_lost(&mut l1).await;
    let mut fresh = listener(&hs[1], "bp").await;
    let sender = hs[0].connect(SUPERUSER, None, DEFAULT_DB).await;
    sender.batch_execute("NOTIFY bp, 'two'").await.unwrap();
    assert_eq!(fresh.next().await.payload(), "two");
}

/// Without a backplane nothing of it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backplane_by_default() {
    let h = Herald::start(herald::config(shared(), PoolMode::Transaction, 2)).await;
    assert!(h.app.backplane.is_none());
    let mut bad = config("http://nowhere");
    assert!(pgherald::Server::bind(bad.clone()).await.is_err());
    bad.backplane = Some("redis://127.0.0.1:1".into());
    bad.forward_notify = true;
    let e = pgherald::Server::bind(bad).await.err().expect("refused");
    assert!(e.to_string().contains("forward_notify"), "{e}");
}

/// Notifications raised inside Postgres (a trigger; a client connected to Postgres
/// directly) are not published on the backplane: Postgres hands them to every instance's
/// relay, which delivers them to its own listeners, so each listener gets each exactly
/// once, wherever it was raised; the raising session gets its own copy before its
/// ReadyForQuery (item 26).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_in_postgres_reaches_each_listener_once() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let pg = shared();
    let table = format!("bp_trig_{}", std::process::id());
    let direct = pg.connect(SUPERUSER, None, DEFAULT_DB).await;
    direct
        .batch_execute(&format!(
            "CREATE TABLE {table} (v text);
             CREATE FUNCTION {table}_f() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_notify('bpt', NEW.v); RETURN NEW; END $$;
             CREATE TRIGGER {table}_t AFTER INSERT ON {table}
               FOR EACH ROW EXECUTE FUNCTION {table}_f();"
        ))
        .await
        .unwrap();
    let hs = instances(2, &redis.url(None)).await;
    let mut ls = vec![listener(&hs[0], "bpt").await, listener(&hs[1], "bpt").await];
    let mut raiser = raw_listener(&hs[0], "bpt").await;
    // A first notification from Postgres marks the session as fed by the relay; from then
    // on its commits wait for the relay's round trip (as without a backplane).
    direct.batch_execute("NOTIFY bpt, 'warm-up'").await.unwrap();
    assert_eq!(raiser.recv().await.unwrap().tag, b'A');
    for l in &mut ls {
        assert_eq!(l.next().await.payload(), "warm-up");
    }
    raiser
        .query(&format!("INSERT INTO {table} VALUES ('trigger')"))
        .await;
    let tags: String = raiser
        .until_ready()
        .await
        .iter()
        .map(|m| m.tag as char)
        .collect();
    assert!(tags.ends_with("CAZ"), "own raised copy before Z: {tags}");
    direct.batch_execute("NOTIFY bpt, 'direct'").await.unwrap();
    let via_b = hs[1].connect(SUPERUSER, None, DEFAULT_DB).await;
    via_b.batch_execute("NOTIFY bpt, 'served'").await.unwrap();
    // Raised by the server and sent through pgherald in one transaction.
    let via_a = hs[0].connect(SUPERUSER, None, DEFAULT_DB).await;
    via_a
        .batch_execute(&format!(
            "BEGIN; INSERT INTO {table} VALUES ('raised'); NOTIFY bpt, 'sent'; COMMIT"
        ))
        .await
        .unwrap();
    for l in &mut ls {
        let mut got = collect(l, 5).await;
        got.sort();
        assert_eq!(got, ["direct", "raised", "sent", "served", "trigger"]);
    }
    direct
        .batch_execute(&format!("DROP TABLE {table}; DROP FUNCTION {table}_f()"))
        .await
        .unwrap();
}

/// Many sessions of one instance committing at once (their batches share pipelines): every
/// confirmed COMMIT is recorded once and reaches the listener on the other instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_of_one_instance_are_all_recorded() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let hs = instances(2, &redis.url(None)).await;
    let mut far = listener(&hs[1], "many").await;
    const CLIENTS: usize = 48;
    const EACH: usize = 40;
    let mut tasks = Vec::new();
    for w in 0..CLIENTS {
        let c = hs[0].connect(SUPERUSER, None, DEFAULT_DB).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                c.batch_execute(&format!("NOTIFY many, '{w}.{i}'"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = collect(&mut far, CLIENTS * EACH).await;
    assert_eq!(got.len(), CLIENTS * EACH);
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), CLIENTS * EACH);
    let key = redis.cli(&["KEYS", "pgherald:*:meta"]);
    assert_eq!(
        redis.cli(&["HGET", &key, "s"]),
        (CLIENTS * EACH).to_string()
    );
}

/// Item 28 across instances: each instance takes its own block of BackendKeyData pids, so
/// a client comparing a notification's pid with its own never mistakes another instance's
/// client for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_are_distinct_across_instances() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let hs = instances(3, &redis.url(None)).await;
    let mut blocks = BTreeSet::new();
    for h in &hs {
        let mut pids = Vec::new();
        for _ in 0..3 {
            let (_c, login) = Raw::login(h.port(), SUPERUSER, DEFAULT_DB).await;
            let key = login
                .iter()
                .find(|m| m.tag == b'K')
                .expect("BackendKeyData");
            pids.push(i32::from_be_bytes(key.body[..4].try_into().unwrap()));
        }
        let block = pids[0] / pgherald::pubsub::backplane::PID_BLOCK;
        assert!(block >= 1, "{pids:?}");
        assert!(pids
            .iter()
            .all(|p| p / pgherald::pubsub::backplane::PID_BLOCK == block));
        blocks.insert(block);
    }
    assert_eq!(blocks.len(), 3, "one block per instance");
}
