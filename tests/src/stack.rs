//! Every service of the suite started side by side on one test database
//! (each on its own schema or file), wired to each other as `bowtie dev`
//! wires them, for tests of the `bowtie` command's library (demo seeding,
//! CSV import, reports) that talk to all of them.

use bowtie::client::Target;
use bowtie_runtime::config::Settings;

use crate::revenue::REVENUE_SERVICE;
use crate::scoring::start_scoring;
use crate::success::start_success;
use crate::{ADMIN_KEY, TestDatabase, TestServer};

/// The funnel's full gRPC name.
pub const FUNNEL_SERVICE: &str = "bowtie.funnel.v1.FunnelService";

/// Accounts, revenue, funnel, scoring and success, each following the others.
pub struct Stack {
    /// The accounts server.
    pub accounts: TestServer,
    /// The revenue server.
    pub revenue: TestServer,
    /// The funnel server.
    pub funnel: TestServer,
    /// The scoring server.
    pub scoring: TestServer,
    /// The success server.
    pub success: TestServer,
    settings: Settings,
}

impl Stack {
    /// Starts accounts, revenue, funnel, scoring and success on `db`. Funnel and
    /// scoring follow each other's feeds, so scoring's port is chosen
    /// before funnel starts (a free port the system hands out, then
    /// released for scoring to bind).
    pub async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        let mut settings = db.server_settings()?;
        let accounts = TestServer::start_with(&settings).await?;
        settings.peers.accounts = accounts.uri();
        let revenue =
            TestServer::start_service(REVENUE_SERVICE, &settings, bowtie_revenue::build).await?;
        settings.peers.revenue = revenue.uri();
        let scoring_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        settings.scoring.listen = scoring_addr;
        settings.peers.scoring = format!("http://{scoring_addr}");
        let funnel =
            TestServer::start_service(FUNNEL_SERVICE, &settings, bowtie_funnel::build).await?;
        settings.peers.funnel = funnel.uri();
        let scoring = start_scoring(&settings).await?;
        settings.peers.scoring = scoring.uri();
        let success = start_success(&settings).await?;
        settings.peers.success = success.uri();
        Ok(Self {
            accounts,
            revenue,
            funnel,
            scoring,
            success,
            settings,
        })
    }

    /// The services as the `bowtie` command reaches them, with `key`.
    pub fn target_with(&self, key: &str) -> Target {
        Target::new(&self.settings.peers, key)
    }

    /// The services with [`ADMIN_KEY`] (seeding the demo trains the churn
    /// model, an admin call).
    pub fn target(&self) -> Target {
        self.target_with(ADMIN_KEY)
    }
}
