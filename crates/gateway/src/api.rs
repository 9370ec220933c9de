//! The REST handlers: each converts the HTTP request into one gRPC request,
//! calls the service with the caller's credentials and converts the answer
//! (or maps the status, see `error`). The `#[utoipa::path]` attributes are
//! the OpenAPI document; `utoipa_axum::routes!` registers each handler in the
//! router and the document at once, so no route can be served undocumented.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode};
use bowtie_proto::{accounts as acc, common, funnel as fun, revenue as rev};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clients::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::model::*;

/// A query string parsed into `T`; a malformed one is a 400 naming the field.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters parsed into `T`; a malformed one is a 400 in the error
/// shape (axum's own answer would be plain text).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// A JSON body parsed into `T`; a malformed one is a 400 naming the field.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Body<T>(pub T);

/// The `Idempotency-Key` header, passed to the service's idempotency key.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(String::new()),
        Some(v) => v.to_str().map(str::to_owned).map_err(|_| {
            ApiError::invalid(
                "Idempotency-Key",
                "must be printable ASCII, up to 200 characters",
            )
        }),
    }
}

fn page(page_size: Option<i32>, page_token: Option<String>) -> Option<common::PageRequest> {
    Some(common::PageRequest {
        page_size: page_size.unwrap_or(0),
        page_token: page_token.unwrap_or_default(),
    })
}

fn period(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<common::Period> {
    Some(common::Period {
        start: Some(timestamp(start)),
        end: Some(timestamp(end)),
    })
}

fn accounts_error(s: tonic::Status) -> ApiError {
    ApiError::from_status("accounts", &s)
}

fn funnel_error(s: tonic::Status) -> ApiError {
    ApiError::from_status("funnel", &s)
}

fn revenue_error(s: tonic::Status) -> ApiError {
    ApiError::from_status("revenue", &s)
}

fn missing(what: &str) -> ApiError {
    ApiError::internal(&format!("the service answered without {what}"))
}

/// Every REST route of the API, with its OpenAPI operations.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, update_account))
        .routes(routes!(upsert_account_by_external_id))
        .routes(routes!(get_journey, record_transition))
        .routes(routes!(get_funnel_report))
        .routes(routes!(get_funnel_cohorts))
        .routes(routes!(list_accounts_in_stage))
        .routes(routes!(get_mrr_report))
        .routes(routes!(get_retention))
        .routes(routes!(get_cohort_retention))
        .routes(routes!(list_movements))
        .routes(routes!(list_renewals))
        .routes(routes!(get_unit_economics))
        .routes(routes!(create_subscription))
        .routes(routes!(get_subscription))
        .routes(routes!(change_subscription))
        .routes(routes!(cancel_subscription))
}

// --- accounts -------------------------------------------------------------

/// Filters and paging of the account list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAccountsQuery {
    /// Only this segment.
    segment: Option<Segment>,
    /// Only this owner (exact).
    owner: Option<String>,
    /// Only this CSM (exact).
    csm: Option<String>,
    /// Only this status.
    status: Option<AccountStatus>,
    /// Case-insensitive substring of the name.
    text: Option<String>,
    /// Rows per page (default 50, at most 1000).
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// List accounts.
#[utoipa::path(get, path = "/api/v1/accounts", tag = "accounts", params(ListAccountsQuery),
    responses((status = 200, body = AccountPage), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn list_accounts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListAccountsQuery>,
) -> Result<Json<AccountPage>, ApiError> {
    let r = state
        .services
        .accounts
        .clone()
        .list_accounts(caller.request(acc::ListAccountsRequest {
            segment: q.segment.unwrap_or_default().into(),
            owner: q.owner.unwrap_or_default(),
            csm: q.csm.unwrap_or_default(),
            status: q.status.unwrap_or_default().into(),
            text: q.text.unwrap_or_default(),
            page: page(q.page_size, q.page_token),
        }))
        .await
        .map_err(accounts_error)?
        .into_inner();
    Ok(Json(AccountPage {
        accounts: r.accounts.into_iter().map(Into::into).collect(),
        next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
    }))
}

