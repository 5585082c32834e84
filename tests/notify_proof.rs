//! Proof that pgherald, not Postgres, serves LISTEN/UNLISTEN/NOTIFY/pg_notify, with the
//! semantics applications rely on:
//! - Postgres's own statement log (`log_statement = all`) never shows one of them, whatever
//!   the protocol, pool mode, transaction shape or mixed Query (DESIGN "How interception
//!   keeps exact semantics"), while every notification still arrives;
//! - many concurrent senders with rollbacks give every listener one identical commit order
//!   (spec B.11, C.27, E "Order");
//! - the extended protocol as drivers send it delivers channel, payload and the sender's own
//!   BackendKeyData pid (spec A.2, A.10, C.28, E "The `A` pid");
//! - what Postgres raises right after a LISTEN through pgherald arrives (the relay barrier)
//!   returned reaches the listener through the upstream relay (spec B.16).
//!
//! Everything goes through real sockets: tokio-postgres clients, pgherald in-process, and the
//! throwaway Postgres of `support::postgres`.

#[path = "support/notes.rs"]
mod notes;
mod support;

use pgherald::config::PoolMode;
use std::collections::HashSet;

use support::herald::{self, Herald};
use support::listen;
use support::postgres::{self, DB1, DB2, DEFAULT_DB, SUPERUSER};
use support::raw::Raw;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient, SimpleQueryMessage};

/// The only database test 1 uses, so that its lines in the shared server log are its own.
const PROOF_DB: &str = DB2;

async fn herald(mode: PoolMode, size: usize) -> Herald {
    Herald::start(herald::config(postgres::shared(), mode, size)).await
}

/// Rows of the first column of a simple Query (NULL as "NULL").
async fn col(c: &Client, sql: &str) -> Vec<String> {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect()
}

async fn run(c: &Client, sql: &str) {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The SQLSTATE of a statement that must fail.
async fn fails(c: &Client, sql: &str) -> String {
    let e = c
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("{sql} succeeded"));
    e.code()
        .map(|s| s.code().to_string())
        .unwrap_or_else(|| format!("{e}"))
}

const PG_NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// `SELECT pg_notify($1, $2)` the way tokio-postgres's `query_typed` sends it: one
/// Parse(unnamed, [text, text]) / Bind / Describe / Execute / Sync.
async fn typed_notify(c: &impl GenericClient, channel: &str, payload: &str) {
    c.query_typed(PG_NOTIFY, &[(&channel, Type::TEXT), (&payload, Type::TEXT)])
        .await
        .unwrap_or_else(|e| panic!("query_typed pg_notify({channel}, {payload}): {e}"));
}

/// Server log entries (a line with its continuation lines) of `db`'s sessions, with the pid.
fn log_entries_of(log: &str, db: &str) -> Vec<(String, String)> {
    let starts_entry = |l: &str| l.len() > 4 && l.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    let mut entries: Vec<String> = Vec::new();
    for line in log.lines() {
        match entries.last_mut() {
            Some(e) if !starts_entry(line) => {
                e.push('\n');
                e.push_str(line);
            }
            _ => entries.push(line.to_string()),
        }
    }
    let tag = format!("@{db} ");
    let pid = |e: &str| {
        e.split_once('[')
            .and_then(|(_, r)| r.split_once(']'))
            .map(|(p, _)| p.to_string())
    };
    entries
        .into_iter()
        .filter(|e| e.contains(&tag))
        .map(|e| (pid(&e).unwrap_or_default(), e))
        .collect()
}

