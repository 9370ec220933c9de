//! The JSON shapes of the success routes and their conversions from the
//! success service's messages.

use bowtie_proto::success as suc;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::common::{Money, mirror_enum, time, timestamp};
use crate::schema;

mirror_enum!(
    /// What fires a playbook.
    TriggerKind, suc::TriggerKind {
        /// Scoring raised ENTERED_RED.
        EnteredRed,
        /// Scoring raised SCORE_DROP.
        ScoreDrop,
        /// Scoring raised HIGH_RISK.
        HighRisk,
        /// A late or failed payment.
        PaymentFailed,
        /// A contraction past the playbook's percent.
        Contraction,
        /// A churn.
        Churn,
        /// The account entered the playbook's stage.
        StageEntered,
        /// A champion or decision maker left.
        ChampionLeft,
        /// A renewal within the playbook's days.
        RenewalDue,
        /// In ONBOARDING past the playbook's days without first value.
        OnboardingStalled,
        /// A complaint unresolved past the playbook's days.
        ComplaintUnresolved,
        /// The account entered one of the playbook's value tiers.
        TierEntered,
        /// The account entered one of the playbook's quadrants.
        QuadrantEntered,
        /// The account's revenue to date reached the playbook's milestone.
        RevenueMilestone,
    }
);

mirror_enum!(
    /// The kind of work a CTA is.
    CtaType, suc::CtaType {
        /// Keep a customer at risk.
        Risk,
        /// Win a renewal.
        Renewal,
        /// Get a new customer to first value.
        Onboarding,
        /// Grow an account.
        Expansion,
        /// Bring a churned customer back.
        WinBack,
        /// A lifecycle touch.
        Lifecycle,
    }
);

mirror_enum!(
    /// How urgent a CTA is.
    Priority, suc::Priority {
        /// Low.
        Low,
        /// Medium.
        Medium,
        /// High.
        High,
        /// Urgent.
        Urgent,
    }
);

mirror_enum!(
    /// Whether a playbook acts.
    PlaybookMode, suc::PlaybookMode {
        /// Every trigger opens or updates a CTA.
        On,
        /// Triggers are recorded, nothing is opened.
        Off,
        /// A share of triggers is held out as the comparison group.
        Holdout,
    }
);

mirror_enum!(
    /// Where a CTA stands.
    CtaStatus, suc::CtaStatus {
        /// Opened, nobody on it yet.
        Open,
        /// Someone is working on it.
        InProgress,
        /// Put off until `snooze_until`.
        Snoozed,
        /// Done, with an outcome.
        Closed,
    }
);

mirror_enum!(
    /// How a CTA ended.
    Outcome, suc::Outcome {
        /// The customer stayed.
        Saved,
        /// The customer churned or contracted.
        Lost,
        /// The account expanded.
        Won,
        /// Nothing needed doing.
        NotNeeded,
        /// The playbook's condition came true.
        AutoClosed,
    }
);

mirror_enum!(
    /// Where a task stands.
    TaskStatus, suc::TaskStatus {
        /// To do.
        Open,
        /// Done.
        Done,
        /// Not needed.
        Skipped,
    }
);

mirror_enum!(
    /// The kind of a timeline entry.
    ActivityKind, suc::ActivityKind {
        /// A note.
        Note,
        /// A call.
        Call,
        /// A meeting.
        Meeting,
        /// An email.
        Email,
        /// Automatic: a funnel stage change.
        StageChange,
        /// Automatic: a scoring alert.
        Alert,
        /// Automatic: an MRR movement.
        Movement,
        /// Automatic: a CTA event.
        Cta,
    }
);

/// A playbook's current version, in brief.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Playbook {
    /// Id.
    pub id: String,
    /// Version.
    pub version: i64,
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// What fires it.
    pub trigger: TriggerKind,
    /// The type of its CTAs.
    pub cta_type: CtaType,
    /// Their priority.
    pub priority: Priority,
    /// Days from opening to due.
    pub sla_days: i32,
    /// Whether it acts.
    pub mode: PlaybookMode,
    /// HOLDOUT: the share of triggers held out, in percent.
    pub holdout_percent: i32,
}

impl From<suc::Playbook> for Playbook {
    fn from(p: suc::Playbook) -> Self {
        let spec = p.spec.unwrap_or_default();
        Self {
            id: p.id,
            version: p.version,
            name: spec.name,
            description: spec.description,
            trigger: spec.trigger.map_or(0, |t| t.kind).into(),
            cta_type: spec.cta_type.into(),
            priority: spec.priority.into(),
            sla_days: spec.sla_days,
            mode: spec.mode.into(),
            holdout_percent: spec.holdout_percent,
        }
    }
}

