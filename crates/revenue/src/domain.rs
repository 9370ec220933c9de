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
pub use bowtie_proto::revenue::RenewalOutcome;
use bowtie_runtime::error::Error;
pub use bowtie_runtime::{AccountId, Instant, Minor};
use chrono::{Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of a subscription, assigned by the revenue service when it is
/// created.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SubscriptionId(pub Uuid);

impl SubscriptionId {
    /// A fresh id, ordered by creation time.
    pub fn new() -> Self {
        SubscriptionId(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub const fn uuid(self) -> Uuid {
        self.0
    }
}

impl std::fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

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
    rates: BTreeMap<String, BTreeMap<Instant, Rate>>,
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
    pub fn insert(&mut self, currency: &str, from: Instant, rate: Rate) {
        self.rates
            .entry(currency.to_owned())
            .or_default()
            .insert(from, rate);
    }

    /// The rate in force for `currency` at `at`.
    pub fn rate(&self, currency: &str, at: Instant) -> Option<Rate> {
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
    pub fn convert(&self, minor: Minor, currency: &str, at: Instant) -> Result<Minor, Error> {
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
        let num = i128::from(minor.get()) * i128::from(rate.0) * 10i128.pow(to);
        let den = 1_000_000_000i128 * 10i128.pow(from);
        i64::try_from(div_round(num, den))
            .map(Minor)
            .map_err(|_| Error::invalid("unit_price", "converted amount is too large"))
    }
}

/// Renders an instant as an RFC 3339 UTC time (`+00:00`, as error messages
/// have always said it).
pub fn format_instant(at: Instant) -> String {
    at.to_datetime()
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| at.micros().to_string())
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
    /// Price of one unit per billing interval.
    pub unit_price: Minor,
    /// Discount in basis points.
    pub discount_bp: i64,
}

impl Terms {
    /// Normalised monthly revenue: quantity x unit price x (1 - discount) /
    /// months per interval, computed exactly and rounded once, half up, to
    /// the minor unit. Rounding once per terms (not per seat, not per
    /// account) keeps an annual 1,000.00 at 83.33 a month and a quarterly
    /// 100.00 at 33.33.
    pub fn mrr(&self, interval: Interval) -> Minor {
        let num = i128::from(self.quantity)
            * i128::from(self.unit_price.get())
            * i128::from(FULL_BP - self.discount_bp);
        let den = i128::from(FULL_BP) * i128::from(interval.months());
        Minor(i64::try_from(div_round(num, den)).unwrap_or(i64::MAX))
    }
}

/// Terms in force from `effective_at` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// From when.
    pub effective_at: Instant,
    /// The terms.
    pub terms: Terms,
}

/// Voluntary or involuntary churn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    pub effective_at: Instant,
    /// Voluntary or not.
    pub kind: CancellationKind,
    /// Code from the churn reason taxonomy.
    pub reason: String,
}

/// A subscription and its whole history of terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Id (stored as its text form).
    pub id: SubscriptionId,
    /// The account (stored as its text form).
    pub account_id: AccountId,
    /// ISO-4217 code of every price.
    pub currency: String,
    /// Billing interval.
    pub interval: Interval,
    /// Start (stored as microseconds).
    pub start: Instant,
    /// End of the free trial.
    pub trial_end: Option<Instant>,
    /// End of the current term (the renewal date).
    pub term_end: Option<Instant>,
    /// Terms over time, ordered by `effective_at`, the first at `start`.
    pub versions: Vec<Version>,
    /// Set once cancelled.
    pub cancellation: Option<Cancellation>,
    /// Incremented by every change.
    pub version: i64,
    /// Spans in which the subscription is past due beyond the policy's days
    /// and counts no MRR (docs/design.md section 8.1). Derived from its
    /// invoices each time its account is recomputed, never stored.
    #[serde(skip)]
    pub lapses: Vec<Lapse>,
}

/// A span in which a subscription counts no MRR because an invoice stayed
/// unpaid past the past-due policy: from the invoice's due date plus the
/// policy's days until it was paid (open while it is unpaid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lapse {
    /// Start, inclusive: the involuntary churn.
    pub from: Instant,
    /// End, exclusive: the payment that reactivates it; `None` while unpaid.
    pub to: Option<Instant>,
}

impl Lapse {
    fn covers(&self, t: Instant) -> bool {
        self.from <= t && self.to.is_none_or(|to| t < to)
    }
}

