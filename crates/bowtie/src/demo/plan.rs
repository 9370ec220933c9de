//! The demo company as data: every account, its funnel path, subscriptions,
//! plan changes, cancellations, invoices and (for scoring) product signals,
//! generated from a seed and an anchor day with no I/O at all.
//!
//! Each account draws from its own random stream (the seed mixed with the
//! account's number), so account 17 is the same company whether the demo
//! has 200 accounts or 2,000, and two runs with one seed and anchor give the
//! same company to the cent. The anchor is "today" (midnight UTC) when the
//! demo is first seeded and is then kept, so a later restart rebuilds the
//! very same requests and the services' idempotency makes them no-ops.

use bowtie_proto::common::{Segment, Stage};
use bowtie_revenue::domain::{Interval, Minor, Terms};

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// The history the demo covers: 24 months.
pub const HISTORY_DAYS: i64 = 730;

/// A small, fast, well-mixed pseudo-random generator (SplitMix64). The demo
/// needs reproducibility, not cryptographic quality, and owning the
/// generator keeps the figures stable across dependency upgrades.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        // 53 random bits: every value is exactly representable.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniform integer in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = u64::try_from(hi - lo + 1).unwrap_or(u64::MAX);
        lo + i64::try_from(self.next_u64() % span).unwrap_or(0)
    }

    /// One element of a slice (the default value when it is empty).
    pub fn pick<T: Copy + Default>(&mut self, items: &[T]) -> T {
        let i = usize::try_from(self.next_u64() % items.len().max(1) as u64).unwrap_or(0);
        items.get(i).copied().unwrap_or_default()
    }
}

/// The sales reps; the demo's deals are spread over them.
pub const OWNERS: [&str; 6] = [
    "maya.chen@bowtie-demo.example",
    "diego.alvarez@bowtie-demo.example",
    "priya.nair@bowtie-demo.example",
    "tom.becker@bowtie-demo.example",
    "aisha.okafor@bowtie-demo.example",
    "sam.riley@bowtie-demo.example",
];

/// The rep whose deals churn more than twice as often: the weak closer the
/// sales-quality view (retention by owner) should reveal.
pub const WEAK_CLOSER: &str = "tom.becker@bowtie-demo.example";

const ENTERPRISE_CSMS: [&str; 2] = [
    "lena.fischer@bowtie-demo.example",
    "omar.haddad@bowtie-demo.example",
];
const POOLED_CSM: &str = "cs-pool@bowtie-demo.example";

const INDUSTRIES: [&str; 10] = [
    "Logistics",
    "Healthcare",
    "Fintech",
    "Retail",
    "Manufacturing",
    "Education",
    "Media",
    "Real Estate",
    "Travel",
    "Energy",
];

const NAME_FIRST: [&str; 40] = [
    "Acme",
    "Northwind",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Cyberdyne",
    "Tyrell",
    "Wonka",
    "Aperture",
    "Massive",
    "Gringotts",
    "Oceanic",
    "Monarch",
    "Sterling",
    "Pied Piper",
    "Blue Harbor",
    "Red Rock",
    "Silver Pine",
    "Bright Path",
    "Golden Gate",
    "Iron Peak",
    "Clear Lake",
    "Summit",
    "Evergreen",
    "Lighthouse",
    "Falcon",
    "Maple",
    "Quantum",
    "Nimbus",
    "Atlas",
    "Orion",
    "Copper",
    "Harbor",
    "Meridian",
    "Cobalt",
];
const NAME_SECOND: [&str; 30] = [
    "Logistics",
    "Health",
    "Analytics",
    "Foods",
    "Robotics",
    "Labs",
    "Systems",
    "Media",
    "Capital",
    "Energy",
    "Freight",
    "Clinics",
    "Software",
    "Retail",
    "Studios",
    "Motors",
    "Networks",
    "Partners",
    "Outfitters",
    "Bank",
    "Learning",
    "Travel",
    "Homes",
    "Security",
    "Pharma",
    "Apparel",
    "Cloud",
    "Metrics",
    "Supply",
    "Ventures",
];
const NAME_THIRD: [&str; 4] = ["", " Group", " International", " Holdings"];

/// Churn reason codes of the default taxonomy, voluntary ones.
const VOLUNTARY_REASONS: [&str; 6] = [
    "price",
    "product_fit",
    "competitor",
    "poor_service",
    "champion_left",
    "budget",
];

