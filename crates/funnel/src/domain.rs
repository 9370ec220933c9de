//! The funnel's rules, free of I/O: how transitions order into a journey,
//! which new transition is admitted, how a journey splits into stage entries
//! and attempts, and the report maths (docs/design.md section 1).
//!
//! Times are [`Instant`]s; durations are microseconds.

use std::fmt;

use bowtie_proto::common::{Segment, Stage};
use bowtie_runtime::{AccountId, Instant};
use chrono::Datelike;
use uuid::Uuid;

/// The seven stages of the bowtie, in order.
pub const STAGES: [Stage; 7] = [
    Stage::Awareness,
    Stage::Education,
    Stage::Selection,
    Stage::Commit,
    Stage::Onboarding,
    Stage::Impact,
    Stage::Growth,
];

/// True for LOST and CHURNED, which end an attempt.
pub fn is_outcome(stage: Stage) -> bool {
    matches!(stage, Stage::Lost | Stage::Churned)
}

/// True for the stages of a customer (COMMIT and the right side).
pub fn is_customer_stage(stage: Stage) -> bool {
    matches!(
        stage,
        Stage::Commit | Stage::Onboarding | Stage::Impact | Stage::Growth
    )
}

/// The stage after `stage` on the bowtie, if any.
pub fn next_stage(stage: Stage) -> Option<Stage> {
    let i = STAGES.iter().position(|s| *s == stage)?;
    STAGES.get(i + 1).copied()
}

/// The id of a recorded transition (UUIDv7, so ids sort by recording).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransitionId(pub Uuid);

impl fmt::Display for TransitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A transition to record, as the client (or a feed) asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransition {
    /// The account.
    pub account_id: AccountId,
    /// The stage or outcome.
    pub stage: Stage,
    /// Business time.
    pub occurred_at: Instant,
    /// Reason code.
    pub reason: String,
    /// Origin.
    pub source: String,
}

impl NewTransition {
    /// The transition as recorded at `recorded_at`, under a fresh id.
    pub fn recorded(self, recorded_at: Instant) -> Transition {
        Transition {
            id: TransitionId(Uuid::now_v7()),
            account_id: self.account_id,
            stage: self.stage,
            occurred_at: self.occurred_at,
            recorded_at,
            reason: self.reason,
            source: self.source,
        }
    }
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Its id.
    pub id: TransitionId,
    /// The account.
    pub account_id: AccountId,
    /// The stage or outcome entered.
    pub stage: Stage,
    /// Business time.
    pub occurred_at: Instant,
    /// When it was recorded.
    pub recorded_at: Instant,
    /// Reason code (required for outcomes).
    pub reason: String,
    /// Origin.
    pub source: String,
}

impl Transition {
    /// The journey order: business time, then bowtie order (COMMIT before
    /// ONBOARDING when both land at one instant). A journey holds at most one
    /// transition per (time, stage), so the order never depends on arrival.
    fn order_key(&self) -> (Instant, i32) {
        (self.occurred_at, self.stage as i32)
    }
}

/// Sorts transitions into journey order.
pub fn sort_journey(transitions: &mut [Transition]) {
    transitions.sort_by_key(Transition::order_key);
}

/// What recording a transition did.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The stored (or already existing) transition.
    pub transition: Transition,
    /// False for an idempotent no-op.
    pub applied: bool,
    /// The current stage afterwards.
    pub current_stage: Stage,
}

/// Who an account is, for the report filters: what the accounts service
/// last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Its segment.
    pub segment: Segment,
    /// Its owner.
    pub owner: String,
}

impl Profile {
    /// The profile of an account the accounts service has not described.
    pub fn unknown() -> Self {
        Profile {
            segment: Segment::Unspecified,
            owner: String::new(),
        }
    }
}

/// Where an account stands: its current stage, since when, after how many
/// attempts, and its profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JourneyRow {
    /// The account.
    pub account_id: AccountId,
    /// Current stage.
    pub current_stage: Stage,
    /// Since when.
    pub current_since: Instant,
    /// Attempts.
    pub attempts: i32,
    /// Segment and owner.
    pub profile: Profile,
}

/// Filters of the lists and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Only this segment.
    pub segment: Option<Segment>,
    /// Only this owner.
    pub owner: Option<String>,
}

/// Which entries a report selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Entries made in the period.
    EnteredIn,
    /// Entries of attempts that started in the period.
    AttemptStartedIn,
}

