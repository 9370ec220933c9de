//! REST routes over the scoring service: an account's health with the
//! explanation of each component, its churn risk and drivers, the health
//! and at-risk lists (with account names and the reason, so a dashboard
//! needs one call; `mine=true` for the caller's book), alerts, and value
//! segments.

mod model;

use axum::Json;
use axum::extract::State;
use bowtie_proto::{accounts as acc, scoring as sco};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clients::Caller;
use crate::common::{Segment, time};
use crate::error::{ApiError, ErrorBody};
use crate::export::{Format, FormatQuery, Report};
use crate::rest::{Path, Query, id_filter, page};
use crate::schema;

pub use model::*;

/// The scoring routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_health))
        .routes(routes!(get_churn_risk))
        .routes(routes!(list_health))
        .routes(routes!(list_at_risk))
        .routes(routes!(list_alerts))
        .routes(routes!(get_segments))
}

fn scoring_error(s: tonic::Status) -> ApiError {
    ApiError::from_status("scoring", &s)
}

/// An account's health score, its components and why each is what it is.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/health", tag = "scoring",
    params(("id" = uuid::Uuid, Path, description = "Account id")),
    responses((status = 200, body = Health), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_health(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Health>, ApiError> {
    let r = state
        .services
        .scoring
        .clone()
        .get_health(caller.request(sco::GetHealthRequest { account_id: id }))
        .await
        .map_err(scoring_error)?
        .into_inner();
    let health = r
        .health
        .ok_or_else(|| ApiError::internal(&"GetHealth returned no health"))?;
    Ok(Json(health.into()))
}

/// An account's churn probability and its top drivers.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/churn-risk", tag = "scoring",
    params(("id" = uuid::Uuid, Path, description = "Account id")),
    responses((status = 200, body = ChurnRisk), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_churn_risk(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ChurnRisk>, ApiError> {
    let r = state
        .services
        .scoring
        .clone()
        .get_churn_risk(caller.request(sco::GetChurnRiskRequest { account_id: id }))
        .await
        .map_err(scoring_error)?
        .into_inner();
    Ok(Json(ChurnRisk {
        account_id: r.account_id,
        probability: r.probability,
        horizon_days: r.horizon_days,
        top_drivers: r
            .top_drivers
            .into_iter()
            .map(|d| RiskDriver {
                feature: d.feature,
                contribution: d.contribution,
                value: d.value,
            })
            .collect(),
        model_id: r.model_id,
    }))
}

/// Filters, order and paging of the health list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// Only this segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
    /// Only this band.
    #[param(schema_with = Band::input_schema)]
    band: Option<Band>,
    /// Only this value tier.
    #[param(schema_with = Tier::input_schema)]
    tier: Option<Tier>,
    /// Only scores at or above (0..=100).
    #[param(minimum = 0, maximum = 100)]
    min_score: Option<i32>,
    /// Only scores at or below (0..=100; default 100).
    #[param(minimum = 0, maximum = 100)]
    max_score: Option<i32>,
    /// Highest score first (default: lowest first).
    highest_first: Option<bool>,
    /// Only the caller's book: accounts whose CSM or owner it is (a
    /// manager: also its teams'). 400 naming `mine` for an API key with
    /// scopes only.
    mine: Option<bool>,
    /// Rows per page (default 50, at most 1000; more is 1000).
    #[param(minimum = 0)]
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// Accounts' health with their names and the weakest component's reason,
/// filtered, lowest score first (or highest), paged.
#[utoipa::path(get, path = "/api/v1/scoring/health", tag = "scoring",
    params(HealthQuery, FormatQuery),
    responses((status = 200, content((HealthPage = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_health(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HealthQuery>,
    format: Format,
) -> Result<Report<HealthPage>, ApiError> {
    let order = if q.highest_first.unwrap_or(false) {
        sco::HealthOrder::ScoreDescending
    } else {
        sco::HealthOrder::ScoreAscending
    };
    let r = state
        .services
        .scoring
        .clone()
        .list_health(caller.request(sco::ListHealthRequest {
            segment: q.segment.unwrap_or_default().into(),
            band: q.band.unwrap_or_default().into(),
            tier: q.tier.unwrap_or_default().into(),
            min_score: q.min_score.unwrap_or(0),
            max_score: q.max_score.unwrap_or(0),
            order: order as i32,
            page: page(q.page_size, q.page_token),
            mine: q.mine.unwrap_or(false),
        }))
        .await
        .map_err(scoring_error)?
        .into_inner();
    let rows = named(&state, &caller, r.accounts).await?;
    Ok(Report::new(
        format,
        "health",
        "accounts",
        HealthPage {
            accounts: rows,
            next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
        },
    ))
}

/// Each scored account's row with its account record, asked of the accounts
/// service side by side.
async fn named(
    state: &AppState,
    caller: &Caller,
    scored: Vec<sco::AccountHealth>,
) -> Result<Vec<AtRiskAccount>, ApiError> {
    let lookups = scored.iter().map(|h| {
        let mut accounts = state.services.accounts.clone();
        let request = caller.request(acc::GetAccountRequest {
            id: h.account_id.clone(),
        });
        async move { accounts.get_account(request).await }
    });
    let found = futures::future::join_all(lookups).await;
    let mut rows = Vec::with_capacity(scored.len());
    for (h, account) in scored.into_iter().zip(found) {
        let account = match account {
            Ok(a) => a.into_inner().account.unwrap_or_default(),
            // An account scored but since removed still shows, by id.
            Err(s) if s.code() == tonic::Code::NotFound => acc::Account::default(),
            Err(s) => return Err(ApiError::from_status("accounts", &s)),
        };
        rows.push(at_risk_account(h, account));
    }
    Ok(rows)
}

/// Filters and paging of the at-risk list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtRiskQuery {
    /// Only this segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
    /// Only the caller's book: accounts whose CSM or owner it is (a
    /// manager: also its teams'). 400 naming `mine` for an API key with
    /// scopes only.
    mine: Option<bool>,
    /// Rows per page (default 50, at most 1000; more is 1000).
    #[param(minimum = 0)]
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// Accounts at risk (band RED or churn risk above the threshold), lowest score first.
#[utoipa::path(get, path = "/api/v1/scoring/at-risk", tag = "scoring",
    params(AtRiskQuery, FormatQuery),
    responses((status = 200, content((AtRiskPage = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_at_risk(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AtRiskQuery>,
    format: Format,
) -> Result<Report<AtRiskPage>, ApiError> {
    let r = state
        .services
        .scoring
        .clone()
        .list_at_risk(caller.request(sco::ListAtRiskRequest {
            segment: q.segment.unwrap_or_default().into(),
            page: page(q.page_size, q.page_token),
            mine: q.mine.unwrap_or(false),
        }))
        .await
        .map_err(scoring_error)?
        .into_inner();
    let rows = named(&state, &caller, r.accounts).await?;
    Ok(Report::new(
        format,
        "at-risk",
        "accounts",
        AtRiskPage {
            accounts: rows,
            next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
        },
    ))
}

/// The at-risk row of a scored account and its account record (an empty
/// one names the account by its id): the reason is the weakest
/// component's explanation.
pub fn at_risk_account(h: sco::AccountHealth, account: acc::Account) -> AtRiskAccount {
    let reason = h
        .components
        .iter()
        .min_by_key(|c| c.score)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    AtRiskAccount {
        name: if account.name.is_empty() {
            h.account_id.clone()
        } else {
            account.name
        },
        owner: account.owner,
        csm: account.csm,
        account_id: h.account_id,
        score: h.score,
        band: h.band.into(),
        churn_risk: h.churn_risk_bp.map(fraction),
        delta_30d: h.delta_30d,
        segment: h.segment.into(),
        tier: h.tier.into(),
        mrr_minor_units: h.mrr_minor_units,
        reason,
    }
}

/// Filters and paging of the alerts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// Only this state.
    #[param(schema_with = AlertState::input_schema)]
    state: Option<AlertState>,
    /// Only this kind.
    #[param(schema_with = AlertKind::input_schema)]
    kind: Option<AlertKind>,
    /// Only this account.
    #[param(schema_with = schema::uuid)]
    account_id: Option<String>,
    /// Rows per page (default 50, at most 1000; more is 1000).
    #[param(minimum = 0)]
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/api/v1/scoring/alerts", tag = "scoring",
    params(AlertsQuery, FormatQuery),
    responses((status = 200, content((AlertPage = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AlertsQuery>,
    format: Format,
) -> Result<Report<AlertPage>, ApiError> {
    let r = state
        .services
        .scoring
        .clone()
        .list_alerts(caller.request(sco::ListAlertsRequest {
            state: q.state.unwrap_or_default().into(),
            kind: q.kind.unwrap_or_default().into(),
            account_id: id_filter("account_id", q.account_id)?,
            page: page(q.page_size, q.page_token),
        }))
        .await
        .map_err(scoring_error)?
        .into_inner();
    Ok(Report::new(
        format,
        "alerts",
        "alerts",
        AlertPage {
            alerts: r
                .alerts
                .into_iter()
                .map(|a| Alert {
                    id: a.id,
                    account_id: a.account_id,
                    kind: a.kind.into(),
                    state: a.state.into(),
                    message: a.message,
                    score: a.score,
                    churn_risk: fraction(a.churn_risk_bp),
                    created_at: time(a.create_time.as_ref()),
                    updated_at: time(a.update_time.as_ref()),
                    note: a.note,
                })
                .collect(),
            next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
        },
    ))
}

/// The segment filter of the value segments.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SegmentsQuery {
    /// Only this customer segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
}

/// Value tiers and value x loyalty quadrants: accounts and revenue share.
#[utoipa::path(get, path = "/api/v1/scoring/segments", tag = "scoring",
    params(SegmentsQuery, FormatQuery),
    responses((status = 200, content((ValueSegments = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_segments(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SegmentsQuery>,
    format: Format,
) -> Result<Report<ValueSegments>, ApiError> {
    let r = state
        .services
        .scoring
        .clone()
        .get_segments(caller.request(sco::GetSegmentsRequest {
            segment: q.segment.unwrap_or_default().into(),
        }))
        .await
        .map_err(scoring_error)?
        .into_inner();
    Ok(Report::new(
        format,
        "segments",
        "tiers",
        ValueSegments {
            tiers: r
                .tiers
                .into_iter()
                .map(|t| TierSummary {
                    tier: t.tier.into(),
                    accounts: t.accounts,
                    mrr_minor_units: t.mrr_minor_units,
                    revenue_share: fraction(t.revenue_share_bp),
                })
                .collect(),
            quadrants: r
                .quadrants
                .into_iter()
                .map(|x| QuadrantSummary {
                    quadrant: x.quadrant.into(),
                    accounts: x.accounts,
                    mrr_minor_units: x.mrr_minor_units,
                    revenue_share: fraction(x.revenue_share_bp),
                })
                .collect(),
            accounts: r.accounts,
            mrr_minor_units: r.mrr_minor_units,
            top_20_percent_share: fraction(r.top_20_percent_share_bp),
        },
    ))
}
