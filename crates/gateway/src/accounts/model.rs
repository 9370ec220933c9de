//! The JSON shapes of the accounts routes and their conversions from and to
//! the accounts service's messages.

use std::collections::{BTreeMap, HashMap};

use bowtie_proto::accounts as acc;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::common::{CoverageModel, Segment, mirror_enum, time};
use crate::error::ApiError;
use crate::rest::missing;
use crate::schema;

mirror_enum!(
    /// Account lifecycle status.
    AccountStatus, acc::AccountStatus {
        /// Live.
        Active,
        /// Archived.
        Archived,
    }
);

/// The id of an account in another system.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExternalId {
    /// The system, e.g. `hubspot`: 1 to 50 lower-case letters, digits, `-` or `_`.
    #[schema(schema_with = schema::source)]
    pub source: String,
    /// The id there, 1 to 200 characters.
    #[schema(schema_with = schema::text::<200>)]
    pub external_id: String,
}

/// The value of a declared attribute: a string (string, date
/// `YYYY-MM-DD` and enum attributes), a number or a boolean, as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum AttributeValue {
    /// String, date and enum attributes.
    Text(String),
    /// Number attributes.
    Number(f64),
    /// Bool attributes.
    Bool(bool),
}

impl AttributeValue {
    fn to_pb(&self) -> acc::AttributeValue {
        use acc::attribute_value::Kind;
        acc::AttributeValue {
            kind: Some(match self {
                AttributeValue::Text(t) => Kind::StringValue(t.clone()),
                AttributeValue::Number(n) => Kind::NumberValue(*n),
                AttributeValue::Bool(b) => Kind::BoolValue(*b),
            }),
        }
    }

    fn from_pb(v: acc::AttributeValue) -> Option<Self> {
        use acc::attribute_value::Kind;
        Some(match v.kind? {
            Kind::StringValue(t) => AttributeValue::Text(t),
            Kind::NumberValue(n) => AttributeValue::Number(n),
            Kind::BoolValue(b) => AttributeValue::Bool(b),
        })
    }
}

/// An object of attribute values by name, each a string, number, boolean
/// or `null`.
fn attribute_writes() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{
        AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type,
    };
    let mut value = OneOfBuilder::new();
    for kind in [Type::String, Type::Number, Type::Boolean, Type::Null] {
        value = value.item(ObjectBuilder::new().schema_type(kind));
    }
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::OneOf(
                value.build(),
            )))))
            .build(),
    ))
}

/// [`attribute_writes`] or `null`.
fn nullable_attribute_writes() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    crate::common::or_null(attribute_writes())
}

/// Attribute values to write: `null` clears one.
fn attributes_to_pb(
    values: &BTreeMap<String, Option<AttributeValue>>,
) -> HashMap<String, acc::AttributeValue> {
    values
        .iter()
        .map(|(name, value)| {
            let value = value
                .as_ref()
                .map_or_else(acc::AttributeValue::default, AttributeValue::to_pb);
            (name.clone(), value)
        })
        .collect()
}

/// An account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Account {
    /// UUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Segment.
    pub segment: Segment,
    /// Coverage model derived from the segment.
    pub coverage_model: CoverageModel,
    /// Industry.
    pub industry: String,
    /// Sales owner.
    pub owner: String,
    /// Customer success manager.
    pub csm: String,
    /// Flagged strategic.
    pub strategic: bool,
    /// Ids in other systems.
    pub external_ids: Vec<ExternalId>,
    /// Tags, normalised (lower case) and sorted.
    pub tags: Vec<String>,
    /// Values of declared attributes, by name.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Lifecycle status.
    pub status: AccountStatus,
    /// Version, for `expected_version` on updates.
    pub version: i64,
    /// Created at.
    pub created_at: Option<DateTime<Utc>>,
    /// Last changed at.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<acc::Account> for Account {
    fn from(a: acc::Account) -> Self {
        Self {
            id: a.id,
            name: a.name,
            segment: a.segment.into(),
            coverage_model: a.coverage_model.into(),
            industry: a.industry,
            owner: a.owner,
            csm: a.csm,
            strategic: a.strategic,
            external_ids: a
                .external_ids
                .into_iter()
                .map(|e| ExternalId {
                    source: e.source,
                    external_id: e.external_id,
                })
                .collect(),
            tags: a.tags,
            attributes: a
                .attributes
                .into_iter()
                .filter_map(|(name, v)| AttributeValue::from_pb(v).map(|v| (name, v)))
                .collect(),
            status: a.status.into(),
            version: a.version,
            created_at: time(a.create_time.as_ref()),
            updated_at: time(a.update_time.as_ref()),
        }
    }
}

/// A new account.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewAccount {
    /// Display name, 1 to 200 characters.
    #[schema(schema_with = schema::text::<200>)]
    pub name: String,
    /// Segment; required.
    #[schema(schema_with = Segment::input_schema)]
    pub segment: Segment,
    /// Industry, at most 100 characters.
    #[serde(default)]
    #[schema(schema_with = schema::optional_text::<100>)]
    pub industry: String,
    /// Sales owner, at most 200 characters.
    #[serde(default)]
    #[schema(schema_with = schema::optional_text::<200>)]
    pub owner: String,
    /// Customer success manager, at most 200 characters.
    #[serde(default)]
    #[schema(schema_with = schema::optional_text::<200>)]
    pub csm: String,
    /// Strategic flag.
    #[serde(default)]
    pub strategic: bool,
    /// Ids in other systems: at most 20, at most one per source.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub external_ids: Vec<ExternalId>,
    /// Tags: at most 20, each 1 to 40 ASCII letters, digits, `-`, `_`, `:`
    /// or `.` once trimmed; stored lower-cased, repeats collapse.
    #[serde(default)]
    #[schema(schema_with = schema::tags)]
    pub tags: Vec<String>,
    /// Values of declared attributes by name, typed as declared (see the
    /// accounts API); `null` sets nothing.
    #[serde(default)]
    #[schema(schema_with = attribute_writes)]
    pub attributes: BTreeMap<String, Option<AttributeValue>>,
}

