//! Cuts of the revenue reports (docs/design.md, "Cuts"): the waterfall and
//! retention filtered and grouped by plan, segment, owner, CSM, tag and a
//! declared attribute, checked against an independent computation over the
//! raw rows this test writes down itself (each subscription's MRR from each
//! instant on, and each account as revenue saw it at each write), with an
//! attribute, a CSM and the tags changed mid-period and back-dated changes.

use std::collections::{BTreeMap, BTreeSet};

use bowtie_proto::accounts::{
    Account, AttributeDeclaration, AttributeType, AttributeValue, CreateAccountRequest,
    DeclareAttributeRequest, UpdateAccountRequest, attribute_value,
};
use bowtie_proto::common::Segment;
use bowtie_proto::revenue::{
    CancelSubscriptionRequest, Cut, CutDimension, GetCohortRetentionRequest, GetMrrReportRequest,
    GetRetentionRequest, GroupBy, MrrPeriod, Subscription, Terms,
};
use bowtie_testkit::revenue::*;
use bowtie_testkit::{AccountsClient, TestDatabase, assert, backend_test, fixtures::mask};
use chrono::{Datelike, TimeZone, Utc};
use prost_types::Timestamp;

backend_test!(
    every_cut_of_the_waterfall_and_retention_equals_an_independent_computation,
    a_bad_cut_is_an_invalid_argument_naming_its_field,
);

const DAY: i64 = 86_400_000_000;

/// An account's values as revenue saw them at one write.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    segment: &'static str,
    owner: String,
    csm: String,
    tags: Vec<String>,
    region: Option<String>,
}

/// One subscription as raw rows: its plan, its MRR from each instant on
/// (microseconds), and the instant it ends.
struct Raw {
    account: usize,
    plan: &'static str,
    pieces: Vec<(i64, i64)>,
    cancel: Option<i64>,
}

impl Raw {
    fn mrr_at(&self, t: i64) -> i64 {
        if self.cancel.is_some_and(|c| t >= c) {
            return 0;
        }
        self.pieces
            .iter()
            .filter(|(from, _)| *from <= t)
            .max_by_key(|(from, _)| *from)
            .map_or(0, |(_, mrr)| *mrr)
    }
}

/// Everything the independent computation reads.
#[derive(Default)]
struct Book {
    subs: Vec<Raw>,
    /// Per account: (version, effective instant, values) of each write.
    seen: Vec<Vec<(i64, i64, Seen)>>,
}

impl Book {
    fn mrr(&self, account: usize, t: i64) -> i64 {
        self.subs
            .iter()
            .filter(|s| s.account == account)
            .map(|s| s.mrr_at(t))
            .sum()
    }

    /// The plan of the largest paying subscription (ties: first name).
    fn plan(&self, account: usize, t: i64) -> String {
        let mut best: Option<(i64, &str)> = None;
        for s in self.subs.iter().filter(|s| s.account == account) {
            let m = s.mrr_at(t);
            if m > 0 && best.is_none_or(|(bm, bp)| m > bm || (m == bm && s.plan < bp)) {
                best = Some((m, s.plan));
            }
        }
        best.map_or_else(String::new, |(_, p)| p.to_owned())
    }

    /// The account's values of `dimension` at `t`: the latest version seen
    /// at or before `t`, else the first.
    fn values(&self, account: usize, t: i64, dimension: CutDimension) -> Vec<String> {
        let versions = &self.seen[account];
        let v = versions
            .iter()
            .rev()
            .find(|(_, at, _)| *at <= t)
            .or(versions.first())
            .map(|(_, _, s)| s.clone())
            .unwrap_or(Seen {
                segment: "",
                owner: String::new(),
                csm: String::new(),
                tags: Vec::new(),
                region: None,
            });
        match dimension {
            CutDimension::Segment => vec![v.segment.to_owned()],
            CutDimension::Plan => vec![self.plan(account, t)],
            CutDimension::Owner => vec![v.owner],
            CutDimension::Csm => vec![v.csm],
            CutDimension::Tag if v.tags.is_empty() => vec![String::new()],
            CutDimension::Tag => v.tags,
            _ => vec![v.region.unwrap_or_default()],
        }
    }

