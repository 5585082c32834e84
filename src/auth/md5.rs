//! MD5 password authentication (AuthenticationMD5Password).
//!
//! Owns computing the salted response a client must send
//! (`"md5" + md5hex(md5hex(password + user) + salt)`) and verifying a
//! client's response against a [`Secret`] in constant time.

use md5::{Digest, Md5};

use super::constant_time_eq;
use super::userlist::Secret;

/// MD5(password + user): the inner hash Postgres stores as `md5<hex>`.
pub fn md5_password_hash(password: &[u8], user: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(password);
    h.update(user);
    h.finalize().into()
}

/// The response a client must send to AuthenticationMD5Password with `salt`,
/// for `user` whose secret is `secret`: `"md5" + md5hex(md5hex(password + user) + salt)`
/// (35 ASCII bytes, lowercase hex, no trailing NUL).
///
/// Works for `Plain` and `Md5` secrets; returns `None` for `Scram`, from which
/// the MD5 hash cannot be derived.
pub fn md5_salted(user: &str, secret: &Secret, salt: [u8; 4]) -> Option<String> {
    let inner = match secret {
        Secret::Plain(p) => md5_password_hash(p.as_bytes(), user.as_bytes()),
        Secret::Md5(h) => *h,
        Secret::Scram(_) => return None,
    };
    let mut h = Md5::new();
    h.update(hex(&inner).as_bytes());
    h.update(salt);
    let outer: [u8; 16] = h.finalize().into();
    Some(format!("md5{}", hex(&outer)))
}

/// Checks a client's PasswordMessage payload against `secret` for the MD5
/// challenge that used `salt`. A single trailing NUL (the message's string
/// terminator) is tolerated. Always `false` for `Scram` secrets.
/// The comparison is constant-time.
pub fn verify_md5_response(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let response = response.strip_suffix(&[0u8]).unwrap_or(response);
    match md5_salted(user, secret, salt) {
        Some(expected) => constant_time_eq(expected.as_bytes(), response),
        None => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::verifier::ScramVerifier;
    use postgres_protocol::authentication::md5_hash;

    const SALTS: [[u8; 4]; 3] = [[0, 0, 0, 0], [0xde, 0xad, 0xbe, 0xef], [1, 2, 3, 0xff]];

    #[test]
    fn matches_postgres_protocol_md5_hash_for_plain_and_md5_secrets() {
        for (user, password) in [("bob", "s3cr\"et"), ("postgres", ""), ("ünï", "pässwörd")] {
            let plain = Secret::Plain(password.to_string());
            let stored = Secret::Md5(md5_password_hash(password.as_bytes(), user.as_bytes()));
            for salt in SALTS {
                let peer = md5_hash(user.as_bytes(), password.as_bytes(), salt);
                assert_eq!(
                    md5_salted(user, &plain, salt).as_deref(),
                    Some(peer.as_str())
                );
                assert_eq!(
                    md5_salted(user, &stored, salt).as_deref(),
                    Some(peer.as_str())
                );
                assert!(verify_md5_response(&plain, user, salt, peer.as_bytes()));
                assert!(verify_md5_response(&stored, user, salt, peer.as_bytes()));
                let mut nul = peer.clone().into_bytes();
                nul.push(0);
                assert!(verify_md5_response(&stored, user, salt, &nul));
            }
        }
    }

    #[test]
    fn postgres_stored_md5_secret_verifies() {
        // Produced by PostgreSQL 15: role bob, password `s3cr"et`, password_encryption=md5.
        let secret = Secret::parse("md52ad48eb654da549d8db1f57812e93a47").unwrap();
        let salt = [9, 8, 7, 6];
        let peer = md5_hash(b"bob", b"s3cr\"et", salt);
        assert!(verify_md5_response(&secret, "bob", salt, peer.as_bytes()));
        let upper = Secret::parse("md52AD48EB654DA549D8DB1F57812E93A47").unwrap();
        assert!(verify_md5_response(&upper, "bob", salt, peer.as_bytes()));
    }

    #[test]
    fn rejects_wrong_password_user_salt_and_garbage() {
        let secret = Secret::Plain("right".into());
        let salt = [1, 2, 3, 4];
        let good = md5_hash(b"u", b"right", salt);
        assert!(verify_md5_response(&secret, "u", salt, good.as_bytes()));
        let wrong_pw = md5_hash(b"u", b"wrong", salt);
        assert!(!verify_md5_response(
            &secret,
            "u",
            salt,
            wrong_pw.as_bytes()
        ));
        assert!(!verify_md5_response(&secret, "v", salt, good.as_bytes()));
        assert!(!verify_md5_response(
            &secret,
            "u",
            [4, 3, 2, 1],
            good.as_bytes()
        ));
        assert!(!verify_md5_response(&secret, "u", salt, b""));
        assert!(!verify_md5_response(&secret, "u", salt, b"\0"));
        assert!(!verify_md5_response(
            &secret,
            "u",
            salt,
            &good.as_bytes()[..34]
        ));
        assert!(!verify_md5_response(
            &secret,
            "u",
            salt,
            good.to_uppercase().as_bytes()
        ));
        assert!(!verify_md5_response(&secret, "u", salt, b"right"));
    }

    #[test]
    fn scram_secret_cannot_do_md5() {
        let secret = Secret::Scram(ScramVerifier::from_password("pw", b"salt", 1));
        let salt = [1, 2, 3, 4];
        assert_eq!(md5_salted("u", &secret, salt), None);
        let resp = md5_hash(b"u", b"pw", salt);
        assert!(!verify_md5_response(&secret, "u", salt, resp.as_bytes()));
    }
}
