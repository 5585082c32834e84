//! The login phase of a client: SSL/GSSENC refusal, CancelRequest, protocol version
//! negotiation, and the StartupMessage's user, database and settings.

use crate::backend::conn::Params;
use crate::error::ClientError;
use crate::frontend::client::ClientIo;
use crate::frontend::params;
use crate::protocol::reply;
use crate::protocol::startup::{self, StartupPacket};
use crate::App;

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
    loop {
        match startup::read(&mut client.rd).await? {
            StartupPacket::Ssl | StartupPacket::GssEnc => {
                use tokio::io::AsyncWriteExt;
                client.wr.write_all(b"N").await?;
            }
            StartupPacket::Cancel { pid, secret } => {
                app.cancels.cancel(pid, secret).await;
                return Ok(None);
            }
            StartupPacket::Unsupported { major, minor } => {
                let msg = format!(
                    "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
                );
                client.fatal("0A000", &msg).await;
                return Err(ClientError::Protocol(msg));
            }
            StartupPacket::Startup { minor, params } => {
                return Ok(Some(accept(client, minor, params).await?))
            }
        }
    }
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
