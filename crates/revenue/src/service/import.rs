//! Streaming imports of subscription histories and invoices (docs/design.md,
//! "Streaming imports"). A batch's accounts are confirmed with the accounts
//! service before its unit of work starts (once per stream: the stream keeps
//! what it learnt in an [`AccountCache`]); then every accepted row is applied
//! in one transaction through the same domain rules, storage and roll-up
//! code as the unary writes, the changed accounts are recomputed once each,
//! and the events the unary writes publish are queued. A row that is refused
//! changes nothing and the rest of the batch lands.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bowtie_proto::common::ImportResult;
use bowtie_proto::revenue as pb;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::import::{duplicate, recorded, rejected, tally};
use bowtie_runtime::store::Tx;
use futures::StreamExt;

use super::{AccountInfo, Policy, Revenue, emit_revision, may_write, now, store_invoice};
use crate::convert::{invoice_to_pb, subscription_to_pb};
use crate::domain::{
    AccountHistory, AccountId, Applied, HistoryEvent, ImportedEvent, Invoice, Subscription,
    SubscriptionId, apply_event,
};
use crate::storage;

/// The accounts one import stream has confirmed, so a long stream asks the
/// accounts service about each account once.
#[derive(Debug, Default)]
pub struct AccountCache(HashMap<AccountId, AccountInfo>);

/// A row as parsed: the value, or why it was refused.
pub type Row<T> = Result<T, Error>;

