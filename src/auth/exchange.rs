//! The client-facing authentication exchange over the socket: trust, md5 and
//! SCRAM-SHA-256, driven by the pure verifiers of this module.

use bytes::BytesMut;

use super::hba::Method;
use super::passthrough::ScramKeys;
use super::scram::{ScramError, SCRAM_SHA_256_PLUS};
use super::{verify_md5_response, AuthType, ScramServer, Secret, UserList, SCRAM_SHA_256};
use crate::config::Target;
use crate::error::ClientError;
use crate::frontend::client::{ClientIo, MAX_PASSWORD_MESSAGE, MAX_SASL_MESSAGE};
use crate::frontend::login::Startup;
use crate::frontend::lookup;
use crate::live::Snapshot;
use crate::protocol::{framer, reply};
use crate::App;

/// Why a login was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong password or unknown user (the client cannot tell which).
    #[error("password authentication failed for user \"{0}\"")]
    Failed(String),
    /// The client broke the exchange or went away.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The plaintext password of `user` in the auth file, if it holds one (used to log in to
/// the server as that user).
pub fn plain_password(users: &UserList, user: &str) -> Option<String> {
    match users.get(user) {
        Some(Secret::Plain(p)) => Some(p.clone()),
        _ => None,
    }
}

/// Authenticate the user of `start` as the configuration demands (with `auth_type = hba`, as
/// the first matching line of the HBA file says) and send AuthenticationOk. On failure
/// the client has been sent its FATAL.
pub async fn authenticate(
    client: &mut ClientIo,
    state: &App,
    app: &Snapshot,
    start: &Startup,
    target: Option<&Target>,
) -> Result<(), AuthError> {
    let user = start.user.as_str();
    let kind = match app.auth_type {
        AuthType::Hba => match hba_method(client, app, start) {
            Ok(kind) => kind,
            Err(msg) => {
                // PgBouncer's texts.
                client.fatal("08P01", msg).await;
                return Err(AuthError::Failed(user.to_string()));
            }
        },
        kind => kind,
    };
    let res = match kind {
        AuthType::Trust => Ok(()),
        // Resolved above.
        AuthType::Hba => Err(AuthError::Failed(user.to_string())),
        AuthType::Cert => {
            // As Postgres's cert method: the verified certificate's CN is the user name.
            let msg = match &client.cert_cn {
                Some(cn) if cn == user => None,
                Some(_) => Some(format!(
                    "certificate authentication failed for user \"{user}\""
                )),
                None => Some("connection requires a valid client certificate".to_string()),
            };
            if let Some(msg) = msg {
                client.fatal("28000", &msg).await;
                return Err(AuthError::Failed(user.to_string()));
            }
            Ok(())
        }
        kind => {
            let found = match lookup::secret(state, app, target, user).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(user, "auth_query lookup failed: {e}");
                    client.fatal("08P01", "auth_query failed").await;
                    return Err(AuthError::Failed(user.to_string()));
                }
            };
            let secret = found.as_ref();
            // As PgBouncer: md5 is upgraded to SCRAM for a SCRAM secret; scram-sha-256 stays
            // SCRAM, so an md5 secret cannot log in under it.
            let use_scram =
                matches!(secret, Some(Secret::Scram(_))) || kind == AuthType::ScramSha256;
            let res = if use_scram {
                scram(client, secret, user).await
            } else {
                md5(client, secret, user).await
            };
            // What the login proved lets the pool log in as this user (pass-through).
            match (res, secret) {
                (Ok(Some(keys)), Some(Secret::Scram(_))) => {
                    state.keyring.learn_scram(user, keys);
                    Ok(())
                }
                (Ok(_), Some(Secret::Md5(h))) => {
                    state.keyring.learn_md5(user, *h);
                    Ok(())
                }
                (r, _) => r.map(|_| ()),
            }
        }
    };
    match res {
        Ok(()) => {
            reply::auth_ok(&mut client.out);
            Ok(())
        }
        Err(AuthError::Failed(u)) => {
            let msg = format!("password authentication failed for user \"{u}\"");
            client.fatal("28P01", &msg).await;
            Err(AuthError::Failed(u))
        }
        Err(AuthError::Client(ClientError::Protocol(m))) => {
            client.fatal("08P01", &m).await;
            Err(AuthError::Client(ClientError::Protocol(m)))
        }
        Err(AuthError::Client(e @ ClientError::TooLong(_))) => {
            client.fatal("08P01", &e.to_string()).await;
            Err(AuthError::Client(e))
        }
        Err(e) => Err(e),
    }
}

