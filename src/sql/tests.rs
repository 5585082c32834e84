//! Unit tests of the `sql` module against PostgreSQL 15 behaviour. Every expected error message,
//! position, notice and decoded value below was observed on a real PostgreSQL 15.18 server.

use super::*;

fn kinds(sql: &str, scs: bool) -> Vec<Kind> {
    classify(sql, scs).into_iter().map(|s| s.kind).collect()
}

fn one(sql: &str) -> Kind {
    one_scs(sql, true)
}

fn one_scs(sql: &str, scs: bool) -> Kind {
    let mut v = kinds(sql, scs);
    assert_eq!(v.len(), 1, "{sql:?} → {v:?}");
    v.remove(0)
}

/// The NOTIFY's (channel, payload, notices) as strings.
fn notify(sql: &str, scs: bool) -> (String, String, Vec<Notice>) {
    match one_scs(sql, scs) {
        Kind::Notify {
            channel,
            payload,
            truncated,
            warnings,
        } => (
            String::from_utf8(channel).expect("utf8"),
            String::from_utf8(payload).expect("utf8"),
            truncated.into_iter().chain(warnings).collect(),
        ),
        other => panic!("{sql:?} → {other:?}"),
    }
}

fn syntax(message: &str, position: u32) -> Kind {
    Kind::SyntaxError {
        sqlstate: "42601",
        message: message.to_string(),
        position,
    }
}

#[test]
fn spec_a4_payload_forms() {
    for (sql, payload) in [
        ("NOTIFY c, 'x'", "x"),
        ("NOTIFY/*c*/p  ,  'x' ;", "x"),
        ("notify C, 'it''s'", "it's"),
        ("NOTIFY c, E'tab\\there'", "tab\there"),
        (
            "NOTIFY c, E'\\b\\f\\n\\r\\t\\v\\z\\'\\\\'",
            "\u{8}\u{c}\n\r\tvz'\\",
        ),
        (
            "NOTIFY c, E'\\x41\\101\\u0041\\U00000041\\x4g\\xg'",
            "AAAA\u{4}gxg",
        ),
        ("NOTIFY c, E'\\uD83D\\uDE00\\é'", "😀é"),
        ("NOTIFY c, $$x$$", "x"),
        ("NOTIFY c, $tag$x;$y$ $$ $ta$tag$", "x;$y$ $$ $ta"),
        ("NOTIFY c, $a$x$b$$a$", "x$b$"),
        ("NOTIFY c, U&'d\\0061t\\+000061'", "data"),
        ("NOTIFY c, U&'d!0061t!!' UESCAPE '!'", "dat!"),
        ("NOTIFY c, U&'\\D83D\\DE00\\\\'", "😀\\"),
        ("NOTIFY c, U&'a\\0062'\n'\\0063'", "abc"),
        ("NOTIFY c, 'a'\n'b'", "ab"),
        ("NOTIFY c, 'a' -- c\n'b' --d\n\n  'c'", "abc"),
        ("NOTIFY c, E'a'\n'\\n'", "a\n"),
        ("NOTIFY c, 'a\\b'", "a\\b"),
        ("NOTIFY c, ''", ""),
        ("NOTIFY c", ""),
        ("NOTIFY c ;", ""),
    ] {
        let (channel, got, notices) = notify(sql, true);
        let want_channel = if sql.starts_with("NOTIFY/*c*/p") {
            "p"
        } else {
            "c"
        };
        assert_eq!(
            (channel.as_str(), got.as_str()),
            (want_channel, payload),
            "{sql:?}"
        );
        assert!(notices.is_empty(), "{sql:?}");
    }
}

