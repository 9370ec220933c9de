//! REST routes over the scoring service: an account's health with the
//! explanation of each component, its churn risk and drivers, the at-risk
//! list (with account names and the reason, so a dashboard needs one call),
//! alerts, and value segments.

use axum::Json;
use axum::extract::State;
use bowtie_proto::{accounts as acc, common, scoring as sco};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::api::{Path, Query};
use crate::clients::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::model::{AlertKind, AlertState, Band, Component, Quadrant, Segment, Tier, time};

/// The scoring routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_health))
        .routes(routes!(get_churn_risk))
        .routes(routes!(list_at_risk))
        .routes(routes!(list_alerts))
        .routes(routes!(get_segments))
}

fn scoring_error(s: tonic::Status) -> ApiError {
    ApiError::from_status("scoring", &s)
}

fn page(page_size: Option<i32>, page_token: Option<String>) -> Option<common::PageRequest> {
    Some(common::PageRequest {
        page_size: page_size.unwrap_or(0),
        page_token: page_token.unwrap_or_default(),
    })
}

/// A basis-point value as a fraction.
fn fraction(bp: i32) -> f64 {
    f64::from(bp) / 10_000.0
}

/// One component of a health score.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ComponentScore {
    /// Which component.
    pub component: Component,
    /// Its score, 0..100.
    pub score: i32,
    /// Its weight in the scorecard.
    pub weight: i32,
    /// Its share of the total after renormalisation (0..1).
    pub effective_weight: f64,
    /// One line saying why.
    pub reason: String,
}

/// The health of one account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// The account.
    pub account_id: String,
    /// The score, 0..100.
    pub score: i32,
    /// Its band.
    pub band: Band,
    /// The components that have data.
    pub components: Vec<ComponentScore>,
    /// Components without data (their weight was dropped and the rest renormalised).
    pub missing: Vec<Component>,
    /// Score now minus 7 days ago.
    pub delta_7d: Option<i32>,
    /// Score now minus 30 days ago.
    pub delta_30d: Option<i32>,
    /// Segment (it chose the scorecard).
    pub segment: Segment,
    /// Scorecard version used.
    pub scorecard_version: i64,
    /// Churn probability within the horizon (0..1); absent without a model.
    pub churn_risk: Option<f64>,
    /// Value tier.
    pub tier: Tier,
    /// Value x loyalty quadrant.
    pub quadrant: Quadrant,
    /// MRR in minor units of the reporting currency.
    pub mrr_minor_units: i64,
    /// When it was computed.
    pub computed_at: Option<DateTime<Utc>>,
}

impl From<sco::AccountHealth> for Health {
    fn from(h: sco::AccountHealth) -> Self {
        Self {
            account_id: h.account_id,
            score: h.score,
            band: h.band.into(),
            components: h
                .components
                .into_iter()
                .map(|c| ComponentScore {
                    component: c.component.into(),
                    score: c.score,
                    weight: c.weight,
                    effective_weight: fraction(c.effective_weight_bp),
                    reason: c.reason,
                })
                .collect(),
            missing: h.missing.into_iter().map(Into::into).collect(),
            delta_7d: h.delta_7d,
            delta_30d: h.delta_30d,
            segment: h.segment.into(),
            scorecard_version: h.scorecard_version,
            churn_risk: h.churn_risk_bp.map(fraction),
            tier: h.tier.into(),
            quadrant: h.quadrant.into(),
            mrr_minor_units: h.mrr_minor_units,
            computed_at: time(h.compute_time.as_ref()),
        }
    }
}

/// An account's health score, its components and why each is what it is.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/health", tag = "scoring",
    params(("id" = String, Path, description = "Account id")),
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

/// A driver of an account's churn risk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RiskDriver {
    /// Feature name.
    pub feature: String,
    /// Contribution to the log-odds: positive raises the risk.
    pub contribution: f64,
    /// The account's value of the feature.
    pub value: f64,
}

/// An account's churn risk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChurnRisk {
    /// The account.
    pub account_id: String,
    /// Probability of churning within the horizon (0..1).
    pub probability: f64,
    /// Horizon in days.
    pub horizon_days: i32,
    /// What raises the risk most, largest first.
    pub top_drivers: Vec<RiskDriver>,
    /// The model used.
    pub model_id: String,
}

/// An account's churn probability and its top drivers.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/churn-risk", tag = "scoring",
    params(("id" = String, Path, description = "Account id")),
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

/// Filters and paging of the at-risk list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtRiskQuery {
    /// Only this segment.
    segment: Option<Segment>,
    /// Rows per page.
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// An account at risk, with what a customer-success team acts on.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AtRiskAccount {
    /// The account.
    pub account_id: String,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Its CSM.
    pub csm: String,
    /// Health score.
    pub score: i32,
    /// Health band.
    pub band: Band,
    /// Churn probability (0..1); absent without a model.
    pub churn_risk: Option<f64>,
    /// Score change over 30 days.
    pub delta_30d: Option<i32>,
    /// Segment.
    pub segment: Segment,
    /// Value tier.
    pub tier: Tier,
    /// MRR in minor units.
    pub mrr_minor_units: i64,
    /// The weakest component's explanation: why it is at risk.
    pub reason: String,
}

