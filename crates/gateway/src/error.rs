//! The one mapping of a gRPC status (and the gateway's own request errors)
//! to an HTTP response.
//!
//! Every failed call answers with the same JSON body,
//! `{"error": {"code", "message", "field_violations"}}`, where `code` is the
//! gRPC code name so clients can tell apart the cases that share an HTTP
//! status. The table, exhaustive over `tonic::Code` with no catch-all arm so
//! a new code cannot slip through unmapped:
//!
//! | gRPC                | HTTP |
//! |---------------------|------|
//! | INVALID_ARGUMENT    | 400 (with the field violations) |
//! | OUT_OF_RANGE        | 400 |
//! | UNAUTHENTICATED     | 401 |
//! | PERMISSION_DENIED   | 403 |
//! | NOT_FOUND           | 404 |
//! | ALREADY_EXISTS      | 409 |
//! | ABORTED             | 409 (stale version: re-read and retry) |
//! | FAILED_PRECONDITION | 409 (the resource's state forbids it) |
//! | RESOURCE_EXHAUSTED  | 429 |
//! | UNAVAILABLE         | 503 |
//! | DEADLINE_EXCEEDED   | 504 |
//! | anything else       | 500, generic message, cause logged |
//!
//! FAILED_PRECONDITION is 409 rather than 412 because 412 is HTTP's answer to
//! a failed conditional header (`If-Match`), which the gateway does not use;
//! the services return FAILED_PRECONDITION for a state conflict (an archived
//! account, a report whose inputs are missing), which is what 409 means.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use utoipa::ToSchema;

/// A field of the request that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldViolation {
    /// Path of the field, e.g. `account.name`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// The error of a failed call.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The gRPC code name, e.g. `INVALID_ARGUMENT`, `NOT_FOUND`, `ABORTED`.
    pub code: String,
    /// A human-readable explanation (generic for server errors).
    pub message: String,
    /// The offending fields (INVALID_ARGUMENT only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub field_violations: Vec<FieldViolation>,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error on its way to the HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
    /// Seconds to wait before retrying (a rate limit's `retry-after`).
    retry_after: Option<String>,
}

impl ApiError {
    /// A 400 naming one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            detail: ErrorDetail {
                code: "INVALID_ARGUMENT".into(),
                message: "the request is invalid".into(),
                field_violations: vec![FieldViolation {
                    field: field.into(),
                    description: description.into(),
                }],
            },
            retry_after: None,
        }
    }

    /// A 409 FAILED_PRECONDITION naming one field: the request is well
    /// formed but cannot be answered this way (`description` says how).
    pub fn failed_precondition(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            detail: ErrorDetail {
                code: "FAILED_PRECONDITION".into(),
                message: "the request cannot be answered this way".into(),
                field_violations: vec![FieldViolation {
                    field: field.into(),
                    description: description.into(),
                }],
            },
            retry_after: None,
        }
    }

    /// A 401: the caller sent no or a bad credential.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    /// A 404 for something not there (or switched off).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// A 413 for a body past a limit (Segment's 32 KB per call, 500 KB per batch).
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::PAYLOAD_TOO_LARGE, "RESOURCE_EXHAUSTED", message)
    }

    /// A 405 for a method the route does not serve; the router adds the
    /// `Allow` header listing the ones it does.
    pub fn method_not_allowed() -> Self {
        Self::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNIMPLEMENTED",
            "this route does not serve that method (see the Allow header)",
        )
    }

    /// A 500 with the generic message; the cause is logged here.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error.cause_chain = %cause, "internal error");
        Self::plain(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", GENERIC)
    }

    pub(crate) fn plain(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field_violations: Vec::new(),
            },
            retry_after: None,
        }
    }

    /// The HTTP status.
    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON error (the connectors report it per rejected event).
    pub fn detail(&self) -> &ErrorDetail {
        &self.detail
    }

    /// The response to a failed call to the `service` service.
    pub fn from_status(service: &str, status: &Status) -> Self {
        let code = effective_code(status);
        let (http, name) = http_status(code);
        let message = match code {
            Code::Unavailable | Code::DeadlineExceeded => {
                tracing::warn!(
                    service,
                    grpc.message = status.message(),
                    "service unavailable"
                );
                format!("the {service} service is unavailable; retry later")
            }
            code if http.is_server_error() => {
                tracing::error!(
                    service,
                    ?code,
                    grpc.message = status.message(),
                    "service error"
                );
                GENERIC.to_owned()
            }
            _ => status.message().to_owned(),
        };
        let field_violations: Vec<FieldViolation> = status
            .get_details_bad_request()
            .map(|b| {
                b.field_violations
                    .into_iter()
                    .map(|v| FieldViolation {
                        field: v.field,
                        description: v.description,
                    })
                    .collect()
            })
            .unwrap_or_default();
        // An idempotency key already used for another request conflicts
        // with what the server holds (like a stale version), which no
        // document can say of the request alone: 409, not 400.
        let http = if code == Code::InvalidArgument
            && !field_violations.is_empty()
            && field_violations
                .iter()
                .all(|v| v.field == "idempotency_key" && v.description.contains("already used"))
        {
            StatusCode::CONFLICT
        } else {
            http
        };
        let retry_after = status
            .metadata()
            .get(bowtie_runtime::auth::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Self {
            status: http,
            detail: ErrorDetail {
                code: name.to_owned(),
                message,
                field_violations,
            },
            retry_after,
        }
    }
}

