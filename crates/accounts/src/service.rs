//! The accounts application: each operation runs as one unit of work (change,
//! events and idempotency key in one transaction) and answers with the
//! protobuf response that an idempotent replay will return again.

use std::sync::Arc;

use bowtie_proto::accounts as pb;
use bowtie_runtime::cache::FeedCache;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::paging::Page;
use bowtie_runtime::store::{Store, Tx};
use uuid::Uuid;

use crate::convert::{account_to_pb, contact_to_pb};
use crate::domain::*;
use crate::storage::{self, AccountFilter};

fn account_event(event_type: &'static str, a: &pb::Account) -> NewEvent {
    NewEvent::new("account", a.id.clone(), event_type, a)
}

fn contact_event(event_type: &'static str, c: &pb::Contact) -> NewEvent {
    NewEvent::new("contact", c.id.clone(), event_type, c)
}

fn check_version(kind: &str, id: Uuid, current: i64, expected: Option<i64>) -> Result<(), Error> {
    match expected {
        Some(expected) if expected != current => Err(Error::Aborted(format!(
            "{kind} {id} is at version {current}, not {expected}; re-read it and retry"
        ))),
        _ => Ok(()),
    }
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

/// Inserts a new active account at version 1 and queues `account.created`.
async fn insert_new(tx: &mut Tx, fields: AccountFields) -> Result<pb::Account, Error> {
    let account = Account {
        id: Uuid::now_v7(),
        fields,
        status: AccountStatus::Active,
        version: 1,
        created_at: tx.now(),
        updated_at: tx.now(),
    };
    storage::insert_account(tx.conn(), &account).await?;
    let account = account_to_pb(&account);
    tx.emit(account_event("account.created", &account));
    Ok(account)
}

/// Writes `next` as the version after `current` and queues `event_type`.
async fn write_next(
    tx: &mut Tx,
    current: &Account,
    next: Account,
    event_type: &'static str,
) -> Result<pb::Account, Error> {
    let next = Account {
        version: current.version + 1,
        updated_at: tx.now(),
        ..next
    };
    storage::update_account(tx.conn(), current, &next).await?;
    let account = account_to_pb(&next);
    tx.emit(account_event(event_type, &account));
    Ok(account)
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
        fields: AccountFields,
        idem: Option<Idempotency>,
    ) -> Result<pb::CreateAccountResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    Ok(pb::CreateAccountResponse {
                        account: Some(insert_new(tx, fields).await?),
                    })
                })
            })
            .await
    }

    /// Reads an account.
    pub async fn get_account(&self, id: Uuid) -> Result<pb::Account, Error> {
        let key = id.to_string();
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let stamp = self.cache.generation();
        let account = account_to_pb(&storage::require_account(self.store.db().reader(), id).await?);
        self.cache.insert_if_current(key, account.clone(), stamp);
        Ok(account)
    }

    /// Applies a patch, checking the expected version.
    pub async fn update_account(
        &self,
        id: Uuid,
        patch: AccountPatch,
        expected_version: Option<i64>,
        idem: Option<Idempotency>,
    ) -> Result<pb::UpdateAccountResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_account(tx.conn(), id).await?;
                    check_version("account", id, current.version, expected_version)?;
                    check_active(&current)?;
                    let fields = current.fields.patched(&patch);
                    if fields == current.fields {
                        return Ok(pb::UpdateAccountResponse {
                            account: Some(account_to_pb(&current)),
                        });
                    }
                    let next = Account {
                        fields,
                        ..current.clone()
                    };
                    Ok(pb::UpdateAccountResponse {
                        account: Some(write_next(tx, &current, next, "account.updated").await?),
                    })
                })
            })
            .await
    }

    /// Lists accounts.
    pub async fn list_accounts(
        &self,
        filter: AccountFilter,
        page: Page,
    ) -> Result<pb::ListAccountsResponse, Error> {
        let rows = storage::list_accounts(
            self.store.db().reader(),
            &filter,
            page.after.as_deref(),
            page.fetch_limit(),
        )
        .await?;
        let (rows, paging) = page.finish(rows, |a| a.id.to_string());
        Ok(pb::ListAccountsResponse {
            accounts: rows.iter().map(account_to_pb).collect(),
            page: Some(paging),
        })
    }

    /// Creates or updates the account a CRM knows by `external`.
    pub async fn upsert_by_external_id(
        &self,
        external: ExternalId,
        mut fields: AccountFields,
        idem: Option<Idempotency>,
    ) -> Result<pb::UpsertAccountByExternalIdResponse, Error> {
        fields.external_ids.retain(|e| e.source != external.source);
        fields.external_ids.push(external.clone());
        fields.external_ids.sort();
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let Some(id) = storage::find_by_external_id(tx.conn(), &external).await? else {
                        return Ok(pb::UpsertAccountByExternalIdResponse {
                            account: Some(insert_new(tx, fields).await?),
                            created: true,
                        });
                    };
                    let current = storage::require_account(tx.conn(), id).await?;
                    let merged = current.fields.merged_from_crm(&fields);
                    if merged == current.fields {
                        return Ok(pb::UpsertAccountByExternalIdResponse {
                            account: Some(account_to_pb(&current)),
                            created: false,
                        });
                    }
                    check_active(&current)?;
                    let next = Account {
                        fields: merged,
                        ..current.clone()
                    };
                    Ok(pb::UpsertAccountByExternalIdResponse {
                        account: Some(write_next(tx, &current, next, "account.updated").await?),
                        created: false,
                    })
                })
            })
            .await
    }

    /// Archives an account.
    pub async fn archive_account(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        idem: Option<Idempotency>,
    ) -> Result<pb::ArchiveAccountResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_account(tx.conn(), id).await?;
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
                    Ok(pb::ArchiveAccountResponse {
                        account: Some(write_next(tx, &current, next, "account.archived").await?),
                    })
                })
            })
            .await
    }

    /// Adds a contact to an active account.
    pub async fn create_contact(
        &self,
        account_id: Uuid,
        fields: ContactFields,
        idem: Option<Idempotency>,
    ) -> Result<pb::CreateContactResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let account = storage::require_account(tx.conn(), account_id).await?;
                    check_active(&account)?;
                    let contact = Contact {
                        id: Uuid::now_v7(),
                        account_id,
                        fields,
                        left_at: None,
                        version: 1,
                        created_at: tx.now(),
                        updated_at: tx.now(),
                    };
                    storage::insert_contact(tx.conn(), &contact).await?;
                    let contact = contact_to_pb(&contact);
                    tx.emit(contact_event("contact.created", &contact));
                    Ok(pb::CreateContactResponse {
                        contact: Some(contact),
                    })
                })
            })
            .await
    }

    /// Reads a contact.
    pub async fn get_contact(&self, id: Uuid) -> Result<pb::Contact, Error> {
        let contact = storage::require_contact(self.store.db().reader(), id).await?;
        Ok(contact_to_pb(&contact))
    }

    /// Applies a patch to a contact.
    pub async fn update_contact(
        &self,
        id: Uuid,
        patch: ContactPatch,
        expected_version: Option<i64>,
        idem: Option<Idempotency>,
    ) -> Result<pb::UpdateContactResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_contact(tx.conn(), id).await?;
                    check_version("contact", id, current.version, expected_version)?;
                    let fields = current.fields.patched(&patch);
                    if fields == current.fields {
                        return Ok(pb::UpdateContactResponse {
                            contact: Some(contact_to_pb(&current)),
                        });
                    }
                    let next = Contact {
                        fields,
                        version: current.version + 1,
                        updated_at: tx.now(),
                        ..current.clone()
                    };
                    storage::update_contact(tx.conn(), current.version, &next).await?;
                    let contact = contact_to_pb(&next);
                    tx.emit(contact_event("contact.updated", &contact));
                    Ok(pb::UpdateContactResponse {
                        contact: Some(contact),
                    })
                })
            })
            .await
    }

    /// Lists an account's contacts.
    pub async fn list_contacts(
        &self,
        account_id: Uuid,
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
        Ok(pb::ListContactsResponse {
            contacts: rows.iter().map(contact_to_pb).collect(),
            page: Some(paging),
        })
    }

    /// Deletes a contact.
    pub async fn delete_contact(
        &self,
        id: Uuid,
        idem: Option<Idempotency>,
    ) -> Result<pb::DeleteContactResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_contact(tx.conn(), id).await?;
                    storage::delete_contact(tx.conn(), id).await?;
                    tx.emit(contact_event("contact.deleted", &contact_to_pb(&current)));
                    Ok(pb::DeleteContactResponse {})
                })
            })
            .await
    }

    /// Records that a contact left the company.
    pub async fn mark_contact_left(
        &self,
        id: Uuid,
        left_at: i64,
        idem: Option<Idempotency>,
    ) -> Result<pb::MarkContactLeftResponse, Error> {
        self.store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_contact(tx.conn(), id).await?;
                    if current.left_at.is_some() {
                        return Err(Error::FailedPrecondition(format!(
                            "contact {id} has already left"
                        )));
                    }
                    let next = Contact {
                        left_at: Some(left_at),
                        version: current.version + 1,
                        updated_at: tx.now(),
                        ..current.clone()
                    };
                    storage::update_contact(tx.conn(), current.version, &next).await?;
                    let contact = contact_to_pb(&next);
                    tx.emit(contact_event("contact.left", &contact));
                    Ok(pb::MarkContactLeftResponse {
                        contact: Some(contact),
                    })
                })
            })
            .await
    }
}
