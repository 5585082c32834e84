//! SQL `DEALLOCATE` of statements pgherald keeps for the client itself: those it answers
//! (LISTEN, NOTIFY, `pg_notify`… prepared with Parse: never Parsed on the server) and, in
//! transaction pooling, every named statement (prepared on each server under pgherald's own
//! names, `backend::prepared`). The server knows neither by the client's name, so
//! `DEALLOCATE name` of one is answered here: its record is dropped and `DEALLOCATE` sent,
//! as Postgres does (at once, inside a block too, and not undone by ROLLBACK; 25P02 in an
//! aborted block; 26000 once the name is gone). A server-side copy stays under pgherald's
//! name, for other clients with the same text, until the server's cache evicts it. Other
//! names (SQL `PREPARE`, statements forwarded as they are in session mode) and
//! `DEALLOCATE ALL` go to the server; `DEALLOCATE ALL`'s reply drops pgherald's records too
//! (`outbound`). A `DEALLOCATE` is answered in reply order, a Parse recorded as it is read:
//! [`Births`] keeps a Parse pipelined after a `DEALLOCATE` of the same name from being
//! dropped by it.

use std::borrow::Cow;
use std::collections::HashMap;

use super::extended::Decision;
use super::intercept::{write_failure, Failure, Intercept};
use super::plan::{LocalReply, Step};
use super::session::Session;
use super::simple::Route;
use crate::protocol::origin::Stage;
use crate::sql::Kind;

/// The intercepts of one Query's (or one Parse's) statements, in order: `DEALLOCATE name`
/// is one when `owned(name)` and no earlier statement of the same text dropped it (by name
/// or with `DEALLOCATE ALL`); then a repeat goes to the server, which answers 26000.
pub struct Dropping<'a> {
    owned: &'a dyn Fn(&[u8]) -> bool,
    seq: u64,
    dropped: Vec<Vec<u8>>,
    all: bool,
}

impl<'a> Dropping<'a> {
    /// Follow the statements of one text; `owned` tells the names pgherald keeps, `seq` is
    /// [`Births::now`] as the text is read.
    pub fn new(owned: &'a dyn Fn(&[u8]) -> bool, seq: u64) -> Dropping<'a> {
        Dropping {
            owned,
            seq,
            dropped: Vec::new(),
            all: false,
        }
    }

    /// The intercept for the next statement, if pgherald answers it.
    pub fn intercept(&mut self, kind: &Kind) -> Option<Intercept> {
        match kind {
            Kind::Deallocate(name)
                if !self.all && (self.owned)(name) && !self.dropped.contains(name) =>
            {
                self.dropped.push(name.clone());
                Some(Intercept::Deallocate {
                    name: name.clone(),
                    seq: self.seq,
                })
            }
            Kind::DeallocateAll => {
                self.all = true;
                None
            }
            k => Intercept::from_kind(k),
        }
    }
}

/// When statement names were Parsed, counted in the order of the client's messages, while
/// earlier requests still await replies. pgherald reads a Parse (and records its statement)
/// at once but answers a `DEALLOCATE` in reply order: one that the client sent before a
/// Parse of the same name must not drop the statement that Parse made.
/// Sessions that never `DEALLOCATE` such a statement record nothing.
#[derive(Debug, Default)]
pub struct Births {
    seq: u64,
    born: HashMap<Vec<u8>, u64>,
    /// A `DEALLOCATE` pgherald answers may be waiting for its turn.
    armed: bool,
}

impl Births {
    /// The count to stamp a `DEALLOCATE` with as pgherald reads it.
    pub fn now(&self) -> u64 {
        self.seq
    }

    /// A `DEALLOCATE` pgherald answers was read (see [`deallocates`]).
    pub fn arm(&mut self) {
        self.armed = true;
    }

    /// A Parse of statement `name` read from the client; `pending`: replies to earlier
    /// requests are still due (otherwise no `DEALLOCATE` waits, and nothing is recorded).
    pub fn parsed(&mut self, name: &[u8], pending: bool) {
        if !self.armed {
            return;
        }
        if !pending {
            self.armed = false;
            self.born.clear();
            return;
        }
        self.seq += 1;
        self.born.insert(name.to_vec(), self.seq);
    }

