//! Alerts: listing them newest first, and moving one along its life
//! (open -> acknowledged -> resolved) at the version the caller read. A
//! resolved alert frees its account and kind for a new one.

use bowtie_proto::scoring as pb;
use bowtie_runtime::AccountId;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::paging::Page;
use uuid::Uuid;

use super::{ALERT_ACKNOWLEDGED, ALERT_RESOLVED, Scoring, tx_now};
use crate::convert;
use crate::domain::AlertId;
use crate::storage;

impl Scoring {
    /// ListAlerts: newest first, the page token is the last id returned.
    pub async fn list_alerts(
        &self,
        state: Option<pb::AlertState>,
        kind: Option<pb::AlertKind>,
        account: Option<AccountId>,
        page: &Page,
    ) -> Result<pb::ListAlertsResponse, Error> {
        let after = match &page.after {
            None => None,
            Some(a) => Some(AlertId(Uuid::parse_str(a).map_err(|_| {
                Error::invalid("page.page_token", "is not a token issued for this query")
            })?)),
        };
        let rows = storage::list_alerts(
            self.inner.store.db().reader(),
            state,
            kind,
            account,
            after,
            page.fetch_limit(),
        )
        .await?;
        let (rows, page) = page.finish(rows, |a| a.id.to_string());
        Ok(convert::alerts_page(&rows, page))
    }

    /// Acknowledges or resolves an alert at `expected_version`.
    pub async fn transition_alert(
        &self,
        id: AlertId,
        expected_version: i64,
        to: pb::AlertState,
        note: String,
    ) -> Result<pb::Alert, Error> {
        let app = self.clone();
        self.inner
            .store
            .write(None, move |tx| {
                Box::pin(async move {
                    let mut alert = storage::get_alert(tx.conn(), id)
                        .await?
                        .ok_or_else(|| Error::not_found("alert", id.to_string()))?;
                    app.may_write_accounts(tx.conn(), &[alert.account_id])
                        .await?;
                    if alert.version != expected_version {
                        return Err(Error::Aborted(format!(
                            "the alert is at version {}, not {expected_version}; re-read and retry",
                            alert.version
                        )));
                    }
                    let state = alert.state;
                    let allowed = match to {
                        pb::AlertState::Acknowledged => state == pb::AlertState::Open,
                        pb::AlertState::Resolved => {
                            matches!(state, pb::AlertState::Open | pb::AlertState::Acknowledged)
                        }
                        _ => false,
                    };
                    if !allowed {
                        return Err(Error::FailedPrecondition(format!(
                            "the alert is {}; it cannot become {}",
                            state.as_str_name(),
                            to.as_str_name()
                        )));
                    }
                    alert.state = to;
                    alert.version += 1;
                    if !note.is_empty() {
                        alert.note = note;
                    }
                    alert.updated_at = tx_now(tx);
                    storage::update_alert(tx.conn(), &alert).await?;
                    let event = if to == pb::AlertState::Resolved {
                        ALERT_RESOLVED
                    } else {
                        ALERT_ACKNOWLEDGED
                    };
                    let alert = convert::alert_to_pb(&alert);
                    tx.emit(NewEvent::new("alert", alert.id.clone(), event, &alert));
                    Ok(alert)
                })
            })
            .await
    }
}
