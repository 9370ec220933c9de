//! The message size limit and deadlines, enforced by the shared runtime for
//! every service: an oversized request gets RESOURCE_EXHAUSTED and the server
//! serves on; a call still waiting at its deadline (the client's
//! `grpc-timeout`, or the server's `request_timeout_ms` when the client sets
//! none or a longer one) gets DEADLINE_EXCEEDED promptly and writes nothing.

use std::time::{Duration, Instant};

use bowtie_proto::accounts::accounts_service_client::AccountsServiceClient;
use bowtie_proto::accounts::{CreateAccountRequest, ListAccountsRequest};
use bowtie_proto::common::Segment;
use bowtie_proto::scoring::RecordSignalsRequest;
use bowtie_proto::scoring::scoring_service_client::ScoringServiceClient;
use bowtie_testkit::fixtures::{account, create_account};
use bowtie_testkit::robustness::{self, Schema, bare_client};
use bowtie_testkit::scoring::{Scoring, signal};
use bowtie_testkit::stack::Stack;
use bowtie_testkit::{ADMIN_KEY, Backend, TestDatabase, TestServer, WRITE_KEY, backend_test};
use sea_orm::{ConnectionTrait, Database, DatabaseTransaction, TransactionTrait};
use tonic::Code;

backend_test!(
    an_oversized_request_gets_resource_exhausted_and_the_server_serves_on,
    every_service_refuses_an_oversized_request_with_resource_exhausted,
    an_oversized_message_in_a_stream_ends_it_with_resource_exhausted,
    a_call_past_the_client_deadline_gets_deadline_exceeded_promptly_and_writes_nothing,
    a_call_past_the_server_request_timeout_gets_deadline_exceeded,
);

/// A request just over the built-in 4 MiB limit.
const OVER_LIMIT: usize = 4 * 1024 * 1024 + 1024;

fn create(name: String) -> CreateAccountRequest {
    CreateAccountRequest {
        account: Some(account(&name, Segment::Smb)),
        idempotency_key: String::new(),
    }
}

