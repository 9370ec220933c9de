//! The success rules, free of I/O (docs/design.md section 6): what a playbook
//! is, which events trigger it, whether a trigger opens a CTA, updates the
//! open one, is suppressed or held out, who owns the CTA, which status
//! changes are legal, when a CTA closes itself, and the effectiveness maths.
//!
//! The enums are the contract's own (`bowtie.success.v1`), as revenue's
//! domain uses the shared `Segment`; storage keeps their numbers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use bowtie_proto::common::{Segment, Stage};
pub use bowtie_proto::scoring::{Quadrant, Tier};
pub use bowtie_proto::success::{
    ActivityKind, AutoClose, Channel, CtaStatus, CtaType, DeliveryStatus, Outcome, PlaybookMode,
    Priority, TaskStatus, TriggerKind,
};
use bowtie_runtime::error::Error;
use bowtie_runtime::types::MICROS_PER_DAY;
use bowtie_runtime::{AccountId, Instant, Minor};

/// Longest name, owner, title or author.
pub const MAX_NAME: usize = 200;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 2_000;
/// Longest reason or snooze reason.
pub const MAX_REASON: usize = 500;
/// Longest activity or comment text.
pub const MAX_TEXT: usize = 10_000;
/// Most steps in a playbook, members in a pool, participants of an activity.
pub const MAX_ITEMS: usize = 50;
/// Longest SLA, due offset or enrollment limit, in days.
pub const MAX_DAYS: i32 = 365;
/// Matured triggers each arm needs before an effect is shown.
pub const MIN_MATURED: i64 = 20;
/// Author of the entries the service writes itself.
pub const SYSTEM_AUTHOR: &str = "bowtie";

/// The id of a playbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlaybookId(pub Uuid);

/// The id of a CTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CtaId(pub Uuid);

/// The id of a timeline entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActivityId(pub Uuid);

/// Serialises a contract enum as its number, so stored specs survive a rename.
mod code {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, E: Copy + Into<i32>>(e: &E, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32((*e).into())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, E: TryFrom<i32>>(d: D) -> Result<E, D::Error> {
        let raw = i32::deserialize(d)?;
        E::try_from(raw).map_err(|_| D::Error::custom(format!("unknown enum number {raw}")))
    }
}

/// A list of contract enums as their numbers.
mod codes {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, E: Copy + Into<i32>>(
        es: &[E],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(es.iter().map(|e| (*e).into()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, E: TryFrom<i32>>(
        d: D,
    ) -> Result<Vec<E>, D::Error> {
        Vec::<i32>::deserialize(d)?
            .into_iter()
            .map(|raw| {
                E::try_from(raw).map_err(|_| D::Error::custom(format!("unknown enum number {raw}")))
            })
            .collect()
    }
}

/// What fires a playbook.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Trigger {
    /// The kind of event.
    #[serde(with = "code")]
    pub kind: TriggerKind,
    /// CONTRACTION: the smallest contraction, in percent of the MRR before it.
    pub percent: i32,
    /// STAGE_ENTERED: the stage.
    #[serde(with = "code")]
    pub stage: Stage,
    /// RENEWAL_DUE: days before the renewal date; ONBOARDING_STALLED and
    /// COMPLAINT_UNRESOLVED: days after the entry or complaint.
    #[serde(default)]
    pub days: i32,
    /// TIER_ENTERED: the tiers entered; QUADRANT_ENTERED: the tiers the
    /// account must be in (empty for any).
    #[serde(default, with = "codes", skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
    /// QUADRANT_ENTERED: the quadrants entered.
    #[serde(default, with = "codes", skip_serializing_if = "Vec::is_empty")]
    pub quadrants: Vec<Quadrant>,
    /// REVENUE_MILESTONE: the revenue to date to reach (reporting minor units).
    #[serde(default, skip_serializing_if = "no_amount")]
    pub milestone: Minor,
}

fn no_amount(m: &Minor) -> bool {
    m.get() == 0
}

/// The swept trigger kinds without a `days` parameter.
pub const SWEPT_ONCE: [TriggerKind; 1] = [TriggerKind::RevenueMilestone];

/// Microseconds in an average month (365.25 / 12 days): MRR is earned at
/// this rate.
pub const MICROS_PER_MONTH: i64 = 2_629_800_000_000;

/// An account's revenue to date as the revenue feed's movements give it:
/// what it earned up to `since`, and the MRR it has earned at since then.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevenueToDate {
    /// Earned up to `since` (reporting minor units).
    pub earned: Minor,
    /// The MRR from `since` on.
    pub mrr: Minor,
    /// The business time of the last movement; `None` before the first.
    pub since: Option<Instant>,
    /// The reporting currency (as the movements name it).
    pub currency: String,
}

impl RevenueToDate {
    /// What the account has earned by `at`: `earned + mrr x months since`
    /// (rounded down to a minor unit; nothing more before `since`).
    pub fn at(&self, at: Instant) -> Minor {
        let Some(since) = self.since else {
            return self.earned;
        };
        let elapsed = i128::from(at.micros_since(since).max(0));
        let more = i128::from(self.mrr.get().max(0)) * elapsed / i128::from(MICROS_PER_MONTH);
        Minor(
            self.earned
                .get()
                .saturating_add(i64::try_from(more).unwrap_or(i64::MAX)),
        )
    }

