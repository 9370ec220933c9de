//! The demo's signals reach scoring: the declining customers score worse
//! than the healthy ones and show up at risk, and `bowtie report at-risk`
//! prints what scoring returns (and refuses `--mine` to a key without a book).

use std::collections::HashMap;

use bowtie::demo::plan::{Company, DemoOptions, anchor_for};
use bowtie::report::{self, money};
use bowtie_proto::accounts::ListAccountsRequest;
use bowtie_proto::common::PageRequest;
use bowtie_proto::scoring::{Band, GetHealthRequest, ListAtRiskRequest};
use bowtie_testkit::stack::Stack;
use bowtie_testkit::{READ_KEY, TestDatabase, backend_test};

backend_test!(the_declining_demo_customers_score_worse_and_are_listed_at_risk);

/// A 300-account demo anchored today (health compares the last 30 days
/// with the 30 before, counted from now), with the first seed from 1 whose
/// plan has at least two declining and ten healthy paying customers.
fn demo_of_today() -> DemoOptions {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let mut options = DemoOptions {
        seed: 1,
        accounts: 300,
        anchor: anchor_for(now),
    };
    while {
        let s = Company::generate(options).summary();
        s.declining < 2 || s.paying < s.declining + 10
    } {
        options.seed += 1;
    }
    options
}

/// Account ids by their "demo" external id.
async fn demo_ids(stack: &Stack) -> anyhow::Result<HashMap<String, String>> {
    let mut client = stack.target().accounts()?;
    let mut ids = HashMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_accounts(ListAccountsRequest {
                page: Some(PageRequest {
                    page_size: 1000,
                    page_token: token,
                }),
                ..ListAccountsRequest::default()
            })
            .await?
            .into_inner();
        for a in page.accounts {
            for e in &a.external_ids {
                ids.insert(e.external_id.clone(), a.id.clone());
            }
        }
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(ids);
        }
    }
}

async fn the_declining_demo_customers_score_worse_and_are_listed_at_risk(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let options = demo_of_today();
    bowtie::demo::seed(&stack.target(), options).await?;
    let company = Company::generate(options);
    let ids = demo_ids(&stack).await?;
    let mut scoring = stack.target_with(READ_KEY).scoring()?;

    let (mut declining, mut healthy) = (Vec::new(), Vec::new());
    for a in &company.accounts {
        if a.mrr_at(options.anchor) == 0 {
            continue;
        }
        let id = ids
            .get(&a.external_id)
            .ok_or_else(|| anyhow::anyhow!("{} was not seeded", a.external_id))?;
        let health = scoring
            .get_health(GetHealthRequest {
                account_id: id.clone(),
            })
            .await?
            .into_inner()
            .health
            .ok_or_else(|| anyhow::anyhow!("no health for {}", a.external_id))?;
        if a.declining {
            declining.push((id.clone(), health));
        } else {
            healthy.push((id.clone(), health));
        }
    }
    let mean = |v: &[(String, bowtie_proto::scoring::AccountHealth)]| {
        v.iter().map(|(_, h)| f64::from(h.score)).sum::<f64>() / v.len().max(1) as f64
    };
    assert!(
        mean(&declining) + 15.0 < mean(&healthy),
        "declining {:.1} vs healthy {:.1}",
        mean(&declining),
        mean(&healthy)
    );
    for (id, h) in &declining {
        assert_ne!(
            h.band,
            Band::Green as i32,
            "declining account {id} is green: {h:?}"
        );
    }

    let at_risk = scoring
        .list_at_risk(ListAtRiskRequest {
            page: Some(PageRequest {
                page_size: 1000,
                page_token: String::new(),
            }),
            ..ListAtRiskRequest::default()
        })
        .await?
        .into_inner()
        .accounts;
    assert!(
        declining
            .iter()
            .any(|(id, _)| at_risk.iter().any(|h| &h.account_id == id)),
        "no declining account is at risk"
    );

    let text = report::at_risk(
        &stack.target_with(READ_KEY),
        None,
        1000,
        false,
        report::Format::Table,
    )
    .await?;
    for h in &at_risk {
        let reason = h
            .components
            .iter()
            .min_by_key(|c| c.score)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.contains(&reason) && l.contains(&money(h.mrr_minor_units)))
            .ok_or_else(|| anyhow::anyhow!("no row for {} in\n{text}", h.account_id))?;
        assert!(line.contains(&format!(" {} ", h.score)), "{line}");
    }
    // `--mine` needs a caller with a book: the read key has scopes only.
    let mine = report::at_risk(
        &stack.target_with(READ_KEY),
        None,
        1000,
        true,
        report::Format::Table,
    )
    .await
    .map_err(|e| e.to_string());
    assert!(mine.as_ref().is_err_and(|e| e.contains("mine")), "{mine:?}");
    Ok(())
}
