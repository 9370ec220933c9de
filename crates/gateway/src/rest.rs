//! What every REST handler shares: extractors that answer a malformed query,
//! path or body in the error shape, the `Idempotency-Key` header, paging and
//! periods, and the error for an answer missing its payload.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::HeaderMap;
use bowtie_proto::common;
use chrono::{DateTime, Utc};

use crate::common::timestamp;
use crate::error::ApiError;

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
pub fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
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

/// An optional id filter: absent is none, present must be an id (the
/// services read an empty id as none, the document calls it invalid).
pub fn id_filter(field: &str, value: Option<String>) -> Result<String, ApiError> {
    match value {
        Some(v) if v.is_empty() => Err(ApiError::invalid(field, "must be a UUID")),
        v => Ok(v.unwrap_or_default()),
    }
}

/// The page request of a list call.
pub fn page(page_size: Option<i32>, page_token: Option<String>) -> Option<common::PageRequest> {
    Some(common::PageRequest {
        page_size: page_size.unwrap_or(0),
        page_token: page_token.unwrap_or_default(),
    })
}

/// The period of a report.
pub fn period(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<common::Period> {
    Some(common::Period {
        start: Some(timestamp(start)),
        end: Some(timestamp(end)),
    })
}

/// The error for a service answer that lacks what it must carry.
pub fn missing(what: &str) -> ApiError {
    ApiError::internal(&format!("the service answered without {what}"))
}
