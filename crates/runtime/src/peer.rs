//! Calling other Bowtie services: a lazily connected channel that presents the
//! service's own API key and continues the current trace, the mapping of a
//! peer's failure to this service's error, the account directory every
//! service asks "does this account exist", and the change-feed consumer.
//!
//! A peer that cannot be reached is UNAVAILABLE to our caller, with nothing
//! written: the check happens before the unit of work starts.

use std::sync::Arc;
use std::time::Duration;

use bowtie_proto::accounts::{self, accounts_service_client::AccountsServiceClient};
use bowtie_proto::common;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::config::PeerSettings;
use crate::error::Error;
use crate::feed::{WatchRequest, WatchResponse};
use crate::shutdown::Shutdown;
use crate::store::{Store, Tx};
use crate::telemetry::PropagateTraceContext;

/// Adds this service's API key and the W3C trace context to every call.
#[derive(Clone)]
pub struct PeerInterceptor {
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for PeerInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerInterceptor").finish_non_exhaustive()
    }
}

impl Interceptor for PeerInterceptor {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let mut request = PropagateTraceContext.call(request)?;
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel to a peer with [`PeerInterceptor`] applied.
pub type PeerChannel = InterceptedService<Channel, PeerInterceptor>;

/// A lazily connected channel to the peer at `uri`: the service starts even
/// when the peer is down, and each call fails fast with UNAVAILABLE until it
/// is back. An `https://` peer is called over TLS with `settings.tls` (the CA
/// and, for mutual TLS, the client certificate), read here so a bad file
/// fails the caller's startup.
pub fn connect(uri: &str, settings: &PeerSettings) -> Result<PeerChannel, Error> {
    let mut endpoint = Endpoint::from_shared(uri.to_owned())
        .map_err(|e| Error::Internal(anyhow::anyhow!("peer address {uri:?} is not a URI: {e}")))?
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .timeout(Duration::from_millis(settings.request_timeout_ms))
        .tcp_nodelay(true);
    if endpoint.uri().scheme_str() == Some("https") {
        let tls = crate::tls::client_config(uri, &settings.tls)
            .map_err(|e| Error::Internal(anyhow::Error::new(e)))?;
        endpoint = endpoint.tls_config(tls).map_err(|e| {
            Error::Internal(anyhow::anyhow!("peer {uri:?}: cannot use peers.tls: {e}"))
        })?;
    }
    let key = settings.api_key.expose_secret();
    let authorization = if key.is_empty() {
        None
    } else {
        Some(
            MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| {
                Error::Internal(anyhow::anyhow!("peers.api_key is not printable ASCII"))
            })?,
        )
    };
    Ok(InterceptedService::new(
        endpoint.connect_lazy(),
        PeerInterceptor { authorization },
    ))
}

/// This service's error for a failed call to `peer`: the peer being down,
/// slow or overloaded, or the call breaking on its way, is UNAVAILABLE (safe
/// to retry); anything else is a misconfiguration or a bug and surfaces as
/// INTERNAL with the cause logged.
pub fn peer_error(peer: &str, status: &Status) -> Error {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::ResourceExhausted
        | Code::Unknown => Error::Unavailable(format!(
            "the {peer} service is unavailable ({}); nothing was written, retry later",
            status.message()
        )),
        Code::Internal if broke_in_transit(status) => Error::Unavailable(format!(
            "the call to the {peer} service broke ({}); nothing was written, retry later",
            status.message()
        )),
        code => Error::Internal(anyhow::anyhow!(
            "the {peer} service answered {code:?}: {}",
            status.message()
        )),
    }
}

/// A followed feed's failure: FAILED_PRECONDITION (the events after the
/// cursor were pruned) as itself, anything else as [`peer_error`].
fn feed_error(status: &Status) -> Error {
    if status.code() == Code::FailedPrecondition {
        return Error::FailedPrecondition(status.message().to_owned());
    }
    peer_error("upstream", status)
}

