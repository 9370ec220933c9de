//! The audit log: every kept write made by a call is in it exactly once,
//! with who made it, the method, what it changed and a digest of the
//! request; a write that was refused, rolled back or replayed adds nothing;
//! only admins read it.

use bowtie_proto::accounts::{Account, ListAuditEventsRequest, UpdateAccountRequest};
use bowtie_proto::common::{AuditFilter, PageRequest, Segment};
use bowtie_testkit::fixtures::{account, create_account, mask};
use bowtie_testkit::{TestDatabase, TestServer, backend_test};
use futures::future::try_join_all;
use tonic::Code;

backend_test!(
    a_burst_of_concurrent_writes_has_exactly_one_audit_event_each,
    a_refused_or_replayed_write_adds_no_audit_event,
    the_audit_log_filters_by_account_and_method_and_is_for_admins_only,
    with_the_audit_log_turned_off_a_write_adds_no_entry,
    each_audit_entry_is_on_the_feed_after_its_write_for_watchers_that_ask,
);

/// Every audit event matching `filter`, newest first, page by page.
async fn audit_events(
    server: &TestServer,
    filter: AuditFilter,
) -> anyhow::Result<Vec<bowtie_proto::common::AuditEvent>> {
    let mut client = server.accounts_admin();
    let mut token = String::new();
    let mut out = Vec::new();
    loop {
        let page = client
            .list_audit_events(ListAuditEventsRequest {
                filter: Some(filter.clone()),
                page: Some(PageRequest {
                    page_size: 7,
                    page_token: token,
                }),
            })
            .await?
            .into_inner();
        out.extend(page.events);
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(out);
        }
    }
}

fn rename(account: &Account, name: &str, version: i64, key: &str) -> UpdateAccountRequest {
    UpdateAccountRequest {
        account: Some(Account {
            name: name.to_owned(),
            ..account.clone()
        }),
        update_mask: Some(mask(&["name"])),
        expected_version: Some(version),
        idempotency_key: key.to_owned(),
    }
}

async fn a_burst_of_concurrent_writes_has_exactly_one_audit_event_each(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let created =
        try_join_all((0..24).map(|i| {
            let mut client = server.accounts();
            async move {
                create_account(&mut client, account(&format!("Burst {i}"), Segment::Smb)).await
            }
        }))
        .await?;
    let events = audit_events(&server, AuditFilter::default()).await?;
    assert_eq!(events.len(), 24, "{events:#?}");
    for e in &events {
        assert_eq!(e.principal, "test-writer");
        assert_eq!(e.rpc, "/bowtie.accounts.v1.AccountsService/CreateAccount");
        assert_eq!(e.result_code, "OK");
        assert_eq!(
            e.request_digest.len(),
            64,
            "hex SHA-256: {}",
            e.request_digest
        );
        assert_eq!(e.targets_total, 1);
    }
    let mut audited: Vec<String> = events.iter().flat_map(|e| e.targets.clone()).collect();
    let mut expected: Vec<String> = created
        .iter()
        .map(|a| format!("account:{}", a.id))
        .collect();
    audited.sort();
    expected.sort();
    assert_eq!(audited, expected);
    // Newest first.
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);
    Ok(())
}

async fn a_refused_or_replayed_write_adds_no_audit_event(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_account(&mut client, account("Acme", Segment::Smb)).await?;
    // A rename at the current version is kept; the same request again is a
    // replay of the first answer, not a second write.
    let first = rename(&acme, "Acme Corp", acme.version, "rename-acme-1");
    // The digest covers the request as it travelled: the gRPC frame (no
    // compression flag, the length) and the encoded message.
    let message = prost::Message::encode_to_vec(&first);
    let mut framed = vec![0u8];
    framed.extend(u32::try_from(message.len())?.to_be_bytes());
    framed.extend(message);
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&framed));
    client.update_account(first.clone()).await?;
    client.update_account(first).await?;
    // A rename at a stale version is ABORTED and rolled back.
    let stale = client
        .update_account(rename(&acme, "Acme Inc", acme.version, ""))
        .await;
    assert_eq!(stale.map(|_| ()).map_err(|s| s.code()), Err(Code::Aborted));
    // A blank name is refused before anything is written.
    let blank = client
        .update_account(rename(&acme, " ", acme.version + 1, ""))
        .await;
    assert_eq!(
        blank.map(|_| ()).map_err(|s| s.code()),
        Err(Code::InvalidArgument)
    );

    let events = audit_events(&server, AuditFilter::default()).await?;
    let methods: Vec<&str> = events
        .iter()
        .map(|e| e.rpc.rsplit('/').next().unwrap_or_default())
        .collect();
    assert_eq!(methods, vec!["UpdateAccount", "CreateAccount"]);
    assert_eq!(events[0].idempotency_key, "rename-acme-1");
    assert_eq!(events[0].request_digest, digest);
    assert_eq!(events[0].targets, vec![format!("account:{}", acme.id)]);
    Ok(())
}

