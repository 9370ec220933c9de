//! REST routes over the funnel service: an account's journey, recording a
//! transition, the funnel report, the funnel cohorts, the stage
//! sensitivity and the accounts in a stage.

mod model;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use bowtie_proto::funnel as fun;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clients::Caller;
use crate::common::{Segment, Stage, timestamp};
use crate::error::{ApiError, ErrorBody};
use crate::export::{Format, FormatQuery, Report};
use crate::rest::{Body, Path, Query, idempotency_key, missing, page, period};
use crate::schema;

pub use model::*;

/// The funnel routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_journey))
        .routes(routes!(record_transition))
        .routes(routes!(get_funnel_report))
        .routes(routes!(get_funnel_cohorts))
        .routes(routes!(get_stage_sensitivity))
        .routes(routes!(list_accounts_in_stage))
}

/// The funnel service's answer, or its status as the API's error.
fn answer<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, ApiError> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| ApiError::from_status("funnel", &s))
}

/// An account's journey through the bowtie.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/journey", tag = "funnel",
    params(("id" = uuid::Uuid, Path, description = "Account id")),
    responses((status = 200, body = Journey), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_journey(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Journey>, ApiError> {
    let mut funnel = state.services.funnel.clone();
    let request = caller.request(fun::GetJourneyRequest { account_id: id });
    let r = answer(funnel.get_journey(request).await)?;
    Ok(Json(r.journey.ok_or_else(|| missing("a journey"))?.into()))
}

/// Record that an account entered a stage (write scope).
#[utoipa::path(post, path = "/api/v1/accounts/{id}/transitions", tag = "funnel",
    request_body = NewTransition,
    params(("id" = uuid::Uuid, Path, description = "Account id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = RecordedTransition), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn record_transition(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<NewTransition>,
) -> Result<Json<RecordedTransition>, ApiError> {
    let request = caller.request(fun::RecordTransitionRequest {
        account_id: id,
        to_stage: body.stage.into(),
        occurred_at: Some(timestamp(body.occurred_at)),
        reason: body.reason,
        source: body.source,
        idempotency_key: idempotency_key(&headers)?,
    });
    let mut funnel = state.services.funnel.clone();
    Ok(Json(
        answer(funnel.record_transition(request).await)?.into(),
    ))
}

/// Period and filters of a funnel report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FunnelQuery {
    /// First instant of the period (RFC 3339).
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    start: DateTime<Utc>,
    /// First instant after the period (RFC 3339), at most 10 years after `start`.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    end: DateTime<Utc>,
    /// Only this segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
    /// Only this owner, at most 200 characters.
    #[param(schema_with = schema::optional_text::<200>)]
    owner: Option<String>,
    /// STAGE_ENTRY (default) or ATTEMPT_START.
    #[param(schema_with = CohortBy::input_schema)]
    cohort_by: Option<CohortBy>,
}

/// The bowtie: volume, conversion, drop-off and time to the next stage per stage.
#[utoipa::path(get, path = "/api/v1/funnel", tag = "funnel",
    params(FunnelQuery, FormatQuery),
    responses((status = 200, content((FunnelReport = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_funnel_report(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FunnelQuery>,
    format: Format,
) -> Result<Report<FunnelReport>, ApiError> {
    let request = caller.request(fun::GetFunnelReportRequest {
        period: period(q.start, q.end),
        segment: q.segment.unwrap_or_default().into(),
        owner: q.owner.unwrap_or_default(),
        cohort_by: q.cohort_by.unwrap_or_default().into(),
    });
    let mut funnel = state.services.funnel.clone();
    Ok(Report::new(
        format,
        "funnel",
        "stages",
        answer(funnel.get_funnel_report(request).await)?.into(),
    ))
}

/// Period and filters of the funnel cohorts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FunnelCohortQuery {
    /// Cohorts entering from this instant (RFC 3339).
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    start: DateTime<Utc>,
    /// Until this instant (RFC 3339), at most 10 years after `start`.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    end: DateTime<Utc>,
    /// The cohort-defining stage: AWARENESS (default) or COMMIT.
    #[param(schema_with = cohort_stage_schema)]
    cohort_stage: Option<Stage>,
    /// Only this segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
    /// Only this owner, at most 200 characters.
    #[param(schema_with = schema::optional_text::<200>)]
    owner: Option<String>,
}

/// How monthly cohorts of accounts progress through the bowtie.
#[utoipa::path(get, path = "/api/v1/funnel/cohorts", tag = "funnel",
    params(FunnelCohortQuery, FormatQuery),
    responses((status = 200, content((FunnelCohorts = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_funnel_cohorts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FunnelCohortQuery>,
    format: Format,
) -> Result<Report<FunnelCohorts>, ApiError> {
    let request = caller.request(fun::GetCohortReportRequest {
        period: period(q.start, q.end),
        cohort_stage: q.cohort_stage.unwrap_or_default().into(),
        segment: q.segment.unwrap_or_default().into(),
        owner: q.owner.unwrap_or_default(),
    });
    let mut funnel = state.services.funnel.clone();
    Ok(Report::new(
        format,
        "funnel-cohorts",
        "cohorts",
        answer(funnel.get_cohort_report(request).await)?.into(),
    ))
}

/// When and for which segment the stage sensitivity is measured.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SensitivityQuery {
    /// Measure over the 12 whole months (UTC) before this instant's month
    /// (RFC 3339, 1971 or later); now when absent.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    as_of: Option<DateTime<Utc>>,
    /// Only this segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
}

/// Which stage to work on first: the ARR the next 12 months of leads add at
/// the trailing year's rates, and how much a point of conversion or 10% less
/// time in each stage would change it, the stages ranked by the larger
/// change (docs/design.md 7.2). CSV: one row per stage.
#[utoipa::path(get, path = "/api/v1/funnel/sensitivity", tag = "funnel",
    params(SensitivityQuery, FormatQuery),
    responses((status = 200,
               content((StageSensitivityReport = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_stage_sensitivity(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SensitivityQuery>,
    format: Format,
) -> Result<Report<StageSensitivityReport>, ApiError> {
    let request = caller.request(fun::GetStageSensitivityRequest {
        as_of: q.as_of.map(timestamp),
        segment: q.segment.unwrap_or_default().into(),
    });
    let mut funnel = state.services.funnel.clone();
    Ok(Report::new(
        format,
        "stage-sensitivity",
        "stages",
        answer(funnel.get_stage_sensitivity(request).await)?.into(),
    ))
}

/// Filters and paging of the accounts in a stage.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InStageQuery {
    /// Only this segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
    /// Only this owner, at most 200 characters.
    #[param(schema_with = schema::optional_text::<200>)]
    owner: Option<String>,
    /// Rows per page (default 50, at most 1000; more is 1000).
    #[param(minimum = 0)]
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// The stage of the accounts in a stage.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StagePath {
    /// The stage.
    #[param(schema_with = Stage::input_schema)]
    stage: Stage,
}

/// The stages a funnel cohort can be defined by.
fn cohort_stage_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["AWARENESS", "COMMIT"]))
        .into()
}

/// The accounts currently in a stage, longest there first.
#[utoipa::path(get, path = "/api/v1/funnel/stages/{stage}/accounts", tag = "funnel",
    params(FormatQuery, StagePath, InStageQuery),
    responses((status = 200,
               content((AccountsInStagePage = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_accounts_in_stage(
    State(state): State<AppState>,
    caller: Caller,
    Path(StagePath { stage }): Path<StagePath>,
    Query(q): Query<InStageQuery>,
    format: Format,
) -> Result<Report<AccountsInStagePage>, ApiError> {
    let request = caller.request(fun::ListAccountsInStageRequest {
        stage: stage.into(),
        segment: q.segment.unwrap_or_default().into(),
        owner: q.owner.unwrap_or_default(),
        page: page(q.page_size, q.page_token),
    });
    let mut funnel = state.services.funnel.clone();
    Ok(Report::new(
        format,
        "accounts-in-stage",
        "accounts",
        answer(funnel.list_accounts_in_stage(request).await)?.into(),
    ))
}
