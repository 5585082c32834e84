//! Statement splitting and classification: cuts a Query string on top-level `;` (as Postgres's
//! grammar and psql do: not inside parentheses nor inside a `CREATE FUNCTION … BEGIN ATOMIC … END`
//! body), then recognises LISTEN / UNLISTEN / NOTIFY (with Postgres's exact syntax errors),
//! `PREPARE … AS NOTIFY`, `DISCARD ALL`, `DEALLOCATE`, and hands `SELECT …` and transaction control to
//! `select.rs` and `txn.rs`.

use super::ctx::Ctx;
use super::ident::{is_reserved, COL_NAME_NOT_TYPE};
use super::lexer::{Lexer, Tok, Token};
use super::{select, txn, Kind, Statement};

/// Split a Query string into statements (on top-level `;`, honouring strings, `E''` strings,
/// dollar quotes, quoted identifiers, `--` and nested `/* */` comments) and classify each.
///
/// `standard_conforming_strings` is the session's setting (it decides whether backslashes in
/// `'…'` are escapes). Every `;`-terminated stretch yields a [`Statement`] ([`Kind::Empty`] when it
/// holds no token); the text after the last `;` yields one only if it holds a token, or if the
/// whole input holds none (then the result is a single [`Kind::Empty`]). Never panics.
pub fn classify(sql: &str, standard_conforming_strings: bool) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut lexer = Lexer::new(sql, standard_conforming_strings);
    let mut toks: Vec<Token> = Vec::new();
    let mut split = Splitter::default();
    let mut seg_start = 0;
    while let Some(t) = lexer.next_token() {
        if t.tok == Tok::Char(b';') && split.at_top() {
            out.push(statement(sql, &toks, seg_start, Some(t.start)));
            toks.clear();
            split = Splitter::default();
            seg_start = t.end;
            continue;
        }
        split.see(sql, &t);
        toks.push(t);
    }
    if !toks.is_empty() || out.is_empty() {
        out.push(statement(sql, &toks, seg_start, None));
    }
    out
}

/// Tracks what keeps a `;` from ending a statement: open parentheses, and `BEGIN … END` blocks in
/// `CREATE [OR REPLACE] FUNCTION | PROCEDURE` (psql's heuristic, which matches the grammar).
#[derive(Default)]
struct Splitter {
    parens: usize,
    /// First letters of the statement's first four words when they are create / or / replace /
    /// function / procedure.
    head: [u8; 4],
    words: usize,
    begins: usize,
}

impl Splitter {
    fn at_top(&self) -> bool {
        self.parens == 0 && self.begins == 0
    }

