//! Value segments: how the scored accounts and their MRR spread over the
//! value tiers and quadrants, and the top fifth's share of revenue.

use bowtie_proto::scoring as pb;
use bowtie_runtime::error::Error;

use super::Scoring;
use crate::domain;
use crate::storage::{self, ValueRow};

impl Scoring {
    /// GetSegments.
    pub async fn segments(&self, segment: Option<i32>) -> Result<pb::GetSegmentsResponse, Error> {
        let rows = storage::value_rows(self.inner.store.db().reader(), segment).await?;
        let total: i64 = rows.iter().map(|r| r.mrr.max(0)).sum();
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
            let of: Vec<&ValueRow> = rows.iter().filter(|r| r.tier == t as i32).collect();
            let mrr: i64 = of.iter().map(|r| r.mrr.max(0)).sum();
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
            let of: Vec<&ValueRow> = rows.iter().filter(|r| r.quadrant == q as i32).collect();
            let mrr: i64 = of.iter().map(|r| r.mrr.max(0)).sum();
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
            top_20_percent_share_bp: domain::top_20_share_bp(rows.iter().map(|r| r.mrr).collect()),
        })
    }
}
