//! The wire side of the differential runner: encoding the frontend messages a scenario
//! sends, normalizing the backend messages it receives into transcript lines, and showing
//! two transcripts side by side.

use std::collections::HashMap;
use std::fmt::Write as _;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

use super::{Fe, Step};
use crate::support::raw::Msg;

/// Print a transcript.
pub fn show(t: &[String]) -> String {
    t.join("\n")
}

/// Both transcripts in two columns, aligned on their longest common subsequence: `<` marks
/// a line only PostgreSQL sent, `>` one only pgherald sent.
pub fn side_by_side(title: &str, left: &[String], right: &[String]) -> String {
    let w = left
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(20, 100);
    let (n, m) = (left.len(), right.len());
    // lcs[i][j]: length of the LCS of left[i..] and right[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if left[i] == right[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut s = format!("=== {title}\n{:<w$}   | {}\n", "PostgreSQL", "pgherald");
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && left[i] == right[j] {
            let _ = writeln!(s, "{:<w$}   | {}", left[i], right[j]);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(s, "{:<w$} > | {}", "", right[j]);
            j += 1;
        } else {
            let _ = writeln!(s, "{:<w$} < |", left[i]);
            i += 1;
        }
    }
    s
}

/// The transcript line that introduces a step.
pub(super) fn describe(step: &Step) -> String {
    match step {
        Step::Query(i, sql) | Step::Stmt(i, sql) => format!("c{i} Query {}", text(sql.as_bytes())),
        Step::Ext(i, msgs) => {
            let parts: Vec<String> = msgs.iter().map(fe_name).collect();
            format!("c{i} {}", parts.join(" "))
        }
        Step::SendQuery(i, sql) => format!("c{i} Query {} (no wait)", text(sql.as_bytes())),
        Step::Read(i) => format!("c{i} read to ReadyForQuery"),
        Step::SendExt(i, msgs) => {
            let parts: Vec<String> = msgs.iter().map(fe_name).collect();
            format!("c{i} {} (no wait)", parts.join(" "))
        }
        Step::Connect(i, l) => format!("c{i} connect {}@{}", l.user, l.db),
        Step::Disconnect(i) => format!("c{i} Terminate"),
        Step::Drop(i) => format!("c{i} close socket"),
        Step::Drain => "wait".into(),
    }
}

/// A frontend message, short.
fn fe_name(m: &Fe) -> String {
    match m {
        Fe::Parse(n, sql, t) if t.is_empty() => format!("P({n:?},{})", text(sql.as_bytes())),
        Fe::Parse(n, sql, t) => format!("P({n:?},{},{t:?})", text(sql.as_bytes())),
        Fe::Bind(p, s, _, v, r) => {
            let vals: Vec<String> = v
                .iter()
                .map(|x| match x {
                    None => "NULL".into(),
                    Some(b) => text(b),
                })
                .collect();
            let rf = if r.is_empty() {
                String::new()
            } else {
                format!(",fmt{r:?}")
            };
            format!("B({p:?},{s:?},[{}]{rf})", vals.join(","))
        }
        Fe::Describe(k, n) => format!("D{}({n:?})", *k as char),
        Fe::Execute(p, 0) => format!("E({p:?})"),
        Fe::Execute(p, n) => format!("E({p:?},{n})"),
        Fe::Close(k, n) => format!("C{}({n:?})", *k as char),
        Fe::Sync => "S".into(),
        Fe::Flush => "H".into(),
        Fe::Query(q) => format!("Q({})", text(q.as_bytes())),
    }
}

/// SQL text as run `side` sends it: `@side@` becomes the run's name, for names that are
/// global to the server (prepared transaction ids, roles).
pub fn per_side(sql: &str, side: &str) -> String {
    sql.replace(SIDE_TOKEN, side)
}

/// Written in SQL for the run's name; see [`per_side`].
pub const SIDE_TOKEN: &str = "@side@";

