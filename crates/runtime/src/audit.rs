//! The audit log every service keeps (docs/design.md, "Audit log"): one
//! row per committed write made by a call, in the write's own transaction,
//! so the log has an entry exactly for each write that was kept - a write
//! rolled back, refused or killed mid-way leaves none. No call changes or
//! deletes a row; `ListAuditEvents` reads them, newest first.
//!
//! The auth layer opens an [`AuditContext`] around each authenticated call:
//! the principal, the method, and a running SHA-256 of the request body as
//! the server reads it ([`HashingBody`]). [`crate::store::Store::write`]
//! records the row from that context and the events the write emitted
//! (its targets). Writes a service makes on its own (feed consumers, sweeps)
//! run outside any call and are not audited: the call that caused them is.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bowtie_proto::common;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sea_orm::sea_query::{Expr, Order, Query};
use sea_orm::{ConnectionTrait, StatementBuilder};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::db::Db;
use crate::error::{Error, FieldViolations};
use crate::feed::NewEvent;
use crate::idempotency::Idempotency;
use crate::paging::Page;
use crate::schema::AuditEvents;
use crate::validate;

/// Every column of a row, in the order it is written and read.
const COLUMNS: [AuditEvents; 9] = [
    AuditEvents::Id,
    AuditEvents::OccurredAt,
    AuditEvents::Principal,
    AuditEvents::Rpc,
    AuditEvents::Targets,
    AuditEvents::TargetsTotal,
    AuditEvents::RequestDigest,
    AuditEvents::IdempotencyKey,
    AuditEvents::ResultCode,
];

/// Most targets one row names; `targets_total` counts them all.
pub const MAX_TARGETS: usize = 100;

/// Who is calling which method, and the digest of what they sent so far.
#[derive(Debug, Clone)]
pub struct AuditContext {
    principal: String,
    caller: Option<Arc<Principal>>,
    rpc: String,
    /// `None` when the log is off (`audit.enabled = false`): the context
    /// still carries the caller for the ownership rules, but records nothing.
    digest: Option<Arc<Mutex<Sha256>>>,
}

tokio::task_local! {
    static CONTEXT: AuditContext;
}

impl AuditContext {
    /// The context of a call by `caller` (`None`: an open method) to `rpc`
    /// (a gRPC path), and the body that feeds its request digest. Unless
    /// `audited`, nothing is hashed and the call's writes add no entry.
    pub fn open<B>(
        caller: Option<Principal>,
        rpc: &str,
        body: B,
        audited: bool,
    ) -> (Self, HashingBody<B>) {
        let digest = audited.then(|| Arc::new(Mutex::new(Sha256::new())));
        let context = Self {
            principal: caller
                .as_ref()
                .map_or_else(|| "anonymous".to_owned(), |p| p.name.clone()),
            caller: caller.map(Arc::new),
            rpc: rpc.to_owned(),
            digest: digest.clone(),
        };
        (
            context,
            HashingBody {
                inner: body,
                digest,
            },
        )
    }

    /// Runs `call` inside this context, so the writes it makes are audited.
    pub async fn scope<F: Future>(self, call: F) -> F::Output {
        CONTEXT.scope(self, call).await
    }

    /// The context of the call this task serves, if any.
    pub fn current() -> Option<Self> {
        CONTEXT.try_with(Clone::clone).ok()
    }

    /// Spawns `work` inside the context of the call this task serves, so a
    /// stream's handler task (a streaming import, a signal stream) writes
    /// as that call: audited under its principal and following its
    /// ownership rules (`crate::access`). Outside a call it is a plain spawn.
    pub fn spawn<F>(work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match Self::current() {
            Some(context) => tokio::spawn(context.scope(work)),
            None => tokio::spawn(work),
        }
    }

    /// The caller of the call being served, when the task serves one: what
    /// the ownership rules (`crate::access`) decide by.
    pub fn caller() -> Option<Arc<Principal>> {
        CONTEXT.try_with(|c| c.caller.clone()).ok().flatten()
    }

    fn request_digest(&self) -> String {
        match self.digest.as_ref().map(|d| d.lock()) {
            Some(Ok(hasher)) => hex::encode(hasher.clone().finalize()),
            _ => String::new(),
        }
    }

    /// Whether this call's writes add entries.
    fn recording(&self) -> bool {
        self.digest.is_some()
    }
}

pin_project_lite::pin_project! {
    /// A request body that hashes the bytes it hands on (when audited).
    pub struct HashingBody<B> {
        #[pin]
        inner: B,
        digest: Option<Arc<Mutex<Sha256>>>,
    }
}

