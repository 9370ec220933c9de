//! The batched write path of the Stripe connector (docs/design.md 8.1): a
//! set of events (the deliveries a webhook collected, or a chunk of a
//! backfill) becomes one `ImportAccounts` stream to accounts and one
//! `ImportSubscriptionEvents` and one `ImportInvoices` stream to revenue,
//! each batch of them one transaction, instead of two or three unary
//! writes per event.
//!
//! Every rule of the one-by-one path holds per event: each event is read
//! and its mapped metadata checked before anything is written, and an
//! event that cannot be used fails alone with its field named. The keys are
//! the Stripe objects' own: an account per customer (source `stripe`), a
//! revenue subscription per item (`stripe:sub:<sub>/<si>`) started with
//! zero terms at the subscription's `start_date` and changed from each
//! event's instant, an invoice per Stripe invoice (`stripe:<in>`, its
//! payment added to the same invoice). The streams' rows are idempotent by
//! their content, so a redelivered event, or a backfill over live events,
//! changes nothing; a change lands at its own effective instant whatever
//! the order of arrival, and the rows of one batch are sent in the order of
//! those instants.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bowtie_proto::common::{ImportOutcome, ImportResult};
use bowtie_proto::{accounts as acc, common as com, revenue as rev};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::{Code, Status};

use super::{
    Customer, Event, Invoice, SOURCE, StripeResult, Subscription, account_of, at, cancellation,
    customer_id, item_terms, object, previous_status, removed_items,
};
use crate::AppState;
use crate::clients::Caller;
use crate::connectors::count_ignored;
use crate::error::ApiError;

/// Most rows in one batch of an import stream (the services' limit).
const ROWS: usize = 5_000;

/// Batches of webhook deliveries applied at the same time: the next one is
/// collected while earlier ones are written.
const IN_FLIGHT: usize = 4;

/// The outcome of one event.
type Outcome = Result<StripeResult, ApiError>;

/// What one event writes, before its account is known.
struct Plan {
    result: StripeResult,
    /// The customer whose account the event concerns.
    customer: Option<String>,
    /// `customer.created` / `.updated`: the account's data at `created`.
    account: Option<acc::Account>,
    created: i64,
    /// Subscription rows; their `account_id` is filled in later.
    subscriptions: Vec<rev::SubscriptionEvent>,
    /// The invoice row; its `account_id` is filled in later.
    invoice: Option<rev::ImportedInvoice>,
}

/// The revenue id of a Stripe subscription item.
fn item_key(s: &Subscription, item: &str) -> String {
    format!("stripe:sub:{}/{item}", s.id)
}

fn zero_terms(s: &Subscription, plan: &str) -> rev::Terms {
    rev::Terms {
        plan: plan.to_owned(),
        quantity: 0,
        unit_price: Some(com::Money {
            currency_code: s.currency.to_ascii_uppercase(),
            minor_units: 0,
        }),
        discount_basis_points: 0,
    }
}

/// The start of an item's revenue subscription: zero terms at the Stripe
/// subscription's start (a repeat is a duplicate).
fn start_row(s: &Subscription, item: &str) -> rev::SubscriptionEvent {
    rev::SubscriptionEvent {
        subscription_id: item_key(s, item),
        r#type: rev::SubscriptionEventType::Start as i32,
        effective_at: at(s.start_date),
        terms: Some(zero_terms(s, item)),
        billing_interval: rev::BillingInterval::Month as i32,
        ..rev::SubscriptionEvent::default()
    }
}

fn change_row(
    s: &Subscription,
    item: &str,
    terms: rev::Terms,
    effective_at: i64,
) -> rev::SubscriptionEvent {
    rev::SubscriptionEvent {
        subscription_id: item_key(s, item),
        r#type: rev::SubscriptionEventType::Change as i32,
        effective_at: at(effective_at),
        terms: Some(terms),
        ..rev::SubscriptionEvent::default()
    }
}

