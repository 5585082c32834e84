//! The parsing context of one statement: token access helpers shared by the statement
//! recognisers, and the reproduction of Postgres's syntax errors (message text and 1-based
//! character position, including the cases where a lexical error takes precedence).

use super::ident::{ident_value, is_colid, truncate};
use super::lexer::{Form, LexError, Tok, Token};
use super::literal::decode;
use super::{Kind, Notice, SYNTAX_ERROR};

/// One statement's tokens (its `;` excluded) and where it ends.
pub(crate) struct Ctx<'a> {
    /// The whole Query string.
    pub src: &'a str,
    /// The statement's tokens.
    pub toks: &'a [Token],
    /// Byte offset of the terminating `;`, `None` when the statement runs to the end of input.
    pub terminator: Option<usize>,
}

impl Ctx<'_> {
    /// Is token `i` the unquoted word `kw` (ASCII case-insensitive)?
    pub(crate) fn word(&self, i: usize, kw: &str) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| t.tok == Tok::Word && self.text(t).eq_ignore_ascii_case(kw.as_bytes()))
    }

    /// Is token `i` the single-character token `c`?
    pub(crate) fn char(&self, i: usize, c: u8) -> bool {
        self.toks.get(i).is_some_and(|t| t.tok == Tok::Char(c))
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.toks.len()
    }

    /// Source bytes of a token.
    pub(crate) fn text(&self, t: &Token) -> &[u8] {
        self.src.as_bytes().get(t.start..t.end).unwrap_or_default()
    }

    /// Is token `i` a `ColId` where the grammar wants one? (`nulls` before `first`/`last` is not:
    /// Postgres turns it into NULLS_LA.)
    pub(crate) fn colid(&self, i: usize) -> bool {
        let Some(t) = self.toks.get(i) else {
            return false;
        };
        is_colid(self.src, t)
            && !(self.word(i, "nulls") && (self.word(i + 1, "first") || self.word(i + 1, "last")))
    }

    /// The ColId at `i`, folded/de-quoted and truncated; `None` if it cannot be decoded.
    pub(crate) fn name(&self, i: usize) -> Option<(Vec<u8>, Option<Notice>)> {
        Some(truncate(ident_value(self.src, self.toks.get(i)?)?))
    }

    /// 1-based character position of byte offset `byte`.
    pub(crate) fn char_pos(&self, byte: usize) -> u32 {
        let n = self.src.get(..byte).map_or(0, |s| s.chars().count());
        u32::try_from(n + 1).unwrap_or(u32::MAX)
    }

    /// What Postgres reports when its grammar cannot accept token `i` (`i == len()`: the `;` or
    /// the end of input). A lexical error at that token (or at the token Postgres's parser
    /// looks ahead to from it) wins; only `zero-length delimited identifier` is reproduced, any
    /// other yields [`Kind::Other`].
    pub(crate) fn syntax_error(&self, i: usize) -> Kind {
        let Some(t) = self.toks.get(i) else {
            return match self.terminator {
                Some(semi) => self.error_at("syntax error", semi, ";"),
                None => {
                    let pos = self.char_pos(self.src.len());
                    let message = "syntax error at end of input".to_string();
                    Kind::SyntaxError {
                        sqlstate: SYNTAX_ERROR,
                        message,
                        position: pos,
                    }
                }
            };
        };
        let looks_ahead = match t.tok {
            Tok::Word => ["not", "nulls", "with"].iter().any(|k| self.word(i, k)),
            Tok::UIdent { body_end, .. } => body_end == t.end,
            Tok::Str(Form::Unicode { body_end, .. }) => body_end == t.end,
            _ => false,
        };
        let culprit = match self.toks.get(i + 1) {
            Some(next) if looks_ahead && self.lex_fails(next) => next,
            _ => t,
        };
        if culprit.tok == Tok::Error(LexError::ZeroLengthIdent) {
            let text = String::from_utf8_lossy(self.text(culprit)).into_owned();
            return self.error_at("zero-length delimited identifier", culprit.start, &text);
        }
        if self.lex_fails(culprit) {
            return Kind::Other;
        }
        let text = String::from_utf8_lossy(self.text(culprit)).into_owned();
        self.error_at("syntax error", culprit.start, &text)
    }

    /// Does lexing this token raise an error in Postgres (a lexical error, or a string constant
    /// or `U&` identifier whose value is invalid)?
    fn lex_fails(&self, t: &Token) -> bool {
        match t.tok {
            Tok::Error(_) => true,
            Tok::Str(_) => decode(self.src, t).is_none(),
            Tok::UIdent { .. } => ident_value(self.src, t).is_none(),
            _ => false,
        }
    }

    fn error_at(&self, what: &str, byte: usize, text: &str) -> Kind {
        Kind::SyntaxError {
            sqlstate: SYNTAX_ERROR,
            message: format!("{what} at or near \"{text}\""),
            position: self.char_pos(byte),
        }
    }

    /// Decodes the string constant at `i`, with its warning positioned; `None` if Postgres would
    /// reject its value.
    pub(crate) fn literal(&self, i: usize) -> Option<(Vec<u8>, Option<Notice>)> {
        let t = self.toks.get(i)?;
        let d = decode(self.src, t)?;
        let warning = d.warning.map(|mut w| {
            w.position = Some(self.char_pos(t.start));
            w
        });
        Some((d.value, warning))
    }

    /// Is token `i` a string constant (any form Postgres's grammar calls `Sconst`)?
    pub(crate) fn is_sconst(&self, i: usize) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| matches!(t.tok, Tok::Str(_)))
    }
}