/// The size and identity of the demo company.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoOptions {
    /// The random seed; the same seed and anchor give the same company.
    pub seed: u64,
    /// How many accounts (leads and customers) to generate.
    pub accounts: usize,
    /// "Today" of the demo: Unix seconds of a midnight UTC; the history ends here.
    pub anchor: i64,
}

impl DemoOptions {
    /// The default demo: seed 42, 2,000 accounts, anchored at `anchor`.
    pub fn new(anchor: i64) -> Self {
        Self {
            seed: 42,
            accounts: 2000,
            anchor,
        }
    }

    /// The anchor as `YYYYMMDD`, part of every id and idempotency key.
    pub fn anchor_tag(&self) -> String {
        chrono::DateTime::from_timestamp(self.anchor, 0)
            .map(|t| t.format("%Y%m%d").to_string())
            .unwrap_or_else(|| self.anchor.to_string())
    }

    /// The prefix of every external id and idempotency key of this demo.
    pub fn key_prefix(&self) -> String {
        format!("demo-{}-{}", self.seed, self.anchor_tag())
    }
}

/// The anchor for a demo seeded at Unix time `now`: that day's midnight UTC.
pub fn anchor_for(now: i64) -> i64 {
    now.div_euclid(DAY) * DAY
}

/// How a subscription is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// Monthly.
    Monthly,
    /// Yearly.
    Annual,
}

impl Billing {
    /// The revenue domain's interval.
    pub fn interval(self) -> Interval {
        match self {
            Billing::Monthly => Interval::Month,
            Billing::Annual => Interval::Year,
        }
    }
}

/// A transition the demo records in the funnel (the stages money decides,
/// COMMIT to CHURNED, follow from revenue on their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTransition {
    /// The stage entered.
    pub stage: Stage,
    /// When (Unix seconds).
    pub at: i64,
    /// Reason code for LOST.
    pub reason: &'static str,
}

/// How a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCancellation {
    /// When MRR stops (Unix seconds).
    pub at: i64,
    /// Voluntary (true) or involuntary.
    pub voluntary: bool,
    /// Reason code of the churn taxonomy.
    pub reason: &'static str,
}

/// One subscription with its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSubscription {
    /// Plan name.
    pub plan: &'static str,
    /// Billing interval.
    pub billing: Billing,
    /// Seats at the start.
    pub seats: i64,
    /// Price of a seat per billing interval, cents.
    pub unit_price: i64,
    /// Discount, basis points.
    pub discount_bp: i64,
    /// Start (Unix seconds).
    pub start: i64,
    /// End of the current term (annual plans).
    pub term_end: Option<i64>,
    /// Seat changes (effective time, new seat count), in time order.
    pub changes: Vec<(i64, i64)>,
    /// The cancellation, if it churned.
    pub cancellation: Option<PlannedCancellation>,
}

impl PlannedSubscription {
    /// The revenue domain's terms with `seats`.
    pub fn terms(&self, seats: i64) -> Terms {
        Terms {
            plan: self.plan.to_owned(),
            quantity: seats,
            unit_price: Minor(self.unit_price),
            discount_bp: self.discount_bp,
        }
    }

    /// Seats in force at `t`, or `None` when not active (before the start
    /// or from the cancellation on).
    pub fn seats_at(&self, t: i64) -> Option<i64> {
        if t < self.start || self.cancellation.as_ref().is_some_and(|c| t >= c.at) {
            return None;
        }
        Some(
            self.changes
                .iter()
                .take_while(|(at, _)| *at <= t)
                .last()
                .map_or(self.seats, |(_, seats)| *seats),
        )
    }

    /// Normalised MRR in cents at `t` (the revenue service's rounding).
    pub fn mrr_at(&self, t: i64) -> i64 {
        self.seats_at(t).map_or(0, |seats| {
            self.terms(seats).mrr(self.billing.interval()).get()
        })
    }
}

/// An invoice and when it was paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedInvoice {
    /// Index into the account's subscriptions.
    pub subscription: usize,
    /// Amount due, cents.
    pub amount: i64,
    /// Due date (Unix seconds).
    pub due: i64,
    /// Payment date; `None` while unpaid.
    pub paid: Option<i64>,
}

