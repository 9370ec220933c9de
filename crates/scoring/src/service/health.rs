//! Reading health: an account's stored score with its 7- and 30-day
//! deltas, pages of scores (ListHealth, ListAtRisk), and an account's daily
//! snapshots.

use bowtie_proto::common::PageResponse;
use bowtie_proto::scoring as pb;
use bowtie_runtime::error::Error;
use bowtie_runtime::paging::Page;
use bowtie_runtime::{AccountId, Instant};
use uuid::Uuid;

use super::Scoring;
use crate::convert;
use crate::domain::cells::day_of;
use crate::storage::{self, HealthFilter, Scope};

impl Scoring {
    /// GetHealth: the stored health with deltas from the snapshots.
    pub async fn get_health(&self, id: AccountId) -> Result<pb::GetHealthResponse, Error> {
        let conn = self.inner.store.db().reader();
        let stored = storage::get_health(conn, id)
            .await?
            .ok_or_else(|| Error::not_found("health of account", id.to_string()))?;
        let health = convert::stored_health(&stored)?;
        let today = day_of(Instant::now());
        let ids = [id];
        let d7 = storage::scores_at(conn, Scope::Ids(&ids), today - 7).await?;
        let d30 = storage::scores_at(conn, Scope::Ids(&ids), today - 30).await?;
        Ok(convert::get_health(
            health,
            d7.get(&id).copied(),
            d30.get(&id).copied(),
        ))
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
                    AccountId(Uuid::parse_str(id).map_err(|_| bad())?),
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
    pub async fn history(
        &self,
        id: AccountId,
        days: i64,
    ) -> Result<pb::GetHealthHistoryResponse, Error> {
        let today = day_of(Instant::now());
        let days = storage::history(self.inner.store.db().reader(), id, today - days + 1).await?;
        Ok(convert::health_history(&days))
    }
}