    /// After a movement at `at` that left the MRR at `mrr`. A movement
    /// dated before the last one changes the MRR from the last one's time
    /// on (what was earned is not recomputed).
    pub fn moved(&self, at: Instant, mrr: Minor, currency: &str) -> Self {
        let at = self.since.map_or(at, |since| at.max(since));
        Self {
            earned: self.at(at),
            mrr,
            since: Some(at),
            currency: if currency.is_empty() {
                self.currency.clone()
            } else {
                currency.to_owned()
            },
        }
    }
}

/// The trigger kinds scoring's `segment.changed` fires.
pub const SEGMENT_KINDS: [TriggerKind; 2] =
    [TriggerKind::TierEntered, TriggerKind::QuadrantEntered];

/// An account's move between value segments (scoring's `segment.changed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMove {
    /// The tier before (UNSPECIFIED at the account's first score).
    pub tier_before: Tier,
    /// The tier now.
    pub tier_after: Tier,
    /// The quadrant before (UNSPECIFIED at the account's first score).
    pub quadrant_before: Quadrant,
    /// The quadrant now.
    pub quadrant_after: Quadrant,
}

impl SegmentMove {
    /// The trigger kinds this move is an event of: TIER_ENTERED when the
    /// tier changed, QUADRANT_ENTERED when the quadrant did.
    pub fn kinds(&self) -> Vec<TriggerKind> {
        let mut kinds = Vec::new();
        if self.tier_before != self.tier_after {
            kinds.push(TriggerKind::TierEntered);
        }
        if self.quadrant_before != self.quadrant_after {
            kinds.push(TriggerKind::QuadrantEntered);
        }
        kinds
    }
}

/// The trigger kinds the sweep fires: they depend on time passing, not on
/// a feed event, and take the `days` parameter.
pub const SWEPT: [TriggerKind; 3] = [
    TriggerKind::RenewalDue,
    TriggerKind::OnboardingStalled,
    TriggerKind::ComplaintUnresolved,
];

/// Which accounts a playbook applies to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Only these segments; empty for any.
    #[serde(with = "codes")]
    pub segments: Vec<Segment>,
    /// Only accounts with at least this MRR.
    pub min_mrr: Minor,
    /// Only accounts with at most this MRR.
    pub max_mrr: Option<Minor>,
}

impl Filter {
    /// Whether an account with these facts passes.
    pub fn admits(&self, facts: &AccountFacts) -> bool {
        (self.segments.is_empty() || self.segments.contains(&facts.segment))
            && facts.mrr >= self.min_mrr
            && self.max_mrr.is_none_or(|max| facts.mrr <= max)
    }
}

/// One step of a playbook: a task of its CTAs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What to do.
    pub title: String,
    /// Days after opening that it is due.
    pub due_offset_days: i32,
    /// What else it does when it comes due; `None` for a task only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

/// What a playbook step does besides being a task (docs/design.md section
/// 6.4): delivered from the service's feed like every notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// An email to `to`, or to the CTA's owner when `to` is empty.
    Email {
        /// The address; empty for the CTA's owner.
        to: String,
        /// The subject template; empty for [`DEFAULT_SUBJECT`].
        subject: String,
        /// The text template; empty for [`DEFAULT_BODY`].
        body: String,
    },
    /// A Slack-compatible incoming-webhook message.
    Chat {
        /// Where to POST.
        url: String,
        /// The text template; empty for [`DEFAULT_BODY`].
        body: String,
    },
    /// A signed JSON POST of the CTA and its account.
    Webhook {
        /// Where to POST.
        url: String,
        /// The HMAC-SHA256 key of the signature.
        secret: String,
    },
}

