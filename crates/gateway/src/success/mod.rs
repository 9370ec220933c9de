//! REST routes over the success service: the playbooks and how well each
//! works, the CTAs (a person's work list, one CTA, moving it along), and an
//! account's timeline with the activities people log on it, each person's
//! book of business and the touches they logged.

mod model;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bowtie_proto::success as suc;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clients::Caller;
use crate::common::timestamp;
use crate::error::{ApiError, ErrorBody};
use crate::export::{Format, FormatQuery, Report};
use crate::rest::{Body, Path, Query, id_filter, idempotency_key, missing, page, period};
use crate::schema;

pub use model::*;

/// The success routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_playbooks))
        .routes(routes!(get_effectiveness))
        .routes(routes!(list_ctas))
        .routes(routes!(get_cta))
        .routes(routes!(change_status))
        .routes(routes!(list_timeline, log_activity))
        .routes(routes!(get_book))
        .routes(routes!(get_touches))
}

/// The answer of a success call, or its error in the REST shape.
fn answer<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, ApiError> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| ApiError::from_status("success", &s))
}

/// Every playbook's current version, by name.
#[utoipa::path(get, path = "/api/v1/success/playbooks", tag = "success", params(FormatQuery),
    responses((status = 200, content((PlaybookList = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_playbooks(
    State(state): State<AppState>,
    caller: Caller,
    format: Format,
) -> Result<Report<PlaybookList>, ApiError> {
    let mut success = state.services.success.clone();
    let r = answer(
        success
            .list_playbooks(caller.request(suc::ListPlaybooksRequest {}))
            .await,
    )?;
    Ok(Report::new(
        format,
        "playbooks",
        "playbooks",
        PlaybookList {
            playbooks: r.playbooks.into_iter().map(Playbook::from).collect(),
        },
    ))
}

/// The period of an effectiveness report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    /// First instant of the period (triggers from then count).
    #[param(schema_with = schema::time)]
    start: DateTime<Utc>,
    /// First instant after it; after `start`, at most 10 years later.
    #[param(schema_with = schema::time)]
    end: DateTime<Utc>,
}

/// How well a playbook works: triggers, matured triggers and churn for the
/// treated accounts and the comparison group, the effect with its 95%
/// interval, SLA and outcome counts.
#[utoipa::path(get, path = "/api/v1/success/playbooks/{id}/effectiveness", tag = "success",
    params(FormatQuery, ("id" = uuid::Uuid, Path, description = "Playbook id"), PeriodQuery),
    responses((status = 200, content((Effectiveness = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_effectiveness(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PeriodQuery>,
    format: Format,
) -> Result<Report<Effectiveness>, ApiError> {
    let mut success = state.services.success.clone();
    let r = answer(
        success
            .get_playbook_effectiveness(caller.request(suc::GetPlaybookEffectivenessRequest {
                playbook_id: id,
                period: period(q.start, q.end),
            }))
            .await,
    )?;
    Ok(Report::new(format, "effectiveness", "", r.into()))
}

/// Filters and paging of the CTA list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CtasQuery {
    /// Only this owner.
    #[param(schema_with = schema::optional_text::<200>)]
    owner: Option<String>,
    /// Only this account.
    #[param(schema_with = schema::uuid)]
    account_id: Option<String>,
    /// Only this playbook.
    #[param(schema_with = schema::uuid)]
    playbook_id: Option<String>,
    /// Only this status; every status but CLOSED when left out.
    #[param(schema_with = CtaStatus::input_schema)]
    status: Option<CtaStatus>,
    /// Only CTAs past their due time and not closed.
    overdue_only: Option<bool>,
    /// Only the caller's book: CTAs it owns and those of accounts whose CSM
    /// or owner it is (a manager: also its teams'). 400 naming `mine` for an
    /// API key with scopes only.
    mine: Option<bool>,
    /// Rows per page (default 50, at most 1000; more is 1000).
    #[param(minimum = 0)]
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// CTAs by owner, account, playbook and status, the earliest due first.
#[utoipa::path(get, path = "/api/v1/success/ctas", tag = "success",
    params(CtasQuery, FormatQuery),
    responses((status = 200, content((CtaPage = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_ctas(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<CtasQuery>,
    format: Format,
) -> Result<Report<CtaPage>, ApiError> {
    let request = suc::ListCtasRequest {
        owner: q.owner.unwrap_or_default(),
        account_id: id_filter("account_id", q.account_id)?,
        playbook_id: id_filter("playbook_id", q.playbook_id)?,
        status: q.status.unwrap_or_default().into(),
        overdue_only: q.overdue_only.unwrap_or(false),
        page: page(q.page_size, q.page_token),
        mine: q.mine.unwrap_or(false),
    };
    let mut success = state.services.success.clone();
    let r = answer(success.list_ctas(caller.request(request)).await)?;
    Ok(Report::new(
        format,
        "ctas",
        "ctas",
        CtaPage {
            ctas: r.ctas.into_iter().map(Cta::from).collect(),
            next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
        },
    ))
}

/// One CTA with its tasks and comments.
#[utoipa::path(get, path = "/api/v1/success/ctas/{id}", tag = "success",
    params(("id" = uuid::Uuid, Path, description = "CTA id")),
    responses((status = 200, body = Cta), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_cta(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Cta>, ApiError> {
    let mut success = state.services.success.clone();
    let r = answer(
        success
            .get_cta(caller.request(suc::GetCtaRequest { id }))
            .await,
    )?;
    Ok(Json(r.cta.ok_or_else(|| missing("the CTA"))?.into()))
}

/// Moves a CTA along its lifecycle at the version it was read: start it,
/// snooze it until a date, close it with an outcome, or reopen it.
#[utoipa::path(post, path = "/api/v1/success/ctas/{id}/status", tag = "success",
    request_body = StatusChange,
    params(("id" = uuid::Uuid, Path, description = "CTA id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = Cta), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn change_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<StatusChange>,
) -> Result<Json<Cta>, ApiError> {
    let request = body.to_pb(id, idempotency_key(&headers)?);
    let mut success = state.services.success.clone();
    let r = answer(success.update_cta_status(caller.request(request)).await)?;
    Ok(Json(r.cta.ok_or_else(|| missing("the CTA"))?.into()))
}

/// Filters and paging of a timeline.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Only this kind.
    #[param(schema_with = ActivityKind::input_schema)]
    kind: Option<ActivityKind>,
    /// Only this author.
    #[param(schema_with = schema::optional_text::<200>)]
    author: Option<String>,
    /// Rows per page (default 50, at most 1000; more is 1000).
    #[param(minimum = 0)]
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// An account's timeline, newest first: what people logged and what
/// happened (stage changes, alerts, MRR movements, CTA events).
#[utoipa::path(get, path = "/api/v1/accounts/{id}/timeline", tag = "success",
    params(FormatQuery, ("id" = uuid::Uuid, Path, description = "Account id"), TimelineQuery),
    responses((status = 200, content((ActivityPage = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<TimelineQuery>,
    format: Format,
) -> Result<Report<ActivityPage>, ApiError> {
    let request = suc::ListActivitiesRequest {
        account_id: id,
        kinds: q.kind.map(i32::from).into_iter().collect(),
        author: q.author.unwrap_or_default(),
        page: page(q.page_size, q.page_token),
    };
    let mut success = state.services.success.clone();
    let r = answer(success.list_activities(caller.request(request)).await)?;
    Ok(Report::new(
        format,
        "timeline",
        "activities",
        ActivityPage {
            activities: r.activities.into_iter().map(Activity::from).collect(),
            next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
        },
    ))
}

/// Logs a note, call, meeting or email on an account's timeline.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/timeline", tag = "success",
    request_body = NewActivity,
    params(("id" = uuid::Uuid, Path, description = "Account id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = Activity), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn log_activity(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<NewActivity>,
) -> Result<(StatusCode, Json<Activity>), ApiError> {
    let request = suc::LogActivityRequest {
        account_id: id,
        kind: body.kind.into(),
        author: body.author,
        occur_time: body.occurred_at.map(timestamp),
        text: body.text,
        participants: body.participants,
        idempotency_key: idempotency_key(&headers)?,
    };
    let mut success = state.services.success.clone();
    let r = answer(success.log_activity(caller.request(request)).await)?;
    let activity = r.activity.ok_or_else(|| missing("the activity"))?;
    Ok((StatusCode::CREATED, Json(activity.into())))
}

/// Whose books, and the retention period.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BookQuery {
    /// By CSM (the default) or by owner.
    #[param(schema_with = BookGrouping::input_schema)]
    by: Option<BookGrouping>,
    /// Only this person's book.
    #[param(schema_with = schema::optional_text::<200>)]
    person: Option<String>,
    /// Only the books of the caller's people: its own (a manager: also its
    /// teams' members'). 400 naming `mine` for an API key with scopes only.
    mine: Option<bool>,
    /// First instant of the retention period.
    #[param(schema_with = schema::time)]
    start: DateTime<Utc>,
    /// First instant after it; after `start`, at most 10 years later.
    #[param(schema_with = schema::time)]
    end: DateTime<Utc>,
}

/// Each CSM's (or owner's) book of business: accounts, ARR, health, red and
/// high-risk accounts, open and overdue CTAs, renewals in the next 90 days
/// with their forecast, and logo retention, GRR and NRR over the period.
#[utoipa::path(get, path = "/api/v1/success/book", tag = "success",
    params(BookQuery, FormatQuery),
    responses((status = 200, content((BookOfBusiness = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_book(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<BookQuery>,
    format: Format,
) -> Result<Report<BookOfBusiness>, ApiError> {
    let request = suc::GetBookOfBusinessRequest {
        group_by: q.by.unwrap_or(BookGrouping::Csm).into(),
        person: q.person.unwrap_or_default(),
        period: period(q.start, q.end),
        mine: q.mine.unwrap_or(false),
    };
    let mut success = state.services.success.clone();
    let r = answer(success.get_book_of_business(caller.request(request)).await)?;
    Ok(Report::new(format, "book", "books", r.into()))
}

/// The period and filters of the touches report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TouchesQuery {
    /// First instant of the period (activities from then count).
    #[param(schema_with = schema::time)]
    start: DateTime<Utc>,
    /// First instant after it; after `start`, at most 366 days later.
    #[param(schema_with = schema::time)]
    end: DateTime<Utc>,
    /// Only activities on accounts of this owner.
    #[param(schema_with = schema::optional_text::<200>)]
    owner: Option<String>,
    /// Only this author.
    #[param(schema_with = schema::optional_text::<200>)]
    author: Option<String>,
    /// Also split each author's weeks by the account's owner.
    by_owner: Option<bool>,
}

/// The activities logged per author and ISO week: notes, calls, meetings,
/// emails, their total and the distinct accounts touched.
#[utoipa::path(get, path = "/api/v1/success/touches", tag = "success",
    params(TouchesQuery, FormatQuery),
    responses((status = 200, content((TouchesReport = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn get_touches(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<TouchesQuery>,
    format: Format,
) -> Result<Report<TouchesReport>, ApiError> {
    let request = suc::GetTouchesReportRequest {
        period: period(q.start, q.end),
        owner: q.owner.unwrap_or_default(),
        author: q.author.unwrap_or_default(),
        by_owner: q.by_owner.unwrap_or(false),
    };
    let mut success = state.services.success.clone();
    let r = answer(success.get_touches_report(caller.request(request)).await)?;
    Ok(Report::new(
        format,
        "touches",
        "touches",
        TouchesReport {
            touches: r.touches.into_iter().map(Touches::from).collect(),
        },
    ))
}