    /// True if `name` was Parsed after a `DEALLOCATE` stamped `seq` was read.
    fn after(&self, name: &[u8], seq: u64) -> bool {
        !self.born.is_empty() && self.born.get(name).is_some_and(|&b| b > seq)
    }
}

/// Stamp an Execute of a prepared `DEALLOCATE` as it is read; true if it is one.
pub fn stamp(d: &mut Decision, births: &Births) -> bool {
    if let Decision::Local(LocalReply::Execute {
        action: Intercept::Deallocate { seq, .. },
        ..
    }) = d
    {
        *seq = births.now();
        return true;
    }
    false
}

/// True if a Query's route has a `DEALLOCATE` that pgherald answers.
pub fn deallocates(route: &Route) -> bool {
    let is = |i: &Intercept| matches!(i, Intercept::Deallocate { .. });
    match route {
        Route::Local(q) => q.stmts.iter().any(is),
        Route::Rewrite(_, plan) => plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Placeholder(i) if is(i))),
        Route::Forward | Route::Tracked(_) => false,
    }
}

/// 26000, as Postgres words it for a statement name that does not exist.
pub fn unknown_statement(name: &[u8]) -> Failure {
    Failure {
        code: "26000",
        message: Cow::Owned(format!(
            "prepared statement \"{}\" does not exist",
            String::from_utf8_lossy(name)
        )),
        context: None,
        stage: Stage::Query,
    }
}

impl Session {
    /// True if pgherald keeps statement `name` for this client (see the module header).
    pub(crate) fn owns_statement(&self, name: &[u8]) -> bool {
        self.ext.intercepts(name) || self.stmts.get(name).is_some()
    }

    /// Run an intercepted statement in transaction state `status`, writing its reply to the
    /// client (`describe_rows` and `format` as [`Intercept::run`]). A `DEALLOCATE` drops the
    /// statement's records first, or fails with 26000 if they are gone already. False if it
    /// raised an error (already written).
    pub(crate) fn run_intercept(
        &mut self,
        i: &Intercept,
        status: u8,
        describe_rows: bool,
        format: i16,
    ) -> bool {
        if let Intercept::Deallocate { name, seq } = i {
            // A statement Parsed under that name after this DEALLOCATE stays.
            if status != b'E' && !self.births.after(name, *seq) {
                let intercepted = self.ext.forget(name);
                let managed = self.stmts.remove(name);
                if !(intercepted || managed) {
                    let stage = if describe_rows {
                        Stage::Query
                    } else {
                        Stage::Execute
                    };
                    write_failure(&mut self.client.out, &unknown_statement(name).at(stage));
                    return false;
                }
            }
        }
        i.run(
            &mut self.ch,
            status,
            describe_rows,
            format,
            &mut self.client.out,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_dropped_once_per_text_and_not_after_all() {
        let owned = |n: &[u8]| n == b"a" || n == b"b";
        let mut d = Dropping::new(&owned, 7);
        let dealloc = |n: &str| Kind::Deallocate(n.as_bytes().to_vec());
        assert_eq!(
            d.intercept(&dealloc("a")),
            Some(Intercept::Deallocate {
                name: b"a".to_vec(),
                seq: 7
            })
        );
        assert_eq!(d.intercept(&dealloc("a")), None);
        assert_eq!(d.intercept(&dealloc("c")), None);
        assert_eq!(d.intercept(&Kind::DeallocateAll), None);
        assert_eq!(d.intercept(&dealloc("b")), None);
        assert_eq!(
            d.intercept(&Kind::UnlistenAll),
            Some(Intercept::UnlistenAll)
        );
    }

    #[test]
    fn births_count_only_while_replies_are_due() {
        let mut b = Births::default();
        b.parsed(b"x", true);
        assert_eq!(b.now(), 0);
        b.arm();
        let stamp = b.now();
        b.parsed(b"x", true);
        assert!(b.after(b"x", stamp));
        assert!(!b.after(b"y", stamp));
        assert!(!b.after(b"x", b.now()));
        b.parsed(b"y", false);
        assert!(!b.after(b"x", stamp));
    }
}
