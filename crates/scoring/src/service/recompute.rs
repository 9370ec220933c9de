//! Recomputation: the worker that rescores queued accounts shortly after
//! they change (a debounced drain) and every account on the sweep schedule
//! (time decay), and the round itself: read what a set of accounts needs,
//! score it on every core, write what changed (health, snapshots, alerts,
//! band changes) in transactions of a few thousand accounts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bowtie_proto::scoring as pb;
use bowtie_runtime::config::ScoringPolicySettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::{AccountId, Instant};
use futures::{StreamExt, TryStreamExt};

use super::{
    ALERT_RAISED, BAND_CHANGED, HEALTH_SCORED, SEGMENT_CHANGED, Scoring, StoredModel, card_for,
    inputs_of, model_profile, poisoned,
};
use crate::convert;
use crate::domain::cells::{Aggregates, day_of};
use crate::domain::{self, AlertId, Cutoffs, Trigger, ValueFacts};
use crate::model;
use crate::storage::{
    self, Alert, HealthRow, PreviousHealth, Profile, Scope, Snapshot, StoredScorecard,
};

/// Queued accounts rescored per read (an id list).
const CHUNK: usize = 5_000;
/// Accounts read per key range by a full recomputation.
const RANGE: usize = 10_000;
/// Changed health rows written per transaction.
const WRITE_CHUNK: usize = 5_000;
/// Write transactions of a recomputation in flight at once.
const WRITERS: usize = 4;

