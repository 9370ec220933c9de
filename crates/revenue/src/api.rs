//! gRPC handlers: parse the request into domain values (every problem named
//! by field), call the application, render its answer with `convert`, map
//! the error. Nothing else happens here.

use bowtie_proto::revenue as pb;
use bowtie_proto::revenue::revenue_service_server::RevenueService;
use bowtie_runtime::api::{self, Answer, read_request, write_request};
use bowtie_runtime::error::FieldViolations;
use bowtie_runtime::export;
use bowtie_runtime::feed::EventStream;
use bowtie_runtime::import;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate;
use std::sync::Arc;
use tokio::sync::Mutex;
use tonic::{Request, Response, Streaming};

use crate::convert;
use crate::domain::{
    BookGrouping, Granularity, Instant, MAX_PLAN, Month, RenewalOutcome, ReportCut, Segment,
    SubscriptionId,
};
use crate::service::{AccountCache, RetentionSplit, Revenue};
use crate::storage::{CohortFilter, MovementFilter};

/// Longest report range in months.
const MAX_REPORT_MONTHS: i32 = 120;
/// Most cohorts, and most months since the first payment, of a cohort grid.
const MAX_COHORT_MONTHS: i32 = 36;
/// Longest window of a renewal summary, in days.
const MAX_SUMMARY_DAYS: i64 = 400;

/// The tonic service.
#[derive(Debug, Clone)]
pub struct RevenueApi {
    app: Revenue,
}

impl RevenueApi {
    /// Handlers over the application.
    pub fn new(app: Revenue) -> Self {
        Self { app }
    }
}

/// Parses the `start_month..=end_month` range of a report, recording a
/// violation on `end_month` when `check` refuses the number of months
/// between them.
fn month_range(
    v: &mut FieldViolations,
    start_month: &str,
    end_month: &str,
    check: impl FnOnce(i32) -> Option<String>,
) -> (Option<Month>, Option<Month>) {
    let first = convert::month(v, "start_month", start_month);
    let last = convert::month(v, "end_month", end_month);
    if let (Some(first), Some(last)) = (first, last)
        && let Some(problem) = check(last - first)
    {
        v.add("end_month", problem);
    }
    (first, last)
}

/// The months and granularity of a report over `start_month..=end_month`.
fn report_months(
    v: &mut FieldViolations,
    start_month: &str,
    end_month: &str,
    granularity: i32,
) -> Option<(Month, Month, Granularity)> {
    let (first, last) = month_range(v, start_month, end_month, |months| {
        if months < 0 {
            Some("must not be before start_month".to_owned())
        } else if months >= MAX_REPORT_MONTHS {
            Some(format!(
                "must be within {MAX_REPORT_MONTHS} months of start_month"
            ))
        } else {
            None
        }
    });
    let granularity =
        match validate::enum_value::<pb::Granularity>(v, "granularity", granularity, false) {
            Some(pb::Granularity::Quarter) => Granularity::Quarter,
            _ => Granularity::Month,
        };
    Some((first?, last?, granularity))
}

/// Reads the range, granularity and segment of a periodic report
/// (GetMrrReport, GetChurnAnalysis): months in order, at most
/// [`MAX_REPORT_MONTHS`] of them.
fn report_range(
    start_month: &str,
    end_month: &str,
    granularity: i32,
    segment: i32,
) -> Result<(Month, Month, Granularity, Option<Segment>), bowtie_runtime::error::Error> {
    read_request(|v| {
        let months = report_months(v, start_month, end_month, granularity);
        let segment = convert::segment_filter(v, "segment", segment);
        let (first, last, granularity) = months?;
        Some((first, last, granularity, segment?))
    })
}

