//! The funnel application: each write is one unit of work (transitions,
//! derived stage entries, journey row, events and idempotency key in one
//! transaction); reads go to the reader pool.

use bowtie_proto::common::Stage;
use bowtie_proto::funnel as pb;
use bowtie_runtime::access;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::import;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::store::{Store, Tx};
use bowtie_runtime::{AccountId, Instant};
use futures::StreamExt;
use std::sync::Arc;

use crate::index::JourneyIndex;

use crate::convert::{self, InStageQuery};
use crate::domain::{
    self, Admission, Filters, JourneyRow, NewTransition, Profile, Recorded, Selection, Transition,
    TransitionId,
};
use crate::storage;

/// Event type of every recorded transition.
pub const TRANSITION_RECORDED: &str = "transition.recorded";
/// Event type of a transition removed because its upstream fact was revised.
pub const TRANSITION_RETRACTED: &str = "transition.retracted";

/// The funnel service's operations.
#[derive(Debug, Clone)]
pub struct Funnel {
    store: Store,
    accounts: AccountDirectory,
    index: Arc<JourneyIndex>,
}

/// The instant of the unit of work, which every row it touches carries.
fn now(tx: &Tx) -> Instant {
    Instant::from_micros(tx.now())
}

/// The account's transition event (`event_type`) for the feed.
fn transition_event(event_type: &'static str, t: &Transition) -> NewEvent {
    NewEvent::new(
        "account",
        t.account_id.to_string(),
        event_type,
        &convert::transition_to_pb(t),
    )
}

/// Records one transition inside `tx`: admission, insert, re-derivation of
/// the account's stage entries and journey row, and the event.
pub async fn apply_transition(
    tx: &mut Tx,
    new: NewTransition,
    profile: &Profile,
) -> Result<Recorded, Error> {
    storage::lock_journey(tx.conn(), new.account_id).await?;
    let mut journey = storage::load_transitions(tx.conn(), new.account_id).await?;
    domain::sort_journey(&mut journey);
    let transition = new.recorded(now(tx));
    match domain::admit(&journey, &transition) {
        Admission::AlreadyThere(existing) => {
            let current = journey.last().map_or(existing.stage, |t| t.stage);
            return Ok(Recorded {
                transition: existing,
                applied: false,
                current_stage: current,
            });
        }
        Admission::Apply => {}
    }
    storage::insert_transitions(tx.conn(), std::slice::from_ref(&transition)).await?;
    journey.push(transition.clone());
    domain::sort_journey(&mut journey);
    let entries = domain::entries(&journey);
    let account_id = transition.account_id;
    storage::save_journey(tx.conn(), account_id, &entries, profile, now(tx)).await?;
    tx.emit(transition_event(TRANSITION_RECORDED, &transition));
    Ok(Recorded {
        current_stage: entries.last().map_or(transition.stage, |e| e.stage),
        transition,
        applied: true,
    })
}

/// Removes the transitions of `account_id` to any of `stages` at
/// `occurred_at` that came from `source` (an upstream fact that was revised),
/// re-derives the journey and publishes `transition.retracted` for each.
/// Returns how many were removed.
pub async fn retract_transitions(
    tx: &mut Tx,
    account_id: AccountId,
    stages: &[Stage],
    occurred_at: Instant,
    source: &str,
) -> Result<usize, Error> {
    storage::lock_journey(tx.conn(), account_id).await?;
    let mut journey = storage::load_transitions(tx.conn(), account_id).await?;
    let (gone, kept): (Vec<Transition>, Vec<Transition>) = journey.drain(..).partition(|t| {
        stages.contains(&t.stage) && t.occurred_at == occurred_at && t.source == source
    });
    if gone.is_empty() {
        return Ok(0);
    }
    let profile = match storage::get_journey(tx.conn(), account_id).await? {
        Some(row) => row.profile,
        None => Profile::unknown(),
    };
    let mut kept = kept;
    domain::sort_journey(&mut kept);
    storage::delete_transitions(tx.conn(), &gone.iter().map(|t| t.id).collect::<Vec<_>>()).await?;
    let entries = domain::entries(&kept);
    storage::save_journey(tx.conn(), account_id, &entries, &profile, now(tx)).await?;
    for t in &gone {
        tx.emit(transition_event(TRANSITION_RETRACTED, t));
    }
    Ok(gone.len())
}