/// Reads `event` and checks its mapped metadata: what it writes.
async fn plan(state: &AppState, caller: &Caller, event: &Event) -> Result<Plan, ApiError> {
    let settings = &state.connectors.stripe;
    let mut plan = Plan {
        result: StripeResult {
            event_id: event.id.clone(),
            event_type: event.kind.clone(),
            handled: true,
            account_id: None,
        },
        customer: None,
        account: None,
        created: event.created,
        subscriptions: Vec::new(),
        invoice: None,
    };
    match event.kind.as_str() {
        "customer.created" | "customer.updated" => {
            let c: Customer = object(event)?;
            // Mapped metadata is checked before anything is written.
            let metadata = c
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let attributes = super::super::attributes::mapped(
                state,
                caller,
                &settings.attributes,
                "data.object.metadata",
                &metadata,
            )
            .await?
            .map_err(super::super::attributes::Misfit::into_error)?;
            let mut account = account_of(&c, &settings.segment_metadata_key);
            account.attributes = attributes;
            plan.account = Some(account);
            plan.customer = Some(c.id);
        }
        // A deleted customer keeps its account and history; its
        // subscriptions end with their own events.
        "customer.deleted" => plan.customer = Some(object::<Customer>(event)?.id),
        "customer.subscription.trial_will_end" => {
            let s: Subscription = object(event)?;
            plan.customer = Some(customer_id(&s.customer)?);
        }
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.paused"
        | "customer.subscription.resumed" => {
            let s: Subscription = object(event)?;
            plan.customer = Some(customer_id(&s.customer)?);
            let previous = event.data.previous_attributes.as_ref();
            let converted = previous_status(previous) == Some("trialing")
                && matches!(s.status.as_str(), "active" | "past_due");
            let effective_at = match (event.kind.as_str(), converted, s.trial_end) {
                ("customer.subscription.created", _, _) => s.start_date,
                (_, true, Some(trial_end)) => trial_end,
                _ => event.created,
            }
            .max(s.start_date);
            for (item, terms) in item_terms(&s, &settings.discounts) {
                plan.subscriptions.push(start_row(&s, &item));
                plan.subscriptions
                    .push(change_row(&s, &item, terms, effective_at));
            }
            for item in removed_items(previous, &s) {
                plan.subscriptions.push(start_row(&s, &item));
                let zero = zero_terms(&s, &item);
                plan.subscriptions
                    .push(change_row(&s, &item, zero, effective_at));
            }
        }
        "customer.subscription.deleted" => {
            let s: Subscription = object(event)?;
            plan.customer = Some(customer_id(&s.customer)?);
            let ended = s
                .ended_at
                .or(s.canceled_at)
                .unwrap_or(event.created)
                .max(s.start_date);
            let (kind, reason) = cancellation(
                s.cancellation_details.as_ref(),
                &settings.feedback_reasons,
                &state.churn_reasons,
            );
            for item in &s.items.data {
                plan.subscriptions.push(start_row(&s, &item.id));
                plan.subscriptions.push(rev::SubscriptionEvent {
                    subscription_id: item_key(&s, &item.id),
                    r#type: rev::SubscriptionEventType::Cancel as i32,
                    effective_at: at(ended),
                    cancellation_kind: kind as i32,
                    reason_code: reason.clone(),
                    ..rev::SubscriptionEvent::default()
                });
            }
        }
        "invoice.paid" | "invoice.payment_failed" | "invoice.marked_uncollectible" => {
            let i: Invoice = object(event)?;
            plan.customer = Some(customer_id(&i.customer)?);
            // A zero invoice (a trial's) says nothing about paying on time.
            if i.amount_due > 0 {
                let paid_at = (event.kind == "invoice.paid").then(|| {
                    i.status_transitions
                        .as_ref()
                        .and_then(|t| t.paid_at)
                        .unwrap_or(event.created)
                });
                // One invoice per Stripe invoice: its payment after a
                // failure is recorded on the same invoice, and repeats of
                // either outcome change nothing.
                plan.invoice = Some(rev::ImportedInvoice {
                    external_id: format!("stripe:{}", i.id),
                    amount: Some(com::Money {
                        currency_code: i.currency.to_ascii_uppercase(),
                        minor_units: i.amount_due,
                    }),
                    due_at: at(i.due_date.unwrap_or(i.created)),
                    paid_at: paid_at.and_then(at),
                    ..rev::ImportedInvoice::default()
                });
            }
        }
        other => {
            count_ignored("stripe", other);
            plan.result.handled = false;
        }
    }
    Ok(plan)
}

/// The error a rejected row of `service` stands for.
fn row_error(service: &str, r: &ImportResult) -> ApiError {
    let code = Code::from(r.code);
    if code == Code::InvalidArgument && !r.field.is_empty() {
        return ApiError::invalid(r.field.clone(), r.message.clone());
    }
    ApiError::from_status(service, &Status::new(code, r.message.clone()))
}

fn rejected(r: &ImportResult) -> bool {
    r.outcome == ImportOutcome::Rejected as i32
}

