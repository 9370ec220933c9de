//! Scorecards: each segment's weights and thresholds, versioned. An update
//! names the version it replaces (a stale one is ABORTED), keeps every
//! version, and rescores the accounts the scorecard applies to.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring as pb;
use bowtie_runtime::error::Error;
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::paging::Page;

use super::{Scoring, tx_now};
use crate::convert;
use crate::domain::{Scorecard, ScorecardVersion};
use crate::storage::{self, StoredScorecard};

impl Scoring {
    /// GetScorecard.
    pub async fn scorecard(&self, segment: Segment) -> Result<pb::GetScorecardResponse, Error> {
        let cards = storage::scorecards(self.inner.store.db().reader()).await?;
        let built_in = StoredScorecard::built_in();
        Ok(convert::get_scorecard(
            segment,
            cards.get(&segment).unwrap_or(&built_in),
        ))
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
            Some(token) => Some(ScorecardVersion(token.parse::<i64>().map_err(|_| {
                Error::invalid("page.page_token", "is not a token issued for this query")
            })?)),
        };
        let rows = storage::scorecard_versions(
            self.inner.store.db().reader(),
            segment,
            before,
            page.fetch_limit(),
        )
        .await?;
        let (rows, page) = page.finish(rows, |c| c.version.0.to_string());
        Ok(convert::scorecard_versions(segment, &rows, page))
    }

    /// UpdateScorecard: checks the expected version, stores the next one and
    /// rescores the accounts it applies to.
    pub async fn update_scorecard(
        &self,
        segment: Segment,
        card: Scorecard,
        expected_version: ScorecardVersion,
        idem: Option<Idempotency>,
    ) -> Result<pb::UpdateScorecardResponse, Error> {
        let response = self
            .inner
            .store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let cards = storage::scorecards(tx.conn()).await?;
                    let current = cards
                        .get(&segment)
                        .map_or(ScorecardVersion(0), |c| c.version);
                    if current != expected_version {
                        return Err(Error::Aborted(format!(
                            "the scorecard is at version {}, not {}; re-read and retry",
                            current.0, expected_version.0
                        )));
                    }
                    let stored = StoredScorecard {
                        card,
                        version: current.next(),
                        updated_at: tx_now(tx),
                    };
                    storage::save_scorecard(
                        tx.conn(),
                        segment,
                        &stored.card,
                        stored.version,
                        stored.updated_at,
                    )
                    .await?;
                    Ok(convert::update_scorecard(segment, &stored))
                })
            })
            .await?;
        let reader = self.inner.store.db().reader();
        let ids = if segment == Segment::Unspecified {
            storage::known_ids(reader).await?
        } else {
            storage::ids_in_segment(reader, segment).await?
        };
        self.mark_dirty(ids);
        Ok(response)
    }
}
