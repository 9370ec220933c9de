//! gRPC handlers: parse the request into domain values (every problem named
//! by field), call the application, map the error. Nothing else happens here.

use bowtie_proto::accounts as pb;
use bowtie_proto::accounts::accounts_service_server::AccountsService;
use bowtie_runtime::api::{Answer, idempotency, parsed};
use bowtie_runtime::error::FieldViolations;
use bowtie_runtime::feed::EventStream;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate::{self, now_micros};
use tonic::{Request, Response};

use crate::convert;
use crate::domain::MAX_NAME;
use crate::service::Accounts;
use crate::storage::AccountFilter;

/// The tonic service.
#[derive(Debug, Clone)]
pub struct AccountsApi {
    app: Accounts,
}

impl AccountsApi {
    /// Handlers over the application.
    pub fn new(app: Accounts) -> Self {
        Self { app }
    }
}

fn required<'a, T>(v: &mut FieldViolations, field: &str, value: Option<&'a T>) -> Option<&'a T> {
    if value.is_none() {
        v.add(field, "is required");
    }
    value
}

#[tonic::async_trait]
impl AccountsService for AccountsApi {
    #[tracing::instrument(skip_all)]
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Answer<pb::CreateAccountResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let fields = required(&mut v, "account", req.account.as_ref())
            .and_then(|a| convert::account_fields(&mut v, "account", a));
        let idem = idempotency(&mut v, &req.idempotency_key, "CreateAccount", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app.create_account(parsed(fields)?, idem).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Answer<pb::GetAccountResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "id", &req.id);
        v.into_result()?;
        let account = self.app.get_account(parsed(id)?).await?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Answer<pb::UpdateAccountResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let account = required(&mut v, "account", req.account.as_ref());
        let id = account.and_then(|a| validate::uuid(&mut v, "account.id", &a.id));
        let patch = account.map(|a| convert::account_patch(&mut v, a, req.update_mask.as_ref()));
        let expected = convert::expected_version(&mut v, req.expected_version);
        let idem = idempotency(&mut v, &req.idempotency_key, "UpdateAccount", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .update_account(parsed(id)?, parsed(patch)?, expected, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Answer<pb::ListAccountsResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let filter = AccountFilter {
            segment: convert::segment_filter(&mut v, "segment", req.segment),
            owner: non_empty(validate::optional_text(
                &mut v, "owner", &req.owner, MAX_NAME,
            )),
            csm: non_empty(validate::optional_text(&mut v, "csm", &req.csm, MAX_NAME)),
            status: convert::status_filter(&mut v, "status", req.status),
            text: non_empty(validate::optional_text(&mut v, "text", &req.text, MAX_NAME)),
        };
        v.into_result()?;
        let page = Page::parse(req.page.as_ref(), &filter.fingerprint())?;
        Ok(Response::new(self.app.list_accounts(filter, page).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn upsert_account_by_external_id(
        &self,
        request: Request<pb::UpsertAccountByExternalIdRequest>,
    ) -> Answer<pb::UpsertAccountByExternalIdResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let external = required(&mut v, "external_id", req.external_id.as_ref())
            .and_then(|e| convert::external_id(&mut v, "external_id", e));
        let fields = required(&mut v, "account", req.account.as_ref())
            .and_then(|a| convert::account_fields(&mut v, "account", a));
        let idem = idempotency(
            &mut v,
            &req.idempotency_key,
            "UpsertAccountByExternalId",
            &req,
        );
        v.into_result()?;
        Ok(Response::new(
            self.app
                .upsert_by_external_id(parsed(external)?, parsed(fields)?, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn archive_account(
        &self,
        request: Request<pb::ArchiveAccountRequest>,
    ) -> Answer<pb::ArchiveAccountResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "id", &req.id);
        let expected = convert::expected_version(&mut v, req.expected_version);
        let idem = idempotency(&mut v, &req.idempotency_key, "ArchiveAccount", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .archive_account(parsed(id)?, expected, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn create_contact(
        &self,
        request: Request<pb::CreateContactRequest>,
    ) -> Answer<pb::CreateContactResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let contact = required(&mut v, "contact", req.contact.as_ref());
        let account_id =
            contact.and_then(|c| validate::uuid(&mut v, "contact.account_id", &c.account_id));
        let fields = contact.and_then(|c| convert::contact_fields(&mut v, c));
        let idem = idempotency(&mut v, &req.idempotency_key, "CreateContact", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .create_contact(parsed(account_id)?, parsed(fields)?, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Answer<pb::GetContactResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "id", &req.id);
        v.into_result()?;
        let contact = self.app.get_contact(parsed(id)?).await?;
        Ok(Response::new(pb::GetContactResponse {
            contact: Some(contact),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_contact(
        &self,
        request: Request<pb::UpdateContactRequest>,
    ) -> Answer<pb::UpdateContactResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let contact = required(&mut v, "contact", req.contact.as_ref());
        let id = contact.and_then(|c| validate::uuid(&mut v, "contact.id", &c.id));
        let patch = contact.map(|c| convert::contact_patch(&mut v, c, req.update_mask.as_ref()));
        let expected = convert::expected_version(&mut v, req.expected_version);
        let idem = idempotency(&mut v, &req.idempotency_key, "UpdateContact", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .update_contact(parsed(id)?, parsed(patch)?, expected, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Answer<pb::ListContactsResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let account_id = validate::uuid(&mut v, "account_id", &req.account_id);
        v.into_result()?;
        let account_id = parsed(account_id)?;
        let page = Page::parse(req.page.as_ref(), &account_id.to_string())?;
        Ok(Response::new(
            self.app.list_contacts(account_id, page).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_contact(
        &self,
        request: Request<pb::DeleteContactRequest>,
    ) -> Answer<pb::DeleteContactResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "id", &req.id);
        let idem = idempotency(&mut v, &req.idempotency_key, "DeleteContact", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app.delete_contact(parsed(id)?, idem).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn mark_contact_left(
        &self,
        request: Request<pb::MarkContactLeftRequest>,
    ) -> Answer<pb::MarkContactLeftResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "id", &req.id);
        let left_at = convert::past_time(&mut v, "left_time", req.left_time.as_ref(), now_micros());
        let idem = idempotency(&mut v, &req.idempotency_key, "MarkContactLeft", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .mark_contact_left(parsed(id)?, parsed(left_at)?, idem)
                .await?,
        ))
    }

    type WatchEventsStream = EventStream<pb::WatchEventsResponse>;

    #[tracing::instrument(skip_all)]
    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Answer<Self::WatchEventsStream> {
        self.app.store().feed().watch_events(request)
    }
}