/// The lapses the past-due policy derives from a subscription's invoices:
/// an invoice still unpaid `days` after its due date stops the MRR at that
/// instant, until it is paid. Overlapping lapses merge. `days` of 0 turns
/// the policy off.
pub fn lapses(invoices: &[&Invoice], days: i64) -> Vec<Lapse> {
    if days <= 0 {
        return Vec::new();
    }
    let mut spans: Vec<Lapse> = invoices
        .iter()
        .filter_map(|i| {
            let from = i.due_at.plus_days(days);
            match i.paid_at {
                Some(paid) if paid <= from => None,
                to => Some(Lapse { from, to }),
            }
        })
        .collect();
    spans.sort_by_key(|l| l.from);
    let mut merged: Vec<Lapse> = Vec::with_capacity(spans.len());
    for l in spans {
        match merged.last_mut() {
            Some(open) if open.to.is_none_or(|to| l.from <= to) => {
                open.to = match (open.to, l.to) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => merged.push(l),
        }
    }
    merged
}

/// What a new subscription is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    /// The account.
    pub account_id: AccountId,
    /// ISO-4217 code.
    pub currency: String,
    /// Billing interval.
    pub interval: Interval,
    /// Start.
    pub start: Instant,
    /// End of the trial.
    pub trial_end: Option<Instant>,
    /// End of the term.
    pub term_end: Option<Instant>,
    /// Terms at the start.
    pub terms: Terms,
}