/// Create an account (write scope). An `Idempotency-Key` header makes retries safe.
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts", request_body = NewAccount,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = Account), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<NewAccount>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    let r = state
        .services
        .accounts
        .clone()
        .create_account(caller.request(acc::CreateAccountRequest {
            account: Some(body.to_pb()),
            idempotency_key: idempotency_key(&headers)?,
        }))
        .await
        .map_err(accounts_error)?
        .into_inner();
    let account = r.account.ok_or_else(|| missing("an account"))?;
    Ok((StatusCode::CREATED, Json(account.into())))
}

/// Get an account.
#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = Account), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Account>, ApiError> {
    let r = state
        .services
        .accounts
        .clone()
        .get_account(caller.request(acc::GetAccountRequest { id }))
        .await
        .map_err(accounts_error)?
        .into_inner();
    Ok(Json(r.account.ok_or_else(|| missing("an account"))?.into()))
}

/// Change an account's fields (write scope); a stale `expected_version` is 409 ABORTED.
#[utoipa::path(patch, path = "/api/v1/accounts/{id}", tag = "accounts",
    request_body = AccountChanges,
    params(("id" = String, Path, description = "Account id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = Account), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn update_account(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<AccountChanges>,
) -> Result<Json<Account>, ApiError> {
    let (account, paths) = body.to_pb(&id);
    let r = state
        .services
        .accounts
        .clone()
        .update_account(caller.request(acc::UpdateAccountRequest {
            account: Some(account),
            update_mask: Some(prost_types::FieldMask { paths }),
            expected_version: body.expected_version,
            idempotency_key: idempotency_key(&headers)?,
        }))
        .await
        .map_err(accounts_error)?
        .into_inner();
    Ok(Json(r.account.ok_or_else(|| missing("an account"))?.into()))
}

/// Create or update the account another system knows as `{source}/{external_id}` (write scope).
#[utoipa::path(put, path = "/api/v1/accounts/by-external-id/{source}/{external_id}",
    tag = "accounts", request_body = NewAccount,
    params(("source" = String, Path, description = "The system, e.g. hubspot"),
           ("external_id" = String, Path, description = "The id in that system"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = UpsertedAccount), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn upsert_account_by_external_id(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((source, external_id)): Path<(String, String)>,
    Body(body): Body<NewAccount>,
) -> Result<Json<UpsertedAccount>, ApiError> {
    let r = state
        .services
        .accounts
        .clone()
        .upsert_account_by_external_id(caller.request(acc::UpsertAccountByExternalIdRequest {
            external_id: Some(acc::ExternalId {
                source,
                external_id,
            }),
            account: Some(body.to_pb()),
            idempotency_key: idempotency_key(&headers)?,
        }))
        .await
        .map_err(accounts_error)?
        .into_inner();
    Ok(Json(UpsertedAccount {
        account: r.account.ok_or_else(|| missing("an account"))?.into(),
        created: r.created,
    }))
}

// --- funnel ---------------------------------------------------------------

/// An account's journey through the bowtie.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/journey", tag = "funnel",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = Journey), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_journey(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Journey>, ApiError> {
    let r = state
        .services
        .funnel
        .clone()
        .get_journey(caller.request(fun::GetJourneyRequest { account_id: id }))
        .await
        .map_err(funnel_error)?
        .into_inner();
    Ok(Json(r.journey.ok_or_else(|| missing("a journey"))?.into()))
}

/// Record that an account entered a stage (write scope).
#[utoipa::path(post, path = "/api/v1/accounts/{id}/transitions", tag = "funnel",
    request_body = NewTransition,
    params(("id" = String, Path, description = "Account id"),
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
    let r = state
        .services
        .funnel
        .clone()
        .record_transition(caller.request(fun::RecordTransitionRequest {
            account_id: id,
            to_stage: body.stage.into(),
            occurred_at: Some(timestamp(body.occurred_at)),
            reason: body.reason,
            source: body.source,
            idempotency_key: idempotency_key(&headers)?,
        }))
        .await
        .map_err(funnel_error)?
        .into_inner();
    Ok(Json(RecordedTransition {
        transition: r.transition.map(Into::into),
        applied: r.applied,
        current_stage: r.current_stage.into(),
    }))
}

/// Period and filters of a funnel report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FunnelQuery {
    /// First instant of the period (RFC 3339).
    start: DateTime<Utc>,
    /// First instant after the period (RFC 3339).
    end: DateTime<Utc>,
    /// Only this segment.
    segment: Option<Segment>,
    /// Only this owner.
    owner: Option<String>,
    /// STAGE_ENTRY (default) or ATTEMPT_START.
    cohort_by: Option<CohortBy>,
}

