//! The accounts application: each operation runs as one unit of work (change,
//! events and idempotency key in one transaction) and answers with the
//! protobuf response that an idempotent replay will return again.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::sync::Arc;

use bowtie_proto::accounts as pb;
use bowtie_runtime::access;
use bowtie_runtime::cache::FeedCache;
use bowtie_runtime::error::{Error, FieldViolations};
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::import;
use bowtie_runtime::paging::Page;
use bowtie_runtime::store::{Store, Tx};
use bowtie_runtime::{AccountId, Instant};

use sea_orm::ConnectionTrait;

use crate::attributes::{self, Declaration, DeclarationFields, Value, Values};
use crate::convert::{
    self, AccountUpdate, ContactUpdate, ImportedAccount, account_to_pb, contact_to_pb,
    declaration_to_pb,
};
use crate::domain::*;
use crate::sources;
use crate::storage::{self, AccountFilter};

fn account_event(event_type: &'static str, a: &Account) -> NewEvent {
    NewEvent::new("account", a.id.to_string(), event_type, &account_to_pb(a))
}

fn contact_event(event_type: &'static str, c: &Contact) -> NewEvent {
    NewEvent::new("contact", c.id.to_string(), event_type, &contact_to_pb(c))
}

/// The instant of the unit of work, which every row it touches carries.
fn now(tx: &Tx) -> Instant {
    Instant::from_micros(tx.now())
}

fn check_version(
    kind: &str,
    id: impl Display,
    current: i64,
    expected: Option<i64>,
) -> Result<(), Error> {
    match expected {
        Some(expected) if expected != current => Err(Error::Aborted(format!(
            "{kind} {id} is at version {current}, not {expected}; re-read it and retry"
        ))),
        _ => Ok(()),
    }
}

/// Whether the caller may change `a` (docs/design.md 9.3): its CSM or
/// owner, their manager, an admin or a key with the write scope.
fn may_write(a: &Account) -> Result<(), Error> {
    access::may_write_account(&a.id.to_string(), &a.fields.csm, &a.fields.owner)
}

/// Whether the caller may change the contacts of account `id`.
async fn may_write_contacts_of(tx: &Tx, id: AccountId) -> Result<(), Error> {
    may_write(&storage::require_account(tx.conn(), id).await?)
}

fn check_active(a: &Account) -> Result<(), Error> {
    if a.status == AccountStatus::Archived {
        return Err(Error::FailedPrecondition(format!(
            "account {} is archived and can no longer change",
            a.id
        )));
    }
    Ok(())
}

/// The declarations, by name.
async fn declared<C: ConnectionTrait>(
    conn: &C,
) -> Result<HashMap<String, DeclarationFields>, Error> {
    Ok(storage::declarations(conn)
        .await?
        .into_iter()
        .map(|d| (d.fields.name.clone(), d.fields))
        .collect())
}

/// Checks attribute `inputs` against their declarations: the changes they
/// make (`None` clears), or INVALID_ARGUMENT naming each bad `field.<name>`.
async fn check_attributes<C: ConnectionTrait>(
    conn: &C,
    field: &str,
    inputs: &Inputs,
) -> Result<BTreeMap<String, Option<Value>>, Error> {
    let mut changes = BTreeMap::new();
    if inputs.is_empty() {
        return Ok(changes);
    }
    let declared = declared(conn).await?;
    let mut v = FieldViolations::default();
    for (name, input) in inputs {
        let at = format!("{field}.{name}");
        match declared.get(name) {
            None => v.add(at, "is not a declared attribute (see DeclareAttribute)"),
            Some(d) => match attributes::check(d, input) {
                Ok(change) => {
                    changes.insert(name.clone(), change);
                }
                Err(why) => v.add(at, why),
            },
        }
    }
    v.into_result()?;
    Ok(changes)
}

