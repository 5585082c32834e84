//! One Postgres server connection: connect, log in (trust, cleartext, md5, SCRAM-SHA-256),
//! remember its parameters and cancel key, and run pgherald's own housekeeping queries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::passthrough::{Binding, KeyClient, Keyring};
use crate::auth::{md5_salted, Secret};
use crate::error::ServerError;
use crate::protocol::framer;
use crate::tls::{NetRead, NetWrite, ServerTls};

/// Who to log in as, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database on the server.
    pub database: String,
    /// Role to log in as.
    pub user: String,
    /// Password, if the server asks for one.
    pub password: Option<String>,
    /// TLS towards this server (server_tls_* settings).
    pub tls: ServerTls,
    /// Without a password: the secrets the user's own client logins proved (SCRAM keys,
    /// md5 hash), used as PgBouncer does for pass-through. Only when the pool logs in as
    /// the client's own user.
    pub passthrough: Option<Arc<Keyring>>,
    /// Startup parameters the database entry sets (client_encoding, datestyle, timezone,
    /// application_name).
    pub params: Vec<(String, String)>,
    /// Query run once after login (the database's connect_query).
    pub connect_query: Option<String>,
}

/// A SASL client exchange towards the server: from a password, or from pass-through keys.
enum Sasl {
    Password(ScramSha256),
    Keys(KeyClient),
}

impl Sasl {
    fn message(&self) -> &[u8] {
        match self {
            Sasl::Password(c) => c.message(),
            Sasl::Keys(c) => c.message(),
        }
    }

    fn update(&mut self, data: &[u8]) -> Result<(), ServerError> {
        let res = match self {
            Sasl::Password(c) => c.update(data).map_err(|e| e.to_string()),
            Sasl::Keys(c) => c.update(data).map_err(|e| e.to_string()),
        };
        res.map_err(ServerError::Auth)
    }

    fn finish(&mut self, data: &[u8]) -> Result<(), ServerError> {
        let res = match self {
            Sasl::Password(c) => c.finish(data).map_err(|e| e.to_string()),
            Sasl::Keys(c) => c.finish(data).map_err(|e| e.to_string()),
        };
        res.map_err(ServerError::Auth)
    }
}

/// Server parameters as reported by ParameterStatus, in arrival order.
pub type Params = Vec<(String, String)>;

/// Set or replace a parameter in a small ordered map.
pub fn set_param(params: &mut Params, name: &str, value: &str) {
    match params.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => {
            if slot.1 != value {
                slot.1 = value.to_string();
            }
        }
        None => params.push((name.to_string(), value.to_string())),
    }
}

/// Look a parameter up.
pub fn get_param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Parse a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (k, rest) = framer::cstr(body)?;
    let (v, _) = framer::cstr(rest)?;
    Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?))
}

/// One row of a housekeeping query, as text (`None` for NULL).
pub type Row = Vec<Option<String>>;

/// Parse a DataRow body of text columns.
pub(crate) fn parse_data_row(body: &[u8]) -> Result<Row, ServerError> {
    let bad = || ServerError::Protocol("malformed DataRow".into());
    let n = u16::from_be_bytes([
        *body.first().ok_or_else(bad)?,
        *body.get(1).ok_or_else(bad)?,
    ]);
    let mut at = 2;
    let mut row = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = body.get(at..at + 4).ok_or_else(bad)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if len < 0 {
            row.push(None);
            continue;
        }
        let v = body.get(at..at + len as usize).ok_or_else(bad)?;
        row.push(Some(String::from_utf8_lossy(v).into_owned()));
        at += len as usize;
    }
    Ok(row)
}

/// Where a CancelRequest for this server connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    /// Server address.
    pub addr: SocketAddr,
    /// Server backend pid.
    pub pid: i32,
    /// Server secret.
    pub secret: i32,
}

/// A logged-in server connection. The session reads `rd` into `buf` and writes `wr`.
#[derive(Debug)]
pub struct ServerConn {
    /// Read half.
    pub rd: NetRead,
    /// Write half.
    pub wr: NetWrite,
    /// With TLS: the server certificate's channel binding data (SCRAM-SHA-256-PLUS).
    pub end_point: Option<Vec<u8>>,
    /// pgherald's address of this connection.
    pub local: Option<std::net::SocketAddr>,
    /// Reused read buffer; holds unprocessed bytes between reads.
    pub buf: BytesMut,
    /// Current parameter values, as the server reported them.
    pub params: Params,
    /// Settings pgherald applied that the server does not report (e.g. extra_float_digits).
    pub extra: Params,
    /// Cancel key of the backend.
    pub cancel: CancelTarget,
    /// Named statements pgherald prepared here (transaction pooling).
    pub prepared: super::prepared::ServerStatements,
    /// When the connection was opened.
    pub created: Instant,
    /// When it was last returned to the pool.
    pub idle_since: Instant,
}

