//! Assertions on gRPC failures, written once so every test checks the error
//! contract the same way: the status code, and for INVALID_ARGUMENT the
//! `google.rpc.BadRequest` details and the `<field>: <description>` message.
//!
//! These panic (with `#[track_caller]`, so the report points at the test's
//! line) rather than return errors: a failed expectation is a test failure,
//! and the panic message shows both what was expected and what came back.

use std::fmt::Debug;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The error of `result`, which must have failed with `code`.
#[track_caller]
pub fn status<T: Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, but the call succeeded with {value:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "expected {code:?}, got {:?}: {}",
                status.code(),
                status.message()
            );
            status
        }
    }
}

/// The field paths a status names in its `google.rpc.BadRequest` details.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Checks that `result` failed with INVALID_ARGUMENT naming `field` in its
/// BadRequest details and in its message; returns the status.
#[track_caller]
pub fn invalid_field<T: Debug>(result: Result<T, Status>, field: &str) -> Status {
    let status = status(result, Code::InvalidArgument);
    let fields = violated_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "expected a BadRequest violation of {field:?}, got {fields:?} ({})",
        status.message()
    );
    assert!(
        status.message().contains(&format!("{field}: ")),
        "expected the message to contain \"{field}: <description>\", got {:?}",
        status.message()
    );
    status
}

/// Checks that `result` failed with INVALID_ARGUMENT naming `field` with
/// exactly `description`.
#[track_caller]
pub fn invalid_field_with<T: Debug>(result: Result<T, Status>, field: &str, description: &str) {
    let status = invalid_field(result, field);
    let expected = format!("{field}: {description}");
    assert!(
        status.message().contains(&expected),
        "expected the message to contain {expected:?}, got {:?}",
        status.message()
    );
}

/// Checks that a client-visible message leaks no SQL or internal detail.
#[track_caller]
pub fn no_internals(status: &Status) {
    let message = status.message().to_ascii_lowercase();
    for word in [
        "sqlite",
        "postgres",
        "sqlx",
        "syntax error",
        "constraint",
        "panicked",
    ] {
        assert!(
            !message.contains(word),
            "the client saw internal detail {word:?}: {:?}",
            status.message()
        );
    }
}
