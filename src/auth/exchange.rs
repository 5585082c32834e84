//! The client-facing authentication exchange over the socket: trust, md5 and
//! SCRAM-SHA-256, driven by the pure verifiers of this module.

use bytes::BytesMut;

use super::{verify_md5_response, AuthType, ScramServer, Secret, UserList, SCRAM_SHA_256};
use crate::error::ClientError;
use crate::frontend::client::ClientIo;
use crate::protocol::{framer, reply};
use crate::live::Snapshot;

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

/// Authenticate `user` as the configuration demands and send AuthenticationOk. On failure
/// the client has been sent its FATAL.
pub async fn authenticate(
    client: &mut ClientIo,
    app: &Snapshot,
    user: &str,
) -> Result<(), AuthError> {
    let res = match app.auth_type {
        AuthType::Trust => Ok(()),
        kind => {
            let secret = app.users.get(user);
            let use_scram = match secret {
                Some(Secret::Scram(_)) => true,
                Some(Secret::Md5(_)) => false,
                _ => kind == AuthType::ScramSha256,
            };
            if use_scram {
                scram(client, secret, user).await
            } else {
                md5(client, secret, user).await
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
        Err(e) => Err(e),
    }
}

async fn password_message(client: &mut ClientIo) -> Result<BytesMut, AuthError> {
    client.flush().await?;
    let (tag, body) = client.next_message().await?;
    if tag != b'p' {
        return Err(ClientError::Protocol(format!(
            "expected password response, got message type {}",
            tag as char
        ))
        .into());
    }
    Ok(body)
}

async fn md5(client: &mut ClientIo, secret: Option<&Secret>, user: &str) -> Result<(), AuthError> {
    let salt: [u8; 4] = rand::random();
    reply::auth_md5(&mut client.out, salt);
    let body = password_message(client).await?;
    let response = framer::cstr(&body).map(|(s, _)| s).unwrap_or(&body[..]);
    match secret {
        Some(s) if verify_md5_response(s, user, salt, response) => Ok(()),
        _ => Err(AuthError::Failed(user.to_string())),
    }
}

async fn scram(
    client: &mut ClientIo,
    secret: Option<&Secret>,
    user: &str,
) -> Result<(), AuthError> {
    let mut server = match secret.and_then(Secret::scram_verifier) {
        Some(v) => ScramServer::new(v),
        None => ScramServer::new_failing(user),
    };
    reply::auth_sasl(&mut client.out);
    let body = password_message(client).await?;
    let bad = || {
        AuthError::Client(ClientError::Protocol(
            "malformed SASLInitialResponse message".into(),
        ))
    };
    let (mechanism, rest) = framer::cstr(&body).ok_or_else(bad)?;
    if mechanism != SCRAM_SHA_256.as_bytes() {
        return Err(ClientError::Protocol(
            "client selected an invalid SASL authentication mechanism".into(),
        )
        .into());
    }
    if rest.len() < 4 {
        return Err(bad());
    }
    let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let data = &rest[4..];
    if len < 0 || len as usize != data.len() {
        return Err(bad());
    }
    let first = server
        .handle_client_first(data)
        .map_err(|_| AuthError::Failed(user.to_string()))?;
    reply::auth_sasl_continue(&mut client.out, first);
    let body = password_message(client).await?;
    let fin = server
        .handle_client_final(&body)
        .map_err(|_| AuthError::Failed(user.to_string()))?;
    reply::auth_sasl_final(&mut client.out, fin);
    Ok(())
}