/// Inserts a new active account at version 1 and queues `account.created`.
async fn insert_new(tx: &mut Tx, fields: AccountFields) -> Result<Account, Error> {
    let account = Account {
        id: new_account_id(),
        fields,
        status: AccountStatus::Active,
        version: 1,
        created_at: now(tx),
        updated_at: now(tx),
    };
    // A csm creates accounts of its own book only.
    may_write(&account)?;
    storage::insert_account(tx.conn(), &account).await?;
    tx.emit(account_event("account.created", &account));
    Ok(account)
}

/// Writes `next` as the version after `current` and queues `event_type`.
async fn write_next(
    tx: &mut Tx,
    current: &Account,
    next: Account,
    event_type: &'static str,
) -> Result<Account, Error> {
    let next = Account {
        version: current.version + 1,
        updated_at: now(tx),
        ..next
    };
    storage::update_account(tx.conn(), current, &next).await?;
    tx.emit(account_event(event_type, &next));
    Ok(next)
}

/// Writes `next` as the version after `current` and queues `event_type`.
async fn write_next_contact(
    tx: &mut Tx,
    current: &Contact,
    next: Contact,
    event_type: &'static str,
) -> Result<Contact, Error> {
    let next = Contact {
        version: current.version + 1,
        updated_at: now(tx),
        ..next
    };
    storage::update_contact(tx.conn(), current.version, &next).await?;
    tx.emit(contact_event(event_type, &next));
    Ok(next)
}

/// The key of an accounts export cursor (an account id) read back; a key
/// that is not one is INVALID_ARGUMENT naming `cursor`.
pub fn account_export_key(key: &str) -> Result<AccountId, Error> {
    uuid::Uuid::parse_str(key)
        .map(AccountId)
        .map_err(|_| Error::invalid("cursor", "is not a cursor of the accounts export"))
}

/// The accounts service's operations.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Store,
    cache: Arc<FeedCache<pb::Account>>,
}

/// Accounts kept in the read cache at most (a few hundred bytes each).
pub const CACHED_ACCOUNTS: usize = 20_000;

impl Accounts {
    /// Operations over a migrated store, with a read cache of `GetAccount`
    /// that this store's writes and the feed keep correct (start its
    /// follower with [`FeedCache::follow`]).
    pub fn new(store: Store) -> Self {
        let cache = FeedCache::new("account", CACHED_ACCOUNTS);
        Self {
            store: store.with_cache(cache.clone()),
            cache,
        }
    }

    /// The read cache, for its follower.
    pub fn cache(&self) -> &Arc<FeedCache<pb::Account>> {
        &self.cache
    }

