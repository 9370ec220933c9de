//! The book of business and the touches report (docs/design.md section 6.4).
//!
//! A book is the accounts whose facts (from the accounts feed) name a person
//! as CSM, or as owner. Success counts what it keeps itself: accounts, ARR
//! from the MRR the revenue feed reported, red and high-risk accounts from
//! the scoring feed, and the open and overdue CTAs of the book's accounts.
//! The revenue figures are revenue's: renewals of the next 90 days with
//! their forecast (GetRenewalSummary) and logo retention, GRR and NRR over a
//! period (GetRetention), both cut by the same person, asked over gRPC side
//! by side. The mean health is of each account's latest score success
//! recorded from the scoring feed (`health_scores`, the history the
//! effectiveness report reads), so the book asks scoring nothing.
//!
//! The touches report counts what people logged on the timeline (notes,
//! calls, meetings, emails), never the automatic entries, per author and ISO
//! week.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bowtie_proto::revenue as revenue_pb;
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_runtime::config::PeerSettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::peer::{self, PeerChannel};
use bowtie_runtime::store::Store;
use bowtie_runtime::{AccountId, Instant, Minor};
use chrono::Datelike;
use tonic::{Code, Status};

use crate::domain::ActivityKind;
use crate::storage;

/// The kinds of entry people log; the others are automatic.
pub const LOGGED_KINDS: [ActivityKind; 4] = [
    ActivityKind::Note,
    ActivityKind::Call,
    ActivityKind::Meeting,
    ActivityKind::Email,
];

/// Days ahead of now whose renewals a book shows.
pub const RENEWAL_DAYS: i64 = 90;

/// What the book of business reads of an account's facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookFacts {
    /// The account.
    pub account_id: AccountId,
    /// Its CSM ("" for none).
    pub csm: String,
    /// Its owner ("" for none).
    pub owner: String,
    /// Its MRR in the reporting currency.
    pub mrr: Minor,
    /// Whether its health is red.
    pub red: bool,
    /// Its churn risk, when scoring has a model.
    pub churn_risk_bp: Option<i32>,
}

/// Whose books the rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// By the account's CSM.
    Csm,
    /// By the account's owner.
    Owner,
}

impl BookFacts {
    /// The person whose book the account is in.
    pub fn person(&self, grouping: Grouping) -> &str {
        match grouping {
            Grouping::Csm => &self.csm,
            Grouping::Owner => &self.owner,
        }
    }
}

/// Revenue's retention of one book over the period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BookRetention {
    /// Accounts paying at the period's start.
    pub accounts: i64,
    /// Logo retention.
    pub logo: f64,
    /// Gross revenue retention.
    pub grr: f64,
    /// Net revenue retention.
    pub nrr: f64,
}

/// One person's book of business.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BookRow {
    /// The CSM or owner ("" for none).
    pub person: String,
    /// Accounts in the book.
    pub accounts: i64,
    /// Sum of their MRR.
    pub mrr: Minor,
    /// Sum of the accounts' latest recorded health scores.
    pub health_sum: i64,
    /// Accounts with a health score.
    pub health_scored: i64,
    /// Red accounts.
    pub red: i64,
    /// Accounts at or above the high-risk threshold.
    pub high_risk: i64,
    /// CTAs not closed.
    pub open_ctas: i64,
    /// Of those, past due.
    pub overdue_ctas: i64,
    /// Renewals in the next 90 days.
    pub renewals: i64,
    /// Their amount at stake.
    pub renewal_at_stake: Minor,
    /// Their forecast.
    pub renewal_forecast: Minor,
    /// Retention over the period.
    pub retention: BookRetention,
}

impl BookRow {
    /// 12 x the book's MRR.
    pub fn arr(&self) -> Minor {
        Minor(self.mrr.get().saturating_mul(12))
    }

    /// The mean health score, `None` without any score.
    pub fn average_health(&self) -> Option<f64> {
        (self.health_scored > 0).then(|| self.health_sum as f64 / self.health_scored as f64)
    }
}

/// The books success can count itself: every account of `facts` in the book
/// of its person under `grouping` (only `only`'s book when given), with the
/// `health` scores (each account's latest recorded), the accounts at or above `high_risk_bp`, and
/// the CTAs not closed (`dues`: account and due time), overdue when due
/// before `now`.
pub fn books(
    facts: &[BookFacts],
    dues: &[(AccountId, Instant)],
    health: &HashMap<AccountId, i32>,
    grouping: Grouping,
    only: Option<&str>,
    high_risk_bp: i32,
    now: Instant,
) -> BTreeMap<String, BookRow> {
    let mut rows: BTreeMap<String, BookRow> = BTreeMap::new();
    let mut person_of: HashMap<AccountId, &str> = HashMap::new();
    for f in facts {
        let person = f.person(grouping);
        if only.is_some_and(|o| o != person) {
            continue;
        }
        person_of.insert(f.account_id, person);
        let row = row(&mut rows, person);
        row.accounts += 1;
        row.mrr += f.mrr;
        if let Some(score) = health.get(&f.account_id) {
            row.health_sum += i64::from(*score);
            row.health_scored += 1;
        }
        row.red += i64::from(f.red);
        row.high_risk += i64::from(f.churn_risk_bp.is_some_and(|r| r >= high_risk_bp));
    }
    for (account, due) in dues {
        if let Some(person) = person_of.get(account) {
            let row = row(&mut rows, person);
            row.open_ctas += 1;
            row.overdue_ctas += i64::from(*due < now);
        }
    }
    rows
}

