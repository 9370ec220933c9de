//! Trial-to-paid conversion (docs/design.md 7.1, "Trial-to-paid"): of the
//! trials started in a period, how many became paying, how many are still
//! in their trial, and the median days from a trial's start to its first
//! payment.
//!
//! A trial is a subscription with a trial end after its start. It started at
//! the subscription's start; its first payment is the first instant from the
//! trial's end on at which the subscription counts MRR (its terms then may
//! still be zero, as a billing system that records a trial as free terms
//! changes them at conversion). It converted when that instant has come.

use super::{Granularity, Instant, Month, Subscription, month_start, report_periods};

/// Microseconds in a day.
const DAY_MICROS: f64 = 86_400_000_000.0;

/// One subscription's trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    /// When it started (the subscription's start).
    pub started: Instant,
    /// When it ends.
    pub ends: Instant,
    /// The first instant from the trial's end on at which the subscription
    /// counts MRR, scheduled or past; `None` when it never does.
    pub first_paid: Option<Instant>,
    /// When the subscription is cancelled, if it is.
    pub cancelled: Option<Instant>,
}

impl Subscription {
    /// The subscription's trial; `None` without one.
    pub fn trial(&self) -> Option<Trial> {
        let ends = self.trial_end.filter(|end| *end > self.start)?;
        let mut candidates: Vec<Instant> = self.breakpoints().filter(|t| *t >= ends).collect();
        candidates.push(ends);
        candidates.sort_unstable();
        let first_paid = candidates.into_iter().find(|t| self.mrr_at(*t).get() > 0);
        Some(Trial {
            started: self.start,
            ends,
            first_paid,
            cancelled: self.cancellation.as_ref().map(|c| c.effective_at),
        })
    }
}

/// Where a trial stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrialState {
    /// It paid, this many days after it started.
    Converted(f64),
    /// Neither paid nor over: still in its trial.
    InTrial,
    /// Over without paying: it ended unpaid or was cancelled.
    NotConverted,
}

impl Trial {
    /// Where the trial stands at `now`.
    pub fn state(&self, now: Instant) -> TrialState {
        match self.first_paid {
            // A payment counts once it has come, and only before a cancellation.
            Some(paid) if paid <= now && self.cancelled.is_none_or(|c| paid < c) => {
                TrialState::Converted((paid.micros() - self.started.micros()) as f64 / DAY_MICROS)
            }
            _ if self.ends > now && self.cancelled.is_none_or(|c| c > now) => TrialState::InTrial,
            _ => TrialState::NotConverted,
        }
    }
}

/// The trials started in one period.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialPeriod {
    /// "YYYY-MM" or "YYYY-Qn".
    pub label: String,
    /// Trials started in the period.
    pub started: i64,
    /// Of them, the ones that paid.
    pub converted: i64,
    /// Of them, the ones still in their trial.
    pub in_trial: i64,
    /// Median days from start to first payment over the converted ones.
    pub median_days_to_convert: Option<f64>,
}

impl TrialPeriod {
    /// Trials over without paying.
    pub fn not_converted(&self) -> i64 {
        self.started - self.converted - self.in_trial
    }

    /// Converted / started; `None` when none started.
    pub fn conversion_rate(&self) -> Option<f64> {
        (self.started > 0).then(|| self.converted as f64 / self.started as f64)
    }
}

