//! The revenue application: each write runs as one unit of work (the change,
//! the recomputed movements and roll-ups, the events and the idempotency key
//! in one transaction) and answers with the protobuf response an idempotent
//! replay returns again (built by `convert`); each read answers with domain
//! values, which the handlers render with `convert`.
//!
//! Every write that touches an account first asks the accounts service for
//! it (NOT_FOUND, or UNAVAILABLE when accounts is down) before the unit of
//! work starts, so nothing is written for an unknown account or when the
//! check cannot be made.

use std::collections::BTreeMap;

use bowtie_proto::accounts::Account;
use bowtie_proto::common::PageResponse;
use bowtie_proto::revenue as pb;
use bowtie_runtime::access;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::paging::Page;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::sql::internal;
use bowtie_runtime::store::{Store, Tx};
use uuid::Uuid;

use crate::convert::{
    fx_rate_to_pb, invoice_to_pb, movement_to_pb, renewal_to_pb, subscription_to_pb,
};
use crate::domain::*;
use crate::risk::ChurnRisk;
use crate::storage::{self, CohortFilter, MovementFilter};

mod import;

pub use import::AccountCache;

/// The revenue policy the service runs with.
#[derive(Debug, Clone)]
pub struct Policy {
    /// ISO-4217 code of every report.
    pub reporting_currency: String,
    /// Accepted cancellation reason codes.
    pub churn_reasons: Vec<String>,
    /// Renewal likelihood (basis points) when no score exists.
    pub default_renewal_likelihood_bp: i64,
    /// Days an invoice may stay unpaid past its due date before its
    /// subscription churns involuntarily (0: never).
    pub past_due_churn_days: i64,
}

/// Where an account reports: its segment, owner and CSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// The account.
    pub id: AccountId,
    /// Its segment.
    pub segment: Segment,
    /// The owner who closed the deal.
    pub owner: String,
    /// The customer success manager looking after it ("" for none).
    pub csm: String,
    /// The account's version with its dimensions (docs/design.md, "Cuts").
    pub version: AccountVersion,
}

impl AccountInfo {
    /// An account of `segment`, `owner` and `csm` at version 1 without
    /// tags or attributes (imports that know only these).
    pub fn new(id: AccountId, segment: Segment, owner: String, csm: String) -> Self {
        let cuts = AccountCuts {
            segment,
            owner: owner.clone(),
            csm: csm.clone(),
            ..AccountCuts::default()
        };
        Self {
            id,
            segment,
            owner,
            csm,
            version: AccountVersion {
                version: 1,
                effective_at: Instant::from_micros(0),
                cuts,
            },
        }
    }

    /// The accounts service validates segments, so a code it does not know
    /// means the two services disagree on the protocol: an internal error.
    fn from_account(id: AccountId, a: &Account) -> Result<Self, Error> {
        let segment = Segment::try_from(a.segment).map_err(|_| {
            internal(format_args!(
                "account {id} has segment code {}, which this version does not know",
                a.segment
            ))
        })?;
        let effective_at = a.update_time.as_ref().or(a.create_time.as_ref()).map_or(
            Instant::from_micros(0),
            |t| {
                Instant::from_micros(
                    t.seconds
                        .saturating_mul(1_000_000)
                        .saturating_add(i64::from(t.nanos / 1000)),
                )
            },
        );
        let attributes = a
            .attributes
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), attribute_text(value)?)))
            .collect();
        let mut info = Self::new(id, segment, a.owner.clone(), a.csm.clone());
        info.version.version = a.version;
        info.version.effective_at = effective_at;
        info.version.cuts.tags = a.tags.iter().cloned().collect();
        info.version.cuts.attributes = attributes;
        Ok(info)
    }
}

/// An attribute value as the text a cut names it by (docs/design.md,
/// "Cuts"); `None` for an empty value.
fn attribute_text(value: &bowtie_proto::accounts::AttributeValue) -> Option<String> {
    use bowtie_proto::accounts::attribute_value::Kind;
    match value.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        Kind::NumberValue(n) => Some(n.to_string()),
        Kind::BoolValue(b) => Some(b.to_string()),
    }
}

/// One subscription of a bulk import with the account it belongs to.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Where the account reports.
    pub account: AccountInfo,
    /// The subscription with its whole history.
    pub subscription: Subscription,
}

/// Which splits of retention to compute beside the total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionSplit {
    /// Per owner who closed the deal.
    pub by_owner: bool,
    /// Per customer success manager.
    pub by_csm: bool,
}

/// Retention between two instants with the splits asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetentionReport {
    /// The whole cohort.
    pub total: Retention,
    /// Per owner, the largest starting MRR first.
    pub by_owner: Vec<(String, Retention)>,
    /// Per CSM, the largest starting MRR first.
    pub by_csm: Vec<(String, Retention)>,
    /// Per value of the group-by dimension, the largest starting MRR first.
    pub groups: Vec<(String, Retention)>,
}

