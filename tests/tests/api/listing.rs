//! ListAccounts: order, filters, the text search's literal treatment of SQL
//! wildcard and quote characters, and stable keyset paging.

use bowtie_proto::accounts::{Account, AccountStatus, ArchiveAccountRequest, ListAccountsRequest};
use bowtie_proto::common::Segment;
use bowtie_testkit::fixtures::{account, create_account, create_named, ids, list_all, names, page};
use bowtie_testkit::{AccountsClient, TestDatabase, TestServer, assert, backend_test};

backend_test!(
    list_accounts_returns_every_account_oldest_first,
    list_accounts_filters_by_segment_owner_csm_status_and_text,
    list_accounts_text_filter_is_a_case_insensitive_substring,
    list_accounts_text_filter_folds_case_beyond_ascii,
    list_accounts_text_filter_treats_sql_metacharacters_as_literal_text,
    list_paging_walks_every_page_without_duplicates_or_gaps_while_rows_are_inserted,
    the_last_page_has_an_empty_next_page_token,
    a_page_token_reused_with_other_filters_is_rejected,
    a_page_token_may_continue_with_another_page_size,
    a_forged_page_token_is_rejected,
    a_negative_page_size_is_rejected,
    list_accounts_rejects_unknown_enum_filters,
);

/// Accounts matching `request`, every page.
async fn list(
    client: &mut AccountsClient,
    request: ListAccountsRequest,
) -> anyhow::Result<Vec<String>> {
    Ok(names(&list_all(client, request, 100).await?))
}

async fn list_accounts_returns_every_account_oldest_first(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let mut created = Vec::new();
    // Names in reverse alphabetical order, so name order cannot pass for creation order.
    for name in ["Zeta", "Omega", "Kappa", "Delta", "Alpha"] {
        created.push(create_named(&mut client, name, Segment::Smb).await?);
    }
    let response = client
        .list_accounts(ListAccountsRequest::default())
        .await?
        .into_inner();
    assert_eq!(response.accounts, created, "oldest first, as stored");
    assert_eq!(
        response.page.map(|p| p.next_page_token).unwrap_or_default(),
        "",
        "one page holds them all"
    );
    // Reading needs only the read scope.
    let mut reader = server.accounts_read_only();
    assert_eq!(
        list(&mut reader, ListAccountsRequest::default()).await?,
        vec!["Zeta", "Omega", "Kappa", "Delta", "Alpha"]
    );
    Ok(())
}