/// What to do with a proposed transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Record it.
    Apply,
    /// Nothing to do: the journey already has a transition to that stage at
    /// that time (returned).
    AlreadyThere(Transition),
}

/// Decides whether `new` adds anything to `journey`.
///
/// Only an exact repeat (same stage, same business time) is refused, as an
/// idempotent no-op. Nothing else depends on what is already recorded, so an
/// import gives the same journey in any order: a transition to the stage the
/// account is already in is kept (a renewal is another GROWTH) and collapses
/// into the running stay, and outcomes are judged by the reports, not here.
pub fn admit(journey: &[Transition], new: &Transition) -> Admission {
    match journey
        .iter()
        .find(|t| t.stage == new.stage && t.occurred_at == new.occurred_at)
    {
        Some(existing) => Admission::AlreadyThere(existing.clone()),
        None => Admission::Apply,
    }
}

/// One stay in a stage: a journey transition that changed the stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 0-based position in the journey.
    pub position: i32,
    /// 1-based attempt; LOST or CHURNED ends one.
    pub attempt: i32,
    /// The stage entered.
    pub stage: Stage,
    /// When.
    pub entered_at: Instant,
    /// When the next entry began (any stage); `None` for the current one.
    pub exited_at: Option<Instant>,
    /// When the same attempt first entered the next bowtie stage after this
    /// entry: the entry converted. `None` for GROWTH and outcomes.
    pub next_at: Option<Instant>,
    /// For left-side entries: when the same attempt reached COMMIT after it.
    pub commit_at: Option<Instant>,
    /// The outcome that immediately followed (drop-off) and its reason.
    pub exit: Option<(Stage, String)>,
    /// When the attempt began.
    pub attempt_started_at: Instant,
}

/// Splits a sorted journey into stage entries: consecutive transitions to
/// the same stage collapse into one, and attempts split after each outcome.
pub fn entries(journey: &[Transition]) -> Vec<Entry> {
    let mut kept: Vec<&Transition> = Vec::with_capacity(journey.len());
    for t in journey {
        if kept.last().is_none_or(|last| last.stage != t.stage) {
            kept.push(t);
        }
    }
    let mut out: Vec<Entry> = Vec::with_capacity(kept.len());
    let mut attempt = 1;
    let mut attempt_started_at = kept.first().map_or(Instant::EPOCH, |t| t.occurred_at);
    for (i, t) in kept.iter().enumerate() {
        if i > 0 && is_outcome(kept[i - 1].stage) {
            attempt += 1;
            attempt_started_at = t.occurred_at;
        }
        out.push(Entry {
            position: i as i32,
            attempt,
            stage: t.stage,
            entered_at: t.occurred_at,
            exited_at: kept.get(i + 1).map(|n| n.occurred_at),
            next_at: None,
            commit_at: None,
            exit: None,
            attempt_started_at,
        });
    }
    // Conversion, commit and drop-off look forward inside the attempt.
    for i in 0..out.len() {
        let (head, tail) = out.split_at_mut(i + 1);
        let entry = &mut head[i];
        let same_attempt = tail.iter().take_while(|e| e.attempt == entry.attempt);
        if let Some(next) = next_stage(entry.stage) {
            entry.next_at = same_attempt
                .clone()
                .find(|e| e.stage == next)
                .map(|e| e.entered_at);
        }
        if !is_customer_stage(entry.stage) && !is_outcome(entry.stage) {
            entry.commit_at = same_attempt
                .clone()
                .find(|e| e.stage == Stage::Commit)
                .map(|e| e.entered_at);
        }
        if let Some(first) = tail.first()
            && first.attempt == entry.attempt
            && is_outcome(first.stage)
        {
            entry.exit = Some((first.stage, kept[i + 1].reason.clone()));
        }
    }
    out
}

impl Entry {
    /// How long the stay lasted in microseconds; the current one lasts until `now`.
    pub fn duration(&self, now: Instant) -> i64 {
        self.exited_at
            .unwrap_or(now)
            .micros_since(self.entered_at)
            .max(0)
    }
}

