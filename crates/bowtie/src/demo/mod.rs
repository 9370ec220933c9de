//! The demo company: a deterministic synthetic SaaS business (see [`plan`])
//! written into running services through their public gRPC APIs only, the
//! way a CRM and a billing system would.
//!
//! Seeding is idempotent. Accounts are upserted by their "demo" external id,
//! every other write carries an idempotency key derived from the seed, the
//! anchor day and the entity, and funnel transitions are no-ops when
//! repeated. The anchor day is found again from the first demo account, so a
//! restart on an already seeded data directory, even days later, rebuilds
//! the same requests, adds nothing, and completes a seed that was
//! interrupted.

pub mod plan;
pub mod playbooks;
pub mod signals;
pub mod work;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bowtie_proto::accounts::{
    Account, ExternalId, ListAccountsRequest, UpsertAccountByExternalIdRequest,
};
use bowtie_proto::common::{Money, PageRequest, Period, Stage};
use bowtie_proto::funnel::{GetFunnelReportRequest, RecordTransitionRequest};
use bowtie_proto::revenue::{
    BillingInterval, CancelSubscriptionRequest, Cancellation, CancellationKind,
    ChangeSubscriptionRequest, CreateSubscriptionRequest, Invoice, RecordInvoiceRequest,
    RecordSpendRequest, Subscription, Terms,
};
use futures::{StreamExt, TryStreamExt};
use prost_types::Timestamp;

use crate::client::{AccountsClient, FunnelClient, RevenueClient, Target};
use plan::{Billing, PlannedAccount, PlannedSubscription};
pub use plan::{Company, DemoOptions, Summary};

/// The CRM source the demo's accounts are filed under.
pub const SOURCE: &str = "demo";

/// Calls in flight per service while seeding: enough to keep each service
/// busy, few enough that SQLite's single writer is not swamped.
const CONCURRENCY: usize = 24;

/// How long seeding waits for the funnel to follow the revenue feed.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(60);

/// What a seeding run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seeded {
    /// The options used (the anchor may come from an earlier run).
    pub options: DemoOptions,
    /// The plan's headline figures.
    pub summary: Summary,
    /// True when the data directory already held this demo.
    pub resumed: bool,
    /// Write calls made (a batch of signals counts once).
    pub calls: usize,
    /// Hold-out AUC of the churn model trained on the demo's history, when
    /// there was enough of it.
    pub model_auc: Option<f64>,
    /// Wall time.
    pub elapsed: Duration,
}

/// The anchor of a demo with `seed` already in the accounts service, if any:
/// its first account's "demo" external id carries it.
pub async fn existing_anchor(target: &Target, seed: u64) -> anyhow::Result<Option<i64>> {
    let mut accounts = target.accounts()?;
    let page = accounts
        .list_accounts(ListAccountsRequest {
            owner: plan::OWNERS[0].to_owned(),
            page: Some(PageRequest {
                page_size: 50,
                page_token: String::new(),
            }),
            ..ListAccountsRequest::default()
        })
        .await
        .context("looking for an earlier demo (ListAccounts)")?
        .into_inner();
    let prefix = format!("demo-{seed}-");
    for account in page.accounts {
        for id in account.external_ids {
            if id.source != SOURCE {
                continue;
            }
            let Some(rest) = id.external_id.strip_prefix(&prefix) else {
                continue;
            };
            let Some(tag) = rest.split('-').next() else {
                continue;
            };
            if let Ok(date) = chrono::NaiveDate::parse_from_str(tag, "%Y%m%d") {
                return Ok(date.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()));
            }
        }
    }
    Ok(None)
}

