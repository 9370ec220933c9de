//! The ownership rules on the funnel's stage transitions (docs/design.md
//! 9.3): a csm records transitions for the accounts it is CSM or owner of, a
//! manager for its team's too; a refused one keeps nothing and is audited;
//! an import batch naming another account is refused whole.

use bowtie_proto::common::{AuditFilter, Segment, Stage};
use bowtie_proto::funnel::{
    GetJourneyRequest, ImportTransitionsRequest, ImportedTransition, ListAuditEventsRequest,
};
use bowtie_testkit::people::{secret, with_people};
use bowtie_testkit::{ADMIN_KEY, TestDatabase, TestServer, backend_test};
use tonic::Code;

use crate::*;

backend_test!(
    a_csm_records_transitions_of_its_own_accounts_and_is_denied_on_another_csms_with_the_denial_audited,
    a_manager_records_for_its_team_and_an_import_batch_naming_another_account_is_refused_whole,
);

/// Accounts and a funnel knowing ada (csm) and lead (manager of grace).
async fn start(db: &TestDatabase) -> anyhow::Result<Suite> {
    let accounts = TestServer::start(db).await?;
    let mut settings = db.server_settings()?;
    settings.peers.accounts = accounts.uri();
    settings.peers.revenue = NO_PEER.to_owned();
    with_people(
        &mut settings,
        &[("ada@example.com", "csm"), ("lead@example.com", "manager")],
    );
    let funnel = TestServer::start_service(FUNNEL_SERVICE, &settings, bowtie_funnel::build).await?;
    Ok(Suite { accounts, funnel })
}

fn code<T>(answer: Result<T, tonic::Status>) -> Option<(Code, String)> {
    answer.err().map(|s| (s.code(), s.message().to_owned()))
}

fn row(account_id: &str, stage: Stage, on_day: i64) -> ImportedTransition {
    let t = transition(account_id, stage, on_day);
    ImportedTransition {
        account_id: t.account_id,
        to_stage: t.to_stage,
        occurred_at: t.occurred_at,
        reason: t.reason,
        source: t.source,
    }
}

/// Whether `account` has a journey (any transition kept).
async fn has_journey(suite: &Suite, account: &str) -> anyhow::Result<bool> {
    let answer = suite
        .funnel()
        .get_journey(GetJourneyRequest {
            account_id: account.to_owned(),
        })
        .await;
    match answer {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(s.into()),
    }
}

async fn a_csm_records_transitions_of_its_own_accounts_and_is_denied_on_another_csms_with_the_denial_audited(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = start(db).await?;
    let own = suite
        .customer("Acme", Segment::Smb, "ADA@example.com")
        .await?;
    let other = suite
        .customer("Globex", Segment::Smb, "grace@example.com")
        .await?;
    let mut ada = suite.funnel_with(&secret("ada@example.com"));

    assert_eq!(
        code(
            ada.record_transition(transition(&own, Stage::Awareness, 1))
                .await
        ),
        None
    );
    assert_eq!(
        code(
            ada.record_transition(transition(&other, Stage::Awareness, 1))
                .await
        ),
        Some((
            Code::PermissionDenied,
            format!(
                "account {other} is not in the book of \"ada@example.com\" (role csm): only its CSM or owner may change it"
            )
        ))
    );
    assert!(!has_journey(&suite, &other).await?);
    let audited: Vec<(String, String, String)> = suite
        .funnel_with(ADMIN_KEY)
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                account_id: other.clone(),
                ..AuditFilter::default()
            }),
            page: None,
        })
        .await?
        .into_inner()
        .events
        .into_iter()
        .map(|e| {
            let method = e.rpc.rsplit('/').next().unwrap_or_default().to_owned();
            (e.principal, method, e.result_code)
        })
        .collect();
    assert_eq!(
        audited,
        vec![(
            "ada@example.com".to_owned(),
            "RecordTransition".to_owned(),
            "PERMISSION_DENIED".to_owned()
        )]
    );
    Ok(())
}

async fn a_manager_records_for_its_team_and_an_import_batch_naming_another_account_is_refused_whole(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = start(db).await?;
    let team = suite
        .customer("Acme", Segment::Smb, "grace@example.com")
        .await?;
    let other = suite
        .customer("Globex", Segment::Smb, "lin@example.com")
        .await?;
    let mut lead = suite.funnel_with(&secret("lead@example.com"));

    assert_eq!(
        code(
            lead.record_transition(transition(&team, Stage::Awareness, 1))
                .await
        ),
        None
    );
    assert_eq!(
        code(
            lead.record_transition(transition(&other, Stage::Awareness, 1))
                .await
        )
        .map(|(c, m)| (c, m.contains("(role manager)"))),
        Some((Code::PermissionDenied, true))
    );
    let batches = vec![
        ImportTransitionsRequest {
            transitions: vec![row(&team, Stage::Education, 2)],
        },
        ImportTransitionsRequest {
            transitions: vec![
                row(&team, Stage::Selection, 3),
                row(&other, Stage::Awareness, 3),
            ],
        },
    ];
    let mut answers = lead
        .import_transitions(futures::stream::iter(batches))
        .await?
        .into_inner();
    assert_eq!(answers.message().await?.map(|a| a.recorded), Some(1));
    let refused = answers
        .message()
        .await
        .err()
        .map(|s| (s.code(), s.message().contains(&other)));
    assert_eq!(refused, Some((Code::PermissionDenied, true)));
    // The refused batch kept nothing: the team's journey stops at EDUCATION.
    assert!(!has_journey(&suite, &other).await?);
    assert_eq!(
        visited(&journey(&mut suite.funnel(), &team).await?),
        vec![Stage::Awareness, Stage::Education]
    );
    Ok(())
}
