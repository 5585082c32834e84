//! SCRAM-SHA-256 verifiers: the `SCRAM-SHA-256$...` secret format and its derivation.
//!
//! Owns parsing and printing the verifier Postgres stores in `pg_authid.rolpassword`
//! (and PgBouncer accepts in its auth file), and deriving one from a password with
//! Hi() (PBKDF2-HMAC-SHA-256) as in RFC 5802.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::hmac_sha256;

/// Iteration count used for verifiers derived from plaintext secrets (as Postgres).
pub const SCRAM_DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length in bytes used for verifiers derived from plaintext secrets (as Postgres).
pub const SCRAM_DEFAULT_SALT_LEN: usize = 16;

pub(crate) const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// Why a SCRAM-SHA-256 verifier string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramVerifierError {
    /// The string does not start with `SCRAM-SHA-256$`.
    #[error("not a SCRAM-SHA-256 verifier (missing \"SCRAM-SHA-256$\" prefix)")]
    Prefix,
    /// The `$`/`:` structure is wrong.
    #[error("expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")]
    Layout,
    /// The iteration count is not a positive 32-bit integer.
    #[error("iteration count must be a positive integer")]
    Iterations,
    /// A field is not valid (padded, standard) base64; names the field.
    #[error("{0} is not valid base64")]
    Base64(&'static str),
    /// The salt decodes to zero bytes.
    #[error("salt must not be empty")]
    EmptySalt,
    /// A key does not decode to exactly 32 bytes; names the key.
    #[error("{0} must decode to 32 bytes")]
    KeyLength(&'static str),
}

/// A SCRAM-SHA-256 verifier as stored by Postgres in `pg_authid.rolpassword`.
///
/// Invariants: `iterations >= 1`, `salt` non-empty.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl ScramVerifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    pub fn parse(s: &str) -> Result<Self, ScramVerifierError> {
        let rest = s
            .strip_prefix(SCRAM_PREFIX)
            .ok_or(ScramVerifierError::Prefix)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramVerifierError::Layout)?;
        let (iter, salt) = params.split_once(':').ok_or(ScramVerifierError::Layout)?;
        let (stored, server) = keys.split_once(':').ok_or(ScramVerifierError::Layout)?;
        if iter.is_empty() || !iter.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ScramVerifierError::Iterations);
        }
        let iterations: u32 = iter.parse().map_err(|_| ScramVerifierError::Iterations)?;
        if iterations == 0 {
            return Err(ScramVerifierError::Iterations);
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| ScramVerifierError::Base64("salt"))?;
        if salt.is_empty() {
            return Err(ScramVerifierError::EmptySalt);
        }
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: decode_key(stored, "StoredKey")?,
            server_key: decode_key(server, "ServerKey")?,
        })
    }

    /// Derives the verifier for `password` with the given salt and iteration count.
    ///
    /// SaltedPassword = Hi(password, salt, i) (PBKDF2-HMAC-SHA-256);
    /// StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key"));
    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    /// An `iterations` of 0 is raised to 1. The password is used as-is
    /// (no SASLprep), which matches Postgres for ASCII passwords.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let salted = hi(password.as_bytes(), salt, iterations);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac_sha256(&salted, &[b"Server Key"]),
        }
    }

    /// Derives a verifier for `password` with a fresh random 16-byte salt and
    /// 4096 iterations, as Postgres does for a plaintext password.
    pub fn generate(password: &str) -> Self {
        let mut salt = [0u8; SCRAM_DEFAULT_SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        Self::from_password(password, &salt, SCRAM_DEFAULT_ITERATIONS)
    }

    /// A verifier with random keys that no password matches (for mock exchanges).
    /// `salt` must be non-empty and `iterations` positive; both are clamped otherwise.
    pub(crate) fn mock(mut salt: Vec<u8>, iterations: u32) -> Self {
        if salt.is_empty() {
            salt.push(0);
        }
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut stored_key);
        rand::thread_rng().fill_bytes(&mut server_key);
        ScramVerifier {
            iterations: iterations.max(1),
            salt,
            stored_key,
            server_key,
        }
    }

    /// The PBKDF2 iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The raw (decoded) salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// StoredKey = SHA-256(ClientKey).
    pub fn stored_key(&self) -> &[u8; 32] {
        &self.stored_key
    }

    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    pub fn server_key(&self) -> &[u8; 32] {
        &self.server_key
    }
}

fn decode_key(s: &str, name: &'static str) -> Result<[u8; 32], ScramVerifierError> {
    let raw = B64
        .decode(s)
        .map_err(|_| ScramVerifierError::Base64(name))?;
    raw.try_into()
        .map_err(|_| ScramVerifierError::KeyLength(name))
}

