//! NOTIFY-SPEC section A (statements and replies), proven differentially: every scenario
//! runs against PostgreSQL and through pgherald (transaction and session pooling), and the
//! normalized transcripts must be equal (see `support/diff.rs`). Channels are prefixed with
//! the item number so that tests running in parallel never see each other's notifications.

#[path = "support/diff.rs"]
mod diff;
mod support;

use diff::{
    bind, bind_binary, check, check_all, check_protocols, describe_portal, describe_stmt, execute,
    parse, Fe, Proto, Scenario,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_tags() {
    check_protocols(|_| {
        Scenario::new("a1 tags", 2)
            .s(0, "LISTEN a1c")
            .s(1, "NOTIFY a1c")
            .s(1, "NOTIFY a1c, 'p'")
            .s(0, "UNLISTEN a1c")
            .s(0, "UNLISTEN a1unknown")
            .s(0, "LISTEN a1c")
            .s(0, "UNLISTEN *")
            .s(1, "NOTIFY a1c, 'after'")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_pg_notify_result() {
    check_protocols(|_| {
        Scenario::new("a2 pg_notify row", 2)
            .s(0, "LISTEN a2c")
            .s(1, "SELECT pg_notify('a2c','x')")
            .s(1, "select PG_NOTIFY('a2c', 'y')")
            .s(1, "SELECT pg_catalog.pg_notify('a2c', 'z');")
    })
    .await;
    // Binary result format: the value is still zero bytes long, not NULL.
    check(
        &Scenario::new("a2 binary result", 2).q(0, "LISTEN a2c").ext(
            1,
            vec![
                parse("", "SELECT pg_notify('a2c','bin')"),
                bind_binary("", "", &[]),
                describe_portal(""),
                execute(""),
                Fe::Sync,
            ],
        ),
    )
    .await;
    // Describe(statement) of the parameterized form, then Bind/Execute it twice.
    check(
        &Scenario::new("a2 parameter description", 2)
            .q(0, "LISTEN a2c")
            .ext(
                1,
                vec![
                    parse("a2s", "SELECT pg_notify($1,$2)"),
                    describe_stmt("a2s"),
                    Fe::Sync,
                ],
            )
            .ext(
                1,
                vec![
                    bind("a2p", "a2s", &[Some("a2c"), Some("v1")]),
                    describe_portal("a2p"),
                    execute("a2p"),
                    Fe::Sync,
                ],
            )
            .ext(
                1,
                vec![
                    bind_binary("", "a2s", &[Some("a2c"), Some("v2")]),
                    describe_portal(""),
                    execute(""),
                    Fe::Close(b'S', "a2s".into()),
                    Fe::Sync,
                ],
            ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_listening_channels() {
    check_protocols(|_| {
        Scenario::new("a3 pg_listening_channels order", 1)
            .s(0, "SELECT pg_listening_channels()")
            .s(0, "LISTEN a3x")
            .s(0, "LISTEN a3y")
            .s(0, "LISTEN a3x")
            .s(0, "SELECT pg_listening_channels()")
            .s(0, "UNLISTEN a3x")
            .s(0, "LISTEN a3x")
            .s(0, "LISTEN a3z")
            .s(0, "SELECT pg_listening_channels()")
            .s(0, "SELECT * FROM pg_listening_channels()")
            .s(0, "UNLISTEN *")
            .s(0, "SELECT pg_listening_channels()")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_grammar() {
    check_protocols(|_| {
        Scenario::new("a4 keywords, comments, literals", 2)
            .s(0, "Listen a4c")
            .s(1, "notify A4C, 'upper channel folds'")
            .s(1, "NoTiFy a4c")
            .s(1, "NOTIFY/*c*/a4c  ,  'x' ;")
            .s(
                1,
                "-- lead\nNOTIFY\ta4c\n,/* a /* nested */ b */'comments' -- trail",
            )
            .s(1, "NOTIFY a4c, 'it''s'")
            .s(1, r"NOTIFY a4c, E'tab\there'")
            .s(1, "NOTIFY a4c, $$x$$")
            .s(1, "NOTIFY a4c, $t$dollar 'q' $$ $t$")
            .s(1, r"NOTIFY a4c, U&'d\0061t\+000061'")
            .s(1, "NOTIFY a4c, 'a'\n'b'")
            .s(1, "NOTIFY a4c, ''")
            .s(0, "UNLISTEN/**/*")
            .s(1, "NOTIFY a4c, 'not delivered'")
    })
    .await;
    check(&a4_scs_off().proto(Proto::Simple)).await;
}

fn a4_scs_off() -> Scenario {
    Scenario::new("a4 standard_conforming_strings off", 2)
        .s(0, "LISTEN a4s")
        .s(1, "SET standard_conforming_strings = off")
        .s(1, r"NOTIFY a4s, 'back\\slash'")
        .s(1, "NOTIFY a4s, 'plain'")
        .s(1, r"NOTIFY a4s, E'e\\scape'")
        .s(1, "SET standard_conforming_strings = on")
        .s(1, r"NOTIFY a4s, 'back\\slash'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_grammar_scs_off_extended() {
    check(&a4_scs_off().proto(Proto::Extended)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_syntax_errors() {
    let bad = [
        "NOTIFY a5c, NULL",
        "NOTIFY a5c, 'a'||'b'",
        "NOTIFY a5c, 5",
        "NOTIFY a5c, $1",
        "LISTEN $1",
        "LISTEN *",
        "UNLISTEN ALL",
        "NOTIFY select",
        "LISTEN user",
        "PREPARE a5p AS NOTIFY a5c",
        "NOTIFY \"\"",
        "LISTEN \"\"",
        "NOTIFY a5c 'no comma'",
        "NOTIFY a5c, 'x', 'y'",
    ];
    check_protocols(|_| {
        let mut sc = Scenario::new("a5 syntax errors", 2).s(1, "LISTEN a5c");
        for sql in bad {
            sc = sc.s(0, sql);
        }
        sc.s(1, "SELECT pg_listening_channels()")
    })
    .await;
    check_protocols(|_| {
        Scenario::new("a5 keywords that are fine", 2)
            .s(1, "LISTEN int")
            .s(1, "LISTEN \"select\"")
            .s(0, "NOTIFY int")
            .s(0, "NOTIFY \"select\", 's'")
            .s(0, "NOTIFY INT, 'i'")
    })
    .await;
    check(
        &Scenario::new("a5 errors reject the whole Query", 2)
            .q(1, "LISTEN a5c")
            .q(0, "SELECT 1; NOTIFY a5c, NULL")
            .q(0, "NOTIFY a5c, 'never'; LISTEN *")
            .q(0, "BEGIN")
            .q(0, "NOTIFY a5c, 5")
            .q(0, "NOTIFY a5c, 'aborted'")
            .q(0, "COMMIT")
            .q(0, "NOTIFY a5c, 'end'"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_channel_names() {
    check_protocols(|_| {
        Scenario::new("a6 folding and quoting", 2)
            .s(0, "LISTEN a6ÀbC")
            .s(0, "LISTEN \"a6MixedCase\"")
            .s(0, "LISTEN \"a6 b\"")
            .s(0, "LISTEN \"a6q\"\"uote\"")
            .s(0, r#"LISTEN U&"a6\0066oo""#)
            .s(0, "LISTEN A6Folded")
            .s(0, "SELECT pg_listening_channels()")
            .s(1, "SELECT pg_notify('a6Àbc', '1')")
            .s(1, "SELECT pg_notify('a6ÀbC', '2 not delivered')")
            .s(1, "NOTIFY \"a6MixedCase\", '3'")
            .s(1, "NOTIFY a6MixedCase, '4 not delivered'")
            .s(1, "SELECT pg_notify('a6MixedCase', '5')")
            .s(1, "NOTIFY \"a6 b\", '6'")
            .s(1, "SELECT pg_notify('a6q\"uote', '7')")
            .s(1, "NOTIFY a6foo, '8'")
            .s(1, "SELECT pg_notify('A6FOLDED', '9 not delivered')")
            .s(1, "NOTIFY A6FOLDED, '10'")
            .s(1, "SELECT pg_notify('a6folded ', '11 not delivered')")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a7_identifier_length() {
    check_all(vec![
        a7_truncation("a7").proto(Proto::Simple),
        Scenario::new("a7 notice precedes a multi-statement Query", 1)
            .q(
                0,
                &format!("SELECT 1; LISTEN {}; SELECT 2", a7_names("a7").0),
            )
            .q(0, "SELECT pg_listening_channels()"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a7_identifier_length_extended() {
    // Its own channels: the two tests run in parallel against the same databases.
    check(&a7_truncation("e7").proto(Proto::Extended)).await;
}

/// Long, cut-differently, 63-byte, 64-byte, multibyte, multibyte-cut and quoted names.
fn a7_names(p: &str) -> (String, String, String, String, String, String, String) {
    let long = format!("{p}{}", "x".repeat(68));
    let long_other_tail = format!("{}{}", &long[..63], "yyyy");
    let cut = long[..63].to_string();
    let too_long = format!("{cut}x");
    let multibyte = format!("{p}{}", "é".repeat(40));
    let mb_cut = format!("{p}{}", "é".repeat(30));
    let quoted = format!("\"{}{}\"", p.to_uppercase(), "Q".repeat(70));
    (
        long,
        long_other_tail,
        cut,
        too_long,
        multibyte,
        mb_cut,
        quoted,
    )
}

fn a7_truncation(p: &str) -> Scenario {
    let (long, long_other_tail, cut, too_long, multibyte, mb_cut, quoted) = a7_names(p);
    Scenario::new("a7 truncation", 2)
        .s(0, &format!("LISTEN {long}"))
        .s(0, &format!("LISTEN {multibyte}"))
        .s(0, &format!("LISTEN {quoted}"))
        .s(0, "SELECT pg_listening_channels()")
        .s(1, &format!("NOTIFY {long}, 'via NOTIFY'"))
        .s(1, &format!("NOTIFY {long_other_tail}, 'same cut'"))
        .s(1, &format!("SELECT pg_notify('{cut}', '63 bytes')"))
        .s(1, &format!("SELECT pg_notify('{too_long}', '64 bytes')"))
        .s(1, &format!("SELECT pg_notify('{mb_cut}', 'multibyte')"))
        .s(1, &format!("NOTIFY {quoted}, 'quoted'"))
        .s(0, &format!("UNLISTEN {long}"))
        .s(0, "SELECT pg_listening_channels()")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_payload_limit() {
    let ok = "x".repeat(7999);
    let over = "x".repeat(8000);
    let mb_ok = format!("{}a", "é".repeat(3999));
    let mb_over = "é".repeat(4000);
    check_protocols(|_| {
        Scenario::new("a8 payload limit", 2)
            .s(0, "LISTEN a8c")
            .s(1, &format!("NOTIFY a8c, '{ok}'"))
            .s(1, &format!("NOTIFY a8c, '{over}'"))
            .s(1, &format!("SELECT pg_notify('a8c', '{ok}y')"))
            .s(1, &format!("SELECT pg_notify('a8c', '{over}')"))
            .s(1, &format!("NOTIFY a8c, '{mb_ok}'"))
            .s(1, &format!("NOTIFY a8c, '{mb_over}'"))
            .s(1, "BEGIN")
            .s(1, "NOTIFY a8c, 'before the error'")
            .s(1, &format!("NOTIFY a8c, '{over}'"))
            .s(1, "COMMIT")
    })
    .await;
    check(
        &Scenario::new("a8 bound payload", 2).q(0, "LISTEN a8c").ext(
            1,
            vec![
                parse("", "SELECT pg_notify($1,$2)"),
                bind("", "", &[Some("a8c"), Some(&over)]),
                describe_portal(""),
                execute(""),
                Fe::Sync,
            ],
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a9_pg_notify_null_and_empty() {
    check_protocols(|_| {
        Scenario::new("a9 NULL and empty arguments", 2)
            .s(0, "LISTEN a9c")
            .s(1, "SELECT pg_notify(NULL,'x')")
            .s(1, "SELECT pg_notify('','x')")
            .s(1, "SELECT pg_notify(NULL, NULL)")
            .s(1, "SELECT pg_notify('a9c', NULL)")
            .s(1, "BEGIN")
            .s(1, "SELECT pg_notify('', 'x')")
            .s(1, "ROLLBACK")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a10_extended_protocol() {
    let sync = |mut v: Vec<Fe>| {
        v.push(Fe::Sync);
        v
    };
    let sc = Scenario::new("a10 extended protocol", 2)
        .q(0, "LISTEN a10c")
        // Parameters are not allowed in NOTIFY or LISTEN: the error comes at Parse.
        .ext(
            1,
            sync(vec![
                parse("", "NOTIFY a10c, $1"),
                bind("", "", &[Some("x")]),
                execute(""),
            ]),
        )
        .ext(
            1,
            sync(vec![
                parse("", "LISTEN $1"),
                bind("", "", &[Some("a10c")]),
                execute(""),
            ]),
        )
        // Named statement and portal; Describe of both.
        .ext(
            1,
            sync(vec![parse("a10l", "LISTEN a10d"), describe_stmt("a10l")]),
        )
        .ext(
            1,
            sync(vec![
                bind("a10p", "a10l", &[]),
                describe_portal("a10p"),
                execute("a10p"),
                Fe::Close(b'P', "a10p".into()),
                Fe::Close(b'S', "a10l".into()),
            ]),
        )
        // A NULL channel fails at Execute, after BindComplete.
        .ext(
            1,
            sync(vec![
                parse("", "SELECT pg_notify($1,$2)"),
                bind("", "", &[None, Some("x")]),
                describe_portal(""),
                execute(""),
            ]),
        )
        .ext(
            1,
            sync(vec![
                parse("", "SELECT pg_notify($1,$2)"),
                bind("", "", &[Some("a10c"), None]),
                execute(""),
            ]),
        )
        // Intercepted and forwarded statements mixed in one batch.
        .ext(
            1,
            sync(vec![
                parse("", "SELECT 1"),
                bind("", "", &[]),
                execute(""),
                parse("", "NOTIFY a10c, 'mixed'"),
                bind("", "", &[]),
                execute(""),
                parse("", "SELECT 2"),
                bind("", "", &[]),
                describe_portal(""),
                execute(""),
            ]),
        )
        // Typed parameters and a literal argument.
        .ext(
            1,
            sync(vec![
                Fe::Parse(
                    "a10t".into(),
                    "SELECT pg_notify($1, 'lit')".into(),
                    vec![25],
                ),
                describe_stmt("a10t"),
                bind("", "a10t", &[Some("a10c")]),
                execute(""),
            ]),
        )
        .ext(
            1,
            sync(vec![
                Fe::Parse("".into(), "SELECT pg_notify($1,$2)".into(), vec![0, 0]),
                describe_stmt(""),
            ]),
        )
        .q(1, "SELECT pg_listening_channels()");
    check(&sc).await;
    // Flush without Sync: replies come, the notification waits for Sync.
    check(
        &Scenario::new("a10 flush before sync", 2)
            .q(0, "LISTEN a10c")
            .ext(
                1,
                vec![
                    parse("", "NOTIFY a10c, 'flushed'"),
                    bind("", "", &[]),
                    execute(""),
                    Fe::Flush,
                ],
            )
            .ext(1, vec![Fe::Sync]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_pg_notify_in_other_select_forms() {
    // Forms the spec does not list but applications write. pgherald forwards them and the
    // upstream relay brings back what Postgres raised (spec E).
    check_protocols(|_| {
        Scenario::new("a2 other SELECT forms", 2)
            .s(0, "LISTEN a2x")
            .s(1, "SELECT pg_notify('a2x', 'alias') AS n")
            .s(1, "SELECT pg_notify('a2x', 'cast')::text")
            .s(1, "select pg_catalog.pg_notify('a2x', 'qualified')")
            .s(
                1,
                "SELECT pg_notify('a2x', 'two'), pg_notify('a2x', 'three')",
            )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_listening_channels_in_other_select_forms() {
    // Forms the spec does not list but applications write. pgherald rewrites the call in the
    // text it forwards; names, rows and error positions must be Postgres's.
    check_protocols(|_| {
        Scenario::new("a3 other SELECT forms", 1)
            .s(0, "LISTEN a3o")
            .s(0, r#"LISTEN "a3 ""q"" \ it's""#)
            .s(0, "SELECT * FROM pg_listening_channels()")
            .s(0, "SELECT pg_listening_channels() AS ch")
            .s(0, "SELECT count(*) FROM pg_listening_channels()")
            .s(0, "SELECT x FROM pg_listening_channels() AS x ORDER BY x")
            .s(0, "SELECT * FROM pg_listening_channels() WITH ORDINALITY")
            .s(
                0,
                "SELECT pg_listening_channels FROM pg_catalog.pg_listening_channels() \
                 WHERE pg_listening_channels LIKE 'a3%'",
            )
            .s(0, "SELECT 'a3o' IN (SELECT pg_listening_channels()) AS listening")
            .s(
                0,
                "SELECT upper(pg_listening_channels()), (pg_listening_channels())::varchar",
            )
            .s(
                0,
                "SELECT (SELECT count(*) FROM pg_listening_channels() c WHERE c <> 'x') AS n",
            )
            .s(
                0,
                "SELECT * FROM ROWS FROM (pg_listening_channels()) WITH ORDINALITY AS t",
            )
            .s(0, "SELECT * FROM (SELECT pg_listening_channels()) s, lateral upper(s.pg_listening_channels)")
            .s(
                0,
                "SELECT DISTINCT ON (1) pg_listening_channels()::varchar(40), 1 AS one \
                 FROM ROWS FROM (pg_listening_channels()) ORDER BY 1",
            )
            .s(
                0,
                "SELECT * FROM pg_listening_channels() JOIN pg_listening_channels() b \
                 ON b = pg_listening_channels.pg_listening_channels ORDER BY 1",
            )
            .s(0, "SELECT pg_listening_channels() FROM a3_no_such_table")
            .s(0, "SELECT 1 WHERE pg_listening_channels() = 'x'")
            .s(0, "SELECT pg_listening_channels() FROM")
            .s(0, "UNLISTEN a3o")
            .s(0, "SELECT array_agg(c) FROM pg_listening_channels() c")
            .s(0, "UNLISTEN *")
            .s(0, "SELECT count(*) FROM pg_listening_channels()")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_listening_channels_in_transactions_and_prepared_statements() {
    // The committed set only, as of the statement: a COMMIT earlier in the same Query counts.
    check(
        &Scenario::new("a3 forms in a multi-statement Query", 1)
            .q(0, "LISTEN a3t")
            .q(
                0,
                "BEGIN; LISTEN a3u; SELECT count(*) FROM pg_listening_channels(); COMMIT; \
                 SELECT array_agg(c) FROM pg_listening_channels() c",
            )
            .q(
                0,
                "LISTEN a3v; SELECT count(*) FROM pg_listening_channels(); COMMIT; \
                 SELECT count(*) FROM pg_listening_channels(); UNLISTEN *; ROLLBACK; \
                 SELECT count(*) FROM pg_listening_channels()",
            )
            .q(0, "BEGIN")
            .q(0, "SELECT 1/0")
            .q(
                0,
                "LISTEN a3w; COMMIT; SELECT count(*) FROM pg_listening_channels() -- rolled back",
            )
            .q(
                0,
                "COMMIT; SELECT count(*) FROM pg_listening_channels(); SELECT 1 FROM a3_none",
            ),
    )
    .await;
    // Notices raised while the server parses the rewritten text point into the client's.
    check_protocols(|_| {
        Scenario::new("a3 positions of notices", 1)
            .s(0, r#"LISTEN "a3\b""#)
            .q(0, "SET standard_conforming_strings = off")
            .s(0, r"SELECT pg_listening_channels(), 'x\\y' AS v")
            .s(0, r"SELECT c, 'x\\y' FROM pg_listening_channels() c")
            .q(0, "RESET standard_conforming_strings")
    })
    .await;
    // Prepared statements see the set at each execution; their parameters are the client's.
    check(
        &Scenario::new("a3 forms in prepared statements", 1)
            .q(0, "LISTEN a3p")
            .ext(
                0,
                vec![
                    parse("n", "SELECT count(*) FROM pg_listening_channels()"),
                    describe_stmt("n"),
                    bind("", "n", &[]),
                    execute(""),
                    parse(
                        "p",
                        "SELECT $1::text || c FROM pg_listening_channels() c WHERE c <> $2",
                    ),
                    describe_stmt("p"),
                    bind("", "p", &[Some("+"), Some("none")]),
                    describe_portal(""),
                    execute(""),
                    Fe::Parse(
                        "b".into(),
                        "SELECT $1 + count(*) FROM pg_listening_channels()".into(),
                        vec![20],
                    ),
                    describe_stmt("b"),
                    Fe::Bind(
                        "".into(),
                        "b".into(),
                        vec![1],
                        vec![Some(5i64.to_be_bytes().to_vec())],
                        vec![],
                    ),
                    execute(""),
                    Fe::Sync,
                ],
            )
            .q(0, "LISTEN a3q")
            .ext(
                0,
                vec![
                    bind("", "n", &[]),
                    execute(""),
                    bind("", "p", &[Some("-"), Some("a3p")]),
                    execute(""),
                    Fe::Bind(
                        "".into(),
                        "b".into(),
                        vec![1],
                        vec![Some(7i64.to_be_bytes().to_vec())],
                        vec![],
                    ),
                    execute(""),
                    Fe::Sync,
                ],
            )
            // A LISTEN committed at an earlier Sync of the same pipeline counts; one in the
            // same implicit transaction does not.
            .ext(
                0,
                vec![
                    parse("", "LISTEN a3r"),
                    bind("", "", &[]),
                    execute(""),
                    Fe::Sync,
                    bind("", "n", &[]),
                    execute(""),
                    parse("", "LISTEN a3s"),
                    bind("", "", &[]),
                    execute(""),
                    bind("", "n", &[]),
                    execute(""),
                    Fe::Sync,
                ],
            )
            .ext(
                0,
                vec![
                    parse("e", "SELECT pg_listening_channels() FROM a3_missing"),
                    Fe::Sync,
                ],
            )
            .ext(
                0,
                vec![
                    Fe::Close(b'S', "n".into()),
                    parse("n", "SELECT 1"),
                    bind("", "n", &[]),
                    execute(""),
                    Fe::Sync,
                ],
            ),
    )
    .await;
}