/// The ServerError for an ErrorResponse body.
pub(crate) fn refused_error(body: &[u8]) -> ServerError {
    refused(body)
}

fn refused(body: &[u8]) -> ServerError {
    let s = |c| String::from_utf8_lossy(framer::field(body, c).unwrap_or_default()).into_owned();
    ServerError::Refused {
        code: s(b'C'),
        severity: s(b'V'),
        message: s(b'M'),
        detail: framer::field(body, b'D').map(|d| String::from_utf8_lossy(d).into_owned()),
    }
}

impl ServerConn {
    /// Open a connection and log in, within `timeout`.
    pub async fn connect(login: &Login, timeout: Duration) -> Result<ServerConn, ServerError> {
        tokio::time::timeout(timeout, Self::connect_inner(login))
            .await
            .map_err(|_| ServerError::ConnectTimeout)?
    }

    async fn connect_inner(login: &Login) -> Result<ServerConn, ServerError> {
        let stream = TcpStream::connect((login.host.as_str(), login.port)).await?;
        stream.set_nodelay(true)?;
        let addr = stream.peer_addr()?;
        let local = stream.local_addr().ok();
        let tls = login
            .tls
            .negotiate(stream, &login.host)
            .await
            .map_err(|e| {
                tracing::warn!(host = %login.host, port = login.port, "server TLS failed: {e}");
                ServerError::Tls(e.to_string())
            })?;
        let now = Instant::now();
        let mut conn = ServerConn {
            rd: tls.rd,
            wr: tls.wr,
            end_point: tls.end_point,
            local,
            buf: BytesMut::with_capacity(16 * 1024),
            params: Vec::new(),
            extra: Vec::new(),
            prepared: Default::default(),
            cancel: CancelTarget {
                addr,
                pid: 0,
                secret: 0,
            },
            created: now,
            idle_since: now,
        };
        conn.login(login).await?;
        if let Some(q) = &login.connect_query {
            conn.run_quiet(q).await?;
        }
        Ok(conn)
    }

    async fn login(&mut self, login: &Login) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        let params = [
            ("user", login.user.as_str()),
            ("database", login.database.as_str()),
        ];
        frontend::startup_message(
            params
                .into_iter()
                .chain(login.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            &mut out,
        )?;
        self.wr.write_all(&out).await?;
        let password = || {
            login.password.as_deref().ok_or_else(|| {
                ServerError::Auth(format!(
                    "server asks a password for user \"{}\" and none is configured",
                    login.user
                ))
            })
        };
        let known = || {
            login
                .passthrough
                .as_ref()
                .and_then(|k| k.get(&login.user))
                .unwrap_or_default()
        };
        let mut scram: Option<Sasl> = None;
        loop {
            let (tag, body) = self.next_message().await?;
            out.clear();
            match tag {
                b'R' => {
                    if body.len() < 4 {
                        return Err(ServerError::Protocol("short authentication message".into()));
                    }
                    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let data = &body[4..];
                    match code {
                        0 => {}
                        3 => frontend::password_message(password()?.as_bytes(), &mut out)?,
                        5 => {
                            let salt: [u8; 4] = data
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| ServerError::Protocol("short md5 salt".into()))?;
                            let hash = match (&login.password, known().md5) {
                                (None, Some(h)) => md5_salted(&login.user, &Secret::Md5(h), salt)
                                    .unwrap_or_default(),
                                _ => postgres_protocol::authentication::md5_hash(
                                    login.user.as_bytes(),
                                    password()?.as_bytes(),
                                    salt,
                                ),
                            };
                            frontend::password_message(hash.as_bytes(), &mut out)?;
                        }
                        10 => {
                            let offers = |name: &[u8]| data.split(|b| *b == 0).any(|m| m == name);
                            // Channel binding whenever the connection is TLS and the
                            // server offers it; `y` (supported, not offered) otherwise.
                            let (mechanism, binding) = match &self.end_point {
                                Some(ep) if offers(b"SCRAM-SHA-256-PLUS") => (
                                    "SCRAM-SHA-256-PLUS",
                                    ChannelBinding::tls_server_end_point(ep.clone()),
                                ),
                                Some(_) => ("SCRAM-SHA-256", ChannelBinding::unrequested()),
                                None => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
                            };
                            if !offers(mechanism.as_bytes()) {
                                return Err(ServerError::Auth(
                                    "server offers no SASL mechanism pgherald supports".into(),
                                ));
                            }
                            let client = match (&login.password, known().scram) {
                                (None, Some(keys)) => Sasl::Keys(KeyClient::new(
                                    keys,
                                    match (mechanism, &self.end_point) {
                                        ("SCRAM-SHA-256-PLUS", Some(ep)) => {
                                            Binding::EndPoint(ep.clone())
                                        }
                                        (_, Some(_)) => Binding::Unrequested,
                                        _ => Binding::Unsupported,
                                    },
                                )),
                                _ => Sasl::Password(ScramSha256::new(
                                    password()?.as_bytes(),
                                    binding,
                                )),
                            };
                            frontend::sasl_initial_response(mechanism, client.message(), &mut out)?;
                            scram = Some(client);
                        }
                        11 => {
                            let client = scram.as_mut().ok_or_else(|| {
                                ServerError::Protocol("unexpected SASL continue".into())
                            })?;
                            client.update(data)?;
                            frontend::sasl_response(client.message(), &mut out)?;
                        }
                        12 => {
                            let client = scram.as_mut().ok_or_else(|| {
                                ServerError::Protocol("unexpected SASL final".into())
                            })?;
                            client.finish(data)?;
                        }
                        other => {
                            return Err(ServerError::Auth(format!(
                                "unsupported authentication request {other}"
                            )))
                        }
                    }
                    if !out.is_empty() {
                        self.wr.write_all(&out).await?;
                    }
                }
                b'S' => {
                    if let Some((k, v)) = parse_parameter_status(&body) {
                        set_param(&mut self.params, k, v);
                    }
                }
                b'K' if body.len() >= 8 => {
                    self.cancel.pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    self.cancel.secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                b'E' => return Err(refused(&body)),
                b'Z' => return Ok(()),
                _ => {}
            }
        }
    }