#[test]
fn spec_a4_standard_conforming_strings_off() {
    let cases = [
        (
            "NOTIFY c, 'back\\\\slash'",
            "back\\slash",
            "nonstandard use of \\\\ in a string literal",
            "Use the escape string syntax for backslashes, e.g., E'\\\\'.",
        ),
        (
            "NOTIFY c, 'a\\'b'",
            "a'b",
            "nonstandard use of \\' in a string literal",
            "Use '' to write quotes in strings, or use the escape string syntax (E'...').",
        ),
        (
            "NOTIFY c, 'a\\nb'",
            "a\nb",
            "nonstandard use of escape in a string literal",
            "Use the escape string syntax for escapes, e.g., E'\\r\\n'.",
        ),
        (
            "NOTIFY c, 'a\\u0041'",
            "aA",
            "nonstandard use of escape in a string literal",
            "Use the escape string syntax for escapes, e.g., E'\\r\\n'.",
        ),
    ];
    for (sql, payload, message, hint) in cases {
        let (_, got, notices) = notify(sql, false);
        assert_eq!(got, payload, "{sql:?}");
        let expected = Notice {
            severity: "WARNING",
            sqlstate: "22P06",
            message: message.to_string(),
            hint: Some(hint),
            position: Some(11),
        };
        assert_eq!(notices, vec![expected], "{sql:?}");
    }
    // One warning per constant, decided by its first escape; continuation pieces included.
    let (_, got, notices) = notify("NOTIFY c, 'a\\n' \n'\\\\b'", false);
    assert_eq!(got, "a\n\\b");
    assert_eq!(notices.len(), 1);
    assert_eq!(
        notices[0].message,
        "nonstandard use of escape in a string literal"
    );
    // No warning without backslashes, nor for E'' or dollar quotes.
    for sql in [
        "NOTIFY c, 'it''s'",
        "NOTIFY c, E'a\\\\b'",
        "NOTIFY c, $$a\\b$$",
    ] {
        assert!(notify(sql, false).2.is_empty(), "{sql:?}");
    }
    // U&'' is an error when standard_conforming_strings is off: Postgres reports it.
    assert_eq!(one_scs("NOTIFY c, U&'x'", false), Kind::Other);
}

/// Spec A5 (and A10, A7 neighbours): statement, exact message, 1-based character position, each
/// as PostgreSQL 15.18 reported it.
#[rustfmt::skip]
const SYNTAX_ERRORS: &[(&str, &str, u32)] = &[
    ("NOTIFY c, NULL", "syntax error at or near \"NULL\"", 11),
    ("NOTIFY c, 'a'||'b'", "syntax error at or near \"||\"", 14),
    ("NOTIFY c, 5", "syntax error at or near \"5\"", 11),
    ("NOTIFY c, $1", "syntax error at or near \"$1\"", 11),
    ("LISTEN $1", "syntax error at or near \"$1\"", 8),
    ("LISTEN *", "syntax error at or near \"*\"", 8),
    ("UNLISTEN ALL", "syntax error at or near \"ALL\"", 10),
    ("NOTIFY select", "syntax error at or near \"select\"", 8),
    ("LISTEN user", "syntax error at or near \"user\"", 8),
    ("PREPARE x AS NOTIFY c", "syntax error at or near \"NOTIFY\"", 14),
    ("PREPARE x AS LISTEN c", "syntax error at or near \"LISTEN\"", 14),
    ("PREPARE x (int, text) AS UNLISTEN *", "syntax error at or near \"UNLISTEN\"", 26),
    ("NOTIFY \"\"", "zero-length delimited identifier at or near \"\"\"\"", 8),
    ("NOTIFY U&\"\"", "zero-length delimited identifier at or near \"U&\"\"\"", 8),
    ("LISTEN c \"\"", "zero-length delimited identifier at or near \"\"\"\"", 10),
    ("NOTIFY c,", "syntax error at end of input", 10),
    ("NOTIFY c,   ", "syntax error at end of input", 13),
    ("NOTIFY c, -- x", "syntax error at end of input", 15),
    ("NOTIFY", "syntax error at end of input", 7),
    ("NOTIFY;", "syntax error at or near \";\"", 7),
    ("LISTEN c d", "syntax error at or near \"d\"", 10),
    ("LISTEN c.d", "syntax error at or near \".\"", 9),
    ("NOTIFY c 'x'", "syntax error at or near \"'x'\"", 10),
    ("NOTIFY c, 'x',", "syntax error at or near \",\"", 14),
    ("NOTIFY c, 'x' 'y'", "syntax error at or near \"'y'\"", 15),
    ("NOTIFY c, 'a' /* x */\n'b'", "syntax error at or near \"'b'\"", 23),
    ("NOTIFY c, B'01'", "syntax error at or near \"B'01'\"", 11),
    ("NOTIFY c, X'ff'", "syntax error at or near \"X'ff'\"", 11),
    ("NOTIFY c, N'x'", "syntax error at or near \"N\"", 11),
    ("LISTEN N'x'", "syntax error at or near \"'x'\"", 9),
    ("NOTIFY c, 1.5", "syntax error at or near \"1.5\"", 11),
    ("NOTIFY c, 'x' ||-'y'", "syntax error at or near \"||-\"", 15),
    ("NOTIFY c, 'x' +- 1", "syntax error at or near \"+\"", 15),
    ("NOTIFY c, 'x'::text", "syntax error at or near \"::\"", 14),
    ("LISTEN 'x'", "syntax error at or near \"'x'\"", 8),
    ("LISTEN nulls first", "syntax error at or near \"nulls\"", 8),
    ("LISTEN c nulls \"\"", "zero-length delimited identifier at or near \"\"\"\"", 16),
    ("NOTIFY c, 'x' U&'y' UESCAPE '!'", "syntax error at or near \"U&'y' UESCAPE '!'\"", 15),
    ("NOTIFY c, 'x' U&\"a\" y", "syntax error at or near \"U&\"a\"\"", 15),
    ("NOTIFY c, 'a'\n'b' x", "syntax error at or near \"x\"", 19),
    ("LISTEN éé; NOTIFY 𝄞, 5", "syntax error at or near \"5\"", 22),
    ("LISTEN c; LISTEN user", "syntax error at or near \"user\"", 18),
    ("/* é */ LISTEN\n\t*", "syntax error at or near \"*\"", 17),
    ("UNLISTEN * x", "syntax error at or near \"x\"", 12),
    ("UNLISTEN", "syntax error at end of input", 9),
    ("LISTEN current_user", "syntax error at or near \"current_user\"", 8),
    ("LISTEN verbose", "syntax error at or near \"verbose\"", 8),
    ("NOTIFY c, $$x$$ $$y$$", "syntax error at or near \"$$y$$\"", 17),
    ("NOTIFY c, 'x' ;  NOTIFY c, 'y' junk", "syntax error at or near \"junk\"", 32),
    ("LISTEN c :=", "syntax error at or near \":=\"", 10),
    ("LISTEN c */", "syntax error at or near \"*/\"", 10),
    ("LISTEN c +/*x*/", "syntax error at or near \"+\"", 10),
    ("LISTEN c $", "syntax error at or near \"$\"", 10),
    ("LISTEN c {", "syntax error at or near \"{\"", 10),
];

