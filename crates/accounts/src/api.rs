//! gRPC handlers: parse the request into domain values (`convert`, every
//! problem named by field), call the application, map the error. Nothing
//! else happens here.

use bowtie_proto::accounts as pb;
use bowtie_proto::accounts::accounts_service_server::AccountsService;
use bowtie_runtime::Instant;
use bowtie_runtime::api::{self, Answer};
use bowtie_runtime::export;
use bowtie_runtime::feed::EventStream;
use bowtie_runtime::import;
use tonic::{Request, Response, Streaming};

use crate::convert;
use crate::service::Accounts;

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

#[tonic::async_trait]
impl AccountsService for AccountsApi {
    #[tracing::instrument(skip_all)]
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Answer<pb::CreateAccountResponse> {
        let ((fields, inputs), idem) = convert::create_account(&request.into_inner())?;
        let answer = self.app.create_account(fields, inputs, idem);
        Ok(Response::new(answer.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Answer<pb::GetAccountResponse> {
        let id = api::account_id("id", &request.into_inner().id)?;
        Ok(Response::new(self.app.get_account(id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Answer<pb::UpdateAccountResponse> {
        let (update, idem) = convert::update_account(&request.into_inner())?;
        Ok(Response::new(self.app.update_account(update, idem).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Answer<pb::ListAccountsResponse> {
        let (filter, page) = convert::list_accounts(&request.into_inner())?;
        Ok(Response::new(self.app.list_accounts(filter, page).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn upsert_account_by_external_id(
        &self,
        request: Request<pb::UpsertAccountByExternalIdRequest>,
    ) -> Answer<pb::UpsertAccountByExternalIdResponse> {
        let request = request.into_inner();
        let ((external, fields, inputs), idem) = convert::upsert_account(&request)?;
        let source_time = convert::source_updated_at(&request)?;
        let answer = self
            .app
            .upsert_by_external_id(external, fields, inputs, source_time, idem);
        Ok(Response::new(answer.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn archive_account(
        &self,
        request: Request<pb::ArchiveAccountRequest>,
    ) -> Answer<pb::ArchiveAccountResponse> {
        let ((id, expected), idem) = convert::archive_account(&request.into_inner())?;
        let answer = self.app.archive_account(id, expected, idem);
        Ok(Response::new(answer.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn create_contact(
        &self,
        request: Request<pb::CreateContactRequest>,
    ) -> Answer<pb::CreateContactResponse> {
        let ((account_id, fields), idem) = convert::create_contact(&request.into_inner())?;
        let answer = self.app.create_contact(account_id, fields, idem);
        Ok(Response::new(answer.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Answer<pb::GetContactResponse> {
        let id = convert::lookup_contact(&request.into_inner().id)?;
        Ok(Response::new(self.app.get_contact(id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_contact(
        &self,
        request: Request<pb::UpdateContactRequest>,
    ) -> Answer<pb::UpdateContactResponse> {
        let (update, idem) = convert::update_contact(&request.into_inner())?;
        Ok(Response::new(self.app.update_contact(update, idem).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Answer<pb::ListContactsResponse> {
        let (account_id, page) = convert::list_contacts(&request.into_inner())?;
        Ok(Response::new(
            self.app.list_contacts(account_id, page).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_contact(
        &self,
        request: Request<pb::DeleteContactRequest>,
    ) -> Answer<pb::DeleteContactResponse> {
        let (id, idem) = convert::delete_contact(&request.into_inner())?;
        Ok(Response::new(self.app.delete_contact(id, idem).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn mark_contact_left(
        &self,
        request: Request<pb::MarkContactLeftRequest>,
    ) -> Answer<pb::MarkContactLeftResponse> {
        let req = request.into_inner();
        let ((id, left_at), idem) = convert::mark_contact_left(&req, Instant::now())?;
        let answer = self.app.mark_contact_left(id, left_at, idem);
        Ok(Response::new(answer.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn declare_attribute(
        &self,
        request: Request<pb::DeclareAttributeRequest>,
    ) -> Answer<pb::DeclareAttributeResponse> {
        let (fields, expected) = convert::declare_attribute(&request.into_inner())?;
        let answer = self.app.declare_attribute(fields, expected);
        Ok(Response::new(answer.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_attribute_declaration(
        &self,
        request: Request<pb::DeleteAttributeDeclarationRequest>,
    ) -> Answer<pb::DeleteAttributeDeclarationResponse> {
        let (name, expected) = convert::delete_declaration(&request.into_inner())?;
        Ok(Response::new(
            self.app.delete_declaration(name, expected).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_attribute_declarations(
        &self,
        _request: Request<pb::ListAttributeDeclarationsRequest>,
    ) -> Answer<pb::ListAttributeDeclarationsResponse> {
        Ok(Response::new(self.app.list_declarations().await?))
    }

    type WatchEventsStream = EventStream<pb::WatchEventsResponse>;

    type ExportAccountsStream = EventStream<pb::ExportAccountsResponse>;

    #[tracing::instrument(skip_all)]
    async fn export_accounts(
        &self,
        request: Request<pb::ExportAccountsRequest>,
    ) -> Answer<Self::ExportAccountsStream> {
        let req = request.into_inner();
        let batch = export::batch_size(req.batch_size)?;
        let after = export::resume_after("accounts", &req.cursor)?;
        if let Some(key) = &after {
            crate::service::account_export_key(key)?;
        }
        let app = self.app.clone();
        Ok(Response::new(export::stream(
            "accounts",
            after,
            batch,
            move |after, limit| {
                let app = app.clone();
                async move { app.export_accounts(after, limit).await }
            },
            |a| a.id.to_string(),
            convert::exported_accounts,
        )))
    }

    type ImportAccountsStream = EventStream<pb::ImportAccountsResponse>;

    #[tracing::instrument(skip_all)]
    async fn import_accounts(
        &self,
        request: Request<Streaming<pb::ImportAccountsRequest>>,
    ) -> Answer<Self::ImportAccountsStream> {
        let app = self.app.clone();
        Ok(Response::new(import::serve(
            request.into_inner(),
            move |batch, req: pb::ImportAccountsRequest| {
                let app = app.clone();
                async move {
                    import::check_batch("accounts", req.accounts.len())?;
                    let rows = req.accounts.iter().map(convert::imported_account).collect();
                    app.import_accounts(batch, rows).await
                }
            },
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Answer<pb::ListAuditEventsResponse> {
        bowtie_runtime::audit::list_audit_events(self.app.store().db(), request).await
    }

    #[tracing::instrument(skip_all)]
    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Answer<Self::WatchEventsStream> {
        self.app.store().feed().watch_events(request).await
    }

    #[tracing::instrument(skip_all)]
    async fn link_source_user(
        &self,
        request: Request<pb::LinkSourceUserRequest>,
    ) -> Answer<pb::LinkSourceUserResponse> {
        let link = crate::sources::link_request(&request.into_inner())?;
        Ok(Response::new(self.app.link_source_user(link).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_source_users(
        &self,
        request: Request<pb::GetSourceUsersRequest>,
    ) -> Answer<pb::GetSourceUsersResponse> {
        let (source, user_ids) = crate::sources::get_request(&request.into_inner())?;
        Ok(Response::new(
            self.app.get_source_users(source, user_ids).await?,
        ))
    }
}
