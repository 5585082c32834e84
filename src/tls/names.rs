//! PgBouncer's TLS setting values (sslmode, protocols, ciphers) and what rustls makes of
//! them. Pure parsing, no I/O; the config validation calls it so that a value rustls cannot
//! honour fails with one line naming the key.

use rustls::SupportedCipherSuite;
use serde::{Deserialize, Serialize};

/// `client_tls_sslmode` / `server_tls_sslmode` values, as PgBouncer and libpq name them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP only.
    #[default]
    Disable,
    /// TLS when the other side asks (client side) or insists (server side).
    Allow,
    /// TLS when possible, plain otherwise; certificates are not checked.
    Prefer,
    /// TLS or nothing; certificates are not checked.
    Require,
    /// TLS with a certificate that chains to the configured CA.
    VerifyCa,
    /// As verify-ca, and the server certificate must name the host.
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "unknown sslmode `{other}` (expected disable, allow, prefer, require, verify-ca or verify-full)"
                ))
            }
        })
    }
}

impl SslMode {
    /// The setting's spelling.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// True for verify-ca and verify-full.
    pub fn verifies(self) -> bool {
        self >= SslMode::VerifyCa
    }
}

/// The rustls protocol versions a `*_tls_protocols` value asks for. PgBouncer's syntax:
/// a comma- or colon-separated list of `tlsv1.2`, `tlsv1.3`, or the shortcuts `secure`
/// and `all` (both mean TLS 1.2 and 1.3 here: rustls has no TLS 1.0/1.1).
pub fn protocols(value: &str) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let mut v12 = false;
    let mut v13 = false;
    for word in value.split([',', ':', ' ']).filter(|w| !w.is_empty()) {
        match word.to_ascii_lowercase().as_str() {
            "secure" | "all" | "default" => {
                v12 = true;
                v13 = true;
            }
            "tlsv1.2" => v12 = true,
            "tlsv1.3" => v13 = true,
            "tlsv1.0" | "tlsv1.1" | "legacy" => {
                return Err(format!(
                    "`{word}` is not supported: rustls speaks only tlsv1.2 and tlsv1.3"
                ))
            }
            _ => {
                return Err(format!(
                    "unknown protocol `{word}` (expected tlsv1.2, tlsv1.3, secure or all)"
                ))
            }
        }
    }
    let mut out = Vec::new();
    if v13 {
        out.push(&rustls::version::TLS13);
    }
    if v12 {
        out.push(&rustls::version::TLS12);
    }
    if out.is_empty() {
        return Err("names no protocol".into());
    }
    Ok(out)
}

/// OpenSSL names of the suites rustls (ring provider) implements, with the suite.
fn suite_names() -> Vec<(&'static str, SupportedCipherSuite)> {
    use rustls::crypto::ring::cipher_suite as c;
    vec![
        ("TLS_AES_256_GCM_SHA384", c::TLS13_AES_256_GCM_SHA384),
        ("TLS_AES_128_GCM_SHA256", c::TLS13_AES_128_GCM_SHA256),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            c::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            c::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            c::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            c::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            c::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            c::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            c::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

/// The cipher suites a `*_tls_ciphers` value allows. PgBouncer's shortcuts `default`,
/// `secure`, `fast`, `normal` and `all` mean every suite rustls implements (all of them
/// AEAD with forward secrecy). Otherwise a colon-separated list of OpenSSL suite names;
/// as in PgBouncer it restricts TLS 1.2, and TLS 1.3's suites stay available. OpenSSL
/// cipher expressions (`HIGH:!aNULL`) are not understood and fail.
pub fn ciphers(value: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    let all = suite_names();
    let shortcut = matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "default" | "secure" | "fast" | "normal" | "all" | ""
    );
    if shortcut {
        return Ok(all.into_iter().map(|(_, s)| s).collect());
    }
    let mut out: Vec<SupportedCipherSuite> = all
        .iter()
        .filter(|(n, _)| n.starts_with("TLS_"))
        .map(|(_, s)| *s)
        .collect();
    for word in value.split([':', ',', ' ']).filter(|w| !w.is_empty()) {
        match all.iter().find(|(n, _)| n.eq_ignore_ascii_case(word)) {
            Some((n, s)) if !n.starts_with("TLS_") => out.push(*s),
            Some(_) => {}
            None => {
                return Err(format!(
                    "cipher `{word}` is not one rustls implements (use default, or names from: {})",
                    all.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(":")
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbouncer_values() {
        assert_eq!(protocols("secure").unwrap().len(), 2);
        assert_eq!(protocols("tlsv1.3").unwrap().len(), 1);
        assert!(protocols("tlsv1.1").unwrap_err().contains("tlsv1.1"));
        assert_eq!(ciphers("fast").unwrap().len(), 9);
        assert_eq!(ciphers("ECDHE-RSA-AES128-GCM-SHA256").unwrap().len(), 4);
        assert!(ciphers("HIGH:!aNULL").unwrap_err().contains("HIGH"));
        assert_eq!(
            "verify-full".parse::<SslMode>().unwrap(),
            SslMode::VerifyFull
        );
        assert!(SslMode::VerifyCa.verifies() && !SslMode::Require.verifies());
    }
}
