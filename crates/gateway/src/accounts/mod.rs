//! REST routes over the accounts service: list, create, get, change and
//! upsert by external id. Each handler converts the HTTP request into one
//! gRPC request, calls the service with the caller's credentials and
//! converts the answer (or maps the status, see `error`). The
//! `#[utoipa::path]` attributes are the OpenAPI document; `routes!`
//! registers each handler in the router and the document at once, so no
//! route can be served undocumented.

mod model;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bowtie_proto::accounts as acc;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clients::Caller;
use crate::common::Segment;
use crate::error::{ApiError, ErrorBody};
use crate::export::{Format, FormatQuery, Report};
use crate::rest::{Body, Path, Query, idempotency_key, page};
use crate::schema;

pub use model::*;

/// The accounts routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, update_account))
        .routes(routes!(upsert_account_by_external_id))
}

/// The accounts service's answer, or its status as the API's error.
fn answer<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, ApiError> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| ApiError::from_status("accounts", &s))
}

/// Filters and paging of the account list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAccountsQuery {
    /// Only this segment.
    #[param(schema_with = Segment::input_schema)]
    segment: Option<Segment>,
    /// Only this owner (exact), at most 200 characters.
    #[param(schema_with = schema::optional_text::<200>)]
    owner: Option<String>,
    /// Only this CSM (exact), at most 200 characters.
    #[param(schema_with = schema::optional_text::<200>)]
    csm: Option<String>,
    /// Only this status.
    #[param(schema_with = AccountStatus::input_schema)]
    status: Option<AccountStatus>,
    /// Case-insensitive substring of the name, at most 200 characters.
    #[param(schema_with = schema::optional_text::<200>)]
    text: Option<String>,
    /// Only accounts with this tag (case-insensitive; blank = any).
    #[param(schema_with = schema::optional_tag)]
    tag: Option<String>,
    /// Only the caller's book: accounts whose CSM or owner it is (a manager:
    /// also its teams'). 400 naming `mine` for an API key with scopes only.
    mine: Option<bool>,
    /// Rows per page (default 50, at most 1000; more is 1000).
    #[param(minimum = 0)]
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// List accounts.
#[utoipa::path(get, path = "/api/v1/accounts", tag = "accounts",
    params(ListAccountsQuery, FormatQuery),
    responses((status = 200, content((AccountPage = "application/json"), (String = "text/csv"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn list_accounts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListAccountsQuery>,
    format: Format,
) -> Result<Report<AccountPage>, ApiError> {
    let request = caller.request(acc::ListAccountsRequest {
        segment: q.segment.unwrap_or_default().into(),
        owner: q.owner.unwrap_or_default(),
        csm: q.csm.unwrap_or_default(),
        status: q.status.unwrap_or_default().into(),
        text: q.text.unwrap_or_default(),
        tag: q.tag.unwrap_or_default(),
        attributes: std::collections::HashMap::new(),
        page: page(q.page_size, q.page_token),
        mine: q.mine.unwrap_or(false),
    });
    let mut accounts = state.services.accounts.clone();
    Ok(Report::new(
        format,
        "accounts",
        "accounts",
        answer(accounts.list_accounts(request).await)?.into(),
    ))
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
    let request = caller.request(acc::CreateAccountRequest {
        account: Some(body.to_pb()),
        idempotency_key: idempotency_key(&headers)?,
    });
    let mut accounts = state.services.accounts.clone();
    let r = answer(accounts.create_account(request).await)?;
    Ok((StatusCode::CREATED, Json(the_account(r.account)?)))
}

/// Get an account.
#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = "accounts",
    params(("id" = uuid::Uuid, Path, description = "Account id")),
    responses((status = 200, body = Account), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Account>, ApiError> {
    let request = caller.request(acc::GetAccountRequest { id });
    let mut accounts = state.services.accounts.clone();
    let r = answer(accounts.get_account(request).await)?;
    Ok(Json(the_account(r.account)?))
}

/// Change an account's fields (write scope); a stale `expected_version` is 409 ABORTED.
#[utoipa::path(patch, path = "/api/v1/accounts/{id}", tag = "accounts",
    request_body = AccountChanges,
    params(("id" = uuid::Uuid, Path, description = "Account id"),
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
    let request = caller.request(acc::UpdateAccountRequest {
        account: Some(account),
        update_mask: Some(prost_types::FieldMask { paths }),
        expected_version: body.expected_version,
        idempotency_key: idempotency_key(&headers)?,
    });
    let mut accounts = state.services.accounts.clone();
    let r = answer(accounts.update_account(request).await)?;
    Ok(Json(the_account(r.account)?))
}

/// The system and the id of an account there.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ExternalIdPath {
    /// The system, e.g. `hubspot`: 1 to 50 lower-case letters, digits, `-` or `_`.
    #[param(schema_with = schema::source)]
    source: String,
    /// The id in that system, 1 to 200 characters.
    #[param(schema_with = schema::text::<200>)]
    external_id: String,
}

/// Create or update the account another system knows as `{source}/{external_id}` (write scope).
#[utoipa::path(put, path = "/api/v1/accounts/by-external-id/{source}/{external_id}",
    tag = "accounts", request_body = NewAccount,
    params(ExternalIdPath,
           ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = UpsertedAccount), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn upsert_account_by_external_id(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(ExternalIdPath {
        source,
        external_id,
    }): Path<ExternalIdPath>,
    Body(body): Body<NewAccount>,
) -> Result<Json<UpsertedAccount>, ApiError> {
    let request = caller.request(acc::UpsertAccountByExternalIdRequest {
        external_id: Some(acc::ExternalId {
            source,
            external_id,
        }),
        account: Some(body.to_pb()),
        idempotency_key: idempotency_key(&headers)?,
        source_updated_at: None,
    });
    let mut accounts = state.services.accounts.clone();
    let r = answer(accounts.upsert_account_by_external_id(request).await)?;
    Ok(Json(r.try_into()?))
}