/// Seeds the demo company into the services at `target` (the key needs the
/// write scope). `options.anchor` is replaced by the anchor of an earlier
/// demo with the same seed when there is one.
pub async fn seed(target: &Target, mut options: DemoOptions) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let resumed = match existing_anchor(target, options.seed).await? {
        Some(anchor) => {
            options.anchor = anchor;
            true
        }
        None => false,
    };
    let company = Company::generate(options);
    let prefix = options.key_prefix();
    // Playbooks before the history, so its events open CTAs as they happen.
    let mut calls = playbooks::create(target.success()?, &prefix).await?;

    // Accounts first: everything else refers to their ids.
    let accounts = target.accounts()?;
    let ids: Vec<String> = futures::stream::iter(company.accounts.clone())
        .map(|a| upsert_account(accounts.clone(), prefix.clone(), a))
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    calls += ids.len();

    // Funnel and revenue write to different databases: in parallel. First
    // value (IMPACT, and scoring's signal of it) waits until the funnel has
    // followed revenue into ONBOARDING, so every feed tells each customer's
    // story in its order: success opens an onboarding CTA for a customer
    // who reached first value later, as it would have at the time.
    let funnel = target.funnel()?;
    let revenue = target.revenue()?;
    let transitions = futures::stream::iter(company.accounts.clone().into_iter().zip(ids.clone()))
        .map(|(a, id)| record_transitions(funnel.clone(), prefix.clone(), a, id, Phase::Journey))
        .buffer_unordered(CONCURRENCY)
        .try_fold(0, |n, k| async move { Ok(n + k) });
    let customers: Vec<(PlannedAccount, String)> = company
        .accounts
        .iter()
        .cloned()
        .zip(ids)
        .filter(|(a, _)| a.is_customer())
        .collect();
    let scoring = target.scoring()?;
    let subscriptions = futures::stream::iter(customers.clone())
        .map(|(a, id)| record_revenue(revenue.clone(), prefix.clone(), a, id))
        .buffer_unordered(CONCURRENCY)
        .try_fold(0, |n, k| async move { Ok(n + k) });
    let spend = record_spend(revenue.clone(), prefix.clone(), company.spend.clone());
    let (t, s, p) = tokio::try_join!(transitions, subscriptions, spend)?;
    calls += t + s + p;
    wait_for_funnel(funnel.clone(), &company).await?;

    let values = futures::stream::iter(customers.clone())
        .map(|(a, id)| record_transitions(funnel.clone(), prefix.clone(), a, id, Phase::Value))
        .buffer_unordered(CONCURRENCY)
        .try_fold(0, |n, k| async move { Ok(n + k) });
    let signalled = signals::record(scoring.clone(), &prefix, &customers);
    let (v, g) = tokio::try_join!(values, signalled)?;
    calls += v + g;
    // Health and risk from everything above: the model learns from the
    // demo's own churn history.
    let model_auc = signals::score(scoring).await?;
    // The CTAs the history opened, worked by their owners.
    let planned: std::collections::HashMap<String, PlannedAccount> =
        customers.into_iter().map(|(a, id)| (id, a)).collect();
    calls += work::work(target.success()?, &prefix, company.options.anchor, &planned).await?;
    Ok(Seeded {
        options,
        summary: company.summary(),
        resumed,
        calls,
        model_auc,
        elapsed: started.elapsed(),
    })
}

fn timestamp(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn usd(minor_units: i64) -> Option<Money> {
    Some(Money {
        currency_code: "USD".to_owned(),
        minor_units,
    })
}

/// Tries of a demo write that the service answers UNAVAILABLE (its
/// database busy past the pool's timeout) or ABORTED (the write conflicted
/// with a concurrent one and was not made).
const WRITE_TRIES: u32 = 5;

/// `call(client, request)`, sent again after 100 ms, 200 ms, ... while it
/// answers UNAVAILABLE or ABORTED, [`WRITE_TRIES`] times at most: every demo
/// write carries an idempotency key, so a retry never writes twice.
async fn retried<C, R, T, F, Fut>(
    client: &C,
    request: R,
    call: F,
) -> Result<tonic::Response<T>, tonic::Status>
where
    C: Clone,
    R: Clone,
    F: Fn(C, R) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut pause = Duration::from_millis(100);
    for _ in 1..WRITE_TRIES {
        match call(client.clone(), request.clone()).await {
            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Aborted) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            answer => return answer,
        }
    }
    call(client.clone(), request).await
}

async fn upsert_account(
    client: AccountsClient,
    prefix: String,
    a: PlannedAccount,
) -> anyhow::Result<String> {
    let external_id = ExternalId {
        source: SOURCE.to_owned(),
        external_id: a.external_id.clone(),
    };
    let response = retried(
        &client,
        UpsertAccountByExternalIdRequest {
            external_id: Some(external_id.clone()),
            account: Some(Account {
                name: a.name.clone(),
                segment: a.segment as i32,
                industry: a.industry.to_owned(),
                owner: a.owner.to_owned(),
                csm: a.csm.to_owned(),
                strategic: a.strategic,
                external_ids: vec![external_id],
                ..Account::default()
            }),
            idempotency_key: format!("{prefix}-a{}", a.index),
            source_updated_at: None,
        },
        |mut c, r| async move { c.upsert_account_by_external_id(r).await },
    )
    .await
    .with_context(|| format!("upserting demo account {}", a.external_id))?
    .into_inner();
    response
        .account
        .map(|account| account.id)
        .context("UpsertAccountByExternalId answered without an account")
}

/// Which of an account's transitions to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Everything but first value (IMPACT).
    Journey,
    /// First value only.
    Value,
}

