//! NOTIFY-SPEC section E (where pgherald deliberately differs from PostgreSQL), checked with
//! direct assertions through pgherald: the `A` pid is the sender's virtual pid, a slow
//! listener is cut off with FATAL 54000 while senders and other listeners go on; and,
//! differentially, notifications raised inside the server reach pgherald's listeners
//! through the upstream relay. Not tested: LISTEN/NOTIFY through pgherald in front of a hot
//! standby (the test support has no standby server).

#[path = "support/diff.rs"]
mod diff;
mod support;

use std::time::Duration;

use diff::{check_all, Scenario};

use pgherald::config::PoolMode;
use support::herald::{self, Herald};
use support::postgres::{self, DB1, SUPERUSER};
use support::raw::{Msg, Raw};

/// A decoded NotificationResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Note {
    pid: i32,
    channel: String,
    payload: String,
}

fn note(m: &Msg) -> Option<Note> {
    if m.tag != b'A' {
        return None;
    }
    let pid = i32::from_be_bytes(m.body.get(..4)?.try_into().ok()?);
    let mut parts = m.body[4..].split(|&b| b == 0);
    let channel = String::from_utf8_lossy(parts.next()?).into_owned();
    let payload = String::from_utf8_lossy(parts.next()?).into_owned();
    Some(Note {
        pid,
        channel,
        payload,
    })
}

/// The pid of a login's BackendKeyData.
fn key_pid(login: &[Msg]) -> i32 {
    let k = login
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData at login");
    i32::from_be_bytes(k.body[..4].try_into().expect("pid"))
}

async fn query_ok(r: &mut Raw, sql: &str) -> Vec<Msg> {
    r.query(sql).await;
    let msgs = r.until_ready().await;
    assert!(msgs.iter().all(|m| m.tag != b'E'), "{sql} failed: {msgs:?}");
    msgs
}

/// The next message on `r`, waiting up to `limit` (None: closed or nothing came).
async fn recv_patiently(r: &mut Raw, limit: Duration) -> Option<Msg> {
    let deadline = tokio::time::Instant::now() + limit;
    while r.quiet_for(Duration::from_millis(200)).await {
        if tokio::time::Instant::now() > deadline {
            return None;
        }
    }
    r.recv().await
}

