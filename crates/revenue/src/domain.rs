//! The revenue rules, free of I/O: currencies and FX conversion, subscription
//! histories and their normalised MRR, the MRR movements of an account
//! (docs/design.md section 2), the monthly roll-ups that movements add up to, the
//! waterfall built from them and retention.
//!
//! Everything is integer arithmetic on minor units. Two roundings exist and
//! both are documented where they happen: normalising a price to a month
//! (half up, once per subscription and terms) and converting a movement into
//! the reporting currency (half away from zero, once per movement). Account
//! MRR in the reporting currency is the running sum of its movements, so the
//! waterfall adds up to the minor unit by construction.

use std::collections::{BTreeMap, BTreeSet};

pub use bowtie_proto::common::Segment;
use bowtie_runtime::error::Error;
use chrono::{Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest plan name.
pub const MAX_PLAN: usize = 200;
/// Largest quantity.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// Largest quantity x unit price per billing interval, in minor units.
pub const MAX_INTERVAL_AMOUNT: i64 = 10_000_000_000_000;
/// 100% in basis points.
pub const FULL_BP: i64 = 10_000;

/// Minor-unit exponents of the accepted ISO-4217 currencies.
const CURRENCIES: &[(&str, u32)] = &[
    ("AUD", 2),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("INR", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("USD", 2),
    ("ZAR", 2),
];

/// The number of minor-unit digits of `code`, `None` for an unknown currency.
pub fn minor_exponent(code: &str) -> Option<u32> {
    CURRENCIES.iter().find(|(c, _)| *c == code).map(|(_, e)| *e)
}

/// Divides rounding half away from zero.
fn div_round(num: i128, den: i128) -> i128 {
    let q = num / den;
    let r = num % den;
    if 2 * r.abs() >= den.abs() {
        q + num.signum() * den.signum()
    } else {
        q
    }
}

/// An FX rate in billionths: 1 major unit of a currency is worth
/// `nanos / 1e9` major units of the reporting currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate(pub i64);

impl Rate {
    /// One to one.
    pub const ONE: Rate = Rate(1_000_000_000);

    /// Parses a positive decimal with at most 9 fractional digits, e.g. "1.0825".
    pub fn parse(text: &str) -> Option<Rate> {
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty()
            || frac.len() > 9
            || !whole.chars().all(|c| c.is_ascii_digit())
            || !frac.chars().all(|c| c.is_ascii_digit())
            || whole.len() > 9
        {
            return None;
        }
        let whole: i64 = whole.parse().ok()?;
        let padded = format!("{frac:0<9}");
        let frac: i64 = padded.parse().ok()?;
        let nanos = whole * 1_000_000_000 + frac;
        (nanos > 0).then_some(Rate(nanos))
    }

    /// The rate as a decimal string, without trailing zeros.
    pub fn format(self) -> String {
        let whole = self.0 / 1_000_000_000;
        let frac = format!("{:09}", self.0 % 1_000_000_000);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{frac}")
        }
    }
}

/// FX rates into the reporting currency over time.
#[derive(Debug, Clone, Default)]
pub struct FxTable {
    reporting: String,
    rates: BTreeMap<String, BTreeMap<i64, Rate>>,
}

impl FxTable {
    /// An empty table converting into `reporting`.
    pub fn new(reporting: &str) -> Self {
        Self {
            reporting: reporting.to_owned(),
            rates: BTreeMap::new(),
        }
    }

    /// The reporting currency.
    pub fn reporting(&self) -> &str {
        &self.reporting
    }

    /// Sets the rate of `currency` from `from` on.
    pub fn insert(&mut self, currency: &str, from: i64, rate: Rate) {
        self.rates
            .entry(currency.to_owned())
            .or_default()
            .insert(from, rate);
    }

    /// The rate in force for `currency` at `at`.
    pub fn rate(&self, currency: &str, at: i64) -> Option<Rate> {
        if currency == self.reporting {
            return Some(Rate::ONE);
        }
        self.rates
            .get(currency)?
            .range(..=at)
            .next_back()
            .map(|(_, r)| *r)
    }

    /// Converts `minor` units of `currency` at `at` into reporting minor units,
    /// rounding half away from zero.
    pub fn convert(&self, minor: i64, currency: &str, at: i64) -> Result<i64, Error> {
        if currency == self.reporting {
            return Ok(minor);
        }
        let missing = || {
            Error::FailedPrecondition(format!(
                "no FX rate from {currency} to {} at {}; set one with SetFxRate",
                self.reporting,
                format_instant(at)
            ))
        };
        let rate = self.rate(currency, at).ok_or_else(missing)?;
        let from = minor_exponent(currency).ok_or_else(missing)?;
        let to = minor_exponent(&self.reporting).ok_or_else(missing)?;
        let num = i128::from(minor) * i128::from(rate.0) * 10i128.pow(to);
        let den = 1_000_000_000i128 * 10i128.pow(from);
        i64::try_from(div_round(num, den))
            .map_err(|_| Error::invalid("unit_price", "converted amount is too large"))
    }
}

/// Renders an instant (microseconds) as an RFC 3339 UTC time.
pub fn format_instant(micros: i64) -> String {
    Utc.timestamp_micros(micros)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| micros.to_string())
}