    /// The store (for the change feed).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates an account.
    pub async fn create_account(
        &self,
        mut fields: AccountFields,
        inputs: Inputs,
        idem: Option<Idempotency>,
    ) -> Result<pb::CreateAccountResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let changes =
                        check_attributes(tx.conn(), "account.attributes", &inputs).await?;
                    fields.attributes = attributes::apply(&Values::new(), &changes);
                    Ok(convert::account_created(&insert_new(tx, fields).await?))
                })
            })
            .await
    }

    /// Reads an account.
    pub async fn get_account(&self, id: AccountId) -> Result<pb::GetAccountResponse, Error> {
        let key = id.to_string();
        if let Some(hit) = self.cache.get(&key) {
            return Ok(convert::account_got(hit));
        }
        let stamp = self.cache.generation();
        let account = account_to_pb(&storage::require_account(self.store.db().reader(), id).await?);
        self.cache.insert_if_current(key, account.clone(), stamp);
        Ok(convert::account_got(account))
    }

    /// Applies a patch, checking the expected version.
    pub async fn update_account(
        &self,
        update: AccountUpdate,
        idem: Option<Idempotency>,
    ) -> Result<pb::UpdateAccountResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_account(tx.conn(), update.id).await?;
                    may_write(&current)?;
                    check_version(
                        "account",
                        update.id,
                        current.version,
                        update.expected_version,
                    )?;
                    check_active(&current)?;
                    let mut patch = update.patch.clone();
                    if let Some(inputs) = &patch.attribute_inputs {
                        let checked =
                            check_attributes(tx.conn(), "account.attributes", inputs).await?;
                        patch.attributes = Some(checked);
                    }
                    let Some(next) = current.patched(&patch) else {
                        return Ok(convert::account_updated(&current));
                    };
                    let next = write_next(tx, &current, next, "account.updated").await?;
                    Ok(convert::account_updated(&next))
                })
            })
            .await
    }

    /// Lists accounts.
    pub async fn list_accounts(
        &self,
        mut filter: AccountFilter,
        page: Page,
    ) -> Result<pb::ListAccountsResponse, Error> {
        if !filter.attributes.is_empty() {
            let mut v = FieldViolations::default();
            for (name, input) in &filter.attributes {
                if *input == attributes::Input::Clear {
                    v.add(format!("attributes.{name}"), "must hold the value to match");
                }
            }
            v.into_result()?;
            let checked =
                check_attributes(self.store.db().reader(), "attributes", &filter.attributes)
                    .await?;
            filter.attribute_values = checked
                .into_iter()
                .filter_map(|(name, value)| value.map(|value| (name, value.text)))
                .collect();
        }
        let rows = storage::list_accounts(
            self.store.db().reader(),
            &filter,
            page.after.as_deref(),
            page.fetch_limit(),
        )
        .await?;
        let (rows, paging) = page.finish(rows, |a| a.id.to_string());
        Ok(convert::accounts_listed(&rows, paging))
    }

    /// Creates or updates the account a CRM knows by `external`. With
    /// `source_time` (the instant of the source's data), data older than
    /// the newest applied for `external` changes nothing and answers the
    /// account as it is.
    pub async fn upsert_by_external_id(
        &self,
        external: ExternalId,
        fields: AccountFields,
        inputs: Inputs,
        source_time: Option<Instant>,
        idem: Option<Idempotency>,
    ) -> Result<pb::UpsertAccountByExternalIdResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    storage::lock_external_id(tx.conn(), &external).await?;
                    let row = ImportedAccount {
                        external,
                        fields,
                        inputs,
                        source_time,
                        create_only: false,
                    };
                    let (account, upserted) = upsert(tx, row).await?;
                    Ok(convert::account_upserted(
                        &account,
                        upserted == Upserted::Created,
                    ))
                })
            })
            .await
    }

    /// Imports one batch of accounts by external id (batch number `batch`
    /// of its stream), in order, in one unit of work: each row as
    /// [`Self::upsert_by_external_id`], one result per row. A row refused
    /// for what it says writes nothing and the rest land; a row outside the
    /// caller's book refuses the whole batch (docs/design.md 9.3).
    pub async fn import_accounts(
        &self,
        batch: i64,
        rows: Vec<Result<ImportedAccount, Error>>,
    ) -> Result<pb::ImportAccountsResponse, Error> {
        self.store
            .write(None, move |tx| {
                Box::pin(async move {
                    // Held in order, so concurrent batches cannot deadlock.
                    let held: std::collections::BTreeSet<&ExternalId> =
                        rows.iter().flatten().map(|r| &r.external).collect();
                    for external in held {
                        storage::lock_external_id(tx.conn(), external).await?;
                    }
                    let mut results = Vec::with_capacity(rows.len());
                    for (i, row) in rows.into_iter().enumerate() {
                        let row = match row {
                            Ok(row) => row,
                            Err(error) => {
                                results.push(import::rejected(i, "", &error));
                                continue;
                            }
                        };
                        match upsert(tx, row).await {
                            Ok((account, Upserted::Unchanged)) => {
                                results.push(import::duplicate(i, account.id.to_string()));
                            }
                            Ok((account, _)) => {
                                results.push(import::recorded(i, account.id.to_string()));
                            }
                            Err(
                                error @ (Error::Forbidden { .. }
                                | Error::Database(_)
                                | Error::Internal(_)
                                | Error::Unavailable(_)),
                            ) => return Err(error),
                            Err(error) => results.push(import::rejected(i, "", &error)),
                        }
                    }
                    let (recorded, duplicates, rejected) = import::tally(&results);
                    Ok(pb::ImportAccountsResponse {
                        batch,
                        recorded,
                        duplicates,
                        rejected,
                        results,
                    })
                })
            })
            .await
    }

    /// Archives an account.
    pub async fn archive_account(
        &self,
        id: AccountId,
        expected_version: Option<i64>,
        idem: Option<Idempotency>,
    ) -> Result<pb::ArchiveAccountResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_account(tx.conn(), id).await?;
                    may_write(&current)?;
                    check_version("account", id, current.version, expected_version)?;
                    if current.status == AccountStatus::Archived {
                        return Err(Error::FailedPrecondition(format!(
                            "account {id} is already archived"
                        )));
                    }
                    let next = Account {
                        status: AccountStatus::Archived,
                        ..current.clone()
                    };
                    let next = write_next(tx, &current, next, "account.archived").await?;
                    Ok(convert::account_archived(&next))
                })
            })
            .await
    }

    /// Adds a contact to an active account.
    pub async fn create_contact(
        &self,
        account_id: AccountId,
        fields: ContactFields,
        idem: Option<Idempotency>,
    ) -> Result<pb::CreateContactResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let account = storage::require_account(tx.conn(), account_id).await?;
                    may_write(&account)?;
                    check_active(&account)?;
                    let contact = Contact {
                        id: new_contact_id(),
                        account_id,
                        fields,
                        left_at: None,
                        version: 1,
                        created_at: now(tx),
                        updated_at: now(tx),
                    };
                    storage::insert_contact(tx.conn(), &contact).await?;
                    tx.emit(contact_event("contact.created", &contact));
                    Ok(convert::contact_created(&contact))
                })
            })
            .await
    }

    /// Reads a contact.
    pub async fn get_contact(&self, id: ContactId) -> Result<pb::GetContactResponse, Error> {
        let contact = storage::require_contact(self.store.db().reader(), id).await?;
        Ok(convert::contact_got(&contact))
    }

    /// Applies a patch to a contact.
    pub async fn update_contact(
        &self,
        update: ContactUpdate,
        idem: Option<Idempotency>,
    ) -> Result<pb::UpdateContactResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_contact(tx.conn(), update.id).await?;
                    may_write_contacts_of(tx, current.account_id).await?;
                    check_version(
                        "contact",
                        update.id,
                        current.version,
                        update.expected_version,
                    )?;
                    let Some(next) = current.patched(&update.patch) else {
                        return Ok(convert::contact_updated(&current));
                    };
                    let next = write_next_contact(tx, &current, next, "contact.updated").await?;
                    Ok(convert::contact_updated(&next))
                })
            })
            .await
    }

    /// At most `limit` accounts (archived ones too) with an id after the
    /// export key `after` (from the first without), by id: a batch of the
    /// streaming export, read by the primary key. A key that is not an
    /// account id is INVALID_ARGUMENT naming `cursor`.
    pub async fn export_accounts(
        &self,
        after: Option<String>,
        limit: u64,
    ) -> Result<Vec<Account>, Error> {
        if let Some(key) = &after {
            account_export_key(key)?;
        }
        storage::list_accounts(
            self.store.db().reader(),
            &AccountFilter::default(),
            after.as_deref(),
            limit,
        )
        .await
    }

    /// Lists an account's contacts.
    pub async fn list_contacts(
        &self,
        account_id: AccountId,
        page: Page,
    ) -> Result<pb::ListContactsResponse, Error> {
        let reader = self.store.db().reader();
        storage::require_account(reader, account_id).await?;
        let rows = storage::list_contacts(
            reader,
            account_id,
            page.after.as_deref(),
            page.fetch_limit(),
        )
        .await?;
        let (rows, paging) = page.finish(rows, |c| c.id.to_string());
        Ok(convert::contacts_listed(&rows, paging))
    }

    /// Deletes a contact.
    pub async fn delete_contact(
        &self,
        id: ContactId,
        idem: Option<Idempotency>,
    ) -> Result<pb::DeleteContactResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_contact(tx.conn(), id).await?;
                    may_write_contacts_of(tx, current.account_id).await?;
                    storage::delete_contact(tx.conn(), id).await?;
                    tx.emit(contact_event("contact.deleted", &current));
                    Ok(convert::contact_deleted())
                })
            })
            .await
    }

    /// Records that a contact left the company.
    pub async fn mark_contact_left(
        &self,
        id: ContactId,
        left_at: Instant,
        idem: Option<Idempotency>,
    ) -> Result<pb::MarkContactLeftResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_contact(tx.conn(), id).await?;
                    may_write_contacts_of(tx, current.account_id).await?;
                    if current.left_at.is_some() {
                        return Err(Error::FailedPrecondition(format!(
                            "contact {id} has already left"
                        )));
                    }
                    let next = Contact {
                        left_at: Some(left_at),
                        ..current.clone()
                    };
                    let next = write_next_contact(tx, &current, next, "contact.left").await?;
                    Ok(convert::contact_left(&next))
                })
            })
            .await
    }

    /// Declares an attribute or changes its declaration.
    pub async fn declare_attribute(
        &self,
        fields: DeclarationFields,
        expected_version: Option<i64>,
    ) -> Result<pb::DeclareAttributeResponse, Error> {
        self.store
            .write(None, move |tx| {
                Box::pin(async move {
                    let name = fields.name.clone();
                    let current = storage::get_declaration(tx.conn(), &name).await?;
                    let version = current.as_ref().map_or(0, |d| d.version);
                    check_version("attribute", &name, version, expected_version)?;
                    if let Some(current) = &current {
                        blocked_change(tx.conn(), &current.fields, &fields).await?;
                        if current.fields == fields {
                            return Ok(convert::attribute_declared(current));
                        }
                    }
                    let next = Declaration {
                        fields,
                        version: version + 1,
                        created_at: current.as_ref().map_or(now(tx), |d| d.created_at),
                        updated_at: now(tx),
                    };
                    let previous = current.as_ref().map(|d| d.version);
                    storage::put_declaration(tx.conn(), &next, previous).await?;
                    tx.emit(NewEvent::new(
                        "attribute",
                        name,
                        "attribute.declared",
                        &declaration_to_pb(&next),
                    ));
                    Ok(convert::attribute_declared(&next))
                })
            })
            .await
    }

    /// Deletes a declaration no account holds a value of.
    pub async fn delete_declaration(
        &self,
        name: String,
        expected_version: Option<i64>,
    ) -> Result<pb::DeleteAttributeDeclarationResponse, Error> {
        self.store
            .write(None, move |tx| {
                Box::pin(async move {
                    let current = storage::get_declaration(tx.conn(), &name)
                        .await?
                        .ok_or_else(|| Error::not_found("attribute", name.clone()))?;
                    check_version("attribute", &name, current.version, expected_version)?;
                    let held = storage::count_values(tx.conn(), &name, None).await?;
                    if held > 0 {
                        return Err(Error::FailedPrecondition(format!(
                            "attribute {name} cannot be deleted: {held} accounts hold a value; clear them first"
                        )));
                    }
                    storage::delete_declaration(tx.conn(), &name, current.version).await?;
                    tx.emit(NewEvent::new(
                        "attribute",
                        name,
                        "attribute.deleted",
                        &declaration_to_pb(&current),
                    ));
                    Ok(pb::DeleteAttributeDeclarationResponse {})
                })
            })
            .await
    }

    /// Lists the declarations.
    pub async fn list_declarations(&self) -> Result<pb::ListAttributeDeclarationsResponse, Error> {
        let all = storage::declarations(self.store.db().reader()).await?;
        Ok(pb::ListAttributeDeclarationsResponse {
            declarations: all.iter().map(declaration_to_pb).collect(),
        })
    }
}

