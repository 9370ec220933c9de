//! A stand-in OpenID Connect issuer for the unary case's JWT measurement:
//! a discovery document and a JWKS with one ES256 key, served on a loopback
//! port by the bench process, and a token signed with that key. Only the
//! two documents Bowtie fetches are served; the services verify the token
//! exactly as they verify a real provider's.

use std::net::SocketAddr;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The audience the bench's tokens are issued for.
pub const AUDIENCE: &str = "https://bowtie.bench/api";

/// The running issuer.
#[derive(Debug)]
pub struct Issuer {
    /// The issuer URL (`http://127.0.0.1:<port>`).
    pub url: String,
    /// A viewer's token, valid for an hour.
    pub token: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    /// Makes a key, binds a loopback port and serves the two documents.
    pub async fn start() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        // The uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = key.public_key_raw();
        anyhow::ensure!(point.len() == 65, "unexpected P-256 public key length");
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "bench-1",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
        .to_string();
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")}).to_string();
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("bench-1".into());
        let token = jsonwebtoken::encode(
            &header,
            &json!({
                "iss": url, "aud": AUDIENCE, "sub": "bench-person",
                "email": "bench@example.com", "roles": ["viewer"],
                "iat": now, "exp": now + 3600,
            }),
            &jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der()),
        )
        .context("signing the bench token")?;
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (jwks, discovery) = (jwks.clone(), discovery.clone());
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 4096];
                    let Ok(n) = socket.read(&mut buffer).await else {
                        return;
                    };
                    let request = String::from_utf8_lossy(&buffer[..n]);
                    let path = request.split_whitespace().nth(1).unwrap_or_default();
                    let (status, body) = match path {
                        "/.well-known/openid-configuration" => ("200 OK", discovery),
                        "/jwks" => ("200 OK", jwks),
                        _ => ("404 Not Found", String::new()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        Ok(Self { url, token, task })
    }

    /// The `[auth.oidc]` table of a configuration file trusting this issuer.
    pub fn config_toml(&self) -> String {
        format!(
            "\n[auth.oidc]\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nroles_claim = \"roles\"\n",
            self.url
        )
    }
}
