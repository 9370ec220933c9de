//! The scoring application: signal ingest (many signals per transaction,
//! one commit per batch), the recompute worker (changed accounts shortly
//! after they change, every account on the sweep schedule for time decay),
//! alerts, scorecards, the churn model and value segments.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bowtie_proto::common::Segment;
use bowtie_proto::scoring as pb;
use bowtie_runtime::config::ScoringPolicySettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::paging::Page;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::store::{Store, Tx};
use bowtie_runtime::validate::{now_micros, to_timestamp};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::convert::{self, MAX_BATCH, Rejection};
use crate::domain::{self, Cutoffs, DAY, Scorecard, Trigger, ValueFacts};
use crate::model::{self, Metrics, Model, Profile as ModelProfile};
use crate::storage::{
    self, Aggregates, Cell, DayDelta, HealthRow, NewSignal, Profile, Scope, Snapshot, Windows,
};

/// Event type: an account reached its first value.
pub const FIRST_VALUE_REACHED: &str = "first_value.reached";
/// Event type: an account's health band changed.
pub const BAND_CHANGED: &str = "health.band_changed";
/// Event type: an alert was raised.
pub const ALERT_RAISED: &str = "alert.raised";
/// Event type: an alert was acknowledged.
pub const ALERT_ACKNOWLEDGED: &str = "alert.acknowledged";
/// Event type: an alert was resolved.
pub const ALERT_RESOLVED: &str = "alert.resolved";

/// Queued accounts rescored per read (an id list).
const CHUNK: usize = 5_000;
/// Accounts read per key range by a full recomputation.
const RANGE: usize = 10_000;
/// Changed health rows written per transaction.
const WRITE_CHUNK: usize = 5_000;
/// Write transactions of a recomputation in flight at once.
const WRITERS: usize = 4;
/// Days of signals health looks back over.
const WINDOW_DAYS: i64 = 180;

/// Per account, the cells of its signals of the last 180 days: on SQLite the
/// aggregates live here (rebuilt from the `signals` table at start) instead
/// of in `signal_days`, so ingest writes one row per signal and nothing else.
type Ledger = HashMap<Uuid, Vec<Cell>>;

/// A trained model with its metrics, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredModel {
    /// Model id (UUIDv7).
    pub id: String,
    /// Training time (µs).
    pub trained_at: i64,
    /// Horizon in days.
    pub horizon_days: i32,
    /// The fitted model.
    pub model: Model,
    /// Hold-out metrics.
    pub metrics: Metrics,
}

impl StoredModel {
    /// The wire form.
    pub fn info(&self) -> pb::ModelInfo {
        let mut coefficients: Vec<pb::Coefficient> = self
            .model
            .features
            .iter()
            .zip(&self.model.weights)
            .map(|(f, w)| pb::Coefficient {
                feature: f.clone(),
                coefficient: *w,
            })
            .collect();
        coefficients.sort_by(|a, b| b.coefficient.abs().total_cmp(&a.coefficient.abs()));
        pb::ModelInfo {
            id: self.id.clone(),
            train_time: Some(to_timestamp(self.trained_at)),
            horizon_days: self.horizon_days,
            training_examples: self.metrics.train as i32,
            holdout_examples: self.metrics.holdout as i32,
            churn_rate: self.metrics.churn_rate,
            holdout_auc: self.metrics.auc,
            holdout_log_loss: self.metrics.log_loss,
            calibration: self
                .metrics
                .calibration
                .iter()
                .map(|b| pb::CalibrationBin {
                    min_predicted: b.0,
                    max_predicted: b.1,
                    mean_predicted: b.2,
                    observed_rate: b.3,
                    count: b.4 as i32,
                })
                .collect(),
            coefficients,
            intercept: self.model.intercept,
        }
    }
}

struct Inner {
    store: Store,
    accounts: AccountDirectory,
    policy: ScoringPolicySettings,
    known: RwLock<HashSet<Uuid>>,
    dirty: Mutex<HashSet<Uuid>>,
    wake: Notify,
    model: RwLock<Option<Arc<StoredModel>>>,
    cutoffs: RwLock<Cutoffs>,
    cutoffs_at: Mutex<Option<std::time::Instant>>,
    /// `Some` on SQLite (one process owns the file): signal aggregates kept
    /// in memory. `None` on PostgreSQL, where replicas share the database and
    /// ingest maintains `signal_days` in its transaction.
    ledger: Option<RwLock<Ledger>>,
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

fn poisoned() -> Error {
    Error::Internal(anyhow::anyhow!("a scoring lock was poisoned"))
}

/// The profile's facts added to aggregated signal inputs.
fn inputs_of(agg: &Aggregates, p: &Profile, at: i64) -> domain::Inputs {
    let before = |t: Option<i64>| t.filter(|t| *t <= at);
    domain::Inputs {
        now: at,
        seats: p.seats,
        paying: p.first_paid_at.is_some_and(|t| t <= at) || p.mrr > 0,
        onboarding_started_at: before(p.onboarding_at),
        first_value_at: before(p.first_value_at),
        renewal_at: p.renewal_at,
        ..agg.inputs.clone()
    }
}

fn model_profile(p: &Profile, at: i64, mrr: i64) -> ModelProfile {
    let since = p.first_paid_at.or(p.created_at);
    ModelProfile {
        segment: p.segment,
        tenure_days: since.map(|s| ((at - s).max(0) / DAY) as f64),
        mrr,
        contract_months: p.contract_months.map(|m| m as f64),
    }
}

impl Scoring {
    /// The application over `store`; loads the known accounts and the model.
    pub async fn new(
        store: Store,
        accounts: AccountDirectory,
        policy: ScoringPolicySettings,
    ) -> Result<Self, Error> {
        let known: HashSet<Uuid> = storage::known_ids(store.db().reader())
            .await?
            .into_iter()
            .collect();
        let model = match storage::latest_model(store.db().reader()).await? {
            Some(body) => Some(Arc::new(
                serde_json::from_str::<StoredModel>(&body)
                    .map_err(|e| Error::Internal(anyhow::anyhow!("stored model: {e}")))?,
            )),
            None => None,
        };
        let ledger = if storage::is_postgres(store.db().reader()) {
            None
        } else {
            let today = storage::day_of(now_micros());
            let mut ledger = Ledger::new();
            for (id, cell) in storage::day_cells(
                store.db().reader(),
                Scope::All,
                today - WINDOW_DAYS,
                i64::from(i32::MAX),
                storage::CellSource::Signals,
            )
            .await?
            {
                if cell.kind < 100 {
                    ledger.entry(id).or_default().push(cell);
                }
            }
            for cells in ledger.values_mut() {
                cells.sort_unstable_by_key(|c| (c.day, c.kind));
            }
            Some(RwLock::new(ledger))
        };
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
                ledger,
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
    pub fn remember(&self, ids: impl IntoIterator<Item = Uuid>) -> Result<(), Error> {
        self.inner
            .known
            .write()
            .map_err(|_| poisoned())?
            .extend(ids);
        Ok(())
    }

    /// Queues accounts for rescoring and wakes the worker.
    pub fn mark_dirty(&self, ids: impl IntoIterator<Item = Uuid>) {
        if let Ok(mut dirty) = self.inner.dirty.lock() {
            dirty.extend(ids);
        }
        self.inner.wake.notify_one();
    }

    /// Marks an account changed by a feed event: now, and once more a moment
    /// later, because the consumer's transaction commits after the event is
    /// applied and a recomputation in between would not see it yet.
    pub fn mark_dirty_after_commit(&self, id: Uuid) {
        self.mark_dirty([id]);
        let app = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            app.mark_dirty([id]);
        });
    }

