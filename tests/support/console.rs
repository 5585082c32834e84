//! Helpers for the admin console tests: RowDescription parsing and simple queries.

use super::raw::{Msg, Raw};

/// Column names and type OIDs of a RowDescription body.
pub fn columns(body: &[u8]) -> Vec<(String, u32)> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let end = at + body[at..].iter().position(|b| *b == 0).expect("name end");
        let name = String::from_utf8_lossy(&body[at..end]).into_owned();
        at = end + 1;
        let oid = u32::from_be_bytes([body[at + 6], body[at + 7], body[at + 8], body[at + 9]]);
        at += 18;
        out.push((name, oid));
    }
    out
}

/// A DataRow body as text values.
pub fn row(body: &[u8]) -> Vec<Option<String>> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            out.push(Some(
                String::from_utf8_lossy(&body[at..at + len]).into_owned(),
            ));
            at += len;
        }
    }
    out
}

/// PgBouncer's type letters (`s`/`T` text, `i` int4, `q` int8, `N` numeric) as OIDs.
pub fn oids(letters: &str) -> Vec<u32> {
    letters
        .chars()
        .map(|c| match c {
            'i' => 23,
            'q' => 20,
            'N' => 1700,
            _ => 25,
        })
        .collect()
}

/// Run one console query; returns (columns, rows, error message).
pub async fn query(
    r: &mut Raw,
    sql: &str,
) -> (Vec<(String, u32)>, Vec<Vec<Option<String>>>, Option<Msg>) {
    r.query(sql).await;
    let msgs = r.until_ready().await;
    let mut cols = Vec::new();
    let mut rows = Vec::new();
    let mut err = None;
    for m in msgs {
        match m.tag {
            b'T' => cols = columns(&m.body),
            b'D' => rows.push(row(&m.body)),
            b'E' => err = Some(m),
            _ => {}
        }
    }
    (cols, rows, err)
}

/// The value of column `name` in `row`.
pub fn get<'a>(cols: &[(String, u32)], row: &'a [Option<String>], name: &str) -> Option<&'a str> {
    let i = cols.iter().position(|(n, _)| n == name)?;
    row[i].as_deref()
}
