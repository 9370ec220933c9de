//! Between the wire and the domain: every request is parsed into checked
//! domain values with field-named violations (parse, don't validate), and
//! domain values are rendered back into protobuf messages.

use std::collections::BTreeSet;

use bowtie_proto::accounts as pb;
use bowtie_proto::common;
use bowtie_runtime::access;
use bowtie_runtime::api::{self, idempotency, parsed};
use bowtie_runtime::error::{Error, FieldViolations};
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate::{self, enum_value, optional_text, required_text};
use bowtie_runtime::{AccountId, Instant};

use crate::attributes::{
    self as attr, AttributeKind, Declaration, DeclarationFields, Input, MAX_ATTRIBUTES,
    MAX_DESCRIPTION, MAX_ENUM_VALUE, MAX_ENUM_VALUES,
};
use crate::domain::*;
use crate::storage::AccountFilter;

fn segment_from_pb(v: &mut FieldViolations, field: &str, raw: i32) -> Option<Segment> {
    match enum_value::<common::Segment>(v, field, raw, true)? {
        common::Segment::Smb => Some(Segment::Smb),
        common::Segment::MidMarket => Some(Segment::MidMarket),
        common::Segment::Enterprise => Some(Segment::Enterprise),
        common::Segment::Unspecified => None,
    }
}

/// Parses an optional segment filter (0 = any).
pub fn segment_filter(v: &mut FieldViolations, field: &str, raw: i32) -> Option<Segment> {
    if raw == 0 {
        None
    } else {
        segment_from_pb(v, field, raw)
    }
}

/// Parses an optional status filter (0 = any).
pub fn status_filter(v: &mut FieldViolations, field: &str, raw: i32) -> Option<AccountStatus> {
    match enum_value::<pb::AccountStatus>(v, field, raw, false)? {
        pb::AccountStatus::Unspecified => None,
        pb::AccountStatus::Active => Some(AccountStatus::Active),
        pb::AccountStatus::Archived => Some(AccountStatus::Archived),
    }
}

fn valid_source(source: &str) -> bool {
    !source.is_empty()
        && source.len() <= MAX_SOURCE
        && source
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Parses one external id.
pub fn external_id(v: &mut FieldViolations, field: &str, e: &pb::ExternalId) -> Option<ExternalId> {
    let source = source(v, &format!("{field}.source"), &e.source);
    let id = required_text(
        v,
        &format!("{field}.external_id"),
        &e.external_id,
        MAX_EXTERNAL_ID,
    );
    Some(ExternalId {
        source: source?,
        id: id?,
    })
}

/// Parses the name of a source system (`field` names it in a violation).
pub fn source(v: &mut FieldViolations, field: &str, text: &str) -> Option<String> {
    if valid_source(text) {
        return Some(text.to_owned());
    }
    v.add(
        field,
        format!("must be 1 to {MAX_SOURCE} lower-case letters, digits, '-' or '_'"),
    );
    None
}

fn external_ids(v: &mut FieldViolations, field: &str, ids: &[pb::ExternalId]) -> Vec<ExternalId> {
    if ids.len() > MAX_EXTERNAL_IDS {
        v.add(field, format!("must hold at most {MAX_EXTERNAL_IDS} ids"));
        return Vec::new();
    }
    let mut parsed: Vec<ExternalId> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, e)| external_id(v, &format!("{field}[{i}]"), e))
        .collect();
    parsed.sort();
    let sources: BTreeSet<&str> = parsed.iter().map(|e| e.source.as_str()).collect();
    if sources.len() != parsed.len() {
        v.add(field, "must hold at most one id per source");
    }
    parsed
}

/// Parses a list of at most [`MAX_TAGS`] tags into their normal form, sorted
/// and without repeats; each bad one is named by its index.
pub fn tags(v: &mut FieldViolations, field: &str, raw: &[String]) -> Vec<String> {
    if raw.len() > MAX_TAGS {
        v.add(field, format!("must hold at most {MAX_TAGS} tags"));
        return Vec::new();
    }
    let set: BTreeSet<String> = raw
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match normalize_tag(t) {
            Ok(tag) => Some(tag),
            Err(e) => {
                v.add(format!("{field}[{i}]"), e.to_string());
                None
            }
        })
        .collect();
    set.into_iter().collect()
}

