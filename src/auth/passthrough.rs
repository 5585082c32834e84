//! Logging in to Postgres as a client's user without knowing its password, as PgBouncer
//! does since 1.14: after a client proves a SCRAM-SHA-256 verifier, its ClientKey (with the
//! verifier's StoredKey, ServerKey, salt and iteration count) answers Postgres's own SCRAM
//! challenge for the same role; an md5 hash from the auth file answers an md5 challenge.
//! Owns the client side of SCRAM with those keys and the per-user keyring. Pure: no I/O.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use dashmap::DashMap;
use rand::RngCore;

use super::verifier::ScramVerifier;
use super::{constant_time_eq, hmac_sha256};

/// What a proven SCRAM login leaves behind: enough to log in as that user again.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    /// ClientKey recovered from the client's proof.
    pub client_key: [u8; 32],
    /// The verifier the client proved.
    pub verifier: ScramVerifier,
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(<redacted>)")
    }
}

/// Secrets usable to log in to the server as a user, learnt from its logins.
#[derive(Debug, Clone, Default)]
pub struct Passthrough {
    /// From a SCRAM login against a verifier.
    pub scram: Option<ScramKeys>,
    /// From an md5 hash (auth file or auth_query).
    pub md5: Option<[u8; 16]>,
}

/// Pass-through secrets by user name, shared by the logins that learn them and the pools
/// that use them.
#[derive(Debug, Default)]
pub struct Keyring {
    map: DashMap<String, Passthrough>,
}

/// Keyrings compare by identity (a pool's login is unchanged while it uses the same one).
impl PartialEq for Keyring {
    fn eq(&self, other: &Keyring) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Keyring {}

impl Keyring {
    /// A new, empty keyring.
    pub fn new() -> Arc<Keyring> {
        Arc::new(Keyring::default())
    }

    /// Remember the keys of `user`'s latest successful SCRAM login.
    pub fn learn_scram(&self, user: &str, keys: ScramKeys) {
        self.map.entry(user.to_string()).or_default().scram = Some(keys);
    }

    /// Remember `user`'s md5 hash.
    pub fn learn_md5(&self, user: &str, hash: [u8; 16]) {
        self.map.entry(user.to_string()).or_default().md5 = Some(hash);
    }

    /// What is known for `user`.
    pub fn get(&self, user: &str) -> Option<Passthrough> {
        self.map.get(user).map(|p| p.clone())
    }
}

/// Why a pass-through SCRAM login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassthroughError {
    /// The server's first message is not what RFC 5802 says.
    #[error("malformed SCRAM server message: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend ours.
    #[error("SCRAM server nonce does not start with the client nonce")]
    Nonce,
    /// The server's salt or iteration count differ from the verifier's: the role's
    /// password in Postgres is not the one in pgherald's auth file (or auth_query).
    #[error("the server's SCRAM salt or iteration count differ from the stored verifier's (password changed?)")]
    VerifierMismatch,
    /// The server's signature is wrong.
    #[error("SCRAM server signature is invalid")]
    ServerSignature,
    /// A message arrived out of order.
    #[error("unexpected SCRAM message")]
    OutOfOrder,
}

/// Channel binding for the client side.
#[derive(Debug, Clone)]
pub enum Binding {
    /// `n`: pgherald does not support binding on this connection (plain TCP).
    Unsupported,
    /// `y`: supported, but the server did not offer it.
    Unrequested,
    /// `p=tls-server-end-point` with the server certificate's hash.
    EndPoint(Vec<u8>),
}

enum State {
    First,
    Final { auth_message: Vec<u8> },
    Done,
}

/// The client side of one SCRAM-SHA-256 exchange, proving `ScramKeys` instead of a password.
pub struct KeyClient {
    keys: ScramKeys,
    gs2_header: String,
    binding_data: Vec<u8>,
    nonce: String,
    message: Vec<u8>,
    state: State,
}

