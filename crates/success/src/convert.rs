//! Between the wire and the domain: every request is parsed into checked
//! domain values with field-named violations, and every response message is
//! built here from domain values.

use bowtie_proto::success as pb;
use bowtie_runtime::error::FieldViolations;
use bowtie_runtime::validate::{enum_value, optional_text, required_text};
use bowtie_runtime::{Instant, Minor};

use crate::domain::*;
use crate::service::Effectiveness;
use crate::storage::{Activity, Comment, Cta, Delivery, Task};

fn days(v: &mut FieldViolations, field: &str, raw: i32) -> Option<i32> {
    if (0..=MAX_DAYS).contains(&raw) {
        Some(raw)
    } else {
        v.add(field, format!("must be between 0 and {MAX_DAYS} days"));
        None
    }
}

fn trigger(v: &mut FieldViolations, field: &str, t: Option<&pb::Trigger>) -> Option<Trigger> {
    let Some(t) = t else {
        v.add(field, "is required");
        return None;
    };
    let kind = enum_value::<TriggerKind>(v, &format!("{field}.kind"), t.kind, true)?;
    let mut percent = 0;
    let mut stage = Stage::Unspecified;
    match kind {
        TriggerKind::Contraction => {
            if (1..=100).contains(&t.percent) {
                percent = t.percent;
            } else {
                v.add(format!("{field}.percent"), "must be between 1 and 100");
                return None;
            }
        }
        TriggerKind::StageEntered => {
            stage = enum_value::<Stage>(v, &format!("{field}.stage"), t.stage, true)?;
        }
        _ => {}
    }
    let mut days = 0;
    if SWEPT.contains(&kind) {
        if (1..=MAX_DAYS).contains(&t.days) {
            days = t.days;
        } else {
            v.add(
                format!("{field}.days"),
                format!("must be between 1 and {MAX_DAYS} days"),
            );
            return None;
        }
    }
    let (mut tiers, mut quadrants) = (Vec::new(), Vec::new());
    if SEGMENT_KINDS.contains(&kind) {
        tiers = listed::<Tier>(v, &format!("{field}.tiers"), &t.tiers)?;
        if kind == TriggerKind::QuadrantEntered {
            quadrants = listed::<Quadrant>(v, &format!("{field}.quadrants"), &t.quadrants)?;
        }
        if kind == TriggerKind::TierEntered && tiers.is_empty() {
            v.add(format!("{field}.tiers"), "must name at least one tier");
            return None;
        }
        if kind == TriggerKind::QuadrantEntered && quadrants.is_empty() {
            v.add(
                format!("{field}.quadrants"),
                "must name at least one quadrant",
            );
            return None;
        }
    }
    let mut milestone = Minor::ZERO;
    if kind == TriggerKind::RevenueMilestone {
        if t.milestone_minor_units > 0 {
            milestone = Minor(t.milestone_minor_units);
        } else {
            v.add(
                format!("{field}.milestone_minor_units"),
                "must be a positive amount (minor units of the reporting currency)",
            );
            return None;
        }
    }
    Some(Trigger {
        kind,
        percent,
        stage,
        days,
        tiers,
        quadrants,
        milestone,
    })
}

/// A list of contract enums, each set and known (`field[i]` names a bad
/// one), without repeats.
fn listed<E: TryFrom<i32> + PartialEq>(
    v: &mut FieldViolations,
    field: &str,
    raw: &[i32],
) -> Option<Vec<E>> {
    let mut out: Vec<E> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let e = enum_value::<E>(v, &format!("{field}[{i}]"), *r, true)?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Some(out)
}

fn filter(v: &mut FieldViolations, field: &str, f: Option<&pb::Filter>) -> Option<Filter> {
    let Some(f) = f else {
        return Some(Filter::default());
    };
    let mut segments = Vec::new();
    for (i, raw) in f.segments.iter().enumerate() {
        segments.push(enum_value::<Segment>(
            v,
            &format!("{field}.segments[{i}]"),
            *raw,
            true,
        )?);
    }
    if f.min_mrr_minor_units < 0 {
        v.add(
            format!("{field}.min_mrr_minor_units"),
            "must not be negative",
        );
        return None;
    }
    if f.max_mrr_minor_units < 0
        || (f.max_mrr_minor_units > 0 && f.max_mrr_minor_units < f.min_mrr_minor_units)
    {
        v.add(
            format!("{field}.max_mrr_minor_units"),
            "must be 0 (no bound) or at least min_mrr_minor_units",
        );
        return None;
    }
    Some(Filter {
        segments,
        min_mrr: Minor(f.min_mrr_minor_units),
        max_mrr: (f.max_mrr_minor_units > 0).then_some(Minor(f.max_mrr_minor_units)),
    })
}

