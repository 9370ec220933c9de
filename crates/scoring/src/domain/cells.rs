//! Day cells and the one fold that turns them into health inputs.
//!
//! A day cell is what one kind of fact about an account added up to on one
//! UTC day: the sum of the values, the number of events and the latest
//! value. Scoring, churn risk and training all read an account's cells and
//! fold them here, as of the instant they score, so every number health is
//! computed from is aggregated the same way, in one place.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use bowtie_proto::scoring::SignalType;
use bowtie_runtime::{AccountId, Instant};

use super::Inputs;

/// The UTC day number of an instant.
pub const fn day_of(at: Instant) -> i64 {
    at.days_since(Instant::EPOCH)
}

/// What a day cell counts: a signal type, or a fact the revenue feed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A signal of this type.
    Signal(SignalType),
    /// An invoice paid late (or unpaid past due).
    LatePayment,
    /// A contraction movement.
    Downgrade,
    /// An expansion movement.
    Expansion,
}

/// Kinds are ordered and hashed by their stored numbers (a day's cells are kept in
/// (day, kind) order, as the table's key orders them).
impl Ord for Kind {
    fn cmp(&self, other: &Self) -> Ordering {
        self.stored().cmp(&other.stored())
    }
}

impl Hash for Kind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.stored().hash(state);
    }
}

impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Stored kinds from this number on are the revenue feed's, below it signal
/// types (whose numbers are the proto enum's).
pub const FEED_KINDS_FROM: i32 = 100;

impl Kind {
    /// The number a cell of this kind is stored under.
    pub const fn stored(self) -> i32 {
        match self {
            Self::Signal(t) => t as i32,
            Self::LatePayment => FEED_KINDS_FROM,
            Self::Downgrade => FEED_KINDS_FROM + 1,
            Self::Expansion => FEED_KINDS_FROM + 2,
        }
    }

    /// The kind stored under `number`, `None` for a number Bowtie never writes.
    pub fn from_stored(number: i32) -> Option<Self> {
        match number {
            n if n == Self::LatePayment.stored() => Some(Self::LatePayment),
            n if n == Self::Downgrade.stored() => Some(Self::Downgrade),
            n if n == Self::Expansion.stored() => Some(Self::Expansion),
            n => SignalType::try_from(n).ok().map(Self::Signal),
        }
    }
}

/// One increment of a day cell: (account, kind, day) -> (sum, events,
/// latest value, its time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayDelta {
    /// The account.
    pub account_id: AccountId,
    /// What it counts.
    pub kind: Kind,
    /// UTC day number.
    pub day: i64,
    /// Added to the sum (negative to take back).
    pub total: i64,
    /// Added to the event count.
    pub events: i64,
    /// The latest value seen in this delta.
    pub last_value: i64,
    /// Its time.
    pub last_at: Instant,
}

/// One kind of fact of an account on one UTC day: what a `signal_days` row
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// UTC day number.
    pub day: i32,
    /// What it counts.
    pub kind: Kind,
    /// Sum of the values.
    pub total: i64,
    /// Number of events.
    pub events: i64,
    /// The latest value.
    pub last_value: i64,
    /// Its time.
    pub last_at: Instant,
}

impl Cell {
    /// Adds a delta of the same account, kind and day (the later value wins,
    /// the delta's on a tie).
    pub fn add(&mut self, d: &DayDelta) {
        self.total += d.total;
        self.events += d.events;
        if d.last_at >= self.last_at {
            self.last_at = d.last_at;
            self.last_value = d.last_value;
        }
    }

    /// A new cell from a delta.
    pub fn of(d: &DayDelta) -> Self {
        Self {
            day: d.day as i32,
            kind: d.kind,
            total: d.total,
            events: d.events,
            last_value: d.last_value,
            last_at: d.last_at,
        }
    }
}

/// Aggregated inputs of one account plus the facts tiers need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregates {
    /// Health inputs (profile fields are filled by the caller).
    pub inputs: Inputs,
    /// A late payment within the PROBLEM window.
    pub late_recently: bool,
    /// An expansion within the POTENTIAL window.
    pub expanded_recently: bool,
    /// Last day with usage.
    pub last_usage_day: Option<i64>,
}

/// The instant a [`fold`] is as of, and the policy's windows in days.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// The instant; its day is "today".
    pub now: Instant,
    /// Days of the PROBLEM window.
    pub problem_days: i64,
    /// Days of the POTENTIAL window.
    pub potential_days: i64,
}

/// Days of cells health looks back over.
pub const WINDOW_DAYS: i64 = 180;

