//! The churn model: training it on the system's own history (labels from
//! the revenue feed's churns, features folded from the day cells as of the
//! instant each account is seen at), persisting it, and answering an
//! account's churn risk with the features that raise it most.

use std::collections::HashMap;
use std::sync::Arc;

use bowtie_proto::scoring as pb;
use bowtie_runtime::error::Error;
use bowtie_runtime::{AccountId, Instant};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Scoring, card_for, inputs_of, model_profile, poisoned};
use crate::convert;
use crate::domain::DAY;
use crate::domain::cells::{WINDOW_DAYS, day_of, fold};
use crate::model::{self, Metrics, Model};
use crate::storage::{self, Profile, ReadCells, Scope};

/// A trained model with its metrics, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredModel {
    /// Model id (UUIDv7).
    pub id: String,
    /// Training time (microseconds since the epoch, as persisted).
    pub trained_at: Instant,
    /// Horizon in days.
    pub horizon_days: i32,
    /// The fitted model.
    pub model: Model,
    /// Hold-out metrics.
    pub metrics: Metrics,
    /// The instant the history was labelled as of (absent in models stored
    /// before it was recorded, which used their training time).
    #[serde(default)]
    pub reference_at: Option<Instant>,
    /// Where `reference_at` came from.
    #[serde(default)]
    pub reference_source: ReferenceSource,
}

/// Where a model's reference instant came from (docs/design.md section 3,
/// "The reference instant").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReferenceSource {
    /// Not recorded (a model stored before the source was).
    #[default]
    Unrecorded,
    /// The newest event in the data.
    LastEvent,
    /// Asked for by the caller.
    Requested,
    /// The wall clock: the newest event is not in the past.
    WallClock,
}

/// The reference instant: `requested` when given, else the newest of
/// `events` that is before `now`, else (no event in the past) `now`.
pub fn reference_instant(
    requested: Option<Instant>,
    events: impl IntoIterator<Item = Instant>,
    now: Instant,
) -> (Instant, ReferenceSource) {
    if let Some(at) = requested {
        return (at, ReferenceSource::Requested);
    }
    match events.into_iter().filter(|e| *e <= now).max() {
        Some(last) if last < now => (last, ReferenceSource::LastEvent),
        _ => (now, ReferenceSource::WallClock),
    }
}

/// The instants of `p`'s own events that the reference instant may be.
fn profile_events(p: &Profile) -> impl Iterator<Item = Instant> + '_ {
    [
        p.mrr_at,
        p.first_paid_at,
        p.churned_at,
        p.onboarding_at,
        p.first_value_at,
    ]
    .into_iter()
    .flatten()
}

/// The newest stored model, if one was trained.
pub(super) async fn load_model<C: ConnectionTrait>(
    conn: &C,
) -> Result<Option<Arc<StoredModel>>, Error> {
    match storage::latest_model(conn).await? {
        Some(body) => Ok(Some(Arc::new(
            serde_json::from_str::<StoredModel>(&body)
                .map_err(|e| Error::Internal(anyhow::anyhow!("stored model: {e}")))?,
        ))),
        None => Ok(None),
    }
}

