//! Helpers for the success service's integration tests: accounts, scoring
//! and success servers started side by side (success follows scoring's and
//! accounts' feeds), playbook and CTA builders, and a poller for CTAs.

use std::time::Duration;

use anyhow::Context as _;
use bowtie_proto::accounts::Account;
use bowtie_proto::common::Segment;
use bowtie_proto::success::success_service_client::SuccessServiceClient;
use bowtie_proto::success::{
    AutoClose, CreatePlaybookRequest, Cta, CtaType, ListCtasRequest, Playbook, PlaybookMode,
    PlaybookSpec, Priority, Step, Trigger, TriggerKind,
};
use bowtie_runtime::config::Settings;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::scoring::{ScoringClient, start_scoring};
use crate::{ADMIN_KEY, Bearer, READ_KEY, TestDatabase, TestServer, WRITE_KEY, within};
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;

/// The gRPC name the success service reports health under.
pub const SUCCESS_SERVICE: &str = "bowtie.success.v1.SuccessService";

/// A success client carrying an API key.
pub type SuccessClient = SuccessServiceClient<InterceptedService<Channel, Bearer>>;

/// The accounts, scoring and success servers of one test.
pub struct Suite {
    /// The accounts server.
    pub accounts: TestServer,
    /// The scoring server.
    pub scoring: TestServer,
    /// The success server.
    pub success: TestServer,
}

impl Suite {
    /// Starts accounts, scoring and success on `db`, each on its own database.
    pub async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        Self::start_with(db, |_| {}).await
    }

    /// Like [`Suite::start`], with the settings adjusted by `tweak`.
    pub async fn start_with(
        db: &TestDatabase,
        tweak: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        let mut settings = db.server_settings()?;
        let accounts = TestServer::start_with(&settings).await?;
        settings.peers.accounts = accounts.uri();
        let scoring = start_scoring(&settings).await?;
        settings.peers.scoring = scoring.uri();
        tweak(&mut settings);
        let success = start_success(&settings).await?;
        Ok(Self {
            accounts,
            scoring,
            success,
        })
    }

    /// A success client with the write key.
    pub fn client(&self) -> SuccessClient {
        SuccessServiceClient::new(self.success.with_key(WRITE_KEY))
    }

    /// A success client with the admin key.
    pub fn admin(&self) -> SuccessClient {
        SuccessServiceClient::new(self.success.with_key(ADMIN_KEY))
    }

    /// A success client with the read key.
    pub fn reader(&self) -> SuccessClient {
        SuccessServiceClient::new(self.success.with_key(READ_KEY))
    }

    /// A success client presenting the key of person `name`
    /// (`people::with_people`).
    pub fn as_person(&self, name: &str) -> SuccessClient {
        SuccessServiceClient::new(self.success.with_key(&crate::people::secret(name)))
    }

    /// A scoring client with the write key.
    pub fn scoring(&self) -> ScoringClient {
        ScoringServiceClient::new(self.scoring.with_key(WRITE_KEY))
    }

    /// Creates an account in `segment` looked after by `csm`; returns its id.
    pub async fn account(&self, name: &str, segment: Segment, csm: &str) -> anyhow::Result<String> {
        let account = Account {
            name: name.to_owned(),
            segment: segment as i32,
            csm: csm.to_owned(),
            ..Account::default()
        };
        Ok(
            crate::fixtures::create_account(&mut self.accounts.accounts(), account)
                .await?
                .id,
        )
    }

    /// Creates a playbook; returns it.
    pub async fn playbook(&self, spec: PlaybookSpec) -> anyhow::Result<Playbook> {
        self.admin()
            .create_playbook(CreatePlaybookRequest {
                spec: Some(spec),
                idempotency_key: String::new(),
            })
            .await?
            .into_inner()
            .playbook
            .context("CreatePlaybook returned no playbook")
    }
}

/// Accounts, revenue, scoring and success started side by side: scoring
/// ranks accounts into value tiers by the MRR on revenue's feed, success
/// follows both feeds.
pub struct ValueSuite {
    /// Accounts, scoring and success.
    pub suite: Suite,
    /// The revenue server.
    pub revenue: TestServer,
}

