//! Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it.
//!
//! Owns the two-step state machine: client-first → server-first, then
//! client-final → server-final. Over TLS, SCRAM-SHA-256-PLUS with
//! `tls-server-end-point` channel binding (RFC 5929) is offered as Postgres offers it;
//! otherwise gs2 flags `n` and `y` are accepted and `p=` is rejected.
//! Also owns the mock exchange for unknown users, which fails at the final
//! step exactly like a wrong password. Pure: no I/O.

use std::mem;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::verifier::{ScramVerifier, SCRAM_DEFAULT_ITERATIONS, SCRAM_DEFAULT_SALT_LEN};
use super::{constant_time_eq, hmac_sha256};

/// SASL mechanism name to advertise in AuthenticationSASL and expect in SASLInitialResponse.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The channel-binding variant, offered to TLS clients.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Length of the random server nonce in bytes before base64 (as Postgres).
const SERVER_NONCE_LEN: usize = 18;

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A client message does not follow the RFC 5802 grammar; says what was wrong.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding (`p=`), which is not offered.
    #[error("SCRAM channel binding is not supported (SCRAM-SHA-256-PLUS is not offered)")]
    ChannelBindingUnsupported,
    /// The client sent an authorization identity (`a=`), which Postgres does not support.
    #[error("SCRAM authorization identity is not supported")]
    AuthzidUnsupported,
    /// The `c=` attribute of client-final does not echo the gs2 header of client-first.
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The `r=` attribute of client-final is not client nonce + server nonce.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The proof is wrong (also returned for unknown users in mock mode).
    #[error("password authentication failed")]
    WrongPassword,
    /// The client chose plain SCRAM-SHA-256 saying it supports channel binding (`y`)
    /// although PLUS was offered: a downgrade, refused as Postgres refuses it.
    #[error("SCRAM channel binding negotiation error")]
    BindingDowngrade,
    /// SCRAM-SHA-256-PLUS was selected without `p=tls-server-end-point`.
    #[error("SCRAM-SHA-256-PLUS requires channel binding type tls-server-end-point")]
    BindingRequired,
    /// A message arrived in a state that does not expect it (including after the end).
    #[error("unexpected SCRAM message for the current state")]
    OutOfOrder,
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// What `c=` must decode to: the gs2 header, plus the binding data with `p=`.
        expected_cbind: Vec<u8>,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Finished,
}

/// Server side of one SCRAM-SHA-256 exchange; use once per login attempt.
pub struct ScramServer {
    verifier: ScramVerifier,
    mock: bool,
    state: State,
    client_key: Option<[u8; 32]>,
    /// TLS: this connection's `tls-server-end-point` data (PLUS was offered).
    binding: Option<Vec<u8>>,
    /// The client selected SCRAM-SHA-256-PLUS.
    plus: bool,
}

impl ScramServer {
    /// Starts an exchange against `verifier`. For a plaintext secret, build it
    /// with [`ScramVerifier::generate`] (random 16-byte salt, 4096 iterations).
    pub fn new(verifier: ScramVerifier) -> Self {
        ScramServer {
            verifier,
            mock: false,
            state: State::AwaitingClientFirst,
            client_key: None,
            binding: None,
            plus: false,
        }
    }