/// One page of accounts at risk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AtRiskPage {
    /// Lowest score first.
    pub accounts: Vec<AtRiskAccount>,
    /// Next page token; empty on the last page.
    pub next_page_token: String,
}

/// Accounts at risk (band RED or churn risk above the threshold), lowest score first.
#[utoipa::path(get, path = "/api/v1/scoring/at-risk", tag = "scoring", params(AtRiskQuery),
    responses((status = 200, body = AtRiskPage), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn list_at_risk(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AtRiskQuery>,
) -> Result<Json<AtRiskPage>, ApiError> {
    let r = state
        .services
        .scoring
        .clone()
        .list_at_risk(caller.request(sco::ListAtRiskRequest {
            segment: q.segment.unwrap_or_default().into(),
            page: page(q.page_size, q.page_token),
        }))
        .await
        .map_err(scoring_error)?
        .into_inner();
    let lookups = r.accounts.iter().map(|h| {
        let mut accounts = state.services.accounts.clone();
        let request = caller.request(acc::GetAccountRequest {
            id: h.account_id.clone(),
        });
        async move { accounts.get_account(request).await }
    });
    let found = futures::future::join_all(lookups).await;
    let mut rows = Vec::with_capacity(r.accounts.len());
    for (h, account) in r.accounts.into_iter().zip(found) {
        let account = match account {
            Ok(a) => a.into_inner().account.unwrap_or_default(),
            // An account scored but since removed still shows, by id.
            Err(s) if s.code() == tonic::Code::NotFound => acc::Account::default(),
            Err(s) => return Err(ApiError::from_status("accounts", &s)),
        };
        let reason = h
            .components
            .iter()
            .min_by_key(|c| c.score)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        rows.push(AtRiskAccount {
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
        });
    }
    Ok(Json(AtRiskPage {
        accounts: rows,
        next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
    }))
}

/// Filters and paging of the alerts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// Only this state.
    state: Option<AlertState>,
    /// Only this kind.
    kind: Option<AlertKind>,
    /// Only this account.
    account_id: Option<String>,
    /// Rows per page.
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// A call to action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alert {
    /// Id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// Why it was raised.
    pub kind: AlertKind,
    /// Where it is.
    pub state: AlertState,
    /// What to look at.
    pub message: String,
    /// Health score when raised.
    pub score: i32,
    /// Churn risk when raised (0..1).
    pub churn_risk: f64,
    /// Raised at.
    pub created_at: Option<DateTime<Utc>>,
    /// Last changed at.
    pub updated_at: Option<DateTime<Utc>>,
    /// Note of whoever acknowledged or resolved it.
    pub note: String,
}

/// One page of alerts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertPage {
    /// Newest first.
    pub alerts: Vec<Alert>,
    /// Next page token; empty on the last page.
    pub next_page_token: String,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/api/v1/scoring/alerts", tag = "scoring", params(AlertsQuery),
    responses((status = 200, body = AlertPage), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AlertsQuery>,
) -> Result<Json<AlertPage>, ApiError> {
    let r = state
        .services
        .scoring
        .clone()
        .list_alerts(caller.request(sco::ListAlertsRequest {
            state: q.state.unwrap_or_default().into(),
            kind: q.kind.unwrap_or_default().into(),
            account_id: q.account_id.unwrap_or_default(),
            page: page(q.page_size, q.page_token),
        }))
        .await
        .map_err(scoring_error)?
        .into_inner();
    Ok(Json(AlertPage {
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
    }))
}

/// The segment filter of the value segments.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SegmentsQuery {
    /// Only this customer segment.
    segment: Option<Segment>,
}

/// Accounts and revenue of one value tier.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TierSummary {
    /// The tier.
    pub tier: Tier,
    /// Accounts.
    pub accounts: i64,
    /// Their MRR (minor units).
    pub mrr_minor_units: i64,
    /// Their share of total MRR (0..1).
    pub revenue_share: f64,
}

/// Accounts and revenue of one quadrant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuadrantSummary {
    /// The quadrant.
    pub quadrant: Quadrant,
    /// Accounts.
    pub accounts: i64,
    /// Their MRR (minor units).
    pub mrr_minor_units: i64,
    /// Their share of total MRR (0..1).
    pub revenue_share: f64,
}

/// Value tiers and quadrants.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValueSegments {
    /// Every tier.
    pub tiers: Vec<TierSummary>,
    /// Every quadrant.
    pub quadrants: Vec<QuadrantSummary>,
    /// Scored accounts.
    pub accounts: i64,
    /// Total MRR (minor units).
    pub mrr_minor_units: i64,
    /// Share of MRR carried by the top 20% of accounts (0..1).
    pub top_20_percent_share: f64,
}

/// Value tiers and value x loyalty quadrants: accounts and revenue share.
#[utoipa::path(get, path = "/api/v1/scoring/segments", tag = "scoring", params(SegmentsQuery),
    responses((status = 200, body = ValueSegments), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_segments(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SegmentsQuery>,
) -> Result<Json<ValueSegments>, ApiError> {
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
    Ok(Json(ValueSegments {
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
    }))
}
