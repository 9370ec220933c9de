//! Measuring what the stage sensitivity model runs on (docs/design.md 7.2):
//! the window (the 12 whole calendar months, UTC, before the month of
//! `as_of`), the funnel's own figures over it from the journey index (the
//! same report GetFunnelReport gives), and revenue's, asked of the revenue
//! service's GetMrrReport over the same months. Whole months because
//! revenue's waterfall is monthly: both halves then cover exactly the same
//! instants.
//!
//! The revenue service is called as the other services call it, with this
//! service's own peer key (docs/design.md 9.2): the report is company-wide
//! figures, not a write on anyone's book.

use std::sync::Arc;

use bowtie_proto::revenue as revenue_pb;
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_runtime::Instant;
use bowtie_runtime::config::PeerSettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::peer::{self, PeerChannel};
use bowtie_runtime::store::Store;
use chrono::{NaiveDate, TimeZone, Utc};
use tonic::{Code, Status};

use crate::domain::{self, Filters, FunnelReport, Selection};
use crate::index::JourneyIndex;
use crate::sensitivity::{self, RevenueMonth, RevenueRates, WINDOW_MONTHS};

/// The first instant of calendar month `index` (year x 12 + month0), UTC.
pub fn month_start(index: i32) -> Option<Instant> {
    let date = NaiveDate::from_ymd_opt(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)?;
    let at = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?);
    Some(Instant::from_micros(at.timestamp_micros()))
}

/// "YYYY-MM" of calendar month `index`.
pub fn month_name(index: i32) -> String {
    format!(
        "{:04}-{:02}",
        index.div_euclid(12),
        index.rem_euclid(12) + 1
    )
}

/// The measuring window of `as_of`: month indexes `first..=last` and its
/// `[start, end)` instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first month's index.
    pub first: i32,
    /// The last month's index.
    pub last: i32,
    /// The first month's first instant.
    pub start: Instant,
    /// The first instant of the month of `as_of`.
    pub end: Instant,
}

impl Window {
    /// The 12 whole months before the month of `as_of`; `None` when they
    /// would begin before 1970.
    pub fn before(as_of: Instant) -> Option<Self> {
        let this = domain::month_index(as_of);
        let first = this - WINDOW_MONTHS;
        if first < 1970 * 12 {
            return None;
        }
        Some(Self {
            first,
            last: this - 1,
            start: month_start(first)?,
            end: month_start(this)?,
        })
    }
}

/// Everything measured over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The window.
    pub window: Window,
    /// The funnel report over it (stage entries made in the window).
    pub funnel: FunnelReport,
    /// Revenue's rates over it.
    pub revenue: RevenueRates,
    /// The reporting currency of revenue's amounts.
    pub currency: String,
}

/// Measures the inputs: the journey index and the revenue service.
#[derive(Debug, Clone)]
pub struct Measures {
    store: Store,
    index: Arc<JourneyIndex>,
    revenue: RevenueServiceClient<PeerChannel>,
}

/// A revenue answer as this service's error: a refusal revenue explains
/// (no FX rate for a currency) stays a refusal, the rest is
/// [`peer::peer_error`].
fn revenue_error(status: &Status) -> Error {
    match status.code() {
        Code::FailedPrecondition => Error::FailedPrecondition(format!(
            "the revenue service refused the MRR report: {}",
            status.message()
        )),
        _ => peer::peer_error("revenue", status),
    }
}

impl Measures {
    /// Measures from `index` (kept current from `store`), asking the
    /// revenue service of `peers` (connected lazily).
    pub fn connect(
        store: Store,
        index: Arc<JourneyIndex>,
        peers: &PeerSettings,
    ) -> Result<Self, Error> {
        Ok(Self {
            store,
            index,
            revenue: RevenueServiceClient::new(peer::connect(&peers.revenue, peers)?),
        })
    }

    /// The funnel's and revenue's figures over `window`, only `filters`'
    /// segment (the owner filter is not used).
    pub async fn measure(&self, window: Window, filters: Filters) -> Result<Measured, Error> {
        let mut client = self.revenue.clone();
        let request = revenue_pb::GetMrrReportRequest {
            start_month: month_name(window.first),
            end_month: month_name(window.last),
            granularity: revenue_pb::Granularity::Month as i32,
            segment: filters.segment.map_or(0, |s| s as i32),
            ..Default::default()
        };
        let revenue = async {
            client
                .get_mrr_report(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| revenue_error(&s))
        };
        let funnel = async {
            self.index.catch_up(&self.store).await?;
            let index = Arc::clone(&self.index);
            tokio::task::spawn_blocking(move || {
                index.funnel_report(Selection::EnteredIn, (window.start, window.end), &filters)
            })
            .await
            .map_err(|e| Error::Internal(e.into()))
        };
        let (revenue, funnel) = tokio::try_join!(revenue, funnel)?;
        let minor =
            |m: &Option<bowtie_proto::common::Money>| m.as_ref().map_or(0, |m| m.minor_units);
        let months: Vec<RevenueMonth> = revenue
            .periods
            .iter()
            .map(|p| RevenueMonth {
                new_mrr: minor(&p.new_mrr),
                new_accounts: p.new_accounts,
                expansion_mrr: minor(&p.expansion_mrr),
                churned_accounts: p.churned_accounts,
                paying_at_start: p.paying_accounts_start,
            })
            .collect();
        Ok(Measured {
            window,
            funnel,
            revenue: sensitivity::revenue_rates(&months),
            currency: revenue.reporting_currency_code,
        })
    }
}

impl Measures {
    /// GetStageSensitivity: measures the window, runs the model.
    pub async fn stage_sensitivity(
        &self,
        window: Window,
        filters: Filters,
    ) -> Result<bowtie_proto::funnel::GetStageSensitivityResponse, Error> {
        let measured = self.measure(window, filters).await?;
        let inputs = sensitivity::inputs(&measured.funnel, &measured.revenue);
        let answer = sensitivity::sensitivity(&inputs);
        Ok(crate::convert::sensitivity_to_pb(
            &measured, &inputs, &answer,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_twelve_whole_months_before_the_month_of_as_of() {
        // 2026-03-15T12:00:00Z -> 2025-03-01 .. 2026-03-01.
        let as_of = Instant::from_micros(1_773_576_000 * 1_000_000);
        let w = Window::before(as_of);
        assert_eq!(
            w.map(|w| (month_name(w.first), month_name(w.last))),
            Some(("2025-03".to_owned(), "2026-02".to_owned()))
        );
        assert_eq!(
            w.map(|w| (w.start, w.end)),
            Some((
                Instant::from_micros(1_740_787_200 * 1_000_000),
                Instant::from_micros(1_772_323_200 * 1_000_000)
            ))
        );
        // A window would start in 1969.
        assert_eq!(Window::before(Instant::EPOCH.plus_days(200)), None);
    }
}