impl Subscription {
    /// A subscription from its creation fields.
    pub fn create(id: SubscriptionId, new: NewSubscription) -> Self {
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
            lapses: Vec::new(),
        }
    }

    /// The terms in force at `t` (the first ones before the start).
    pub fn terms_at(&self, t: Instant) -> Option<&Terms> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.effective_at <= t)
            .or(self.versions.first())
            .map(|v| &v.terms)
    }

    /// Normalised MRR at `t` in the subscription's currency: zero before the
    /// start, during the trial, while lapsed and from the cancellation on.
    pub fn mrr_at(&self, t: Instant) -> Minor {
        let active = self.start <= t
            && self.trial_end.is_none_or(|end| end <= t)
            && self
                .cancellation
                .as_ref()
                .is_none_or(|c| t < c.effective_at)
            && !self.lapses.iter().any(|l| l.covers(t));
        if !active {
            return Minor::ZERO;
        }
        self.versions
            .iter()
            .rev()
            .find(|v| v.effective_at <= t)
            .map_or(Minor::ZERO, |v| v.terms.mrr(self.interval))
    }

    /// Every instant at which the MRR may change.
    fn breakpoints(&self) -> impl Iterator<Item = Instant> + '_ {
        std::iter::once(self.start)
            .chain(self.trial_end)
            .chain(self.versions.iter().map(|v| v.effective_at))
            .chain(self.cancellation.as_ref().map(|c| c.effective_at))
            .chain(
                self.lapses
                    .iter()
                    .flat_map(|l| std::iter::once(l.from).chain(l.to)),
            )
    }

    /// Records new terms from `effective_at` on; terms at the same instant
    /// replace the earlier ones.
    pub fn change(&mut self, effective_at: Instant, terms: Terms) -> Result<(), Error> {
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

    /// Records new terms priced in `currency` from `effective_at` on: the
    /// currency of a subscription never changes.
    pub fn change_priced(
        &mut self,
        effective_at: Instant,
        terms: Terms,
        currency: &str,
    ) -> Result<(), Error> {
        if currency != self.currency {
            return Err(Error::invalid(
                "terms.unit_price.currency_code",
                format!("must stay {}, the subscription's currency", self.currency),
            ));
        }
        self.change(effective_at, terms)
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
    pub fn classify(before: Minor, after: Minor, paid_before: bool) -> Option<Self> {
        match (before.get(), after.get()) {
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Movement {
    /// When.
    pub at: Instant,
    /// Kind.
    pub kind: MovementKind,
    /// `after - before`.
    pub amount: Minor,
    /// Account MRR before.
    pub before: Minor,
    /// Account MRR after.
    pub after: Minor,
    /// What caused a CHURN or CONTRACTION (`None` on the other kinds).
    pub cause: Option<Cause>,
}

/// Reason code of a lapse: the past-due policy stopped a subscription whose
/// invoice stayed unpaid (involuntary).
pub const LAPSE_REASON: &str = "payment_failure";
/// Reason code of a decrease no cancellation explains (new terms, the end of
/// a lapse's neighbour ...).
pub const UNSPECIFIED_REASON: &str = "unspecified";

/// Orders the falls of subscriptions at one instant for attribution: the
/// larger fall wins; between equal falls a cancellation or lapse wins over a
/// change of terms, then involuntary over voluntary, then the reason code
/// first in alphabetical order. It never depends on the order subscriptions
/// are listed or recorded in.
trait CmpFall {
    fn cmp_fall(&self, other: &Self) -> std::cmp::Ordering;
}

impl CmpFall for (Minor, &Cause) {
    fn cmp_fall(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .cmp(&other.0)
            .then_with(|| self.1.kind.cmp(&other.1.kind))
            .then_with(|| other.1.reason.cmp(&self.1.reason))
    }
}

/// Why an account's MRR fell: the kind and reason code of the cancellation
/// (or lapse) behind a CHURN or CONTRACTION movement, as recorded then.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cause {
    /// Voluntary or involuntary; `None` when no cancellation or lapse caused
    /// the fall (a change of terms).
    pub kind: Option<CancellationKind>,
    /// The reason code as stored ([`UNSPECIFIED_REASON`] without one).
    pub reason: String,
}

impl Cause {
    /// A fall no cancellation explains.
    pub fn unspecified() -> Self {
        Self {
            kind: None,
            reason: UNSPECIFIED_REASON.to_owned(),
        }
    }

    /// Stored code of the kind: 0 none, 1 voluntary, 2 involuntary (the
    /// protobuf numbers).
    pub fn kind_code(&self) -> i32 {
        match self.kind {
            None => 0,
            Some(CancellationKind::Voluntary) => 1,
            Some(CancellationKind::Involuntary) => 2,
        }
    }

    /// From the stored kind code and reason.
    pub fn from_stored(kind: i32, reason: String) -> Self {
        let kind = match kind {
            1 => Some(CancellationKind::Voluntary),
            2 => Some(CancellationKind::Involuntary),
            _ => None,
        };
        let reason = if reason.is_empty() {
            UNSPECIFIED_REASON.to_owned()
        } else {
            reason
        };
        Self { kind, reason }
    }
}

impl Subscription {
    /// Why this subscription's MRR fell at `t`: its cancellation when it
    /// takes effect at `t`, a lapse of the past-due policy starting at `t`
    /// (involuntary, [`LAPSE_REASON`]), else unspecified (new terms).
    fn fall_cause(&self, t: Instant) -> Cause {
        if let Some(c) = self.cancellation.as_ref().filter(|c| c.effective_at == t) {
            return Cause {
                kind: Some(c.kind),
                reason: c.reason.clone(),
            };
        }
        if self.lapses.iter().any(|l| l.from == t) {
            return Cause {
                kind: Some(CancellationKind::Involuntary),
                reason: LAPSE_REASON.to_owned(),
            };
        }
        Cause::unspecified()
    }
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
///
/// A CHURN or CONTRACTION movement carries the [`Cause`] of the subscription
/// whose MRR fell the most at that instant (converted into the reporting
/// currency at that instant; ties as `CmpFall` orders them), so when
/// several subscriptions end at the same instant the whole movement, its
/// amount and its logo, is attributed to the largest of them.
pub fn movements(subscriptions: &[Subscription], fx: &FxTable) -> Result<Vec<Movement>, Error> {
    let instants: BTreeSet<Instant> = subscriptions.iter().flat_map(|s| s.breakpoints()).collect();
    let mut sub_mrr: Vec<Minor> = vec![Minor::ZERO; subscriptions.len()];
    let currencies: BTreeSet<&str> = subscriptions.iter().map(|s| s.currency.as_str()).collect();
    let mut local: BTreeMap<&str, Minor> = currencies.iter().map(|c| (*c, Minor::ZERO)).collect();
    let mut balance: BTreeMap<&str, Minor> = currencies.iter().map(|c| (*c, Minor::ZERO)).collect();
    let mut total = Minor::ZERO;
    let mut paid_before = false;
    let mut out = Vec::new();
    for t in instants {
        let mut largest_fall: Option<(Minor, Cause)> = None;
        for (i, s) in subscriptions.iter().enumerate() {
            let now = s.mrr_at(t);
            let fall = sub_mrr[i] - now;
            if fall.is_positive() {
                let fall = fx.convert(fall, &s.currency, t).unwrap_or(fall);
                let cause = s.fall_cause(t);
                if largest_fall
                    .as_ref()
                    .is_none_or(|(most, chosen)| (fall, &cause).cmp_fall(&(*most, chosen)).is_gt())
                {
                    largest_fall = Some((fall, cause));
                }
            }
            sub_mrr[i] = now;
        }
        let mut delta = Minor::ZERO;
        for currency in &currencies {
            let now: Minor = subscriptions
                .iter()
                .filter(|s| s.currency == *currency)
                .map(|s| s.mrr_at(t))
                .sum();
            let prev = local.get(currency).copied().unwrap_or_default();
            if now == prev {
                continue;
            }
            let held = balance.get(currency).copied().unwrap_or_default();
            let next = if now == Minor::ZERO {
                Minor::ZERO
            } else {
                (held + fx.convert(now - prev, currency, t)?).max(Minor::ZERO)
            };
            delta += next - held;
            balance.insert(currency, next);
            local.insert(currency, now);
        }
        let after = total + delta;
        if let Some(kind) = MovementKind::classify(total, after, paid_before) {
            let cause =
                matches!(kind, MovementKind::Churn | MovementKind::Contraction).then(|| {
                    largest_fall
                        .take()
                        .map_or_else(Cause::unspecified, |(_, cause)| cause)
                });
            out.push(Movement {
                at: t,
                kind,
                amount: delta,
                before: total,
                after,
                cause,
            });
            paid_before |= after.is_positive();
        }
        total = after;
    }
    Ok(out)
}

/// A span of time in which an account paid `mrr` (reporting minor units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayingSpan {
    /// Start, inclusive.
    pub from: Instant,
    /// End, exclusive; `None` while still paying.
    pub to: Option<Instant>,
    /// MRR during the span.
    pub mrr: Minor,
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
        if m.after.is_positive() {
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
pub fn mrr_at(movements: &[Movement], t: Instant) -> Minor {
    movements
        .iter()
        .take_while(|m| m.at <= t)
        .last()
        .map_or(Minor::ZERO, |m| m.after)
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
pub fn month_of(at: Instant) -> Month {
    let t = at
        .to_datetime()
        .unwrap_or(chrono::DateTime::<Utc>::UNIX_EPOCH);
    Month(t.year() * 12 + t.month0() as i32)
}

/// The first instant of a month.
pub fn month_start(month: Month) -> Instant {
    Utc.with_ymd_and_hms(month.year(), month.month0() as u32 + 1, 1, 0, 0, 0)
        .single()
        .map_or(Instant::EPOCH, Instant::from)
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
    pub amount: Minor,
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
        t.amount += Minor(sign * m.amount.get());
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
    pub start_mrr: Minor,
    /// Sum per kind, signed (contraction and churn negative).
    pub sums: BTreeMap<MovementKind, Tally>,
    /// MRR at the end.
    pub end_mrr: Minor,
    /// Paying accounts at the start.
    pub paying_start: i64,
    /// Paying accounts at the end.
    pub paying_end: i64,
    /// In a cut: MRR and paying accounts moved into the value by a change
    /// of the account's value (negative when more moved out); zero uncut.
    pub moved: Tally,
}

impl Period {
    /// The tally of a kind.
    pub fn tally(&self, kind: MovementKind) -> Tally {
        self.sums.get(&kind).copied().unwrap_or_default()
    }

    /// Average revenue per paying account at the end, rounded half up (0
    /// with no paying account).
    pub fn arpa(&self) -> Minor {
        if self.paying_end > 0 {
            let (num, den) = (i128::from(self.end_mrr.get()), i128::from(self.paying_end));
            Minor(i64::try_from((2 * num + den) / (2 * den)).unwrap_or(i64::MAX))
        } else {
            Minor::ZERO
        }
    }

    /// Churned accounts over the accounts paying at the start.
    pub fn customer_churn_rate(&self) -> f64 {
        Retention::ratio(self.tally(MovementKind::Churn).count, self.paying_start)
    }

    /// MRR lost to contraction and churn over the MRR at the start.
    pub fn revenue_churn_rate(&self) -> f64 {
        let lost = -(self.tally(MovementKind::Churn).amount
            + self.tally(MovementKind::Contraction).amount);
        Retention::ratio(lost.get(), self.start_mrr.get())
    }

    /// Quick ratio: (new + expansion + reactivation) / (contraction +
    /// churn); `None` (undefined) when nothing was lost in the period.
    pub fn quick_ratio(&self) -> Option<f64> {
        let gained: i64 = [
            MovementKind::New,
            MovementKind::Expansion,
            MovementKind::Reactivation,
        ]
        .iter()
        .map(|k| self.tally(*k).amount.get())
        .sum();
        let lost = -(self.tally(MovementKind::Churn).amount
            + self.tally(MovementKind::Contraction).amount)
            .get();
        (lost != 0).then(|| gained as f64 / lost as f64)
    }
}

/// The periods of a report over months `first..=last`: each one's label
/// ("YYYY-MM" or "YYYY-Qn"), first month and length in months.
pub fn report_periods(
    first: Month,
    last: Month,
    granularity: Granularity,
) -> Vec<(String, Month, i32)> {
    let mut out = Vec::new();
    let mut month = first;
    while month <= last {
        let (len, label) = match granularity {
            Granularity::Month => (1, month_label(month)),
            Granularity::Quarter => (
                3,
                format!("{:04}-Q{}", month.year(), month.month0() / 3 + 1),
            ),
        };
        out.push((label, month, len));
        month = month + len;
    }
    out
}

/// Stored sums of CHURN or CONTRACTION movements of one month by cause.
pub type CauseRow = (Month, MovementKind, Cause, Tally);

/// MRR lost to one reason code (or one kind) in a period, as a positive
/// amount, with the number of movements (logos for churn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossLine<K> {
    /// The reason code or the kind.
    pub key: K,
    /// MRR lost, positive.
    pub lost: Minor,
    /// Movements: churned accounts for churn, contractions for contraction.
    pub count: i64,
}

/// One kind of loss (churn or contraction) of a period, split by reason and
/// by kind; each split adds up to the totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LossBreakdown {
    /// MRR lost, positive.
    pub lost: Minor,
    /// Movements.
    pub count: i64,
    /// Per reason code, the largest loss first (ties by code).
    pub by_reason: Vec<LossLine<String>>,
    /// Per kind (`None`: no cancellation caused it), the largest loss first.
    pub by_kind: Vec<LossLine<Option<CancellationKind>>>,
}

impl LossBreakdown {
    fn from_causes(causes: &BTreeMap<Cause, Tally>) -> Self {
        let mut by_reason: BTreeMap<&str, Tally> = BTreeMap::new();
        let mut by_kind: BTreeMap<i32, (Option<CancellationKind>, Tally)> = BTreeMap::new();
        let mut out = LossBreakdown::default();
        for (cause, t) in causes {
            let r = by_reason.entry(cause.reason.as_str()).or_default();
            r.amount += t.amount;
            r.count += t.count;
            let k = &mut by_kind
                .entry(cause.kind_code())
                .or_insert((cause.kind, Tally::default()))
                .1;
            k.amount += t.amount;
            k.count += t.count;
            out.lost += -t.amount;
            out.count += t.count;
        }
        out.by_reason = by_reason
            .into_iter()
            .map(|(reason, t)| LossLine {
                key: reason.to_owned(),
                lost: -t.amount,
                count: t.count,
            })
            .collect();
        out.by_reason
            .sort_by(|a, b| b.lost.cmp(&a.lost).then_with(|| a.key.cmp(&b.key)));
        let mut kinds: Vec<(i32, LossLine<Option<CancellationKind>>)> = by_kind
            .into_iter()
            .map(|(code, (kind, t))| {
                (
                    code,
                    LossLine {
                        key: kind,
                        lost: -t.amount,
                        count: t.count,
                    },
                )
            })
            .collect();
        kinds.sort_by(|a, b| b.1.lost.cmp(&a.1.lost).then_with(|| a.0.cmp(&b.0)));
        out.by_kind = kinds.into_iter().map(|(_, line)| line).collect();
        out
    }
}

/// The churn analysis of one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChurnPeriod {
    /// "YYYY-MM" or "YYYY-Qn".
    pub label: String,
    /// CHURN movements by the cause they are attributed to.
    pub churn: LossBreakdown,
    /// CONTRACTION movements likewise.
    pub contraction: LossBreakdown,
}

/// The churn analysis over months `first..=last` from the stored sums by
/// cause (rows of other months or kinds are ignored). Its churn and
/// contraction totals are sums of the same movements as the waterfall's, so
/// they equal them to the minor unit.
pub fn churn_analysis(
    rows: &[CauseRow],
    first: Month,
    last: Month,
    granularity: Granularity,
) -> Vec<ChurnPeriod> {
    report_periods(first, last, granularity)
        .into_iter()
        .map(|(label, start, len)| {
            let mut churn: BTreeMap<Cause, Tally> = BTreeMap::new();
            let mut contraction: BTreeMap<Cause, Tally> = BTreeMap::new();
            for (month, kind, cause, t) in rows {
                if *month < start || *month >= start + len {
                    continue;
                }
                let into = match kind {
                    MovementKind::Churn => &mut churn,
                    MovementKind::Contraction => &mut contraction,
                    _ => continue,
                };
                let e = into.entry(cause.clone()).or_default();
                e.amount += t.amount;
                e.count += t.count;
            }
            ChurnPeriod {
                label,
                churn: LossBreakdown::from_causes(&churn),
                contraction: LossBreakdown::from_causes(&contraction),
            }
        })
        .collect()
}

/// The waterfall over months `first..=last` from the totals before `first`
/// (`opening`: MRR and paying accounts) and the monthly tallies.
pub fn waterfall(
    opening: (Minor, i64),
    monthly: &BTreeMap<(Month, MovementKind), Tally>,
    first: Month,
    last: Month,
    granularity: Granularity,
) -> Vec<Period> {
    cut_waterfall(opening, monthly, &BTreeMap::new(), first, last, granularity)
}

/// The waterfall of one value of a cut: as [`waterfall`], with the MRR and
/// paying accounts moved into the value each month (`moved`).
pub fn cut_waterfall(
    opening: (Minor, i64),
    monthly: &BTreeMap<(Month, MovementKind), Tally>,
    moved: &BTreeMap<Month, Tally>,
    first: Month,
    last: Month,
    granularity: Granularity,
) -> Vec<Period> {
    let (mut mrr, mut paying) = opening;
    let mut periods = Vec::new();
    for (label, month, len) in report_periods(first, last, granularity) {
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
        let mut into = Tally::default();
        for t in (0..len).filter_map(|k| moved.get(&(month + k))) {
            into.amount += t.amount;
            into.count += t.count;
        }
        let start_mrr = mrr;
        let paying_start = paying;
        mrr += sums.values().map(|t| t.amount).sum::<Minor>() + into.amount;
        paying += [MovementKind::New, MovementKind::Reactivation]
            .iter()
            .map(|k| sums.get(k).map_or(0, |t| t.count))
            .sum::<i64>()
            - sums.get(&MovementKind::Churn).map_or(0, |t| t.count)
            + into.count;
        periods.push(Period {
            label,
            start_mrr,
            sums,
            end_mrr: mrr,
            paying_start,
            paying_end: paying,
            moved: into,
        });
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
    pub mrr_start: Minor,
    /// Sum of min(MRR t1, MRR t0).
    pub mrr_retained: Minor,
    /// Sum of MRR at t1.
    pub mrr_end: Minor,
}

impl Retention {
    /// From each account's (MRR at t0, MRR at t1); accounts not paying at t0
    /// are ignored.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (Minor, Minor)>) -> Self {
        let mut r = Retention::default();
        for (start, end) in pairs.into_iter().filter(|(s, _)| s.is_positive()) {
            r.accounts_start += 1;
            r.accounts_retained += i64::from(end.is_positive());
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
        Self::ratio(self.mrr_retained.get(), self.mrr_start.get())
    }

    /// Net revenue retention.
    pub fn nrr(&self) -> f64 {
        Self::ratio(self.mrr_end.get(), self.mrr_start.get())
    }
}

/// One cell of the cohort grid: accounts paying and their MRR at the end of
/// month `cohort + month`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CohortCell {
    /// Accounts paying.
    pub paying: i64,
    /// Their MRR.
    pub mrr: Minor,
}

/// The cohort grid: each cohort month with its size and its cells.
pub type CohortGrid = BTreeMap<Month, (i64, Vec<CohortCell>)>;

/// The cohort grid: for each cohort month (of the first payment), its size
/// and a cell per month since the first payment, for month ends before
/// `until` and at most `months` after the cohort month. `spans` are the
/// paying spans of the cohorts' accounts.
pub fn cohort_grid<K: Ord + Clone>(
    cohort_of: &BTreeMap<K, Month>,
    spans: &[(K, PayingSpan)],
    months: i32,
    until: Instant,
) -> CohortGrid {
    let mut grid = CohortGrid::new();
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
            let end = month_start(*cohort + k as i32 + 1).plus_micros(-1);
            if span.from <= end && span.to.is_none_or(|to| end < to) {
                cell.paying += 1;
                cell.mrr += span.mrr;
            }
        }
    }
    grid
}

/// Months in a year: the amount at stake of a renewal is a year of MRR.
const MONTHS_PER_YEAR: i64 = 12;

/// One line of the renewal book: a subscription whose term ends, what is at
/// stake (a year of the MRR in force just before the renewal), how likely
/// it renews and the forecast that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalEntry {
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Its account.
    pub account_id: AccountId,
    /// ISO-4217 code of the amounts.
    pub currency: String,
    /// The end of the term.
    pub renewal_at: Instant,
    /// Whole days from now to the renewal (negative once past).
    pub days_to_renewal: i64,
    /// A year of the MRR in force just before the renewal.
    pub amount_at_stake: Minor,
    /// Likelihood of renewing, in basis points.
    pub likelihood_bp: i64,
    /// Whether the likelihood came from scoring (else the default).
    pub likelihood_from_scoring: bool,
    /// The amount at stake times the likelihood, rounded half up.
    pub forecast: Minor,
    /// The recorded decision; churned when the subscription is cancelled by
    /// the renewal date and nothing was recorded.
    pub outcome: RenewalOutcome,
    /// A year of the MRR in force from the renewal date on (zero when it
    /// ended by then): what the renewal kept.
    pub arr_after: Minor,
    /// Whether the renewal date has passed, so `arr_after` is what happened
    /// rather than what is scheduled.
    pub passed: bool,
}

