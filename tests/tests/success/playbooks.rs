//! Playbooks are admin configuration: versioned with expected_version, every
//! version kept, names unique, and every bad field named.

use bowtie_proto::success::{
    GetPlaybookRequest, ListPlaybookVersionsRequest, ListPlaybooksRequest, PlaybookMode,
    TriggerKind, UpdatePlaybookRequest,
};
use bowtie_testkit::assert::{invalid_field, status};
use bowtie_testkit::success::{Suite, red_playbook};
use bowtie_testkit::{TestDatabase, backend_test};
use tonic::Code;

backend_test!(
    a_playbook_is_versioned_and_every_version_is_kept,
    a_bad_playbook_is_refused_naming_the_field,
);

async fn a_playbook_is_versioned_and_every_version_is_kept(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let v1 = suite.playbook(red_playbook("Save red accounts")).await?;
    assert_eq!(v1.version, 1);
    let mut admin = suite.admin();
    let mut spec = red_playbook("Save red accounts");
    spec.sla_days = 3;
    let update = |expected_version| UpdatePlaybookRequest {
        id: v1.id.clone(),
        spec: Some(spec.clone()),
        expected_version,
        idempotency_key: String::new(),
    };
    let v2 = admin
        .update_playbook(update(1))
        .await?
        .into_inner()
        .playbook
        .ok_or_else(|| anyhow::anyhow!("no playbook"))?;
    assert_eq!(v2.version, 2);
    status(admin.update_playbook(update(1)).await, Code::Aborted);
    let current = suite
        .reader()
        .get_playbook(GetPlaybookRequest { id: v1.id.clone() })
        .await?
        .into_inner()
        .playbook
        .ok_or_else(|| anyhow::anyhow!("no playbook"))?;
    assert_eq!(current.spec.map(|s| s.sla_days), Some(3));
    let versions = suite
        .reader()
        .list_playbook_versions(ListPlaybookVersionsRequest { id: v1.id.clone() })
        .await?
        .into_inner()
        .versions;
    let shown: Vec<(i64, Option<i32>)> = versions
        .iter()
        .map(|p| (p.version, p.spec.as_ref().map(|s| s.sla_days)))
        .collect();
    assert_eq!(shown, [(2, Some(3)), (1, Some(7))]);
    // Names are unique; a writer may not change playbooks.
    status(
        suite
            .admin()
            .create_playbook(bowtie_proto::success::CreatePlaybookRequest {
                spec: Some(red_playbook("Save red accounts")),
                idempotency_key: String::new(),
            })
            .await,
        Code::AlreadyExists,
    );
    status(
        suite
            .client()
            .create_playbook(bowtie_proto::success::CreatePlaybookRequest {
                spec: Some(red_playbook("Another")),
                idempotency_key: String::new(),
            })
            .await,
        Code::PermissionDenied,
    );
    let all = suite
        .reader()
        .list_playbooks(ListPlaybooksRequest {})
        .await?
        .into_inner()
        .playbooks;
    assert_eq!(all.len(), 1);
    Ok(())
}

async fn a_bad_playbook_is_refused_naming_the_field(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut admin = suite.admin();
    let create = |spec| bowtie_proto::success::CreatePlaybookRequest {
        spec: Some(spec),
        idempotency_key: String::new(),
    };
    let mut negative_sla = red_playbook("A");
    negative_sla.sla_days = -1;
    invalid_field(
        admin.create_playbook(create(negative_sla)).await,
        "spec.sla_days",
    );
    let mut negative_step = red_playbook("A");
    negative_step.steps[1].due_offset_days = -2;
    invalid_field(
        admin.create_playbook(create(negative_step)).await,
        "spec.steps[1].due_offset_days",
    );
    let mut unknown_trigger = red_playbook("A");
    unknown_trigger.trigger = Some(bowtie_proto::success::Trigger {
        kind: 99,
        ..Default::default()
    });
    invalid_field(
        admin.create_playbook(create(unknown_trigger)).await,
        "spec.trigger.kind",
    );
    let mut contraction = red_playbook("A");
    contraction.trigger = Some(bowtie_proto::success::Trigger {
        kind: TriggerKind::Contraction as i32,
        percent: 0,
        ..Default::default()
    });
    invalid_field(
        admin.create_playbook(create(contraction)).await,
        "spec.trigger.percent",
    );
    for (kind, days) in [
        (TriggerKind::RenewalDue, 0),
        (TriggerKind::OnboardingStalled, -1),
        (TriggerKind::ComplaintUnresolved, 366),
    ] {
        let mut swept = red_playbook("A");
        swept.trigger = Some(bowtie_proto::success::Trigger {
            kind: kind as i32,
            days,
            ..Default::default()
        });
        invalid_field(
            admin.create_playbook(create(swept)).await,
            "spec.trigger.days",
        );
    }
    // The segment triggers name known tiers and quadrants, at least one of
    // what they enter.
    for (kind, tiers, quadrants, field) in [
        (
            TriggerKind::TierEntered,
            vec![],
            vec![],
            "spec.trigger.tiers",
        ),
        (
            TriggerKind::TierEntered,
            vec![1, 42],
            vec![],
            "spec.trigger.tiers[1]",
        ),
        (
            TriggerKind::TierEntered,
            vec![0],
            vec![],
            "spec.trigger.tiers[0]",
        ),
        (
            TriggerKind::QuadrantEntered,
            vec![1, 2],
            vec![],
            "spec.trigger.quadrants",
        ),
        (
            TriggerKind::QuadrantEntered,
            vec![],
            vec![2, 9],
            "spec.trigger.quadrants[1]",
        ),
        (
            TriggerKind::QuadrantEntered,
            vec![7],
            vec![2],
            "spec.trigger.tiers[0]",
        ),
    ] {
        let mut segment = red_playbook("A");
        segment.trigger = Some(bowtie_proto::success::Trigger {
            kind: kind as i32,
            tiers,
            quadrants,
            ..Default::default()
        });
        invalid_field(admin.create_playbook(create(segment)).await, field);
    }
    for amount in [0, -100] {
        let mut milestone = red_playbook("A");
        milestone.trigger = Some(bowtie_proto::success::Trigger {
            kind: TriggerKind::RevenueMilestone as i32,
            milestone_minor_units: amount,
            ..Default::default()
        });
        invalid_field(
            admin.create_playbook(create(milestone)).await,
            "spec.trigger.milestone_minor_units",
        );
    }
    let mut holdout = red_playbook("A");
    holdout.mode = PlaybookMode::Holdout as i32;
    holdout.holdout_percent = 100;
    invalid_field(
        admin.create_playbook(create(holdout)).await,
        "spec.holdout_percent",
    );
    let mut blank = red_playbook(" ");
    blank.owner_pool = vec![String::new()];
    let refused = admin.create_playbook(create(blank)).await;
    invalid_field(refused, "spec.owner_pool[0]");
    status(
        admin
            .get_playbook(GetPlaybookRequest {
                id: uuid::Uuid::now_v7().to_string(),
            })
            .await,
        Code::NotFound,
    );
    Ok(())
}