/// Whether `status` reports a call that broke on its way rather than an
/// answer of the service: the connection failed (a transport error source)
/// or the HTTP/2 stream was reset, as when a stopping service closes its
/// connections; tonic reports a reset stream as INTERNAL for most reasons,
/// a broken connection as UNKNOWN.
pub fn broke_in_transit(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<h2::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The account directory: the accounts service, asked over gRPC.
#[derive(Debug, Clone)]
pub struct AccountDirectory {
    client: AccountsServiceClient<PeerChannel>,
}

impl AccountDirectory {
    /// A directory backed by the accounts service at `settings.accounts`.
    pub fn connect(settings: &PeerSettings) -> Result<Self, Error> {
        Ok(Self {
            client: AccountsServiceClient::new(connect(&settings.accounts, settings)?),
        })
    }

    /// The account `id`: NOT_FOUND when the accounts service does not know
    /// it, UNAVAILABLE when the accounts service cannot be reached.
    pub async fn get(&self, id: Uuid) -> Result<accounts::Account, Error> {
        let mut client = self.client.clone();
        match client
            .get_account(accounts::GetAccountRequest { id: id.to_string() })
            .await
        {
            Ok(response) => response
                .into_inner()
                .account
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("GetAccount returned no account"))),
            Err(status) if status.code() == Code::NotFound => Err(Error::not_found("account", id)),
            Err(status) => Err(peer_error("accounts", &status)),
        }
    }

    /// One page of every account, active and archived, oldest first, after
    /// `page_token` ("" for the first page), and the token of the next page
    /// ("" after the last): for a sweep that reads them all, a page per call.
    pub async fn page(
        &self,
        page_token: &str,
        page_size: i32,
    ) -> Result<(Vec<accounts::Account>, String), Error> {
        let mut client = self.client.clone();
        let page = client
            .list_accounts(accounts::ListAccountsRequest {
                page: Some(common::PageRequest {
                    page_size,
                    page_token: page_token.to_owned(),
                }),
                ..accounts::ListAccountsRequest::default()
            })
            .await
            .map_err(|status| peer_error("accounts", &status))?
            .into_inner();
        let next = page.page.map(|p| p.next_page_token).unwrap_or_default();
        Ok((page.accounts, next))
    }

    /// Whether the accounts service has an attribute named `name` declared
    /// (UNAVAILABLE when it cannot be reached).
    pub async fn attribute_declared(&self, name: &str) -> Result<bool, Error> {
        let mut client = self.client.clone();
        let declarations = client
            .list_attribute_declarations(accounts::ListAttributeDeclarationsRequest {})
            .await
            .map_err(|status| peer_error("accounts", &status))?
            .into_inner()
            .declarations;
        Ok(declarations.iter().any(|d| d.name == name))
    }
}

/// Decodes an event payload of type `M`; `None` when the payload is another type.
pub fn payload<M: prost::Name + Default>(event: &common::Event) -> Result<Option<M>, Error> {
    let Some(any) = &event.payload else {
        return Ok(None);
    };
    if any.type_url != M::type_url() {
        return Ok(None);
    }
    M::decode(any.value.as_slice())
        .map(Some)
        .map_err(|e| Error::invalid("payload", format!("cannot decode {}: {e}", M::full_name())))
}

/// A stream of another service's events, from its `WatchEvents`.
pub type EventStream = BoxStream<'static, Result<common::Event, Status>>;

/// A peer's `WatchEvents` response stream as an [`EventStream`]: `event`
/// takes the event out of the service's own response type.
pub fn events<R, S>(stream: S, event: fn(R) -> Option<common::Event>) -> EventStream
where
    R: Send + 'static,
    S: futures::Stream<Item = Result<R, Status>> + Send + 'static,
{
    stream
        .filter_map(move |item| async move {
            match item {
                Ok(r) => event(r).map(Ok),
                Err(status) => Some(Err(status)),
            }
        })
        .boxed()
}

/// Opens a peer's feed after a sequence.
pub type OpenFeed =
    Arc<dyn Fn(i64) -> BoxFuture<'static, Result<EventStream, Status>> + Send + Sync>;

/// A service whose change feed another service follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// The accounts service.
    Accounts,
    /// The funnel service.
    Funnel,
    /// The revenue service.
    Revenue,
    /// The scoring service.
    Scoring,
}

impl Upstream {
    /// Its feed at its `[peers]` address, reached like any peer (lazily,
    /// with this service's key and trace), for the [`Consumer`] called
    /// `consumer`, the name the producer registers its position under.
    pub fn open_feed(self, settings: &PeerSettings, consumer: &str) -> Result<OpenFeed, Error> {
        use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
        use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
        use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
        // The client of `$package` at its `[peers]` address, and its call.
        macro_rules! feed {
            ($client:ident, $package:ident) => {
                watch_with(
                    $client::new(connect(&settings.$package, settings)?),
                    consumer,
                    |mut client, request: bowtie_proto::$package::WatchEventsRequest| async move {
                        client.watch_events(request).await
                    },
                )
            };
        }
        Ok(match self {
            Self::Accounts => feed!(AccountsServiceClient, accounts),
            Self::Funnel => feed!(FunnelServiceClient, funnel),
            Self::Revenue => feed!(RevenueServiceClient, revenue),
            Self::Scoring => feed!(ScoringServiceClient, scoring),
        })
    }
}