/// How often a subscription is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interval {
    /// Monthly.
    Month,
    /// Quarterly.
    Quarter,
    /// Yearly.
    Year,
}

impl Interval {
    /// Months per billing interval.
    pub fn months(self) -> i64 {
        match self {
            Interval::Month => 1,
            Interval::Quarter => 3,
            Interval::Year => 12,
        }
    }
}

/// What a subscription charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// Plan name.
    pub plan: String,
    /// Seats or units.
    pub quantity: i64,
    /// Price of one unit per billing interval, minor units.
    pub unit_price: i64,
    /// Discount in basis points.
    pub discount_bp: i64,
}

impl Terms {
    /// Normalised monthly revenue: quantity x unit price x (1 - discount) /
    /// months per interval, computed exactly and rounded once, half up, to
    /// the minor unit. Rounding once per terms (not per seat, not per
    /// account) keeps an annual 1,000.00 at 83.33 a month and a quarterly
    /// 100.00 at 33.33.
    pub fn mrr(&self, interval: Interval) -> i64 {
        let num = i128::from(self.quantity)
            * i128::from(self.unit_price)
            * i128::from(FULL_BP - self.discount_bp);
        let den = i128::from(FULL_BP) * i128::from(interval.months());
        i64::try_from(div_round(num, den)).unwrap_or(i64::MAX)
    }
}

/// Terms in force from `effective_at` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Microseconds since the epoch.
    pub effective_at: i64,
    /// The terms.
    pub terms: Terms,
}

/// Voluntary or involuntary churn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancellationKind {
    /// The customer chose to leave.
    Voluntary,
    /// Payment failure, business closed.
    Involuntary,
}

/// How a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    /// MRR is zero from this instant on.
    pub effective_at: i64,
    /// Voluntary or not.
    pub kind: CancellationKind,
    /// Code from the churn reason taxonomy.
    pub reason: String,
}

/// A subscription and its whole history of terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Id.
    #[serde(with = "uuid_text")]
    pub id: Uuid,
    /// The account.
    #[serde(with = "uuid_text")]
    pub account_id: Uuid,
    /// ISO-4217 code of every price.
    pub currency: String,
    /// Billing interval.
    pub interval: Interval,
    /// Start, microseconds.
    pub start: i64,
    /// End of the free trial.
    pub trial_end: Option<i64>,
    /// End of the current term (the renewal date).
    pub term_end: Option<i64>,
    /// Terms over time, ordered by `effective_at`, the first at `start`.
    pub versions: Vec<Version>,
    /// Set once cancelled.
    pub cancellation: Option<Cancellation>,
    /// Incremented by every change.
    pub version: i64,
}

/// UUIDs stored as their text form.
mod uuid_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let text = String::deserialize(d)?;
        Uuid::parse_str(&text).map_err(serde::de::Error::custom)
    }
}

/// What a new subscription is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    /// The account.
    pub account_id: Uuid,
    /// ISO-4217 code.
    pub currency: String,
    /// Billing interval.
    pub interval: Interval,
    /// Start.
    pub start: i64,
    /// End of the trial.
    pub trial_end: Option<i64>,
    /// End of the term.
    pub term_end: Option<i64>,
    /// Terms at the start.
    pub terms: Terms,
}

