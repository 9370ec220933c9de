//! Operations: health checking and server reflection work without a key, and
//! everything written survives a restart on the same database, and the
//! GetAccount cache never hides a write.

use bowtie_proto::accounts::{
    Account, ArchiveAccountRequest, ListAccountsRequest, ListContactsRequest,
    MarkContactLeftRequest, UpdateAccountRequest,
};
use bowtie_proto::common::Segment;
use bowtie_testkit::fixtures::{
    contact, create_account, create_contact, create_named, full_account, get_account, list_all,
    mask, next_events, watch,
};
use bowtie_testkit::{ACCOUNTS_SERVICE, TestDatabase, TestServer, backend_test};
use tokio_stream::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

backend_test!(
    health_reports_the_accounts_service_serving_without_a_key,
    reflection_lists_and_describes_the_accounts_service_without_a_key,
    everything_written_survives_a_restart_on_the_same_database,
    a_read_after_a_write_sees_it_on_the_same_server_and_soon_on_a_replica,
);

async fn health_reports_the_accounts_service_serving_without_a_key(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut health = server.health();
    for service in [ACCOUNTS_SERVICE, ""] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?
            .into_inner();
        assert_eq!(
            response.status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "bowtie.nothing.v1.NothingService".into(),
        })
        .await;
    assert_eq!(unknown.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    Ok(())
}

async fn reflection_lists_and_describes_the_accounts_service_without_a_key(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut reflection = server.reflection();
    let requests = tokio_stream::iter(vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                ACCOUNTS_SERVICE.into(),
            )),
        },
    ]);
    let mut responses = reflection
        .server_reflection_info(requests)
        .await?
        .into_inner();

    let listed = responses
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no ListServices answer"))??;
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        anyhow::bail!("unexpected answer to ListServices: {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == ACCOUNTS_SERVICE),
        "reflection lists {ACCOUNTS_SERVICE}, got {names:?}"
    );
    assert!(names.iter().any(|n| n == "grpc.health.v1.Health"));

    let described = responses
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no FileContainingSymbol answer"))??;
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        anyhow::bail!("unexpected answer to FileContainingSymbol: {described:?}");
    };
    assert!(
        !files.file_descriptor_proto.is_empty(),
        "the service's proto file is served, so grpcurl needs no local protos"
    );
    Ok(())
}