async fn record_transitions(
    client: FunnelClient,
    prefix: String,
    a: PlannedAccount,
    id: String,
    phase: Phase,
) -> anyhow::Result<usize> {
    let mut recorded = 0;
    for (k, t) in a.transitions.iter().enumerate() {
        if (t.stage == Stage::Impact) != (phase == Phase::Value) {
            continue;
        }
        recorded += 1;
        retried(
            &client,
            RecordTransitionRequest {
                account_id: id.clone(),
                to_stage: t.stage as i32,
                occurred_at: timestamp(t.at),
                reason: t.reason.to_owned(),
                source: if t.stage == Stage::Impact {
                    "product".to_owned()
                } else {
                    "crm:demo".to_owned()
                },
                idempotency_key: format!("{prefix}-a{}-t{k}", a.index),
            },
            |mut c, r| async move { c.record_transition(r).await },
        )
        .await
        .with_context(|| format!("recording a transition of {}", a.external_id))?;
    }
    Ok(recorded)
}

fn terms(sub: &PlannedSubscription, seats: i64) -> Option<Terms> {
    Some(Terms {
        plan: sub.plan.to_owned(),
        quantity: seats,
        unit_price: usd(sub.unit_price),
        discount_basis_points: i32::try_from(sub.discount_bp).unwrap_or(0),
    })
}

async fn record_revenue(
    client: RevenueClient,
    prefix: String,
    a: PlannedAccount,
    id: String,
) -> anyhow::Result<usize> {
    let key = |what: String| format!("{prefix}-a{}-{what}", a.index);
    let mut calls = 0;
    let mut subscription_ids = Vec::new();
    for (k, sub) in a.subscriptions.iter().enumerate() {
        let created = retried(
            &client,
            CreateSubscriptionRequest {
                subscription: Some(Subscription {
                    account_id: id.clone(),
                    billing_interval: match sub.billing {
                        Billing::Monthly => BillingInterval::Month,
                        Billing::Annual => BillingInterval::Year,
                    } as i32,
                    terms: terms(sub, sub.seats),
                    start_at: timestamp(sub.start),
                    term_end_at: sub.term_end.and_then(timestamp),
                    ..Subscription::default()
                }),
                idempotency_key: key(format!("s{k}")),
            },
            |mut c, r| async move { c.create_subscription(r).await },
        )
        .await
        .with_context(|| format!("creating a subscription of {}", a.external_id))?
        .into_inner()
        .subscription
        .context("CreateSubscription answered without a subscription")?;
        calls += 1;
        for (c, (at, seats)) in sub.changes.iter().enumerate() {
            retried(
                &client,
                ChangeSubscriptionRequest {
                    id: created.id.clone(),
                    terms: terms(sub, *seats),
                    effective_at: timestamp(*at),
                    idempotency_key: key(format!("s{k}-c{c}")),
                    expected_version: None,
                },
                |mut c, r| async move { c.change_subscription(r).await },
            )
            .await
            .with_context(|| format!("changing a subscription of {}", a.external_id))?;
            calls += 1;
        }
        if let Some(cancel) = &sub.cancellation {
            retried(
                &client,
                CancelSubscriptionRequest {
                    id: created.id.clone(),
                    cancellation: Some(Cancellation {
                        effective_at: timestamp(cancel.at),
                        kind: if cancel.voluntary {
                            CancellationKind::Voluntary
                        } else {
                            CancellationKind::Involuntary
                        } as i32,
                        reason_code: cancel.reason.to_owned(),
                    }),
                    idempotency_key: key(format!("s{k}-x")),
                    expected_version: None,
                },
                |mut c, r| async move { c.cancel_subscription(r).await },
            )
            .await
            .with_context(|| format!("cancelling a subscription of {}", a.external_id))?;
            calls += 1;
        }
        subscription_ids.push(created.id);
    }
    for (n, invoice) in a.invoices.iter().enumerate() {
        retried(
            &client,
            RecordInvoiceRequest {
                invoice: Some(Invoice {
                    account_id: id.clone(),
                    subscription_id: subscription_ids
                        .get(invoice.subscription)
                        .cloned()
                        .unwrap_or_default(),
                    amount: usd(invoice.amount),
                    due_at: timestamp(invoice.due),
                    paid_at: invoice.paid.and_then(timestamp),
                    ..Invoice::default()
                }),
                idempotency_key: key(format!("i{n}")),
            },
            |mut c, r| async move { c.record_invoice(r).await },
        )
        .await
        .with_context(|| format!("recording an invoice of {}", a.external_id))?;
        calls += 1;
    }
    Ok(calls)
}