impl Subscription {
    /// A subscription from its creation fields.
    pub fn create(id: Uuid, new: NewSubscription) -> Self {
        Self {
            id,
            account_id: new.account_id,
            currency: new.currency,
            interval: new.interval,
            start: new.start,
            trial_end: new.trial_end,
            term_end: new.term_end,
            versions: vec![Version {
                effective_at: new.start,
                terms: new.terms,
            }],
            cancellation: None,
            version: 1,
        }
    }

    /// The terms in force at `t` (the first ones before the start).
    pub fn terms_at(&self, t: i64) -> Option<&Terms> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.effective_at <= t)
            .or(self.versions.first())
            .map(|v| &v.terms)
    }

    /// Normalised MRR at `t` in the subscription's currency: zero before the
    /// start, during the trial and from the cancellation on.
    pub fn mrr_at(&self, t: i64) -> i64 {
        let active = self.start <= t
            && self.trial_end.is_none_or(|end| end <= t)
            && self
                .cancellation
                .as_ref()
                .is_none_or(|c| t < c.effective_at);
        if !active {
            return 0;
        }
        self.versions
            .iter()
            .rev()
            .find(|v| v.effective_at <= t)
            .map_or(0, |v| v.terms.mrr(self.interval))
    }

    /// Every instant at which the MRR may change.
    fn breakpoints(&self) -> impl Iterator<Item = i64> + '_ {
        std::iter::once(self.start)
            .chain(self.trial_end)
            .chain(self.versions.iter().map(|v| v.effective_at))
            .chain(self.cancellation.as_ref().map(|c| c.effective_at))
    }

    /// Records new terms from `effective_at` on; terms at the same instant
    /// replace the earlier ones.
    pub fn change(&mut self, effective_at: i64, terms: Terms) -> Result<(), Error> {
        if effective_at < self.start {
            return Err(Error::invalid(
                "effective_at",
                format!(
                    "must not be before the subscription's start ({})",
                    format_instant(self.start)
                ),
            ));
        }
        if let Some(c) = &self.cancellation
            && effective_at >= c.effective_at
        {
            return Err(Error::FailedPrecondition(format!(
                "subscription {} is cancelled from {}; a change after that has no effect",
                self.id,
                format_instant(c.effective_at)
            )));
        }
        match self
            .versions
            .binary_search_by_key(&effective_at, |v| v.effective_at)
        {
            Ok(i) => self.versions[i].terms = terms,
            Err(i) => self.versions.insert(
                i,
                Version {
                    effective_at,
                    terms,
                },
            ),
        }
        self.version += 1;
        Ok(())
    }

    /// Cancels from `cancellation.effective_at` on.
    pub fn cancel(&mut self, cancellation: Cancellation) -> Result<(), Error> {
        if self.cancellation.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "subscription {} is already cancelled",
                self.id
            )));
        }
        if cancellation.effective_at < self.start {
            return Err(Error::invalid(
                "cancellation.effective_at",
                "must not be before the subscription's start",
            ));
        }
        self.cancellation = Some(cancellation);
        self.version += 1;
        Ok(())
    }
}

/// The kind of an MRR movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MovementKind {
    /// First payment ever.
    New,
    /// Growth from a positive MRR.
    Expansion,
    /// Shrink to a smaller positive MRR.
    Contraction,
    /// To zero.
    Churn,
    /// From zero, having paid before.
    Reactivation,
}

impl MovementKind {
    /// Every kind.
    pub const ALL: [MovementKind; 5] = [
        MovementKind::New,
        MovementKind::Expansion,
        MovementKind::Contraction,
        MovementKind::Churn,
        MovementKind::Reactivation,
    ];

    /// Stored code (the protobuf number).
    pub fn code(self) -> i32 {
        match self {
            MovementKind::New => 1,
            MovementKind::Expansion => 2,
            MovementKind::Contraction => 3,
            MovementKind::Churn => 4,
            MovementKind::Reactivation => 5,
        }
    }

