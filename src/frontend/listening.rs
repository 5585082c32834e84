//! `pg_listening_channels()` inside forwarded statements (`sql::listening` finds the calls):
//! the text and messages the server gets instead, and the way back for its replies.
//!
//! - Simple Query: each call becomes `unnest('{…}'::text[])`, the session's committed channels
//!   as a constant (as of the statement: a COMMIT earlier in the same Query counts).
//! - Extended protocol: the Parse text gets `unnest($n::text[])`, `$n` one parameter past the
//!   client's, declared `text[]`; every Bind of that statement gets the committed set as that
//!   extra value, so a prepared statement executed again later sees the set of its own time,
//!   and the rewritten text is the same for every session (transaction pooling shares it).
//!   The extra parameter is hidden from ParameterDescription.
//! - The server's positions (`P` of an ErrorResponse or NoticeResponse) are mapped back to the
//!   client's text.

use bytes::BytesMut;

use super::txn::ListenSet;
use crate::protocol::framer::{self, cstr};
use crate::sql::edit::{Editor, PositionMap};
use crate::sql::listening::{Calls, NAME};

/// Type OID of `text[]`.
const TEXT_ARRAY_OID: u32 = 1009;

/// Rewrite the `found` calls into `ed`, each as `replacement`, adding the aliases.
pub fn rewrite_calls(ed: &mut Editor<'_>, found: &Calls, replacement: &str) {
    let alias = format!(" AS {NAME} ");
    for c in &found.calls {
        ed.replace(c.range.clone(), replacement);
        if let Some(at) = c.alias_at {
            ed.insert(at, &alias);
        }
    }
}

/// The channels as a text-format array value: `{"a","b c"}`. `None` if one is not UTF-8.
pub fn array_value(set: &ListenSet) -> Option<String> {
    let mut out = String::from("{");
    for (i, c) in set.iter().enumerate() {
        let c = std::str::from_utf8(c).ok()?;
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for ch in c.chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push('}');
    Some(out)
}

/// A string constant for `s` that means the same whatever standard_conforming_strings is, as
/// Postgres's `quote_literal` writes it: `E'…'` with doubled backslashes when it has any.
fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    if s.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for ch in s.chars() {
        if ch == '\'' || ch == '\\' {
            out.push(ch);
        }
        out.push(ch);
    }
    out.push('\'');
    out
}

/// What a call becomes in a simple Query.
pub fn constant_call(set: &ListenSet) -> Option<String> {
    Some(format!(
        "unnest({}::text[])",
        quote_literal(&array_value(set)?)
    ))
}

/// A Parse body (`name`, `query` whose statement holds the `found` calls, then the parameter
/// types) rewritten to take the set as one more parameter; with the map back to `query`.
pub fn parse_body(body: &[u8], found: &Calls) -> Option<(Vec<u8>, PositionMap)> {
    let (name, rest) = cstr(body)?;
    let (query, types) = cstr(rest)?;
    let query = std::str::from_utf8(query).ok()?;
    let declared = u16::from_be_bytes([*types.first()?, *types.get(1)?]);
    let oids = types.get(2..2 + 4 * usize::from(declared))?;
    let n = u32::from(declared).max(found.max_param).checked_add(1)?;
    let count = u16::try_from(n).ok().filter(|c| *c <= i16::MAX as u16)?;
    let mut ed = Editor::new(query);
    rewrite_calls(&mut ed, found, &format!("unnest(${n}::text[])"));
    let (text, map) = ed.finish();
    let mut out = Vec::with_capacity(body.len() + 64 + 4 * usize::from(count));
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(oids);
    for _ in u32::from(declared) + 1..n {
        out.extend_from_slice(&0u32.to_be_bytes());
    }
    out.extend_from_slice(&TEXT_ARRAY_OID.to_be_bytes());
    Some((out, map))
}