impl RenewalEntry {
    /// The entry of `s` as of `now`, with the `recorded` outcome and the
    /// likelihood `scored` by scoring (`default_bp` when scoring had none).
    pub fn new(
        s: &Subscription,
        recorded: RenewalOutcome,
        scored: Option<i64>,
        default_bp: i64,
        now: Instant,
    ) -> Self {
        let likelihood = scored.unwrap_or(default_bp);
        let renewal_at = s.term_end.unwrap_or_default();
        let amount = s
            .mrr_at(renewal_at.plus_micros(-1))
            .get()
            .saturating_mul(MONTHS_PER_YEAR);
        let arr_after = s.mrr_at(renewal_at).get().saturating_mul(MONTHS_PER_YEAR);
        let forecast =
            i64::try_from((i128::from(amount) * i128::from(likelihood) * 2 + 10_000) / 20_000)
                .unwrap_or(i64::MAX);
        let cancelled = s
            .cancellation
            .as_ref()
            .is_some_and(|c| c.effective_at <= renewal_at);
        let outcome = match (recorded, cancelled) {
            (RenewalOutcome::Unspecified, true) => RenewalOutcome::Churned,
            (o, _) => o,
        };
        Self {
            subscription_id: s.id,
            account_id: s.account_id,
            currency: s.currency.clone(),
            renewal_at,
            days_to_renewal: renewal_at.days_since(now),
            amount_at_stake: Minor(amount),
            likelihood_bp: likelihood,
            likelihood_from_scoring: scored.is_some(),
            forecast: Minor(forecast),
            outcome,
            arr_after: Minor(arr_after),
            passed: renewal_at <= now,
        }
    }
}