/// DESIGN "How interception keeps exact semantics", spec E: Postgres never sees a client's
/// LISTEN, UNLISTEN, NOTIFY, pg_notify or pg_listening_channels, in either pool mode, over
/// the simple and extended protocols (unnamed and named statements), in explicit and
/// implicit transactions, savepoints, failing blocks and mixed Queries (rewritten with
/// placeholders) — and the listener still receives exactly the committed notifications, in
/// order, with the sender's pid. With the upstream relay on (the default), the only LISTEN
/// and UNLISTEN Postgres sees come from the one relay connection per pgherald (README "The
/// upstream relay"), on committed channels only, and NOTIFY/pg_notify never; with `relay =
/// false` Postgres sees none of them at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_never_sees_listen_or_notify() {
    let pg = postgres::shared();
    let direct = pg.connect(SUPERUSER, None, PROOF_DB).await;
    run(
        &direct,
        "DROP TABLE IF EXISTS proof_t; CREATE TABLE proof_t(v int)",
    )
    .await;
    let offset = pg.log_len();
    let runs = [
        (PoolMode::Transaction, true),
        (PoolMode::Session, true),
        (PoolMode::Transaction, false),
        (PoolMode::Session, false),
    ];
    for (mode, relay) in runs {
        let mut cfg = herald::config(pg, mode, 4);
        cfg.relay = relay;
        let h = Herald::start(cfg).await;
        let conn = h.conn_str(SUPERUSER, None, PROOF_DB);
        let mut l = listen::connect(&conn).await;
        let mut s = listen::connect(&conn).await;
        let s_pid = notes::backend_pid(&s.client).await;

        // The listener: simple, extended, mixed Query, inside a block with a savepoint,
        // named prepared statement.
        run(&l.client, "LISTEN proof_a").await;
        l.client
            .query_typed("LISTEN proof_b", &[])
            .await
            .expect("extended LISTEN");
        assert_eq!(
            col(&l.client, "SELECT 1; LISTEN proof_c; SELECT 2").await,
            ["1", "2"]
        );
        let block = "BEGIN; LISTEN proof_d; SAVEPOINT s; LISTEN proof_e; ROLLBACK TO s; COMMIT";
        run(&l.client, block).await;
        let st = l
            .client
            .prepare("LISTEN proof_f")
            .await
            .expect("prepare LISTEN");
        l.client
            .execute(&st, &[])
            .await
            .expect("execute prepared LISTEN");
        let channels = ["proof_a", "proof_b", "proof_c", "proof_d", "proof_f"];
        assert_eq!(
            col(&l.client, "SELECT pg_listening_channels()").await,
            channels
        );
        let mixed = col(&l.client, "SELECT 'x'; select PG_LISTENING_CHANNELS()").await;
        assert_eq!(mixed[0], "x");
        assert_eq!(mixed[1..], channels);

        // The sender: every shape, each expected payload `nK`, each discarded one `x-…`.
        let c = &mut s.client;
        run(c, "NOTIFY proof_a, 'n1'").await;
        run(c, "SELECT pg_notify('proof_b', 'n2')").await;
        typed_notify(c, "proof_c", "n3").await;
        let st = c
            .prepare("SELECT pg_notify($1,$2)")
            .await
            .expect("prepare pg_notify");
        c.query(&st, &[&"proof_d", &"n4"])
            .await
            .expect("prepared pg_notify");
        run(c, "BEGIN").await;
        run(c, "NOTIFY proof_a, 'n5'").await;
        run(c, "INSERT INTO proof_t VALUES (5)").await;
        run(c, "COMMIT").await;
        run(c, "BEGIN; NOTIFY proof_a, 'x-rolled-back'; ROLLBACK").await;
        run(
            c,
            "BEGIN; NOTIFY proof_a, 'n6'; SAVEPOINT s; NOTIFY proof_a, 'x-to-savepoint'; \
             ROLLBACK TO s; NOTIFY proof_f, 'n7'; SAVEPOINT t; NOTIFY proof_a, 'n8'; \
             RELEASE t; COMMIT",
        )
        .await;
        run(
            c,
            "INSERT INTO proof_t VALUES (9); NOTIFY proof_a, 'n9'; SELECT 1",
        )
        .await;
        let mixed = "SELECT 2; SELECT pg_notify('proof_b', 'n10'); INSERT INTO proof_t VALUES (10)";
        run(c, mixed).await;
        assert_eq!(
            fails(c, "NOTIFY proof_a, 'x-implicit'; SELECT 1/0").await,
            "22012"
        );
        let tx = c.transaction().await.expect("begin");
        typed_notify(&tx, "proof_c", "n11").await;
        tx.batch_execute("INSERT INTO proof_t VALUES (11)")
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
        let tx = c.transaction().await.expect("begin");
        tx.query(&st, &[&"proof_a", &"x-driver-rollback"])
            .await
            .expect("prepared in txn");
        tx.rollback().await.expect("rollback");
        run(c, "BEGIN").await;
        assert_eq!(fails(c, "SELECT 1/0").await, "22012");
        assert_eq!(fails(c, "NOTIFY proof_a, 'x-aborted'").await, "25P02");
        assert_eq!(
            fails(c, "SELECT pg_notify('proof_a', 'x-aborted')").await,
            "25P02"
        );
        run(c, "ROLLBACK").await;
        run(c, "notify/* c */ PROOF_A , 'n12' ;").await;
        c.query_typed("BEGIN", &[]).await.expect("extended BEGIN");
        typed_notify(c, "proof_d", "n13").await;
        c.query_typed("COMMIT", &[]).await.expect("extended COMMIT");
        l.client
            .query_typed("UNLISTEN proof_b", &[])
            .await
            .expect("extended UNLISTEN");
        run(c, "NOTIFY proof_b, 'x-unlistened'").await;
        run(c, "NOTIFY proof_a, 'end'").await;

        let got = notes::until(&mut l, "end", "listener").await;
        let want: Vec<notes::Note> = [
            ("proof_a", "n1"),
            ("proof_b", "n2"),
            ("proof_c", "n3"),
            ("proof_d", "n4"),
            ("proof_a", "n5"),
            ("proof_a", "n6"),
            ("proof_f", "n7"),
            ("proof_a", "n8"),
            ("proof_a", "n9"),
            ("proof_b", "n10"),
            ("proof_c", "n11"),
            ("proof_a", "n12"),
            ("proof_d", "n13"),
            ("proof_a", "end"),
        ]
        .iter()
        .map(|(c, p)| (s_pid, c.to_string(), p.to_string()))
        .collect();
        assert_eq!(
            got, want,
            "{mode:?}, relay {relay}: what the listener received"
        );

        run(&l.client, "UNLISTEN *").await;
        assert!(col(&l.client, "SELECT pg_listening_channels()")
            .await
            .is_empty());
        // A marker through the same pgherald: once Postgres logged it, it logged all above.
        let marker = format!("proof-marker-{mode:?}-{relay}");
        assert_eq!(
            col(c, &format!("SELECT '{marker}'")).await,
            std::slice::from_ref(&marker)
        );
        let deadline = std::time::Instant::now() + notes::WAIT;
        while !pg.log_since(offset).contains(&marker) {
            assert!(
                std::time::Instant::now() < deadline,
                "{marker} never reached the log"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(h);
    }
    let log = pg.log_since(offset);
    let entries = log_entries_of(&log, PROOF_DB);
    let relay_pids: HashSet<&str> = entries
        .iter()
        .filter(|(_, e)| e.contains("SET application_name = 'pgherald relay'"))
        .map(|(p, _)| p.as_str())
        .collect();
    let (relay, clients): (Vec<_>, Vec<_>) = entries
        .iter()
        .partition(|(p, _)| relay_pids.contains(p.as_str()));
    let statements = clients
        .iter()
        .filter(|(_, e)| e.contains("statement: ") || e.contains("execute "))
        .count();
    assert!(
        statements >= 20 * runs.len(),
        "{statements}: the filter finds the sessions' statements: {clients:#?}"
    );
    // The mixed Queries reached Postgres with placeholders (one per run and Query).
    let rewritten = clients
        .iter()
        .filter(|(_, e)| e.contains("VALUES (9); SELECT     "))
        .count();
    assert_eq!(rewritten, runs.len(), "{clients:#?}");
    let lower = |e: &str| e.to_ascii_lowercase();
    let leaked: Vec<_> = clients
        .iter()
        .filter(|(_, e)| lower(e).contains("listen") || lower(e).contains("notify"))
        // pgherald's own catalog lookup (does a function of this database LISTEN?, see
        // frontend/adopt.rs) names the word but is no client's LISTEN.
        .filter(|(_, e)| !e.contains("FROM pg_catalog.pg_proc WHERE prosrc"))
        .collect();
    assert!(
        leaked.is_empty(),
        "Postgres saw a client's LISTEN/NOTIFY: {leaked:#?}"
    );
    // The relay: at most one connection per pgherald that has it on (it connects in the
    // background, so whether it got there before a run ended is timing), LISTEN/UNLISTEN
    // only (besides its catalog check for functions that raise notifications, which reads
    // pg_proc and pg_rewrite), never a NOTIFY. It LISTENs ahead of a Query that may commit a
    // LISTEN, so it may have listened on the rolled-back proof_e, but it let go of it again.
    let relay_runs = runs.iter().filter(|r| r.1).count();
    assert!(relay_pids.len() <= relay_runs, "{relay:#?}");
    let catalog_check = |e: &str| e.contains("FROM pg_catalog.pg_proc") && !e.contains(';');
    let wrong: Vec<_> = relay
        .iter()
        .filter(|(_, e)| lower(e).contains("notify") && !catalog_check(e))
        .collect();
    assert!(
        wrong.is_empty(),
        "the relay sent more than LISTEN/UNLISTEN: {wrong:#?}"
    );
    for pid in &relay_pids {
        let held = relay
            .iter()
            .filter(|(p, _)| p == pid)
            .fold(false, |held, (_, e)| {
                let unlistens = e.contains("UNLISTEN \"proof_e\"");
                let listens = e
                    .replace("UNLISTEN \"proof_e\"", "")
                    .contains("LISTEN \"proof_e\"");
                (held || listens) && !unlistens
            });
        assert!(!held, "the relay still listens on proof_e: {relay:#?}");
    }
    let rows = col(
        &direct,
        "SELECT string_agg(v::text, ',' ORDER BY v) FROM proof_t",
    )
    .await;
    let want: Vec<String> = [5, 9, 10, 11]
        .iter()
        .map(|v| vec![v.to_string(); runs.len()].join(","))
        .collect();
    assert_eq!(rows, [want.join(",")]);
}

/// Spec B.11 and C.27, E "Order": 50 senders × 20 transactions, one in five rolled back;
/// ten listeners each receive every committed payload exactly once, no rolled-back one, and
/// all ten in the identical order, which keeps each sender's own commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_senders_ten_listeners_one_order() {
    const SENDERS: usize = 50;
    const TXNS: usize = 20;
    let h = herald(PoolMode::Transaction, 4).await;
    let conn = h.conn_str(SUPERUSER, None, DB1);
    let mut listeners = Vec::new();
    for _ in 0..10 {
        let l = listen::connect(&conn).await;
        run(&l.client, "LISTEN one_order").await;
        listeners.push(l);
    }
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let mut c = listen::connect(&conn).await.client;
        senders.push(tokio::spawn(async move {
            let st = c.prepare(PG_NOTIFY).await.expect("prepare pg_notify");
            let mut committed = Vec::new();
            for n in 0..TXNS {
                let rollback = n % 5 == 4;
                let p = format!("s{i}-{n}{}", if rollback { "-rb" } else { "" });
                let end = if rollback { "ROLLBACK" } else { "COMMIT" };
                // Four shapes in turn: statements one by one, one Query, the driver's
                // transaction API with an unnamed and with a named prepared statement.
                match (i + n) % 4 {
                    0 => {
                        run(&c, "BEGIN").await;
                        run(&c, &format!("NOTIFY one_order, '{p}'")).await;
                        run(&c, "SELECT 1").await;
                        run(&c, end).await;
                    }
                    1 => run(&c, &format!("BEGIN; NOTIFY one_order, '{p}'; {end}")).await,
                    k => {
                        let tx = c.transaction().await.expect("begin");
                        if k == 2 {
                            typed_notify(&tx, "one_order", &p).await;
                        } else {
                            tx.query(&st, &[&"one_order", &p]).await.expect("prepared");
                        }
                        match rollback {
                            true => tx.rollback().await.expect("rollback"),
                            false => tx.commit().await.expect("commit"),
                        }
                    }
                }
                if !rollback {
                    committed.push(p);
                }
            }
            (c, committed)
        }));
    }
    let mut committed = Vec::new();
    let mut last = None;
    for t in senders {
        let (c, mine) = t.await.expect("sender task");
        committed.extend(mine);
        last = Some(c);
    }
    assert_eq!(committed.len(), SENDERS * TXNS * 4 / 5);
    run(&last.expect("a sender"), "NOTIFY one_order, 'end'").await;

    let mut sequences = Vec::new();
    for (k, l) in listeners.iter_mut().enumerate() {
        let got = notes::until(l, "end", &format!("listener {k}")).await;
        let payloads: Vec<String> = got[..got.len() - 1].iter().map(|n| n.2.clone()).collect();
        sequences.push(payloads);
    }
    let first = &sequences[0];
    for (k, seq) in sequences.iter().enumerate() {
        let at = seq.iter().zip(first).position(|(a, b)| a != b);
        assert!(
            seq == first,
            "listener {k} ({} received) differs from listener 0 ({}) first at index {at:?}",
            seq.len(),
            first.len()
        );
    }
    assert!(
        first.iter().all(|p| !p.ends_with("-rb")),
        "a rolled-back payload arrived"
    );
    let mut sorted = first.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), first.len(), "a payload arrived twice");
    committed.sort();
    assert_eq!(sorted, committed, "the committed payloads, each once");
    for i in 0..SENDERS {
        let mine: Vec<usize> = first
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("s{i}-"))?.parse().ok())
            .collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "sender {i} out of order: {mine:?}"
        );
    }
}