/// The MRR waterfall with the break-down asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MrrReport {
    /// The periods (of the cut's value for a filter).
    pub periods: Vec<Period>,
    /// Per value of the group-by dimension.
    pub groups: Vec<(String, Vec<Period>)>,
}

/// Subscriptions read per query while summing the renewal book.
const SUMMARY_PAGE: u64 = 5_000;

/// Subscriptions read per query while looking for trials.
const TRIAL_PAGE: u64 = 5_000;

/// One page of a list and the paging to answer with.
pub type PageOf<T> = (Vec<T>, PageResponse);

/// The `(instant, id)` after which a page ordered by time then id goes on.
fn time_cursor(page: &Page) -> Result<Option<(Instant, String)>, Error> {
    let Some(key) = page.after.as_deref() else {
        return Ok(None);
    };
    let bad = || Error::invalid("page.page_token", "is not a valid token");
    let (at, id) = key.split_once('/').ok_or_else(bad)?;
    let at = at.parse::<i64>().map_err(|_| bad())?;
    Ok(Some((Instant::from_micros(at), id.to_owned())))
}

/// The cursor key of a row ordered by time then id, read by [`time_cursor`].
fn time_key(at: Instant, id: impl std::fmt::Display) -> String {
    format!("{}/{id}", at.micros())
}

/// The key of a movement export cursor, `micros/account`, read back; a
/// key that is not one is INVALID_ARGUMENT naming `cursor`.
pub fn movement_export_key(key: &str) -> Result<(Instant, String), Error> {
    let bad = || Error::invalid("cursor", "is not a cursor of the movements export");
    let (at, account) = key.split_once('/').ok_or_else(bad)?;
    let at = at.parse::<i64>().map_err(|_| bad())?;
    let account = Uuid::parse_str(account).map_err(|_| bad())?;
    Ok((Instant::from_micros(at), account.to_string()))
}

/// The key of a subscription export cursor (its id) read back; a key that
/// is not one is INVALID_ARGUMENT naming `cursor`.
pub fn subscription_export_key(key: &str) -> Result<SubscriptionId, Error> {
    Uuid::parse_str(key)
        .map(SubscriptionId)
        .map_err(|_| Error::invalid("cursor", "is not a cursor of the subscriptions export"))
}

/// The time of a unit of work.
fn now(tx: &Tx) -> Instant {
    Instant::from_micros(tx.now())
}

/// The revenue service's operations.
#[derive(Debug, Clone)]
pub struct Revenue {
    store: Store,
    directory: AccountDirectory,
    policy: Policy,
    risk: ChurnRisk,
}

impl Revenue {
    /// Operations over a migrated store, checking accounts with `directory`
    /// and asking `risk` for renewal likelihoods.
    pub fn new(store: Store, directory: AccountDirectory, policy: Policy, risk: ChurnRisk) -> Self {
        Self {
            store,
            directory,
            policy,
            risk,
        }
    }

    /// The store (for the change feed).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The ISO-4217 code every report is in.
    pub fn reporting_currency(&self) -> &str {
        &self.policy.reporting_currency
    }

    async fn account(&self, id: AccountId) -> Result<AccountInfo, Error> {
        let account = self.directory.get(id.uuid()).await?;
        AccountInfo::from_account(id, &account)
    }
}

/// Whether the caller may write for every one of `accounts` (the ownership
/// rules, docs/design.md 9.3), with the CSM and owner the accounts service
/// answered for each just before the write: refused at the first account
/// that is not in the caller's book, in the order given (id order for a
/// batch).
pub(crate) fn may_write<'a>(
    accounts: impl IntoIterator<Item = &'a AccountInfo>,
) -> Result<(), Error> {
    for a in accounts {
        access::may_write_account(&a.id.to_string(), &a.csm, &a.owner)?;
    }
    Ok(())
}