/// Who an account's book belongs to, as revenue last recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookPeople {
    /// The owner who closed the deal.
    pub owner: String,
    /// The customer success manager ("" for none).
    pub csm: String,
}

/// Whose book a summary cuts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookGrouping {
    /// The account's customer success manager.
    Csm,
    /// The account's owner.
    Owner,
}

impl BookPeople {
    /// The person whose book the account is in under `grouping`.
    pub fn person(&self, grouping: BookGrouping) -> &str {
        match grouping {
            BookGrouping::Csm => &self.csm,
            BookGrouping::Owner => &self.owner,
        }
    }
}

/// The renewals of one person's book, in the reporting currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewalSummary {
    /// The CSM or owner ("" for none).
    pub person: String,
    /// Renewals in the window.
    pub renewals: i64,
    /// Sum of the amounts at stake.
    pub amount_at_stake: Minor,
    /// Sum of the forecasts.
    pub forecast: Minor,
    /// Renewals with an outcome.
    pub decided: i64,
    /// The renewal rate's figures over the renewals whose date has passed.
    pub rate: RenewalRate,
}

/// What the renewals whose date has passed kept, in the reporting currency
/// (docs/design.md 7.1, "Renewal rate"): each renewal's ARR at stake (a year
/// of the MRR just before its date) splits into the part renewed and the
/// part churned; what it renewed above or below its stake is shown apart, so
/// `renewed + contraction + churned = due` and `renewed + expansion` is what
/// the net rate keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenewalRate {
    /// Renewals whose date has passed.
    pub due: i64,
    /// Their ARR at stake.
    pub due_arr: Minor,
    /// The part of it renewed: the smaller of the stake and the ARR in force
    /// from the renewal date on, for renewals still paying then.
    pub renewed_arr: Minor,
    /// ARR above the stake where a renewal kept more.
    pub expansion_arr: Minor,
    /// ARR below the stake where a renewal kept less but still paid.
    pub contraction_arr: Minor,
    /// The stake of renewals paying nothing from their date on.
    pub churned_arr: Minor,
}

