//! `pg_listening_channels()` inside statements pgherald forwards. The server never sees this
//! session's LISTENs, so each call is rewritten to an expression producing the session's set
//! (`unnest(…::text[])`), and wherever Postgres would name a column or relation after the
//! function, ` AS pg_listening_channels` keeps that name. This module finds the calls and says
//! where the alias goes; the caller builds the text.
//!
//! Only statements that run a query when they are sent are rewritten (SELECT, WITH, VALUES,
//! INSERT, UPDATE, DELETE, MERGE, DECLARE, COPY): a definition that stores the query (views,
//! functions, rules, `PREPARE`) or `EXPLAIN` runs on the server as written. A call is rewritten
//! only where an expression may start, so that a syntax error elsewhere stays the server's
//! own, word for word.

use std::ops::Range;

use super::ident::{ident_value, is_colid};
use super::lexer::{Lexer, Tok, Token};

/// The function's name: the column and relation name Postgres gives an unaliased call.
pub const NAME: &str = "pg_listening_channels";

/// Calls found in one statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calls {
    /// The calls, in text order.
    pub calls: Vec<Call>,
    /// The highest `$n` parameter the statement uses (0: none).
    pub max_param: u32,
}

/// One call of `[pg_catalog.]pg_listening_channels()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Bytes of the call, from its first token to its `)`.
    pub range: Range<usize>,
    /// Where ` AS pg_listening_channels` must be inserted so that the result keeps the name
    /// Postgres gives it (a bare select-list item, an unaliased FROM item).
    pub alias_at: Option<usize>,
}

/// Cheap case-insensitive test: does the text mention the function at all?
pub fn mentions(sql: &[u8]) -> bool {
    sql.windows(NAME.len())
        .any(|w| w.eq_ignore_ascii_case(NAME.as_bytes()))
}

/// The calls to rewrite in the statement at bytes `stmt` of `sql` (`scs`:
/// standard_conforming_strings). Empty for statements that are not rewritten.
pub fn calls(sql: &str, stmt: Range<usize>, scs: bool) -> Calls {
    let Some(text) = sql.get(stmt.clone()) else {
        return Calls::default();
    };
    let mut lexer = Lexer::new(text, scs);
    let mut toks = Vec::new();
    while let Some(t) = lexer.next_token() {
        toks.push(t);
    }
    let mut found = Finder::new(text, &toks).run();
    for c in &mut found.calls {
        c.range = c.range.start + stmt.start..c.range.end + stmt.start;
        c.alias_at = c.alias_at.map(|a| a + stmt.start);
    }
    found
}

/// What the tokens at one parenthesis depth are part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clause {
    /// A select list.
    Select,
    /// A FROM list.
    From,
    /// A join condition inside a FROM list (`ON …`, `USING (…)`).
    JoinCond,
    /// Anything else.
    Other,
}

/// One parenthesis depth.
#[derive(Debug, Clone, Copy)]
struct Frame {
    clause: Clause,
    /// A SELECT keyword was seen at this depth (so a later FROM starts a FROM list).
    selected: bool,
    /// Index of the `(` that opened it.
    open: usize,
}

/// Statements whose calls are rewritten (their first word).
const REWRITTEN: [&str; 9] = [
    "select", "with", "values", "insert", "update", "delete", "merge", "declare", "copy",
];

/// Keywords after which an expression (or a FROM item) may start.
const BEFORE_EXPR: [&str; 35] = [
    "all",
    "and",
    "any",
    "asymmetric",
    "between",
    "both",
    "by",
    "case",
    "distinct",
    "else",
    "fetch",
    "for",
    "from",
    "having",
    "ilike",
    "in",
    "join",
    "lateral",
    "leading",
    "like",
    "limit",
    "not",
    "offset",
    "on",
    "or",
    "placing",
    "returning",
    "select",
    "similar",
    "some",
    "symmetric",
    "then",
    "to",
    "trailing",
    "when",
];