    /// Starts a mock exchange for a user with no usable secret. It runs like a
    /// real one, with a salt that is deterministic per `user` (and per process)
    /// and 4096 iterations, and always fails at the final step with
    /// [`ScramError::WrongPassword`], so unknown users look like wrong passwords.
    pub fn new_failing(user: &str) -> Self {
        static MOCK_KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = MOCK_KEY.get_or_init(|| {
            let mut k = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut k);
            k
        });
        let digest = Sha256::new()
            .chain_update(key)
            .chain_update(user.as_bytes())
            .finalize();
        let salt = digest[..SCRAM_DEFAULT_SALT_LEN].to_vec();
        let verifier = ScramVerifier::mock(salt, SCRAM_DEFAULT_ITERATIONS);
        ScramServer {
            verifier,
            mock: true,
            state: State::AwaitingClientFirst,
            client_key: None,
            binding: None,
            plus: false,
        }
    }

    /// Over TLS: `binding` is the connection's `tls-server-end-point` data (PLUS was
    /// offered) and `plus` says whether the client selected SCRAM-SHA-256-PLUS.
    pub fn with_channel_binding(mut self, binding: Option<Vec<u8>>, plus: bool) -> Self {
        self.binding = binding;
        self.plus = plus;
        self
    }

    /// Handles the SASLInitialResponse payload (`n,,n=<user>,r=<cnonce>`) and
    /// returns the server-first-message (`r=<cnonce><snonce>,s=<salt>,i=<iter>`)
    /// to send in AuthenticationSASLContinue. The `n=` user name is ignored,
    /// as Postgres does (the startup packet's user counts).
    pub fn handle_client_first(&mut self, client_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let mut snonce = [0u8; SERVER_NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut snonce);
        self.client_first_with_nonce(client_first, &B64.encode(snonce))
    }

    fn client_first_with_nonce(&mut self, msg: &[u8], snonce: &str) -> Result<Vec<u8>, ScramError> {
        if !matches!(
            mem::replace(&mut self.state, State::Finished),
            State::AwaitingClientFirst
        ) {
            return Err(ScramError::OutOfOrder);
        }
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (flag, gs2_header, bare, cnonce) = parse_client_first(msg)?;
        let mut expected_cbind = gs2_header.as_bytes().to_vec();
        match (flag, self.plus) {
            ("p=tls-server-end-point", true) => match &self.binding {
                Some(data) => expected_cbind.extend_from_slice(data),
                None => return Err(ScramError::ChannelBindingUnsupported),
            },
            (_, true) => return Err(ScramError::BindingRequired),
            (f, false) if f.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            ("y", false) if self.binding.is_some() => return Err(ScramError::BindingDowngrade),
            _ => {}
        }
        let nonce = format!("{cnonce}{snonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(self.verifier.salt()),
            self.verifier.iterations()
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal {
            expected_cbind,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        };
        Ok(reply)
    }

    /// Handles the SASLResponse payload (`c=<b64 gs2 header>,r=<nonce>,p=<proof>`)
    /// and, if the proof is right, returns the server-final-message
    /// (`v=<ServerSignature b64>`) to send in AuthenticationSASLFinal.
    /// Any error ends the exchange.
    pub fn handle_client_final(&mut self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::AwaitingClientFinal {
            expected_cbind,
            client_first_bare,
            server_first,
            nonce,
        } = mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("expected channel binding attribute"))?;
        let cbind = B64
            .decode(cbind)
            .map_err(|_| ScramError::Malformed("invalid channel binding encoding"))?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("expected nonce attribute"))?;
        attrs.try_for_each(check_extension)?;
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("invalid proof"))?;
        if cbind != expected_cbind {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if client_nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }

        let auth_message: [&[u8]; 5] = [
            client_first_bare.as_bytes(),
            b",",
            server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = hmac_sha256(self.verifier.stored_key(), &auth_message);
        let mut client_key = proof;
        client_key
            .iter_mut()
            .zip(client_signature)
            .for_each(|(k, s)| *k ^= s);
        let stored_key = Sha256::digest(client_key);
        let matches = constant_time_eq(&stored_key, self.verifier.stored_key());
        if !matches || self.mock {
            return Err(ScramError::WrongPassword);
        }
        self.client_key = Some(client_key);
        let server_signature = hmac_sha256(self.verifier.server_key(), &auth_message);
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    /// The client's ClientKey recovered from a successful proof (`None` before
    /// success). With the verifier it can answer the backend's own SCRAM
    /// challenge for the same user, as PgBouncer does for SCRAM passthrough.
    pub fn client_key(&self) -> Option<[u8; 32]> {
        self.client_key
    }

    /// The verifier this exchange runs against (the fake one in mock mode).
    pub fn verifier(&self) -> &ScramVerifier {
        &self.verifier
    }
}