impl RenewalRate {
    /// Adds one passed renewal: `stake` before its date, `after` from it on.
    pub fn add(&mut self, stake: Minor, after: Minor) {
        self.due += 1;
        self.due_arr += stake;
        if after.get() <= 0 {
            self.churned_arr += stake;
        } else if after.get() >= stake.get() {
            self.renewed_arr += stake;
            self.expansion_arr += after - stake;
        } else {
            self.renewed_arr += after;
            self.contraction_arr += stake - after;
        }
    }

    /// Renewed ARR / ARR due (gross: expansion left out); `None` while no
    /// ARR was due.
    pub fn gross(&self) -> Option<f64> {
        (self.due_arr.get() > 0).then(|| self.renewed_arr.get() as f64 / self.due_arr.get() as f64)
    }

    /// (Renewed + expansion) / ARR due; `None` while no ARR was due.
    pub fn net(&self) -> Option<f64> {
        (self.due_arr.get() > 0).then(|| {
            (self.renewed_arr.get() + self.expansion_arr.get()) as f64 / self.due_arr.get() as f64
        })
    }
}

/// Sums the renewal `entries` per person of `grouping` (accounts revenue has
/// no people for are in the book of ""), keeping only `only` when given.
/// Each amount converts into the reporting currency at its renewal date;
/// the largest amount at stake comes first, ties by person.
pub fn summarize_renewals(
    entries: &[RenewalEntry],
    people: &std::collections::HashMap<AccountId, BookPeople>,
    grouping: BookGrouping,
    only: Option<&str>,
    fx: &FxTable,
) -> Result<Vec<RenewalSummary>, Error> {
    let mut books: BTreeMap<&str, RenewalSummary> = BTreeMap::new();
    for e in entries {
        let person = people.get(&e.account_id).map_or("", |p| p.person(grouping));
        if only.is_some_and(|o| o != person) {
            continue;
        }
        let book = books.entry(person).or_insert_with(|| RenewalSummary {
            person: person.to_owned(),
            ..RenewalSummary::default()
        });
        book.renewals += 1;
        book.amount_at_stake += fx.convert(e.amount_at_stake, &e.currency, e.renewal_at)?;
        book.forecast += fx.convert(e.forecast, &e.currency, e.renewal_at)?;
        book.decided += i64::from(e.outcome != RenewalOutcome::Unspecified);
        // Nothing at stake (cancelled before the date) is no renewal.
        if e.passed && e.amount_at_stake.get() > 0 {
            book.rate.add(
                fx.convert(e.amount_at_stake, &e.currency, e.renewal_at)?,
                fx.convert(e.arr_after, &e.currency, e.renewal_at)?,
            );
        }
    }
    let mut out: Vec<RenewalSummary> = books.into_values().collect();
    out.sort_by(|a, b| {
        b.amount_at_stake
            .cmp(&a.amount_at_stake)
            .then_with(|| a.person.cmp(&b.person))
    });
    Ok(out)
}

