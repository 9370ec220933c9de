//! Alerts: acknowledge and resolve with expected versions, the WatchAlerts
//! stream, and webhook delivery with retries and an HMAC signature checked
//! by a tiny HTTP receiver.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bowtie_proto::common::Segment;
use bowtie_proto::scoring::{
    AcknowledgeAlertRequest, AlertKind, AlertState, ResolveAlertRequest, WatchAlertsRequest,
};
use bowtie_testkit::receiver::{Received, receiver};
use bowtie_testkit::scoring::{Scoring, alerts_of, health_when, logins, record};
use bowtie_testkit::tls::Pki;
use bowtie_testkit::{TestDatabase, backend_test, within};
use futures::StreamExt;
use tonic::Code;

backend_test!(
    an_alert_is_acknowledged_then_resolved_at_the_version_it_was_read,
    watchers_see_alerts_as_they_are_raised_and_resolved,
    alerts_are_pushed_to_the_webhook_signed_and_retried,
    alerts_are_pushed_to_an_https_webhook_trusting_the_configured_ca,
    an_https_webhook_with_an_unknown_ca_gets_nothing,
);

/// Makes `account` red (usage 0 of 10, stakeholders 100: 17).
async fn turn_red(suite: &Scoring, account: &str) -> anyhow::Result<()> {
    let mut client = suite.client();
    record(
        &mut client,
        logins(&format!("red-{account}"), account, 10, 40),
    )
    .await?;
    health_when(&mut client, account, "a red score", |h| h.score == 17).await?;
    Ok(())
}