async fn an_oversized_request_gets_resource_exhausted_and_the_server_serves_on(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    // The built-in defaults, limit included.
    let server = TestServer::start(db).await?;
    let mut accounts = server.accounts();
    let status = accounts
        .create_account(create("x".repeat(OVER_LIMIT)))
        .await
        .err()
        .map(|s| (s.code(), s.message().to_owned()));
    assert_eq!(
        status.as_ref().map(|s| s.0),
        Some(Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(
        status.is_some_and(|s| s.1.contains("the limit is: 4194304 bytes")),
        "the message names the limit"
    );
    // Still serving, on the same connection, and nothing was written.
    create_account(&mut accounts, account("Acme", Segment::Smb)).await?;
    let listed = accounts
        .list_accounts(ListAccountsRequest::default())
        .await?
        .into_inner()
        .accounts;
    assert_eq!(listed.len(), 1);
    Ok(())
}

async fn every_service_refuses_an_oversized_request_with_resource_exhausted(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let schema = Schema::load()?;
    // The size is checked before the message is decoded, so the bytes need
    // not be a valid message: field 1 holding OVER_LIMIT bytes.
    let mut huge = vec![0x0a];
    prost::encoding::encode_varint(OVER_LIMIT as u64, &mut huge);
    huge.resize(huge.len() + OVER_LIMIT, b'x');
    for (server, service) in [
        (&stack.accounts, "bowtie.accounts.v1.AccountsService"),
        (&stack.funnel, "bowtie.funnel.v1.FunnelService"),
        (&stack.revenue, "bowtie.revenue.v1.RevenueService"),
        (&stack.scoring, "bowtie.scoring.v1.ScoringService"),
    ] {
        for method in schema
            .methods(service)?
            .iter()
            .filter(|m| !m.client_streaming)
        {
            let code = robustness::call(server.channel(), ADMIN_KEY, method, vec![huge.clone()])
                .await
                .err()
                .map(|s| s.code());
            assert_eq!(code, Some(Code::ResourceExhausted), "{}", method.path);
        }
        // Still serving.
        let mut health = server.health();
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?;
    }
    Ok(())
}

async fn an_oversized_message_in_a_stream_ends_it_with_resource_exhausted(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    let mut scoring = ScoringServiceClient::new(suite.scoring.with_key(WRITE_KEY));
    let small = RecordSignalsRequest {
        signals: vec![signal(
            "k1",
            &acme,
            bowtie_proto::scoring::SignalType::Login,
            1,
            1,
        )],
    };
    let huge = RecordSignalsRequest {
        signals: vec![signal(
            &"k".repeat(OVER_LIMIT),
            &acme,
            bowtie_proto::scoring::SignalType::Login,
            1,
            1,
        )],
    };
    let outcome = async {
        let mut responses = scoring
            .record_signals(futures::stream::iter([small, huge]))
            .await?
            .into_inner();
        while responses.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await;
    let code = outcome.err().map(|s| s.code());
    assert_eq!(code, Some(Code::ResourceExhausted));
    // The server serves on.
    suite.account("Globex", Segment::Smb).await?;
    Ok(())
}

/// Holds the accounts database's write lock (an open transaction), so any
/// write waits: the "work" of a call that outlasts its deadline.
async fn hold_the_writer(db: &TestDatabase) -> anyhow::Result<DatabaseTransaction> {
    let settings = db.settings();
    let conn = Database::connect(settings.url()).await?;
    let txn = conn.begin().await?;
    match db.backend() {
        Backend::Sqlite => {
            txn.execute_unprepared("CREATE TABLE holds_the_write_lock (x INTEGER)")
                .await?;
        }
        Backend::Postgres => {
            txn.execute_unprepared(&format!(
                "LOCK TABLE \"{}\".accounts IN ACCESS EXCLUSIVE MODE",
                settings.schema
            ))
            .await?;
        }
    }
    Ok(txn)
}

async fn a_call_past_the_client_deadline_gets_deadline_exceeded_promptly_and_writes_nothing(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut accounts = server.accounts();
    let lock = hold_the_writer(db).await?;
    // A client without a timer of its own: only the server can end the call.
    let mut bare = AccountsServiceClient::with_origin(bare_client(), server.uri().parse()?);
    let mut request = tonic::Request::new(create("Acme".to_owned()));
    request.set_timeout(Duration::from_millis(300));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {WRITE_KEY}").parse()?);
    let started = Instant::now();
    let code = bare.create_account(request).await.err().map(|s| s.code());
    let took = started.elapsed();
    assert_eq!(code, Some(Code::DeadlineExceeded));
    // Promptly: the 300 ms deadline plus scheduling, far from the database's
    // 5 s lock wait or the server's 30 s default.
    assert!(took < Duration::from_secs(2), "took {took:?}");
    lock.rollback().await?;
    // The abandoned write left nothing behind, and the server serves on.
    let listed = accounts
        .list_accounts(ListAccountsRequest::default())
        .await?
        .into_inner()
        .accounts;
    assert!(listed.is_empty(), "{listed:?}");
    create_account(&mut accounts, account("Acme", Segment::Smb)).await?;
    Ok(())
}

async fn a_call_past_the_server_request_timeout_gets_deadline_exceeded(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut settings = db.server_settings()?;
    settings.server.request_timeout_ms = 300;
    let server = TestServer::start_with(&settings).await?;
    let mut accounts = server.accounts();
    let lock = hold_the_writer(db).await?;
    // The client asks for more time than the server allows.
    let mut request = tonic::Request::new(create("Acme".to_owned()));
    request.set_timeout(Duration::from_secs(20));
    let started = Instant::now();
    let status = accounts.create_account(request).await.err();
    let took = started.elapsed();
    assert_eq!(
        status.as_ref().map(|s| s.code()),
        Some(Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    lock.rollback().await?;
    create_account(&mut accounts, account("Acme", Segment::Smb)).await?;
    Ok(())
}
