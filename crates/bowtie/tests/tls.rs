//! TLS of the real `bowtie` binary configured the way deployments configure
//! it, through `BOWTIE__SERVER__TLS__*` environment variables: mutual TLS
//! served to a client with the right certificate, and a certificate file
//! that is missing stopping the process at startup with the setting named.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use bowtie_testkit::ACCOUNTS_SERVICE;
use bowtie_testkit::tls::Pki;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// `bowtie serve accounts` in `dir` on `port` with `tls` environment variables.
fn serve_accounts(dir: &Path, port: u16, tls: &[(&str, &Path)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bowtie"));
    command
        .current_dir(dir)
        .args(["serve", "accounts"])
        .env("BOWTIE__ACCOUNTS__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "BOWTIE__ACCOUNTS__DATABASE__URL",
            format!("sqlite://{}", dir.join("accounts.db").display()),
        )
        .env("BOWTIE__SERVER__DRAIN_SECONDS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, path) in tls {
        command.env(format!("BOWTIE__SERVER__TLS__{key}"), path);
    }
    command
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[test]
fn a_missing_certificate_file_in_the_environment_stops_the_binary_naming_the_setting()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new()?;
    let missing = dir.path().join("no-such-cert.pem");
    let output = serve_accounts(
        dir.path(),
        free_port()?,
        &[("CERT", &missing), ("KEY", &pki.server.key)],
    )
    .output()
    .context("running bowtie serve accounts")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains(&format!(
            "server.tls.cert: cannot read {:?}",
            missing.display().to_string()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn the_binary_serves_mutual_tls_configured_by_environment_variables() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new()?;
    let port = free_port()?;
    let mut child = serve_accounts(
        dir.path(),
        port,
        &[
            ("CERT", &pki.server.cert),
            ("KEY", &pki.server.key),
            ("CLIENT_CA", &pki.ca),
        ],
    )
    .stderr(Stdio::null())
    .spawn()
    .context("starting bowtie serve accounts")?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca)?))
        .identity(Identity::from_pem(
            std::fs::read(&pki.client.cert)?,
            std::fs::read(&pki.client.key)?,
        ));
    let endpoint = Endpoint::from_shared(format!("https://localhost:{port}"))?
        .tls_config(tls)?
        .timeout(Duration::from_secs(5));
    let check = HealthCheckRequest {
        service: ACCOUNTS_SERVICE.to_owned(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let outcome = loop {
        let status = match endpoint.connect().await {
            Ok(channel) => HealthClient::new(channel)
                .check(check.clone())
                .await
                .map(|r| r.into_inner().status)
                .map_err(|s| s.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if status == Ok(ServingStatus::Serving as i32) || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let plaintext = match Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .timeout(Duration::from_secs(5))
        .connect()
        .await
    {
        Ok(channel) => HealthClient::new(channel).check(check).await.is_ok(),
        Err(_) => false,
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(outcome, Ok(ServingStatus::Serving as i32));
    assert!(!plaintext, "a plaintext client was answered");
    Ok(())
}