#[test]
fn spec_a5_syntax_errors_exact() {
    for &(sql, message, position) in SYNTAX_ERRORS {
        let v = kinds(sql, true);
        let got = v.iter().find(|k| matches!(k, Kind::SyntaxError { .. }));
        assert_eq!(got, Some(&syntax(message, position)), "{sql:?} → {v:?}");
    }
}

#[test]
fn spec_a5_first_error_follows_other() {
    // The first statement is Other (Postgres rejects it first); the NOTIFY error is still reported
    // for the statement itself, and the caller forwards because an Other precedes it.
    assert_eq!(
        kinds("éé€; NOTIFY ééé, 5", true),
        vec![Kind::Other, syntax("syntax error at or near \"5\"", 18)]
    );
}

#[test]
fn spec_a5_keywords_as_channels() {
    for (sql, channel) in [
        ("NOTIFY int", "int"),
        ("NOTIFY \"select\"", "select"),
        ("LISTEN nulls", "nulls"),
        ("LISTEN between", "between"),
        ("LISTEN listen", "listen"),
        ("NOTIFY a$b", "a$b"),
    ] {
        let k = one(sql);
        let got = match &k {
            Kind::Listen { channel, .. } | Kind::Notify { channel, .. } => channel.clone(),
            _ => panic!("{sql:?} → {k:?}"),
        };
        assert_eq!(got, channel.as_bytes(), "{sql:?}");
    }
}

#[test]
fn spec_a5_lexical_errors_are_forwarded() {
    // Postgres reports these itself (other messages or SQLSTATEs): never guess, forward.
    for sql in [
        "NOTIFY c, 5x",
        "NOTIFY c, $1x",
        "NOTIFY c, 1e",
        "NOTIFY c, 'unterminated",
        "NOTIFY c, $$x",
        "LISTEN \"c",
        "LISTEN c /* open",
        "NOTIFY c, E'\\xff'",
        "NOTIFY c, E'\\0'",
        "NOTIFY c, E'\\u12'",
        "NOTIFY c, E'\\uD83Dx'",
        "NOTIFY c, U&'\\0000'",
        "NOTIFY c, U&'x' UESCAPE 'ab'",
        "NOTIFY c, U&'x' UESCAPE x",
        "LISTEN U&\"\\zz\"",
        "LISTEN E'\\u12'",
        "NOTIFY c, 'x' 1e",
    ] {
        assert_eq!(one(sql), Kind::Other, "{sql:?}");
    }
}

