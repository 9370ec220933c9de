//! Alert delivery to a webhook (a CRM task endpoint): a worker follows the
//! service's own feed from a stored cursor and POSTs every alert event as
//! JSON, retrying with a doubling backoff; the cursor moves once an event is
//! delivered (or given up on after the configured retries), so a restart
//! neither loses nor repeats a delivery that completed.
//!
//! Each request carries `X-Bowtie-Timestamp` (seconds since the epoch) and
//! `X-Bowtie-Signature: sha256=<hex>`, the HMAC-SHA256 under the configured
//! secret of `<timestamp>.<body>`, so the receiver can check origin and
//! freshness.

use std::time::Duration;

use bowtie_proto::scoring as pb;
use bowtie_runtime::config::ScoringPolicySettings;
use bowtie_runtime::feed;
use bowtie_runtime::peer::payload;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use bowtie_runtime::store::Store;
use bowtie_runtime::validate::now_micros;
use bytes::Bytes;
use http_body_util::Full;
use secrecy::ExposeSecret;

use crate::service::{ALERT_ACKNOWLEDGED, ALERT_RAISED, ALERT_RESOLVED};

/// Cursor name of the webhook delivery.
pub const WEBHOOK_CURSOR: &str = "scoring.webhook";

pub use bowtie_runtime::signing::signature;

/// The JSON body of an alert event.
pub fn body(sequence: i64, event_type: &str, a: &pb::Alert) -> Vec<u8> {
    let kind = pb::AlertKind::try_from(a.kind).map_or("", |k| k.as_str_name());
    let state = pb::AlertState::try_from(a.state).map_or("", |s| s.as_str_name());
    serde_json::json!({
        "sequence": sequence,
        "event_type": event_type,
        "alert": {
            "id": a.id,
            "account_id": a.account_id,
            "kind": kind,
            "state": state,
            "message": a.message,
            "score": a.score,
            "churn_risk_bp": a.churn_risk_bp,
            "version": a.version,
            "note": a.note,
        }
    })
    .to_string()
    .into_bytes()
}

/// Starts the delivery worker when a webhook URL is configured; a CA file
/// that cannot be read or holds no certificate stops the start, named.
pub fn spawn(
    store: Store,
    policy: ScoringPolicySettings,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    if policy.webhook_url.is_empty() {
        return Ok(());
    }
    let client = client(&policy.webhook_ca)?;
    tokio::spawn(async move {
        let mut commits = store.feed().commits();
        loop {
            if let Err(e) = deliver_pending(&store, &policy, &client, &shutdown).await {
                tracing::warn!(error = %e, "webhook delivery interrupted; resuming");
            }
            tokio::select! {
                () = shutdown.wait() => return,
                _ = commits.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
    Ok(())
}

type HttpClient = bowtie_runtime::tls::HttpsClient;

/// An HTTP/1.1 client for http:// and https:// webhooks: https trusts the
/// CA in `ca` (PEM path) or, when empty, the public web PKI.
fn client(ca: &str) -> anyhow::Result<HttpClient> {
    Ok(bowtie_runtime::tls::https_client(
        "scoring_policy.webhook_ca",
        ca,
    )?)
}

async fn deliver_pending(
    store: &Store,
    policy: &ScoringPolicySettings,
    client: &HttpClient,
    shutdown: &Shutdown,
) -> Result<(), bowtie_runtime::Error> {
    loop {
        let after = feed::load_cursor(store.db().writer(), WEBHOOK_CURSOR).await?;
        let batch = feed::read_after(store.db().reader(), after, 100).await?;
        if batch.is_empty() {
            return Ok(());
        }
        for event in batch {
            if matches!(
                event.event_type.as_str(),
                ALERT_RAISED | ALERT_ACKNOWLEDGED | ALERT_RESOLVED
            ) && let Some(alert) = payload::<pb::Alert>(&event)?
            {
                let body = body(event.sequence, &event.event_type, &alert);
                if !post_with_retries(client, policy, body, shutdown).await {
                    tracing::error!(
                        sequence = event.sequence,
                        alert = %alert.id,
                        "webhook delivery failed after every retry; skipping the event"
                    );
                }
            }
            feed::save_cursor(
                store.db().writer(),
                WEBHOOK_CURSOR,
                event.sequence,
                now_micros(),
            )
            .await?;
        }
    }
}

async fn post_with_retries(
    client: &HttpClient,
    policy: &ScoringPolicySettings,
    body: Vec<u8>,
    shutdown: &Shutdown,
) -> bool {
    let mut backoff = Duration::from_millis(policy.webhook_backoff_ms.max(1));
    for attempt in 0..=policy.webhook_retries {
        match post(client, policy, &body).await {
            Ok(()) => return true,
            Err(e) => tracing::warn!(attempt, error = %e, "webhook delivery failed"),
        }
        if attempt == policy.webhook_retries {
            break;
        }
        tokio::select! {
            () = shutdown.wait() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
    false
}

async fn post(
    client: &HttpClient,
    policy: &ScoringPolicySettings,
    body: &[u8],
) -> anyhow::Result<()> {
    let timestamp = now_micros() / 1_000_000;
    let signature = signature(
        policy.webhook_secret.expose_secret().as_bytes(),
        timestamp,
        body,
    );
    let request = http::Request::post(policy.webhook_url.as_str())
        .header("content-type", "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signature)
        .body(Full::new(Bytes::copy_from_slice(body)))?;
    let response = tokio::time::timeout(
        Duration::from_millis(policy.webhook_timeout_ms.max(1)),
        client.request(request),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))??;
    if response.status().is_success() {
        Ok(())
    } else {
        anyhow::bail!("the webhook answered {}", response.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_ca_that_cannot_be_used_is_reported_under_its_setting() -> anyhow::Result<()> {
        let missing = client("/nonexistent/ca.pem").err().map(|e| e.to_string());
        assert!(
            missing
                .as_deref()
                .is_some_and(|m| m.starts_with("scoring_policy.webhook_ca: cannot read")),
            "{missing:?}"
        );
        let dir = tempfile::tempdir()?;
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n")?;
        let none = client(&empty.display().to_string())
            .err()
            .map(|e| e.to_string());
        assert!(
            none.as_deref()
                .is_some_and(|m| m.contains("holds no PEM certificate")),
            "{none:?}"
        );
        assert!(client("").is_ok(), "empty trusts the public web PKI");
        Ok(())
    }
}