    fn see(&mut self, sql: &str, t: &Token) {
        match t.tok {
            Tok::Char(b'(') => self.parens += 1,
            Tok::Char(b')') => self.parens = self.parens.saturating_sub(1),
            Tok::Word => {
                let w = sql.as_bytes().get(t.start..t.end).unwrap_or_default();
                let is = |k: &str| w.eq_ignore_ascii_case(k.as_bytes());
                if self.words < self.head.len() {
                    self.head[self.words] = match () {
                        _ if is("create") => b'c',
                        _ if is("or") => b'o',
                        _ if is("replace") => b'r',
                        _ if is("function") => b'f',
                        _ if is("procedure") => b'p',
                        _ => 0,
                    };
                }
                self.words += 1;
                let h = self.head;
                let routine = h[0] == b'c'
                    && (matches!(h[1], b'f' | b'p')
                        || (h[1] == b'o' && h[2] == b'r' && matches!(h[3], b'f' | b'p')));
                if routine && self.parens == 0 {
                    if is("begin") || (is("case") && self.begins > 0) {
                        self.begins += 1;
                    } else if is("end") {
                        self.begins = self.begins.saturating_sub(1);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Builds the [`Statement`] for one segment.
fn statement(sql: &str, toks: &[Token], seg_start: usize, terminator: Option<usize>) -> Statement {
    let (Some(first), Some(last)) = (toks.first(), toks.last()) else {
        let end = terminator.unwrap_or(sql.len());
        return Statement {
            range: seg_start..end,
            kind: Kind::Empty,
        };
    };
    let ctx = Ctx {
        src: sql,
        toks,
        terminator,
    };
    Statement {
        range: first.start..last.end,
        kind: classify_one(&ctx),
    }
}

/// Classifies one non-empty statement.
fn classify_one(c: &Ctx) -> Kind {
    let Some(first) = c.toks.first() else {
        return Kind::Empty;
    };
    if first.tok != Tok::Word {
        return Kind::Other;
    }
    let w = c.text(first).to_ascii_lowercase();
    match w.as_slice() {
        b"listen" => listen(c, false),
        b"unlisten" => listen(c, true),
        b"notify" => notify(c),
        b"select" => select::select(c),
        b"prepare" => prepare(c),
        b"discard" if c.len() == 2 && c.word(1, "all") => Kind::DiscardAll,
        b"deallocate" => deallocate(c),
        b"begin" | b"start" | b"commit" | b"end" | b"rollback" | b"abort" | b"savepoint"
        | b"release" => txn::txn(c, &w),
        _ => Kind::Other,
    }
}

/// `LISTEN ColId` / `UNLISTEN ColId | *`.
fn listen(c: &Ctx, unlisten: bool) -> Kind {
    if unlisten && c.char(1, b'*') {
        return if c.len() == 2 {
            Kind::UnlistenAll
        } else {
            c.syntax_error(2)
        };
    }
    if !c.colid(1) {
        return c.syntax_error(1);
    }
    let Some((channel, truncated)) = c.name(1) else {
        return Kind::Other;
    };
    if c.len() > 2 {
        return c.syntax_error(2);
    }
    if unlisten {
        Kind::Unlisten { channel, truncated }
    } else {
        Kind::Listen { channel, truncated }
    }
}

/// `NOTIFY ColId [, Sconst]`.
fn notify(c: &Ctx) -> Kind {
    if !c.colid(1) {
        return c.syntax_error(1);
    }
    let Some((channel, truncated)) = c.name(1) else {
        return Kind::Other;
    };
    if c.len() == 2 {
        return Kind::Notify {
            channel,
            payload: Vec::new(),
            truncated,
            warnings: Vec::new(),
        };
    }
    if !c.char(2, b',') {
        return c.syntax_error(2);
    }
    if !c.is_sconst(3) {
        return c.syntax_error(3);
    }
    let Some((payload, warning)) = c.literal(3) else {
        return Kind::Other;
    };
    if c.len() > 4 {
        return c.syntax_error(4);
    }
    Kind::Notify {
        channel,
        payload,
        truncated,
        warnings: warning.into_iter().collect(),
    }
}

/// `DEALLOCATE [PREPARE] { name | ALL }` (anything else is left to Postgres).
fn deallocate(c: &Ctx) -> Kind {
    // `DEALLOCATE prepare` names a statement called "prepare".
    let at = if c.len() == 3 && c.word(1, "prepare") {
        2
    } else {
        1
    };
    if c.len() != at + 1 {
        return Kind::Other;
    }
    if c.word(at, "all") {
        return Kind::DeallocateAll;
    }
    if !c.colid(at) {
        return Kind::Other;
    }
    match c.name(at) {
        Some((name, None)) => Kind::Deallocate(name),
        _ => Kind::Other,
    }
}

/// Is token `i` a one-word type name (an identifier, or a keyword that names a type)?
fn simple_type(c: &Ctx, i: usize) -> bool {
    let Some(t) = c.toks.get(i) else { return false };
    match t.tok {
        Tok::QIdent => true,
        Tok::Word => {
            let w = c.text(t);
            !is_reserved(w)
                && !COL_NAME_NOT_TYPE
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k.as_bytes()))
        }
        _ => false,
    }
}

/// `PREPARE TRANSACTION 'gid'`, or `PREPARE name [(types)] AS LISTEN | UNLISTEN | NOTIFY …`, which
/// Postgres rejects at the keyword (those statements cannot be prepared).
fn prepare(c: &Ctx) -> Kind {
    if c.word(1, "transaction") && c.is_sconst(2) {
        return if c.len() == 3 {
            Kind::PrepareTransaction
        } else {
            Kind::Other
        };
    }
    if !c.colid(1) {
        return Kind::Other;
    }
    let mut i = 2;
    if c.char(i, b'(') {
        i += 1;
        loop {
            if !simple_type(c, i) {
                return Kind::Other;
            }
            i += 1;
            if c.char(i, b')') {
                i += 1;
                break;
            }
            if !c.char(i, b',') {
                return Kind::Other;
            }
            i += 1;
        }
    }
    if c.word(i, "as")
        && ["listen", "unlisten", "notify"]
            .iter()
            .any(|k| c.word(i + 1, k))
    {
        return c.syntax_error(i + 1);
    }
    Kind::Other
}

#[cfg(test)]
mod tests {
    use super::classify;
    use crate::sql::Kind;

    fn split(sql: &str) -> Vec<(&str, Kind)> {
        classify(sql, true)
            .into_iter()
            .map(|s| (&sql[s.range], s.kind))
            .collect()
    }

    fn texts(sql: &str) -> Vec<&str> {
        split(sql).into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn split_honours_quotes_and_comments() {
        assert_eq!(texts("SELECT ';'; NOTIFY c"), ["SELECT ';'", "NOTIFY c"]);
        assert_eq!(
            texts("SELECT E'\\';'; SELECT 2"),
            ["SELECT E'\\';'", "SELECT 2"]
        );
        assert_eq!(
            texts("SELECT $$;$$; SELECT $a$ $$;$$ $a$"),
            ["SELECT $$;$$", "SELECT $a$ $$;$$ $a$"]
        );
        assert_eq!(
            texts("SELECT 1 /* ; /* ; */ ; */; SELECT 2 -- ;\n; x"),
            ["SELECT 1", "SELECT 2", "x"]
        );
        assert_eq!(
            texts("SELECT \"a;b\"; LISTEN \";\""),
            ["SELECT \"a;b\"", "LISTEN \";\""]
        );
        assert_eq!(
            texts("SELECT 'a'\n';'; NOTIFY c"),
            ["SELECT 'a'\n';'", "NOTIFY c"]
        );
        assert_eq!(
            texts("SELECT (1; NOTIFY c); LISTEN d"),
            ["SELECT (1; NOTIFY c)", "LISTEN d"]
        );
        // A `;` inside an unterminated construct: one statement to the end.
        assert_eq!(split("SELECT 'abc; NOTIFY c")[0].1, Kind::Other);
        assert_eq!(split("SELECT 'abc; NOTIFY c").len(), 1);
        assert_eq!(split("SELECT /* abc; NOTIFY c").len(), 1);
        // Standard-conforming strings: a backslash does not escape the quote.
        let scs_on = classify("SELECT 'a\\'; NOTIFY c", true);
        assert_eq!(scs_on.len(), 2);
        assert!(matches!(scs_on[1].kind, Kind::Notify { .. }));
        assert_eq!(classify("SELECT 'a\\'; NOTIFY c", false).len(), 1);
    }

    #[test]
    fn split_keeps_sql_function_bodies_whole() {
        let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; \
                   SELECT CASE WHEN true THEN 2 END; NOTIFY c; END; NOTIFY d";
        let v = split(sql);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].1, Kind::Other);
        assert!(v[0].0.ends_with("NOTIFY c; END"));
        assert!(matches!(v[1].1, Kind::Notify { .. }));
        let v = split(
            "create or replace procedure p() language sql begin atomic; notify c; end; select 1",
        );
        assert_eq!(v.len(), 2);
        // Outside CREATE FUNCTION, BEGIN/END are transaction control.
        let v = split("BEGIN; NOTIFY c; END");
        assert_eq!(
            v.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>()[0],
            Kind::Begin
        );
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn split_empty_statements_and_ranges() {
        assert_eq!(split(""), [("", Kind::Empty)]);
        assert_eq!(split(" -- c\n"), [(" -- c\n", Kind::Empty)]);
        assert_eq!(split(";"), [("", Kind::Empty)]);
        let sql = "  LISTEN c ; /* x */ ;NOTIFY d;";
        let v = classify(sql, true);
        assert_eq!(v.len(), 3);
        assert_eq!(&sql[v[0].range.clone()], "LISTEN c");
        assert_eq!(v[1].kind, Kind::Empty);
        assert_eq!(&sql[v[1].range.clone()], " /* x */ ");
        assert_eq!(&sql[v[2].range.clone()], "NOTIFY d");
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let v = classify("LISTEN éé; NOTIFY 𝄞, 5", true);
        let expected = Kind::SyntaxError {
            sqlstate: "42601",
            message: "syntax error at or near \"5\"".into(),
            position: 22,
        };
        assert_eq!(v[1].kind, expected);
        let v = classify("/* é */ LISTEN\n\t*", true);
        assert!(matches!(v[0].kind, Kind::SyntaxError { position: 17, .. }));
    }
}
