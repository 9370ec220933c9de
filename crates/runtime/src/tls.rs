//! TLS and mutual TLS of every gRPC link, configured once: the server side
//! (`[server.tls]`: the listener's certificate and, for mTLS, the CA its
//! clients' certificates must chain to) and the client side (`[peers.tls]`:
//! the CA that signs the services' certificates and the client certificate
//! presented to them), used by [`crate::server::GrpcServer`] and by every
//! peer channel, the gateway's included.
//!
//! Files are read and parsed when the server or channel is built, so a
//! missing file or a bad PEM stops the process at startup with an error that
//! names the setting, rather than failing the first handshake.
//!
//! rustls runs on the `ring` crypto provider only (tonic's `tls-ring`, and
//! the provider sqlx's rustls already pulls in). [`install_crypto_provider`]
//! makes it the process default before any TLS configuration is built, so
//! rustls never has to choose between two providers (it panics when it
//! must), whatever features another dependency turns on.

use std::path::Path;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{PeerTlsSettings, ServerTlsSettings};

/// Longest a client may take to complete the TLS handshake, so a client
/// that connects and stays silent does not hold a connection slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS setting that cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The file cannot be read.
    #[error("{key}: cannot read {path:?}: {reason}")]
    Read {
        /// The setting, e.g. `server.tls.cert`.
        key: &'static str,
        /// The configured path.
        path: String,
        /// Why it cannot be read (in the message, so not also a source).
        reason: std::io::Error,
    },
    /// The file holds no PEM block of the expected kind or a malformed one.
    #[error("{key}: {path:?} {problem}")]
    BadPem {
        /// The setting.
        key: &'static str,
        /// The configured path.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// One setting of a pair is set without the other.
    #[error("{given} is set but {missing} is empty: {given} needs {missing}")]
    Incomplete {
        /// The setting that is set.
        given: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },
    /// The certificate and key cannot serve together (e.g. they do not match).
    #[error("{key}: the certificate and key cannot be used: {detail}")]
    Unusable {
        /// The setting.
        key: &'static str,
        /// rustls's reason.
        detail: String,
    },
    /// An `https://` peer address without a CA to verify the peer with.
    #[error(
        "peer {uri:?} is https:// but peers.tls.ca is empty: set it to the CA that signs the services' certificates"
    )]
    NoCa {
        /// The peer address.
        uri: String,
    },
}

/// Makes `ring` the process-wide rustls crypto provider (once; later calls
/// and a provider installed before are left as they are).
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The server's TLS configuration, or `None` to serve plaintext (no
/// certificate configured). With `client_ca` set every client must present
/// a certificate that chains to it (mutual TLS).
pub fn server_config(
    settings: &ServerTlsSettings,
) -> Result<Option<ServerTlsConfig>, TlsConfigError> {
    let Some(identity) = identity(
        ("server.tls.cert", &settings.cert),
        ("server.tls.key", &settings.key),
    )?
    else {
        if !settings.client_ca.is_empty() {
            return Err(TlsConfigError::Incomplete {
                given: "server.tls.client_ca",
                missing: "server.tls.cert",
            });
        }
        return Ok(None);
    };
    install_crypto_provider();
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if !settings.client_ca.is_empty() {
        config = config.client_ca_root(certificates("server.tls.client_ca", &settings.client_ca)?);
    }
    // Building a server with it parses the identity and checks that the key
    // matches the certificate, here rather than at the first handshake.
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|e| TlsConfigError::Unusable {
            key: "server.tls.cert",
            detail: error_chain(&e),
        })?;
    Ok(Some(config))
}

/// The client TLS configuration for the `https://` peer at `uri`: trusts
/// `peers.tls.ca` and presents `peers.tls.cert` / `peers.tls.key` when set.
pub fn client_config(
    uri: &str,
    settings: &PeerTlsSettings,
) -> Result<ClientTlsConfig, TlsConfigError> {
    if settings.ca.is_empty() {
        return Err(TlsConfigError::NoCa {
            uri: uri.to_owned(),
        });
    }
    install_crypto_provider();
    let mut config =
        ClientTlsConfig::new().ca_certificate(certificates("peers.tls.ca", &settings.ca)?);
    if let Some(identity) = identity(
        ("peers.tls.cert", &settings.cert),
        ("peers.tls.key", &settings.key),
    )? {
        config = config.identity(identity);
    }
    Ok(config)
}

