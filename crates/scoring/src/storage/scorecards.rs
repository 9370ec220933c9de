//! `scorecards` and `scorecard_versions`: each segment's current scorecard
//! (weights and thresholds, as JSON) and every version it ever had.

use std::collections::HashMap;

use bowtie_proto::common::Segment;
use bowtie_runtime::Instant;
use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, execute, internal};
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entity::{scorecard, scorecard_version};
use crate::domain::{Scorecard, ScorecardVersion};

/// A stored version of a segment's scorecard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredScorecard {
    /// The weights and thresholds.
    pub card: Scorecard,
    /// Its version (1 for the first stored one).
    pub version: ScorecardVersion,
    /// When it was stored.
    pub updated_at: Instant,
}

impl StoredScorecard {
    /// The built-in scorecard, version 0, never stored.
    pub fn built_in() -> Self {
        Self {
            card: Scorecard::default(),
            version: ScorecardVersion(0),
            updated_at: Instant::EPOCH,
        }
    }

    /// A stored version from its columns.
    fn stored(body: &str, version: i64, updated_at: i64) -> Result<Self, Error> {
        Ok(Self {
            card: serde_json::from_str(body)
                .map_err(|e| corrupt(format_args!("stored scorecard: {e}")))?,
            version: ScorecardVersion(version),
            updated_at: Instant::from_micros(updated_at),
        })
    }
}

/// The current scorecards, by segment (a segment this version does not
/// know is never asked for, and left out).
pub async fn scorecards<C: ConnectionTrait>(
    conn: &C,
) -> Result<HashMap<Segment, StoredScorecard>, Error> {
    scorecard::Entity::find()
        .all(conn)
        .await?
        .into_iter()
        .filter_map(|m| {
            let segment = Segment::try_from(m.segment).ok()?;
            Some(StoredScorecard::stored(&m.body, m.version, m.updated_at).map(|s| (segment, s)))
        })
        .collect()
}

/// Stored versions of a segment's scorecard below `before` (every one when
/// `None`), newest first.
pub async fn scorecard_versions<C: ConnectionTrait>(
    conn: &C,
    segment: Segment,
    before: Option<ScorecardVersion>,
    limit: u64,
) -> Result<Vec<StoredScorecard>, Error> {
    use scorecard_version::Column as V;
    let mut find = scorecard_version::Entity::find().filter(V::Segment.eq(segment as i32));
    if let Some(before) = before {
        find = find.filter(V::Version.lt(before.0));
    }
    find.order_by_desc(V::Version)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| StoredScorecard::stored(&m.body, m.version, m.updated_at))
        .collect()
}

/// Stores version `version` of a segment's scorecard (and keeps it in the
/// version history).
pub async fn save_scorecard<C: ConnectionTrait>(
    conn: &C,
    segment: Segment,
    card: &Scorecard,
    version: ScorecardVersion,
    now: Instant,
) -> Result<(), Error> {
    use scorecard::Column as S;
    use scorecard_version::Column as V;
    let body = serde_json::to_string(card).map_err(internal)?;
    let (segment, version, now) = (segment as i32, version.0, now.micros());
    let current = Query::insert()
        .into_table(scorecard::Entity)
        .columns([S::Segment, S::Version, S::Body, S::UpdatedAt])
        .values([
            segment.into(),
            version.into(),
            body.clone().into(),
            now.into(),
        ])
        .map_err(internal)?
        .on_conflict(
            OnConflict::column(S::Segment)
                .update_columns([S::Version, S::Body, S::UpdatedAt])
                .to_owned(),
        )
        .to_owned();
    execute(conn, &current).await?;
    let kept = Query::insert()
        .into_table(scorecard_version::Entity)
        .columns([V::Segment, V::Version, V::Body, V::UpdatedAt])
        .values([segment.into(), version.into(), body.into(), now.into()])
        .map_err(internal)?
        .to_owned();
    execute(conn, &kept).await
}
