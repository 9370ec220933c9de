//! The backfill of `account_people` (docs/design.md 9.3): an account scoring
//! knows whose people row is missing (created before the table existed, or
//! whose feed events were applied before it did) is invisible to
//! `mine=true`. At start a background task lists the accounts lacking a row
//! and, if there are any, pages through the accounts service's accounts
//! (as the service, with its peer key), a page per call and a short
//! transaction per page, filling only the rows still missing: a row the feed
//! wrote meanwhile is kept, so the backfill never overwrites a fresher
//! answer and never holds a lock a write waits long for. A failure (the
//! accounts service not up yet) retries with a growing pause until it
//! succeeds or the service stops.

use std::collections::HashSet;
use std::time::Duration;

use bowtie_runtime::AccountId;
use bowtie_runtime::error::Error;
use bowtie_runtime::shutdown::Shutdown;
use uuid::Uuid;

use super::{Scoring, tx_now};
use crate::storage;

/// Accounts asked for per call.
const PAGE: i32 = 1000;

impl Scoring {
    /// Fills the people rows the accounts scoring knows lack, from the
    /// accounts service; returns how many it filled. `lacking` holds the
    /// accounts still to fill: read from storage on the first try, then
    /// kept across retries (each id leaves it once its row is written), so
    /// a retry while the accounts service is unreachable costs no scan.
    pub async fn backfill_people(
        &self,
        lacking: &mut Option<HashSet<AccountId>>,
    ) -> Result<usize, Error> {
        let lacking = match lacking {
            Some(lacking) => lacking,
            None => {
                let reader = self.inner.store.db().reader();
                lacking.insert(storage::lacking_people(reader).await?.into_iter().collect())
            }
        };
        let mut filled = 0;
        let mut token = String::new();
        while !lacking.is_empty() {
            let (accounts, next) = self.inner.accounts.page(&token, PAGE).await?;
            let rows: Vec<(AccountId, String, String)> = accounts
                .into_iter()
                .filter_map(|a| {
                    let id = AccountId(Uuid::parse_str(&a.id).ok()?);
                    lacking.contains(&id).then_some((id, a.csm, a.owner))
                })
                .collect();
            if !rows.is_empty() {
                let ids: Vec<AccountId> = rows.iter().map(|(id, _, _)| *id).collect();
                self.inner
                    .store
                    .write(None, move |tx| {
                        Box::pin(
                            async move { storage::fill_people(tx.conn(), &rows, tx_now(tx)).await },
                        )
                    })
                    .await?;
                filled += ids.len();
                for id in &ids {
                    lacking.remove(id);
                }
            }
            if next.is_empty() {
                break;
            }
            token = next;
        }
        Ok(filled)
    }

    /// Runs [`Self::backfill_people`] in the background until it succeeds
    /// once or `shutdown` is triggered.
    pub fn spawn_people_backfill(&self, shutdown: Shutdown) {
        let app = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            let mut lacking = None;
            loop {
                let outcome = tokio::select! {
                    () = shutdown.wait() => return,
                    outcome = app.backfill_people(&mut lacking) => outcome,
                };
                match outcome {
                    Ok(filled) => {
                        if filled > 0 {
                            tracing::info!(
                                filled,
                                "filled the people of accounts the feed had not brought"
                            );
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "backfilling account people failed; retrying");
                        tokio::select! {
                            () = shutdown.wait() => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }
}
