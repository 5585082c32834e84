//! The login phase of a client: TLS (SSLRequest or Postgres 17's direct TLS) or its
//! refusal, GSSENC refusal, CancelRequest, protocol version negotiation, and the
//! StartupMessage's user, database and settings. The TLS handshake happens here, so
//! whatever bounds the login phase bounds the handshake too.

use crate::backend::conn::Params;
use crate::error::ClientError;
use crate::frontend::client::ClientIo;
use crate::frontend::params;
use crate::protocol::reply;
use crate::protocol::startup::{self, StartupPacket};
use crate::tls::{self, SslMode};
use crate::App;

/// The first byte of a TLS handshake record (Postgres 17's `sslnegotiation=direct`).
const TLS_HANDSHAKE: u8 = 0x16;

/// What a StartupMessage asked for.
#[derive(Debug)]
pub struct Startup {
    /// Role name.
    pub user: String,
    /// Database name as the client gave it (defaults to the user name).
    pub database: String,
    /// Settings the client asked for in its startup packet, in order.
    pub settings: Params,
}

/// Run the untagged startup exchange. `Ok(None)` means the connection was a
/// CancelRequest (handled) and is finished.
pub async fn startup(client: &mut ClientIo, app: &App) -> Result<Option<Startup>, ClientError> {
    use tokio::io::AsyncWriteExt;
    let snap = app.live.get();
    let client_tls = &snap.client_tls;
    let acceptor = client_tls.acceptor.as_ref();
    if let (Some(acceptor), tls::NetRead::Plain(rd)) = (acceptor, &mut client.rd) {
        let mut first = [0u8; 1];
        if rd.peek(&mut first).await? == 0 {
            return Err(ClientError::Closed);
        }
        if first[0] == TLS_HANDSHAKE {
            handshake(client, client_tls, acceptor, true).await?;
        }
    }
    loop {
        match startup::read(&mut client.rd).await? {
            StartupPacket::Ssl if client.is_tls() => {
                return Err(ClientError::Protocol("SSL request inside SSL".into()))
            }
            StartupPacket::Ssl if acceptor.is_some() => {
                client.wr.write_all(b"S").await?;
                if let Some(acceptor) = acceptor {
                    handshake(client, client_tls, acceptor, false).await?;
                }
            }
            StartupPacket::Ssl | StartupPacket::GssEnc => {
                client.wr.write_all(b"N").await?;
            }
            StartupPacket::Cancel { pid, secret } => {
                match &app.backplane {
                    // Another instance's client: the instance that has it cancels.
                    Some(bp) if !app.cancels.owns(pid) => bp.forward_cancel(pid, secret),
                    _ => app.cancels.cancel(pid, secret).await,
                }
                return Ok(None);
            }
            StartupPacket::Unsupported { major, minor } => {
                let msg = format!(
                    "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
                );
                client.fatal("0A000", &msg).await;
                return Err(ClientError::Protocol(msg));
            }
            StartupPacket::Startup { .. }
                if client_tls.mode >= SslMode::Require && !client.is_tls() =>
            {
                // PgBouncer's answer to a plaintext startup when TLS is required.
                client.fatal("08P01", "SSL required").await;
                return Err(ClientError::Protocol("SSL required".into()));
            }
            StartupPacket::Startup { minor, params } => {
                let mut start = accept(client, minor, params).await?;
                pgbouncer_settings(&app.live.get().config, &mut start.settings, client.peer);
                return Ok(Some(start));
            }
        }
    }
}

/// PgBouncer's startup-parameter settings: `ignore_startup_parameters` drops the listed
/// parameters, `application_name_add_host` appends ` - HOST:PORT` to application_name
/// (`app` when the client gave none).
fn pgbouncer_settings(
    config: &crate::config::Config,
    settings: &mut Params,
    peer: Option<std::net::SocketAddr>,
) {
    let ignored: Vec<&str> = config
        .ignore_startup_parameters
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !ignored.is_empty() {
        settings.retain(|(k, _)| !ignored.iter().any(|i| i.eq_ignore_ascii_case(k)));
    }
    if let (true, Some(peer)) = (config.application_name_add_host, peer) {
        let app = crate::backend::conn::get_param(settings, "application_name").unwrap_or("app");
        let named = format!("{app} - {peer}");
        crate::backend::conn::set_param(settings, "application_name", &named);
    }
}

/// Shake hands on the client's socket and switch the session to the encrypted stream.
/// A failed handshake (bad certificate, garbage instead of a ClientHello) ends this
/// connection only.
async fn handshake(
    client: &mut ClientIo,
    settings: &tls::ClientTls,
    acceptor: &tokio_rustls::TlsAcceptor,
    direct: bool,
) -> Result<(), ClientError> {
    let tcp = client
        .take_plain()
        .ok_or_else(|| ClientError::Protocol("SSL request inside SSL".into()))?;
    let tls = acceptor.accept(tcp).await.map_err(|e| {
        tracing::info!("client TLS handshake failed: {e}");
        ClientError::Tls(e.to_string())
    })?;
    let conn = tls.get_ref().1;
    if direct && conn.alpn_protocol() != Some(tls::ALPN_POSTGRESQL) {
        // As Postgres: direct TLS without ALPN "postgresql" is refused.
        tracing::info!("direct TLS client did not negotiate ALPN \"postgresql\"");
        return Err(ClientError::Tls(
            "direct TLS without ALPN postgresql".into(),
        ));
    }
    client.cert_cn = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(tls::peer_common_name);
    client.end_point = settings.end_point.clone();
    client.set_tls(tokio_rustls::TlsStream::Server(tls));
    Ok(())
}

async fn accept(
    client: &mut ClientIo,
    minor: u16,
    params: Vec<(String, String)>,
) -> Result<Startup, ClientError> {
    if minor > 0 {
        let unsupported = params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect();
        reply::negotiate_protocol_version(&mut client.out, unsupported);
    }
    let mut user = None;
    let mut database = None;
    let mut settings = Params::new();
    for (k, v) in params {
        match k.as_str() {
            "user" => user = Some(v),
            "database" => database = Some(v),
            k if params::is_setting(k) => settings.push((params::canonical(k).to_string(), v)),
            _ => {}
        }
    }
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        let msg = "no PostgreSQL user name specified in startup packet";
        client.fatal("28000", msg).await;
        return Err(ClientError::Protocol(msg.into()));
    };
    let database = database
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    Ok(Startup {
        user,
        database,
        settings,
    })
}