    /// Read one whole message (used outside the forwarding path only: login, housekeeping).
    pub async fn next_message(&mut self) -> Result<(u8, BytesMut), ServerError> {
        loop {
            if let Some(h) =
                framer::header(&self.buf).map_err(|e| ServerError::Protocol(e.to_string()))?
            {
                if self.buf.len() >= h.total {
                    let mut msg = self.buf.split_to(h.total);
                    msg.advance(framer::HEADER_LEN);
                    return Ok((h.tag, msg));
                }
                self.buf.reserve(h.total - self.buf.len());
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(8 * 1024);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(ServerError::Closed);
            }
        }
    }

    /// Run a housekeeping query (SET, ROLLBACK, DISCARD ALL) and wait for ReadyForQuery,
    /// recording ParameterStatus changes. Returns the final transaction status, or the
    /// first error the server raised.
    pub async fn run_quiet(&mut self, sql: &str) -> Result<u8, ServerError> {
        self.query_rows(sql).await.map(|(_, status)| status)
    }

    /// Run a housekeeping query and collect its rows as text (NULL as `None`); returns the
    /// rows and the final transaction status, or the first error the server raised.
    pub async fn query_rows(&mut self, sql: &str) -> Result<(Vec<Row>, u8), ServerError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.wr.write_all(&out).await?;
        let mut failure = None;
        let mut rows = Vec::new();
        loop {
            let (tag, body) = self.next_message().await?;
            match tag {
                b'S' => {
                    if let Some((k, v)) = parse_parameter_status(&body) {
                        set_param(&mut self.params, k, v);
                    }
                }
                b'D' => rows.push(parse_data_row(&body)?),
                b'E' if failure.is_none() => failure = Some(refused(&body)),
                b'Z' => {
                    let status = body.first().copied().unwrap_or(b'I');
                    return match failure {
                        Some(e) => Err(e),
                        None => Ok((rows, status)),
                    };
                }
                _ => {}
            }
        }
    }

    /// True when the idle connection shows no sign of having been closed by the server
    /// (an idle server sends nothing unless it is terminating).
    pub fn looks_alive(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.rd.idle_open()
    }

    /// Send Terminate and drop the connection.
    pub async fn terminate(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = tokio::time::timeout(Duration::from_millis(100), self.wr.write_all(&out)).await;
    }

    /// Send Terminate and wait (up to a second) until the server closes its end: by then
    /// the backend has left pg_stat_activity and no longer counts against max_connections.
    pub async fn terminate_and_wait(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            self.wr.write_all(&out).await?;
            let mut sink = [0u8; 512];
            while self.rd.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    }
}
