//! Integration tests of the funnel service through its public gRPC API: a
//! real accounts server and a real funnel server on random ports, each on its
//! own fresh database, on SQLite and on PostgreSQL (`<scenario>::sqlite`,
//! `<scenario>::postgres`).

mod automatic;
mod crosscheck;
mod import;
mod journeys;
mod ownership;
mod reports;
mod sensitivity;

use anyhow::Context as _;
use bowtie_proto::accounts::Account;
use bowtie_proto::common::{Period, Segment, Stage};
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::funnel::{
    GetJourneyRequest, Journey, RecordTransitionRequest, RecordTransitionResponse,
};
use bowtie_testkit::fixtures::{account, create_account};
use bowtie_testkit::{AccountsClient, Bearer, TestDatabase, TestServer, WRITE_KEY};
use prost_types::Timestamp;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The funnel's full gRPC name.
pub const FUNNEL_SERVICE: &str = "bowtie.funnel.v1.FunnelService";

/// A funnel client with an API key.
pub type FunnelClient = FunnelServiceClient<InterceptedService<Channel, Bearer>>;

/// 2026-01-01T00:00:00Z in seconds.
pub const JAN_2026: i64 = 1_767_225_600;
/// One day in seconds.
pub const DAY: i64 = 86_400;

/// An accounts server and a funnel server that asks it about accounts.
pub struct Suite {
    /// The accounts server.
    pub accounts: TestServer,
    /// The funnel server.
    pub funnel: TestServer,
}

impl Suite {
    /// Starts accounts, then funnel pointed at it, each on its own database.
    pub async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        let accounts = TestServer::start(db).await?;
        let funnel = start_funnel(db, &accounts.uri()).await?;
        Ok(Self { accounts, funnel })
    }

    /// An accounts client with the write key.
    pub fn accounts(&self) -> AccountsClient {
        self.accounts.accounts()
    }

    /// A funnel client with the write key.
    pub fn funnel(&self) -> FunnelClient {
        self.funnel_with(WRITE_KEY)
    }

    /// A funnel client with `key`.
    pub fn funnel_with(&self, key: &str) -> FunnelClient {
        FunnelServiceClient::new(self.funnel.with_key(key))
    }

    /// Creates an account in `segment` owned by `owner`; returns its id.
    pub async fn customer(
        &self,
        name: &str,
        segment: Segment,
        owner: &str,
    ) -> anyhow::Result<String> {
        let created = create_account(
            &mut self.accounts(),
            Account {
                owner: owner.to_owned(),
                ..account(name, segment)
            },
        )
        .await?;
        Ok(created.id)
    }
}

/// A peer address nothing listens on, for tests without that peer.
pub const NO_PEER: &str = "http://127.0.0.1:1";

/// Starts a funnel server on `db` whose accounts peer is at `accounts_uri`
/// (and no revenue service).
pub async fn start_funnel(db: &TestDatabase, accounts_uri: &str) -> anyhow::Result<TestServer> {
    start_funnel_with(db, accounts_uri, NO_PEER).await
}

/// Starts a funnel server on `db` following the given accounts and revenue servers.
pub async fn start_funnel_with(
    db: &TestDatabase,
    accounts_uri: &str,
    revenue_uri: &str,
) -> anyhow::Result<TestServer> {
    let mut settings = db.server_settings()?;
    settings.peers.accounts = accounts_uri.to_owned();
    settings.peers.revenue = revenue_uri.to_owned();
    TestServer::start_service(FUNNEL_SERVICE, &settings, bowtie_funnel::build).await
}

/// A timestamp `days` after 2026-01-01.
pub fn day(days: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: JAN_2026 + days * DAY,
        nanos: 0,
    })
}

/// The period from day `from` to day `to` after 2026-01-01.
pub fn period(from: i64, to: i64) -> Option<Period> {
    Some(Period {
        start: day(from),
        end: day(to),
    })
}

/// A transition request.
pub fn transition(account_id: &str, stage: Stage, on_day: i64) -> RecordTransitionRequest {
    RecordTransitionRequest {
        account_id: account_id.to_owned(),
        to_stage: stage as i32,
        occurred_at: day(on_day),
        reason: if matches!(stage, Stage::Lost | Stage::Churned) {
            "price".to_owned()
        } else {
            String::new()
        },
        source: "test".to_owned(),
        idempotency_key: String::new(),
    }
}

/// Records `stage` on `on_day` for `account_id`.
pub async fn record(
    funnel: &mut FunnelClient,
    account_id: &str,
    stage: Stage,
    on_day: i64,
) -> anyhow::Result<RecordTransitionResponse> {
    Ok(funnel
        .record_transition(transition(account_id, stage, on_day))
        .await?
        .into_inner())
}

/// Records a whole path of (stage, day).
pub async fn record_path(
    funnel: &mut FunnelClient,
    account_id: &str,
    path: &[(Stage, i64)],
) -> anyhow::Result<()> {
    for (stage, on_day) in path {
        record(funnel, account_id, *stage, *on_day).await?;
    }
    Ok(())
}

/// The journey of `account_id`.
pub async fn journey(funnel: &mut FunnelClient, account_id: &str) -> anyhow::Result<Journey> {
    funnel
        .get_journey(GetJourneyRequest {
            account_id: account_id.to_owned(),
        })
        .await?
        .into_inner()
        .journey
        .context("GetJourney answered without a journey")
}

/// The stages of a journey's visits.
pub fn visited(journey: &Journey) -> Vec<Stage> {
    journey
        .visits
        .iter()
        .map(|v| Stage::try_from(v.stage).unwrap_or(Stage::Unspecified))
        .collect()
}