impl Revenue {
    /// Creates a subscription.
    pub async fn create_subscription(
        &self,
        new: NewSubscription,
        idem: Option<Idempotency>,
    ) -> Result<pb::CreateSubscriptionResponse, Error> {
        let account = self.account(new.account_id).await?;
        let policy = self.policy.clone();
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    may_write([&account])?;
                    let subscription = Subscription::create(SubscriptionId::new(), new);
                    let out =
                        apply(tx, &policy, &account, subscription, "subscription.created").await?;
                    Ok(pb::CreateSubscriptionResponse {
                        subscription: Some(out),
                    })
                })
            })
            .await
    }

    /// Reads a subscription.
    pub async fn get_subscription(&self, id: SubscriptionId) -> Result<Subscription, Error> {
        storage::require_subscription(self.store.db().reader(), id).await
    }

    /// Amends the subscription `id` with `amend` under its account's lock,
    /// at `expected_version` when one is given, and announces it as
    /// `event_type`; answers with `respond` of the amended subscription.
    async fn amend<R, A, F>(
        &self,
        id: SubscriptionId,
        expected_version: Option<i64>,
        idem: Option<Idempotency>,
        event_type: &'static str,
        amend: A,
        respond: F,
    ) -> Result<R, Error>
    where
        R: prost::Message + Default,
        A: FnOnce(&mut Subscription) -> Result<(), Error> + Send + 'static,
        F: FnOnce(pb::Subscription) -> R + Send + 'static,
    {
        let current = storage::require_subscription(self.store.db().reader(), id).await?;
        let account = self.account(current.account_id).await?;
        let policy = self.policy.clone();
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    may_write([&account])?;
                    storage::lock_account(tx.conn(), account.id).await?;
                    let mut s = storage::require_subscription(tx.conn(), id).await?;
                    check_version(&s, expected_version)?;
                    amend(&mut s)?;
                    let out = apply(tx, &policy, &account, s, event_type).await?;
                    Ok(respond(out))
                })
            })
            .await
    }

    /// Changes a subscription's terms from `effective_at` on.
    pub async fn change_subscription(
        &self,
        id: SubscriptionId,
        effective_at: Instant,
        terms: Terms,
        currency: String,
        expected_version: Option<i64>,
        idem: Option<Idempotency>,
    ) -> Result<pb::ChangeSubscriptionResponse, Error> {
        let change = move |s: &mut Subscription| s.change_priced(effective_at, terms, &currency);
        self.amend(
            id,
            expected_version,
            idem,
            "subscription.changed",
            change,
            |out| pb::ChangeSubscriptionResponse {
                subscription: Some(out),
            },
        )
        .await
    }

    /// Cancels a subscription.
    pub async fn cancel_subscription(
        &self,
        id: SubscriptionId,
        cancellation: Cancellation,
        expected_version: Option<i64>,
        idem: Option<Idempotency>,
    ) -> Result<pb::CancelSubscriptionResponse, Error> {
        if !self.policy.churn_reasons.contains(&cancellation.reason) {
            return Err(Error::invalid(
                "cancellation.reason_code",
                format!(
                    "must be one of the churn reasons: {}",
                    self.policy.churn_reasons.join(", ")
                ),
            ));
        }
        self.amend(
            id,
            expected_version,
            idem,
            "subscription.cancelled",
            move |s| s.cancel(cancellation),
            |out| pb::CancelSubscriptionResponse {
                subscription: Some(out),
            },
        )
        .await
    }

    /// Records an invoice; a late one (paid after its due date, or unpaid
    /// past it) is announced as `invoice.late`. An invoice whose external id
    /// is already recorded is the same invoice: a payment of an unpaid one is
    /// added to it, anything else answers the stored invoice. An invoice of a
    /// subscription revises its account's movements under the past-due policy
    /// (docs/design.md section 8.1).
    pub async fn record_invoice(
        &self,
        invoice: Invoice,
        idem: Option<Idempotency>,
    ) -> Result<pb::RecordInvoiceResponse, Error> {
        let account = self.account(invoice.account_id).await?;
        let policy = self.policy.clone();
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    may_write([&account])?;
                    let (invoice, changed) = store_invoice(tx, invoice).await?;
                    let late = invoice.is_late(now(tx));
                    let out = invoice_to_pb(&invoice, late);
                    if !changed {
                        return Ok(pb::RecordInvoiceResponse { invoice: Some(out) });
                    }
                    if late {
                        tx.emit(NewEvent::new(
                            "account",
                            out.account_id.clone(),
                            "invoice.late",
                            &out,
                        ));
                    }
                    if invoice.subscription_id.is_some() && policy.past_due_churn_days > 0 {
                        recompute_account(tx, &policy, &account).await?;
                    }
                    Ok(pb::RecordInvoiceResponse { invoice: Some(out) })
                })
            })
            .await
    }

    /// Records a renewal decision and announces it as `renewal.recorded`.
    pub async fn record_renewal_outcome(
        &self,
        subscription_id: SubscriptionId,
        outcome: RenewalOutcome,
        decided_at: Instant,
        idem: Option<Idempotency>,
    ) -> Result<pb::RecordRenewalOutcomeResponse, Error> {
        let current =
            storage::require_subscription(self.store.db().reader(), subscription_id).await?;
        let account = self.account(current.account_id).await?;
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    may_write([&account])?;
                    let s = storage::require_subscription(tx.conn(), subscription_id).await?;
                    let Some(term_end) = s.term_end else {
                        return Err(Error::FailedPrecondition(format!(
                            "subscription {subscription_id} has no term, so nothing to renew"
                        )));
                    };
                    storage::save_renewal_outcome(
                        tx.conn(),
                        subscription_id,
                        term_end,
                        outcome,
                        decided_at,
                    )
                    .await?;
                    let renewal = renewal_to_pb(&s, term_end, outcome, decided_at);
                    tx.emit(NewEvent::new(
                        "account",
                        renewal.account_id.clone(),
                        "renewal.recorded",
                        &renewal,
                    ));
                    Ok(pb::RecordRenewalOutcomeResponse {
                        renewal: Some(renewal),
                    })
                })
            })
            .await
    }

    /// Sets an FX rate. Movements convert at the rate in force at their date
    /// when their account is written; set rates before the subscriptions
    /// they convert (an account's movements are re-converted the next time
    /// it changes).
    pub async fn set_fx_rate(
        &self,
        currency: String,
        from: Instant,
        rate: Rate,
        idem: Option<Idempotency>,
    ) -> Result<pb::SetFxRateResponse, Error> {
        if currency == self.policy.reporting_currency {
            return Err(Error::invalid(
                "rate.currency_code",
                "is the reporting currency, whose rate is always 1",
            ));
        }
        let reporting = self.policy.reporting_currency.clone();
        let past_due_days = self.policy.past_due_churn_days;
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    storage::save_rate(tx.conn(), &currency, from, rate).await?;
                    // Movements convert at the rate of their date, so a rate
                    // for a date already past re-values the accounts billed
                    // in that currency; their movements are revised (and the
                    // revisions published) in the same transaction.
                    let fx = storage::fx_table(tx.conn(), &reporting).await?;
                    let histories = storage::histories_in_currency(tx.conn(), &currency).await?;
                    for history in &histories {
                        storage::lock_account(tx.conn(), history.account_id).await?;
                    }
                    let revisions =
                        storage::recompute(tx.conn(), &histories, &fx, past_due_days).await?;
                    for (history, revision) in histories.iter().zip(revisions) {
                        emit_revision(
                            tx,
                            history.account_id,
                            history.segment,
                            &reporting,
                            revision,
                        );
                    }
                    Ok(fx_rate_to_pb(currency, from, rate, reporting))
                })
            })
            .await
    }

    /// A page of movements.
    pub async fn list_movements(
        &self,
        filter: MovementFilter,
        page: Page,
    ) -> Result<PageOf<StoredMovement>, Error> {
        let after = time_cursor(&page)?;
        let rows =
            storage::list_movements(self.store.db().reader(), &filter, after, page.fetch_limit())
                .await?;
        Ok(page.finish(rows, |m| time_key(m.movement.at, m.account_id)))
    }

    /// At most `limit` movements after the export key `after` (from the
    /// first without), by time then account: a batch of the streaming
    /// export, one keyset query on the `movements_time` index.
    pub async fn export_movements(
        &self,
        after: Option<String>,
        limit: u64,
    ) -> Result<Vec<StoredMovement>, Error> {
        let after = after.as_deref().map(movement_export_key).transpose()?;
        let all = MovementFilter {
            start: Instant::from_micros(i64::MIN),
            end: Instant::from_micros(i64::MAX),
            account: None,
            kind: None,
        };
        storage::list_movements(self.store.db().reader(), &all, after, limit).await
    }

    /// A movement's export key: its time then its account.
    pub fn movement_key(m: &StoredMovement) -> String {
        time_key(m.movement.at, m.account_id)
    }

    /// At most `limit` subscriptions after the export key `after` (from the
    /// first without), by id: a batch of the streaming export.
    pub async fn export_subscriptions(
        &self,
        after: Option<String>,
        limit: u64,
    ) -> Result<Vec<Subscription>, Error> {
        let after = after.as_deref().map(subscription_export_key).transpose()?;
        storage::subscriptions_after(self.store.db().reader(), after, limit).await
    }

    /// A page of the renewal book for renewal dates in `[start, end)`.
    pub async fn list_renewals(
        &self,
        start: Instant,
        end: Instant,
        account: Option<AccountId>,
        page: Page,
    ) -> Result<PageOf<RenewalEntry>, Error> {
        let after = time_cursor(&page)?;
        let rows = storage::renewals(
            self.store.db().reader(),
            start,
            end,
            account,
            after,
            page.fetch_limit(),
        )
        .await?;
        let (rows, paging) = page.finish(rows, |(s, _)| {
            time_key(s.term_end.unwrap_or_default(), s.id)
        });
        let now = Instant::now();
        let mut accounts: Vec<AccountId> = rows.iter().map(|(s, _)| s.account_id).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let scored = self.risk.likelihoods(&accounts).await;
        let default = self.policy.default_renewal_likelihood_bp;
        let entries = rows
            .iter()
            .map(|(s, outcome)| {
                let from_scoring = scored.get(&s.account_id).copied();
                RenewalEntry::new(s, *outcome, from_scoring, default, now)
            })
            .collect();
        Ok((entries, paging))
    }

    /// Checks that the attribute a cut names is known: carried by some
    /// account revenue recorded, or else declared in the accounts service
    /// (INVALID_ARGUMENT naming `field` when neither).
    pub async fn check_cut(&self, cut: &ReportCut, field: &str) -> Result<(), Error> {
        let dimension = match cut {
            ReportCut::Uncut => return Ok(()),
            ReportCut::Filter(d, _) | ReportCut::Group(d) => d,
        };
        if let Dimension::Attribute(name) = dimension
            && !storage::dimension_seen(self.store.db().reader(), dimension).await?
            && !self.directory.attribute_declared(name).await?
        {
            return Err(Error::invalid(
                format!("{field}.attribute"),
                format!("{name:?} is not a declared attribute"),
            ));
        }
        Ok(())
    }

    /// The MRR waterfall over months `first..=last`, cut as `cut` says
    /// (docs/design.md, "Cuts").
    pub async fn mrr_report(
        &self,
        first: Month,
        last: Month,
        granularity: Granularity,
        segment: Option<Segment>,
        cut: &ReportCut,
    ) -> Result<MrrReport, Error> {
        let (first, last) = match granularity {
            Granularity::Month => (first, last),
            Granularity::Quarter => (first.quarter_start(), last.quarter_end()),
        };
        let reader = self.store.db().reader();
        if let ReportCut::Filter(dimension, value) = cut {
            let rows = storage::cut_rollups(reader, dimension, Some(value), last).await?;
            return Ok(MrrReport {
                periods: cut_periods(
                    rows.into_iter().map(|(_, m, k, t)| (m, k, t)),
                    first,
                    last,
                    granularity,
                ),
                groups: Vec::new(),
            });
        }
        let totals = self.waterfall(first, last, granularity, segment).await?;
        let ReportCut::Group(dimension) = cut else {
            return Ok(MrrReport {
                periods: totals,
                groups: Vec::new(),
            });
        };
        let rows = storage::cut_rollups(reader, dimension, None, last).await?;
        let mut by_value: BTreeMap<String, Vec<(Month, i32, Tally)>> = BTreeMap::new();
        for (value, month, kind, tally) in rows {
            by_value
                .entry(value)
                .or_default()
                .push((month, kind, tally));
        }
        if dimension.remainder_is_empty_value() {
            // Accounts without the attribute: the total less every value.
            let mut rest: Vec<(Month, i32, Tally)> = storage::rollups(reader, last, None)
                .await?
                .into_iter()
                .map(|(m, k, t)| (m, k.code(), t))
                .collect();
            for (m, k, t) in by_value.values().flatten() {
                rest.push((
                    *m,
                    *k,
                    Tally {
                        amount: -t.amount,
                        count: -t.count,
                    },
                ));
            }
            by_value.insert(String::new(), rest);
        }
        let mut groups: Vec<(String, Vec<Period>)> = by_value
            .into_iter()
            .map(|(value, rows)| (value, cut_periods(rows, first, last, granularity)))
            .filter(|(_, periods)| {
                periods.iter().any(|p| {
                    p.start_mrr != Minor::ZERO
                        || p.end_mrr != Minor::ZERO
                        || p.sums.values().any(|t| *t != Tally::default())
                        || p.moved != Tally::default()
                })
            })
            .collect();
        let end = |periods: &[Period]| periods.last().map_or(Minor::ZERO, |p| p.end_mrr);
        groups.sort_by(|(a, pa), (b, pb)| end(pb).cmp(&end(pa)).then_with(|| a.cmp(b)));
        Ok(MrrReport {
            periods: totals,
            groups,
        })
    }

    /// The uncut waterfall over whole periods `first..=last`.
    async fn waterfall(
        &self,
        first: Month,
        last: Month,
        granularity: Granularity,
        segment: Option<Segment>,
    ) -> Result<Vec<Period>, Error> {
        let rows = storage::rollups(self.store.db().reader(), last, segment).await?;
        let mut opening = (Minor::ZERO, 0i64);
        let mut monthly: BTreeMap<(Month, MovementKind), Tally> = BTreeMap::new();
        for (month, kind, tally) in rows {
            if month < first {
                opening.0 += tally.amount;
                opening.1 += match kind {
                    MovementKind::New | MovementKind::Reactivation => tally.count,
                    MovementKind::Churn => -tally.count,
                    _ => 0,
                };
            } else {
                monthly.insert((month, kind), tally);
            }
        }
        Ok(waterfall(opening, &monthly, first, last, granularity))
    }

    /// The churn analysis over months `first..=last` (widened to whole
    /// quarters for quarters): reads the CHURN and CONTRACTION movements of
    /// the range with their stored causes.
    pub async fn churn_analysis(
        &self,
        first: Month,
        last: Month,
        granularity: Granularity,
        segment: Option<Segment>,
    ) -> Result<Vec<ChurnPeriod>, Error> {
        let (first, last) = match granularity {
            Granularity::Month => (first, last),
            Granularity::Quarter => (first.quarter_start(), last.quarter_end()),
        };
        let rows = storage::loss_causes(self.store.db().reader(), first, last, segment).await?;
        Ok(churn_analysis(&rows, first, last, granularity))
    }

    /// Trial-to-paid conversion of the trials started in months
    /// `first..=last` (widened to whole quarters by quarter), of one cut's
    /// accounts when `cut` filters, as they stand now. Reads every
    /// subscription once, a page at a time, keeping only the trials.
    pub async fn trial_conversion(
        &self,
        first: Month,
        last: Month,
        granularity: Granularity,
        cut: &ReportCut,
    ) -> Result<Vec<TrialPeriod>, Error> {
        let (first, last) = match granularity {
            Granularity::Month => (first, last),
            Granularity::Quarter => (first.quarter_start(), last.quarter_end()),
        };
        let (from, to) = (month_start(first), month_start(last + 1));
        let reader = self.store.db().reader();
        let mut trials: Vec<(Subscription, Trial)> = Vec::new();
        let mut after = None;
        loop {
            let page = storage::subscriptions_after(reader, after, TRIAL_PAGE).await?;
            let full = page.len() as u64 == TRIAL_PAGE;
            after = page.last().map(|s| s.id);
            trials.extend(page.into_iter().filter_map(|s| {
                let trial = s.trial().filter(|t| from <= t.started && t.started < to)?;
                Some((s, trial))
            }));
            if !full {
                break;
            }
        }
        if let ReportCut::Filter(dimension, value) = cut {
            let mut accounts: Vec<AccountId> = trials.iter().map(|(s, _)| s.account_id).collect();
            accounts.sort_unstable();
            accounts.dedup();
            let versions = storage::versions_of(reader, &accounts).await?;
            trials.retain(|(s, t)| {
                let mut cuts = versions
                    .get(&s.account_id)
                    .and_then(|v| version_at(v, t.started))
                    .map(|v| v.cuts.clone())
                    .unwrap_or_default();
                cuts.plan = s
                    .terms_at(t.started)
                    .map(|t| t.plan.clone())
                    .unwrap_or_default();
                cuts.values_of(dimension).contains(value)
            });
        }
        let trials: Vec<Trial> = trials.into_iter().map(|(_, t)| t).collect();
        Ok(trial_conversion(
            &trials,
            first,
            last,
            granularity,
            Instant::now(),
        ))
    }

    /// The cohort grid of the cohorts `first..=last`, `months` months deep.
    pub async fn cohort_retention(
        &self,
        first: Month,
        last: Month,
        months: i32,
        segment: Option<Segment>,
        cut: &ReportCut,
    ) -> Result<CohortGrid, Error> {
        let reader = self.store.db().reader();
        let mut firsts =
            storage::first_payments(reader, month_start(first), month_start(last + 1), segment)
                .await?;
        if let ReportCut::Filter(dimension, value) = cut {
            let cuts = storage::cuts_at(reader, &firsts).await?;
            firsts.retain(|(account, _)| {
                cuts.get(account)
                    .is_some_and(|c| c.values_of(dimension).contains(value))
            });
        }
        let cohort_of: BTreeMap<AccountId, Month> = firsts
            .into_iter()
            .map(|(account, at)| (account, month_of(at)))
            .collect();
        let accounts: Vec<AccountId> = cohort_of.keys().copied().collect();
        let spans = storage::spans_of(reader, &accounts).await?;
        Ok(cohort_grid(&cohort_of, &spans, months, Instant::now()))
    }

    /// Records a month's spend and gross margin.
    pub async fn record_spend(
        &self,
        month: Month,
        spend: Minor,
        margin_bp: i32,
        idem: Option<Idempotency>,
    ) -> Result<pb::RecordSpendResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    // Company-wide spend is in nobody's book.
                    access::may_write_unowned("the company's spend")?;
                    storage::save_spend(tx.conn(), month, spend, margin_bp).await?;
                    Ok(pb::RecordSpendResponse {
                        month: month_label(month),
                    })
                })
            })
            .await
    }

    /// CAC, LTV, LTV:CAC and payback of `month`, from its spend and the
    /// waterfall of the six months up to it.
    pub async fn unit_economics(&self, month: Month) -> Result<UnitEconomics, Error> {
        let reader = self.store.db().reader();
        let (spend, margin_bp) = storage::spend(reader, month).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "no spend recorded for {}; record it with RecordSpend",
                month_label(month)
            ))
        })?;
        let periods = self
            .waterfall(month - 5, month, Granularity::Month, None)
            .await?;
        Ok(UnitEconomics::new(spend, margin_bp, &periods))
    }

    /// Retention of the accounts paying at `t0`, at `t1`, and optionally
    /// per owner who closed the deal and per CSM.
    pub async fn retention(
        &self,
        t0: Instant,
        t1: Instant,
        filter: CohortFilter,
        split: RetentionSplit,
        cut: &ReportCut,
    ) -> Result<RetentionReport, Error> {
        let reader = self.store.db().reader();
        let (total, groups) = match cut {
            ReportCut::Uncut => (
                storage::retention(reader, t0, t1, &filter).await?,
                Vec::new(),
            ),
            ReportCut::Filter(dimension, value) => {
                let rows =
                    storage::retention_by_cut(reader, t0, t1, &filter, dimension, Some(value))
                        .await?;
                let total = rows.into_iter().next().map(|(_, r)| r).unwrap_or_default();
                (total, Vec::new())
            }
            ReportCut::Group(dimension) => {
                let total = storage::retention(reader, t0, t1, &filter).await?;
                let mut groups =
                    storage::retention_by_cut(reader, t0, t1, &filter, dimension, None).await?;
                if dimension.remainder_is_empty_value() {
                    let mut rest = total;
                    for (_, r) in &groups {
                        rest.accounts_start -= r.accounts_start;
                        rest.accounts_retained -= r.accounts_retained;
                        rest.mrr_start -= r.mrr_start;
                        rest.mrr_retained -= r.mrr_retained;
                        rest.mrr_end -= r.mrr_end;
                    }
                    if rest.accounts_start > 0 {
                        groups.push((String::new(), rest));
                        groups.sort_by(|(a, ra), (b, rb)| {
                            rb.mrr_start.cmp(&ra.mrr_start).then_with(|| a.cmp(b))
                        });
                    }
                }
                (total, groups)
            }
        };

        let by_owner = if split.by_owner {
            storage::retention_by_owner(reader, t0, t1, &filter).await?
        } else {
            Vec::new()
        };
        let by_csm = if split.by_csm {
            storage::retention_by_csm(reader, t0, t1, &filter).await?
        } else {
            Vec::new()
        };
        Ok(RetentionReport {
            total,
            by_owner,
            by_csm,
            groups,
        })
    }

    /// The renewal book of `[start, end)` summed per person of `grouping`,
    /// only `only`'s book when given, in the reporting currency.
    pub async fn summarize_renewals(
        &self,
        start: Instant,
        end: Instant,
        grouping: BookGrouping,
        only: Option<String>,
    ) -> Result<Vec<RenewalSummary>, Error> {
        let reader = self.store.db().reader();
        let mut rows = Vec::new();
        let mut after = None;
        loop {
            let page = storage::renewals(reader, start, end, None, after, SUMMARY_PAGE).await?;
            let full = page.len() as u64 == SUMMARY_PAGE;
            after = page
                .last()
                .map(|(s, _)| (s.term_end.unwrap_or_default(), s.id.to_string()));
            rows.extend(page);
            if !full {
                break;
            }
        }
        let mut accounts: Vec<AccountId> = rows.iter().map(|(s, _)| s.account_id).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let people = storage::book_people(reader, &accounts).await?;
        let wanted: Vec<AccountId> = accounts
            .into_iter()
            .filter(|a| {
                let person = people.get(a).map_or("", |p| p.person(grouping));
                only.as_deref().is_none_or(|o| o == person)
            })
            .collect();
        let scored = self.risk.likelihoods(&wanted).await;
        let default = self.policy.default_renewal_likelihood_bp;
        let now = Instant::now();
        let entries: Vec<RenewalEntry> = rows
            .iter()
            .filter(|(s, _)| wanted.binary_search(&s.account_id).is_ok())
            .map(|(s, outcome)| {
                let from_scoring = scored.get(&s.account_id).copied();
                RenewalEntry::new(s, *outcome, from_scoring, default, now)
            })
            .collect();
        let fx = storage::fx_table(reader, &self.policy.reporting_currency).await?;
        summarize_renewals(&entries, &people, grouping, only.as_deref(), &fx)
    }

    /// Imports subscriptions with their whole histories in one transaction,
    /// through the same derivation and roll-up code as single writes (for
    /// loading a billing system's history). Accounts are taken as given, not
    /// checked with the accounts service, and no events are published: an
    /// import backfills history rather than reporting news. Returns the
    /// number of movements recorded.
    pub async fn import(&self, batch: Vec<Imported>) -> Result<usize, Error> {
        let db = self.store.db().writer();
        let txn = sea_orm::TransactionTrait::begin(db).await?;
        let fx = storage::fx_table(&txn, &self.policy.reporting_currency).await?;
        let now = Instant::now();
        let subs: Vec<&Subscription> = batch.iter().map(|i| &i.subscription).collect();
        storage::save_subscriptions(&txn, &subs, now).await?;
        let mut accounts: BTreeMap<AccountId, AccountInfo> = BTreeMap::new();
        for i in &batch {
            accounts.insert(i.account.id, i.account.clone());
        }
        let ids: Vec<AccountId> = accounts.keys().copied().collect();
        let mut histories = storage::subscriptions_of(&txn, &ids).await?;
        let histories: Vec<AccountHistory> = accounts
            .into_values()
            .map(|a| AccountHistory {
                subscriptions: histories.remove(&a.id).unwrap_or_default(),
                account_id: a.id,
                segment: a.segment,
                owner: a.owner,
                csm: a.csm,
                version: Some(a.version),
            })
            .collect();
        let revisions =
            storage::recompute(&txn, &histories, &fx, self.policy.past_due_churn_days).await?;
        txn.commit().await?;
        Ok(revisions.iter().map(|r| r.recorded.len()).sum())
    }
}