    /// Which of `ids` exist: known ones from memory, the rest asked of the
    /// accounts service once each (concurrently). UNAVAILABLE when it cannot
    /// be reached.
    async fn existing(&self, ids: &HashSet<Uuid>) -> Result<(HashSet<Uuid>, Vec<Uuid>), Error> {
        let unknown: Vec<Uuid> = {
            let known = self.inner.known.read().map_err(|_| poisoned())?;
            ids.iter()
                .filter(|id| !known.contains(id))
                .copied()
                .collect()
        };
        let mut missing = HashSet::new();
        let mut found = Vec::new();
        // At most 32 questions in flight, however many ids a batch names.
        let answers: Vec<(Uuid, Result<_, Error>)> = futures::stream::iter(unknown)
            .map(|id| async move { (id, self.inner.accounts.get(id).await) })
            .buffer_unordered(32)
            .collect()
            .await;
        for (id, answer) in answers {
            match answer {
                Ok(_) => found.push(id),
                Err(Error::NotFound { .. }) => {
                    missing.insert(id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok((missing, found))
    }

    /// Records a batch: per-item results, one transaction for the rest.
    pub async fn record_batch(
        &self,
        signals: &[pb::Signal],
    ) -> Result<pb::RecordSignalBatchResponse, Error> {
        if signals.len() > MAX_BATCH {
            return Err(Error::invalid(
                "signals",
                format!("at most {MAX_BATCH} signals per batch"),
            ));
        }
        let now = now_micros();
        let tolerance = self.inner.policy.future_tolerance_seconds.max(0) * 1_000_000;
        let parsed: Vec<Result<NewSignal, Rejection>> = signals
            .iter()
            .map(|s| convert::signal(s, now, tolerance))
            .collect();
        let ids: HashSet<Uuid> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|s| s.account_id))
            .collect();
        let (missing, found) = self.existing(&ids).await?;
        let mut results: Vec<Option<pb::SignalResult>> = vec![None; signals.len()];
        let mut accepted: Vec<(usize, NewSignal)> = Vec::with_capacity(signals.len());
        for (i, p) in parsed.into_iter().enumerate() {
            match p {
                Err(r) => results[i] = Some(convert::rejected(i, &r)),
                Ok(s) if missing.contains(&s.account_id) => {
                    results[i] = Some(convert::rejected(
                        i,
                        &Rejection {
                            code: tonic::Code::NotFound,
                            field: "account_id".into(),
                            message: format!("account {} not found", s.account_id),
                        },
                    ));
                }
                Ok(s) => accepted.push((i, s)),
            }
        }
        let found_for_tx = found.clone();
        let keep_days = self.inner.ledger.is_none();
        let accepted = Arc::new(accepted);
        let batch = accepted.clone();
        let response = self
            .inner
            .store
            .write(None, move |tx| {
                Box::pin(async move {
                    let signals: Vec<NewSignal> = batch.iter().map(|(_, s)| s.clone()).collect();
                    // The profiles first value may change are locked before
                    // this transaction writes any row, in account order: a
                    // feed consumer holding one of them then never waits for
                    // a row this batch wrote while the batch waits for it.
                    let mut reaching: Vec<Uuid> = batch
                        .iter()
                        .filter(|(_, s)| s.kind == pb::SignalType::FirstValueReached as i32)
                        .map(|(_, s)| s.account_id)
                        .collect();
                    reaching.sort_unstable();
                    reaching.dedup();
                    for id in reaching {
                        storage::lock_profile(tx.conn(), id).await?;
                    }
                    storage::ensure_profiles(tx.conn(), &found_for_tx, tx.now()).await?;
                    let inserted = storage::insert_signals(tx.conn(), &signals, tx.now()).await?;
                    let mut claimed: HashSet<&str> = HashSet::with_capacity(inserted.len());
                    let mut out = Vec::with_capacity(batch.len());
                    let mut fresh_signals: Vec<&NewSignal> = Vec::with_capacity(batch.len());
                    let mut first_values: Vec<(Uuid, i64)> = Vec::new();
                    for (i, s) in batch.iter() {
                        let fresh = inserted.contains(&s.key) && claimed.insert(&s.key);
                        if !fresh {
                            out.push(pb::SignalResult {
                                index: *i as i32,
                                outcome: pb::SignalOutcome::Duplicate as i32,
                                ..Default::default()
                            });
                            continue;
                        }
                        fresh_signals.push(s);
                        if s.kind == pb::SignalType::FirstValueReached as i32 {
                            first_values.push((s.account_id, s.occurred_at));
                        }
                        out.push(pb::SignalResult {
                            index: *i as i32,
                            outcome: pb::SignalOutcome::Recorded as i32,
                            ..Default::default()
                        });
                    }
                    if keep_days {
                        storage::add_days(tx.conn(), &day_deltas(fresh_signals)).await?;
                    }
                    reach_first_values(tx, &first_values, true).await?;
                    Ok(pb::RecordSignalBatchResponse {
                        results: out,
                        ..Default::default()
                    })
                })
            })
            .await?;
        let by_index: HashMap<usize, &NewSignal> = accepted.iter().map(|(i, s)| (*i, s)).collect();
        let recorded: Vec<&NewSignal> = response
            .results
            .iter()
            .filter(|r| r.outcome == pb::SignalOutcome::Recorded as i32)
            .filter_map(|r| by_index.get(&(r.index as usize)).copied())
            .collect();
        let touched: HashSet<Uuid> = recorded.iter().map(|s| s.account_id).collect();
        // Committed: the in-memory aggregates follow, before the worker is
        // told to rescore.
        if let Some(ledger) = &self.inner.ledger {
            let deltas = day_deltas(recorded);
            let mut ledger = ledger.write().map_err(|_| poisoned())?;
            for d in &deltas {
                add_cell(ledger.entry(d.account_id).or_default(), d);
            }
        }
        self.remember(found)?;
        self.mark_dirty(touched);
        for r in response.results {
            let index = r.index as usize;
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(r);
            }
        }
        let results: Vec<pb::SignalResult> = results.into_iter().flatten().collect();
        let count =
            |o: pb::SignalOutcome| results.iter().filter(|r| r.outcome == o as i32).count() as i32;
        Ok(pb::RecordSignalBatchResponse {
            recorded: count(pb::SignalOutcome::Recorded),
            duplicates: count(pb::SignalOutcome::Duplicate),
            rejected: count(pb::SignalOutcome::Rejected),
            results,
        })
    }

    fn windows(&self, now: i64) -> Windows {
        Windows {
            now,
            problem_days: self.inner.policy.problem_late_days.max(1),
            potential_days: self.inner.policy.potential_window_days.max(1),
        }
    }

    fn model(&self) -> Option<Arc<StoredModel>> {
        self.inner.model.read().ok().and_then(|m| m.clone())
    }

    /// The aggregates of the accounts in `scope` (`ids` lists the same
    /// accounts) as of `w`: from memory plus the feeds' rows on SQLite, from
    /// `signal_days` on PostgreSQL.
    async fn aggregates(
        &self,
        scope: Scope<'_>,
        ids: &[Uuid],
        w: Windows,
    ) -> Result<HashMap<Uuid, Aggregates>, Error> {
        let read = self.read_aggregates(scope, w).await?;
        self.fold_aggregates(read, ids, w)
    }

    /// The database's part of [`Self::aggregates`]: the day cells in the
    /// window, all of them on PostgreSQL, the feeds' on SQLite (its signals'
    /// cells are in memory). PostgreSQL only reads them; they are folded here,
    /// beside it.
    async fn read_aggregates(&self, scope: Scope<'_>, w: Windows) -> Result<ReadAggregates, Error> {
        let conn = self.inner.store.db().reader();
        let source = if self.inner.ledger.is_none() {
            storage::CellSource::Table
        } else {
            storage::CellSource::Feeds
        };
        let today = storage::day_of(w.now);
        let mut cells: ReadAggregates = HashMap::new();
        for (id, cell) in
            storage::day_cells(conn, scope, today - WINDOW_DAYS, today, source).await?
        {
            cells.entry(id).or_default().push(cell);
        }
        Ok(cells)
    }

    /// The memory's part of [`Self::aggregates`]: folds the cells read with
    /// the in-memory ones.
    fn fold_aggregates(
        &self,
        read: ReadAggregates,
        ids: &[Uuid],
        w: Windows,
    ) -> Result<HashMap<Uuid, Aggregates>, Error> {
        let ledger = match &self.inner.ledger {
            Some(ledger) => Some(ledger.read().map_err(|_| poisoned())?),
            None => None,
        };
        let none = Vec::new();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let mine = ledger.as_ref().and_then(|l| l.get(id)).unwrap_or(&none);
                let theirs = read.get(id).unwrap_or(&none);
                storage::fold(mine.iter().chain(theirs), w).map(|a| (*id, a))
            })
            .collect())
    }

    /// Rescores the accounts in `scope` (see [`Self::prepare`] and
    /// [`Self::write_outcomes`]); returns how many accounts got a score.
    async fn rescore(&self, scope: Scope<'_>) -> Result<usize, Error> {
        let prepared = self.prepare(scope, None).await?;
        let scored = prepared.scored;
        self.write_outcomes(prepared).await?;
        Ok(scored)
    }

    /// Reads what the accounts in `scope` need (concurrently) and scores
    /// them on every core, keeping what has to be written: health rows that
    /// changed, snapshots (see [`Round::account`]), alerts and band changes.
    async fn prepare(
        &self,
        scope: Scope<'_>,
        read: Option<Vec<Profile>>,
    ) -> Result<Prepared, Error> {
        let now = now_micros();
        let started = std::time::Instant::now();
        let today = storage::day_of(now);
        let conn = self.inner.store.db().reader();
        let w = self.windows(now);
        let profiles = async {
            match read {
                Some(profiles) => Ok(profiles),
                None => storage::load_profiles(conn, scope).await,
            }
        };
        // Independent reads, on as many connections.
        let (profiles, cards, read, prev, baseline, snapshotted) = tokio::try_join!(
            profiles,
            storage::scorecards(conn),
            self.read_aggregates(scope, w),
            storage::previous_health(conn, scope),
            storage::scores_at(conn, scope, today - 30),
            storage::snapshotted(conn, scope, today),
        )?;
        if profiles.is_empty() {
            return Ok(Prepared {
                now,
                scored: 0,
                outcomes: Vec::new(),
            });
        }
        let ids: Vec<Uuid> = profiles.iter().map(|p| p.account_id).collect();
        let cutoffs = *self.inner.cutoffs.read().map_err(|_| poisoned())?;
        let round = Round {
            now,
            policy: self.inner.policy.clone(),
            model: self.model(),
            cutoffs,
            cards,
            aggs: self.fold_aggregates(read, &ids, w)?,
            prev,
            baseline,
            snapshotted,
        };
        let (scored, outcomes) = tokio::task::spawn_blocking(move || round.run(&profiles))
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("scoring task: {e}")))??;
        tracing::debug!(
            scored,
            to_write = outcomes.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "accounts scored"
        );
        Ok(Prepared {
            now,
            scored,
            outcomes,
        })
    }

    /// Writes what [`Self::prepare`] kept, in transactions of a few
    /// thousand accounts, several at once (PostgreSQL writes them in
    /// parallel; SQLite's single writer takes them in turn).
    async fn write_outcomes(&self, prepared: Prepared) -> Result<(), Error> {
        let now = prepared.now;
        futures::stream::iter(write_chunks(prepared.outcomes))
            .map(|chunk| self.write_chunk(now, chunk))
            .buffer_unordered(WRITERS)
            .try_collect::<()>()
            .await
    }

    /// Writes one chunk of outcomes computed at `now` in one transaction:
    /// new alerts, changed health rows, snapshots and the events.
    async fn write_chunk(&self, now: i64, chunk: Vec<Outcome>) -> Result<(), Error> {
        self.inner
            .store
            .write(None, move |tx| {
                Box::pin(async move {
                    let alerts: Vec<&pb::Alert> = chunk.iter().flat_map(|o| &o.alerts).collect();
                    let raised = storage::insert_alerts(tx.conn(), &alerts, now).await?;
                    for o in &chunk {
                        for alert in &o.alerts {
                            if raised.contains(&alert.id) {
                                tx.emit(NewEvent::new(
                                    "alert",
                                    alert.id.clone(),
                                    ALERT_RAISED,
                                    alert,
                                ));
                            }
                        }
                        if o.band_changed {
                            tx.emit(NewEvent::new(
                                "account",
                                o.row.account_id.to_string(),
                                BAND_CHANGED,
                                &o.row.health,
                            ));
                        }
                    }
                    let changed: Vec<&HealthRow> =
                        chunk.iter().filter(|o| o.changed).map(|o| &o.row).collect();
                    storage::save_health(tx.conn(), &changed, now).await?;
                    let snapshots: Vec<&Snapshot> =
                        chunk.iter().flat_map(|o| &o.snapshots).collect();
                    storage::save_snapshots(tx.conn(), &snapshots).await?;
                    Ok(pb::RecomputeHealthResponse::default())
                })
            })
            .await
            .map(|_| ())
    }

    /// Re-ranks the MRR of every paying account into the tier and quadrant
    /// cutoffs.
    async fn refresh_cutoffs(&self) -> Result<(), Error> {
        let policy = &self.inner.policy;
        let mrrs = storage::all_mrr(self.inner.store.db().reader()).await?;
        let cutoffs = domain::cutoffs(
            mrrs,
            policy.diamond_top_percent,
            policy.gold_next_percent,
            policy.value_percentile,
        );
        *self.inner.cutoffs.write().map_err(|_| poisoned())? = cutoffs;
        *self.inner.cutoffs_at.lock().map_err(|_| poisoned())? = Some(std::time::Instant::now());
        Ok(())
    }

    /// Drops the in-memory cells that fell out of the 180-day window.
    fn trim_ledger(&self) -> Result<(), Error> {
        if let Some(ledger) = &self.inner.ledger {
            let oldest = (storage::day_of(now_micros()) - WINDOW_DAYS) as i32;
            let mut ledger = ledger.write().map_err(|_| poisoned())?;
            ledger.retain(|_, cells| {
                cells.retain(|c| c.day >= oldest);
                !cells.is_empty()
            });
            ledger.shrink_to_fit();
        }
        Ok(())
    }

    /// Recomputes every account (value cutoffs first), a key range of
    /// accounts at a time; returns how many got a score.
    pub async fn recompute_all(&self) -> Result<usize, Error> {
        self.inner
            .full_rounds
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _turn = self.inner.rescoring.lock().await;
        // Every account is read after this point: what was queued is
        // covered, unless the round fails, when it is queued again.
        let queued: Vec<Uuid> = match self.inner.dirty.lock() {
            Ok(mut dirty) => dirty.drain().collect(),
            Err(_) => Vec::new(),
        };
        let outcome = self.full_round().await;
        if outcome.is_err() {
            self.mark_dirty(queued);
        }
        outcome
    }

    /// The body of [`Self::recompute_all`]: one task reads and scores a
    /// key range of accounts after another while the other writes what
    /// they decided, a few transactions at once, with no pause between
    /// ranges.
    async fn full_round(&self) -> Result<usize, Error> {
        self.refresh_cutoffs().await?;
        self.trim_ledger()?;
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<(i64, Vec<Outcome>)>(WRITERS);
        let produce = async move {
            let mut after = None;
            let mut total = 0;
            loop {
                let profiles =
                    storage::profiles_after(self.inner.store.db().reader(), after, RANGE as u64)
                        .await?;
                let Some(last) = profiles.last().map(|p| p.account_id) else {
                    break;
                };
                let prepared = self
                    .prepare(Scope::Range { after, last }, Some(profiles))
                    .await?;
                total += prepared.scored;
                for chunk in write_chunks(prepared.outcomes) {
                    if sender.send((prepared.now, chunk)).await.is_err() {
                        // The writer stopped on an error, which it reports.
                        return Ok(total);
                    }
                }
                after = Some(last);
            }
            Ok(total)
        };
        let consume = futures::stream::poll_fn(|cx| receiver.poll_recv(cx))
            .map(|(now, chunk)| self.write_chunk(now, chunk))
            .buffer_unordered(WRITERS)
            .try_collect::<()>();
        let (total, ()) = tokio::try_join!(produce, consume)?;
        Ok(total)
    }

    /// Rescores the queued accounts (with cutoffs at most 10 seconds old,
    /// so a tier follows the other accounts' revenue between sweeps).
    async fn drain(&self) -> Result<(), Error> {
        let round = self
            .inner
            .full_rounds
            .load(std::sync::atomic::Ordering::SeqCst);
        let stale = self
            .inner
            .cutoffs_at
            .lock()
            .map_err(|_| poisoned())?
            .is_none_or(|at| at.elapsed() > Duration::from_secs(10));
        if stale {
            self.refresh_cutoffs().await?;
        }
        let ids: Vec<Uuid> = {
            let mut dirty = self.inner.dirty.lock().map_err(|_| poisoned())?;
            dirty.drain().collect()
        };
        for (n, chunk) in ids.chunks(CHUNK).enumerate() {
            let _turn = self.inner.rescoring.lock().await;
            if self
                .inner
                .full_rounds
                .load(std::sync::atomic::Ordering::SeqCst)
                != round
            {
                // A full recomputation ran since these were queued.
                return Ok(());
            }
            if let Err(e) = self.rescore(Scope::Ids(chunk)).await {
                self.mark_dirty(ids[n * CHUNK..].iter().copied());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs the recompute worker until shutdown: queued accounts after a
    /// short debounce, every account on the sweep schedule (and at start).
    pub fn spawn_worker(&self, shutdown: Shutdown) {
        let app = self.clone();
        tokio::spawn(async move {
            let debounce = Duration::from_millis(app.inner.policy.recompute_interval_ms.max(1));
            let mut sweep = tokio::time::interval(Duration::from_secs(
                app.inner.policy.sweep_interval_seconds.max(1),
            ));
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Under a heavy stream of signals the worker waits at least six
            // times as long as its last round took, so rescoring never takes
            // more than about a seventh of the time from ingest.
            let mut pause = debounce;
            loop {
                let full = tokio::select! {
                    () = shutdown.wait() => return,
                    _ = sweep.tick() => true,
                    () = app.inner.wake.notified() => false,
                };
                let outcome = if full {
                    app.recompute_all().await.map(|_| ())
                } else {
                    tokio::select! {
                        () = shutdown.wait() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    let started = std::time::Instant::now();
                    let outcome = app.drain().await;
                    pause = debounce.max(started.elapsed() * 6);
                    outcome
                };
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "health recomputation failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    app.inner.wake.notify_one();
                }
            }
        });
    }

    /// GetHealth: the stored health with deltas from the snapshots.
    pub async fn get_health(&self, id: Uuid) -> Result<pb::AccountHealth, Error> {
        let conn = self.inner.store.db().reader();
        let mut h = storage::get_health(conn, id)
            .await?
            .ok_or_else(|| Error::not_found("health of account", id.to_string()))?;
        let today = storage::day_of(now_micros());
        let ids = [id];
        let d7 = storage::scores_at(conn, Scope::Ids(&ids), today - 7).await?;
        let d30 = storage::scores_at(conn, Scope::Ids(&ids), today - 30).await?;
        h.delta_7d = d7.get(&id).map(|s| h.score - s);
        h.delta_30d = d30.get(&id).map(|s| h.score - s);
        Ok(h)
    }

    /// ListHealth / ListAtRisk.
    pub async fn list_health(
        &self,
        filter: &storage::HealthFilter,
        page: &Page,
    ) -> Result<(Vec<pb::AccountHealth>, bowtie_proto::common::PageResponse), Error> {
        let after = match &page.after {
            None => None,
            Some(token) => {
                let bad =
                    || Error::invalid("page.page_token", "is not a token issued for this query");
                let (score, id) = token.split_once(':').ok_or_else(bad)?;
                Some((
                    score.parse::<i32>().map_err(|_| bad())?,
                    Uuid::parse_str(id).map_err(|_| bad())?,
                ))
            }
        };
        let rows = storage::list_health(
            self.inner.store.db().reader(),
            filter,
            after,
            page.fetch_limit(),
        )
        .await?;
        Ok(page.finish(rows, |h| format!("{}:{}", h.score, h.account_id)))
    }

    /// GetHealthHistory.
    pub async fn history(&self, id: Uuid, days: i64) -> Result<Vec<pb::HealthSnapshot>, Error> {
        let today = storage::day_of(now_micros());
        Ok(
            storage::history(self.inner.store.db().reader(), id, today - days + 1)
                .await?
                .into_iter()
                .map(|(day, score, band)| pb::HealthSnapshot {
                    day: Some(convert::day_start(day)),
                    score,
                    band,
                })
                .collect(),
        )
    }

    /// GetScorecard.
    pub async fn scorecard(&self, segment: Segment) -> Result<pb::Scorecard, Error> {
        let cards = storage::scorecards(self.inner.store.db().reader()).await?;
        Ok(match cards.get(&(segment as i32)) {
            Some((card, version, at)) => convert::scorecard_to_pb(segment, card, *version, *at),
            None => convert::scorecard_to_pb(segment, &Scorecard::default(), 0, 0),
        })
    }

    /// ListScorecardVersions: newest first, the page token is the last
    /// version returned.
    pub async fn scorecard_versions(
        &self,
        segment: Segment,
        page: &Page,
    ) -> Result<pb::ListScorecardVersionsResponse, Error> {
        let before = match &page.after {
            None => None,
            Some(token) => Some(token.parse::<i64>().map_err(|_| {
                Error::invalid("page.page_token", "is not a token issued for this query")
            })?),
        };
        let rows = storage::scorecard_versions(
            self.inner.store.db().reader(),
            segment as i32,
            before,
            page.fetch_limit(),
        )
        .await?;
        let cards = rows
            .into_iter()
            .map(|(card, version, at)| convert::scorecard_to_pb(segment, &card, version, at))
            .collect();
        let (scorecards, page) = page.finish(cards, |c| c.version.to_string());
        Ok(pb::ListScorecardVersionsResponse {
            scorecards,
            page: Some(page),
        })
    }

    /// UpdateScorecard: checks the expected version, stores the next one and
    /// rescores the accounts it applies to.
    pub async fn update_scorecard(
        &self,
        segment: Segment,
        card: Scorecard,
        expected_version: i64,
        idem: Option<Idempotency>,
    ) -> Result<pb::UpdateScorecardResponse, Error> {
        let response = self
            .inner
            .store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let cards = storage::scorecards(tx.conn()).await?;
                    let current = cards.get(&(segment as i32)).map_or(0, |c| c.1);
                    if current != expected_version {
                        return Err(Error::Aborted(format!(
                            "the scorecard is at version {current}, not {expected_version}; re-read and retry"
                        )));
                    }
                    let version = current + 1;
                    storage::save_scorecard(tx.conn(), segment as i32, &card, version, tx.now())
                        .await?;
                    Ok(pb::UpdateScorecardResponse {
                        scorecard: Some(convert::scorecard_to_pb(segment, &card, version, tx.now())),
                    })
                })
            })
            .await?;
        let reader = self.inner.store.db().reader();
        let ids = if segment == Segment::Unspecified {
            storage::known_ids(reader).await?
        } else {
            storage::ids_in_segment(reader, segment as i32).await?
        };
        self.mark_dirty(ids);
        Ok(response)
    }

    /// Alerts, newest first.
    pub async fn list_alerts(
        &self,
        state: Option<i32>,
        kind: Option<i32>,
        account: Option<Uuid>,
        page: &Page,
    ) -> Result<pb::ListAlertsResponse, Error> {
        let after = match &page.after {
            None => None,
            Some(a) => Some(Uuid::parse_str(a).map_err(|_| {
                Error::invalid("page.page_token", "is not a token issued for this query")
            })?),
        };
        let rows = storage::list_alerts(
            self.inner.store.db().reader(),
            state,
            kind,
            account,
            after,
            page.fetch_limit(),
        )
        .await?;
        let (alerts, page) = page.finish(rows, |a| a.id.clone());
        Ok(pb::ListAlertsResponse {
            alerts,
            page: Some(page),
        })
    }

    /// Acknowledges or resolves an alert at `expected_version`.
    pub async fn transition_alert(
        &self,
        id: Uuid,
        expected_version: i64,
        to: pb::AlertState,
        note: String,
    ) -> Result<pb::Alert, Error> {
        self.inner
            .store
            .write(None, move |tx| {
                Box::pin(async move {
                    let mut alert = storage::get_alert(tx.conn(), id)
                        .await?
                        .ok_or_else(|| Error::not_found("alert", id.to_string()))?;
                    if alert.version != expected_version {
                        return Err(Error::Aborted(format!(
                            "the alert is at version {}, not {expected_version}; re-read and retry",
                            alert.version
                        )));
                    }
                    let state = pb::AlertState::try_from(alert.state)
                        .unwrap_or(pb::AlertState::Unspecified);
                    let allowed = match to {
                        pb::AlertState::Acknowledged => state == pb::AlertState::Open,
                        pb::AlertState::Resolved => {
                            matches!(state, pb::AlertState::Open | pb::AlertState::Acknowledged)
                        }
                        _ => false,
                    };
                    if !allowed {
                        return Err(Error::FailedPrecondition(format!(
                            "the alert is {}; it cannot become {}",
                            state.as_str_name(),
                            to.as_str_name()
                        )));
                    }
                    alert.state = to as i32;
                    alert.version += 1;
                    if !note.is_empty() {
                        alert.note = note;
                    }
                    alert.update_time = Some(to_timestamp(tx.now()));
                    storage::update_alert(tx.conn(), &alert, tx.now()).await?;
                    let event = if to == pb::AlertState::Resolved {
                        ALERT_RESOLVED
                    } else {
                        ALERT_ACKNOWLEDGED
                    };
                    tx.emit(NewEvent::new("alert", alert.id.clone(), event, &alert));
                    Ok(alert)
                })
            })
            .await
    }

    /// Trains the churn model on the system's own history and persists it.
    ///
    /// Labels: an account that paid and lost all revenue is a churner, seen
    /// as of half a horizon before its churn; an account paying for at least
    /// a horizon that did not churn is a stayer, seen as of one horizon ago.
    /// Features are computed as of those instants from the signal history
    /// (MRR is the last positive MRR), so the label never leaks into them.
    pub async fn train(&self, seed: u64) -> Result<pb::ModelInfo, Error> {
        let policy = &self.inner.policy;
        let horizon = i64::from(policy.churn_horizon_days.max(1)) * DAY;
        let now = now_micros();
        let conn = self.inner.store.db().reader();
        let profiles = storage::load_profiles(conn, Scope::All).await?;
        let cards = storage::scorecards(conn).await?;
        // On SQLite the whole signal history is summed per day once (there
        // is no `signal_days` copy of it to read per instant).
        let history: Option<HashMap<Uuid, Vec<Cell>>> = match self.inner.ledger {
            Some(_) => {
                let mut cells: HashMap<Uuid, Vec<Cell>> = HashMap::new();
                for (id, cell) in storage::day_cells(
                    conn,
                    Scope::All,
                    i64::from(i32::MIN),
                    i64::from(i32::MAX),
                    storage::CellSource::Signals,
                )
                .await?
                {
                    cells.entry(id).or_default().push(cell);
                }
                Some(cells)
            }
            None => None,
        };
        let mut by_day: HashMap<i64, Vec<(&Profile, bool)>> = HashMap::new();
        for p in &profiles {
            let Some(paid) = p.first_paid_at else {
                continue;
            };
            let (at, churned) = match p.churned_at {
                Some(c) if c <= now => (c - horizon / 2, true),
                _ if paid <= now - horizon => (now - horizon, false),
                _ => continue,
            };
            by_day
                .entry(storage::day_of(at))
                .or_default()
                .push((p, churned));
        }
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut days: Vec<i64> = by_day.keys().copied().collect();
        days.sort_unstable();
        for day in days {
            let group = &by_day[&day];
            let at = day * DAY + DAY - 1;
            let ids: Vec<Uuid> = group.iter().map(|(p, _)| p.account_id).collect();
            let mut aggs: HashMap<Uuid, Aggregates> = HashMap::new();
            match &history {
                Some(cells) => {
                    for id in &ids {
                        if let Some(a) = cells
                            .get(id)
                            .and_then(|c| storage::fold(c, self.windows(at)))
                        {
                            aggs.insert(*id, a);
                        }
                    }
                }
                None => {
                    for chunk in ids.chunks(CHUNK) {
                        aggs.extend(
                            storage::load_aggregates(conn, Scope::Ids(chunk), self.windows(at))
                                .await?,
                        );
                    }
                }
            }
            let empty = Aggregates::default();
            for (p, churned) in group {
                let agg = aggs.get(&p.account_id).unwrap_or(&empty);
                let (card, _) = card_for(&cards, p.segment);
                let inputs = inputs_of(agg, p, at);
                x.push(model::features(
                    &inputs,
                    &card,
                    &model_profile(p, at, p.last_mrr.max(p.mrr)),
                ));
                y.push(*churned);
            }
        }
        let churners = y.iter().filter(|v| **v).count();
        if y.len() < policy.min_training_examples || churners == 0 || churners == y.len() {
            return Err(Error::FailedPrecondition(format!(
                "too little history to train on: {} labelled accounts ({churners} churned); \
                 at least {} with both outcomes are needed",
                y.len(),
                policy.min_training_examples
            )));
        }
        let seed = if seed == 0 { policy.model_seed } else { seed };
        let (fitted, metrics) = model::train(&x, &y, seed, policy.holdout_percent.clamp(1, 90));
        let stored = StoredModel {
            id: Uuid::now_v7().to_string(),
            trained_at: now,
            horizon_days: policy.churn_horizon_days,
            model: fitted,
            metrics,
        };
        let body = serde_json::to_string(&stored)
            .map_err(|e| Error::Internal(anyhow::anyhow!("encoding the model: {e}")))?;
        let (id, at) = (stored.id.clone(), stored.trained_at);
        self.inner
            .store
            .write(None, move |tx| {
                Box::pin(async move {
                    storage::save_model(tx.conn(), &id, at, &body).await?;
                    Ok(pb::RecomputeHealthResponse::default())
                })
            })
            .await?;
        let info = stored.info();
        *self.inner.model.write().map_err(|_| poisoned())? = Some(Arc::new(stored));
        let app = self.clone();
        tokio::spawn(async move {
            if let Err(e) = app.recompute_all().await {
                tracing::warn!(error = %e, "rescoring after training failed");
            }
        });
        Ok(info)
    }

    /// GetModel.
    pub fn model_info(&self) -> Result<pb::ModelInfo, Error> {
        self.model().map(|m| m.info()).ok_or_else(|| {
            Error::FailedPrecondition("no churn model was trained yet; call TrainModel".into())
        })
    }

    /// GetChurnRisk: probability and the features that raise it most.
    pub async fn churn_risk(&self, id: Uuid) -> Result<pb::GetChurnRiskResponse, Error> {
        let m = self.model().ok_or_else(|| {
            Error::FailedPrecondition("no churn model was trained yet; call TrainModel".into())
        })?;
        let conn = self.inner.store.db().reader();
        let p = storage::get_profile(conn, id)
            .await?
            .ok_or_else(|| Error::not_found("account", id.to_string()))?;
        let now = now_micros();
        let ids = [id];
        let agg = self
            .aggregates(Scope::Ids(&ids), &ids, self.windows(now))
            .await?
            .remove(&id)
            .unwrap_or_default();
        let cards = storage::scorecards(conn).await?;
        let (card, _) = card_for(&cards, p.segment);
        let x = model::features(
            &inputs_of(&agg, &p, now),
            &card,
            &model_profile(&p, now, p.mrr),
        );
        Ok(pb::GetChurnRiskResponse {
            account_id: id.to_string(),
            probability: m.model.predict(&x),
            horizon_days: m.horizon_days,
            top_drivers: m
                .model
                .drivers(&x)
                .into_iter()
                .filter(|d| d.1 > 0.0)
                .take(5)
                .map(|(feature, contribution, value)| pb::RiskDriver {
                    feature,
                    contribution,
                    value,
                })
                .collect(),
            model_id: m.id.clone(),
        })
    }

    /// GetSegments.
    pub async fn segments(&self, segment: Option<i32>) -> Result<pb::GetSegmentsResponse, Error> {
        let rows = storage::value_rows(self.inner.store.db().reader(), segment).await?;
        let total: i64 = rows.iter().map(|r| r.0.max(0)).sum();
        let tiers = [
            pb::Tier::Diamond,
            pb::Tier::Gold,
            pb::Tier::Strategic,
            pb::Tier::Potential,
            pb::Tier::General,
            pb::Tier::Problem,
        ]
        .into_iter()
        .map(|t| {
            let of: Vec<&(i64, i32, i32)> = rows.iter().filter(|r| r.1 == t as i32).collect();
            let mrr: i64 = of.iter().map(|r| r.0.max(0)).sum();
            pb::TierSummary {
                tier: t as i32,
                accounts: of.len() as i64,
                mrr_minor_units: mrr,
                revenue_share_bp: domain::share_bp(mrr, total),
            }
        })
        .collect();
        let quadrants = [
            pb::Quadrant::A,
            pb::Quadrant::B,
            pb::Quadrant::C,
            pb::Quadrant::D,
            pb::Quadrant::E,
        ]
        .into_iter()
        .map(|q| {
            let of: Vec<&(i64, i32, i32)> = rows.iter().filter(|r| r.2 == q as i32).collect();
            let mrr: i64 = of.iter().map(|r| r.0.max(0)).sum();
            pb::QuadrantSummary {
                quadrant: q as i32,
                accounts: of.len() as i64,
                mrr_minor_units: mrr,
                revenue_share_bp: domain::share_bp(mrr, total),
            }
        })
        .collect();
        Ok(pb::GetSegmentsResponse {
            tiers,
            quadrants,
            accounts: rows.len() as i64,
            mrr_minor_units: total,
            top_20_percent_share_bp: domain::top_20_share_bp(rows.iter().map(|r| r.0).collect()),
        })
    }
}

