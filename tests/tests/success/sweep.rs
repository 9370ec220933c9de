//! The time-based triggers, fired by the success sweep from what the feeds
//! told it: a renewal coming up within a playbook's days opens one renewal
//! CTA (once per renewal date, across sweeps and restarts) that revenue
//! recording the renewal closes by itself; an account stuck in onboarding
//! past a playbook's days opens an onboarding CTA, one that reached IMPACT
//! or entered onboarding recently does not.

use std::time::Duration;

use anyhow::Context as _;
use bowtie_proto::common::{Segment, Stage};
use bowtie_proto::funnel::RecordTransitionRequest;
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::revenue::{RecordRenewalOutcomeRequest, RenewalOutcome};
use bowtie_proto::scoring::SignalType;
use bowtie_proto::success::{
    AutoClose, CtaStatus, CtaType, ListCtasRequest, Outcome, PlaybookSpec, Trigger, TriggerKind,
    UpdateCtaStatusRequest,
};
use bowtie_runtime::Instant;
use bowtie_runtime::config::Settings;
use bowtie_testkit::revenue::{REVENUE_SERVICE, create, monthly};
use bowtie_testkit::scoring::{record, signal};
use bowtie_testkit::stack::FUNNEL_SERVICE;
use bowtie_testkit::success::{Suite, ctas_of, ctas_when, red_playbook, start_success};
use bowtie_testkit::{TestDatabase, TestServer, WRITE_KEY, backend_test};
use prost_types::Timestamp;

backend_test!(
    a_renewal_within_the_playbooks_days_opens_one_cta_that_recording_the_renewal_closes,
    a_renewal_fires_once_per_date_across_sweeps_and_restarts,
    an_account_stuck_in_onboarding_past_the_playbooks_days_gets_an_onboarding_cta,
    a_complaint_left_unresolved_past_the_playbooks_days_opens_a_cta,
);

const DAY: i64 = 86_400;

/// Accounts, revenue, funnel and success, the sweep running every second.
struct Timed {
    accounts: TestServer,
    revenue: TestServer,
    funnel: TestServer,
    success: Option<TestServer>,
    settings: Settings,
}

impl Timed {
    async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        let mut settings = db.server_settings()?;
        settings.success_policy.sweep_interval_seconds = 1;
        let accounts = TestServer::start_with(&settings).await?;
        settings.peers.accounts = accounts.uri();
        let revenue =
            TestServer::start_service(REVENUE_SERVICE, &settings, bowtie_revenue::build).await?;
        settings.peers.revenue = revenue.uri();
        let funnel =
            TestServer::start_service(FUNNEL_SERVICE, &settings, bowtie_funnel::build).await?;
        settings.peers.funnel = funnel.uri();
        let success = start_success(&settings).await?;
        Ok(Self {
            accounts,
            revenue,
            funnel,
            success: Some(success),
            settings,
        })
    }

    fn success(&self) -> anyhow::Result<&TestServer> {
        self.success.as_ref().context("success is stopped")
    }

    /// The success service stopped and started again on its database.
    async fn restart_success(&mut self) -> anyhow::Result<()> {
        if let Some(old) = self.success.take() {
            old.stop().await?;
        }
        self.success = Some(start_success(&self.settings).await?);
        Ok(())
    }

    fn client(&self) -> anyhow::Result<bowtie_testkit::success::SuccessClient> {
        Ok(
            bowtie_proto::success::success_service_client::SuccessServiceClient::new(
                self.success()?.with_key(WRITE_KEY),
            ),
        )
    }

    async fn account(&self, name: &str, csm: &str) -> anyhow::Result<String> {
        let suite_like = bowtie_proto::accounts::CreateAccountRequest {
            account: Some(bowtie_proto::accounts::Account {
                name: name.to_owned(),
                segment: Segment::MidMarket as i32,
                csm: csm.to_owned(),
                ..Default::default()
            }),
            idempotency_key: String::new(),
        };
        Ok(self
            .accounts
            .accounts()
            .create_account(suite_like)
            .await?
            .into_inner()
            .account
            .context("CreateAccount returned no account")?
            .id)
    }

    /// A monthly subscription of the account started 300 days ago whose
    /// term ends at `term_end`; returns its id.
    async fn subscription(&self, account: &str, term_end: Timestamp) -> anyhow::Result<String> {
        let mut revenue = RevenueServiceClient::new(self.revenue.with_key(WRITE_KEY));
        let mut s = monthly(account, seconds(now() - 300 * DAY), 5, 10_000);
        s.term_end_at = Some(term_end);
        Ok(revenue
            .create_subscription(create(s))
            .await?
            .into_inner()
            .subscription
            .context("CreateSubscription returned no subscription")?
            .id)
    }

    async fn transition(&self, account: &str, stage: Stage, days_ago: i64) -> anyhow::Result<()> {
        let mut funnel = FunnelServiceClient::new(self.funnel.with_key(WRITE_KEY));
        funnel
            .record_transition(RecordTransitionRequest {
                account_id: account.to_owned(),
                to_stage: stage as i32,
                occurred_at: Some(seconds(now() - days_ago * DAY)),
                ..Default::default()
            })
            .await?;
        Ok(())
    }
}