#[tonic::async_trait]
impl RevenueService for RevenueApi {
    #[tracing::instrument(skip_all)]
    async fn get_churn_analysis(
        &self,
        request: Request<pb::GetChurnAnalysisRequest>,
    ) -> Answer<pb::GetChurnAnalysisResponse> {
        let req = request.into_inner();
        let (first, last, granularity, segment) = report_range(
            &req.start_month,
            &req.end_month,
            req.granularity,
            req.segment,
        )?;
        let periods = self
            .app
            .churn_analysis(first, last, granularity, segment)
            .await?;
        Ok(Response::new(convert::churn_analysis_to_pb(
            &periods,
            self.app.reporting_currency(),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn get_trial_conversion(
        &self,
        request: Request<pb::GetTrialConversionRequest>,
    ) -> Answer<pb::GetTrialConversionResponse> {
        let req = request.into_inner();
        let (first, last, granularity, cut) = read_request(|v| {
            let months = report_months(v, &req.start_month, &req.end_month, req.granularity);
            let cut = convert::report_cut(v, req.cut.as_ref(), None);
            let (first, last, granularity) = months?;
            Some((first, last, granularity, cut?))
        })?;
        self.app.check_cut(&cut, "cut").await?;
        let periods = self
            .app
            .trial_conversion(first, last, granularity, &cut)
            .await?;
        Ok(Response::new(convert::trial_conversion_to_pb(&periods)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Answer<pb::CreateSubscriptionResponse> {
        let req = request.into_inner();
        let (new, idem) = write_request(&req, &req.idempotency_key, "CreateSubscription", |v| {
            convert::new_subscription(v, req.subscription.as_ref())
        })?;
        Ok(Response::new(
            self.app.create_subscription(new, idem).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Answer<pb::GetSubscriptionResponse> {
        let id = SubscriptionId(api::id("id", &request.get_ref().id)?);
        let s = self.app.get_subscription(id).await?;
        Ok(Response::new(pb::GetSubscriptionResponse {
            subscription: Some(convert::subscription_to_pb(&s, Instant::now())),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn change_subscription(
        &self,
        request: Request<pb::ChangeSubscriptionRequest>,
    ) -> Answer<pb::ChangeSubscriptionResponse> {
        let req = request.into_inner();
        let key = &req.idempotency_key;
        let ((id, (terms, currency), at), idem) =
            write_request(&req, key, "ChangeSubscription", |v| {
                let id = convert::subscription_id(v, "id", &req.id);
                let terms = convert::terms(v, "terms", req.terms.as_ref());
                let at = validate::required_instant(v, "effective_at", req.effective_at.as_ref());
                Some((id?, terms?, at?))
            })?;
        let version = req.expected_version;
        Ok(Response::new(
            self.app
                .change_subscription(id, at, terms, currency, version, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn cancel_subscription(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Answer<pb::CancelSubscriptionResponse> {
        let req = request.into_inner();
        let key = &req.idempotency_key;
        let ((id, cancellation), idem) = write_request(&req, key, "CancelSubscription", |v| {
            let id = convert::subscription_id(v, "id", &req.id);
            let cancellation = convert::cancellation(v, req.cancellation.as_ref());
            Some((id?, cancellation?))
        })?;
        let version = req.expected_version;
        Ok(Response::new(
            self.app
                .cancel_subscription(id, cancellation, version, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn record_invoice(
        &self,
        request: Request<pb::RecordInvoiceRequest>,
    ) -> Answer<pb::RecordInvoiceResponse> {
        let req = request.into_inner();
        let (invoice, idem) = write_request(&req, &req.idempotency_key, "RecordInvoice", |v| {
            convert::invoice(v, req.invoice.as_ref())
        })?;
        Ok(Response::new(self.app.record_invoice(invoice, idem).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn record_renewal_outcome(
        &self,
        request: Request<pb::RecordRenewalOutcomeRequest>,
    ) -> Answer<pb::RecordRenewalOutcomeResponse> {
        let req = request.into_inner();
        let key = &req.idempotency_key;
        let ((id, outcome, at), idem) = write_request(&req, key, "RecordRenewalOutcome", |v| {
            let id = convert::subscription_id(v, "subscription_id", &req.subscription_id);
            let outcome = validate::enum_value::<RenewalOutcome>(v, "outcome", req.outcome, true);
            let at = validate::required_instant(v, "decided_at", req.decided_at.as_ref());
            Some((id?, outcome?, at?))
        })?;
        Ok(Response::new(
            self.app
                .record_renewal_outcome(id, outcome, at, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn set_fx_rate(
        &self,
        request: Request<pb::SetFxRateRequest>,
    ) -> Answer<pb::SetFxRateResponse> {
        let req = request.into_inner();
        let ((currency, at, rate), idem) =
            write_request(&req, &req.idempotency_key, "SetFxRate", |v| {
                convert::fx_rate(v, req.rate.as_ref())
            })?;
        Ok(Response::new(
            self.app.set_fx_rate(currency, at, rate, idem).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_movements(
        &self,
        request: Request<pb::ListMovementsRequest>,
    ) -> Answer<pb::ListMovementsResponse> {
        let req = request.into_inner();
        let filter = read_request(|v| {
            let (start, end) = convert::window(v, req.start_at.as_ref(), req.end_at.as_ref());
            let account = convert::optional_account_id(v, "account_id", &req.account_id);
            let kind = convert::movement_kind_filter(v, "type", req.r#type);
            Some(MovementFilter {
                start: start?,
                end: end?,
                account: account?,
                kind: kind?,
            })
        })?;
        // The page token is bound to the filters as they have always been
        // written: instants in microseconds, the account as a bare UUID.
        let fingerprint = format!(
            "{}|{}|{:?}|{:?}",
            filter.start.micros(),
            filter.end.micros(),
            filter.account.map(|a| a.uuid()),
            filter.kind
        );
        let page = Page::parse(req.page.as_ref(), &fingerprint)?;
        let (rows, paging) = self.app.list_movements(filter, page).await?;
        Ok(Response::new(convert::movements_to_pb(
            &rows,
            paging,
            self.app.reporting_currency(),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn list_renewals(
        &self,
        request: Request<pb::ListRenewalsRequest>,
    ) -> Answer<pb::ListRenewalsResponse> {
        let req = request.into_inner();
        let (start, end, account) = read_request(|v| {
            let (start, end) = convert::window(v, req.start_at.as_ref(), req.end_at.as_ref());
            let account = convert::optional_account_id(v, "account_id", &req.account_id);
            Some((start?, end?, account?))
        })?;
        let fingerprint = format!(
            "{}|{}|{:?}",
            start.micros(),
            end.micros(),
            account.map(|a| a.uuid())
        );
        let page = Page::parse(req.page.as_ref(), &fingerprint)?;
        let (entries, paging) = self.app.list_renewals(start, end, account, page).await?;
        Ok(Response::new(convert::renewal_book_to_pb(&entries, paging)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_mrr_report(
        &self,
        request: Request<pb::GetMrrReportRequest>,
    ) -> Answer<pb::GetMrrReportResponse> {
        let req = request.into_inner();
        let (first, last, granularity, segment) = report_range(
            &req.start_month,
            &req.end_month,
            req.granularity,
            req.segment,
        )?;
        let cut = read_request(|v| {
            let cut = convert::report_cut(v, req.cut.as_ref(), req.group_by.as_ref())?;
            if segment.is_some() && cut != ReportCut::Uncut {
                let field = if matches!(cut, ReportCut::Group(_)) {
                    "group_by"
                } else {
                    "cut"
                };
                v.add(
                    field,
                    "cannot be combined with segment; cut by SEGMENT instead",
                );
                return None;
            }
            Some(cut)
        })?;
        let field = if matches!(cut, ReportCut::Group(_)) {
            "group_by"
        } else {
            "cut"
        };
        self.app.check_cut(&cut, field).await?;
        let report = self
            .app
            .mrr_report(first, last, granularity, segment, &cut)
            .await?;
        Ok(Response::new(convert::cut_mrr_report_to_pb(
            &report,
            self.app.reporting_currency(),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn get_retention(
        &self,
        request: Request<pb::GetRetentionRequest>,
    ) -> Answer<pb::GetRetentionResponse> {
        let req = request.into_inner();
        let (t0, t1, filter, cut) = read_request(|v| {
            let (t0, t1) = convert::window(v, req.start_at.as_ref(), req.end_at.as_ref());
            let segment = convert::segment_filter(v, "segment", req.segment);
            let owner = validate::optional_text(v, "owner", &req.owner, MAX_PLAN);
            let csm = validate::optional_text(v, "csm", &req.csm, MAX_PLAN);
            let filter = CohortFilter {
                segment: segment?,
                owner: Some(owner?).filter(|o| !o.is_empty()),
                csm: Some(csm?).filter(|c| !c.is_empty()),
            };
            let cut = convert::report_cut(v, req.cut.as_ref(), req.group_by.as_ref());
            if matches!(cut, Some(ReportCut::Filter(..))) && (req.by_owner || req.by_csm) {
                v.add(
                    "cut",
                    "cannot be combined with by_owner or by_csm; use group_by",
                );
            }
            Some((t0?, t1?, filter, cut?))
        })?;
        let split = RetentionSplit {
            by_owner: req.by_owner,
            by_csm: req.by_csm,
        };
        let field = if matches!(cut, ReportCut::Group(_)) {
            "group_by"
        } else {
            "cut"
        };
        self.app.check_cut(&cut, field).await?;
        let report = self.app.retention(t0, t1, filter, split, &cut).await?;
        Ok(Response::new(convert::retention_to_pb(
            report,
            self.app.reporting_currency(),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn get_renewal_summary(
        &self,
        request: Request<pb::GetRenewalSummaryRequest>,
    ) -> Answer<pb::GetRenewalSummaryResponse> {
        let req = request.into_inner();
        let (start, end, grouping, person) = read_request(|v| {
            let (start, end) = convert::window(v, req.start_at.as_ref(), req.end_at.as_ref());
            if let (Some(start), Some(end)) = (start, end)
                && end.days_since(start) > MAX_SUMMARY_DAYS
            {
                v.add(
                    "end_at",
                    format!("must be within {MAX_SUMMARY_DAYS} days of start_at"),
                );
            }
            let grouping = match validate::enum_value::<pb::RenewalGrouping>(
                v,
                "group_by",
                req.group_by,
                false,
            ) {
                Some(pb::RenewalGrouping::Owner) => Some(BookGrouping::Owner),
                Some(_) => Some(BookGrouping::Csm),
                None => None,
            };
            let person = validate::optional_text(v, "person", &req.person, MAX_PLAN);
            Some((start?, end?, grouping?, person?))
        })?;
        let only = Some(person).filter(|p| !p.is_empty());
        let summaries = self
            .app
            .summarize_renewals(start, end, grouping, only)
            .await?;
        Ok(Response::new(convert::renewal_summaries_to_pb(
            &summaries,
            self.app.reporting_currency(),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn get_cohort_retention(
        &self,
        request: Request<pb::GetCohortRetentionRequest>,
    ) -> Answer<pb::GetCohortRetentionResponse> {
        let req = request.into_inner();
        let (first, last, segment, cut) = read_request(|v| {
            let (first, last) = month_range(v, &req.start_month, &req.end_month, |months| {
                (!(0..=MAX_COHORT_MONTHS).contains(&months))
                    .then(|| format!("must be within {MAX_COHORT_MONTHS} months after start_month"))
            });
            if !(0..=MAX_COHORT_MONTHS).contains(&req.months) {
                v.add(
                    "months",
                    format!("must be between 0 and {MAX_COHORT_MONTHS}"),
                );
            }
            let segment = convert::segment_filter(v, "segment", req.segment);
            let cut = convert::report_cut(v, req.cut.as_ref(), None);
            Some((first?, last?, segment?, cut?))
        })?;
        self.app.check_cut(&cut, "cut").await?;
        let months = if req.months == 0 { 12 } else { req.months };
        let grid = self
            .app
            .cohort_retention(first, last, months, segment, &cut)
            .await?;
        Ok(Response::new(convert::cohort_retention_to_pb(
            &grid,
            self.app.reporting_currency(),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn record_spend(
        &self,
        request: Request<pb::RecordSpendRequest>,
    ) -> Answer<pb::RecordSpendResponse> {
        let req = request.into_inner();
        let reporting = self.app.reporting_currency();
        let ((month, spend), idem) =
            write_request(&req, &req.idempotency_key, "RecordSpend", |v| {
                let month = convert::month(v, "month", &req.month);
                let field = "sales_and_marketing_spend";
                let spend = convert::amount(v, field, req.sales_and_marketing_spend.as_ref());
                if let Some((code, _)) = &spend
                    && code != reporting
                {
                    v.add(
                        "sales_and_marketing_spend.currency_code",
                        format!("must be the reporting currency {reporting}"),
                    );
                }
                if !(0..=10_000).contains(&req.gross_margin_basis_points) {
                    v.add("gross_margin_basis_points", "must be between 0 and 10000");
                }
                Some((month?, spend?.1))
            })?;
        let margin_bp = req.gross_margin_basis_points;
        Ok(Response::new(
            self.app.record_spend(month, spend, margin_bp, idem).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_unit_economics(
        &self,
        request: Request<pb::GetUnitEconomicsRequest>,
    ) -> Answer<pb::GetUnitEconomicsResponse> {
        let month = read_request(|v| convert::month(v, "month", &request.get_ref().month))?;
        let economics = self.app.unit_economics(month).await?;
        Ok(Response::new(convert::unit_economics_to_pb(
            &economics,
            self.app.reporting_currency(),
        )))
    }

    type ImportSubscriptionEventsStream = EventStream<pb::ImportSubscriptionEventsResponse>;

    #[tracing::instrument(skip_all)]
    async fn import_subscription_events(
        &self,
        request: Request<Streaming<pb::ImportSubscriptionEventsRequest>>,
    ) -> Answer<Self::ImportSubscriptionEventsStream> {
        let app = self.app.clone();
        let cache = Arc::new(Mutex::new(AccountCache::default()));
        Ok(Response::new(import::serve(
            request.into_inner(),
            move |batch, req: pb::ImportSubscriptionEventsRequest| {
                let (app, cache) = (app.clone(), Arc::clone(&cache));
                async move {
                    import::check_batch("events", req.events.len())?;
                    let rows = req.events.iter().map(convert::imported_event).collect();
                    let mut cache = cache.lock().await;
                    app.import_subscription_events(batch, rows, &mut cache)
                        .await
                }
            },
        )))
    }

    type ImportInvoicesStream = EventStream<pb::ImportInvoicesResponse>;

    #[tracing::instrument(skip_all)]
    async fn import_invoices(
        &self,
        request: Request<Streaming<pb::ImportInvoicesRequest>>,
    ) -> Answer<Self::ImportInvoicesStream> {
        let app = self.app.clone();
        let cache = Arc::new(Mutex::new(AccountCache::default()));
        Ok(Response::new(import::serve(
            request.into_inner(),
            move |batch, req: pb::ImportInvoicesRequest| {
                let (app, cache) = (app.clone(), Arc::clone(&cache));
                async move {
                    import::check_batch("invoices", req.invoices.len())?;
                    let rows = req.invoices.iter().map(convert::imported_invoice).collect();
                    let mut cache = cache.lock().await;
                    app.import_invoices(batch, rows, &mut cache).await
                }
            },
        )))
    }

    type WatchEventsStream = EventStream<pb::WatchEventsResponse>;

    type ExportMovementsStream = EventStream<pb::ExportMovementsResponse>;

    #[tracing::instrument(skip_all)]
    async fn export_movements(
        &self,
        request: Request<pb::ExportMovementsRequest>,
    ) -> Answer<Self::ExportMovementsStream> {
        let req = request.into_inner();
        let batch = export::batch_size(req.batch_size)?;
        let after = export::resume_after("movements", &req.cursor)?;
        if let Some(key) = &after {
            crate::service::movement_export_key(key)?;
        }
        let app = self.app.clone();
        let currency = self.app.reporting_currency().to_owned();
        Ok(Response::new(export::stream(
            "movements",
            after,
            batch,
            move |after, limit| {
                let app = app.clone();
                async move { app.export_movements(after, limit).await }
            },
            Revenue::movement_key,
            move |rows| convert::exported_movements(rows, &currency),
        )))
    }

    type ExportSubscriptionsStream = EventStream<pb::ExportSubscriptionsResponse>;

    #[tracing::instrument(skip_all)]
    async fn export_subscriptions(
        &self,
        request: Request<pb::ExportSubscriptionsRequest>,
    ) -> Answer<Self::ExportSubscriptionsStream> {
        let req = request.into_inner();
        let batch = export::batch_size(req.batch_size)?;
        let after = export::resume_after("subscriptions", &req.cursor)?;
        if let Some(key) = &after {
            crate::service::subscription_export_key(key)?;
        }
        let app = self.app.clone();
        Ok(Response::new(export::stream(
            "subscriptions",
            after,
            batch,
            move |after, limit| {
                let app = app.clone();
                async move { app.export_subscriptions(after, limit).await }
            },
            |s| s.id.to_string(),
            |rows| convert::exported_subscriptions(rows, Instant::now()),
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
}