/// The median of `values` (the mean of the middle two of an even count);
/// `None` for none.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The trials started in each period of months `first..=last` (calendar
/// quarters widened to whole quarters by the caller), as they stand at `now`.
pub fn trial_conversion(
    trials: &[Trial],
    first: Month,
    last: Month,
    granularity: Granularity,
    now: Instant,
) -> Vec<TrialPeriod> {
    report_periods(first, last, granularity)
        .into_iter()
        .map(|(label, month, len)| {
            let (from, to) = (month_start(month), month_start(month + len));
            let mut period = TrialPeriod {
                label,
                started: 0,
                converted: 0,
                in_trial: 0,
                median_days_to_convert: None,
            };
            let mut days = Vec::new();
            for t in trials
                .iter()
                .filter(|t| from <= t.started && t.started < to)
            {
                period.started += 1;
                match t.state(now) {
                    TrialState::Converted(d) => {
                        period.converted += 1;
                        days.push(d);
                    }
                    TrialState::InTrial => period.in_trial += 1,
                    TrialState::NotConverted => {}
                }
            }
            period.median_days_to_convert = median(&mut days);
            period
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{
        AccountId, Cancellation, CancellationKind, Interval, Minor, NewSubscription,
        SubscriptionId, Terms,
    };
    use super::*;

    const DAY: i64 = 86_400_000_000;

    /// Midnight UTC of day `n` of 2026 (day 0 is 1 January).
    fn day(n: i64) -> Instant {
        Instant::from_micros(1_767_225_600_000_000 + n * DAY)
    }

    fn terms(price: i64) -> Terms {
        Terms {
            plan: "pro".into(),
            quantity: 1,
            unit_price: Minor(price),
            discount_bp: 0,
        }
    }

    /// A monthly subscription of `price` from `start` with a trial to `trial_end`.
    fn trialing(start: i64, trial_end: Option<i64>, price: i64) -> Subscription {
        Subscription::create(
            SubscriptionId::new(),
            NewSubscription {
                account_id: AccountId(uuid::Uuid::from_u128(1)),
                currency: "USD".into(),
                interval: Interval::Month,
                start: day(start),
                trial_end: trial_end.map(day),
                term_end: None,
                terms: terms(price),
            },
        )
    }

    #[test]
    fn a_trial_pays_from_its_end_unless_cancelled_first_or_priced_at_zero_until_later() {
        // Paid from day 14, 14 days after it started.
        let paid = trialing(0, Some(14), 5_000);
        assert_eq!(paid.trial().and_then(|t| t.first_paid), Some(day(14)));
        // Free terms until a change on day 20 (a billing system's trial).
        let mut free = trialing(0, Some(14), 0);
        free.change(day(20), terms(5_000)).ok();
        assert_eq!(free.trial().and_then(|t| t.first_paid), Some(day(20)));
        // Cancelled on day 10, before its trial ended: never pays.
        let mut gone = trialing(0, Some(14), 5_000);
        gone.cancellation = Some(Cancellation {
            effective_at: day(10),
            kind: CancellationKind::Voluntary,
            reason: String::new(),
        });
        assert_eq!(gone.trial().and_then(|t| t.first_paid), None);
        // No trial, or one that ends at the start: not a trial.
        assert_eq!(trialing(0, None, 5_000).trial(), None);
        assert_eq!(trialing(3, Some(3), 5_000).trial(), None);
    }

    #[test]
    fn trials_count_in_the_month_they_started_with_the_median_days_to_pay() {
        let trial = |start: i64, ends: i64, paid: Option<i64>, cancelled: Option<i64>| Trial {
            started: day(start),
            ends: day(ends),
            first_paid: paid.map(day),
            cancelled: cancelled.map(day),
        };
        let trials = [
            // January: paid after 14, 30 and 21 days; one ended unpaid on day
            // 24 (its first payment, scheduled for day 40, never came: it was
            // cancelled on day 24); one still in its trial on day 45.
            trial(0, 14, Some(14), None),
            trial(2, 32, Some(32), None),
            trial(10, 31, Some(31), None),
            trial(10, 24, Some(40), Some(24)),
            trial(20, 50, Some(50), None),
            // February: one paid after 7 days, one cancelled in its trial.
            trial(31, 38, Some(38), None),
            trial(35, 49, None, Some(40)),
            // March: started after the range.
            trial(60, 74, Some(74), None),
        ];
        let (jan, feb) = (Month::january(2026), Month::january(2026) + 1);
        let periods = trial_conversion(&trials, jan, feb, Granularity::Month, day(45));
        assert_eq!(
            periods,
            vec![
                TrialPeriod {
                    label: "2026-01".into(),
                    started: 5,
                    converted: 3,
                    in_trial: 1,
                    // 14, 21 and 30 days: the median is 21.
                    median_days_to_convert: Some(21.0),
                },
                TrialPeriod {
                    label: "2026-02".into(),
                    started: 2,
                    converted: 1,
                    in_trial: 0,
                    median_days_to_convert: Some(7.0),
                },
            ]
        );
        assert_eq!(periods[0].not_converted(), 1);
        assert_eq!(periods[0].conversion_rate(), Some(0.6));
        assert_eq!(periods[1].conversion_rate(), Some(0.5));
        // Two converted: the median is the mean of the middle two.
        let both = [trial(0, 10, Some(10), None), trial(0, 13, Some(13), None)];
        let q1 = trial_conversion(&both, jan, jan, Granularity::Quarter, day(45));
        assert_eq!(q1[0].label, "2026-Q1");
        assert_eq!(q1[0].median_days_to_convert, Some(11.5));
        // No trial: no rate and no median, not zero.
        let none = trial_conversion(&[], jan, jan, Granularity::Month, day(45));
        assert_eq!(
            (none[0].conversion_rate(), none[0].median_days_to_convert),
            (None, None)
        );
    }
}
