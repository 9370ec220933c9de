//! Scorecards: each segment's weights and thresholds, versioned. An update
//! names the version it replaces (a stale one is ABORTED), keeps every
//! version, and rescores the accounts the scorecard applies to.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring as pb;
use bowtie_runtime::error::Error;
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::paging::Page;

use super::Scoring;
use crate::convert;
use crate::domain::Scorecard;
use crate::storage;

impl Scoring {
    /// GetScorecard.
    pub async fn scorecard(&self, segment: Segment) -> Result<pb::Scorecard, Error> {
        let cards = storage::scorecards(self.inner.store.db().reader()).await?;
        Ok(match cards.get(&(segment as i32)) {
            Some(stored) => convert::stored_scorecard_to_pb(segment, stored),
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
            segment,
            before,
            page.fetch_limit(),
        )
        .await?;
        let cards = rows
            .iter()
            .map(|stored| convert::stored_scorecard_to_pb(segment, stored))
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
                    let current = cards.get(&(segment as i32)).map_or(0, |c| c.version);
                    if current != expected_version {
                        return Err(Error::Aborted(format!(
                            "the scorecard is at version {current}, not {expected_version}; re-read and retry"
                        )));
                    }
                    let version = current + 1;
                    storage::save_scorecard(tx.conn(), segment, &card, version, tx.now())
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
            storage::ids_in_segment(reader, segment).await?
        };
        self.mark_dirty(ids);
        Ok(response)
    }
}
