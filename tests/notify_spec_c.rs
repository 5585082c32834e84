//! NOTIFY-SPEC section C (delivery timing and placement on the wire), proven
//! differentially: every scenario runs against PostgreSQL and through pgherald (transaction
//! and session pooling), and the normalized transcripts must be equal (see
//! `support/diff.rs`). A statement that must be "running" when a notification commits is
//! made to wait on a table lock another connection holds, never on a sleep.

#[path = "support/diff.rs"]
mod diff;
mod support;

use diff::{bind, both, check_all, execute, parse, pbde, Fe, Proto, Scenario};

/// Statements of `sqls` as one extended batch with `end` (Sync or Flush) at the end.
fn batch(sqls: &[&str], end: Fe) -> Vec<Fe> {
    let mut v: Vec<Fe> = sqls.iter().flat_map(|s| pbde(s)).collect();
    v.push(end);
    v
}

/// A statement that waits for `table`'s lock, sent without waiting, in protocol `p`.
fn blocked(sc: Scenario, i: usize, p: Proto, sql: &str) -> Scenario {
    match p {
        Proto::Simple => sc.q_async(i, sql),
        Proto::Extended => sc.ext_async(i, batch(&[sql], Fe::Sync)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c21_idle_listener_gets_pushed() {
    check_all(both(|_| {
        Scenario::new("c21 idle listeners", 3)
            .s(0, "LISTEN c21c")
            .s(1, "LISTEN c21c")
            .s(2, "NOTIFY c21c, 'one'")
            .s(2, "BEGIN")
            .s(2, "NOTIFY c21c, 'two'")
            .s(2, "NOTIFY c21c, 'three'")
            .s(2, "COMMIT")
            .s(2, "SELECT pg_notify('c21c', 'four')")
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c22_listener_in_block_waits_for_its_end() {
    let mut scs = both(|_| {
        Scenario::new("c22 listener in a block", 2)
            .s(0, "LISTEN c22c")
            .s(0, "BEGIN")
            .s(1, "NOTIFY c22c, '1'")
            .s(0, "SELECT 1")
            .s(0, "NOTIFY c22other, 'answered locally'")
            .s(0, "SELECT pg_listening_channels()")
            .s(1, "NOTIFY c22c, '2'")
            .s(0, "COMMIT")
            .s(0, "BEGIN")
            .s(0, "SELECT 1/0")
            .s(1, "NOTIFY c22c, '3'")
            .s(0, "SELECT 1")
            .s(0, "ROLLBACK")
    });
    scs.extend(both(|_| {
        Scenario::new("c22 block ends with a failed COMMIT", 2)
            .q(1, "CREATE TABLE IF NOT EXISTS c22p (id int PRIMARY KEY)")
            .q(
                1,
                "CREATE TABLE IF NOT EXISTS c22f (p int REFERENCES c22p DEFERRABLE INITIALLY DEFERRED)",
            )
            .s(0, "LISTEN c22c")
            .s(0, "BEGIN")
            .s(0, "INSERT INTO c22f VALUES (1)")
            .s(1, "NOTIFY c22c, 'delivered after the error'")
            .s(0, "COMMIT")
    }));
    check_all(scs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c23_listener_running_a_statement() {
    let mut scs = both(|p| {
        let sc = Scenario::new("c23 statement outside a block", 3)
            .q(2, "CREATE TABLE IF NOT EXISTS c23t (v int)")
            .s(0, "LISTEN c23c")
            .q(2, "BEGIN; LOCK TABLE c23t IN ACCESS EXCLUSIVE MODE");
        blocked(sc, 0, p, "SELECT v FROM c23t")
            .s(1, "NOTIFY c23c, 'during the statement'")
            .q(2, "COMMIT")
    });
    scs.push(
        Scenario::new("c23 multi-statement Query", 3)
            .q(2, "CREATE TABLE IF NOT EXISTS c23t (v int)")
            .q(0, "LISTEN c23c")
            .q(2, "BEGIN; LOCK TABLE c23t IN ACCESS EXCLUSIVE MODE")
            .q_async(0, "SELECT 1; SELECT v FROM c23t; SELECT 2")
            .q(1, "NOTIFY c23c, 'during the Query'")
            .q(2, "COMMIT"),
    );
    check_all(scs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c24_notifications_before_parameter_status() {
    check_all(vec![
        Scenario::new("c24 own notification and SET in one Query", 2)
            .q(0, "LISTEN c24c")
            .q(0, "NOTIFY c24c, 'x'; SET application_name = 'c24x'")
            .q(0, "BEGIN")
            .q(1, "NOTIFY c24c, 'y'")
            .q(0, "SET application_name = 'c24y'; COMMIT")
            .q(0, "RESET application_name"),
        Scenario::new("c24 extended batch", 2)
            .q(0, "LISTEN c24c")
            .batch(0, &["NOTIFY c24c, 'z'", "SET application_name = 'c24z'"])
            .q(0, "BEGIN")
            .q(1, "NOTIFY c24c, 'w'")
            .batch(0, &["SET application_name = 'c24w'", "COMMIT"])
            .x(0, "RESET application_name"),
    ])
    .await;
}

fn flush(sqls: &[&str]) -> Vec<Fe> {
    batch(sqls, Fe::Flush)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c25_notifier_commits_at_sync() {
    check_all(vec![Scenario::new("c25 notifier commits at Sync", 2)
        .q(0, "LISTEN c25n")
        .ext(1, flush(&["NOTIFY c25n, 'at Sync'"]))
        .ext(1, vec![Fe::Sync])
        .ext(
            1,
            flush(&["SELECT 1", "SELECT pg_notify('c25n', 'mixed, at Sync')"]),
        )
        .ext(1, vec![Fe::Sync])])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c25_listener_mid_batch_waits_for_sync() {
    check_all(vec![Scenario::new(
        "c25 listener mid-batch waits for Sync",
        2,
    )
    .q(0, "LISTEN c25l")
    .ext(0, flush(&["SELECT 1"]))
    .q(1, "NOTIFY c25l, 'mid-batch'")
    .ext(0, vec![Fe::Sync])
    .ext(0, vec![parse("", "SELECT 2"), Fe::Flush])
    .q(1, "NOTIFY c25l, 'after a Parse'")
    .ext(0, vec![Fe::Sync])
    .ext(0, flush(&["UNLISTEN c25none"]))
    .q(1, "NOTIFY c25l, 'intercepted batch'")
    .ext(0, vec![Fe::Sync])])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c25_listener_after_an_error_in_a_batch() {
    check_all(vec![Scenario::new(
        "c25 listener after an error mid-batch",
        2,
    )
    .q(0, "LISTEN c25e")
    .ext(0, flush(&["SELECT 1/0"]))
    .q(1, "NOTIFY c25e, 'failed batch'")
    .ext(0, vec![bind("", "", &[]), execute(""), Fe::Sync])])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c25_explicit_commit_inside_a_batch() {
    check_all(vec![Scenario::new("c25 explicit COMMIT inside a batch", 2)
        .q(0, "LISTEN c25x")
        .q(1, "LISTEN c25x")
        .ext(
            1,
            flush(&["BEGIN", "NOTIFY c25x, 'committed at once'", "COMMIT"]),
        )
        .ext(1, flush(&["SELECT 1"]))
        .ext(1, vec![Fe::Sync])
        .ext(
            1,
            flush(&[
                "BEGIN",
                "SELECT 1",
                "NOTIFY c25x, 'forwarded block'",
                "COMMIT",
            ]),
        )
        .ext(1, vec![Fe::Sync])])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c25_explicit_commit_in_a_batch_without_flush() {
    // The COMMIT reaches the other listener at once even when the client sends neither Flush
    // nor Sync after it; the sender's own replies come at its Flush or Sync, as Postgres
    // buffers them (pgherald flushes the server and holds them). The sender does not listen:
    // when Postgres sends a sender's own copy in a batch left open like this depends on
    // timing inside Postgres (c25_explicit_commit_inside_a_batch has the flushed case).
    let plain = |sqls: &[&str]| -> Vec<Fe> { sqls.iter().flat_map(|s| pbde(s)).collect() };
    check_all(vec![Scenario::new(
        "c25 COMMIT in a batch without Flush",
        2,
    )
    .q(0, "LISTEN c25y")
    .ext(1, plain(&["BEGIN", "NOTIFY c25y, 'no Flush'", "COMMIT"]))
    .ext(1, plain(&["SELECT 1"]))
    .ext(1, vec![Fe::Flush])
    .ext(1, plain(&["SELECT 2"]))
    .ext(1, vec![Fe::Sync])
    .ext(
        1,
        plain(&["BEGIN", "NOTIFY c25y, 'then more'", "COMMIT", "SELECT 3"]),
    )
    .ext(1, vec![Fe::Sync])
    .ext(
        1,
        plain(&[
            "BEGIN",
            "NOTIFY c25y, 'error after'",
            "COMMIT",
            "SELECT 1/0",
        ]),
    )
    .ext(1, vec![Fe::Sync])])
    .await;
}

/// `msgs` (ending with Flush, no Sync) on c0, which listens on c25w; c1 commits a
/// notification while c0 waits; then c0 sends Sync and ends whatever block is left open.
fn probe(sc: Scenario, label: &str, msgs: Vec<Fe>) -> Scenario {
    sc.ext(0, msgs)
        .q(1, &format!("NOTIFY c25w, '{label}'"))
        .ext(0, vec![Fe::Sync])
        .q(0, "ROLLBACK")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c25_batch_without_sync_delivers_outside_transactions() {
    let sc = Scenario::new("c25 when a batch without Sync delivers", 2)
        .q(1, "CREATE TABLE IF NOT EXISTS c25p (id int PRIMARY KEY)")
        .q(
            1,
            "CREATE TABLE IF NOT EXISTS c25f (p int REFERENCES c25p DEFERRABLE INITIALLY DEFERRED)",
        )
        .q(0, "LISTEN c25w");
    let sc = probe(sc, "error in a block", flush(&["BEGIN", "SELECT 1/0"]));
    let sc = probe(sc, "block committed", flush(&["BEGIN", "COMMIT"]));
    let sc = probe(sc, "block rolled back", flush(&["BEGIN", "ROLLBACK"]));
    let sc = probe(sc, "ROLLBACK without a block", flush(&["ROLLBACK"]));
    let sc = probe(sc, "statement after COMMIT", flush(&["COMMIT", "SELECT 1"]));
    // VACUUM commits its own transactions, yet leaves the batch's implicit one open.
    let sc = probe(sc, "VACUUM", flush(&["VACUUM c25p"]));
    let sc = probe(sc, "ANALYZE", flush(&["ANALYZE c25p"]));
    let sc = probe(
        sc,
        "failed COMMIT",
        flush(&["BEGIN", "INSERT INTO c25f VALUES (1)", "COMMIT"]),
    );
    let sc = probe(sc, "chained block", flush(&["BEGIN", "COMMIT AND CHAIN"]));
    let sc = probe(
        sc,
        "own notification rolled back",
        flush(&["BEGIN", "NOTIFY c25w, 'never'", "ROLLBACK"]),
    );
    let sc = probe(
        sc,
        "Close only",
        vec![Fe::Close(b'S', "nope".into()), Fe::Flush],
    );
    let sc = probe(sc, "Parse error", vec![parse("", "SELEC 1"), Fe::Flush]);
    let sc = sc.ext(0, vec![parse("c25s", "SELECT 1"), Fe::Sync]);
    let sc = probe(
        sc,
        "Describe of a statement",
        vec![Fe::Describe(b'S', "c25s".into()), Fe::Flush],
    );
    let sc = sc
        .ext(0, flush(&["SELECT 1/0"]))
        .ext(0, vec![bind("", "", &[]), execute(""), Fe::Flush])
        .q(1, "NOTIFY c25w, 'messages skipped after an error'")
        .ext(0, vec![Fe::Sync]);
    check_all(vec![sc]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c26_sender_own_copy_comes_last() {
    check_all(vec![Scenario::new("c26 own copy before Z", 2)
        .q(0, "LISTEN c26c")
        .q(1, "LISTEN c26c")
        .q(0, "BEGIN; NOTIFY c26c, 'x'; COMMIT; SELECT 1")
        .q(0, "BEGIN; NOTIFY c26c, 'y'; COMMIT; SELECT 1/0")
        .q(0, "NOTIFY c26c, 'z'; COMMIT; NOTIFY c26c, 'w'")
        .batch(0, &["BEGIN", "NOTIFY c26c, 'e'", "COMMIT", "SELECT 1"])])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c26_others_get_it_at_the_commit() {
    check_all(vec![Scenario::new("c26 others get it at the COMMIT", 3)
        .q(2, "CREATE TABLE IF NOT EXISTS c26t (v int)")
        .q(0, "LISTEN c26co")
        .q(1, "LISTEN c26co")
        .q(2, "BEGIN; LOCK TABLE c26t IN ACCESS EXCLUSIVE MODE")
        .q_async(
            0,
            "BEGIN; NOTIFY c26co, 'early'; COMMIT; SELECT v FROM c26t",
        )
        .q(2, "COMMIT")])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c26_commit_mid_query_while_the_rest_runs() {
    let locked = |name: &str, sql: &str, end: &str| {
        Scenario::new(name, 3)
            .q(2, "CREATE TABLE IF NOT EXISTS c26w (v int)")
            .q(0, "LISTEN c26r")
            .q(1, "LISTEN c26r")
            .q(2, "BEGIN; LOCK TABLE c26w IN ACCESS EXCLUSIVE MODE")
            .q_async(0, sql)
            .q(2, "COMMIT")
            .q(0, end)
    };
    check_all(vec![
        // The implicit block's COMMIT warns: Postgres sends what precedes the warning at once.
        locked(
            "c26 COMMIT of an implicit block mid-Query",
            "NOTIFY c26r, 'implicit'; COMMIT; SELECT v FROM c26w; SELECT 2",
            "SELECT 3",
        ),
        locked(
            "c26 COMMIT AND CHAIN mid-Query",
            "BEGIN; NOTIFY c26r, 'chained'; COMMIT AND CHAIN; SELECT v FROM c26w",
            "COMMIT",
        ),
        locked(
            "c26 two COMMITs mid-Query",
            "BEGIN; NOTIFY c26r, 'one'; COMMIT; BEGIN; LISTEN c26s; NOTIFY c26r, 'two'; END; \
             SELECT v FROM c26w; SELECT nosuchcolumn",
            "NOTIFY c26s, 'listening since the second COMMIT'",
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c26_statements_after_a_commit_behave_as_in_postgres() {
    let sc = Scenario::new("c26 what follows a COMMIT in the same Query", 2)
        .q(1, "CREATE TABLE IF NOT EXISTS c26u (v int)")
        .q(1, "LISTEN c26q")
        .q(0, "BEGIN; NOTIFY c26q, '1'; COMMIT; SELEC 1")
        .q(
            0,
            "BEGIN; NOTIFY c26q, '2'; COMMIT; SELECT nosuchcolumn FROM c26u",
        )
        .q(
            0,
            "BEGIN; NOTIFY c26q, '3'; COMMIT; BEGIN ISOLATION LEVEL SERIALIZABLE; \
             SHOW transaction_isolation; COMMIT",
        )
        .q(0, "BEGIN; NOTIFY c26q, '4'; COMMIT; VACUUM c26u")
        .q(0, "BEGIN; NOTIFY c26q, '5'; COMMIT; LOCK TABLE c26u")
        .q(
            0,
            "BEGIN; NOTIFY c26q, '6'; COMMIT; SET LOCAL work_mem = '2MB'",
        )
        .q(
            0,
            "BEGIN; NOTIFY c26q, '7'; COMMIT; SELECT generate_series(1, 3000)",
        )
        .q(0, "SET standard_conforming_strings = off")
        .q(0, "BEGIN; NOTIFY c26q, '8'; COMMIT; SELECT 'a\\\\b', x")
        .q(0, "RESET standard_conforming_strings")
        .q(0, "BEGIN; NOTIFY c26q, '9'; COMMIT; SELECT 1/0")
        .q(0, "BEGIN; NOTIFY c26q, '10'; SELECT 1/0; COMMIT; SELECT 1")
        .q(0, "BEGIN; NOTIFY c26q, '11'; ROLLBACK; SELECT 1")
        .ext(
            0,
            vec![
                Fe::Query("BEGIN; NOTIFY c26q, '12'; COMMIT; SELECT 1".into()),
                Fe::Query("SELECT 2".into()),
            ],
        );
    check_all(vec![sc]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c27_commit_order() {
    check_all(both(|_| {
        Scenario::new("c27 commit order, not issue order", 4)
            .s(0, "LISTEN c27c")
            .s(1, "LISTEN c27c")
            .s(2, "BEGIN")
            .s(2, "NOTIFY c27c, 'n1 issued first'")
            .s(3, "BEGIN")
            .s(3, "NOTIFY c27c, 'n2 issued second'")
            .s(3, "COMMIT")
            .s(2, "COMMIT")
            .s(0, "BEGIN")
            .s(0, "NOTIFY c27c, 'own'")
            .s(2, "NOTIFY c27c, 'other, during the block'")
            .s(3, "BEGIN")
            .s(3, "SELECT pg_notify('c27c', 'c')")
            .s(3, "NOTIFY c27c, 'a'")
            .s(3, "SELECT pg_notify('c27c', 'c')")
            .s(3, "NOTIFY c27c, 'b'")
            .s(3, "COMMIT")
            .s(0, "COMMIT")
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c28_pid_is_the_senders_backend_key() {
    let mut scs = both(|_| {
        Scenario::new("c28 pid per sender", 3)
            .s(0, "LISTEN c28c")
            .s(1, "NOTIFY c28c, 'from c1'")
            .s(2, "NOTIFY c28c, 'from c2'")
            .s(0, "NOTIFY c28c, 'from c0 itself'")
            .s(2, "BEGIN")
            .s(2, "SELECT 1")
            .s(2, "NOTIFY c28c, 'c2 on a server connection'")
            .s(2, "COMMIT")
            .disconnect(1)
            .connect(1)
            .s(1, "NOTIFY c28c, 'from c1 reconnected'")
    });
    scs.push(
        Scenario::new("c28 rewritten Query", 2)
            .q(0, "LISTEN c28c")
            .q(1, "SELECT 1; NOTIFY c28c, 'placeholder'; SELECT 2"),
    );
    check_all(scs).await;
}