/// The day cells a recomputation read, by account.
type ReadAggregates = HashMap<Uuid, Vec<Cell>>;

/// A scored set of accounts, before its writes.
struct Prepared {
    /// The instant of the computation.
    now: i64,
    /// Accounts that got a score.
    scored: usize,
    /// What has to be written.
    outcomes: Vec<Outcome>,
}

/// What one account's rescoring decided.
struct Outcome {
    /// The new health.
    row: HealthRow,
    /// Alerts to raise (each inserted unless one is open already).
    alerts: Vec<pb::Alert>,
    /// The band differs from the stored one.
    band_changed: bool,
    /// The health differs from the stored one (its time aside).
    changed: bool,
    /// Snapshots to write: today's first, and the closing one of the day
    /// the stored health was computed on.
    snapshots: Vec<Snapshot>,
}

/// Everything a rescoring of some accounts reads, for the pure computation.
struct Round {
    now: i64,
    policy: ScoringPolicySettings,
    model: Option<Arc<StoredModel>>,
    cutoffs: Cutoffs,
    cards: HashMap<i32, (Scorecard, i64, i64)>,
    aggs: HashMap<Uuid, Aggregates>,
    prev: HashMap<Uuid, storage::PreviousHealth>,
    baseline: HashMap<Uuid, i32>,
    snapshotted: HashSet<Uuid>,
}