/// Every playbook.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlaybookList {
    /// By name.
    pub playbooks: Vec<Playbook>,
}

/// One task of a CTA.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Task {
    /// Position, from 0.
    pub index: i32,
    /// What to do.
    pub title: String,
    /// When it is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Where it stands.
    pub status: TaskStatus,
}

/// A comment on a CTA.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Comment {
    /// Who.
    pub author: String,
    /// What.
    pub text: String,
    /// When.
    pub created_at: Option<DateTime<Utc>>,
}

/// A call to action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Cta {
    /// Id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// The playbook that opened it; empty when opened by hand.
    pub playbook_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub cta_type: CtaType,
    /// Why it exists.
    pub reason: String,
    /// How urgent.
    pub priority: Priority,
    /// Who owns it.
    pub owner: String,
    /// Where it stands.
    pub status: CtaStatus,
    /// How it ended (when closed).
    pub outcome: Outcome,
    /// When it is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Snoozed until.
    pub snooze_until: Option<DateTime<Utc>>,
    /// Why it was snoozed.
    pub snooze_reason: String,
    /// Its tasks.
    pub tasks: Vec<Task>,
    /// Its comments, oldest first.
    pub comments: Vec<Comment>,
    /// Triggers counted on it.
    pub trigger_count: i32,
    /// Pass it back as `expected_version`.
    pub version: i64,
    /// When it was opened.
    pub created_at: Option<DateTime<Utc>>,
    /// When it was closed.
    pub closed_at: Option<DateTime<Utc>>,
}

impl From<suc::Cta> for Cta {
    fn from(c: suc::Cta) -> Self {
        Self {
            id: c.id,
            account_id: c.account_id,
            playbook_id: c.playbook_id,
            cta_type: c.r#type.into(),
            reason: c.reason,
            priority: c.priority.into(),
            owner: c.owner,
            status: c.status.into(),
            outcome: c.outcome.into(),
            due_at: time(c.due_time.as_ref()),
            snooze_until: time(c.snooze_until.as_ref()),
            snooze_reason: c.snooze_reason,
            tasks: c
                .tasks
                .into_iter()
                .map(|t| Task {
                    index: t.index,
                    title: t.title,
                    due_at: time(t.due_time.as_ref()),
                    status: t.status.into(),
                })
                .collect(),
            comments: c
                .comments
                .into_iter()
                .map(|m| Comment {
                    author: m.author,
                    text: m.text,
                    created_at: time(m.create_time.as_ref()),
                })
                .collect(),
            trigger_count: c.trigger_count,
            version: c.version,
            created_at: time(c.create_time.as_ref()),
            closed_at: time(c.close_time.as_ref()),
        }
    }
}

/// One page of CTAs, earliest due first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CtaPage {
    /// The CTAs.
    pub ctas: Vec<Cta>,
    /// The token of the next page; empty on the last.
    pub next_page_token: String,
}

/// A change of a CTA's status.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct StatusChange {
    /// The new status.
    #[schema(schema_with = CtaStatus::input_schema)]
    pub status: CtaStatus,
    /// CLOSED: SAVED, LOST, WON or NOT_NEEDED.
    #[serde(default)]
    #[schema(schema_with = Outcome::nullable_input_schema)]
    pub outcome: Option<Outcome>,
    /// SNOOZED: until when (in the future).
    #[serde(default)]
    #[schema(schema_with = schema::nullable_time)]
    pub snooze_until: Option<DateTime<Utc>>,
    /// SNOOZED: why, 1 to 500 characters.
    #[serde(default)]
    #[schema(schema_with = schema::nullable_optional_text::<500>)]
    pub snooze_reason: Option<String>,
    /// The version this change is based on.
    #[schema(minimum = 1)]
    pub expected_version: i64,
    /// Who makes the change, at most 200 characters.
    #[serde(default)]
    #[schema(schema_with = schema::nullable_optional_text::<200>)]
    pub actor: Option<String>,
}