async fn record_spend(
    client: RevenueClient,
    prefix: String,
    spend: Vec<(String, i64)>,
) -> anyhow::Result<usize> {
    for (month, amount) in &spend {
        retried(
            &client,
            RecordSpendRequest {
                month: month.clone(),
                sales_and_marketing_spend: usd(*amount),
                gross_margin_basis_points: 7800,
                idempotency_key: format!("{prefix}-spend-{month}"),
            },
            |mut c, r| async move { c.record_spend(r).await },
        )
        .await
        .with_context(|| format!("recording the spend of {month}"))?;
    }
    Ok(spend.len())
}

/// Commits the funnel must show once it has followed the revenue feed: one
/// per subscription that starts paying (a first one or a comeback).
fn expected_commits(company: &Company) -> i64 {
    company
        .accounts
        .iter()
        .map(|a| a.subscriptions.len() as i64)
        .sum()
}

/// Waits until the funnel has moved every customer to COMMIT from the
/// revenue feed, so the dashboard and reports are complete when seeding
/// returns.
async fn wait_for_funnel(mut funnel: FunnelClient, company: &Company) -> anyhow::Result<()> {
    let expected = expected_commits(company);
    let first = company.options.anchor - (plan::HISTORY_DAYS + 1) * plan::DAY;
    let deadline = Instant::now() + FOLLOW_TIMEOUT;
    loop {
        let report = funnel
            .get_funnel_report(GetFunnelReportRequest {
                period: Some(Period {
                    start: timestamp(first),
                    end: timestamp(company.options.anchor + plan::DAY),
                }),
                ..GetFunnelReportRequest::default()
            })
            .await
            .context("reading the funnel report")?
            .into_inner();
        let commits: BTreeMap<i32, i64> =
            report.stages.iter().map(|s| (s.stage, s.volume)).collect();
        let seen = commits.get(&(Stage::Commit as i32)).copied().unwrap_or(0);
        if seen >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the funnel shows {seen} of {expected} commits after {FOLLOW_TIMEOUT:?}; \
                 is it following the revenue feed?"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Dollars with thousands separators, from cents (whole dollars).
pub fn dollars(cents: i64) -> String {
    crate::report::group_thousands(cents.div_euclid(100))
}

/// What seeding did and what to look at, for the terminal.
pub fn describe(seeded: &Seeded, dashboard: Option<&str>) -> String {
    let s = &seeded.summary;
    let o = &seeded.options;
    let mut out = String::new();
    if seeded.resumed {
        out.push_str(&format!(
            "demo company (seed {}, as of {}) already there; checked {} writes in {:.1}s, nothing added\n",
            o.seed,
            o.anchor_tag(),
            seeded.calls,
            seeded.elapsed.as_secs_f64()
        ));
    } else {
        out.push_str(&format!(
            "demo company seeded in {:.1}s ({} writes through the public APIs)\n",
            seeded.elapsed.as_secs_f64(),
            seeded.calls
        ));
    }
    out.push_str(&format!(
        "  {} accounts over 24 months, 3 segments, {} reps; {} leads lost on the left side\n\
         \x20 {} customers, {} paying today, MRR USD {} (ARR USD {})\n\
         \x20 {} upgrades and downgrades, {} cancellations, {} comebacks, {} late invoices\n\
         \x20 {} paying accounts declining (usage falling, complaints, downgrades, late payments)\n\
         \x20 {} usage, support, survey and stakeholder signals{}\n",
        s.accounts,
        plan::OWNERS.len(),
        s.lost,
        s.customers,
        s.paying,
        dollars(s.mrr),
        dollars(s.mrr * 12),
        s.changes,
        s.churned,
        s.reactivated,
        s.late_invoices,
        s.declining,
        s.signals,
        seeded.model_auc.map_or_else(String::new, |auc| format!(
            "; churn model trained on this history, hold-out AUC {auc:.2}"
        )),
    ));
    if let Some(url) = dashboard {
        out.push_str(&format!(
            "open {url}\n\
             \x20 the bowtie: volume, conversion and velocity per stage, where leads are lost\n\
             \x20 the MRR waterfall and trend, NRR / GRR / logo retention and the cohort grid\n\
             \x20 the at-risk list (the declining customers): follow one to its journey and health\n"
        ));
    }
    out.push_str(
        "in the terminal:\n\
         \x20 bowtie report funnel      volume, conversion and velocity per stage, where leads are lost\n\
         \x20 bowtie report mrr         the MRR waterfall month by month (new, expansion, churn, reactivation)\n\
         \x20 bowtie report retention   NRR, GRR and logo retention by segment and owner, the cohort grid\n\
         \x20 bowtie report at-risk     red or high-risk accounts and why (the declining ones)\n\
         (with BOWTIE_API_KEY=bowtie-dev-read, or --key)\n",
    );
    out
}