impl Round {
    /// Scores `profiles` on every core; returns how many got a score and the
    /// outcomes that have something to write.
    fn run(&self, profiles: &[Profile]) -> Result<(usize, Vec<Outcome>), Error> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = profiles.len().div_ceil(threads).max(1);
        let parts: Vec<(usize, Vec<Outcome>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = profiles
                .chunks(per)
                .map(|part| {
                    scope.spawn(move || {
                        let mut scored = 0;
                        let mut out = Vec::new();
                        for p in part {
                            if let Some(o) = self.account(p) {
                                scored += 1;
                                if o.changed || !o.snapshots.is_empty() || !o.alerts.is_empty() {
                                    out.push(o);
                                }
                            }
                        }
                        (scored, out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| Error::Internal(anyhow::anyhow!("a scoring thread panicked")))
                })
                .collect::<Result<Vec<_>, Error>>()
        })?;
        let scored = parts.iter().map(|p| p.0).sum();
        Ok((scored, parts.into_iter().flat_map(|p| p.1).collect()))
    }

    /// One account's new health, alerts and what to write; `None` when it
    /// cannot be scored (no component).
    fn account(&self, p: &Profile) -> Option<Outcome> {
        let (now, policy) = (self.now, &self.policy);
        let today = storage::day_of(now);
        let empty = Aggregates::default();
        let agg = self.aggs.get(&p.account_id).unwrap_or(&empty);
        let (card, version) = card_for(&self.cards, p.segment);
        let inputs = inputs_of(agg, p, now);
        let h = domain::health(&inputs, &card)?;
        let risk_bp = self.model.as_ref().map(|m| {
            let x = model::features(&inputs, &card, &model_profile(p, now, p.mrr));
            (m.model.predict(&x) * 10_000.0).round() as i32
        });
        let dormant = agg
            .last_usage_day
            .is_none_or(|d| d <= today - policy.dormant_days);
        let facts = ValueFacts {
            mrr: p.mrr,
            strategic: p.strategic,
            band: h.band,
            score: h.score,
            late_recently: agg.late_recently,
            expanded_recently: agg.expanded_recently,
            dormant,
        };
        let health = pb::AccountHealth {
            account_id: p.account_id.to_string(),
            score: h.score,
            band: h.band as i32,
            components: convert::components_to_pb(&h),
            missing: h.missing.iter().map(|c| *c as i32).collect(),
            delta_7d: None,
            delta_30d: None,
            segment: p.segment as i32,
            scorecard_version: version,
            churn_risk_bp: risk_bp,
            tier: domain::tier(&facts, &self.cutoffs) as i32,
            quadrant: domain::quadrant(&facts, &self.cutoffs, policy.loyalty_score) as i32,
            mrr_minor_units: p.mrr,
            compute_time: Some(to_timestamp(now)),
        };
        let prev = self.prev.get(&p.account_id);
        let before = prev.map(|b| Trigger {
            score: b.score,
            band: pb::Band::try_from(b.band).unwrap_or(pb::Band::Unspecified),
            risk_bp: b.risk_bp,
        });
        let after = Trigger {
            score: h.score,
            band: h.band,
            risk_bp,
        };
        let base = self.baseline.get(&p.account_id).copied();
        let alerts = domain::alerts(
            before,
            after,
            base,
            policy.alert_drop_points,
            policy.risk_threshold_bp,
        )
        .into_iter()
        .map(|kind| pb::Alert {
            id: Uuid::now_v7().to_string(),
            account_id: p.account_id.to_string(),
            kind: kind as i32,
            state: pb::AlertState::Open as i32,
            message: domain::alert_message(kind, after, base),
            score: h.score,
            churn_risk_bp: risk_bp.unwrap_or(0),
            version: 1,
            create_time: Some(to_timestamp(now)),
            update_time: Some(to_timestamp(now)),
            note: String::new(),
        })
        .collect();
        let row = HealthRow::new(p.account_id, health);
        let changed = prev.is_none_or(|b| b.body != row.body);
        let snapshots = snapshots_for(
            p.account_id,
            prev,
            self.snapshotted.contains(&p.account_id),
            today,
            (h.score, h.band as i32),
        );
        Some(Outcome {
            band_changed: before.is_some_and(|b| b.band != h.band),
            changed,
            snapshots,
            alerts,
            row,
        })
    }
}

