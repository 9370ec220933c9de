//! REST routes over the revenue service: the MRR report, retention, the
//! cohort grid, movements, the renewal book, unit economics and the
//! subscription lifecycle.

mod model;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bowtie_proto::revenue as rev;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clients::Caller;
use crate::common::{Segment, timestamp};
use crate::error::{ApiError, ErrorBody};
use crate::export::{Format, FormatQuery, Report};
use crate::rest::{Body, Path, Query, id_filter, idempotency_key, missing, page};
use crate::schema;

pub use model::*;

/// The revenue routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_mrr_report))
        .routes(routes!(get_churn_analysis))
        .routes(routes!(get_trial_conversion))
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

fn revenue_error(s: tonic::Status) -> ApiError {
    ApiError::from_status("revenue", &s)
}

/// Calls the revenue service's `$method` with `$message` on behalf of
/// `$caller`, answering the response message (a failure returns the REST
/// error from the handler).
macro_rules! revenue {
    ($state:expr, $caller:expr, $method:ident, $message:expr) => {
        $state
            .services
            .revenue
            .clone()
            .$method($caller.request($message))
            .await
            .map_err(revenue_error)?
            .into_inner()
    };
}

/// The subscription a subscription call answers with.
fn subscription(s: Option<rev::Subscription>) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(s.ok_or_else(|| missing("a subscription"))?.into()))
}

/// Months and filters of the MRR report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MrrQuery {
    /// First month, `YYYY-MM`.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])$")]
    start_month: String,
    /// Last month (inclusive), `YYYY-MM`, within 120 months of `start_month`.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])$")]
    end_month: String,
    /// MONTH (default) or QUARTER.
    #[param(schema_with = Granularity::input_schema)]
    granularity: Option<Granularity>,
    /// Only this segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
}

/// Months, filters and cut of the MRR report (docs/design.md, "Cuts").
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MrrCutQuery {
    /// First month, `YYYY-MM`.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])$")]
    start_month: String,
    /// Last month (inclusive), `YYYY-MM`, within 120 months of `start_month`.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])$")]
    end_month: String,
    /// MONTH (default) or QUARTER.
    #[param(schema_with = Granularity::input_schema)]
    granularity: Option<Granularity>,
    /// Only this segment (not with `cut` or `group_by`).
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
    /// Only one value of this dimension: segment, plan, owner, csm, tag or attribute.
    #[param(schema_with = schema::optional_text::<20>)]
    cut: Option<String>,
    /// The value `cut` keeps.
    #[param(schema_with = schema::optional_text::<200>)]
    cut_value: Option<String>,
    /// Break the report down by this dimension: segment, plan, owner, csm, tag or attribute.
    #[param(schema_with = schema::optional_text::<20>)]
    group_by: Option<String>,
    /// With `attribute`: the declared attribute's name.
    #[param(schema_with = schema::optional_text::<50>)]
    attribute: Option<String>,
}

/// Cut and group-by of a revenue report as the query gives them: `cut`
/// with `cut_value` keeps one value of one dimension, `group_by` breaks the
/// report down by one; `attribute` names the declared attribute of the
/// `attribute` dimension.
#[derive(Debug, Default)]
struct CutParams {
    cut: Option<String>,
    cut_value: Option<String>,
    group_by: Option<String>,
    attribute: Option<String>,
}

/// The code of a dimension's name; an unknown name is sent as an unknown
/// code, which the service refuses naming the field.
fn dimension_code(name: &str) -> i32 {
    use rev::CutDimension as D;
    match name.to_ascii_lowercase().as_str() {
        "segment" => D::Segment as i32,
        "plan" => D::Plan as i32,
        "owner" => D::Owner as i32,
        "csm" => D::Csm as i32,
        "tag" => D::Tag as i32,
        "attribute" => D::Attribute as i32,
        _ => -1,
    }
}

impl CutParams {
    /// The service's cut and group-by messages.
    fn messages(self) -> (Option<rev::Cut>, Option<rev::GroupBy>) {
        let attribute = self.attribute.unwrap_or_default();
        let cut = self.cut.map(|name| rev::Cut {
            dimension: dimension_code(&name),
            attribute: attribute.clone(),
            value: self.cut_value.unwrap_or_default(),
        });
        let group_by = self.group_by.map(|name| rev::GroupBy {
            dimension: dimension_code(&name),
            attribute: if cut.is_none() {
                attribute
            } else {
                String::new()
            },
        });
        (cut, group_by)
    }
}