async fn list_accounts_filters_by_segment_owner_csm_status_and_text(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let with = |name: &str, segment: Segment, owner: &str, csm: &str| Account {
        owner: owner.into(),
        csm: csm.into(),
        ..account(name, segment)
    };
    create_account(&mut client, with("Acme", Segment::Smb, "ana", "carla")).await?;
    create_account(
        &mut client,
        with("Acme Europe", Segment::Enterprise, "ana", "dan"),
    )
    .await?;
    create_account(
        &mut client,
        with("Globex", Segment::Enterprise, "bo", "carla"),
    )
    .await?;
    let initech =
        create_account(&mut client, with("Initech", Segment::MidMarket, "bo", "")).await?;
    create_account(&mut client, with("Umbrella", Segment::Smb, "", "dan")).await?;
    client
        .archive_account(ArchiveAccountRequest {
            id: initech.id,
            expected_version: None,
            idempotency_key: String::new(),
        })
        .await?;

    let all = || ListAccountsRequest::default();
    assert_eq!(
        list(
            &mut client,
            ListAccountsRequest {
                segment: Segment::Enterprise as i32,
                ..all()
            }
        )
        .await?,
        vec!["Acme Europe", "Globex"]
    );
    assert_eq!(
        list(
            &mut client,
            ListAccountsRequest {
                owner: "ana".into(),
                ..all()
            }
        )
        .await?,
        vec!["Acme", "Acme Europe"]
    );
    assert_eq!(
        list(
            &mut client,
            ListAccountsRequest {
                owner: "an".into(),
                ..all()
            }
        )
        .await?,
        Vec::<String>::new(),
        "owner is an exact match"
    );
    assert_eq!(
        list(
            &mut client,
            ListAccountsRequest {
                csm: "carla".into(),
                ..all()
            }
        )
        .await?,
        vec!["Acme", "Globex"]
    );
    assert_eq!(
        list(
            &mut client,
            ListAccountsRequest {
                status: AccountStatus::Archived as i32,
                ..all()
            }
        )
        .await?,
        vec!["Initech"]
    );
    assert_eq!(
        list(
            &mut client,
            ListAccountsRequest {
                status: AccountStatus::Active as i32,
                ..all()
            }
        )
        .await?,
        vec!["Acme", "Acme Europe", "Globex", "Umbrella"]
    );
    assert_eq!(
        list(&mut client, all()).await?,
        vec!["Acme", "Acme Europe", "Globex", "Initech", "Umbrella"],
        "no status filter lists active and archived accounts"
    );
    assert_eq!(
        list(
            &mut client,
            ListAccountsRequest {
                text: "acme".into(),
                ..all()
            }
        )
        .await?,
        vec!["Acme", "Acme Europe"]
    );
    // Filters combine with AND.
    assert_eq!(
        list(
            &mut client,
            ListAccountsRequest {
                text: "acme".into(),
                segment: Segment::Enterprise as i32,
                owner: "ana".into(),
                csm: "dan".into(),
                status: AccountStatus::Active as i32,
                ..all()
            }
        )
        .await?,
        vec!["Acme Europe"]
    );
    assert_eq!(
        list(
            &mut client,
            ListAccountsRequest {
                owner: "bo".into(),
                csm: "dan".into(),
                ..all()
            }
        )
        .await?,
        Vec::<String>::new()
    );
    Ok(())
}

async fn list_accounts_text_filter_is_a_case_insensitive_substring(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    for name in [
        "Northwind Traders",
        "NORTHERN LIGHTS",
        "Southwind",
        "Contoso",
    ] {
        create_named(&mut client, name, Segment::Smb).await?;
    }
    let text = |t: &str| ListAccountsRequest {
        text: t.into(),
        ..ListAccountsRequest::default()
    };
    assert_eq!(
        list(&mut client, text("NoRtH")).await?,
        vec!["Northwind Traders", "NORTHERN LIGHTS"]
    );
    assert_eq!(
        list(&mut client, text("WIND")).await?,
        vec!["Northwind Traders", "Southwind"]
    );
    assert_eq!(
        list(&mut client, text("d t")).await?,
        vec!["Northwind Traders"]
    );
    assert_eq!(list(&mut client, text("xyz")).await?, Vec::<String>::new());
    Ok(())
}

async fn list_accounts_text_filter_folds_case_beyond_ascii(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    for name in ["Émile Électricité", "Müller GmbH", "Ørsted"] {
        create_named(&mut client, name, Segment::Smb).await?;
    }
    let text = |t: &str| ListAccountsRequest {
        text: t.into(),
        ..ListAccountsRequest::default()
    };
    let cases = [
        ("émile", "Émile Électricité"),
        ("ÉLECTRICITÉ", "Émile Électricité"),
        ("MÜLLER", "Müller GmbH"),
        ("ørsted", "Ørsted"),
    ];
    let mut found = Vec::new();
    for (filter, _) in cases {
        found.push((filter, list(&mut client, text(filter)).await?));
    }
    let expected: Vec<(&str, Vec<String>)> = cases
        .iter()
        .map(|(filter, name)| (*filter, vec![(*name).to_owned()]))
        .collect();
    assert_eq!(found, expected, "(text filter, matches)");
    Ok(())
}

