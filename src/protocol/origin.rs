//! Where Postgres 15 raises the errors and notices pgherald writes itself: the file (`F`),
//! line (`L`) and routine (`R`) fields it sends with them (NOTIFY-SPEC section E), so that
//! drivers exposing them see no difference. Values observed on PostgreSQL 15.18 (`\set
//! VERBOSITY verbose` in psql, a raw protocol client, `log_error_verbosity = verbose`).

/// The `F`, `L` and `R` fields of one `ereport` site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Source file (`F`).
    pub file: &'static str,
    /// Line (`L`).
    pub line: &'static str,
    /// Routine (`R`).
    pub routine: &'static str,
}

/// The protocol message Postgres was handling: 25P02 is raised by each message's own
/// routine; other errors do not depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    /// A simple Query (or anything outside the extended protocol).
    #[default]
    Query,
    /// Parse.
    Parse,
    /// Bind.
    Bind,
    /// Execute.
    Execute,
}

const fn at(file: &'static str, line: &'static str, routine: &'static str) -> Origin {
    Origin {
        file,
        line,
        routine,
    }
}

/// (SQLSTATE, start of the message, where Postgres 15 raises it).
const TABLE: &[(&str, &str, Origin)] = &[
    // LISTEN/NOTIFY (async.c).
    (
        "22023",
        "channel name cannot be empty",
        at("async.c", "643", "Async_Notify"),
    ),
    (
        "22023",
        "channel name too long",
        at("async.c", "649", "Async_Notify"),
    ),
    (
        "22023",
        "payload string too long",
        at("async.c", "654", "Async_Notify"),
    ),
    (
        "0A000",
        "cannot PREPARE a transaction that has executed LISTEN",
        at("async.c", "873", "AtPrepare_Notify"),
    ),
    // DEALLOCATE of a statement that does not exist (prepare.c).
    (
        "26000",
        "prepared statement ",
        at("prepare.c", "451", "FetchPreparedStatement"),
    ),
    // The lexer's notices and warnings.
    (
        "42622",
        "identifier ",
        at("scansup.c", "99", "truncate_identifier"),
    ),
    (
        "22P06",
        "nonstandard use of \\' ",
        at("scan.l", "1380", "check_string_escape_warning"),
    ),
    (
        "22P06",
        "nonstandard use of \\\\ ",
        at("scan.l", "1390", "check_string_escape_warning"),
    ),
    (
        "22P06",
        "nonstandard use of escape ",
        at("scan.l", "1405", "check_escape_warning"),
    ),
    // Encoding conversion (mbutils.c).
    (
        "22021",
        "invalid byte sequence for encoding",
        at("mbutils.c", "1798", "report_invalid_encoding_int"),
    ),
    (
        "22P05",
        "character with byte sequence",
        at("mbutils.c", "1845", "report_untranslatable_char"),
    ),
    // Login and session end.
    (
        "0A000",
        "unsupported frontend protocol",
        at("postmaster.c", "2222", "ProcessStartupPacket"),
    ),
    (
        "28000",
        "no PostgreSQL user name specified",
        at("postmaster.c", "2351", "ProcessStartupPacket"),
    ),
    (
        "57P03",
        "the database system is shutting down",
        at("postmaster.c", "2432", "ProcessStartupPacket"),
    ),
    (
        "28P01",
        "password authentication failed for user",
        at("auth.c", "334", "auth_failed"),
    ),
    (
        "3D000",
        "database \"",
        at("postinit.c", "948", "InitPostgres"),
    ),
    (
        "53300",
        "sorry, too many clients already",
        at("proc.c", "357", "InitProcess"),
    ),
    (
        "57P01",
        "terminating connection due to administrator command",
        at("postgres.c", "3211", "ProcessInterrupts"),
    ),
];

/// Where Postgres 15 raises the error or notice `code` with `message` while handling
/// `stage`; None for pgherald's own errors that Postgres has no counterpart for.
pub fn of(code: &str, message: &[u8], stage: Stage) -> Option<Origin> {
    if code == "25P02" {
        return Some(match stage {
            Stage::Query => at("postgres.c", "1081", "exec_simple_query"),
            Stage::Parse => at("postgres.c", "1439", "exec_parse_message"),
            Stage::Bind => at("postgres.c", "1691", "exec_bind_message"),
            Stage::Execute => at("postgres.c", "2172", "exec_execute_message"),
        });
    }
    TABLE
        .iter()
        .find(|(c, m, _)| *c == code && message.starts_with(m.as_bytes()))
        .map(|(_, _, o)| *o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_code_and_message() {
        let o = of("22023", b"payload string too long", Stage::Query).unwrap();
        assert_eq!(
            (o.file, o.line, o.routine),
            ("async.c", "654", "Async_Notify")
        );
        assert_eq!(of("22023", b"something else", Stage::Query), None);
        assert_eq!(
            of("25P02", b"current transaction is aborted", Stage::Bind)
                .unwrap()
                .routine,
            "exec_bind_message"
        );
        assert_eq!(of("08P01", b"query_wait_timeout", Stage::Query), None);
    }
}