/// Parses attribute values as sent (`field.<name>` names a bad one); the
/// declarations check them later.
pub fn attribute_inputs(
    v: &mut FieldViolations,
    field: &str,
    raw: &std::collections::HashMap<String, pb::AttributeValue>,
) -> Inputs {
    if raw.len() > MAX_ATTRIBUTES {
        v.add(
            field,
            format!("must hold at most {MAX_ATTRIBUTES} attributes"),
        );
        return Inputs::new();
    }
    let mut inputs = Inputs::new();
    for (name, value) in raw {
        let input = match &value.kind {
            None => Input::Clear,
            Some(pb::attribute_value::Kind::StringValue(t)) => Input::Text(t.clone()),
            Some(pb::attribute_value::Kind::BoolValue(b)) => Input::Bool(*b),
            Some(pb::attribute_value::Kind::NumberValue(n)) => match attr::canonical_number(*n) {
                Some(n) => Input::Number(n),
                None => {
                    v.add(format!("{field}.{name}"), "must be a finite number");
                    continue;
                }
            },
        };
        inputs.insert(name.clone(), input);
    }
    inputs
}

/// Parses every writable field of an account (create, upsert).
pub fn account_fields(
    v: &mut FieldViolations,
    field: &str,
    a: &pb::Account,
) -> Option<AccountFields> {
    let name = required_text(v, &format!("{field}.name"), &a.name, MAX_NAME);
    let segment = segment_from_pb(v, &format!("{field}.segment"), a.segment);
    let industry = optional_text(v, &format!("{field}.industry"), &a.industry, MAX_INDUSTRY);
    let owner = optional_text(v, &format!("{field}.owner"), &a.owner, MAX_PERSON);
    let csm = optional_text(v, &format!("{field}.csm"), &a.csm, MAX_PERSON);
    let external_ids = external_ids(v, &format!("{field}.external_ids"), &a.external_ids);
    let tags = tags(v, &format!("{field}.tags"), &a.tags);
    Some(AccountFields {
        name: name?,
        segment: segment?,
        industry: industry?,
        owner: owner?,
        csm: csm?,
        strategic: a.strategic,
        external_ids,
        tags,
        attributes: attr::Values::new(),
    })
}

fn mask_paths<'a>(
    v: &mut FieldViolations,
    mask: Option<&'a prost_types::FieldMask>,
) -> &'a [String] {
    match mask {
        Some(m) if !m.paths.is_empty() => &m.paths,
        _ => {
            v.add("update_mask", "must name at least one field");
            &[]
        }
    }
}

/// Parses the masked fields of an UpdateAccount request.
pub fn account_patch(
    v: &mut FieldViolations,
    a: &pb::Account,
    mask: Option<&prost_types::FieldMask>,
) -> AccountPatch {
    let mut patch = AccountPatch::default();
    for path in mask_paths(v, mask) {
        match AccountField::parse(path) {
            Some(AccountField::Name) => {
                patch.name = required_text(v, "account.name", &a.name, MAX_NAME);
            }
            Some(AccountField::Segment) => {
                patch.segment = segment_from_pb(v, "account.segment", a.segment);
            }
            Some(AccountField::Industry) => {
                patch.industry = optional_text(v, "account.industry", &a.industry, MAX_INDUSTRY);
            }
            Some(AccountField::Owner) => {
                patch.owner = optional_text(v, "account.owner", &a.owner, MAX_PERSON);
            }
            Some(AccountField::Csm) => {
                patch.csm = optional_text(v, "account.csm", &a.csm, MAX_PERSON);
            }
            Some(AccountField::Strategic) => patch.strategic = Some(a.strategic),
            Some(AccountField::ExternalIds) => {
                patch.external_ids = Some(external_ids(v, "account.external_ids", &a.external_ids));
            }
            Some(AccountField::Tags) => patch.tags = Some(tags(v, "account.tags", &a.tags)),
            Some(AccountField::Attributes) => {
                patch.attribute_inputs =
                    Some(attribute_inputs(v, "account.attributes", &a.attributes));
            }
            None => v.add(
                "update_mask",
                format!(
                    "unknown path {path:?}; allowed: name, segment, industry, owner, csm, strategic, external_ids, tags, attributes"
                ),
            ),
        }
    }
    patch
}

/// Parses an optional expected version.
pub fn expected_version(v: &mut FieldViolations, raw: Option<i64>) -> Option<i64> {
    match raw {
        Some(n) if n < 1 => {
            v.add("expected_version", "must be at least 1");
            None
        }
        other => other,
    }
}

