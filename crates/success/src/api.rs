//! gRPC handlers: parse the request into domain values (every problem named
//! by field), call the application, render the answer with `convert`, map
//! the error. Nothing else happens here.

use bowtie_proto::success as pb;
use bowtie_proto::success::success_service_server::SuccessService;
use bowtie_runtime::api::{Answer, account_id, id, idempotency, parsed};
use bowtie_runtime::error::FieldViolations;
use bowtie_runtime::feed::EventStream;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate::{self, enum_value, optional_text, required_text};
use bowtie_runtime::{Instant, validate::instant_period};
use tonic::{Request, Response};

use crate::book::{Books, Grouping};
use crate::convert;
use crate::domain::*;
use crate::service::{LoggedActivity, ManualCta, StatusChange, Success};
use crate::storage::{ActivityFilter, CtaFilter};

/// The tonic service.
#[derive(Debug, Clone)]
pub struct SuccessApi {
    app: Success,
    books: Books,
}

impl SuccessApi {
    /// Handlers over the application and the books of business.
    pub fn new(app: Success, books: Books) -> Self {
        Self { app, books }
    }
}

/// Longest period of a touches report, in days.
const MAX_TOUCH_DAYS: i64 = 366;

fn version(v: &mut FieldViolations, raw: i64) -> Option<i64> {
    if raw < 1 {
        v.add(
            "expected_version",
            "is required (the version you read, from 1)",
        );
        None
    } else {
        Some(raw)
    }
}

fn optional_id(v: &mut FieldViolations, field: &str, raw: &str) -> Option<Option<uuid::Uuid>> {
    if raw.is_empty() {
        Some(None)
    } else {
        validate::uuid(v, field, raw).map(Some)
    }
}