    /// From a stored code.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Classifies a change of account MRR from `before` to `after`.
    pub fn classify(before: i64, after: i64, paid_before: bool) -> Option<Self> {
        match (before, after) {
            (0, a) if a > 0 && paid_before => Some(MovementKind::Reactivation),
            (0, a) if a > 0 => Some(MovementKind::New),
            (b, 0) if b > 0 => Some(MovementKind::Churn),
            (b, a) if b > 0 && a > b => Some(MovementKind::Expansion),
            (b, a) if a > 0 && a < b => Some(MovementKind::Contraction),
            _ => None,
        }
    }
}

/// One change of an account's MRR, in reporting minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Movement {
    /// When, microseconds.
    pub at: i64,
    /// Kind.
    pub kind: MovementKind,
    /// `after - before`.
    pub amount: i64,
    /// Account MRR before.
    pub before: i64,
    /// Account MRR after.
    pub after: i64,
}

/// The MRR movements of one account from the full history of its
/// subscriptions, in time order.
///
/// At every instant where any subscription's MRR may change, the account's
/// MRR per currency is recomputed; all changes at one instant make one
/// movement. A currency's change converts at the rate of that instant, and
/// the reporting-currency balance of each currency is tracked, so that when a
/// currency's MRR drops to zero exactly its balance is removed: churn always
/// takes the account to zero, whatever the rates did in between, and a
/// currency swing alone never creates a movement. A decrease is capped at the
/// currency's balance, so the account's reporting MRR never goes negative.
pub fn movements(subscriptions: &[Subscription], fx: &FxTable) -> Result<Vec<Movement>, Error> {
    let instants: BTreeSet<i64> = subscriptions.iter().flat_map(|s| s.breakpoints()).collect();
    let currencies: BTreeSet<&str> = subscriptions.iter().map(|s| s.currency.as_str()).collect();
    let mut local: BTreeMap<&str, i64> = currencies.iter().map(|c| (*c, 0)).collect();
    let mut balance: BTreeMap<&str, i64> = currencies.iter().map(|c| (*c, 0)).collect();
    let mut total = 0i64;
    let mut paid_before = false;
    let mut out = Vec::new();
    for t in instants {
        let mut delta = 0i64;
        for currency in &currencies {
            let now: i64 = subscriptions
                .iter()
                .filter(|s| s.currency == *currency)
                .map(|s| s.mrr_at(t))
                .sum();
            let prev = local.get(currency).copied().unwrap_or(0);
            if now == prev {
                continue;
            }
            let held = balance.get(currency).copied().unwrap_or(0);
            let next = if now == 0 {
                0
            } else {
                (held + fx.convert(now - prev, currency, t)?).max(0)
            };
            delta += next - held;
            balance.insert(currency, next);
            local.insert(currency, now);
        }
        let after = total + delta;
        if let Some(kind) = MovementKind::classify(total, after, paid_before) {
            out.push(Movement {
                at: t,
                kind,
                amount: delta,
                before: total,
                after,
            });
            paid_before |= after > 0;
        }
        total = after;
    }
    Ok(out)
}

/// A span of time in which an account paid `mrr` (reporting minor units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayingSpan {
    /// Start, inclusive.
    pub from: i64,
    /// End, exclusive; `None` while still paying.
    pub to: Option<i64>,
    /// MRR during the span.
    pub mrr: i64,
}

/// The spans in which an account paid, from its movements.
pub fn paying_spans(movements: &[Movement]) -> Vec<PayingSpan> {
    let mut spans: Vec<PayingSpan> = Vec::new();
    for m in movements {
        if let Some(open) = spans.last_mut()
            && open.to.is_none()
        {
            open.to = Some(m.at);
        }
        if m.after > 0 {
            spans.push(PayingSpan {
                from: m.at,
                to: None,
                mrr: m.after,
            });
        }
    }
    spans
}

/// An account's MRR at `t` from its movements.
pub fn mrr_at(movements: &[Movement], t: i64) -> i64 {
    movements
        .iter()
        .take_while(|m| m.at <= t)
        .last()
        .map_or(0, |m| m.after)
}

/// A calendar month (UTC), numbered `year * 12 + month - 1` so months order,
/// step and subtract as integers: `month + 1` is the next month and
/// `last - first` the number of months between them. The number is also how
/// a month is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month(i32);

impl Month {
    /// The month numbered `index` (`year * 12 + month - 1`).
    pub const fn from_index(index: i32) -> Self {
        Self(index)
    }

