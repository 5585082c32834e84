//! The two SELECT shapes pgherald answers itself: standalone `SELECT pg_notify(a, b)` and
//! `SELECT pg_listening_channels()` / `SELECT * FROM pg_listening_channels()` (optionally
//! `pg_catalog.`-qualified). A small token matcher: any other shape (extra columns, FROM, WHERE,
//! aliases, expressions, other casts) is [`Kind::Other`] and runs on Postgres.

use super::ctx::Ctx;
use super::ident::ident_value;
use super::lexer::Tok;
use super::{Arg, Kind};

/// Classifies a statement starting with `SELECT`.
pub(crate) fn select(c: &Ctx) -> Kind {
    if c.char(1, b'*') {
        if !c.word(2, "from") {
            return Kind::Other;
        }
        return match function(c, 3) {
            Some((Func::ListeningChannels, i)) if c.char(i, b')') && c.len() == i + 1 => {
                Kind::ListeningChannels
            }
            _ => Kind::Other,
        };
    }
    match function(c, 1) {
        Some((Func::ListeningChannels, i)) if c.char(i, b')') && c.len() == i + 1 => {
            Kind::ListeningChannels
        }
        Some((Func::Notify, i)) => pg_notify(c, i).unwrap_or(Kind::Other),
        _ => Kind::Other,
    }
}

/// The functions recognised.
enum Func {
    Notify,
    ListeningChannels,
}

/// `[pg_catalog .] name (` at `i`: which function, and the index just after `(`.
fn function(c: &Ctx, mut i: usize) -> Option<(Func, usize)> {
    if c.char(i + 1, b'.') {
        if name(c, i)?.as_slice() != b"pg_catalog" {
            return None;
        }
        i += 2;
    }
    let func = match name(c, i)?.as_slice() {
        b"pg_notify" => Func::Notify,
        b"pg_listening_channels" => Func::ListeningChannels,
        _ => return None,
    };
    c.char(i + 1, b'(').then_some((func, i + 2))
}

/// The identifier at `i`, folded or de-quoted.
fn name(c: &Ctx, i: usize) -> Option<Vec<u8>> {
    ident_value(c.src, c.toks.get(i)?)
}

/// `arg , arg )` then the end of the statement, from `i`.
fn pg_notify(c: &Ctx, i: usize) -> Option<Kind> {
    let mut warnings = Vec::new();
    let (channel, i) = arg(c, i, &mut warnings)?;
    if !c.char(i, b',') {
        return None;
    }
    let (payload, i) = arg(c, i + 1, &mut warnings)?;
    if !c.char(i, b')') || c.len() != i + 1 {
        return None;
    }
    Some(Kind::PgNotify {
        channel,
        payload,
        warnings,
    })
}

/// One argument at `i` (string constant, `NULL` or `$n`, optionally `::text`) and the index after.
fn arg(c: &Ctx, i: usize, warnings: &mut Vec<super::Notice>) -> Option<(Arg, usize)> {
    let t = c.toks.get(i)?;
    let value = match t.tok {
        Tok::Str(_) => {
            let (value, warning) = c.literal(i)?;
            warnings.extend(warning);
            Arg::Literal(Some(value))
        }
        Tok::Word if c.word(i, "null") => Arg::Literal(None),
        Tok::Param => {
            let digits = std::str::from_utf8(c.text(t).get(1..)?).ok()?;
            let n: u16 = digits.parse().ok()?;
            if n == 0 {
                return None;
            }
            Arg::Param(n)
        }
        _ => return None,
    };
    let next = c.toks.get(i + 1);
    if next.is_some_and(|n| n.tok == Tok::Typecast) {
        if name(c, i + 2)?.as_slice() != b"text" {
            return None;
        }
        return Some((value, i + 3));
    }
    Some((value, i + 1))
}

#[cfg(test)]
mod tests {
    use crate::sql::{classify, Arg, Kind};