/// Encode one frontend message for run `side`.
pub fn encode(m: &Fe, b: &mut BytesMut, side: &str) {
    match m {
        Fe::Parse(name, sql, types) => {
            frontend::parse(name, &per_side(sql, side), types.iter().copied(), b)
                .expect("encode Parse")
        }
        Fe::Bind(portal, stmt, formats, values, results) => {
            let r = frontend::bind(
                portal,
                stmt,
                formats.iter().copied(),
                values.iter(),
                |v, buf| match v {
                    None => Ok(IsNull::Yes),
                    Some(v) => {
                        buf.extend_from_slice(v);
                        Ok(IsNull::No)
                    }
                },
                results.iter().copied(),
                b,
            );
            assert!(r.is_ok(), "encode Bind");
        }
        Fe::Describe(k, name) => frontend::describe(*k, name, b).expect("encode Describe"),
        Fe::Execute(portal, n) => frontend::execute(portal, *n, b).expect("encode Execute"),
        Fe::Close(k, name) => frontend::close(*k, name, b).expect("encode Close"),
        Fe::Sync => frontend::sync(b),
        Fe::Flush => frontend::flush(b),
        Fe::Query(q) => frontend::query(&per_side(q, side), b).expect("encode Query"),
    }
}

/// A string for bytes: quoted UTF-8, or escaped bytes; long ones abbreviated with their
/// length and a checksum.
pub(super) fn text(b: &[u8]) -> String {
    if b.len() > 300 {
        let hash = b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
            (h ^ c as u64).wrapping_mul(0x100_0000_01b3)
        });
        return format!("{}…<{} bytes, fnv {hash:016x}>", text(&b[..40]), b.len());
    }
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("b\"{}\"", b.escape_ascii()),
    }
}

fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(n) => (&b[..n], &b[n + 1..]),
        None => (b, &[]),
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Normalize one backend message; None drops it (BackendKeyData).
pub fn render(m: &Msg, pids: &HashMap<i32, String>) -> Option<String> {
    let b = &m.body[..];
    Some(match m.tag {
        b'K' => return None,
        b'C' => format!("C({})", text(cstr(b).0)),
        b'Z' => format!("Z({})", b.first().map(|&c| c as char).unwrap_or('?')),
        b'A' => {
            let pid = be_i32(b, 0);
            let who = pids.get(&pid).cloned().unwrap_or_else(|| "other".into());
            let (chan, rest) = cstr(&b[4..]);
            let (payload, _) = cstr(rest);
            format!("A({who}, {}, {})", text(chan), text(payload))
        }
        b'T' => {
            let n = be_i16(b, 0);
            let mut rest = &b[2..];
            let mut cols = vec![];
            for _ in 0..n {
                let (name, r) = cstr(rest);
                let tbl = be_i32(r, 0);
                let (att, oid, len, typmod, fmt) = (
                    be_i16(r, 4),
                    be_i32(r, 6),
                    be_i16(r, 10),
                    be_i32(r, 12),
                    be_i16(r, 16),
                );
                let t = if tbl != 0 {
                    format!(" tbl#{att}")
                } else {
                    String::new()
                };
                cols.push(format!(
                    "{} oid={oid} len={len} mod={typmod} fmt={fmt}{t}",
                    text(name)
                ));
                rest = &r[18..];
            }
            format!("T[{}]", cols.join("; "))
        }
        b'D' => {
            let n = be_i16(b, 0);
            let mut at = 2;
            let mut vals = vec![];
            for _ in 0..n {
                let len = be_i32(b, at);
                at += 4;
                if len < 0 {
                    vals.push("NULL".to_string());
                } else {
                    vals.push(text(&b[at..at + len as usize]));
                    at += len as usize;
                }
            }
            format!("D[{}]", vals.join(", "))
        }
        b'E' | b'N' => {
            let mut parts = vec![];
            let mut rest = b;
            while let Some((&code, r)) = rest.split_first() {
                if code == 0 {
                    break;
                }
                let (v, r) = cstr(r);
                // F, L and R too: errors pgherald writes itself carry Postgres 15's
                // (NOTIFY-SPEC section E).
                if b"SVCMDHPFLR".contains(&code) {
                    parts.push(format!("{}={}", code as char, text(v)));
                }
                rest = r;
            }
            format!("{}{{{}}}", m.tag as char, parts.join(" "))
        }
        b'S' => {
            let (k, r) = cstr(b);
            let (v, _) = cstr(r);
            format!("S({}={})", String::from_utf8_lossy(k), text(v))
        }
        b't' => {
            let n = be_i16(b, 0);
            let oids: Vec<String> = (0..n as usize)
                .map(|i| be_i32(b, 2 + 4 * i).to_string())
                .collect();
            format!("ParameterDescription[{}]", oids.join(","))
        }
        b'1' => "ParseComplete".into(),
        b'2' => "BindComplete".into(),
        b'3' => "CloseComplete".into(),
        b'n' => "NoData".into(),
        b'I' => "EmptyQueryResponse".into(),
        b's' => "PortalSuspended".into(),
        other => format!("{}[{}]", other as char, b.escape_ascii()),
    })
}
