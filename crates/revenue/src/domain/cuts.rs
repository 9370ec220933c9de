//! Cuts (docs/design.md, "Cuts"): the dimensions every revenue report is
//! filtered and grouped by, and which value a movement or an instant of an
//! account's MRR belongs to.
//!
//! An account's dimensions at an instant are those of the account version in
//! force then (the latest version revenue recorded whose change time is at
//! or before the instant; before the first recorded version, the first),
//! with the plan of its largest paying subscription at that instant. When a
//! value changes while the account pays, its MRR moves from the old value to
//! the new one at that instant (a *move*, shown as `moved_mrr` in a cut
//! waterfall); a movement belongs to the values in force just after it,
//! except a churn, which belongs to the values it left.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    FxTable, Granularity, Instant, Minor, Month, Movement, MovementKind, Period, Segment,
    Subscription, Tally, cut_waterfall, month_of,
};

/// A dimension of the cuts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    /// The account's segment.
    Segment,
    /// The plan of the account's largest paying subscription.
    Plan,
    /// The owner who closed the deal.
    Owner,
    /// The customer success manager.
    Csm,
    /// A tag (an account may carry several).
    Tag,
    /// A declared custom attribute, by name.
    Attribute(String),
}

impl Dimension {
    /// The stored key of the dimension (`attr:<name>` for an attribute).
    pub fn key(&self) -> String {
        match self {
            Self::Segment => "segment".to_owned(),
            Self::Plan => "plan".to_owned(),
            Self::Owner => "owner".to_owned(),
            Self::Csm => "csm".to_owned(),
            Self::Tag => "tag".to_owned(),
            Self::Attribute(name) => format!("attr:{name}"),
        }
    }

    /// Whether an account may have several values at once (its groups may
    /// add up to more than the total).
    pub fn multi_valued(&self) -> bool {
        matches!(self, Self::Tag)
    }

    /// Whether the accounts without a value are not stored but are what the
    /// total leaves over the values (the "" group of an attribute).
    pub fn remainder_is_empty_value(&self) -> bool {
        matches!(self, Self::Attribute(_))
    }
}

/// The cut value of a segment.
pub fn segment_value(segment: Segment) -> &'static str {
    match segment {
        Segment::Smb => "smb",
        Segment::MidMarket => "mid_market",
        Segment::Enterprise => "enterprise",
        Segment::Unspecified => "",
    }
}

/// The segment of a cut value.
pub fn parse_segment_value(value: &str) -> Option<Segment> {
    [Segment::Smb, Segment::MidMarket, Segment::Enterprise]
        .into_iter()
        .find(|s| segment_value(*s) == value)
}

/// One version of an account as revenue recorded it from the accounts
/// service: from `effective_at` (when the accounts service made the
/// change) on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountVersion {
    /// The accounts service's version number.
    pub version: i64,
    /// When the version was made.
    pub effective_at: Instant,
    /// The account's dimensions in this version (plan empty).
    pub cuts: AccountCuts,
}

/// An account's values of every dimension at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccountCuts {
    /// Segment.
    #[serde(skip, default = "unspecified")]
    pub segment: Segment,
    /// Plan ("" when unknown).
    #[serde(skip)]
    pub plan: String,
    /// Owner.
    #[serde(skip)]
    pub owner: String,
    /// CSM.
    #[serde(skip)]
    pub csm: String,
    /// Tags, sorted.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tags: BTreeSet<String>,
    /// Attribute values as text, by attribute name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

fn unspecified() -> Segment {
    Segment::Unspecified
}

/// A (dimension key, value) pair.
pub type CutValue = (String, String);

impl AccountCuts {
    /// Every (dimension key, value) pair the account is in: one per
    /// single-valued dimension, one per tag ("" without tags), one per
    /// attribute with a value.
    pub fn pairs(&self) -> BTreeSet<CutValue> {
        let mut out = BTreeSet::new();
        out.insert((
            Dimension::Segment.key(),
            segment_value(self.segment).to_owned(),
        ));
        out.insert((Dimension::Plan.key(), self.plan.clone()));
        out.insert((Dimension::Owner.key(), self.owner.clone()));
        out.insert((Dimension::Csm.key(), self.csm.clone()));
        if self.tags.is_empty() {
            out.insert((Dimension::Tag.key(), String::new()));
        }
        for tag in &self.tags {
            out.insert((Dimension::Tag.key(), tag.clone()));
        }
        for (name, value) in &self.attributes {
            out.insert((Dimension::Attribute(name.clone()).key(), value.clone()));
        }
        out
    }