impl<B: Body<Data = Bytes>> Body for HashingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Some(digest) = this.digest.as_ref()
            && let Ok(mut hasher) = digest.lock()
        {
            hasher.update(data);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The distinct things `events` changed, as `type:id`, in order.
fn targets(events: &[NewEvent]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let target = format!("{}:{}", e.aggregate_type(), e.aggregate_id());
        if !out.contains(&target) {
            out.push(target);
        }
    }
    out
}

/// The event type of an audit entry on the service's feed: every row is
/// published there in its own transaction, its payload the `AuditEvent`.
pub const RECORDED: &str = "audit.recorded";

/// The aggregate type of [`RECORDED`] events.
pub const AGGREGATE: &str = "audit";

/// Records the write about to commit in `conn` (its transaction), when it
/// is made by a call; a no-op for the service's own writes. Returns the
/// `audit.recorded` event to append to the outbox in the same transaction.
pub(crate) async fn record<C: ConnectionTrait>(
    conn: &C,
    idem: Option<&Idempotency>,
    events: &[NewEvent],
    now: i64,
) -> Result<Option<NewEvent>, Error> {
    let Some(context) = recording_context() else {
        return Ok(None);
    };
    let row = insert(conn, &context, idem, targets(events), now, "OK").await?;
    Ok(Some(row))
}

/// Records a write refused by the ownership rules (`crate::access`) in
/// `conn`, a transaction of its own: result code PERMISSION_DENIED, the
/// account it was refused on as its target. Returns its feed event; `None`
/// outside a call.
pub(crate) async fn record_denial<C: ConnectionTrait>(
    conn: &C,
    idem: Option<&Idempotency>,
    target: &str,
    now: i64,
) -> Result<Option<NewEvent>, Error> {
    let Some(context) = recording_context() else {
        return Ok(None);
    };
    let targets = if target.is_empty() {
        Vec::new()
    } else {
        vec![target.to_owned()]
    };
    let row = insert(conn, &context, idem, targets, now, "PERMISSION_DENIED").await?;
    Ok(Some(row))
}

/// The context of the call being served, when there is one and its writes
/// are recorded (`audit.enabled`).
fn recording_context() -> Option<AuditContext> {
    CONTEXT
        .try_with(Clone::clone)
        .ok()
        .filter(AuditContext::recording)
}

/// Inserts one row and returns it as an `audit.recorded` event.
async fn insert<C: ConnectionTrait>(
    conn: &C,
    context: &AuditContext,
    idem: Option<&Idempotency>,
    all: Vec<String>,
    now: i64,
    result_code: &str,
) -> Result<NewEvent, Error> {
    let total = i32::try_from(all.len()).unwrap_or(i32::MAX);
    let shown: Vec<String> = all.into_iter().take(MAX_TARGETS).collect();
    // Searched by account with LIKE on ",account:<id>,": the list is
    // stored with a comma on each side of every target.
    let stored = if shown.is_empty() {
        String::new()
    } else {
        format!(",{},", shown.join(","))
    };
    let entry = common::AuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(crate::Instant::from_micros(now).to_timestamp()),
        principal: context.principal.clone(),
        rpc: context.rpc.clone(),
        targets: shown,
        targets_total: total,
        request_digest: context.request_digest(),
        idempotency_key: idem.map(|i| i.key.clone()).unwrap_or_default(),
        result_code: result_code.to_owned(),
    };
    let insert = Query::insert()
        .into_table(AuditEvents::Table)
        .columns(COLUMNS)
        .values([
            entry.id.clone().into(),
            now.into(),
            entry.principal.clone().into(),
            entry.rpc.clone().into(),
            stored.into(),
            total.into(),
            entry.request_digest.clone().into(),
            entry.idempotency_key.clone().into(),
            entry.result_code.clone().into(),
        ])
        .map_err(|e| Error::Internal(e.into()))?
        .to_owned();
    conn.execute(StatementBuilder::build(
        &insert,
        &conn.get_database_backend(),
    ))
    .await?;
    Ok(NewEvent::new(AGGREGATE, entry.id.clone(), RECORDED, &entry))
}

/// A service's `ListAuditEventsRequest` and its response (see `contracts`).
pub trait AuditQuery: Send + 'static {
    /// The service's `ListAuditEventsResponse`.
    type Answer;
    /// The filter and the paging asked for.
    fn parts(&self) -> (Option<&common::AuditFilter>, Option<&common::PageRequest>);
    /// The response carrying a page of events.
    fn answer(events: Vec<common::AuditEvent>, page: common::PageResponse) -> Self::Answer;
}

