//! The one error type of every service and its exhaustive mapping to
//! `tonic::Status`.
//!
//! Handlers return [`Error`]; the `From<Error> for Status` impl below is the
//! only place that decides what a client sees. Database and internal errors are
//! logged with their cause chain and reach the client as a generic message, so
//! no SQL text or internal detail ever leaves the server.

use std::fmt;

use sea_orm::{DbErr, RuntimeErr};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A request field that failed validation, with a human description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, for example `account.name`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// The field violations of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldViolations(pub Vec<FieldViolation>);

impl FieldViolations {
    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// `Ok(())` when nothing was recorded, else the INVALID_ARGUMENT error.
    pub fn into_result(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self))
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldViolations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

/// Everything that can go wrong in a service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; names every offending field.
    #[error("invalid argument: {0}")]
    InvalidArgument(FieldViolations),
    /// The addressed resource does not exist.
    #[error("{resource} {id} not found")]
    NotFound {
        /// Kind of resource, for example `account`.
        resource: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// The resource to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A concurrency conflict, such as a stale expected version; retry after re-reading.
    #[error("{0}")]
    Aborted(String),
    /// The system is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No or an unknown credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential lacks the scope.
    #[error("{0}")]
    PermissionDenied(String),
    /// The ownership rules (`crate::access`) refuse the caller this write
    /// on an account: PERMISSION_DENIED, and the refusal is audited.
    #[error("{message}")]
    Forbidden {
        /// The account the write was refused on.
        account_id: String,
        /// Names the account and the caller's role.
        message: String,
    },
    /// A dependency (database, peer service) cannot be reached; safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// A database error; classified into UNAVAILABLE or INTERNAL.
    #[error("database error")]
    Database(#[from] DbErr),
    /// A bug or an unexpected state.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    /// INVALID_ARGUMENT for one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut v = FieldViolations::default();
        v.add(field, description);
        Error::InvalidArgument(v)
    }

    /// NOT_FOUND for a resource id.
    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            resource,
            id: id.into(),
        }
    }

    /// True when the database error means "cannot reach the database" rather than a bug.
    fn is_connectivity(err: &DbErr) -> bool {
        match err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
                matches!(
                    e,
                    sea_orm::sqlx::Error::Io(_)
                        | sea_orm::sqlx::Error::PoolTimedOut
                        | sea_orm::sqlx::Error::PoolClosed
                        | sea_orm::sqlx::Error::WorkerCrashed
                        | sea_orm::sqlx::Error::Tls(_)
                )
            }
            _ => false,
        }
    }

    /// True when PostgreSQL gave up the transaction because of concurrent
    /// ones: a deadlock (40P01), a serialization failure (40001) or a lock
    /// wait over `lock_timeout` (55P03). Nothing of it was written, so the
    /// caller may retry it as it was.
    fn is_conflict(err: &DbErr) -> bool {
        match err {
            DbErr::Exec(RuntimeErr::SqlxError(sea_orm::sqlx::Error::Database(e)))
            | DbErr::Query(RuntimeErr::SqlxError(sea_orm::sqlx::Error::Database(e))) => {
                matches!(e.code().as_deref(), Some("40P01" | "40001" | "55P03"))
            }
            _ => false,
        }
    }

    /// True for a unique-constraint violation, which callers may turn into a
    /// domain answer (ALREADY_EXISTS, an idempotent replay).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Database(e) => matches!(
                e.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ),
            _ => false,
        }
    }
}

/// Longest status message sent, in bytes. Messages travel in HTTP/2 headers,
/// and many clients refuse a header list over 16 KiB (grpc-go's default):
/// an error that echoes a huge request field must not break the connection.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest echoed value (an id, a field path) inside a message or detail.
const MAX_ECHO_BYTES: usize = 128;
/// Most field violations sent in the `BadRequest` detail; the message says
/// how many more there were.
pub const MAX_VIOLATIONS: usize = 20;

