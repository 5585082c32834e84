//! Deferred BEGIN. A bare `BEGIN` from a client outside a transaction is answered by
//! pgherald at once (`CommandComplete BEGIN`, `ReadyForQuery T`) without a server: the server
//! gets the `BEGIN` only when the client's next message needs one, written in the same
//! packet in front of it, with its replies swallowed. That saves a server round trip per
//! explicit transaction, and a transaction-mode client holds no server between its `BEGIN`
//! and its first real statement. A block that never needs the server (`BEGIN; NOTIFY …;
//! COMMIT`) is committed or rolled back by pgherald alone.
//!
//! Only the forms that cannot fail are deferred (`BEGIN`, `BEGIN WORK`, `BEGIN TRANSACTION`,
//! `START TRANSACTION`, in any case, with an optional trailing `;`); anything with options
//! goes to the server as usual. The one visible difference: `now()` in the block is the time
//! of its first statement that reached the server, not of the `BEGIN` (`defer_begin = false`
//! turns this off).

/// The simple Query `BEGIN` that pgherald writes ahead of a deferred block's first message.
pub(crate) const HIDDEN_BEGIN: &[u8] = b"Q\0\0\0\x0aBEGIN\0";

/// A transaction-control statement pgherald can answer for a deferred block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `BEGIN [WORK | TRANSACTION]`.
    Begin,
    /// `START TRANSACTION` (same effect, its own CommandComplete tag).
    Start,
    /// `COMMIT [WORK | TRANSACTION]`, `END [WORK | TRANSACTION]`.
    Commit,
    /// `ROLLBACK [WORK | TRANSACTION]`, `ABORT [WORK | TRANSACTION]`.
    Rollback,
}

impl Control {
    /// The CommandComplete tag Postgres sends for it.
    pub fn tag(self) -> &'static str {
        match self {
            Control::Begin => "BEGIN",
            Control::Start => "START TRANSACTION",
            Control::Commit => "COMMIT",
            Control::Rollback => "ROLLBACK",
        }
    }
}

/// Recognise a Query text that is exactly one option-less transaction-control statement.
/// Anything else (comments, options, several statements, AND CHAIN) is `None`. A byte-level
/// check rather than `sql::classify`: every forwarded Query passes here, and most pay only
/// the length test.
pub(crate) fn classify(sql: &[u8]) -> Option<Control> {
    // Cheap rejection first: these Queries are short.
    if sql.len() > 40 {
        return None;
    }
    let mut text = sql.trim_ascii();
    if let Some(rest) = text.strip_suffix(b";") {
        text = rest.trim_ascii();
    }
    let mut words = text
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let first = words.next()?;
    let second = words.next();
    if words.next().is_some() {
        return None;
    }
    let is = |w: &[u8], k: &str| w.eq_ignore_ascii_case(k.as_bytes());
    let noise = |w: Option<&[u8]>| w.is_none_or(|w| is(w, "work") || is(w, "transaction"));
    if is(first, "start") {
        return second
            .is_some_and(|w| is(w, "transaction"))
            .then_some(Control::Start);
    }
    let control = if is(first, "begin") {
        Control::Begin
    } else if is(first, "commit") || is(first, "end") {
        Control::Commit
    } else if is(first, "rollback") || is(first, "abort") {
        Control::Rollback
    } else {
        return None;
    };
    noise(second).then_some(control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_forms_are_recognised() {
        for (sql, want) in [
            ("BEGIN", Control::Begin),
            ("begin;", Control::Begin),
            ("  Begin Work ; ", Control::Begin),
            ("BEGIN TRANSACTION", Control::Begin),
            ("START TRANSACTION", Control::Start),
            ("COMMIT", Control::Commit),
            ("end", Control::Commit),
            ("commit work;", Control::Commit),
            ("ROLLBACK", Control::Rollback),
            ("abort transaction", Control::Rollback),
        ] {
            assert_eq!(classify(sql.as_bytes()), Some(want), "{sql}");
        }
    }

    #[test]
    fn anything_else_is_not() {
        for sql in [
            "",
            ";",
            "START",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "BEGIN READ ONLY",
            "START TRANSACTION READ ONLY",
            "COMMIT AND CHAIN",
            "ROLLBACK TO s",
            "BEGIN; SELECT 1",
            "BEGIN;;",
            "BEGIN -- comment",
            "/* x */ BEGIN",
            "BEGINNING",
            "COMMIT PREPARED 'x'",
            "END IF",
        ] {
            assert_eq!(classify(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn hidden_begin_is_a_well_formed_query() {
        assert_eq!(HIDDEN_BEGIN[0], b'Q');
        let len = u32::from_be_bytes([
            HIDDEN_BEGIN[1],
            HIDDEN_BEGIN[2],
            HIDDEN_BEGIN[3],
            HIDDEN_BEGIN[4],
        ]);
        assert_eq!(len as usize, HIDDEN_BEGIN.len() - 1);
        assert_eq!(&HIDDEN_BEGIN[5..], b"BEGIN\0");
    }
}
