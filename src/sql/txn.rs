//! Transaction control: BEGIN / START TRANSACTION, COMMIT / END, ROLLBACK / ABORT, SAVEPOINT,
//! RELEASE, ROLLBACK TO, COMMIT PREPARED, ROLLBACK PREPARED. These statements are always
//! forwarded to Postgres; the classification only tells pgherald what they will do if they
//! succeed, so anything not matched exactly is [`Kind::Other`].

use super::ctx::Ctx;
use super::Kind;

/// Classifies a statement whose first word (lower case) is `first`.
pub(crate) fn txn(c: &Ctx, first: &[u8]) -> Kind {
    match first {
        b"begin" => begin(c, opt_transaction(c, 1)),
        b"start" if c.word(1, "transaction") => begin(c, 2),
        b"commit" if c.word(1, "prepared") => prepared(c, Kind::CommitPrepared),
        b"rollback" if c.word(1, "prepared") => prepared(c, Kind::RollbackPrepared),
        b"commit" | b"end" => finish(c, Kind::Commit, Kind::CommitChain),
        b"abort" => finish(c, Kind::Rollback, Kind::RollbackChain),
        b"rollback" => {
            let i = opt_transaction(c, 1);
            if c.word(i, "to") {
                rollback_to(c, i + 1)
            } else {
                finish(c, Kind::Rollback, Kind::RollbackChain)
            }
        }
        b"savepoint" => named(c, 1).map_or(Kind::Other, Kind::Savepoint),
        b"release" => {
            let i = if c.word(1, "savepoint") && c.len() > 2 {
                2
            } else {
                1
            };
            named(c, i).map_or(Kind::Other, Kind::Release)
        }
        _ => Kind::Other,
    }
}

/// Skips an optional `WORK` or `TRANSACTION` at `i`.
fn opt_transaction(c: &Ctx, i: usize) -> usize {
    if c.word(i, "work") || c.word(i, "transaction") {
        i + 1
    } else {
        i
    }
}

/// `COMMIT | END | ROLLBACK | ABORT [WORK | TRANSACTION] [AND NO CHAIN]` → `kind`;
/// `.. AND CHAIN` (which also opens a new transaction block) → `chained`.
fn finish(c: &Ctx, kind: Kind, chained: Kind) -> Kind {
    let i = opt_transaction(c, 1);
    let (end, kind) = if c.word(i, "and") && c.word(i + 1, "no") && c.word(i + 2, "chain") {
        (i + 3, kind)
    } else if c.word(i, "and") && c.word(i + 1, "chain") {
        (i + 2, chained)
    } else {
        (i, kind)
    };
    if end == c.len() {
        kind
    } else {
        Kind::Other
    }
}

/// `COMMIT PREPARED 'gid'` / `ROLLBACK PREPARED 'gid'`.
fn prepared(c: &Ctx, kind: Kind) -> Kind {
    if c.is_sconst(2) && c.len() == 3 {
        kind
    } else {
        Kind::Other
    }
}

/// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name`, with `i` just after `TO`.
fn rollback_to(c: &Ctx, i: usize) -> Kind {
    let i = if c.word(i, "savepoint") && c.len() > i + 1 {
        i + 1
    } else {
        i
    };
    named(c, i).map_or(Kind::Other, Kind::RollbackTo)
}

/// The savepoint name at `i` when it is a ColId ending the statement.
fn named(c: &Ctx, i: usize) -> Option<Vec<u8>> {
    if !c.colid(i) || c.len() != i + 1 {
        return None;
    }
    c.name(i).map(|(name, _)| name)
}

/// `BEGIN [WORK | TRANSACTION]` / `START TRANSACTION`, then transaction modes from `i`:
/// `ISOLATION LEVEL …`, `READ ONLY | WRITE`, `[NOT] DEFERRABLE`, optionally comma-separated.
fn begin(c: &Ctx, mut i: usize) -> Kind {
    let mut first = true;
    while i < c.len() {
        if !first && c.char(i, b',') {
            i += 1;
        }
        first = false;
        let next = if c.word(i, "isolation") && c.word(i + 1, "level") {
            isolation_level(c, i + 2)
        } else if c.word(i, "read") && (c.word(i + 1, "only") || c.word(i + 1, "write")) {
            Some(i + 2)
        } else if c.word(i, "deferrable") {
            Some(i + 1)
        } else if c.word(i, "not") && c.word(i + 1, "deferrable") {
            Some(i + 2)
        } else {
            None
        };
        match next {
            Some(n) => i = n,
            None => return Kind::Other,
        }
    }
    Kind::Begin
}

