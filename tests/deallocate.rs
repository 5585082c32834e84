//! SQL `DEALLOCATE` of statements prepared with the protocol's Parse (issue 12 item 8),
//! proven differentially: each scenario runs against PostgreSQL and through pgherald in both
//! pool modes, and the normalized transcripts must be equal (see `support/diff.rs`).
//! pgherald answers some prepared statements itself (`SELECT pg_notify(…)`, LISTEN, NOTIFY:
//! never Parsed on the server) and, in transaction mode, prepares every named statement on
//! whichever server the client holds under names of its own; `DEALLOCATE name` of such a
//! statement must still free the name exactly as Postgres does. psycopg 3 built against
//! libpq < 17 evicts its statement cache this way (`DEALLOCATE _pg3_N`, sent with Parse, Bind,
//! Describe, Execute, Sync). Channels start with `kdl` so that parallel tests never meet.

#[path = "support/diff.rs"]
mod diff;
mod support;

use diff::{bind, check, check_protocols, describe_stmt, execute, parse, Fe, Scenario};

/// Parse a named statement, then Sync.
fn prepare(sc: Scenario, name: &str, sql: &str) -> Scenario {
    sc.ext(0, vec![parse(name, sql), Fe::Sync])
}

/// Bind a named statement with text parameters into the unnamed portal, Execute it, Sync.
fn call(sc: Scenario, name: &str, params: &[Option<&str>]) -> Scenario {
    sc.ext(0, vec![bind("", name, params), execute(""), Fe::Sync])
}

/// Statements pgherald answers itself (pg_notify with parameters, LISTEN, NOTIFY), prepared
/// with Parse and dropped by name: the name is free again (Bind fails with 26000, a new Parse
/// of it works), a second DEALLOCATE of it fails with 26000, the others stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_statements_deallocated_by_name() {
    check_protocols(|_| {
        let sc = Scenario::new("DEALLOCATE name of intercepted statements", 2)
            .s(1, "LISTEN kdla")
            .ext(
                0,
                vec![
                    parse("n1", "SELECT pg_notify($1, $2)"),
                    parse("l1", "LISTEN kdlb"),
                    parse("t1", "NOTIFY kdla, 'from t1'"),
                    Fe::Sync,
                ],
            );
        let sc = call(sc, "n1", &[Some("kdla"), Some("first")]);
        let sc = call(sc, "l1", &[]);
        sc.s(0, "DEALLOCATE n1")
            .ext(
                0,
                vec![bind("", "n1", &[Some("kdla"), Some("gone")]), Fe::Sync],
            )
            .s(0, "DEALLOCATE n1")
            .s(0, "DEALLOCATE PREPARE l1")
            .ext(0, vec![describe_stmt("l1"), Fe::Sync])
            .s(0, "DEALLOCATE \"t1\"")
            .s(0, "DEALLOCATE kdl_never_prepared")
            .ext(
                0,
                vec![
                    parse("n1", "SELECT pg_notify('kdla', $1)"),
                    bind("", "n1", &[Some("re-parsed")]),
                    execute(""),
                    Fe::Sync,
                ],
            )
            .s(1, "NOTIFY kdlb, 'c0 still listens'")
            .s(0, "SELECT 1")
    })
    .await;
}

/// `DEALLOCATE ALL` drops the statements pgherald answers itself with the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_drops_intercepted_statements() {
    check_protocols(|_| {
        let sc = Scenario::new("DEALLOCATE ALL with intercepted statements", 1).ext(
            0,
            vec![
                parse("n2", "SELECT pg_notify($1, $2)"),
                parse("p2", "SELECT $1::int + 1"),
                parse("l2", "LISTEN kdlc"),
                Fe::Sync,
            ],
        );
        let sc = call(sc, "p2", &[Some("41")]);
        sc.s(0, "DEALLOCATE ALL")
            .ext(
                0,
                vec![bind("", "n2", &[Some("kdlc"), Some("x")]), Fe::Sync],
            )
            .ext(0, vec![bind("", "p2", &[Some("1")]), Fe::Sync])
            .ext(0, vec![describe_stmt("l2"), Fe::Sync])
            .s(0, "DEALLOCATE n2")
            .ext(0, vec![parse("n2", "SELECT pg_notify($1, $2)"), Fe::Sync])
            .s(0, "DEALLOCATE PREPARE ALL")
            .s(0, "DEALLOCATE n2")
    })
    .await;
}

/// A plain statement prepared with Parse (in transaction mode pgherald prepares it on each
/// server under its own name) dropped by name, re-Parsed under the same name with another
/// text: as on Postgres, in both modes, and the client is not pinned to a server for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_statement_deallocated_and_reparsed() {
    check_protocols(|_| {
        let sc = prepare(
            Scenario::new("DEALLOCATE name of a plain statement", 2),
            "p3",
            "SELECT $1::int * 2",
        );
        let sc = call(sc, "p3", &[Some("21")]);
        let sc = sc
            .s(0, "DEALLOCATE p3")
            .ext(0, vec![bind("", "p3", &[Some("1")]), execute(""), Fe::Sync]);
        let sc = prepare(sc, "p3", "SELECT $1::text || '!'");
        let sc = call(sc, "p3", &[Some("again")]);
        let sc = sc.s(0, "DEALLOCATE p3").s(0, "DEALLOCATE p3");
        // Another client's same text shares pgherald's server-side statement: it must not
        // be hurt by c0's DEALLOCATE.
        sc.ext(
            1,
            vec![
                parse("p3", "SELECT $1::int * 2"),
                bind("", "p3", &[Some("5")]),
                execute(""),
                Fe::Sync,
            ],
        )
        .s(1, "DEALLOCATE p3")
        .s(
            1,
            "SELECT count(*) FROM pg_prepared_statements WHERE from_sql",
        )
    })
    .await;
}