/// The transition id an export key names; INVALID_ARGUMENT naming `cursor`
/// when it is not one.
pub fn transition_export_key(key: &str) -> Result<TransitionId, Error> {
    uuid::Uuid::parse_str(key)
        .map(TransitionId)
        .map_err(|_| Error::invalid("cursor", "is not a cursor of the transitions export"))
}

impl Funnel {
    /// The application over a migrated store, checking accounts with
    /// `accounts` and answering reports from `index`.
    pub fn new(store: Store, accounts: AccountDirectory, index: Arc<JourneyIndex>) -> Self {
        Self {
            store,
            accounts,
            index,
        }
    }

    /// The store (for the change-feed consumers).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Records a transition after checking with the accounts service that
    /// the account exists (NOT_FOUND, or UNAVAILABLE with nothing written).
    pub async fn record_transition(
        &self,
        new: NewTransition,
        idem: Option<Idempotency>,
    ) -> Result<pb::RecordTransitionResponse, Error> {
        let account = self.accounts.get(new.account_id.uuid()).await?;
        if convert::is_archived(&account) {
            return Err(Error::FailedPrecondition(format!(
                "account {} is archived; its journey can no longer change",
                account.id
            )));
        }
        let profile = convert::profile_of(&account);
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    // The ownership rules (docs/design.md 9.3), with the
                    // CSM and owner the accounts service just answered.
                    access::may_write_account(&account.id, &account.csm, &account.owner)?;
                    let recorded = apply_transition(tx, new, &profile).await?;
                    Ok(convert::recorded_to_pb(&recorded))
                })
            })
            .await
    }

    /// An account's journey; NOT_FOUND when it has no transitions.
    pub async fn get_journey(
        &self,
        account_id: AccountId,
    ) -> Result<pb::GetJourneyResponse, Error> {
        let mut transitions =
            storage::load_transitions(self.store.db().reader(), account_id).await?;
        if transitions.is_empty() {
            return Err(Error::not_found("journey", account_id.to_string()));
        }
        domain::sort_journey(&mut transitions);
        let entries = domain::entries(&transitions);
        Ok(convert::journey_to_pb(
            account_id,
            &transitions,
            &entries,
            Instant::now(),
        ))
    }

    /// At most `limit` transitions after the export key `after` (from the
    /// first without), by id: a batch of the streaming export.
    pub async fn export_transitions(
        &self,
        after: Option<String>,
        limit: u64,
    ) -> Result<Vec<Transition>, Error> {
        let after = after.as_deref().map(transition_export_key).transpose()?;
        storage::transitions_after(self.store.db().reader(), after, limit).await
    }

    /// Accounts currently in a stage, longest there first.
    pub async fn list_in_stage(
        &self,
        q: InStageQuery,
    ) -> Result<pb::ListAccountsInStageResponse, Error> {
        let rows = storage::list_in_stage(
            self.store.db().reader(),
            q.stage,
            &q.filters,
            q.after,
            q.page.fetch_limit(),
        )
        .await?;
        let (rows, paging) = q.page.finish(rows, convert::in_stage_key);
        Ok(convert::in_stage_listed(&rows, paging))
    }

    /// The funnel report over `period`, from the journey index once it
    /// holds everything committed so far.
    pub async fn funnel_report(
        &self,
        period: (Instant, Instant),
        filters: Filters,
        selection: Selection,
    ) -> Result<pb::GetFunnelReportResponse, Error> {
        self.index.catch_up(&self.store).await?;
        let index = Arc::clone(&self.index);
        let report =
            tokio::task::spawn_blocking(move || index.funnel_report(selection, period, &filters))
                .await
                .map_err(|e| Error::Internal(e.into()))?;
        Ok(convert::report_to_pb(&report))
    }

    /// Monthly cohorts entering `cohort_stage` in `period`.
    pub async fn cohort_report(
        &self,
        period: (Instant, Instant),
        cohort_stage: Stage,
        filters: Filters,
    ) -> Result<pb::GetCohortReportResponse, Error> {
        self.index.catch_up(&self.store).await?;
        let index = Arc::clone(&self.index);
        let cohorts = tokio::task::spawn_blocking(move || {
            let members = index.cohort_members(cohort_stage, period, &filters);
            let followed = domain::cohort_stages(cohort_stage);
            domain::cohorts(&members, &followed, period.0, period.1, Instant::now())
        })
        .await
        .map_err(|e| Error::Internal(e.into()))?;
        Ok(convert::cohorts_to_pb(cohort_stage, &cohorts))
    }

    /// Loads whole journeys of accounts that have none yet, many per
    /// transaction, without asking the accounts service (the caller vouches
    /// for the accounts and their profiles): the path of bulk imports and the
    /// benchmark. Each transition is admitted exactly as `RecordTransition`
    /// would in journey order; refused ones are dropped. Returns how many
    /// transitions were stored.
    pub async fn import_journeys(
        &self,
        journeys: Vec<(AccountId, Profile, Vec<NewTransition>)>,
    ) -> Result<u64, Error> {
        let ids: Vec<AccountId> = journeys.iter().map(|(id, _, _)| *id).collect();
        if storage::any_journey_exists(self.store.db().reader(), &ids).await? {
            return Err(Error::FailedPrecondition(
                "bulk import is for accounts without a journey; record transitions one by one instead"
                    .into(),
            ));
        }
        let stored: u64 = self
            .store
            .write(None, move |tx| {
                Box::pin(async move {
                    let now = now(tx);
                    let mut all = Vec::new();
                    let mut derived = Vec::new();
                    let mut rows = Vec::new();
                    for (account_id, profile, news) in journeys {
                        let mut journey: Vec<Transition> = Vec::with_capacity(news.len());
                        let mut news = news;
                        news.sort_by_key(|n| (n.occurred_at, n.stage as i32));
                        for n in news {
                            let t = NewTransition { account_id, ..n }.recorded(now);
                            if domain::admit(&journey, &t) == Admission::Apply {
                                journey.push(t);
                            }
                        }
                        let entries = domain::entries(&journey);
                        if let Some(last) = entries.last() {
                            rows.push(JourneyRow {
                                account_id,
                                current_stage: last.stage,
                                current_since: last.entered_at,
                                attempts: last.attempt,
                                profile: profile.clone(),
                            });
                        }
                        for t in &journey {
                            tx.emit(transition_event(TRANSITION_RECORDED, t));
                        }
                        all.extend(journey);
                        derived.push((account_id, entries, profile));
                    }
                    storage::insert_transitions(tx.conn(), &all).await?;
                    let refs: Vec<(AccountId, &[domain::Entry], &Profile)> = derived
                        .iter()
                        .map(|(id, e, p)| (*id, e.as_slice(), p))
                        .collect();
                    storage::insert_entries(tx.conn(), &refs).await?;
                    storage::insert_journeys(tx.conn(), &rows, now).await?;
                    Ok(all.len() as u64)
                })
            })
            .await?;
        Ok(stored)
    }
}

