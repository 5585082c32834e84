//! The PgBouncer-compatible `auth_file` (userlist.txt) and the secrets in it.
//!
//! Owns parsing of `"user" "secret"` lines and classification of a secret as
//! plaintext, MD5 hash or SCRAM-SHA-256 verifier (the verifier format itself
//! lives in `verifier.rs` and is re-exported here).

use std::collections::HashMap;
use std::fmt;

use super::verifier::SCRAM_PREFIX;
pub use super::verifier::{
    ScramVerifier, ScramVerifierError, SCRAM_DEFAULT_ITERATIONS, SCRAM_DEFAULT_SALT_LEN,
};

/// Why an auth file could not be parsed; every variant names the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserListError {
    /// A field does not start with a double quote.
    #[error("auth file line {line}: expected a double-quoted {field}")]
    NotQuoted {
        /// 1-based line number.
        line: usize,
        /// `"user name"` or `"secret"`.
        field: &'static str,
    },
    /// A quoted string has no closing quote.
    #[error("auth file line {line}: unterminated quoted string")]
    Unterminated {
        /// 1-based line number.
        line: usize,
    },
    /// The line has a user name but no secret.
    #[error("auth file line {line}: missing secret after user name")]
    MissingSecret {
        /// 1-based line number.
        line: usize,
    },
    /// The user name is `""`.
    #[error("auth file line {line}: empty user name")]
    EmptyUser {
        /// 1-based line number.
        line: usize,
    },
    /// The secret starts with `SCRAM-SHA-256$` but is not a valid verifier.
    #[error("auth file line {line}: bad SCRAM verifier: {source}")]
    BadVerifier {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the verifier.
        source: ScramVerifierError,
    },
}

impl UserListError {
    /// The 1-based line number the error refers to.
    pub fn line(&self) -> usize {
        match self {
            UserListError::NotQuoted { line, .. }
            | UserListError::Unterminated { line }
            | UserListError::MissingSecret { line }
            | UserListError::EmptyUser { line }
            | UserListError::BadVerifier { line, .. } => *line,
        }
    }
}

/// A user's secret from the auth file.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A plaintext password.
    Plain(String),
    /// `md5` + hex of MD5(password + user name), stored here as the 16 raw bytes.
    Md5([u8; 16]),
    /// A SCRAM-SHA-256 verifier.
    Scram(ScramVerifier),
}

impl Secret {
    /// Classifies a secret string the way Postgres does: `md5` followed by
    /// exactly 32 hex digits is an MD5 hash; a string starting with
    /// `SCRAM-SHA-256$` must be a valid verifier (error otherwise); anything
    /// else is a plaintext password.
    pub fn parse(s: &str) -> Result<Secret, ScramVerifierError> {
        if s.starts_with(SCRAM_PREFIX) {
            return ScramVerifier::parse(s).map(Secret::Scram);
        }
        if let Some(hex) = s.strip_prefix("md5") {
            if let Some(bytes) = decode_hex16(hex) {
                return Ok(Secret::Md5(bytes));
            }
        }
        Ok(Secret::Plain(s.to_string()))
    }

    /// A verifier usable for a SCRAM exchange: a clone for `Scram`, a freshly
    /// salted one for `Plain`, and `None` for `Md5` (which cannot do SCRAM).
    pub fn scram_verifier(&self) -> Option<ScramVerifier> {
        match self {
            Secret::Plain(p) => Some(ScramVerifier::generate(p)),
            Secret::Md5(_) => None,
            Secret::Scram(v) => Some(v.clone()),
        }
    }
}

impl fmt::Debug for Secret {
    /// Names the kind of secret only; passwords and hashes are redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Plain(<redacted>)"),
            Secret::Md5(_) => f.write_str("Md5(<redacted>)"),
            Secret::Scram(v) => f.debug_tuple("Scram").field(v).finish(),
        }
    }
}

fn decode_hex16(hex: &str) -> Option<[u8; 16]> {
    let b = hex.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// The parsed auth file: user name → secret.
#[derive(Clone, Default)]
pub struct UserList {
    users: HashMap<String, Secret>,
}

impl UserList {
    /// Parses auth-file text. Each non-blank line that does not start (after
    /// leading whitespace) with `;` or `#` is `"user" "secret"`, where `""`
    /// inside a quoted string is a literal `"`; text after the second field is
    /// ignored. A user listed twice keeps the later secret.
    pub fn parse(text: &str) -> Result<UserList, UserListError> {
        let mut users = HashMap::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            if let Some((user, secret)) = parse_line(raw, line)? {
                let secret = Secret::parse(&secret)
                    .map_err(|source| UserListError::BadVerifier { line, source })?;
                users.insert(user, secret);
            }
        }
        Ok(UserList { users })
    }

    /// The secret for `user`, if listed (exact, case-sensitive match).
    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }

    /// Number of users listed.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is listed.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The listed user names, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

impl fmt::Debug for UserList {
    /// Lists the user names only; secrets are not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.users().collect();
        names.sort_unstable();
        f.debug_struct("UserList").field("users", &names).finish()
    }
}

