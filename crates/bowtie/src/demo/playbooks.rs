//! The demo company's playbooks, created before its history is written so
//! that the history's alerts, late invoices, churns and onboardings open
//! CTAs as they would have: saving red accounts, recovering failed
//! payments, onboarding kick-offs closed at first value, and win-back plays
//! for churned customers (docs/design.md section 6). Saving red accounts
//! and win-back hold a fifth of their triggers out and onboarding a third,
//! so the effectiveness report has a comparison group: the default demo's
//! year of onboardings gives both arms of the onboarding play the matured
//! triggers an effect needs, and its churns show in both.

use bowtie_proto::common::Stage;
use bowtie_proto::success::{
    AutoClose, CreatePlaybookRequest, CtaType, PlaybookMode, PlaybookSpec, Priority, Step, Trigger,
    TriggerKind,
};

use crate::client::SuccessClient;

/// Who gets a demo CTA when the account has neither CSM nor owner.
pub const POOL: &str = "cs-team@demo.example";

fn steps(list: &[(&str, i32)]) -> Vec<Step> {
    list.iter()
        .map(|(title, due)| Step {
            title: (*title).to_owned(),
            due_offset_days: *due,
            ..Step::default()
        })
        .collect()
}

struct Play {
    name: &'static str,
    description: &'static str,
    trigger: Trigger,
    cta_type: CtaType,
    priority: Priority,
    sla_days: i32,
    steps: &'static [(&'static str, i32)],
    auto_close: AutoClose,
    mode: PlaybookMode,
    holdout_percent: i32,
}

fn trigger(kind: TriggerKind) -> Trigger {
    Trigger {
        kind: kind as i32,
        ..Trigger::default()
    }
}

fn plays() -> Vec<Play> {
    vec![
        Play {
            name: "Save red accounts",
            description: "An account whose health fell into red gets a call from its CSM within a week.",
            trigger: trigger(TriggerKind::EnteredRed),
            cta_type: CtaType::Risk,
            priority: Priority::High,
            sla_days: 7,
            steps: &[
                ("Call the champion", 1),
                ("Agree a save plan", 3),
                ("Executive check-in", 7),
            ],
            auto_close: AutoClose::HealthOutOfRed,
            mode: PlaybookMode::Holdout,
            holdout_percent: 20,
        },
        Play {
            name: "Recover failed payments",
            description: "A late or failed invoice: reach the billing contact before it becomes involuntary churn.",
            trigger: trigger(TriggerKind::PaymentFailed),
            cta_type: CtaType::Risk,
            priority: Priority::Medium,
            sla_days: 5,
            steps: &[("Email the billing contact", 0), ("Call finance", 3)],
            auto_close: AutoClose::Unspecified,
            mode: PlaybookMode::On,
            holdout_percent: 0,
        },
        Play {
            name: "Onboarding kick-off",
            description: "A new customer gets a kick-off and a first-value review; closes itself at first value.",
            trigger: Trigger {
                kind: TriggerKind::StageEntered as i32,
                stage: Stage::Onboarding as i32,
                ..Trigger::default()
            },
            cta_type: CtaType::Onboarding,
            priority: Priority::High,
            sla_days: 30,
            steps: &[("Kick-off call", 2), ("First-value review", 21)],
            auto_close: AutoClose::FirstValue,
            mode: PlaybookMode::Holdout,
            holdout_percent: 33,
        },
        Play {
            name: "Win back churned customers",
            description: "A churned customer gets an exit interview and, a month later, an offer to return.",
            trigger: trigger(TriggerKind::Churn),
            cta_type: CtaType::WinBack,
            priority: Priority::Low,
            sla_days: 30,
            steps: &[("Exit interview", 3), ("Offer to return", 30)],
            auto_close: AutoClose::Unspecified,
            mode: PlaybookMode::Holdout,
            holdout_percent: 20,
        },
        Play {
            name: "Renewal in 60 days",
            description: "A subscription renewing within 60 days gets a value review and a renewal proposal; closes itself when the renewal is recorded.",
            trigger: Trigger {
                kind: TriggerKind::RenewalDue as i32,
                days: 60,
                ..Trigger::default()
            },
            cta_type: CtaType::Renewal,
            priority: Priority::High,
            sla_days: 45,
            steps: &[
                ("Value review with the champion", 7),
                ("Send the renewal proposal", 21),
            ],
            auto_close: AutoClose::RenewalRecorded,
            mode: PlaybookMode::On,
            holdout_percent: 0,
        },
    ]
}

/// Creates the demo playbooks (idempotently: a restart on the same data
/// replays the same keys and creates nothing). Returns the calls made.
pub async fn create(mut client: SuccessClient, prefix: &str) -> anyhow::Result<usize> {
    let plays = plays();
    for p in &plays {
        let spec = PlaybookSpec {
            name: p.name.to_owned(),
            description: p.description.to_owned(),
            trigger: Some(p.trigger.clone()),
            filter: None,
            cta_type: p.cta_type as i32,
            priority: p.priority as i32,
            owner_pool: vec![POOL.to_owned()],
            sla_days: p.sla_days,
            steps: steps(p.steps),
            auto_close: p.auto_close as i32,
            risk_threshold_bp: 0,
            enrollment_limit_days: 30,
            mode: p.mode as i32,
            holdout_percent: p.holdout_percent,
        };
        let created = client
            .create_playbook(CreatePlaybookRequest {
                spec: Some(spec),
                idempotency_key: format!(
                    "{prefix}-playbook-{}",
                    p.name.to_lowercase().replace(' ', "-")
                ),
            })
            .await;
        match created {
            // A playbook of that name that someone made meanwhile is theirs to keep.
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => anyhow::bail!(
                "creating playbook {:?}: {}",
                p.name,
                crate::client::describe(&s)
            ),
        }
    }
    Ok(plays.len())
}