/// A Bind body with the set appended as a text parameter. `None` (forward the Bind as it is,
/// and let the server judge it) when its parameter formats do not fit its values.
pub fn bind_body(body: &[u8], set: &ListenSet) -> Option<Vec<u8>> {
    let (portal, rest) = cstr(body)?;
    let (stmt, rest) = cstr(rest)?;
    let (nfmt, rest) = take_u16(rest)?;
    let fmts = rest.get(..2 * usize::from(nfmt))?;
    let rest = &rest[fmts.len()..];
    let (nvals, rest) = take_u16(rest)?;
    let mut at = 0;
    for _ in 0..nvals {
        let len = i32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?);
        at += 4 + usize::try_from(len).unwrap_or(0);
    }
    let values = rest.get(..at)?;
    let results = &rest[at..];
    let value = array_value(set)?;
    let nvals1 = nvals.checked_add(1).filter(|n| *n <= i16::MAX as u16)?;
    let mut out = Vec::with_capacity(body.len() + value.len() + 2 * usize::from(nvals1) + 8);
    out.extend_from_slice(portal);
    out.push(0);
    out.extend_from_slice(stmt);
    out.push(0);
    match (nfmt, fmts) {
        (0, _) | (1, [0, 0]) => out.extend_from_slice(&fmts_header(nfmt, fmts)),
        (1, code) => {
            // One format for every parameter: spell it out, then text for the set.
            out.extend_from_slice(&nvals1.to_be_bytes());
            for _ in 0..nvals {
                out.extend_from_slice(code);
            }
            out.extend_from_slice(&0u16.to_be_bytes());
        }
        (n, _) if n == nvals => {
            out.extend_from_slice(&nvals1.to_be_bytes());
            out.extend_from_slice(fmts);
            out.extend_from_slice(&0u16.to_be_bytes());
        }
        _ => return None,
    }
    out.extend_from_slice(&nvals1.to_be_bytes());
    out.extend_from_slice(values);
    out.extend_from_slice(&i32::try_from(value.len()).ok()?.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(results);
    Some(out)
}

fn fmts_header(n: u16, fmts: &[u8]) -> Vec<u8> {
    let mut v = n.to_be_bytes().to_vec();
    v.extend_from_slice(fmts);
    v
}

fn take_u16(b: &[u8]) -> Option<(u16, &[u8])> {
    Some((u16::from_be_bytes([*b.first()?, *b.get(1)?]), b.get(2..)?))
}

/// A ParameterDescription (body) without its last parameter, framed into `out`.
pub fn hide_last_param(body: &[u8], out: &mut BytesMut) -> bool {
    let Some((n, oids)) = take_u16(body) else {
        return false;
    };
    let Some(keep) = n.checked_sub(1) else {
        return false;
    };
    let Some(kept) = oids.get(..4 * usize::from(keep)) else {
        return false;
    };
    let mut b = keep.to_be_bytes().to_vec();
    b.extend_from_slice(kept);
    framer::put(out, b't', &b)
}

