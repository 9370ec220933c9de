//! Notifications: new CTAs (an email to the owner over SMTP and a
//! Slack-compatible chat message), the actions of playbook steps (an email,
//! a chat message, a signed webhook) and daily digests, delivered from the
//! service's own feed (docs/design.md section 6.5) by one worker per
//! channel (email, chat, webhook), each with its own stored cursor, so the
//! channels proceed side by side: a slow or down SMTP server holds back only
//! emails, never a chat message or a webhook.
//!
//! Every `cta.opened` event is delivered on each configured channel, every
//! `cta.step_due` on its step's channel and every `digest.due` by email. A
//! delivery that fails is retried with a doubling wait, its attempts and last
//! error kept in `deliveries` (see `ListDeliveries`), so a server that is down
//! delays notifications and loses none; one the server refuses for good (an
//! unknown mailbox, a webhook answering 4xx) is marked FAILED and the worker
//! moves on. A delivery is recorded as soon as it succeeds and a channel's
//! cursor moves once that channel's message of the event is done, so a
//! restart repeats nothing that was delivered.
//!
//! [`spawn_schedule`] is the periodic task that turns steps that came due
//! and digests whose hour has come into those events.

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

use crate::domain::{
    Action, Channel, CtaId, DEFAULT_BODY, DEFAULT_SUBJECT, DeliveryStatus, PlaybookId,
    email_recipient, fill, url_host,
};
use crate::service::{CTA_OPENED, DIGEST_DUE, STEP_DUE, Success};
use crate::storage::{self, Delivery};

/// Cursor name of the single notification worker of earlier versions: where
/// each channel's worker starts before it has stored a cursor of its own, so
/// an upgrade neither repeats nor skips anything.
pub const NOTIFY_CURSOR: &str = "success.notify";

/// The channels delivered side by side, each by its own worker, and the name
/// of that worker's cursor.
pub const LANES: [(Channel, &str); 3] = [
    (Channel::Email, "success.notify.email"),
    (Channel::Chat, "success.notify.chat"),
    (Channel::Webhook, "success.notify.webhook"),
];

/// One message to send on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The channel.
    pub channel: Channel,
    /// The email address, or the webhook's host.
    pub recipient: String,
    /// The email subject (chat, webhook: unused).
    pub subject: String,
    /// The text (webhook: the JSON body).
    pub text: String,
    /// Chat, webhook: where to POST.
    pub url: String,
    /// Webhook: the signing secret.
    pub secret: String,
    /// The CTA it is about; `None` for a digest.
    pub cta: Option<CtaId>,
    /// What it is (see `Delivery.about`).
    pub about: String,
}

/// A timestamp as people read it, empty when unset.
fn shown(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map(|t| Instant::from_micros(t.seconds.saturating_mul(1_000_000)).to_string())
        .unwrap_or_default()
}

/// The values a step's templates may name, for `cta` on `account_name`.
pub fn step_values(
    cta: &pb::Cta,
    step: &str,
    due: &str,
    account_name: &str,
    dashboard_url: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("account", account_name.to_owned()),
        ("reason", cta.reason.clone()),
        ("owner", cta.owner.clone()),
        ("step", step.to_owned()),
        ("due", due.to_owned()),
        (
            "link",
            format!("{dashboard_url}#account={}", cta.account_id),
        ),
    ]
}