fn role_from_pb(v: &mut FieldViolations, field: &str, raw: i32) -> Option<ContactRole> {
    match enum_value::<pb::ContactRole>(v, field, raw, true)? {
        pb::ContactRole::Champion => Some(ContactRole::Champion),
        pb::ContactRole::DecisionMaker => Some(ContactRole::DecisionMaker),
        pb::ContactRole::User => Some(ContactRole::User),
        pb::ContactRole::Unspecified => None,
    }
}

fn roles(v: &mut FieldViolations, field: &str, raw: &[i32]) -> Vec<ContactRole> {
    let set: BTreeSet<ContactRole> = raw
        .iter()
        .enumerate()
        .filter_map(|(i, r)| role_from_pb(v, &format!("{field}[{i}]"), *r))
        .collect();
    set.into_iter().collect()
}

fn email(v: &mut FieldViolations, field: &str, raw: &str) -> Option<String> {
    let email = optional_text(v, field, raw, MAX_EMAIL)?;
    let plausible = email.is_empty()
        || email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !email.contains(' ')
        });
    if plausible {
        Some(email)
    } else {
        v.add(field, "must be an email address such as ana@example.com");
        None
    }
}

/// Parses every writable field of a contact.
pub fn contact_fields(v: &mut FieldViolations, c: &pb::Contact) -> Option<ContactFields> {
    let name = required_text(v, "contact.name", &c.name, MAX_NAME);
    let email = email(v, "contact.email", &c.email);
    let title = optional_text(v, "contact.title", &c.title, MAX_NAME);
    let roles = roles(v, "contact.roles", &c.roles);
    Some(ContactFields {
        name: name?,
        email: email?,
        title: title?,
        roles,
    })
}

/// Parses the masked fields of an UpdateContact request.
pub fn contact_patch(
    v: &mut FieldViolations,
    c: &pb::Contact,
    mask: Option<&prost_types::FieldMask>,
) -> ContactPatch {
    let mut patch = ContactPatch::default();
    for path in mask_paths(v, mask) {
        match path.as_str() {
            "name" => patch.name = required_text(v, "contact.name", &c.name, MAX_NAME),
            "email" => patch.email = email(v, "contact.email", &c.email),
            "title" => patch.title = optional_text(v, "contact.title", &c.title, MAX_NAME),
            "roles" => patch.roles = Some(roles(v, "contact.roles", &c.roles)),
            other => v.add(
                "update_mask",
                format!("unknown path {other:?}; allowed: name, email, title, roles"),
            ),
        }
    }
    patch
}

/// Parses an optional time that may not lie in the future (a small clock
/// skew is tolerated).
pub fn past_time(
    v: &mut FieldViolations,
    field: &str,
    ts: Option<&prost_types::Timestamp>,
    now: Instant,
) -> Option<Instant> {
    const SKEW_MICROS: i64 = 5 * 60 * 1_000_000;
    let Some(ts) = ts else { return Some(now) };
    let at = validate::instant(v, field, ts)?;
    if at > now.plus_micros(SKEW_MICROS) {
        v.add(field, "must not lie in the future");
        return None;
    }
    Some(at)
}

/// Renders an account.
pub fn account_to_pb(a: &Account) -> pb::Account {
    pb::Account {
        id: a.id.to_string(),
        name: a.fields.name.clone(),
        segment: match a.fields.segment {
            Segment::Smb => common::Segment::Smb,
            Segment::MidMarket => common::Segment::MidMarket,
            Segment::Enterprise => common::Segment::Enterprise,
        } as i32,
        coverage_model: match a.fields.segment.coverage() {
            CoverageModel::TechTouch => common::CoverageModel::TechTouch,
            CoverageModel::PooledCsm => common::CoverageModel::PooledCsm,
            CoverageModel::NamedCsm => common::CoverageModel::NamedCsm,
        } as i32,
        industry: a.fields.industry.clone(),
        owner: a.fields.owner.clone(),
        csm: a.fields.csm.clone(),
        strategic: a.fields.strategic,
        external_ids: a
            .fields
            .external_ids
            .iter()
            .map(|e| pb::ExternalId {
                source: e.source.clone(),
                external_id: e.id.clone(),
            })
            .collect(),
        status: match a.status {
            AccountStatus::Active => pb::AccountStatus::Active,
            AccountStatus::Archived => pb::AccountStatus::Archived,
        } as i32,
        version: a.version,
        create_time: Some(a.created_at.to_timestamp()),
        update_time: Some(a.updated_at.to_timestamp()),
        tags: a.fields.tags.clone(),
        attributes: a
            .fields
            .attributes
            .iter()
            .map(|(name, value)| (name.clone(), attribute_value_to_pb(value)))
            .collect(),
    }
}

