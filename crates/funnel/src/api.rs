//! gRPC handlers: parse the request into domain values (every problem named
//! by field), call the application, map the error. Nothing else happens here.

use bowtie_proto::common::Stage;
use bowtie_proto::funnel as pb;
use bowtie_proto::funnel::funnel_service_server::FunnelService;
use bowtie_runtime::api::{Answer, idempotency, parsed};
use bowtie_runtime::error::FieldViolations;
use bowtie_runtime::feed::EventStream;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate::{self, now_micros};
use tonic::{Request, Response};

use crate::convert;
use crate::service::Funnel;

/// The tonic service.
#[derive(Debug, Clone)]
pub struct FunnelApi {
    app: Funnel,
}

impl FunnelApi {
    /// Handlers over the application.
    pub fn new(app: Funnel) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl FunnelService for FunnelApi {
    #[tracing::instrument(skip_all)]
    async fn record_transition(
        &self,
        request: Request<pb::RecordTransitionRequest>,
    ) -> Answer<pb::RecordTransitionResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let new = convert::new_transition(&mut v, &req, now_micros());
        let idem = idempotency(&mut v, &req.idempotency_key, "RecordTransition", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app.record_transition(parsed(new)?, idem).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_journey(
        &self,
        request: Request<pb::GetJourneyRequest>,
    ) -> Answer<pb::GetJourneyResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "account_id", &req.account_id);
        v.into_result()?;
        Ok(Response::new(pb::GetJourneyResponse {
            journey: Some(self.app.get_journey(parsed(id)?).await?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts_in_stage(
        &self,
        request: Request<pb::ListAccountsInStageRequest>,
    ) -> Answer<pb::ListAccountsInStageResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let stage: Option<Stage> = validate::enum_value(&mut v, "stage", req.stage, true);
        let filters = convert::filters(&mut v, req.segment, &req.owner);
        v.into_result()?;
        let page = Page::parse(
            req.page.as_ref(),
            &format!("{}|{:?}|{:?}", req.stage, filters.segment, filters.owner),
        )?;
        Ok(Response::new(
            self.app
                .list_in_stage(parsed(stage)?, &filters, &page)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_funnel_report(
        &self,
        request: Request<pb::GetFunnelReportRequest>,
    ) -> Answer<pb::GetFunnelReportResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let period = validate::period(&mut v, "period", req.period.as_ref());
        let filters = convert::filters(&mut v, req.segment, &req.owner);
        let selection = convert::selection(&mut v, req.cohort_by);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .funnel_report(parsed(period)?, filters, parsed(selection)?)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_cohort_report(
        &self,
        request: Request<pb::GetCohortReportRequest>,
    ) -> Answer<pb::GetCohortReportResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let period = validate::period(&mut v, "period", req.period.as_ref());
        let stage = convert::cohort_stage(&mut v, req.cohort_stage);
        let filters = convert::filters(&mut v, req.segment, &req.owner);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .cohort_report(parsed(period)?, parsed(stage)?, filters)
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