/// The JSON body a step's webhook receives: the event, the step, the CTA
/// (with a link to its account) and the account.
pub fn step_body(
    sequence: i64,
    index: i32,
    title: &str,
    cta: &pb::Cta,
    account: &bowtie_proto::accounts::Account,
    dashboard_url: &str,
) -> String {
    let name = |raw: &str, prefix: &str| raw.strip_prefix(prefix).unwrap_or(raw).to_owned();
    let task_due = usize::try_from(index)
        .ok()
        .and_then(|i| cta.tasks.get(i))
        .map(|t| shown(t.due_time.as_ref()))
        .unwrap_or_default();
    serde_json::json!({
        "sequence": sequence,
        "event_type": STEP_DUE,
        "step": { "index": index, "title": title, "due_time": task_due },
        "cta": {
            "id": cta.id,
            "account_id": cta.account_id,
            "playbook_id": cta.playbook_id,
            "playbook_version": cta.playbook_version,
            "type": pb::CtaType::try_from(cta.r#type).map_or(String::new(), |t| name(t.as_str_name(), "CTA_TYPE_")),
            "priority": pb::Priority::try_from(cta.priority).map_or(String::new(), |p| name(p.as_str_name(), "PRIORITY_")),
            "status": pb::CtaStatus::try_from(cta.status).map_or(String::new(), |s| name(s.as_str_name(), "CTA_STATUS_")),
            "reason": cta.reason,
            "owner": cta.owner,
            "due_time": shown(cta.due_time.as_ref()),
            "create_time": shown(cta.create_time.as_ref()),
            "link": format!("{dashboard_url}#account={}", cta.account_id),
        },
        "account": {
            "id": cta.account_id,
            "name": account.name,
            "segment": bowtie_proto::common::Segment::try_from(account.segment).map_or(String::new(), |s| name(s.as_str_name(), "SEGMENT_")),
            "owner": account.owner,
            "csm": account.csm,
        },
    })
    .to_string()
}

/// One line of a digest: the account, the playbook, the due day and the reason.
pub struct DigestLine {
    /// The account's name.
    pub account: String,
    /// The playbook's name; empty for a CTA opened by hand.
    pub playbook: String,
    /// When it is due.
    pub due: Instant,
    /// Why it exists.
    pub reason: String,
}

/// The subject and text of `person`'s digest of `day` as of `at`: the
/// overdue CTAs first, then the other open ones (both already in due order).
pub fn render_digest(
    day: &str,
    at: Instant,
    lines: &[DigestLine],
    dashboard_url: &str,
) -> (String, String) {
    let (overdue, open): (Vec<&DigestLine>, Vec<&DigestLine>) =
        lines.iter().partition(|l| l.due < at);
    let subject = format!(
        "[Bowtie] Your CTAs on {day}: {} overdue, {} open",
        overdue.len(),
        open.len()
    );
    let mut text = String::new();
    for (title, part) in [("Overdue", &overdue), ("Open", &open)] {
        if part.is_empty() {
            continue;
        }
        text.push_str(&format!("{title} ({}):\n", part.len()));
        for l in part.iter() {
            let playbook = if l.playbook.is_empty() {
                "opened by hand"
            } else {
                &l.playbook
            };
            let due: String = l.due.to_string().chars().take(10).collect();
            text.push_str(&format!(
                "- {} | {playbook} | due {due} | {}\n",
                l.account, l.reason
            ));
        }
        text.push('\n');
    }
    text.push_str(&format!("Your work: {dashboard_url}\n"));
    (subject, text)
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

/// Starts one worker per channel ([`LANES`]); a bad SMTP setting stops the
/// start, named.
pub fn spawn(
    store: Store,
    settings: SuccessNotifySettings,
    accounts: AccountDirectory,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let smtp = smtp(&settings)?;
    let http = bowtie_runtime::tls::https_client("success_notify.chat_webhook_url", "")?;
    let worker = std::sync::Arc::new(Worker {
        store,
        settings,
        accounts,
        smtp,
        http,
    });
    for (lane, cursor) in LANES {
        let worker = worker.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut commits = worker.store.feed().commits();
            loop {
                if let Err(e) = worker.deliver_pending(lane, cursor, &shutdown).await {
                    tracing::warn!(channel = ?lane, error = %e, "notification delivery interrupted; resuming");
                }
                tokio::select! {
                    () = shutdown.wait() => return,
                    _ = commits.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
    }
    Ok(())
}

/// Starts the periodic task: every `interval` (and at once) the steps that
/// came due and the digests whose hour has come become feed events.
pub fn spawn_schedule(app: Success, interval: Duration, shutdown: Shutdown) {
    tokio::spawn(async move {
        loop {
            let now = Instant::now();
            loop {
                match app.run_due_steps(now).await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduled steps interrupted; resuming");
                        break;
                    }
                }
            }
            if let Err(e) = app.queue_digests(now).await {
                tracing::warn!(error = %e, "daily digests interrupted; resuming");
            }
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    });
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
    http: HttpsClient,
}

impl Worker {
    /// Whether an event of `event_type` may send anything on `lane`, so a
    /// worker plans (and asks the accounts service about) only its own.
    fn may_send(&self, lane: Channel, event_type: &str) -> bool {
        match (event_type, lane) {
            (CTA_OPENED, Channel::Email) => self.smtp.is_some(),
            (CTA_OPENED, Channel::Chat) => {
                !self.settings.chat_webhook_url.expose_secret().is_empty()
            }
            (STEP_DUE, _) | (DIGEST_DUE, Channel::Email) => true,
            _ => false,
        }
    }

    /// Delivers `lane`'s messages of every event after its `cursor`;
    /// returns when caught up or shutting down.
    async fn deliver_pending(
        &self,
        lane: Channel,
        cursor: &str,
        shutdown: &Shutdown,
    ) -> Result<(), Error> {
        loop {
            let writer = self.store.db().writer();
            let mut after = feed::load_cursor(writer, cursor).await?;
            if after == 0 {
                after = feed::load_cursor(writer, NOTIFY_CURSOR).await?;
            }
            let batch = feed::read_after(self.store.db().reader(), after, 100).await?;
            if batch.is_empty() {
                return Ok(());
            }
            // Events with nothing for this lane move the cursor once, at the
            // end of the batch or before the next delivery.
            let mut skipped = None;
            for event in batch {
                if !self.may_send(lane, &event.event_type) {
                    skipped = Some(event.sequence);
                    continue;
                }
                if let Some(sequence) = skipped.take() {
                    feed::save_cursor(writer, cursor, sequence, Instant::now().micros()).await?;
                }
                let outgoing = match event.event_type.as_str() {
                    CTA_OPENED => match payload::<pb::Cta>(&event)? {
                        Some(cta) => self.plan(&cta).await?,
                        None => Vec::new(),
                    },
                    STEP_DUE => match payload::<pb::StepDue>(&event)? {
                        Some(due) => self.plan_step(event.sequence, &due).await?,
                        None => Vec::new(),
                    },
                    DIGEST_DUE => match payload::<pb::Digest>(&event)? {
                        Some(digest) => self.plan_digest(&digest).await?,
                        None => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                for out in outgoing.iter().filter(|o| o.channel == lane) {
                    if !self.deliver(event.sequence, out, shutdown).await? {
                        return Ok(());
                    }
                }
                feed::save_cursor(writer, cursor, event.sequence, Instant::now().micros()).await?;
            }
            if let Some(sequence) = skipped {
                feed::save_cursor(writer, cursor, sequence, Instant::now().micros()).await?;
            }
        }
    }

    /// The messages of a new CTA: the email to its owner (by their
    /// settings) and the chat message.
    async fn plan(&self, cta: &pb::Cta) -> Result<Vec<Outgoing>, Error> {
        let account = bowtie_runtime::api::account_id("payload.account_id", &cta.account_id)?;
        let account_name = self.account_name(account).await?;
        let (subject, text) = render(cta, &account_name, &self.settings.dashboard_url);
        let cta_id = Some(CtaId(bowtie_runtime::api::id("payload.id", &cta.id)?));
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
                    url: String::new(),
                    secret: String::new(),
                    cta: cta_id,
                    about: CTA_OPENED.to_owned(),
                });
            }
        }
        let url = self.settings.chat_webhook_url.expose_secret();
        if !url.is_empty() {
            out.push(Outgoing {
                channel: Channel::Chat,
                recipient: url_host(url),
                subject,
                text,
                url: url.to_owned(),
                secret: String::new(),
                cta: cta_id,
                about: CTA_OPENED.to_owned(),
            });
        }
        Ok(out)
    }

    /// The message of a playbook step's action: its email, chat message or
    /// signed webhook, from the playbook version that opened the CTA.
    async fn plan_step(&self, sequence: i64, due: &pb::StepDue) -> Result<Vec<Outgoing>, Error> {
        let Some(cta) = &due.cta else {
            return Ok(Vec::new());
        };
        let conn = self.store.db().reader();
        let playbook = PlaybookId(bowtie_runtime::api::id(
            "payload.cta.playbook_id",
            &cta.playbook_id,
        )?);
        let Some(spec) = storage::playbook_at_version(conn, playbook, cta.playbook_version).await?
        else {
            return Ok(Vec::new());
        };
        let Some(step) = usize::try_from(due.step_index)
            .ok()
            .and_then(|i| spec.steps.get(i))
        else {
            return Ok(Vec::new());
        };
        let Some(action) = &step.action else {
            return Ok(Vec::new());
        };
        let account_id =
            bowtie_runtime::api::account_id("payload.cta.account_id", &cta.account_id)?;
        let account = match self.accounts.get(account_id.0).await {
            Ok(account) => account,
            Err(Error::NotFound { .. }) => bowtie_proto::accounts::Account {
                id: cta.account_id.clone(),
                name: cta.account_id.clone(),
                ..Default::default()
            },
            Err(e) => return Err(e),
        };
        let task_due = usize::try_from(due.step_index)
            .ok()
            .and_then(|i| cta.tasks.get(i))
            .map(|t| shown(t.due_time.as_ref()))
            .unwrap_or_default();
        let values = step_values(
            cta,
            &step.title,
            &task_due,
            &account.name,
            &self.settings.dashboard_url,
        );
        let values: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let text = |template: &str, default: &str| {
            fill(
                if template.is_empty() {
                    default
                } else {
                    template
                },
                &values,
            )
        };
        let mut out = Outgoing {
            channel: Channel::Email,
            recipient: String::new(),
            subject: String::new(),
            text: String::new(),
            url: String::new(),
            secret: String::new(),
            cta: Some(CtaId(bowtie_runtime::api::id("payload.cta.id", &cta.id)?)),
            about: format!("step {}", due.step_index),
        };
        match action {
            Action::Email { to, subject, body } => {
                out.recipient = if to.is_empty() {
                    let settings = storage::get_person(conn, &cta.owner).await?;
                    match settings {
                        Some(p) if !p.email.is_empty() => p.email,
                        _ => cta.owner.clone(),
                    }
                } else {
                    to.clone()
                };
                out.subject = text(subject, DEFAULT_SUBJECT);
                out.text = text(body, DEFAULT_BODY);
            }
            Action::Chat { url, body } => {
                out.channel = Channel::Chat;
                out.recipient = url_host(url);
                out.url.clone_from(url);
                out.text = text(body, DEFAULT_BODY);
            }
            Action::Webhook { url, secret } => {
                out.channel = Channel::Webhook;
                out.recipient = url_host(url);
                out.url.clone_from(url);
                out.secret.clone_from(secret);
                out.text = step_body(
                    sequence,
                    due.step_index,
                    &step.title,
                    cta,
                    &account,
                    &self.settings.dashboard_url,
                );
            }
        }
        Ok(vec![out])
    }

    /// The email of a daily digest.
    async fn plan_digest(&self, digest: &pb::Digest) -> Result<Vec<Outgoing>, Error> {
        let conn = self.store.db().reader();
        let mut names: std::collections::HashMap<String, String> = Default::default();
        let mut playbooks: std::collections::HashMap<String, String> = Default::default();
        let mut lines = Vec::new();
        for cta in &digest.ctas {
            if !names.contains_key(&cta.account_id) {
                let id =
                    bowtie_runtime::api::account_id("payload.ctas.account_id", &cta.account_id)?;
                names.insert(cta.account_id.clone(), self.account_name(id).await?);
            }
            if !cta.playbook_id.is_empty() && !playbooks.contains_key(&cta.playbook_id) {
                let id = PlaybookId(bowtie_runtime::api::id(
                    "payload.ctas.playbook_id",
                    &cta.playbook_id,
                )?);
                let name = storage::get_playbook(conn, id)
                    .await?
                    .map(|p| p.spec.name)
                    .unwrap_or_default();
                playbooks.insert(cta.playbook_id.clone(), name);
            }
            lines.push(DigestLine {
                account: names.get(&cta.account_id).cloned().unwrap_or_default(),
                playbook: playbooks.get(&cta.playbook_id).cloned().unwrap_or_default(),
                due: cta
                    .due_time
                    .map(|t| Instant::from_micros(t.seconds.saturating_mul(1_000_000)))
                    .unwrap_or(Instant::from_micros(0)),
                reason: cta.reason.clone(),
            });
        }
        let at = digest
            .queue_time
            .map(|t| Instant::from_micros(t.seconds.saturating_mul(1_000_000)))
            .unwrap_or(Instant::now());
        let (subject, text) = render_digest(&digest.day, at, &lines, &self.settings.dashboard_url);
        Ok(vec![Outgoing {
            channel: Channel::Email,
            recipient: digest.email.clone(),
            subject,
            text,
            url: String::new(),
            secret: String::new(),
            cta: None,
            about: format!("digest {}", digest.day),
        }])
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
                cta_id: out.cta,
                recipient: out.recipient.clone(),
                status: DeliveryStatus::Pending,
                delivered_at: None,
                attempts: 0,
                last_error: String::new(),
                about: out.about.clone(),
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
                let refused = |message: String| Failure {
                    message,
                    permanent: true,
                };
                let Some(smtp) = &self.smtp else {
                    return Err(refused(
                        "no SMTP server is configured (success_notify.smtp_host)".into(),
                    ));
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
            channel => {
                let webhook = channel == Channel::Webhook;
                let what = if webhook {
                    "the webhook"
                } else {
                    "the chat webhook"
                };
                let mut request = http::Request::post(out.url.as_str())
                    .header("content-type", "application/json");
                let body = if webhook {
                    let timestamp = Instant::now().micros() / 1_000_000;
                    let signature = bowtie_runtime::signing::signature(
                        out.secret.as_bytes(),
                        timestamp,
                        out.text.as_bytes(),
                    );
                    request = request
                        .header(
                            bowtie_runtime::signing::TIMESTAMP_HEADER,
                            timestamp.to_string(),
                        )
                        .header(bowtie_runtime::signing::SIGNATURE_HEADER, signature);
                    out.text.clone()
                } else {
                    serde_json::json!({ "text": out.text }).to_string()
                };
                let request = request
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| Failure {
                        message: e.to_string(),
                        permanent: true,
                    })?;
                match tokio::time::timeout(timeout, self.http.request(request)).await {
                    Err(_) => Err(transient(format!("{what} did not answer in time"))),
                    Ok(Err(e)) => Err(transient(e.to_string())),
                    Ok(Ok(r)) if r.status().is_success() => Ok(()),
                    // A signed webhook that refuses the request (4xx but a
                    // timeout or throttling) will refuse it again.
                    Ok(Ok(r))
                        if webhook
                            && r.status().is_client_error()
                            && !matches!(r.status().as_u16(), 408 | 429) =>
                    {
                        Err(Failure {
                            message: format!("{what} answered {}", r.status()),
                            permanent: true,
                        })
                    }
                    Ok(Ok(r)) => Err(transient(format!("{what} answered {}", r.status()))),
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

    #[test]
    fn a_digest_lists_the_overdue_first_then_the_open_each_with_account_playbook_and_due_day() {
        // 2026-12-07T00:00:00Z is 1_796_601_600 seconds after the epoch.
        let day = |d: i64, h: i64| {
            Instant::from_micros((1_796_601_600 + d * 86_400 + h * 3_600) * 1_000_000)
        };
        let lines = [
            DigestLine {
                account: "Acme".into(),
                playbook: "Save red accounts".into(),
                due: day(-2, 9),
                reason: "health fell into red at 17".into(),
            },
            DigestLine {
                account: "Globex".into(),
                playbook: String::new(),
                due: day(2, 9),
                reason: "renewal in 30 days".into(),
            },
        ];
        let (subject, text) =
            render_digest("2026-12-07", day(0, 7), &lines, "http://bowtie.example/");
        assert_eq!(
            subject,
            "[Bowtie] Your CTAs on 2026-12-07: 1 overdue, 1 open"
        );
        assert_eq!(
            text,
            "Overdue (1):\n- Acme | Save red accounts | due 2026-12-05 | health fell into red at 17\n\n\
             Open (1):\n- Globex | opened by hand | due 2026-12-09 | renewal in 30 days\n\n\
             Your work: http://bowtie.example/\n"
        );
    }
}