/// A certificate and its key, `None` when neither is set.
fn identity(
    (cert_key, cert): (&'static str, &str),
    (key_key, key): (&'static str, &str),
) -> Result<Option<Identity>, TlsConfigError> {
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Err(TlsConfigError::Incomplete {
            given: cert_key,
            missing: key_key,
        }),
        (true, false) => Err(TlsConfigError::Incomplete {
            given: key_key,
            missing: cert_key,
        }),
        (false, false) => {
            let cert = certificates(cert_key, cert)?;
            let pem = read(key_key, key)?;
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsConfigError::BadPem {
                key: key_key,
                path: key.to_owned(),
                problem: format!("holds no usable PEM private key ({e})"),
            })?;
            Ok(Some(Identity::from_pem(cert, pem)))
        }
    }
}

/// The PEM certificates in `path`, checked to hold at least one.
fn certificates(key: &'static str, path: &str) -> Result<Certificate, TlsConfigError> {
    let (pem, _) = parsed_certificates(key, path)?;
    Ok(Certificate::from_pem(pem))
}

/// The CA certificates in the PEM file at `path` (the setting `key`) as a
/// rustls root store, for clients that are not tonic channels.
pub fn root_store(key: &'static str, path: &str) -> Result<RootCertStore, TlsConfigError> {
    let (_, certs) = parsed_certificates(key, path)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsConfigError::BadPem {
            key,
            path: path.to_owned(),
            problem: format!("holds a certificate that cannot be a root ({e})"),
        })?;
    }
    Ok(roots)
}

/// The file at `path` and the certificates in it, at least one.
fn parsed_certificates(
    key: &'static str,
    path: &str,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), TlsConfigError> {
    let pem = read(key, path)?;
    let bad = |problem: String| TlsConfigError::BadPem {
        key,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".to_owned()));
    }
    Ok((pem, certs))
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(Path::new(path)).map_err(|reason| TlsConfigError::Read {
        key,
        path: path.to_owned(),
        reason,
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An HTTP/1.1 client for `http://` and `https://` webhooks (scoring's
/// alerts, success's chat messages).
pub type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// A webhook client: `https://` trusts the CA in the PEM file `ca` (the
/// setting `key`) or, when it is empty, the public web PKI.
pub fn https_client(key: &'static str, ca: &str) -> Result<HttpsClient, TlsConfigError> {
    install_crypto_provider();
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if ca.is_empty() {
        builder.with_webpki_roots()
    } else {
        builder.with_tls_config(
            rustls::ClientConfig::builder()
                .with_root_certificates(root_store(key, ca)?)
                .with_no_client_auth(),
        )
    };
    let https = builder.https_or_http().enable_http1().build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(cert: &str, key: &str, client_ca: &str) -> ServerTlsSettings {
        ServerTlsSettings {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: client_ca.to_owned(),
        }
    }

    #[test]
    fn no_certificate_means_plaintext() -> anyhow::Result<()> {
        assert!(server_config(&ServerTlsSettings::default())?.is_none());
        Ok(())
    }

    #[test]
    fn a_missing_certificate_file_is_reported_under_its_setting() {
        let error = server_config(&server("/nonexistent/cert.pem", "/nonexistent/key.pem", ""))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with("server.tls.cert: cannot read \"/nonexistent/cert.pem\""),
            "{error}"
        );
    }

    #[test]
    fn a_file_without_a_certificate_is_reported_under_its_setting() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "this is not PEM\n")?;
        let path = path.display().to_string();
        let settings = PeerTlsSettings {
            ca: path.clone(),
            ..PeerTlsSettings::default()
        };
        let error = client_config("https://accounts:50051", &settings)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            format!("peers.tls.ca: {path:?} holds no PEM certificate")
        );
        Ok(())
    }

    #[test]
    fn a_truncated_pem_block_is_reported_under_its_setting() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("client-ca.pem");
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nMIIB\n")?;
        let path = path.display().to_string();
        let error = certificates("server.tls.client_ca", &path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with(&format!("server.tls.client_ca: {path:?} is not valid PEM")),
            "{error}"
        );
        Ok(())
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let error = server_config(&server("cert.pem", "", ""))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            "server.tls.cert is set but server.tls.key is empty: server.tls.cert needs server.tls.key"
        );
    }

    #[test]
    fn a_client_ca_without_a_server_certificate_is_refused() {
        let error = server_config(&server("", "", "ca.pem"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            "server.tls.client_ca is set but server.tls.cert is empty: server.tls.client_ca needs server.tls.cert"
        );
    }

    #[test]
    fn an_https_peer_needs_a_ca() {
        let error = client_config("https://accounts:50051", &PeerTlsSettings::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with(
                "peer \"https://accounts:50051\" is https:// but peers.tls.ca is empty"
            ),
            "{error}"
        );
    }
}
