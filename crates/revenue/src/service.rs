//! The revenue application: each write runs as one unit of work (the change,
//! the recomputed movements and roll-ups, the events and the idempotency key
//! in one transaction) and answers with the protobuf response an idempotent
//! replay returns again.
//!
//! Every write that touches an account first asks the accounts service for
//! it (NOT_FOUND, or UNAVAILABLE when accounts is down) before the unit of
//! work starts, so nothing is written for an unknown account or when the
//! check cannot be made.

use std::collections::BTreeMap;

use bowtie_proto::accounts::Account;
use bowtie_proto::common::Money;
use bowtie_proto::revenue as pb;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::paging::Page;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::sql::internal;
use bowtie_runtime::store::{Store, Tx};
use bowtie_runtime::validate::{now_micros, to_timestamp};
use uuid::Uuid;

use crate::convert::{
    cohort_to_pb, invoice_to_pb, movement_to_pb, period_to_pb, renewal_to_pb, retention_to_pb,
    subscription_to_pb,
};
use crate::domain::*;
use crate::risk::ChurnRisk;
use crate::storage::{self, AccountHistory, CohortFilter, MovementFilter, Revision};

/// The revenue policy the service runs with.
#[derive(Debug, Clone)]
pub struct Policy {
    /// ISO-4217 code of every report.
    pub reporting_currency: String,
    /// Accepted cancellation reason codes.
    pub churn_reasons: Vec<String>,
    /// Renewal likelihood (basis points) when no score exists.
    pub default_renewal_likelihood_bp: i64,
}

/// Where an account reports: its segment and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// The account.
    pub id: Uuid,
    /// Its segment.
    pub segment: Segment,
    /// The owner who closed the deal.
    pub owner: String,
}

impl AccountInfo {
    /// The accounts service validates segments, so a code it does not know
    /// means the two services disagree on the protocol: an internal error.
    fn from_account(id: Uuid, a: &Account) -> Result<Self, Error> {
        let segment = Segment::try_from(a.segment).map_err(|_| {
            internal(format_args!(
                "account {id} has segment code {}, which this version does not know",
                a.segment
            ))
        })?;
        Ok(Self {
            id,
            segment,
            owner: a.owner.clone(),
        })
    }
}

/// A segment filter as the API passes it (a validated code, `None` for any).
fn segment_filter(segment: Option<i32>) -> Result<Option<Segment>, Error> {
    segment
        .map(|code| {
            Segment::try_from(code)
                .map_err(|_| Error::invalid("segment", format!("unknown segment {code}")))
        })
        .transpose()
}

/// One subscription of a bulk import with the account it belongs to.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Where the account reports.
    pub account: AccountInfo,
    /// The subscription with its whole history.
    pub subscription: Subscription,
}

