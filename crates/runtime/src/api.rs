//! What every service's gRPC handlers share: the answer of a handler, the
//! unwrapping of a value the validation already vouched for, and the
//! idempotency of a write. The `WatchEvents` handler is
//! [`Feed::watch_events`](crate::feed::Feed::watch_events).

use tonic::{Response, Status};

use crate::error::{Error, FieldViolations};
use crate::idempotency::Idempotency;
use crate::types::AccountId;
use crate::validate;
use uuid::Uuid;

/// What a tonic handler returns.
pub type Answer<T> = Result<Response<T>, Status>;

/// Unwraps a value whose absence was already recorded as a violation;
/// reached only after `into_result` returned Ok, so `None` here is a bug,
/// not bad input (INTERNAL, never a panic).
pub fn parsed<T>(value: Option<T>) -> Result<T, Error> {
    value.ok_or_else(|| Error::Internal(anyhow::anyhow!("validated value missing")))
}

/// The idempotency of a write `method` carrying `key` (none when the key is
/// empty; a violation when it is malformed), fingerprinted by `request`.
pub fn idempotency<M: prost::Message>(
    v: &mut FieldViolations,
    key: &str,
    method: &str,
    request: &M,
) -> Option<Idempotency> {
    Idempotency::new(validate::idempotency_key(v, key), method, request)
}

/// The one id a lookup request carries (`GetX { id }`, `DeleteX { id }`):
/// parsed, or INVALID_ARGUMENT naming `field`.
pub fn id(field: &str, value: &str) -> Result<Uuid, Error> {
    let mut v = FieldViolations::default();
    let id = validate::uuid(&mut v, field, value);
    v.into_result()?;
    parsed(id)
}

/// The one account id a request carries, as [`id`].
pub fn account_id(field: &str, value: &str) -> Result<AccountId, Error> {
    id(field, value).map(AccountId)
}

/// Parses a read request: `parse` turns its fields into what the
/// application takes, recording a violation for each problem;
/// INVALID_ARGUMENT names every problem at once.
pub fn read_request<T>(parse: impl FnOnce(&mut FieldViolations) -> Option<T>) -> Result<T, Error> {
    let mut v = FieldViolations::default();
    let value = parse(&mut v);
    v.into_result()?;
    parsed(value)
}

/// Parses a write request `method` as [`read_request`] does, checking its
/// idempotency `key` too (fingerprinted by the whole `request`).
pub fn write_request<M: prost::Message, T>(
    request: &M,
    key: &str,
    method: &str,
    parse: impl FnOnce(&mut FieldViolations) -> Option<T>,
) -> Result<(T, Option<Idempotency>), Error> {
    let mut v = FieldViolations::default();
    let value = parse(&mut v);
    let idem = idempotency(&mut v, key, method, request);
    v.into_result()?;
    Ok((parsed(value)?, idem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_validated_value_is_internal_not_a_panic() {
        assert!(matches!(parsed::<u8>(None), Err(Error::Internal(_))));
        assert!(matches!(parsed(Some(3)), Ok(3)));
    }

    #[test]
    fn an_empty_key_is_no_idempotency_and_a_key_fingerprints_the_method() {
        let mut v = FieldViolations::default();
        let request = bowtie_proto::accounts::GetAccountRequest { id: "a".into() };
        assert_eq!(idempotency(&mut v, "", "CreateAccount", &request), None);
        let create = idempotency(&mut v, "key-1", "CreateAccount", &request);
        let update = idempotency(&mut v, "key-1", "UpdateAccount", &request);
        assert!(v.into_result().is_ok());
        assert_eq!(create.as_ref().map(|i| i.key.as_str()), Some("key-1"));
        assert_ne!(create.map(|i| i.fingerprint), update.map(|i| i.fingerprint));
    }

    #[test]
    fn a_lookup_id_that_is_not_a_uuid_is_invalid_argument_naming_the_field() {
        let Err(Error::InvalidArgument(violations)) = id("account_id", "nope") else {
            panic!("expected INVALID_ARGUMENT");
        };
        assert_eq!(violations.to_string(), "account_id: must be a UUID");
        let uuid = Uuid::new_v4();
        assert!(matches!(account_id("id", &uuid.to_string()), Ok(AccountId(u)) if u == uuid));
    }
}