/// Hi() of RFC 5802: PBKDF2 with HMAC-SHA-256, one 32-byte output block.
pub(crate) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac_sha256(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &[&u]);
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

impl FromStr for ScramVerifier {
    type Err = ScramVerifierError;

    /// Same as [`ScramVerifier::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ScramVerifier {
    /// Prints the canonical `SCRAM-SHA-256$...` form that [`ScramVerifier::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    /// Shows the iteration count and salt; the keys are redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &B64.encode(&self.salt))
            .field("keys", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::userlist::Secret;

    /// Produced by PostgreSQL 15 for role `alice`, password `correct horse`.
    const PG_ALICE: &str = "SCRAM-SHA-256$4096:vrYx3O0BqIWYkypbbRFDNA==$vLmMC68IMKVX0bQJrj5ztt/ZFx4w1bsCPTTceHGwP8Q=:/FxANLaReo4js6vsCd+UCfALbpFboFPFeaDeIeMPpRE=";

    #[test]
    fn verifier_parse_errors() {
        use ScramVerifierError::*;
        let k = B64.encode([7u8; 32]);
        let cases = [
            ("SCRAM-SHA-1$4096:c2FsdA==$a:b".to_string(), Prefix),
            ("SCRAM-SHA-256$4096:c2FsdA==".to_string(), Layout),
            (format!("SCRAM-SHA-256$4x96:c2FsdA==${k}:{k}"), Iterations),
            (format!("SCRAM-SHA-256$0:c2FsdA==${k}:{k}"), Iterations),
            (format!("SCRAM-SHA-256$-1:c2FsdA==${k}:{k}"), Iterations),
            (
                format!("SCRAM-SHA-256$99999999999:c2FsdA==${k}:{k}"),
                Iterations,
            ),
            (
                format!("SCRAM-SHA-256$4096:c2Fsd!==${k}:{k}"),
                Base64("salt"),
            ),
            (format!("SCRAM-SHA-256$4096:${k}:{k}"), EmptySalt),
            (format!("SCRAM-SHA-256$4096:c2FsdA==${k}{k}"), Layout),
            (
                format!("SCRAM-SHA-256$4096:c2FsdA==${k}:%%"),
                Base64("ServerKey"),
            ),
            (
                format!("SCRAM-SHA-256$4096:c2FsdA==${k}:AAAA"),
                KeyLength("ServerKey"),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(ScramVerifier::parse(&s), Err(want), "{s}");
        }
    }

    #[test]
    fn from_password_matches_postgres_and_round_trips() {
        let pg = ScramVerifier::parse(PG_ALICE).unwrap();
        let ours = ScramVerifier::from_password("correct horse", pg.salt(), pg.iterations());
        assert_eq!(ours, pg);
        assert_eq!(ours.to_string(), PG_ALICE);
        assert_eq!(PG_ALICE.parse::<ScramVerifier>().unwrap(), pg);
        assert_ne!(ScramVerifier::from_password("wrong", pg.salt(), 4096), pg);
        let dbg = format!("{:?}", Secret::Scram(pg));
        assert!(
            dbg.contains("redacted") && !dbg.contains("vLmMC68"),
            "{dbg}"
        );
        assert_eq!(
            format!("{:?}", Secret::Plain("hunter2".into())),
            "Plain(<redacted>)"
        );
    }

    #[test]
    fn hi_matches_pbkdf2_hmac_sha256_vectors() {
        // RFC 7914 section 11 PBKDF2-HMAC-SHA256 vector (first 32 bytes).
        let out = hi(b"passwd", b"salt", 1);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        // Widely published vector: P="password", S="salt", c=4096.
        let out = hi(b"password", b"salt", 4096);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn generate_uses_random_salt_and_defaults() {
        let a = ScramVerifier::generate("pw");
        let b = ScramVerifier::generate("pw");
        assert_eq!(a.iterations(), SCRAM_DEFAULT_ITERATIONS);
        assert_eq!(a.salt().len(), SCRAM_DEFAULT_SALT_LEN);
        assert_ne!(a.salt(), b.salt());
        assert_eq!(ScramVerifier::from_password("pw", a.salt(), 4096), a);
        assert!(Secret::Md5([0; 16]).scram_verifier().is_none());
        assert!(Secret::Plain("pw".into()).scram_verifier().is_some());
        assert_eq!(ScramVerifier::from_password("pw", b"s", 0).iterations(), 1);
    }
}