    /// The values of one dimension ("" when the account has none).
    pub fn values_of(&self, dimension: &Dimension) -> Vec<String> {
        match dimension {
            Dimension::Segment => vec![segment_value(self.segment).to_owned()],
            Dimension::Plan => vec![self.plan.clone()],
            Dimension::Owner => vec![self.owner.clone()],
            Dimension::Csm => vec![self.csm.clone()],
            Dimension::Tag if self.tags.is_empty() => vec![String::new()],
            Dimension::Tag => self.tags.iter().cloned().collect(),
            Dimension::Attribute(name) => {
                vec![self.attributes.get(name).cloned().unwrap_or_default()]
            }
        }
    }

    /// Tags and attributes as stored beside a paying span (JSON).
    pub fn extras_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Tags and attributes from their stored JSON (`None` when malformed).
    pub fn with_extras(mut self, json: &str) -> Option<Self> {
        let extras: AccountCuts = serde_json::from_str(json).ok()?;
        self.tags = extras.tags;
        self.attributes = extras.attributes;
        Some(self)
    }
}

/// The version in force at `t`: the latest one made at or before `t`, or
/// the first one for an instant before every version. `versions` are in
/// version order.
pub fn version_at(versions: &[AccountVersion], t: Instant) -> Option<&AccountVersion> {
    versions
        .iter()
        .rev()
        .find(|v| v.effective_at <= t)
        .or(versions.first())
}

/// The plan of the largest paying subscription at `t` (its MRR in the
/// reporting currency; ties to the plan first in alphabetical order), or
/// `None` when none pays.
pub fn plan_at(subscriptions: &[Subscription], fx: &FxTable, t: Instant) -> Option<String> {
    let mut best: Option<(Minor, &str)> = None;
    for s in subscriptions {
        let mrr = s.mrr_at(t);
        if !mrr.is_positive() {
            continue;
        }
        let mrr = fx.convert(mrr, &s.currency, t).unwrap_or(mrr);
        let plan = s.terms_at(t).map_or("", |terms| terms.plan.as_str());
        let better = best.is_none_or(|(most, name)| mrr > most || (mrr == most && plan < name));
        if better {
            best = Some((mrr, plan));
        }
    }
    best.map(|(_, plan)| plan.to_owned())
}

/// A span of time in which an account paid `mrr` with the same values of
/// every dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutSpan {
    /// Start, inclusive.
    pub from: Instant,
    /// End, exclusive; `None` while still paying.
    pub to: Option<Instant>,
    /// MRR during the span.
    pub mrr: Minor,
    /// The values.
    pub cuts: AccountCuts,
}

/// The paying spans of an account split wherever one of its values
/// changes, from its movements, subscriptions and recorded versions.
pub fn cut_spans(
    movements: &[Movement],
    subscriptions: &[Subscription],
    versions: &[AccountVersion],
    fx: &FxTable,
) -> Vec<CutSpan> {
    let by_instant: BTreeMap<Instant, &Movement> = movements.iter().map(|m| (m.at, m)).collect();
    let instants: BTreeSet<Instant> = movements
        .iter()
        .map(|m| m.at)
        .chain(versions.iter().map(|v| v.effective_at))
        .chain(subscriptions.iter().flat_map(|s| s.breakpoints()))
        .collect();
    let mut spans: Vec<CutSpan> = Vec::new();
    let mut plan = String::new();
    let mut mrr = Minor::ZERO;
    for t in instants {
        if let Some(p) = plan_at(subscriptions, fx, t) {
            plan = p;
        }
        let mut cuts = version_at(versions, t)
            .map(|v| v.cuts.clone())
            .unwrap_or_default();
        cuts.plan = plan.clone();
        let moved = by_instant.get(&t).copied();
        let changed = spans
            .last()
            .is_some_and(|s| s.to.is_none() && s.cuts != cuts);
        if moved.is_none() && !changed {
            continue;
        }
        if let Some(m) = moved {
            mrr = m.after;
        }
        if let Some(open) = spans.last_mut()
            && open.to.is_none()
        {
            open.to = Some(t);
        }
        if mrr.is_positive() {
            spans.push(CutSpan {
                from: t,
                to: None,
                mrr,
                cuts,
            });
        }
    }
    spans
}

/// Kind code of a move in the cut roll-up (movement kinds are 1..=5).
pub const MOVED: i32 = 0;

/// Key of the cut roll-up: dimension key, value, month, kind code
/// ([`MOVED`] for moves).
pub type CutKey = (String, String, Month, i32);