/// Renders a stored attribute value in the kind its type is sent in.
pub fn attribute_value_to_pb(value: &attr::Value) -> pb::AttributeValue {
    use pb::attribute_value::Kind;
    let kind = match value.kind {
        AttributeKind::Number => Kind::NumberValue(value.text.parse().unwrap_or(f64::NAN)),
        AttributeKind::Bool => Kind::BoolValue(value.text == "true"),
        AttributeKind::String | AttributeKind::Date | AttributeKind::Enum => {
            Kind::StringValue(value.text.clone())
        }
    };
    pb::AttributeValue { kind: Some(kind) }
}

fn kind_from_pb(v: &mut FieldViolations, field: &str, raw: i32) -> Option<AttributeKind> {
    match enum_value::<pb::AttributeType>(v, field, raw, true)? {
        pb::AttributeType::String => Some(AttributeKind::String),
        pb::AttributeType::Number => Some(AttributeKind::Number),
        pb::AttributeType::Bool => Some(AttributeKind::Bool),
        pb::AttributeType::Date => Some(AttributeKind::Date),
        pb::AttributeType::Enum => Some(AttributeKind::Enum),
        pb::AttributeType::Unspecified => None,
    }
}

fn allowed_values(
    v: &mut FieldViolations,
    field: &str,
    kind: Option<AttributeKind>,
    raw: &[String],
) -> Vec<String> {
    if kind != Some(AttributeKind::Enum) {
        if !raw.is_empty() {
            v.add(
                field,
                "must be empty unless the type is ATTRIBUTE_TYPE_ENUM",
            );
        }
        return Vec::new();
    }
    if raw.is_empty() || raw.len() > MAX_ENUM_VALUES {
        v.add(
            field,
            format!("an enum needs 1 to {MAX_ENUM_VALUES} values"),
        );
        return Vec::new();
    }
    let mut values: Vec<String> = Vec::with_capacity(raw.len());
    for (i, value) in raw.iter().enumerate() {
        let Some(value) = required_text(v, &format!("{field}[{i}]"), value, MAX_ENUM_VALUE) else {
            continue;
        };
        if values.contains(&value) {
            v.add(format!("{field}[{i}]"), format!("repeats {value:?}"));
        } else {
            values.push(value);
        }
    }
    values
}

/// Parses DeclareAttribute: the declaration and the version it expects
/// (0: must not exist yet).
pub fn declare_attribute(
    req: &pb::DeclareAttributeRequest,
) -> Result<(DeclarationFields, Option<i64>), Error> {
    let mut v = FieldViolations::default();
    let d = required(&mut v, "declaration", req.declaration.as_ref());
    let fields = d.and_then(|d| {
        let name_ok = attr::valid_name(&d.name);
        if !name_ok {
            v.add(
                "declaration.name",
                "must be lower snake case: a lower-case letter, then lower-case letters, digits or '_', at most 50 characters",
            );
        }
        let kind = kind_from_pb(&mut v, "declaration.type", d.r#type);
        let allowed = allowed_values(&mut v, "declaration.allowed_values", kind, &d.allowed_values);
        let description = optional_text(
            &mut v,
            "declaration.description",
            &d.description,
            MAX_DESCRIPTION,
        );
        Some(DeclarationFields {
            name: name_ok.then(|| d.name.clone())?,
            kind: kind?,
            allowed_values: allowed,
            description: description?,
        })
    });
    let expected = match req.expected_version {
        Some(n) if n < 0 => {
            v.add("expected_version", "must be 0 (new) or a version");
            None
        }
        other => other,
    };
    v.into_result()?;
    Ok((parsed(fields)?, expected))
}

/// Parses DeleteAttributeDeclaration: the name and the version it expects.
pub fn delete_declaration(
    req: &pb::DeleteAttributeDeclarationRequest,
) -> Result<(String, Option<i64>), Error> {
    let mut v = FieldViolations::default();
    if !attr::valid_name(&req.name) {
        v.add(
            "name",
            "must be the lower snake case name of a declared attribute",
        );
    }
    let expected = expected_version(&mut v, req.expected_version);
    v.into_result()?;
    Ok((req.name.clone(), expected))
}

/// Renders a declaration.
pub fn declaration_to_pb(d: &Declaration) -> pb::AttributeDeclaration {
    pb::AttributeDeclaration {
        name: d.fields.name.clone(),
        r#type: match d.fields.kind {
            AttributeKind::String => pb::AttributeType::String,
            AttributeKind::Number => pb::AttributeType::Number,
            AttributeKind::Bool => pb::AttributeType::Bool,
            AttributeKind::Date => pb::AttributeType::Date,
            AttributeKind::Enum => pb::AttributeType::Enum,
        } as i32,
        allowed_values: d.fields.allowed_values.clone(),
        description: d.fields.description.clone(),
        version: d.version,
        create_time: Some(d.created_at.to_timestamp()),
        update_time: Some(d.updated_at.to_timestamp()),
    }
}