/// The snapshots an account's rescoring on `today` writes, given its stored
/// health (`prev`) and whether today has a snapshot.
///
/// A day's snapshot is written by its first rescoring and closed with the
/// day's last score by the first rescoring of a later day: the stored health
/// is that last score (reads take it from there until then). So an account
/// is snapshotted at most twice a day, however often its score moves.
fn snapshots_for(
    account_id: Uuid,
    prev: Option<&storage::PreviousHealth>,
    snapshotted_today: bool,
    today: i64,
    (score, band): (i32, i32),
) -> Vec<Snapshot> {
    if snapshotted_today {
        return Vec::new();
    }
    let closing = prev.filter(|b| b.day < today).map(|b| Snapshot {
        account_id,
        day: b.day,
        score: b.score,
        band: b.band,
    });
    closing
        .into_iter()
        .chain([Snapshot {
            account_id,
            day: today,
            score,
            band,
        }])
        .collect()
}

/// `outcomes` in chunks of [`WRITE_CHUNK`], one write transaction each.
fn write_chunks(outcomes: Vec<Outcome>) -> Vec<Vec<Outcome>> {
    let mut chunks = Vec::with_capacity(outcomes.len().div_ceil(WRITE_CHUNK));
    let mut outcomes = outcomes.into_iter();
    loop {
        let chunk: Vec<Outcome> = outcomes.by_ref().take(WRITE_CHUNK).collect();
        if chunk.is_empty() {
            return chunks;
        }
        chunks.push(chunk);
    }
}

