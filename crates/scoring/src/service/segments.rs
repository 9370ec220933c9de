//! Value segments: how the scored accounts and their MRR spread over the
//! value tiers and quadrants, and the top fifth's share of revenue.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring as pb;
use bowtie_runtime::error::Error;

use super::Scoring;
use crate::convert;
use crate::storage;

impl Scoring {
    /// GetSegments.
    pub async fn segments(
        &self,
        segment: Option<Segment>,
    ) -> Result<pb::GetSegmentsResponse, Error> {
        let rows = storage::value_rows(self.inner.store.db().reader(), segment).await?;
        Ok(convert::segments_to_pb(&rows))
    }
}
