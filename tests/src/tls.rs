//! Test certificates, made fresh by each test with rcgen (nothing is checked
//! in): a CA that signs the services' certificate (valid for `localhost` and
//! `127.0.0.1`) and a client certificate, and a second, unrelated CA with a
//! client certificate of its own, the credentials of a stranger. The PEM
//! files live in a temporary directory removed with the [`Pki`].

use std::path::{Path, PathBuf};

use bowtie_runtime::config::{PeerTlsSettings, ServerTlsSettings, Settings};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A client certificate and its key, as file paths.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// The certificates of one test.
#[derive(Debug)]
pub struct Pki {
    _dir: tempfile::TempDir,
    /// The CA every service and trusted client certificate chains to.
    pub ca: PathBuf,
    /// The services' certificate, signed by `ca`.
    pub server: ClientCert,
    /// A client certificate signed by `ca`.
    pub client: ClientCert,
    /// Another CA, trusted by nobody.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`.
    pub stranger: ClientCert,
}

impl Pki {
    /// Makes both CAs and their certificates.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("bowtie-pki-").tempdir()?;
        let path = |name: &str| dir.path().join(name);
        let ca = authority("Bowtie test CA")?;
        write(&path("ca.pem"), &ca.pem())?;
        let server = leaf(
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            dir.path(),
            "server",
        )?;
        let client = leaf(
            &ca,
            &["gateway"],
            ExtendedKeyUsagePurpose::ClientAuth,
            dir.path(),
            "client",
        )?;
        let other = authority("Some other CA")?;
        write(&path("other-ca.pem"), &other.pem())?;
        let stranger = leaf(
            &other,
            &["stranger"],
            ExtendedKeyUsagePurpose::ClientAuth,
            dir.path(),
            "stranger",
        )?;
        Ok(Self {
            ca: path("ca.pem"),
            other_ca: path("other-ca.pem"),
            server,
            client,
            stranger,
            _dir: dir,
        })
    }

    /// Server settings: TLS with the services' certificate, and mutual TLS
    /// (clients must present a certificate signed by `ca`) when `mutual`.
    pub fn server_tls(&self, mutual: bool) -> ServerTlsSettings {
        ServerTlsSettings {
            cert: text(&self.server.cert),
            key: text(&self.server.key),
            client_ca: if mutual {
                text(&self.ca)
            } else {
                String::new()
            },
        }
    }

    /// Peer settings trusting `ca`, presenting `client` when given.
    pub fn peer_tls(&self, client: Option<&ClientCert>) -> PeerTlsSettings {
        PeerTlsSettings {
            ca: text(&self.ca),
            cert: client.map(|c| text(&c.cert)).unwrap_or_default(),
            key: client.map(|c| text(&c.key)).unwrap_or_default(),
        }
    }

    /// Turns on TLS without client certificates in `settings`: every
    /// service serves it and every caller trusts [`Pki::ca`].
    pub fn one_way(&self, settings: &mut Settings) {
        settings.server.tls = self.server_tls(false);
        settings.peers.tls = self.peer_tls(None);
    }

    /// Turns on mutual TLS in `settings`: every service serves it and every
    /// caller presents [`Pki::client`].
    pub fn mutual(&self, settings: &mut Settings) {
        settings.server.tls = self.server_tls(true);
        settings.peers.tls = self.peer_tls(Some(&self.client));
    }
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

fn write(path: &Path, pem: &str) -> anyhow::Result<()> {
    std::fs::write(path, pem)?;
    Ok(())
}

/// A self-signed CA called `name`.
fn authority(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// A certificate for `names` signed by `issuer`, written as
/// `<file>.pem` and `<file>-key.pem` in `dir`.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    dir: &Path,
    file: &str,
) -> anyhow::Result<ClientCert> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let paths = ClientCert {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}-key.pem")),
    };
    write(&paths.cert, &cert.pem())?;
    write(&paths.key, &key.serialize_pem())?;
    Ok(paths)
}