/// Spec A.2, A.10, C.28 and E "The `A` pid": `SELECT pg_notify($1, $2)` sent as drivers send
/// it (tokio-postgres `query_typed`, and `prepare` + `query`, in both pool modes) reaches another
/// listener and the sender itself with channel, payload and the pid that the sender got in
/// its BackendKeyData — read from tokio-postgres's cancel token, and from a raw client's `K`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_pg_notify_as_drivers_send_it() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let h = herald(mode, 3).await;
        let conn = h.conn_str(SUPERUSER, None, DEFAULT_DB);
        let mut l = listen::connect(&conn).await;
        let mut s = listen::connect(&conn).await;
        let l_pid = notes::backend_pid(&l.client).await;
        let s_pid = notes::backend_pid(&s.client).await;
        assert_ne!(l_pid, s_pid, "{mode:?}: every client has its own pid");
        run(&l.client, "LISTEN drv").await;
        run(&s.client, "LISTEN drv").await;

        let rows = s
            .client
            .query_typed(PG_NOTIFY, &[(&"drv", Type::TEXT), (&"typed", Type::TEXT)])
            .await
            .expect("query_typed pg_notify");
        assert_eq!(rows.len(), 1, "pg_notify returns one row");
        assert_eq!(rows[0].columns()[0].name(), "pg_notify");
        assert_eq!(*rows[0].columns()[0].type_(), Type::VOID);
        let st = s
            .client
            .prepare("SELECT pg_notify($1,$2)")
            .await
            .expect("prepare");
        assert_eq!(
            st.params(),
            [Type::TEXT, Type::TEXT],
            "ParameterDescription"
        );
        s.client
            .query(&st, &[&"drv", &"prepared-1"])
            .await
            .expect("execute 1");
        s.client
            .query(&st, &[&"drv", &"prepared-2"])
            .await
            .expect("execute 2");
        let sent = ["typed", "prepared-1", "prepared-2"];
        let want: Vec<_> = sent
            .iter()
            .map(|p| (s_pid, "drv".to_string(), p.to_string()))
            .collect();
        assert_eq!(
            notes::take(&mut l, sent.len(), "listener").await,
            want,
            "{mode:?}"
        );
        assert_eq!(
            notes::take(&mut s, sent.len(), "sender").await,
            want,
            "{mode:?}"
        );

        // The other way round, and a raw client whose BackendKeyData we read ourselves.
        typed_notify(&l.client, "drv", "back").await;
        let back = (l_pid, "drv".to_string(), "back".to_string());
        assert_eq!(
            notes::take(&mut s, 1, "sender").await,
            std::slice::from_ref(&back)
        );
        assert_eq!(notes::take(&mut l, 1, "listener").await, [back]);
        let (mut raw, hello) = Raw::login(h.port(), SUPERUSER, DEFAULT_DB).await;
        let k = hello
            .iter()
            .find(|m| m.tag == b'K')
            .expect("BackendKeyData");
        let raw_pid = i32::from_be_bytes([k.body[0], k.body[1], k.body[2], k.body[3]]);
        raw.query("SELECT pg_notify('drv', 'raw')").await;
        let reply: Vec<u8> = raw.until_ready().await.iter().map(|m| m.tag).collect();
        assert_eq!(reply, b"TDCZ");
        let from_raw = (raw_pid, "drv".to_string(), "raw".to_string());
        assert_eq!(
            notes::take(&mut l, 1, "listener").await,
            std::slice::from_ref(&from_raw)
        );
        assert_eq!(notes::take(&mut s, 1, "sender").await, [from_raw]);
        assert!(
            ![l_pid, s_pid].contains(&raw_pid),
            "{mode:?}: pids are unique"
        );
    }
}

