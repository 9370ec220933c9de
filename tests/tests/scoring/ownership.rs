//! The ownership rules on scoring's writes (docs/design.md 9.3): a csm
//! records signals only for the accounts of its book, a manager for its
//! team's, a batch naming any other account is refused whole with nothing
//! written and the refusal audited; admins and keys with scopes only write
//! everything.

use bowtie_proto::common::AuditFilter;
use bowtie_proto::scoring::{
    AcknowledgeAlertRequest, AlertState, ListAuditEventsRequest, RecordSignalsRequest,
    SignalOutcome, SignalType,
};
use bowtie_testkit::scoring::{
    Scoring, ScoringClient, alerts_of, health_when, logins, record, signal,
};
use bowtie_testkit::{TestDatabase, backend_test, within};
use tonic::Code;

backend_test!(
    a_csm_records_signals_for_its_own_accounts_and_a_batch_with_another_is_refused_whole,
    a_csm_signal_stream_is_refused_on_another_csms_account_and_audited_as_the_csm,
    a_manager_records_for_its_teams_accounts_and_admins_and_scoped_keys_for_any,
    an_alert_is_acknowledged_only_by_a_person_whose_book_holds_its_account,
);

/// A login signal for `account` keyed `key`, a day ago.
fn login(key: &str, account: &str) -> bowtie_proto::scoring::Signal {
    signal(key, account, SignalType::Login, 1, 1)
}

/// The status of recording `signals` as the caller of `client`.
async fn refusal(
    client: &mut ScoringClient,
    signals: Vec<bowtie_proto::scoring::Signal>,
) -> Option<(Code, String)> {
    record(client, signals).await.err().map(|e| {
        e.downcast_ref::<tonic::Status>()
            .map_or((Code::Unknown, e.to_string()), |s| {
                (s.code(), s.message().to_owned())
            })
    })
}

/// The outcome of each signal of a batch recorded with the write key.
async fn outcomes(
    suite: &Scoring,
    signals: Vec<bowtie_proto::scoring::Signal>,
) -> anyhow::Result<Vec<i32>> {
    let response = record(&mut suite.client(), signals).await?;
    Ok(response.results.iter().map(|r| r.outcome).collect())
}

/// Scoring's audit entries of `principal`, newest first: (method, result,
/// targets). A batch of logins announces nothing, so names no target; a
/// refusal names the account it was refused on.
async fn audited(suite: &Scoring, principal: &str) -> anyhow::Result<Vec<[String; 3]>> {
    let events = suite
        .admin()
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                principal: principal.to_owned(),
                ..AuditFilter::default()
            }),
            page: None,
        })
        .await?
        .into_inner()
        .events;
    Ok(events
        .into_iter()
        .map(|e| {
            let method = e.rpc.rsplit('/').next().unwrap_or_default().to_owned();
            [method, e.result_code, e.targets.join(",")]
        })
        .collect())
}

fn entry(method: &str, result: &str, targets: &str) -> [String; 3] {
    [method.to_owned(), result.to_owned(), targets.to_owned()]
}

async fn a_csm_records_signals_for_its_own_accounts_and_a_batch_with_another_is_refused_whole(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start_with_people(db).await?;
    let own = suite.account_of("Acme", "Ada@Example.com", "").await?;
    let other = suite.account_of("Globex", "grace@example.com", "").await?;
    let mut ada = suite.as_person("ada@example.com");

    let recorded = record(&mut ada, vec![login("own-1", &own)]).await?;
    assert_eq!(
        recorded
            .results
            .iter()
            .map(|r| r.outcome)
            .collect::<Vec<_>>(),
        vec![SignalOutcome::Recorded as i32]
    );
    assert_eq!(
        refusal(
            &mut ada,
            vec![login("own-2", &own), login("other-1", &other)]
        )
        .await,
        Some((
            Code::PermissionDenied,
            format!(
                "account {other} is not in the book of \"ada@example.com\" (role csm): only its CSM or owner may change it"
            )
        ))
    );
    // Nothing of the refused batch was kept: both signals are new to the
    // write key, while the accepted one is a duplicate.
    assert_eq!(
        outcomes(
            &suite,
            vec![
                login("own-1", &own),
                login("own-2", &own),
                login("other-1", &other)
            ]
        )
        .await?,
        vec![
            SignalOutcome::Duplicate as i32,
            SignalOutcome::Recorded as i32,
            SignalOutcome::Recorded as i32
        ]
    );
    assert_eq!(
        audited(&suite, "ada@example.com").await?,
        vec![
            entry(
                "RecordSignalBatch",
                "PERMISSION_DENIED",
                &format!("account:{other}")
            ),
            entry("RecordSignalBatch", "OK", ""),
        ]
    );
    Ok(())
}

