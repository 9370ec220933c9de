//! Signal ingest: a batch is checked signal by signal, its accounts
//! confirmed to exist (from memory, else by asking the accounts service),
//! and everything accepted is written in one transaction: the signals (a
//! replayed key inserts nothing), their day cells, and first value for the
//! accounts that reached it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bowtie_proto::scoring as pb;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::store::Tx;
use bowtie_runtime::{AccountId, Instant};
use futures::StreamExt;

use super::{FIRST_VALUE_REACHED, SIGNAL_RECORDED, Scoring, poisoned, tx_now};
use crate::convert::{self, MAX_BATCH, Rejection};
use crate::storage::{self, NewSignal, Profile, Scope};

impl Scoring {
    /// Which of `ids` exist: known ones from memory, the rest asked of the
    /// accounts service once each (concurrently). UNAVAILABLE when it cannot
    /// be reached.
    async fn existing(
        &self,
        ids: &HashSet<AccountId>,
    ) -> Result<(HashSet<AccountId>, Vec<AccountId>), Error> {
        let unknown: Vec<AccountId> = {
            let known = self.inner.known.read().map_err(|_| poisoned())?;
            ids.iter()
                .filter(|id| !known.contains(id))
                .copied()
                .collect()
        };
        let mut missing = HashSet::new();
        let mut found = Vec::new();
        // At most 32 questions in flight, however many ids a batch names.
        let answers: Vec<(AccountId, Result<_, Error>)> = futures::stream::iter(unknown)
            .map(|id| async move { (id, self.inner.accounts.get(id.uuid()).await) })
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
        let now = Instant::now();
        let tolerance = self.inner.policy.future_tolerance_seconds.max(0) * 1_000_000;
        let parsed: Vec<Result<NewSignal, Rejection>> = signals
            .iter()
            .map(|s| convert::signal(s, now, tolerance))
            .collect();
        let ids: HashSet<AccountId> = parsed
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
        let cells = self.inner.cells.clone();
        let accepted = Arc::new(accepted);
        let batch = accepted.clone();
        let app = self.clone();
        let response = self
            .inner
            .store
            .write(None, move |tx| {
                Box::pin(async move {
                    // A batch naming an account outside the caller's book
                    // is refused whole (docs/design.md 9.3).
                    let accounts: Vec<AccountId> =
                        batch.iter().map(|(_, s)| s.account_id).collect();
                    app.may_write_accounts(tx.conn(), &accounts).await?;
                    let signals: Vec<NewSignal> = batch.iter().map(|(_, s)| s.clone()).collect();
                    // The profiles first value may change are locked before
                    // this transaction writes any row, in account order: a
                    // feed consumer holding one of them then never waits for
                    // a row this batch wrote while the batch waits for it.
                    let mut reaching: Vec<AccountId> = batch
                        .iter()
                        .filter(|(_, s)| s.kind == pb::SignalType::FirstValueReached)
                        .map(|(_, s)| s.account_id)
                        .collect();
                    reaching.sort_unstable();
                    reaching.dedup();
                    for id in reaching {
                        storage::lock_profile(tx.conn(), id).await?;
                    }
                    let now = tx_now(tx);
                    storage::ensure_profiles(tx.conn(), &found_for_tx, now).await?;
                    let inserted = storage::insert_signals(tx.conn(), &signals, now).await?;
                    let mut claimed: HashSet<&str> = HashSet::with_capacity(inserted.len());
                    let mut out = Vec::with_capacity(batch.len());
                    let mut fresh_signals: Vec<&NewSignal> = Vec::with_capacity(batch.len());
                    let mut first_values: Vec<(AccountId, Instant)> = Vec::new();
                    for (i, s) in batch.iter() {
                        let fresh = inserted.contains(&s.key) && claimed.insert(&s.key);
                        if !fresh {
                            out.push(convert::signal_result(*i, pb::SignalOutcome::Duplicate));
                            continue;
                        }
                        fresh_signals.push(s);
                        if s.kind == pb::SignalType::FirstValueReached {
                            first_values.push((s.account_id, s.occurred_at));
                        }
                        if matches!(
                            s.kind,
                            pb::SignalType::Complaint | pb::SignalType::ComplaintResolved
                        ) {
                            tx.emit(NewEvent::new(
                                "account",
                                s.account_id.to_string(),
                                SIGNAL_RECORDED,
                                &pb::Signal {
                                    idempotency_key: s.key.clone(),
                                    account_id: s.account_id.to_string(),
                                    r#type: s.kind as i32,
                                    value: s.value,
                                    occurred_at: Some(s.occurred_at.to_timestamp()),
                                },
                            ));
                        }
                        out.push(convert::signal_result(*i, pb::SignalOutcome::Recorded));
                    }
                    cells.record(tx.conn(), &fresh_signals).await?;
                    reach_first_values(tx, &first_values, true).await?;
                    Ok(convert::batch_results(out))
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
        let touched: HashSet<AccountId> = recorded.iter().map(|s| s.account_id).collect();
        // Committed: the day cells in memory follow, before the worker is
        // told to rescore.
        self.inner.cells.committed(recorded)?;
        self.remember(found)?;
        self.mark_dirty(touched);
        for r in response.results {
            let index = r.index as usize;
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(r);
            }
        }
        Ok(convert::batch_response(
            results.into_iter().flatten().collect(),
        ))
    }
}

/// Records first value inside `tx` for each `(account, time)` whose account
/// has none yet (or an earlier one); announces `first_value.reached` for the
/// accounts that had none when `announce`. Reads and writes the profiles a
/// statement for all of them.
pub async fn reach_first_values(
    tx: &mut Tx,
    reached: &[(AccountId, Instant)],
    announce: bool,
) -> Result<(), Error> {
    // Each account's earliest time, in account order (like every other
    // batch that locks profiles).
    let mut earliest = reached.to_vec();
    earliest.sort_unstable();
    earliest.dedup_by_key(|(id, _)| *id);
    let ids: Vec<AccountId> = earliest.iter().map(|(id, _)| *id).collect();
    for id in &ids {
        storage::lock_profile(tx.conn(), *id).await?;
    }
    let mut profiles: HashMap<AccountId, Profile> =
        storage::load_profiles(tx.conn(), Scope::Ids(&ids))
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
            let days = p.onboarding_at.map(|s| at.days_since(s).max(0) as i32);
            tx.emit(NewEvent::new(
                "account",
                id.to_string(),
                FIRST_VALUE_REACHED,
                &convert::first_value_reached(id, at, days),
            ));
        }
        changed.push(id);
    }
    let changed: Vec<&Profile> = changed.iter().filter_map(|id| profiles.get(id)).collect();
    storage::save_profiles(tx.conn(), &changed, tx_now(tx)).await
}