/// Whether the book of `person` is one of `people`'s (the caller's book):
/// compared trimmed and case-insensitively, as the ownership rules compare
/// people; the accounts without a person are nobody's.
pub fn in_book(people: &[String], person: &str) -> bool {
    let person = person.trim();
    !person.is_empty() && people.iter().any(|p| p.trim().eq_ignore_ascii_case(person))
}

/// The row of `person`, created empty when missing.
pub fn row<'a>(rows: &'a mut BTreeMap<String, BookRow>, person: &str) -> &'a mut BookRow {
    rows.entry(person.to_owned()).or_insert_with(|| BookRow {
        person: person.to_owned(),
        ..BookRow::default()
    })
}

/// The rows, the largest ARR first, ties by person.
pub fn ranked(rows: BTreeMap<String, BookRow>) -> Vec<BookRow> {
    let mut out: Vec<BookRow> = rows.into_values().collect();
    out.sort_by(|a, b| b.mrr.cmp(&a.mrr).then_with(|| a.person.cmp(&b.person)));
    out
}

/// One activity a person logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// The account.
    pub account_id: AccountId,
    /// NOTE, CALL, MEETING or EMAIL.
    pub kind: ActivityKind,
    /// Who logged it.
    pub author: String,
    /// When it happened.
    pub at: Instant,
}

/// One author's touches in one ISO week (and, split by owner, on one
/// owner's accounts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TouchRow {
    /// Who.
    pub author: String,
    /// The ISO week, `2026-W49`.
    pub week: String,
    /// The owner of the accounts, when split by owner.
    pub owner: String,
    /// Notes.
    pub notes: i64,
    /// Calls.
    pub calls: i64,
    /// Meetings.
    pub meetings: i64,
    /// Emails.
    pub emails: i64,
    /// Distinct accounts touched.
    pub accounts: i64,
}

impl TouchRow {
    /// Every touch of the row.
    pub fn total(&self) -> i64 {
        self.notes + self.calls + self.meetings + self.emails
    }
}

/// The ISO week of an instant (UTC), `YYYY-Www`.
pub fn iso_week(at: Instant) -> String {
    let date = chrono::DateTime::from_timestamp_micros(at.micros()).unwrap_or_default();
    let week = date.iso_week();
    format!("{}-W{:02}", week.year(), week.week())
}

/// Counts `touches` per author and ISO week, only on accounts `owners` says
/// `only_owner` owns when given, split by that owner with `by_owner`;
/// ordered by author, week, owner.
pub fn touch_rows(
    touches: &[Touch],
    owners: &HashMap<AccountId, String>,
    only_owner: Option<&str>,
    by_owner: bool,
) -> Vec<TouchRow> {
    let mut rows: BTreeMap<(String, String, String), (TouchRow, BTreeSet<AccountId>)> =
        BTreeMap::new();
    for t in touches {
        let owner = owners.get(&t.account_id).map_or("", String::as_str);
        if only_owner.is_some_and(|o| o != owner) {
            continue;
        }
        let week = iso_week(t.at);
        let owner = if by_owner { owner } else { "" };
        let key = (t.author.clone(), week.clone(), owner.to_owned());
        let (row, accounts) = rows.entry(key).or_insert_with(|| {
            (
                TouchRow {
                    author: t.author.clone(),
                    week,
                    owner: owner.to_owned(),
                    ..TouchRow::default()
                },
                BTreeSet::new(),
            )
        });
        match t.kind {
            ActivityKind::Note => row.notes += 1,
            ActivityKind::Call => row.calls += 1,
            ActivityKind::Meeting => row.meetings += 1,
            ActivityKind::Email => row.emails += 1,
            _ => continue,
        }
        accounts.insert(t.account_id);
        row.accounts = accounts.len() as i64;
    }
    rows.into_values().map(|(row, _)| row).collect()
}

/// The book's store and the revenue client it asks.
#[derive(Debug, Clone)]
pub struct Books {
    store: Store,
    revenue: RevenueServiceClient<PeerChannel>,
    high_risk_bp: i32,
}

/// A book of business as revenue prices it.
#[derive(Debug, Clone, PartialEq)]
pub struct BookReport {
    /// The rows, the largest ARR first.
    pub rows: Vec<BookRow>,
    /// The reporting currency.
    pub currency: String,
}

/// A revenue answer as this service's error: a refusal revenue explains
/// (no FX rate) stays a refusal, the rest is [`peer::peer_error`].
fn revenue_error(status: &Status) -> Error {
    match status.code() {
        Code::FailedPrecondition => Error::FailedPrecondition(format!(
            "the revenue service refused the book: {}",
            status.message()
        )),
        _ => peer::peer_error("revenue", status),
    }
}