/// One demo account and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAccount {
    /// Position in the demo, from 0.
    pub index: usize,
    /// The account's id in the "demo" source.
    pub external_id: String,
    /// Company name.
    pub name: String,
    /// Segment.
    pub segment: Segment,
    /// Industry.
    pub industry: &'static str,
    /// The rep who owns it.
    pub owner: &'static str,
    /// Its CSM ("" for tech-touch SMB accounts).
    pub csm: &'static str,
    /// Flagged strategic.
    pub strategic: bool,
    /// Funnel transitions the demo records.
    pub transitions: Vec<PlannedTransition>,
    /// Subscriptions in time order (a reactivation is a second one).
    pub subscriptions: Vec<PlannedSubscription>,
    /// Invoices of the last months.
    pub invoices: Vec<PlannedInvoice>,
    /// A paying customer on its way out: usage falling, a downgrade, late
    /// payments (scoring should flag it).
    pub declining: bool,
    /// Product, support, survey and stakeholder signals for scoring.
    pub signals: Vec<PlannedSignal>,
}

impl PlannedAccount {
    /// MRR in cents at `t`.
    pub fn mrr_at(&self, t: i64) -> i64 {
        self.subscriptions.iter().map(|s| s.mrr_at(t)).sum()
    }

    /// Whether it ever paid.
    pub fn is_customer(&self) -> bool {
        !self.subscriptions.is_empty()
    }
}

/// What a signal says happened (scoring's signal types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// Logins; value = how many.
    Login,
    /// Active users counted; value = how many.
    ActiveUsers,
    /// Key feature uses; value = how many.
    FeatureUsed,
    /// Support tickets opened.
    TicketOpened,
    /// Support tickets resolved.
    TicketResolved,
    /// A complaint filed.
    Complaint,
    /// An NPS answer; value 0..=10.
    Nps,
    /// A champion or decision maker left.
    StakeholderLeft,
    /// First value reached.
    FirstValue,
}

/// One signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSignal {
    /// What happened.
    pub kind: SignalKind,
    /// How much.
    pub value: i64,
    /// When (Unix seconds).
    pub at: i64,
}

/// Headline figures of a demo company, computed from the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Accounts.
    pub accounts: usize,
    /// Accounts that ever paid.
    pub customers: usize,
    /// Accounts paying at the anchor.
    pub paying: usize,
    /// Cancellations.
    pub churned: usize,
    /// Accounts that came back after churning.
    pub reactivated: usize,
    /// Leads lost on the left side.
    pub lost: usize,
    /// Paying accounts flagged as declining.
    pub declining: usize,
    /// MRR at the anchor, cents.
    pub mrr: i64,
    /// Funnel transitions the demo records.
    pub transitions: usize,
    /// Subscription changes (upgrades and downgrades).
    pub changes: usize,
    /// Invoices.
    pub invoices: usize,
    /// Invoices paid late or unpaid past due.
    pub late_invoices: usize,
    /// Signals for scoring.
    pub signals: usize,
}

/// The whole demo company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Company {
    /// Its options.
    pub options: DemoOptions,
    /// Every account.
    pub accounts: Vec<PlannedAccount>,
    /// Sales and marketing spend per month ("YYYY-MM", cents), the 24 months
    /// before the anchor's month.
    pub spend: Vec<(String, i64)>,
}

impl Company {
    /// Generates the company for `options`.
    pub fn generate(options: DemoOptions) -> Self {
        let accounts = (0..options.accounts)
            .map(|i| plan_account(&options, i))
            .collect();
        let mut spend = Vec::new();
        let mut rng = Rng::new(options.seed ^ 0x5EED_5BE4_D000_0000);
        for back in (1..=24).rev() {
            let month = month_before(options.anchor, back);
            // Spend grows with the company: 60k to 140k a month.
            let base = 6_000_000 + (24 - back) * 330_000;
            spend.push((month, base + rng.range(-400_000, 400_000)));
        }
        Self {
            options,
            accounts,
            spend,
        }
    }

    /// The headline figures.
    pub fn summary(&self) -> Summary {
        let t = self.options.anchor;
        let mut s = Summary {
            accounts: self.accounts.len(),
            ..Summary::default()
        };
        for a in &self.accounts {
            s.transitions += a.transitions.len();
            s.invoices += a.invoices.len();
            s.signals += a.signals.len();
            s.late_invoices += a
                .invoices
                .iter()
                .filter(|i| i.paid.is_none_or(|p| p > i.due))
                .count();
            if a.transitions.iter().any(|t| t.stage == Stage::Lost) {
                s.lost += 1;
            }
            if !a.is_customer() {
                continue;
            }
            s.customers += 1;
            s.churned += a
                .subscriptions
                .iter()
                .filter(|s| s.cancellation.is_some())
                .count();
            s.changes += a
                .subscriptions
                .iter()
                .map(|s| s.changes.len())
                .sum::<usize>();
            if a.subscriptions.len() > 1 {
                s.reactivated += 1;
            }
            let mrr = a.mrr_at(t);
            if mrr > 0 {
                s.paying += 1;
                s.mrr += mrr;
                if a.declining {
                    s.declining += 1;
                }
            }
        }
        s
    }
}