/// The isolation level at `i`; returns the index after it.
fn isolation_level(c: &Ctx, i: usize) -> Option<usize> {
    if c.word(i, "serializable") {
        Some(i + 1)
    } else if (c.word(i, "repeatable") && c.word(i + 1, "read"))
        || (c.word(i, "read") && (c.word(i + 1, "committed") || c.word(i + 1, "uncommitted")))
    {
        Some(i + 2)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::{classify, Kind};

    fn one(sql: &str) -> Kind {
        let mut v = classify(sql, true);
        assert_eq!(v.len(), 1, "{sql:?}");
        v.remove(0).kind
    }

    #[test]
    fn spec_b11_begin_commit_rollback() {
        for sql in [
            "BEGIN",
            "begin work",
            "BEGIN TRANSACTION",
            "START TRANSACTION",
            "start transaction read only",
            "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE NOT DEFERRABLE",
            "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE DEFERRABLE",
            "begin isolation level repeatable read;",
        ] {
            assert_eq!(one(sql), Kind::Begin, "{sql:?}");
        }
        for sql in [
            "COMMIT",
            "END",
            "end work",
            "COMMIT TRANSACTION AND NO CHAIN",
            "commit;",
        ] {
            assert_eq!(one(sql), Kind::Commit, "{sql:?}");
        }
        for sql in [
            "ROLLBACK",
            "ABORT",
            "abort transaction",
            "ROLLBACK WORK AND NO CHAIN",
        ] {
            assert_eq!(one(sql), Kind::Rollback, "{sql:?}");
        }
        for sql in [
            "COMMIT AND CHAIN",
            "end work and chain",
            "commit transaction and chain;",
        ] {
            assert_eq!(one(sql), Kind::CommitChain, "{sql:?}");
        }
        for sql in [
            "ROLLBACK AND CHAIN",
            "abort and chain",
            "ROLLBACK WORK AND CHAIN",
        ] {
            assert_eq!(one(sql), Kind::RollbackChain, "{sql:?}");
        }
        for sql in [
            "COMMIT AND CHAIN x",
            "COMMIT AND",
            "ROLLBACK AND NO",
            "BEGIN garbage",
            "BEGIN ISOLATION LEVEL SERIALIZABLE,",
            "BEGIN , READ ONLY",
            "START WORK",
            "ABORT TO s",
            "COMMIT WORK WORK",
        ] {
            assert_eq!(one(sql), Kind::Other, "{sql:?}");
        }
    }

    #[test]
    fn spec_b12_savepoints() {
        assert_eq!(one("SAVEPOINT s"), Kind::Savepoint(b"s".to_vec()));
        assert_eq!(one("savepoint \"S x\""), Kind::Savepoint(b"S x".to_vec()));
        assert_eq!(
            one("SAVEPOINT savepoint"),
            Kind::Savepoint(b"savepoint".to_vec())
        );
        assert_eq!(one("RELEASE S"), Kind::Release(b"s".to_vec()));
        assert_eq!(one("RELEASE SAVEPOINT s"), Kind::Release(b"s".to_vec()));
        assert_eq!(
            one("RELEASE savepoint"),
            Kind::Release(b"savepoint".to_vec())
        );
        assert_eq!(one("ROLLBACK TO s"), Kind::RollbackTo(b"s".to_vec()));
        assert_eq!(
            one("ROLLBACK TO savepoint"),
            Kind::RollbackTo(b"savepoint".to_vec())
        );
        assert_eq!(
            one("rollback work to savepoint ÀB"),
            Kind::RollbackTo("Àb".as_bytes().to_vec())
        );
        assert_eq!(
            one("ROLLBACK TRANSACTION TO SAVEPOINT \"S x\""),
            Kind::RollbackTo(b"S x".to_vec())
        );
        let long = "s".repeat(70);
        assert_eq!(
            one(&format!("SAVEPOINT {long}")),
            Kind::Savepoint(vec![b's'; 63])
        );
        for sql in [
            "SAVEPOINT",
            "SAVEPOINT user",
            "SAVEPOINT a b",
            "RELEASE",
            "ROLLBACK TO",
            "ROLLBACK TO 'x'",
        ] {
            assert_eq!(one(sql), Kind::Other, "{sql:?}");
        }
    }

    #[test]
    fn spec_b19_two_phase() {
        assert_eq!(one("PREPARE TRANSACTION 'x'"), Kind::PrepareTransaction);
        assert_eq!(one("prepare transaction $$g$$;"), Kind::PrepareTransaction);
        assert_eq!(one("COMMIT PREPARED 'x'"), Kind::CommitPrepared);
        assert_eq!(one("ROLLBACK PREPARED E'x'"), Kind::RollbackPrepared);
        for sql in [
            "PREPARE TRANSACTION foo",
            "COMMIT PREPARED",
            "ROLLBACK PREPARED 'x' 'y'",
        ] {
            assert_eq!(one(sql), Kind::Other, "{sql:?}");
        }
    }

    #[test]
    fn spec_d29_discard_all() {
        assert_eq!(one("DISCARD ALL"), Kind::DiscardAll);
        assert_eq!(one("discard/**/all ;"), Kind::DiscardAll);
        for sql in ["DISCARD PLANS", "DISCARD", "DISCARD ALL x", "RESET ALL"] {
            assert_eq!(one(sql), Kind::Other, "{sql:?}");
        }
    }
}