impl StatusChange {
    /// The request for CTA `id`.
    pub fn to_pb(&self, id: String, idempotency_key: String) -> suc::UpdateCtaStatusRequest {
        suc::UpdateCtaStatusRequest {
            id,
            status: self.status.into(),
            outcome: self.outcome.unwrap_or_default().into(),
            snooze_until: self.snooze_until.map(timestamp),
            snooze_reason: self.snooze_reason.clone().unwrap_or_default(),
            expected_version: self.expected_version,
            actor: self.actor.clone().unwrap_or_default(),
            idempotency_key,
        }
    }
}

/// A timeline entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Activity {
    /// Id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// Its kind.
    pub kind: ActivityKind,
    /// Who: a person, or `bowtie` for automatic entries.
    pub author: String,
    /// When it happened.
    pub occurred_at: Option<DateTime<Utc>>,
    /// What happened.
    pub text: String,
    /// Who took part.
    pub participants: Vec<String>,
}

impl From<suc::Activity> for Activity {
    fn from(a: suc::Activity) -> Self {
        Self {
            id: a.id,
            account_id: a.account_id,
            kind: a.kind.into(),
            author: a.author,
            occurred_at: time(a.occur_time.as_ref()),
            text: a.text,
            participants: a.participants,
        }
    }
}

/// One page of a timeline, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivityPage {
    /// The entries.
    pub activities: Vec<Activity>,
    /// The token of the next page; empty on the last.
    pub next_page_token: String,
}

mirror_enum!(
    /// The kinds of entry a person logs.
    LoggedKind, suc::ActivityKind {
        /// A note.
        Note,
        /// A call.
        Call,
        /// A meeting.
        Meeting,
        /// An email.
        Email,
    }
);

/// A note, call, meeting or email to log.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewActivity {
    /// Its kind.
    #[schema(schema_with = LoggedKind::input_schema)]
    pub kind: LoggedKind,
    /// Who logs it, 1 to 200 characters.
    #[schema(schema_with = schema::text::<200>)]
    pub author: String,
    /// What happened, 1 to 10,000 characters.
    #[schema(schema_with = schema::text::<10000>)]
    pub text: String,
    /// When it happened; now when left out.
    #[serde(default)]
    #[schema(schema_with = schema::nullable_time)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Who took part: at most 50, each 1 to 200 characters.
    #[serde(default)]
    #[schema(schema_with = participants)]
    pub participants: Vec<String>,
}

/// At most 50 participants, each 1 to 200 characters.
fn participants() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(schema::text::<200>())
            .max_items(Some(50))
            .build(),
    ))
}

/// The effectiveness of a playbook over a period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Effectiveness {
    /// The playbook.
    pub playbook_id: String,
    /// Days after a trigger its outcome is judged.
    pub horizon_days: i32,
    /// Triggers that got the play.
    pub treated: Arm,
    /// The comparison group.
    pub comparison: Arm,
    /// True when the comparison is observational, not held out.
    pub observational: bool,
    /// Treated churn rate minus the comparison's; null below 20 matured per arm.
    pub effect: Option<f64>,
    /// Lower end of its 95% interval.
    pub effect_low: Option<f64>,
    /// Upper end of its 95% interval.
    pub effect_high: Option<f64>,
    /// CTAs opened in the period.
    pub ctas_opened: i64,
    /// Of the CTAs past due, the share closed in time.
    pub closed_within_sla: Option<f64>,
    /// Median hours to the first action.
    pub median_hours_to_first_action: Option<f64>,
    /// Closed CTAs by outcome number (1 SAVED ... 5 AUTO_CLOSED).
    pub outcomes: Vec<i64>,
    /// Why there is no effect, when there is none.
    pub note: String,
}

/// One arm of the comparison.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Arm {
    /// Triggers in the period.
    pub triggers: i64,
    /// Triggers whose horizon has passed.
    pub matured: i64,
    /// Matured triggers whose account churned.
    pub churned: i64,
    /// churned / matured.
    pub churn_rate: Option<f64>,
    /// Triggers with a health score at the trigger and 30 days later.
    pub health_measured: i64,
    /// Mean health-score change 30 days after the trigger.
    pub health_change_30d: Option<f64>,
}

impl From<Option<suc::Arm>> for Arm {
    fn from(a: Option<suc::Arm>) -> Self {
        let a = a.unwrap_or_default();
        Self {
            triggers: a.triggers,
            matured: a.matured,
            churned: a.churned,
            churn_rate: a.churn_rate,
            health_measured: a.health_measured,
            health_change_30d: a.health_change_30d,
        }
    }
}