const GENERIC: &str = "internal error; it has been logged";

/// The code that describes what happened: tonic reports the expiry of the
/// gateway's own deadline (`peers.request_timeout_ms`) as CANCELLED with a
/// `TimeoutExpired` source; to the HTTP caller that is a deadline exceeded
/// upstream, 504, not a server error. A call that broke before the service
/// answered (the service went away, closed the connection as it stopped, or
/// refused the gateway's TLS client certificate after the handshake) comes
/// back as UNKNOWN or, for a reset stream, INTERNAL, with a transport or
/// HTTP/2 error source: the service could not be reached, 503.
fn effective_code(status: &Status) -> Code {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::TimeoutExpired>() {
            return Code::DeadlineExceeded;
        }
        source = e.source();
    }
    match status.code() {
        Code::Unknown | Code::Internal if bowtie_runtime::peer::broke_in_transit(status) => {
            Code::Unavailable
        }
        code => code,
    }
}

/// The HTTP status and code name of a gRPC code (see the module table).
pub fn http_status(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        Code::OutOfRange => (StatusCode::BAD_REQUEST, "OUT_OF_RANGE"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
        Code::Aborted => (StatusCode::CONFLICT, "ABORTED"),
        Code::FailedPrecondition => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
        Code::Ok => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        Code::Cancelled => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        Code::Unknown => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        Code::Unimplemented => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        Code::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if let Some(value) = self
            .retry_after
            .and_then(|v| axum::http::HeaderValue::from_str(&v).ok())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

/// Splits axum's "Failed to deserialize ...: field: problem" into the field
/// and the problem, so a malformed query or body names the field like a
/// service's INVALID_ARGUMENT does.
fn rejection(text: &str, fallback_field: &str) -> ApiError {
    let detail = text.split_once(": ").map_or(text, |(_, rest)| rest);
    // serde names a missing field in its message: "missing field `start`".
    if let Some(field) = detail
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return ApiError::invalid(field, "is required");
    }
    match detail.split_once(": ") {
        Some((field, problem)) if !field.contains(' ') => ApiError::invalid(field, problem),
        _ => ApiError::invalid(fallback_field, detail),
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        rejection(&r.body_text(), "query")
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        rejection(&r.body_text(), "body")
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        // Name the path parameter when axum knows it; a route with one
        // parameter reports none, so the message says what was expected.
        let field = match &r {
            PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                ErrorKind::ParseErrorAtKey { key, .. }
                | ErrorKind::InvalidUtf8InPathParam { key }
                | ErrorKind::DeserializeError { key, .. } => key.clone(),
                _ => "path".to_owned(),
            },
            _ => "path".to_owned(),
        };
        let text = r.body_text();
        let detail = text
            .split_once(": ")
            .map_or(text.as_str(), |(_, rest)| rest);
        ApiError::invalid(field, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grpc_code_maps_to_the_documented_http_status() {
        let cases = [
            (Code::InvalidArgument, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::FailedPrecondition, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Ok, 500),
            (Code::Cancelled, 500),
            (Code::Unknown, 500),
            (Code::Unimplemented, 500),
            (Code::Internal, 500),
            (Code::DataLoss, 500),
        ];
        for (code, http) in cases {
            assert_eq!(http_status(code).0.as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn server_errors_hide_the_service_message() {
        let e = ApiError::from_status("revenue", &Status::internal("SELECT * FROM secret"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.detail().message.contains("SELECT"));
    }

    #[test]
    fn a_stream_the_service_reset_is_503_and_its_own_internal_answer_500() {
        // tonic's status for an HTTP/2 stream reset with NO_ERROR, as a
        // stopping service may leave a call it did not answer.
        let reset = Status::from_error(Box::new(h2::Error::from(h2::Reason::NO_ERROR)));
        assert_eq!(reset.code(), Code::Internal);
        let e = ApiError::from_status("accounts", &reset);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.detail().code, "UNAVAILABLE");
        let answered = ApiError::from_status("accounts", &Status::internal("a bug"));
        assert_eq!(answered.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn field_violations_travel_into_the_body() {
        let mut details = tonic_types::ErrorDetails::new();
        details.add_bad_request_violation("account.name", "must not be blank");
        let status = Status::with_error_details(Code::InvalidArgument, "invalid", details);
        let e = ApiError::from_status("accounts", &status);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.detail().field_violations,
            vec![FieldViolation {
                field: "account.name".into(),
                description: "must not be blank".into()
            }]
        );
    }

    #[test]
    fn a_missing_query_parameter_is_named_as_required() {
        let e = rejection(
            "Failed to deserialize query string: missing field `start`",
            "query",
        );
        assert_eq!(e.detail().field_violations[0].field, "start");
        assert_eq!(e.detail().field_violations[0].description, "is required");
    }

    #[test]
    fn a_query_rejection_names_the_field() {
        let e = rejection(
            "Failed to deserialize query string: start: premature end of input",
            "query",
        );
        assert_eq!(e.detail().field_violations[0].field, "start");
        assert_eq!(
            e.detail().field_violations[0].description,
            "premature end of input"
        );
    }
}