async fn everything_written_survives_a_restart_on_the_same_database(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_account(&mut client, full_account("Acme")).await?;
    let globex = create_named(&mut client, "Globex", Segment::MidMarket).await?;
    let initech = create_named(&mut client, "Initech", Segment::Smb).await?;
    client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                owner: "ana@example.com".into(),
                ..globex.clone()
            }),
            update_mask: Some(mask(&["owner"])),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?;
    client
        .archive_account(ArchiveAccountRequest {
            id: initech.id.clone(),
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?;
    let ana = create_contact(&mut client, contact(&acme.id, "Ana Lima")).await?;
    create_contact(&mut client, contact(&acme.id, "Bo Chen")).await?;
    client
        .mark_contact_left(MarkContactLeftRequest {
            id: ana.id.clone(),
            left_time: None,
            idempotency_key: String::new(),
        })
        .await?;

    let accounts_before = list_all(&mut client, ListAccountsRequest::default(), 10).await?;
    let contacts_before = client
        .list_contacts(ListContactsRequest {
            account_id: acme.id.clone(),
            page: None,
        })
        .await?
        .into_inner()
        .contacts;
    let events_before = next_events(&mut watch(&mut client, 0).await?, 8, 10).await?;
    drop(client);
    server.stop().await?;

    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    assert_eq!(
        list_all(&mut client, ListAccountsRequest::default(), 10).await?,
        accounts_before,
        "every account, with every field, version and status"
    );
    for account in &accounts_before {
        assert_eq!(&get_account(&mut client, &account.id).await?, account);
    }
    let contacts_after = client
        .list_contacts(ListContactsRequest {
            account_id: acme.id.clone(),
            page: None,
        })
        .await?
        .into_inner()
        .contacts;
    assert_eq!(contacts_after, contacts_before);
    let mut feed = watch(&mut client, 0).await?;
    assert_eq!(next_events(&mut feed, 8, 10).await?, events_before);

    // Writes go on where they left off: versions and the feed continue.
    let updated = client
        .update_account(UpdateAccountRequest {
            account: Some(Account {
                csm: "carla@example.com".into(),
                ..acme.clone()
            }),
            update_mask: Some(mask(&["csm"])),
            expected_version: Some(1),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .account
        .ok_or_else(|| anyhow::anyhow!("no account in the response"))?;
    assert_eq!(updated.version, 2);
    let next = next_events(&mut feed, 1, 10).await?;
    assert_eq!(next[0].aggregate_id, acme.id);
    assert!(next[0].sequence > events_before[7].sequence);
    let newcomer = create_named(&mut client, "Newcomer", Segment::Smb).await?;
    assert!(accounts_before.iter().all(|a| a.id != newcomer.id));
    Ok(())
}

/// Two replicas on one database, each with its own read cache: a replica
/// answers its own writes at once and another replica's within a poll of
/// the change feed, however often the account was read before.
async fn a_read_after_a_write_sees_it_on_the_same_server_and_soon_on_a_replica(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let settings = db.server_settings()?;
    let first = TestServer::start_with(&settings).await?;
    let second = TestServer::start_with(&settings).await?;
    let (mut a, mut b) = (first.accounts(), second.accounts());
    let created = create_named(&mut a, "Acme", Segment::Smb).await?;
    for round in 0..3 {
        // Warm both caches with the current name.
        for _ in 0..3 {
            get_account(&mut a, &created.id).await?;
            get_account(&mut b, &created.id).await?;
        }
        let (writer, mut other) = if round % 2 == 0 {
            (&mut a, b.clone())
        } else {
            (&mut b, a.clone())
        };
        let name = format!("Acme round {round}");
        writer
            .update_account(UpdateAccountRequest {
                account: Some(Account {
                    id: created.id.clone(),
                    name: name.clone(),
                    ..Account::default()
                }),
                update_mask: Some(mask(&["name"])),
                expected_version: None,
                idempotency_key: String::new(),
            })
            .await?;
        assert_eq!(get_account(writer, &created.id).await?.name, name);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while get_account(&mut other, &created.id).await?.name != name {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the replica still answers the old name after 3 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Replicas (or migration jobs) of every service that start together on a
/// fresh PostgreSQL schema all migrate without an error, and each migration
/// is recorded once. PostgreSQL only: SQLite is one process's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_a_fresh_postgres_schema_at_once_all_succeed_and_apply_each_migration_once()
-> anyhow::Result<()> {
    use bowtie_runtime::db::Db;
    use sea_orm::{ConnectionTrait as _, Statement};
    use sea_orm_migration::MigratorTrait;

    async fn migrate_together<M: MigratorTrait>(
        db: &TestDatabase,
        service: &str,
    ) -> anyhow::Result<()> {
        let settings = db.service_database(service);
        let mut replicas = Vec::new();
        for _ in 0..4 {
            let settings = settings.clone();
            replicas.push(tokio::spawn(async move {
                let db = Db::connect(&settings).await?;
                let outcome = db.migrate::<M>().await;
                db.close().await;
                anyhow::Ok(outcome?)
            }));
        }
        for replica in replicas {
            replica.await??;
        }
        let db = Db::connect(&settings).await?;
        let rows = db
            .reader()
            .query_all(Statement::from_string(
                db.backend(),
                "SELECT version, COUNT(*) AS n FROM seaql_migrations GROUP BY version",
            ))
            .await?;
        db.close().await;
        assert_eq!(
            rows.len(),
            M::migrations().len(),
            "{service}: every migration is recorded"
        );
        for row in rows {
            let n: i64 = row.try_get("", "n")?;
            assert_eq!(n, 1, "{service}: each migration is recorded once");
        }
        Ok(())
    }

    let Some(db) = TestDatabase::create(bowtie_testkit::Backend::Postgres).await? else {
        return Ok(());
    };
    tokio::try_join!(
        migrate_together::<bowtie_accounts::storage::Migrator>(&db, "accounts"),
        migrate_together::<bowtie_funnel::storage::Migrator>(&db, "funnel"),
        migrate_together::<bowtie_revenue::storage::Migrator>(&db, "revenue"),
        migrate_together::<bowtie_scoring::storage::Migrator>(&db, "scoring"),
    )?;
    Ok(())
}