/// An ErrorResponse or NoticeResponse (`tag`, `body`) with its `P` field mapped back through
/// `map`, framed into `out`. False (nothing written) when it has no `P` field.
pub fn remap_position(tag: u8, body: &[u8], map: &PositionMap, out: &mut BytesMut) -> bool {
    let Some(pos) = framer::field(body, b'P')
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse::<usize>().ok())
    else {
        return false;
    };
    let mut b = Vec::with_capacity(body.len() + 4);
    for (code, value) in framer::fields(body) {
        b.push(code);
        if code == b'P' {
            b.extend_from_slice(map.original(pos).to_string().as_bytes());
        } else {
            b.extend_from_slice(value);
        }
        b.push(0);
    }
    b.push(0);
    framer::put(out, tag, &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::txn::ListenOp;
    use crate::sql::listening::calls;

    fn set(names: &[&str]) -> ListenSet {
        let mut s = ListenSet::new();
        let ops: Vec<_> = names
            .iter()
            .map(|n| ListenOp::Listen(n.as_bytes().to_vec()))
            .collect();
        s.apply(&ops);
        s
    }

    #[test]
    fn constants_quote_every_character() {
        assert_eq!(array_value(&set(&[])).unwrap(), "{}");
        let s = set(&["a", "b c", "q\"uote", "back\\slash", "it's"]);
        assert_eq!(
            array_value(&s).unwrap(),
            r#"{"a","b c","q\"uote","back\\slash","it's"}"#
        );
        assert_eq!(
            constant_call(&set(&["it's"])).unwrap(),
            r#"unnest('{"it''s"}'::text[])"#
        );
        assert_eq!(
            constant_call(&set(&["a\\b"])).unwrap(),
            r#"unnest(E'{"a\\\\b"}'::text[])"#
        );
    }

    fn parse_msg(query: &str, types: &[u32]) -> Vec<u8> {
        let mut b = b"s1\0".to_vec();
        b.extend_from_slice(query.as_bytes());
        b.push(0);
        b.extend_from_slice(&(types.len() as u16).to_be_bytes());
        for t in types {
            b.extend_from_slice(&t.to_be_bytes());
        }
        b
    }

    #[test]
    fn parse_gets_one_more_parameter() {
        let q = "SELECT $2::int, pg_listening_channels()";
        let found = calls(q, 0..q.len(), true);
        let (body, map) = parse_body(&parse_msg(q, &[23]), &found).unwrap();
        let (name, rest) = cstr(&body).unwrap();
        let (text, types) = cstr(rest).unwrap();
        assert_eq!(name, b"s1");
        assert_eq!(
            std::str::from_utf8(text).unwrap(),
            "SELECT $2::int, unnest($3::text[]) AS pg_listening_channels "
        );
        let mut want = 3u16.to_be_bytes().to_vec();
        for t in [23u32, 0, 1009] {
            want.extend_from_slice(&t.to_be_bytes());
        }
        assert_eq!(types, &want[..]);
        assert_eq!(map.original(8), 8);
        assert!(parse_body(b"s1\0SELECT\0\0", &found).is_none());
    }

    fn bind_msg(fmts: &[u16], vals: &[Option<&str>], results: &[u16]) -> Vec<u8> {
        let mut b = b"p\0s\0".to_vec();
        b.extend_from_slice(&(fmts.len() as u16).to_be_bytes());
        fmts.iter()
            .for_each(|f| b.extend_from_slice(&f.to_be_bytes()));
        b.extend_from_slice(&(vals.len() as u16).to_be_bytes());
        for v in vals {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v.as_bytes());
                }
            }
        }
        b.extend_from_slice(&(results.len() as u16).to_be_bytes());
        results
            .iter()
            .for_each(|f| b.extend_from_slice(&f.to_be_bytes()));
        b
    }

    #[test]
    fn bind_gets_the_set() {
        let s = set(&["x"]);
        let v = Some("{\"x\"}");
        for (fmts, want_fmts) in [
            (&[][..], &[][..]),
            (&[0][..], &[0][..]),
            (&[1][..], &[1, 1, 0][..]),
            (&[1, 0][..], &[1, 0, 0][..]),
        ] {
            let got = bind_body(&bind_msg(fmts, &[Some("a"), None], &[1]), &s).unwrap();
            assert_eq!(
                got,
                bind_msg(want_fmts, &[Some("a"), None, v], &[1]),
                "{fmts:?}"
            );
        }
        assert!(bind_body(&bind_msg(&[0, 0, 0], &[Some("a")], &[]), &s).is_none());
        assert!(bind_body(b"p\0s\0\0", &s).is_none());
    }

    #[test]
    fn replies_are_mapped_back() {
        let q = "SELECT pg_listening_channels() FROM nosuch";
        let found = calls(q, 0..q.len(), true);
        let mut ed = Editor::new(q);
        rewrite_calls(&mut ed, &found, "unnest('{}'::text[])");
        let (text, map) = ed.finish();
        let error = |pos: usize| {
            let mut body = Vec::new();
            for (c, v) in [(b'S', "ERROR".to_string()), (b'P', pos.to_string())] {
                body.push(c);
                body.extend_from_slice(v.as_bytes());
                body.push(0);
            }
            body.push(0);
            body
        };
        let mut out = BytesMut::new();
        let at = text.find("nosuch").unwrap() + 1;
        assert!(remap_position(b'E', &error(at), &map, &mut out));
        let h = framer::header(&out).unwrap().unwrap();
        assert_eq!(h.total, out.len());
        let want = (q.find("nosuch").unwrap() + 1).to_string();
        assert_eq!(framer::field(&out[5..], b'P'), Some(want.as_bytes()));
        assert_eq!(framer::field(&out[5..], b'S'), Some(&b"ERROR"[..]));
        assert!(!remap_position(b'E', b"SERROR\0\0", &map, &mut out));
        let mut out = BytesMut::new();
        let mut pd = 2u16.to_be_bytes().to_vec();
        pd.extend_from_slice(&[0, 0, 0, 23, 0, 0, 3, 241]);
        assert!(hide_last_param(&pd, &mut out));
        assert_eq!(&out[..], b"t\0\0\0\x0a\0\x01\0\0\0\x17");
    }
}
