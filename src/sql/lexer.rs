//! The lexer: splits SQL text into tokens by PostgreSQL 15's `scan.l` rules (whitespace, `--` and
//! nested `/* */` comments, every string-constant form with newline continuation, quoted and `U&`
//! identifiers with `UESCAPE`, dollar quotes, parameters, numbers, operators). Tokens carry byte
//! spans whose text is what Postgres prints in `syntax error at or near "…"`. Literal and identifier
//! values are decoded later, only for the tokens that matter (`literal.rs`, `ident.rs`).

/// How a string constant is written; decides how its body is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `'…'` with `standard_conforming_strings` on: only `''` is special.
    Plain,
    /// `'…'` with `standard_conforming_strings` off: backslash escapes, with a warning.
    Legacy,
    /// `E'…'`: backslash escapes.
    Escape,
    /// `$tag$…$tag$`, `tag_len` bytes between the two `$` of each delimiter.
    Dollar { tag_len: usize },
    /// `U&'…'`: Unicode escapes with escape character `esc`; the `U&'…'` part (without any
    /// `UESCAPE '…'` clause) ends at `body_end`.
    Unicode { esc: u8, body_end: usize },
}

/// A lexical error Postgres raises as it reaches the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LexError {
    /// Unterminated quote, identifier, dollar quote or comment (runs to the end of input).
    Unterminated,
    /// `""` or `U&""`: `zero-length delimited identifier`.
    ZeroLengthIdent,
    /// Any other error (trailing junk after a number or parameter, operator too long, `U&'…'`
    /// with `standard_conforming_strings` off, a bad `UESCAPE` clause).
    Other,
}

/// Kind of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// Unquoted identifier or keyword.
    Word,
    /// `"…"`.
    QIdent,
    /// `U&"…"`, with escape character `esc`; the `U&"…"` part ends at `body_end`.
    UIdent { esc: u8, body_end: usize },
    /// A string constant (Postgres's SCONST, or USCONST for [`Form::Unicode`]).
    Str(Form),
    /// `B'…'` or `X'…'` (not a string constant for the grammar).
    BitStr,
    /// The `N` of `N'…'`, which Postgres returns as the keyword NCHAR.
    Nchar,
    /// `$n`.
    Param,
    /// Integer or decimal number.
    Number,
    /// Operator, including `::`-less two-character ones (`<=`, `=>`, `..`, `:=`).
    Op,
    /// `::`.
    Typecast,
    /// A single-character token (`,` `(` `)` `;` `.` `*` `$` …).
    Char(u8),
    /// A lexical error at this token.
    Error(LexError),
}

/// One token: its kind and the byte span of its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    /// Kind.
    pub tok: Tok,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// Characters that may form multi-character operators.
const OP_CHARS: &[u8] = b"~!@#^&|`?+-*/%<>=";
/// Single-character tokens of the grammar.
const SELF_CHARS: &[u8] = b",()[].;:+-*/%^<>=";
/// Operator characters that allow a trailing `+`/`-` to stay part of the operator.
const NON_SQL_OP: &[u8] = b"~!@#^&|`?%";
/// NAMEDATALEN: operators this long are an error.
const NAMEDATALEN: usize = 64;

/// `[ \t\n\r\f]`
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

