//! SQL metacharacters in every text filter are plain text: a filter of
//! `%`, `_`, quotes, backslashes or an injected clause matches exactly the
//! records whose value holds those characters, never every record, never an
//! error, and the tables are intact afterwards.
//!
//! The text filters: accounts `ListAccounts` (`text`: substring of the name;
//! `owner`, `csm`: exact), funnel `ListAccountsInStage`, `GetFunnelReport`
//! and `GetCohortReport` (`owner`, exact), revenue `GetRetention` (`owner`,
//! exact).

use std::time::Duration;

use bowtie_proto::accounts::{Account, ListAccountsRequest};
use bowtie_proto::common::{Period, Segment, Stage};
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_proto::funnel::{
    GetCohortReportRequest, GetFunnelReportRequest, ListAccountsInStageRequest,
    RecordTransitionRequest,
};
use bowtie_proto::revenue::GetRetentionRequest;
use bowtie_proto::revenue::revenue_service_client::RevenueServiceClient;
use bowtie_testkit::fixtures::{account, create_account};
use bowtie_testkit::revenue::{create, day, monthly};
use bowtie_testkit::stack::Stack;
use bowtie_testkit::{ADMIN_KEY, TestDatabase, backend_test, within};

backend_test!(sql_metacharacters_in_every_text_filter_match_only_literally);

/// Filters an attacker or an unlucky user may type.
const METACHARACTERS: &[&str] = &[
    "%",
    "_",
    "'",
    "\"",
    "\\",
    "' OR '1'='1",
    "' OR 1=1 --",
    "'; DROP TABLE accounts; --",
    "%' OR owner LIKE '%",
    "$1",
    ";",
];

/// An owner (and CSM) made of metacharacters, so exact matches are checked
/// too, not only misses.
const TRICKY_OWNER: &str = "o'brien%_\\\"; --";

async fn sql_metacharacters_in_every_text_filter_match_only_literally(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let mut accounts = stack.accounts.accounts();
    let plain = create_account(
        &mut accounts,
        Account {
            owner: "ana@example.com".to_owned(),
            csm: "bo@example.com".to_owned(),
            ..account("Acme", Segment::Smb)
        },
    )
    .await?;
    let tricky = create_account(
        &mut accounts,
        Account {
            owner: TRICKY_OWNER.to_owned(),
            csm: TRICKY_OWNER.to_owned(),
            ..account("50% Off_Sale 'Quoted' \\ Co", Segment::Smb)
        },
    )
    .await?;
    let everyone = [&plain, &tricky];

    // Accounts: the name substring and the exact owner and CSM.
    for m in METACHARACTERS.iter().copied().chain([TRICKY_OWNER]) {
        let names = |r: ListAccountsRequest| {
            let mut accounts = accounts.clone();
            async move {
                let mut names: Vec<String> = accounts
                    .list_accounts(r)
                    .await?
                    .into_inner()
                    .accounts
                    .into_iter()
                    .map(|a| a.name)
                    .collect();
                names.sort();
                Ok::<_, tonic::Status>(names)
            }
        };
        let by_text = names(ListAccountsRequest {
            text: m.to_owned(),
            ..ListAccountsRequest::default()
        })
        .await?;
        let expected: Vec<String> = everyone
            .iter()
            .filter(|a| a.name.to_lowercase().contains(&m.to_lowercase()))
            .map(|a| a.name.clone())
            .collect();
        assert_eq!(by_text, expected, "text filter {m:?}");
        for (field, request) in [
            (
                "owner",
                ListAccountsRequest {
                    owner: m.to_owned(),
                    ..ListAccountsRequest::default()
                },
            ),
            (
                "csm",
                ListAccountsRequest {
                    csm: m.to_owned(),
                    ..ListAccountsRequest::default()
                },
            ),
        ] {
            let expected: Vec<String> = if m == TRICKY_OWNER {
                vec![tricky.name.clone()]
            } else {
                Vec::new()
            };
            assert_eq!(names(request).await?, expected, "{field} filter {m:?}");
        }
    }

    // Funnel: both accounts become leads; the funnel learns their owners
    // from the accounts feed.
    let mut funnel = FunnelServiceClient::new(stack.funnel.with_key(ADMIN_KEY));
    for a in everyone {
        funnel
            .record_transition(RecordTransitionRequest {
                account_id: a.id.clone(),
                to_stage: Stage::Awareness as i32,
                occurred_at: Some(day(2026, 1, 5)),
                ..RecordTransitionRequest::default()
            })
            .await?;
    }
    let lister = funnel.clone();
    let in_stage = |owner: &str| {
        let mut funnel = lister.clone();
        let request = ListAccountsInStageRequest {
            stage: Stage::Awareness as i32,
            owner: owner.to_owned(),
            ..ListAccountsInStageRequest::default()
        };
        async move {
            Ok::<_, tonic::Status>(
                funnel
                    .list_accounts_in_stage(request)
                    .await?
                    .into_inner()
                    .accounts
                    .into_iter()
                    .map(|a| a.account_id)
                    .collect::<Vec<_>>(),
            )
        }
    };
    within(15, "the funnel to learn the owners", async {
        while in_stage(TRICKY_OWNER).await? != vec![tricky.id.clone()] {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, tonic::Status>(())
    })
    .await??;
    let period = Some(Period {
        start: Some(day(2026, 1, 1)),
        end: Some(day(2026, 2, 1)),
    });
    for m in METACHARACTERS.iter().copied().chain([TRICKY_OWNER]) {
        let expected: usize = if m == TRICKY_OWNER { 1 } else { 0 };
        assert_eq!(in_stage(m).await?.len(), expected, "in-stage owner {m:?}");
        let report = funnel
            .get_funnel_report(GetFunnelReportRequest {
                period,
                owner: m.to_owned(),
                ..GetFunnelReportRequest::default()
            })
            .await?
            .into_inner();
        let leads: i64 = report
            .stages
            .iter()
            .filter(|s| s.stage == Stage::Awareness as i32)
            .map(|s| s.volume)
            .sum();
        assert_eq!(leads, expected as i64, "funnel report owner {m:?}");
        funnel
            .get_cohort_report(GetCohortReportRequest {
                period,
                cohort_stage: Stage::Awareness as i32,
                owner: m.to_owned(),
                ..GetCohortReportRequest::default()
            })
            .await?;
    }

    // Revenue: both pay from January; retention by owner.
    let mut revenue = RevenueServiceClient::new(stack.revenue.with_key(ADMIN_KEY));
    for a in everyone {
        revenue
            .create_subscription(create(monthly(&a.id, day(2026, 1, 1), 1, 10_000)))
            .await?;
    }
    for m in METACHARACTERS.iter().copied().chain([TRICKY_OWNER]) {
        let retention = revenue
            .get_retention(GetRetentionRequest {
                start_at: Some(day(2026, 2, 1)),
                end_at: Some(day(2026, 3, 1)),
                owner: m.to_owned(),
                ..GetRetentionRequest::default()
            })
            .await?
            .into_inner();
        let expected: i64 = if m == TRICKY_OWNER { 1 } else { 0 };
        assert_eq!(retention.accounts_start, expected, "retention owner {m:?}");
    }

    // Nothing was dropped or rewritten.
    let all = accounts
        .list_accounts(ListAccountsRequest::default())
        .await?
        .into_inner()
        .accounts;
    assert_eq!(all.len(), 2);
    Ok(())
}
