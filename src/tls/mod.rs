//! TLS on both sides, with rustls (ring provider): the client-facing acceptor and the
//! server-facing connector, each built once from the settings into an `Arc`'d rustls config
//! (so a reload can build new ones and swap them), and the stream type both sides use.
//!
//! Certificates and keys are read here and nowhere else.

pub mod names;
pub mod stream;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use names::SslMode;
pub use stream::{NetRead, NetWrite};

/// The ALPN protocol name Postgres 17 uses (and requires with direct TLS).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// A TLS setting that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for `{key}`: {problem}")]
pub struct TlsError {
    /// The key at fault.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

fn bad(key: &str, problem: impl Into<String>) -> TlsError {
    TlsError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// The files and values of one side's TLS settings, with the key names they came from
/// (so errors can name them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    /// Key prefix for messages: `client_tls` or `server_tls` (or `databases.X.server_tls`).
    pub prefix: String,
    /// sslmode.
    pub mode: SslMode,
    /// CA file.
    pub ca_file: Option<PathBuf>,
    /// Certificate file.
    pub cert_file: Option<PathBuf>,
    /// Private key file.
    pub key_file: Option<PathBuf>,
    /// Protocol list (PgBouncer syntax).
    pub protocols: String,
    /// Cipher list (PgBouncer syntax).
    pub ciphers: String,
}

impl TlsFiles {
    /// Check the values without reading files: protocols, ciphers, and the files the
    /// mode needs.
    pub fn check(&self) -> Result<(), TlsError> {
        self.versions()?;
        self.provider()?;
        if self.mode == SslMode::Disable {
            return Ok(());
        }
        if self.prefix == "client_tls" && (self.cert_file.is_none() || self.key_file.is_none()) {
            return Err(bad(
                "client_tls_sslmode",
                "needs client_tls_cert_file and client_tls_key_file",
            ));
        }
        if self.mode.verifies() && self.ca_file.is_none() {
            return Err(bad(
                &self.key("ca_file"),
                format!("must be set for sslmode {}", self.mode.name()),
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(bad(
                &self.key("key_file"),
                "cert_file and key_file go together",
            ));
        }
        Ok(())
    }

    fn key(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    fn provider(&self) -> Result<Arc<rustls::crypto::CryptoProvider>, TlsError> {
        let suites = names::ciphers(&self.ciphers).map_err(|e| bad(&self.key("ciphers"), e))?;
        Ok(Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: suites,
            ..rustls::crypto::ring::default_provider()
        }))
    }

    fn versions(&self) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
        names::protocols(&self.protocols).map_err(|e| bad(&self.key("protocols"), e))
    }

