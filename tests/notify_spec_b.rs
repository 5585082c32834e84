//! NOTIFY-SPEC section B (transactions), proven differentially: every scenario runs against
//! PostgreSQL and through pgherald (transaction and session pooling), and the normalized
//! transcripts must be equal (see `support/diff.rs`). Channels are prefixed with the item
//! number so that tests running in parallel never see each other's notifications.

#[path = "support/diff.rs"]
mod diff;
mod support;

use diff::{check, check_protocols, Proto, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b11_delivered_at_commit() {
    check_protocols(|_| {
        Scenario::new("b11 commit, rollback and synonyms", 2)
            .s(0, "LISTEN b11c")
            .s(1, "BEGIN")
            .s(1, "NOTIFY b11c, 'x'")
            .s(1, "SELECT 1")
            .s(1, "COMMIT")
            .s(1, "BEGIN")
            .s(1, "NOTIFY b11c, 'rolled back'")
            .s(1, "ROLLBACK")
            .s(1, "START TRANSACTION")
            .s(1, "NOTIFY b11c, 'end'")
            .s(1, "END")
            .s(1, "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            .s(1, "NOTIFY b11c, 'aborted'")
            .s(1, "ABORT")
            .s(1, "BEGIN")
            .s(1, "NOTIFY b11c, 'in an aborted block'")
            .s(1, "SELECT 1/0")
            .s(1, "COMMIT")
            .s(1, "COMMIT")
    })
    .await;
    check_protocols(|_| {
        Scenario::new("b11 failed COMMIT (deferred constraint)", 2)
            .q(1, "CREATE TABLE IF NOT EXISTS b11p (id int PRIMARY KEY)")
            .q(
                1,
                "CREATE TABLE IF NOT EXISTS b11f (p int REFERENCES b11p DEFERRABLE INITIALLY DEFERRED)",
            )
            .s(0, "LISTEN b11c")
            .s(1, "BEGIN")
            .s(1, "INSERT INTO b11f VALUES (1)")
            .s(1, "NOTIFY b11c, 'never'")
            .s(1, "COMMIT")
            .s(1, "NOTIFY b11c, 'after'")
    })
    .await;
    check(
        &Scenario::new("b11 whole transactions in one Query", 2)
            .q(0, "LISTEN b11c")
            .q(1, "BEGIN; NOTIFY b11c, 'q1'; COMMIT")
            .q(1, "BEGIN; NOTIFY b11c, 'q2'; ROLLBACK")
            .q(
                1,
                "BEGIN; INSERT INTO b11f VALUES (2); NOTIFY b11c, 'q3'; COMMIT",
            )
            .q(1, "BEGIN; NOTIFY b11c, 'q4'; SELECT 1/0; COMMIT")
            .q(1, "ROLLBACK")
            .q(1, "START TRANSACTION; NOTIFY b11c, 'q5'; END"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b11_and_chain() {
    check_protocols(|_| {
        Scenario::new(
            "b11 COMMIT AND CHAIN commits, ROLLBACK AND CHAIN discards",
            2,
        )
        .s(0, "LISTEN b11h")
        .s(1, "LISTEN b11h")
        .s(1, "BEGIN")
        .s(1, "NOTIFY b11h, 'chained commit'")
        .s(1, "COMMIT AND CHAIN")
        .s(1, "NOTIFY b11h, 'rolled back in the chained block'")
        .s(1, "ROLLBACK AND CHAIN")
        .s(1, "NOTIFY b11h, 'second chained block'")
        .s(1, "SELECT 1/0")
        .s(1, "END AND CHAIN")
        .s(1, "NOTIFY b11h, 'after an aborted chain'")
        .s(1, "COMMIT")
        .s(1, "COMMIT AND CHAIN")
    })
    .await;
    check(
        &Scenario::new("b11 AND CHAIN inside one Query", 2)
            .q(0, "LISTEN b11h")
            .q(
                1,
                "BEGIN; NOTIFY b11h, 'q1'; COMMIT AND CHAIN; NOTIFY b11h, 'q2'; ROLLBACK",
            )
            .q(
                1,
                "BEGIN; NOTIFY b11h, 'q3'; ABORT AND CHAIN; NOTIFY b11h, 'q4'; END",
            ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b12_savepoints() {
    check_protocols(|_| {
        Scenario::new("b12 spec example", 2)
            .s(0, "LISTEN b12c")
            .s(1, "BEGIN")
            .s(1, "NOTIFY b12c, '1'")
            .s(1, "SAVEPOINT s")
            .s(1, "NOTIFY b12c, '2'")
            .s(1, "ROLLBACK TO s")
            .s(1, "NOTIFY b12c, '3'")
            .s(1, "SAVEPOINT t")
            .s(1, "NOTIFY b12c, '4'")
            .s(1, "RELEASE t")
            .s(1, "COMMIT")
    })
    .await;
    check_protocols(|_| {
        Scenario::new("b12 savepoints and LISTEN/UNLISTEN", 2)
            .s(0, "LISTEN b12a")
            .s(0, "BEGIN")
            .s(0, "SAVEPOINT s")
            .s(0, "LISTEN b12b")
            .s(0, "UNLISTEN b12a")
            .s(0, "ROLLBACK TO SAVEPOINT s")
            .s(0, "LISTEN b12d")
            .s(0, "SAVEPOINT u")
            .s(0, "UNLISTEN b12d")
            .s(0, "RELEASE SAVEPOINT u")
            .s(0, "SAVEPOINT v")
            .s(0, "LISTEN b12e")
            .s(0, "RELEASE v")
            .s(0, "COMMIT")
            .s(0, "SELECT pg_listening_channels()")
            .s(1, "NOTIFY b12a, 'a'")
            .s(1, "NOTIFY b12b, 'b'")
            .s(1, "NOTIFY b12d, 'd'")
            .s(1, "NOTIFY b12e, 'e'")
    })
    .await;
    check(&b12_nesting_and_errors().proto(Proto::Simple)).await;
    check(&Scenario::new("b12 in one Query", 2).q(0, "LISTEN b12c").q(
        1,
        "BEGIN; NOTIFY b12c,'1'; SAVEPOINT s; NOTIFY b12c,'2'; ROLLBACK TO s; \
                 NOTIFY b12c,'3'; SAVEPOINT t; NOTIFY b12c,'4'; RELEASE t; COMMIT",
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b12_savepoints_extended() {
    check(&b12_nesting_and_errors().proto(Proto::Extended)).await;
}

fn b12_nesting_and_errors() -> Scenario {
    Scenario::new("b12 savepoint stays open, nesting, errors", 2)
        .s(0, "LISTEN b12cx")
        .s(1, "BEGIN")
        .s(1, "SAVEPOINT s")
        .s(1, "NOTIFY b12cx, 'gone 1'")
        .s(1, "ROLLBACK TO s")
        .s(1, "NOTIFY b12cx, 'gone 2'")
        .s(1, "ROLLBACK TO s")
        .s(1, "NOTIFY b12cx, 'kept 1'")
        .s(1, "SAVEPOINT t")
        .s(1, "SAVEPOINT u")
        .s(1, "NOTIFY b12cx, 'gone 3'")
        .s(1, "ROLLBACK TO t")
        .s(1, "SAVEPOINT s")
        .s(1, "NOTIFY b12cx, 'kept 2'")
        .s(1, "SELECT 1/0")
        .s(1, "NOTIFY b12cx, 'refused'")
        .s(1, "ROLLBACK TO s")
        .s(1, "NOTIFY b12cx, 'kept 3'")
        .s(1, "SAVEPOINT \"Quoted\"")
        .s(1, "NOTIFY b12cx, 'quoted'")
        .s(1, "ROLLBACK TO quoted")
        .s(1, "ROLLBACK")
        .s(1, "BEGIN")
        .s(1, "SAVEPOINT \"Quoted\"")
        .s(1, "NOTIFY b12cx, 'gone 4'")
        .s(1, "ROLLBACK TO \"Quoted\"")
        .s(1, "NOTIFY b12cx, 'kept 4'")
        .s(1, "COMMIT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b13_dedup() {
    check_protocols(|_| {
        Scenario::new("b13 x, y, x, '', '', NULL, y", 2)
            .s(0, "LISTEN b13c")
            .s(1, "BEGIN")
            .s(1, "NOTIFY b13c, 'x'")
            .s(1, "NOTIFY b13c, 'y'")
            .s(1, "NOTIFY b13c, 'x'")
            .s(1, "NOTIFY b13c")
            .s(1, "NOTIFY b13c, ''")
            .s(1, "SELECT pg_notify('b13c', NULL)")
            .s(1, "SELECT pg_notify('b13c', 'y')")
            .s(1, "NOTIFY b13d, 'x'")
            .s(1, "COMMIT")
    })
    .await;
    check_protocols(|_| {
        Scenario::new("b13 subtransactions", 2)
            .s(0, "LISTEN b13c")
            .s(1, "BEGIN")
            .s(1, "NOTIFY b13c, 'a'")
            .s(1, "SAVEPOINT s")
            .s(1, "NOTIFY b13c, 'b'")
            .s(1, "NOTIFY b13c, 'a'")
            .s(1, "RELEASE s")
            .s(1, "COMMIT")
            .s(1, "BEGIN")
            .s(1, "SAVEPOINT s")
            .s(1, "NOTIFY b13c, 'A'")
            .s(1, "ROLLBACK TO s")
            .s(1, "NOTIFY b13c, 'B'")
            .s(1, "NOTIFY b13c, 'A'")
            .s(1, "COMMIT")
            .s(1, "BEGIN")
            .s(1, "NOTIFY b13c, 'p'")
            .s(1, "SAVEPOINT s")
            .s(1, "NOTIFY b13c, 'q'")
            .s(1, "NOTIFY b13c, 'p'")
            .s(1, "COMMIT")
    })
    .await;
    check(
        &Scenario::new("b13 no dedup across transactions", 2)
            .q(0, "LISTEN b13c")
            .q(1, "NOTIFY b13c, 'same'")
            .q(1, "NOTIFY b13c, 'same'")
            .q(1, "BEGIN; NOTIFY b13c, 'same'; NOTIFY b13c, 'same'; COMMIT"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b14_implicit_transactions() {
    check(
        &Scenario::new("b14 multi-statement Query", 2)
            .q(0, "LISTEN b14c")
            .q(1, "NOTIFY b14c,'m'; NOTIFY b14c,'m'; SELECT 1")
            .q(1, "NOTIFY b14c,'1'; SELECT 1/0")
            .q(1, "SELECT 1/0; NOTIFY b14c,'2'")
            .q(1, "NOTIFY b14c,'a'; COMMIT; NOTIFY b14c,'b'; SELECT 1/0")
            .q(1, "NOTIFY b14c,'c'; COMMIT; NOTIFY b14c,'c'")
            .q(1, "NOTIFY b14c,'d'; ROLLBACK; NOTIFY b14c,'e'")
            .q(1, "BEGIN; NOTIFY b14c,'f'")
            .q(1, "COMMIT")
            .q(1, "LISTEN b14d; SELECT 1/0")
            .q(1, "SELECT pg_listening_channels()"),
    )
    .await;
    check(
        &Scenario::new("b14 extended batch is one transaction", 2)
            .q(0, "LISTEN b14c")
            .batch(1, &["NOTIFY b14c,'m'", "NOTIFY b14c,'m'", "SELECT 1"])
            .batch(
                1,
                &["NOTIFY b14c,'1'", "SELECT 1/0", "NOTIFY b14c,'skipped'"],
            )
            .batch(
                1,
                &["SELECT pg_notify('b14c','p')", "LISTEN b14e", "SELECT 1/0"],
            )
            .batch(
                1,
                &["NOTIFY b14c,'x'", "COMMIT", "NOTIFY b14c,'y'", "SELECT 1/0"],
            )
            .q(1, "SELECT pg_listening_channels()"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b15_listen_takes_effect_at_commit() {
    check_protocols(|_| {
        Scenario::new("b15 LISTEN/UNLISTEN at commit", 1)
            .s(0, "LISTEN b15a")
            .s(0, "BEGIN")
            .s(0, "LISTEN b15b")
            .s(0, "UNLISTEN b15a")
            .s(0, "SELECT pg_listening_channels()")
            .s(0, "ROLLBACK")
            .s(0, "SELECT pg_listening_channels()")
            .s(0, "BEGIN")
            .s(0, "UNLISTEN *")
            .s(0, "LISTEN b15q")
            .s(0, "COMMIT")
            .s(0, "SELECT pg_listening_channels()")
            .s(0, "BEGIN")
            .s(0, "LISTEN b15r")
            .s(0, "UNLISTEN *")
            .s(0, "COMMIT")
            .s(0, "SELECT pg_listening_channels()")
            .s(0, "BEGIN")
            .s(0, "LISTEN b15s")
            .s(0, "UNLISTEN b15s")
            .s(0, "LISTEN b15s")
            .s(0, "COMMIT")
            .s(0, "SELECT pg_listening_channels()")
            .s(0, "LISTEN b15s")
            .s(0, "UNLISTEN b15unknown")
            .s(0, "SELECT pg_listening_channels()")
    })
    .await;
    check(
        &Scenario::new("b15 in one Query", 2)
            .q(0, "UNLISTEN *; LISTEN b15q; SELECT pg_listening_channels()")
            .q(0, "SELECT pg_listening_channels()")
            .q(0, "LISTEN b15r; UNLISTEN *")
            .q(
                0,
                "LISTEN b15s; UNLISTEN b15s; LISTEN b15s; SELECT pg_listening_channels()",
            )
            .q(0, "SELECT pg_listening_channels()")
            .q(1, "NOTIFY b15s, 's'; NOTIFY b15r, 'r'; NOTIFY b15q, 'q'"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b16_listen_sees_later_commits_only() {
    check_protocols(|_| {
        Scenario::new("b16 LISTEN in a block", 2)
            .s(0, "BEGIN")
            .s(0, "LISTEN b16c")
            .s(1, "NOTIFY b16c, 'before the LISTEN commits'")
            .s(0, "COMMIT")
            .s(1, "NOTIFY b16c, 'after'")
    })
    .await;
    check_protocols(|_| {
        Scenario::new("b16 notifier commits after the LISTEN", 2)
            .s(1, "BEGIN")
            .s(1, "NOTIFY b16d, 'begun before the LISTEN'")
            .s(0, "LISTEN b16d")
            .s(1, "COMMIT")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b17_self_notify() {
    check_protocols(|_| {
        Scenario::new("b17 self-notify", 2)
            .s(0, "LISTEN b17c")
            .s(0, "NOTIFY b17c, 'own'")
            .s(0, "BEGIN")
            .s(0, "NOTIFY b17d")
            .s(0, "LISTEN b17d")
            .s(0, "COMMIT")
            .s(0, "BEGIN")
            .s(0, "NOTIFY b17d, 'not delivered'")
            .s(0, "UNLISTEN b17d")
            .s(0, "COMMIT")
            .s(1, "LISTEN b17c")
            .s(0, "SELECT pg_notify('b17c', 'both')")
    })
    .await;
    check(
        &Scenario::new("b17 in one Query", 1)
            .q(0, "LISTEN b17e; NOTIFY b17e, 'one query'")
            .q(0, "NOTIFY b17f, 'x'; LISTEN b17f")
            .q(0, "NOTIFY b17f, 'y'; UNLISTEN b17f"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b18_filter_at_delivery() {
    check_protocols(|_| {
        Scenario::new("b18 unlisten before delivery", 2)
            .s(0, "LISTEN b18d")
            .s(0, "BEGIN")
            .s(1, "NOTIFY b18d, 'never seen'")
            .s(0, "UNLISTEN b18d")
            .s(0, "COMMIT")
            .s(0, "LISTEN b18d")
            .s(0, "BEGIN")
            .s(1, "NOTIFY b18d, 'seen: unlisten rolled back'")
            .s(0, "UNLISTEN b18d")
            .s(0, "ROLLBACK")
            .s(0, "BEGIN")
            .s(1, "NOTIFY b18d, 'never seen 2'")
            .s(0, "UNLISTEN *")
            .s(0, "COMMIT")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b19_prepare_transaction() {
    check(&b19_refused("b19rs").proto(Proto::Simple)).await;
    // UNLISTEN counts only once the session has committed a LISTEN; a NOTIFY rolled back
    // to a savepoint does not count. Prepared transactions that do succeed are rolled
    // back by name.
    check(
        &Scenario::new("b19 what does not count", 2)
            .q(1, "LISTEN b19c")
            .q(0, "BEGIN; UNLISTEN b19a; PREPARE TRANSACTION 'b19n4_@side@'")
            .q(0, "ROLLBACK PREPARED 'b19n4_@side@'")
            .q(0, "BEGIN; SAVEPOINT s; NOTIFY b19c, 'x'; ROLLBACK TO s; PREPARE TRANSACTION 'b19n5_@side@'")
            .q(0, "ROLLBACK PREPARED 'b19n5_@side@'")
            .q(0, "LISTEN b19a")
            .q(0, "BEGIN")
            .q(0, "UNLISTEN b19zz")
            .q(0, "PREPARE TRANSACTION 'b19n6_@side@'")
            .q(0, "SELECT pg_listening_channels()")
            .drop_prepared("b19n"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b19_prepare_transaction_in_one_query() {
    check(
        &Scenario::new("b19 in one Query", 2)
            .q(1, "LISTEN b19cq")
            .q(0, "BEGIN; LISTEN b19aq; PREPARE TRANSACTION 'b19q7_@side@'")
            .q(
                0,
                "BEGIN; NOTIFY b19cq, 'never'; PREPARE TRANSACTION 'b19q8_@side@'",
            )
            .q(0, "SELECT pg_listening_channels()")
            .q(0, "LISTEN b19aq")
            .q(
                0,
                "BEGIN; UNLISTEN b19zzq; PREPARE TRANSACTION 'b19q9_@side@'",
            )
            .q(0, "SELECT pg_listening_channels()")
            .drop_prepared("b19q"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b19_prepare_transaction_extended() {
    check(&b19_refused("b19rx").proto(Proto::Extended)).await;
}

/// Prepared transaction ids start with `gid` (one per protocol: ids are global).
fn b19_refused(gid: &str) -> Scenario {
    Scenario::new("b19 PREPARE TRANSACTION refused", 2)
        .drop_prepared(gid)
        .s(1, "LISTEN b19cx")
        .s(0, "BEGIN")
        .s(0, "LISTEN b19ax")
        .s(0, &format!("PREPARE TRANSACTION '{gid}1_@side@'"))
        .s(0, "BEGIN")
        .s(0, "NOTIFY b19cx, 'never'")
        .s(0, &format!("PREPARE TRANSACTION '{gid}2_@side@'"))
        .s(0, "BEGIN")
        .s(0, "SELECT pg_notify('b19cx', 'never')")
        .s(0, &format!("PREPARE TRANSACTION '{gid}3_@side@'"))
        .s(0, "SELECT pg_listening_channels()")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b20_aborted_block_and_read_only() {
    check(&b20_aborted().proto(Proto::Simple)).await;
    check_protocols(|_| {
        Scenario::new("b20 read-only transactions", 2)
            .s(1, "LISTEN b20c")
            .s(0, "BEGIN READ ONLY")
            .s(0, "LISTEN b20r")
            .s(0, "NOTIFY b20c, 'ro'")
            .s(0, "SELECT pg_notify('b20c', 'ro2')")
            .s(0, "UNLISTEN b20r")
            .s(0, "COMMIT")
            .s(0, "SET default_transaction_read_only = on")
            .s(0, "LISTEN b20r")
            .s(0, "NOTIFY b20c, 'default ro'")
            .s(0, "SELECT pg_listening_channels()")
            .s(0, "RESET default_transaction_read_only")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b20_aborted_block_extended() {
    check(&b20_aborted().proto(Proto::Extended)).await;
}

fn b20_aborted() -> Scenario {
    Scenario::new("b20 aborted block", 2)
        .s(1, "LISTEN b20cx")
        .s(0, "BEGIN")
        .s(0, "SELECT 1/0")
        .s(0, "LISTEN b20cx")
        .s(0, "UNLISTEN b20cx")
        .s(0, "UNLISTEN *")
        .s(0, "NOTIFY b20cx, 'x'")
        .s(0, "SELECT pg_notify('b20cx', 'y')")
        .s(0, "SELECT pg_listening_channels()")
        .s(0, "ROLLBACK")
        .s(0, "SELECT pg_listening_channels()")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b14_large_query() {
    // A Query of more than 256 KiB made of NOTIFYs (40 payloads of 7,900 bytes): pgherald
    // streams it to Postgres unparsed, and the relay brings the notifications back.
    let sql: String = (0..40)
        .map(|i| format!("NOTIFY b14l, '{i:02}{}';", "l".repeat(7900)))
        .collect();
    check(
        &Scenario::new("b14 Query larger than 256 KiB", 2)
            .q(0, "LISTEN b14l")
            .q(1, &sql),
    )
    .await;
}