fn minor(m: Option<&bowtie_proto::common::Money>) -> Minor {
    Minor(m.map_or(0, |m| m.minor_units))
}

impl Books {
    /// The book over `store`, asking the revenue service of `peers`
    /// (connected lazily).
    pub fn connect(store: Store, peers: &PeerSettings, high_risk_bp: i32) -> Result<Self, Error> {
        Ok(Self {
            store,
            revenue: RevenueServiceClient::new(peer::connect(&peers.revenue, peers)?),
            high_risk_bp,
        })
    }

    /// The books of `grouping` (only `only`'s when given, only those of the
    /// people of `mine` when given: `mine=true`) as of `now`, with retention
    /// over `period`.
    pub async fn book(
        &self,
        grouping: Grouping,
        only: Option<String>,
        mine: Option<Vec<String>>,
        period: (Instant, Instant),
        now: Instant,
    ) -> Result<BookReport, Error> {
        let conn = self.store.db().reader();
        let facts = storage::book_facts(conn).await?;
        let dues = storage::open_cta_dues(conn).await?;
        let health = storage::latest_scores(conn).await?;
        let person = only.clone().unwrap_or_default();
        let (csm, owner) = match grouping {
            Grouping::Csm => (person.clone(), String::new()),
            Grouping::Owner => (String::new(), person.clone()),
        };
        let mut retention_client = self.revenue.clone();
        let mut renewals_client = self.revenue.clone();
        let retention = async {
            retention_client
                .get_retention(revenue_pb::GetRetentionRequest {
                    start_at: Some(Instant::to_timestamp(period.0)),
                    end_at: Some(Instant::to_timestamp(period.1)),
                    owner,
                    csm,
                    by_owner: grouping == Grouping::Owner,
                    by_csm: grouping == Grouping::Csm,
                    ..revenue_pb::GetRetentionRequest::default()
                })
                .await
                .map_err(|s| revenue_error(&s))
        };
        let renewals = async {
            renewals_client
                .get_renewal_summary(revenue_pb::GetRenewalSummaryRequest {
                    start_at: Some(Instant::to_timestamp(now)),
                    end_at: Some(Instant::to_timestamp(now.plus_days(RENEWAL_DAYS))),
                    group_by: match grouping {
                        Grouping::Csm => revenue_pb::RenewalGrouping::Csm,
                        Grouping::Owner => revenue_pb::RenewalGrouping::Owner,
                    } as i32,
                    person,
                })
                .await
                .map_err(|s| revenue_error(&s))
        };
        let (retention, renewals) = tokio::try_join!(retention, renewals)?;
        let (retention, renewals) = (retention.into_inner(), renewals.into_inner());
        let mut rows = books(
            &facts,
            &dues,
            &health,
            grouping,
            only.as_deref(),
            self.high_risk_bp,
            now,
        );
        for s in &renewals.summaries {
            let row = row(&mut rows, &s.person);
            row.renewals = s.renewals;
            row.renewal_at_stake = minor(s.amount_at_stake.as_ref());
            row.renewal_forecast = minor(s.forecast.as_ref());
        }
        let cohorts: Vec<(&str, BookRetention)> = match grouping {
            Grouping::Csm => retention
                .by_csm
                .iter()
                .map(|r| {
                    (
                        r.csm.as_str(),
                        figures(r.accounts_start, r.logo_retention, r.grr, r.nrr),
                    )
                })
                .collect(),
            Grouping::Owner => retention
                .by_owner
                .iter()
                .map(|r| {
                    let f = figures(r.accounts_start, r.logo_retention, r.grr, r.nrr);
                    (r.owner.as_str(), f)
                })
                .collect(),
        };
        for (person, figures) in cohorts {
            row(&mut rows, person).retention = figures;
        }
        if let Some(people) = &mine {
            rows.retain(|person, _| in_book(people, person));
        }
        Ok(BookReport {
            rows: ranked(rows),
            currency: renewals.reporting_currency_code,
        })
    }

    /// The touches of `period`, of `author` when given, on the accounts of
    /// `owner` when given, split by owner with `by_owner`.
    pub async fn touches(
        &self,
        period: (Instant, Instant),
        owner: Option<String>,
        author: Option<String>,
        by_owner: bool,
    ) -> Result<Vec<TouchRow>, Error> {
        let conn = self.store.db().reader();
        let touches = storage::logged_touches(conn, period, author.as_deref()).await?;
        let owners: HashMap<AccountId, String> = storage::book_facts(conn)
            .await?
            .into_iter()
            .map(|f| (f.account_id, f.owner))
            .collect();
        Ok(touch_rows(&touches, &owners, owner.as_deref(), by_owner))
    }
}

fn figures(accounts: i64, logo: f64, grr: f64, nrr: f64) -> BookRetention {
    BookRetention {
        accounts,
        logo,
        grr,
        nrr,
    }
}

#[cfg(test)]
mod tests;
