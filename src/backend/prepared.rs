//! Named prepared statements in transaction pooling: each client's statements are
//! remembered, prepared lazily on whatever server the client holds under pgherald's own
//! names (shared between clients when the text and parameter types match), and bounded per
//! server connection (`max_prepared_statements`, least recently used evicted), as PgBouncer
//! 1.21+ does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use dashmap::DashMap;

use crate::protocol::framer::cstr;

/// Process-wide names for statement texts: (query, parameter types) → number.
#[derive(Debug, Default)]
pub struct Registry {
    ids: DashMap<(Bytes, Bytes), u64>,
    next: AtomicU64,
}

impl Registry {
    fn id(&self, query: &[u8], types: &[u8]) -> u64 {
        let key = (Bytes::copy_from_slice(query), Bytes::copy_from_slice(types));
        *self
            .ids
            .entry(key)
            .or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// The server-side name of statement `id`.
pub fn server_name(id: u64) -> String {
    format!("pgherald_{id}")
}

/// A client's statement: its server id and the Parse frame that prepares it there.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Statement number.
    pub id: u64,
    /// Parse message (whole frame) under the server-side name.
    pub parse: Bytes,
}

/// The named statements one client has prepared.
#[derive(Debug, Default)]
pub struct ClientStatements {
    map: HashMap<Vec<u8>, Prepared>,
}

impl ClientStatements {
    /// Record a Parse body (name, query, types) and return the statement.
    pub fn parse(&mut self, registry: &Registry, body: &[u8]) -> Option<(Vec<u8>, Prepared)> {
        let (name, rest) = cstr(body)?;
        let (query, types) = cstr(rest)?;
        let id = registry.id(query, types);
        let sname = server_name(id);
        let mut frame = BytesMut::with_capacity(body.len() + 16);
        frame.put_u8(b'P');
        frame.put_i32((4 + sname.len() + 1 + rest.len()) as i32);
        frame.put_slice(sname.as_bytes());
        frame.put_u8(0);
        frame.put_slice(rest);
        let p = Prepared {
            id,
            parse: frame.freeze(),
        };
        self.map.insert(name.to_vec(), p.clone());
        Some((name.to_vec(), p))
    }

    /// The statement a client name refers to.
    pub fn get(&self, name: &[u8]) -> Option<&Prepared> {
        self.map.get(name)
    }

    /// Forget a name (Close, or a failed Parse).
    pub fn remove(&mut self, name: &[u8]) -> bool {
        self.map.remove(name).is_some()
    }

    /// Forget everything (DISCARD ALL / DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// True when the client has no named statement.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The statements one server connection has prepared, with last-use ticks.
#[derive(Debug, Default)]
pub struct ServerStatements {
    have: HashMap<u64, u64>,
    tick: u64,
}

impl ServerStatements {
    /// True if statement `id` is prepared here (and mark it used).
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        match self.have.get_mut(&id) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Record statement `id` as prepared; returns the statement to evict first when the
    /// connection already holds `max`.
    pub fn insert(&mut self, id: u64, max: usize) -> Option<u64> {
        let evict = if max > 0 && self.have.len() >= max {
            let victim = self.have.iter().min_by_key(|(_, t)| **t).map(|(id, _)| *id);
            if let Some(v) = victim {
                self.have.remove(&v);
            }
            victim
        } else {
            None
        };
        self.tick += 1;
        self.have.insert(id, self.tick);
        evict
    }

    /// Statement `id` is not (or no longer) prepared here.
    pub fn forget(&mut self, id: u64) {
        self.have.remove(&id);
    }

    /// The server dropped every statement.
    pub fn clear(&mut self) {
        self.have.clear();
    }

    /// Number of statements prepared here.
    pub fn len(&self) -> usize {
        self.have.len()
    }

    /// True when none is prepared here.
    pub fn is_empty(&self) -> bool {
        self.have.is_empty()
    }
}

/// A Bind frame for `body` (portal, statement, rest) naming the server-side statement.
pub fn bind_frame(body: &[u8], id: u64) -> Option<Bytes> {
    let (portal, rest) = cstr(body)?;
    let (_, rest) = cstr(rest)?;
    let sname = server_name(id);
    let mut f = BytesMut::with_capacity(body.len() + 16);
    f.put_u8(b'B');
    f.put_i32((4 + portal.len() + 1 + sname.len() + 1 + rest.len()) as i32);
    f.put_slice(portal);
    f.put_u8(0);
    f.put_slice(sname.as_bytes());
    f.put_u8(0);
    f.put_slice(rest);
    Some(f.freeze())
}

/// A Describe-statement frame naming the server-side statement.
pub fn describe_frame(id: u64) -> Bytes {
    named_frame(b'D', b'S', id)
}

/// A Close-statement frame naming the server-side statement.
pub fn close_frame(id: u64) -> Bytes {
    named_frame(b'C', b'S', id)
}

fn named_frame(tag: u8, kind: u8, id: u64) -> Bytes {
    let sname = server_name(id);
    let mut f = BytesMut::with_capacity(sname.len() + 8);
    f.put_u8(tag);
    f.put_i32((4 + 1 + sname.len() + 1) as i32);
    f.put_u8(kind);
    f.put_slice(sname.as_bytes());
    f.put_u8(0);
    f.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_shares_a_name_and_lru_evicts() {
        let reg = Registry::default();
        let mut a = ClientStatements::default();
        let mut b = ClientStatements::default();
        let (_, pa) = a.parse(&reg, b"s1\0select $1\0\0\x01\0\0\0\x17").unwrap();
        let (_, pb) = b
            .parse(&reg, b"other\0select $1\0\0\x01\0\0\0\x17")
            .unwrap();
        let (_, pc) = b.parse(&reg, b"x\0select $1\0\0\x01\0\0\0\x19").unwrap();
        assert_eq!(pa.id, pb.id);
        assert_ne!(pa.id, pc.id);
        assert!(pa.parse.starts_with(b"P"));
        let mut s = ServerStatements::default();
        assert_eq!(s.insert(1, 2), None);
        assert_eq!(s.insert(2, 2), None);
        assert!(s.touch(1));
        assert_eq!(s.insert(3, 2), Some(2));
        assert!(!s.touch(2));
    }

    #[test]
    fn bind_is_renamed() {
        let f = bind_frame(b"p\0s1\0\0\0\0\0\0\0", 7).unwrap();
        assert_eq!(&f[5..], b"p\0pgherald_7\0\0\0\0\0\0\0");
        assert_eq!(
            u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize,
            f.len() - 1
        );
    }
}