/// `text` cut to at most `max` bytes at a character boundary, marked with
/// an ellipsis when it was cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = |m: &str| bounded(m, MAX_MESSAGE_BYTES);
        match error {
            Error::InvalidArgument(violations) => {
                let total = violations.0.len();
                let mut shown = FieldViolations::default();
                for v in violations.0.iter().take(MAX_VIOLATIONS) {
                    shown.add(
                        bounded(&v.field, MAX_ECHO_BYTES),
                        bounded(&v.description, MAX_ECHO_BYTES * 2),
                    );
                }
                let more = if total > MAX_VIOLATIONS {
                    format!(" (and {} more)", total - MAX_VIOLATIONS)
                } else {
                    String::new()
                };
                let mut details = ErrorDetails::new();
                for v in &shown.0 {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    message(&format!("invalid argument: {shown}{more}")),
                    details,
                )
            }
            Error::NotFound { resource, id } => Status::not_found(format!(
                "{resource} {} not found",
                bounded(&id, MAX_ECHO_BYTES)
            )),
            Error::AlreadyExists(m) => Status::already_exists(message(&m)),
            Error::Aborted(m) => Status::aborted(message(&m)),
            Error::FailedPrecondition(m) => Status::failed_precondition(message(&m)),
            Error::Unauthenticated(m) => Status::unauthenticated(message(&m)),
            Error::PermissionDenied(m) | Error::Forbidden { message: m, .. } => {
                Status::permission_denied(message(&m))
            }
            Error::Unavailable(m) => Status::unavailable(message(&m)),
            Error::Database(e) if Error::is_connectivity(&e) => {
                tracing::warn!(error.cause_chain = ?e, "database unavailable");
                Status::unavailable("database unavailable, retry later")
            }
            Error::Database(e) if Error::is_conflict(&e) => {
                tracing::warn!(error.cause_chain = ?e, "write conflicted with a concurrent one");
                Status::aborted(
                    "the write conflicted with a concurrent one and was not made; retry",
                )
            }
            Error::Database(e) => {
                tracing::error!(error.cause_chain = ?e, "database error");
                Status::internal("internal error")
            }
            Error::Internal(e) => {
                tracing::error!(error.cause_chain = ?e, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_each_field_in_message_and_bad_request_details() {
        let mut v = FieldViolations::default();
        v.add("account.name", "must not be blank");
        v.add("account.segment", "must be set");
        let status = Status::from(Error::InvalidArgument(v));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("account.name: must not be blank"));
        let details = status.get_details_bad_request();
        let fields: Vec<String> = details
            .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, vec!["account.name", "account.segment"]);
    }

    #[test]
    fn database_errors_never_show_sql_to_the_client() {
        let status = Status::from(Error::Database(DbErr::Custom(
            "syntax error at or near SELECT * FROM accounts".into(),
        )));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn an_unreachable_database_is_unavailable() {
        let status = Status::from(Error::Database(DbErr::ConnectionAcquire(
            sea_orm::ConnAcquireErr::Timeout,
        )));
        assert_eq!(status.code(), Code::Unavailable);
    }

    #[test]
    fn a_huge_echoed_id_is_cut_so_the_status_fits_in_a_header() {
        let status = Status::from(Error::not_found("account", "x".repeat(200_000)));
        // "account " (8) + 125 x + "…" (3 bytes) + " not found" (10) = 146 bytes.
        assert_eq!(status.message().len(), 146);
        assert!(status.message().ends_with("x… not found"));
    }

    #[test]
    fn many_violations_are_capped_and_counted_in_the_message() {
        let mut v = FieldViolations::default();
        for i in 0..300 {
            v.add(format!("signals[{i}].kind"), "must be set");
        }
        let status = Status::from(Error::InvalidArgument(v));
        let details = status.get_details_bad_request().map(|b| b.field_violations);
        assert_eq!(details.map(|d| d.len()), Some(MAX_VIOLATIONS));
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        // The message is cut before the count when the 20 violations fill it;
        // here they take 20 x ~30 bytes, so the count shows: 300 - 20 = 280.
        assert!(
            status.message().ends_with("(and 280 more)"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn bounded_cuts_at_a_character_boundary() {
        // "é" is 2 bytes: 4 of them are 8 bytes; a 6-byte budget keeps one
        // "é" (2) and the ellipsis (3), as a third byte would split the next.
        assert_eq!(bounded("éééé", 6), "é…");
        assert_eq!(bounded("short", 6), "short");
    }

    #[test]
    fn not_found_says_what_was_missing() {
        let status = Status::from(Error::not_found("account", "42"));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "account 42 not found");
    }
}
