//! Client-facing authentication for pgherald, pure logic with no I/O.
//!
//! This module owns everything the front-end needs to decide whether a client
//! may log in: the PgBouncer-compatible `auth_file` ([`userlist`]), the MD5
//! challenge/response ([`md5`]), SCRAM-SHA-256 verifiers ([`verifier`]), the
//! server side of SCRAM-SHA-256 ([`scram`]), the `auth_hba_file` rules ([`hba`]), and the
//! `auth_type` setting ([`AuthType`]). The network code feeds it the bytes of the relevant
//! protocol messages and sends back what it returns.
//!
//! Shared primitives (HMAC-SHA-256, constant-time comparison) live here too.

pub mod exchange;
pub mod hba;
pub mod md5;
pub mod passthrough;
pub mod scram;
pub mod userlist;
pub mod verifier;

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use self::md5::{md5_password_hash, md5_salted, verify_md5_response};
pub use self::scram::{ScramError, ScramServer, SCRAM_SHA_256};
pub use self::userlist::{Secret, UserList, UserListError};
pub use self::verifier::{
    ScramVerifier, ScramVerifierError, SCRAM_DEFAULT_ITERATIONS, SCRAM_DEFAULT_SALT_LEN,
};

/// How clients must authenticate, named as in PgBouncer's `auth_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// No password is asked for (`trust`).
    Trust,
    /// AuthenticationMD5Password challenge (`md5`).
    Md5,
    /// SASL with the SCRAM-SHA-256 mechanism (`scram-sha-256`).
    ScramSha256,
    /// The verified TLS client certificate's common name is the user name (`cert`).
    Cert,
    /// The method of the first matching line of `auth_hba_file` (`hba`).
    Hba,
}

impl AuthType {
    /// The canonical `auth_type` spelling of this variant.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Trust => "trust",
            AuthType::Md5 => "md5",
            AuthType::ScramSha256 => "scram-sha-256",
            AuthType::Cert => "cert",
            AuthType::Hba => "hba",
        }
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when an `auth_type` value is not one we support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthTypeError {
    /// The value is not `trust`, `md5`, `scram-sha-256` or `cert`.
    #[error(
        "unsupported auth_type {0:?} (expected \"trust\", \"md5\", \"scram-sha-256\" or \"cert\")"
    )]
    Unknown(String),
}

impl FromStr for AuthType {
    type Err = AuthTypeError;

    /// Parses exactly `trust`, `md5` or `scram-sha-256` (lowercase, as the config accepts).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "trust" => Ok(AuthType::Trust),
            "md5" => Ok(AuthType::Md5),
            "scram-sha-256" => Ok(AuthType::ScramSha256),
            "cert" => Ok(AuthType::Cert),
            "hba" => Ok(AuthType::Hba),
            _ => Err(AuthTypeError::Unknown(s.to_string())),
        }
    }
}

/// HMAC-SHA-256 of the concatenation of `parts` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Compares two byte strings in time independent of their contents.
///
/// Only the lengths (which are public in every use here) may leak.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Login as the network code would drive it: look the user up, then run
    /// SCRAM (real or mock) or MD5 with postgres-protocol as the client.
    fn scram_login(list: &UserList, user: &str, password: &str) -> bool {
        let mut server = match list.get(user).and_then(Secret::scram_verifier) {
            Some(v) => ScramServer::new(v),
            None => ScramServer::new_failing(user),
        };
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let Ok(first) = server.handle_client_first(client.message()) else {
            return false;
        };
        client.update(&first).unwrap();
        match server.handle_client_final(client.message()) {
            Ok(fin) => client.finish(&fin).is_ok(),
            Err(e) => {
                assert_eq!(e, ScramError::WrongPassword);
                false
            }
        }
    }

    #[test]
    fn userlist_drives_scram_and_md5_logins() {
        let md5 = format!(
            "md5{}",
            md5_password_hash(b"pm", b"m")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let scram = ScramVerifier::generate("ps");
        let list = UserList::parse(&format!(
            "\"p\" \"pp\"\n\"m\" \"{md5}\"\n\"s\" \"{scram}\"\n"
        ))
        .unwrap();
        assert!(scram_login(&list, "p", "pp"));
        assert!(scram_login(&list, "s", "ps"));
        assert!(!scram_login(&list, "s", "pp"));
        assert!(!scram_login(&list, "ghost", "pp"));
        assert!(!scram_login(&list, "m", "pm")); // an MD5 secret cannot do SCRAM
        let salt = [5, 6, 7, 8];
        for (user, pw) in [("p", "pp"), ("m", "pm")] {
            let secret = list.get(user).unwrap();
            assert!(verify_md5_response(
                secret,
                user,
                salt,
                md5_hash(user.as_bytes(), pw.as_bytes(), salt).as_bytes()
            ));
            assert!(!verify_md5_response(
                secret,
                user,
                salt,
                md5_hash(user.as_bytes(), b"x", salt).as_bytes()
            ));
        }
        assert!(!verify_md5_response(
            list.get("s").unwrap(),
            "s",
            salt,
            md5_hash(b"s", b"ps", salt).as_bytes()
        ));
    }

    #[test]
    fn auth_type_parses_pgbouncer_names() {
        assert_eq!("trust".parse::<AuthType>().unwrap(), AuthType::Trust);
        assert_eq!("md5".parse::<AuthType>().unwrap(), AuthType::Md5);
        assert_eq!(
            "scram-sha-256".parse::<AuthType>().unwrap(),
            AuthType::ScramSha256
        );
        assert_eq!("cert".parse::<AuthType>().unwrap(), AuthType::Cert);
        assert_eq!("hba".parse::<AuthType>().unwrap(), AuthType::Hba);
        for bad in [
            "plain",
            "",
            "scram",
            "HBA",
            "pam",
            "password",
            "MD5",
            " md5",
            "SCRAM-SHA-256",
        ] {
            assert!(
                matches!(bad.parse::<AuthType>(), Err(AuthTypeError::Unknown(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn auth_type_round_trips_through_display() {
        for t in [AuthType::Trust, AuthType::Md5, AuthType::ScramSha256] {
            assert_eq!(t.to_string().parse::<AuthType>().unwrap(), t);
        }
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn hmac_sha256_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