/// Renders a contact.
pub fn contact_to_pb(c: &Contact) -> pb::Contact {
    pb::Contact {
        id: c.id.to_string(),
        account_id: c.account_id.to_string(),
        name: c.fields.name.clone(),
        email: c.fields.email.clone(),
        title: c.fields.title.clone(),
        roles: c
            .fields
            .roles
            .iter()
            .map(|r| match r {
                ContactRole::Champion => pb::ContactRole::Champion,
                ContactRole::DecisionMaker => pb::ContactRole::DecisionMaker,
                ContactRole::User => pb::ContactRole::User,
            } as i32)
            .collect(),
        status: if c.left_at.is_some() {
            pb::ContactStatus::Left
        } else {
            pb::ContactStatus::Active
        } as i32,
        left_time: c.left_at.map(Instant::to_timestamp),
        version: c.version,
        create_time: Some(c.created_at.to_timestamp()),
        update_time: Some(c.updated_at.to_timestamp()),
    }
}

fn required<'a, T>(v: &mut FieldViolations, field: &str, value: Option<&'a T>) -> Option<&'a T> {
    if value.is_none() {
        v.add(field, "is required");
    }
    value
}

/// A write whose request carried an optional idempotency key.
pub type Write<T> = (T, Option<Idempotency>);

/// Parses CreateAccount.
pub fn create_account(
    req: &pb::CreateAccountRequest,
) -> Result<Write<(AccountFields, Inputs)>, Error> {
    let mut v = FieldViolations::default();
    let account = required(&mut v, "account", req.account.as_ref());
    let fields = account.and_then(|a| account_fields(&mut v, "account", a));
    let inputs = account.map_or_else(Inputs::new, |a| {
        attribute_inputs(&mut v, "account.attributes", &a.attributes)
    });
    let idem = idempotency(&mut v, &req.idempotency_key, "CreateAccount", req);
    v.into_result()?;
    Ok(((parsed(fields)?, inputs), idem))
}

/// What an update asks: the record, the change and the version it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update<I, P> {
    /// The record.
    pub id: I,
    /// The masked fields.
    pub patch: P,
    /// The version the caller last read, if it cares.
    pub expected_version: Option<i64>,
}

/// What UpdateAccount asks.
pub type AccountUpdate = Update<AccountId, AccountPatch>;
/// What UpdateContact asks.
pub type ContactUpdate = Update<ContactId, ContactPatch>;

/// Finishes parsing an update whose record and patch are parsed: the
/// expected version and the idempotency key of `method`.
fn update<I, P, M: prost::Message>(
    mut v: FieldViolations,
    (id, patch): (Option<I>, Option<P>),
    (method, req, expected, key): (&str, &M, Option<i64>, &str),
) -> Result<Write<Update<I, P>>, Error> {
    let expected_version = expected_version(&mut v, expected);
    let idem = idempotency(&mut v, key, method, req);
    v.into_result()?;
    let (id, patch) = (parsed(id)?, parsed(patch)?);
    Ok((
        Update {
            id,
            patch,
            expected_version,
        },
        idem,
    ))
}

/// Parses UpdateAccount.
pub fn update_account(req: &pb::UpdateAccountRequest) -> Result<Write<AccountUpdate>, Error> {
    let mut v = FieldViolations::default();
    let account = required(&mut v, "account", req.account.as_ref());
    let id = account.and_then(|a| validate::account_id(&mut v, "account.id", &a.id));
    let patch = account.map(|a| account_patch(&mut v, a, req.update_mask.as_ref()));
    let request = (
        "UpdateAccount",
        req,
        req.expected_version,
        &*req.idempotency_key,
    );
    update(v, (id, patch), request)
}

