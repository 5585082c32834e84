//! The last corners of LISTEN/NOTIFY (NOTIFY-SPEC items 16, 18, 19, section E), proven
//! differentially: each scenario runs against PostgreSQL and through pgherald in both pool
//! modes, and the normalized transcripts must be equal (see `support/diff.rs`). Channels are
//! prefixed with the item number so parallel tests never see each other's notifications.

#[path = "support/diff.rs"]
mod diff;
mod support;

use diff::{bind, check, check_all, check_protocols, execute, parse, pbde, Fe, Proto, Scenario};

/// Item 19: `LISTEN a; UNLISTEN a` committed in one transaction registers the session, so a
/// later transaction's UNLISTEN refuses PREPARE TRANSACTION (and nothing stays prepared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b19_listen_unlisten_registers() {
    check(
        &Scenario::new("b19 LISTEN; UNLISTEN committed registers", 1)
            .drop_prepared("k19")
            .q(0, "BEGIN; LISTEN k19a; UNLISTEN k19a; COMMIT")
            .q(0, "SELECT pg_listening_channels()")
            .q(0, "BEGIN")
            .q(0, "UNLISTEN k19x")
            .q(0, "PREPARE TRANSACTION 'k19g1_@side@'")
            .q(
                0,
                "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'k19%'",
            )
            .q(0, "BEGIN; UNLISTEN *; PREPARE TRANSACTION 'k19g2_@side@'")
            .q(
                0,
                "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'k19%'",
            ),
    )
    .await;
    check(
        &Scenario::new("b19 LISTEN; UNLISTEN in one Query registers", 1)
            .drop_prepared("k19q")
            .q(0, "LISTEN k19qa; UNLISTEN k19qa")
            .q(
                0,
                "BEGIN; UNLISTEN k19qx; PREPARE TRANSACTION 'k19qg_@side@'",
            )
            .q(
                0,
                "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'k19q%'",
            ),
    )
    .await;
}

/// Item 16 inside one Query: the NOTIFY commits at the Query's COMMIT, before the LISTEN
/// that follows it does, so the sender does not get its own copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b16_notify_commit_listen_in_one_query() {
    check(
        &Scenario::new("b16 NOTIFY; COMMIT; LISTEN in one Query", 2)
            .q(1, "LISTEN k16a")
            .q(0, "NOTIFY k16a, 'x'; COMMIT; LISTEN k16a")
            .q(0, "SELECT pg_listening_channels()")
            .q(1, "NOTIFY k16a, 'later'")
            .q(0, "BEGIN; NOTIFY k16b, 'y'; COMMIT; LISTEN k16b; SELECT 1")
            .q(0, "NOTIFY k16b, 'own'"),
    )
    .await;
}

/// Item 18 the other way: a registered listener that LISTENs on a channel inside a
/// transaction gets, at its commit, what others committed there during that transaction,
/// even before its LISTEN statement; in commit order with what its other channels got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b18_listen_reads_what_committed_during_the_transaction() {
    check_protocols(|_| {
        Scenario::new("b18 LISTEN in a block of a registered listener", 2)
            .s(0, "LISTEN k18d")
            .s(0, "BEGIN")
            .s(1, "NOTIFY k18e, 'before the LISTEN statement'")
            .s(1, "NOTIFY k18d, 'old channel'")
            .s(0, "LISTEN k18e")
            .s(1, "NOTIFY k18e, 'after the LISTEN statement'")
            .s(0, "COMMIT")
            .s(1, "NOTIFY k18e, 'after the commit'")
            .s(0, "BEGIN")
            .s(1, "NOTIFY k18f, 'rolled back'")
            .s(0, "LISTEN k18f")
            .s(0, "ROLLBACK")
            .s(0, "BEGIN")
            .s(1, "NOTIFY k18g, 'in a block that ran on the server'")
            .s(0, "SELECT 1")
            .s(0, "LISTEN k18g")
            .s(0, "COMMIT")
    })
    .await;
}

/// Item 18 from the other side: a session that is not a registered listener (it never
/// listened, or its last committed transaction left it listening on nothing) reads nothing
/// committed before its LISTEN commits (item 16), in a block or not. (Postgres starts a
/// new listener at the furthest queue position of the database's other listeners, or the
/// queue's tail: c2, an idle listener, keeps that at the head, as in any database with
/// listeners; without one Postgres may hand a new listener "a few more", async.c says.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b18_unregistered_session_starts_at_its_commit() {
    check_protocols(|_| {
        Scenario::new("b18 LISTEN in a block of an unregistered session", 3)
            .s(2, "LISTEN k18idle")
            .s(0, "BEGIN")
            .s(1, "NOTIFY k18u, 'before the first LISTEN'")
            .s(0, "LISTEN k18u")
            .s(0, "COMMIT")
            .s(1, "NOTIFY k18u, 'after the first LISTEN'")
            .s(0, "UNLISTEN *")
            .s(0, "BEGIN")
            .s(1, "NOTIFY k18v, 'while unregistered again'")
            .s(0, "LISTEN k18v")
            .s(0, "COMMIT")
            .s(0, "UNLISTEN *")
            .s(0, "BEGIN")
            .s(0, "LISTEN k18w")
            .s(0, "UNLISTEN k18w")
            .s(0, "COMMIT")
            .s(0, "BEGIN")
            .s(1, "NOTIFY k18w, 'after LISTEN; UNLISTEN committed'")
            .s(0, "LISTEN k18w")
            .s(0, "COMMIT")
            .s(1, "NOTIFY k18w, 'now listening'")
    })
    .await;
}

