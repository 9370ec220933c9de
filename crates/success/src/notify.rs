//! Notifications of new CTAs: an email to the CTA's owner over SMTP and a
//! Slack-compatible chat message, delivered from the service's own feed by a
//! worker with a stored cursor (docs/design.md section 6).
//!
//! Every `cta.opened` event is delivered on each configured channel. A
//! delivery that fails is retried with a doubling wait, its attempts and last
//! error kept in `deliveries` (see `ListDeliveries`), so a server that is down
//! delays notifications and loses none; one the server refuses for good (an
//! unknown mailbox) is marked FAILED and the worker moves on. A delivery is
//! recorded as soon as it succeeds and the cursor moves once every channel of
//! the event is done, so a restart repeats nothing that was delivered.

use std::time::Duration;

use bowtie_proto::success as pb;
use bowtie_runtime::config::SuccessNotifySettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed;
use bowtie_runtime::peer::{AccountDirectory, payload};
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::store::Store;
use bowtie_runtime::tls::HttpsClient;
use bowtie_runtime::{AccountId, Instant};
use bytes::Bytes;
use http_body_util::Full;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::domain::{Channel, CtaId, DeliveryStatus, email_recipient};
use crate::service::CTA_OPENED;
use crate::storage::{self, Delivery};

/// Cursor name of the notification worker.
pub const NOTIFY_CURSOR: &str = "success.notify";

/// One message to send on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The channel.
    pub channel: Channel,
    /// The email address, or the webhook's host.
    pub recipient: String,
    /// The email subject (chat: unused).
    pub subject: String,
    /// The text.
    pub text: String,
}

/// The subject and text of the notification of `cta` on `account_name`,
/// linking to the account in the dashboard at `dashboard_url`.
pub fn render(cta: &pb::Cta, account_name: &str, dashboard_url: &str) -> (String, String) {
    let name = |raw: &str, prefix: &str| raw.strip_prefix(prefix).unwrap_or(raw).to_lowercase();
    let priority = pb::Priority::try_from(cta.priority)
        .map_or_else(|_| "?".to_owned(), |p| name(p.as_str_name(), "PRIORITY_"));
    let kind = pb::CtaType::try_from(cta.r#type).map_or_else(
        |_| "?".to_owned(),
        |t| name(t.as_str_name(), "CTA_TYPE_").replace('_', "-"),
    );
    let due = cta
        .due_time
        .map(|t| Instant::from_micros(t.seconds.saturating_mul(1_000_000)).to_string())
        .unwrap_or_default();
    let link = format!("{dashboard_url}#account={}", cta.account_id);
    let subject = format!(
        "[Bowtie] {priority} {kind} CTA for {account_name}: {}",
        cta.reason
    );
    let mut text = format!(
        "{account_name}: {}\n\nA {priority}-priority {kind} CTA for {}, due {due}.\n",
        cta.reason, cta.owner
    );
    for t in &cta.tasks {
        let due = t
            .due_time
            .map(|d| Instant::from_micros(d.seconds.saturating_mul(1_000_000)).to_string())
            .unwrap_or_default();
        text.push_str(&format!("- {} (due {due})\n", t.title));
    }
    text.push_str(&format!("\nOpen the account: {link}\n"));
    (subject, text)
}

