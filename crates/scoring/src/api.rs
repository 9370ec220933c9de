//! gRPC handlers: parse the request into domain values (every problem named
//! by field), call the application, map the error. Nothing else happens here.

use bowtie_proto::scoring as pb;
use bowtie_proto::scoring::scoring_service_server::ScoringService;
use bowtie_runtime::Instant;
use bowtie_runtime::access;
use bowtie_runtime::api::{self, Answer, idempotency, parsed};
use bowtie_runtime::audit::AuditContext;
use bowtie_runtime::error::{Error, FieldViolations};
use bowtie_runtime::feed::EventStream;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::domain::{AlertId, ScorecardVersion};
use crate::service::{self, Scoring};
use crate::storage::HealthFilter;

/// The tonic service.
#[derive(Debug, Clone)]
pub struct ScoringApi {
    app: Scoring,
}

impl ScoringApi {
    /// Handlers over the application.
    pub fn new(app: Scoring) -> Self {
        Self { app }
    }

    /// Acknowledges or resolves the alert `id` at `expected_version`, with
    /// an optional note: the two transitions differ only in where they lead.
    async fn transition(
        &self,
        id: &str,
        expected_version: i64,
        note: &str,
        to: pb::AlertState,
    ) -> Result<pb::Alert, Error> {
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "id", id).map(AlertId);
        let note = validate::optional_text(&mut v, "note", note, 500).unwrap_or_default();
        if expected_version <= 0 {
            v.add("expected_version", "must be the alert's current version");
        }
        v.into_result()?;
        self.app
            .transition_alert(parsed(id)?, expected_version, to, note)
            .await
    }
}

#[tonic::async_trait]
impl ScoringService for ScoringApi {
    type RecordSignalsStream = EventStream<pb::RecordSignalsResponse>;

