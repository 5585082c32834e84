//! `auth_user` + `auth_query`: a user missing from the auth file has its secret looked up in
//! Postgres, as PgBouncer does, by running the query (PgBouncer's default reads pg_authid)
//! with the user name as `$1` on a connection logged in as `auth_user`. Idle lookup
//! connections are kept per server database and reused; they never serve clients.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use dashmap::DashMap;
use tokio::io::AsyncWriteExt;

use super::conn::{parse_data_row, Login, ServerConn};
use crate::auth::{Secret, UserList};
use crate::error::ServerError;

/// Idle lookup connections kept per login target.
const KEEP_IDLE: usize = 2;

/// Why a lookup failed (the client gets one FATAL; the details go to the log).
#[derive(Debug, thiserror::Error)]
pub enum AuthQueryError {
    /// auth_user could not log in.
    #[error("auth_user \"{user}\" cannot log in: {source}")]
    Login {
        /// The auth_user.
        user: String,
        /// What the server said.
        source: ServerError,
    },
    /// The query failed on the server.
    #[error("auth_query failed: {0}")]
    Query(ServerError),
    /// The query does not return (user name, secret).
    #[error("expected 2 columns from auth_query, not {0}")]
    Columns(usize),
}

/// Idle lookup connections by `user@host:port/dbname`.
#[derive(Debug, Default)]
pub struct AuthConns {
    idle: DashMap<String, Arc<Mutex<Vec<ServerConn>>>>,
}

/// The password (plaintext) or md5 hash auth_user logs in with, from the auth file.
pub fn auth_user_password(users: &UserList, user: &str) -> (Option<String>, Option<[u8; 16]>) {
    match users.get(user) {
        Some(Secret::Plain(p)) => (Some(p.clone()), None),
        Some(Secret::Md5(h)) => (None, Some(*h)),
        _ => (None, None),
    }
}

impl AuthConns {
    /// Run `query` for `user` as `login` (auth_user); `Ok(None)` when no row, or a NULL
    /// secret, comes back (unknown user, no password, or an expired one).
    pub async fn lookup(
        &self,
        login: &Login,
        query: &str,
        user: &str,
        timeout: Duration,
    ) -> Result<Option<Secret>, AuthQueryError> {
        let key = format!(
            "{}@{}:{}/{}",
            login.user, login.host, login.port, login.database
        );
        let slot = self.idle.entry(key).or_default().clone();
        let idle = slot.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match idle.and_then(|mut c| c.looks_alive().then_some(c)) {
            Some(c) => c,
            None => ServerConn::connect(login, timeout)
                .await
                .map_err(|source| AuthQueryError::Login {
                    user: login.user.clone(),
                    source,
                })?,
        };
        let res = tokio::time::timeout(timeout, run(&mut conn, query, user))
            .await
            .unwrap_or(Err(AuthQueryError::Query(ServerError::ConnectTimeout)));
        let clean = matches!(res, Ok(_) | Err(AuthQueryError::Columns(_)))
            || matches!(res, Err(AuthQueryError::Query(ServerError::Refused { .. })));
        if clean {
            let mut idle = slot.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < KEEP_IDLE {
                idle.push(conn);
            }
        }
        res
    }
}

/// Parse/Bind/Execute/Sync with `$1` as text; the secret of the first row.
async fn run(
    conn: &mut ServerConn,
    query: &str,
    user: &str,
) -> Result<Option<Secret>, AuthQueryError> {
    let mut out = BytesMut::new();
    let mut msg = |tag: u8, body: &[u8]| {
        out.put_u8(tag);
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(body);
    };
    let mut parse = BytesMut::new();
    parse.put_slice(b"\0");
    parse.put_slice(query.as_bytes());
    parse.put_slice(b"\0");
    parse.put_i16(0);
    msg(b'P', &parse);
    let mut bind = BytesMut::new();
    bind.put_slice(b"\0\0");
    bind.put_i16(0);
    bind.put_i16(1);
    bind.put_i32(user.len() as i32);
    bind.put_slice(user.as_bytes());
    bind.put_i16(0);
    msg(b'B', &bind);
    msg(b'E', b"\0\0\0\0\0");
    msg(b'S', b"");
    let io = |e: std::io::Error| AuthQueryError::Query(e.into());
    conn.wr.write_all(&out).await.map_err(io)?;
    let mut failure = None;
    let mut secret = None;
    let mut first = true;
    loop {
        let (tag, body) = conn.next_message().await.map_err(AuthQueryError::Query)?;
        match tag {
            b'D' if first => {
                first = false;
                let row = parse_data_row(&body).map_err(AuthQueryError::Query)?;
                if row.len() != 2 {
                    failure.get_or_insert(AuthQueryError::Columns(row.len()));
                    continue;
                }
                secret = row[1].as_deref().map(|s| {
                    // An unparsable verifier cannot be proven: treat it as no secret.
                    Secret::parse(s).ok()
                });
            }
            b'E' => {
                let e = super::conn::refused_error(&body);
                failure.get_or_insert(AuthQueryError::Query(e));
            }
            b'Z' => {
                return match failure {
                    Some(e) => Err(e),
                    None => Ok(secret.flatten()),
                }
            }
            _ => {}
        }
    }
}