/// The `signal_days` increments of `signals`, in key order: neighbouring
/// rows share B-tree pages, and two concurrent batches lock rows in the same
/// order, so they cannot deadlock.
fn day_deltas<'a>(signals: impl IntoIterator<Item = &'a NewSignal>) -> Vec<DayDelta> {
    let mut deltas: HashMap<(Uuid, i32, i64), DayDelta> = HashMap::new();
    for s in signals {
        let day = storage::day_of(s.occurred_at);
        let d = deltas
            .entry((s.account_id, s.kind, day))
            .or_insert(DayDelta {
                account_id: s.account_id,
                kind: s.kind,
                day,
                total: 0,
                events: 0,
                last_value: s.value,
                last_at: s.occurred_at,
            });
        d.total += s.value;
        d.events += 1;
        if s.occurred_at >= d.last_at {
            d.last_at = s.occurred_at;
            d.last_value = s.value;
        }
    }
    let mut deltas: Vec<DayDelta> = deltas.into_values().collect();
    deltas.sort_unstable_by_key(|d| (d.account_id, d.day, d.kind));
    deltas
}

/// Adds a delta to an account's cells, kept in (day, kind) order.
fn add_cell(cells: &mut Vec<Cell>, d: &DayDelta) {
    let key = (d.day as i32, d.kind);
    match cells.binary_search_by_key(&key, |c| (c.day, c.kind)) {
        Ok(i) => cells[i].add(d),
        Err(i) => cells.insert(i, Cell::of(d)),
    }
}