/// Adds `sign` x what an account's movements and spans put in the cut
/// roll-up: each movement in the values it belongs to, and a move of the
/// MRR (and of the paying account) wherever consecutive spans differ.
pub fn add_cut_contributions(
    out: &mut BTreeMap<CutKey, Tally>,
    movements: &[Movement],
    spans: &[CutSpan],
    sign: i64,
) {
    let starting: BTreeMap<Instant, &CutSpan> = spans.iter().map(|s| (s.from, s)).collect();
    let ending: BTreeMap<Instant, &CutSpan> = spans
        .iter()
        .filter_map(|s| s.to.map(|to| (to, s)))
        .collect();
    let mut add = |pairs: &BTreeSet<CutValue>, month: Month, kind: i32, amount: Minor, n: i64| {
        for (dimension, value) in pairs {
            let t = out
                .entry((dimension.clone(), value.clone(), month, kind))
                .or_default();
            t.amount += Minor(sign * amount.get());
            t.count += sign * n;
        }
    };
    for m in movements {
        let span = if m.kind == MovementKind::Churn {
            ending.get(&m.at)
        } else {
            starting.get(&m.at)
        };
        if let Some(span) = span {
            add(
                &span.cuts.pairs(),
                month_of(m.at),
                m.kind.code(),
                m.amount,
                1,
            );
        }
    }
    for s in spans {
        let Some(next) = s.to.and_then(|to| starting.get(&to)) else {
            continue;
        };
        if next.cuts == s.cuts {
            continue;
        }
        let (old, new) = (s.cuts.pairs(), next.cuts.pairs());
        let month = month_of(next.from);
        add(
            &old.difference(&new).cloned().collect(),
            month,
            MOVED,
            -s.mrr,
            -1,
        );
        add(
            &new.difference(&old).cloned().collect(),
            month,
            MOVED,
            s.mrr,
            1,
        );
    }
}

/// How a report is cut.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReportCut {
    /// Not cut.
    #[default]
    Uncut,
    /// Only one value of one dimension.
    Filter(Dimension, String),
    /// The total and a break-down by one dimension.
    Group(Dimension),
}

/// How a month's tally of `kind` (a movement kind code or [`MOVED`])
/// changes the number of paying accounts.
fn paying_delta(kind: i32, count: i64) -> i64 {
    match MovementKind::from_code(kind) {
        _ if kind == MOVED => count,
        Some(MovementKind::New | MovementKind::Reactivation) => count,
        Some(MovementKind::Churn) => -count,
        _ => 0,
    }
}

/// The waterfall of one value over months `first..=last` from its roll-up
/// rows (month, kind code, tally) up to `last`.
pub fn cut_periods(
    rows: impl IntoIterator<Item = (Month, i32, Tally)>,
    first: Month,
    last: Month,
    granularity: Granularity,
) -> Vec<Period> {
    let mut opening = (Minor::ZERO, 0i64);
    let mut monthly: BTreeMap<(Month, MovementKind), Tally> = BTreeMap::new();
    let mut moved: BTreeMap<Month, Tally> = BTreeMap::new();
    for (month, kind, t) in rows {
        if month > last {
            continue;
        }
        if month < first {
            opening.0 += t.amount;
            opening.1 += paying_delta(kind, t.count);
            continue;
        }
        let slot = if kind == MOVED {
            moved.entry(month).or_default()
        } else if let Some(k) = MovementKind::from_code(kind) {
            monthly.entry((month, k)).or_default()
        } else {
            continue;
        };
        slot.amount += t.amount;
        slot.count += t.count;
    }
    cut_waterfall(opening, &monthly, &moved, first, last, granularity)
}

#[cfg(test)]
mod tests {
    use super::super::{AccountId, NewSubscription, SubscriptionId, Terms, movements};
    use super::*;
    use crate::domain::Interval;
    use uuid::Uuid;

    fn t(micros: i64) -> Instant {
        Instant::from_micros(micros)
    }

    fn subscription(plan: &str, start: i64, price: i64) -> Subscription {
        Subscription::create(
            SubscriptionId(Uuid::from_u128(start as u128)),
            NewSubscription {
                account_id: AccountId(Uuid::from_u128(1)),
                currency: "USD".to_owned(),
                interval: Interval::Month,
                start: t(start),
                trial_end: None,
                term_end: None,
                terms: Terms {
                    plan: plan.to_owned(),
                    quantity: 1,
                    unit_price: Minor(price),
                    discount_bp: 0,
                },
            },
        )
    }

