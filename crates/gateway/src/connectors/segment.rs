//! Segment-spec tracking (`POST /v1/identify`, `/v1/group`, `/v1/track`,
//! `/v1/batch`): the calls Segment, RudderStack, Jitsu and others send,
//! turned into accounts, contacts and scoring signals (docs/connectors.md,
//! docs/design.md section 8.2).
//!
//! A call is authenticated by the write key, as HTTP Basic user name or as
//! `writeKey` in the body, compared in constant time. Limits are the spec's:
//! 32 KB per call, 500 KB and 2,500 events per batch (413 past them). A
//! batch answers 200 like Segment's API; an event it cannot use (malformed,
//! no account, a signal the scoring service rejects) is reported by index
//! and the rest land.
//!
//! `group` upserts the account (source `segment`, external id = groupId;
//! traits name, industry and employees -> segment) and remembers the user's
//! group in the accounts service (`LinkSourceUser`, so every replica and a
//! restarted gateway see it); `identify` records the contact on the user's account
//! (`context.groupId`, `traits.groupId` or the last group); `track` becomes
//! a signal through `connectors.segment.events`, on `context.groupId` or the
//! user's last group. `messageId` is the idempotency key of each call.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use base64::Engine as _;
use bowtie_proto::{accounts as acc, scoring as sco};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{count_ignored, resolve_account, upsert_account};
use crate::AppState;
use crate::clients::Caller;
use crate::common::timestamp;
use crate::error::ApiError;
use crate::webhooks::{header, same, segment_for_employees};

/// The external id source of Segment groups.
pub const SOURCE: &str = "segment";
/// Largest body of one identify, group or track call.
pub const CALL_LIMIT: usize = 32 * 1024;
/// Largest body of a batch.
pub const BATCH_LIMIT: usize = 500 * 1024;
/// Most events in a batch.
pub const BATCH_EVENTS: usize = 2500;

/// What a call or a batch did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct TrackingResult {
    /// Always true, as Segment answers.
    pub success: bool,
    /// Events received.
    pub received: usize,
    /// Accounts upserted (group calls).
    pub accounts: usize,
    /// Contacts recorded (identify calls; a known user counts again, nothing is written twice).
    pub contacts: usize,
    /// Signals recorded now.
    pub signals: usize,
    /// Signals whose messageId was recorded before.
    pub duplicates: usize,
    /// Events Bowtie does not use (page, screen, alias, unmapped track events).
    pub ignored: usize,
    /// Events that could not be used, with why.
    pub rejected: Vec<Rejected>,
}

/// An event of a call that could not be used.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rejected {
    /// Its position in the batch (0 for a single call).
    pub index: usize,
    /// Its messageId, when it had one.
    pub message_id: String,
    /// What is wrong.
    pub error: String,
}

/// The fields of the spec Bowtie reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Call {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    user_id: Option<Value>,
    #[serde(default)]
    anonymous_id: Option<Value>,
    #[serde(default)]
    group_id: Option<Value>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    traits: serde_json::Map<String, Value>,
    #[serde(default)]
    properties: serde_json::Map<String, Value>,
    #[serde(default)]
    context: serde_json::Map<String, Value>,
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    sent_at: Option<DateTime<Utc>>,
}