impl From<suc::GetPlaybookEffectivenessResponse> for Effectiveness {
    fn from(r: suc::GetPlaybookEffectivenessResponse) -> Self {
        Self {
            playbook_id: r.playbook_id,
            horizon_days: r.horizon_days,
            treated: r.treated.into(),
            comparison: r.comparison.into(),
            observational: r.observational,
            effect: r.effect,
            effect_low: r.effect_low,
            effect_high: r.effect_high,
            ctas_opened: r.ctas_opened,
            closed_within_sla: r.closed_within_sla,
            median_hours_to_first_action: r.median_hours_to_first_action,
            outcomes: r.outcomes,
            note: r.note,
        }
    }
}

mirror_enum!(
    /// Whose books a book of business lists.
    BookGrouping, suc::BookGrouping {
        /// By the account's customer success manager.
        Csm,
        /// By the account's owner (who closed the deal).
        Owner,
    }
);

/// One person's book of business.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Book {
    /// The CSM or owner; empty for the accounts without one.
    pub person: String,
    /// Accounts in the book.
    pub accounts: i64,
    /// 12 x the book's MRR, in the reporting currency.
    pub arr: Money,
    /// Mean health score (0..=100) of the scored accounts; null without any.
    pub average_health: Option<f64>,
    /// Accounts in the red health band.
    pub red: i64,
    /// Accounts at high churn risk.
    pub high_risk: i64,
    /// CTAs of the book's accounts that are not closed.
    pub open_ctas: i64,
    /// Of those, the ones past their due time.
    pub overdue_ctas: i64,
    /// Renewals due in the next 90 days.
    pub renewals_90d: i64,
    /// Their amount at stake.
    pub renewal_amount_at_stake: Money,
    /// Their forecast.
    pub renewal_forecast: Money,
    /// Accounts of the book paying at the period's start.
    pub retention_accounts: i64,
    /// Logo retention over the period; null without accounts paying at its start.
    pub logo_retention: Option<f64>,
    /// Gross revenue retention over the period; null as `logo_retention`.
    pub grr: Option<f64>,
    /// Net revenue retention over the period; null as `logo_retention`.
    pub nrr: Option<f64>,
}

impl From<suc::Book> for Book {
    fn from(b: suc::Book) -> Self {
        Self {
            person: b.person,
            accounts: b.accounts,
            arr: Money::from_pb(b.arr.as_ref()),
            average_health: b.average_health,
            red: b.red,
            high_risk: b.high_risk,
            open_ctas: b.open_ctas,
            overdue_ctas: b.overdue_ctas,
            renewals_90d: b.renewals_90d,
            renewal_amount_at_stake: Money::from_pb(b.renewal_amount_at_stake.as_ref()),
            renewal_forecast: Money::from_pb(b.renewal_forecast.as_ref()),
            retention_accounts: b.retention_accounts,
            logo_retention: b.logo_retention,
            grr: b.grr,
            nrr: b.nrr,
        }
    }
}

/// The book of business of each person.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BookOfBusiness {
    /// One per person, the largest ARR first (ties by person).
    pub books: Vec<Book>,
    /// ISO-4217 code of every amount.
    pub currency: String,
}

impl From<suc::GetBookOfBusinessResponse> for BookOfBusiness {
    fn from(r: suc::GetBookOfBusinessResponse) -> Self {
        Self {
            books: r.books.into_iter().map(Book::from).collect(),
            currency: r.reporting_currency_code,
        }
    }
}

/// The activities one author logged in one ISO week.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Touches {
    /// Who logged them.
    pub author: String,
    /// The ISO week, e.g. `2026-W49`.
    pub week: String,
    /// With `by_owner`: the owner of the accounts; empty otherwise.
    pub owner: String,
    /// Notes.
    pub notes: i64,
    /// Calls.
    pub calls: i64,
    /// Meetings.
    pub meetings: i64,
    /// Emails.
    pub emails: i64,
    /// All of them.
    pub total: i64,
    /// Distinct accounts touched.
    pub accounts: i64,
}

impl From<suc::Touches> for Touches {
    fn from(t: suc::Touches) -> Self {
        Self {
            author: t.author,
            week: t.week,
            owner: t.owner,
            notes: t.notes,
            calls: t.calls,
            meetings: t.meetings,
            emails: t.emails,
            total: t.total,
            accounts: t.accounts,
        }
    }
}

/// The touches report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TouchesReport {
    /// By author, then week, then owner.
    pub touches: Vec<Touches>,
}