/// The accounts one import stream has confirmed with the accounts service:
/// their profile, or `None` when archived (their journey can no longer
/// change), and their CSM and owner (the ownership rules).
#[derive(Debug, Default)]
pub struct AccountCache(std::collections::HashMap<AccountId, (Option<Profile>, String, String)>);

impl Funnel {
    /// Imports one batch of transitions (batch number `batch` of its stream;
    /// docs/design.md, "Streaming imports"). Each row is admitted exactly as
    /// RecordTransition would, in order; the accepted ones are stored in one
    /// transaction with their accounts' re-derived stage entries and journey
    /// rows and their events. A refused row changes nothing.
    pub async fn import_transitions(
        &self,
        batch: i64,
        rows: Vec<Result<NewTransition, Error>>,
        cache: &mut AccountCache,
    ) -> Result<pb::ImportTransitionsResponse, Error> {
        let ids: std::collections::BTreeSet<AccountId> =
            rows.iter().flatten().map(|t| t.account_id).collect();
        let unknown: Vec<AccountId> = ids
            .iter()
            .filter(|id| !cache.0.contains_key(id))
            .copied()
            .collect();
        let answers: Vec<(AccountId, Result<_, Error>)> = futures::stream::iter(unknown)
            .map(|id| async move { (id, self.accounts.get(id.uuid()).await) })
            .buffer_unordered(32)
            .collect()
            .await;
        for (id, answer) in answers {
            match answer {
                Ok(account) => {
                    let profile =
                        (!convert::is_archived(&account)).then(|| convert::profile_of(&account));
                    cache.0.insert(id, (profile, account.csm, account.owner));
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let known: std::collections::BTreeMap<AccountId, Option<Profile>> = ids
            .iter()
            .filter_map(|id| cache.0.get(id).map(|(p, _, _)| (*id, p.clone())))
            .collect();
        let people: Vec<(AccountId, String, String)> = ids
            .iter()
            .filter_map(|id| cache.0.get(id).map(|(_, c, o)| (*id, c.clone(), o.clone())))
            .collect();
        self.store
            .write(None, move |tx| {
                Box::pin(async move {
                    // A batch naming an account outside the caller's book is
                    // refused whole, at the first such account in id order
                    // (docs/design.md 9.3).
                    for (id, csm, owner) in &people {
                        access::may_write_account(&id.to_string(), csm, owner)?;
                    }
                    let results = import_batch(tx, &known, rows).await?;
                    let (recorded, duplicates, rejected) = import::tally(&results);
                    Ok(pb::ImportTransitionsResponse {
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

/// Admits the rows inside `tx` under their journeys' locks, then stores the
/// new transitions and the re-derived journeys of the accounts they changed.
async fn import_batch(
    tx: &mut Tx,
    known: &std::collections::BTreeMap<AccountId, Option<Profile>>,
    rows: Vec<Result<NewTransition, Error>>,
) -> Result<Vec<bowtie_proto::common::ImportResult>, Error> {
    let live: Vec<AccountId> = known
        .iter()
        .filter(|(_, p)| p.is_some())
        .map(|(id, _)| *id)
        .collect();
    // Locks in account order, so concurrent imports cannot deadlock.
    for id in &live {
        storage::lock_journey(tx.conn(), *id).await?;
    }
    let mut journeys = storage::transitions_of(tx.conn(), &live).await?;
    let at = now(tx);
    let mut results = Vec::with_capacity(rows.len());
    let mut added: Vec<Transition> = Vec::new();
    let mut touched: std::collections::BTreeSet<AccountId> = std::collections::BTreeSet::new();
    for (i, row) in rows.into_iter().enumerate() {
        let new = match row {
            Ok(new) => new,
            Err(error) => {
                results.push(import::rejected(i, "", &error));
                continue;
            }
        };
        let account_id = new.account_id;
        let journey = match (known.get(&account_id), journeys.get_mut(&account_id)) {
            (Some(Some(_)), Some(journey)) => journey,
            (Some(_), _) => {
                let archived = Error::FailedPrecondition(format!(
                    "account {account_id} is archived; its journey can no longer change"
                ));
                results.push(import::rejected(i, "account_id", &archived));
                continue;
            }
            (None, _) => {
                let missing = Error::not_found("account", account_id.to_string());
                results.push(import::rejected(i, "account_id", &missing));
                continue;
            }
        };
        let transition = new.recorded(at);
        match domain::admit(journey, &transition) {
            Admission::AlreadyThere(existing) => {
                results.push(import::duplicate(i, existing.id.to_string()));
            }
            Admission::Apply => {
                tx.emit(transition_event(TRANSITION_RECORDED, &transition));
                results.push(import::recorded(i, transition.id.to_string()));
                journey.push(transition.clone());
                added.push(transition);
                touched.insert(account_id);
            }
        }
    }
    storage::insert_transitions(tx.conn(), &added).await?;
    let mut derived: Vec<(AccountId, Vec<domain::Entry>, Profile)> = Vec::new();
    for id in touched {
        let (Some(journey), Some(Some(profile))) = (journeys.get_mut(&id), known.get(&id)) else {
            continue;
        };
        domain::sort_journey(journey);
        derived.push((id, domain::entries(journey), profile.clone()));
    }
    let refs: Vec<(AccountId, &[domain::Entry], &Profile)> = derived
        .iter()
        .map(|(id, e, p)| (*id, e.as_slice(), p))
        .collect();
    storage::replace_journeys(tx.conn(), &refs, at).await?;
    Ok(results)
}
