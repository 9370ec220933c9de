//! The accounts domain: validated values and the rules that hold whatever the
//! transport. Requests are parsed into these types (see `convert`), so the
//! code below never sees a raw protobuf message.

use std::fmt;

use std::collections::BTreeMap;

use bowtie_runtime::{AccountId, Instant};
use uuid::Uuid;

use crate::attributes::{Input, Value, Values, apply};

/// Attribute values as a request sends them, by name.
pub type Inputs = BTreeMap<String, Input>;

/// Longest account or contact name.
pub const MAX_NAME: usize = 200;
/// Longest industry.
pub const MAX_INDUSTRY: usize = 100;
/// Longest owner or CSM reference.
pub const MAX_PERSON: usize = 200;
/// Longest external-id source.
pub const MAX_SOURCE: usize = 50;
/// Longest external id.
pub const MAX_EXTERNAL_ID: usize = 200;
/// Most external ids per account.
pub const MAX_EXTERNAL_IDS: usize = 20;
/// Longest email address (RFC 5321).
pub const MAX_EMAIL: usize = 254;
/// Longest tag, in characters.
pub const MAX_TAG: usize = 40;
/// Most tags per account.
pub const MAX_TAGS: usize = 20;

/// Why a tag was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagError {
    /// Nothing left after trimming.
    Empty,
    /// Longer than [`MAX_TAG`] characters.
    TooLong,
    /// A character outside ASCII letters, digits, '-', '_', ':' and '.'.
    BadCharacter(char),
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagError::Empty => write!(f, "must not be blank"),
            TagError::TooLong => write!(f, "must be at most {MAX_TAG} characters"),
            TagError::BadCharacter(c) => write!(
                f,
                "may hold only ASCII letters, digits, '-', '_', ':' and '.', not {c:?}"
            ),
        }
    }
}

/// A tag in its normal form (docs/design.md "Tags"): trimmed and lower-cased,
/// 1 to [`MAX_TAG`] characters among ASCII letters, digits, '-', '_', ':' and '.'.
pub fn normalize_tag(raw: &str) -> Result<String, TagError> {
    let tag = raw.trim().to_lowercase();
    if tag.is_empty() {
        return Err(TagError::Empty);
    }
    if tag.chars().count() > MAX_TAG {
        return Err(TagError::TooLong);
    }
    if let Some(c) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.')))
    {
        return Err(TagError::BadCharacter(c));
    }
    Ok(tag)
}

/// The id of a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContactId(pub Uuid);

/// A new account's id: UUIDv7, so ids sort by creation.
pub fn new_account_id() -> AccountId {
    AccountId(Uuid::now_v7())
}

/// A new contact's id: UUIDv7, so ids sort by creation.
pub fn new_contact_id() -> ContactId {
    ContactId(Uuid::now_v7())
}

impl fmt::Display for ContactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Customer segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// Small business.
    Smb,
    /// Mid-market.
    MidMarket,
    /// Enterprise.
    Enterprise,
}

/// How customer success covers an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoverageModel {
    /// Automated programmes.
    TechTouch,
    /// A pool of CSMs.
    PooledCsm,
    /// A named senior CSM.
    NamedCsm,
}

impl Segment {
    /// The coverage model the segment calls for (docs/design.md section 3).
    pub fn coverage(self) -> CoverageModel {
        match self {
            Segment::Smb => CoverageModel::TechTouch,
            Segment::MidMarket => CoverageModel::PooledCsm,
            Segment::Enterprise => CoverageModel::NamedCsm,
        }
    }

    /// Stable storage code.
    pub fn code(self) -> i32 {
        match self {
            Segment::Smb => 1,
            Segment::MidMarket => 2,
            Segment::Enterprise => 3,
        }
    }

    /// From a storage code.
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(Segment::Smb),
            2 => Some(Segment::MidMarket),
            3 => Some(Segment::Enterprise),
            _ => None,
        }
    }
}

/// Whether an account is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// Live.
    Active,
    /// Archived: read-only.
    Archived,
}

impl AccountStatus {
    /// Stable storage code.
    pub fn code(self) -> i32 {
        match self {
            AccountStatus::Active => 1,
            AccountStatus::Archived => 2,
        }
    }

    /// From a storage code.
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(AccountStatus::Active),
            2 => Some(AccountStatus::Archived),
            _ => None,
        }
    }
}

/// The id of an account in another system.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExternalId {
    /// The system, e.g. `hubspot`.
    pub source: String,
    /// The id there.
    pub id: String,
}

/// The writable fields of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFields {
    /// Display name.
    pub name: String,
    /// Segment.
    pub segment: Segment,
    /// Industry.
    pub industry: String,
    /// Sales owner.
    pub owner: String,
    /// Customer success manager.
    pub csm: String,
    /// Strategic flag.
    pub strategic: bool,
    /// Ids in other systems, sorted, at most one per source.
    pub external_ids: Vec<ExternalId>,
    /// Tags in normal form, sorted, without repeats.
    pub tags: Vec<String>,
    /// Values of declared attributes, by name.
    pub attributes: Values,
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Id (UUIDv7, so ids sort by creation).
    pub id: AccountId,
    /// Writable fields.
    pub fields: AccountFields,
    /// Status.
    pub status: AccountStatus,
    /// Optimistic-concurrency version, 1 on creation.
    pub version: i64,
    /// When it was created.
    pub created_at: Instant,
    /// When it last changed.
    pub updated_at: Instant,
}