/// The result of each row of `rows` sent in batches of [`ROWS`] on one
/// stream opened by `open`: a failed stream fails every row it did not answer.
async fn stream_rows<Row, Req, Resp, Open, Fut>(
    rows: Vec<Row>,
    service: &str,
    wrap: impl Fn(Vec<Row>) -> Req,
    open: Open,
    results: impl Fn(Resp) -> Vec<ImportResult>,
) -> Vec<Result<ImportResult, ApiError>>
where
    Open: FnOnce(futures::stream::Iter<std::vec::IntoIter<Req>>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Streaming<Resp>, Status>>,
{
    let total = rows.len();
    if total == 0 {
        return Vec::new();
    }
    let mut batches = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        batches.push(wrap(rows.by_ref().take(ROWS).collect()));
    }
    let mut out: Vec<Result<ImportResult, ApiError>> = Vec::with_capacity(total);
    let failure = match open(futures::stream::iter(batches)).await {
        Ok(mut answers) => loop {
            match answers.message().await {
                Ok(Some(answer)) => out.extend(results(answer).into_iter().map(Ok)),
                Ok(None) => break None,
                Err(status) => break Some(status),
            }
        },
        Err(status) => Some(status),
    };
    let failed = failure
        .map(|s| ApiError::from_status(service, &s))
        .or_else(|| {
            (out.len() < total)
                .then(|| ApiError::internal(&format!("{service} answered fewer rows")))
        });
    if let Some(error) = failed {
        out.resize_with(total, || Err(error.clone()));
    }
    out.truncate(total);
    out
}

/// Who an account row is for.
enum AccountRow {
    /// A customer event (its plan's index).
    Event(usize),
    /// A customer the batch needs and no event of it describes: the row
    /// only makes sure its account exists.
    Placeholder(String),
}

/// The account of each plan's customer, through one `ImportAccounts`
/// stream: every customer event's data (in the order of their `created`),
/// then a create-only row for each other customer not known yet.
async fn accounts(
    state: &AppState,
    caller: &Caller,
    plans: &[Result<Plan, ApiError>],
) -> Vec<Option<Result<String, ApiError>>> {
    let memo_key = |c: &str| format!("{SOURCE}:account:{c}");
    let mut by_customer: HashMap<String, Result<String, ApiError>> = HashMap::new();
    let mut described: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut order: Vec<usize> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        if let Ok(Plan {
            account: Some(_),
            customer: Some(c),
            ..
        }) = plan
        {
            order.push(i);
            described.insert(c);
        }
    }
    order.sort_by_key(|i| plans[*i].as_ref().map_or(0, |p| p.created));
    let mut owners: Vec<AccountRow> = order.into_iter().map(AccountRow::Event).collect();
    let mut placeholders: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for plan in plans.iter().flatten() {
        let Some(c) = plan.customer.as_deref() else {
            continue;
        };
        if described.contains(c) || by_customer.contains_key(c) || placeholders.contains(c) {
            continue;
        }
        match state.known_accounts.get(&memo_key(c)) {
            Some(id) => {
                by_customer.insert(c.to_owned(), Ok(id));
            }
            None => {
                placeholders.insert(c);
                owners.push(AccountRow::Placeholder(c.to_owned()));
            }
        }
    }
    let external = |c: &str| {
        Some(acc::ExternalId {
            source: SOURCE.to_owned(),
            external_id: c.to_owned(),
        })
    };
    let rows: Vec<acc::ImportedAccount> = owners
        .iter()
        .filter_map(|owner| match owner {
            AccountRow::Event(i) => {
                let plan = plans[*i].as_ref().ok()?;
                Some(acc::ImportedAccount {
                    external_id: external(plan.customer.as_deref()?),
                    account: plan.account.clone(),
                    source_updated_at: at(plan.created),
                    create_only: false,
                })
            }
            AccountRow::Placeholder(c) => Some(acc::ImportedAccount {
                external_id: external(c),
                account: Some(acc::Account {
                    name: c.clone(),
                    segment: com::Segment::Smb as i32,
                    ..acc::Account::default()
                }),
                source_updated_at: None,
                create_only: true,
            }),
        })
        .collect();
    let client = state.services.accounts.clone();
    let results = stream_rows(
        rows,
        "accounts",
        |accounts| acc::ImportAccountsRequest { accounts },
        |stream| async move {
            let mut client = client;
            Ok(client
                .import_accounts(caller.request(stream))
                .await?
                .into_inner())
        },
        |r: acc::ImportAccountsResponse| r.results,
    )
    .await;
    let mut out: Vec<Option<Result<String, ApiError>>> = plans.iter().map(|_| None).collect();
    for (owner, result) in owners.iter().zip(results) {
        let answer = match result {
            Ok(r) if rejected(&r) => Err(row_error("accounts", &r)),
            Ok(r) => Ok(r.id),
            Err(e) => Err(e),
        };
        let customer = match owner {
            AccountRow::Event(i) => {
                out[*i] = Some(answer.clone());
                plans[*i].as_ref().ok().and_then(|p| p.customer.clone())
            }
            AccountRow::Placeholder(c) => Some(c.clone()),
        };
        let Some(customer) = customer else { continue };
        if let Ok(id) = &answer {
            state.known_accounts.set(&memo_key(&customer), id);
        }
        let keep = matches!(by_customer.get(&customer), Some(Ok(_))) && answer.is_err();
        if !keep {
            by_customer.insert(customer, answer);
        }
    }
    for (i, plan) in plans.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        if let Ok(Plan {
            customer: Some(c), ..
        }) = plan
        {
            out[i] = by_customer.get(c).cloned();
        }
    }
    out
}

