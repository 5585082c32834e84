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
//! (`outbound`).

use std::borrow::Cow;

use super::intercept::{write_failure, Failure, Intercept};
use super::session::Session;
use crate::protocol::origin::Stage;
use crate::sql::Kind;

/// The intercepts of one Query's (or one Parse's) statements, in order: `DEALLOCATE name`
/// is one when `owned(name)` and no earlier statement of the same text dropped it (by name
/// or with `DEALLOCATE ALL`); then a repeat goes to the server, which answers 26000.
pub struct Dropping<'a> {
    owned: &'a dyn Fn(&[u8]) -> bool,
    dropped: Vec<Vec<u8>>,
    all: bool,
}

impl<'a> Dropping<'a> {
    /// Follow the statements of one text; `owned` tells the names pgherald keeps.
    pub fn new(owned: &'a dyn Fn(&[u8]) -> bool) -> Dropping<'a> {
        Dropping {
            owned,
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
                Some(Intercept::Deallocate(name.clone()))
            }
            Kind::DeallocateAll => {
                self.all = true;
                None
            }
            k => Intercept::from_kind(k),
        }
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
        if let Intercept::Deallocate(name) = i {
            if status != b'E' {
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