/// Total time (microseconds) and visit count per stage, in bowtie order then
/// outcomes; the current stay counts until `now`.
pub fn time_in_stages(entries: &[Entry], now: Instant) -> Vec<(Stage, i64, i32)> {
    let order = STAGES.iter().copied().chain([Stage::Lost, Stage::Churned]);
    order
        .filter_map(|stage| {
            let visits: Vec<&Entry> = entries.iter().filter(|e| e.stage == stage).collect();
            if visits.is_empty() {
                return None;
            }
            let total = visits.iter().map(|e| e.duration(now)).sum();
            Some((stage, total, visits.len() as i32))
        })
        .collect()
}

/// One stage entry as a report reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRow<'a> {
    /// The stage entered.
    pub stage: Stage,
    /// When.
    pub entered_at: Instant,
    /// When the attempt entered the next stage, if it did.
    pub next_at: Option<Instant>,
    /// When the attempt reached COMMIT (left-side entries), if it did.
    pub commit_at: Option<Instant>,
    /// Outcome that immediately followed.
    pub exit_stage: Option<Stage>,
    /// Its reason.
    pub exit_reason: &'a str,
}

impl<'a> From<&'a Entry> for ReportRow<'a> {
    fn from(e: &'a Entry) -> Self {
        Self {
            stage: e.stage,
            entered_at: e.entered_at,
            next_at: e.next_at,
            commit_at: e.commit_at,
            exit_stage: e.exit.as_ref().map(|(s, _)| *s),
            exit_reason: e.exit.as_ref().map_or("", |(_, r)| r.as_str()),
        }
    }
}

/// Metrics of one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StageMetrics {
    /// The stage.
    pub stage: Stage,
    /// Entries.
    pub volume: i64,
    /// Entries that reached the next stage.
    pub converted: i64,
    /// converted / volume (0 when volume is 0); `None` for GROWTH.
    pub conversion_rate: Option<f64>,
    /// (outcome, reason, count), largest first, then by outcome and reason.
    pub drop_offs: Vec<(Stage, String, i64)>,
    /// Median time to the next stage in microseconds (converted entries).
    pub median_to_next: Option<f64>,
    /// 90th percentile of the same.
    pub p90_to_next: Option<f64>,
}

/// A funnel report.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelReport {
    /// AWARENESS to GROWTH.
    pub stages: Vec<StageMetrics>,
    /// CR_1 x CR_2 x CR_3.
    pub left_side_win_rate_product: f64,
    /// AWARENESS entries that reached COMMIT.
    pub won_attempts: i64,
    /// AWARENESS entries.
    pub awareness_attempts: i64,
    /// won / awareness (0 when none).
    pub measured_win_rate: f64,
    /// Median AWARENESS -> COMMIT time of the won attempts (microseconds).
    pub median_cycle_time: Option<f64>,
    /// Its 90th percentile.
    pub p90_cycle_time: Option<f64>,
}