/// Parses the optional tag filter (blank = any), normalised like a tag.
fn tag_filter(v: &mut FieldViolations, raw: &str) -> Option<String> {
    if raw.trim().is_empty() {
        return None;
    }
    match normalize_tag(raw) {
        Ok(tag) => Some(tag),
        Err(e) => {
            v.add("tag", e.to_string());
            None
        }
    }
}

/// Parses ListAccounts: its filters and the page they are bound to.
pub fn list_accounts(req: &pb::ListAccountsRequest) -> Result<(AccountFilter, Page), Error> {
    let mut v = FieldViolations::default();
    let text = |v: &mut FieldViolations, field: &str, value: &str| {
        optional_text(v, field, value, MAX_NAME).filter(|s| !s.is_empty())
    };
    let filter = AccountFilter {
        segment: segment_filter(&mut v, "segment", req.segment),
        owner: text(&mut v, "owner", &req.owner),
        csm: text(&mut v, "csm", &req.csm),
        status: status_filter(&mut v, "status", req.status),
        text: text(&mut v, "text", &req.text),
        tag: tag_filter(&mut v, &req.tag),
        attributes: attribute_inputs(&mut v, "attributes", &req.attributes),
        attribute_values: Vec::new(),
        book: None,
    };
    v.into_result()?;
    let filter = AccountFilter {
        book: access::mine("mine", req.mine)?,
        ..filter
    };
    let page = Page::parse(req.page.as_ref(), &filter.fingerprint())?;
    Ok((filter, page))
}

/// Parses UpsertAccountByExternalId.
pub fn upsert_account(
    req: &pb::UpsertAccountByExternalIdRequest,
) -> Result<Write<(ExternalId, AccountFields, Inputs)>, Error> {
    let mut v = FieldViolations::default();
    let external = required(&mut v, "external_id", req.external_id.as_ref())
        .and_then(|e| external_id(&mut v, "external_id", e));
    let account = required(&mut v, "account", req.account.as_ref());
    let fields = account.and_then(|a| account_fields(&mut v, "account", a));
    let inputs = account.map_or_else(Inputs::new, |a| {
        attribute_inputs(&mut v, "account.attributes", &a.attributes)
    });
    let idem = idempotency(
        &mut v,
        &req.idempotency_key,
        "UpsertAccountByExternalId",
        req,
    );
    v.into_result()?;
    Ok(((parsed(external)?, parsed(fields)?, inputs), idem))
}

/// The instant of the source's data of an UpsertAccountByExternalId, when set.
pub fn source_updated_at(
    req: &pb::UpsertAccountByExternalIdRequest,
) -> Result<Option<Instant>, Error> {
    let mut v = FieldViolations::default();
    let at =
        validate::optional_instant(&mut v, "source_updated_at", req.source_updated_at.as_ref());
    v.into_result()?;
    Ok(at.flatten())
}

/// One parsed row of an ImportAccounts batch: the external id, the
/// account's data, its attribute inputs, the source's instant and whether
/// the row only makes sure the account exists.
#[derive(Debug, Clone)]
pub struct ImportedAccount {
    /// The source's id of the account.
    pub external: ExternalId,
    /// The account's data.
    pub fields: AccountFields,
    /// Its attribute inputs, checked in the unit of work.
    pub inputs: Inputs,
    /// When set, the instant of the source's data.
    pub source_time: Option<Instant>,
    /// True: only create it when the external id is unknown.
    pub create_only: bool,
}

/// Parses one ImportAccounts row with the checks of UpsertAccountByExternalId.
pub fn imported_account(row: &pb::ImportedAccount) -> Result<ImportedAccount, Error> {
    let req = pb::UpsertAccountByExternalIdRequest {
        external_id: row.external_id.clone(),
        account: row.account.clone(),
        idempotency_key: String::new(),
        source_updated_at: row.source_updated_at,
    };
    let ((external, fields, inputs), _) = upsert_account(&req)?;
    let source_time = source_updated_at(&req)?;
    Ok(ImportedAccount {
        external,
        fields,
        inputs,
        source_time,
        create_only: row.create_only,
    })
}

/// Parses ArchiveAccount: the account and the version it expects.
pub fn archive_account(
    req: &pb::ArchiveAccountRequest,
) -> Result<Write<(AccountId, Option<i64>)>, Error> {
    let mut v = FieldViolations::default();
    let id = validate::account_id(&mut v, "id", &req.id);
    let expected = expected_version(&mut v, req.expected_version);
    let idem = idempotency(&mut v, &req.idempotency_key, "ArchiveAccount", req);
    v.into_result()?;
    Ok(((parsed(id)?, expected), idem))
}

