//! Every service of the suite started side by side on one test database
//! (each on its own schema or file), wired to each other as `bowtie dev`
//! wires them, for tests of the `bowtie` command's library (demo seeding,
//! CSV import, reports) that talk to all of them.

use bowtie::client::Target;
use bowtie_runtime::config::Settings;

use crate::revenue::REVENUE_SERVICE;
use crate::{TestDatabase, TestServer, WRITE_KEY};

/// The funnel's full gRPC name.
pub const FUNNEL_SERVICE: &str = "bowtie.funnel.v1.FunnelService";

/// Accounts, revenue and funnel, each following the others.
pub struct Stack {
    /// The accounts server.
    pub accounts: TestServer,
    /// The revenue server.
    pub revenue: TestServer,
    /// The funnel server.
    pub funnel: TestServer,
    settings: Settings,
}

impl Stack {
    /// Starts accounts, then revenue, then funnel on `db`.
    pub async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        let mut settings = db.server_settings()?;
        let accounts = TestServer::start_with(&settings).await?;
        settings.peers.accounts = accounts.uri();
        let revenue =
            TestServer::start_service(REVENUE_SERVICE, &settings, bowtie_revenue::build).await?;
        settings.peers.revenue = revenue.uri();
        let funnel =
            TestServer::start_service(FUNNEL_SERVICE, &settings, bowtie_funnel::build).await?;
        settings.peers.funnel = funnel.uri();
        Ok(Self {
            accounts,
            revenue,
            funnel,
            settings,
        })
    }

    /// The services as the `bowtie` command reaches them, with `key`.
    pub fn target_with(&self, key: &str) -> Target {
        Target::new(&self.settings.peers, key)
    }

    /// The services with [`WRITE_KEY`].
    pub fn target(&self) -> Target {
        self.target_with(WRITE_KEY)
    }
}