/// The subject of a step's email when the step names none.
pub const DEFAULT_SUBJECT: &str = "[Bowtie] {step}: {account}";
/// The text of a step's email or chat message when the step names none.
pub const DEFAULT_BODY: &str =
    "{account}: {reason}\n\n{step} (due {due}, CTA owner {owner}).\n\nOpen the account: {link}\n";
/// The names a step's templates may use, each written `{name}`.
pub const TEMPLATE_NAMES: [&str; 6] = ["account", "reason", "owner", "step", "due", "link"];

/// Fills the webhook secrets a request left empty (docs/design.md 6.5): a
/// secret is write-only, so a client that read a playbook and sends it back
/// has none to send. An empty secret keeps the one of the `current` version's
/// first WEBHOOK step with the same URL; a secret sent replaces it. Returns
/// the index of the first WEBHOOK step left without a secret (every step on
/// create, where there is no current version; a step whose URL is new on
/// update).
pub fn keep_secrets(steps: &mut [Step], current: Option<&[Step]>) -> Result<(), usize> {
    for (i, step) in steps.iter_mut().enumerate() {
        let Some(Action::Webhook { url, secret }) = &mut step.action else {
            continue;
        };
        if !secret.is_empty() {
            continue;
        }
        let stored = current
            .into_iter()
            .flatten()
            .find_map(|old| match &old.action {
                Some(Action::Webhook {
                    url: old_url,
                    secret: old_secret,
                }) if old_url == url && !old_secret.is_empty() => Some(old_secret),
                _ => None,
            });
        match stored {
            Some(old) => secret.clone_from(old),
            None => return Err(i),
        }
    }
    Ok(())
}

/// The first `{name}` of `template` that is not one of [`TEMPLATE_NAMES`]
/// (or an unclosed `{`), if any.
pub fn unknown_placeholder(template: &str) -> Option<String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Some(after.to_owned());
        };
        let name = &after[..end];
        if !TEMPLATE_NAMES.contains(&name) {
            return Some(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    None
}

/// `template` with each `{name}` replaced by its value in `values` (pairs
/// of a name of [`TEMPLATE_NAMES`] and its text); values are not expanded
/// again.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}').and_then(|end| {
            values
                .iter()
                .find(|(n, _)| *n == &after[..end])
                .map(|(_, v)| (end, v))
        }) {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `raw` is an absolute http:// or https:// URL with a host.
pub fn is_web_url(raw: &str) -> bool {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && !raw.chars().any(char::is_whitespace)
        && raw.parse::<http::Uri>().is_ok()
}

/// The host of a web URL, as deliveries name their recipient.
pub fn url_host(raw: &str) -> String {
    raw.split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .unwrap_or_default()
        .to_owned()
}

/// A playbook's definition: what one version holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybookSpec {
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// What fires it.
    pub trigger: Trigger,
    /// Which accounts it applies to.
    pub filter: Filter,
    /// The type of its CTAs.
    #[serde(with = "code")]
    pub cta_type: CtaType,
    /// Their priority.
    #[serde(with = "code")]
    pub priority: Priority,
    /// Who gets a CTA when the account has neither CSM nor owner.
    pub owner_pool: Vec<String>,
    /// Days from opening to due.
    pub sla_days: i32,
    /// The tasks of its CTAs.
    pub steps: Vec<Step>,
    /// When its CTAs close by themselves.
    #[serde(with = "code")]
    pub auto_close: AutoClose,
    /// AUTO_CLOSE_RISK_BELOW_THRESHOLD: the churn risk in basis points.
    pub risk_threshold_bp: i32,
    /// At most one trigger per account per this many days; 0 for no limit.
    pub enrollment_limit_days: i32,
    /// Whether it acts.
    #[serde(with = "code")]
    pub mode: PlaybookMode,
    /// HOLDOUT: the share of triggers held out, in percent.
    pub holdout_percent: i32,
}