    fn version(version: i64, at: i64, region: &str) -> AccountVersion {
        AccountVersion {
            version,
            effective_at: t(at),
            cuts: AccountCuts {
                segment: Segment::Smb,
                owner: "ana".to_owned(),
                attributes: [("region".to_owned(), region.to_owned())].into(),
                ..AccountCuts::default()
            },
        }
    }

    fn tally(amount: i64, count: i64) -> Tally {
        Tally {
            amount: Minor(amount),
            count,
        }
    }

    #[test]
    fn a_value_changed_while_paying_moves_the_mrr_and_later_movements_follow_it()
    -> Result<(), crate::domain::Error> {
        // 10.00 of "basic" from 10, 15.00 of "pro" from 30 (the larger
        // plan); the region goes from eu to us at 20.
        let subs = [
            subscription("basic", 10, 1_000),
            subscription("pro", 30, 1_500),
        ];
        let fx = FxTable::new("USD");
        let ms = movements(&subs, &fx)?;
        let versions = [version(1, 0, "eu"), version(2, 20, "us")];
        let spans = cut_spans(&ms, &subs, &versions, &fx);
        let shape: Vec<(i64, Option<i64>, i64, String, String)> = spans
            .iter()
            .map(|s| {
                (
                    s.from.micros(),
                    s.to.map(Instant::micros),
                    s.mrr.get(),
                    s.cuts.plan.clone(),
                    s.cuts.attributes["region"].clone(),
                )
            })
            .collect();
        let row = |from, to, mrr, plan: &str, region: &str| {
            (from, to, mrr, plan.to_owned(), region.to_owned())
        };
        assert_eq!(
            shape,
            [
                row(10, Some(20), 1_000, "basic", "eu"),
                row(20, Some(30), 1_000, "basic", "us"),
                row(30, None, 2_500, "pro", "us"),
            ]
        );
        let mut out = BTreeMap::new();
        add_cut_contributions(&mut out, &ms, &spans, 1);
        let month = month_of(t(0));
        let get = |d: &str, v: &str, k: i32| {
            out.get(&(d.to_owned(), v.to_owned(), month, k))
                .copied()
                .unwrap_or_default()
        };
        let (new, expansion) = (MovementKind::New.code(), MovementKind::Expansion.code());
        assert_eq!(get("attr:region", "eu", new), tally(1_000, 1));
        assert_eq!(get("attr:region", "eu", MOVED), tally(-1_000, -1));
        assert_eq!(get("attr:region", "us", MOVED), tally(1_000, 1));
        assert_eq!(get("attr:region", "us", expansion), tally(1_500, 1));
        // The plan changes with the expansion: basic's 10.00 moves to pro,
        // then pro gains the 15.00.
        assert_eq!(get("plan", "basic", new), tally(1_000, 1));
        assert_eq!(get("plan", "basic", MOVED), tally(-1_000, -1));
        assert_eq!(get("plan", "pro", MOVED), tally(1_000, 1));
        assert_eq!(get("plan", "pro", expansion), tally(1_500, 1));
        // Unchanged values see only the movements.
        assert_eq!(get("owner", "ana", MOVED), Tally::default());
        assert_eq!(get("segment", "smb", new), tally(1_000, 1));
        // Taking the same history out again leaves nothing.
        add_cut_contributions(&mut out, &ms, &spans, -1);
        assert!(out.values().all(|t| *t == Tally::default()));
        Ok(())
    }

    #[test]
    fn a_churn_belongs_to_the_values_it_left_and_a_month_adds_its_moves() {
        // eu: 10.00 in at the start of the month, moved out; us: moved in,
        // then churned.
        let month = month_of(t(0));
        let rows = [
            (month, MovementKind::New.code(), tally(1_000, 1)),
            (month, MOVED, tally(1_000, 1)),
            (month, MovementKind::Churn.code(), tally(-1_000, 1)),
        ];
        let periods = cut_periods(rows, month, month + 1, Granularity::Month);
        assert_eq!(periods[0].moved, tally(1_000, 1));
        assert_eq!(periods[0].end_mrr, Minor(1_000));
        assert_eq!(periods[0].paying_end, 1);
        assert_eq!(periods[1].start_mrr, Minor(1_000));
        assert_eq!(periods[1].paying_start, 1);
        let mut cuts = AccountCuts::default();
        assert_eq!(cuts.values_of(&Dimension::Tag), [""]);
        cuts.tags = ["b".to_owned(), "a".to_owned()].into();
        assert_eq!(cuts.values_of(&Dimension::Tag), ["a", "b"]);
        assert_eq!(
            cuts.values_of(&Dimension::Attribute("region".to_owned())),
            [""]
        );
    }
}
