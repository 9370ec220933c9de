//! Helpers for the scoring service's integration tests: the accounts and
//! scoring servers started side by side (optionally revenue and funnel),
//! signal builders relative to the current time, and pollers that wait for
//! the recompute worker.

use std::time::Duration;

use bowtie_proto::accounts::Account;
use bowtie_proto::common::Segment;
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_proto::scoring::{
    AccountHealth, Alert, GetHealthRequest, ListAlertsRequest, RecordSignalBatchRequest,
    RecordSignalBatchResponse, Signal, SignalType,
};
use bowtie_runtime::config::Settings;
use prost_types::Timestamp;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::fixtures;
use crate::people::{PEOPLE, secret, with_people};
use crate::{ADMIN_KEY, Bearer, READ_KEY, TestDatabase, TestServer, WRITE_KEY, within};

/// The gRPC name the scoring service reports health under.
pub const SCORING_SERVICE: &str = "bowtie.scoring.v1.ScoringService";

/// A scoring client carrying an API key.
pub type ScoringClient = ScoringServiceClient<InterceptedService<Channel, Bearer>>;

/// The accounts and scoring servers of one test.
pub struct Scoring {
    /// The accounts server.
    pub accounts: TestServer,
    /// The scoring server.
    pub scoring: TestServer,
    /// The settings scoring runs with.
    settings: Settings,
}

impl Scoring {
    /// Starts accounts, then scoring pointed at it, on `db`.
    pub async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        Self::start_with(db, |_| {}).await
    }

    /// Like [`Scoring::start`], with the scoring settings adjusted by `tweak`.
    pub async fn start_with(
        db: &TestDatabase,
        tweak: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        let mut settings = db.server_settings()?;
        let accounts = TestServer::start_with(&settings).await?;
        settings.peers.accounts = accounts.uri();
        tweak(&mut settings);
        let scoring = start_scoring(&settings).await?;
        Ok(Self {
            accounts,
            scoring,
            settings,
        })
    }

    /// Like [`Scoring::start`], with a key for each of [`PEOPLE`] (and
    /// their team) on scoring.
    pub async fn start_with_people(db: &TestDatabase) -> anyhow::Result<Self> {
        Self::start_with(db, |s| with_people(s, &PEOPLE)).await
    }

    /// Stops scoring and starts it again on the same database and settings.
    pub async fn restart(self) -> anyhow::Result<Self> {
        let Self {
            accounts,
            scoring,
            settings,
        } = self;
        scoring.stop().await?;
        let scoring = start_scoring(&settings).await?;
        Ok(Self {
            accounts,
            scoring,
            settings,
        })
    }

    /// The database settings scoring runs on.
    pub fn database(&self) -> &bowtie_runtime::config::DatabaseSettings {
        &self.settings.scoring.database
    }

    /// A scoring client presenting the key of person `name` ([`PEOPLE`]).
    pub fn as_person(&self, name: &str) -> ScoringClient {
        ScoringServiceClient::new(self.scoring.with_key(&secret(name)))
    }

    /// Creates an SMB account whose CSM is `csm` and owner `owner`; its id.
    pub async fn account_of(&self, name: &str, csm: &str, owner: &str) -> anyhow::Result<String> {
        let account = Account {
            name: name.to_owned(),
            segment: Segment::Smb as i32,
            csm: csm.to_owned(),
            owner: owner.to_owned(),
            ..Account::default()
        };
        Ok(
            fixtures::create_account(&mut self.accounts.accounts(), account)
                .await?
                .id,
        )
    }

    /// A scoring client with the write key.
    pub fn client(&self) -> ScoringClient {
        ScoringServiceClient::new(self.scoring.with_key(WRITE_KEY))
    }

    /// A scoring client with the admin key.
    pub fn admin(&self) -> ScoringClient {
        ScoringServiceClient::new(self.scoring.with_key(ADMIN_KEY))
    }

    /// A scoring client with the read key.
    pub fn reader(&self) -> ScoringClient {
        ScoringServiceClient::new(self.scoring.with_key(READ_KEY))
    }

    /// Creates an account in `segment`; returns its id.
    pub async fn account(&self, name: &str, segment: Segment) -> anyhow::Result<String> {
        create_account(&self.accounts, name, segment).await
    }
}

/// Starts a scoring server with `settings`.
pub async fn start_scoring(settings: &Settings) -> anyhow::Result<TestServer> {
    TestServer::start_service(SCORING_SERVICE, settings, bowtie_scoring::build).await
}

/// Creates an account in the accounts service; returns its id.
pub async fn create_account(
    accounts: &TestServer,
    name: &str,
    segment: Segment,
) -> anyhow::Result<String> {
    Ok(
        fixtures::create_named(&mut accounts.accounts(), name, segment)
            .await?
            .id,
    )
}

/// `days` days before now (negative: after now).
pub fn days_ago(days: i64) -> Option<Timestamp> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Some(Timestamp {
        seconds: now - days * 86_400,
        nanos: 0,
    })
}

/// A signal of `kind` with `value`, `days` ago.
pub fn signal(key: &str, account: &str, kind: SignalType, value: i64, days: i64) -> Signal {
    Signal {
        idempotency_key: key.to_owned(),
        account_id: account.to_owned(),
        r#type: kind as i32,
        value,
        occurred_at: days_ago(days),
    }
}

/// `n` login signals keyed `<prefix>-<i>`, `days` ago.
pub fn logins(prefix: &str, account: &str, n: usize, days: i64) -> Vec<Signal> {
    (0..n)
        .map(|i| {
            signal(
                &format!("{prefix}-{i}"),
                account,
                SignalType::Login,
                1,
                days,
            )
        })
        .collect()
}

/// Records a batch.
pub async fn record(
    client: &mut ScoringClient,
    signals: Vec<Signal>,
) -> anyhow::Result<RecordSignalBatchResponse> {
    Ok(client
        .record_signal_batch(RecordSignalBatchRequest { signals })
        .await?
        .into_inner())
}

/// Waits until the account's health satisfies `ready`.
pub async fn health_when(
    client: &mut ScoringClient,
    account: &str,
    what: &str,
    ready: impl Fn(&AccountHealth) -> bool,
) -> anyhow::Result<AccountHealth> {
    within(20, what, async {
        loop {
            if let Ok(r) = client
                .get_health(GetHealthRequest {
                    account_id: account.to_owned(),
                })
                .await
                && let Some(h) = r.into_inner().health
                && ready(&h)
            {
                return anyhow::Ok(h);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
    .await?
}

/// The alerts of an account, newest first.
pub async fn alerts_of(client: &mut ScoringClient, account: &str) -> anyhow::Result<Vec<Alert>> {
    Ok(client
        .list_alerts(ListAlertsRequest {
            account_id: account.to_owned(),
            ..ListAlertsRequest::default()
        })
        .await?
        .into_inner()
        .alerts)
}