/// Opens a feed by calling `watch` (a client's `WatchEvents`) on a clone of
/// `client` with `consumer`'s request that resumes after the given sequence.
fn watch_with<C, Q, R, F, Fut>(client: C, consumer: &str, watch: F) -> OpenFeed
where
    C: Clone + Send + Sync + 'static,
    Q: WatchRequest,
    R: WatchResponse,
    F: Fn(C, Q) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<R>>, Status>>
        + Send
        + 'static,
{
    let watch = Arc::new(watch);
    let consumer: Arc<str> = Arc::from(consumer);
    Arc::new(move |after| {
        let (client, watch, consumer) = (client.clone(), watch.clone(), consumer.clone());
        Box::pin(async move {
            let stream = watch(client, Q::after(after, &consumer))
                .await?
                .into_inner();
            Ok(events(stream, R::into_event))
        })
    })
}

/// Applies one event inside the consumer's transaction.
pub type ApplyEvent = Arc<
    dyn for<'c> Fn(&'c mut Tx, common::Event) -> BoxFuture<'c, Result<(), Error>> + Send + Sync,
>;

/// Runs once in each transaction of a consumer, after its last event: writes
/// what the events of the transaction deferred (their rows as one statement
/// per table rather than one per event).
pub type FinishBatch =
    Arc<dyn for<'c> Fn(&'c mut Tx) -> BoxFuture<'c, Result<(), Error>> + Send + Sync>;

/// Applies one event with a clone of the service's application `A`, inside
/// the consumer's transaction (see [`Consumer::of`]).
pub type AppApply<A> = for<'c> fn(A, &'c mut Tx, common::Event) -> BoxFuture<'c, Result<(), Error>>;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Failures are logged at `info` while the wait is shorter than this (the
/// first 1.5 s of retries), at `warn` after.
const QUIET_RETRIES: Duration = Duration::from_secs(1);
/// How long one stream is followed before it is reopened from the stored
/// cursor: reopening tells the producer how far this consumer has applied,
/// so its outbox can be pruned up to there.
const REPORT_POSITION_EVERY: Duration = Duration::from_secs(300);

/// Follows another service's change feed and applies each event exactly once:
/// the cursor lives in this service's database and moves in the transaction
/// that applies the event, so a restart resumes where it stopped, and a
/// redelivered event is skipped.
///
/// Batches: the events already received when the consumer is ready for more
/// (a burst, a feed read from far behind) are applied together, up to
/// `peers.feed_batch` in one transaction with the cursor saved once, at the
/// last of them; a quiet feed is applied event by event as it arrives. When any
/// event of a batch fails, the batch rolls back and its events are applied
/// one at a time, so a bad event is isolated as below.
///
/// Failures: when the peer is down or the stream breaks, the consumer waits
/// (100 ms doubling to 5 s) and resumes from its stored cursor. An event that
/// this service cannot apply for a transient reason (its own database down)
/// is retried; one it rejects for good (a malformed payload, an unknown
/// account) is logged and skipped, so one bad event cannot stall the feed.
pub struct Consumer {
    name: String,
    store: Store,
    open: OpenFeed,
    apply: ApplyEvent,
    shutdown: Shutdown,
    batch: usize,
    finish: Option<FinishBatch>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer called `name` (its cursor's key) reading from `open` and
    /// applying with `apply`, each event in its own transaction until
    /// [`Self::with_batch`]; it stops when `shutdown` fires.
    pub fn new(
        name: impl Into<String>,
        store: Store,
        open: OpenFeed,
        apply: ApplyEvent,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            name: name.into(),
            store,
            open,
            apply,
            shutdown,
            batch: 1,
            finish: None,
        }
    }

    /// The same consumer running `finish` in each of its transactions after
    /// the last event, before the cursor is saved and the transaction
    /// commits (a failing `finish` fails the transaction like an event).
    pub fn with_finish(mut self, finish: FinishBatch) -> Self {
        self.finish = Some(finish);
        self
    }