fn check_version(s: &Subscription, expected: Option<i64>) -> Result<(), Error> {
    match expected {
        Some(expected) if expected != s.version => Err(Error::Aborted(format!(
            "subscription {} is at version {}, not {expected}; re-read it and retry",
            s.id, s.version
        ))),
        _ => Ok(()),
    }
}

/// Saves `subscription`, recomputes its account's movements and queues the
/// subscription event and the movement events.
async fn apply(
    tx: &mut Tx,
    policy: &Policy,
    account: &AccountInfo,
    subscription: Subscription,
    event_type: &'static str,
) -> Result<pb::Subscription, Error> {
    storage::lock_account(tx.conn(), account.id).await?;
    storage::save_subscriptions(tx.conn(), &[&subscription], now(tx)).await?;
    let out = subscription_to_pb(&subscription, now(tx));
    tx.emit(NewEvent::new(
        "account",
        account.id.to_string(),
        event_type,
        &out,
    ));
    recompute_account(tx, policy, account).await?;
    Ok(out)
}

/// Stores `invoice` inside `tx` (checking that its subscription is its
/// account's) over the invoice recorded under its external id, if any (see
/// [`record_over`]); answers the invoice as stored and whether it changed.
/// Nothing is written when it is refused.
async fn store_invoice(tx: &mut Tx, invoice: Invoice) -> Result<(Invoice, bool), Error> {
    if let Some(sid) = invoice.subscription_id {
        let s = storage::require_subscription(tx.conn(), sid).await?;
        if s.account_id != invoice.account_id {
            return Err(Error::invalid(
                "invoice.subscription_id",
                "belongs to another account",
            ));
        }
    }
    let known = match &invoice.external_id {
        Some(ext) => storage::invoice_by_external_id(tx.conn(), ext).await?,
        None => None,
    };
    let change = record_over(known, invoice, Uuid::now_v7())?;
    match &change {
        InvoiceChange::Insert(new) => storage::insert_invoice(tx.conn(), new, now(tx)).await?,
        InvoiceChange::Pay(paid) => storage::mark_invoice_paid(tx.conn(), paid).await?,
        InvoiceChange::Keep(_) => {}
    }
    let changed = !matches!(change, InvoiceChange::Keep(_));
    Ok((change.invoice().clone(), changed))
}

