//! A CTA's lifecycle through the API: opened by hand for an account that
//! exists, started, snoozed, closed with an outcome and reopened, each change
//! at the version it was read; stale versions are ABORTED, illegal changes
//! FAILED_PRECONDITION naming both states, bad input INVALID_ARGUMENT naming
//! the field, and a repeated idempotency key answers the first result.

use bowtie_proto::common::Segment;
use bowtie_proto::success::{
    AddCommentRequest, CreateCtaRequest, Cta, CtaStatus, CtaType, GetCtaRequest, ListCtasRequest,
    Outcome, Priority, ReassignCtaRequest, UpdateCtaStatusRequest,
};
use bowtie_testkit::assert::{invalid_field, status};
use bowtie_testkit::success::{SuccessClient, Suite};
use bowtie_testkit::{TestDatabase, backend_test};
use prost_types::Timestamp;
use tonic::Code;

backend_test!(
    a_cta_is_started_snoozed_closed_and_reopened_at_the_version_it_was_read,
    a_cta_for_an_unknown_account_is_not_found_and_bad_fields_are_named,
    overdue_ctas_of_one_owner_are_listed_earliest_due_first,
);

fn in_days(days: i64) -> Option<Timestamp> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Some(Timestamp {
        seconds: now + days * 86_400,
        nanos: 0,
    })
}

fn manual(account: &str, owner: &str, due_days: i64) -> CreateCtaRequest {
    CreateCtaRequest {
        account_id: account.to_owned(),
        r#type: CtaType::Renewal as i32,
        reason: "renewal in 60 days, champion quiet".into(),
        priority: Priority::Medium as i32,
        owner: owner.to_owned(),
        due_time: in_days(due_days),
        idempotency_key: String::new(),
    }
}

async fn open(client: &mut SuccessClient, request: CreateCtaRequest) -> anyhow::Result<Cta> {
    client
        .create_cta(request)
        .await?
        .into_inner()
        .cta
        .ok_or_else(|| anyhow::anyhow!("CreateCta returned no CTA"))
}

fn change(cta: &Cta, to: CtaStatus) -> UpdateCtaStatusRequest {
    UpdateCtaStatusRequest {
        id: cta.id.clone(),
        status: to as i32,
        expected_version: cta.version,
        actor: "ana@acme.io".into(),
        ..UpdateCtaStatusRequest::default()
    }
}

async fn apply(client: &mut SuccessClient, request: UpdateCtaStatusRequest) -> anyhow::Result<Cta> {
    client
        .update_cta_status(request)
        .await?
        .into_inner()
        .cta
        .ok_or_else(|| anyhow::anyhow!("UpdateCtaStatus returned no CTA"))
}