/// Item 18's rule from the unregistering side: a commit that leaves a session listening on
/// nothing gives up its queue position (Postgres's `asyncQueueUnregister`), so what it had
/// not read yet is never delivered, even when it LISTENs on the channel again before it
/// reads (its own notification, or another session's committed while it was busy; in a
/// simple Query and in an extended batch). A session that keeps another channel stays
/// registered and does get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b18_unregistering_drops_what_was_not_read() {
    let blocked = |name: &str, keep: bool, p: Proto| {
        let stmts = [
            "BEGIN",
            "SELECT v FROM k18lock",
            "UNLISTEN k18s",
            "COMMIT",
            "LISTEN k18s",
        ];
        let sc = Scenario::new(name, 4)
            .q(3, "LISTEN k18idle")
            .q(2, "CREATE TABLE IF NOT EXISTS k18lock (v int)")
            .q(0, "LISTEN k18s")
            .q(0, if keep { "LISTEN k18keep" } else { "SELECT 1" })
            .q(2, "BEGIN; LOCK TABLE k18lock IN ACCESS EXCLUSIVE MODE");
        let sc = match p {
            Proto::Simple => sc.q_async(0, &stmts.join("; ")),
            Proto::Extended => {
                let mut b: Vec<Fe> = stmts.iter().flat_map(|s| pbde(s)).collect();
                b.push(Fe::Sync);
                sc.ext_async(0, b)
            }
        };
        sc.q(1, "NOTIFY k18s, 'committed while the listener was busy'")
            .q(2, "COMMIT")
            .q(0, "SELECT pg_listening_channels() ORDER BY 1")
            .q(1, "NOTIFY k18s, 'after'")
            .q(0, "UNLISTEN *")
    };
    let mut scs = vec![
        Scenario::new("b18 own notification, then unregister and LISTEN", 2)
            .q(0, "LISTEN k18r")
            .q(
                0,
                "BEGIN; NOTIFY k18r, 'x'; COMMIT; BEGIN; UNLISTEN k18r; COMMIT; LISTEN k18r",
            )
            .q(1, "NOTIFY k18r, 'after'")
            .q(0, "UNLISTEN *")
            .q(
                0,
                "BEGIN; NOTIFY k18r, 'y'; UNLISTEN *; COMMIT; LISTEN k18r",
            )
            .q(0, "UNLISTEN *"),
    ];
    for p in [Proto::Simple, Proto::Extended] {
        scs.push(blocked("b18 unregistered while busy", false, p).proto(p));
        scs.push(blocked("b18 still registered on another channel", true, p).proto(p));
    }
    check_all(scs).await;
}

/// Section E: the errors and notices pgherald writes itself carry Postgres 15's F, L and R
/// (the transcripts compare them). 25P02 names the routine of the message it refuses: a
/// Query, a Parse, a Bind, an Execute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_errors_carry_postgres_file_line_routine() {
    let aborted = || {
        Scenario::new("E F/L/R of 25P02 at each protocol message", 1)
            .q(0, "BEGIN")
            .ext(
                0,
                vec![parse("kl", "LISTEN kflr"), bind("kp", "kl", &[]), Fe::Flush],
            )
            .q(0, "SELECT 1/0")
            .q(0, "LISTEN kflr")
            .ext(0, vec![parse("", "NOTIFY kflr"), Fe::Sync])
            .ext(0, vec![bind("", "kl", &[]), Fe::Sync])
            .ext(0, vec![execute("kp"), Fe::Sync])
            .q(0, "ROLLBACK")
    };
    let others = Scenario::new("E F/L/R of pgherald's other errors and notices", 1)
        .drop_prepared("kflr")
        .q(0, "SELECT pg_notify('', 'x')")
        .q(0, &format!("SELECT pg_notify('{}', 'x')", "k".repeat(64)))
        .q(0, &format!("NOTIFY kflr, '{}'", "x".repeat(8000)))
        .q(0, &format!("LISTEN {}", "k".repeat(70)))
        .q(0, "SET standard_conforming_strings = off")
        .q(
            0,
            r"NOTIFY kflr, 'a\\b'; NOTIFY kflr, 'it\'s'; NOTIFY kflr, 'tab\tx'",
        )
        .q(0, "RESET standard_conforming_strings")
        .q(0, "BEGIN; NOTIFY kflr; PREPARE TRANSACTION 'kflr_@side@'");
    diff::check_all(vec![aborted(), others]).await;
}