/// The first day whose cells anything still reads as of day `today`: a
/// fold looks back [`WINDOW_DAYS`] (a policy window longer than that, in
/// `windows`, is cut to it by the fold, so it is counted only if longer),
/// and the churn model folds its stayers as of one churn horizon ago.
/// Cells of earlier days may be pruned.
pub fn first_kept_day(today: i64, horizon_days: i64, windows: &[i64]) -> i64 {
    let window = windows.iter().copied().fold(WINDOW_DAYS, i64::max);
    today - window - horizon_days.max(0)
}

/// Aggregates one account's cells as of `w` (in any order); `None` when no
/// cell falls within the last [`WINDOW_DAYS`] days.
pub fn fold<'a>(cells: impl IntoIterator<Item = &'a Cell>, w: Windows) -> Option<Aggregates> {
    let today = day_of(w.now);
    let (d30, d60, oldest) = (today - 29, today - 59, today - (WINDOW_DAYS - 1));
    let problem = today - w.problem_days + 1;
    let potential = today - w.potential_days + 1;
    let mut a = Aggregates {
        inputs: Inputs {
            now: w.now,
            ..Inputs::default()
        },
        ..Aggregates::default()
    };
    let mut any = false;
    let mut active: Option<(i64, i64)> = None;
    let mut complaints = 0;
    let mut events = 0;
    let (mut late_recent, mut expanded) = (0, 0);
    for c in cells {
        let day = i64::from(c.day);
        if day < oldest || day > today {
            continue;
        }
        any = true;
        let i = &mut a.inputs;
        match c.kind {
            Kind::Signal(SignalType::Login | SignalType::FeatureUsed) => {
                if day >= d30 {
                    i.usage_recent += c.total;
                } else if day >= d60 {
                    i.usage_prior += c.total;
                }
                a.last_usage_day = a.last_usage_day.max(Some(day));
            }
            Kind::Signal(SignalType::ActiveUsers) if day >= d30 => {
                // The latest day's count; on a day's tie the larger one.
                let key = (day, c.last_value.rem_euclid(10_000_000));
                active = active.max(Some(key));
            }
            Kind::Signal(SignalType::TicketOpened) => {
                if day >= d30 {
                    i.tickets_recent += c.total;
                } else if day >= d60 {
                    i.tickets_prior += c.total;
                }
            }
            Kind::Signal(SignalType::Complaint) => complaints += c.total,
            Kind::Signal(SignalType::ComplaintResolved) => complaints -= c.total,
            Kind::Signal(SignalType::NpsAnswer) => {
                i.nps.0 += c.total;
                i.nps.1 += c.events;
            }
            Kind::Signal(SignalType::CsatAnswer) => {
                i.csat.0 += c.total;
                i.csat.1 += c.events;
            }
            Kind::Signal(SignalType::StakeholderLeft) => i.stakeholders_left += c.total,
            Kind::LatePayment => {
                i.late_payments += c.total;
                if day >= problem {
                    late_recent += c.total;
                }
            }
            Kind::Downgrade => i.downgrades += c.total,
            Kind::Expansion if day >= potential => expanded += c.total,
            _ => {}
        }
        if let Kind::Signal(_) = c.kind {
            events += c.events;
        }
    }
    if !any {
        return None;
    }
    a.inputs.active_users = active.map(|(_, v)| v);
    a.inputs.complaints_open = complaints.max(0);
    a.inputs.listening = events > 0;
    a.late_recently = late_recent > 0;
    a.expanded_recently = expanded > 0;
    Some(a)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn cells_are_kept_for_the_health_window_back_from_one_churn_horizon_ago() {
        // Day 20,000 with a 90-day horizon: stayers are seen as of day
        // 19,910 and fold back 180 days, to day 19,730.
        assert_eq!(first_kept_day(20_000, 90, &[90, 30, 30]), 19_730);
        // A policy window beyond the fold's 180 days widens what is kept.
        assert_eq!(first_kept_day(20_000, 90, &[365]), 19_545);
        assert_eq!(first_kept_day(20_000, 0, &[]), 19_820);
    }
    use crate::domain::DAY;

    pub(crate) fn cell(kind: Kind, day: i32, total: i64, events: i64, last_value: i64) -> Cell {
        Cell {
            day,
            kind,
            total,
            events,
            last_value,
            last_at: Instant::EPOCH.plus_days(i64::from(day)),
        }
    }

    fn signal(t: SignalType, day: i32, total: i64, events: i64, last_value: i64) -> Cell {
        cell(Kind::Signal(t), day, total, events, last_value)
    }

    /// Noon of day 1000: the last 30 days are 971..=1000, the 30 before
    /// 941..=970, the 180-day window starts at 821; PROBLEM looks back 30
    /// days (from 971), POTENTIAL 90 (from 911).
    fn windows() -> Windows {
        Windows {
            now: Instant::from_micros(1000 * DAY + DAY / 2),
            problem_days: 30,
            potential_days: 90,
        }
    }

    #[test]
    fn every_stored_kind_reads_back_as_itself() {
        for n in (0..=11).chain(100..=102) {
            assert_eq!(Kind::from_stored(n).map(Kind::stored), Some(n));
        }
        assert_eq!(Kind::from_stored(103), None);
        assert_eq!(Kind::LatePayment.stored(), 100);
        assert_eq!(Kind::Expansion.stored(), 102);
    }

    #[test]
    fn folding_cells_sums_each_window() -> Result<(), String> {
        use SignalType as S;
        let cells = [
            signal(S::Login, 1000, 5, 5, 1),
            signal(S::FeatureUsed, 971, 2, 2, 1), // first day of the recent window
            signal(S::Login, 970, 4, 4, 1),       // last day of the prior window
            signal(S::Login, 940, 9, 9, 1),       // before both, still within 180 days
            signal(S::Login, 1001, 100, 100, 1),  // tomorrow: ignored
            signal(S::ActiveUsers, 990, 12, 1, 12),
            signal(S::ActiveUsers, 995, 8, 1, 8), // the latest active-user count
            signal(S::ActiveUsers, 960, 50, 1, 50), // older than 30 days
            signal(S::TicketOpened, 980, 3, 3, 1),
            signal(S::TicketOpened, 950, 1, 1, 1),
            signal(S::Complaint, 900, 2, 2, 1),
            signal(S::ComplaintResolved, 990, 3, 3, 1), // more resolved than filed: 0 open
            signal(S::NpsAnswer, 999, 17, 2, 9),
            signal(S::CsatAnswer, 820, 5, 1, 5), // day 820 is outside the 180 days
            signal(S::StakeholderLeft, 900, 1, 1, 1),
            cell(Kind::LatePayment, 975, 1, 1, 1),
            cell(Kind::LatePayment, 960, 1, 1, 1),
            cell(Kind::Downgrade, 850, 1, 1, 1),
            cell(Kind::Expansion, 905, 1, 1, 1), // before the POTENTIAL window
        ];
        let a = fold(&cells, windows()).ok_or("no cell in the window")?;
        // usage: 5 + 2 recent, 4 prior; tickets: 3 recent, 1 prior.
        assert_eq!((a.inputs.usage_recent, a.inputs.usage_prior), (7, 4));
        assert_eq!(a.inputs.active_users, Some(8));
        assert_eq!((a.inputs.tickets_recent, a.inputs.tickets_prior), (3, 1));
        assert_eq!(a.inputs.complaints_open, 0);
        assert_eq!(a.inputs.nps, (17, 2));
        assert_eq!(a.inputs.csat, (0, 0));
        assert_eq!(a.inputs.stakeholders_left, 1);
        assert_eq!((a.inputs.late_payments, a.inputs.downgrades), (2, 1));
        assert!(a.late_recently);
        assert!(!a.expanded_recently);
        assert!(a.inputs.listening);
        assert_eq!(a.last_usage_day, Some(1000));
        assert_eq!(a.inputs.now, windows().now);
        Ok(())
    }

    #[test]
    fn folding_only_cells_outside_the_window_gives_nothing() {
        let cells = [
            signal(SignalType::Login, 820, 3, 3, 1),
            signal(SignalType::Login, 1001, 1, 1, 1),
        ];
        assert_eq!(fold(&cells, windows()), None);
    }

    #[test]
    fn an_account_with_only_revenue_rows_is_not_listening() -> Result<(), String> {
        let cells = [cell(Kind::Expansion, 911, 1, 1, 1)];
        let a = fold(&cells, windows()).ok_or("no cell in the window")?;
        assert!(!a.inputs.listening);
        // Day 911 is the first day of the 90-day POTENTIAL window.
        assert!(a.expanded_recently);
        Ok(())
    }

    #[test]
    fn adding_a_later_delta_replaces_the_latest_value() {
        let active = Kind::Signal(SignalType::ActiveUsers);
        let mut c = signal(SignalType::ActiveUsers, 990, 12, 1, 12);
        c.add(&DayDelta {
            account_id: AccountId::default(),
            kind: active,
            day: 990,
            total: 7,
            events: 1,
            last_value: 7,
            last_at: Instant::EPOCH.plus_days(990).plus_micros(5),
        });
        // 12 + 7 summed, 2 events, the later value 7 is the latest.
        assert_eq!((c.total, c.events, c.last_value), (19, 2, 7));
        c.add(&DayDelta {
            account_id: AccountId::default(),
            kind: active,
            day: 990,
            total: 30,
            events: 1,
            last_value: 30,
            last_at: Instant::EPOCH.plus_days(990),
        });
        // An earlier value adds to the sum but is not the latest.
        assert_eq!((c.total, c.events, c.last_value), (49, 3, 7));
    }
}
