//! Helpers for the revenue service's integration tests: the accounts and
//! revenue servers started side by side (revenue asks accounts about every
//! account it is told about), request builders and feed readers.

use anyhow::Context as _;
use bowtie_proto::accounts::{Account, CreateAccountRequest};
use bowtie_proto::common::{Event, Money, Segment};
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_proto::revenue::{
    BillingInterval, Cancellation, CancellationKind, ChangeSubscriptionRequest,
    CreateSubscriptionRequest, GetMrrReportRequest, ListMovementsRequest, Movement, MrrPeriod,
    Subscription, Terms, WatchEventsRequest, WatchEventsResponse,
};
use prost_types::Timestamp;
use tonic::Streaming;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::{ADMIN_KEY, Bearer, READ_KEY, TestDatabase, TestServer, WRITE_KEY};

/// The gRPC name the revenue service reports health under.
pub const REVENUE_SERVICE: &str = "bowtie.revenue.v1.RevenueService";

/// A revenue client carrying an API key.
pub type RevenueClient = RevenueServiceClient<InterceptedService<Channel, Bearer>>;

/// The accounts and revenue servers of one test.
pub struct Revenue {
    /// The accounts server (stop it to make accounts unreachable).
    pub accounts: TestServer,
    /// The revenue server.
    pub revenue: TestServer,
}

impl Revenue {
    /// Starts accounts, then revenue pointed at it, on `db`.
    pub async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        Self::start_with(db, |_| {}).await
    }

    /// Like [`Revenue::start`], with the revenue settings adjusted by `tweak`.
    pub async fn start_with(
        db: &TestDatabase,
        tweak: impl FnOnce(&mut bowtie_runtime::config::Settings),
    ) -> anyhow::Result<Self> {
        let mut settings = db.server_settings()?;
        let accounts = TestServer::start_with(&settings).await?;
        settings.peers.accounts = accounts.uri();
        tweak(&mut settings);
        let revenue =
            TestServer::start_service(REVENUE_SERVICE, &settings, bowtie_revenue::build).await?;
        Ok(Self { accounts, revenue })
    }

    /// A revenue client with the write key.
    pub fn client(&self) -> RevenueClient {
        RevenueServiceClient::new(self.revenue.with_key(WRITE_KEY))
    }

    /// A revenue client with the read key.
    pub fn reader(&self) -> RevenueClient {
        RevenueServiceClient::new(self.revenue.with_key(READ_KEY))
    }

    /// A revenue client with the admin key.
    pub fn admin(&self) -> RevenueClient {
        RevenueServiceClient::new(self.revenue.with_key(ADMIN_KEY))
    }

    /// Creates an account in the accounts service and returns its id.
    pub async fn account(
        &self,
        name: &str,
        segment: Segment,
        owner: &str,
    ) -> anyhow::Result<String> {
        let account = Account {
            name: name.to_owned(),
            segment: segment as i32,
            owner: owner.to_owned(),
            ..Account::default()
        };
        let created = self
            .accounts
            .accounts()
            .create_account(CreateAccountRequest {
                account: Some(account),
                idempotency_key: String::new(),
            })
            .await?
            .into_inner()
            .account
            .context("CreateAccount returned no account")?;
        Ok(created.id)
    }
}