/// DEALLOCATE inside a transaction block runs at once and is not undone by ROLLBACK; in an
/// aborted block it fails with 25P02 and drops nothing. Several in one Query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_in_blocks_and_multi_statement_queries() {
    let sc = Scenario::new("DEALLOCATE in a block is not transactional", 1).ext(
        0,
        vec![
            parse("n4", "SELECT pg_notify($1, $2)"),
            parse("p4", "SELECT 4"),
            parse("m4", "NOTIFY kdld"),
            parse("q4", "SELECT 44"),
            Fe::Sync,
        ],
    );
    let sc = sc
        .q(0, "BEGIN")
        .q(0, "DEALLOCATE n4")
        .q(0, "DEALLOCATE p4")
        .q(0, "ROLLBACK")
        .ext(
            0,
            vec![bind("", "n4", &[Some("kdld"), Some("x")]), Fe::Sync],
        )
        .ext(0, vec![bind("", "p4", &[]), Fe::Sync])
        .q(0, "BEGIN")
        .q(0, "SELECT 1/0")
        .q(0, "DEALLOCATE m4")
        .x(0, "DEALLOCATE q4")
        .q(0, "ROLLBACK");
    let sc = call(sc, "m4", &[]);
    let sc = call(sc, "q4", &[]);
    let sc = sc
        .q(0, "SELECT 1; DEALLOCATE m4; SELECT 2")
        .q(0, "DEALLOCATE q4; DEALLOCATE q4; SELECT 3")
        .ext(0, vec![bind("", "m4", &[]), Fe::Sync])
        .ext(0, vec![bind("", "q4", &[]), Fe::Sync]);
    // The unnamed statement `DEALLOCATE x` executed twice: the second fails.
    let sc = prepare(sc, "m5", "NOTIFY kdld, 'm5'");
    let sc = sc.ext(
        0,
        vec![
            parse("", "DEALLOCATE m5"),
            bind("", "", &[]),
            execute(""),
            Fe::Sync,
            bind("", "", &[]),
            execute(""),
            Fe::Sync,
        ],
    );
    check(&sc).await;
}

/// What psycopg 3 (libpq < 17) does once its statement cache is full: each new statement is
/// prepared as `_pg3_N`, and the least recently used one is dropped with `DEALLOCATE _pg3_M`
/// sent as Parse, Bind, Describe, Execute, Sync — for plain and intercepted statements alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_like_eviction_loop() {
    const CACHE: usize = 3;
    let mut sc = Scenario::new("psycopg 3 statement cache eviction", 2).s(1, "LISTEN kdle");
    for n in 0..12 {
        let name = format!("_pg3_{n}");
        let sql = match n % 3 {
            0 => format!("SELECT pg_notify('kdle', $1 || '{n}')"),
            1 => format!("SELECT $1::text || '{n}'"),
            _ => format!("NOTIFY kdle, 'notify {n}'"),
        };
        let params: &[Option<&str>] = if n % 3 == 2 { &[] } else { &[Some("v")] };
        sc = sc.ext(
            0,
            vec![
                parse(&name, &sql),
                describe_stmt(&name),
                bind("", &name, params),
                execute(""),
                Fe::Sync,
            ],
        );
        if n >= CACHE {
            sc = sc.x(0, &format!("DEALLOCATE _pg3_{}", n - CACHE));
        }
    }
    // Everything still cached works; everything evicted is gone.
    sc = call(sc, "_pg3_11", &[]);
    sc = call(sc, "_pg3_10", &[Some("w")]);
    sc = sc.ext(0, vec![bind("", "_pg3_8", &[]), Fe::Sync]);
    sc = sc.s(1, "SELECT 1");
    check(&sc).await;
}

/// Pipelined: a `DEALLOCATE name` sent behind a statement whose reply is still due, then a
/// Parse of the same name before any reply: the new statement stays (pgherald reads the
/// Parse before it answers the DEALLOCATE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reparse_pipelined_after_deallocate() {
    let sc = Scenario::new("Parse pipelined after DEALLOCATE of the same name", 2)
        .s(1, "LISTEN kdlf")
        .ext(
            0,
            vec![
                parse("n7", "SELECT pg_notify($1, $2)"),
                parse("p7", "SELECT $1::int + 7"),
                Fe::Sync,
            ],
        )
        .ext(
            0,
            vec![
                Fe::Query("SELECT pg_sleep(0.05); DEALLOCATE n7; DEALLOCATE p7".into()),
                parse("n7", "SELECT pg_notify('kdlf', $1)"),
                parse("p7", "SELECT $1::text || '7'"),
                bind("", "n7", &[Some("new n7")]),
                execute(""),
                bind("", "p7", &[Some("new p")]),
                execute(""),
                Fe::Sync,
            ],
        )
        .ext(
            0,
            vec![
                parse("", "SELECT pg_sleep(0.05)"),
                bind("", "", &[]),
                execute(""),
                parse("", "DEALLOCATE n7"),
                bind("", "", &[]),
                execute(""),
                parse("n7", "NOTIFY kdlf, 'newest n7'"),
                bind("", "n7", &[]),
                execute(""),
                Fe::Sync,
            ],
        )
        .s(0, "DEALLOCATE n7")
        .s(0, "DEALLOCATE p7");
    check(&sc).await;
}