/// The bowtie: volume, conversion, drop-off and time to the next stage per stage.
#[utoipa::path(get, path = "/api/v1/funnel", tag = "funnel", params(FunnelQuery),
    responses((status = 200, body = FunnelReport), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_funnel_report(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FunnelQuery>,
) -> Result<Json<FunnelReport>, ApiError> {
    let r = state
        .services
        .funnel
        .clone()
        .get_funnel_report(caller.request(fun::GetFunnelReportRequest {
            period: period(q.start, q.end),
            segment: q.segment.unwrap_or_default().into(),
            owner: q.owner.unwrap_or_default(),
            cohort_by: q.cohort_by.unwrap_or_default().into(),
        }))
        .await
        .map_err(funnel_error)?
        .into_inner();
    Ok(Json(r.into()))
}

/// Period and filters of the funnel cohorts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FunnelCohortQuery {
    /// Cohorts entering from this instant (RFC 3339).
    start: DateTime<Utc>,
    /// Until this instant (RFC 3339).
    end: DateTime<Utc>,
    /// The cohort-defining stage: AWARENESS (default) or COMMIT.
    cohort_stage: Option<Stage>,
    /// Only this segment.
    segment: Option<Segment>,
    /// Only this owner.
    owner: Option<String>,
}

/// One funnel cohort's progress through the later stages.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CohortProgress {
    /// The later stage.
    pub stage: Stage,
    /// Members that reached it by the end of month k after entry.
    pub reached: Vec<i64>,
    /// reached / cohort size.
    pub share: Vec<f64>,
}

/// A monthly funnel cohort.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FunnelCohort {
    /// Entry month, `YYYY-MM`.
    pub month: String,
    /// Attempts that entered in that month.
    pub size: i64,
    /// Progress per later stage.
    pub progress: Vec<CohortProgress>,
}

/// Funnel cohorts by entry month.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FunnelCohorts {
    /// The cohort-defining stage.
    pub cohort_stage: Stage,
    /// Oldest first.
    pub cohorts: Vec<FunnelCohort>,
}