/// "YYYY-MM" of the month `back` months before the anchor's month.
pub fn month_before(anchor: i64, back: i64) -> String {
    use chrono::{Datelike, Months};
    let Some(date) = chrono::DateTime::from_timestamp(anchor, 0) else {
        return String::new();
    };
    let date = date.date_naive().with_day(1).unwrap_or(date.date_naive());
    let date = date
        .checked_sub_months(Months::new(u32::try_from(back).unwrap_or(0)))
        .unwrap_or(date);
    date.format("%Y-%m").to_string()
}

fn name(index: usize) -> String {
    let first = NAME_FIRST[index % NAME_FIRST.len()];
    let second = NAME_SECOND[(index / NAME_FIRST.len() + index * 7) % NAME_SECOND.len()];
    let third = NAME_THIRD[(index / (NAME_FIRST.len() * NAME_SECOND.len())) % NAME_THIRD.len()];
    format!("{first} {second}{third}")
}

/// Per-segment shape of the business.
struct SegmentModel {
    education: f64,
    selection: f64,
    win: f64,
    sales_days: (i64, i64),
    plan: &'static str,
    billing: Billing,
    seats: (i64, i64),
    seat_price_month: i64,
    discount_bp: (i64, i64),
    monthly_churn: f64,
    expansion: f64,
    contraction: f64,
    onboarding_days: (i64, i64),
}

fn model(segment: Segment) -> SegmentModel {
    match segment {
        Segment::Enterprise => SegmentModel {
            education: 0.70,
            selection: 0.60,
            win: 0.40,
            sales_days: (45, 120),
            plan: "enterprise",
            billing: Billing::Annual,
            seats: (100, 400),
            seat_price_month: 9_000,
            discount_bp: (1000, 2000),
            monthly_churn: 0.006,
            expansion: 0.06,
            contraction: 0.012,
            onboarding_days: (30, 75),
        },
        Segment::MidMarket => SegmentModel {
            education: 0.65,
            selection: 0.55,
            win: 0.45,
            sales_days: (20, 60),
            plan: "growth",
            billing: Billing::Annual,
            seats: (30, 120),
            seat_price_month: 6_500,
            discount_bp: (0, 1000),
            monthly_churn: 0.011,
            expansion: 0.05,
            contraction: 0.012,
            onboarding_days: (14, 45),
        },
        _ => SegmentModel {
            education: 0.60,
            selection: 0.50,
            win: 0.50,
            sales_days: (7, 30),
            plan: "starter",
            billing: Billing::Monthly,
            seats: (3, 30),
            seat_price_month: 4_500,
            discount_bp: (0, 0),
            monthly_churn: 0.024,
            expansion: 0.04,
            contraction: 0.01,
            onboarding_days: (7, 30),
        },
    }
}

/// Latest business time the demo writes: an hour before the anchor.
fn horizon(options: &DemoOptions) -> i64 {
    options.anchor - 3600
}

/// One left-side step: the stage, its conversion, the days it takes and
/// the reasons a lead is lost before it.
type LeftStep = (Stage, f64, (i64, i64), &'static [&'static str]);

