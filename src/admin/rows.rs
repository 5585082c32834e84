//! Result sets the console writes: a RowDescription with PgBouncer's column types (text,
//! int4, int8, numeric), DataRows of text values (NULL allowed), then CommandComplete.

use bytes::{BufMut, BytesMut};

/// A column type, as PgBouncer's `pktbuf_write_RowDescription` letters map them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `s` (and `T`, timestamps sent as text): text.
    Text,
    /// `i`: int4.
    Int4,
    /// `q`: int8.
    Int8,
    /// `N`: numeric.
    Numeric,
}

impl Ty {
    fn oid(self) -> u32 {
        match self {
            Ty::Text => 25,
            Ty::Int4 => 23,
            Ty::Int8 => 20,
            Ty::Numeric => 1700,
        }
    }

    fn len(self) -> i16 {
        match self {
            Ty::Text | Ty::Numeric => -1,
            Ty::Int4 => 4,
            Ty::Int8 => 8,
        }
    }

    /// PgBouncer's type letter string → types (`s`/`T` text, `i`, `q`, `N`).
    pub fn parse(letters: &str) -> Vec<Ty> {
        letters
            .chars()
            .map(|c| match c {
                'i' => Ty::Int4,
                'q' => Ty::Int8,
                'N' => Ty::Numeric,
                _ => Ty::Text,
            })
            .collect()
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// SQL NULL.
    Null,
    /// Text.
    Text(String),
    /// A number.
    Int(i64),
    /// An unsigned number (numeric columns).
    U(u64),
}

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::Text(s.to_string())
    }
}
impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::Text(s)
    }
}
impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<usize> for Val {
    fn from(v: usize) -> Val {
        Val::Int(v as i64)
    }
}
impl From<u64> for Val {
    fn from(v: u64) -> Val {
        Val::U(v)
    }
}
impl From<i32> for Val {
    fn from(v: i32) -> Val {
        Val::Int(v as i64)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Val {
        Val::Int(v as i64)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// A result set being built.
#[derive(Debug)]
pub struct Table {
    /// Column names.
    pub names: Vec<&'static str>,
    /// Column types.
    pub types: Vec<Ty>,
    /// Rows.
    pub rows: Vec<Vec<Val>>,
}

impl Table {
    /// A table with PgBouncer's type letters and column names.
    pub fn new(letters: &str, names: &[&'static str]) -> Table {
        let types = Ty::parse(letters);
        debug_assert_eq!(types.len(), names.len());
        Table {
            names: names.to_vec(),
            types,
            rows: Vec::new(),
        }
    }

    /// Add a row.
    pub fn row(&mut self, vals: Vec<Val>) {
        debug_assert_eq!(vals.len(), self.names.len());
        self.rows.push(vals);
    }

    /// RowDescription, DataRows and CommandComplete `SHOW`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u8(b'T');
        out.put_i32(0);
        out.put_i16(self.names.len() as i16);
        for (name, ty) in self.names.iter().zip(&self.types) {
            out.put_slice(name.as_bytes());
            out.put_u8(0);
            out.put_u32(0);
            out.put_i16(0);
            out.put_u32(ty.oid());
            out.put_i16(ty.len());
            out.put_i32(-1);
            out.put_i16(0);
        }
        patch_len(out, start);
        for row in &self.rows {
            let start = out.len();
            out.put_u8(b'D');
            out.put_i32(0);
            out.put_i16(row.len() as i16);
            for v in row {
                let text = match v {
                    Val::Null => {
                        out.put_i32(-1);
                        continue;
                    }
                    Val::Text(s) => s.clone(),
                    Val::Int(i) => i.to_string(),
                    Val::U(u) => u.to_string(),
                };
                out.put_i32(text.len() as i32);
                out.put_slice(text.as_bytes());
            }
            patch_len(out, start);
        }
        crate::protocol::reply::command_complete(out, "SHOW");
    }
}

fn patch_len(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}