/// Splits client-first into (gs2 flag, gs2 header, client-first-bare, client nonce).
fn parse_client_first(msg: &str) -> Result<(&str, &str, &str, &str), ScramError> {
    let (flag, rest) = msg
        .split_once(',')
        .ok_or(ScramError::Malformed("missing GS2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => {}
        _ => return Err(ScramError::Malformed("invalid channel binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("missing GS2 header"))?;
    if authzid.starts_with("a=") {
        return Err(ScramError::AuthzidUnsupported);
    } else if !authzid.is_empty() {
        return Err(ScramError::Malformed("invalid GS2 header"));
    }
    let gs2_header = &msg[..msg.len() - bare.len()];
    let mut attrs = bare.split(',');
    match attrs.next() {
        Some(a) if a.starts_with("m=") => {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ))
        }
        Some(a) if a.starts_with("n=") => {}
        _ => return Err(ScramError::Malformed("expected user name attribute")),
    }
    let cnonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(ScramError::Malformed("expected nonce attribute"))?;
    if cnonce.is_empty() || !cnonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ScramError::Malformed("invalid client nonce"));
    }
    attrs.try_for_each(check_extension)?;
    Ok((flag, gs2_header, bare, cnonce))
}

/// Optional extension attributes (`x=...`) are allowed and ignored.
fn check_extension(attr: &str) -> Result<(), ScramError> {
    let b = attr.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b'=' {
        Ok(())
    } else {
        Err(ScramError::Malformed("invalid attribute"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Produced by PostgreSQL 15 for role `alice`, password `correct horse`.
    const PG_ALICE: &str = "SCRAM-SHA-256$4096:vrYx3O0BqIWYkypbbRFDNA==$vLmMC68IMKVX0bQJrj5ztt/ZFx4w1bsCPTTceHGwP8Q=:/FxANLaReo4js6vsCd+UCfALbpFboFPFeaDeIeMPpRE=";

    /// Runs a full exchange with postgres-protocol's client; returns the
    /// server's final result and whether the client accepted the server.
    fn exchange(
        server: &mut ScramServer,
        password: &str,
        cb: ChannelBinding,
    ) -> Result<bool, ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), cb);
        let server_first = server.handle_client_first(client.message())?;
        client.update(&server_first).unwrap();
        let server_final = server.handle_client_final(client.message())?;
        Ok(client.finish(&server_final).is_ok())
    }

    /// Drives the server to the point where it awaits client-final.
    fn first_step(server: &mut ScramServer, password: &str, cb: ChannelBinding) -> String {
        let mut client = ScramSha256::new(password.as_bytes(), cb);
        let server_first = server.handle_client_first(client.message()).unwrap();
        client.update(&server_first).unwrap();
        String::from_utf8(client.message().to_vec()).unwrap()
    }

    #[test]
    fn full_exchange_with_verifier_from_plaintext() {
        let v = ScramVerifier::generate("hunter2");
        let mut server = ScramServer::new(v.clone());
        assert_eq!(
            exchange(&mut server, "hunter2", ChannelBinding::unsupported()),
            Ok(true)
        );
        let ck = server.client_key().unwrap();
        assert_eq!(&<[u8; 32]>::from(Sha256::digest(ck)), v.stored_key());
        assert_eq!(
            server.handle_client_final(b"c=biws,r=x,p=AAAA"),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn full_exchange_with_postgres_generated_verifier() {
        let mut server = ScramServer::new(ScramVerifier::parse(PG_ALICE).unwrap());
        assert_eq!(
            exchange(&mut server, "correct horse", ChannelBinding::unsupported()),
            Ok(true)
        );
        let mut server = ScramServer::new(ScramVerifier::parse(PG_ALICE).unwrap());
        assert_eq!(
            exchange(&mut server, "correct horse", ChannelBinding::unrequested()),
            Ok(true)
        );
    }

    #[test]
    fn wrong_password_fails() {
        let mut server = ScramServer::new(ScramVerifier::parse(PG_ALICE).unwrap());
        assert_eq!(
            exchange(&mut server, "correct horsf", ChannelBinding::unsupported()),
            Err(ScramError::WrongPassword)
        );
        assert_eq!(server.client_key(), None);
        let mut server = ScramServer::new(ScramVerifier::generate("a"));
        assert_eq!(
            exchange(&mut server, "", ChannelBinding::unsupported()),
            Err(ScramError::WrongPassword)
        );
    }

    #[test]
    fn rfc7677_known_answer() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mut server = ScramServer::new(ScramVerifier::from_password("pencil", &salt, 4096));
        let first = server
            .client_first_with_nonce(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            )
            .unwrap();
        assert_eq!(first, b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let fin = server
            .handle_client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn server_first_shape() {
        let v = ScramVerifier::from_password("pw", b"0123456789abcdef", 4096);
        let mut server = ScramServer::new(v);
        let first = server
            .handle_client_first(b"y,,n=ignored,r=abc,x=ext")
            .unwrap();
        let first = String::from_utf8(first).unwrap();
        let rest = first.strip_prefix("r=abc").unwrap();
        let (snonce, tail) = rest.split_once(',').unwrap();
        assert_eq!(B64.decode(snonce).unwrap().len(), SERVER_NONCE_LEN);
        assert_eq!(
            tail,
            format!("s={},i=4096", B64.encode(b"0123456789abcdef"))
        );
        assert_eq!(
            server.handle_client_first(b"n,,n=,r=abc"),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn unknown_user_mock_looks_like_wrong_password() {
        let mut server = ScramServer::new_failing("ghost");
        // Even the "right" password for the fake verifier cannot succeed.
        assert_eq!(
            exchange(&mut server, "", ChannelBinding::unsupported()),
            Err(ScramError::WrongPassword)
        );
        let salt = |u: &str| ScramServer::new_failing(u).verifier().salt().to_vec();
        assert_eq!(salt("ghost"), salt("ghost"));
        assert_ne!(salt("ghost"), salt("ghost2"));
        assert_eq!(salt("ghost").len(), SCRAM_DEFAULT_SALT_LEN);
        assert_eq!(
            ScramServer::new_failing("ghost").verifier().iterations(),
            SCRAM_DEFAULT_ITERATIONS
        );
        // Protocol errors are still reported as such in mock mode.
        let mut server = ScramServer::new_failing("ghost");
        assert_eq!(
            server.handle_client_first(b"p=tls-server-end-point,,n=,r=a"),
            Err(ScramError::ChannelBindingUnsupported)
        );
    }

    #[test]
    fn channel_binding_requests_rejected_and_echo_checked() {
        let v = ScramVerifier::generate("pw");
        let mut server = ScramServer::new(v.clone());
        assert_eq!(
            server.handle_client_first(b"p=tls-server-end-point,,n=,r=abc"),
            Err(ScramError::ChannelBindingUnsupported)
        );
        // Client-first said "n,," but client-final echoes "y,," (eSws).
        let mut server = ScramServer::new(v.clone());
        let fin = first_step(&mut server, "pw", ChannelBinding::unsupported());
        let tampered = fin.replacen("c=biws", "c=eSws", 1);
        assert_eq!(
            server.handle_client_final(tampered.as_bytes()),
            Err(ScramError::ChannelBindingMismatch)
        );
        let mut server = ScramServer::new(v);
        let fin = first_step(&mut server, "pw", ChannelBinding::unrequested());
        let tampered = fin.replacen("c=eSws", "c=biws", 1);
        assert_eq!(
            server.handle_client_final(tampered.as_bytes()),
            Err(ScramError::ChannelBindingMismatch)
        );
    }

    #[test]
    fn nonce_mismatch_and_tampered_proof() {
        let v = ScramVerifier::generate("pw");
        let mut server = ScramServer::new(v.clone());
        let fin = first_step(&mut server, "pw", ChannelBinding::unsupported());
        let tampered = fin.replacen(",r=", ",r=X", 1);
        assert_eq!(
            server.handle_client_final(tampered.as_bytes()),
            Err(ScramError::NonceMismatch)
        );
        // After an error the exchange is over.
        assert_eq!(
            server.handle_client_final(fin.as_bytes()),
            Err(ScramError::OutOfOrder)
        );

        let mut server = ScramServer::new(v);
        let fin = first_step(&mut server, "pw", ChannelBinding::unsupported());
        let (head, proof) = fin.rsplit_once(",p=").unwrap();
        let mut raw = B64.decode(proof).unwrap();
        raw[0] ^= 1;
        let tampered = format!("{head},p={}", B64.encode(raw));
        assert_eq!(
            server.handle_client_final(tampered.as_bytes()),
            Err(ScramError::WrongPassword)
        );
    }

    #[test]
    fn malformed_client_first() {
        let v = ScramVerifier::generate("pw");
        let cases: &[(&[u8], ScramError)] = &[
            (b"", ScramError::Malformed("missing GS2 header")),
            (b"n", ScramError::Malformed("missing GS2 header")),
            (b"n,", ScramError::Malformed("missing GS2 header")),
            (
                b"x,,n=,r=a",
                ScramError::Malformed("invalid channel binding flag"),
            ),
            (b"n,a=admin,n=,r=a", ScramError::AuthzidUnsupported),
            (b"n,zz,n=,r=a", ScramError::Malformed("invalid GS2 header")),
            (
                b"n,,m=ext,n=,r=a",
                ScramError::Malformed("mandatory extensions are not supported"),
            ),
            (
                b"n,,r=a",
                ScramError::Malformed("expected user name attribute"),
            ),
            (b"n,,n=", ScramError::Malformed("expected nonce attribute")),
            (b"n,,n=,r=", ScramError::Malformed("invalid client nonce")),
            (
                b"n,,n=,r=a b",
                ScramError::Malformed("invalid client nonce"),
            ),
            (
                b"n,,n=,r=a,bogus",
                ScramError::Malformed("invalid attribute"),
            ),
            (b"n,,n=,r=\xff", ScramError::Malformed("not UTF-8")),
        ];
        for (msg, want) in cases {
            let mut server = ScramServer::new(v.clone());
            assert_eq!(
                &server.handle_client_first(msg).unwrap_err(),
                want,
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    #[test]
    fn malformed_client_final() {
        let v = ScramVerifier::generate("pw");
        let proof = B64.encode([0u8; 32]);
        let cases: Vec<(String, ScramError)> = vec![
            (
                "c=biws,r=abc".into(),
                ScramError::Malformed("missing proof"),
            ),
            (
                format!("r=abc,c=biws,p={proof}"),
                ScramError::Malformed("expected channel binding attribute"),
            ),
            (
                format!("c=!!!,r=abc,p={proof}"),
                ScramError::Malformed("invalid channel binding encoding"),
            ),
            (
                format!("c=biws,p={proof}"),
                ScramError::Malformed("expected nonce attribute"),
            ),
            (
                format!("c=biws,r=abc,,p={proof}"),
                ScramError::Malformed("invalid attribute"),
            ),
            (
                "c=biws,r=abc,p=AAAA".into(),
                ScramError::Malformed("invalid proof"),
            ),
            (
                "c=biws,r=abc,p=not base64".into(),
                ScramError::Malformed("invalid proof"),
            ),
        ];
        for (msg, want) in cases {
            let mut server = ScramServer::new(v.clone());
            server.handle_client_first(b"n,,n=,r=abc").unwrap();
            assert_eq!(
                server.handle_client_final(msg.as_bytes()),
                Err(want),
                "{msg}"
            );
        }
    }

    #[test]
    fn final_before_first_is_out_of_order() {
        let mut server = ScramServer::new(ScramVerifier::generate("pw"));
        assert_eq!(
            server.handle_client_final(b"c=biws,r=a,p=AAAA"),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn plus_binds_to_the_tls_server_end_point() {
        let v = ScramVerifier::generate("pw");
        let ep = vec![7u8; 32];
        let plus = |v: &ScramVerifier| {
            ScramServer::new(v.clone()).with_channel_binding(Some(ep.clone()), true)
        };
        let cb = || ChannelBinding::tls_server_end_point(ep.clone());
        assert_eq!(exchange(&mut plus(&v), "pw", cb()), Ok(true));
        // Other binding data (another certificate: a man in the middle) fails.
        let other = ChannelBinding::tls_server_end_point(vec![8u8; 32]);
        assert_eq!(
            exchange(&mut plus(&v), "pw", other),
            Err(ScramError::ChannelBindingMismatch)
        );
        // PLUS without binding, and `y` while PLUS was offered (downgrade), are refused.
        let unbound = ChannelBinding::unsupported();
        assert_eq!(
            exchange(&mut plus(&v), "pw", unbound),
            Err(ScramError::BindingRequired)
        );
        let mut offered = ScramServer::new(v.clone()).with_channel_binding(Some(ep.clone()), false);
        assert_eq!(
            exchange(&mut offered, "pw", ChannelBinding::unrequested()),
            Err(ScramError::BindingDowngrade)
        );
        let mut offered = ScramServer::new(v).with_channel_binding(Some(ep), false);
        assert_eq!(
            exchange(&mut offered, "pw", ChannelBinding::unsupported()),
            Ok(true)
        );
    }
}