/// Starts the worker when email or chat is configured; a bad SMTP setting
/// stops the start, named.
pub fn spawn(
    store: Store,
    settings: SuccessNotifySettings,
    accounts: AccountDirectory,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let smtp = smtp(&settings)?;
    let chat = if settings.chat_webhook_url.expose_secret().is_empty() {
        None
    } else {
        Some(bowtie_runtime::tls::https_client(
            "success_notify.chat_webhook_url",
            "",
        )?)
    };
    if smtp.is_none() && chat.is_none() {
        return Ok(());
    }
    let worker = Worker {
        store,
        settings,
        accounts,
        smtp,
        chat,
    };
    tokio::spawn(async move {
        let mut commits = worker.store.feed().commits();
        loop {
            if let Err(e) = worker.deliver_pending(&shutdown).await {
                tracing::warn!(error = %e, "notification delivery interrupted; resuming");
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

type Smtp = AsyncSmtpTransport<Tokio1Executor>;

/// The SMTP transport of the settings, `None` without a host.
fn smtp(s: &SuccessNotifySettings) -> anyhow::Result<Option<Smtp>> {
    if s.smtp_host.is_empty() {
        return Ok(None);
    }
    s.from
        .parse::<Mailbox>()
        .map_err(|e| anyhow::anyhow!("success_notify.from: {e}"))?;
    let builder = match s.smtp_security.as_str() {
        "none" => Smtp::builder_dangerous(&s.smtp_host),
        "starttls" => Smtp::starttls_relay(&s.smtp_host)?,
        "tls" => Smtp::relay(&s.smtp_host)?,
        other => anyhow::bail!(
            "success_notify.smtp_security: {other:?} is not one of none, starttls, tls"
        ),
    };
    let mut builder = builder
        .port(s.smtp_port)
        .timeout(Some(Duration::from_millis(s.timeout_ms.max(1))));
    if !s.smtp_username.is_empty() {
        builder = builder.credentials(Credentials::new(
            s.smtp_username.clone(),
            s.smtp_password.expose_secret().to_owned(),
        ));
    }
    Ok(Some(builder.build()))
}

/// Why one attempt failed, and whether trying again can help.
struct Failure {
    message: String,
    permanent: bool,
}

struct Worker {
    store: Store,
    settings: SuccessNotifySettings,
    accounts: AccountDirectory,
    smtp: Option<Smtp>,
    chat: Option<HttpsClient>,
}

impl Worker {
    /// Delivers every event after the cursor; returns when caught up or
    /// shutting down.
    async fn deliver_pending(&self, shutdown: &Shutdown) -> Result<(), Error> {
        loop {
            let after = feed::load_cursor(self.store.db().writer(), NOTIFY_CURSOR).await?;
            let batch = feed::read_after(self.store.db().reader(), after, 100).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for event in batch {
                if event.event_type == CTA_OPENED
                    && let Some(cta) = payload::<pb::Cta>(&event)?
                {
                    for out in self.plan(&cta).await? {
                        if !self.deliver(event.sequence, &cta, &out, shutdown).await? {
                            return Ok(());
                        }
                    }
                }
                feed::save_cursor(
                    self.store.db().writer(),
                    NOTIFY_CURSOR,
                    event.sequence,
                    Instant::now().micros(),
                )
                .await?;
            }
        }
    }

    /// The messages of a new CTA: the email to its owner (by their
    /// settings) and the chat message.
    async fn plan(&self, cta: &pb::Cta) -> Result<Vec<Outgoing>, Error> {
        let account = bowtie_runtime::api::account_id("payload.account_id", &cta.account_id)?;
        let account_name = self.account_name(account).await?;
        let (subject, text) = render(cta, &account_name, &self.settings.dashboard_url);
        let mut out = Vec::new();
        if self.smtp.is_some() {
            let settings = storage::get_person(self.store.db().reader(), &cta.owner).await?;
            let kind = pb::CtaType::try_from(cta.r#type).unwrap_or(pb::CtaType::Unspecified);
            let priority =
                pb::Priority::try_from(cta.priority).unwrap_or(pb::Priority::Unspecified);
            if let Some(to) = email_recipient(&cta.owner, settings.as_ref(), kind, priority) {
                out.push(Outgoing {
                    channel: Channel::Email,
                    recipient: to,
                    subject: subject.clone(),
                    text: text.clone(),
                });
            }
        }
        if self.chat.is_some() {
            let url = self.settings.chat_webhook_url.expose_secret();
            let host = url
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default();
            out.push(Outgoing {
                channel: Channel::Chat,
                recipient: host.to_owned(),
                subject,
                text,
            });
        }
        Ok(out)
    }

    /// The account's name from the accounts service, its id when that
    /// does not know it (an unreachable one fails the round, retried).
    async fn account_name(&self, id: AccountId) -> Result<String, Error> {
        match self.accounts.get(id.0).await {
            Ok(account) => Ok(account.name),
            Err(Error::NotFound { .. }) => Ok(id.to_string()),
            Err(e) => Err(e),
        }
    }

    /// Delivers `out` for event `sequence`, retrying until it is delivered
    /// or refused for good; `false` when shutdown came first.
    async fn deliver(
        &self,
        sequence: i64,
        cta: &pb::Cta,
        out: &Outgoing,
        shutdown: &Shutdown,
    ) -> Result<bool, Error> {
        let conn = self.store.db().writer();
        let mut d = match storage::get_delivery(conn, sequence, out.channel as i32).await? {
            Some(d) if d.status != DeliveryStatus::Pending => return Ok(true),
            Some(d) => d,
            None => Delivery {
                sequence,
                channel: out.channel as i32,
                cta_id: CtaId(bowtie_runtime::api::id("payload.id", &cta.id)?),
                recipient: out.recipient.clone(),
                status: DeliveryStatus::Pending,
                delivered_at: None,
                attempts: 0,
                last_error: String::new(),
            },
        };
        let mut backoff = Duration::from_millis(self.settings.retry_backoff_ms.max(1));
        let longest = Duration::from_millis(self.settings.max_backoff_ms.max(1));
        loop {
            let outcome = self.send(out).await;
            d.attempts += 1;
            match outcome {
                Ok(()) => {
                    d.status = DeliveryStatus::Delivered;
                    d.delivered_at = Some(Instant::now());
                    d.last_error.clear();
                }
                Err(f) => {
                    tracing::warn!(sequence, channel = ?out.channel, attempt = d.attempts, error = %f.message, "notification not delivered");
                    d.last_error = f.message;
                    if f.permanent {
                        d.status = DeliveryStatus::Failed;
                    }
                }
            }
            storage::save_delivery(conn, &d).await?;
            if d.status != DeliveryStatus::Pending {
                return Ok(true);
            }
            tokio::select! {
                () = shutdown.wait() => return Ok(false),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(longest);
        }
    }

    async fn send(&self, out: &Outgoing) -> Result<(), Failure> {
        let timeout = Duration::from_millis(self.settings.timeout_ms.max(1));
        let transient = |message: String| Failure {
            message,
            permanent: false,
        };
        match out.channel {
            Channel::Email => {
                let Some(smtp) = &self.smtp else {
                    return Ok(());
                };
                let refused = |message: String| Failure {
                    message,
                    permanent: true,
                };
                let to = out
                    .recipient
                    .parse::<Mailbox>()
                    .map_err(|e| refused(format!("{}: {e}", out.recipient)))?;
                let from = self
                    .settings
                    .from
                    .parse::<Mailbox>()
                    .map_err(|e| refused(format!("success_notify.from: {e}")))?;
                let message = lettre::Message::builder()
                    .from(from)
                    .to(to)
                    .subject(out.subject.clone())
                    .header(ContentType::TEXT_PLAIN)
                    .body(out.text.clone())
                    .map_err(|e| refused(e.to_string()))?;
                match tokio::time::timeout(timeout, smtp.send(message)).await {
                    Err(_) => Err(transient("the SMTP server did not answer in time".into())),
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) if e.is_permanent() => Err(refused(e.to_string())),
                    Ok(Err(e)) => Err(transient(e.to_string())),
                }
            }
            _ => {
                let Some(client) = &self.chat else {
                    return Ok(());
                };
                let body = serde_json::json!({ "text": out.text }).to_string();
                let request = http::Request::post(self.settings.chat_webhook_url.expose_secret())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| Failure {
                        message: e.to_string(),
                        permanent: true,
                    })?;
                match tokio::time::timeout(timeout, client.request(request)).await {
                    Err(_) => Err(transient("the chat webhook did not answer in time".into())),
                    Ok(Err(e)) => Err(transient(e.to_string())),
                    Ok(Ok(r)) if r.status().is_success() => Ok(()),
                    Ok(Ok(r)) => Err(transient(format!(
                        "the chat webhook answered {}",
                        r.status()
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_names_the_account_the_reason_the_tasks_and_links_to_the_account() {
        let cta = pb::Cta {
            account_id: "01a24e37-7f9c-71e8-b6bc-37ab41f8802f".into(),
            r#type: pb::CtaType::WinBack as i32,
            priority: pb::Priority::High as i32,
            reason: "health fell into red at 17".into(),
            owner: "ana@acme.io".into(),
            due_time: Some(prost_types::Timestamp {
                seconds: 1_769_851_800,
                nanos: 0,
            }),
            tasks: vec![pb::Task {
                title: "Call the champion".into(),
                due_time: Some(prost_types::Timestamp {
                    seconds: 1_769_851_800 - 86_400,
                    nanos: 0,
                }),
                ..pb::Task::default()
            }],
            ..pb::Cta::default()
        };
        let (subject, text) = render(&cta, "Acme Logistics", "http://bowtie.example/");
        assert_eq!(
            subject,
            "[Bowtie] high win-back CTA for Acme Logistics: health fell into red at 17"
        );
        assert_eq!(
            text,
            "Acme Logistics: health fell into red at 17\n\n\
             A high-priority win-back CTA for ana@acme.io, due 2026-01-31T09:30:00Z.\n\
             - Call the champion (due 2026-01-30T09:30:00Z)\n\n\
             Open the account: http://bowtie.example/#account=01a24e37-7f9c-71e8-b6bc-37ab41f8802f\n"
        );
    }
}