/// The scorecard of a segment: its own, else the default one, else the built-in.
fn card_for(cards: &HashMap<i32, (Scorecard, i64, i64)>, segment: Segment) -> (Scorecard, i64) {
    cards
        .get(&(segment as i32))
        .or_else(|| cards.get(&(Segment::Unspecified as i32)))
        .map_or((Scorecard::default(), 0), |(c, v, _)| (c.clone(), *v))
}

/// Records first value inside `tx` for each `(account, time)` whose account
/// has none yet (or an earlier one); announces `first_value.reached` for the
/// accounts that had none when `announce`. Reads and writes the profiles a
/// statement for all of them.
pub async fn reach_first_values(
    tx: &mut Tx,
    reached: &[(Uuid, i64)],
    announce: bool,
) -> Result<(), Error> {
    // Each account's earliest time, in account order (like every other
    // batch that locks profiles).
    let mut earliest = reached.to_vec();
    earliest.sort_unstable();
    earliest.dedup_by_key(|(id, _)| *id);
    let ids: Vec<Uuid> = earliest.iter().map(|(id, _)| *id).collect();
    for id in &ids {
        storage::lock_profile(tx.conn(), *id).await?;
    }
    let mut profiles: HashMap<Uuid, Profile> = storage::load_profiles(tx.conn(), Scope::Ids(&ids))
        .await?
        .into_iter()
        .map(|p| (p.account_id, p))
        .collect();
    let mut changed = Vec::new();
    for (id, at) in earliest {
        let p = profiles.entry(id).or_insert_with(|| Profile {
            account_id: id,
            ..Profile::default()
        });
        let first = p.first_value_at.is_none();
        if p.first_value_at.is_some_and(|t| t <= at) {
            continue;
        }
        p.first_value_at = Some(at);
        if first && announce {
            let days = p.onboarding_at.map(|s| ((at - s).max(0) / DAY) as i32);
            tx.emit(NewEvent::new(
                "account",
                id.to_string(),
                FIRST_VALUE_REACHED,
                &pb::FirstValueReached {
                    account_id: id.to_string(),
                    reached_at: Some(to_timestamp(at)),
                    days_to_value: days,
                },
            ));
        }
        changed.push(id);
    }
    let changed: Vec<&Profile> = changed.iter().filter_map(|id| profiles.get(id)).collect();
    storage::save_profiles(tx.conn(), &changed, tx.now()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(day: i64, score: i32) -> storage::PreviousHealth {
        storage::PreviousHealth {
            score,
            band: 2,
            risk_bp: None,
            body: Vec::new(),
            day,
        }
    }

    fn snap(day: i64, score: i32, band: i32) -> Snapshot {
        Snapshot {
            account_id: Uuid::nil(),
            day,
            score,
            band,
        }
    }

    #[test]
    fn a_first_rescoring_writes_today_s_snapshot() {
        let out = snapshots_for(Uuid::nil(), None, false, 100, (61, 2));
        assert_eq!(out, [snap(100, 61, 2)]);
    }

    #[test]
    fn later_rescorings_of_the_same_day_write_no_snapshot() {
        let prev = stored(100, 61);
        assert!(snapshots_for(Uuid::nil(), Some(&prev), true, 100, (40, 1)).is_empty());
    }

    #[test]
    fn the_first_rescoring_of_a_new_day_closes_the_last_day_with_its_last_score() {
        // Computed last on day 97 at 55 (day 97's snapshot may hold an
        // earlier score of that day); today is 100.
        let prev = stored(97, 55);
        let out = snapshots_for(Uuid::nil(), Some(&prev), false, 100, (48, 3));
        assert_eq!(out, [snap(97, 55, 2), snap(100, 48, 3)]);
    }

    #[test]
    fn a_day_whose_snapshot_was_lost_is_written_again_without_a_closing_one() {
        // Stored health computed today but today's snapshot missing.
        let prev = stored(100, 55);
        let out = snapshots_for(Uuid::nil(), Some(&prev), false, 100, (48, 3));
        assert_eq!(out, [snap(100, 48, 3)]);
    }
}