/// Recomputes one account's movements from its subscriptions and invoices
/// and queues the revised movements' events.
async fn recompute_account(
    tx: &mut Tx,
    policy: &Policy,
    account: &AccountInfo,
) -> Result<(), Error> {
    storage::lock_account(tx.conn(), account.id).await?;
    let fx = storage::fx_table(tx.conn(), &policy.reporting_currency).await?;
    let mut histories = storage::subscriptions_of(tx.conn(), &[account.id]).await?;
    let history = AccountHistory {
        account_id: account.id,
        segment: account.segment,
        owner: account.owner.clone(),
        csm: account.csm.clone(),
        version: Some(account.version.clone()),
        subscriptions: histories.remove(&account.id).unwrap_or_default(),
    };
    let revisions = storage::recompute(
        tx.conn(),
        std::slice::from_ref(&history),
        &fx,
        policy.past_due_churn_days,
    )
    .await?;
    for revision in revisions {
        emit_revision(
            tx,
            account.id,
            account.segment,
            &policy.reporting_currency,
            revision,
        );
    }
    Ok(())
}

/// Queues the events of one account's revised movements: retractions first.
fn emit_revision(
    tx: &mut Tx,
    account_id: AccountId,
    segment: Segment,
    currency: &str,
    revision: Revision,
) {
    for (event_type, movements) in [
        ("movement.retracted", &revision.retracted),
        ("movement.recorded", &revision.recorded),
    ] {
        for m in movements {
            let payload = movement_to_pb(account_id, m, segment, currency);
            tx.emit(NewEvent::new(
                "account",
                account_id.to_string(),
                event_type,
                &payload,
            ));
        }
    }
}
