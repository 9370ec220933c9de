//! The work and playbooks reports print what the success service holds: a
//! person's open CTAs earliest due first with the account's name, and every
//! playbook with its CTAs and why there is no effect yet.

use bowtie::report;
use bowtie_proto::common::Segment;
use bowtie_proto::success::success_service_client::SuccessServiceClient;
use bowtie_proto::success::{CreateCtaRequest, CreatePlaybookRequest, CtaType, Priority};
use bowtie_testkit::stack::Stack;
use bowtie_testkit::success::red_playbook;
use bowtie_testkit::{ADMIN_KEY, READ_KEY, TestDatabase, backend_test};

backend_test!(the_work_and_playbooks_reports_print_what_success_holds);

async fn the_work_and_playbooks_reports_print_what_success_holds(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let acme =
        bowtie_testkit::scoring::create_account(&stack.accounts, "Acme Logistics", Segment::Smb)
            .await?;
    let mut success = SuccessServiceClient::new(stack.success.with_key(ADMIN_KEY));
    success
        .create_playbook(CreatePlaybookRequest {
            spec: Some(red_playbook("Save red accounts")),
            idempotency_key: String::new(),
        })
        .await?;
    for (days, reason) in [
        (30, "renewal in 60 days"),
        (-3, "champion quiet for a month"),
    ] {
        let now = chrono::Utc::now().timestamp();
        success
            .create_cta(CreateCtaRequest {
                account_id: acme.clone(),
                r#type: CtaType::Renewal as i32,
                reason: reason.into(),
                priority: Priority::High as i32,
                owner: "ana@acme.io".into(),
                due_time: Some(prost_types::Timestamp {
                    seconds: now + days * 86_400,
                    nanos: 0,
                }),
                idempotency_key: String::new(),
            })
            .await?;
    }
    let target = stack.target_with(READ_KEY);

    let work = report::work(&target, None, 10).await?;
    assert!(
        work.starts_with(
            "Open calls to action of ana@acme.io, earliest due first: 2 shown, 1 overdue"
        ),
        "{work}"
    );
    let overdue = work.find("champion quiet").unwrap_or(usize::MAX);
    let later = work.find("renewal in 60 days").unwrap_or(0);
    assert!(overdue < later, "overdue first:\n{work}");
    assert!(
        work.contains("Acme Logistics") && work.contains("overdue"),
        "{work}"
    );

    let today = chrono::Utc::now().date_naive();
    let range = report::parse_period(Some("12m"), today)?;
    let playbooks = report::playbooks(&target, range).await?;
    assert!(playbooks.contains("Save red accounts"), "{playbooks}");
    assert!(
        playbooks.contains("an effect needs 20 matured triggers in each arm"),
        "{playbooks}"
    );
    Ok(())
}
