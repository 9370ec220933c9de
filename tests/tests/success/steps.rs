//! Playbook steps that act and the daily digest, against a real SMTP server
//! (aiosmtpd, see `notify`) and local webhook receivers: a red account's CTA
//! opens and its steps due at once send their email (templates filled), post
//! their chat message and call their signed webhook, each retried past a
//! refused first attempt and delivered once, while a later step waits; a
//! bad step is refused naming its field; a person who asked for a digest
//! gets one email listing their overdue CTAs first, once a day even across a
//! restart; a webhook's secret is write-only, never read back, and kept when
//! a playbook is sent back without it.

use std::time::Duration;

use bowtie_proto::accounts::MarkContactLeftRequest;
use bowtie_proto::common::Segment;
use bowtie_proto::success::{
    Channel, CreateCtaRequest, CreatePlaybookRequest, CtaType, Delivery, DeliveryStatus,
    GetPlaybookRequest, ListDeliveriesRequest, ListPlaybookVersionsRequest, ListPlaybooksRequest,
    NotificationSettings, Playbook, Priority, SetNotificationSettingsRequest, Step, StepAction,
    Trigger, TriggerKind, UpdatePlaybookRequest, WatchEventsRequest,
};
use bowtie_runtime::config::Settings;
use bowtie_testkit::assert::invalid_field;
use bowtie_testkit::demo::free_port;
use bowtie_testkit::fixtures::{contact, create_contact};
use bowtie_testkit::receiver::{Received, receiver};
use bowtie_testkit::scoring::{health_when, logins, record};
use bowtie_testkit::success::{SuccessClient, Suite, ctas_of, red_playbook, start_success};
use bowtie_testkit::{TestDatabase, backend_test, within};
use hmac::{Hmac, Mac};

use crate::notify::{Smtpd, mails, smtpd_python};

backend_test!(
    a_red_accounts_cta_sends_its_steps_email_chat_message_and_signed_webhook_once,
    a_step_due_a_day_after_its_cta_opened_is_sent_when_it_comes_due_not_at_open,
    a_step_with_a_bad_address_url_or_no_secret_is_refused_naming_the_field,
    a_person_who_asked_for_a_digest_gets_one_email_a_day_overdue_first,
    a_webhook_secret_is_never_read_back_and_a_playbook_sent_back_unchanged_still_signs_with_it,
);

const DAY: i64 = 86_400;

/// Mail settings for the aiosmtpd on `port`, quick retries and schedule.
fn mail(s: &mut Settings, port: u16) {
    let n = &mut s.success_notify;
    n.smtp_host = "127.0.0.1".into();
    n.smtp_port = port;
    n.smtp_security = "none".into();
    n.dashboard_url = "http://bowtie.example/".into();
    n.retry_backoff_ms = 50;
    n.max_backoff_ms = 200;
    n.timeout_ms = 2000;
    n.schedule_interval_ms = 100;
}