    #[tracing::instrument(skip_all)]
    async fn record_signals(
        &self,
        request: Request<Streaming<pb::RecordSignalsRequest>>,
    ) -> Answer<Self::RecordSignalsStream> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let app = self.app.clone();
        // Each batch is written as the call that opened the stream.
        AuditContext::spawn(async move {
            let mut batch: i64 = 0;
            while let Some(item) = inbound.next().await {
                let request = match item {
                    Ok(r) => r,
                    Err(status) => {
                        // A message the server cannot take (too large, not
                        // protobuf) ends the stream with its status, so the
                        // client learns its batch was not recorded; when the
                        // client is gone, nobody hears it and that is fine.
                        tracing::debug!(%status, "signal stream ended by an inbound error");
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let answer = app
                    .record_batch(&request.signals)
                    .await
                    .map(|r| convert::stream_response(batch, r));
                let failed = answer.is_err();
                if tx.send(answer.map_err(Status::from)).await.is_err() || failed {
                    return;
                }
                batch += 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all)]
    async fn record_signal_batch(
        &self,
        request: Request<pb::RecordSignalBatchRequest>,
    ) -> Answer<pb::RecordSignalBatchResponse> {
        let req = request.into_inner();
        Ok(Response::new(self.app.record_batch(&req.signals).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_health(
        &self,
        request: Request<pb::GetHealthRequest>,
    ) -> Answer<pb::GetHealthResponse> {
        let req = request.into_inner();
        let id = api::account_id("account_id", &req.account_id)?;
        Ok(Response::new(self.app.get_health(id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_health(
        &self,
        request: Request<pb::ListHealthRequest>,
    ) -> Answer<pb::ListHealthResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let segment = convert::filter(&mut v, "segment", req.segment);
        let band = convert::filter(&mut v, "band", req.band);
        let tier = convert::filter(&mut v, "tier", req.tier);
        let order: Option<pb::HealthOrder> =
            validate::enum_value(&mut v, "order", req.order, false);
        if !(0..=100).contains(&req.min_score) {
            v.add("min_score", "must be 0..=100");
        }
        if !(0..=100).contains(&req.max_score) {
            v.add("max_score", "must be 0..=100");
        }
        let max_score = if req.max_score == 0 {
            100
        } else {
            req.max_score
        };
        if max_score < req.min_score {
            v.add("max_score", "must be at least min_score");
        }
        v.into_result()?;
        let filter = HealthFilter {
            segment,
            band,
            tier,
            min_score: req.min_score,
            max_score,
            at_risk_bp: None,
            descending: order == Some(pb::HealthOrder::ScoreDescending),
            book: access::mine("mine", req.mine)?,
        };
        let page = Page::parse(req.page.as_ref(), &format!("health|{filter:?}"))?;
        let (accounts, page) = self.app.list_health(&filter, &page).await?;
        Ok(Response::new(convert::list_health(accounts, page)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_at_risk(
        &self,
        request: Request<pb::ListAtRiskRequest>,
    ) -> Answer<pb::ListAtRiskResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let segment = convert::filter(&mut v, "segment", req.segment);
        v.into_result()?;
        let filter = HealthFilter {
            segment,
            max_score: 100,
            at_risk_bp: Some(self.app.policy().risk_threshold_bp),
            book: access::mine("mine", req.mine)?,
            ..HealthFilter::default()
        };
        let page = Page::parse(req.page.as_ref(), &format!("risk|{filter:?}"))?;
        let (accounts, page) = self.app.list_health(&filter, &page).await?;
        Ok(Response::new(convert::list_at_risk(accounts, page)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_health_history(
        &self,
        request: Request<pb::GetHealthHistoryRequest>,
    ) -> Answer<pb::GetHealthHistoryResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::account_id(&mut v, "account_id", &req.account_id);
        if !(0..=730).contains(&req.days) {
            v.add("days", "must be 1..=730 (0 means 90)");
        }
        v.into_result()?;
        let days = if req.days == 0 {
            90
        } else {
            i64::from(req.days)
        };
        Ok(Response::new(self.app.history(parsed(id)?, days).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn recompute_health(
        &self,
        _request: Request<pb::RecomputeHealthRequest>,
    ) -> Answer<pb::RecomputeHealthResponse> {
        Ok(Response::new(convert::recomputed(
            self.app.recompute_all().await?,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn get_scorecard(
        &self,
        request: Request<pb::GetScorecardRequest>,
    ) -> Answer<pb::GetScorecardResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let segment = convert::segment(&mut v, "segment", req.segment);
        v.into_result()?;
        Ok(Response::new(self.app.scorecard(parsed(segment)?).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_scorecard_versions(
        &self,
        request: Request<pb::ListScorecardVersionsRequest>,
    ) -> Answer<pb::ListScorecardVersionsResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let segment = convert::segment(&mut v, "segment", req.segment);
        v.into_result()?;
        let segment = parsed(segment)?;
        let page = Page::parse(
            req.page.as_ref(),
            &format!("scorecard_versions|{}", segment as i32),
        )?;
        Ok(Response::new(
            self.app.scorecard_versions(segment, &page).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn update_scorecard(
        &self,
        request: Request<pb::UpdateScorecardRequest>,
    ) -> Answer<pb::UpdateScorecardResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let card = convert::scorecard(&mut v, req.scorecard.as_ref());
        if req.expected_version < 0 {
            v.add("expected_version", "must not be negative");
        }
        let idem = idempotency(&mut v, &req.idempotency_key, "UpdateScorecard", &req);
        v.into_result()?;
        let (segment, card) = parsed(card)?;
        let expected = ScorecardVersion(req.expected_version);
        Ok(Response::new(
            self.app
                .update_scorecard(segment, card, expected, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn train_model(
        &self,
        request: Request<pb::TrainModelRequest>,
    ) -> Answer<pb::TrainModelResponse> {
        let req = request.into_inner();
        let reference = convert::reference_time(&req, Instant::now())?;
        Ok(Response::new(convert::trained(
            self.app.train(req.seed, reference).await?,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn get_model(
        &self,
        _request: Request<pb::GetModelRequest>,
    ) -> Answer<pb::GetModelResponse> {
        Ok(Response::new(convert::get_model(self.app.model_info()?)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_churn_risk(
        &self,
        request: Request<pb::GetChurnRiskRequest>,
    ) -> Answer<pb::GetChurnRiskResponse> {
        let req = request.into_inner();
        let id = api::account_id("account_id", &req.account_id)?;
        Ok(Response::new(self.app.churn_risk(id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Answer<pb::ListAlertsResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let state: Option<pb::AlertState> = convert::filter(&mut v, "state", req.state);
        let kind: Option<pb::AlertKind> = convert::filter(&mut v, "kind", req.kind);
        let account = if req.account_id.is_empty() {
            None
        } else {
            validate::account_id(&mut v, "account_id", &req.account_id)
        };
        v.into_result()?;
        let page = Page::parse(
            req.page.as_ref(),
            &format!("alerts|{state:?}|{kind:?}|{account:?}"),
        )?;
        Ok(Response::new(
            self.app.list_alerts(state, kind, account, &page).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn acknowledge_alert(
        &self,
        request: Request<pb::AcknowledgeAlertRequest>,
    ) -> Answer<pb::AcknowledgeAlertResponse> {
        let req = request.into_inner();
        let to = pb::AlertState::Acknowledged;
        let alert = self
            .transition(&req.id, req.expected_version, &req.note, to)
            .await?;
        Ok(Response::new(convert::acknowledged(alert)))
    }

    #[tracing::instrument(skip_all)]
    async fn resolve_alert(
        &self,
        request: Request<pb::ResolveAlertRequest>,
    ) -> Answer<pb::ResolveAlertResponse> {
        let req = request.into_inner();
        let to = pb::AlertState::Resolved;
        let alert = self
            .transition(&req.id, req.expected_version, &req.note, to)
            .await?;
        Ok(Response::new(convert::resolved(alert)))
    }

    type WatchAlertsStream = EventStream<pb::WatchAlertsResponse>;

    #[tracing::instrument(skip_all)]
    async fn watch_alerts(
        &self,
        request: Request<pb::WatchAlertsRequest>,
    ) -> Answer<Self::WatchAlertsStream> {
        let req = request.into_inner();
        let events = self.app.store().feed().watch(req.after_sequence, |e| e)?;
        let alerts = events.filter_map(|item| async move {
            match item {
                Err(status) => Some(Err(status)),
                Ok(event) => {
                    if !matches!(
                        event.event_type.as_str(),
                        service::ALERT_RAISED
                            | service::ALERT_ACKNOWLEDGED
                            | service::ALERT_RESOLVED
                    ) {
                        return None;
                    }
                    let alert = crate::feeds::payload::<pb::Alert>(&event).ok().flatten()?;
                    Some(Ok(convert::watched_alert(
                        event.sequence,
                        event.event_type,
                        alert,
                    )))
                }
            }
        });
        Ok(Response::new(Box::pin(alerts)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_segments(
        &self,
        request: Request<pb::GetSegmentsRequest>,
    ) -> Answer<pb::GetSegmentsResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let segment = convert::filter(&mut v, "segment", req.segment);
        v.into_result()?;
        Ok(Response::new(self.app.segments(segment).await?))
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