impl ValueSuite {
    /// Starts accounts, revenue, scoring and success on `db`.
    pub async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        Self::start_with(db, |_| {}).await
    }

    /// Like [`ValueSuite::start`], with success's settings adjusted by `tweak`.
    pub async fn start_with(
        db: &TestDatabase,
        tweak: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        let mut settings = db.server_settings()?;
        let accounts = TestServer::start_with(&settings).await?;
        settings.peers.accounts = accounts.uri();
        let revenue = TestServer::start_service(
            crate::revenue::REVENUE_SERVICE,
            &settings,
            bowtie_revenue::build,
        )
        .await?;
        settings.peers.revenue = revenue.uri();
        let scoring = start_scoring(&settings).await?;
        settings.peers.scoring = scoring.uri();
        tweak(&mut settings);
        let success = start_success(&settings).await?;
        Ok(Self {
            suite: Suite {
                accounts,
                scoring,
                success,
            },
            revenue,
        })
    }

    /// A revenue client with the write key.
    pub fn billing(&self) -> crate::revenue::RevenueClient {
        bowtie_proto::revenue::revenue_service_client::RevenueServiceClient::new(
            self.revenue.with_key(WRITE_KEY),
        )
    }
}

/// A LIFECYCLE playbook ("VIP care") that opens a thank-you CTA due in 14
/// days when `trigger` fires: no auto-close, no enrollment limit.
pub fn vip_playbook(name: &str, trigger: Trigger) -> PlaybookSpec {
    PlaybookSpec {
        name: name.to_owned(),
        description: "Thank our most valuable customers".into(),
        trigger: Some(trigger),
        cta_type: CtaType::Lifecycle as i32,
        priority: Priority::Medium as i32,
        sla_days: 14,
        steps: vec![Step {
            title: "Send a thank-you note from the founder".into(),
            due_offset_days: 2,
            ..Step::default()
        }],
        auto_close: 0,
        ..red_playbook(name)
    }
}

/// Starts a success server with `settings`.
pub async fn start_success(settings: &Settings) -> anyhow::Result<TestServer> {
    TestServer::start_service(SUCCESS_SERVICE, settings, bowtie_success::build).await
}

/// A playbook that opens a HIGH risk CTA due in 7 days with two tasks when
/// an account enters red, and closes it when the account leaves red.
pub fn red_playbook(name: &str) -> PlaybookSpec {
    PlaybookSpec {
        name: name.to_owned(),
        description: "Call every account that turns red within a week".into(),
        trigger: Some(Trigger {
            kind: TriggerKind::EnteredRed as i32,
            ..Trigger::default()
        }),
        filter: None,
        cta_type: CtaType::Risk as i32,
        priority: Priority::High as i32,
        owner_pool: vec!["pool@acme.io".into()],
        sla_days: 7,
        steps: vec![
            Step {
                title: "Call the champion".into(),
                due_offset_days: 1,
                ..Step::default()
            },
            Step {
                title: "Agree a save plan".into(),
                due_offset_days: 3,
                ..Step::default()
            },
        ],
        auto_close: AutoClose::HealthOutOfRed as i32,
        risk_threshold_bp: 0,
        enrollment_limit_days: 0,
        mode: PlaybookMode::On as i32,
        holdout_percent: 0,
    }
}

/// The CTAs of an account that are not closed, or of any status with `all`.
pub async fn ctas_of(client: &mut SuccessClient, account: &str) -> anyhow::Result<Vec<Cta>> {
    Ok(client
        .list_ctas(ListCtasRequest {
            account_id: account.to_owned(),
            ..ListCtasRequest::default()
        })
        .await?
        .into_inner()
        .ctas)
}

/// Waits until the account's CTAs (listed with `request`) satisfy `ready`.
pub async fn ctas_when(
    client: &mut SuccessClient,
    request: ListCtasRequest,
    what: &str,
    ready: impl Fn(&[Cta]) -> bool,
) -> anyhow::Result<Vec<Cta>> {
    within(20, what, async {
        loop {
            let ctas = client.list_ctas(request.clone()).await?.into_inner().ctas;
            if ready(&ctas) {
                return anyhow::Ok(ctas);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
    .await?
}