/// A playbook at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playbook {
    /// Its id.
    pub id: PlaybookId,
    /// The version, from 1.
    pub version: i64,
    /// The definition.
    pub spec: PlaybookSpec,
    /// When the playbook was created.
    pub created_at: Instant,
    /// When this version was written.
    pub updated_at: Instant,
}

/// What success knows of an account from the other services' feeds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountFacts {
    /// The account.
    pub account_id: AccountId,
    /// Its CSM (accounts), empty when none.
    pub csm: String,
    /// Its owner (accounts), empty when none.
    pub owner: String,
    /// Its segment (accounts).
    pub segment: Segment,
    /// Its MRR in the reporting currency (revenue).
    pub mrr: Minor,
    /// Whether its health is in the red band (scoring).
    pub red: bool,
    /// Its churn risk in basis points, when scoring has a model (scoring).
    pub churn_risk_bp: Option<i32>,
    /// Whether it has reached first value (funnel).
    pub first_value: bool,
    /// When it entered ONBOARDING, while it has not moved on (funnel).
    pub onboarding_since: Option<Instant>,
}

/// An event of another service, as a playbook trigger sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: TriggerKind,
    /// The account.
    pub account_id: AccountId,
    /// When it happened.
    pub at: Instant,
    /// What happened, in one line (the CTA's reason).
    pub reason: String,
    /// CONTRACTION: the share of MRR lost, in percent.
    pub percent: i32,
    /// STAGE_ENTERED: the stage entered.
    pub stage: Stage,
    /// TIER_ENTERED and QUADRANT_ENTERED: the move between value segments.
    pub segment: Option<SegmentMove>,
}

impl Trigger {
    /// Whether `event` is one this trigger fires on.
    pub fn fires_on(&self, event: &Event) -> bool {
        self.kind == event.kind
            && match self.kind {
                TriggerKind::Contraction => event.percent >= self.percent,
                TriggerKind::StageEntered => event.stage == self.stage,
                TriggerKind::TierEntered => event.segment.is_some_and(|m| {
                    m.tier_before != m.tier_after && self.tiers.contains(&m.tier_after)
                }),
                TriggerKind::QuadrantEntered => event.segment.is_some_and(|m| {
                    m.quadrant_before != m.quadrant_after
                        && self.quadrants.contains(&m.quadrant_after)
                        && (self.tiers.is_empty() || self.tiers.contains(&m.tier_after))
                }),
                _ => true,
            }
    }
}

/// Which arm of the effectiveness comparison a trigger falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The play ran: a CTA was opened or updated.
    Treated = 1,
    /// Held out by the HOLDOUT draw: recorded, no CTA.
    HeldOut = 2,
    /// The playbook was OFF: recorded as the observational comparison group.
    Untreated = 3,
}

impl Arm {
    /// The stored number.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The arm of a stored number.
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(Self::Treated),
            2 => Some(Self::HeldOut),
            3 => Some(Self::Untreated),
            _ => None,
        }
    }
}

/// Whether a HOLDOUT playbook holds this account's triggers out:
/// `hash(playbook, account, seed) mod 100 < percent` (docs/design.md
/// section 6.3). The hash is SHA-256 of the three, so the draw is the same on
/// every replica and after every restart, and an account stays in its arm.
pub fn held_out(playbook: PlaybookId, account: AccountId, seed: &str, percent: i32) -> bool {
    let mut hash = Sha256::new();
    hash.update(playbook.0.as_bytes());
    hash.update(account.0.as_bytes());
    hash.update(seed.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 100) < percent.clamp(0, 100) as u64
}

/// What a trigger leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Open a new CTA (treated).
    Open,
    /// Count it on the account's open CTA from this playbook (treated).
    Update(CtaId),
    /// Record it held out; no CTA.
    HoldOut,
    /// The playbook is OFF: record it for the observational comparison; no CTA.
    Observe,
    /// Ignore it, and say why.
    Skip(Skip),
}

/// Why a trigger was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The account does not pass the filter.
    Filtered,
    /// The open CTA is snoozed.
    Snoozed,
    /// The enrollment limit: the account was enrolled too recently.
    Enrolled,
    /// The playbook's auto-close condition already holds (say, first value
    /// was reached before the onboarding event arrived on another feed).
    Resolved,
}

/// The open (not closed) CTA of an account from one playbook, as the
/// trigger decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenCta {
    /// Its id.
    pub id: CtaId,
    /// Its status.
    pub status: CtaStatus,
    /// SNOOZED: until when.
    pub snooze_until: Option<Instant>,
}