/// Applies `events` (verified, or a backfill's) together: per event, in
/// order, what it did or why it failed.
async fn apply_batch(state: &AppState, caller: &Caller, events: &[Event]) -> Vec<Outcome> {
    let plans: Vec<Result<Plan, ApiError>> =
        futures::future::join_all(events.iter().map(|e| plan(state, caller, e))).await;
    let accounts = accounts(state, caller, &plans).await;
    // Each event's subscription rows and invoice row, with its account.
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(plans.len());
    let mut subscription_rows: Vec<(usize, rev::SubscriptionEvent)> = Vec::new();
    let mut invoice_rows: Vec<(usize, rev::ImportedInvoice)> = Vec::new();
    let mut results: Vec<StripeResult> = Vec::with_capacity(plans.len());
    for (i, (plan, account)) in plans.into_iter().zip(accounts).enumerate() {
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                outcomes.push(Some(Err(e)));
                results.push(StripeResult {
                    event_id: String::new(),
                    event_type: String::new(),
                    handled: false,
                    account_id: None,
                });
                continue;
            }
        };
        let mut result = plan.result;
        match account {
            Some(Err(e)) => {
                outcomes.push(Some(Err(e)));
                results.push(result);
                continue;
            }
            Some(Ok(id)) => {
                for mut row in plan.subscriptions {
                    row.account_id.clone_from(&id);
                    subscription_rows.push((i, row));
                }
                if let Some(mut row) = plan.invoice {
                    row.account_id.clone_from(&id);
                    invoice_rows.push((i, row));
                }
                result.account_id = Some(id);
            }
            None => {}
        }
        outcomes.push(None);
        results.push(result);
    }
    // A subscription's rows in the order of their instants: its start
    // first, then its changes and end as they happened.
    subscription_rows.sort_by_key(|(_, row)| {
        let instant = row.effective_at.map_or(0, |t| t.seconds);
        let start = row.r#type == rev::SubscriptionEventType::Start as i32;
        (instant, !start)
    });
    let (sub_owners, sub_rows): (Vec<usize>, Vec<_>) = subscription_rows.into_iter().unzip();
    let (inv_owners, inv_rows): (Vec<usize>, Vec<_>) = invoice_rows.into_iter().unzip();
    let revenue = state.services.revenue.clone();
    let subscriptions = stream_rows(
        sub_rows,
        "revenue",
        |events| rev::ImportSubscriptionEventsRequest { events },
        |stream| {
            let mut client = revenue.clone();
            async move {
                Ok(client
                    .import_subscription_events(caller.request(stream))
                    .await?
                    .into_inner())
            }
        },
        |r: rev::ImportSubscriptionEventsResponse| r.results,
    );
    let invoices = stream_rows(
        inv_rows,
        "revenue",
        |invoices| rev::ImportInvoicesRequest { invoices },
        |stream| {
            let mut client = revenue.clone();
            async move {
                Ok(client
                    .import_invoices(caller.request(stream))
                    .await?
                    .into_inner())
            }
        },
        |r: rev::ImportInvoicesResponse| r.results,
    );
    let (subscriptions, invoices) = futures::join!(subscriptions, invoices);
    let mut failures: HashMap<usize, ApiError> = HashMap::new();
    for (owner, result) in sub_owners.into_iter().zip(subscriptions) {
        let error = match result {
            // "Already so": a start at another instant, a change after the
            // end arriving late, a cancellation of a cancelled item.
            Ok(r) if rejected(&r) && r.code != Code::FailedPrecondition as i32 => {
                row_error("revenue", &r)
            }
            Ok(_) => continue,
            Err(e) => e,
        };
        failures.entry(owner).or_insert(error);
    }
    for (owner, result) in inv_owners.into_iter().zip(invoices) {
        let error = match result {
            Ok(r) if rejected(&r) => row_error("revenue", &r),
            Ok(_) => continue,
            Err(e) => e,
        };
        failures.entry(owner).or_insert(error);
    }
    outcomes
        .into_iter()
        .zip(results)
        .enumerate()
        .map(|(i, (outcome, result))| match outcome {
            Some(done) => done,
            None => match failures.remove(&i) {
                Some(error) => Err(error),
                None => Ok(result),
            },
        })
        .collect()
}