/// Reserved words that end a select-list item.
const ITEM_END: [&str; 15] = [
    "from",
    "into",
    "where",
    "group",
    "having",
    "window",
    "order",
    "limit",
    "offset",
    "fetch",
    "for",
    "union",
    "intersect",
    "except",
    "returning",
];

struct Finder<'a> {
    src: &'a str,
    toks: &'a [Token],
    frames: Vec<Frame>,
    /// The `(` matching the most recent `)`.
    last_open: Option<usize>,
    out: Calls,
}

impl<'a> Finder<'a> {
    fn new(src: &'a str, toks: &'a [Token]) -> Finder<'a> {
        Finder {
            src,
            toks,
            frames: vec![Frame {
                clause: Clause::Other,
                selected: false,
                open: usize::MAX,
            }],
            last_open: None,
            out: Calls::default(),
        }
    }

    fn word(&self, i: usize, kw: &str) -> bool {
        self.toks.get(i).is_some_and(|t| {
            t.tok == Tok::Word
                && self
                    .src
                    .as_bytes()
                    .get(t.start..t.end)
                    .is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
        })
    }

    fn any_word(&self, i: usize, kws: &[&str]) -> bool {
        kws.iter().any(|k| self.word(i, k))
    }

    fn char(&self, i: usize, c: u8) -> bool {
        self.toks.get(i).is_some_and(|t| t.tok == Tok::Char(c))
    }

    fn ident(&self, i: usize, name: &str) -> bool {
        self.toks.get(i).is_some_and(|t| {
            matches!(t.tok, Tok::Word | Tok::QIdent | Tok::UIdent { .. })
                && ident_value(self.src, t).is_some_and(|v| v == name.as_bytes())
        })
    }

    fn top(&mut self) -> &mut Frame {
        let n = self.frames.len() - 1;
        &mut self.frames[n]
    }

    fn run(mut self) -> Calls {
        let mut first = 0;
        while self.char(first, b'(') {
            first += 1;
        }
        let head_ok = if first == 0 {
            self.any_word(0, &REWRITTEN)
        } else {
            self.any_word(first, &["select", "with", "values"])
        };
        if !head_ok {
            return self.out;
        }
        for i in 0..self.toks.len() {
            self.call_at(i);
            self.track(i);
        }
        self.out
    }

    /// Follow clauses and parentheses through token `i`.
    fn track(&mut self, i: usize) {
        let t = self.toks[i];
        match t.tok {
            Tok::Char(b'(') => self.frames.push(Frame {
                clause: Clause::Other,
                selected: false,
                open: i,
            }),
            Tok::Char(b')') if self.frames.len() > 1 => {
                self.last_open = self.frames.pop().map(|f| f.open);
            }
            Tok::Char(b',') if self.top().clause == Clause::JoinCond => {
                self.top().clause = Clause::From;
            }
            Tok::Param => {
                let digits = self.src.get(t.start + 1..t.end).unwrap_or_default();
                if let Ok(n) = digits.parse::<u32>() {
                    self.out.max_param = self.out.max_param.max(n);
                }
            }
            Tok::Word => {
                let after_distinct = i > 0 && self.word(i - 1, "distinct");
                let after_rows = i > 0 && self.word(i - 1, "rows");
                let after_within = i > 0 && self.word(i - 1, "within");
                let f = *self.top();
                if self.word(i, "select") {
                    *self.top() = Frame {
                        clause: Clause::Select,
                        selected: true,
                        ..f
                    };
                } else if self.word(i, "from") {
                    if f.selected && !after_distinct && !after_rows {
                        self.top().clause = Clause::From;
                    }
                } else if self.word(i, "join") {
                    if matches!(f.clause, Clause::From | Clause::JoinCond) {
                        self.top().clause = Clause::From;
                    }
                } else if self.any_word(i, &["on", "using"]) {
                    if f.clause == Clause::From {
                        self.top().clause = Clause::JoinCond;
                    }
                } else if self.any_word(i, &["union", "intersect", "except"]) {
                    *self.top() = Frame {
                        clause: Clause::Other,
                        selected: false,
                        ..f
                    };
                } else if self.any_word(i, &ITEM_END) && !(self.word(i, "group") && after_within) {
                    self.top().clause = Clause::Other;
                }
            }
            _ => {}
        }
    }

    /// Is token `i` the name of a call to rewrite? Then record it.
    fn call_at(&mut self, i: usize) {
        if !self.ident(i, NAME) || !self.char(i + 1, b'(') || !self.char(i + 2, b')') {
            return;
        }
        let start = if i > 0 && self.char(i - 1, b'.') {
            let qualified = i >= 2 && self.ident(i - 2, "pg_catalog");
            if !qualified || (i >= 3 && self.char(i - 3, b'.')) {
                return;
            }
            i - 2
        } else {
            i
        };
        let end = i + 2;
        if start > 0 && !self.expr_may_start_after(start - 1) {
            return;
        }
        let alias_at = self
            .alias_of_select_item(start, end)
            .or_else(|| self.alias_of_from_item(start, end));
        self.out.calls.push(Call {
            range: self.toks[start].start..self.toks[end].end,
            alias_at,
        });
    }

    /// May an expression start right after token `p`?
    fn expr_may_start_after(&self, p: usize) -> bool {
        match self.toks[p].tok {
            Tok::Char(c) => {
                b"(,[+-/%^<>=".contains(&c) || (c == b')' && self.closes_distinct_on(p))
            }
            Tok::Op => true,
            Tok::Word => self.any_word(p, &BEFORE_EXPR),
            _ => false,
        }
    }

    /// Is token `p` the `)` of `DISTINCT ON (…)`? (Only asked for the most recent `)`.)
    fn closes_distinct_on(&self, p: usize) -> bool {
        self.char(p, b')')
            && self
                .last_open
                .is_some_and(|o| o >= 2 && self.word(o - 1, "on") && self.word(o - 2, "distinct"))
    }

    /// The call is a whole select-list item (possibly parenthesized, possibly cast) without an
    /// alias: where the alias goes.
    fn alias_of_select_item(&self, start: usize, end: usize) -> Option<usize> {
        let mut k = 0;
        while k < start && self.char(start - 1 - k, b'(') && self.char(end + 1 + k, b')') {
            k += 1;
        }
        let depth = self.frames.len().checked_sub(1 + k)?;
        if self.frames[depth].clause != Clause::Select {
            return None;
        }
        let before = start.checked_sub(k + 1)?;
        let item_start = self.char(before, b',')
            || self.word(before, "select")
            || (self.any_word(before, &["distinct", "all"])
                && before > 0
                && self.word(before - 1, "select"))
            || (k == 0 && self.closes_distinct_on(before));
        if !item_start {
            return None;
        }
        let mut last = end + k;
        while self
            .toks
            .get(last + 1)
            .is_some_and(|t| t.tok == Tok::Typecast)
        {
            last = self.type_name(last + 2)?;
        }
        let next = last + 1;
        let item_end = next >= self.toks.len()
            || self.char(next, b',')
            || self.char(next, b')')
            || self.any_word(next, &ITEM_END);
        item_end.then(|| self.toks[last].end)
    }

    /// A type name starting at `i` (`name[.name…][(n, …)][[n]]…`): its last token.
    fn type_name(&self, mut i: usize) -> Option<usize> {
        let is_name = |j: usize| {
            self.toks
                .get(j)
                .is_some_and(|t| matches!(t.tok, Tok::Word | Tok::QIdent))
        };
        if !is_name(i) {
            return None;
        }
        while self.char(i + 1, b'.') && is_name(i + 2) {
            i += 2;
        }
        if self.char(i + 1, b'(') {
            let mut j = i + 2;
            while self.char(j, b',') || self.toks.get(j).is_some_and(|t| t.tok == Tok::Number) {
                j += 1;
            }
            if !self.char(j, b')') {
                return None;
            }
            i = j;
        }
        loop {
            if self.char(i + 1, b'[') && self.char(i + 2, b']') {
                i += 2;
            } else if self.char(i + 1, b'[')
                && self.toks.get(i + 2).is_some_and(|t| t.tok == Tok::Number)
                && self.char(i + 3, b']')
            {
                i += 3;
            } else {
                return Some(i);
            }
        }
    }

    /// The call is an unaliased FROM item (or the only function of `ROWS FROM (…)`): where the
    /// alias goes (after `WITH ORDINALITY`, if any).
    fn alias_of_from_item(&self, start: usize, end: usize) -> Option<usize> {
        let rows_from = start >= 3
            && self.char(start - 1, b'(')
            && self.word(start - 2, "from")
            && self.word(start - 3, "rows")
            && self.char(end + 1, b')');
        let last = if rows_from {
            end + 1
        } else {
            let plain = self.frames.last()?.clause == Clause::From
                && start > 0
                && (self.char(start - 1, b',')
                    || self.any_word(start - 1, &["from", "join", "lateral"]));
            if !plain {
                return None;
            }
            end
        };
        let last = if self.word(last + 1, "with") && self.word(last + 2, "ordinality") {
            last + 2
        } else {
            last
        };
        let aliased = self.word(last + 1, "as")
            || self
                .toks
                .get(last + 1)
                .is_some_and(|t| is_colid(self.src, t));
        (!aliased).then(|| self.toks[last].end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statement with each call written `F` and each alias ` AS N`.
    fn marked(sql: &str) -> String {
        let found = calls(sql, 0..sql.len(), true);
        let mut out = String::new();
        let mut at = 0;
        for c in &found.calls {
            out.push_str(&sql[at..c.range.start]);
            out.push('F');
            at = c.range.end;
            if let Some(a) = c.alias_at {
                out.push_str(&sql[at..a]);
                out.push_str(" AS N");
                at = a;
            }
        }
        out.push_str(&sql[at..]);
        out
    }

    #[test]
    fn select_list_items_keep_their_name() {
        for (sql, want) in [
            ("SELECT pg_listening_channels()", "SELECT F AS N"),
            ("select PG_LISTENING_CHANNELS ( )", "select F AS N"),
            ("SELECT pg_catalog.pg_listening_channels()", "SELECT F AS N"),
            ("SELECT \"pg_listening_channels\"()", "SELECT F AS N"),
            ("SELECT pg_listening_channels() AS ch", "SELECT F AS ch"),
            ("SELECT pg_listening_channels() ch", "SELECT F ch"),
            (
                "SELECT 1, (pg_listening_channels()), 2",
                "SELECT 1, (F) AS N, 2",
            ),
            (
                "SELECT DISTINCT pg_listening_channels() FROM t",
                "SELECT DISTINCT F AS N FROM t",
            ),
            (
                "SELECT pg_listening_channels()::varchar(5)[]",
                "SELECT F::varchar(5)[] AS N",
            ),
            (
                "SELECT DISTINCT ON (1) pg_listening_channels()",
                "SELECT DISTINCT ON (1) F AS N",
            ),
            (
                "SELECT (SELECT pg_listening_channels() LIMIT 1)",
                "SELECT (SELECT F AS N LIMIT 1)",
            ),
            ("SELECT upper(pg_listening_channels())", "SELECT upper(F)"),
            ("SELECT pg_listening_channels() || 'x'", "SELECT F || 'x'"),
            (
                "SELECT ((pg_listening_channels()) || 'x')",
                "SELECT ((F) || 'x')",
            ),
            (
                "SELECT pg_listening_channels()::timestamp with time zone",
                "SELECT F::timestamp with time zone",
            ),
        ] {
            assert_eq!(marked(sql), want, "{sql}");
        }
    }

    #[test]
    fn from_items_keep_their_name() {
        for (sql, want) in [
            (
                "SELECT count(*) FROM pg_listening_channels()",
                "SELECT count(*) FROM F AS N",
            ),
            (
                "SELECT * FROM pg_listening_channels() x",
                "SELECT * FROM F x",
            ),
            (
                "SELECT * FROM pg_listening_channels() AS x(c)",
                "SELECT * FROM F AS x(c)",
            ),
            (
                "SELECT * FROM pg_listening_channels() WITH ORDINALITY WHERE true",
                "SELECT * FROM F WITH ORDINALITY AS N WHERE true",
            ),
            (
                "SELECT * FROM t JOIN pg_listening_channels() ON true, pg_listening_channels()",
                "SELECT * FROM t JOIN F AS N ON true, F AS N",
            ),
            (
                "SELECT * FROM t, LATERAL pg_listening_channels() JOIN u USING (c)",
                "SELECT * FROM t, LATERAL F AS N JOIN u USING (c)",
            ),
            (
                "SELECT * FROM ROWS FROM (pg_listening_channels()) WITH ORDINALITY",
                "SELECT * FROM ROWS FROM (F) WITH ORDINALITY AS N",
            ),
            (
                "SELECT * FROM ROWS FROM (pg_listening_channels(), generate_series(1, 2))",
                "SELECT * FROM ROWS FROM (F, generate_series(1, 2))",
            ),
            (
                "SELECT x INTO t FROM pg_listening_channels() x",
                "SELECT x INTO t FROM F x",
            ),
        ] {
            assert_eq!(marked(sql), want, "{sql}");
        }
    }

    #[test]
    fn other_places_are_rewritten_without_alias() {
        for (sql, want) in [
            (
                "SELECT 1 WHERE 'a' IN (SELECT pg_listening_channels())",
                "SELECT 1 WHERE 'a' IN (SELECT F AS N)",
            ),
            (
                "SELECT a IS DISTINCT FROM pg_listening_channels() FROM t",
                "SELECT a IS DISTINCT FROM F FROM t",
            ),
            (
                "SELECT 1 WHERE x = pg_listening_channels()",
                "SELECT 1 WHERE x = F",
            ),
            (
                "WITH c AS (SELECT * FROM pg_listening_channels()) SELECT * FROM c",
                "WITH c AS (SELECT * FROM F AS N) SELECT * FROM c",
            ),
            (
                "INSERT INTO t SELECT pg_listening_channels()",
                "INSERT INTO t SELECT F AS N",
            ),
            ("(SELECT pg_listening_channels())", "(SELECT F AS N)"),
            ("VALUES (pg_listening_channels())", "VALUES (F)"),
            (
                "SELECT substring(x FROM pg_listening_channels()) FROM t",
                "SELECT substring(x FROM F) FROM t",
            ),
        ] {
            assert_eq!(marked(sql), want, "{sql}");
        }
    }

    #[test]
    fn left_alone() {
        for sql in [
            "CREATE VIEW v AS SELECT pg_listening_channels()",
            "PREPARE p AS SELECT pg_listening_channels()",
            "EXPLAIN SELECT * FROM pg_listening_channels()",
            "SELECT 'pg_listening_channels()', \"pg_listening_channels()\"",
            "SELECT 1 -- pg_listening_channels()",
            "SELECT public.pg_listening_channels()",
            "SELECT pg_listening_channels(1)",
            "SELECT pg_listening_channels",
            "SELECT x pg_listening_channels()",
            "SELECT 1 AS pg_listening_channels()",
            "SELECT * pg_listening_channels()",
            "SELECT a.pg_catalog.pg_listening_channels()",
            "INSERT INTO pg_listening_channels() VALUES (1)",
        ] {
            assert_eq!(calls(sql, 0..sql.len(), true).calls, vec![], "{sql}");
        }
    }

    #[test]
    fn offsets_parameters_and_mentions() {
        let sql = "SELECT 1; SELECT $2, pg_listening_channels() FROM t WHERE c = $10";
        let stmt = 10..sql.len();
        let found = calls(sql, stmt, true);
        assert_eq!(found.max_param, 10);
        assert_eq!(found.calls.len(), 1);
        let c = &found.calls[0];
        assert_eq!(&sql[c.range.clone()], "pg_listening_channels()");
        assert_eq!(&sql[c.alias_at.unwrap()..], " FROM t WHERE c = $10");
        assert!(mentions(b"select PG_Listening_Channels()"));
        assert!(!mentions(b"select pg_listening_channel()"));
    }
}