fn plan_account(options: &DemoOptions, index: usize) -> PlannedAccount {
    let mut rng = Rng::new(options.seed.wrapping_mul(0x100_0000_01B3) ^ (index as u64 + 1));
    // Warm up so neighbouring seeds diverge at once.
    rng.next_u64();
    let segment = match rng.unit() {
        u if u < 0.62 => Segment::Smb,
        u if u < 0.90 => Segment::MidMarket,
        _ => Segment::Enterprise,
    };
    let m = model(segment);
    let owner = rng.pick(&OWNERS);
    let csm = match segment {
        Segment::Enterprise => rng.pick(&ENTERPRISE_CSMS),
        Segment::MidMarket => POOLED_CSM,
        _ => "",
    };
    let strategic = segment == Segment::Enterprise && rng.chance(0.2);
    let industry = rng.pick(&INDUSTRIES);
    let mut account = PlannedAccount {
        index,
        external_id: format!("{}-{index:05}", options.key_prefix()),
        name: name(index),
        segment,
        industry,
        owner,
        csm,
        strategic,
        transitions: Vec::new(),
        subscriptions: Vec::new(),
        invoices: Vec::new(),
        signals: Vec::new(),
        declining: false,
    };
    let end = horizon(options);
    // Lead creation leans towards recent months: a growing company.
    let first = options.anchor - HISTORY_DAYS * DAY;
    let offset = (rng.unit().powf(0.8) * (HISTORY_DAYS as f64) * DAY as f64) as i64;
    let mut t = first + offset;
    account.transitions.push(PlannedTransition {
        stage: Stage::Awareness,
        at: t,
        reason: "",
    });
    // The left side: each step either converts, is lost with a reason, or
    // is still open at the anchor.
    let steps: [LeftStep; 3] = [
        (
            Stage::Education,
            m.education,
            (2, 21),
            &["no_response", "not_a_fit", "no_response", "duplicate"],
        ),
        (
            Stage::Selection,
            m.selection,
            (5, 30),
            &["no_budget", "bad_timing", "not_a_fit", "no_response"],
        ),
        (
            Stage::Commit,
            m.win,
            m.sales_days,
            &[
                "competitor",
                "price",
                "no_decision",
                "no_budget",
                "competitor",
            ],
        ),
    ];
    let mut won = false;
    for (stage, p, (lo, hi), reasons) in steps {
        let next = t + rng.range(lo, hi) * DAY + rng.range(0, 8 * 3600);
        if next > end {
            return account;
        }
        if !rng.chance(p) {
            account.transitions.push(PlannedTransition {
                stage: Stage::Lost,
                at: next,
                reason: rng.pick(reasons),
            });
            return account;
        }
        t = next;
        if stage == Stage::Commit {
            won = true;
        } else {
            account.transitions.push(PlannedTransition {
                stage,
                at: t,
                reason: "",
            });
        }
    }
    if won {
        plan_customer(options, &m, &mut rng, &mut account, t);
    }
    account
}

/// The right side: the first subscription at `commit`, then month by month
/// first value, upgrades, downgrades, churn and perhaps a comeback.
fn plan_customer(
    options: &DemoOptions,
    m: &SegmentModel,
    rng: &mut Rng,
    account: &mut PlannedAccount,
    commit: i64,
) {
    let end = horizon(options);
    let weak = account.owner == WEAK_CLOSER;
    let seats = rng.range(m.seats.0, m.seats.1);
    let discount = rng.range(m.discount_bp.0 / 100, m.discount_bp.1 / 100) * 100;
    let mut sub = new_subscription(m, seats, discount, commit);
    // First value (IMPACT): most customers get there; the rest stall in
    // onboarding and churn far more often.
    let reached_value = rng.chance(0.88);
    let impact_at = commit + rng.range(m.onboarding_days.0, m.onboarding_days.1) * DAY;
    if reached_value && impact_at <= end {
        account.transitions.push(PlannedTransition {
            stage: Stage::Impact,
            at: impact_at,
            reason: "",
        });
    }
    let mut churn = m.monthly_churn * if weak { 2.4 } else { 1.0 };
    if !reached_value {
        churn *= 3.0;
    }
    let mut seats = seats;
    let mut month = commit + 30 * DAY;
    while month <= end {
        let active_value = reached_value && month >= impact_at;
        if rng.chance(churn) {
            let voluntary = !rng.chance(0.22);
            let reason = if voluntary {
                rng.pick(&VOLUNTARY_REASONS)
            } else if rng.chance(0.65) {
                "payment_failure"
            } else {
                "business_closed"
            };
            sub.cancellation = Some(PlannedCancellation {
                at: month + rng.range(0, 20) * DAY,
                voluntary,
                reason,
            });
            if sub.cancellation.as_ref().is_some_and(|c| c.at > end) {
                sub.cancellation = None;
            }
            if sub.cancellation.is_some() {
                break;
            }
        } else if active_value && rng.chance(m.expansion) {
            seats = (seats as f64 * (1.1 + rng.unit() * 0.4)).ceil() as i64;
            sub.changes.push((month, seats));
        } else if rng.chance(m.contraction) {
            seats = ((seats as f64 * (0.6 + rng.unit() * 0.3)).floor() as i64).max(1);
            sub.changes.push((month, seats));
        }
        month += 30 * DAY;
    }
    set_term_end(&mut sub, end);
    let cancelled = sub.cancellation.clone();
    account.subscriptions.push(sub);
    match cancelled {
        Some(c) if rng.chance(0.35) => {
            // A comeback: a smaller subscription a few months later.
            let back = c.at + rng.range(45, 180) * DAY;
            if back <= end {
                let seats = (seats / 2).max(m.seats.0.min(seats).max(1));
                let mut again = new_subscription(m, seats, 0, back);
                set_term_end(&mut again, end);
                account.subscriptions.push(again);
            }
        }
        Some(_) => {}
        None => {
            // A few healthy-looking customers are on their way out.
            if rng.chance(0.12) {
                account.declining = true;
                let at = end - rng.range(10, 50) * DAY;
                if let Some(sub) = account.subscriptions.last_mut()
                    && at > sub.start
                    && rng.chance(0.6)
                {
                    let now = sub.seats_at(at).unwrap_or(sub.seats);
                    let fewer = ((now as f64) * 0.7).floor() as i64;
                    if fewer >= 1 && fewer < now && sub.changes.last().is_none_or(|(t, _)| *t < at)
                    {
                        sub.changes.push((at, fewer));
                        set_term_end(sub, end);
                    }
                }
            }
        }
    }
    plan_invoices(options, rng, account);
    // Signals draw from their own stream, so adding them changed no
    // account, subscription or invoice.
    let mut signal_rng = Rng::new(rng.next_u64() ^ 0x5167_4A15_0000_0001);
    plan_signals(options, &mut signal_rng, account);
}

