//! The streaming exports: every row exactly once, in the list RPCs' order
//! and with their figures, across a cut and a resume by cursor, over gRPC,
//! as JSON lines over REST and from `bowtie export`; a bad cursor is
//! INVALID_ARGUMENT (400) naming `cursor`.

use bowtie::client::Target;
use bowtie::demo::{self, DemoOptions};
use bowtie_proto::accounts::{ExportAccountsRequest, ListAccountsRequest};
use bowtie_proto::funnel::{ExportTransitionsRequest, GetJourneyRequest, Transition};
use bowtie_proto::revenue::{
    ExportMovementsRequest, ExportSubscriptionsRequest, GetSubscriptionRequest,
    ListMovementsRequest, Movement,
};
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{ADMIN_KEY, READ_KEY, TestDatabase, backend_test};
use futures::StreamExt;
use prost_types::Timestamp;
use reqwest::StatusCode;
use serde_json::Value;

backend_test!(
    the_accounts_export_streams_every_account_once_in_list_accounts_order,
    the_movements_export_streams_every_movement_once_and_resumes_after_a_cursor,
    the_subscriptions_export_streams_every_subscription_as_get_subscription_answers_it,
    the_transitions_export_streams_every_journeys_transitions_once_in_the_order_recorded,
);

/// A small demo company (60 accounts, seed 6) ending today.
async fn seeded(db: &TestDatabase) -> anyhow::Result<(Stack, Target, DemoOptions)> {
    let stack = Stack::start(db).await?;
    let now = chrono::Utc::now().timestamp();
    let options = DemoOptions {
        seed: 6,
        accounts: 60,
        anchor: demo::plan::anchor_for(now),
    };
    demo::seed(&Target::new(&stack.settings.peers, ADMIN_KEY), options).await?;
    let target = Target::new(&stack.settings.peers, READ_KEY);
    Ok((stack, target, options))
}

/// Every row of an export stream's answer with its cursor (`rows` takes a
/// message's rows), checking that each message holds 1 to `batch_size`.
async fn drained<M, R>(
    answer: Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>,
    batch_size: i32,
    rows: fn(M) -> Vec<(Option<R>, String)>,
) -> anyhow::Result<Vec<(R, String)>> {
    let mut stream = answer?.into_inner();
    let mut out = Vec::new();
    while let Some(message) = stream.next().await {
        let message = rows(message?);
        assert!(
            !message.is_empty() && message.len() <= batch_size as usize,
            "a batch of {} rows",
            message.len()
        );
        for (row, cursor) in message {
            let row = row.ok_or_else(|| anyhow::anyhow!("a row without its object"))?;
            out.push((row, cursor));
        }
    }
    Ok(out)
}

/// Every movement of ExportMovements after `cursor`, each with its cursor.
async fn exported(
    target: &Target,
    cursor: &str,
    batch_size: i32,
) -> anyhow::Result<Vec<(Movement, String)>> {
    let request = ExportMovementsRequest {
        cursor: cursor.to_owned(),
        batch_size,
    };
    let answer = target.revenue()?.export_movements(request).await;
    drained(answer, batch_size, |m| {
        m.rows.into_iter().map(|r| (r.movement, r.cursor)).collect()
    })
    .await
}

/// The JSON lines of a REST export.
fn lines(body: &str) -> anyhow::Result<Vec<Value>> {
    body.lines()
        .map(|l| serde_json::from_str(l).map_err(anyhow::Error::from))
        .collect()
}