fn names(v: &mut FieldViolations, field: &str, raw: &[String]) -> Option<Vec<String>> {
    if raw.len() > MAX_ITEMS {
        v.add(field, format!("must have at most {MAX_ITEMS} entries"));
        return None;
    }
    raw.iter()
        .enumerate()
        .map(|(i, name)| required_text(v, &format!("{field}[{i}]"), name, MAX_NAME))
        .collect()
}

/// A step template: at most `max` characters, naming only known values.
fn template(v: &mut FieldViolations, field: &str, raw: &str, max: usize) -> Option<String> {
    // A body may span lines: only line breaks and tabs among control characters.
    let lines: Vec<&str> = raw.split(['\n', '\t', '\r']).collect();
    for line in &lines {
        optional_text(v, field, line, max)?;
    }
    if raw.chars().count() > max {
        v.add(field, format!("must be at most {max} characters"));
        return None;
    }
    let text = raw.to_owned();
    if let Some(name) = unknown_placeholder(&text) {
        v.add(
            field,
            format!(
                "names {{{name}}}; a template may name {}",
                TEMPLATE_NAMES.map(|n| format!("{{{n}}}")).join(", ")
            ),
        );
        return None;
    }
    Some(text)
}

fn web_url(v: &mut FieldViolations, field: &str, raw: &str) -> Option<String> {
    let url = required_text(v, field, raw, MAX_DESCRIPTION)?;
    if !is_web_url(&url) {
        v.add(field, "must be an http:// or https:// URL");
        return None;
    }
    Some(url)
}

/// Parses what a step does besides being a task (fields under `field`).
fn action(v: &mut FieldViolations, field: &str, s: &pb::Step) -> Option<Option<Action>> {
    let kind = enum_value::<pb::StepAction>(v, &format!("{field}.action"), s.action, false)?;
    Some(match kind {
        pb::StepAction::Unspecified => None,
        pb::StepAction::Email => {
            let to = optional_text(v, &format!("{field}.email_to"), &s.email_to, MAX_NAME).filter(
                |to| {
                    let ok = to.is_empty() || is_address(to);
                    if !ok {
                        v.add(format!("{field}.email_to"), "must be an email address");
                    }
                    ok
                },
            );
            let subject = optional_text(v, &format!("{field}.subject"), &s.subject, MAX_NAME)
                .and_then(|subject| template(v, &format!("{field}.subject"), &subject, MAX_NAME));
            let body = template(v, &format!("{field}.body"), &s.body, MAX_TEXT);
            Some(Action::Email {
                to: to?,
                subject: subject?,
                body: body?,
            })
        }
        pb::StepAction::Chat => {
            let url = web_url(v, &format!("{field}.webhook_url"), &s.webhook_url);
            let body = template(v, &format!("{field}.body"), &s.body, MAX_TEXT);
            Some(Action::Chat {
                url: url?,
                body: body?,
            })
        }
        pb::StepAction::Webhook => {
            let url = web_url(v, &format!("{field}.webhook_url"), &s.webhook_url);
            // Empty is allowed here: the service requires it on create and
            // keeps the stored one on update (`domain::keep_secrets`).
            let secret = optional_text(
                v,
                &format!("{field}.webhook_secret"),
                &s.webhook_secret,
                MAX_NAME,
            );
            Some(Action::Webhook {
                url: url?,
                secret: secret?,
            })
        }
    })
}

fn step_to_pb(step: &Step) -> pb::Step {
    let mut out = pb::Step {
        title: step.title.clone(),
        due_offset_days: step.due_offset_days,
        ..pb::Step::default()
    };
    match &step.action {
        None => {}
        Some(Action::Email { to, subject, body }) => {
            out.action = pb::StepAction::Email as i32;
            out.email_to.clone_from(to);
            out.subject.clone_from(subject);
            out.body.clone_from(body);
        }
        Some(Action::Chat { url, body }) => {
            out.action = pb::StepAction::Chat as i32;
            out.webhook_url.clone_from(url);
            out.body.clone_from(body);
        }
        Some(Action::Webhook { url, secret }) => {
            out.action = pb::StepAction::Webhook as i32;
            out.webhook_url.clone_from(url);
            // Write-only (docs/design.md 6.5): reads say only that one is set.
            out.webhook_secret_set = !secret.is_empty();
        }
    }
    out
}