fn contact_id(v: &mut FieldViolations, field: &str, raw: &str) -> Option<ContactId> {
    validate::uuid(v, field, raw).map(ContactId)
}

/// Parses the one contact id of a lookup (`GetContact`).
pub fn lookup_contact(raw: &str) -> Result<ContactId, Error> {
    api::id("id", raw).map(ContactId)
}

/// Parses CreateContact: the owning account and the fields.
pub fn create_contact(
    req: &pb::CreateContactRequest,
) -> Result<Write<(AccountId, ContactFields)>, Error> {
    let mut v = FieldViolations::default();
    let contact = required(&mut v, "contact", req.contact.as_ref());
    let account_id =
        contact.and_then(|c| validate::account_id(&mut v, "contact.account_id", &c.account_id));
    let fields = contact.and_then(|c| contact_fields(&mut v, c));
    let idem = idempotency(&mut v, &req.idempotency_key, "CreateContact", req);
    v.into_result()?;
    Ok(((parsed(account_id)?, parsed(fields)?), idem))
}

/// Parses UpdateContact.
pub fn update_contact(req: &pb::UpdateContactRequest) -> Result<Write<ContactUpdate>, Error> {
    let mut v = FieldViolations::default();
    let contact = required(&mut v, "contact", req.contact.as_ref());
    let id = contact.and_then(|c| contact_id(&mut v, "contact.id", &c.id));
    let patch = contact.map(|c| contact_patch(&mut v, c, req.update_mask.as_ref()));
    let request = (
        "UpdateContact",
        req,
        req.expected_version,
        &*req.idempotency_key,
    );
    update(v, (id, patch), request)
}

/// Parses ListContacts: the account and the page bound to it.
pub fn list_contacts(req: &pb::ListContactsRequest) -> Result<(AccountId, Page), Error> {
    let account_id = api::account_id("account_id", &req.account_id)?;
    let page = Page::parse(req.page.as_ref(), &account_id.to_string())?;
    Ok((account_id, page))
}

/// Parses DeleteContact.
pub fn delete_contact(req: &pb::DeleteContactRequest) -> Result<Write<ContactId>, Error> {
    let mut v = FieldViolations::default();
    let id = contact_id(&mut v, "id", &req.id);
    let idem = idempotency(&mut v, &req.idempotency_key, "DeleteContact", req);
    v.into_result()?;
    Ok((parsed(id)?, idem))
}

/// Parses MarkContactLeft: the contact and when they left (now when unset).
pub fn mark_contact_left(
    req: &pb::MarkContactLeftRequest,
    now: Instant,
) -> Result<Write<(ContactId, Instant)>, Error> {
    let mut v = FieldViolations::default();
    let id = contact_id(&mut v, "id", &req.id);
    let left_at = past_time(&mut v, "left_time", req.left_time.as_ref(), now);
    let idem = idempotency(&mut v, &req.idempotency_key, "MarkContactLeft", req);
    v.into_result()?;
    Ok(((parsed(id)?, parsed(left_at)?), idem))
}

/// CreateAccount's answer.
pub fn account_created(a: &Account) -> pb::CreateAccountResponse {
    pb::CreateAccountResponse {
        account: Some(account_to_pb(a)),
    }
}

/// GetAccount's answer (the account comes rendered from the read cache).
pub fn account_got(account: pb::Account) -> pb::GetAccountResponse {
    pb::GetAccountResponse {
        account: Some(account),
    }
}

/// UpdateAccount's answer.
pub fn account_updated(a: &Account) -> pb::UpdateAccountResponse {
    pb::UpdateAccountResponse {
        account: Some(account_to_pb(a)),
    }
}

/// ListAccounts' answer.
pub fn accounts_listed(rows: &[Account], page: common::PageResponse) -> pb::ListAccountsResponse {
    pb::ListAccountsResponse {
        accounts: rows.iter().map(account_to_pb).collect(),
        page: Some(page),
    }
}

/// A batch of the accounts export, each row with its cursor.
pub fn exported_accounts(rows: Vec<(Account, String)>) -> pb::ExportAccountsResponse {
    pb::ExportAccountsResponse {
        rows: rows
            .into_iter()
            .map(|(a, cursor)| pb::ExportedAccount {
                account: Some(account_to_pb(&a)),
                cursor,
            })
            .collect(),
    }
}