    fn certs(&self, name: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let data = std::fs::read(path).map_err(|e| {
            bad(
                &self.key(name),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&self.key(name), format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(bad(
                &self.key(name),
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        Ok(certs)
    }

    fn private_key(&self, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
        let data = std::fs::read(path).map_err(|e| {
            bad(
                &self.key("key_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        rustls_pemfile::private_key(&mut data.as_slice())
            .map_err(|e| bad(&self.key("key_file"), format!("{}: {e}", path.display())))?
            .ok_or_else(|| {
                bad(
                    &self.key("key_file"),
                    format!("{} holds no PEM private key", path.display()),
                )
            })
    }

    fn roots(&self) -> Result<Option<rustls::RootCertStore>, TlsError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in self.certs("ca_file", path)? {
            roots
                .add(cert)
                .map_err(|e| bad(&self.key("ca_file"), format!("{}: {e}", path.display())))?;
        }
        Ok(Some(roots))
    }

    /// The certificate and key pair, when both are set (one alone is an error).
    fn identity(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
        match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Ok(Some((self.certs("cert_file", c)?, self.private_key(k)?))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(bad(&self.key("key_file"), "must be set with cert_file")),
            (None, Some(_)) => Err(bad(&self.key("cert_file"), "must be set with key_file")),
        }
    }
}

/// Client-facing TLS: the sslmode and, unless it is `disable`, the acceptor.
#[derive(Clone)]
pub struct ClientTls {
    /// client_tls_sslmode.
    pub mode: SslMode,
    /// The acceptor (None with `disable`).
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// Channel binding data of pgherald's certificate (SCRAM-SHA-256-PLUS).
    pub end_point: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("mode", &self.mode)
            .finish()
    }
}

impl ClientTls {
    /// Plain TCP only.
    pub fn disabled() -> ClientTls {
        ClientTls {
            mode: SslMode::Disable,
            acceptor: None,
            end_point: None,
        }
    }

    /// Load the certificate, key and CA and build the acceptor.
    pub fn build(files: &TlsFiles) -> Result<ClientTls, TlsError> {
        if files.mode == SslMode::Disable {
            return Ok(ClientTls::disabled());
        }
        let Some((certs, key)) = files.identity()? else {
            return Err(bad(
                &files.key("sslmode"),
                "needs client_tls_cert_file and client_tls_key_file",
            ));
        };
        let end_point = certs.first().map(server_end_point);
        let provider = files.provider()?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&files.versions()?)
            .map_err(|e| bad(&files.key("protocols"), e.to_string()))?;
        let builder = if files.mode.verifies() {
            let roots = files.roots()?.ok_or_else(|| {
                bad(
                    &files.key("ca_file"),
                    "client_tls_sslmode verify-ca/verify-full needs a CA file to check client certificates",
                )
            })?;
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| bad(&files.key("ca_file"), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad(&files.key("key_file"), e.to_string()))?;
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(ClientTls {
            mode: files.mode,
            end_point,
            acceptor: Some(Arc::new(config).into()),
        })
    }
}

/// Server-facing TLS for one target: the sslmode and, unless it is `disable`, the
/// connector with the verification the mode asks for.
#[derive(Clone)]
pub struct ServerTls {
    /// server_tls_sslmode.
    pub mode: SslMode,
    /// The connector (None with `disable`).
    pub connector: Option<tokio_rustls::TlsConnector>,
    /// The settings it was built from: two connectors are the same when these are (a reload
    /// that keeps them does not make pools log in again).
    files: TlsFiles,
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &ServerTls) -> bool {
        self.files == other.files
    }
}

impl Eq for ServerTls {}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .finish()
    }
}

impl ServerTls {
    /// Plain TCP only.
    pub fn disabled() -> ServerTls {
        ServerTls {
            mode: SslMode::Disable,
            connector: None,
            files: TlsFiles::default(),
        }
    }

    /// Load the CA, certificate and key and build the connector.
    pub fn build(files: &TlsFiles) -> Result<ServerTls, TlsError> {
        if files.mode == SslMode::Disable {
            return Ok(ServerTls::disabled());
        }
        let provider = files.provider()?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&files.versions()?)
            .map_err(|e| bad(&files.key("protocols"), e.to_string()))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if files.mode.verifies()
        {
            let roots = files.roots()?.ok_or_else(|| {
                bad(
                    &files.key("ca_file"),
                    format!("must be set for sslmode {}", files.mode.name()),
                )
            })?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots.into(),
                provider.clone(),
            )
            .build()
            .map_err(|e| bad(&files.key("ca_file"), e.to_string()))?;
            Arc::new(verify::ServerVerifier {
                webpki: Some(webpki),
                check_name: files.mode == SslMode::VerifyFull,
                provider,
            })
        } else {
            Arc::new(verify::ServerVerifier {
                webpki: None,
                check_name: false,
                provider,
            })
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match files.identity()? {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad(&files.key("key_file"), e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(ServerTls {
            mode: files.mode,
            connector: Some(Arc::new(config).into()),
            files: files.clone(),
        })
    }

    /// Ask the server for TLS (SSLRequest) and, if it agrees, shake hands. Returns the
    /// stream to use: encrypted, or the plain one when the server said `N` and the mode
    /// allows plain. The caller bounds this with server_connect_timeout.
    pub async fn negotiate(
        &self,
        mut stream: TcpStream,
        host: &str,
    ) -> Result<Negotiated, ServerTlsError> {
        let plain = |stream| {
            let (rd, wr) = stream::plain(stream);
            Ok(Negotiated {
                rd,
                wr,
                end_point: None,
            })
        };
        let Some(connector) = &self.connector else {
            return plain(stream);
        };
        if self.mode == SslMode::Allow {
            // libpq's allow tries plain first; PgBouncer never asks. Plain it is.
            return plain(stream);
        }
        let mut req = [0u8; 8];
        req[..4].copy_from_slice(&8u32.to_be_bytes());
        req[4..].copy_from_slice(&80877103u32.to_be_bytes());
        stream.write_all(&req).await?;
        match stream.read_u8().await? {
            b'S' => {}
            b'N' if self.mode <= SslMode::Prefer => return plain(stream),
            b'N' => return Err(ServerTlsError::Refused),
            b'E' => {
                return Err(ServerTlsError::Handshake(
                    "server answered SSLRequest with an error".into(),
                ))
            }
            other => {
                return Err(ServerTlsError::Handshake(format!(
                    "unexpected answer 0x{other:02x} to SSLRequest"
                )))
            }
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| ServerTlsError::Handshake(format!("host name `{host}`: {e}")))?;
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| ServerTlsError::Handshake(e.to_string()))?;
        let end_point = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(server_end_point);
        let (rd, wr) = stream::tls(tokio_rustls::TlsStream::Client(tls));
        Ok(Negotiated { rd, wr, end_point })
    }
}

/// A server connection after the TLS negotiation.
#[derive(Debug)]
pub struct Negotiated {
    /// Read half.
    pub rd: NetRead,
    /// Write half.
    pub wr: NetWrite,
    /// With TLS: the server certificate's `tls-server-end-point` binding data.
    pub end_point: Option<Vec<u8>>,
}

/// Server connectors by settings, built on first use (a pool's first login) and shared.
#[derive(Debug, Default)]
pub struct ServerTlsCache(std::sync::Mutex<std::collections::HashMap<TlsFiles, ServerTls>>);

impl ServerTlsCache {
    /// The connector for these settings, loading the files the first time.
    pub fn get(&self, files: &TlsFiles) -> Result<ServerTls, TlsError> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(files) {
            return Ok(t.clone());
        }
        let t = ServerTls::build(files)?;
        map.insert(files.clone(), t.clone());
        Ok(t)
    }
}

/// Why TLS to a server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server answered `N` and the mode requires TLS (PgBouncer's text).
    #[error("server refused SSL")]
    Refused,
    /// The handshake or the certificate check failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

/// The client's certificate's subject common name, for `auth_type = cert`.
pub fn peer_common_name(cert: &CertificateDer<'_>) -> Option<String> {
    verify::common_name(cert.as_ref())
}

/// The `tls-server-end-point` channel binding data of a certificate (RFC 5929): its hash
/// with the signature's hash function, SHA-256 for MD5/SHA-1 signatures.
pub fn server_end_point(cert: &CertificateDer<'_>) -> Vec<u8> {
    verify::end_point_hash(cert.as_ref())
}