fn money(currency: &str, minor: i64) -> Money {
    Money {
        currency_code: currency.to_owned(),
        minor_units: minor,
    }
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

    async fn account(&self, id: Uuid) -> Result<AccountInfo, Error> {
        let account = self.directory.get(id).await?;
        AccountInfo::from_account(id, &account)
    }

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
                    let subscription = Subscription::create(Uuid::now_v7(), new);
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
    pub async fn get_subscription(&self, id: Uuid) -> Result<pb::Subscription, Error> {
        let s = storage::require_subscription(self.store.db().reader(), id).await?;
        Ok(subscription_to_pb(&s, now_micros()))
    }

    /// Changes a subscription's terms from `effective_at` on.
    pub async fn change_subscription(
        &self,
        id: Uuid,
        effective_at: i64,
        terms: Terms,
        currency: String,
        expected_version: Option<i64>,
        idem: Option<Idempotency>,
    ) -> Result<pb::ChangeSubscriptionResponse, Error> {
        let current = storage::require_subscription(self.store.db().reader(), id).await?;
        let account = self.account(current.account_id).await?;
        let policy = self.policy.clone();
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    storage::lock_account(tx.conn(), account.id).await?;
                    let mut s = storage::require_subscription(tx.conn(), id).await?;
                    check_version(&s, expected_version)?;
                    if currency != s.currency {
                        return Err(Error::invalid(
                            "terms.unit_price.currency_code",
                            format!("must stay {}, the subscription's currency", s.currency),
                        ));
                    }
                    s.change(effective_at, terms)?;
                    let out = apply(tx, &policy, &account, s, "subscription.changed").await?;
                    Ok(pb::ChangeSubscriptionResponse {
                        subscription: Some(out),
                    })
                })
            })
            .await
    }

    /// Cancels a subscription.
    pub async fn cancel_subscription(
        &self,
        id: Uuid,
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
        let current = storage::require_subscription(self.store.db().reader(), id).await?;
        let account = self.account(current.account_id).await?;
        let policy = self.policy.clone();
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    storage::lock_account(tx.conn(), account.id).await?;
                    let mut s = storage::require_subscription(tx.conn(), id).await?;
                    check_version(&s, expected_version)?;
                    s.cancel(cancellation)?;
                    let out = apply(tx, &policy, &account, s, "subscription.cancelled").await?;
                    Ok(pb::CancelSubscriptionResponse {
                        subscription: Some(out),
                    })
                })
            })
            .await
    }

    /// Records an invoice; a late one (paid after its due date, or unpaid
    /// past it) is announced as `invoice.late`.
    pub async fn record_invoice(
        &self,
        invoice: storage::InvoiceRow,
        idem: Option<Idempotency>,
    ) -> Result<pb::RecordInvoiceResponse, Error> {
        self.account(invoice.account_id).await?;
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    if let Some(sid) = invoice.subscription_id {
                        let s = storage::require_subscription(tx.conn(), sid).await?;
                        if s.account_id != invoice.account_id {
                            return Err(Error::invalid(
                                "invoice.subscription_id",
                                "belongs to another account",
                            ));
                        }
                    }
                    let invoice = storage::InvoiceRow {
                        id: Uuid::now_v7(),
                        ..invoice
                    };
                    storage::insert_invoice(tx.conn(), &invoice, tx.now()).await?;
                    let late = invoice
                        .paid_at
                        .map_or(invoice.due_at < tx.now(), |paid| paid > invoice.due_at);
                    let out = invoice_to_pb(&invoice, late);
                    if late {
                        tx.emit(NewEvent::new(
                            "account",
                            out.account_id.clone(),
                            "invoice.late",
                            &out,
                        ));
                    }
                    Ok(pb::RecordInvoiceResponse { invoice: Some(out) })
                })
            })
            .await
    }

    /// Records a renewal decision and announces it as `renewal.recorded`.
    pub async fn record_renewal_outcome(
        &self,
        subscription_id: Uuid,
        outcome: pb::RenewalOutcome,
        decided_at: i64,
        idem: Option<Idempotency>,
    ) -> Result<pb::RecordRenewalOutcomeResponse, Error> {
        let current =
            storage::require_subscription(self.store.db().reader(), subscription_id).await?;
        self.account(current.account_id).await?;
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
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
                        outcome as i32,
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
        from: i64,
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
                    let revisions = storage::recompute(tx.conn(), &histories, &fx).await?;
                    for (history, revision) in histories.iter().zip(revisions) {
                        emit_revision(
                            tx,
                            history.account_id,
                            history.segment,
                            &reporting,
                            revision,
                        );
                    }
                    Ok(pb::SetFxRateResponse {
                        rate: Some(pb::FxRate {
                            currency_code: currency,
                            effective_at: Some(to_timestamp(from)),
                            rate: rate.format(),
                        }),
                        reporting_currency_code: reporting,
                    })
                })
            })
            .await
    }

    /// Lists movements.
    pub async fn list_movements(
        &self,
        filter: MovementFilter,
        page: Page,
    ) -> Result<pb::ListMovementsResponse, Error> {
        let after = match page.after.as_deref() {
            None => None,
            Some(key) => {
                let bad = || Error::invalid("page.page_token", "is not a valid token");
                let (at, account) = key.split_once('/').ok_or_else(bad)?;
                Some((at.parse::<i64>().map_err(|_| bad())?, account.to_owned()))
            }
        };
        let rows =
            storage::list_movements(self.store.db().reader(), &filter, after, page.fetch_limit())
                .await?;
        let (rows, paging) = page.finish(rows, |m| format!("{}/{}", m.movement.at, m.account_id));
        let currency = &self.policy.reporting_currency;
        Ok(pb::ListMovementsResponse {
            movements: rows
                .iter()
                .map(|m| movement_to_pb(m.account_id, &m.movement, m.segment, currency))
                .collect(),
            page: Some(paging),
        })
    }

    /// The renewal book for renewal dates in `[start, end)`.
    pub async fn list_renewals(
        &self,
        start: i64,
        end: i64,
        account: Option<Uuid>,
        page: Page,
    ) -> Result<pb::ListRenewalsResponse, Error> {
        let after = match page.after.as_deref() {
            None => None,
            Some(key) => {
                let bad = || Error::invalid("page.page_token", "is not a valid token");
                let (at, id) = key.split_once('/').ok_or_else(bad)?;
                Some((at.parse::<i64>().map_err(|_| bad())?, id.to_owned()))
            }
        };
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
            format!("{}/{}", s.term_end.unwrap_or_default(), s.id)
        });
        let now = now_micros();
        let mut accounts: Vec<Uuid> = rows.iter().map(|(s, _)| s.account_id).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let scored = self.risk.likelihoods(&accounts).await;
        let renewals = rows
            .iter()
            .map(|(s, outcome)| {
                let from_scoring = scored.get(&s.account_id).copied();
                let likelihood = from_scoring.unwrap_or(self.policy.default_renewal_likelihood_bp);
                let renewal_at = s.term_end.unwrap_or_default();
                let amount = s.mrr_at(renewal_at - 1).saturating_mul(12);
                let forecast = i64::try_from(
                    (i128::from(amount) * i128::from(likelihood) * 2 + 10_000) / 20_000,
                )
                .unwrap_or(i64::MAX);
                let cancelled = s
                    .cancellation
                    .as_ref()
                    .is_some_and(|c| c.effective_at <= renewal_at);
                let outcome = match (*outcome, cancelled) {
                    (0, true) => pb::RenewalOutcome::Churned as i32,
                    (o, _) => o,
                };
                pb::RenewalBookEntry {
                    subscription_id: s.id.to_string(),
                    account_id: s.account_id.to_string(),
                    renewal_at: Some(to_timestamp(renewal_at)),
                    days_to_renewal: (renewal_at - now).div_euclid(86_400_000_000),
                    amount_at_stake: Some(money(&s.currency, amount)),
                    likelihood_basis_points: i32::try_from(likelihood).unwrap_or(0),
                    likelihood_from_scoring: from_scoring.is_some(),
                    forecast: Some(money(&s.currency, forecast)),
                    outcome,
                }
            })
            .collect();
        Ok(pb::ListRenewalsResponse {
            renewals,
            page: Some(paging),
        })
    }

    /// The MRR waterfall over months `first..=last`.
    pub async fn mrr_report(
        &self,
        first: Month,
        last: Month,
        granularity: Granularity,
        segment: Option<i32>,
    ) -> Result<pb::GetMrrReportResponse, Error> {
        let (first, last) = match granularity {
            Granularity::Month => (first, last),
            Granularity::Quarter => (first.quarter_start(), last.quarter_end()),
        };
        let segment = segment_filter(segment)?;
        let rows = storage::rollups(self.store.db().reader(), last, segment).await?;
        let mut opening = (0i64, 0i64);
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
        let currency = &self.policy.reporting_currency;
        let periods = waterfall(opening, &monthly, first, last, granularity)
            .into_iter()
            .map(|p| period_to_pb(&p, currency))
            .collect();
        Ok(pb::GetMrrReportResponse {
            periods,
            reporting_currency_code: currency.clone(),
        })
    }

    /// The cohort grid of the cohorts `first..=last`, `months` months deep.
    pub async fn cohort_retention(
        &self,
        first: Month,
        last: Month,
        months: i32,
        segment: Option<i32>,
    ) -> Result<pb::GetCohortRetentionResponse, Error> {
        let segment = segment_filter(segment)?;
        let reader = self.store.db().reader();
        let firsts =
            storage::first_payments(reader, month_start(first), month_start(last + 1), segment)
                .await?;
        let cohort_of: BTreeMap<Uuid, Month> = firsts
            .into_iter()
            .map(|(account, at)| (account, month_of(at)))
            .collect();
        let accounts: Vec<Uuid> = cohort_of.keys().copied().collect();
        let spans = storage::spans_of(reader, &accounts).await?;
        let grid = cohort_grid(&cohort_of, &spans, months, now_micros());
        let currency = &self.policy.reporting_currency;
        let cohorts = grid
            .into_iter()
            .map(|(month, (size, cells))| cohort_to_pb(month, size, &cells, currency))
            .collect();
        Ok(pb::GetCohortRetentionResponse {
            cohorts,
            reporting_currency_code: currency.clone(),
        })
    }

    /// Records a month's spend and gross margin.
    pub async fn record_spend(
        &self,
        month: Month,
        spend: i64,
        margin_bp: i32,
        idem: Option<Idempotency>,
    ) -> Result<pb::RecordSpendResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    storage::save_spend(tx.conn(), month, spend, margin_bp).await?;
                    Ok(pb::RecordSpendResponse {
                        month: month_label(month),
                    })
                })
            })
            .await
    }

    /// CAC, LTV, LTV:CAC and payback of `month`.
    pub async fn unit_economics(
        &self,
        month: Month,
    ) -> Result<pb::GetUnitEconomicsResponse, Error> {
        let reader = self.store.db().reader();
        let (spend, margin_bp) = storage::spend(reader, month).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "no spend recorded for {}; record it with RecordSpend",
                month_label(month)
            ))
        })?;
        let report = self
            .mrr_report(month - 5, month, Granularity::Month, None)
            .await?;
        let rates: Vec<f64> = report
            .periods
            .iter()
            .filter(|p| p.paying_accounts_start > 0)
            .map(|p| p.customer_churn_rate)
            .collect();
        let churn = if rates.is_empty() {
            0.0
        } else {
            rates.iter().sum::<f64>() / rates.len() as f64
        };
        let last = report.periods.last().cloned().unwrap_or_default();
        let arpa = last.arpa.as_ref().map_or(0, |m| m.minor_units);
        let new_customers = last.new_accounts;
        let cac = if new_customers > 0 {
            (2 * i128::from(spend) + i128::from(new_customers)) / (2 * i128::from(new_customers))
        } else {
            0
        };
        let cac = i64::try_from(cac).unwrap_or(i64::MAX);
        let margin = f64::from(margin_bp) / 10_000.0;
        let contribution = arpa as f64 * margin;
        let ltv = if churn > 0.0 {
            (contribution / churn).round() as i64
        } else {
            0
        };
        let currency = &self.policy.reporting_currency;
        Ok(pb::GetUnitEconomicsResponse {
            sales_and_marketing_spend: Some(money(currency, spend)),
            new_customers,
            cac: Some(money(currency, cac)),
            arpa: Some(money(currency, arpa)),
            gross_margin: margin,
            average_monthly_churn_rate: churn,
            ltv: Some(money(currency, ltv)),
            ltv_to_cac: if ltv > 0 && cac > 0 {
                ltv as f64 / cac as f64
            } else {
                0.0
            },
            cac_payback_months: if contribution > 0.0 {
                cac as f64 / contribution
            } else {
                0.0
            },
        })
    }

    /// Retention of the accounts paying at `t0`, at `t1`, and optionally
    /// per owner who closed the deal.
    pub async fn retention(
        &self,
        t0: i64,
        t1: i64,
        filter: CohortFilter,
        by_owner: bool,
    ) -> Result<pb::GetRetentionResponse, Error> {
        let reader = self.store.db().reader();
        let r = storage::retention(reader, t0, t1, &filter).await?;
        let owners = if by_owner {
            storage::retention_by_owner(reader, t0, t1, &filter).await?
        } else {
            Vec::new()
        };
        let currency = &self.policy.reporting_currency;
        Ok(retention_to_pb(&r, owners, currency))
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
        let now = now_micros();
        let subs: Vec<&Subscription> = batch.iter().map(|i| &i.subscription).collect();
        storage::save_subscriptions(&txn, &subs, now).await?;
        let mut accounts: BTreeMap<Uuid, AccountInfo> = BTreeMap::new();
        for i in &batch {
            accounts.insert(i.account.id, i.account.clone());
        }
        let ids: Vec<Uuid> = accounts.keys().copied().collect();
        let mut histories = storage::subscriptions_of(&txn, &ids).await?;
        let histories: Vec<AccountHistory> = accounts
            .into_values()
            .map(|a| AccountHistory {
                subscriptions: histories.remove(&a.id).unwrap_or_default(),
                account_id: a.id,
                segment: a.segment,
                owner: a.owner,
            })
            .collect();
        let revisions = storage::recompute(&txn, &histories, &fx).await?;
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
    storage::save_subscriptions(tx.conn(), &[&subscription], tx.now()).await?;
    let fx = storage::fx_table(tx.conn(), &policy.reporting_currency).await?;
    let mut histories = storage::subscriptions_of(tx.conn(), &[account.id]).await?;
    let history = AccountHistory {
        account_id: account.id,
        segment: account.segment,
        owner: account.owner.clone(),
        subscriptions: histories.remove(&account.id).unwrap_or_default(),
    };
    let revisions = storage::recompute(tx.conn(), std::slice::from_ref(&history), &fx).await?;
    let out = subscription_to_pb(&subscription, tx.now());
    let id = account.id.to_string();
    tx.emit(NewEvent::new("account", id.clone(), event_type, &out));
    for revision in revisions {
        emit_revision(
            tx,
            account.id,
            account.segment,
            &policy.reporting_currency,
            revision,
        );
    }
    Ok(out)
}

/// Queues the events of one account's revised movements: retractions first.
fn emit_revision(
    tx: &mut Tx,
    account_id: Uuid,
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