    /// January of `year`.
    pub const fn january(year: i32) -> Self {
        Self(year * 12)
    }

    /// Its number, `year * 12 + month - 1`.
    pub const fn index(self) -> i32 {
        self.0
    }

    /// The year.
    pub const fn year(self) -> i32 {
        self.0.div_euclid(12)
    }

    /// The month of the year, 0 for January.
    pub const fn month0(self) -> i32 {
        self.0.rem_euclid(12)
    }

    /// The first month of its quarter.
    pub const fn quarter_start(self) -> Self {
        Self(self.0 - self.0.rem_euclid(3))
    }

    /// The last month of its quarter.
    pub const fn quarter_end(self) -> Self {
        Self(self.quarter_start().0 + 2)
    }
}

impl std::ops::Add<i32> for Month {
    type Output = Month;

    fn add(self, months: i32) -> Month {
        Month(self.0 + months)
    }
}

impl std::ops::Sub<i32> for Month {
    type Output = Month;

    fn sub(self, months: i32) -> Month {
        Month(self.0 - months)
    }
}

impl std::ops::Sub for Month {
    type Output = i32;

    /// The number of months from `other` to `self`.
    fn sub(self, other: Month) -> i32 {
        self.0 - other.0
    }
}

/// The month of an instant.
pub fn month_of(micros: i64) -> Month {
    let t = Utc
        .timestamp_micros(micros)
        .single()
        .unwrap_or(chrono::DateTime::<Utc>::UNIX_EPOCH);
    Month(t.year() * 12 + t.month0() as i32)
}

/// The first instant of a month.
pub fn month_start(month: Month) -> i64 {
    Utc.with_ymd_and_hms(month.year(), month.month0() as u32 + 1, 1, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_micros())
}

/// Parses "YYYY-MM".
pub fn parse_month(text: &str) -> Option<Month> {
    let (y, m) = text.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let y: i32 = y.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    ((1970..=9999).contains(&y) && (1..=12).contains(&m)).then_some(Month(y * 12 + m - 1))
}

/// "YYYY-MM".
pub fn month_label(month: Month) -> String {
    format!("{:04}-{:02}", month.year(), month.month0() + 1)
}

/// The sum and count of one kind of movement in one month and segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Signed sum of the amounts.
    pub amount: i64,
    /// Number of movements.
    pub count: i64,
}

/// Roll-up key: month, segment, movement kind.
pub type RollupKey = (Month, Segment, MovementKind);

/// Adds `sign` x the movements to the roll-up deltas.
pub fn add_to_rollup(
    deltas: &mut BTreeMap<RollupKey, Tally>,
    segment: Segment,
    movements: &[Movement],
    sign: i64,
) {
    for m in movements {
        let t = deltas.entry((month_of(m.at), segment, m.kind)).or_default();
        t.amount += sign * m.amount;
        t.count += sign;
    }
}

/// Report period length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Calendar months.
    Month,
    /// Calendar quarters.
    Quarter,
}

/// One period of the waterfall, in reporting minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// "YYYY-MM" or "YYYY-Qn".
    pub label: String,
    /// MRR at the start.
    pub start_mrr: i64,
    /// Sum per kind, signed (contraction and churn negative).
    pub sums: BTreeMap<MovementKind, Tally>,
    /// MRR at the end.
    pub end_mrr: i64,
    /// Paying accounts at the start.
    pub paying_start: i64,
    /// Paying accounts at the end.
    pub paying_end: i64,
}

impl Period {
    /// The tally of a kind.
    pub fn tally(&self, kind: MovementKind) -> Tally {
        self.sums.get(&kind).copied().unwrap_or_default()
    }
}