/// Parses a playbook definition.
pub fn spec_from_pb(
    v: &mut FieldViolations,
    field: &str,
    s: Option<&pb::PlaybookSpec>,
) -> Option<PlaybookSpec> {
    let Some(s) = s else {
        v.add(field, "is required");
        return None;
    };
    let name = required_text(v, &format!("{field}.name"), &s.name, MAX_NAME);
    let description = optional_text(
        v,
        &format!("{field}.description"),
        &s.description,
        MAX_DESCRIPTION,
    );
    let trigger = trigger(v, &format!("{field}.trigger"), s.trigger.as_ref());
    let filter = filter(v, &format!("{field}.filter"), s.filter.as_ref());
    let cta_type = enum_value::<CtaType>(v, &format!("{field}.cta_type"), s.cta_type, true);
    let priority = enum_value::<Priority>(v, &format!("{field}.priority"), s.priority, true);
    let owner_pool = names(v, &format!("{field}.owner_pool"), &s.owner_pool);
    let sla_days = days(v, &format!("{field}.sla_days"), s.sla_days);
    let steps = if s.steps.len() > MAX_ITEMS {
        v.add(
            format!("{field}.steps"),
            format!("must have at most {MAX_ITEMS} steps"),
        );
        None
    } else {
        s.steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let title = required_text(
                    v,
                    &format!("{field}.steps[{i}].title"),
                    &step.title,
                    MAX_NAME,
                );
                let due = days(
                    v,
                    &format!("{field}.steps[{i}].due_offset_days"),
                    step.due_offset_days,
                );
                let action = action(v, &format!("{field}.steps[{i}]"), step);
                Some(Step {
                    title: title?,
                    due_offset_days: due?,
                    action: action?,
                })
            })
            .collect::<Option<Vec<_>>>()
    };
    let auto_close =
        enum_value::<AutoClose>(v, &format!("{field}.auto_close"), s.auto_close, false);
    let risk_threshold_bp = match auto_close {
        Some(AutoClose::RiskBelowThreshold) if !(1..=10_000).contains(&s.risk_threshold_bp) => {
            v.add(
                format!("{field}.risk_threshold_bp"),
                "must be between 1 and 10000 basis points",
            );
            None
        }
        _ => Some(s.risk_threshold_bp.clamp(0, 10_000)),
    };
    let enrollment = days(
        v,
        &format!("{field}.enrollment_limit_days"),
        s.enrollment_limit_days,
    );
    let mode = enum_value::<PlaybookMode>(v, &format!("{field}.mode"), s.mode, true);
    let holdout_percent = match mode {
        Some(PlaybookMode::Holdout) if !(1..=99).contains(&s.holdout_percent) => {
            v.add(
                format!("{field}.holdout_percent"),
                "must be between 1 and 99 in HOLDOUT mode",
            );
            None
        }
        Some(PlaybookMode::Holdout) => Some(s.holdout_percent),
        _ => Some(0),
    };
    Some(PlaybookSpec {
        name: name?,
        description: description?,
        trigger: trigger?,
        filter: filter?,
        cta_type: cta_type?,
        priority: priority?,
        owner_pool: owner_pool?,
        sla_days: sla_days?,
        steps: steps?,
        auto_close: auto_close?,
        risk_threshold_bp: risk_threshold_bp?,
        enrollment_limit_days: enrollment?,
        mode: mode?,
        holdout_percent: holdout_percent?,
    })
}

fn spec_to_pb(s: &PlaybookSpec) -> pb::PlaybookSpec {
    pb::PlaybookSpec {
        name: s.name.clone(),
        description: s.description.clone(),
        trigger: Some(pb::Trigger {
            kind: s.trigger.kind as i32,
            percent: s.trigger.percent,
            stage: s.trigger.stage as i32,
            days: s.trigger.days,
            tiers: s.trigger.tiers.iter().map(|t| *t as i32).collect(),
            quadrants: s.trigger.quadrants.iter().map(|q| *q as i32).collect(),
            milestone_minor_units: s.trigger.milestone.get(),
        }),
        filter: Some(pb::Filter {
            segments: s.filter.segments.iter().map(|s| *s as i32).collect(),
            min_mrr_minor_units: s.filter.min_mrr.get(),
            max_mrr_minor_units: s.filter.max_mrr.map_or(0, Minor::get),
        }),
        cta_type: s.cta_type as i32,
        priority: s.priority as i32,
        owner_pool: s.owner_pool.clone(),
        sla_days: s.sla_days,
        steps: s.steps.iter().map(step_to_pb).collect(),
        auto_close: s.auto_close as i32,
        risk_threshold_bp: s.risk_threshold_bp,
        enrollment_limit_days: s.enrollment_limit_days,
        mode: s.mode as i32,
        holdout_percent: s.holdout_percent,
    }
}