    fn one(sql: &str) -> Kind {
        one_scs(sql, true)
    }

    fn one_scs(sql: &str, scs: bool) -> Kind {
        let mut v = classify(sql, scs);
        assert_eq!(v.len(), 1, "{sql:?}");
        v.remove(0).kind
    }

    #[test]
    fn spec_a2_pg_notify() {
        let lit = |s: &str| Arg::Literal(Some(s.as_bytes().to_vec()));
        for (sql, channel, payload) in [
            ("SELECT pg_notify('c','x')", lit("c"), lit("x")),
            (
                "select PG_NOTIFY('c'::text, 'y'::text);",
                lit("c"),
                lit("y"),
            ),
            (
                "SELECT pg_catalog.pg_notify('c', NULL)",
                lit("c"),
                Arg::Literal(None),
            ),
            (
                "SELECT pg_notify(NULL::text, '')",
                Arg::Literal(None),
                lit(""),
            ),
            ("SELECT \"pg_notify\"(E'\\x41', $$z$$)", lit("A"), lit("z")),
            ("SELECT pg_notify($1, $2)", Arg::Param(1), Arg::Param(2)),
            (
                "SELECT pg_notify($2::text, $1) ;",
                Arg::Param(2),
                Arg::Param(1),
            ),
            (
                "SELECT /* c */ pg_notify ( 'Ch' , U&'\\0041' )",
                lit("Ch"),
                lit("A"),
            ),
        ] {
            assert_eq!(
                one(sql),
                Kind::PgNotify {
                    channel,
                    payload,
                    warnings: vec![]
                },
                "{sql:?}"
            );
        }
        match one_scs("SELECT pg_notify('c', 'a\\\\b')", false) {
            Kind::PgNotify {
                payload, warnings, ..
            } => {
                assert_eq!(payload, lit("a\\b"));
                assert_eq!(warnings.len(), 1);
                assert_eq!(warnings[0].position, Some(23));
            }
            other => panic!("{other:?}"),
        }
        for sql in [
            "SELECT pg_notify('c', 'x') AS x",
            "SELECT pg_notify('c', 'x'), 1",
            "SELECT pg_notify('c', 'x') FROM t",
            "SELECT pg_notify('c', 'x') WHERE true",
            "SELECT pg_notify('c', 'x'::varchar)",
            "SELECT pg_notify('c', lower('X'))",
            "SELECT pg_notify(('c'), 'x')",
            "SELECT pg_notify('c', 'a' || 'b')",
            "SELECT pg_notify('c', 5)",
            "SELECT pg_notify('c', $0)",
            "SELECT pg_notify('c')",
            "SELECT pg_notify('c', 'x', 'y')",
            "SELECT public.pg_notify('c', 'x')",
            "SELECT DISTINCT pg_notify('c', 'x')",
            "SELECT pg_notify('c', B'01')",
            "PREPARE x AS SELECT pg_notify('c', $1)",
            "WITH a AS (SELECT 1) SELECT pg_notify('c','x') FROM a",
        ] {
            assert_eq!(one(sql), Kind::Other, "{sql:?}");
        }
    }

    #[test]
    fn spec_a3_listening_channels() {
        for sql in [
            "SELECT pg_listening_channels()",
            "select * from pg_catalog.pg_listening_channels ( ) ;",
            "SELECT pg_catalog.pg_listening_channels()",
            "SELECT * FROM pg_listening_channels()",
        ] {
            assert_eq!(one(sql), Kind::ListeningChannels, "{sql:?}");
        }
        for sql in [
            "SELECT pg_listening_channels() AS c",
            "SELECT * FROM pg_listening_channels() c",
            "SELECT c FROM pg_listening_channels() c",
            "SELECT pg_listening_channels(), 1",
            "SELECT * FROM pg_listening_channels() WHERE true",
        ] {
            assert_eq!(one(sql), Kind::Other, "{sql:?}");
        }
    }
}