/// Waits until the deliveries satisfy `ready`.
async fn deliveries_when(
    client: &mut SuccessClient,
    what: &str,
    ready: impl Fn(&[Delivery]) -> bool,
) -> anyhow::Result<Vec<Delivery>> {
    within(30, what, async {
        loop {
            let d = client
                .list_deliveries(ListDeliveriesRequest::default())
                .await?
                .into_inner()
                .deliveries;
            if ready(&d) {
                return anyhow::Ok(d);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
    .await?
}

/// A received request: its headers and its body as text.
type Request = (Vec<(String, String)>, String);

fn bodies(received: &Received) -> anyhow::Result<Vec<Request>> {
    Ok(received
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .map(|(h, b)| (h.clone(), String::from_utf8_lossy(b).into_owned()))
        .collect())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

fn step(title: &str, due_offset_days: i32, action: StepAction) -> Step {
    Step {
        title: title.into(),
        due_offset_days,
        action: action as i32,
        ..Step::default()
    }
}

async fn a_red_accounts_cta_sends_its_steps_email_chat_message_and_signed_webhook_once(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some(python) = smtpd_python() else {
        return Ok(());
    };
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let maildir = dir.path().join("mail");
    let _smtpd = Smtpd::start(&python, port, &maildir)?;
    let (chat_url, chat, _) = receiver(None).await?;
    let (hook_url, hook, _) = receiver(None).await?;
    let suite = Suite::start_with(db, |s| mail(s, port)).await?;

    let mut spec = red_playbook("Save red accounts");
    spec.steps = vec![
        Step {
            email_to: "exec@acme.io".into(),
            subject: "Save {account}".into(),
            body: "{step} for {account} ({owner}): {reason}\n{link}\n".into(),
            ..step("Email the sponsor", 0, StepAction::Email)
        },
        Step {
            webhook_url: chat_url.clone(),
            body: "{account} needs a save: {link}".into(),
            ..step("Tell the team", 0, StepAction::Chat)
        },
        Step {
            webhook_url: hook_url.clone(),
            webhook_secret: "s3cret".into(),
            ..step("Open a CRM task", 0, StepAction::Webhook)
        },
        step("Executive check-in", 7, StepAction::Email),
    ];
    suite.playbook(spec).await?;
    let acme = suite
        .account("Acme", Segment::MidMarket, "ana@acme.io")
        .await?;
    // Ten logins 40 days ago and none since: RED, which opens the CTA.
    let mut scoring = suite.scoring();
    record(&mut scoring, logins("acme-before", &acme, 10, 40)).await?;
    health_when(&mut scoring, &acme, "a red score", |h| h.score == 17).await?;

    // The three steps due at once are delivered (the receivers refuse their
    // first attempt), beside the new-CTA email to the owner.
    let mut client = suite.client();
    let delivered = deliveries_when(&mut client, "the steps delivered", |d| {
        d.iter()
            .filter(|d| d.status == DeliveryStatus::Delivered as i32)
            .count()
            == 4
    })
    .await?;
    let mut about: Vec<(String, i32, String)> = delivered
        .iter()
        .map(|d| (d.about.clone(), d.channel, d.recipient.clone()))
        .collect();
    about.sort();
    let host = |url: &str| url.split('/').nth(2).unwrap_or_default().to_owned();
    assert_eq!(
        about,
        [
            (
                "cta.opened".to_owned(),
                Channel::Email as i32,
                "ana@acme.io".to_owned()
            ),
            (
                "step 0".to_owned(),
                Channel::Email as i32,
                "exec@acme.io".to_owned()
            ),
            ("step 1".to_owned(), Channel::Chat as i32, host(&chat_url)),
            (
                "step 2".to_owned(),
                Channel::Webhook as i32,
                host(&hook_url)
            ),
        ]
    );
    let cta_id = delivered[0].cta_id.clone();
    assert!(delivered.iter().all(|d| d.cta_id == cta_id));

    // The email, its templates filled.
    let mail = within(10, "the step's email", async {
        loop {
            if let Some(m) = mails(&maildir)
                .into_iter()
                .find(|m| m.contains("To: exec@acme.io"))
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    assert!(mail.contains("Subject: Save Acme"), "{mail}");
    assert!(
        mail.contains(&format!(
            "Email the sponsor for Acme (ana@acme.io): health fell into red at 17\nhttp://bowtie.example/#account={acme}"
        )),
        "{mail}"
    );

    // The chat message, after the refused first attempt.
    let posted = bodies(&chat)?;
    assert_eq!(posted.len(), 2, "{posted:?}");
    let message: serde_json::Value = serde_json::from_str(&posted[1].1)?;
    assert_eq!(
        message["text"].as_str(),
        Some(format!("Acme needs a save: http://bowtie.example/#account={acme}").as_str())
    );

    // The webhook: the CTA and the account as JSON, signed over
    // "<timestamp>.<body>" with the step's secret.
    let calls = bodies(&hook)?;
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (headers, body) = &calls[1];
    let timestamp = header(headers, "x-bowtie-timestamp");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret")?;
    mac.update(format!("{timestamp}.{body}").as_bytes());
    assert_eq!(
        header(headers, "x-bowtie-signature"),
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    let json: serde_json::Value = serde_json::from_str(body)?;
    assert_eq!(json["event_type"], "cta.step_due");
    assert_eq!(json["step"]["index"], 2);
    assert_eq!(json["step"]["title"], "Open a CRM task");
    assert_eq!(json["cta"]["id"], cta_id.as_str());
    assert_eq!(json["cta"]["owner"], "ana@acme.io");
    assert_eq!(json["cta"]["priority"], "HIGH");
    assert_eq!(json["account"]["id"], acme.as_str());
    assert_eq!(json["account"]["name"], "Acme");
    assert_eq!(json["account"]["csm"], "ana@acme.io");

    // Nothing is sent again, and the step due in 7 days waits.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(bodies(&chat)?.len(), 2);
    assert_eq!(bodies(&hook)?.len(), 2);
    assert_eq!(mails(&maildir).len(), 2);
    let all = client
        .list_deliveries(ListDeliveriesRequest::default())
        .await?
        .into_inner()
        .deliveries;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(!all.iter().any(|d| d.about == "step 3"));
    Ok(())
}

async fn a_step_due_a_day_after_its_cta_opened_is_sent_when_it_comes_due_not_at_open(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some(python) = smtpd_python() else {
        return Ok(());
    };
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let maildir = dir.path().join("mail");
    let _smtpd = Smtpd::start(&python, port, &maildir)?;
    let (chat_url, chat, _) = receiver(None).await?;
    let suite = Suite::start_with(db, |s| mail(s, port)).await?;

    // When the champion leaves: a CTA with a chat message and an email to
    // the sponsor, both a day after the CTA opens.
    let mut spec = red_playbook("Replace the champion");
    spec.trigger = Some(Trigger {
        kind: TriggerKind::ChampionLeft as i32,
        ..Trigger::default()
    });
    spec.auto_close = 0;
    spec.steps = vec![
        Step {
            webhook_url: chat_url.clone(),
            body: "{account}: {step}".into(),
            ..step("Find the new champion", 1, StepAction::Chat)
        },
        Step {
            email_to: "exec@acme.io".into(),
            subject: "{account} lost its champion".into(),
            body: "{step}: {reason}\n".into(),
            ..step("Write to the sponsor", 1, StepAction::Email)
        },
    ];
    suite.playbook(spec).await?;
    let acme = suite
        .account("Acme", Segment::MidMarket, "ana@acme.io")
        .await?;
    let mut accounts = suite.accounts.accounts();
    let champion = create_contact(&mut accounts, contact(&acme, "Jo Park")).await?;
    // She left a day ago less 8 seconds: the CTA opens then, so its steps,
    // a day later, come due 8 seconds from now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let left = now - DAY + 8;
    accounts
        .mark_contact_left(MarkContactLeftRequest {
            id: champion.id.clone(),
            left_time: Some(prost_types::Timestamp {
                seconds: left,
                nanos: 0,
            }),
            idempotency_key: String::new(),
        })
        .await?;
    let mut client = suite.client();
    let cta = within(20, "the CTA", async {
        loop {
            if let Some(cta) = ctas_of(&mut client, &acme).await?.into_iter().next() {
                return anyhow::Ok(cta);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
    .await??;
    let due: Vec<i64> = cta
        .tasks
        .iter()
        .map(|t| t.due_time.as_ref().map_or(0, |d| d.seconds))
        .collect();
    assert_eq!(due, [left + DAY, left + DAY]);

    // At open only the owner's new-CTA email goes out; the steps wait.
    let opened = deliveries_when(&mut client, "the new-CTA email", |d| {
        d.iter()
            .any(|d| d.about == "cta.opened" && d.status == DeliveryStatus::Delivered as i32)
    })
    .await?;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    assert!(
        before < left + DAY,
        "the test ran too slowly to see the wait"
    );
    assert!(
        !opened.iter().any(|d| d.about.starts_with("step")),
        "{opened:?}"
    );
    assert!(bodies(&chat)?.is_empty());

    // Once due, each step is sent, once.
    let sent = deliveries_when(&mut client, "the steps delivered", |d| {
        d.iter()
            .filter(|d| d.about.starts_with("step") && d.status == DeliveryStatus::Delivered as i32)
            .count()
            == 2
    })
    .await?;
    let mut steps: Vec<(String, i32, i64)> = sent
        .iter()
        .filter(|d| d.about.starts_with("step"))
        .map(|d| {
            (
                d.about.clone(),
                d.channel,
                d.deliver_time.as_ref().map_or(0, |t| t.seconds),
            )
        })
        .collect();
    steps.sort();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.0.as_str(), s.1))
            .collect::<Vec<_>>(),
        [
            ("step 0", Channel::Chat as i32),
            ("step 1", Channel::Email as i32)
        ]
    );
    assert!(
        steps.iter().all(|s| s.2 >= left + DAY),
        "delivered before they were due: {steps:?}"
    );
    let posted = bodies(&chat)?;
    let message: serde_json::Value =
        serde_json::from_str(&posted.last().map(|p| p.1.clone()).unwrap_or_default())?;
    assert_eq!(
        message["text"].as_str(),
        Some("Acme: Find the new champion")
    );
    let mail = within(10, "the step's email", async {
        loop {
            if let Some(m) = mails(&maildir)
                .into_iter()
                .find(|m| m.contains("To: exec@acme.io"))
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    assert!(mail.contains("Subject: Acme lost its champion"), "{mail}");
    assert!(
        mail.contains("Write to the sponsor: Jo Park (jo.park@example.com) left the company"),
        "{mail}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let all = client
        .list_deliveries(ListDeliveriesRequest::default())
        .await?
        .into_inner()
        .deliveries;
    assert_eq!(all.len(), 3, "{all:?}");
    Ok(())
}

/// The webhook steps of `playbook`: (URL, secret as read, whether one is set).
fn hooks(playbook: &Playbook) -> Vec<(String, String, bool)> {
    playbook
        .spec
        .iter()
        .flat_map(|s| &s.steps)
        .filter(|s| s.action == StepAction::Webhook as i32)
        .map(|s| {
            (
                s.webhook_url.clone(),
                s.webhook_secret.clone(),
                s.webhook_secret_set,
            )
        })
        .collect()
}

async fn a_webhook_secret_is_never_read_back_and_a_playbook_sent_back_unchanged_still_signs_with_it(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    const SECRET: &str = "s3cret-only-the-receiver-knows";
    let (hook_url, hook, _) = receiver(None).await?;
    let suite = Suite::start_with(db, |s| {
        s.success_notify.retry_backoff_ms = 50;
        s.success_notify.schedule_interval_ms = 100;
    })
    .await?;
    let mut spec = red_playbook("Save red accounts");
    spec.steps = vec![Step {
        webhook_url: hook_url.clone(),
        webhook_secret: SECRET.into(),
        ..step("Open a CRM task", 0, StepAction::Webhook)
    }];
    // Even the answer to the create does not carry it back.
    let created = suite.playbook(spec).await?;
    let redacted = vec![(hook_url.clone(), String::new(), true)];
    assert_eq!(hooks(&created), redacted);

    // A read key sees that a secret is set, never the secret.
    let mut reader = suite.reader();
    let got = reader
        .get_playbook(GetPlaybookRequest {
            id: created.id.clone(),
        })
        .await?
        .into_inner()
        .playbook
        .unwrap_or_default();
    assert_eq!(hooks(&got), redacted);
    let listed = reader
        .list_playbooks(ListPlaybooksRequest {})
        .await?
        .into_inner()
        .playbooks;
    assert_eq!(listed.len(), 1);
    assert_eq!(hooks(&listed[0]), redacted);

    // Sent back as read, the playbook keeps its secret; a step whose URL is
    // new must bring one.
    let mut writer = suite.admin();
    let mut moved = got.spec.clone().unwrap_or_default();
    moved.steps[0].webhook_url = "https://crm.example/elsewhere".into();
    invalid_field(
        writer
            .update_playbook(UpdatePlaybookRequest {
                id: got.id.clone(),
                spec: Some(moved),
                expected_version: 1,
                idempotency_key: String::new(),
            })
            .await,
        "spec.steps[0].webhook_secret",
    );
    let updated = writer
        .update_playbook(UpdatePlaybookRequest {
            id: got.id.clone(),
            spec: got.spec.clone(),
            expected_version: 1,
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .playbook
        .unwrap_or_default();
    assert_eq!(updated.version, 2);
    assert_eq!(hooks(&updated), redacted);
    let versions = reader
        .list_playbook_versions(ListPlaybookVersionsRequest { id: got.id.clone() })
        .await?
        .into_inner()
        .versions;
    assert_eq!(versions.len(), 2);
    assert!(versions.iter().all(|v| hooks(v) == redacted));

    // Nor does the feed: the playbook events carry no secret.
    let mut feed = reader
        .watch_events(WatchEventsRequest::default())
        .await?
        .into_inner();
    let mut playbook_events = 0;
    while playbook_events < 2 {
        let event = within(10, "the playbook events", feed.message())
            .await??
            .and_then(|m| m.event)
            .ok_or_else(|| anyhow::anyhow!("the feed ended"))?;
        if event.aggregate_type == "playbook" {
            playbook_events += 1;
            let payload = event.payload.map(|p| p.value).unwrap_or_default();
            assert!(!payload.is_empty());
            assert!(
                !String::from_utf8_lossy(&payload).contains(SECRET),
                "{} carries the secret",
                event.event_type
            );
        }
    }

    // Version 2 still signs its webhook with the secret stored at creation.
    let acme = suite
        .account("Acme", Segment::MidMarket, "ana@acme.io")
        .await?;
    let mut scoring = suite.scoring();
    record(&mut scoring, logins("acme-before", &acme, 10, 40)).await?;
    health_when(&mut scoring, &acme, "a red score", |h| h.score == 17).await?;
    let mut client = suite.client();
    deliveries_when(&mut client, "the webhook delivered", |d| {
        d.iter().any(|d| {
            d.channel == Channel::Webhook as i32 && d.status == DeliveryStatus::Delivered as i32
        })
    })
    .await?;
    let calls = bodies(&hook)?;
    let (headers, body) = calls.last().ok_or_else(|| anyhow::anyhow!("no call"))?;
    let json: serde_json::Value = serde_json::from_str(body)?;
    assert_eq!(json["cta"]["playbook_version"], 2);
    let timestamp = header(headers, "x-bowtie-timestamp");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes())?;
    mac.update(format!("{timestamp}.{body}").as_bytes());
    assert_eq!(
        header(headers, "x-bowtie-signature"),
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    Ok(())
}

async fn a_step_with_a_bad_address_url_or_no_secret_is_refused_naming_the_field(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut admin = suite.admin();
    let create = |steps: Vec<Step>| {
        let mut spec = red_playbook("A");
        spec.steps = steps;
        CreatePlaybookRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        }
    };
    let task = step("Call the champion", 1, StepAction::Unspecified);
    let bad_address = Step {
        email_to: "not an address".into(),
        ..step("Email", 0, StepAction::Email)
    };
    invalid_field(
        admin
            .create_playbook(create(vec![task.clone(), bad_address]))
            .await,
        "spec.steps[1].email_to",
    );
    let ftp = Step {
        webhook_url: "ftp://hooks.example/x".into(),
        ..step("Chat", 0, StepAction::Chat)
    };
    invalid_field(
        admin.create_playbook(create(vec![ftp])).await,
        "spec.steps[0].webhook_url",
    );
    let no_secret = Step {
        webhook_url: "https://crm.example/hooks".into(),
        ..step("Hook", 0, StepAction::Webhook)
    };
    invalid_field(
        admin
            .create_playbook(create(vec![task.clone(), task.clone(), no_secret]))
            .await,
        "spec.steps[2].webhook_secret",
    );
    let unknown_name = Step {
        subject: "Hi {name}".into(),
        ..step("Email", 0, StepAction::Email)
    };
    invalid_field(
        admin.create_playbook(create(vec![unknown_name])).await,
        "spec.steps[0].subject",
    );
    let unknown_action = Step {
        action: 42,
        ..task.clone()
    };
    invalid_field(
        admin.create_playbook(create(vec![unknown_action])).await,
        "spec.steps[0].action",
    );
    invalid_field(
        suite
            .client()
            .set_notification_settings(SetNotificationSettingsRequest {
                settings: Some(NotificationSettings {
                    person: "ana@acme.io".into(),
                    daily_digest: true,
                    digest_hour_utc: 24,
                    ..NotificationSettings::default()
                }),
            })
            .await,
        "settings.digest_hour_utc",
    );
    Ok(())
}

async fn a_person_who_asked_for_a_digest_gets_one_email_a_day_overdue_first(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some(python) = smtpd_python() else {
        return Ok(());
    };
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let maildir = dir.path().join("mail");
    let _smtpd = Smtpd::start(&python, port, &maildir)?;
    let mut suite = Suite::start_with(db, |s| mail(s, port)).await?;
    let acme = suite
        .account("Acme Logistics", Segment::Smb, "ana@acme.io")
        .await?;
    let globex = suite.account("Globex", Segment::Smb, "ana@acme.io").await?;
    let mut client = suite.client();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    // Ana filters the per-CTA emails to RISK CTAs, and once her CTAs below
    // exist asks for a digest.
    let ana = |daily_digest: bool| SetNotificationSettingsRequest {
        settings: Some(NotificationSettings {
            person: "ana@acme.io".into(),
            cta_types: vec![CtaType::Risk as i32],
            daily_digest,
            digest_hour_utc: 0,
            ..NotificationSettings::default()
        }),
    };
    client.set_notification_settings(ana(false)).await?;
    for (account, reason, owner, due) in [
        (&globex, "renewal in 30 days", "ana@acme.io", now + 3 * DAY),
        (&acme, "QBR not booked", "ana@acme.io", now - 2 * DAY),
        (&acme, "someone else's", "bo@acme.io", now - DAY),
    ] {
        client
            .create_cta(CreateCtaRequest {
                account_id: account.clone(),
                r#type: CtaType::Renewal as i32,
                reason: reason.into(),
                priority: Priority::Medium as i32,
                owner: owner.into(),
                due_time: Some(prost_types::Timestamp {
                    seconds: due,
                    nanos: 0,
                }),
                idempotency_key: String::new(),
            })
            .await?;
    }
    client.set_notification_settings(ana(true)).await?;
    let digests = |dir: &std::path::Path| {
        mails(dir)
            .into_iter()
            .filter(|m| m.contains("Subject: [Bowtie] Your CTAs on"))
            .collect::<Vec<_>>()
    };
    let digest = within(30, "the digest", async {
        loop {
            if let Some(m) = digests(&maildir).into_iter().next() {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    let day = chrono::DateTime::from_timestamp(now, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    assert!(digest.contains("To: ana@acme.io"), "{digest}");
    assert!(
        digest.contains(&format!(
            "Subject: [Bowtie] Your CTAs on {day}: 1 overdue, 1 open"
        )),
        "{digest}"
    );
    let short = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    assert!(
        digest.contains(&format!(
            "Overdue (1):\n- Acme Logistics | opened by hand | due {} | QBR not booked\n\n\
             Open (1):\n- Globex | opened by hand | due {} | renewal in 30 days\n",
            short(now - 2 * DAY),
            short(now + 3 * DAY)
        )),
        "{digest}"
    );
    assert!(!digest.contains("someone else's"), "{digest}");
    let delivered = deliveries_when(&mut client, "the digest delivered", |d| {
        d.iter().any(|d| {
            d.about == format!("digest {day}") && d.status == DeliveryStatus::Delivered as i32
        })
    })
    .await?;
    assert!(
        delivered
            .iter()
            .any(|d| d.about.starts_with("digest") && d.cta_id.is_empty())
    );

    // A restart (and many schedule rounds) queues no second digest today.
    let mut settings = db.server_settings()?;
    settings.peers.accounts = suite.accounts.uri();
    settings.peers.scoring = suite.scoring.uri();
    mail(&mut settings, port);
    suite.success.stop().await?;
    suite.success = start_success(&settings).await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(digests(&maildir).len(), 1);
    let after = suite
        .client()
        .list_deliveries(ListDeliveriesRequest::default())
        .await?
        .into_inner()
        .deliveries;
    assert_eq!(
        after
            .iter()
            .filter(|d| d.about.starts_with("digest"))
            .count(),
        1,
        "{after:?}"
    );
    Ok(())
}
