//! Request builders and small client helpers for the accounts API, so tests
//! state only what matters to them (a name, a segment) and read like the
//! scenario they check.

use anyhow::Context as _;
use bowtie_proto::accounts::{
    Account, Contact, ContactRole, CreateAccountRequest, CreateContactRequest, ExternalId,
    GetAccountRequest, ListAccountsRequest, WatchEventsRequest,
};
use bowtie_proto::common::{Event, PageRequest, Segment};
use prost::Message as _;
use tonic::Streaming;

use crate::AccountsClient;

/// An account to create: a name and a segment, every other field empty.
pub fn account(name: &str, segment: Segment) -> Account {
    Account {
        name: name.to_owned(),
        segment: segment as i32,
        ..Account::default()
    }
}

/// A fully populated account to create.
pub fn full_account(name: &str) -> Account {
    Account {
        name: name.to_owned(),
        segment: Segment::Enterprise as i32,
        industry: "Manufacturing".to_owned(),
        owner: "ana@example.com".to_owned(),
        csm: "bo@example.com".to_owned(),
        strategic: true,
        external_ids: vec![external_id("salesforce", "001-ACME")],
        ..Account::default()
    }
}

/// An external id.
pub fn external_id(source: &str, id: &str) -> ExternalId {
    ExternalId {
        source: source.to_owned(),
        external_id: id.to_owned(),
    }
}

/// A contact to create at `account_id`.
pub fn contact(account_id: &str, name: &str) -> Contact {
    Contact {
        account_id: account_id.to_owned(),
        name: name.to_owned(),
        email: format!(
            "{}@example.com",
            name.to_ascii_lowercase().replace(' ', ".")
        ),
        title: "VP Operations".to_owned(),
        roles: vec![ContactRole::Champion as i32],
        ..Contact::default()
    }
}

/// A field mask naming `paths`.
pub fn mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// A page request.
pub fn page(size: i32, token: &str) -> Option<PageRequest> {
    Some(PageRequest {
        page_size: size,
        page_token: token.to_owned(),
    })
}

/// Creates `account` and returns it as stored.
pub async fn create_account(
    client: &mut AccountsClient,
    account: Account,
) -> anyhow::Result<Account> {
    client
        .create_account(CreateAccountRequest {
            account: Some(account),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .account
        .context("CreateAccount answered without an account")
}

/// Creates an account named `name` in `segment`.
pub async fn create_named(
    client: &mut AccountsClient,
    name: &str,
    segment: Segment,
) -> anyhow::Result<Account> {
    create_account(client, account(name, segment)).await
}

/// Reads an account.
pub async fn get_account(client: &mut AccountsClient, id: &str) -> anyhow::Result<Account> {
    client
        .get_account(GetAccountRequest { id: id.to_owned() })
        .await?
        .into_inner()
        .account
        .context("GetAccount answered without an account")
}

/// Creates a contact and returns it as stored.
pub async fn create_contact(
    client: &mut AccountsClient,
    contact: Contact,
) -> anyhow::Result<Contact> {
    client
        .create_contact(CreateContactRequest {
            contact: Some(contact),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .contact
        .context("CreateContact answered without a contact")
}

/// Walks every page of `request` (its page size is kept) and returns all
/// accounts in the order served, failing after `max_pages` pages.
pub async fn list_all(
    client: &mut AccountsClient,
    mut request: ListAccountsRequest,
    max_pages: usize,
) -> anyhow::Result<Vec<Account>> {
    let mut all = Vec::new();
    for _ in 0..max_pages {
        let response = client.list_accounts(request.clone()).await?.into_inner();
        all.extend(response.accounts);
        let token = response.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(all);
        }
        let size = request.page.as_ref().map_or(0, |p| p.page_size);
        request.page = page(size, &token);
    }
    anyhow::bail!("ListAccounts still had a next page after {max_pages} pages")
}

/// The names of `accounts`, in order.
pub fn names(accounts: &[Account]) -> Vec<String> {
    accounts.iter().map(|a| a.name.clone()).collect()
}

/// The ids of `accounts`, in order.
pub fn ids(accounts: &[Account]) -> Vec<String> {
    accounts.iter().map(|a| a.id.clone()).collect()
}

/// Opens the change feed after `after_sequence`.
pub async fn watch(
    client: &mut AccountsClient,
    after_sequence: i64,
) -> anyhow::Result<Streaming<bowtie_proto::accounts::WatchEventsResponse>> {
    Ok(client
        .watch_events(WatchEventsRequest {
            after_sequence,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// The next `n` events of a feed stream, waiting at most `seconds` for all.
pub async fn next_events(
    stream: &mut Streaming<bowtie_proto::accounts::WatchEventsResponse>,
    n: usize,
    seconds: u64,
) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::with_capacity(n);
    let outcome = crate::within(seconds, &format!("{n} events"), async {
        while events.len() < n {
            let message = stream
                .message()
                .await?
                .context("the feed stream ended early")?;
            events.push(message.event.context("a feed message without an event")?);
        }
        anyhow::Ok(())
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(events),
        Ok(Err(e)) | Err(e) => Err(e.context(format!("after {} of {n} events", events.len()))),
    }
}

/// The account an event carries as its payload.
pub fn account_payload(event: &Event) -> anyhow::Result<Account> {
    let any = event.payload.as_ref().context("event without a payload")?;
    anyhow::ensure!(
        any.type_url.ends_with("bowtie.accounts.v1.Account"),
        "payload type {} is not an Account",
        any.type_url
    );
    Ok(Account::decode(any.value.as_slice())?)
}