/// Spec B.16 ("a newly listening session receives what commits after its LISTEN commits")
/// for notifications raised inside Postgres, which reach pgherald's listeners through the
/// upstream relay (README "The upstream relay"): after `LISTEN c` through pgherald has
/// returned, a NOTIFY committed in Postgres (by a direct client, and by a `pg_notify` buried
/// in a statement pgherald forwards) must arrive. Then `late` is sent until one arrives, so
/// a lost `early` shows as a sequence that does not start with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_postgres_raises_right_after_listen_arrives() {
    let pg = postgres::shared();
    let direct = pg.connect(SUPERUSER, None, DB1).await;
    let h = herald(PoolMode::Transaction, 2).await;
    let mut l = listen::connect(&h.conn_str(SUPERUSER, None, DB1)).await;
    let mut lost = Vec::new();
    for k in 0..6 {
        let ch = format!("raised_{k}");
        run(&l.client, &format!("LISTEN {ch}")).await;
        if k % 2 == 0 {
            run(&direct, &format!("NOTIFY {ch}, 'early'")).await;
        } else {
            let buried = format!("SELECT pg_notify('{ch}', 'early') FROM (VALUES (1)) v");
            run(&l.client, &buried).await;
        }
        // `late` until one arrives: the relay's own LISTEN may still be on its way.
        let deadline = std::time::Instant::now() + notes::WAIT;
        let mut got = Vec::new();
        while got.last().map(String::as_str) != Some("late") {
            assert!(
                std::time::Instant::now() < deadline,
                "{ch}: no late ever arrived: {got:?}"
            );
            run(&direct, &format!("NOTIFY {ch}, 'late'")).await;
            let wait = std::time::Duration::from_millis(200);
            while let Ok(Some(n)) = tokio::time::timeout(wait, l.rx.recv()).await {
                got.push(n.payload().to_string());
            }
        }
        if got[0] != "early" {
            lost.push(format!("{ch}: {got:?}"));
        }
    }
    assert!(
        lost.is_empty(),
        "notifications lost after LISTEN returned: {lost:?}"
    );
}