/// A string or number id as text (the spec allows both).
fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn trait_text(traits: &serde_json::Map<String, Value>, key: &str) -> String {
    match traits.get(key) {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

impl Call {
    fn user(&self) -> Option<String> {
        id_text(self.user_id.as_ref()).or_else(|| id_text(self.anonymous_id.as_ref()))
    }

    fn context_group(&self) -> Option<String> {
        id_text(self.context.get("groupId"))
    }

    fn at(&self) -> DateTime<Utc> {
        self.timestamp.or(self.sent_at).unwrap_or_else(Utc::now)
    }
}

/// The write key a request presents: the HTTP Basic user name, else `writeKey`.
fn presented_key(headers: &HeaderMap, body: &Value) -> Option<String> {
    let basic = header(headers, "authorization")
        .and_then(|h| {
            h.strip_prefix("Basic ")
                .or_else(|| h.strip_prefix("basic "))
        })
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|user_pass| {
            user_pass
                .split_once(':')
                .map_or(user_pass.clone(), |(u, _)| u.to_owned())
        });
    basic.filter(|k| !k.is_empty()).or_else(|| {
        body.get("writeKey")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

/// The key the gateway writes with, after checking the caller's write key;
/// 404 while the endpoints are off, 401 for a missing or wrong key.
fn authorize(state: &AppState, headers: &HeaderMap, body: &Value) -> Result<Caller, ApiError> {
    let configured = state.connectors.segment.key();
    let configured = configured.expose_secret();
    let api_key = state.settings.webhook_api_key.expose_secret();
    if configured.is_empty() || api_key.is_empty() {
        return Err(ApiError::not_found(
            "Segment tracking is not configured (connectors.segment.write_key and gateway.webhook_api_key)",
        ));
    }
    let presented = presented_key(headers, body).ok_or_else(|| {
        ApiError::unauthenticated("missing write key (HTTP Basic user name or writeKey)")
    })?;
    let digest = |k: &str| Sha256::digest(k.as_bytes()).to_vec();
    if !same(&digest(configured), &digest(&presented)) {
        return Err(ApiError::unauthenticated("the write key does not match"));
    }
    Caller::bearer(api_key)
}

/// The body as JSON, within `limit` bytes.
fn read(body: &Bytes, limit: usize) -> Result<Value, ApiError> {
    if body.len() > limit {
        return Err(ApiError::too_large(format!(
            "the body is {} bytes; at most {limit} are accepted",
            body.len()
        )));
    }
    crate::webhooks::parse(body)
}

/// A signal idempotency key: the messageId (spaces replaced), else a hash of the event.
fn signal_key(call: &Call, raw: &Value) -> String {
    let id = call
        .message_id
        .as_deref()
        .filter(|m| !m.trim().is_empty())
        .map(|m| m.split_whitespace().collect::<Vec<_>>().join("_"))
        .unwrap_or_else(|| hex::encode(Sha256::digest(raw.to_string().as_bytes())));
    let key = format!("segment:{id}");
    key.chars().take(200).collect()
}

/// Applies a batch's events in order.
struct Batch<'a> {
    state: &'a AppState,
    caller: Caller,
    result: TrackingResult,
    signals: Vec<(usize, String, sco::Signal)>,
    /// userId -> the account of the user's last group: read once per batch
    /// from the accounts service, then kept up to date by the batch's own
    /// group calls.
    links: HashMap<String, String>,
}

impl Batch<'_> {
    fn reject(&mut self, index: usize, call: &Call, error: impl Into<String>) {
        self.result.rejected.push(Rejected {
            index,
            message_id: call.message_id.clone().unwrap_or_default(),
            error: error.into(),
        });
    }

    /// The account a call concerns: `context.groupId` (or `groupId` of a
    /// group call), else the user's last group.
    async fn account_of(
        &self,
        call: &Call,
        group: Option<String>,
    ) -> Result<Option<String>, ApiError> {
        if let Some(group) = group.or_else(|| call.context_group()) {
            return Ok(Some(
                resolve_account(self.state, &self.caller, SOURCE, &group).await?,
            ));
        }
        Ok(call.user().and_then(|u| self.links.get(&u).cloned()))
    }

    /// Reads the last groups of the users whose calls name no group, in one call.
    async fn read_links(&mut self, events: &[Value]) -> Result<(), ApiError> {
        let mut users: Vec<String> = events
            .iter()
            .filter(|e| {
                matches!(
                    e.get("type").and_then(Value::as_str),
                    Some("identify" | "track")
                ) && e.pointer("/context/groupId").is_none()
            })
            .filter_map(|e| id_text(e.get("userId")).or_else(|| id_text(e.get("anonymousId"))))
            .collect();
        users.sort();
        users.dedup();
        if users.is_empty() {
            return Ok(());
        }
        let answer = self
            .state
            .services
            .accounts
            .clone()
            .get_source_users(self.caller.request(acc::GetSourceUsersRequest {
                source: SOURCE.to_owned(),
                user_ids: users,
            }))
            .await
            .map_err(|s| ApiError::from_status("accounts", &s))?
            .into_inner();
        for link in answer.links {
            if let Some(user) = link.user {
                self.links.insert(user.external_id, link.account_id);
            }
        }
        Ok(())
    }

    /// Records `account` as the user's last group as of the call's time; a
    /// newer link already recorded stays.
    async fn link(&mut self, call: &Call, account: &str) -> Result<(), ApiError> {
        let Some(user) = call.user() else {
            return Ok(());
        };
        let answer = self
            .state
            .services
            .accounts
            .clone()
            .link_source_user(self.caller.request(acc::LinkSourceUserRequest {
                user: Some(acc::ExternalId {
                    source: SOURCE.to_owned(),
                    external_id: user.clone(),
                }),
                account_id: account.to_owned(),
                linked_at: Some(timestamp(call.at())),
            }))
            .await
            .map_err(|s| ApiError::from_status("accounts", &s))?
            .into_inner();
        let linked = answer
            .link
            .map_or_else(|| account.to_owned(), |l| l.account_id);
        self.links.insert(user, linked);
        Ok(())
    }

    async fn group(&mut self, index: usize, call: &Call, raw: &Value) -> Result<(), ApiError> {
        let Some(group) = id_text(call.group_id.as_ref()) else {
            self.reject(index, call, "a group call needs groupId");
            return Ok(());
        };
        let attributes = super::attributes::mapped(
            self.state,
            &self.caller,
            &self.state.connectors.segment.attributes,
            "traits",
            &call.traits,
        )
        .await?;
        let attributes = match attributes {
            Ok(a) => a,
            Err(misfit) => {
                self.reject(index, call, format!("{}: {}", misfit.field, misfit.reason));
                return Ok(());
            }
        };
        let account = resolve_account(self.state, &self.caller, SOURCE, &group).await?;
        let name = Some(trait_text(&call.traits, "name"))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| group.clone());
        let employees = call
            .traits
            .get("employees")
            .and_then(|e| e.as_i64().or_else(|| e.as_str()?.trim().parse().ok()));
        let segment = employees.map_or(crate::common::Segment::Smb, segment_for_employees);
        let upserted = upsert_account(
            self.state,
            &self.caller,
            SOURCE,
            &group,
            acc::Account {
                name,
                segment: segment.into(),
                industry: trait_text(&call.traits, "industry"),
                attributes,
                ..acc::Account::default()
            },
            // Only a time the call carries: a replay must send the same request.
            call.timestamp.or(call.sent_at).map(timestamp),
            format!("{}:account", signal_key(call, raw)),
        )
        .await;
        match upserted {
            Ok(_) => {
                self.link(call, &account).await?;
                self.result.accounts += 1;
            }
            Err(e) => self.reject(index, call, e.detail().message.clone()),
        }
        Ok(())
    }

    async fn identify(&mut self, index: usize, call: &Call) -> Result<(), ApiError> {
        let Some(user) = call.user() else {
            self.reject(index, call, "an identify call needs userId or anonymousId");
            return Ok(());
        };
        let group = id_text(call.traits.get("groupId"));
        let names_group = group.is_some() || call.context_group().is_some();
        let Some(account) = self.account_of(call, group).await? else {
            self.reject(
                index,
                call,
                "no account: no context.groupId and no group call for this user yet",
            );
            return Ok(());
        };
        let email = trait_text(&call.traits, "email");
        let name = [
            trait_text(&call.traits, "name"),
            email.clone(),
            user.clone(),
        ]
        .into_iter()
        .find(|n| !n.is_empty())
        .unwrap_or_default();
        let created = self
            .state
            .services
            .accounts
            .clone()
            .create_contact(
                self.caller.request(acc::CreateContactRequest {
                    contact: Some(acc::Contact {
                        account_id: account.clone(),
                        name,
                        email,
                        title: trait_text(&call.traits, "title"),
                        ..acc::Contact::default()
                    }),
                    // One contact per user and account: a later identify with
                    // other traits reuses the key and is answered as recorded.
                    idempotency_key: format!("segment:contact:{account}:{user}")
                        .chars()
                        .take(200)
                        .collect(),
                }),
            )
            .await;
        match created {
            Ok(_) => self.result.contacts += 1,
            Err(s)
                if s.code() == tonic::Code::InvalidArgument
                    && s.message().contains("idempotency_key") =>
            {
                self.result.contacts += 1;
            }
            Err(s) => {
                let e = ApiError::from_status("accounts", &s);
                if s.code() == tonic::Code::InvalidArgument {
                    self.reject(index, call, e.detail().message.clone());
                } else {
                    return Err(e);
                }
            }
        }
        if names_group {
            self.link(call, &account).await?;
        }
        Ok(())
    }

    async fn track(&mut self, index: usize, call: &Call, raw: &Value) -> Result<(), ApiError> {
        let Some(event) = call.event.as_deref().filter(|e| !e.is_empty()) else {
            self.reject(index, call, "a track call needs event");
            return Ok(());
        };
        let mapped = self
            .state
            .connectors
            .segment
            .events
            .iter()
            .find(|m| m.event == event)
            .and_then(|m| sco::SignalType::from_str_name(&format!("SIGNAL_TYPE_{}", m.signal)));
        let Some(kind) = mapped else {
            count_ignored("segment", event);
            self.result.ignored += 1;
            return Ok(());
        };
        let Some(account) = self.account_of(call, None).await? else {
            self.reject(
                index,
                call,
                "no account: no context.groupId and no group call for this user yet",
            );
            return Ok(());
        };
        let value = call
            .properties
            .get("value")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        self.signals.push((
            index,
            call.message_id.clone().unwrap_or_default(),
            sco::Signal {
                idempotency_key: signal_key(call, raw),
                account_id: account,
                r#type: kind as i32,
                value,
                occurred_at: Some(timestamp(call.at())),
            },
        ));
        Ok(())
    }

    async fn apply(&mut self, index: usize, raw: &Value) -> Result<(), ApiError> {
        let call: Call = match serde_json::from_value(raw.clone()) {
            Ok(c) => c,
            Err(e) => {
                let message_id = raw
                    .get("messageId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.result.rejected.push(Rejected {
                    index,
                    message_id,
                    error: e.to_string(),
                });
                return Ok(());
            }
        };
        match call.kind.as_str() {
            "group" => self.group(index, &call, raw).await,
            "identify" => self.identify(index, &call).await,
            "track" => self.track(index, &call, raw).await,
            "page" | "screen" | "alias" => {
                count_ignored("segment", &call.kind);
                self.result.ignored += 1;
                Ok(())
            }
            other => {
                self.reject(
                    index,
                    &call,
                    format!("{other:?} is not a Segment call type"),
                );
                Ok(())
            }
        }
    }

    /// Records the gathered signals in one batch.
    async fn flush(&mut self) -> Result<(), ApiError> {
        if self.signals.is_empty() {
            return Ok(());
        }
        let signals = std::mem::take(&mut self.signals);
        let answer = self
            .state
            .services
            .scoring
            .clone()
            .record_signal_batch(self.caller.request(sco::RecordSignalBatchRequest {
                signals: signals.iter().map(|(_, _, s)| s.clone()).collect(),
            }))
            .await
            .map_err(|s| ApiError::from_status("scoring", &s))?
            .into_inner();
        for ((index, message_id, _), r) in signals.iter().zip(&answer.results) {
            match sco::SignalOutcome::try_from(r.outcome) {
                Ok(sco::SignalOutcome::Recorded) => self.result.signals += 1,
                Ok(sco::SignalOutcome::Duplicate) => self.result.duplicates += 1,
                _ => self.result.rejected.push(Rejected {
                    index: *index,
                    message_id: message_id.clone(),
                    error: r.message.clone(),
                }),
            }
        }
        Ok(())
    }
}

