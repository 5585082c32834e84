//! Certificates made inside the tests (rcgen): a CA, leaf certificates signed by it (or
//! expired, or for other names), written as PEM files; and turning TLS on in a test
//! PostgreSQL with its own certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::os::{path_str, running_as_root, server_user_ids, sql_literal};
use super::postgres::{TestPostgres, SUPERUSER};

/// A certificate authority that signs test certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// Its certificate as PEM, in a file.
    pub pem_file: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Leaf {
    /// Certificate (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM).
    pub key_file: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem_file = dir.join(format!("{name}.crt"));
        std::fs::write(&pem_file, cert.pem()).unwrap();
        Ca {
            cert,
            key,
            pem_file,
            dir: dir.to_path_buf(),
        }
    }

    /// A leaf certificate with common name `cn` and these subject alternative names
    /// (DNS names or IP addresses); `expired` dates it in the past.
    pub fn issue(&self, file: &str, cn: &str, sans: &[&str], expired: bool) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let cert_file = self.dir.join(format!("{file}.crt"));
        let key_file = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        set_mode(&key_file, 0o600);
        Leaf {
            cert_file,
            key_file,
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Turn `ssl = on` in a running test server with this certificate (copied into its data
/// directory, owned by the server user), and reload. Plaintext connections keep working.
pub async fn enable_postgres_tls(pg: &TestPostgres, leaf: &Leaf) {
    let cert = pg.data_dir.join("server.crt");
    let key = pg.data_dir.join("server.key");
    std::fs::copy(&leaf.cert_file, &cert).unwrap();
    std::fs::copy(&leaf.key_file, &key).unwrap();
    set_mode(&key, 0o600);
    if running_as_root() {
        let (uid, gid) = server_user_ids().unwrap();
        for f in [&cert, &key] {
            std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
        }
    }
    let c = pg.connect(SUPERUSER, None, "postgres").await;
    for sql in [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = {}",
            sql_literal(path_str(&cert).unwrap())
        ),
        format!(
            "ALTER SYSTEM SET ssl_key_file = {}",
            sql_literal(path_str(&key).unwrap())
        ),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        c.simple_query(&sql).await.unwrap();
    }
    // The reload is asynchronous: wait until a new backend sees ssl on.
    for _ in 0..200 {
        let c = pg.connect(SUPERUSER, None, "postgres").await;
        let row = c.query_one("SHOW ssl", &[]).await.unwrap();
        if row.get::<_, String>(0) == "on" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!(
        "the test server did not turn ssl on:\n{}",
        pg.log_contents()
    );
}

/// A rustls client config trusting `ca` (for tokio-postgres-rustls and raw TLS clients).
pub fn client_config(ca: &Path, alpn: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    if alpn {
        cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    Arc::new(cfg)
}
