//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` in `database.url` ask for it
//! (<https://www.postgresql.org/docs/current/libpq-ssl.html>, table "SSL Mode Descriptions"):
//!
//! - `disable`: plain TCP.
//! - `prefer` (the default) and `require`: encrypted (`prefer` falls back to plain TCP when the
//!   server has no TLS), the server's certificate not checked, unless `sslrootcert` names a CA,
//!   which then must have signed it (libpq's rule for `require` with a root certificate).
//! - `verify-ca`: signed by the `sslrootcert` CA. `verify-full`: that, and issued for the host
//!   in the URL. Both need `sslrootcert`, a PEM file of the CAs to trust.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`; the two verifying modes and
//! `sslrootcert` are taken off the URL here and become the rustls configuration that
//! `tokio-postgres-rustls` connects with.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Why a database URL's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid database URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("sslmode `{0}` is not one of disable, prefer, require, verify-ca, verify-full")]
    Mode(String),
    #[error("sslmode={0} needs sslrootcert: the PEM file of the CAs to trust")]
    NoRootCert(&'static str),
    #[error("cannot read the CAs in sslrootcert: {0}")]
    RootCert(String),
    #[error("cannot configure TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How far the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Issuer,
    IssuerAndHost,
}

/// A database URL taken apart: tokio-postgres' configuration, and the TLS it connects with.
pub struct Connection {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

/// Parses `url` (`postgres://…?sslmode=verify-full&sslrootcert=/etc/bankgate/db-ca.pem`, or
/// the `key=value` form) into the configuration and the TLS to connect with.
pub fn connection(url: &str) -> Result<Connection, TlsError> {
    let (rest, mode, root_cert) = take_tls_parameters(url);
    let mut config: tokio_postgres::Config = rest.parse().map_err(TlsError::Url)?;
    // With a CA named, `prefer` and `require` check the issuer as libpq does.
    let unless_named = if root_cert.is_some() {
        Check::Issuer
    } else {
        Check::Nothing
    };
    let (ssl_mode, check) = match mode.as_deref() {
        None | Some("prefer") => (SslMode::Prefer, unless_named),
        Some("disable") => (SslMode::Disable, Check::Nothing),
        Some("require") => (SslMode::Require, unless_named),
        Some("verify-ca") => (SslMode::Require, Check::Issuer),
        Some("verify-full") => (SslMode::Require, Check::IssuerAndHost),
        Some(other) => return Err(TlsError::Mode(other.to_owned())),
    };
    config.ssl_mode(ssl_mode);
    let check = match (check, &root_cert) {
        (Check::Issuer, None) => return Err(TlsError::NoRootCert("verify-ca")),
        (Check::IssuerAndHost, None) => return Err(TlsError::NoRootCert("verify-full")),
        (check, _) => check,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let algorithms = provider.signature_verification_algorithms;
    let issuer = match root_cert {
        Some(path) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(trusted(&path)?), provider)
                .build()
                .map_err(|e| TlsError::RootCert(e.to_string()))?,
        ),
        None => None,
    };
    let tls = match (check, issuer) {
        (Check::IssuerAndHost, Some(verifier)) => builder.with_webpki_verifier(verifier),
        (_, issuer) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Lenient { issuer, algorithms })),
    }
    .with_no_client_auth();
    Ok(Connection {
        config,
        tls: MakeRustlsConnect::new(tls),
    })
}

/// The `sslmode` of `url` when it is below `verify-full` and the URL names a server beyond
/// this machine (a TCP host other than loopback): a connection whose server may be anyone
/// on the path. `None` when the server's name is checked, or when every server is on this
/// machine (a Unix socket, loopback), where TLS adds nothing.
pub fn unverified_remote(url: &str) -> Option<String> {
    let (rest, mode, _) = take_tls_parameters(url);
    if mode.as_deref() == Some("verify-full") {
        return None;
    }
    let config: tokio_postgres::Config = rest.parse().ok()?;
    let remote = config.get_hosts().iter().any(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => !crate::settings::is_loopback_host(name),
        tokio_postgres::config::Host::Unix(_) => false,
    });
    remote.then(|| mode.unwrap_or_else(|| "prefer".to_owned()))
}