/// Decides what a trigger of `playbook` at `at` does, given the account's
/// facts, its open CTA from this playbook and its last enrollment (the last
/// recorded trigger, in any arm). An OFF playbook opens nothing but records
/// the trigger, so the accounts it would have treated form the
/// observational comparison group of docs/design.md section 6.3.
pub fn decide(
    playbook: &Playbook,
    facts: &AccountFacts,
    open: Option<OpenCta>,
    last_enrolled: Option<Instant>,
    at: Instant,
    seed: &str,
) -> Decision {
    let spec = &playbook.spec;
    if !spec.filter.admits(facts) {
        return Decision::Skip(Skip::Filtered);
    }
    if open.is_none() && auto_closes(spec.auto_close, spec.risk_threshold_bp, facts) {
        return Decision::Skip(Skip::Resolved);
    }
    if spec.mode != PlaybookMode::Off
        && let Some(open) = open
    {
        if open.status == CtaStatus::Snoozed && open.snooze_until.is_some_and(|until| at < until) {
            return Decision::Skip(Skip::Snoozed);
        }
        return Decision::Update(open.id);
    }
    if spec.enrollment_limit_days > 0
        && last_enrolled.is_some_and(|last| {
            at.micros_since(last) < i64::from(spec.enrollment_limit_days) * MICROS_PER_DAY
        })
    {
        return Decision::Skip(Skip::Enrolled);
    }
    if spec.mode == PlaybookMode::Off {
        return Decision::Observe;
    }
    if spec.mode == PlaybookMode::Holdout
        && held_out(playbook.id, facts.account_id, seed, spec.holdout_percent)
    {
        return Decision::HoldOut;
    }
    Decision::Open
}

/// Who owns a new CTA (docs/design.md section 6.2): the account's CSM, else
/// its owner, else the pool member with the fewest open CTAs, ties by name.
/// `open_count` answers how many open CTAs a member has. `None` when there is
/// nobody at all.
pub fn assign_owner(
    facts: &AccountFacts,
    pool: &[String],
    open_count: impl Fn(&str) -> i64,
) -> Option<String> {
    if !facts.csm.is_empty() {
        return Some(facts.csm.clone());
    }
    if !facts.owner.is_empty() {
        return Some(facts.owner.clone());
    }
    pool.iter()
        .map(|m| (open_count(m), m))
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, m)| m.clone())
}

/// Whether a person may move a CTA from `from` to `to` (with `outcome` when
/// closing). Legal: OPEN -> IN_PROGRESS, OPEN/IN_PROGRESS -> SNOOZED,
/// SNOOZED -> OPEN/IN_PROGRESS, any open status -> CLOSED with a person's
/// outcome, CLOSED -> OPEN (reopen). Everything else is FAILED_PRECONDITION
/// naming both states.
pub fn check_transition(from: CtaStatus, to: CtaStatus, outcome: Outcome) -> Result<(), Error> {
    use CtaStatus::{Closed, InProgress, Open, Snoozed};
    let legal = matches!(
        (from, to),
        (Open, InProgress)
            | (Open | InProgress, Snoozed)
            | (Snoozed, Open | InProgress)
            | (Open | InProgress | Snoozed, Closed)
            | (Closed, Open)
    );
    if !legal {
        return Err(Error::FailedPrecondition(format!(
            "a CTA cannot go from {} to {}",
            from.as_str_name(),
            to.as_str_name()
        )));
    }
    if to == Closed && matches!(outcome, Outcome::Unspecified | Outcome::AutoClosed) {
        return Err(Error::invalid(
            "outcome",
            "closing needs SAVED, LOST, WON or NOT_NEEDED",
        ));
    }
    Ok(())
}

/// Whether an open CTA of a playbook with `auto_close` closes itself now
/// that the account has these facts.
pub fn auto_closes(auto_close: AutoClose, risk_threshold_bp: i32, facts: &AccountFacts) -> bool {
    match auto_close {
        AutoClose::Unspecified => false,
        AutoClose::HealthOutOfRed => !facts.red,
        AutoClose::RiskBelowThreshold => facts
            .churn_risk_bp
            .is_some_and(|risk| risk < risk_threshold_bp),
        AutoClose::FirstValue => facts.first_value,
        // An event, not a state: revenue's `renewal.recorded` closes these.
        AutoClose::RenewalRecorded => false,
    }
}