/// CAC, LTV, LTV:CAC and payback of one month (docs/design.md section 2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitEconomics {
    /// Sales and marketing spend of the month.
    pub spend: Minor,
    /// New paying accounts in the month.
    pub new_customers: i64,
    /// Spend per new customer, rounded half up.
    pub cac: Minor,
    /// Average revenue per paying account at the month's end.
    pub arpa: Minor,
    /// Gross margin as a fraction.
    pub gross_margin: f64,
    /// Mean customer churn rate of the months with paying accounts.
    pub average_monthly_churn_rate: f64,
    /// Lifetime value: ARPA x margin / churn.
    pub ltv: Minor,
    /// LTV over CAC (0 when either is 0).
    pub ltv_to_cac: f64,
    /// Months of contribution that pay the CAC back.
    pub cac_payback_months: f64,
}

impl UnitEconomics {
    /// From the month's spend and margin and the waterfall of the months up
    /// to it (the last period is the month itself).
    pub fn new(spend: Minor, margin_bp: i32, periods: &[Period]) -> Self {
        let rates: Vec<f64> = periods
            .iter()
            .filter(|p| p.paying_start > 0)
            .map(Period::customer_churn_rate)
            .collect();
        let churn = if rates.is_empty() {
            0.0
        } else {
            rates.iter().sum::<f64>() / rates.len() as f64
        };
        let (arpa, new_customers) = periods.last().map_or((Minor::ZERO, 0), |p| {
            (p.arpa(), p.tally(MovementKind::New).count)
        });
        let cac = if new_customers > 0 {
            (2 * i128::from(spend.get()) + i128::from(new_customers))
                / (2 * i128::from(new_customers))
        } else {
            0
        };
        let cac = i64::try_from(cac).unwrap_or(i64::MAX);
        let margin = f64::from(margin_bp) / 10_000.0;
        let contribution = arpa.get() as f64 * margin;
        let ltv = if churn > 0.0 {
            (contribution / churn).round() as i64
        } else {
            0
        };
        Self {
            spend,
            new_customers,
            cac: Minor(cac),
            arpa,
            gross_margin: margin,
            average_monthly_churn_rate: churn,
            ltv: Minor(ltv),
            ltv_to_cac: if ltv > 0 && cac > 0 {
                ltv as f64 / cac as f64
            } else {
                0.0
            },
            cac_payback_months: if contribution > 0.0 {
                cac as f64 / contribution
            } else {
                0.0
            },
        }
    }
}