/// The waterfall over months `first..=last` from the totals before `first`
/// (`opening`: MRR and paying accounts) and the monthly tallies.
pub fn waterfall(
    opening: (i64, i64),
    monthly: &BTreeMap<(Month, MovementKind), Tally>,
    first: Month,
    last: Month,
    granularity: Granularity,
) -> Vec<Period> {
    let (mut mrr, mut paying) = opening;
    let mut periods = Vec::new();
    let mut month = first;
    while month <= last {
        let (len, label) = match granularity {
            Granularity::Month => (1, month_label(month)),
            Granularity::Quarter => (
                3,
                format!("{:04}-Q{}", month.year(), month.month0() / 3 + 1),
            ),
        };
        let mut sums: BTreeMap<MovementKind, Tally> = BTreeMap::new();
        for m in (0..len).map(|k| month + k) {
            for kind in MovementKind::ALL {
                if let Some(t) = monthly.get(&(m, kind)) {
                    let s = sums.entry(kind).or_default();
                    s.amount += t.amount;
                    s.count += t.count;
                }
            }
        }
        let start_mrr = mrr;
        let paying_start = paying;
        mrr += sums.values().map(|t| t.amount).sum::<i64>();
        paying += [MovementKind::New, MovementKind::Reactivation]
            .iter()
            .map(|k| sums.get(k).map_or(0, |t| t.count))
            .sum::<i64>()
            - sums.get(&MovementKind::Churn).map_or(0, |t| t.count);
        periods.push(Period {
            label,
            start_mrr,
            sums,
            end_mrr: mrr,
            paying_start,
            paying_end: paying,
        });
        month = month + len;
    }
    periods
}

/// Retention of the accounts paying at t0 (docs/design.md section 2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Accounts paying at t0.
    pub accounts_start: i64,
    /// Of those, paying at t1.
    pub accounts_retained: i64,
    /// Sum of MRR at t0.
    pub mrr_start: i64,
    /// Sum of min(MRR t1, MRR t0).
    pub mrr_retained: i64,
    /// Sum of MRR at t1.
    pub mrr_end: i64,
}

impl Retention {
    /// From each account's (MRR at t0, MRR at t1); accounts not paying at t0
    /// are ignored.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (i64, i64)>) -> Self {
        let mut r = Retention::default();
        for (start, end) in pairs.into_iter().filter(|(s, _)| *s > 0) {
            r.accounts_start += 1;
            r.accounts_retained += i64::from(end > 0);
            r.mrr_start += start;
            r.mrr_retained += end.min(start);
            r.mrr_end += end;
        }
        r
    }

    /// A ratio, 0 when the denominator is 0.
    pub fn ratio(num: i64, den: i64) -> f64 {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    }

    /// Logo retention.
    pub fn logo(&self) -> f64 {
        Self::ratio(self.accounts_retained, self.accounts_start)
    }

    /// Gross revenue retention.
    pub fn grr(&self) -> f64 {
        Self::ratio(self.mrr_retained, self.mrr_start)
    }

    /// Net revenue retention.
    pub fn nrr(&self) -> f64 {
        Self::ratio(self.mrr_end, self.mrr_start)
    }
}

/// One cell of the cohort grid: accounts paying and their MRR at the end of
/// month `cohort + month`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CohortCell {
    /// Accounts paying.
    pub paying: i64,
    /// Their MRR.
    pub mrr: i64,
}

/// The cohort grid: for each cohort month (of the first payment), its size
/// and a cell per month since the first payment, for month ends before
/// `until` and at most `months` after the cohort month. `spans` are the
/// paying spans of the cohorts' accounts.
pub fn cohort_grid<K: Ord + Clone>(
    cohort_of: &BTreeMap<K, Month>,
    spans: &[(K, PayingSpan)],
    months: i32,
    until: i64,
) -> BTreeMap<Month, (i64, Vec<CohortCell>)> {
    let mut grid: BTreeMap<Month, (i64, Vec<CohortCell>)> = BTreeMap::new();
    for cohort in cohort_of.values() {
        let entry = grid.entry(*cohort).or_insert_with(|| {
            let ended = (0..=months)
                .take_while(|k| month_start(*cohort + *k + 1) <= until)
                .count();
            (0, vec![CohortCell::default(); ended])
        });
        entry.0 += 1;
    }
    for (account, span) in spans {
        let Some(cohort) = cohort_of.get(account) else {
            continue;
        };
        let Some((_, cells)) = grid.get_mut(cohort) else {
            continue;
        };
        for (k, cell) in cells.iter_mut().enumerate() {
            let end = month_start(*cohort + k as i32 + 1) - 1;
            if span.from <= end && span.to.is_none_or(|to| end < to) {
                cell.paying += 1;
                cell.mrr += span.mrr;
            }
        }
    }
    grid
}

#[cfg(test)]
mod tests;