/// The `ListAuditEvents` handler of every service.
pub async fn list_audit_events<Q: AuditQuery>(
    db: &Db,
    request: tonic::Request<Q>,
) -> Result<tonic::Response<Q::Answer>, tonic::Status> {
    let query = request.into_inner();
    let (filter, page) = query.parts();
    let (events, page) = list(db.reader(), filter, page).await?;
    Ok(tonic::Response::new(Q::answer(events, page)))
}

/// A page of the audit log matching `filter`, newest first.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    filter: Option<&common::AuditFilter>,
    page: Option<&common::PageRequest>,
) -> Result<(Vec<common::AuditEvent>, common::PageResponse), Error> {
    let default = common::AuditFilter::default();
    let filter = filter.unwrap_or(&default);
    let mut v = FieldViolations::default();
    let principal = validate::optional_text(&mut v, "filter.principal", &filter.principal, 200);
    let rpc = validate::optional_text(&mut v, "filter.rpc", &filter.rpc, 200);
    if !filter.account_id.is_empty() && uuid::Uuid::parse_str(&filter.account_id).is_err() {
        v.add("filter.account_id", "must be a UUID");
    }
    let period = match &filter.period {
        Some(p) => validate::period(&mut v, "filter.period", Some(p)),
        None => None,
    };
    v.into_result()?;
    let (principal, rpc) = (principal.unwrap_or_default(), rpc.unwrap_or_default());
    let rendered = format!("audit|{principal}|{}|{rpc}|{period:?}", filter.account_id);
    let page = Page::parse(page, &rendered)?;
    let mut select = Query::select();
    select
        .columns(COLUMNS)
        .from(AuditEvents::Table)
        .order_by(AuditEvents::Id, Order::Desc)
        .limit(page.fetch_limit());
    if !principal.is_empty() {
        select.and_where(Expr::col(AuditEvents::Principal).eq(principal.as_str()));
    }
    if rpc.starts_with('/') {
        select.and_where(Expr::col(AuditEvents::Rpc).eq(rpc.as_str()));
    } else if !rpc.is_empty() {
        // A method name matches the end of the path exactly: no wildcard
        // of the caller's reaches the pattern.
        let method = rpc.replace(['%', '_', '\\'], "");
        if method != rpc {
            return Err(Error::invalid(
                "filter.rpc",
                "must be a method name or a full path",
            ));
        }
        select.and_where(Expr::col(AuditEvents::Rpc).like(format!("%/{method}")));
    }
    if !filter.account_id.is_empty() {
        select.and_where(
            Expr::col(AuditEvents::Targets).like(format!("%,account:{},%", filter.account_id)),
        );
    }
    if let Some((start, end)) = period {
        select
            .and_where(Expr::col(AuditEvents::OccurredAt).gte(start))
            .and_where(Expr::col(AuditEvents::OccurredAt).lt(end));
    }
    if let Some(after) = &page.after {
        select.and_where(Expr::col(AuditEvents::Id).lt(after.as_str()));
    }
    let rows = conn
        .query_all(StatementBuilder::build(
            &select,
            &conn.get_database_backend(),
        ))
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let stored: String = row.try_get("", "targets")?;
        let occurred_at: i64 = row.try_get("", "occurred_at")?;
        events.push(common::AuditEvent {
            id: row.try_get("", "id")?,
            occurred_at: Some(crate::Instant::from_micros(occurred_at).to_timestamp()),
            principal: row.try_get("", "principal")?,
            rpc: row.try_get("", "rpc")?,
            targets: stored
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            targets_total: row.try_get("", "targets_total")?,
            request_digest: row.try_get("", "request_digest")?,
            idempotency_key: row.try_get("", "idempotency_key")?,
            result_code: row.try_get("", "result_code")?,
        });
    }
    Ok(page.finish(events, |e| e.id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bowtie_proto::common::Money;

    #[test]
    fn targets_are_the_distinct_aggregates_of_the_events_in_order() {
        let payload = Money::default();
        let events = [
            NewEvent::new("account", "a1".to_owned(), "account.updated", &payload),
            NewEvent::new("cta", "c1".to_owned(), "cta.opened", &payload),
            NewEvent::new("account", "a1".to_owned(), "account.tagged", &payload),
        ];
        assert_eq!(targets(&events), vec!["account:a1", "cta:c1"]);
    }

    #[test]
    fn the_digest_is_the_sha256_of_the_bytes_read() {
        let (context, body) = AuditContext::open(None, "/x.v1.S/M", (), true);
        if let Some(Ok(mut h)) = body.digest.as_ref().map(|d| d.lock()) {
            h.update(b"abc");
        }
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            context.request_digest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn an_unaudited_call_hashes_nothing_and_records_nothing() {
        let (context, body) = AuditContext::open(None, "/x.v1.S/M", (), false);
        assert!(body.digest.is_none());
        assert!(!context.recording());
    }
}