impl Scoring {
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
        let now = Instant::now();
        let started = std::time::Instant::now();
        let today = day_of(now);
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
            self.inner.cells.read(conn, scope, w),
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
        let ids: Vec<AccountId> = profiles.iter().map(|p| p.account_id).collect();
        let cutoffs = *self.inner.cutoffs.read().map_err(|_| poisoned())?;
        let round = Round {
            now,
            policy: self.inner.policy.clone(),
            model: self.model(),
            cutoffs,
            cards,
            aggs: self.inner.cells.fold(&read, &ids, w)?,
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
    async fn write_chunk(&self, now: Instant, chunk: Vec<Outcome>) -> Result<(), Error> {
        self.inner
            .store
            .write(None, move |tx| {
                Box::pin(async move {
                    let alerts: Vec<&Alert> = chunk.iter().flat_map(|o| &o.alerts).collect();
                    let raised = storage::insert_alerts(tx.conn(), &alerts).await?;
                    for o in &chunk {
                        for alert in &o.alerts {
                            if raised.contains(&alert.id) {
                                tx.emit(NewEvent::new(
                                    "alert",
                                    alert.id.to_string(),
                                    ALERT_RAISED,
                                    &convert::alert_to_pb(alert),
                                ));
                            }
                        }
                        if o.band_changed {
                            tx.emit(NewEvent::new(
                                "account",
                                o.row.account_id.to_string(),
                                BAND_CHANGED,
                                &o.health,
                            ));
                        } else if o.rescored {
                            tx.emit(NewEvent::new(
                                "account",
                                o.row.account_id.to_string(),
                                HEALTH_SCORED,
                                &o.health,
                            ));
                        }
                        if let Some(change) = &o.segment_change {
                            tx.emit(NewEvent::new(
                                "account",
                                o.row.account_id.to_string(),
                                SEGMENT_CHANGED,
                                change,
                            ));
                        }
                    }
                    let changed: Vec<&HealthRow> =
                        chunk.iter().filter(|o| o.changed).map(|o| &o.row).collect();
                    storage::save_health(tx.conn(), &changed, now).await?;
                    let snapshots: Vec<&Snapshot> =
                        chunk.iter().flat_map(|o| &o.snapshots).collect();
                    storage::save_snapshots(tx.conn(), &snapshots).await
                })
            })
            .await
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

    /// Recomputes every account (value cutoffs first), a key range of
    /// accounts at a time; returns how many got a score.
    pub async fn recompute_all(&self) -> Result<usize, Error> {
        self.inner
            .full_rounds
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _turn = self.inner.rescoring.lock().await;
        // Every account is read after this point: what was queued is
        // covered, unless the round fails, when it is queued again.
        let queued: Vec<AccountId> = match self.inner.dirty.lock() {
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
        self.inner.cells.trim(Instant::now())?;
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<(Instant, Vec<Outcome>)>(WRITERS);
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
        let ids: Vec<AccountId> = {
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
}

/// A scored set of accounts, before its writes.
struct Prepared {
    /// The instant of the computation.
    now: Instant,
    /// Accounts that got a score.
    scored: usize,
    /// What has to be written.
    outcomes: Vec<Outcome>,
}

/// What one account's rescoring decided.
struct Outcome {
    /// The new health.
    health: pb::AccountHealth,
    /// Its row.
    row: HealthRow,
    /// Alerts to raise (each inserted unless one is open already).
    alerts: Vec<Alert>,
    /// The band differs from the stored one.
    band_changed: bool,
    /// A first score, or a score other than the stored one (in the same
    /// band unless `band_changed`).
    rescored: bool,
    /// The tier or quadrant differs from the stored one (or there was none).
    segment_change: Option<pb::SegmentChange>,
    /// The health differs from the stored one (its time aside).
    changed: bool,
    /// Snapshots to write: today's first, and the closing one of the day
    /// the stored health was computed on.
    snapshots: Vec<Snapshot>,
}

/// Everything a rescoring of some accounts reads, for the pure computation.
struct Round {
    now: Instant,
    policy: ScoringPolicySettings,
    model: Option<Arc<StoredModel>>,
    cutoffs: Cutoffs,
    cards: HashMap<bowtie_proto::common::Segment, StoredScorecard>,
    aggs: HashMap<AccountId, Aggregates>,
    prev: HashMap<AccountId, PreviousHealth>,
    baseline: HashMap<AccountId, i32>,
    snapshotted: HashSet<AccountId>,
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
        let today = day_of(now);
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
        let tier = domain::tier(&facts, &self.cutoffs);
        let quadrant = domain::quadrant(&facts, &self.cutoffs, policy.loyalty_score);
        let valued = convert::Valued {
            scorecard_version: version,
            risk_bp,
            tier,
            quadrant,
        };
        let (health, row) = convert::account_health(p, &h, valued, now);
        let prev = self.prev.get(&p.account_id);
        let before = prev.map(|b| Trigger {
            score: b.score,
            band: b.band,
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
        .map(|kind| Alert {
            id: AlertId::generate(),
            account_id: p.account_id,
            kind,
            state: pb::AlertState::Open,
            message: domain::alert_message(kind, after, base),
            score: h.score,
            risk_bp: risk_bp.unwrap_or(0),
            version: 1,
            note: String::new(),
            created_at: now,
            updated_at: now,
        })
        .collect();
        let changed = prev.is_none_or(|b| b.body != row.body);
        let snapshots = snapshots_for(
            p.account_id,
            prev,
            self.snapshotted.contains(&p.account_id),
            today,
            (h.score, h.band),
        );
        let segment_change = segment_change(prev, &row, h.score, now);
        Some(Outcome {
            health,
            band_changed: before.is_some_and(|b| b.band != h.band),
            rescored: before.is_none_or(|b| b.score != h.score),
            segment_change,
            changed,
            snapshots,
            alerts,
            row,
        })
    }
}

/// The `segment.changed` payload of a rescoring that stored `row` after
/// `prev`: `None` when the tier and quadrant stayed as they were.
fn segment_change(
    prev: Option<&PreviousHealth>,
    row: &HealthRow,
    score: i32,
    now: Instant,
) -> Option<pb::SegmentChange> {
    let (tier_before, quadrant_before) = prev
        .map_or((pb::Tier::Unspecified, pb::Quadrant::Unspecified), |b| {
            (b.tier, b.quadrant)
        });
    if (tier_before, quadrant_before) == (row.tier, row.quadrant) {
        return None;
    }
    Some(pb::SegmentChange {
        account_id: row.account_id.to_string(),
        tier_before: tier_before as i32,
        tier_after: row.tier as i32,
        quadrant_before: quadrant_before as i32,
        quadrant_after: row.quadrant as i32,
        mrr_minor_units: row.mrr.get(),
        score,
        compute_time: Some(now.to_timestamp()),
    })
}

/// The snapshots an account's rescoring on `today` writes, given its stored
/// health (`prev`) and whether today has a snapshot.
///
/// A day's snapshot is written by its first rescoring and closed with the
/// day's last score by the first rescoring of a later day: the stored health
/// is that last score (reads take it from there until then). So an account
/// is snapshotted at most twice a day, however often its score moves.
fn snapshots_for(
    account_id: AccountId,
    prev: Option<&PreviousHealth>,
    snapshotted_today: bool,
    today: i64,
    (score, band): (i32, pb::Band),
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

#[cfg(test)]
mod tests {
    use super::*;
    use pb::Band;

    fn stored(day: i64, score: i32) -> PreviousHealth {
        PreviousHealth {
            score,
            band: Band::Yellow,
            risk_bp: None,
            tier: pb::Tier::General,
            quadrant: pb::Quadrant::C,
            body: Vec::new(),
            day,
        }
    }

    fn snap(day: i64, score: i32, band: Band) -> Snapshot {
        Snapshot {
            account_id: AccountId::default(),
            day,
            score,
            band,
        }
    }

    /// The snapshots of a rescoring on day 100 of an account stored as `prev`.
    fn on_day_100(
        prev: Option<&PreviousHealth>,
        snapshotted_today: bool,
        now: (i32, Band),
    ) -> Vec<Snapshot> {
        snapshots_for(AccountId::default(), prev, snapshotted_today, 100, now)
    }

    #[test]
    fn a_first_rescoring_writes_today_s_snapshot() {
        let out = on_day_100(None, false, (61, Band::Yellow));
        assert_eq!(out, [snap(100, 61, Band::Yellow)]);
    }

    #[test]
    fn later_rescorings_of_the_same_day_write_no_snapshot() {
        let prev = stored(100, 61);
        assert!(on_day_100(Some(&prev), true, (40, Band::Red)).is_empty());
    }

    #[test]
    fn the_first_rescoring_of_a_new_day_closes_the_last_day_with_its_last_score() {
        // Computed last on day 97 at 55 (day 97's snapshot may hold an
        // earlier score of that day); today is 100.
        let prev = stored(97, 55);
        let out = on_day_100(Some(&prev), false, (48, Band::Green));
        assert_eq!(
            out,
            [snap(97, 55, Band::Yellow), snap(100, 48, Band::Green)]
        );
    }

    #[test]
    fn a_day_whose_snapshot_was_lost_is_written_again_without_a_closing_one() {
        // Stored health computed today but today's snapshot missing.
        let prev = stored(100, 55);
        let out = on_day_100(Some(&prev), false, (48, Band::Green));
        assert_eq!(out, [snap(100, 48, Band::Green)]);
    }

    fn row(tier: pb::Tier, quadrant: pb::Quadrant) -> HealthRow {
        HealthRow {
            account_id: AccountId::default(),
            segment: bowtie_proto::common::Segment::Smb,
            score: 40,
            band: Band::Red,
            risk_bp: None,
            tier,
            quadrant,
            mrr: bowtie_runtime::Minor(250_000),
            body: Vec::new(),
        }
    }

    #[test]
    fn a_rescoring_that_keeps_tier_and_quadrant_publishes_no_segment_change() {
        let prev = stored(100, 61);
        let same = row(pb::Tier::General, pb::Quadrant::C);
        assert_eq!(
            segment_change(Some(&prev), &same, 40, Instant::from_micros(0)),
            None
        );
    }

    #[test]
    fn a_new_quadrant_publishes_both_sides_of_the_change() {
        let prev = stored(100, 61);
        let moved = row(pb::Tier::General, pb::Quadrant::D);
        let change = segment_change(Some(&prev), &moved, 40, Instant::from_micros(0));
        assert_eq!(
            change.map(|c| (
                c.tier_before,
                c.tier_after,
                c.quadrant_before,
                c.quadrant_after,
                c.mrr_minor_units,
                c.score
            )),
            Some((
                pb::Tier::General as i32,
                pb::Tier::General as i32,
                pb::Quadrant::C as i32,
                pb::Quadrant::D as i32,
                250_000,
                40
            ))
        );
    }

    #[test]
    fn a_first_score_enters_its_tier_from_unspecified() {
        let first = row(pb::Tier::Diamond, pb::Quadrant::B);
        let change = segment_change(None, &first, 40, Instant::from_micros(0));
        assert_eq!(
            change.map(|c| (c.tier_before, c.tier_after, c.quadrant_before)),
            Some((
                pb::Tier::Unspecified as i32,
                pb::Tier::Diamond as i32,
                pb::Quadrant::Unspecified as i32
            ))
        );
    }
}