/// The instant `year-month-d` at midnight UTC.
pub fn day(year: i32, month: u32, d: u32) -> Timestamp {
    let date = chrono_like_days(year, month, d);
    Timestamp {
        seconds: date * 86_400,
        nanos: 0,
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn chrono_like_days(year: i32, month: u32, d: u32) -> i64 {
    let (y, m) = if month <= 2 {
        (i64::from(year) - 1, i64::from(month) + 9)
    } else {
        (i64::from(year), i64::from(month) - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Money in minor units.
pub fn money(currency: &str, minor_units: i64) -> Option<Money> {
    Some(Money {
        currency_code: currency.to_owned(),
        minor_units,
    })
}

/// Terms: `quantity` units at `unit_price` minor units of `currency`.
pub fn terms(quantity: i64, unit_price: i64, currency: &str) -> Terms {
    Terms {
        plan: "pro".to_owned(),
        quantity,
        unit_price: money(currency, unit_price),
        discount_basis_points: 0,
    }
}

/// A monthly USD subscription of `account_id` starting at `start`.
pub fn monthly(account_id: &str, start: Timestamp, quantity: i64, unit_price: i64) -> Subscription {
    Subscription {
        account_id: account_id.to_owned(),
        billing_interval: BillingInterval::Month as i32,
        terms: Some(terms(quantity, unit_price, "USD")),
        start_at: Some(start),
        ..Subscription::default()
    }
}

/// A create request without an idempotency key.
pub fn create(subscription: Subscription) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        subscription: Some(subscription),
        idempotency_key: String::new(),
    }
}

/// A change request.
pub fn change(id: &str, at: Timestamp, terms: Terms) -> ChangeSubscriptionRequest {
    ChangeSubscriptionRequest {
        id: id.to_owned(),
        terms: Some(terms),
        effective_at: Some(at),
        idempotency_key: String::new(),
        expected_version: None,
    }
}

/// A voluntary cancellation for price.
pub fn cancellation(at: Timestamp) -> Option<Cancellation> {
    Some(Cancellation {
        effective_at: Some(at),
        kind: CancellationKind::Voluntary as i32,
        reason_code: "price".to_owned(),
    })
}

/// Every movement (all pages) between 1970 and 2100, optionally of one account.
pub async fn all_movements(
    client: &mut RevenueClient,
    account_id: &str,
) -> anyhow::Result<Vec<Movement>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_movements(ListMovementsRequest {
                start_at: Some(Timestamp::default()),
                end_at: Some(day(2100, 1, 1)),
                account_id: account_id.to_owned(),
                r#type: 0,
                page: crate::fixtures::page(100, &token),
            })
            .await?
            .into_inner();
        out.extend(page.movements);
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(out);
        }
    }
}

/// The monthly MRR report from `start` to `end` ("YYYY-MM"), all segments.
pub async fn monthly_report(
    client: &mut RevenueClient,
    start: &str,
    end: &str,
    segment: Segment,
) -> anyhow::Result<Vec<MrrPeriod>> {
    Ok(client
        .get_mrr_report(GetMrrReportRequest {
            start_month: start.to_owned(),
            end_month: end.to_owned(),
            granularity: 0,
            segment: segment as i32,
            ..GetMrrReportRequest::default()
        })
        .await?
        .into_inner()
        .periods)
}

/// Minor units of an optional amount (0 when absent).
pub fn minor(m: &Option<Money>) -> i64 {
    m.as_ref().map_or(0, |m| m.minor_units)
}

/// Opens the revenue feed after `after_sequence`.
pub async fn watch(
    client: &mut RevenueClient,
    after_sequence: i64,
) -> anyhow::Result<Streaming<WatchEventsResponse>> {
    Ok(client
        .watch_events(WatchEventsRequest {
            after_sequence,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// The next `n` events of a revenue feed stream, waiting at most `seconds`.
pub async fn next_events(
    stream: &mut Streaming<WatchEventsResponse>,
    n: usize,
    seconds: u64,
) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::with_capacity(n);
    crate::within(seconds, &format!("{n} revenue events"), async {
        while events.len() < n {
            let message = stream.message().await?.context("the feed ended early")?;
            events.push(message.event.context("a feed message without an event")?);
        }
        anyhow::Ok(())
    })
    .await??;
    Ok(events)
}

/// Decodes an event's payload as `M`, checking its type URL.
pub fn payload<M: prost::Message + prost::Name + Default>(event: &Event) -> anyhow::Result<M> {
    let any = event.payload.as_ref().context("event without a payload")?;
    anyhow::ensure!(
        any.type_url == M::type_url(),
        "payload type {} is not {}",
        any.type_url,
        M::full_name()
    );
    Ok(M::decode(any.value.as_slice())?)
}