async fn an_alert_is_acknowledged_then_resolved_at_the_version_it_was_read(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    turn_red(&suite, &acme).await?;
    let mut client = suite.client();
    let alert = within(10, "the alert", async {
        loop {
            if let Some(a) = alerts_of(&mut client, &acme).await?.into_iter().next() {
                return anyhow::Ok(a);
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    })
    .await??;
    assert_eq!(
        (alert.kind, alert.state, alert.version),
        (AlertKind::EnteredRed as i32, AlertState::Open as i32, 1)
    );
    let stale = client
        .acknowledge_alert(AcknowledgeAlertRequest {
            id: alert.id.clone(),
            expected_version: 7,
            note: String::new(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(stale, Some(Code::Aborted));
    let acked = client
        .acknowledge_alert(AcknowledgeAlertRequest {
            id: alert.id.clone(),
            expected_version: 1,
            note: "ana is calling them".into(),
        })
        .await?
        .into_inner()
        .alert
        .ok_or_else(|| anyhow::anyhow!("no alert"))?;
    assert_eq!(
        (acked.state, acked.version, acked.note.as_str()),
        (AlertState::Acknowledged as i32, 2, "ana is calling them")
    );
    let resolved = client
        .resolve_alert(ResolveAlertRequest {
            id: alert.id.clone(),
            expected_version: 2,
            note: "renewal saved".into(),
        })
        .await?
        .into_inner()
        .alert
        .ok_or_else(|| anyhow::anyhow!("no alert"))?;
    assert_eq!(
        (resolved.state, resolved.version),
        (AlertState::Resolved as i32, 3)
    );
    let again = client
        .resolve_alert(ResolveAlertRequest {
            id: alert.id.clone(),
            expected_version: 3,
            note: String::new(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(again, Some(Code::FailedPrecondition));
    let unknown = client
        .resolve_alert(ResolveAlertRequest {
            id: uuid::Uuid::now_v7().to_string(),
            expected_version: 1,
            note: String::new(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(unknown, Some(Code::NotFound));
    Ok(())
}

async fn watchers_see_alerts_as_they_are_raised_and_resolved(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let mut stream = suite
        .reader()
        .watch_alerts(WatchAlertsRequest { after_sequence: 0 })
        .await?
        .into_inner();
    turn_red(&suite, &acme).await?;
    let raised = within(10, "alert.raised", stream.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the stream ended"))??;
    assert_eq!(raised.event_type, "alert.raised");
    let alert = raised.alert.ok_or_else(|| anyhow::anyhow!("no alert"))?;
    assert_eq!(alert.account_id, acme);
    suite
        .client()
        .resolve_alert(ResolveAlertRequest {
            id: alert.id.clone(),
            expected_version: 1,
            note: String::new(),
        })
        .await?;
    let resolved = within(10, "alert.resolved", stream.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the stream ended"))??;
    assert_eq!(resolved.event_type, "alert.resolved");
    assert!(resolved.sequence > raised.sequence);
    Ok(())
}

/// A TLS acceptor with the test CA's server certificate (for 127.0.0.1).
fn acceptor(pki: &Pki) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    bowtie_runtime::tls::install_crypto_provider();
    let certs = CertificateDer::pem_file_iter(&pki.server.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&pki.server.key)?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn alerts_are_pushed_to_the_webhook_signed_and_retried(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (url, received, _) = receiver(None).await?;
    pushed_signed_and_retried(db, url, String::new(), received).await
}

async fn alerts_are_pushed_to_an_https_webhook_trusting_the_configured_ca(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let (url, received, _) = receiver(Some(acceptor(&pki)?)).await?;
    assert!(url.starts_with("https://"), "{url}");
    pushed_signed_and_retried(db, url, pki.ca.display().to_string(), received).await
}

async fn an_https_webhook_with_an_unknown_ca_gets_nothing(db: &TestDatabase) -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let (url, received, connections) = receiver(Some(acceptor(&pki)?)).await?;
    let other_ca = pki.other_ca.display().to_string();
    let suite = Scoring::start_with(db, |s| {
        s.scoring_policy.webhook_url = url;
        s.scoring_policy.webhook_ca = other_ca;
        s.scoring_policy.webhook_secret = "whsec-test".to_owned().into();
        s.scoring_policy.webhook_backoff_ms = 20;
        s.scoring_policy.webhook_retries = 2;
    })
    .await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    turn_red(&suite, &acme).await?;
    within(10, "the first attempt and a retry", async {
        while connections.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    })
    .await?;
    let got = received.lock().map(|r| r.len()).unwrap_or_default();
    assert_eq!(
        got, 0,
        "no request passes a handshake with an untrusted certificate"
    );
    Ok(())
}

async fn pushed_signed_and_retried(
    db: &TestDatabase,
    url: String,
    ca: String,
    received: Received,
) -> anyhow::Result<()> {
    let suite = Scoring::start_with(db, |s| {
        s.scoring_policy.webhook_url = url;
        s.scoring_policy.webhook_ca = ca;
        s.scoring_policy.webhook_secret = "whsec-test".to_owned().into();
        s.scoring_policy.webhook_backoff_ms = 20;
    })
    .await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    turn_red(&suite, &acme).await?;
    let requests = within(10, "two deliveries (one failed, one retried)", async {
        loop {
            let got = received.lock().map(|r| r.clone()).unwrap_or_default();
            if got.len() >= 2 {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    })
    .await?;
    let (headers, body) = &requests[1];
    assert_eq!(requests[0].1, *body, "the retry sends the same event");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let timestamp: i64 = header("x-bowtie-timestamp").parse()?;
    assert_eq!(
        header("x-bowtie-signature"),
        bowtie_scoring::webhook::signature(b"whsec-test", timestamp, body)
    );
    assert_ne!(
        header("x-bowtie-signature"),
        bowtie_scoring::webhook::signature(b"another-secret", timestamp, body)
    );
    let json: serde_json::Value = serde_json::from_slice(body)?;
    assert_eq!(json["event_type"], "alert.raised");
    assert_eq!(json["alert"]["account_id"], acme.as_str());
    assert_eq!(json["alert"]["kind"], "ALERT_KIND_ENTERED_RED");
    // Delivered once: nothing more arrives.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(received.lock().map(|r| r.len()).unwrap_or_default(), 2);
    Ok(())
}