/// The `q` quantile (0..=1) of `values` with linear interpolation between
/// closest ranks (the "type 7" definition, as PostgreSQL's
/// `percentile_cont` and NumPy's default): h = (n - 1) q, and the result is
/// x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h]). Sorts in place.
pub fn quantile(values: &mut [i64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let h = (values.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(values.len() - 1);
    let (a, b) = (values[lo] as f64, values[hi] as f64);
    Some(a + (h - lo as f64) * (b - a))
}

/// Computes the funnel report over the selected stage entries.
pub fn funnel_report<'a>(rows: impl IntoIterator<Item = ReportRow<'a>>) -> FunnelReport {
    struct Acc<'r> {
        volume: i64,
        durations: Vec<i64>,
        drops: std::collections::BTreeMap<(i32, &'r str), i64>,
    }
    let mut acc: Vec<Acc<'a>> = STAGES
        .iter()
        .map(|_| Acc {
            volume: 0,
            durations: Vec::new(),
            drops: Default::default(),
        })
        .collect();
    let mut cycle: Vec<i64> = Vec::new();
    let mut awareness = 0;
    for row in rows {
        let Some(i) = STAGES.iter().position(|s| *s == row.stage) else {
            continue;
        };
        let a = &mut acc[i];
        a.volume += 1;
        if let Some(next_at) = row.next_at {
            a.durations.push(next_at.micros_since(row.entered_at));
        }
        if let Some(outcome) = row.exit_stage {
            *a.drops
                .entry((outcome as i32, row.exit_reason))
                .or_default() += 1;
        }
        if row.stage == Stage::Awareness {
            awareness += 1;
            if let Some(commit_at) = row.commit_at {
                cycle.push(commit_at.micros_since(row.entered_at));
            }
        }
    }
    let stages: Vec<StageMetrics> = STAGES
        .iter()
        .zip(acc.iter_mut())
        .map(|(stage, a)| {
            let converted = a.durations.len() as i64;
            let mut drop_offs: Vec<(Stage, String, i64)> = a
                .drops
                .iter()
                .map(|((outcome, reason), n)| {
                    (
                        Stage::try_from(*outcome).unwrap_or(Stage::Unspecified),
                        (*reason).to_owned(),
                        *n,
                    )
                })
                .collect();
            drop_offs.sort_by(|x, y| {
                y.2.cmp(&x.2)
                    .then((x.0 as i32).cmp(&(y.0 as i32)))
                    .then(x.1.cmp(&y.1))
            });
            StageMetrics {
                stage: *stage,
                volume: a.volume,
                converted,
                conversion_rate: next_stage(*stage).map(|_| ratio(converted, a.volume)),
                drop_offs,
                median_to_next: quantile(&mut a.durations, 0.5),
                p90_to_next: quantile(&mut a.durations, 0.9),
            }
        })
        .collect();
    let product = stages[..3]
        .iter()
        .map(|s| s.conversion_rate.unwrap_or(0.0))
        .product();
    let won = cycle.len() as i64;
    FunnelReport {
        left_side_win_rate_product: product,
        won_attempts: won,
        awareness_attempts: awareness,
        measured_win_rate: ratio(won, awareness),
        median_cycle_time: quantile(&mut cycle, 0.5),
        p90_cycle_time: quantile(&mut cycle, 0.9),
        stages,
    }
}

fn ratio(n: i64, d: i64) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

/// The stages a cohort report follows after the cohort stage.
pub fn cohort_stages(cohort_stage: Stage) -> Vec<Stage> {
    match cohort_stage {
        Stage::Commit => vec![
            Stage::Onboarding,
            Stage::Impact,
            Stage::Growth,
            Stage::Churned,
        ],
        _ => vec![
            Stage::Education,
            Stage::Selection,
            Stage::Commit,
            Stage::Onboarding,
            Stage::Impact,
            Stage::Growth,
            Stage::Lost,
        ],
    }
}

/// Months since entry a cohort row covers at most (five years).
pub const MAX_COHORT_MONTHS: usize = 60;

/// One attempt that entered the cohort stage, and when it first reached
/// each later stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortMember {
    /// When it entered the cohort stage.
    pub entered_at: Instant,
    /// (stage, first time reached) for later stages of the same attempt.
    pub reached: Vec<(Stage, Instant)>,
}

/// One monthly cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct Cohort {
    /// (year, month).
    pub month: (i32, u32),
    /// Members.
    pub size: i64,
    /// Per followed stage: reached counts by month since entry (cumulative).
    pub progress: Vec<(Stage, Vec<i64>)>,
}

/// Calendar month index (year * 12 + month0) of a UTC instant.
pub fn month_index(at: Instant) -> i32 {
    let at = at.to_datetime().unwrap_or_default();
    at.year() * 12 + at.month0() as i32
}