/// LISTEN run by code on the server (a DO block, a function called by a statement that
/// never says LISTEN): the client's session listens, as on Postgres —
/// `pg_listening_channels()` shows the channel after the commit (not inside the block),
/// its own NOTIFY comes back with its own pid, others' reach it, UNLISTEN stops it. In
/// transaction mode the server connection (the pool has two) never carries the listen to
/// the other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_code_listen_is_the_sessions() {
    let do_block = Scenario::new("LISTEN in a DO block", 3)
        .q(0, "DO $$ BEGIN EXECUTE 'LISTEN k4a'; END $$")
        .q(0, "SELECT pg_listening_channels()")
        .q(0, "NOTIFY k4a, 'own'")
        .q(1, "NOTIFY k4a, 'other'")
        .q(1, "SELECT pg_listening_channels()")
        .q(2, "SELECT pg_listening_channels()")
        .q(2, "NOTIFY k4a, 'third'")
        .q(
            2,
            "DO $$ BEGIN PERFORM pg_notify('k4a', 'raised in Postgres'); END $$",
        )
        .q(1, "SELECT 1")
        .q(2, "SELECT 2")
        .q(0, "UNLISTEN k4a")
        .q(1, "NOTIFY k4a, 'after UNLISTEN'")
        .q(0, "BEGIN")
        .q(0, "DO $$ BEGIN EXECUTE 'LISTEN k4b'; END $$")
        .q(0, "SELECT pg_listening_channels()")
        .q(1, "NOTIFY k4b, 'during the block'")
        .q(0, "COMMIT")
        .q(0, "SELECT pg_listening_channels()")
        .q(0, "NOTIFY k4b, 'own after the block'")
        .q(0, "BEGIN")
        .q(0, "DO $$ BEGIN EXECUTE 'LISTEN k4c'; END $$")
        .q(0, "ROLLBACK")
        .q(0, "SELECT pg_listening_channels()");
    let function = Scenario::new("LISTEN in a function", 2)
        .q(
            0,
            "CREATE OR REPLACE FUNCTION k4f() RETURNS void LANGUAGE plpgsql \
             AS $$ BEGIN EXECUTE 'LISTEN k4d'; END $$",
        )
        .q(1, "SELECT k4f()")
        .q(1, "SELECT pg_listening_channels()")
        .q(0, "NOTIFY k4d, 'to the caller'")
        .q(1, "NOTIFY k4d, 'own'")
        .q(1, "UNLISTEN *")
        .q(0, "SELECT pg_listening_channels()")
        .q(0, "NOTIFY k4d, 'nobody'");
    diff::check_all(vec![do_block, function]).await;
}

/// Item 26 for what Postgres raises, the first time too: a listener's own trigger
/// notification comes before the ReadyForQuery of the statement (or COMMIT) that raised it,
/// even when it has never had one from Postgres and the trigger was created after the
/// relay connected; another client's comes to it alone, as on Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b26_first_raised_notification_before_ready() {
    check(
        &Scenario::new("b26 first trigger notification before Z", 2)
            .q(0, "LISTEN k26")
            .q(1, "DROP TABLE IF EXISTS k26t")
            .q(
                1,
                "CREATE OR REPLACE FUNCTION k26f() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN PERFORM pg_notify('k26', 'row ' || NEW.x); RETURN NEW; END $$",
            )
            .q(1, "CREATE TABLE k26t (x int)")
            .q(
                1,
                "CREATE TRIGGER k26g AFTER INSERT ON k26t FOR EACH ROW EXECUTE FUNCTION k26f()",
            )
            .q(0, "INSERT INTO k26t VALUES (1)")
            .q(0, "BEGIN")
            .q(0, "INSERT INTO k26t VALUES (2)")
            .q(0, "COMMIT")
            .q(1, "INSERT INTO k26t VALUES (3)")
            .q(0, "INSERT INTO k26t VALUES (4); SELECT 1"),
    )
    .await;
}

/// The relay corners (item 13, 27) in a database where no function raises notifications
/// (db2): a transaction mixing pgherald's NOTIFYs with a server statement that raises is
/// one deduplicated batch in issue order, even before the relay has ever brought a raise
/// (the statement mentions NOTIFY, so pgherald counts the database as raising); and a raise
/// from a client's previous transaction that reaches the relay after its next mixed
/// transaction was sent is published on its own, before that one (not deduplicated into it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_corners_mixed_transactions() {
    use support::postgres::{DB2, SUPERUSER};
    let raise = |p: &str| format!("SELECT pg_notify('k6', '{p}') FROM (VALUES (1)) v");
    check(
        &Scenario::new("relay corners in a database without raising code", 2)
            .login_as(0, SUPERUSER, DB2)
            .login_as(1, SUPERUSER, DB2)
            .q(0, "LISTEN k6")
            .q(
                1,
                &format!(
                    "BEGIN; NOTIFY k6, 'x'; {}; NOTIFY k6, 'y'; COMMIT",
                    raise("x")
                ),
            )
            .q(1, &format!("BEGIN; {}; NOTIFY k6, 'n'; COMMIT", raise("s")))
            .ext(
                1,
                vec![
                    Fe::Query(raise("prev")),
                    Fe::Query("BEGIN; NOTIFY k6, 'prev'; SELECT 1; COMMIT".into()),
                ],
            ),
    )
    .await;
}
