//! Identifiers: PostgreSQL 15's reserved and type/function-name keyword lists (the words that are
//! not a `ColId`), case folding of unquoted identifiers (ASCII only), de-quoting of `"…"` and
//! `U&"…"` identifiers, and truncation to 63 bytes with Postgres's NOTICE.

use super::lexer::{Tok, Token};
use super::literal::unicode_unescape;
use super::Notice;

/// NAMEDATALEN - 1: the longest identifier, in bytes.
pub(crate) const MAX_IDENT: usize = 63;

/// PostgreSQL 15 `RESERVED_KEYWORD`s and `TYPE_FUNC_NAME_KEYWORD`s (kwlist.h), sorted: an
/// unquoted word from this list is not a `ColId`.
#[rustfmt::skip]
const NOT_COLID: [&str; 100] = [
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization",
    "binary", "both", "case", "cast", "check", "collate", "collation", "column", "concurrently",
    "constraint", "create", "cross", "current_catalog", "current_date", "current_role",
    "current_schema", "current_time", "current_timestamp", "current_user", "default", "deferrable",
    "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign",
    "freeze", "from", "full", "grant", "group", "having", "ilike", "in", "initially", "inner",
    "intersect", "into", "is", "isnull", "join", "lateral", "leading", "left", "like", "limit",
    "localtime", "localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only",
    "or", "order", "outer", "overlaps", "placing", "primary", "references", "returning", "right",
    "select", "session_user", "similar", "some", "symmetric", "table", "tablesample", "then", "to",
    "trailing", "true", "union", "unique", "user", "using", "variadic", "verbose", "when", "where",
    "window", "with",
];

/// PostgreSQL 15 `COL_NAME_KEYWORD`s that are not a type name by themselves (the others, like
/// `int` or `varchar`, are).
#[rustfmt::skip]
pub(crate) const COL_NAME_NOT_TYPE: [&str; 33] = [
    "between", "coalesce", "exists", "extract", "greatest", "grouping", "inout", "least",
    "national", "none", "normalize", "nullif", "out", "overlay", "position", "precision", "row",
    "setof", "substring", "treat", "trim", "values", "xmlattributes", "xmlconcat", "xmlelement",
    "xmlexists", "xmlforest", "xmlnamespaces", "xmlparse", "xmlpi", "xmlroot", "xmlserialize",
    "xmltable",
];

/// Is this unquoted word a reserved or type/function-name keyword (not usable as a `ColId`)?
pub(crate) fn is_reserved(word: &[u8]) -> bool {
    let mut buf = [0u8; 32];
    if word.len() > buf.len() {
        return false;
    }
    let lower = &mut buf[..word.len()];
    lower.copy_from_slice(word);
    lower.make_ascii_lowercase();
    NOT_COLID
        .binary_search_by(|k| k.as_bytes().cmp(lower))
        .is_ok()
}

/// Unquoted identifier folding: ASCII `A`–`Z` only, as Postgres does in a multibyte encoding.
pub(crate) fn fold(word: &[u8]) -> Vec<u8> {
    word.to_ascii_lowercase()
}

/// Truncates a name to 63 bytes on a character boundary; when it had to, also returns Postgres's
/// `NOTICE 42622 identifier "<orig>" will be truncated to "<cut>"`.
pub(crate) fn truncate(mut name: Vec<u8>) -> (Vec<u8>, Option<Notice>) {
    if name.len() <= MAX_IDENT {
        return (name, None);
    }
    let mut cut = MAX_IDENT;
    // Back up over UTF-8 continuation bytes so no character is split.
    while cut > 0 && (name[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    let message = format!(
        "identifier \"{}\" will be truncated to \"{}\"",
        String::from_utf8_lossy(&name),
        String::from_utf8_lossy(&name[..cut]),
    );
    name.truncate(cut);
    let notice = Notice {
        severity: "NOTICE",
        sqlstate: "42622",
        message,
        hint: None,
        position: None,
    };
    (name, Some(notice))
}

/// The value of an identifier token (unquoted, `"…"` or `U&"…"`), before truncation. `None` when
/// the token is not an identifier or cannot be decoded (Postgres would raise an error).
pub(crate) fn ident_value(src: &str, t: &Token) -> Option<Vec<u8>> {
    let text = src.as_bytes().get(t.start..t.end)?;
    match t.tok {
        Tok::Word => Some(fold(text)),
        Tok::Nchar => Some(b"nchar".to_vec()),
        Tok::QIdent => Some(undouble(text.get(1..text.len().checked_sub(1)?)?)),
        Tok::UIdent { esc, body_end } => {
            let body = src.as_bytes().get(t.start + 3..body_end.checked_sub(1)?)?;
            unicode_unescape(&undouble(body), esc)
        }
        _ => None,
    }
}

/// `""` → `"` inside a quoted identifier body.
fn undouble(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        out.push(body[i]);
        i += if body[i] == b'"' && body.get(i + 1) == Some(&b'"') {
            2
        } else {
            1
        };
    }
    out
}

/// Is this token a `ColId` for the grammar (an identifier, or a keyword that is neither reserved
/// nor a type/function name)?
pub(crate) fn is_colid(src: &str, t: &Token) -> bool {
    match t.tok {
        Tok::QIdent | Tok::UIdent { .. } | Tok::Nchar => true,
        Tok::Word => src
            .as_bytes()
            .get(t.start..t.end)
            .is_some_and(|w| !is_reserved(w)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_list_sorted_and_complete() {
        assert!(NOT_COLID.windows(2).all(|w| w[0] < w[1]));
        for w in [
            "select",
            "USER",
            "Table",
            "verbose",
            "ilike",
            "authorization",
            "end",
            "all",
        ] {
            assert!(is_reserved(w.as_bytes()), "{w}");
        }
        for w in [
            "int",
            "listen",
            "nulls",
            "channel",
            "between",
            "text",
            "ÀbC",
            "savepoint",
        ] {
            assert!(!is_reserved(w.as_bytes()), "{w}");
        }
    }

    #[test]
    fn spec_a7_truncation_on_char_boundary() {
        let (n, notice) = truncate(vec![b'a'; 63]);
        assert_eq!(n.len(), 63);
        assert!(notice.is_none());
        let long = format!("{}é", "a".repeat(62)); // 64 bytes, é straddles byte 63
        let (n, notice) = truncate(long.clone().into_bytes());
        assert_eq!(n, "a".repeat(62).into_bytes());
        let notice = notice.expect("notice");
        assert_eq!(notice.sqlstate, "42622");
        assert_eq!(
            notice.message,
            format!(
                "identifier \"{long}\" will be truncated to \"{}\"",
                "a".repeat(62)
            )
        );
    }

    #[test]
    fn spec_a6_folding() {
        assert_eq!(fold("ÀbC".as_bytes()), "Àbc".as_bytes());
        assert_eq!(undouble(b"q\"\"uote"), b"q\"uote");
    }
}