/// Groups members into monthly cohorts from the month of `start` to the
/// month of `end - 1`, with columns up to the month of `as_of`.
pub fn cohorts(
    members: &[CohortMember],
    followed: &[Stage],
    start: Instant,
    end: Instant,
    as_of: Instant,
) -> Vec<Cohort> {
    let first = month_index(start);
    let last = month_index(end.plus_micros(-1));
    let now = month_index(as_of);
    (first..=last)
        .map(|m| {
            let in_month: Vec<&CohortMember> = members
                .iter()
                .filter(|c| month_index(c.entered_at) == m)
                .collect();
            let columns = ((now - m + 1).max(1) as usize).min(MAX_COHORT_MONTHS);
            let progress = followed
                .iter()
                .map(|stage| {
                    let mut counts = vec![0i64; columns];
                    for member in &in_month {
                        if let Some((_, at)) = member.reached.iter().find(|(s, _)| s == stage) {
                            let k = (month_index(*at) - m).max(0) as usize;
                            for c in counts.iter_mut().skip(k) {
                                *c += 1;
                            }
                        }
                    }
                    (*stage, counts)
                })
                .collect();
            Cohort {
                month: (m.div_euclid(12), (m.rem_euclid(12) + 1) as u32),
                size: in_month.len() as i64,
                progress,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    /// The instant `n` days after the epoch.
    fn day(n: i64) -> Instant {
        Instant::EPOCH.plus_days(n)
    }

    fn t(account: u128, stage: Stage, on: i64, reason: &str) -> Transition {
        NewTransition {
            account_id: AccountId(Uuid::from_u128(account)),
            stage,
            occurred_at: day(on),
            reason: reason.into(),
            source: "test".into(),
        }
        .recorded(Instant::EPOCH)
    }

    fn journey(account: u128, steps: &[(Stage, i64, &str)]) -> Vec<Transition> {
        let mut j: Vec<Transition> = steps
            .iter()
            .map(|(s, d, r)| t(account, *s, *d, r))
            .collect();
        sort_journey(&mut j);
        j
    }

    fn days(micros: Option<f64>) -> Option<f64> {
        micros.map(|m| m / DAY as f64)
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    /// Ten accounts, every one entering AWARENESS in the period (times in days):
    ///
    /// | acct | journey                                                        |
    /// |------|----------------------------------------------------------------|
    /// | A    | AW 0, ED 10, SE 20, CO 30, ON 30, IM 60                        |
    /// | B    | AW 0, ED 5, SE 25, CO 45                                       |
    /// | C    | AW 2, ED 12, LOST 20 (no_budget)                               |
    /// | D    | AW 3, LOST 4 (no_fit)                                          |
    /// | E    | AW 5, ED 25, SE 30, LOST 50 (competitor)                       |
    /// | F    | AW 6, ED 16, SE 36, CO 56                                      |
    /// | G    | AW 7, ED 37                                                    |
    /// | H    | AW 8, SE 18 (skips EDUCATION), CO 28                           |
    /// | I    | AW 9, ED 11, SE 21, LOST 31 (competitor)                       |
    /// | J    | AW 10, ED 30, SE 40, CO 80, ON 81, CHURNED 90 (price)          |
    fn ten_accounts() -> Vec<Entry> {
        [
            "AW 0, ED 10, SE 20, CO 30, ON 30, IM 60",
            "AW 0, ED 5, SE 25, CO 45",
            "AW 2, ED 12, LOST 20 no_budget",
            "AW 3, LOST 4 no_fit",
            "AW 5, ED 25, SE 30, LOST 50 competitor",
            "AW 6, ED 16, SE 36, CO 56",
            "AW 7, ED 37",
            "AW 8, SE 18, CO 28",
            "AW 9, ED 11, SE 21, LOST 31 competitor",
            "AW 10, ED 30, SE 40, CO 80, ON 81, CHURNED 90 price",
        ]
        .iter()
        .zip(1..)
        .flat_map(|(steps, account)| entries(&written(account, steps)))
        .collect()
    }

    /// A journey written as in the table above: `STAGE day [reason]`, comma-separated.
    fn written(account: u128, steps: &str) -> Vec<Transition> {
        let steps: Vec<(Stage, i64, &str)> = steps
            .split(", ")
            .map(|step| {
                let mut words = step.split(' ');
                let stage = match words.next() {
                    Some("AW") => Stage::Awareness,
                    Some("ED") => Stage::Education,
                    Some("SE") => Stage::Selection,
                    Some("CO") => Stage::Commit,
                    Some("ON") => Stage::Onboarding,
                    Some("IM") => Stage::Impact,
                    Some("LOST") => Stage::Lost,
                    Some("CHURNED") => Stage::Churned,
                    other => panic!("unknown stage {other:?}"),
                };
                let Some(on) = words.next().and_then(|d| d.parse().ok()) else {
                    panic!("step {step:?} has no day");
                };
                (stage, on, words.next().unwrap_or(""))
            })
            .collect();
        journey(account, &steps)
    }

    #[test]
    fn the_ten_account_funnel_matches_the_hand_worked_figures() {
        let entries = ten_accounts();
        let report = funnel_report(entries.iter().map(ReportRow::from));
        let s = &report.stages;

        // AWARENESS: 10 entries; 8 reached EDUCATION (D was lost, H skipped it).
        // Days to EDUCATION, sorted: 2 5 10 10 10 20 20 30.
        // Median: h = 7 x 0.5 = 3.5 -> x3 + 0.5 (x4 - x3) = 10.
        // p90: h = 7 x 0.9 = 6.3 -> x6 + 0.3 (x7 - x6) = 20 + 3 = 23.
        assert_eq!((s[0].volume, s[0].converted), (10, 8));
        assert!(close(s[0].conversion_rate, 0.8));
        assert!(close(days(s[0].median_to_next), 10.0));
        assert!(close(days(s[0].p90_to_next), 23.0));
        assert_eq!(s[0].drop_offs, vec![(Stage::Lost, "no_fit".to_owned(), 1)]);

        // EDUCATION: 8 entries; 6 reached SELECTION (C lost, G still there).
        // Days, sorted: 5 10 10 10 20 20. Median h = 2.5 -> 10; p90 h = 4.5 -> 20.
        assert_eq!((s[1].volume, s[1].converted), (8, 6));
        assert!(close(s[1].conversion_rate, 0.75));
        assert!(close(days(s[1].median_to_next), 10.0));
        assert!(close(days(s[1].p90_to_next), 20.0));
        assert_eq!(
            s[1].drop_offs,
            vec![(Stage::Lost, "no_budget".to_owned(), 1)]
        );

        // SELECTION: 7 entries (H included); 5 committed (E and I lost to a competitor).
        // Days, sorted: 10 10 20 20 40. Median h = 2 -> 20; p90 h = 3.6 -> 20 + 0.6 x 20 = 32.
        assert_eq!((s[2].volume, s[2].converted), (7, 5));
        assert!(close(s[2].conversion_rate, 5.0 / 7.0));
        assert!(close(days(s[2].median_to_next), 20.0));
        assert!(close(days(s[2].p90_to_next), 32.0));
        assert_eq!(
            s[2].drop_offs,
            vec![(Stage::Lost, "competitor".to_owned(), 2)]
        );

        // COMMIT: 5 entries; A (0 days) and J (1 day) onboarded.
        // Median h = 0.5 -> 0.5 day; p90 h = 0.9 -> 0.9 day.
        assert_eq!((s[3].volume, s[3].converted), (5, 2));
        assert!(close(s[3].conversion_rate, 0.4));
        assert!(close(days(s[3].median_to_next), 0.5));
        assert!(close(days(s[3].p90_to_next), 0.9));

        // ONBOARDING: A reached IMPACT after 30 days, J churned for price.
        assert_eq!((s[4].volume, s[4].converted), (2, 1));
        assert!(close(s[4].conversion_rate, 0.5));
        assert!(close(days(s[4].median_to_next), 30.0));
        assert_eq!(
            s[4].drop_offs,
            vec![(Stage::Churned, "price".to_owned(), 1)]
        );

        // IMPACT: A has not grown yet; GROWTH has no next stage.
        assert_eq!((s[5].volume, s[5].converted), (1, 0));
        assert!(close(s[5].conversion_rate, 0.0));
        assert_eq!(s[5].median_to_next, None);
        assert_eq!((s[6].volume, s[6].conversion_rate), (0, None));

        // Product of the left side: 0.8 x 0.75 x 5/7 = 3/7, beside the measured
        // win rate 5/10 (H skipped EDUCATION, so the product understates it).
        assert!((report.left_side_win_rate_product - 3.0 / 7.0).abs() < 1e-12);
        assert_eq!((report.won_attempts, report.awareness_attempts), (5, 10));
        assert!((report.measured_win_rate - 0.5).abs() < 1e-12);
        // Cycle times AWARENESS -> COMMIT: A 30, B 45, F 50, H 20, J 70;
        // sorted 20 30 45 50 70: median 45, p90 h = 3.6 -> 50 + 0.6 x 20 = 62.
        assert!(close(days(report.median_cycle_time), 45.0));
        assert!(close(days(report.p90_cycle_time), 62.0));
    }

    #[test]
    fn quantiles_interpolate_between_closest_ranks() {
        assert_eq!(quantile(&mut [], 0.5), None);
        assert_eq!(quantile(&mut [7], 0.9), Some(7.0));
        assert_eq!(quantile(&mut [4, 1, 3, 2], 0.5), Some(2.5));
        assert_eq!(
            quantile(&mut [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9),
            Some(9.1)
        );
    }

    #[test]
    fn a_back_dated_import_takes_its_place_in_business_time() {
        use Stage::*;
        let mut j = vec![
            t(1, Selection, 20, ""),
            t(1, Awareness, 0, ""),
            t(1, Education, 10, ""),
        ];
        sort_journey(&mut j);
        let stages: Vec<Stage> = entries(&j).iter().map(|e| e.stage).collect();
        assert_eq!(stages, [Awareness, Education, Selection]);
        let e = entries(&j);
        assert_eq!(e[0].next_at, Some(day(10)));
        assert_eq!(e[0].exited_at, Some(day(10)));
        assert_eq!(e[2].exited_at, None);
    }

    #[test]
    fn a_lost_lead_that_returns_starts_a_second_attempt() {
        use Stage::*;
        let j = journey(
            1,
            &[
                (Awareness, 0, ""),
                (Lost, 5, "timing"),
                (Awareness, 100, ""),
                (Education, 110, ""),
                (Selection, 120, ""),
                (Commit, 130, ""),
            ],
        );
        let e = entries(&j);
        assert_eq!(
            e.iter().map(|e| e.attempt).collect::<Vec<_>>(),
            [1, 1, 2, 2, 2, 2]
        );
        // The first AWARENESS dropped off and never reached COMMIT in its attempt.
        assert_eq!(e[0].exit, Some((Lost, "timing".to_owned())));
        assert_eq!(e[0].commit_at, None);
        assert_eq!(e[2].commit_at, Some(day(130)));
        assert_eq!(e[2].attempt_started_at, day(100));
        let times = time_in_stages(&e, day(200));
        assert_eq!(times[0], (Awareness, 5 * DAY + 10 * DAY, 2));
        assert_eq!(times.last(), Some(&(Lost, 95 * DAY, 1)));
    }

    #[test]
    fn repeated_transitions_to_the_same_stage_collapse_into_one_entry() {
        use Stage::*;
        let j = journey(1, &[(Commit, 0, ""), (Growth, 10, ""), (Growth, 20, "")]);
        assert_eq!(entries(&j).len(), 2);
    }

    #[test]
    fn only_an_exact_repeat_is_refused_so_import_order_does_not_matter() {
        use Stage::*;
        let j = journey(1, &[(Awareness, 0, ""), (Commit, 10, "")]);
        assert!(matches!(
            admit(&j, &t(1, Commit, 10, "")),
            Admission::AlreadyThere(_)
        ));
        assert_eq!(admit(&j, &t(1, Awareness, 5, "")), Admission::Apply);
        assert_eq!(admit(&j, &t(1, Commit, 11, "")), Admission::Apply);

        // Every insertion order of one journey yields the same stage entries.
        let full = journey(
            1,
            &[
                (Awareness, 0, ""),
                (Lost, 2, "timing"),
                (Awareness, 3, ""),
                (Selection, 5, ""),
                (Commit, 6, ""),
                (Churned, 8, "price"),
                (Awareness, 9, ""),
                (Lost, 10, "price"),
            ],
        );
        let expected = entries(&full);
        for rotation in 0..full.len() {
            let mut order = full.clone();
            order.rotate_left(rotation);
            order.reverse();
            let mut built: Vec<Transition> = Vec::new();
            for t in order {
                if admit(&built, &t) == Admission::Apply {
                    built.push(t);
                    sort_journey(&mut built);
                }
            }
            assert_eq!(entries(&built), expected);
        }
    }

    #[test]
    fn cohorts_count_who_reached_each_stage_by_month_since_entry() {
        // 2026-01-01T00:00:00Z and 2026-02-01.
        let jan = Instant::from_micros(1_767_225_600 * 1_000_000);
        let feb = jan.plus_days(31);
        let members = vec![
            CohortMember {
                entered_at: jan,
                reached: vec![
                    (Stage::Onboarding, jan.plus_days(1)),
                    (Stage::Churned, jan.plus_days(40)),
                ],
            },
            CohortMember {
                entered_at: jan.plus_days(5),
                reached: vec![(Stage::Onboarding, jan.plus_days(35))],
            },
            CohortMember {
                entered_at: feb,
                reached: vec![],
            },
        ];
        let c = cohorts(
            &members,
            &cohort_stages(Stage::Commit),
            jan,
            feb.plus_days(28),
            feb.plus_days(10),
        );
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].month, c[0].size), ((2026, 1), 2));
        // January cohort: one onboarded in January, the other in February.
        assert_eq!(c[0].progress[0], (Stage::Onboarding, vec![1, 2]));
        assert_eq!(c[0].progress[3], (Stage::Churned, vec![0, 1]));
        assert_eq!((c[1].month, c[1].size), ((2026, 2), 1));
        assert_eq!(c[1].progress[0], (Stage::Onboarding, vec![0]));
    }
}