/// Applies `events` (one call, or a batch's) with the write key checked.
async fn ingest(
    state: &AppState,
    headers: &HeaderMap,
    body: &Value,
    events: Vec<Value>,
) -> Result<TrackingResult, ApiError> {
    let caller = authorize(state, headers, body)?;
    let mut batch = Batch {
        state,
        caller,
        result: TrackingResult {
            success: true,
            received: events.len(),
            ..TrackingResult::default()
        },
        signals: Vec::new(),
        links: HashMap::new(),
    };
    batch.read_links(&events).await?;
    for (index, raw) in events.iter().enumerate() {
        batch.apply(index, raw).await?;
    }
    batch.flush().await?;
    batch.result.rejected.sort_by_key(|r| r.index);
    Ok(batch.result)
}

/// One call of `kind`: its body is the event (`type` implied by the path).
pub async fn single(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    kind: &str,
) -> Result<Json<TrackingResult>, ApiError> {
    let mut value = read(body, CALL_LIMIT)?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    value["type"] = Value::String(kind.to_owned());
    let events = vec![value.clone()];
    Ok(Json(ingest(state, headers, &value, events).await?))
}

/// A batch: `{"batch": [...], "writeKey"?, "context"?}`.
pub async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TrackingResult>, ApiError> {
    let value = read(&body, BATCH_LIMIT)?;
    // One event posted as it is (a webhook destination forwarding each
    // call) is a batch of one, within the per-call limit.
    if value.get("batch").is_none() && value.get("type").is_some() {
        if body.len() > CALL_LIMIT {
            return Err(ApiError::too_large(format!(
                "the call is {} bytes; at most {CALL_LIMIT} are accepted",
                body.len()
            )));
        }
        let events = vec![value.clone()];
        return Ok(Json(ingest(&state, &headers, &value, events).await?));
    }
    let Some(events) = value.get("batch").and_then(Value::as_array) else {
        return Err(ApiError::invalid("batch", "must be an array of calls"));
    };
    if events.len() > BATCH_EVENTS {
        return Err(ApiError::too_large(format!(
            "the batch has {} events; at most {BATCH_EVENTS} are accepted",
            events.len()
        )));
    }
    // The batch's context applies to events that carry none.
    let shared = value.get("context").cloned();
    let events = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let (Some(ctx), Some(obj)) = (&shared, e.as_object_mut()) {
                obj.entry("context").or_insert_with(|| ctx.clone());
            }
            e
        })
        .collect();
    Ok(Json(ingest(&state, &headers, &value, events).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_key_is_the_basic_user_name_or_write_key() {
        let mut headers = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("wk_123:");
        if let Ok(v) = format!("Basic {basic}").parse() {
            headers.insert("authorization", v);
        }
        assert_eq!(
            presented_key(&headers, &Value::Null).as_deref(),
            Some("wk_123")
        );
        let body = serde_json::json!({"writeKey": "wk_body"});
        assert_eq!(
            presented_key(&HeaderMap::new(), &body).as_deref(),
            Some("wk_body")
        );
        assert_eq!(presented_key(&HeaderMap::new(), &Value::Null), None);
    }

    #[test]
    fn a_signal_key_comes_from_the_message_id_without_spaces() {
        let call = Call {
            message_id: Some("ajs next 1".into()),
            ..Call::default()
        };
        assert_eq!(signal_key(&call, &Value::Null), "segment:ajs_next_1");
        let anonymous = signal_key(&Call::default(), &serde_json::json!({"a": 1}));
        assert_eq!(anonymous.len(), "segment:".len() + 64);
    }
}