/// A playbook version on the wire.
pub fn playbook_to_pb(p: &Playbook) -> pb::Playbook {
    pb::Playbook {
        id: p.id.0.to_string(),
        version: p.version,
        spec: Some(spec_to_pb(&p.spec)),
        update_time: Some(p.updated_at.to_timestamp()),
        create_time: Some(p.created_at.to_timestamp()),
    }
}

fn task_to_pb(index: usize, t: &Task) -> pb::Task {
    pb::Task {
        index: index as i32,
        title: t.title.clone(),
        due_time: Some(t.due_at.to_timestamp()),
        status: t.status,
    }
}

fn comment_to_pb(c: &Comment) -> pb::Comment {
    pb::Comment {
        author: c.author.clone(),
        text: c.text.clone(),
        create_time: Some(c.at.to_timestamp()),
    }
}

/// A CTA on the wire.
pub fn cta_to_pb(c: &Cta) -> pb::Cta {
    pb::Cta {
        id: c.id.0.to_string(),
        account_id: c.account_id.to_string(),
        playbook_id: c.playbook.map(|p| p.0.0.to_string()).unwrap_or_default(),
        playbook_version: c.playbook.map_or(0, |p| p.1),
        r#type: c.cta_type as i32,
        reason: c.reason.clone(),
        priority: c.priority as i32,
        owner: c.owner.clone(),
        status: c.status as i32,
        outcome: c.outcome as i32,
        due_time: Some(c.due_at.to_timestamp()),
        snooze_until: c.snooze_until.map(Instant::to_timestamp),
        snooze_reason: c.snooze_reason.clone(),
        tasks: c
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| task_to_pb(i, t))
            .collect(),
        comments: c.comments.iter().map(comment_to_pb).collect(),
        trigger_count: c.trigger_count,
        version: c.version,
        create_time: Some(c.created_at.to_timestamp()),
        update_time: Some(c.updated_at.to_timestamp()),
        close_time: c.closed_at.map(Instant::to_timestamp),
        first_action_time: c.first_action_at.map(Instant::to_timestamp),
    }
}

/// A timeline entry on the wire.
pub fn activity_to_pb(a: &Activity) -> pb::Activity {
    pb::Activity {
        id: a.id.0.to_string(),
        account_id: a.account_id.to_string(),
        kind: a.kind as i32,
        author: a.author.clone(),
        occur_time: Some(a.occurred_at.to_timestamp()),
        text: a.text.clone(),
        participants: a.participants.clone(),
    }
}

fn arm_to_pb(a: ArmCounts) -> pb::Arm {
    pb::Arm {
        triggers: a.triggers,
        matured: a.matured,
        churned: a.churned,
        churn_rate: a.churn_rate(),
        health_measured: a.health_measured,
        health_change_30d: a.health_change_30d(),
    }
}

/// The effectiveness report on the wire.
pub fn effectiveness_to_pb(e: &Effectiveness) -> pb::GetPlaybookEffectivenessResponse {
    let (effect, low, high, note) = match &e.effect {
        Ok(effect) => (
            Some(effect.difference),
            Some(effect.low),
            Some(effect.high),
            String::new(),
        ),
        Err(note) => (None, None, None, note.clone()),
    };
    pb::GetPlaybookEffectivenessResponse {
        playbook_id: e.playbook.0.to_string(),
        horizon_days: e.horizon_days,
        treated: Some(arm_to_pb(e.treated)),
        comparison: Some(arm_to_pb(e.comparison)),
        observational: e.observational,
        effect,
        effect_low: low,
        effect_high: high,
        ctas_opened: e.ctas_opened,
        closed_within_sla: e.closed_within_sla,
        median_hours_to_first_action: e.median_hours_to_first_action,
        outcomes: e.outcomes.to_vec(),
        note,
    }
}

/// Parses a required activity kind a person may log.
pub fn logged_kind(v: &mut FieldViolations, field: &str, raw: i32) -> Option<ActivityKind> {
    let kind = enum_value::<ActivityKind>(v, field, raw, true)?;
    if matches!(
        kind,
        ActivityKind::Note | ActivityKind::Call | ActivityKind::Meeting | ActivityKind::Email
    ) {
        Some(kind)
    } else {
        v.add(field, "must be NOTE, CALL, MEETING or EMAIL");
        None
    }
}

/// Parses a list of activity kinds (a filter).
pub fn kinds(v: &mut FieldViolations, field: &str, raw: &[i32]) -> Option<Vec<ActivityKind>> {
    raw.iter()
        .enumerate()
        .map(|(i, k)| enum_value::<ActivityKind>(v, &format!("{field}[{i}]"), *k, true))
        .collect()
}