/// The CAs in the PEM file at `path`.
fn trusted(path: &std::path::Path) -> Result<RootCertStore, TlsError> {
    let unreadable =
        |e: &dyn std::fmt::Display| TlsError::RootCert(format!("{}: {e}", path.display()));
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        let certificate = certificate.map_err(|e| unreadable(&e))?;
        roots.add(certificate).map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"no certificate in the file"));
    }
    Ok(roots)
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query (or a `key=value` string): returns
/// the rest, and the two values.
fn take_tls_parameters(url: &str) -> (String, Option<String>, Option<PathBuf>) {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_owned());
            true
        }
        "sslrootcert" => {
            root_cert = Some(PathBuf::from(value));
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                        !take(key, &value)
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        url.split_whitespace()
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take(key.trim(), value.trim().trim_matches('\''))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root_cert)
}

/// The two modes that check less than `verify-full`, as libpq's do: with `issuer`
/// (`verify-ca`, or `require` with a CA named) the chain must lead to a trusted CA but the name
/// it was issued for is not checked; without one (`prefer`, `require`) the connection is
/// encrypted and the certificate unchecked. The handshake's signatures are verified either way.
#[derive(Debug)]
struct Lenient {
    issuer: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(issuer) = &self.issuer else {
            return Ok(ServerCertVerified::assertion());
        };
        match issuer.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_beyond_this_machine_without_verify_full_is_named() {
        let remote = |url: &str| unverified_remote(url);
        assert_eq!(
            remote("postgres://u@db.internal/x").as_deref(),
            Some("prefer")
        );
        assert_eq!(
            remote("postgres://u@db.internal/x?sslmode=verify-ca&sslrootcert=/ca.pem").as_deref(),
            Some("verify-ca")
        );
        assert_eq!(
            remote("host=10.0.0.5 user=u sslmode=require").as_deref(),
            Some("require")
        );
        assert_eq!(
            remote("postgres://u@db.internal/x?sslmode=verify-full"),
            None
        );
        assert_eq!(
            remote("postgres://u@127.0.0.1:5432/x?sslmode=disable"),
            None
        );
        assert_eq!(remote("postgres://u@localhost/x"), None);
        assert_eq!(remote("host=/var/run/postgresql user=u"), None);
    }

    #[test]
    fn the_tls_parameters_come_off_the_url_and_the_rest_stays() {
        let (rest, mode, root) = take_tls_parameters(
            "postgres://u@db:5432/bankgate?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u@db:5432/bankgate?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, mode, _) = take_tls_parameters("host=db user=u sslmode=require");
        assert_eq!(rest, "host=db user=u");
        assert_eq!(mode.as_deref(), Some("require"));
        let (rest, mode, root) = take_tls_parameters("postgres://u@db/x");
        assert_eq!(
            (rest.as_str(), mode, root),
            ("postgres://u@db/x", None, None)
        );
    }

    #[test]
    fn verifying_modes_need_a_ca_and_unknown_modes_are_refused() {
        let refused = |url: &str| connection(url).err().map(|e| e.to_string());
        assert!(
            refused("postgres://u@db/x?sslmode=verify-full")
                .unwrap()
                .contains("sslrootcert")
        );
        assert!(
            refused("postgres://u@db/x?sslmode=verify-ca")
                .unwrap()
                .contains("sslrootcert")
        );
        assert!(
            refused("postgres://u@db/x?sslmode=allow-all")
                .unwrap()
                .contains("allow-all")
        );
        assert!(
            refused("postgres://u@db/x?sslmode=verify-full&sslrootcert=/nonexistent.pem")
                .unwrap()
                .contains("/nonexistent.pem")
        );
        for mode in ["disable", "prefer", "require"] {
            assert!(connection(&format!("postgres://u@db/x?sslmode={mode}")).is_ok());
        }
    }
}
