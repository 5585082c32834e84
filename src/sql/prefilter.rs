//! The prefilter: a cheap, allocation-free, case-insensitive byte scan that tells whether a Query or
//! Parse text could contain anything pgherald intercepts. A miss means the text is forwarded without
//! any lexing or parsing; a hit only means [`super::classify`] must look.

/// Words that are always looked for, anywhere (they may be part of a longer word:
/// `unlisten`, `pg_listening_channels`, `pg_notify`).
const ALWAYS: [&[u8]; 4] = [b"listen", b"notify", b"discard", b"deallocate"];

/// Transaction-control keywords, looked for only when asked, and only at the start of a word.
const TXN: [&[u8]; 9] = [
    b"commit",
    b"end",
    b"rollback",
    b"abort",
    b"savepoint",
    b"release",
    b"prepare",
    b"begin",
    b"start",
];

/// Bit set in [`FIRST`] for bytes that start an [`ALWAYS`] word.
const BIT_ALWAYS: u8 = 1;
/// Bit set in [`FIRST`] for bytes that start a [`TXN`] word.
const BIT_TXN: u8 = 2;

/// For each byte, which word lists have a word starting with it (either case).
const FIRST: [u8; 256] = build_first();

const fn build_first() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < ALWAYS.len() {
        let c = ALWAYS[i][0];
        t[c as usize] |= BIT_ALWAYS;
        t[c.to_ascii_uppercase() as usize] |= BIT_ALWAYS;
        i += 1;
    }
    let mut j = 0;
    while j < TXN.len() {
        let c = TXN[j][0];
        t[c as usize] |= BIT_TXN;
        t[c.to_ascii_uppercase() as usize] |= BIT_TXN;
        j += 1;
    }
    t
}

/// Cheap case-insensitive scan: does this SQL possibly contain something to intercept?
///
/// Looks for the words `listen` (covers `unlisten`, `pg_listening_channels`), `notify` (covers
/// `pg_notify`), `discard` and `deallocate` anywhere; and, when `txn_control` is true, for `commit`, `end`,
/// `rollback`, `abort`, `savepoint`, `release`, `prepare`, `begin` and `start` at the start of a
/// word. False positives are harmless (the text is then classified); there are no false negatives
/// for statements [`super::classify`] recognises by keyword.
pub fn prefilter(sql: &[u8], txn_control: bool) -> bool {
    let mask = if txn_control {
        BIT_ALWAYS | BIT_TXN
    } else {
        BIT_ALWAYS
    };
    let mut i = 0;
    while i < sql.len() {
        let bits = FIRST[sql[i] as usize] & mask;
        if bits != 0 {
            let rest = &sql[i..];
            if bits & BIT_ALWAYS != 0 && ALWAYS.iter().any(|w| starts_with_ci(rest, w)) {
                return true;
            }
            if bits & BIT_TXN != 0
                && (i == 0 || !is_word_byte(sql[i - 1]))
                && TXN.iter().any(|w| starts_with_ci(rest, w))
            {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// `hay` starts with the lower-case ASCII `word`, ignoring ASCII case.
fn starts_with_ci(hay: &[u8], word: &[u8]) -> bool {
    hay.len() >= word.len() && hay[..word.len()].eq_ignore_ascii_case(word)
}

/// A byte that continues an identifier, so a keyword cannot start right after it. `$` is not
/// included: `$$x$$begin` ends a dollar quote right before the keyword.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::prefilter;

    #[test]
    fn prefilter_hits() {
        for q in [
            "LISTEN c",
            "unlisten *",
            "select PG_Notify('c','x')",
            "SELECT * FROM pg_listening_channels()",
            "NoTiFy c",
            "discard all",
            "DEALLOCATE _pg3_0",
            "x;listen",
        ] {
            assert!(prefilter(q.as_bytes(), false), "{q}");
            assert!(prefilter(q.as_bytes(), true), "{q}");
        }
        for q in [
            "COMMIT",
            "end",
            "Rollback",
            "ABORT",
            "savepoint s",
            "release s",
            "prepare transaction 'x'",
            "BEGIN",
            "start transaction",
            "$$x$$begin",
            "/**/End",
        ] {
            assert!(prefilter(q.as_bytes(), true), "{q}");
        }
    }

    #[test]
    fn prefilter_misses() {
        for q in [
            "SELECT 1",
            "",
            "insert into t values (1)",
            "lis ten",
            "notif",
            "COMMIT",
            "end",
        ] {
            assert!(!prefilter(q.as_bytes(), false), "{q}");
        }
        for q in [
            "SELECT 1",
            "select append, vendor, restart, _commit, x1end",
            "listn",
        ] {
            assert!(!prefilter(q.as_bytes(), true), "{q}");
        }
        assert!(!prefilter(&[0xff, 0x00, b'l', b'i', b's'], true));
    }
}