/// Parses participants of an activity.
pub fn participants(v: &mut FieldViolations, field: &str, raw: &[String]) -> Option<Vec<String>> {
    names(v, field, raw)
}

/// Parses a person's notification settings.
pub fn person_from_pb(
    v: &mut FieldViolations,
    field: &str,
    p: Option<&pb::NotificationSettings>,
) -> Option<Person> {
    let Some(p) = p else {
        v.add(field, "is required");
        return None;
    };
    let person = required_text(v, &format!("{field}.person"), &p.person, MAX_NAME);
    let email = optional_text(v, &format!("{field}.email"), &p.email, MAX_NAME).filter(|e| {
        let ok = e.is_empty() || is_address(e);
        if !ok {
            v.add(format!("{field}.email"), "must be an email address");
        }
        ok
    });
    let cta_types = p
        .cta_types
        .iter()
        .enumerate()
        .map(|(i, t)| enum_value::<CtaType>(v, &format!("{field}.cta_types[{i}]"), *t, true))
        .collect::<Option<Vec<_>>>();
    let min_priority =
        enum_value::<Priority>(v, &format!("{field}.min_priority"), p.min_priority, false);
    let digest_hour_utc = if (0..=23).contains(&p.digest_hour_utc) {
        Some(p.digest_hour_utc)
    } else {
        v.add(
            format!("{field}.digest_hour_utc"),
            "must be an hour between 0 and 23",
        );
        None
    };
    Some(Person {
        person: person?,
        email: email?,
        cta_types: cta_types?,
        min_priority: min_priority?,
        muted: p.muted,
        daily_digest: p.daily_digest,
        digest_hour_utc: digest_hour_utc?,
    })
}

/// A person's notification settings on the wire.
pub fn person_to_pb(p: &Person) -> pb::NotificationSettings {
    pb::NotificationSettings {
        person: p.person.clone(),
        email: p.email.clone(),
        cta_types: p.cta_types.iter().map(|t| *t as i32).collect(),
        min_priority: p.min_priority as i32,
        muted: p.muted,
        daily_digest: p.daily_digest,
        digest_hour_utc: p.digest_hour_utc,
    }
}

/// A delivery on the wire.
pub fn delivery_to_pb(d: &Delivery) -> pb::Delivery {
    pb::Delivery {
        sequence: d.sequence,
        cta_id: d.cta_id.map(|c| c.0.to_string()).unwrap_or_default(),
        channel: d.channel,
        recipient: d.recipient.clone(),
        status: d.status as i32,
        attempts: d.attempts,
        last_error: d.last_error.clone(),
        deliver_time: d.delivered_at.map(Instant::to_timestamp),
        about: d.about.clone(),
    }
}

/// The books of business on the wire.
pub fn book_to_pb(report: &crate::book::BookReport) -> pb::GetBookOfBusinessResponse {
    let money = |m: Minor| {
        Some(bowtie_proto::common::Money {
            currency_code: report.currency.clone(),
            minor_units: m.get(),
        })
    };
    pb::GetBookOfBusinessResponse {
        books: report
            .rows
            .iter()
            .map(|r| {
                let paying = r.retention.accounts > 0;
                pb::Book {
                    person: r.person.clone(),
                    accounts: r.accounts,
                    arr: money(r.arr()),
                    average_health: r.average_health(),
                    red: r.red,
                    high_risk: r.high_risk,
                    open_ctas: r.open_ctas,
                    overdue_ctas: r.overdue_ctas,
                    renewals_90d: r.renewals,
                    renewal_amount_at_stake: money(r.renewal_at_stake),
                    renewal_forecast: money(r.renewal_forecast),
                    retention_accounts: r.retention.accounts,
                    logo_retention: paying.then_some(r.retention.logo),
                    grr: paying.then_some(r.retention.grr),
                    nrr: paying.then_some(r.retention.nrr),
                }
            })
            .collect(),
        reporting_currency_code: report.currency.clone(),
    }
}

/// The touches report on the wire.
pub fn touches_to_pb(rows: &[crate::book::TouchRow]) -> pb::GetTouchesReportResponse {
    pb::GetTouchesReportResponse {
        touches: rows
            .iter()
            .map(|r| pb::Touches {
                author: r.author.clone(),
                week: r.week.clone(),
                owner: r.owner.clone(),
                notes: r.notes,
                calls: r.calls,
                meetings: r.meetings,
                emails: r.emails,
                total: r.total(),
                accounts: r.accounts,
            })
            .collect(),
    }
}