fn parse_line(raw: &str, line: usize) -> Result<Option<(String, String)>, UserListError> {
    let t = raw.trim_start();
    if t.is_empty() || t.starts_with(';') || t.starts_with('#') {
        return Ok(None);
    }
    if !t.starts_with('"') {
        return Err(UserListError::NotQuoted {
            line,
            field: "user name",
        });
    }
    let (user, rest) = quoted(t, line)?;
    if user.is_empty() {
        return Err(UserListError::EmptyUser { line });
    }
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Err(UserListError::MissingSecret { line });
    }
    if !rest.starts_with('"') {
        return Err(UserListError::NotQuoted {
            line,
            field: "secret",
        });
    }
    let (secret, _ignored) = quoted(rest, line)?;
    Ok(Some((user, secret)))
}

/// Reads a quoted string at the start of `s` (which begins with `"`);
/// returns its unescaped contents and the text after the closing quote.
fn quoted(s: &str, line: usize) -> Result<(String, &str), UserListError> {
    let body = &s[1..];
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            out.push(c);
        } else if body[i + 1..].starts_with('"') {
            out.push('"');
            chars.next();
        } else {
            return Ok((out, &body[i + 1..]));
        }
    }
    Err(UserListError::Unterminated { line })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Produced by PostgreSQL 15 for role `alice`, password `correct horse`.
    const PG_ALICE: &str = "SCRAM-SHA-256$4096:vrYx3O0BqIWYkypbbRFDNA==$vLmMC68IMKVX0bQJrj5ztt/ZFx4w1bsCPTTceHGwP8Q=:/FxANLaReo4js6vsCd+UCfALbpFboFPFeaDeIeMPpRE=";

    #[test]
    fn parses_all_secret_kinds_comments_and_escapes() {
        let text = format!(
            "; pgbouncer comment\n# hash comment\n\n   \n\
             \"plainuser\" \"pa ss\"\r\n\
             \t\"md5user\"   \"md52ad48eb654da549d8db1f57812e93a47\" trailing junk\n\
             \"alice\" \"{PG_ALICE}\"\n\
             \"we\"\"ird\" \"a\"\"b\"\"\"\n\
             \"notmd5\" \"md5xyz\"\n"
        );
        let ul = UserList::parse(&text).unwrap();
        assert_eq!(ul.len(), 5);
        assert_eq!(ul.get("plainuser"), Some(&Secret::Plain("pa ss".into())));
        let Some(Secret::Md5(h)) = ul.get("md5user") else {
            panic!("md5")
        };
        assert_eq!(h[0], 0x2a);
        assert_eq!(h[15], 0x47);
        let Some(Secret::Scram(v)) = ul.get("alice") else {
            panic!("scram")
        };
        assert_eq!(v.iterations(), 4096);
        assert_eq!(v.salt().len(), 16);
        assert_eq!(ul.get("we\"ird"), Some(&Secret::Plain("a\"b\"".into())));
        assert_eq!(ul.get("notmd5"), Some(&Secret::Plain("md5xyz".into())));
        assert_eq!(ul.get("nobody"), None);
        assert_eq!(
            format!("{ul:?}"),
            "UserList { users: [\"alice\", \"md5user\", \"notmd5\", \"plainuser\", \"we\\\"ird\"] }"
        );
    }

    #[test]
    fn later_duplicate_wins_and_empty_file_is_ok() {
        let ul = UserList::parse("\"u\" \"one\"\n\"u\" \"two\"").unwrap();
        assert_eq!(ul.get("u"), Some(&Secret::Plain("two".into())));
        assert!(UserList::parse("").unwrap().is_empty());
        assert!(UserList::parse("; only comments\n").unwrap().is_empty());
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let cases: &[(&str, UserListError)] = &[
            (
                "\"a\" \"b\"\nbob \"x\"",
                UserListError::NotQuoted {
                    line: 2,
                    field: "user name",
                },
            ),
            (
                "\n\n\"a\" b",
                UserListError::NotQuoted {
                    line: 3,
                    field: "secret",
                },
            ),
            ("\"a\"", UserListError::MissingSecret { line: 1 }),
            ("\"a\" \"b", UserListError::Unterminated { line: 1 }),
            ("\"a\"\"\" ", UserListError::MissingSecret { line: 1 }),
            ("; c\n\"ab", UserListError::Unterminated { line: 2 }),
            ("\"\" \"x\"", UserListError::EmptyUser { line: 1 }),
            (
                "\"a\" \"b\"\n\"s\" \"SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA\"",
                UserListError::BadVerifier {
                    line: 2,
                    source: ScramVerifierError::KeyLength("StoredKey"),
                },
            ),
        ];
        for (text, want) in cases {
            let err = UserList::parse(text).unwrap_err();
            assert_eq!(&err, want, "{text:?}");
            assert!(
                err.to_string().contains(&format!("line {}", want.line())),
                "{err}"
            );
        }
    }
}
