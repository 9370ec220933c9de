//! Streaming exports for a warehouse load: `GET /api/v1/export/{kind}`
//! answers every row of accounts, subscriptions, movements, transitions or
//! health as JSON lines (`application/x-ndjson`), streamed from the
//! service's server-streaming `Export*` RPC as its batches arrive. Each
//! line is `{"cursor": ..., "<row>": {...}}`; `?cursor=` resumes after the
//! row the cursor came with. A bad cursor is a 400 before the first line;
//! a failure mid-stream ends the response early (the client resumes from
//! the last cursor it read). docs/gateway.md ("Streaming exports").

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bowtie_proto::{accounts as acc, funnel as fun, revenue as rev};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::accounts::Account;
use crate::clients::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::funnel::Transition;
use crate::rest::Query;
use crate::revenue::{Movement, Subscription};

/// The export routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export_accounts))
        .routes(routes!(export_movements))
        .routes(routes!(export_subscriptions))
        .routes(routes!(export_transitions))
}

/// Where an export resumes and how many rows the service reads at a time.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// The `cursor` of the last line read: continue after that row.
    cursor: Option<String>,
    /// Rows the service reads per batch, 1 to 5000 (default 1000).
    #[param(minimum = 0, maximum = 5000)]
    batch_size: Option<i32>,
}

/// An account line of the accounts export.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedAccount {
    /// Resumes the export after this row (`?cursor=`).
    pub cursor: String,
    /// The account.
    pub account: Account,
}

/// A movement line of the movements export.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedMovement {
    /// Resumes the export after this row (`?cursor=`).
    pub cursor: String,
    /// The movement.
    pub movement: Movement,
}

/// A subscription line of the subscriptions export.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedSubscription {
    /// Resumes the export after this row (`?cursor=`).
    pub cursor: String,
    /// The subscription.
    pub subscription: Subscription,
}

/// A transition line of the transitions export.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedTransition {
    /// Resumes the export after this row (`?cursor=`).
    pub cursor: String,
    /// The transition.
    pub transition: Transition,
}

/// The lines of a batch of the accounts export.
pub fn account_lines(m: acc::ExportAccountsResponse) -> Vec<ExportedAccount> {
    m.rows
        .into_iter()
        .map(|r| ExportedAccount {
            cursor: r.cursor,
            account: r.account.unwrap_or_default().into(),
        })
        .collect()
}

/// The lines of a batch of the movements export.
pub fn movement_lines(m: rev::ExportMovementsResponse) -> Vec<ExportedMovement> {
    m.rows
        .into_iter()
        .map(|r| ExportedMovement {
            cursor: r.cursor,
            movement: r.movement.unwrap_or_default().into(),
        })
        .collect()
}

/// The lines of a batch of the subscriptions export.
pub fn subscription_lines(m: rev::ExportSubscriptionsResponse) -> Vec<ExportedSubscription> {
    m.rows
        .into_iter()
        .map(|r| ExportedSubscription {
            cursor: r.cursor,
            subscription: r.subscription.unwrap_or_default().into(),
        })
        .collect()
}

/// The lines of a batch of the transitions export.
pub fn transition_lines(m: fun::ExportTransitionsResponse) -> Vec<ExportedTransition> {
    m.rows
        .into_iter()
        .map(|r| ExportedTransition {
            cursor: r.cursor,
            transition: r.transition.unwrap_or_default().into(),
        })
        .collect()
}

/// The JSON lines of a service's export stream: each message's rows, one
/// line each, as the messages arrive. A failed call (a bad cursor) is the
/// error in the REST shape.
pub(crate) fn ndjson<M, T>(
    service: &'static str,
    answer: Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>,
    rows: fn(M) -> Vec<T>,
) -> Result<Response, ApiError>
where
    M: Send + 'static,
    T: Serialize + 'static,
{
    let stream = answer
        .map_err(|s| ApiError::from_status(service, &s))?
        .into_inner();
    let body = stream.map(move |message| {
        let message =
            message.map_err(|s| std::io::Error::other(format!("{service}: {}", s.message())))?;
        let mut out = Vec::new();
        for row in rows(message) {
            serde_json::to_writer(&mut out, &row).map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
        Ok::<Bytes, std::io::Error>(Bytes::from(out))
    });
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// Every account (archived ones too), in creation order, as JSON lines.
#[utoipa::path(get, path = "/api/v1/export/accounts", tag = "export",
    params(ExportQuery),
    responses((status = 200, content((ExportedAccount = "application/x-ndjson"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn export_accounts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let request = caller.request(acc::ExportAccountsRequest {
        cursor: q.cursor.unwrap_or_default(),
        batch_size: q.batch_size.unwrap_or(0),
    });
    let answer = state
        .services
        .accounts
        .clone()
        .export_accounts(request)
        .await;
    ndjson("accounts", answer, account_lines)
}

/// Every MRR movement, by time then account, as JSON lines.
#[utoipa::path(get, path = "/api/v1/export/movements", tag = "export",
    params(ExportQuery),
    responses((status = 200, content((ExportedMovement = "application/x-ndjson"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn export_movements(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let request = caller.request(rev::ExportMovementsRequest {
        cursor: q.cursor.unwrap_or_default(),
        batch_size: q.batch_size.unwrap_or(0),
    });
    let answer = state
        .services
        .revenue
        .clone()
        .export_movements(request)
        .await;
    ndjson("revenue", answer, movement_lines)
}

/// Every subscription, by id (creation order), as JSON lines.
#[utoipa::path(get, path = "/api/v1/export/subscriptions", tag = "export",
    params(ExportQuery),
    responses((status = 200, content((ExportedSubscription = "application/x-ndjson"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn export_subscriptions(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let request = caller.request(rev::ExportSubscriptionsRequest {
        cursor: q.cursor.unwrap_or_default(),
        batch_size: q.batch_size.unwrap_or(0),
    });
    let answer = state
        .services
        .revenue
        .clone()
        .export_subscriptions(request)
        .await;
    ndjson("revenue", answer, subscription_lines)
}

/// Every recorded transition, in the order recorded, as JSON lines.
#[utoipa::path(get, path = "/api/v1/export/transitions", tag = "export",
    params(ExportQuery),
    responses((status = 200, content((ExportedTransition = "application/x-ndjson"))),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn export_transitions(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let request = caller.request(fun::ExportTransitionsRequest {
        cursor: q.cursor.unwrap_or_default(),
        batch_size: q.batch_size.unwrap_or(0),
    });
    let answer = state
        .services
        .funnel
        .clone()
        .export_transitions(request)
        .await;
    ndjson("funnel", answer, transition_lines)
}