    /// The same consumer applying at most `batch` events per transaction
    /// (1: each in its own).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The consumer `name` of `upstream`'s feed (at its `[peers]` address),
    /// applying up to `peers.feed_batch` events per transaction, each with
    /// `apply`, which is handed a clone of the service's `app` (its
    /// application, or whatever the apply step needs) and the consumer's
    /// transaction on `store`.
    pub fn of<A: Clone + Send + Sync + 'static>(
        name: &str,
        upstream: Upstream,
        settings: &PeerSettings,
        store: Store,
        app: A,
        shutdown: Shutdown,
        apply: AppApply<A>,
    ) -> Result<Self, Error> {
        let open = upstream.open_feed(settings, name)?;
        let apply: ApplyEvent = Arc::new(move |tx, event| apply(app.clone(), tx, event));
        Ok(Self::new(name, store, open, apply, shutdown).with_batch(settings.feed_batch))
    }

    /// Runs the consumer on its own task until shutdown.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            let shutdown = self.shutdown.clone();
            tokio::select! {
                () = self.run() => {}
                () = shutdown.wait() => {}
            }
        })
    }

    async fn run(self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.follow().await {
                Ok(()) => backoff = MIN_BACKOFF,
                Err(e) if matches!(&e, Error::FailedPrecondition(_)) => {
                    tracing::error!(
                        consumer = %self.name,
                        error = %e,
                        "the change feed no longer holds the events after this consumer's cursor; \
                         it cannot catch up from the feed"
                    );
                    backoff = MAX_BACKOFF;
                }
                // A peer starting a moment after this service (as under
                // `bowtie dev`) is not worth a warning; one still away
                // after a second of retries is.
                Err(e) if backoff < QUIET_RETRIES => {
                    tracing::info!(consumer = %self.name, error = %e, "change feed interrupted; resuming");
                }
                Err(e) => {
                    tracing::warn!(consumer = %self.name, error = %e, "change feed interrupted; resuming");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Reads from the stored cursor until the stream ends or fails.
    async fn follow(&self) -> Result<(), Error> {
        let after = crate::feed::load_cursor(self.store.db().reader(), &self.name).await?;
        let stream = (self.open)(after).await.map_err(|s| feed_error(&s))?;
        tracing::info!(consumer = %self.name, after, "following change feed");
        let reopen = tokio::time::Instant::now() + REPORT_POSITION_EVERY;
        // Whatever has arrived, up to a batch, without waiting for more.
        let mut received = stream.ready_chunks(self.batch);
        loop {
            let items = tokio::select! {
                items = received.next() => items,
                () = tokio::time::sleep_until(reopen) => return Ok(()),
            };
            let Some(items) = items else {
                break;
            };
            let mut events = Vec::with_capacity(items.len());
            let mut broke = None;
            for item in items {
                match item {
                    Ok(event) => events.push(event),
                    Err(status) => {
                        broke = Some(status);
                        break;
                    }
                }
            }
            self.apply_batch(&events).await?;
            if let Some(status) = broke {
                return Err(feed_error(&status));
            }
        }
        Ok(())
    }

    /// Applies `events` (consecutive, ascending) in one transaction; when
    /// that fails, one at a time, as [`Self::apply_one`] does.
    async fn apply_batch(&self, events: &[common::Event]) -> Result<(), Error> {
        if let [event] = events {
            return self.apply_one(event).await;
        }
        if events.is_empty() {
            return Ok(());
        }
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        let apply = self.apply.clone();
        let finish = self.finish.clone();
        let batch = events.to_vec();
        let outcome = self
            .store
            .consume_batch(&self.name, &sequences, move |tx, first| {
                Box::pin(async move {
                    for event in batch.into_iter().skip(first) {
                        apply(tx, event).await?;
                    }
                    match finish {
                        Some(finish) => finish(tx).await,
                        None => Ok(()),
                    }
                })
            })
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(
                    consumer = %self.name,
                    first = sequences.first().copied().unwrap_or_default(),
                    events = events.len(),
                    error = %e,
                    "a batch of events failed; applying them one at a time"
                );
                for event in events {
                    self.apply_one(event).await?;
                }
                Ok(())
            }
        }
    }

    async fn apply_one(&self, event: &common::Event) -> Result<(), Error> {
        let apply = self.apply.clone();
        let finish = self.finish.clone();
        let owned = event.clone();
        let outcome = self
            .store
            .consume(&self.name, event.sequence, move |tx| {
                Box::pin(async move {
                    apply(tx, owned).await?;
                    match finish {
                        Some(finish) => finish(tx).await,
                        None => Ok(()),
                    }
                })
            })
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(
                e @ (Error::Unavailable(_)
                | Error::Database(_)
                | Error::Aborted(_)
                | Error::Internal(_)),
            ) => Err(e),
            Err(e) => {
                tracing::warn!(
                    consumer = %self.name,
                    sequence = event.sequence,
                    event_type = %event.event_type,
                    error = %e,
                    "skipping an event that cannot be applied"
                );
                self.store
                    .consume(&self.name, event.sequence, |_| Box::pin(async { Ok(()) }))
                    .await
                    .map(|_| ())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_whose_stream_was_reset_is_unavailable_and_an_internal_answer_internal() {
        let reset = Status::from_error(Box::new(h2::Error::from(h2::Reason::NO_ERROR)));
        assert_eq!(reset.code(), Code::Internal);
        assert!(broke_in_transit(&reset));
        assert!(matches!(
            peer_error("accounts", &reset),
            Error::Unavailable(_)
        ));
        let answered = Status::internal("a bug");
        assert!(!broke_in_transit(&answered));
        assert!(matches!(
            peer_error("accounts", &answered),
            Error::Internal(_)
        ));
    }
}
