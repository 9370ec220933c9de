//! The scoring application, one file per use case: `ingest` (signal
//! batches, many signals per transaction), `recompute` (the worker that
//! rescores changed accounts shortly after they change and every account on
//! the sweep schedule), `health` (the stored scores and their history),
//! `people` (the backfill of each account's CSM and owner),
//! `alerts`, `scorecards`, `training` (the churn model) and `segments`
//! (value tiers and quadrants). This file holds what they share: the
//! application's state and how a profile and its day cells become health
//! inputs.

mod alerts;
mod health;
mod ingest;
mod people;
mod recompute;
mod scorecards;
mod segments;
mod training;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bowtie_proto::common::Segment;
use bowtie_runtime::access;
use bowtie_runtime::auth::Role;
use bowtie_runtime::config::ScoringPolicySettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::store::{Store, Tx};
use bowtie_runtime::{AccountId, Instant, Minor};
use tokio::sync::Notify;

use crate::domain::cells::{Aggregates, Windows};
use crate::domain::{self, Cutoffs, Scorecard, ScorecardVersion};
use crate::model::Profile as ModelProfile;
use crate::storage::{self, DayCells, Profile, Scope, StoredScorecard};

pub use ingest::reach_first_values;
pub use training::{ReferenceSource, StoredModel, reference_instant};

/// Event type: an account reached its first value.
pub const FIRST_VALUE_REACHED: &str = "first_value.reached";
/// A complaint or its resolution was recorded (only those two signal types
/// are announced; the others are not, to keep ingest lean).
pub const SIGNAL_RECORDED: &str = "signal.recorded";
/// Event type: an account's health band changed.
pub const BAND_CHANGED: &str = "health.band_changed";
/// Event type: an account got its first score, or its score moved within
/// its band (a move to another band publishes [`BAND_CHANGED`] instead), so
/// a follower of the feed knows every scored account's latest score.
pub const HEALTH_SCORED: &str = "health.scored";
/// Event type: an account's value tier or quadrant changed (published
/// only on a change, so a rescoring that keeps both publishes nothing).
pub const SEGMENT_CHANGED: &str = "segment.changed";
/// Event type: an alert was raised.
pub const ALERT_RAISED: &str = "alert.raised";
/// Event type: an alert was acknowledged.
pub const ALERT_ACKNOWLEDGED: &str = "alert.acknowledged";
/// Event type: an alert was resolved.
pub const ALERT_RESOLVED: &str = "alert.resolved";

struct Inner {
    store: Store,
    accounts: AccountDirectory,
    policy: ScoringPolicySettings,
    known: RwLock<HashSet<AccountId>>,
    dirty: Mutex<HashSet<AccountId>>,
    wake: Notify,
    model: RwLock<Option<Arc<StoredModel>>>,
    cutoffs: RwLock<Cutoffs>,
    cutoffs_at: Mutex<Option<std::time::Instant>>,
    /// The day cells health is folded from.
    cells: DayCells,
    /// One recomputation at a time in this process.
    rescoring: tokio::sync::Mutex<()>,
    /// Full recomputations started: a drain stops when one starts, since it
    /// covers every account queued before it.
    full_rounds: std::sync::atomic::AtomicU64,
}

/// The scoring service's operations.
#[derive(Clone)]
pub struct Scoring {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoring").finish_non_exhaustive()
    }
}

/// The instant `tx` writes at (its rows' `updated_at`, `recorded_at`, ...).
pub(crate) fn tx_now(tx: &Tx) -> Instant {
    Instant::from_micros(tx.now())
}

fn poisoned() -> Error {
    Error::Internal(anyhow::anyhow!("a scoring lock was poisoned"))
}

/// The profile's facts added to aggregated signal inputs.
fn inputs_of(agg: &Aggregates, p: &Profile, at: Instant) -> domain::Inputs {
    let before = |t: Option<Instant>| t.filter(|t| *t <= at);
    domain::Inputs {
        now: at,
        seats: p.seats,
        paying: p.first_paid_at.is_some_and(|t| t <= at) || p.mrr.is_positive(),
        onboarding_started_at: before(p.onboarding_at),
        first_value_at: before(p.first_value_at),
        renewal_at: p.renewal_at,
        ..agg.inputs.clone()
    }
}

/// What the churn model knows of a profile as of `at`, with this MRR.
fn model_profile(p: &Profile, at: Instant, mrr: Minor) -> ModelProfile {
    let since = p.first_paid_at.or(p.created_at);
    ModelProfile {
        segment: p.segment,
        tenure_days: since.map(|s| (at.micros_since(s).max(0) / domain::DAY) as f64),
        mrr,
        contract_months: p.contract_months.map(|m| m as f64),
    }
}