fn new_subscription(
    m: &SegmentModel,
    seats: i64,
    discount_bp: i64,
    start: i64,
) -> PlannedSubscription {
    let unit_price = match m.billing {
        Billing::Monthly => m.seat_price_month,
        Billing::Annual => m.seat_price_month * 12,
    };
    PlannedSubscription {
        plan: m.plan,
        billing: m.billing,
        seats,
        unit_price,
        discount_bp,
        start,
        term_end: None,
        changes: Vec::new(),
        cancellation: None,
    }
}

/// Annual plans renew on their anniversary: the current term ends on the
/// first anniversary after the cancellation, or after the anchor when the
/// subscription is still running, so the renewal book has upcoming dates.
fn set_term_end(sub: &mut PlannedSubscription, end: i64) {
    if sub.billing != Billing::Annual {
        return;
    }
    let until = sub.cancellation.as_ref().map_or(end, |c| c.at);
    let mut term_end = sub.start + 365 * DAY;
    while term_end <= until {
        term_end += 365 * DAY;
    }
    sub.term_end = Some(term_end);
}

/// Invoices of the last three months (monthly plans) or the last annual
/// invoice; declining accounts pay late or not at all.
fn plan_invoices(options: &DemoOptions, rng: &mut Rng, account: &mut PlannedAccount) {
    let end = horizon(options);
    let window = end - 92 * DAY;
    let late_chance = if account.declining { 0.55 } else { 0.05 };
    for (i, sub) in account.subscriptions.iter().enumerate() {
        let step = match sub.billing {
            Billing::Monthly => 30 * DAY,
            Billing::Annual => 365 * DAY,
        };
        let mut due = sub.start;
        while due <= end {
            let in_window = match sub.billing {
                Billing::Monthly => due >= window,
                Billing::Annual => due + step > end,
            };
            let amount = sub
                .seats_at(due)
                .map(|seats| {
                    let monthly = sub.terms(seats).mrr(sub.billing.interval()).get();
                    match sub.billing {
                        Billing::Monthly => monthly,
                        Billing::Annual => monthly * 12,
                    }
                })
                .unwrap_or(0);
            if in_window && amount > 0 {
                // Late payers pay within the past-due policy's 30 days
                // (docs/design.md section 2), those still late today pay
                // today, so the demo's churns are the planned cancellations.
                let paid = if rng.chance(late_chance) {
                    Some((due + rng.range(10, 28) * DAY).min(end))
                } else {
                    Some(due - rng.range(0, 3) * DAY)
                };
                account.invoices.push(PlannedInvoice {
                    subscription: i,
                    amount,
                    due,
                    paid,
                });
            }
            due += step;
        }
    }
}

