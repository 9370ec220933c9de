//! Who changed what: an account's entries in every service's audit log
//! (`ListAuditEvents`, docs/design.md section 4), merged newest first, for
//! the account page. Reading an audit log needs an admin key.

use axum::extract::State;
use bowtie_proto::common::{AuditEvent, AuditFilter, PageRequest};
use bowtie_proto::{accounts, funnel, revenue, scoring, success};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clients::Caller;
use crate::common::time;
use crate::error::{ApiError, ErrorBody};
use crate::export::{Format, FormatQuery, Report};
use crate::rest::{Path, Query};

/// The audit routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_account_changes))
}

/// One kept write that changed the account.
#[derive(Debug, Serialize, ToSchema)]
pub struct Change {
    /// When it committed.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The service that made it: accounts, funnel, revenue, scoring or success.
    pub service: String,
    /// The method, e.g. `UpdateAccount`.
    pub method: String,
    /// Who made it: the API key's name or the token's subject.
    pub principal: String,
    /// Everything the write changed, as `type:id`.
    pub targets: Vec<String>,
    /// The request's idempotency key, if any.
    pub idempotency_key: String,
    /// Hex SHA-256 of the request as received.
    pub request_digest: String,
    /// Audit event id in its service's log.
    pub id: String,
}

/// An account's changes, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountChanges {
    /// The changes, newest first.
    pub changes: Vec<Change>,
    /// Services that could not be asked (down): their changes are missing.
    pub unavailable: Vec<String>,
}

/// How many of the newest changes to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// Changes per service to read (default 20, at most 200); the answer
    /// merges them newest first.
    #[param(minimum = 0, maximum = 200)]
    limit: Option<i32>,
}

fn change(service: &str, e: AuditEvent) -> Change {
    Change {
        occurred_at: time(e.occurred_at.as_ref()),
        service: service.to_owned(),
        method: e.rpc.rsplit('/').next().unwrap_or_default().to_owned(),
        principal: e.principal,
        targets: e.targets,
        idempotency_key: e.idempotency_key,
        request_digest: e.request_digest,
        id: e.id,
    }
}

/// Who changed the account and how, from every service's audit log
/// (admin key).
#[utoipa::path(get, path = "/api/v1/accounts/{id}/changes", tag = "accounts",
    params(("id" = uuid::Uuid, Path, description = "Account id"), ChangesQuery, FormatQuery),
    responses((status = 200,
               content((AccountChanges = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_account_changes(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ChangesQuery>,
    format: Format,
) -> Result<Report<AccountChanges>, ApiError> {
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::invalid("id", "must be a UUID"));
    }
    let limit = q.limit.unwrap_or(20);
    if !(0..=200).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 0 to 200"));
    }
    let filter = Some(AuditFilter {
        account_id: id,
        ..AuditFilter::default()
    });
    let page = Some(PageRequest {
        page_size: limit,
        page_token: String::new(),
    });
    let s = &state.services;
    let (mut a, mut f, mut r, mut sc, mut su) = (
        s.accounts.clone(),
        s.funnel.clone(),
        s.revenue.clone(),
        s.scoring.clone(),
        s.success.clone(),
    );
    // One call per service, at once; each answer maps its own status.
    macro_rules! events {
        ($client:ident, $pkg:ident, $name:literal) => {
            async {
                $client
                    .list_audit_events(caller.request($pkg::ListAuditEventsRequest {
                        filter: filter.clone(),
                        page: page.clone(),
                    }))
                    .await
                    .map(|r| ($name, Some(r.into_inner().events)))
                    .or_else(|st| match st.code() {
                        // A service that is down is named in the answer.
                        tonic::Code::Unavailable => Ok(($name, None)),
                        _ => Err(ApiError::from_status($name, &st)),
                    })
            }
        };
    }
    let answers = tokio::try_join!(
        events!(a, accounts, "accounts"),
        events!(f, funnel, "funnel"),
        events!(r, revenue, "revenue"),
        events!(sc, scoring, "scoring"),
        events!(su, success, "success"),
    )?;
    let (aa, fa, ra, sca, sua) = answers;
    let mut changes = Vec::new();
    let mut unavailable = Vec::new();
    for (service, events) in [aa, fa, ra, sca, sua] {
        match events {
            // A refused write (PERMISSION_DENIED) changed nothing.
            Some(events) => changes.extend(
                events
                    .into_iter()
                    .filter(|e| e.result_code == "OK")
                    .map(|e| change(service, e)),
            ),
            None => unavailable.push(service.to_owned()),
        }
    }
    changes.sort_by(|x, y| {
        y.occurred_at
            .cmp(&x.occurred_at)
            .then_with(|| y.id.cmp(&x.id))
    });
    Ok(Report::new(
        format,
        "changes",
        "changes",
        AccountChanges {
            changes,
            unavailable,
        },
    ))
}