/// How monthly cohorts of accounts progress through the bowtie.
#[utoipa::path(get, path = "/api/v1/funnel/cohorts", tag = "funnel", params(FunnelCohortQuery),
    responses((status = 200, body = FunnelCohorts), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_funnel_cohorts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FunnelCohortQuery>,
) -> Result<Json<FunnelCohorts>, ApiError> {
    let r = state
        .services
        .funnel
        .clone()
        .get_cohort_report(caller.request(fun::GetCohortReportRequest {
            period: period(q.start, q.end),
            cohort_stage: q.cohort_stage.unwrap_or_default().into(),
            segment: q.segment.unwrap_or_default().into(),
            owner: q.owner.unwrap_or_default(),
        }))
        .await
        .map_err(funnel_error)?
        .into_inner();
    Ok(Json(FunnelCohorts {
        cohort_stage: r.cohort_stage.into(),
        cohorts: r
            .cohorts
            .into_iter()
            .map(|c| FunnelCohort {
                month: c.month,
                size: c.size,
                progress: c
                    .progress
                    .into_iter()
                    .map(|p| CohortProgress {
                        stage: p.stage.into(),
                        reached: p.reached,
                        share: p.share,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// Filters and paging of the accounts in a stage.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InStageQuery {
    /// Only this segment.
    segment: Option<Segment>,
    /// Only this owner.
    owner: Option<String>,
    /// Rows per page.
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// The accounts currently in a stage, longest there first.
#[utoipa::path(get, path = "/api/v1/funnel/stages/{stage}/accounts", tag = "funnel",
    params(("stage" = Stage, Path, description = "The stage"), InStageQuery),
    responses((status = 200, body = AccountsInStagePage), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn list_accounts_in_stage(
    State(state): State<AppState>,
    caller: Caller,
    Path(stage): Path<Stage>,
    Query(q): Query<InStageQuery>,
) -> Result<Json<AccountsInStagePage>, ApiError> {
    let r = state
        .services
        .funnel
        .clone()
        .list_accounts_in_stage(caller.request(fun::ListAccountsInStageRequest {
            stage: stage.into(),
            segment: q.segment.unwrap_or_default().into(),
            owner: q.owner.unwrap_or_default(),
            page: page(q.page_size, q.page_token),
        }))
        .await
        .map_err(funnel_error)?
        .into_inner();
    Ok(Json(r.into()))
}

// --- revenue --------------------------------------------------------------

/// Months and filters of the MRR report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MrrQuery {
    /// First month, `YYYY-MM`.
    start_month: String,
    /// Last month (inclusive), `YYYY-MM`.
    end_month: String,
    /// MONTH (default) or QUARTER.
    granularity: Option<Granularity>,
    /// Only this segment.
    segment: Option<Segment>,
}

/// The MRR waterfall and ARR per month or quarter.
#[utoipa::path(get, path = "/api/v1/revenue/mrr", tag = "revenue", params(MrrQuery),
    responses((status = 200, body = MrrReport), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_mrr_report(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<MrrQuery>,
) -> Result<Json<MrrReport>, ApiError> {
    let r = state
        .services
        .revenue
        .clone()
        .get_mrr_report(caller.request(rev::GetMrrReportRequest {
            start_month: q.start_month,
            end_month: q.end_month,
            granularity: q.granularity.unwrap_or_default().into(),
            segment: q.segment.unwrap_or_default().into(),
        }))
        .await
        .map_err(revenue_error)?
        .into_inner();
    Ok(Json(r.into()))
}

/// Period and filters of the retention figures.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetentionQuery {
    /// t0 (RFC 3339): the cohort is every account paying then.
    start: DateTime<Utc>,
    /// t1 (RFC 3339).
    end: DateTime<Utc>,
    /// Only this segment.
    segment: Option<Segment>,
    /// Only accounts closed by this owner.
    owner: Option<String>,
}

/// Logo retention, GRR and NRR of the accounts paying at `start`.
#[utoipa::path(get, path = "/api/v1/revenue/retention", tag = "revenue", params(RetentionQuery),
    responses((status = 200, body = Retention), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_retention(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RetentionQuery>,
) -> Result<Json<Retention>, ApiError> {
    let r = state
        .services
        .revenue
        .clone()
        .get_retention(caller.request(rev::GetRetentionRequest {
            start_at: Some(timestamp(q.start)),
            end_at: Some(timestamp(q.end)),
            segment: q.segment.unwrap_or_default().into(),
            owner: q.owner.unwrap_or_default(),
            ..rev::GetRetentionRequest::default()
        }))
        .await
        .map_err(revenue_error)?
        .into_inner();
    Ok(Json(r.into()))
}

/// Months and filters of the cohort grid.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CohortRetentionQuery {
    /// First cohort month, `YYYY-MM`.
    start_month: String,
    /// Last cohort month (inclusive), `YYYY-MM`.
    end_month: String,
    /// Months since first payment to report (default 12).
    months: Option<i32>,
    /// Only this segment.
    segment: Option<Segment>,
}

/// The cohort grid: logo and MRR retention by months since the first payment.
#[utoipa::path(get, path = "/api/v1/revenue/cohorts", tag = "revenue",
    params(CohortRetentionQuery),
    responses((status = 200, body = CohortRetention), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_cohort_retention(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<CohortRetentionQuery>,
) -> Result<Json<CohortRetention>, ApiError> {
    let r = state
        .services
        .revenue
        .clone()
        .get_cohort_retention(caller.request(rev::GetCohortRetentionRequest {
            start_month: q.start_month,
            end_month: q.end_month,
            months: q.months.unwrap_or(0),
            segment: q.segment.unwrap_or_default().into(),
        }))
        .await
        .map_err(revenue_error)?
        .into_inner();
    Ok(Json(r.into()))
}

/// Filters and paging of the movements.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MovementsQuery {
    /// From this instant (RFC 3339).
    start: DateTime<Utc>,
    /// Before this instant (RFC 3339).
    end: DateTime<Utc>,
    /// Only this account.
    account_id: Option<String>,
    /// Only this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<MovementType>,
    /// Rows per page.
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// MRR movements, by time.
#[utoipa::path(get, path = "/api/v1/revenue/movements", tag = "revenue", params(MovementsQuery),
    responses((status = 200, body = MovementPage), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn list_movements(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<MovementsQuery>,
) -> Result<Json<MovementPage>, ApiError> {
    let r = state
        .services
        .revenue
        .clone()
        .list_movements(caller.request(rev::ListMovementsRequest {
            start_at: Some(timestamp(q.start)),
            end_at: Some(timestamp(q.end)),
            account_id: q.account_id.unwrap_or_default(),
            r#type: q.kind.unwrap_or_default().into(),
            page: page(q.page_size, q.page_token),
        }))
        .await
        .map_err(revenue_error)?
        .into_inner();
    Ok(Json(r.into()))
}

/// Window and filters of the renewal book.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RenewalsQuery {
    /// Renewal dates from this instant (RFC 3339).
    start: DateTime<Utc>,
    /// Before this instant (RFC 3339).
    end: DateTime<Utc>,
    /// Only this account.
    account_id: Option<String>,
    /// Rows per page.
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// The renewal book: what is up for renewal, at stake and forecast.
#[utoipa::path(get, path = "/api/v1/revenue/renewals", tag = "revenue", params(RenewalsQuery),
    responses((status = 200, body = RenewalPage), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn list_renewals(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RenewalsQuery>,
) -> Result<Json<RenewalPage>, ApiError> {
    let r = state
        .services
        .revenue
        .clone()
        .list_renewals(caller.request(rev::ListRenewalsRequest {
            start_at: Some(timestamp(q.start)),
            end_at: Some(timestamp(q.end)),
            account_id: q.account_id.unwrap_or_default(),
            page: page(q.page_size, q.page_token),
        }))
        .await
        .map_err(revenue_error)?
        .into_inner();
    Ok(Json(r.into()))
}

/// The month of the unit economics.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnitEconomicsQuery {
    /// `YYYY-MM`; its spend must have been recorded (else 409 FAILED_PRECONDITION).
    month: String,
}

/// CAC, LTV, LTV:CAC and payback of a month.
#[utoipa::path(get, path = "/api/v1/revenue/unit-economics", tag = "revenue",
    params(UnitEconomicsQuery),
    responses((status = 200, body = UnitEconomics), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_unit_economics(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<UnitEconomicsQuery>,
) -> Result<Json<UnitEconomics>, ApiError> {
    let r = state
        .services
        .revenue
        .clone()
        .get_unit_economics(caller.request(rev::GetUnitEconomicsRequest { month: q.month }))
        .await
        .map_err(revenue_error)?
        .into_inner();
    Ok(Json(r.into()))
}

/// Create a subscription (write scope).
#[utoipa::path(post, path = "/api/v1/subscriptions", tag = "revenue",
    request_body = NewSubscription,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = Subscription), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn create_subscription(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<NewSubscription>,
) -> Result<(StatusCode, Json<Subscription>), ApiError> {
    let r = state
        .services
        .revenue
        .clone()
        .create_subscription(caller.request(rev::CreateSubscriptionRequest {
            subscription: Some(body.to_pb()),
            idempotency_key: idempotency_key(&headers)?,
        }))
        .await
        .map_err(revenue_error)?
        .into_inner();
    let s = r.subscription.ok_or_else(|| missing("a subscription"))?;
    Ok((StatusCode::CREATED, Json(s.into())))
}

/// Get a subscription.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}", tag = "revenue",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = Subscription), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    let r = state
        .services
        .revenue
        .clone()
        .get_subscription(caller.request(rev::GetSubscriptionRequest { id }))
        .await
        .map_err(revenue_error)?
        .into_inner();
    Ok(Json(
        r.subscription
            .ok_or_else(|| missing("a subscription"))?
            .into(),
    ))
}

/// New terms of a subscription from a time on.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionChange {
    /// The new terms (the currency never changes).
    terms: Terms,
    /// When they take effect.
    effective_at: DateTime<Utc>,
    /// Apply only if the subscription is still at this version (else 409 ABORTED).
    expected_version: Option<i64>,
}

/// Change a subscription's terms (write scope): an upgrade or a downgrade.
#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/changes", tag = "revenue",
    request_body = SubscriptionChange,
    params(("id" = String, Path, description = "Subscription id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = Subscription), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn change_subscription(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<SubscriptionChange>,
) -> Result<Json<Subscription>, ApiError> {
    let r = state
        .services
        .revenue
        .clone()
        .change_subscription(caller.request(rev::ChangeSubscriptionRequest {
            id,
            terms: Some(body.terms.to_pb()),
            effective_at: Some(timestamp(body.effective_at)),
            idempotency_key: idempotency_key(&headers)?,
            expected_version: body.expected_version,
        }))
        .await
        .map_err(revenue_error)?
        .into_inner();
    Ok(Json(
        r.subscription
            .ok_or_else(|| missing("a subscription"))?
            .into(),
    ))
}

/// How and why a subscription ends.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionCancellation {
    /// When it stops; MRR is zero from then on.
    effective_at: DateTime<Utc>,
    /// VOLUNTARY or INVOLUNTARY.
    kind: CancellationKind,
    /// A code of the churn reason taxonomy, e.g. `price`.
    reason_code: String,
    /// Apply only if the subscription is still at this version (else 409 ABORTED).
    expected_version: Option<i64>,
}

/// Cancel a subscription (write scope).
#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/cancellation", tag = "revenue",
    request_body = SubscriptionCancellation,
    params(("id" = String, Path, description = "Subscription id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = Subscription), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn cancel_subscription(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<SubscriptionCancellation>,
) -> Result<Json<Subscription>, ApiError> {
    let r = state
        .services
        .revenue
        .clone()
        .cancel_subscription(caller.request(rev::CancelSubscriptionRequest {
            id,
            cancellation: Some(rev::Cancellation {
                effective_at: Some(timestamp(body.effective_at)),
                kind: body.kind.into(),
                reason_code: body.reason_code,
            }),
            idempotency_key: idempotency_key(&headers)?,
            expected_version: body.expected_version,
        }))
        .await
        .map_err(revenue_error)?
        .into_inner();
    Ok(Json(
        r.subscription
            .ok_or_else(|| missing("a subscription"))?
            .into(),
    ))
}