async fn a_cta_is_started_snoozed_closed_and_reopened_at_the_version_it_was_read(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite
        .account("Acme", Segment::Enterprise, "ana@acme.io")
        .await?;
    let mut client = suite.client();
    let mut request = manual(&acme, "ana@acme.io", 14);
    request.idempotency_key = "cta-1".into();
    let cta = open(&mut client, request.clone()).await?;
    assert_eq!((cta.status, cta.version), (CtaStatus::Open as i32, 1));
    assert_eq!(cta.first_action_time, None);
    // The same key and request: the same CTA, not a second one.
    assert_eq!(open(&mut client, request).await?.id, cta.id);

    let started = apply(&mut client, change(&cta, CtaStatus::InProgress)).await?;
    assert_eq!(
        (started.status, started.version),
        (CtaStatus::InProgress as i32, 2)
    );
    assert!(started.first_action_time.is_some());
    // A change based on version 1 lost the race.
    status(
        client
            .update_cta_status(change(&cta, CtaStatus::InProgress))
            .await,
        Code::Aborted,
    );
    // Snoozing needs a future date and a reason.
    let mut snooze = change(&started, CtaStatus::Snoozed);
    snooze.snooze_until = in_days(-1);
    snooze.snooze_reason = "customer on holiday".into();
    invalid_field(
        client.update_cta_status(snooze.clone()).await,
        "snooze_until",
    );
    snooze.snooze_until = in_days(10);
    let snoozed = apply(&mut client, snooze).await?;
    assert_eq!(snoozed.status, CtaStatus::Snoozed as i32);
    assert_eq!(snoozed.snooze_reason, "customer on holiday");

    // Closing needs an outcome a person can give.
    invalid_field(
        client
            .update_cta_status(change(&snoozed, CtaStatus::Closed))
            .await,
        "outcome",
    );
    let mut close = change(&snoozed, CtaStatus::Closed);
    close.outcome = Outcome::Saved as i32;
    let closed = apply(&mut client, close).await?;
    assert_eq!(
        (closed.status, closed.outcome),
        (CtaStatus::Closed as i32, Outcome::Saved as i32)
    );
    assert!(closed.close_time.is_some() && closed.snooze_until.is_none());
    // A closed CTA goes nowhere but back to OPEN.
    let illegal = status(
        client
            .update_cta_status(change(&closed, CtaStatus::InProgress))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        illegal.message(),
        "a CTA cannot go from CTA_STATUS_CLOSED to CTA_STATUS_IN_PROGRESS"
    );
    status(
        client
            .reassign_cta(ReassignCtaRequest {
                id: closed.id.clone(),
                owner: "bob@acme.io".into(),
                expected_version: closed.version,
                idempotency_key: String::new(),
            })
            .await,
        Code::FailedPrecondition,
    );
    let reopened = apply(&mut client, change(&closed, CtaStatus::Open)).await?;
    assert_eq!(
        (reopened.status, reopened.outcome, reopened.close_time),
        (CtaStatus::Open as i32, Outcome::Unspecified as i32, None)
    );
    let reassigned = client
        .reassign_cta(ReassignCtaRequest {
            id: reopened.id.clone(),
            owner: "bob@acme.io".into(),
            expected_version: reopened.version,
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .cta
        .ok_or_else(|| anyhow::anyhow!("no CTA"))?;
    assert_eq!(reassigned.owner, "bob@acme.io");
    client
        .add_comment(AddCommentRequest {
            cta_id: reassigned.id.clone(),
            author: "bob@acme.io".into(),
            text: "Booked a call for Tuesday".into(),
            idempotency_key: String::new(),
        })
        .await?;
    let read = suite
        .reader()
        .get_cta(GetCtaRequest { id: cta.id.clone() })
        .await?
        .into_inner()
        .cta
        .ok_or_else(|| anyhow::anyhow!("no CTA"))?;
    assert_eq!(read.comments.len(), 1);
    assert_eq!(read.comments[0].text, "Booked a call for Tuesday");
    assert_eq!(read.version, 7);
    // A reader may look but not write.
    status(
        suite
            .reader()
            .create_cta(manual(&acme, "ana@acme.io", 3))
            .await,
        Code::PermissionDenied,
    );
    Ok(())
}

async fn a_cta_for_an_unknown_account_is_not_found_and_bad_fields_are_named(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let mut client = suite.client();
    let nobody = uuid::Uuid::now_v7().to_string();
    status(
        client.create_cta(manual(&nobody, "ana@acme.io", 3)).await,
        Code::NotFound,
    );
    invalid_field(
        client
            .create_cta(manual("not-a-uuid", "ana@acme.io", 3))
            .await,
        "account_id",
    );
    let acme = suite.account("Acme", Segment::Smb, "").await?;
    let mut blank = manual(&acme, "  ", 3);
    blank.r#type = 0;
    let bad = client.create_cta(blank).await;
    invalid_field(bad, "owner");
    let mut untyped = manual(&acme, "ana@acme.io", 3);
    untyped.r#type = 0;
    invalid_field(client.create_cta(untyped).await, "type");
    status(
        client
            .get_cta(GetCtaRequest {
                id: uuid::Uuid::now_v7().to_string(),
            })
            .await,
        Code::NotFound,
    );
    invalid_field(
        client.get_cta(GetCtaRequest { id: "nope".into() }).await,
        "id",
    );
    Ok(())
}

async fn overdue_ctas_of_one_owner_are_listed_earliest_due_first(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb, "ana@acme.io").await?;
    let mut client = suite.client();
    let late = open(&mut client, manual(&acme, "ana@acme.io", -2)).await?;
    let later = open(&mut client, manual(&acme, "ana@acme.io", -5)).await?;
    let upcoming = open(&mut client, manual(&acme, "ana@acme.io", 4)).await?;
    open(&mut client, manual(&acme, "bob@acme.io", -9)).await?;
    let mine = |overdue_only| ListCtasRequest {
        owner: "ana@acme.io".into(),
        overdue_only,
        ..ListCtasRequest::default()
    };
    let overdue = client.list_ctas(mine(true)).await?.into_inner().ctas;
    let ids: Vec<&str> = overdue.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [later.id.as_str(), late.id.as_str()]);
    // Paging walks the same order.
    let mut first = mine(false);
    first.page = bowtie_testkit::fixtures::page(2, "");
    let page = client.list_ctas(first.clone()).await?.into_inner();
    let ids: Vec<&str> = page.ctas.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [later.id.as_str(), late.id.as_str()]);
    let token = page.page.map(|p| p.next_page_token).unwrap_or_default();
    let mut second = mine(false);
    second.page = bowtie_testkit::fixtures::page(2, &token);
    let rest = client.list_ctas(second).await?.into_inner();
    let ids: Vec<&str> = rest.ctas.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [upcoming.id.as_str()]);
    // A token is bound to its filters.
    let mut other = mine(true);
    other.page = bowtie_testkit::fixtures::page(2, &token);
    invalid_field(client.list_ctas(other).await, "page.page_token");
    Ok(())
}