async fn list_accounts_text_filter_treats_sql_metacharacters_as_literal_text(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let names_in_order = [
        "100% Natural",
        "1000 Naturals",
        "Snake_case Ltd",
        "SnakeXcase Ltd",
        "O'Brien & Sons",
        "Robert'; DROP TABLE accounts; --",
        "Back\\slash Co",
        "Backslash Co",
        "[Brackets] Inc",
    ];
    for name in names_in_order {
        create_named(&mut client, name, Segment::Smb).await?;
    }
    let text = |t: &str| ListAccountsRequest {
        text: t.into(),
        ..ListAccountsRequest::default()
    };
    let cases: &[(&str, &[&str])] = &[
        ("%", &["100% Natural"]),
        ("100%", &["100% Natural"]),
        ("0% N", &["100% Natural"]),
        ("_", &["Snake_case Ltd"]),
        ("e_c", &["Snake_case Ltd"]),
        ("'", &["O'Brien & Sons", "Robert'; DROP TABLE accounts; --"]),
        ("o'brien", &["O'Brien & Sons"]),
        (
            "'; DROP TABLE accounts; --",
            &["Robert'; DROP TABLE accounts; --"],
        ),
        ("\\", &["Back\\slash Co"]),
        ("k\\s", &["Back\\slash Co"]),
        ("[b", &["[Brackets] Inc"]),
        ("%%", &[]),
        ("__", &[]),
        ("\\%", &[]),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            list(&mut client, text(filter)).await?,
            expected.to_vec(),
            "text filter {filter:?}"
        );
    }
    // The table is intact and nothing was lost.
    assert_eq!(
        list(&mut client, ListAccountsRequest::default()).await?,
        names_in_order.to_vec()
    );
    Ok(())
}

async fn list_paging_walks_every_page_without_duplicates_or_gaps_while_rows_are_inserted(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let mut expected = Vec::new();
    for i in 0..7 {
        expected.push(create_named(&mut client, &format!("Initial {i}"), Segment::Smb).await?);
        // Rows the filter excludes, interleaved.
        create_named(&mut client, &format!("Other {i}"), Segment::Enterprise).await?;
    }
    let mut request = ListAccountsRequest {
        segment: Segment::Smb as i32,
        page: page(3, ""),
        ..ListAccountsRequest::default()
    };
    let mut walked = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        anyhow::ensure!(pages <= 20, "paging does not end");
        let response = client.list_accounts(request.clone()).await?.into_inner();
        assert!(
            response.accounts.len() <= 3,
            "a page holds at most page_size rows"
        );
        walked.extend(response.accounts);
        let token = response.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break;
        }
        // Other clients write between our pages.
        expected.push(create_named(&mut client, &format!("Inserted {pages}"), Segment::Smb).await?);
        create_named(
            &mut client,
            &format!("Inserted other {pages}"),
            Segment::Enterprise,
        )
        .await?;
        request.page = page(3, &token);
    }
    let walked_ids = ids(&walked);
    let mut unique = walked_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        walked_ids.len(),
        "no account is served twice: {:?}",
        names(&walked)
    );
    // Rows inserted during the walk sort after every row already served, so
    // the walk sees exactly every matching row, in creation order.
    assert_eq!(names(&walked), names(&expected), "no gaps, oldest first");
    assert_eq!(walked_ids, ids(&expected));
    Ok(())
}