impl Revenue {
    /// Fills `cache` with the accounts of `ids` it does not hold yet, asking
    /// the accounts service (at most 32 questions in flight); an unknown
    /// account stays out. UNAVAILABLE when the accounts service cannot be
    /// reached.
    async fn confirm(
        &self,
        cache: &mut AccountCache,
        ids: &BTreeSet<AccountId>,
    ) -> Result<(), Error> {
        let unknown: Vec<AccountId> = ids
            .iter()
            .filter(|id| !cache.0.contains_key(id))
            .copied()
            .collect();
        let answers: Vec<(AccountId, Result<AccountInfo, Error>)> = futures::stream::iter(unknown)
            .map(|id| async move { (id, self.account(id).await) })
            .buffer_unordered(32)
            .collect()
            .await;
        for (id, answer) in answers {
            match answer {
                Ok(info) => {
                    cache.0.insert(id, info);
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The known accounts among `ids`, by id.
    async fn known(
        &self,
        cache: &mut AccountCache,
        ids: &BTreeSet<AccountId>,
    ) -> Result<BTreeMap<AccountId, AccountInfo>, Error> {
        self.confirm(cache, ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| cache.0.get(id).map(|a| (*id, a.clone())))
            .collect())
    }

    /// Imports one batch of subscription events (batch number `batch` of its
    /// stream), in order, answering one result per row.
    pub async fn import_subscription_events(
        &self,
        batch: i64,
        rows: Vec<Row<ImportedEvent>>,
        cache: &mut AccountCache,
    ) -> Result<pb::ImportSubscriptionEventsResponse, Error> {
        let continued: Vec<SubscriptionId> = rows
            .iter()
            .flatten()
            .filter(|e| !matches!(e.event, HistoryEvent::Start(_)))
            .map(ImportedEvent::subscription_id)
            .collect();
        let owners =
            storage::accounts_of_subscriptions(self.store.db().reader(), &continued).await?;
        let mut ids: BTreeSet<AccountId> = owners.values().copied().collect();
        for e in rows.iter().flatten() {
            if let HistoryEvent::Start(new) = &e.event {
                ids.insert(new.account_id);
            }
        }
        let accounts = self.known(cache, &ids).await?;
        let policy = self.policy.clone();
        self.store
            .write(None, move |tx| {
                Box::pin(async move {
                    // A batch naming an account outside the caller's book
                    // is refused whole (docs/design.md 9.3).
                    may_write(accounts.values())?;
                    let results = apply_events(tx, &policy, &accounts, &owners, &rows).await?;
                    let (recorded, duplicates, rejected) = tally(&results);
                    Ok(pb::ImportSubscriptionEventsResponse {
                        batch,
                        recorded,
                        duplicates,
                        rejected,
                        results,
                    })
                })
            })
            .await
    }

    /// Imports one batch of invoices (batch number `batch` of its stream),
    /// in order, answering one result per row.
    pub async fn import_invoices(
        &self,
        batch: i64,
        rows: Vec<Row<Invoice>>,
        cache: &mut AccountCache,
    ) -> Result<pb::ImportInvoicesResponse, Error> {
        let ids: BTreeSet<AccountId> = rows.iter().flatten().map(|i| i.account_id).collect();
        let accounts = self.known(cache, &ids).await?;
        let policy = self.policy.clone();
        self.store
            .write(None, move |tx| {
                Box::pin(async move {
                    may_write(accounts.values())?;
                    let results = apply_invoices(tx, &policy, &accounts, rows).await?;
                    let (recorded, duplicates, rejected) = tally(&results);
                    Ok(pb::ImportInvoicesResponse {
                        batch,
                        recorded,
                        duplicates,
                        rejected,
                        results,
                    })
                })
            })
            .await
    }
}

/// Applies the event rows inside `tx` under their accounts' locks, then
/// saves the changed subscriptions, recomputes their accounts once each and
/// queues the events.
async fn apply_events(
    tx: &mut Tx,
    policy: &Policy,
    accounts: &BTreeMap<AccountId, AccountInfo>,
    owners: &HashMap<SubscriptionId, AccountId>,
    rows: &[Row<ImportedEvent>],
) -> Result<Vec<ImportResult>, Error> {
    // Locks in account order, so concurrent imports cannot deadlock.
    for id in accounts.keys() {
        storage::lock_account(tx.conn(), *id).await?;
    }
    let ids: Vec<AccountId> = accounts.keys().copied().collect();
    let mut subscriptions: HashMap<SubscriptionId, Subscription> =
        storage::subscriptions_of(tx.conn(), &ids)
            .await?
            .into_values()
            .flatten()
            .map(|s| (s.id, s))
            .collect();
    let at = now(tx);
    let mut results = Vec::with_capacity(rows.len());
    let mut changed: BTreeSet<SubscriptionId> = BTreeSet::new();
    for (i, row) in rows.iter().enumerate() {
        let e = match row {
            Ok(e) => e,
            Err(error) => {
                results.push(rejected(i, "", error));
                continue;
            }
        };
        let id = e.subscription_id();
        let account = match &e.event {
            HistoryEvent::Start(new) => Some(new.account_id),
            _ => subscriptions
                .get(&id)
                .map(|s| s.account_id)
                .or(owners.get(&id).copied()),
        };
        if let Some(account) = account
            && !accounts.contains_key(&account)
        {
            let missing = Error::not_found("account", account.to_string());
            results.push(rejected(i, "account_id", &missing));
            continue;
        }
        if let HistoryEvent::Cancel(c) = &e.event
            && !policy.churn_reasons.contains(&c.reason)
        {
            let bad = Error::invalid(
                "reason_code",
                format!(
                    "must be one of the churn reasons: {}",
                    policy.churn_reasons.join(", ")
                ),
            );
            results.push(rejected(i, "reason_code", &bad));
            continue;
        }
        match apply_event(&mut subscriptions, e) {
            Ok(Applied::Duplicate) => results.push(duplicate(i, id.to_string())),
            Ok(Applied::Recorded) => {
                let s = subscriptions
                    .get(&id)
                    .ok_or_else(|| Error::Internal(anyhow::anyhow!("applied event lost {id}")))?;
                tx.emit(NewEvent::new(
                    "account",
                    s.account_id.to_string(),
                    e.event_type(),
                    &subscription_to_pb(s, at),
                ));
                changed.insert(id);
                results.push(recorded(i, id.to_string()));
            }
            Err(error) => results.push(rejected(i, "subscription_id", &error)),
        }
    }
    let saved: Vec<&Subscription> = changed
        .iter()
        .filter_map(|id| subscriptions.get(id))
        .collect();
    storage::save_subscriptions(tx.conn(), &saved, at).await?;
    let touched: BTreeSet<AccountId> = saved.iter().map(|s| s.account_id).collect();
    // Every subscription of the touched accounts is in `subscriptions` (all
    // of their accounts' were loaded under the lock), in the order
    // `subscriptions_of` reads them: by id.
    let mut of: HashMap<AccountId, Vec<Subscription>> = HashMap::new();
    for s in subscriptions.into_values() {
        if touched.contains(&s.account_id) {
            of.entry(s.account_id).or_default().push(s);
        }
    }
    for list in of.values_mut() {
        list.sort_by_key(|s| s.id);
    }
    recompute(tx, policy, accounts, of).await?;
    Ok(results)
}

/// Applies the invoice rows inside `tx` as RecordInvoice does, then
/// recomputes the accounts whose movements the past-due policy may change,
/// once each.
async fn apply_invoices(
    tx: &mut Tx,
    policy: &Policy,
    accounts: &BTreeMap<AccountId, AccountInfo>,
    rows: Vec<Row<Invoice>>,
) -> Result<Vec<ImportResult>, Error> {
    for id in accounts.keys() {
        storage::lock_account(tx.conn(), *id).await?;
    }
    let at = now(tx);
    let mut results = Vec::with_capacity(rows.len());
    let mut touched: BTreeSet<AccountId> = BTreeSet::new();
    for (i, row) in rows.into_iter().enumerate() {
        let invoice = match row {
            Ok(invoice) => invoice,
            Err(error) => {
                results.push(rejected(i, "", &error));
                continue;
            }
        };
        if !accounts.contains_key(&invoice.account_id) {
            let missing = Error::not_found("account", invoice.account_id.to_string());
            results.push(rejected(i, "account_id", &missing));
            continue;
        }
        match store_invoice(tx, invoice).await {
            Ok((invoice, false)) => results.push(duplicate(i, invoice.id.to_string())),
            Ok((invoice, true)) => {
                let out = invoice_to_pb(&invoice, invoice.is_late(at));
                if out.late {
                    tx.emit(NewEvent::new(
                        "account",
                        out.account_id.clone(),
                        "invoice.late",
                        &out,
                    ));
                }
                if invoice.subscription_id.is_some() && policy.past_due_churn_days > 0 {
                    touched.insert(invoice.account_id);
                }
                results.push(recorded(i, invoice.id.to_string()));
            }
            Err(error @ (Error::Database(_) | Error::Internal(_) | Error::Unavailable(_))) => {
                return Err(error);
            }
            Err(error) => {
                let mut result = rejected(i, "subscription_id", &error);
                result.field = result
                    .field
                    .strip_prefix("invoice.")
                    .unwrap_or(&result.field)
                    .to_owned();
                results.push(result);
            }
        }
    }
    let ids: Vec<AccountId> = touched.into_iter().collect();
    let stored = storage::subscriptions_of(tx.conn(), &ids).await?;
    recompute(tx, policy, accounts, stored).await?;
    Ok(results)
}

/// Recomputes the movements of the accounts of `subscriptions` (each with
/// all of its subscriptions) and their invoices in one pass, and queues the
/// revisions' events.
async fn recompute(
    tx: &mut Tx,
    policy: &Policy,
    accounts: &BTreeMap<AccountId, AccountInfo>,
    mut subscriptions: HashMap<AccountId, Vec<Subscription>>,
) -> Result<(), Error> {
    if subscriptions.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<AccountId> = subscriptions.keys().copied().collect();
    ids.sort_unstable();
    let histories: Vec<AccountHistory> = ids
        .iter()
        .filter_map(|id| accounts.get(id))
        .map(|a| AccountHistory {
            account_id: a.id,
            segment: a.segment,
            owner: a.owner.clone(),
            csm: a.csm.clone(),
            version: Some(a.version.clone()),
            subscriptions: subscriptions.remove(&a.id).unwrap_or_default(),
        })
        .collect();
    let fx = storage::fx_table(tx.conn(), &policy.reporting_currency).await?;
    let revisions =
        storage::recompute(tx.conn(), &histories, &fx, policy.past_due_churn_days).await?;
    for (history, revision) in histories.iter().zip(revisions) {
        emit_revision(
            tx,
            history.account_id,
            history.segment,
            &policy.reporting_currency,
            revision,
        );
    }
    Ok(())
}