/// A field that UpdateAccount may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountField {
    /// `name`
    Name,
    /// `segment`
    Segment,
    /// `industry`
    Industry,
    /// `owner`
    Owner,
    /// `csm`
    Csm,
    /// `strategic`
    Strategic,
    /// `external_ids`
    ExternalIds,
    /// `tags`
    Tags,
    /// `attributes`
    Attributes,
}

impl AccountField {
    /// Parses a field-mask path.
    pub fn parse(path: &str) -> Option<Self> {
        Some(match path {
            "name" => AccountField::Name,
            "segment" => AccountField::Segment,
            "industry" => AccountField::Industry,
            "owner" => AccountField::Owner,
            "csm" => AccountField::Csm,
            "strategic" => AccountField::Strategic,
            "external_ids" => AccountField::ExternalIds,
            "tags" => AccountField::Tags,
            "attributes" => AccountField::Attributes,
            _ => return None,
        })
    }
}

/// A partial change of an account: the masked fields and their new values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountPatch {
    /// New name.
    pub name: Option<String>,
    /// New segment.
    pub segment: Option<Segment>,
    /// New industry.
    pub industry: Option<String>,
    /// New owner.
    pub owner: Option<String>,
    /// New CSM.
    pub csm: Option<String>,
    /// New strategic flag.
    pub strategic: Option<bool>,
    /// New external ids (replacing the old set).
    pub external_ids: Option<Vec<ExternalId>>,
    /// New tags (replacing the old set).
    pub tags: Option<Vec<String>>,
    /// Attribute values as sent, before they are checked.
    pub attribute_inputs: Option<Inputs>,
    /// Checked attribute changes (`None` clears one), merged into the
    /// account's values.
    pub attributes: Option<BTreeMap<String, Option<Value>>>,
}

impl Account {
    /// The account with `patch` applied, `None` when it changes nothing.
    pub fn patched(&self, patch: &AccountPatch) -> Option<Account> {
        let fields = self.fields.patched(patch);
        (fields != self.fields).then(|| Account {
            fields,
            ..self.clone()
        })
    }
}

impl AccountFields {
    /// The fields after applying `patch`.
    pub fn patched(&self, patch: &AccountPatch) -> AccountFields {
        AccountFields {
            name: patch.name.clone().unwrap_or_else(|| self.name.clone()),
            segment: patch.segment.unwrap_or(self.segment),
            industry: patch
                .industry
                .clone()
                .unwrap_or_else(|| self.industry.clone()),
            owner: patch.owner.clone().unwrap_or_else(|| self.owner.clone()),
            csm: patch.csm.clone().unwrap_or_else(|| self.csm.clone()),
            strategic: patch.strategic.unwrap_or(self.strategic),
            external_ids: patch
                .external_ids
                .clone()
                .unwrap_or_else(|| self.external_ids.clone()),
            tags: patch.tags.clone().unwrap_or_else(|| self.tags.clone()),
            attributes: match &patch.attributes {
                Some(changes) => apply(&self.attributes, changes),
                None => self.attributes.clone(),
            },
        }
    }

    /// The fields a CRM upsert produces: its values win, the external ids it
    /// does not mention are kept (another CRM may have written them), and so
    /// are the tags when it sends none; its attribute changes are applied by
    /// the caller once checked, so the attributes are kept here.
    pub fn merged_from_crm(&self, incoming: &AccountFields) -> AccountFields {
        let mut external_ids = self.external_ids.clone();
        for id in &incoming.external_ids {
            external_ids.retain(|e| e.source != id.source);
            external_ids.push(id.clone());
        }
        external_ids.sort();
        let tags = if incoming.tags.is_empty() {
            self.tags.clone()
        } else {
            incoming.tags.clone()
        };
        AccountFields {
            external_ids,
            tags,
            attributes: self.attributes.clone(),
            ..incoming.clone()
        }
    }
}

/// A role of a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContactRole {
    /// Champion.
    Champion,
    /// Decision maker.
    DecisionMaker,
    /// User.
    User,
}

impl ContactRole {
    /// Stable storage code.
    pub fn code(self) -> &'static str {
        match self {
            ContactRole::Champion => "champion",
            ContactRole::DecisionMaker => "decision_maker",
            ContactRole::User => "user",
        }
    }

    /// From a storage code.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "champion" => Some(ContactRole::Champion),
            "decision_maker" => Some(ContactRole::DecisionMaker),
            "user" => Some(ContactRole::User),
            _ => None,
        }
    }
}