#[test]
fn spec_a6_channel_names() {
    for (sql, channel) in [
        ("LISTEN ÀbC", "Àbc"),
        ("NOTIFY \"MixedCase\"", "MixedCase"),
        ("NOTIFY \"a b\"", "a b"),
        ("NOTIFY \"q\"\"uote\"", "q\"uote"),
        ("NOTIFY U&\"\\0066oo\"", "foo"),
        ("NOTIFY U&\"!0066oo\" UESCAPE '!'", "foo"),
        ("NOTIFY U&\"\\+01D11E\"", "𝄞"),
        ("UNLISTEN MiXeD", "mixed"),
        ("unlisten \"C\"", "C"),
    ] {
        let k = one(sql);
        let got = match &k {
            Kind::Listen { channel, .. }
            | Kind::Unlisten { channel, .. }
            | Kind::Notify { channel, .. } => channel.clone(),
            _ => panic!("{sql:?} → {k:?}"),
        };
        assert_eq!(got, channel.as_bytes(), "{sql:?}");
    }
    assert_eq!(one("UNLISTEN *"), Kind::UnlistenAll);
    assert_eq!(one("unlisten/**/*;"), Kind::UnlistenAll);
}

#[test]
fn spec_a7_truncation_notice() {
    let long = "Ab".repeat(40);
    let folded = long.to_ascii_lowercase();
    let k = one(&format!("LISTEN {long}"));
    let expected = Kind::Listen {
        channel: folded.as_bytes()[..63].to_vec(),
        truncated: Some(Notice {
            severity: "NOTICE",
            sqlstate: "42622",
            message: format!(
                "identifier \"{folded}\" will be truncated to \"{}\"",
                &folded[..63]
            ),
            hint: None,
            position: None,
        }),
    };
    assert_eq!(k, expected);
    // Character boundary: 62 ASCII bytes then a 2-byte char → 62 bytes.
    let name = format!("{}éé", "a".repeat(62));
    let (channel, _, notices) = notify(&format!("NOTIFY \"{name}\""), true);
    assert_eq!(channel, "a".repeat(62));
    assert_eq!(notices.len(), 1);
    // Exactly 63 bytes: no notice.
    let (channel, _, notices) = notify(&format!("NOTIFY {}", "x".repeat(63)), true);
    assert_eq!((channel.len(), notices.len()), (63, 0));
}

#[test]
fn spec_a10_parse_message_errors() {
    assert_eq!(
        one("NOTIFY c, $1"),
        syntax("syntax error at or near \"$1\"", 11)
    );
    assert_eq!(
        one("LISTEN $1"),
        syntax("syntax error at or near \"$1\"", 8)
    );
    assert_eq!(
        one("LISTEN p"),
        Kind::Listen {
            channel: b"p".to_vec(),
            truncated: None
        }
    );
}

/// Checks the invariants every classification must hold.
fn check_invariants(sql: &str, scs: bool) {
    let v = classify(sql, scs);
    assert!(!v.is_empty(), "{sql:?}");
    let chars = u32::try_from(sql.chars().count()).unwrap_or(u32::MAX);
    let mut prev_end = 0;
    for s in &v {
        assert!(
            s.range.start >= prev_end && s.range.start <= s.range.end,
            "{sql:?} {v:?}"
        );
        assert!(sql.get(s.range.clone()).is_some(), "{sql:?} {v:?}");
        prev_end = s.range.end;
        if let Kind::SyntaxError { position, .. } = s.kind {
            assert!(position >= 1 && position <= chars + 1, "{sql:?} {v:?}");
        }
    }
}