/// UpsertAccountByExternalId's answer.
pub fn account_upserted(a: &Account, created: bool) -> pb::UpsertAccountByExternalIdResponse {
    pb::UpsertAccountByExternalIdResponse {
        account: Some(account_to_pb(a)),
        created,
    }
}

/// ArchiveAccount's answer.
pub fn account_archived(a: &Account) -> pb::ArchiveAccountResponse {
    pb::ArchiveAccountResponse {
        account: Some(account_to_pb(a)),
    }
}

/// DeclareAttribute's answer.
pub fn attribute_declared(d: &Declaration) -> pb::DeclareAttributeResponse {
    pb::DeclareAttributeResponse {
        declaration: Some(declaration_to_pb(d)),
    }
}

/// CreateContact's answer.
pub fn contact_created(c: &Contact) -> pb::CreateContactResponse {
    pb::CreateContactResponse {
        contact: Some(contact_to_pb(c)),
    }
}

/// GetContact's answer.
pub fn contact_got(c: &Contact) -> pb::GetContactResponse {
    pb::GetContactResponse {
        contact: Some(contact_to_pb(c)),
    }
}

/// UpdateContact's answer.
pub fn contact_updated(c: &Contact) -> pb::UpdateContactResponse {
    pb::UpdateContactResponse {
        contact: Some(contact_to_pb(c)),
    }
}

/// ListContacts' answer.
pub fn contacts_listed(rows: &[Contact], page: common::PageResponse) -> pb::ListContactsResponse {
    pb::ListContactsResponse {
        contacts: rows.iter().map(contact_to_pb).collect(),
        page: Some(page),
    }
}

/// DeleteContact's answer (empty: the contact is gone).
pub fn contact_deleted() -> pb::DeleteContactResponse {
    pb::DeleteContactResponse {}
}

/// MarkContactLeft's answer.
pub fn contact_left(c: &Contact) -> pb::MarkContactLeftResponse {
    pb::MarkContactLeftResponse {
        contact: Some(contact_to_pb(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(v: FieldViolations) -> Vec<String> {
        match v.into_result() {
            Ok(()) => Vec::new(),
            Err(e) => {
                let text = e.to_string();
                [
                    "account.tags",
                    "account.attributes.seats",
                    "account.attributes.plan",
                ]
                .iter()
                .filter(|f| text.contains(*f))
                .map(|f| (*f).to_owned())
                .collect()
            }
        }
    }

    #[test]
    fn tags_collapse_repeats_and_sort_but_count_as_sent() {
        let mut v = FieldViolations::default();
        let raw: Vec<String> = ["b", "A", "a"].iter().map(|t| (*t).to_owned()).collect();
        assert_eq!(tags(&mut v, "account.tags", &raw), vec!["a", "b"]);
        assert!(v.is_empty());
        let many: Vec<String> = (0..=MAX_TAGS).map(|_| "a".to_owned()).collect();
        let mut v = FieldViolations::default();
        assert!(tags(&mut v, "account.tags", &many).is_empty());
        assert_eq!(fields_of(v), vec!["account.tags"]);
    }

    #[test]
    fn attribute_inputs_keep_the_kind_sent_and_refuse_non_finite_numbers() {
        use pb::attribute_value::Kind;
        let raw: std::collections::HashMap<String, pb::AttributeValue> = [
            (
                "plan".to_owned(),
                pb::AttributeValue {
                    kind: Some(Kind::StringValue("plus".into())),
                },
            ),
            ("beta".to_owned(), pb::AttributeValue { kind: None }),
            (
                "seats".to_owned(),
                pb::AttributeValue {
                    kind: Some(Kind::NumberValue(f64::INFINITY)),
                },
            ),
            (
                "ratio".to_owned(),
                pb::AttributeValue {
                    kind: Some(Kind::NumberValue(0.25)),
                },
            ),
        ]
        .into();
        let mut v = FieldViolations::default();
        let inputs = attribute_inputs(&mut v, "account.attributes", &raw);
        assert_eq!(inputs.get("plan"), Some(&Input::Text("plus".into())));
        assert_eq!(inputs.get("beta"), Some(&Input::Clear));
        assert_eq!(inputs.get("ratio"), Some(&Input::Number("0.25".into())));
        assert_eq!(inputs.get("seats"), None);
        assert_eq!(fields_of(v), vec!["account.attributes.seats"]);
    }
}