impl NewAccount {
    /// The protobuf account.
    pub fn to_pb(&self) -> acc::Account {
        acc::Account {
            name: self.name.clone(),
            segment: self.segment.into(),
            industry: self.industry.clone(),
            owner: self.owner.clone(),
            csm: self.csm.clone(),
            strategic: self.strategic,
            external_ids: self
                .external_ids
                .iter()
                .map(|e| acc::ExternalId {
                    source: e.source.clone(),
                    external_id: e.external_id.clone(),
                })
                .collect(),
            tags: self.tags.clone(),
            attributes: attributes_to_pb(&self.attributes),
            ..acc::Account::default()
        }
    }
}

/// Changes to an account: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct AccountChanges {
    /// New name, 1 to 200 characters.
    #[schema(schema_with = schema::nullable_text::<200>)]
    pub name: Option<String>,
    /// New segment.
    #[schema(schema_with = Segment::nullable_input_schema)]
    pub segment: Option<Segment>,
    /// New industry, at most 100 characters.
    #[schema(schema_with = schema::nullable_optional_text::<100>)]
    pub industry: Option<String>,
    /// New owner, at most 200 characters.
    #[schema(schema_with = schema::nullable_optional_text::<200>)]
    pub owner: Option<String>,
    /// New CSM, at most 200 characters.
    #[schema(schema_with = schema::nullable_optional_text::<200>)]
    pub csm: Option<String>,
    /// New strategic flag.
    pub strategic: Option<bool>,
    /// New tags, replacing the old ones (`[]` clears them); as on create.
    #[schema(schema_with = schema::nullable_tags)]
    pub tags: Option<Vec<String>>,
    /// Attribute values to set by name; `null` clears one, and attributes
    /// left out keep their values.
    #[schema(schema_with = nullable_attribute_writes)]
    pub attributes: Option<BTreeMap<String, Option<AttributeValue>>>,
    /// Apply only if the account is still at this version (else 409 ABORTED).
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "crate::common::optional_integer")]
    pub expected_version: Option<i64>,
}

impl AccountChanges {
    /// The protobuf account with `id` and the update mask naming the changed fields.
    pub fn to_pb(&self, id: &str) -> (acc::Account, Vec<String>) {
        let mut a = acc::Account {
            id: id.to_owned(),
            ..acc::Account::default()
        };
        let mut mask = Vec::new();
        if let Some(v) = &self.name {
            a.name = v.clone();
            mask.push("name".to_owned());
        }
        if let Some(v) = self.segment {
            a.segment = v.into();
            mask.push("segment".to_owned());
        }
        if let Some(v) = &self.industry {
            a.industry = v.clone();
            mask.push("industry".to_owned());
        }
        if let Some(v) = &self.owner {
            a.owner = v.clone();
            mask.push("owner".to_owned());
        }
        if let Some(v) = &self.csm {
            a.csm = v.clone();
            mask.push("csm".to_owned());
        }
        if let Some(v) = self.strategic {
            a.strategic = v;
            mask.push("strategic".to_owned());
        }
        if let Some(v) = &self.tags {
            a.tags = v.clone();
            mask.push("tags".to_owned());
        }
        if let Some(v) = &self.attributes {
            a.attributes = attributes_to_pb(v);
            mask.push("attributes".to_owned());
        }
        (a, mask)
    }
}

/// One page of accounts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountPage {
    /// The accounts, oldest first.
    pub accounts: Vec<Account>,
    /// Pass as `page_token` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// Result of an upsert by external id.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UpsertedAccount {
    /// The account after the upsert.
    pub account: Account,
    /// True when it did not exist before.
    pub created: bool,
}

impl From<acc::ListAccountsResponse> for AccountPage {
    fn from(r: acc::ListAccountsResponse) -> Self {
        Self {
            accounts: r.accounts.into_iter().map(Into::into).collect(),
            next_page_token: r.page.map(|p| p.next_page_token).unwrap_or_default(),
        }
    }
}

impl TryFrom<acc::UpsertAccountByExternalIdResponse> for UpsertedAccount {
    type Error = ApiError;

    fn try_from(r: acc::UpsertAccountByExternalIdResponse) -> Result<Self, ApiError> {
        Ok(Self {
            account: the_account(r.account)?,
            created: r.created,
        })
    }
}

/// The account an answer must carry; its absence is the service's fault.
pub(crate) fn the_account(account: Option<acc::Account>) -> Result<Account, ApiError> {
    Ok(account.ok_or_else(|| missing("an account"))?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_changes_name_exactly_the_fields_present() {
        let changes = AccountChanges {
            owner: Some("bo@example.com".into()),
            strategic: Some(false),
            ..AccountChanges::default()
        };
        let (account, mask) = changes.to_pb("a1");
        assert_eq!(mask, vec!["owner".to_owned(), "strategic".to_owned()]);
        assert_eq!(account.id, "a1");
        assert_eq!(account.owner, "bo@example.com");
    }
}