async fn the_last_page_has_an_empty_next_page_token(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    for i in 0..4 {
        create_named(&mut client, &format!("Account {i}"), Segment::Smb).await?;
    }
    let first = client
        .list_accounts(ListAccountsRequest {
            page: page(2, ""),
            ..ListAccountsRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!(names(&first.accounts), vec!["Account 0", "Account 1"]);
    let token = first.page.map(|p| p.next_page_token).unwrap_or_default();
    assert!(!token.is_empty(), "more rows follow");
    let second = client
        .list_accounts(ListAccountsRequest {
            page: page(2, &token),
            ..ListAccountsRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!(names(&second.accounts), vec!["Account 2", "Account 3"]);
    assert_eq!(
        second.page.map(|p| p.next_page_token).unwrap_or_default(),
        "",
        "a page that ends exactly at the last row is the last page"
    );
    // An empty list is one empty last page.
    let none = client
        .list_accounts(ListAccountsRequest {
            text: "nothing matches this".into(),
            ..ListAccountsRequest::default()
        })
        .await?
        .into_inner();
    assert!(none.accounts.is_empty());
    assert_eq!(none.page.map(|p| p.next_page_token).unwrap_or_default(), "");
    Ok(())
}

async fn a_page_token_reused_with_other_filters_is_rejected(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    for i in 0..3 {
        create_named(&mut client, &format!("Small {i}"), Segment::Smb).await?;
        create_named(&mut client, &format!("Large {i}"), Segment::Enterprise).await?;
    }
    let first = client
        .list_accounts(ListAccountsRequest {
            segment: Segment::Smb as i32,
            page: page(1, ""),
            ..ListAccountsRequest::default()
        })
        .await?
        .into_inner();
    let token = first.page.map(|p| p.next_page_token).unwrap_or_default();
    assert!(!token.is_empty());
    for other in [
        ListAccountsRequest {
            segment: Segment::Enterprise as i32,
            ..ListAccountsRequest::default()
        },
        ListAccountsRequest::default(),
        ListAccountsRequest {
            segment: Segment::Smb as i32,
            text: "small".into(),
            ..ListAccountsRequest::default()
        },
        ListAccountsRequest {
            segment: Segment::Smb as i32,
            owner: "ana".into(),
            ..ListAccountsRequest::default()
        },
        ListAccountsRequest {
            segment: Segment::Smb as i32,
            status: AccountStatus::Active as i32,
            ..ListAccountsRequest::default()
        },
    ] {
        let result = client
            .list_accounts(ListAccountsRequest {
                page: page(1, &token),
                ..other.clone()
            })
            .await;
        assert::invalid_field(result, "page.page_token");
    }
    Ok(())
}

async fn a_page_token_may_continue_with_another_page_size(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    for i in 0..5 {
        create_named(&mut client, &format!("Account {i}"), Segment::Smb).await?;
    }
    let first = client
        .list_accounts(ListAccountsRequest {
            page: page(2, ""),
            ..ListAccountsRequest::default()
        })
        .await?
        .into_inner();
    let token = first.page.map(|p| p.next_page_token).unwrap_or_default();
    let rest = client
        .list_accounts(ListAccountsRequest {
            page: page(10, &token),
            ..ListAccountsRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        names(&rest.accounts),
        vec!["Account 2", "Account 3", "Account 4"]
    );
    Ok(())
}

async fn a_forged_page_token_is_rejected(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    create_named(&mut client, "Acme", Segment::Smb).await?;
    for token in ["garbage", "!!!", "' OR 1=1 --", "bm90LWEtdG9rZW4"] {
        let result = client
            .list_accounts(ListAccountsRequest {
                page: page(10, token),
                ..ListAccountsRequest::default()
            })
            .await;
        assert::invalid_field(result, "page.page_token");
    }
    Ok(())
}

async fn a_negative_page_size_is_rejected(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let result = client
        .list_accounts(ListAccountsRequest {
            page: page(-1, ""),
            ..ListAccountsRequest::default()
        })
        .await;
    assert::invalid_field(result, "page.page_size");
    Ok(())
}

async fn list_accounts_rejects_unknown_enum_filters(db: &TestDatabase) -> anyhow::Result<()> {
    let server = TestServer::start(db).await?;
    let mut client = server.accounts();
    let result = client
        .list_accounts(ListAccountsRequest {
            segment: 99,
            ..ListAccountsRequest::default()
        })
        .await;
    assert::invalid_field(result, "segment");
    let result = client
        .list_accounts(ListAccountsRequest {
            status: 42,
            ..ListAccountsRequest::default()
        })
        .await;
    assert::invalid_field(result, "status");
    let result = client
        .list_accounts(ListAccountsRequest {
            text: "x".repeat(201),
            ..ListAccountsRequest::default()
        })
        .await;
    assert::invalid_field(result, "text");
    Ok(())
}
