//! gRPC handlers: parse the request into domain values (every problem named
//! by field), call the application, map the error. Nothing else happens here.

use bowtie_proto::revenue as pb;
use bowtie_proto::revenue::revenue_service_server::RevenueService;
use bowtie_runtime::api::{Answer, idempotency, parsed};
use bowtie_runtime::error::{Error, FieldViolations};
use bowtie_runtime::feed::EventStream;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate;
use tonic::{Request, Response};

use crate::convert;
use crate::domain::{Granularity, MAX_PLAN, Rate, parse_month};
use crate::service::Revenue;
use crate::storage::{CohortFilter, InvoiceRow, MovementFilter};

/// Longest report range in months.
const MAX_REPORT_MONTHS: i32 = 120;
/// Most cohorts, and most months since the first payment, of a cohort grid.
const MAX_COHORT_MONTHS: i32 = 36;

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

#[tonic::async_trait]
impl RevenueService for RevenueApi {
    #[tracing::instrument(skip_all)]
    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Answer<pb::CreateSubscriptionResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let new = match req.subscription.as_ref() {
            Some(s) => convert::new_subscription(&mut v, s),
            None => {
                v.add("subscription", "is required");
                None
            }
        };
        let idem = idempotency(&mut v, &req.idempotency_key, "CreateSubscription", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app.create_subscription(parsed(new)?, idem).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Answer<pb::GetSubscriptionResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "id", &req.id);
        v.into_result()?;
        Ok(Response::new(pb::GetSubscriptionResponse {
            subscription: Some(self.app.get_subscription(parsed(id)?).await?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn change_subscription(
        &self,
        request: Request<pb::ChangeSubscriptionRequest>,
    ) -> Answer<pb::ChangeSubscriptionResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "id", &req.id);
        let terms = convert::terms(&mut v, "terms", req.terms.as_ref());
        let at = convert::required_time(&mut v, "effective_at", req.effective_at.as_ref());
        let idem = idempotency(&mut v, &req.idempotency_key, "ChangeSubscription", &req);
        v.into_result()?;
        let (terms, currency) = parsed(terms)?;
        Ok(Response::new(
            self.app
                .change_subscription(
                    parsed(id)?,
                    parsed(at)?,
                    terms,
                    currency,
                    req.expected_version,
                    idem,
                )
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn cancel_subscription(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Answer<pb::CancelSubscriptionResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "id", &req.id);
        let cancellation = convert::cancellation(&mut v, req.cancellation.as_ref());
        let idem = idempotency(&mut v, &req.idempotency_key, "CancelSubscription", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .cancel_subscription(
                    parsed(id)?,
                    parsed(cancellation)?,
                    req.expected_version,
                    idem,
                )
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn record_invoice(
        &self,
        request: Request<pb::RecordInvoiceRequest>,
    ) -> Answer<pb::RecordInvoiceResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let invoice = match req.invoice.as_ref() {
            None => {
                v.add("invoice", "is required");
                None
            }
            Some(i) => {
                let account = validate::uuid(&mut v, "invoice.account_id", &i.account_id);
                let subscription =
                    convert::optional_uuid(&mut v, "invoice.subscription_id", &i.subscription_id);
                let amount = convert::amount(&mut v, "invoice.amount", i.amount.as_ref());
                let due = convert::required_time(&mut v, "invoice.due_at", i.due_at.as_ref());
                let paid = convert::optional_time(&mut v, "invoice.paid_at", i.paid_at.as_ref());
                match (account, subscription, amount, due, paid) {
                    (
                        Some(account_id),
                        Some(subscription_id),
                        Some((currency, amount)),
                        Some(due_at),
                        Some(paid_at),
                    ) => Some(InvoiceRow {
                        id: uuid::Uuid::nil(),
                        account_id,
                        subscription_id,
                        currency,
                        amount,
                        due_at,
                        paid_at,
                    }),
                    _ => None,
                }
            }
        };
        let idem = idempotency(&mut v, &req.idempotency_key, "RecordInvoice", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app.record_invoice(parsed(invoice)?, idem).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn record_renewal_outcome(
        &self,
        request: Request<pb::RecordRenewalOutcomeRequest>,
    ) -> Answer<pb::RecordRenewalOutcomeResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let id = validate::uuid(&mut v, "subscription_id", &req.subscription_id);
        let outcome =
            validate::enum_value::<pb::RenewalOutcome>(&mut v, "outcome", req.outcome, true);
        let at = convert::required_time(&mut v, "decided_at", req.decided_at.as_ref());
        let idem = idempotency(&mut v, &req.idempotency_key, "RecordRenewalOutcome", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .record_renewal_outcome(parsed(id)?, parsed(outcome)?, parsed(at)?, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn set_fx_rate(
        &self,
        request: Request<pb::SetFxRateRequest>,
    ) -> Answer<pb::SetFxRateResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let (currency, at, rate) = match req.rate.as_ref() {
            None => {
                v.add("rate", "is required");
                (None, None, None)
            }
            Some(r) => {
                let currency = convert::currency(&mut v, "rate.currency_code", &r.currency_code);
                let at =
                    convert::required_time(&mut v, "rate.effective_at", r.effective_at.as_ref());
                let rate = Rate::parse(&r.rate);
                if rate.is_none() {
                    v.add(
                        "rate.rate",
                        "must be a positive decimal with at most 9 fractional digits",
                    );
                }
                (currency, at, rate)
            }
        };
        let idem = idempotency(&mut v, &req.idempotency_key, "SetFxRate", &req);
        v.into_result()?;
        Ok(Response::new(
            self.app
                .set_fx_rate(parsed(currency)?, parsed(at)?, parsed(rate)?, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_movements(
        &self,
        request: Request<pb::ListMovementsRequest>,
    ) -> Answer<pb::ListMovementsResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let start = convert::required_time(&mut v, "start_at", req.start_at.as_ref());
        let end = convert::required_time(&mut v, "end_at", req.end_at.as_ref());
        let account = convert::optional_uuid(&mut v, "account_id", &req.account_id);
        let kind = convert::movement_kind_filter(&mut v, "type", req.r#type);
        if let (Some(start), Some(end)) = (start, end)
            && end <= start
        {
            v.add("end_at", "must be after start_at");
        }
        v.into_result()?;
        let filter = MovementFilter {
            start: parsed(start)?,
            end: parsed(end)?,
            account: parsed(account)?,
            kind: parsed(kind)?,
        };
        let fingerprint = format!(
            "{}|{}|{:?}|{:?}",
            filter.start, filter.end, filter.account, filter.kind
        );
        let page = Page::parse(req.page.as_ref(), &fingerprint)?;
        Ok(Response::new(self.app.list_movements(filter, page).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_renewals(
        &self,
        request: Request<pb::ListRenewalsRequest>,
    ) -> Answer<pb::ListRenewalsResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let start = convert::required_time(&mut v, "start_at", req.start_at.as_ref());
        let end = convert::required_time(&mut v, "end_at", req.end_at.as_ref());
        let account = convert::optional_uuid(&mut v, "account_id", &req.account_id);
        if let (Some(start), Some(end)) = (start, end)
            && end <= start
        {
            v.add("end_at", "must be after start_at");
        }
        v.into_result()?;
        let (start, end, account) = (parsed(start)?, parsed(end)?, parsed(account)?);
        let page = Page::parse(req.page.as_ref(), &format!("{start}|{end}|{account:?}"))?;
        Ok(Response::new(
            self.app.list_renewals(start, end, account, page).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_mrr_report(
        &self,
        request: Request<pb::GetMrrReportRequest>,
    ) -> Answer<pb::GetMrrReportResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let mut month = |field: &str, raw: &str| {
            let m = parse_month(raw);
            if m.is_none() {
                v.add(field, "must be a month written YYYY-MM");
            }
            m
        };
        let first = month("start_month", &req.start_month);
        let last = month("end_month", &req.end_month);
        if let (Some(first), Some(last)) = (first, last) {
            if last < first {
                v.add("end_month", "must not be before start_month");
            } else if last - first >= MAX_REPORT_MONTHS {
                v.add(
                    "end_month",
                    format!("must be within {MAX_REPORT_MONTHS} months of start_month"),
                );
            }
        }
        let granularity = match validate::enum_value::<pb::Granularity>(
            &mut v,
            "granularity",
            req.granularity,
            false,
        ) {
            Some(pb::Granularity::Quarter) => Granularity::Quarter,
            _ => Granularity::Month,
        };
        let segment = validate::enum_value::<bowtie_proto::common::Segment>(
            &mut v,
            "segment",
            req.segment,
            false,
        );
        v.into_result()?;
        let segment = parsed(segment)?;
        let segment =
            (segment != bowtie_proto::common::Segment::Unspecified).then_some(segment as i32);
        Ok(Response::new(
            self.app
                .mrr_report(parsed(first)?, parsed(last)?, granularity, segment)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_retention(
        &self,
        request: Request<pb::GetRetentionRequest>,
    ) -> Answer<pb::GetRetentionResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let t0 = convert::required_time(&mut v, "start_at", req.start_at.as_ref());
        let t1 = convert::required_time(&mut v, "end_at", req.end_at.as_ref());
        if let (Some(t0), Some(t1)) = (t0, t1)
            && t1 <= t0
        {
            v.add("end_at", "must be after start_at");
        }
        let segment = validate::enum_value::<bowtie_proto::common::Segment>(
            &mut v,
            "segment",
            req.segment,
            false,
        );
        let owner = validate::optional_text(&mut v, "owner", &req.owner, MAX_PLAN);
        v.into_result()?;
        let segment = parsed(segment)?;
        let filter = CohortFilter {
            segment: (segment != bowtie_proto::common::Segment::Unspecified)
                .then_some(segment as i32),
            owner: Some(parsed(owner)?).filter(|o| !o.is_empty()),
        };
        Ok(Response::new(
            self.app
                .retention(parsed(t0)?, parsed(t1)?, filter, req.by_owner)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_cohort_retention(
        &self,
        request: Request<pb::GetCohortRetentionRequest>,
    ) -> Answer<pb::GetCohortRetentionResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let first = parse_month(&req.start_month);
        if first.is_none() {
            v.add("start_month", "must be a month written YYYY-MM");
        }
        let last = parse_month(&req.end_month);
        if last.is_none() {
            v.add("end_month", "must be a month written YYYY-MM");
        }
        if let (Some(first), Some(last)) = (first, last)
            && !(0..=MAX_COHORT_MONTHS).contains(&(last - first))
        {
            v.add(
                "end_month",
                format!("must be within {MAX_COHORT_MONTHS} months after start_month"),
            );
        }
        if !(0..=MAX_COHORT_MONTHS).contains(&req.months) {
            v.add(
                "months",
                format!("must be between 0 and {MAX_COHORT_MONTHS}"),
            );
        }
        let months = if req.months == 0 { 12 } else { req.months };
        let segment = validate::enum_value::<bowtie_proto::common::Segment>(
            &mut v,
            "segment",
            req.segment,
            false,
        );
        v.into_result()?;
        let segment = parsed(segment)?;
        let segment =
            (segment != bowtie_proto::common::Segment::Unspecified).then_some(segment as i32);
        Ok(Response::new(
            self.app
                .cohort_retention(parsed(first)?, parsed(last)?, months, segment)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn record_spend(
        &self,
        request: Request<pb::RecordSpendRequest>,
    ) -> Answer<pb::RecordSpendResponse> {
        let req = request.into_inner();
        let mut v = FieldViolations::default();
        let month = parse_month(&req.month);
        if month.is_none() {
            v.add("month", "must be a month written YYYY-MM");
        }
        let spend = convert::amount(
            &mut v,
            "sales_and_marketing_spend",
            req.sales_and_marketing_spend.as_ref(),
        );
        if let Some((code, _)) = &spend
            && *code != self.app.policy().reporting_currency
        {
            v.add(
                "sales_and_marketing_spend.currency_code",
                format!(
                    "must be the reporting currency {}",
                    self.app.policy().reporting_currency
                ),
            );
        }
        if !(0..=10_000).contains(&req.gross_margin_basis_points) {
            v.add("gross_margin_basis_points", "must be between 0 and 10000");
        }
        let idem = idempotency(&mut v, &req.idempotency_key, "RecordSpend", &req);
        v.into_result()?;
        let (_, spend) = parsed(spend)?;
        Ok(Response::new(
            self.app
                .record_spend(parsed(month)?, spend, req.gross_margin_basis_points, idem)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_unit_economics(
        &self,
        request: Request<pb::GetUnitEconomicsRequest>,
    ) -> Answer<pb::GetUnitEconomicsResponse> {
        let req = request.into_inner();
        let month = parse_month(&req.month)
            .ok_or_else(|| Error::invalid("month", "must be a month written YYYY-MM"))?;
        Ok(Response::new(self.app.unit_economics(month).await?))
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