async fn the_movements_export_streams_every_movement_once_and_resumes_after_a_cursor(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (stack, target, options) = seeded(db).await?;

    // What ListMovements says, page by page, over all time.
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = target
            .revenue()?
            .list_movements(ListMovementsRequest {
                start_at: Some(Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
                end_at: Some(Timestamp {
                    seconds: options.anchor + 400 * 86_400,
                    nanos: 0,
                }),
                page: Some(bowtie_proto::common::PageRequest {
                    page_size: 1000,
                    page_token: token,
                }),
                ..ListMovementsRequest::default()
            })
            .await?
            .into_inner();
        listed.extend(page.movements);
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    assert!(listed.len() > 10, "the demo has {} movements", listed.len());

    // The export in batches of 3: the same movements in the same order.
    let all = exported(&target, "", 3).await?;
    let movements: Vec<&Movement> = all.iter().map(|(m, _)| m).collect();
    assert_eq!(movements, listed.iter().collect::<Vec<_>>());

    // Cut after row k, resume with its cursor: the rest exactly once.
    let k = all.len() / 3;
    let rest = exported(&target, &all[k].1, 50).await?;
    assert_eq!(rest, all[k + 1..].to_vec());
    // After the last row there is nothing left.
    let last = &all[all.len() - 1].1;
    assert!(exported(&target, last, 50).await?.is_empty());

    // A cursor that is not one, or is one of another export, names `cursor`.
    let mut revenue = target.revenue()?;
    for bad in ["not-a-cursor".to_owned(), base64_of("subscriptions|x")] {
        let status = revenue
            .export_movements(ExportMovementsRequest {
                cursor: bad.clone(),
                batch_size: 0,
            })
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{bad:?} was accepted"))?;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(status.message().contains("cursor"), "{}", status.message());
    }
    let status = revenue
        .export_movements(ExportMovementsRequest {
            cursor: String::new(),
            batch_size: 5001,
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("5001 rows a batch was accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("batch_size"),
        "{}",
        status.message()
    );

    // Over REST: JSON lines, the same rows, resumable by `?cursor=`.
    let response = stack
        .request(
            reqwest::Method::GET,
            "/api/v1/export/movements?batch_size=50",
        )
        .bearer_auth(READ_KEY)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ndjson",
        "JSON lines"
    );
    let body = response.text().await?;
    let rest_lines = lines(&body)?;
    assert_eq!(rest_lines.len(), all.len());
    for ((m, cursor), line) in all.iter().zip(&rest_lines) {
        assert_eq!(line["cursor"], cursor.as_str());
        assert_eq!(line["movement"]["account_id"], m.account_id.as_str());
        assert_eq!(
            line["movement"]["amount"]["minor_units"],
            m.amount.as_ref().map_or(0, |a| a.minor_units)
        );
    }
    let cursor = all[k].1.as_str();
    let resumed = stack
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/export/movements?cursor={cursor}"),
        )
        .bearer_auth(READ_KEY)
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(lines(&resumed)?, rest_lines[k + 1..].to_vec());
    let (status, error) = stack
        .call(
            reqwest::Method::GET,
            "/api/v1/export/movements?cursor=not-a-cursor",
            Some(READ_KEY),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error.to_string().contains("cursor"), "{error}");

    // A CSV of more movements than one response holds names the export.
    let (status, error) = stack
        .call(
            reqwest::Method::GET,
            "/api/v1/revenue/movements?start=2000-01-01T00:00:00Z&end=2100-01-01T00:00:00Z\
             &page_size=5000&format=csv",
            Some(READ_KEY),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["error"]["code"], "FAILED_PRECONDITION");
    assert_eq!(error["error"]["field_violations"][0]["field"], "page_size");
    assert!(
        error.to_string().contains("/api/v1/export/movements"),
        "{error}"
    );

    // `bowtie export movements` prints the very lines the gateway streams.
    let mut out = Vec::new();
    let n =
        bowtie::export::export(&target, bowtie::export::Kind::Movements, "", 0, &mut out).await?;
    assert_eq!(n as usize, all.len());
    assert_eq!(String::from_utf8(out)?, body);
    Ok(())
}

async fn the_subscriptions_export_streams_every_subscription_as_get_subscription_answers_it(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (stack, target, _) = seeded(db).await?;
    let mut revenue = target.revenue()?;
    let client = revenue.clone();
    let export = |cursor: String| {
        let mut revenue = client.clone();
        async move {
            let mut stream = revenue
                .export_subscriptions(ExportSubscriptionsRequest {
                    cursor,
                    batch_size: 4,
                })
                .await?
                .into_inner();
            let mut rows = Vec::new();
            while let Some(message) = stream.next().await {
                for r in message?.rows {
                    let s = r
                        .subscription
                        .ok_or_else(|| anyhow::anyhow!("a row without a subscription"))?;
                    rows.push((s, r.cursor));
                }
            }
            anyhow::Ok(rows)
        }
    };
    let all = export(String::new()).await?;
    assert!(all.len() > 5, "the demo has {} subscriptions", all.len());
    let mut ids: Vec<&str> = all.iter().map(|(s, _)| s.id.as_str()).collect();
    assert!(ids.is_sorted(), "by id");
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "each subscription once");
    for (s, _) in &all {
        let got = revenue
            .get_subscription(GetSubscriptionRequest { id: s.id.clone() })
            .await?
            .into_inner()
            .subscription
            .ok_or_else(|| anyhow::anyhow!("{} not found", s.id))?;
        assert_eq!(got.account_id, s.account_id);
        assert_eq!(got.terms, s.terms, "{}", s.id);
        assert_eq!(got.cancellation, s.cancellation, "{}", s.id);
        assert_eq!(got.version, s.version, "{}", s.id);
    }
    let k = all.len() / 2;
    assert_eq!(export(all[k].1.clone()).await?, all[k + 1..].to_vec());

    let body = stack
        .request(reqwest::Method::GET, "/api/v1/export/subscriptions")
        .bearer_auth(READ_KEY)
        .send()
        .await?
        .text()
        .await?;
    let rest_lines = lines(&body)?;
    assert_eq!(rest_lines.len(), all.len());
    for ((s, cursor), line) in all.iter().zip(&rest_lines) {
        assert_eq!(line["cursor"], cursor.as_str());
        assert_eq!(line["subscription"]["id"], s.id.as_str());
    }
    // A movements cursor does not resume the subscriptions export.
    let movements_cursor = base64_of("movements|0/0191d6a4-0000-7000-8000-000000000000");
    let status = revenue
        .export_subscriptions(ExportSubscriptionsRequest {
            cursor: movements_cursor,
            batch_size: 0,
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a movements cursor was accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    Ok(())
}

/// `text` as URL-safe base64 without padding: how a cursor is spelled.
fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

async fn the_accounts_export_streams_every_account_once_in_list_accounts_order(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (stack, target, _) = seeded(db).await?;
    let mut accounts = target.accounts()?;
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = accounts
            .list_accounts(ListAccountsRequest {
                page: Some(bowtie_proto::common::PageRequest {
                    page_size: 1000,
                    page_token: token,
                }),
                ..ListAccountsRequest::default()
            })
            .await?
            .into_inner();
        listed.extend(page.accounts);
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    assert!(listed.len() >= 60, "the demo has {} accounts", listed.len());

    let client = accounts.clone();
    let export = |cursor: String| {
        let mut accounts = client.clone();
        async move {
            let mut stream = accounts
                .export_accounts(ExportAccountsRequest {
                    cursor,
                    batch_size: 8,
                })
                .await?
                .into_inner();
            let mut rows = Vec::new();
            while let Some(message) = stream.next().await {
                let message = message?;
                assert!(
                    message.rows.len() <= 8,
                    "{} rows a batch",
                    message.rows.len()
                );
                for r in message.rows {
                    let a = r
                        .account
                        .ok_or_else(|| anyhow::anyhow!("a row without an account"))?;
                    rows.push((a, r.cursor));
                }
            }
            anyhow::Ok(rows)
        }
    };
    let all = export(String::new()).await?;
    let exported: Vec<_> = all.iter().map(|(a, _)| a).collect();
    assert_eq!(exported, listed.iter().collect::<Vec<_>>());
    let k = all.len() / 4;
    assert_eq!(export(all[k].1.clone()).await?, all[k + 1..].to_vec());

    let status = accounts
        .export_accounts(ExportAccountsRequest {
            cursor: base64_of("accounts|not-an-id"),
            batch_size: 0,
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a forged cursor was accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("cursor"), "{}", status.message());

    let body = stack
        .request(reqwest::Method::GET, "/api/v1/export/accounts?batch_size=7")
        .bearer_auth(READ_KEY)
        .send()
        .await?
        .text()
        .await?;
    let rest_lines = lines(&body)?;
    assert_eq!(rest_lines.len(), all.len());
    for ((a, cursor), line) in all.iter().zip(&rest_lines) {
        assert_eq!(line["cursor"], cursor.as_str());
        assert_eq!(line["account"]["id"], a.id.as_str());
        assert_eq!(line["account"]["name"], a.name.as_str());
    }
    let mut out = Vec::new();
    bowtie::export::export(&target, bowtie::export::Kind::Accounts, "", 7, &mut out).await?;
    assert_eq!(String::from_utf8(out)?, body);
    Ok(())
}

/// Every transition of ExportTransitions after `cursor`, each with its cursor.
async fn exported_transitions(
    target: &Target,
    cursor: &str,
    batch_size: i32,
) -> anyhow::Result<Vec<(Transition, String)>> {
    let request = ExportTransitionsRequest {
        cursor: cursor.to_owned(),
        batch_size,
    };
    let answer = target.funnel()?.export_transitions(request).await;
    drained(answer, batch_size, |m| {
        m.rows
            .into_iter()
            .map(|r| (r.transition, r.cursor))
            .collect()
    })
    .await
}

async fn the_transitions_export_streams_every_journeys_transitions_once_in_the_order_recorded(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let (stack, target, _) = seeded(db).await?;

    // What GetJourney says of every account, sorted by id (the order recorded).
    let mut journeys = Vec::new();
    let mut funnel = target.funnel()?;
    let mut token = String::new();
    loop {
        let page = target
            .accounts()?
            .list_accounts(ListAccountsRequest {
                page: Some(bowtie_proto::common::PageRequest {
                    page_size: 1000,
                    page_token: token,
                }),
                ..ListAccountsRequest::default()
            })
            .await?
            .into_inner();
        for a in &page.accounts {
            match funnel
                .get_journey(GetJourneyRequest {
                    account_id: a.id.clone(),
                })
                .await
            {
                Ok(answer) => journeys.extend(
                    answer
                        .into_inner()
                        .journey
                        .map(|j| j.transitions)
                        .unwrap_or_default(),
                ),
                // An account without a transition has no journey.
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(s.into()),
            }
        }
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    journeys.sort_by(|a, b| a.id.cmp(&b.id));
    assert!(
        journeys.len() > 60,
        "the demo has {} transitions",
        journeys.len()
    );

    // The export in batches of 7: exactly those transitions, by id.
    let all = exported_transitions(&target, "", 7).await?;
    let transitions: Vec<&Transition> = all.iter().map(|(t, _)| t).collect();
    assert_eq!(transitions, journeys.iter().collect::<Vec<_>>());

    // Cut after row k, resume with its cursor: the rest exactly once.
    let k = all.len() / 2;
    assert_eq!(
        exported_transitions(&target, &all[k].1, 100).await?,
        all[k + 1..].to_vec()
    );
    assert!(
        exported_transitions(&target, &all[all.len() - 1].1, 100)
            .await?
            .is_empty()
    );

    // Another export's cursor, or one naming no transition id, names `cursor`.
    for bad in [
        base64_of("movements|0/0191d6a4-0000-7000-8000-000000000000"),
        base64_of("transitions|not-an-id"),
    ] {
        let status = funnel
            .export_transitions(ExportTransitionsRequest {
                cursor: bad.clone(),
                batch_size: 0,
            })
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{bad:?} was accepted"))?;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(status.message().contains("cursor"), "{}", status.message());
    }

    // Over REST: the same rows as JSON lines; `bowtie export transitions`
    // prints the very same lines.
    let body = stack
        .request(reqwest::Method::GET, "/api/v1/export/transitions")
        .bearer_auth(READ_KEY)
        .send()
        .await?
        .text()
        .await?;
    let rest_lines = lines(&body)?;
    assert_eq!(rest_lines.len(), all.len());
    for ((t, cursor), line) in all.iter().zip(&rest_lines) {
        assert_eq!(line["cursor"], cursor.as_str());
        assert_eq!(line["transition"]["id"], t.id.as_str());
        assert_eq!(line["transition"]["account_id"], t.account_id.as_str());
    }
    let mut out = Vec::new();
    let n =
        bowtie::export::export(&target, bowtie::export::Kind::Transitions, "", 0, &mut out).await?;
    assert_eq!(n as usize, all.len());
    assert_eq!(String::from_utf8(out)?, body);
    Ok(())
}