/// The writable fields of a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactFields {
    /// Full name.
    pub name: String,
    /// Email, may be empty.
    pub email: String,
    /// Job title, may be empty.
    pub title: String,
    /// Roles, sorted, without repeats.
    pub roles: Vec<ContactRole>,
}

/// A stored contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Id.
    pub id: ContactId,
    /// Owning account.
    pub account_id: AccountId,
    /// Writable fields.
    pub fields: ContactFields,
    /// When the person left the company, if they did.
    pub left_at: Option<Instant>,
    /// Version, 1 on creation.
    pub version: i64,
    /// When it was created.
    pub created_at: Instant,
    /// When it last changed.
    pub updated_at: Instant,
}

/// A partial change of a contact.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactPatch {
    /// New name.
    pub name: Option<String>,
    /// New email.
    pub email: Option<String>,
    /// New title.
    pub title: Option<String>,
    /// New roles.
    pub roles: Option<Vec<ContactRole>>,
}

impl Contact {
    /// The contact with `patch` applied, `None` when it changes nothing.
    pub fn patched(&self, patch: &ContactPatch) -> Option<Contact> {
        let fields = self.fields.patched(patch);
        (fields != self.fields).then(|| Contact {
            fields,
            ..self.clone()
        })
    }
}

impl ContactFields {
    /// The fields after applying `patch`.
    pub fn patched(&self, patch: &ContactPatch) -> ContactFields {
        ContactFields {
            name: patch.name.clone().unwrap_or_else(|| self.name.clone()),
            email: patch.email.clone().unwrap_or_else(|| self.email.clone()),
            title: patch.title.clone().unwrap_or_else(|| self.title.clone()),
            roles: patch.roles.clone().unwrap_or_else(|| self.roles.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AccountFields {
        AccountFields {
            name: "Acme".into(),
            segment: Segment::Smb,
            industry: "Retail".into(),
            owner: "ana".into(),
            csm: String::new(),
            strategic: false,
            external_ids: vec![ExternalId {
                source: "salesforce".into(),
                id: "001".into(),
            }],
            tags: vec!["pilot".into()],
            attributes: Values::new(),
        }
    }

    #[test]
    fn the_segment_decides_the_coverage_model() {
        assert_eq!(Segment::Smb.coverage(), CoverageModel::TechTouch);
        assert_eq!(Segment::MidMarket.coverage(), CoverageModel::PooledCsm);
        assert_eq!(Segment::Enterprise.coverage(), CoverageModel::NamedCsm);
    }

    #[test]
    fn a_patch_changes_only_the_masked_fields() {
        let patch = AccountPatch {
            owner: Some("bo".into()),
            strategic: Some(true),
            ..AccountPatch::default()
        };
        let patched = fields().patched(&patch);
        assert_eq!(patched.owner, "bo");
        assert!(patched.strategic);
        assert_eq!(patched.name, "Acme");
        assert_eq!(patched.external_ids, fields().external_ids);
    }

    #[test]
    fn a_crm_upsert_keeps_the_external_ids_of_other_sources() {
        let mut incoming = fields();
        incoming.name = "Acme Inc".into();
        incoming.external_ids = vec![ExternalId {
            source: "hubspot".into(),
            id: "42".into(),
        }];
        let merged = fields().merged_from_crm(&incoming);
        assert_eq!(merged.name, "Acme Inc");
        let sources: Vec<&str> = merged
            .external_ids
            .iter()
            .map(|e| e.source.as_str())
            .collect();
        assert_eq!(sources, vec!["hubspot", "salesforce"]);
    }

    #[test]
    fn a_tag_is_trimmed_and_lower_cased() {
        assert_eq!(
            normalize_tag("  Beta-Wave:EU "),
            Ok("beta-wave:eu".to_string())
        );
        assert_eq!(normalize_tag("Q4.2026"), Ok("q4.2026".to_string()));
        assert_eq!(normalize_tag("Über"), Err(TagError::BadCharacter('ü')));
    }

    #[test]
    fn a_tag_is_refused_when_blank_too_long_or_with_a_space() {
        assert_eq!(normalize_tag("   "), Err(TagError::Empty));
        assert_eq!(normalize_tag(&"a".repeat(MAX_TAG)), Ok("a".repeat(MAX_TAG)));
        assert_eq!(
            normalize_tag(&"a".repeat(MAX_TAG + 1)),
            Err(TagError::TooLong)
        );
        assert_eq!(normalize_tag("two words"), Err(TagError::BadCharacter(' ')));
        assert_eq!(normalize_tag("a,b"), Err(TagError::BadCharacter(',')));
    }

    #[test]
    fn a_crm_upsert_without_tags_keeps_the_tags_and_with_tags_replaces_them() {
        let mut incoming = fields();
        incoming.tags = Vec::new();
        assert_eq!(fields().merged_from_crm(&incoming).tags, vec!["pilot"]);
        incoming.tags = vec!["churned".into()];
        assert_eq!(fields().merged_from_crm(&incoming).tags, vec!["churned"]);
    }
}