/// The login method the first matching line of the HBA file names, or PgBouncer's refusal.
fn hba_method(
    client: &ClientIo,
    app: &Snapshot,
    start: &Startup,
) -> Result<AuthType, &'static str> {
    let method = match (&app.hba, client.peer) {
        (Some(hba), Some(peer)) => {
            hba.method(peer.ip(), client.is_tls(), &start.database, &start.user)
        }
        _ => None,
    };
    match method {
        None => Err("no authentication method is found"),
        Some(Method::Reject | Method::Peer) => Err("login rejected"),
        Some(Method::Trust) => Ok(AuthType::Trust),
        Some(Method::Md5 | Method::Password) => Ok(AuthType::Md5),
        Some(Method::ScramSha256) => Ok(AuthType::ScramSha256),
        Some(Method::Cert) => Ok(AuthType::Cert),
    }
}

/// The client's next message, which must be a password message (`p`) whose length word is
/// at most `max_len`.
async fn password_message(client: &mut ClientIo, max_len: usize) -> Result<BytesMut, AuthError> {
    client.flush().await?;
    let (tag, body) = client.next_message(max_len).await?;
    if tag != b'p' {
        return Err(ClientError::Protocol(format!(
            "expected password response, got message type {}",
            tag as char
        ))
        .into());
    }
    Ok(body)
}

/// A SASL message: longer than Postgres's limit fails the login as Postgres fails it
/// (28P01), before its body is read.
async fn sasl_message(client: &mut ClientIo, user: &str) -> Result<BytesMut, AuthError> {
    match password_message(client, MAX_SASL_MESSAGE).await {
        Err(AuthError::Client(ClientError::TooLong(_))) => Err(AuthError::Failed(user.into())),
        other => other,
    }
}

async fn md5(
    client: &mut ClientIo,
    secret: Option<&Secret>,
    user: &str,
) -> Result<Option<ScramKeys>, AuthError> {
    let salt: [u8; 4] = rand::random();
    reply::auth_md5(&mut client.out, salt);
    let body = password_message(client, MAX_PASSWORD_MESSAGE).await?;
    let response = framer::cstr(&body).map(|(s, _)| s).unwrap_or(&body[..]);
    match secret {
        Some(s) if verify_md5_response(s, user, salt, response) => Ok(None),
        _ => Err(AuthError::Failed(user.to_string())),
    }
}

/// On success, the keys the client proved (for pass-through).
async fn scram(
    client: &mut ClientIo,
    secret: Option<&Secret>,
    user: &str,
) -> Result<Option<ScramKeys>, AuthError> {
    let mut server = match secret.and_then(Secret::scram_verifier) {
        Some(v) => ScramServer::new(v),
        None => ScramServer::new_failing(user),
    };
    let binding = client.end_point.clone();
    reply::auth_sasl(&mut client.out, binding.is_some());
    let body = sasl_message(client, user).await?;
    let bad = || {
        AuthError::Client(ClientError::Protocol(
            "malformed SASLInitialResponse message".into(),
        ))
    };
    let (mechanism, rest) = framer::cstr(&body).ok_or_else(bad)?;
    let plus = binding.is_some() && mechanism == SCRAM_SHA_256_PLUS.as_bytes();
    if mechanism != SCRAM_SHA_256.as_bytes() && !plus {
        return Err(ClientError::Protocol(
            "client selected an invalid SASL authentication mechanism".into(),
        )
        .into());
    }
    server = server.with_channel_binding(binding, plus);
    if rest.len() < 4 {
        return Err(bad());
    }
    let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let data = &rest[4..];
    if len < 0 || len as usize != data.len() {
        return Err(bad());
    }
    let failed = |e: ScramError| match e {
        ScramError::BindingDowngrade
        | ScramError::BindingRequired
        | ScramError::ChannelBindingUnsupported
        | ScramError::ChannelBindingMismatch => {
            AuthError::Client(ClientError::Protocol(e.to_string()))
        }
        _ => AuthError::Failed(user.to_string()),
    };
    let first = server.handle_client_first(data).map_err(failed)?;
    if !reply::auth_sasl_continue(&mut client.out, first.as_ref()) {
        return Err(bad());
    }
    let body = sasl_message(client, user).await?;
    let fin = server.handle_client_final(&body).map_err(failed)?;
    if !reply::auth_sasl_final(&mut client.out, fin.as_ref()) {
        return Err(bad());
    }
    Ok(server.client_key().map(|client_key| ScramKeys {
        client_key,
        verifier: server.verifier().clone(),
    }))
}