    /// (MRR, paying accounts) at `t` of the accounts whose value is `value`.
    fn group_at(&self, value: &str, t: i64, dimension: CutDimension) -> (i64, i64) {
        let mut out = (0, 0);
        for account in 0..self.seen.len() {
            let mrr = self.mrr(account, t);
            if mrr > 0
                && self
                    .values(account, t, dimension)
                    .iter()
                    .any(|v| v == value)
            {
                out.0 += mrr;
                out.1 += 1;
            }
        }
        out
    }
}

fn micros(ts: &Option<Timestamp>) -> i64 {
    ts.as_ref()
        .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos / 1000))
}

fn ts(us: i64) -> Timestamp {
    Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn text(s: &str) -> AttributeValue {
    AttributeValue {
        kind: Some(attribute_value::Kind::StringValue(s.to_owned())),
    }
}

fn plan_terms(plan: &str, quantity: i64, price: i64) -> Terms {
    Terms {
        plan: plan.to_owned(),
        ..terms(quantity, price, "USD")
    }
}

/// The first instant after the month labelled "YYYY-MM".
fn month_end(label: &str) -> i64 {
    let (y, m) = label.split_at(4);
    let (y, m): (i32, u32) = (y.parse().unwrap_or(0), m[1..].parse().unwrap_or(0));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    micros(&Some(day(y, m, 1))) - 1
}

fn label(us: i64) -> String {
    let t = Utc.timestamp_micros(us).single().unwrap_or_default();
    format!("{:04}-{:02}", t.year(), t.month())
}

fn group_by(dimension: CutDimension) -> Option<GroupBy> {
    Some(GroupBy {
        dimension: dimension as i32,
        attribute: if dimension == CutDimension::Attribute {
            "region".to_owned()
        } else {
            String::new()
        },
    })
}

fn cut(dimension: CutDimension, value: &str) -> Option<Cut> {
    Some(Cut {
        dimension: dimension as i32,
        attribute: if dimension == CutDimension::Attribute {
            "region".to_owned()
        } else {
            String::new()
        },
        value: value.to_owned(),
    })
}

/// start + new + reactivation + expansion - contraction - churn + moved = end.
fn adds_up(p: &MrrPeriod) -> bool {
    minor(&p.start_mrr) + minor(&p.new_mrr) + minor(&p.reactivation_mrr) + minor(&p.expansion_mrr)
        - minor(&p.contraction_mrr)
        - minor(&p.churn_mrr)
        + minor(&p.moved_mrr)
        == minor(&p.end_mrr)
}

struct Scenario {
    accounts: AccountsClient,
    client: RevenueClient,
    book: Book,
    current: Vec<Account>,
}

impl Scenario {
    async fn create_account(&mut self, account: Account) -> anyhow::Result<()> {
        let created = self
            .accounts
            .create_account(CreateAccountRequest {
                account: Some(account),
                idempotency_key: String::new(),
            })
            .await?
            .into_inner()
            .account
            .unwrap_or_default();
        self.current.push(created);
        self.book.seen.push(Vec::new());
        Ok(())
    }

    async fn update(&mut self, i: usize, account: Account, paths: &[&str]) -> anyhow::Result<()> {
        let updated = self
            .accounts
            .update_account(UpdateAccountRequest {
                account: Some(Account {
                    id: self.current[i].id.clone(),
                    ..account
                }),
                update_mask: Some(mask(paths)),
                expected_version: None,
                idempotency_key: String::new(),
            })
            .await?
            .into_inner()
            .account
            .unwrap_or_default();
        self.current[i] = updated;
        Ok(())
    }

    /// Notes the account as revenue saw it at a write.
    fn wrote(&mut self, i: usize) {
        let a = &self.current[i];
        let segment = match Segment::try_from(a.segment) {
            Ok(Segment::Smb) => "smb",
            Ok(Segment::MidMarket) => "mid_market",
            _ => "enterprise",
        };
        let region = a.attributes.get("region").and_then(|v| match &v.kind {
            Some(attribute_value::Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        });
        let seen = Seen {
            segment,
            owner: a.owner.clone(),
            csm: a.csm.clone(),
            tags: a.tags.clone(),
            region,
        };
        if self.book.seen[i].iter().all(|(v, _, _)| *v != a.version) {
            self.book.seen[i].push((a.version, micros(&a.update_time), seen));
        }
    }

    async fn subscribe(
        &mut self,
        i: usize,
        plan: &'static str,
        at: i64,
        quantity: i64,
        price: i64,
    ) -> anyhow::Result<(String, usize)> {
        let created = self
            .client
            .create_subscription(create(Subscription {
                terms: Some(plan_terms(plan, quantity, price)),
                ..monthly(&self.current[i].id, ts(at), quantity, price)
            }))
            .await?
            .into_inner()
            .subscription
            .unwrap_or_default();
        self.wrote(i);
        self.book.subs.push(Raw {
            account: i,
            plan,
            pieces: vec![(at, quantity * price)],
            cancel: None,
        });
        Ok((created.id, self.book.subs.len() - 1))
    }

    async fn change(
        &mut self,
        (id, raw): &(String, usize),
        at: i64,
        quantity: i64,
        price: i64,
    ) -> anyhow::Result<()> {
        let plan = self.book.subs[*raw].plan;
        self.client
            .change_subscription(change(id, ts(at), plan_terms(plan, quantity, price)))
            .await?;
        let account = self.book.subs[*raw].account;
        self.wrote(account);
        let pieces = &mut self.book.subs[*raw].pieces;
        pieces.retain(|(from, _)| *from != at);
        pieces.push((at, quantity * price));
        Ok(())
    }

    async fn cancel(&mut self, (id, raw): &(String, usize), at: i64) -> anyhow::Result<()> {
        self.client
            .cancel_subscription(CancelSubscriptionRequest {
                id: id.clone(),
                cancellation: cancellation(ts(at)),
                idempotency_key: String::new(),
                expected_version: None,
            })
            .await?;
        let account = self.book.subs[*raw].account;
        self.wrote(account);
        self.book.subs[*raw].cancel = Some(at);
        Ok(())
    }
}

fn person(name: &str, segment: Segment, owner: &str, csm: &str, tags: &[&str]) -> Account {
    Account {
        name: name.to_owned(),
        segment: segment as i32,
        owner: owner.to_owned(),
        csm: csm.to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..Account::default()
    }
}

fn with_region(account: Account, region: &str) -> Account {
    Account {
        attributes: [("region".to_owned(), text(region))].into(),
        ..account
    }
}

async fn every_cut_of_the_waterfall_and_retention_equals_an_independent_computation(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut admin = suite.accounts.accounts_admin();
    admin
        .declare_attribute(DeclareAttributeRequest {
            declaration: Some(AttributeDeclaration {
                name: "region".to_owned(),
                r#type: AttributeType::Enum as i32,
                allowed_values: vec!["eu".to_owned(), "us".to_owned()],
                ..AttributeDeclaration::default()
            }),
            expected_version: None,
        })
        .await?;
    let mut s = Scenario {
        accounts: suite.accounts.accounts(),
        client: suite.client(),
        book: Book::default(),
        current: Vec::new(),
    };
    let now = micros(&Some(Timestamp {
        seconds: Utc::now().timestamp(),
        nanos: 0,
    }));
    s.create_account(with_region(
        person("Acme", Segment::Smb, "ana", "cara", &["vip"]),
        "eu",
    ))
    .await?;
    s.create_account(with_region(
        person("Bolt", Segment::MidMarket, "bo", "cara", &[]),
        "us",
    ))
    .await?;
    s.create_account(person(
        "Core",
        Segment::Enterprise,
        "ana",
        "dan",
        &["vip", "beta"],
    ))
    .await?;
    s.create_account(with_region(
        person("Dune", Segment::Smb, "bo", "", &["beta"]),
        "eu",
    ))
    .await?;
    s.create_account(with_region(
        person("Echo", Segment::MidMarket, "ana", "dan", &[]),
        "us",
    ))
    .await?;
    s.create_account(with_region(
        person("Fjord", Segment::Enterprise, "cy", "cara", &[]),
        "eu",
    ))
    .await?;

    // History up to now, some of it written out of order.
    let a0 = s.subscribe(0, "pro", now - 40 * DAY, 10, 1_000).await?;
    s.subscribe(1, "basic", now - 35 * DAY, 1, 3_000).await?;
    let b_pro = s.subscribe(1, "pro", now - 30 * DAY, 1, 5_000).await?;
    let c = s.subscribe(2, "pro", now - 45 * DAY, 5, 2_000).await?;
    s.cancel(&c, now - 5 * DAY).await?;
    s.change(&c, now - 20 * DAY, 3, 2_000).await?; // back-dated
    let d = s.subscribe(3, "basic", now - 10 * DAY, 2, 1_500).await?;
    let f = s.subscribe(5, "pro", now - 50 * DAY, 3, 3_000).await?;
    s.change(&f, now - 45 * DAY, 2, 3_000).await?; // back-dated
    // Values change now, mid-period; the next writes are future-dated.
    s.update(0, with_region(Account::default(), "us"), &["attributes"])
        .await?;
    s.change(&a0, now + 5 * DAY, 12, 1_000).await?;
    s.update(
        3,
        person("Dune", Segment::Smb, "bo", "dan", &["vip"]),
        &["csm", "tags"],
    )
    .await?;
    s.change(&d, now + 20 * DAY, 4, 1_500).await?;
    s.cancel(&b_pro, now + 10 * DAY).await?;
    s.subscribe(4, "pro", now + 15 * DAY, 1, 9_000).await?;

    let (start_month, end_month) = (label(now - 60 * DAY), label(now + 60 * DAY));
    let request = |cut: Option<Cut>, group_by: Option<GroupBy>| GetMrrReportRequest {
        start_month: start_month.clone(),
        end_month: end_month.clone(),
        cut,
        group_by,
        ..GetMrrReportRequest::default()
    };
    let mut reader = suite.reader();
    let totals = reader
        .get_mrr_report(request(None, None))
        .await?
        .into_inner()
        .periods;
    assert!(totals.len() >= 4);
    let dimensions = [
        CutDimension::Plan,
        CutDimension::Segment,
        CutDimension::Owner,
        CutDimension::Csm,
        CutDimension::Tag,
        CutDimension::Attribute,
    ];
    for dimension in dimensions {
        let report = reader
            .get_mrr_report(request(None, group_by(dimension)))
            .await?
            .into_inner();
        assert_eq!(report.periods, totals, "{dimension:?}: the total is uncut");
        let mut expected_values: BTreeSet<String> = BTreeSet::new();
        for p in &totals {
            for account in 0..s.book.seen.len() {
                if s.book.mrr(account, month_end(&p.period)) > 0 {
                    expected_values.extend(s.book.values(account, month_end(&p.period), dimension));
                }
            }
        }
        let values: BTreeSet<String> = report.groups.iter().map(|g| g.value.clone()).collect();
        assert!(
            expected_values.is_subset(&values),
            "{dimension:?}: groups {values:?}, expected at least {expected_values:?}"
        );
        for g in &report.groups {
            assert_eq!(g.periods.len(), totals.len());
            for (i, p) in g.periods.iter().enumerate() {
                assert!(
                    adds_up(p),
                    "{dimension:?}={}: {} adds up",
                    g.value,
                    p.period
                );
                if i > 0 {
                    assert_eq!(p.start_mrr, g.periods[i - 1].end_mrr);
                }
                let (mrr, paying) = s.book.group_at(&g.value, month_end(&p.period), dimension);
                assert_eq!(
                    (minor(&p.end_mrr), p.paying_accounts_end),
                    (mrr, paying),
                    "{dimension:?}={:?} at the end of {}",
                    g.value,
                    p.period
                );
            }
            // A filter by the value answers exactly the group's waterfall.
            if !(dimension == CutDimension::Attribute && g.value.is_empty()) {
                let filtered = reader
                    .get_mrr_report(request(cut(dimension, &g.value), None))
                    .await?
                    .into_inner();
                assert_eq!(filtered.periods, g.periods, "{dimension:?}={:?}", g.value);
                assert!(filtered.groups.is_empty());
            }
        }
        if dimension != CutDimension::Tag {
            for (i, p) in totals.iter().enumerate() {
                let sum = |f: fn(&MrrPeriod) -> i64| -> i64 {
                    report.groups.iter().map(|g| f(&g.periods[i])).sum()
                };
                assert_eq!(sum(|q| minor(&q.end_mrr)), minor(&p.end_mrr));
                assert_eq!(sum(|q| minor(&q.start_mrr)), minor(&p.start_mrr));
                assert_eq!(sum(|q| minor(&q.new_mrr)), minor(&p.new_mrr));
                assert_eq!(sum(|q| minor(&q.expansion_mrr)), minor(&p.expansion_mrr));
                assert_eq!(
                    sum(|q| minor(&q.contraction_mrr)),
                    minor(&p.contraction_mrr)
                );
                assert_eq!(sum(|q| minor(&q.churn_mrr)), minor(&p.churn_mrr));
                assert_eq!(sum(|q| minor(&q.moved_mrr)), 0, "moves only move MRR");
                assert_eq!(sum(|q| q.paying_accounts_end), p.paying_accounts_end);
            }
        }
    }
    // The mid-period change really moved MRR: Acme's 10,000 left "eu".
    let by_region = reader
        .get_mrr_report(request(cut(CutDimension::Attribute, "eu"), None))
        .await?
        .into_inner();
    let this_month = label(now);
    let moved = by_region
        .periods
        .iter()
        .find(|p| p.period == this_month)
        .map(|p| minor(&p.moved_mrr));
    assert_eq!(moved, Some(-10_000));

    // Retention per CSM and per region, each account by its value at t0.
    for (t0, t1) in [(now - 20 * DAY, now + 30 * DAY), (now - 42 * DAY, now - 1)] {
        for dimension in dimensions {
            let answer = reader
                .get_retention(GetRetentionRequest {
                    start_at: Some(ts(t0)),
                    end_at: Some(ts(t1)),
                    group_by: group_by(dimension),
                    ..GetRetentionRequest::default()
                })
                .await?
                .into_inner();
            let mut expected: BTreeMap<String, [i64; 5]> = BTreeMap::new();
            for account in 0..s.book.seen.len() {
                let (m0, m1) = (s.book.mrr(account, t0), s.book.mrr(account, t1));
                if m0 == 0 {
                    continue;
                }
                for value in s.book.values(account, t0, dimension) {
                    let e = expected.entry(value).or_default();
                    e[0] += 1;
                    e[1] += i64::from(m1 > 0);
                    e[2] += m0;
                    e[3] += m1.min(m0);
                    e[4] += m1;
                }
            }
            let got: BTreeMap<String, [i64; 5]> = answer
                .groups
                .iter()
                .map(|g| {
                    (
                        g.value.clone(),
                        [
                            g.accounts_start,
                            g.accounts_retained,
                            minor(&g.mrr_start),
                            minor(&g.mrr_retained),
                            minor(&g.mrr_end),
                        ],
                    )
                })
                .collect();
            assert_eq!(got, expected, "retention by {dimension:?} from {t0}");
            if dimension != CutDimension::Tag {
                let n: i64 = got.values().map(|e| e[0]).sum();
                assert_eq!(n, answer.accounts_start);
                let m: i64 = got.values().map(|e| e[4]).sum();
                assert_eq!(m, minor(&answer.mrr_end));
            }
            for (value, figures) in &expected {
                if dimension == CutDimension::Attribute && value.is_empty() {
                    continue;
                }
                let one = reader
                    .get_retention(GetRetentionRequest {
                        start_at: Some(ts(t0)),
                        end_at: Some(ts(t1)),
                        cut: cut(dimension, value),
                        ..GetRetentionRequest::default()
                    })
                    .await?
                    .into_inner();
                assert_eq!(
                    [
                        one.accounts_start,
                        one.accounts_retained,
                        minor(&one.mrr_start),
                        minor(&one.mrr_retained),
                        minor(&one.mrr_end)
                    ],
                    *figures
                );
            }
        }
    }

    // The cohort grid of one region: the accounts of that region at their
    // first payment.
    let grid = reader
        .get_cohort_retention(GetCohortRetentionRequest {
            start_month: label(now - 60 * DAY),
            end_month: label(now + 60 * DAY),
            months: 3,
            cut: cut(CutDimension::Attribute, "eu"),
            ..GetCohortRetentionRequest::default()
        })
        .await?
        .into_inner();
    let in_grid: i64 = grid.cohorts.iter().map(|c| c.accounts).sum();
    let firsts = (0..s.book.seen.len())
        .filter_map(|a| {
            let first = s
                .book
                .subs
                .iter()
                .filter(|r| r.account == a)
                .map(|r| r.pieces[0].0)
                .min()?;
            Some((a, first))
        })
        .filter(|(a, at)| s.book.values(*a, *at, CutDimension::Attribute) == ["eu"])
        .count();
    assert_eq!(in_grid, firsts as i64);
    Ok(())
}

async fn a_bad_cut_is_an_invalid_argument_naming_its_field(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Revenue::start(db).await?;
    let mut reader = suite.reader();
    let mrr = |cut: Option<Cut>, group_by: Option<GroupBy>, segment: Segment| GetMrrReportRequest {
        start_month: "2025-01".to_owned(),
        end_month: "2025-06".to_owned(),
        cut,
        group_by,
        segment: segment as i32,
        ..GetMrrReportRequest::default()
    };
    let unknown = Some(GroupBy {
        dimension: 99,
        attribute: String::new(),
    });
    let undeclared = Some(GroupBy {
        dimension: CutDimension::Attribute as i32,
        attribute: "region".to_owned(),
    });
    let nameless = Some(Cut {
        dimension: CutDimension::Attribute as i32,
        attribute: String::new(),
        value: "eu".to_owned(),
    });
    let stray = Some(GroupBy {
        dimension: CutDimension::Plan as i32,
        attribute: "region".to_owned(),
    });
    let cases = [
        (
            mrr(None, unknown.clone(), Segment::Unspecified),
            "group_by.dimension",
        ),
        (
            mrr(None, undeclared.clone(), Segment::Unspecified),
            "group_by.attribute",
        ),
        (mrr(nameless, None, Segment::Unspecified), "cut.attribute"),
        (mrr(None, stray, Segment::Unspecified), "group_by.attribute"),
        (
            mrr(
                cut(CutDimension::Segment, "huge"),
                None,
                Segment::Unspecified,
            ),
            "cut.value",
        ),
        (
            mrr(
                cut(CutDimension::Plan, "pro"),
                group_by(CutDimension::Csm),
                Segment::Unspecified,
            ),
            "group_by",
        ),
        (
            mrr(cut(CutDimension::Plan, "pro"), None, Segment::Smb),
            "cut",
        ),
        (
            mrr(
                Some(Cut {
                    dimension: 0,
                    attribute: String::new(),
                    value: "pro".to_owned(),
                }),
                None,
                Segment::Unspecified,
            ),
            "cut.dimension",
        ),
    ];
    for (request, field) in cases {
        assert::invalid_field(reader.get_mrr_report(request).await, field);
    }
    assert::invalid_field(
        reader
            .get_retention(GetRetentionRequest {
                start_at: Some(day(2025, 1, 1)),
                end_at: Some(day(2025, 6, 1)),
                group_by: unknown,
                ..GetRetentionRequest::default()
            })
            .await,
        "group_by.dimension",
    );
    assert::invalid_field(
        reader
            .get_retention(GetRetentionRequest {
                start_at: Some(day(2025, 1, 1)),
                end_at: Some(day(2025, 6, 1)),
                cut: cut(CutDimension::Csm, "cara"),
                by_csm: true,
                ..GetRetentionRequest::default()
            })
            .await,
        "cut",
    );
    assert::invalid_field(
        reader
            .get_retention(GetRetentionRequest {
                start_at: Some(day(2025, 1, 1)),
                end_at: Some(day(2025, 6, 1)),
                group_by: undeclared,
                ..GetRetentionRequest::default()
            })
            .await,
        "group_by.attribute",
    );
    Ok(())
}