impl KeyClient {
    /// Start an exchange; [`KeyClient::message`] is then the client-first message.
    pub fn new(keys: ScramKeys, binding: Binding) -> KeyClient {
        let mut raw = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut raw);
        Self::with_nonce(keys, binding, B64.encode(raw))
    }

    fn with_nonce(keys: ScramKeys, binding: Binding, nonce: String) -> KeyClient {
        let (gs2_header, binding_data) = match binding {
            Binding::Unsupported => ("n,,".to_string(), Vec::new()),
            Binding::Unrequested => ("y,,".to_string(), Vec::new()),
            Binding::EndPoint(d) => ("p=tls-server-end-point,,".to_string(), d),
        };
        // The user name is empty: Postgres takes the startup packet's.
        let message = format!("{gs2_header}n=,r={nonce}").into_bytes();
        KeyClient {
            keys,
            gs2_header,
            binding_data,
            nonce,
            message,
            state: State::First,
        }
    }

    /// The message to send now.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Take the server-first message and compute the client-final one.
    pub fn update(&mut self, server_first: &[u8]) -> Result<(), PassthroughError> {
        if !matches!(self.state, State::First) {
            return Err(PassthroughError::OutOfOrder);
        }
        let text = std::str::from_utf8(server_first)
            .map_err(|_| PassthroughError::Malformed("not UTF-8"))?;
        let mut attrs = text.split(',');
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(PassthroughError::Malformed("expected nonce"))?;
        let salt = attrs
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .and_then(|s| B64.decode(s).ok())
            .ok_or(PassthroughError::Malformed("expected salt"))?;
        let iterations: u32 = attrs
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .ok_or(PassthroughError::Malformed("expected iteration count"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(PassthroughError::Nonce);
        }
        if salt != self.keys.verifier.salt() || iterations != self.keys.verifier.iterations() {
            return Err(PassthroughError::VerifierMismatch);
        }
        let mut cbind = self.gs2_header.as_bytes().to_vec();
        cbind.extend_from_slice(&self.binding_data);
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind));
        let first_bare = &self.message[self.gs2_header.len()..];
        let mut auth_message = first_bare.to_vec();
        auth_message.push(b',');
        auth_message.extend_from_slice(server_first);
        auth_message.push(b',');
        auth_message.extend_from_slice(without_proof.as_bytes());
        let signature = hmac_sha256(self.keys.verifier.stored_key(), &[&auth_message]);
        let mut proof = self.keys.client_key;
        proof.iter_mut().zip(signature).for_each(|(p, s)| *p ^= s);
        self.message = format!("{without_proof},p={}", B64.encode(proof)).into_bytes();
        self.state = State::Final { auth_message };
        Ok(())
    }

    /// Check the server-final message's signature.
    pub fn finish(&mut self, server_final: &[u8]) -> Result<(), PassthroughError> {
        let State::Final { auth_message } = std::mem::replace(&mut self.state, State::Done) else {
            return Err(PassthroughError::OutOfOrder);
        };
        let text = std::str::from_utf8(server_final)
            .map_err(|_| PassthroughError::Malformed("not UTF-8"))?;
        let v = text
            .split(',')
            .next()
            .and_then(|a| a.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(PassthroughError::Malformed("expected server signature"))?;
        let expected = hmac_sha256(self.keys.verifier.server_key(), &[&auth_message]);
        if constant_time_eq(&v, &expected) {
            Ok(())
        } else {
            Err(PassthroughError::ServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ScramServer;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Keys as a real client login leaves them: run postgres-protocol's client against
    /// pgherald's SCRAM server for `password`.
    fn learn(verifier: &ScramVerifier, password: &str) -> ScramKeys {
        let mut server = ScramServer::new(verifier.clone());
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let first = server.handle_client_first(client.message()).unwrap();
        client.update(&first).unwrap();
        let fin = server.handle_client_final(client.message()).unwrap();
        client.finish(&fin).unwrap();
        ScramKeys {
            client_key: server.client_key().unwrap(),
            verifier: verifier.clone(),
        }
    }

    /// Run a KeyClient against a SCRAM server holding `server_verifier` (as Postgres would).
    fn login(keys: ScramKeys, server_verifier: &ScramVerifier) -> Result<(), String> {
        let mut server = ScramServer::new(server_verifier.clone());
        let mut client = KeyClient::new(keys, Binding::Unsupported);
        let first = server
            .handle_client_first(client.message())
            .map_err(|e| e.to_string())?;
        client.update(&first).map_err(|e| e.to_string())?;
        let fin = server
            .handle_client_final(client.message())
            .map_err(|e| e.to_string())?;
        client.finish(&fin).map_err(|e| e.to_string())
    }

    #[test]
    fn proven_keys_log_in_without_the_password() {
        let v = ScramVerifier::generate("s3cret");
        let keys = learn(&v, "s3cret");
        assert!(!format!("{keys:?}").contains(&B64.encode(keys.client_key)));
        login(keys.clone(), &v).unwrap();
        // A server with another verifier (password changed): refused before any proof.
        let other = ScramVerifier::generate("s3cret");
        assert!(login(keys.clone(), &other).unwrap_err().contains("differ"));
        // Same salt and iterations but a different password: the server refuses the proof.
        let changed = ScramVerifier::from_password("other", v.salt(), v.iterations());
        assert!(login(keys, &changed).is_err());
    }

    #[test]
    fn forged_server_signature_is_refused() {
        let v = ScramVerifier::generate("pw");
        let keys = learn(&v, "pw");
        let mut client = KeyClient::new(keys, Binding::Unrequested);
        assert!(client.message().starts_with(b"y,,n=,r="));
        let nonce = String::from_utf8(client.message()[8..].to_vec()).unwrap();
        let first = format!(
            "r={nonce}xyz,s={},i={}",
            B64.encode(v.salt()),
            v.iterations()
        );
        client.update(first.as_bytes()).unwrap();
        assert_eq!(
            client.finish(format!("v={}", B64.encode([0u8; 32])).as_bytes()),
            Err(PassthroughError::ServerSignature)
        );
        let mut client = KeyClient::new(learn(&v, "pw"), Binding::Unsupported);
        assert_eq!(
            client.update(b"r=other,s=AAAA,i=4096"),
            Err(PassthroughError::Nonce)
        );
    }

    #[test]
    fn rfc7677_vector_with_keys() {
        // RFC 7677's example, driven from the keys instead of the password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = ScramVerifier::from_password("pencil", &salt, 4096);
        let salted = crate::auth::verifier::hi(b"pencil", &salt, 4096);
        let keys = ScramKeys {
            client_key: hmac_sha256(&salted, &[b"Client Key"]),
            verifier: v,
        };
        let mut c =
            KeyClient::with_nonce(keys, Binding::Unsupported, "rOprNGfwEbeRWgbNEkqO".into());
        // The RFC's user name is "user"; ours is empty, so rebuild the bare message to match.
        c.message = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec();
        c.update(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            c.message(),
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.finish(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }
}