/// A verified delivery waiting for its batch.
struct Delivery {
    state: AppState,
    caller: Caller,
    event: Event,
    answer: oneshot::Sender<Outcome>,
}

/// Collects concurrent verified webhook deliveries for
/// `connectors.stripe.batch_window_ms` (up to `batch_max_events`) and
/// applies them with one [`apply_batch`]; each delivery is answered with
/// its own outcome once its batch is written.
#[derive(Debug)]
pub struct Batcher {
    queue: mpsc::Sender<Delivery>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("event", &self.event.id)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// A batcher collecting for `window`, at most `max` deliveries a batch;
    /// its task ends when the batcher is dropped.
    pub fn start(window: Duration, max: usize) -> Self {
        let max = max.max(1);
        let (queue, inbound) = mpsc::channel(max.saturating_mul(IN_FLIGHT));
        tokio::spawn(collect(inbound, window, max));
        Self { queue }
    }

    /// Applies one verified event with the deliveries around it.
    pub async fn apply(&self, state: &AppState, caller: Caller, event: Event) -> Outcome {
        let (answer, outcome) = oneshot::channel();
        let delivery = Delivery {
            state: state.clone(),
            caller,
            event,
            answer,
        };
        self.queue
            .send(delivery)
            .await
            .map_err(|_| ApiError::internal(&"the Stripe batcher has stopped"))?;
        outcome
            .await
            .map_err(|_| ApiError::internal(&"a Stripe batch ended without an answer"))?
    }
}

/// The batcher's task: waits for a delivery, collects more for `window`
/// (or until `max`), then applies the batch while the next is collected.
async fn collect(mut inbound: mpsc::Receiver<Delivery>, window: Duration, max: usize) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = inbound.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + window;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, inbound.recv()).await {
                Ok(Some(delivery)) => batch.push(delivery),
                Ok(None) | Err(_) => break,
            }
        }
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // What arrived while the earlier batches were written joins this one.
        while batch.len() < max {
            match inbound.try_recv() {
                Ok(delivery) => batch.push(delivery),
                Err(_) => break,
            }
        }
        tokio::spawn(async move {
            run(batch).await;
            drop(slot);
        });
    }
}

/// Applies one batch and answers each delivery.
async fn run(batch: Vec<Delivery>) {
    let Some(first) = batch.first() else { return };
    let (state, caller) = (first.state.clone(), first.caller.clone());
    let (events, answers): (Vec<Event>, Vec<oneshot::Sender<Outcome>>) =
        batch.into_iter().map(|d| (d.event, d.answer)).unzip();
    let outcomes = apply_batch(&state, &caller, &events).await;
    for (answer, outcome) in answers.into_iter().zip(outcomes) {
        // A delivery whose client has gone is answered to nobody.
        let _ = answer.send(outcome);
    }
}

/// Applies the synthetic events of listed objects (a backfill chunk) in one
/// batch: per object, in order, `Ok` or the first failure of its events.
pub async fn backfill_batch(
    state: &AppState,
    caller: &Caller,
    objects: &[Value],
) -> Vec<Result<(), ApiError>> {
    let mut owners = Vec::new();
    let mut events = Vec::new();
    let mut out: Vec<Result<(), ApiError>> = Vec::with_capacity(objects.len());
    for (i, object) in objects.iter().enumerate() {
        match super::backfill_events(object) {
            Ok(list) => {
                owners.extend(std::iter::repeat_n(i, list.len()));
                events.extend(list);
                out.push(Ok(()));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    let outcomes = apply_batch(state, caller, &events).await;
    for (owner, outcome) in owners.into_iter().zip(outcomes) {
        if let (Err(e), Some(slot @ Ok(()))) = (outcome, out.get_mut(owner)) {
            *slot = Err(e);
        }
    }
    out
}
