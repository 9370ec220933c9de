//! Reading health: an account's stored score with its 7- and 30-day
//! deltas, pages of scores (ListHealth, ListAtRisk), and an account's daily
//! snapshots.

use bowtie_proto::common::PageResponse;
use bowtie_proto::scoring as pb;
use bowtie_runtime::error::Error;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate::now_micros;
use uuid::Uuid;

use super::Scoring;
use crate::convert;
use crate::domain::cells::day_of;
use crate::storage::{self, HealthFilter, Scope};

impl Scoring {
    /// GetHealth: the stored health with deltas from the snapshots.
    pub async fn get_health(&self, id: Uuid) -> Result<pb::AccountHealth, Error> {
        let conn = self.inner.store.db().reader();
        let stored = storage::get_health(conn, id)
            .await?
            .ok_or_else(|| Error::not_found("health of account", id.to_string()))?;
        let mut h = convert::stored_health(&stored)?;
        let today = day_of(now_micros());
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
        filter: &HealthFilter,
        page: &Page,
    ) -> Result<(Vec<pb::AccountHealth>, PageResponse), Error> {
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
        .await?
        .iter()
        .map(convert::stored_health)
        .collect::<Result<Vec<_>, Error>>()?;
        Ok(page.finish(rows, |h| format!("{}:{}", h.score, h.account_id)))
    }

    /// GetHealthHistory: the snapshots of the last `days` days.
    pub async fn history(&self, id: Uuid, days: i64) -> Result<Vec<pb::HealthSnapshot>, Error> {
        let today = day_of(now_micros());
        Ok(
            storage::history(self.inner.store.db().reader(), id, today - days + 1)
                .await?
                .into_iter()
                .map(|d| convert::snapshot_to_pb(&d))
                .collect(),
        )
    }
}