/// An account with its full subscription history and where it reports.
#[derive(Debug, Clone)]
pub struct AccountHistory {
    /// The account.
    pub account_id: AccountId,
    /// Where the account reports.
    pub segment: Segment,
    /// The owner who closed the deal.
    pub owner: String,
    /// The customer success manager looking after it ("" for none).
    pub csm: String,
    /// The account as the accounts service answered for this write, which
    /// revenue records among the account's versions (the cuts read them);
    /// `None` for a recompute that did not ask (a re-valuation).
    pub version: Option<AccountVersion>,
    /// Every subscription of the account.
    pub subscriptions: Vec<Subscription>,
}

/// How an account's movements changed when it was recomputed.
#[derive(Debug, Clone, Default)]
pub struct Revision {
    /// Movements that did not exist before.
    pub recorded: Vec<Movement>,
    /// Movements that no longer exist.
    pub retracted: Vec<Movement>,
}

/// A recorded movement with its account and the segment it was derived in.
#[derive(Debug, Clone)]
pub struct StoredMovement {
    /// The account.
    pub account_id: AccountId,
    /// The movement.
    pub movement: Movement,
    /// The account's segment when the movement was derived.
    pub segment: Segment,
}

/// A recorded invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// Id.
    pub id: Uuid,
    /// The account.
    pub account_id: AccountId,
    /// The subscription, when tied to one.
    pub subscription_id: Option<SubscriptionId>,
    /// ISO-4217 code.
    pub currency: String,
    /// The amount due.
    pub amount: Minor,
    /// Due.
    pub due_at: Instant,
    /// Paid, when it was.
    pub paid_at: Option<Instant>,
    /// The billing system's id of the invoice (Stripe's `in_...`), which
    /// later records of the same invoice name to add its payment.
    pub external_id: Option<String>,
}

impl Invoice {
    /// Late when paid after its due date, or unpaid past it at `now`.
    pub fn is_late(&self, now: Instant) -> bool {
        self.paid_at
            .map_or(self.due_at < now, |paid| paid > self.due_at)
    }
}

mod cuts;
mod import;
mod trials;
pub use cuts::*;
pub use import::*;
pub use trials::*;

#[cfg(test)]
mod tests;