fn now() -> i64 {
    Instant::now().micros() / 1_000_000
}

fn seconds(s: i64) -> Timestamp {
    Timestamp {
        seconds: s,
        nanos: 0,
    }
}

/// Midnight UTC `days` days from today.
fn midnight_in(days: i64) -> Timestamp {
    seconds(now().div_euclid(DAY) * DAY + days * DAY)
}

/// The calendar date of a timestamp, `2026-01-31`.
fn date_of(t: Timestamp) -> String {
    Instant::from_micros(t.seconds * 1_000_000).to_string()[..10].to_owned()
}

/// A playbook of `kind` with `days`, opening HIGH CTAs of `cta_type` due in
/// 14 days, closing them by `auto_close`.
fn timed_playbook(
    name: &str,
    kind: TriggerKind,
    days: i32,
    cta_type: CtaType,
    auto_close: AutoClose,
) -> PlaybookSpec {
    PlaybookSpec {
        trigger: Some(Trigger {
            kind: kind as i32,
            days,
            ..Trigger::default()
        }),
        cta_type: cta_type as i32,
        sla_days: 14,
        auto_close: auto_close as i32,
        ..red_playbook(name)
    }
}

async fn create_playbook(timed: &Timed, spec: PlaybookSpec) -> anyhow::Result<String> {
    let mut admin = bowtie_proto::success::success_service_client::SuccessServiceClient::new(
        timed.success()?.with_key(bowtie_testkit::ADMIN_KEY),
    );
    Ok(admin
        .create_playbook(bowtie_proto::success::CreatePlaybookRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .playbook
        .context("CreatePlaybook returned no playbook")?
        .id)
}

fn of_account(account: &str) -> ListCtasRequest {
    ListCtasRequest {
        account_id: account.to_owned(),
        ..ListCtasRequest::default()
    }
}

async fn a_renewal_within_the_playbooks_days_opens_one_cta_that_recording_the_renewal_closes(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let timed = Timed::start(db).await?;
    let playbook = create_playbook(
        &timed,
        timed_playbook(
            "Renewal in 30 days",
            TriggerKind::RenewalDue,
            30,
            CtaType::Renewal,
            AutoClose::RenewalRecorded,
        ),
    )
    .await?;
    // Beta renews in 60 days, outside the playbook's 30; Acme in 10. Beta's
    // subscription is on revenue's feed first, so it has been seen by the
    // time Acme's CTA opens.
    let beta = timed.account("Beta", "bo@beta.io").await?;
    timed.subscription(&beta, midnight_in(60)).await?;
    let acme = timed.account("Acme", "ana@acme.io").await?;
    let renews = midnight_in(10);
    let subscription = timed.subscription(&acme, renews).await?;

    let mut client = timed.client()?;
    let ctas = ctas_when(&mut client, of_account(&acme), "Acme's renewal CTA", |c| {
        !c.is_empty()
    })
    .await?;
    assert_eq!(ctas.len(), 1);
    let cta = &ctas[0];
    assert_eq!(cta.playbook_id, playbook);
    assert_eq!(cta.owner, "ana@acme.io");
    assert_eq!(cta.r#type, CtaType::Renewal as i32);
    // Today's midnight plus 10 days is 9 days and some hours away: 10 days.
    assert_eq!(
        cta.reason,
        format!("renewal on {} (in 10 days)", date_of(renews))
    );
    assert!(ctas_of(&mut client, &beta).await?.is_empty());

    // Revenue records the renewal: the CTA closes by itself.
    let mut revenue = RevenueServiceClient::new(timed.revenue.with_key(WRITE_KEY));
    revenue
        .record_renewal_outcome(RecordRenewalOutcomeRequest {
            subscription_id: subscription,
            outcome: RenewalOutcome::Renewed as i32,
            decided_at: Some(seconds(now())),
            idempotency_key: String::new(),
        })
        .await?;
    let closed = ctas_when(
        &mut client,
        ListCtasRequest {
            status: CtaStatus::Closed as i32,
            ..of_account(&acme)
        },
        "the renewal CTA closed by itself",
        |c| c.len() == 1,
    )
    .await?;
    assert_eq!(closed[0].id, cta.id);
    assert_eq!(closed[0].outcome, Outcome::AutoClosed as i32);
    Ok(())
}

async fn a_renewal_fires_once_per_date_across_sweeps_and_restarts(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut timed = Timed::start(db).await?;
    create_playbook(
        &timed,
        timed_playbook(
            "Renewal in 30 days",
            TriggerKind::RenewalDue,
            30,
            CtaType::Renewal,
            AutoClose::Unspecified,
        ),
    )
    .await?;
    let acme = timed.account("Acme", "ana@acme.io").await?;
    timed.subscription(&acme, midnight_in(20)).await?;
    let mut client = timed.client()?;
    let first = ctas_when(&mut client, of_account(&acme), "the renewal CTA", |c| {
        !c.is_empty()
    })
    .await?;
    // Closed by a person: a later sweep must not open another for the date.
    client
        .update_cta_status(UpdateCtaStatusRequest {
            id: first[0].id.clone(),
            status: CtaStatus::Closed as i32,
            outcome: Outcome::NotNeeded as i32,
            expected_version: first[0].version,
            actor: "ana@acme.io".into(),
            ..UpdateCtaStatusRequest::default()
        })
        .await?;
    timed.restart_success().await?;
    // Three sweeps of the restarted service (one a second, one at start).
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let mut client = timed.client()?;
    let all = client
        .list_ctas(ListCtasRequest {
            status: CtaStatus::Closed as i32,
            ..of_account(&acme)
        })
        .await?
        .into_inner()
        .ctas;
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(ctas_of(&mut client, &acme).await?.is_empty());
    Ok(())
}

async fn an_account_stuck_in_onboarding_past_the_playbooks_days_gets_an_onboarding_cta(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let timed = Timed::start(db).await?;
    create_playbook(
        &timed,
        timed_playbook(
            "Onboarding stalled",
            TriggerKind::OnboardingStalled,
            14,
            CtaType::Onboarding,
            AutoClose::FirstValue,
        ),
    )
    .await?;
    // Beta entered onboarding 20 days ago and reached IMPACT 5 days ago;
    // Cara entered onboarding 3 days ago; Acme 20 days ago and is still there.
    let beta = timed.account("Beta", "bo@beta.io").await?;
    timed.transition(&beta, Stage::Commit, 21).await?;
    timed.transition(&beta, Stage::Onboarding, 20).await?;
    timed.transition(&beta, Stage::Impact, 5).await?;
    let cara = timed.account("Cara", "cy@cara.io").await?;
    timed.transition(&cara, Stage::Commit, 4).await?;
    timed.transition(&cara, Stage::Onboarding, 3).await?;
    let acme = timed.account("Acme", "ana@acme.io").await?;
    timed.transition(&acme, Stage::Commit, 21).await?;
    timed.transition(&acme, Stage::Onboarding, 20).await?;

    let mut client = timed.client()?;
    let ctas = ctas_when(
        &mut client,
        of_account(&acme),
        "Acme's onboarding CTA",
        |c| !c.is_empty(),
    )
    .await?;
    assert_eq!(ctas.len(), 1);
    assert_eq!(ctas[0].r#type, CtaType::Onboarding as i32);
    assert_eq!(
        ctas[0].reason,
        format!(
            "in onboarding since {} (20 days) without first value",
            date_of(seconds(now() - 20 * DAY))
        )
    );
    assert!(ctas_of(&mut client, &beta).await?.is_empty());
    assert!(ctas_of(&mut client, &cara).await?.is_empty());

    // Acme reaches IMPACT: first value closes its CTA.
    timed.transition(&acme, Stage::Impact, 0).await?;
    ctas_when(&mut client, of_account(&acme), "the CTA closed", |c| {
        c.is_empty()
    })
    .await?;
    Ok(())
}

async fn a_complaint_left_unresolved_past_the_playbooks_days_opens_a_cta(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start_with(db, |s| s.success_policy.sweep_interval_seconds = 1).await?;
    let mut spec = timed_playbook(
        "Complaint unresolved",
        TriggerKind::ComplaintUnresolved,
        7,
        CtaType::Risk,
        AutoClose::Unspecified,
    );
    spec.steps.clear();
    // Beta complained 10 days ago and it was resolved 8 days ago; Cara
    // complained 2 days ago; Acme's complaint of 10 days ago is still open.
    // The playbook comes after Beta's resolution had time to reach success.
    let beta = suite.account("Beta", Segment::Smb, "bo@beta.io").await?;
    let cara = suite.account("Cara", Segment::Smb, "cy@cara.io").await?;
    let acme = suite.account("Acme", Segment::Smb, "ana@acme.io").await?;
    let mut scoring = suite.scoring();
    record(
        &mut scoring,
        vec![
            signal("beta-c", &beta, SignalType::Complaint, 1, 10),
            signal("beta-r", &beta, SignalType::ComplaintResolved, 1, 8),
            signal("cara-c", &cara, SignalType::Complaint, 1, 2),
        ],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    suite.playbook(spec).await?;
    record(
        &mut scoring,
        vec![signal("acme-c", &acme, SignalType::Complaint, 1, 10)],
    )
    .await?;
    let mut client = suite.client();
    let ctas = ctas_when(
        &mut client,
        of_account(&acme),
        "Acme's complaint CTA",
        |c| !c.is_empty(),
    )
    .await?;
    assert_eq!(ctas.len(), 1);
    assert_eq!(ctas[0].owner, "ana@acme.io");
    assert_eq!(
        ctas[0].reason,
        format!(
            "complaint of {} unresolved after 10 days",
            date_of(seconds(now() - 10 * DAY))
        )
    );
    assert!(ctas_of(&mut client, &beta).await?.is_empty());
    assert!(ctas_of(&mut client, &cara).await?.is_empty());
    Ok(())
}