/// The scorecard of a segment: its own, else the default one, else the built-in.
fn card_for(
    cards: &HashMap<Segment, StoredScorecard>,
    segment: Segment,
) -> (Scorecard, ScorecardVersion) {
    cards
        .get(&segment)
        .or_else(|| cards.get(&Segment::Unspecified))
        .map_or((Scorecard::default(), ScorecardVersion(0)), |s| {
            (s.card.clone(), s.version)
        })
}

impl Scoring {
    /// The application over `store`; loads the known accounts, the model
    /// and the day cells.
    pub async fn new(
        store: Store,
        accounts: AccountDirectory,
        policy: ScoringPolicySettings,
    ) -> Result<Self, Error> {
        let reader = store.db().reader();
        let known: HashSet<AccountId> = storage::known_ids(reader).await?.into_iter().collect();
        let model = training::load_model(reader).await?;
        let cells = DayCells::open(reader, Instant::now()).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                accounts,
                policy,
                known: RwLock::new(known),
                dirty: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                model: RwLock::new(model),
                cutoffs: RwLock::new(Cutoffs::default()),
                cutoffs_at: Mutex::new(None),
                cells,
                rescoring: tokio::sync::Mutex::new(()),
                full_rounds: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The store, for the feed.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The policy.
    pub fn policy(&self) -> &ScoringPolicySettings {
        &self.inner.policy
    }

    /// Remembers that accounts exist (the accounts feed, the directory).
    pub fn remember(&self, ids: impl IntoIterator<Item = AccountId>) -> Result<(), Error> {
        self.inner
            .known
            .write()
            .map_err(|_| poisoned())?
            .extend(ids);
        Ok(())
    }

    /// Queues accounts for rescoring and wakes the worker.
    pub fn mark_dirty(&self, ids: impl IntoIterator<Item = AccountId>) {
        if let Ok(mut dirty) = self.inner.dirty.lock() {
            dirty.extend(ids);
        }
        self.inner.wake.notify_one();
    }

    /// Marks an account changed by a feed event: now, and once more a moment
    /// later, because the consumer's transaction commits after the event is
    /// applied and a recomputation in between would not see it yet.
    pub fn mark_dirty_after_commit(&self, id: AccountId) {
        self.mark_dirty([id]);
        let app = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            app.mark_dirty([id]);
        });
    }

    /// Whether the caller may write for every account of `ids` (the
    /// ownership rules, docs/design.md 9.3), read in `conn`, the write's
    /// transaction: each account's CSM and owner from the accounts feed's
    /// projection, or, for an account the feed has not brought yet, the
    /// accounts service's. Refuses at the first account (in id order) that
    /// is not the caller's; nothing is read for a caller the rules do not
    /// restrict (an admin, a key with scopes only, the service's own work).
    pub(crate) async fn may_write_accounts<C: sea_orm::ConnectionTrait>(
        &self,
        conn: &C,
        ids: &[AccountId],
    ) -> Result<(), Error> {
        let Some(caller) = access::caller() else {
            return Ok(());
        };
        if caller.rules.is_none_or(|r| r == Role::Admin) {
            return Ok(());
        }
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let known = storage::people_of(conn, &ids).await?;
        for id in ids {
            let (csm, owner) = match known.get(&id) {
                Some(people) => people.clone(),
                None => {
                    let account = self.inner.accounts.get(id.uuid()).await?;
                    (account.csm, account.owner)
                }
            };
            access::decide(Some(&caller), &id.to_string(), &csm, &owner, None)?;
        }
        Ok(())
    }

    /// The windows of a fold as of `now`, from the policy.
    fn windows(&self, now: Instant) -> Windows {
        Windows {
            now,
            problem_days: self.inner.policy.problem_late_days.max(1),
            potential_days: self.inner.policy.potential_window_days.max(1),
        }
    }

    /// The trained model, if any.
    fn model(&self) -> Option<Arc<StoredModel>> {
        self.inner.model.read().ok().and_then(|m| m.clone())
    }

    /// The aggregates of the accounts in `scope` (`ids` lists the same
    /// accounts) as of `w`.
    async fn aggregates(
        &self,
        scope: Scope<'_>,
        ids: &[AccountId],
        w: Windows,
    ) -> Result<HashMap<AccountId, Aggregates>, Error> {
        let cells = &self.inner.cells;
        let read = cells.read(self.inner.store.db().reader(), scope, w).await?;
        cells.fold(&read, ids, w)
    }
}
