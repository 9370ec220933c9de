//! gRPC handlers: parse the request into domain values (`convert`, every
//! problem named by field), call the application, map the error. Nothing
//! else happens here.

use bowtie_proto::funnel as pb;
use bowtie_proto::funnel::funnel_service_server::FunnelService;
use bowtie_runtime::Instant;
use bowtie_runtime::api::{self, Answer};
use bowtie_runtime::export;
use bowtie_runtime::feed::EventStream;
use bowtie_runtime::import;
use std::sync::Arc;
use tokio::sync::Mutex;
use tonic::{Request, Response, Streaming};

use crate::convert;
use crate::measure::Measures;
use crate::service::{AccountCache, Funnel};

/// The tonic service.
#[derive(Debug, Clone)]
pub struct FunnelApi {
    app: Funnel,
    measures: Measures,
}

impl FunnelApi {
    /// Handlers over the application and the sensitivity measures.
    pub fn new(app: Funnel, measures: Measures) -> Self {
        Self { app, measures }
    }
}

#[tonic::async_trait]
impl FunnelService for FunnelApi {
    type ImportTransitionsStream = EventStream<pb::ImportTransitionsResponse>;

    #[tracing::instrument(skip_all)]
    async fn import_transitions(
        &self,
        request: Request<Streaming<pb::ImportTransitionsRequest>>,
    ) -> Answer<Self::ImportTransitionsStream> {
        let app = self.app.clone();
        let cache = Arc::new(Mutex::new(AccountCache::default()));
        Ok(Response::new(import::serve(
            request.into_inner(),
            move |batch, req: pb::ImportTransitionsRequest| {
                let (app, cache) = (app.clone(), Arc::clone(&cache));
                async move {
                    import::check_batch("transitions", req.transitions.len())?;
                    let now = Instant::now();
                    let rows = req
                        .transitions
                        .iter()
                        .map(|t| convert::imported_transition(t, now))
                        .collect();
                    let mut cache = cache.lock().await;
                    app.import_transitions(batch, rows, &mut cache).await
                }
            },
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn record_transition(
        &self,
        request: Request<pb::RecordTransitionRequest>,
    ) -> Answer<pb::RecordTransitionResponse> {
        let req = request.into_inner();
        let (new, idem) = convert::record_transition(&req, Instant::now())?;
        Ok(Response::new(self.app.record_transition(new, idem).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_journey(
        &self,
        request: Request<pb::GetJourneyRequest>,
    ) -> Answer<pb::GetJourneyResponse> {
        let id = api::account_id("account_id", &request.into_inner().account_id)?;
        Ok(Response::new(self.app.get_journey(id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts_in_stage(
        &self,
        request: Request<pb::ListAccountsInStageRequest>,
    ) -> Answer<pb::ListAccountsInStageResponse> {
        let query = convert::list_in_stage(&request.into_inner())?;
        Ok(Response::new(self.app.list_in_stage(query).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_funnel_report(
        &self,
        request: Request<pb::GetFunnelReportRequest>,
    ) -> Answer<pb::GetFunnelReportResponse> {
        let (period, filters, selection) = convert::funnel_report(&request.into_inner())?;
        let report = self.app.funnel_report(period, filters, selection);
        Ok(Response::new(report.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_cohort_report(
        &self,
        request: Request<pb::GetCohortReportRequest>,
    ) -> Answer<pb::GetCohortReportResponse> {
        let (period, stage, filters) = convert::cohort_report(&request.into_inner())?;
        let report = self.app.cohort_report(period, stage, filters);
        Ok(Response::new(report.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_stage_sensitivity(
        &self,
        request: Request<pb::GetStageSensitivityRequest>,
    ) -> Answer<pb::GetStageSensitivityResponse> {
        let (window, filters) = convert::stage_sensitivity(&request.into_inner(), Instant::now())?;
        let report = self.measures.stage_sensitivity(window, filters);
        Ok(Response::new(report.await?))
    }

    type ExportTransitionsStream = EventStream<pb::ExportTransitionsResponse>;

    #[tracing::instrument(skip_all)]
    async fn export_transitions(
        &self,
        request: Request<pb::ExportTransitionsRequest>,
    ) -> Answer<Self::ExportTransitionsStream> {
        let req = request.into_inner();
        let batch = export::batch_size(req.batch_size)?;
        let after = export::resume_after("transitions", &req.cursor)?;
        if let Some(key) = &after {
            crate::service::transition_export_key(key)?;
        }
        let app = self.app.clone();
        Ok(Response::new(export::stream(
            "transitions",
            after,
            batch,
            move |after, limit| {
                let app = app.clone();
                async move { app.export_transitions(after, limit).await }
            },
            |t| t.id.to_string(),
            convert::exported_transitions,
        )))
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