/// Usage, support, survey and stakeholder signals: twelve weeks of them
/// for every paying customer and the sixty days before each cancellation of
/// the last year (history the churn model learns from). Healthy customers
/// log in steadily with most seats active and answer surveys well;
/// declining ones see usage collapse in the last 30 days, tickets go quiet
/// after a complaint, poor NPS answers and sometimes a champion leaving.
fn plan_signals(options: &DemoOptions, rng: &mut Rng, account: &mut PlannedAccount) {
    let end = horizon(options);
    let mut signals = Vec::new();
    if let Some(impact) = account
        .transitions
        .iter()
        .find(|t| t.stage == Stage::Impact)
    {
        signals.push(PlannedSignal {
            kind: SignalKind::FirstValue,
            value: 0,
            at: impact.at,
        });
    }
    let reached_value = !signals.is_empty();
    for sub in &account.subscriptions {
        let (until, declining) = match &sub.cancellation {
            Some(c) if c.at > end - 365 * DAY => (c.at - DAY, true),
            Some(_) => continue,
            None if sub.seats_at(end).is_some() => (end, account.declining),
            None => continue,
        };
        let weeks: i64 = if sub.cancellation.is_some() { 8 } else { 12 };
        let seats = sub.seats_at(until).unwrap_or(sub.seats).max(1);
        // Logins a week per seat: healthy 0.8 to 2, stalled onboarding less.
        let per_seat = if reached_value {
            0.8 + rng.unit() * 1.2
        } else {
            0.3 + rng.unit() * 0.4
        };
        let complaint_week = declining.then(|| rng.range(weeks - 8, weeks - 6));
        for w in 0..weeks {
            let at = until - (weeks - w) * 7 * DAY + rng.range(0, 6 * DAY);
            if at <= sub.start || at > end {
                continue;
            }
            let recent = w >= weeks - 4;
            let fade = if declining && recent {
                0.2 + rng.unit() * 0.15
            } else {
                0.85 + rng.unit() * 0.3
            };
            let logins = ((seats as f64) * per_seat * fade).round() as i64;
            signals.push(PlannedSignal {
                kind: SignalKind::Login,
                value: logins.clamp(1, 1_000_000),
                at,
            });
            signals.push(PlannedSignal {
                kind: SignalKind::FeatureUsed,
                value: (logins * 3 / 10).clamp(1, 1_000_000),
                at: at + 3600,
            });
            if w % 2 == 1 {
                let share = if declining && recent {
                    0.15 + rng.unit() * 0.2
                } else {
                    0.55 + rng.unit() * 0.4
                };
                signals.push(PlannedSignal {
                    kind: SignalKind::ActiveUsers,
                    value: ((seats as f64) * share).round().max(1.0) as i64,
                    at: at + 7200,
                });
            }
            // Support: a steady trickle of tickets, which goes quiet for a
            // declining customer once it has complained.
            let quiet = complaint_week.is_some_and(|c| w > c);
            if !quiet && rng.chance(0.3) {
                signals.push(PlannedSignal {
                    kind: SignalKind::TicketOpened,
                    value: 1,
                    at: at + 10_800,
                });
                signals.push(PlannedSignal {
                    kind: SignalKind::TicketResolved,
                    value: 1,
                    at: at + 10_800 + rng.range(1, 48) * 3600,
                });
            }
            if complaint_week == Some(w) {
                signals.push(PlannedSignal {
                    kind: SignalKind::Complaint,
                    value: 1,
                    at: at + 14_400,
                });
            }
        }
        // One survey answer in the period for most customers.
        if rng.chance(if declining { 0.9 } else { 0.7 }) {
            let nps = if declining {
                rng.range(1, 5)
            } else {
                rng.range(7, 10)
            };
            let at = until - rng.range(5, 60) * DAY;
            if at > sub.start {
                signals.push(PlannedSignal {
                    kind: SignalKind::Nps,
                    value: nps,
                    at,
                });
            }
        }
        if rng.chance(if declining { 0.4 } else { 0.03 }) {
            let at = until - rng.range(10, 50) * DAY;
            if at > sub.start {
                signals.push(PlannedSignal {
                    kind: SignalKind::StakeholderLeft,
                    value: 1,
                    at,
                });
            }
        }
    }
    // Offsets within a week may pass the horizon; nothing is dated after it.
    signals.retain(|s| s.at <= end);
    signals.sort_by_key(|s| s.at);
    account.signals = signals;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-06-01T00:00:00Z.
    const ANCHOR: i64 = 1_780_272_000;

    fn options(accounts: usize) -> DemoOptions {
        DemoOptions {
            seed: 42,
            accounts,
            anchor: ANCHOR,
        }
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // The reference SplitMix64 outputs for seed 0 (Vigna's splitmix64.c).
        let mut rng = Rng::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn the_same_seed_and_anchor_give_the_same_company() {
        assert_eq!(
            Company::generate(options(300)),
            Company::generate(options(300))
        );
    }

    #[test]
    fn an_account_does_not_depend_on_the_demo_size() {
        let small = Company::generate(options(50));
        let large = Company::generate(options(500));
        assert_eq!(small.accounts[..], large.accounts[..50]);
    }

    #[test]
    fn another_seed_gives_another_company() {
        let a = Company::generate(options(200));
        let b = Company::generate(DemoOptions {
            seed: 7,
            ..options(200)
        });
        assert_ne!(a.summary(), b.summary());
    }

    #[test]
    fn the_anchor_is_midnight_utc_of_the_day() {
        // 2026-06-01T13:45:10Z -> 2026-06-01T00:00:00Z.
        assert_eq!(anchor_for(ANCHOR + 13 * 3600 + 45 * 60 + 10), ANCHOR);
        assert_eq!(options(1).anchor_tag(), "20260601");
        assert_eq!(options(1).key_prefix(), "demo-42-20260601");
    }

    #[test]
    fn months_before_the_anchor_cross_year_boundaries() {
        assert_eq!(month_before(ANCHOR, 1), "2026-05");
        assert_eq!(month_before(ANCHOR, 6), "2025-12");
        assert_eq!(month_before(ANCHOR, 24), "2024-06");
    }

    #[test]
    fn seats_follow_changes_and_stop_at_the_cancellation() {
        let sub = PlannedSubscription {
            plan: "growth",
            billing: Billing::Annual,
            seats: 10,
            unit_price: 78_000,
            discount_bp: 1000,
            start: 100,
            term_end: None,
            changes: vec![(200, 15), (300, 12)],
            cancellation: Some(PlannedCancellation {
                at: 400,
                voluntary: true,
                reason: "price",
            }),
        };
        assert_eq!(sub.seats_at(99), None);
        assert_eq!(sub.seats_at(100), Some(10));
        assert_eq!(sub.seats_at(250), Some(15));
        assert_eq!(sub.seats_at(399), Some(12));
        assert_eq!(sub.seats_at(400), None);
        // 12 seats x 780.00 a year x 0.9 / 12 = 702.00 a month.
        assert_eq!(sub.mrr_at(399), 70_200);
    }

    #[test]
    fn the_default_company_has_the_advertised_shape() {
        let company = Company::generate(options(2000));
        let s = company.summary();
        assert_eq!(s.accounts, 2000);
        // Most leads are lost on the left side; a few hundred customers.
        assert!(s.lost > 1000, "{s:?}");
        assert!((200..600).contains(&s.customers), "{s:?}");
        assert!(
            s.churned > 20 && s.reactivated > 3 && s.declining > 10,
            "{s:?}"
        );
        assert!(s.late_invoices > 0, "{s:?}");
        // Twelve weeks of usage for ~200 paying customers: thousands of signals.
        assert!((3_000..30_000).contains(&s.signals), "{s:?}");
        // MRR in the high six figures (USD 500k to 1M).
        assert!((50_000_000..100_000_000).contains(&s.mrr), "{s:?}");
        for segment in [Segment::Smb, Segment::MidMarket, Segment::Enterprise] {
            assert!(company.accounts.iter().any(|a| a.segment == segment));
        }
        // Every time the demo writes is in the 24 months before the anchor.
        let first = ANCHOR - HISTORY_DAYS * DAY;
        for a in &company.accounts {
            for t in &a.transitions {
                assert!(t.at >= first && t.at < ANCHOR, "{a:?}");
            }
            for s in &a.signals {
                assert!(s.at >= first && s.at < ANCHOR, "{s:?}");
                assert!((0..=1_000_000).contains(&s.value), "{s:?}");
            }
            for s in &a.subscriptions {
                assert!(s.start < ANCHOR);
                assert!(s.changes.iter().all(|(t, _)| *t > s.start && *t < ANCHOR));
                assert!(s.cancellation.as_ref().is_none_or(|c| c.at < ANCHOR));
            }
        }
    }
}