async fn the_audit_log_filters_by_account_and_method_and_is_for_admins_only(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let acme = create_account(&mut client, account("Acme", Segment::Smb)).await?;
    let globex = create_account(&mut client, account("Globex", Segment::Smb)).await?;
    client
        .update_account(rename(&acme, "Acme Corp", acme.version, ""))
        .await?;

    let of_acme = audit_events(
        &server,
        AuditFilter {
            account_id: acme.id.clone(),
            ..AuditFilter::default()
        },
    )
    .await?;
    assert_eq!(of_acme.len(), 2);
    assert!(
        of_acme
            .iter()
            .all(|e| e.targets == vec![format!("account:{}", acme.id)])
    );
    let updates = audit_events(
        &server,
        AuditFilter {
            rpc: "UpdateAccount".to_owned(),
            ..AuditFilter::default()
        },
    )
    .await?;
    assert_eq!(updates.len(), 1);
    let by_reader = audit_events(
        &server,
        AuditFilter {
            principal: "test-reader".to_owned(),
            ..AuditFilter::default()
        },
    )
    .await?;
    assert!(by_reader.is_empty());
    assert_ne!(globex.id, acme.id);

    let not_admin = server
        .accounts()
        .list_audit_events(ListAuditEventsRequest::default())
        .await;
    assert_eq!(
        not_admin.map(|_| ()).map_err(|s| s.code()),
        Err(Code::PermissionDenied)
    );
    let bad = server
        .accounts_admin()
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                account_id: "acme".to_owned(),
                ..AuditFilter::default()
            }),
            page: None,
        })
        .await;
    let status = bad
        .err()
        .ok_or_else(|| anyhow::anyhow!("a malformed account id was accepted"))?;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("filter.account_id"),
        "{}",
        status.message()
    );
    Ok(())
}

async fn with_the_audit_log_turned_off_a_write_adds_no_entry(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let mut settings = db.server_settings()?;
    settings.audit.enabled = false;
    let server = TestServer::start_with(&settings).await?;
    let mut client = server.accounts();
    let created = create_account(&mut client, account("Unaudited Co", Segment::Smb)).await?;
    client
        .update_account(rename(
            &created,
            "Unaudited Inc",
            created.version,
            "rename-1",
        ))
        .await?;
    let events = audit_events(
        &server,
        AuditFilter {
            account_id: created.id.clone(),
            ..AuditFilter::default()
        },
    )
    .await?;
    assert!(
        events.is_empty(),
        "entries while the log is off: {events:?}"
    );
    Ok(())
}

async fn each_audit_entry_is_on_the_feed_after_its_write_for_watchers_that_ask(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    use bowtie_proto::accounts::WatchEventsRequest;
    use prost::Message as _;
    let server = TestServer::start(db).await?;
    let acme = create_account(&mut server.accounts(), account("Acme", Segment::Smb)).await?;
    let globex = create_account(&mut server.accounts(), account("Globex", Segment::Smb)).await?;
    let logged = audit_events(&server, AuditFilter::default()).await?;

    let mut reader = server.accounts_read_only();
    let mut all = reader
        .watch_events(WatchEventsRequest {
            include_audit: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let events = bowtie_testkit::fixtures::next_events(&mut all, 4, 10).await?;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.aggregate_type.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("account.created", "account"),
            ("audit.recorded", "audit"),
            ("account.created", "account"),
            ("audit.recorded", "audit"),
        ]
    );
    // Each entry follows its write, the one the audit log keeps.
    let entries: Vec<bowtie_proto::common::AuditEvent> = [&events[1], &events[3]]
        .iter()
        .map(|e| {
            let any = e.payload.clone().unwrap_or_default();
            anyhow::ensure!(
                any.type_url.ends_with("bowtie.common.v1.AuditEvent"),
                "{}",
                any.type_url
            );
            Ok(bowtie_proto::common::AuditEvent::decode(
                any.value.as_slice(),
            )?)
        })
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(
        entries
            .iter()
            .map(|e| e.targets.clone())
            .collect::<Vec<_>>(),
        vec![
            vec![format!("account:{}", acme.id)],
            vec![format!("account:{}", globex.id)]
        ]
    );
    let newest_first: Vec<_> = entries.iter().rev().cloned().collect();
    assert_eq!(newest_first, logged);

    // A watcher that does not ask reads the feed as before: the writes only.
    let mut plain = bowtie_testkit::fixtures::watch(&mut reader, 0).await?;
    let events = bowtie_testkit::fixtures::next_events(&mut plain, 2, 10).await?;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["account.created", "account.created"]);
    create_account(&mut server.accounts(), account("Initech", Segment::Smb)).await?;
    let next = bowtie_testkit::fixtures::next_events(&mut plain, 1, 10).await?;
    assert_eq!(
        (next[0].event_type.as_str(), next[0].sequence),
        ("account.created", events[1].sequence + 2)
    );
    Ok(())
}