/// Notifications arriving on `r` until it has been quiet for 300 ms.
async fn notes_until_quiet(r: &mut Raw) -> Vec<Note> {
    let mut out = vec![];
    while !r.quiet_for(Duration::from_millis(300)).await {
        match r.recv().await {
            Some(m) => out.extend(note(&m)),
            None => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_pid_is_the_senders_virtual_pid() {
    let pg = postgres::shared();
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let h = Herald::start(herald::config(pg, mode, 2)).await;
        let (mut l, l_login) = Raw::login(h.port(), SUPERUSER, DB1).await;
        let (mut n, n_login) = Raw::login(h.port(), SUPERUSER, DB1).await;
        let (l_pid, n_pid) = (key_pid(&l_login), key_pid(&n_login));
        assert_ne!(l_pid, n_pid, "virtual pids are unique");
        query_ok(&mut l, "LISTEN e_pid").await;
        // The sender's server backend, for comparison.
        let rows = query_ok(&mut n, "SELECT pg_backend_pid()::text").await;
        let backend: i32 = rows
            .iter()
            .find(|m| m.tag == b'D')
            .map(|m| String::from_utf8_lossy(&m.body[6..]).parse().expect("pid"))
            .expect("a row");
        query_ok(&mut n, "NOTIFY e_pid, 'plain'").await;
        query_ok(
            &mut n,
            "BEGIN; SELECT 1; NOTIFY e_pid, 'in a block'; COMMIT",
        )
        .await;
        // Wait for the two notifications before sending our own.
        let mut got = vec![];
        while got.len() < 2 {
            match recv_patiently(&mut l, Duration::from_secs(10)).await {
                Some(m) => got.extend(note(&m)),
                None => break,
            }
        }
        let own = query_ok(&mut l, "NOTIFY e_pid, 'self'").await;
        got.extend(own.iter().filter_map(note));
        got.extend(notes_until_quiet(&mut l).await);
        let pids: Vec<(i32, &str)> = got.iter().map(|n| (n.pid, n.payload.as_str())).collect();
        assert_eq!(
            pids,
            vec![(n_pid, "plain"), (n_pid, "in a block"), (l_pid, "self")],
            "{mode:?}: each A carries its sender's BackendKeyData pid"
        );
        if backend != n_pid {
            assert!(got.iter().all(|n| n.pid != backend), "never a server pid");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_slow_listener_is_disconnected_and_others_go_on() {
    const TOTAL: usize = 3000;
    const PER_QUERY: usize = 20;
    let mut config = herald::config(postgres::shared(), PoolMode::Transaction, 2);
    config.listener_queue_limit = 100;
    let h = Herald::start(config).await;
    let (mut slow, _) = Raw::login(h.port(), SUPERUSER, DB1).await;
    let (mut fast, _) = Raw::login(h.port(), SUPERUSER, DB1).await;
    let (mut sender, _) = Raw::login(h.port(), SUPERUSER, DB1).await;
    query_ok(&mut slow, "LISTEN e_slow").await;
    query_ok(&mut fast, "LISTEN e_slow").await;
    let payload = |i: usize| format!("{i:05}{}", "p".repeat(7900));
    // ~24 MB of notifications: far more than socket buffers plus the queue limit hold.
    // The sender is never blocked by the listener that does not read; the other listener
    // reads each batch before the next is sent, so its queue never nears the limit.
    let mut fast_got = Vec::with_capacity(TOTAL);
    for chunk in 0..TOTAL / PER_QUERY {
        let sql: String = (0..PER_QUERY)
            .map(|k| format!("NOTIFY e_slow, '{}';", payload(chunk * PER_QUERY + k)))
            .collect();
        tokio::time::timeout(Duration::from_secs(30), query_ok(&mut sender, &sql))
            .await
            .expect("the sender is not blocked by a slow listener");
        while fast_got.len() < (chunk + 1) * PER_QUERY {
            match recv_patiently(&mut fast, Duration::from_secs(10)).await {
                Some(m) if m.tag == b'A' => fast_got.extend(note(&m)),
                other => panic!(
                    "the reading listener got {other:?} after {}",
                    fast_got.len()
                ),
            }
        }
    }
    assert_eq!(
        fast_got.len(),
        TOTAL,
        "the reading listener gets everything"
    );
    assert!(
        fast_got
            .iter()
            .enumerate()
            .all(|(i, n)| n.payload == payload(i) && n.channel == "e_slow"),
        "in order"
    );
    // Now the slow listener reads: a prefix of the notifications, in order, then FATAL.
    let mut slow_got = vec![];
    let mut last = None;
    while let Some(m) = recv_patiently(&mut slow, Duration::from_secs(30)).await {
        match note(&m) {
            Some(n) => slow_got.push(n),
            None => last = Some(m),
        }
    }
    assert!(slow_got.len() < TOTAL, "the slow listener was cut off");
    assert!(
        slow_got
            .iter()
            .enumerate()
            .all(|(i, n)| n.payload == payload(i)),
        "what it got is an unbroken prefix"
    );
    let fatal = last.expect("an ErrorResponse before the connection closed");
    assert_eq!(fatal.tag, b'E', "{fatal:?}");
    assert_eq!(fatal.field(b'S').as_deref(), Some("FATAL"));
    assert_eq!(fatal.field(b'C').as_deref(), Some("54000"));
    assert_eq!(
        fatal.field(b'M').as_deref(),
        Some("too many notifications in the NOTIFY queue")
    );
    let detail = fatal.field(b'D').expect("a DETAIL");
    assert!(
        detail.contains("100"),
        "the DETAIL names the limit: {detail}"
    );
    // The sender is still fine.
    query_ok(&mut sender, "SELECT 1").await;
}

/// Table `t`, its function and trigger: each insert raises `pg_notify(ch, 'trigger ' || v)`
/// inside Postgres. (One table per test: tests run at the same time in one database.)
fn relay_setup(t: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {t} (ch text, v text); \
         CREATE OR REPLACE FUNCTION {t}_f() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_notify(NEW.ch, 'trigger ' || NEW.v); RETURN NEW; END $$; \
         CREATE OR REPLACE TRIGGER {t}_tr AFTER INSERT ON {t} \
         FOR EACH ROW EXECUTE FUNCTION {t}_f()"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_relay_delivers_what_postgres_raises() {
    // Differential: a trigger, a pg_notify inside a larger statement and a DO block reach
    // the listener as they do on Postgres, with the sender's pid (the client that held the
    // server connection). The drains between steps give the relay time to LISTEN.
    check_all(vec![Scenario::new("E relay", 2)
        .q(1, &relay_setup("e_relay_t"))
        .q(0, "LISTEN e_relay")
        .q(1, "INSERT INTO e_relay_t VALUES ('e_relay', 'a')")
        .q(1, "SELECT pg_notify('e_relay', 'embedded'), 1")
        .q(1, "DO $$ BEGIN PERFORM pg_notify('e_relay', 'do'); END $$")
        .q(
            1,
            "BEGIN; INSERT INTO e_relay_t VALUES ('e_relay', 'b'); COMMIT",
        )
        .q(0, "UNLISTEN e_relay")
        .q(
            1,
            "INSERT INTO e_relay_t VALUES ('e_relay', 'not delivered')",
        )])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_relay_listens_when_the_listen_commits() {
    // No pause between the LISTEN's commit and the trigger: Postgres delivers (item 16), and
    // what the session's own transaction raised comes before its ReadyForQuery (item 26).
    let t = "e_relay2_t";
    let ins = |ch: &str, v: &str| format!("INSERT INTO {t} VALUES ('{ch}', '{v}')");
    check_all(vec![
        Scenario::new("E relay right after LISTEN", 2)
            .q(1, &relay_setup(t))
            .q(
                0,
                &format!("LISTEN e_relay2; {}", ins("e_relay2", "same Query")),
            )
            .q(
                0,
                &format!(
                    "BEGIN; LISTEN e_relay3; COMMIT; {}",
                    ins("e_relay3", "next")
                ),
            )
            // Already listening: its own trigger's notification precedes its Z.
            .q(0, &ins("e_relay3", "own"))
            // A LISTEN rolled back (whole block, or to a savepoint) delivers nothing.
            .q(
                0,
                &format!(
                    "BEGIN; LISTEN e_relay4; {}; ROLLBACK",
                    ins("e_relay4", "rolled back")
                ),
            )
            .q(
                0,
                &format!(
                    "BEGIN; LISTEN e_relay5; ROLLBACK; {}",
                    ins("e_relay5", "after")
                ),
            )
            .q(0, "BEGIN")
            .q(0, "SAVEPOINT s; LISTEN e_relay6; ROLLBACK TO s")
            .q(0, &ins("e_relay6", "savepoint"))
            .q(0, "COMMIT")
            // One statement per Query in a block (the BEGIN is deferred).
            .q(0, "BEGIN")
            .q(0, "LISTEN e_relay7")
            .q(0, &ins("e_relay7", "in block"))
            .q(0, "COMMIT")
            // Others' notifications, committed after the LISTEN.
            .q(0, "LISTEN e_relay8")
            .q(1, &ins("e_relay8", "other")),
        Scenario::new("E relay right after LISTEN [extended]", 2)
            .q(1, &relay_setup(t))
            .batch(0, &["LISTEN e_relay9", &ins("e_relay9", "batch")])
            .batch(0, &[&ins("e_relay10", "before LISTEN"), "LISTEN e_relay10"])
            .x(0, &ins("e_relay10", "own")),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_relay_keeps_transaction_order_and_dedup() {
    // Items 13 and 27 across both kinds of notification in one transaction: Postgres's
    // (trigger, buried pg_notify) and pgherald's own NOTIFYs. In a database with a function
    // that raises notifications (the trigger's, found when the relay connects), pgherald
    // publishes each such transaction in one step: its NOTIFYs issued before the first server
    // statement, then what the server raised, then the rest, deduplicated.
    let t = "e_relay4_t";
    check_all(vec![Scenario::new(
        "E relay mixed with NOTIFY in one transaction",
        3,
    )
    .q(1, &relay_setup(t))
    .q(0, "LISTEN e_relay4")
    .q(
        1,
        &format!("BEGIN; INSERT INTO {t} VALUES ('e_relay4', 'b'); NOTIFY e_relay4, 'c'; COMMIT"),
    )
    .q(
        1,
        "BEGIN; NOTIFY e_relay4, 'd'; SELECT pg_notify('e_relay4', 'e'), 1; COMMIT",
    )
    .q(
        1,
        "BEGIN; SELECT pg_notify('e_relay4', 'f'), 1; NOTIFY e_relay4, 'f'; COMMIT",
    )
    .q(
        1,
        "NOTIFY e_relay4, 'g'; SELECT pg_notify('e_relay4', 'g'), 2",
    )
    .q(1, "BEGIN")
    .q(1, "NOTIFY e_relay4, 'h'")
    .q(1, &format!("INSERT INTO {t} VALUES ('e_relay4', 'i')"))
    .q(1, "NOTIFY e_relay4, 'trigger i'")
    .q(1, "COMMIT")
    // Across transactions of one Query: what the server raised in one precedes the next
    // one's NOTIFY (commit order).
    .q(
        1,
        &format!("BEGIN; INSERT INTO {t} VALUES ('e_relay4', 'j'); COMMIT; NOTIFY e_relay4, 'k'"),
    )
    .q(
        1,
        &format!("NOTIFY e_relay4, 'n'; COMMIT; INSERT INTO {t} VALUES ('e_relay4', 'o')"),
    )
    // Two Queries sent together: a trigger's notification, then a NOTIFY pgherald answers
    // alone; commit order holds.
    .ext(
        1,
        vec![
            diff::Fe::Query(format!("INSERT INTO {t} VALUES ('e_relay4', 'p')")),
            diff::Fe::Query("NOTIFY e_relay4, 'q'".into()),
        ],
    )
    // A listener never fed by Postgres: its NOTIFY right after a server transaction waits
    // for the relay, and its own copy still comes before its ReadyForQuery (item 26).
    .q(2, "LISTEN e_relay4")
    .ext(
        2,
        vec![
            diff::Fe::Query(format!("INSERT INTO {t} VALUES ('e_relay4_none', 't')")),
            diff::Fe::Query("NOTIFY e_relay4, 'u'".into()),
        ],
    )
    // The listener's own transaction, mixed, too.
    .q(
        0,
        &format!("BEGIN; NOTIFY e_relay4, 'l'; INSERT INTO {t} VALUES ('e_relay4', 'm'); COMMIT"),
    )])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_relay_own_notification_of_a_session_never_fed_by_postgres() {
    // README (relay): a listening client that has never had a notification from Postgres
    // skips the relay round trip at its ReadyForQuery, so its first own trigger notification
    // comes right after the Z instead of before it; it is delivered, once, with its own pid.
    // From then on it comes before the Z, as on Postgres (item 26).
    let pg = postgres::shared();
    let mut admin = Raw::login(pg.port, SUPERUSER, DB1).await.0;
    query_ok(&mut admin, &relay_setup("e_relay_fed_t")).await;
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let h = Herald::start(herald::config(pg, mode, 2)).await;
        let (mut c, login) = Raw::login(h.port(), SUPERUSER, DB1).await;
        let pid = key_pid(&login);
        let ch = format!("e_relay_fed_{mode:?}").to_lowercase();
        query_ok(&mut c, &format!("LISTEN {ch}")).await;
        let ins = |v: &str| format!("INSERT INTO e_relay_fed_t VALUES ('{ch}', '{v}')");
        let first = query_ok(&mut c, &ins("first")).await;
        let mut got: Vec<Note> = first.iter().filter_map(note).collect();
        got.extend(notes_until_quiet(&mut c).await);
        let want = |v: &str| Note {
            pid,
            channel: ch.clone(),
            payload: format!("trigger {v}"),
        };
        assert_eq!(got, vec![want("first")], "{mode:?}: delivered once");
        let second = query_ok(&mut c, &ins("second")).await;
        let tags: Vec<u8> = second.iter().map(|m| m.tag).collect();
        assert_eq!(tags, b"CAZ", "{mode:?}: now before the Z: {second:?}");
        assert_eq!(note(&second[1]), Some(want("second")));
    }
}