/// The MRR waterfall and ARR per month or quarter, optionally cut or
/// grouped by plan, segment, owner, CSM, tag or attribute.
#[utoipa::path(get, path = "/api/v1/revenue/mrr", tag = "revenue",
    params(MrrCutQuery, FormatQuery),
    responses((status = 200, content((MrrReport = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_mrr_report(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(q): Query<MrrCutQuery>,
) -> Result<Report<MrrReport>, ApiError> {
    let (cut, group_by) = CutParams {
        cut: q.cut,
        cut_value: q.cut_value,
        group_by: q.group_by,
        attribute: q.attribute,
    }
    .messages();
    let message = rev::GetMrrReportRequest {
        start_month: q.start_month,
        end_month: q.end_month,
        granularity: q.granularity.unwrap_or_default().into(),
        segment: q.segment.unwrap_or_default().into(),
        cut,
        group_by,
    };
    Ok(Report::new(
        format,
        "mrr",
        "periods",
        revenue!(state, caller, get_mrr_report, message).into(),
    ))
}

/// Churn and contraction per month or quarter by reason code and by kind
/// (same months and filters as the MRR report).
#[utoipa::path(get, path = "/api/v1/revenue/churn", tag = "revenue",
    params(MrrQuery, FormatQuery),
    responses((status = 200, content((ChurnAnalysis = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_churn_analysis(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(q): Query<MrrQuery>,
) -> Result<Report<ChurnAnalysis>, ApiError> {
    let message = rev::GetChurnAnalysisRequest {
        start_month: q.start_month,
        end_month: q.end_month,
        granularity: q.granularity.unwrap_or_default().into(),
        segment: q.segment.unwrap_or_default().into(),
    };
    Ok(Report::new(
        format,
        "churn",
        "periods",
        revenue!(state, caller, get_churn_analysis, message).into(),
    ))
}

/// Months and cut of the trial-to-paid report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrialQuery {
    /// First month, `YYYY-MM`: trials started from it on.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])$")]
    start_month: String,
    /// Last month (inclusive), `YYYY-MM`, within 120 months of `start_month`.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])$")]
    end_month: String,
    /// MONTH (default) or QUARTER.
    #[param(schema_with = Granularity::input_schema)]
    granularity: Option<Granularity>,
    /// Only one value of this dimension, as the trial started: segment, plan, owner, csm, tag or attribute.
    #[param(schema_with = schema::optional_text::<20>)]
    cut: Option<String>,
    /// The value `cut` keeps.
    #[param(schema_with = schema::optional_text::<200>)]
    cut_value: Option<String>,
    /// With `cut=attribute`: the declared attribute's name.
    #[param(schema_with = schema::optional_text::<50>)]
    attribute: Option<String>,
}

/// Trial-to-paid conversion: of the trials started in each month or
/// quarter, how many paid, how many are still in their trial, and the
/// median days to the first payment.
#[utoipa::path(get, path = "/api/v1/revenue/trials", tag = "revenue",
    params(TrialQuery, FormatQuery),
    responses((status = 200, content((TrialConversion = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_trial_conversion(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(q): Query<TrialQuery>,
) -> Result<Report<TrialConversion>, ApiError> {
    let (cut, _) = CutParams {
        cut: q.cut,
        cut_value: q.cut_value,
        group_by: None,
        attribute: q.attribute,
    }
    .messages();
    let message = rev::GetTrialConversionRequest {
        start_month: q.start_month,
        end_month: q.end_month,
        granularity: q.granularity.unwrap_or_default().into(),
        cut,
    };
    Ok(Report::new(
        format,
        "trials",
        "periods",
        revenue!(state, caller, get_trial_conversion, message).into(),
    ))
}

/// Period and filters of the retention figures.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetentionQuery {
    /// t0 (RFC 3339): the cohort is every account paying then.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    start: DateTime<Utc>,
    /// t1 (RFC 3339).
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    end: DateTime<Utc>,
    /// Only this segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
    /// Only accounts closed by this owner, at most 200 characters.
    #[param(schema_with = schema::optional_text::<200>)]
    owner: Option<String>,
    /// Only one value of this dimension: segment, plan, owner, csm, tag or attribute.
    #[param(schema_with = schema::optional_text::<20>)]
    cut: Option<String>,
    /// The value `cut` keeps.
    #[param(schema_with = schema::optional_text::<200>)]
    cut_value: Option<String>,
    /// Break the report down by this dimension: segment, plan, owner, csm, tag or attribute.
    #[param(schema_with = schema::optional_text::<20>)]
    group_by: Option<String>,
    /// With `attribute`: the declared attribute's name.
    #[param(schema_with = schema::optional_text::<50>)]
    attribute: Option<String>,
}

/// Logo retention, GRR and NRR of the accounts paying at `start`.
#[utoipa::path(get, path = "/api/v1/revenue/retention", tag = "revenue",
    params(RetentionQuery, FormatQuery),
    responses((status = 200, content((Retention = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_retention(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(q): Query<RetentionQuery>,
) -> Result<Report<Retention>, ApiError> {
    let (cut, group_by) = CutParams {
        cut: q.cut,
        cut_value: q.cut_value,
        group_by: q.group_by,
        attribute: q.attribute,
    }
    .messages();
    let message = rev::GetRetentionRequest {
        start_at: Some(timestamp(q.start)),
        end_at: Some(timestamp(q.end)),
        segment: q.segment.unwrap_or_default().into(),
        owner: q.owner.unwrap_or_default(),
        cut,
        group_by,
        ..rev::GetRetentionRequest::default()
    };
    Ok(Report::new(
        format,
        "retention",
        "",
        revenue!(state, caller, get_retention, message).into(),
    ))
}

/// Months and filters of the cohort grid.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CohortRetentionQuery {
    /// First cohort month, `YYYY-MM`.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])$")]
    start_month: String,
    /// Last cohort month (inclusive), `YYYY-MM`, within 36 months after `start_month`.
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])$")]
    end_month: String,
    /// Months since first payment to report, 0 to 36 (0 or absent: 12).
    #[param(minimum = 0, maximum = 36)]
    months: Option<i32>,
    /// Only this segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
    /// Only one value of this dimension: segment, plan, owner, csm, tag or attribute.
    #[param(schema_with = schema::optional_text::<20>)]
    cut: Option<String>,
    /// The value `cut` keeps.
    #[param(schema_with = schema::optional_text::<200>)]
    cut_value: Option<String>,
    /// With `cut=attribute`: the declared attribute's name.
    #[param(schema_with = schema::optional_text::<50>)]
    attribute: Option<String>,
}

/// The cohort grid: logo and MRR retention by months since the first payment.
#[utoipa::path(get, path = "/api/v1/revenue/cohorts", tag = "revenue",
    params(CohortRetentionQuery, FormatQuery),
    responses((status = 200,
               content((CohortRetention = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_cohort_retention(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(q): Query<CohortRetentionQuery>,
) -> Result<Report<CohortRetention>, ApiError> {
    let (cut, _) = CutParams {
        cut: q.cut,
        cut_value: q.cut_value,
        attribute: q.attribute,
        ..CutParams::default()
    }
    .messages();
    let message = rev::GetCohortRetentionRequest {
        start_month: q.start_month,
        end_month: q.end_month,
        months: q.months.unwrap_or(0),
        segment: q.segment.unwrap_or_default().into(),
        cut,
    };
    Ok(Report::new(
        format,
        "cohorts",
        "cohorts",
        revenue!(state, caller, get_cohort_retention, message).into(),
    ))
}

/// Filters and paging of the movements.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MovementsQuery {
    /// From this instant (RFC 3339).
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    start: DateTime<Utc>,
    /// Before this instant (RFC 3339).
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    end: DateTime<Utc>,
    /// Only this account.
    #[param(schema_with = schema::uuid)]
    account_id: Option<String>,
    /// Only this type.
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = MovementType::input_schema)]
    kind: Option<MovementType>,
    /// Rows per page (default 50, at most 1000; more is 1000, but as CSV
    /// more is 409 FAILED_PRECONDITION naming the streaming export).
    #[param(minimum = 0)]
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// Most movements one CSV response holds (a page).
const MAX_CSV_MOVEMENTS: i32 = 1000;

/// MRR movements, by time.
#[utoipa::path(get, path = "/api/v1/revenue/movements", tag = "revenue",
    params(MovementsQuery, FormatQuery),
    responses((status = 200, content((MovementPage = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_movements(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(q): Query<MovementsQuery>,
) -> Result<Report<MovementPage>, ApiError> {
    if format == Format::Csv && q.page_size.is_some_and(|n| n > MAX_CSV_MOVEMENTS) {
        return Err(ApiError::failed_precondition(
            "page_size",
            format!(
                "a CSV of more than {MAX_CSV_MOVEMENTS} movements does not fit one response: \
                 stream them from GET /api/v1/export/movements (JSON lines, resumable by cursor)"
            ),
        ));
    }
    let message = rev::ListMovementsRequest {
        start_at: Some(timestamp(q.start)),
        end_at: Some(timestamp(q.end)),
        account_id: id_filter("account_id", q.account_id)?,
        r#type: q.kind.unwrap_or_default().into(),
        page: page(q.page_size, q.page_token),
    };
    Ok(Report::new(
        format,
        "movements",
        "movements",
        revenue!(state, caller, list_movements, message).into(),
    ))
}

/// Window and filters of the renewal book.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RenewalsQuery {
    /// Renewal dates from this instant (RFC 3339).
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    start: DateTime<Utc>,
    /// Before this instant (RFC 3339).
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    end: DateTime<Utc>,
    /// Only this account.
    #[param(schema_with = schema::uuid)]
    account_id: Option<String>,
    /// Rows per page (default 50, at most 1000; more is 1000).
    #[param(minimum = 0)]
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// The renewal book: what is up for renewal, at stake and forecast.
#[utoipa::path(get, path = "/api/v1/revenue/renewals", tag = "revenue",
    params(RenewalsQuery, FormatQuery),
    responses((status = 200, content((RenewalPage = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_renewals(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(q): Query<RenewalsQuery>,
) -> Result<Report<RenewalPage>, ApiError> {
    let message = rev::ListRenewalsRequest {
        start_at: Some(timestamp(q.start)),
        end_at: Some(timestamp(q.end)),
        account_id: id_filter("account_id", q.account_id)?,
        page: page(q.page_size, q.page_token),
    };
    Ok(Report::new(
        format,
        "renewals",
        "renewals",
        revenue!(state, caller, list_renewals, message).into(),
    ))
}

/// The month of the unit economics.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnitEconomicsQuery {
    /// `YYYY-MM`; its spend must have been recorded (else 409 FAILED_PRECONDITION).
    #[param(pattern = "^(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:0[1-9]|1[0-2])$")]
    month: String,
}

/// CAC, LTV, LTV:CAC and payback of a month.
#[utoipa::path(get, path = "/api/v1/revenue/unit-economics", tag = "revenue",
    params(UnitEconomicsQuery, FormatQuery),
    responses((status = 200, content((UnitEconomics = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_unit_economics(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
    Query(q): Query<UnitEconomicsQuery>,
) -> Result<Report<UnitEconomics>, ApiError> {
    let message = rev::GetUnitEconomicsRequest { month: q.month };
    Ok(Report::new(
        format,
        "unit-economics",
        "",
        revenue!(state, caller, get_unit_economics, message).into(),
    ))
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
    let message = rev::CreateSubscriptionRequest {
        subscription: Some(body.to_pb()),
        idempotency_key: idempotency_key(&headers)?,
    };
    let created = revenue!(state, caller, create_subscription, message);
    Ok((StatusCode::CREATED, subscription(created.subscription)?))
}

/// Get a subscription.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}", tag = "revenue",
    params(("id" = uuid::Uuid, Path, description = "Subscription id")),
    responses((status = 200, body = Subscription), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    let message = rev::GetSubscriptionRequest { id };
    subscription(revenue!(state, caller, get_subscription, message).subscription)
}

/// Change a subscription's terms (write scope): an upgrade or a downgrade.
#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/changes", tag = "revenue",
    request_body = SubscriptionChange,
    params(("id" = uuid::Uuid, Path, description = "Subscription id"),
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
    let message = rev::ChangeSubscriptionRequest {
        id,
        terms: Some(body.terms.to_pb()),
        effective_at: Some(timestamp(body.effective_at)),
        idempotency_key: idempotency_key(&headers)?,
        expected_version: body.expected_version,
    };
    subscription(revenue!(state, caller, change_subscription, message).subscription)
}

/// Cancel a subscription (write scope).
#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/cancellation", tag = "revenue",
    request_body = SubscriptionCancellation,
    params(("id" = uuid::Uuid, Path, description = "Subscription id"),
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
    let message = rev::CancelSubscriptionRequest {
        id,
        cancellation: Some(rev::Cancellation {
            effective_at: Some(timestamp(body.effective_at)),
            kind: body.kind.into(),
            reason_code: body.reason_code,
        }),
        idempotency_key: idempotency_key(&headers)?,
        expected_version: body.expected_version,
    };
    subscription(revenue!(state, caller, cancel_subscription, message).subscription)
}

/// The document with the configured churn reasons as the values of a
/// cancellation's `reason_code`.
pub fn with_churn_reasons(
    mut openapi: utoipa::openapi::OpenApi,
    churn_reasons: &[String],
) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    let cancellation = openapi
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("SubscriptionCancellation"));
    if let Some(RefOr::T(Schema::Object(object))) = cancellation {
        object.properties.insert(
            "reason_code".to_owned(),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "A code of the churn reason taxonomy (`revenue_policy.churn_reasons`)",
                ))
                .enum_values(Some(churn_reasons.iter().cloned()))
                .into(),
        );
    }
    openapi
}