#[test]
fn never_panics_on_prefixes_of_tricky_input() {
    let tricky = [
        "NOTIFY \"q\"\"x\", E'a\\'b\\x41\\u00e9\\U0001D11E' ; LISTEN U&\"!0041\" UESCAPE '!'",
        "SELECT pg_notify($1::text, U&'\\D83D\\DE00'\n'x'); /* a /* b */ c */ -- d\n$t$x$t$",
        "NOTIFY c, 'a' -- c\n'b'; UNLISTEN *; B'01' X'ff' N'x' 1.5e+3 .5 $ $1 :: := .. <=> ||-",
        "CREATE FUNCTION f() BEGIN ATOMIC SELECT CASE WHEN 1 THEN 2 END; END; ROLLBACK TO s",
        "é€𝄞\"é\"'é'$é$é$é$U&\"\\00e9\"",
    ];
    for sql in tricky {
        for (i, _) in sql.char_indices().chain([(sql.len(), ' ')]) {
            check_invariants(&sql[..i], true);
            check_invariants(&sql[..i], false);
        }
    }
}

#[test]
fn never_panics_on_random_input() {
    const PARTS: [&str; 40] = [
        "NOTIFY",
        "LISTEN",
        "UNLISTEN",
        "SELECT",
        "pg_notify",
        "(",
        ")",
        ",",
        ";",
        "'",
        "\"",
        "$",
        "$$",
        "$a$",
        "E'",
        "U&'",
        "U&\"",
        "UESCAPE",
        "\\",
        "\\u",
        "\\x",
        "--",
        "\n",
        "/*",
        "*/",
        " ",
        "é",
        "𝄞",
        "*",
        "::",
        "text",
        "NULL",
        "1",
        "1e",
        ".",
        "BEGIN",
        "ATOMIC",
        "END",
        "nulls",
        "first",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let n = (next() % 12) as usize;
        let sql: String = (0..n)
            .map(|_| PARTS[(next() % PARTS.len() as u64) as usize])
            .collect();
        check_invariants(&sql, next() % 2 == 0);
    }
}

#[test]
fn spec_b13_omitted_and_empty_payloads_are_equal() {
    let (_, a, _) = notify("NOTIFY c", true);
    let (_, b, _) = notify("NOTIFY c, ''", true);
    assert_eq!(a, b);
    let k = one("SELECT pg_notify('c', NULL)");
    assert!(matches!(
        k,
        Kind::PgNotify {
            payload: Arg::Literal(None),
            ..
        }
    ));
}

#[test]
fn lexer_token_texts() {
    use super::lexer::{Lexer, Tok};
    let sql =
        "a$b $$x$$ 'p'\n'q' U&'x' UESCAPE '!' ||- +- 1e5 .5 1..2 $1 $x :: := B'1' N'n' \"\" 5x";
    let mut lexer = Lexer::new(sql, true);
    let mut got = Vec::new();
    while let Some(t) = lexer.next_token() {
        got.push((&sql[t.start..t.end], matches!(t.tok, Tok::Error(_))));
    }
    let texts: Vec<&str> = got.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        texts,
        [
            "a$b",
            "$$x$$",
            "'p'\n'q'",
            "U&'x' UESCAPE '!'",
            "||-",
            "+",
            "-",
            "1e5",
            ".5",
            "1",
            "..",
            "2",
            "$1",
            "$",
            "x",
            "::",
            ":=",
            "B'1'",
            "N",
            "'n'",
            "\"\"",
            "5x"
        ]
    );
    let errors: Vec<&str> = got.iter().filter(|(_, e)| *e).map(|(t, _)| *t).collect();
    assert_eq!(errors, ["\"\"", "5x"]);
}

#[test]
fn deallocate_forms() {
    let d = |n: &str| Kind::Deallocate(n.as_bytes().to_vec());
    assert_eq!(one("DEALLOCATE _pg3_0"), d("_pg3_0"));
    assert_eq!(one("deallocate prepare S1;"), d("s1"));
    assert_eq!(one("DEALLOCATE \"S1\""), d("S1"));
    assert_eq!(one("DEALLOCATE prepare"), d("prepare"));
    assert_eq!(one("DEALLOCATE ALL"), Kind::DeallocateAll);
    assert_eq!(one("DEALLOCATE PREPARE all"), Kind::DeallocateAll);
    for sql in [
        "DEALLOCATE",
        "DEALLOCATE a b",
        "DEALLOCATE 'a'",
        "DEALLOCATE select",
        "DEALLOCATE x123456789012345678901234567890123456789012345678901234567890123",
    ] {
        assert_eq!(one(sql), Kind::Other, "{sql:?}");
    }
}