/// A subscription's renewal as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalDate {
    /// The account.
    pub account_id: AccountId,
    /// The subscription (revenue's id).
    pub subscription_id: String,
    /// The end of its current term.
    pub renews_at: Instant,
}

/// The renewals a RENEWAL_DUE trigger of `days` fires on at `now`: each
/// account's earliest renewal date in `(now, now + days]` (ties by
/// subscription id), in account order. A renewal date that has passed
/// fires nothing: the renewal happened or was missed.
pub fn due_renewals(renewals: &[RenewalDate], now: Instant, days: i32) -> Vec<RenewalDate> {
    let end = now.plus_days(i64::from(days));
    let mut due: Vec<&RenewalDate> = renewals
        .iter()
        .filter(|r| r.renews_at > now && r.renews_at <= end)
        .collect();
    due.sort_by(|a, b| {
        (a.account_id, a.renews_at, &a.subscription_id).cmp(&(
            b.account_id,
            b.renews_at,
            &b.subscription_id,
        ))
    });
    due.dedup_by_key(|r| r.account_id);
    due.into_iter().cloned().collect()
}

/// Whether something that started at `since` is older than `days` days at
/// `now`: an onboarding stalled, a complaint left unresolved.
pub fn overdue(since: Instant, now: Instant, days: i32) -> bool {
    now.micros_since(since) > i64::from(days) * MICROS_PER_DAY
}

/// Whole days from `now` to the later `at`, a part day counting as one:
/// a renewal 13 days and an hour away is "in 14 days".
pub fn days_until(now: Instant, at: Instant) -> i64 {
    let micros = at.micros_since(now).max(0);
    (micros + MICROS_PER_DAY - 1) / MICROS_PER_DAY
}

/// The date part of an instant, `2026-01-31`.
pub fn date(at: Instant) -> String {
    let full = at.to_string();
    full.get(..10).unwrap_or(&full).to_owned()
}

/// One arm of the comparison: triggers, matured triggers and churned ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArmCounts {
    /// Triggers in the period.
    pub triggers: i64,
    /// Triggers whose horizon has passed.
    pub matured: i64,
    /// Matured triggers whose account churned within the horizon.
    pub churned: i64,
    /// Triggers with a health change (see [`health_change`]).
    pub health_measured: i64,
    /// The sum of those changes, in score points.
    pub health_change_total: i64,
}

impl ArmCounts {
    /// churned / matured; `None` without matured triggers.
    pub fn churn_rate(&self) -> Option<f64> {
        (self.matured > 0).then(|| self.churned as f64 / self.matured as f64)
    }

    /// Counts one trigger's health change, if it has one.
    pub fn add_health_change(&mut self, change: Option<i32>) {
        if let Some(c) = change {
            self.health_measured += 1;
            self.health_change_total += i64::from(c);
        }
    }

    /// The mean health change 30 days after the trigger; `None` without any.
    pub fn health_change_30d(&self) -> Option<f64> {
        (self.health_measured > 0)
            .then(|| self.health_change_total as f64 / self.health_measured as f64)
    }
}

/// The effect of a playbook on churn: treated rate minus comparison rate,
/// with its 95% interval (normal approximation of the difference of two
/// proportions, docs/design.md section 6.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effect {
    /// churn_rate(treated) - churn_rate(comparison).
    pub difference: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end of the 95% interval.
    pub high: f64,
}

/// The effect, or why there is none: each arm needs [`MIN_MATURED`] matured
/// triggers.
pub fn effect(treated: ArmCounts, comparison: ArmCounts) -> Result<Effect, String> {
    if treated.matured < MIN_MATURED || comparison.matured < MIN_MATURED {
        return Err(format!(
            "an effect needs {MIN_MATURED} matured triggers in each arm; there are {} treated and {} in the comparison group",
            treated.matured, comparison.matured
        ));
    }
    let (n1, n2) = (treated.matured as f64, comparison.matured as f64);
    let (p1, p2) = (treated.churned as f64 / n1, comparison.churned as f64 / n2);
    let difference = p1 - p2;
    let half = 1.96 * (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2).sqrt();
    Ok(Effect {
        difference,
        low: difference - half,
        high: difference + half,
    })
}