#[tonic::async_trait]
impl SuccessService for SuccessApi {
    #[tracing::instrument(skip_all)]
    async fn create_playbook(
        &self,
        request: Request<pb::CreatePlaybookRequest>,
    ) -> Answer<pb::CreatePlaybookResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let spec = convert::spec_from_pb(&mut v, "spec", req.spec.as_ref());
        let idem = idempotency(&mut v, &req.idempotency_key, "CreatePlaybook", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app.create_playbook(parsed(spec)?, idem).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_playbook(
        &self,
        request: Request<pb::GetPlaybookRequest>,
    ) -> Answer<pb::GetPlaybookResponse> {
        let playbook = self
            .app
            .get_playbook(PlaybookId(id("id", &request.into_inner().id)?))
            .await?;
        Ok(Response::new(pb::GetPlaybookResponse {
            playbook: Some(convert::playbook_to_pb(&playbook)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_playbooks(
        &self,
        _request: Request<pb::ListPlaybooksRequest>,
    ) -> Answer<pb::ListPlaybooksResponse> {
        let playbooks = self.app.list_playbooks().await?;
        Ok(Response::new(pb::ListPlaybooksResponse {
            playbooks: playbooks.iter().map(convert::playbook_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_playbook(
        &self,
        request: Request<pb::UpdatePlaybookRequest>,
    ) -> Answer<pb::UpdatePlaybookResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let playbook = validate::uuid(&mut v, "id", &req.id);
        let spec = convert::spec_from_pb(&mut v, "spec", req.spec.as_ref());
        let expected = version(&mut v, req.expected_version);
        let idem = idempotency(&mut v, &req.idempotency_key, "UpdatePlaybook", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .update_playbook(
                    PlaybookId(parsed(playbook)?),
                    parsed(spec)?,
                    parsed(expected)?,
                    idem,
                )
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_playbook_versions(
        &self,
        request: Request<pb::ListPlaybookVersionsRequest>,
    ) -> Answer<pb::ListPlaybookVersionsResponse> {
        let versions = self
            .app
            .playbook_versions(PlaybookId(id("id", &request.into_inner().id)?))
            .await?;
        Ok(Response::new(pb::ListPlaybookVersionsResponse {
            versions: versions.iter().map(convert::playbook_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_cta(
        &self,
        request: Request<pb::CreateCtaRequest>,
    ) -> Answer<pb::CreateCtaResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let account = validate::account_id(&mut v, "account_id", &req.account_id);
        let cta_type = enum_value::<CtaType>(&mut v, "type", req.r#type, true);
        let reason = required_text(&mut v, "reason", &req.reason, MAX_REASON);
        let priority = enum_value::<Priority>(&mut v, "priority", req.priority, true);
        let owner = required_text(&mut v, "owner", &req.owner, MAX_NAME);
        let due = validate::required_instant(&mut v, "due_time", req.due_time.as_ref());
        let idem = idempotency(&mut v, &req.idempotency_key, "CreateCta", &req);
        v.into_result()?;
        let new = ManualCta {
            account_id: parsed(account)?,
            cta_type: parsed(cta_type)?,
            reason: parsed(reason)?,
            priority: parsed(priority)?,
            owner: parsed(owner)?,
            due_at: parsed(due)?,
        };
        Ok(Response::new(self.app.create_cta(new, idem).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_cta(&self, request: Request<pb::GetCtaRequest>) -> Answer<pb::GetCtaResponse> {
        let cta = self
            .app
            .get_cta(CtaId(id("id", &request.into_inner().id)?))
            .await?;
        Ok(Response::new(pb::GetCtaResponse {
            cta: Some(convert::cta_to_pb(&cta)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_ctas(
        &self,
        request: Request<pb::ListCtasRequest>,
    ) -> Answer<pb::ListCtasResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let owner = optional_text(&mut v, "owner", &req.owner, MAX_NAME);
        let account = optional_id(&mut v, "account_id", &req.account_id);
        let playbook = optional_id(&mut v, "playbook_id", &req.playbook_id);
        let status = enum_value::<CtaStatus>(&mut v, "status", req.status, false);
        v.into_result()?;
        let filter = CtaFilter {
            owner: Some(parsed(owner)?).filter(|o| !o.is_empty()),
            account: parsed(account)?.map(bowtie_runtime::AccountId),
            playbook: parsed(playbook)?.map(PlaybookId),
            status: Some(parsed(status)?).filter(|s| *s != CtaStatus::Unspecified),
            overdue_at: req.overdue_only.then(Instant::now),
            book: bowtie_runtime::access::mine("mine", req.mine)?,
        };
        let page = Page::parse(req.page.as_ref(), &filter.fingerprint())?;
        let (ctas, page) = self.app.list_ctas(&filter, &page).await?;
        Ok(Response::new(pb::ListCtasResponse {
            ctas: ctas.iter().map(convert::cta_to_pb).collect(),
            page: Some(page),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_cta_status(
        &self,
        request: Request<pb::UpdateCtaStatusRequest>,
    ) -> Answer<pb::UpdateCtaStatusResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let cta = validate::uuid(&mut v, "id", &req.id);
        let status = enum_value::<CtaStatus>(&mut v, "status", req.status, true);
        let outcome = enum_value::<Outcome>(&mut v, "outcome", req.outcome, false);
        let snooze = if status == Some(CtaStatus::Snoozed) {
            let until =
                validate::required_instant(&mut v, "snooze_until", req.snooze_until.as_ref());
            let reason = required_text(&mut v, "snooze_reason", &req.snooze_reason, MAX_REASON);
            until.zip(reason)
        } else {
            None
        };
        if status == Some(CtaStatus::Closed) && outcome == Some(Outcome::Unspecified) {
            v.add("outcome", "is required to close a CTA");
        }
        let actor = optional_text(&mut v, "actor", &req.actor, MAX_NAME);
        let expected = version(&mut v, req.expected_version);
        let idem = idempotency(&mut v, &req.idempotency_key, "UpdateCtaStatus", &req);
        v.into_result()?;
        let change = StatusChange {
            status: parsed(status)?,
            outcome: parsed(outcome)?,
            snooze,
            actor: parsed(actor)?,
        };
        let cta = self
            .app
            .update_status(CtaId(parsed(cta)?), change, parsed(expected)?, idem)
            .await?;
        Ok(Response::new(pb::UpdateCtaStatusResponse {
            cta: Some(cta),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn reassign_cta(
        &self,
        request: Request<pb::ReassignCtaRequest>,
    ) -> Answer<pb::ReassignCtaResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let cta = validate::uuid(&mut v, "id", &req.id);
        let owner = required_text(&mut v, "owner", &req.owner, MAX_NAME);
        let expected = version(&mut v, req.expected_version);
        let idem = idempotency(&mut v, &req.idempotency_key, "ReassignCta", &req);
        v.into_result()?;
        let cta = self
            .app
            .reassign(CtaId(parsed(cta)?), parsed(owner)?, parsed(expected)?, idem)
            .await?;
        Ok(Response::new(pb::ReassignCtaResponse { cta: Some(cta) }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_task(
        &self,
        request: Request<pb::UpdateTaskRequest>,
    ) -> Answer<pb::UpdateTaskResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let cta = validate::uuid(&mut v, "cta_id", &req.cta_id);
        let status = enum_value::<TaskStatus>(&mut v, "status", req.status, true);
        let expected = version(&mut v, req.expected_version);
        let idem = idempotency(&mut v, &req.idempotency_key, "UpdateTask", &req);
        v.into_result()?;
        let cta = self
            .app
            .update_task(
                CtaId(parsed(cta)?),
                req.index,
                parsed(status)?,
                parsed(expected)?,
                idem,
            )
            .await?;
        Ok(Response::new(pb::UpdateTaskResponse { cta: Some(cta) }))
    }

    #[tracing::instrument(skip_all)]
    async fn add_comment(
        &self,
        request: Request<pb::AddCommentRequest>,
    ) -> Answer<pb::AddCommentResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let cta = validate::uuid(&mut v, "cta_id", &req.cta_id);
        let author = required_text(&mut v, "author", &req.author, MAX_NAME);
        let text = required_text(&mut v, "text", &req.text, MAX_TEXT);
        let idem = idempotency(&mut v, &req.idempotency_key, "AddComment", &req);
        v.into_result()?;
        let cta = self
            .app
            .add_comment(CtaId(parsed(cta)?), parsed(author)?, parsed(text)?, idem)
            .await?;
        Ok(Response::new(pb::AddCommentResponse { cta: Some(cta) }))
    }

    #[tracing::instrument(skip_all)]
    async fn log_activity(
        &self,
        request: Request<pb::LogActivityRequest>,
    ) -> Answer<pb::LogActivityResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let account = validate::account_id(&mut v, "account_id", &req.account_id);
        let kind = convert::logged_kind(&mut v, "kind", req.kind);
        let author = required_text(&mut v, "author", &req.author, MAX_NAME);
        let at = validate::optional_instant(&mut v, "occur_time", req.occur_time.as_ref());
        let text = required_text(&mut v, "text", &req.text, MAX_TEXT);
        let participants = convert::participants(&mut v, "participants", &req.participants);
        let idem = idempotency(&mut v, &req.idempotency_key, "LogActivity", &req);
        v.into_result()?;
        let new = LoggedActivity {
            account_id: parsed(account)?,
            kind: parsed(kind)?,
            author: parsed(author)?,
            occurred_at: parsed(at)?,
            text: parsed(text)?,
            participants: parsed(participants)?,
        };
        Ok(Response::new(self.app.log_activity(new, idem).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_activities(
        &self,
        request: Request<pb::ListActivitiesRequest>,
    ) -> Answer<pb::ListActivitiesResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let kinds = convert::kinds(&mut v, "kinds", &req.kinds);
        let author = optional_text(&mut v, "author", &req.author, MAX_NAME);
        v.into_result()?;
        let filter = ActivityFilter {
            account: account_id("account_id", &req.account_id)?,
            kinds: parsed(kinds)?,
            author: Some(parsed(author)?).filter(|a| !a.is_empty()),
        };
        let page = Page::parse(req.page.as_ref(), &filter.fingerprint())?;
        let (activities, page) = self.app.list_activities(&filter, &page).await?;
        Ok(Response::new(pb::ListActivitiesResponse {
            activities: activities.iter().map(convert::activity_to_pb).collect(),
            page: Some(page),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_playbook_effectiveness(
        &self,
        request: Request<pb::GetPlaybookEffectivenessRequest>,
    ) -> Answer<pb::GetPlaybookEffectivenessResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let playbook = validate::uuid(&mut v, "playbook_id", &req.playbook_id);
        let period = instant_period(&mut v, "period", req.period.as_ref());
        v.into_result()?;
        let report = self
            .app
            .effectiveness(
                PlaybookId(parsed(playbook)?),
                parsed(period)?,
                Instant::now(),
            )
            .await?;
        Ok(Response::new(convert::effectiveness_to_pb(&report)))
    }

    #[tracing::instrument(skip_all)]
    async fn set_notification_settings(
        &self,
        request: Request<pb::SetNotificationSettingsRequest>,
    ) -> Answer<pb::SetNotificationSettingsResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let person = convert::person_from_pb(&mut v, "settings", req.settings.as_ref());
        v.into_result()?;
        Ok(Response::new(
            self.app.set_notification_settings(parsed(person)?).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Answer<pb::ListDeliveriesResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let status = enum_value::<DeliveryStatus>(&mut v, "status", req.status, false);
        if !(0..=1000).contains(&req.limit) {
            v.add("limit", "must be between 1 and 1000 (0 for 100)");
        }
        v.into_result()?;
        let status = Some(parsed(status)?).filter(|s| *s != DeliveryStatus::Unspecified);
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit as u64
        };
        let deliveries = self.app.list_deliveries(status, limit).await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: deliveries.iter().map(convert::delivery_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_book_of_business(
        &self,
        request: Request<pb::GetBookOfBusinessRequest>,
    ) -> Answer<pb::GetBookOfBusinessResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let grouping = enum_value::<pb::BookGrouping>(&mut v, "group_by", req.group_by, false).map(
            |g| match g {
                pb::BookGrouping::Owner => Grouping::Owner,
                _ => Grouping::Csm,
            },
        );
        let person = optional_text(&mut v, "person", &req.person, MAX_NAME);
        let period = instant_period(&mut v, "period", req.period.as_ref());
        v.into_result()?;
        let only = Some(parsed(person)?).filter(|p| !p.is_empty());
        let mine = bowtie_runtime::access::mine("mine", req.mine)?;
        let report = self
            .books
            .book(
                parsed(grouping)?,
                only,
                mine,
                parsed(period)?,
                Instant::now(),
            )
            .await?;
        Ok(Response::new(convert::book_to_pb(&report)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_touches_report(
        &self,
        request: Request<pb::GetTouchesReportRequest>,
    ) -> Answer<pb::GetTouchesReportResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let period = instant_period(&mut v, "period", req.period.as_ref());
        if let Some((start, end)) = period
            && end.days_since(start) > MAX_TOUCH_DAYS
        {
            v.add(
                "period.end",
                format!("must be within {MAX_TOUCH_DAYS} days of period.start"),
            );
        }
        let owner = optional_text(&mut v, "owner", &req.owner, MAX_NAME);
        let author = optional_text(&mut v, "author", &req.author, MAX_NAME);
        v.into_result()?;
        let rows = self
            .books
            .touches(
                parsed(period)?,
                Some(parsed(owner)?).filter(|o| !o.is_empty()),
                Some(parsed(author)?).filter(|a| !a.is_empty()),
                req.by_owner,
            )
            .await?;
        Ok(Response::new(convert::touches_to_pb(&rows)))
    }

    type WatchEventsStream = EventStream<pb::WatchEventsResponse>;

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
}