impl Scoring {
    /// Trains the churn model on the system's own history and persists it.
    ///
    /// Labels: an account that paid and lost all revenue is a churner, seen
    /// as of half a horizon before its churn; an account paying for at least
    /// a horizon that did not churn is a stayer, seen as of one horizon ago.
    /// Features are computed as of those instants from the signal history
    /// (MRR is the last positive MRR), so the label never leaks into them.
    ///
    /// The history is seen as of `reference` when given (validated as not in
    /// the future), else as of its newest event (docs/design.md section 3,
    /// "The reference instant").
    pub async fn train(
        &self,
        seed: u64,
        reference: Option<Instant>,
    ) -> Result<pb::ModelInfo, Error> {
        let policy = &self.inner.policy;
        let horizon = i64::from(policy.churn_horizon_days.max(1)) * DAY;
        let trained_at = Instant::now();
        let conn = self.inner.store.db().reader();
        let profiles = storage::load_profiles(conn, Scope::All).await?;
        let newest_signal = storage::newest_signal(conn).await?;
        let (reference_at, source) = reference_instant(
            reference,
            profiles
                .iter()
                .flat_map(profile_events)
                .chain(newest_signal),
            trained_at,
        );
        let cards = storage::scorecards(conn).await?;
        let mut by_day: HashMap<i64, Vec<(&Profile, bool)>> = HashMap::new();
        for p in &profiles {
            let Some(paid) = p.first_paid_at else {
                continue;
            };
            let (at, churned) = match p.churned_at {
                Some(c) if c <= reference_at => (c.plus_micros(-horizon / 2), true),
                _ if paid <= reference_at.plus_micros(-horizon) => {
                    (reference_at.plus_micros(-horizon), false)
                }
                _ => continue,
            };
            by_day.entry(day_of(at)).or_default().push((p, churned));
        }
        let mut days: Vec<i64> = by_day.keys().copied().collect();
        days.sort_unstable();
        // The cells of the days any labelled account is seen as of (read
        // once), each account's folded as of its own instant, exactly as
        // scoring folds them.
        let history = match (days.first(), days.last()) {
            (Some(first), Some(last)) => {
                self.inner
                    .cells
                    .history(conn, first - WINDOW_DAYS, *last)
                    .await?
            }
            _ => ReadCells::new(),
        };
        let mut x = Vec::new();
        let mut y = Vec::new();
        for day in days {
            let group = &by_day[&day];
            let at = Instant::EPOCH.plus_days(day + 1).plus_micros(-1);
            let w = self.windows(at);
            for (p, churned) in group {
                let agg = history
                    .get(&p.account_id)
                    .and_then(|cells| fold(cells, w))
                    .unwrap_or_default();
                let (card, _) = card_for(&cards, p.segment);
                let inputs = inputs_of(&agg, p, at);
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
            trained_at,
            horizon_days: policy.churn_horizon_days,
            model: fitted,
            metrics,
            reference_at: Some(reference_at),
            reference_source: source,
        };
        let body = serde_json::to_string(&stored)
            .map_err(|e| Error::Internal(anyhow::anyhow!("encoding the model: {e}")))?;
        let (id, at) = (stored.id.clone(), stored.trained_at);
        self.inner
            .store
            .write(None, move |tx| {
                Box::pin(async move { storage::save_model(tx.conn(), &id, at, &body).await })
            })
            .await?;
        let info = convert::model_info(&stored);
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
        self.model()
            .map(|m| convert::model_info(&m))
            .ok_or_else(|| {
                Error::FailedPrecondition("no churn model was trained yet; call TrainModel".into())
            })
    }

    /// GetChurnRisk: probability and the features that raise it most.
    pub async fn churn_risk(&self, id: AccountId) -> Result<pb::GetChurnRiskResponse, Error> {
        let m = self.model().ok_or_else(|| {
            Error::FailedPrecondition("no churn model was trained yet; call TrainModel".into())
        })?;
        let conn = self.inner.store.db().reader();
        let p = storage::get_profile(conn, id)
            .await?
            .ok_or_else(|| Error::not_found("account", id.to_string()))?;
        let now = Instant::now();
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
        Ok(convert::churn_risk_to_pb(
            id,
            &m,
            m.model.predict(&x),
            m.model.drivers(&x),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000;

    fn at(micros: i64) -> Instant {
        Instant::from_micros(micros)
    }

    #[test]
    fn the_reference_is_the_newest_past_event_unless_one_is_asked_for() {
        let events = [at(10), at(NOW - 5), at(300)];
        assert_eq!(
            reference_instant(None, events, at(NOW)),
            (at(NOW - 5), ReferenceSource::LastEvent)
        );
        assert_eq!(
            reference_instant(Some(at(42)), events, at(NOW)),
            (at(42), ReferenceSource::Requested)
        );
    }

    #[test]
    fn events_after_now_are_not_history_and_none_in_the_past_means_the_wall_clock() {
        assert_eq!(
            reference_instant(None, [at(NOW + 1), at(7)], at(NOW)),
            (at(7), ReferenceSource::LastEvent)
        );
        assert_eq!(
            reference_instant(None, [at(NOW), at(NOW + 9)], at(NOW)),
            (at(NOW), ReferenceSource::WallClock)
        );
        assert_eq!(
            reference_instant(None, [], at(NOW)),
            (at(NOW), ReferenceSource::WallClock)
        );
    }
}