/// `[A-Za-z\200-\377_]`
pub(crate) fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// `[A-Za-z\200-\377_0-9\$]`
pub(crate) fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Tokenizer over one input string.
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    scs: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `src`; `scs` is `standard_conforming_strings`.
    pub(crate) fn new(src: &'a str, scs: bool) -> Self {
        Lexer {
            src: src.as_bytes(),
            pos: 0,
            scs,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// Skips whitespace and comments from `i`; `Err(start)` for an unterminated `/*` comment.
    fn skip_space(&self, mut i: usize) -> Result<usize, usize> {
        loop {
            let c = self.at(i);
            if i < self.src.len() && is_space(c) {
                i += 1;
            } else if c == b'-' && self.at(i + 1) == b'-' {
                i = line_end(self.src, i);
            } else if c == b'/' && self.at(i + 1) == b'*' {
                i = block_comment_end(self.src, i).ok_or(i)?;
            } else {
                return Ok(i);
            }
        }
    }

    fn token(&mut self, tok: Tok, start: usize, end: usize) -> Option<Token> {
        self.pos = end;
        Some(Token { tok, start, end })
    }

    fn unterminated(&mut self, start: usize) -> Option<Token> {
        let end = self.src.len();
        self.token(Tok::Error(LexError::Unterminated), start, end)
    }

    /// The next token, or `None` at the end of input.
    pub(crate) fn next_token(&mut self) -> Option<Token> {
        let s = match self.skip_space(self.pos) {
            Ok(s) => s,
            Err(start) => return self.unterminated(start),
        };
        self.pos = s;
        if s >= self.src.len() {
            return None;
        }
        let (c, c1, c2) = (self.at(s), self.at(s + 1), self.at(s + 2));
        match c {
            b'B' | b'b' | b'X' | b'x' if c1 == b'\'' => self.quoted(s, s + 2, Tok::BitStr, false),
            b'N' | b'n' if c1 == b'\'' => self.token(Tok::Nchar, s, s + 1),
            b'E' | b'e' if c1 == b'\'' => self.quoted(s, s + 2, Tok::Str(Form::Escape), true),
            b'U' | b'u' if c1 == b'&' && c2 == b'\'' => {
                if !self.scs {
                    // "unsafe use of string constant with Unicode escapes"
                    return self.token(Tok::Error(LexError::Other), s, s + 3);
                }
                let unicode = Tok::Str(Form::Unicode {
                    esc: b'\\',
                    body_end: 0,
                });
                let t = self.quoted(s, s + 3, unicode, false)?;
                Some(self.uescape(t))
            }
            b'U' | b'u' if c1 == b'&' && c2 == b'"' => {
                let t = self.quoted_ident(
                    s,
                    s + 3,
                    Tok::UIdent {
                        esc: b'\\',
                        body_end: 0,
                    },
                )?;
                Some(self.uescape(t))
            }
            b'\'' if self.scs => self.quoted(s, s + 1, Tok::Str(Form::Plain), false),
            b'\'' => self.quoted(s, s + 1, Tok::Str(Form::Legacy), true),
            b'"' => self.quoted_ident(s, s + 1, Tok::QIdent),
            b'$' => self.dollar(s),
            b'0'..=b'9' => self.number(s),
            b'.' if c1 == b'.' => self.token(Tok::Op, s, s + 2),
            b'.' if c1.is_ascii_digit() => self.number(s),
            b':' if c1 == b':' => self.token(Tok::Typecast, s, s + 2),
            b':' if c1 == b'=' => self.token(Tok::Op, s, s + 2),
            _ if is_ident_start(c) => {
                let end = ident_end(self.src, s);
                self.token(Tok::Word, s, end)
            }
            _ if OP_CHARS.contains(&c) => self.operator(s),
            _ => self.token(Tok::Char(c), s, s + 1),
        }
    }

    /// A `'`-quoted constant whose body starts at `body`; `backslash` makes `\x` an escape pair.
    fn quoted(&mut self, s: usize, body: usize, tok: Tok, backslash: bool) -> Option<Token> {
        let doubling = tok != Tok::BitStr;
        match quoted_end(self.src, body, backslash, doubling) {
            Some(end) => self.token(tok, s, end),
            None => self.unterminated(s),
        }
    }

    /// A `"`-quoted identifier whose body starts at `body`.
    fn quoted_ident(&mut self, s: usize, body: usize, tok: Tok) -> Option<Token> {
        let mut i = body;
        loop {
            match self.src.get(i) {
                None => return self.unterminated(s),
                Some(b'"') if self.at(i + 1) == b'"' => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        if i == body {
            return self.token(Tok::Error(LexError::ZeroLengthIdent), s, i + 1);
        }
        self.token(tok, s, i + 1)
    }

    /// After a `U&` token: folds in a following `UESCAPE 'c'` clause, as Postgres's parser does.
    fn uescape(&mut self, mut t: Token) -> Token {
        if matches!(t.tok, Tok::Error(_)) {
            return t;
        }
        let Ok(kw) = self.skip_space(t.end) else {
            return t;
        };
        let kw_end = ident_end(self.src, kw);
        if !is_ident_start(self.at(kw)) || !self.src[kw..kw_end].eq_ignore_ascii_case(b"uescape") {
            return set_esc(t, b'\\', t.end);
        }
        let bad = Token {
            tok: Tok::Error(LexError::Other),
            start: t.start,
            end: kw_end,
        };
        let Ok(q) = self.skip_space(kw_end) else {
            self.pos = kw_end;
            return bad;
        };
        let esc = self.at(q + 1);
        let simple = self.at(q) == b'\''
            && self.at(q + 2) == b'\''
            && self.at(q + 3) != b'\''
            && quote_continue(self.src, q + 2).is_none()
            && !(esc.is_ascii_hexdigit() || b"+'\"".contains(&esc) || is_space(esc))
            && (esc != b'\\' || self.scs)
            && esc.is_ascii()
            && esc != 0;
        if !simple {
            self.pos = kw_end;
            return bad;
        }
        t = set_esc(t, esc, t.end);
        t.end = q + 3;
        self.pos = t.end;
        t
    }

    /// `$`: a parameter, a dollar-quoted string, or a lone `$`.
    fn dollar(&mut self, s: usize) -> Option<Token> {
        if self.at(s + 1).is_ascii_digit() {
            let mut i = s + 1;
            while self.at(i).is_ascii_digit() {
                i += 1;
            }
            if is_ident_start(self.at(i)) {
                return self.token(Tok::Error(LexError::Other), s, i + 1);
            }
            return self.token(Tok::Param, s, i);
        }
        let mut i = s + 1;
        if is_ident_start(self.at(i)) {
            while is_ident_start(self.at(i)) || self.at(i).is_ascii_digit() {
                i += 1;
            }
        }
        if self.at(i) != b'$' {
            return self.token(Tok::Char(b'$'), s, s + 1);
        }
        let delim = &self.src[s..=i];
        let body = i + 1;
        match find(self.src, body, delim) {
            Some(close) => {
                let tok = Tok::Str(Form::Dollar {
                    tag_len: delim.len() - 2,
                });
                self.token(tok, s, close + delim.len())
            }
            None => self.unterminated(s),
        }
    }

    /// Integer, decimal or real number (PostgreSQL 15: no hex, no underscores).
    fn number(&mut self, s: usize) -> Option<Token> {
        let mut i = s;
        while self.at(i).is_ascii_digit() {
            i += 1;
        }
        if self.at(i) == b'.' && self.at(i + 1) == b'.' && i > s {
            return self.token(Tok::Number, s, i);
        }
        if self.at(i) == b'.' {
            i += 1;
            while self.at(i).is_ascii_digit() {
                i += 1;
            }
        }
        let mut exponent = false;
        if matches!(self.at(i), b'e' | b'E') {
            let mut j = i + 1;
            if matches!(self.at(j), b'+' | b'-') {
                j += 1;
            }
            if !self.at(j).is_ascii_digit() {
                // realfail / trailing junk: "1e", "1.5e+"
                return self.token(Tok::Error(LexError::Other), s, j);
            }
            while self.at(j).is_ascii_digit() {
                j += 1;
            }
            i = j;
            exponent = true;
        }
        // Trailing junk; after an exponent a `$` counts too (observed on PostgreSQL 15.18).
        if is_ident_start(self.at(i)) || (exponent && self.at(i) == b'$') {
            return self.token(Tok::Error(LexError::Other), s, i + 1);
        }
        self.token(Tok::Number, s, i)
    }

    /// An operator (or single-character token) starting at `s`, by `scan.l`'s rules.
    fn operator(&mut self, s: usize) -> Option<Token> {
        let mut end = s;
        while end < self.src.len() && OP_CHARS.contains(&self.src[end]) {
            end += 1;
        }
        // A comment start inside the run ends the operator.
        for k in s + 1..end.saturating_sub(1) {
            if matches!(&self.src[k..k + 2], b"/*" | b"--") {
                end = k;
                break;
            }
        }
        let run = &self.src[s..end];
        let mut n = run.len();
        if !run.iter().any(|b| NON_SQL_OP.contains(b)) {
            while n > 1 && matches!(run[n - 1], b'+' | b'-') {
                n -= 1;
            }
        }
        if n == 1 && SELF_CHARS.contains(&run[0]) {
            return self.token(Tok::Char(run[0]), s, s + 1);
        }
        if n >= NAMEDATALEN {
            return self.token(Tok::Error(LexError::Other), s, s + n);
        }
        self.token(Tok::Op, s, s + n)
    }
}

/// Sets the escape character and the end of the `U&` part of a `U&` token.
fn set_esc(mut t: Token, esc: u8, body_end: usize) -> Token {
    t.tok = match t.tok {
        Tok::Str(Form::Unicode { .. }) => Tok::Str(Form::Unicode { esc, body_end }),
        Tok::UIdent { .. } => Tok::UIdent { esc, body_end },
        other => other,
    };
    t
}

/// End of the identifier starting at `s` (`s` itself when there is none).
pub(crate) fn ident_end(src: &[u8], s: usize) -> usize {
    let mut i = s;
    if i < src.len() && is_ident_start(src[i]) {
        i += 1;
        while i < src.len() && is_ident_cont(src[i]) {
            i += 1;
        }
    }
    i
}

/// End of a `--` comment starting at `i`: the position of the next newline or the input end.
fn line_end(src: &[u8], i: usize) -> usize {
    src.get(i..)
        .unwrap_or_default()
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map_or(src.len(), |p| i + p)
}

/// End (one past `*/`) of the nested `/* */` comment starting at `i`, `None` when unterminated.
fn block_comment_end(src: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut k = i + 2;
    while k + 1 < src.len() {
        if src[k] == b'/' && src[k + 1] == b'*' {
            depth += 1;
            k += 2;
        } else if src[k] == b'*' && src[k + 1] == b'/' {
            if depth == 0 {
                return Some(k + 2);
            }
            depth -= 1;
            k += 2;
        } else {
            k += 1;
        }
    }
    None
}

/// First occurrence of `needle` in `src` at or after `from`.
fn find(src: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || from > src.len() {
        return None;
    }
    src[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// For a closing quote at `q`: if what follows is `{whitespace_with_newline}'` (a continuation,
/// which makes `'a'`⏎`'b'` one constant), the position just after that next quote.
pub(crate) fn quote_continue(src: &[u8], q: usize) -> Option<usize> {
    let at = |i: usize| src.get(i).copied().unwrap_or(0);
    let mut i = q + 1;
    loop {
        match at(i) {
            b' ' | b'\t' | b'\x0c' => i += 1,
            b'-' if at(i + 1) == b'-' => i = line_end(src, i),
            _ => break,
        }
    }
    if !matches!(at(i), b'\n' | b'\r') {
        return None;
    }
    loop {
        match at(i) {
            b if i < src.len() && is_space(b) => i += 1,
            b'-' if at(i + 1) == b'-' => {
                i = line_end(src, i);
                if i >= src.len() {
                    return None;
                }
            }
            _ => break,
        }
    }
    (at(i) == b'\'').then_some(i + 1)
}

/// End (one past the final quote) of a `'`-quoted constant whose body starts at `body`, following
/// continuations; `None` when unterminated. `backslash`: `\` escapes the next byte; `doubling`:
/// `''` is an embedded quote.
pub(crate) fn quoted_end(
    src: &[u8],
    body: usize,
    backslash: bool,
    doubling: bool,
) -> Option<usize> {
    let mut i = body;
    loop {
        match src.get(i)? {
            b'\\' if backslash => {
                if i + 1 >= src.len() {
                    return None;
                }
                i += 2;
            }
            b'\'' if doubling && src.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => match quote_continue(src, i) {
                Some(next) => i = next,
                None => return Some(i + 1),
            },
            _ => i += 1,
        }
    }
}