async fn a_csm_signal_stream_is_refused_on_another_csms_account_and_audited_as_the_csm(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start_with_people(db).await?;
    let own = suite.account_of("Acme", "ada@example.com", "").await?;
    let other = suite.account_of("Globex", "grace@example.com", "").await?;
    let mut ada = suite.as_person("ada@example.com");

    let batches = vec![
        RecordSignalsRequest {
            signals: vec![login("own-1", &own)],
        },
        RecordSignalsRequest {
            signals: vec![login("other-1", &other)],
        },
    ];
    let mut answers = ada
        .record_signals(futures::stream::iter(batches))
        .await?
        .into_inner();
    let first = answers.message().await?;
    assert!(first.is_some(), "the own batch is acknowledged");
    let second = answers.message().await.err().map(|s| s.code());
    assert_eq!(second, Some(Code::PermissionDenied));

    // The stream's batches are written as ada's call.
    assert_eq!(
        audited(&suite, "ada@example.com").await?,
        vec![
            entry(
                "RecordSignals",
                "PERMISSION_DENIED",
                &format!("account:{other}")
            ),
            entry("RecordSignals", "OK", ""),
        ]
    );
    assert_eq!(
        outcomes(&suite, vec![login("other-1", &other)]).await?,
        vec![SignalOutcome::Recorded as i32]
    );
    Ok(())
}

async fn a_manager_records_for_its_teams_accounts_and_admins_and_scoped_keys_for_any(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start_with_people(db).await?;
    let team = suite.account_of("Acme", "grace@example.com", "").await?;
    let other = suite.account_of("Globex", "lin@example.com", "").await?;
    let mut lead = suite.as_person("lead@example.com");

    assert_eq!(refusal(&mut lead, vec![login("team-1", &team)]).await, None);
    assert_eq!(
        refusal(&mut lead, vec![login("other-1", &other)])
            .await
            .map(|(c, m)| (c, m.contains(&other) && m.contains("(role manager)"))),
        Some((Code::PermissionDenied, true))
    );
    let mut root = suite.as_person("root@example.com");
    assert_eq!(
        refusal(&mut root, vec![login("other-2", &other)]).await,
        None
    );
    assert_eq!(
        refusal(&mut suite.client(), vec![login("other-3", &other)]).await,
        None
    );
    Ok(())
}

async fn an_alert_is_acknowledged_only_by_a_person_whose_book_holds_its_account(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start_with_people(db).await?;
    let team = suite.account_of("Acme", "grace@example.com", "").await?;
    // Usage 0 of 10 and stakeholders 100: red at 17, which raises an alert.
    let mut client = suite.client();
    record(&mut client, logins("red", &team, 10, 40)).await?;
    health_when(&mut client, &team, "a red score", |h| h.score == 17).await?;
    let alert = within(10, "the alert", async {
        loop {
            if let Some(a) = alerts_of(&mut client, &team).await?.into_iter().next() {
                return anyhow::Ok(a);
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    })
    .await??;
    let acknowledge = AcknowledgeAlertRequest {
        id: alert.id.clone(),
        expected_version: alert.version,
        note: "calling them".into(),
    };
    let denied = suite
        .as_person("ada@example.com")
        .acknowledge_alert(acknowledge.clone())
        .await
        .err()
        .map(|s| (s.code(), s.message().contains(&team)));
    assert_eq!(denied, Some((Code::PermissionDenied, true)));
    let unchanged = alerts_of(&mut client, &team).await?;
    assert_eq!(
        unchanged
            .iter()
            .map(|a| (a.state, a.version))
            .collect::<Vec<_>>(),
        vec![(AlertState::Open as i32, alert.version)]
    );
    let acked = suite
        .as_person("lead@example.com")
        .acknowledge_alert(acknowledge)
        .await?
        .into_inner()
        .alert
        .ok_or_else(|| anyhow::anyhow!("no alert"))?;
    assert_eq!(
        (acked.state, acked.version),
        (AlertState::Acknowledged as i32, alert.version + 1)
    );
    Ok(())
}