/// What an upsert by external id did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upserted {
    /// A new account.
    Created,
    /// The account changed.
    Updated,
    /// Nothing changed: the data is the account's, older than the newest
    /// applied, or the row only makes sure the account exists.
    Unchanged,
}

/// Creates or updates the account of `row.external` inside `tx`, every
/// check before the first write, so a refused row writes nothing: the
/// attributes against their declarations, the source's instant against the
/// newest applied, the caller's book, an archived account.
async fn upsert(tx: &mut Tx, row: ImportedAccount) -> Result<(Account, Upserted), Error> {
    let ImportedAccount {
        external,
        mut fields,
        inputs,
        source_time,
        create_only,
    } = row;
    fields.external_ids.retain(|e| e.source != external.source);
    fields.external_ids.push(external.clone());
    fields.external_ids.sort();
    let changes = check_attributes(tx.conn(), "account.attributes", &inputs).await?;
    let known = storage::find_by_external_id(tx.conn(), &external).await?;
    let current = match known {
        Some(id) => Some(storage::require_account(tx.conn(), id).await?),
        None => None,
    };
    if let (Some(current), true) = (&current, create_only) {
        return Ok((current.clone(), Upserted::Unchanged));
    }
    if let (Some(current), Some(at)) = (&current, source_time)
        && sources::source_time(tx.conn(), &external)
            .await?
            .is_some_and(|newest| newest > at)
    {
        return Ok((current.clone(), Upserted::Unchanged));
    }
    let Some(current) = current else {
        fields.attributes = attributes::apply(&Values::new(), &changes);
        let account = insert_new(tx, fields).await?;
        if let Some(at) = source_time {
            sources::set_source_time(tx.conn(), &external, at).await?;
        }
        return Ok((account, Upserted::Created));
    };
    may_write(&current)?;
    let mut merged = current.fields.merged_from_crm(&fields);
    merged.attributes = attributes::apply(&merged.attributes, &changes);
    if merged == current.fields {
        if let Some(at) = source_time {
            sources::set_source_time(tx.conn(), &external, at).await?;
        }
        return Ok((current, Upserted::Unchanged));
    }
    check_active(&current)?;
    if let Some(at) = source_time {
        sources::set_source_time(tx.conn(), &external, at).await?;
    }
    let next = Account {
        fields: merged,
        ..current.clone()
    };
    let next = write_next(tx, &current, next, "account.updated").await?;
    Ok((next, Upserted::Updated))
}

/// FAILED_PRECONDITION when `next` would no longer admit values accounts
/// hold under `current`: a new type while any value exists, or an enum
/// losing a value in use.
async fn blocked_change<C: ConnectionTrait>(
    conn: &C,
    current: &DeclarationFields,
    next: &DeclarationFields,
) -> Result<(), Error> {
    let name = &next.name;
    if current.kind != next.kind {
        let held = storage::count_values(conn, name, None).await?;
        if held > 0 {
            return Err(Error::FailedPrecondition(format!(
                "attribute {name} cannot change its type: {held} accounts hold a value; clear them first"
            )));
        }
    } else if next.kind == attributes::AttributeKind::Enum {
        let held = storage::count_values(conn, name, Some(&next.allowed_values)).await?;
        if held > 0 {
            return Err(Error::FailedPrecondition(format!(
                "attribute {name} cannot drop an allowed value: {held} accounts hold a value it leaves out"
            )));
        }
    }
    Ok(())
}