/// Whether an account that churned at the instants `churns` counts as
/// churned for a trigger at `at` judged over `horizon_days`.
pub fn churned_within(at: Instant, horizon_days: i32, churns: &[Instant]) -> bool {
    let end = at.plus_days(i64::from(horizon_days));
    churns.iter().any(|c| *c >= at && *c <= end)
}

/// Whether the account of a trigger of `kind` at `at` counts as lost over
/// `horizon_days`: for a win-back play (a CHURN trigger) the account is
/// already gone, so it is lost unless its MRR came back within the horizon;
/// for every other trigger it is lost when its MRR reached zero within it.
pub fn lost_within(
    kind: TriggerKind,
    at: Instant,
    horizon_days: i32,
    churns: &[Instant],
    reactivations: &[Instant],
) -> bool {
    if kind == TriggerKind::Churn {
        let end = at.plus_days(i64::from(horizon_days));
        !reactivations.iter().any(|r| *r > at && *r <= end)
    } else {
        churned_within(at, horizon_days, churns)
    }
}

/// Days after a trigger its health change is read.
pub const HEALTH_CHANGE_DAYS: i64 = 30;

/// An account's health score at `at`: the latest of `scores` (instant and
/// score, in any order) at or before it; `None` before the first.
pub fn score_at(scores: &[(Instant, i32)], at: Instant) -> Option<i32> {
    scores
        .iter()
        .filter(|(t, _)| *t <= at)
        .max_by_key(|(t, _)| *t)
        .map(|(_, s)| *s)
}

/// The health change of a trigger at `at`: the score [`HEALTH_CHANGE_DAYS`]
/// later minus the score at the trigger, when the trigger is that old by
/// `now` and the account had a score at both instants.
pub fn health_change(scores: &[(Instant, i32)], at: Instant, now: Instant) -> Option<i32> {
    let later = at.plus_days(HEALTH_CHANGE_DAYS);
    if later > now {
        return None;
    }
    Some(score_at(scores, later)? - score_at(scores, at)?)
}

/// The median of `values`, `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// Who is notified of which CTAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// As CTAs name their owner.
    pub person: String,
    /// Where their email goes; empty: `person` itself.
    pub email: String,
    /// Only these CTA types; empty for all.
    pub cta_types: Vec<CtaType>,
    /// Only CTAs of at least this priority.
    pub min_priority: Priority,
    /// No email at all.
    pub muted: bool,
    /// One email a day listing their open and overdue CTAs.
    pub daily_digest: bool,
    /// From which hour of the day (UTC) the digest is sent.
    pub digest_hour_utc: i32,
}

impl Person {
    /// Where their digest goes, if they get one: their address (or their
    /// name when that is an address), unless they muted email.
    pub fn digest_address(&self) -> Option<String> {
        if self.muted || !self.daily_digest {
            return None;
        }
        let to = if self.email.is_empty() {
            &self.person
        } else {
            &self.email
        };
        is_address(to).then(|| to.clone())
    }
}

/// Whether a digest of the day starting at `day_start` is due at `now` for
/// someone who asked for it from `hour` UTC.
pub fn digest_due(day_start: Instant, hour: i32, now: Instant) -> bool {
    now.micros_since(day_start) >= i64::from(hour.clamp(0, 23)) * MICROS_PER_DAY / 24
}

/// Where a CTA's owner is emailed, if at all: their settings' address (or
/// their name when that is an address), unless they muted email or filter
/// out this CTA's type or priority. An owner without settings is emailed
/// when the owner is an address.
pub fn email_recipient(
    owner: &str,
    settings: Option<&Person>,
    cta_type: CtaType,
    priority: Priority,
) -> Option<String> {
    let address = |s: &str| is_address(s).then(|| s.to_owned());
    match settings {
        None => address(owner),
        Some(p) if p.muted => None,
        Some(p) if !p.cta_types.is_empty() && !p.cta_types.contains(&cta_type) => None,
        Some(p) if (priority as i32) < (p.min_priority as i32) => None,
        Some(p) if p.email.is_empty() => address(owner),
        Some(p) => address(&p.email),
    }
}

/// Whether `s` looks like one email address: `local@domain.tld`, no spaces
/// or angle brackets (the SMTP library checks it properly when sending).
pub fn is_address(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | ','))
}

#[cfg(test)]
mod tests;
