//! The demo company's worked CTAs: once the history has opened its CTAs,
//! their owners work them the way a customer-success team would, through the
//! public success API: a call logged a day after opening, the CTA started, a
//! note two days later, and, once its SLA has passed, closed with the outcome
//! the account's own history gives (lost when it churned afterwards, won
//! when a churned customer came back, saved otherwise). CTAs of the last two
//! weeks stay open, some of them started, so the work page shows current
//! work rather than a backlog of overdue ones.
//!
//! Every write carries an idempotency key derived from the CTA, and a CTA
//! already closed is left alone, so a restart adds nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bowtie_proto::common::PageRequest;
use bowtie_proto::success::{
    ActivityKind, Cta, CtaStatus, CtaType, ListCtasRequest, LogActivityRequest, Outcome,
    UpdateCtaStatusRequest,
};
use futures::{StreamExt, TryStreamExt};
use prost_types::Timestamp;

use crate::client::SuccessClient;

use super::plan::{DAY, PlannedAccount};

/// How long working the CTAs waits for success to open them from the feeds.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// CTAs opened within this many days of the anchor stay open.
const RECENT_DAYS: i64 = 14;
/// Calls in flight while working CTAs.
const CONCURRENCY: usize = 8;

/// Every CTA that is not closed, all pages.
async fn open_ctas(client: &mut SuccessClient) -> anyhow::Result<Vec<Cta>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_ctas(ListCtasRequest {
                page: Some(PageRequest {
                    page_size: 500,
                    page_token: token,
                }),
                ..ListCtasRequest::default()
            })
            .await
            .context("listing the demo's CTAs")?
            .into_inner();
        out.extend(page.ctas);
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(out);
        }
    }
}

/// The open CTAs once success has stopped opening new ones from the feeds
/// (the count unchanged over three looks, half a second apart).
async fn settled(client: &mut SuccessClient) -> anyhow::Result<Vec<Cta>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last = open_ctas(client).await?;
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = open_ctas(client).await?;
        same = if now.len() == last.len() { same + 1 } else { 0 };
        last = now;
    }
    Ok(last)
}

/// How a CTA of `kind` opened at `opened` on `account` ended.
pub fn outcome(kind: i32, opened: i64, account: &PlannedAccount) -> Outcome {
    let churned_after = account.subscriptions.iter().any(|s| {
        s.cancellation
            .as_ref()
            .is_some_and(|c| c.at >= opened - DAY)
    });
    if kind == CtaType::WinBack as i32 {
        let came_back = account.subscriptions.iter().any(|s| s.start > opened);
        return if came_back {
            Outcome::Won
        } else {
            Outcome::Lost
        };
    }
    if churned_after {
        Outcome::Lost
    } else if kind == CtaType::Onboarding as i32 {
        Outcome::Won
    } else {
        Outcome::Saved
    }
}

/// Works the demo's CTAs opened before `anchor`; `accounts` maps account
/// ids to the plan. Returns the writes made.
pub async fn work(
    mut client: SuccessClient,
    prefix: &str,
    anchor: i64,
    accounts: &HashMap<String, PlannedAccount>,
) -> anyhow::Result<usize> {
    let ctas = settled(&mut client).await?;
    let writes = futures::stream::iter(ctas.into_iter().filter(|c| {
        c.create_time
            .is_some_and(|t| t.seconds < anchor - DAY && !c.owner.is_empty())
    }))
    .map(|cta| {
        let account = accounts.get(&cta.account_id).cloned();
        work_one(client.clone(), prefix.to_owned(), anchor, cta, account)
    })
    .buffer_unordered(CONCURRENCY)
    .try_fold(0, |n, k| async move { Ok(n + k) })
    .await?;
    Ok(writes)
}

async fn work_one(
    mut client: SuccessClient,
    prefix: String,
    anchor: i64,
    cta: Cta,
    account: Option<PlannedAccount>,
) -> anyhow::Result<usize> {
    let opened = cta.create_time.map_or(anchor, |t| t.seconds);
    let key = |what: &str| format!("{prefix}-cta-{}-{what}", cta.id);
    let at = |seconds: i64| {
        Some(Timestamp {
            seconds: seconds.min(anchor),
            nanos: 0,
        })
    };
    let recent = opened >= anchor - RECENT_DAYS * DAY;
    // Of the recent ones, about half are left untouched.
    let untouched = recent && cta.id.bytes().last().is_some_and(|b| b % 2 == 0);
    if untouched {
        return Ok(0);
    }
    let mut writes = 0;
    client
        .log_activity(LogActivityRequest {
            account_id: cta.account_id.clone(),
            kind: ActivityKind::Call as i32,
            author: cta.owner.clone(),
            occur_time: at(opened + DAY),
            text: format!("Called about: {}", cta.reason),
            participants: Vec::new(),
            idempotency_key: key("call"),
        })
        .await
        .with_context(|| format!("logging a call on CTA {}", cta.id))?;
    writes += 1;
    let mut version = cta.version;
    if cta.status == CtaStatus::Open as i32 {
        let started = client
            .update_cta_status(UpdateCtaStatusRequest {
                id: cta.id.clone(),
                status: CtaStatus::InProgress as i32,
                expected_version: version,
                actor: cta.owner.clone(),
                idempotency_key: key("start"),
                ..UpdateCtaStatusRequest::default()
            })
            .await
            .with_context(|| format!("starting CTA {}", cta.id))?
            .into_inner()
            .cta
            .context("UpdateCtaStatus answered without a CTA")?;
        version = started.version;
        writes += 1;
    }
    if recent {
        return Ok(writes);
    }
    let Some(account) = account else {
        return Ok(writes);
    };
    let outcome = outcome(cta.r#type, opened, &account);
    client
        .log_activity(LogActivityRequest {
            account_id: cta.account_id.clone(),
            kind: ActivityKind::Note as i32,
            author: cta.owner.clone(),
            occur_time: at(opened + 3 * DAY),
            text: match outcome {
                Outcome::Lost => "They are going ahead with leaving; nothing more to offer.",
                Outcome::Won => "Agreed: they are back on a plan.",
                _ => "Plan agreed with the champion; usage is picking up.",
            }
            .to_owned(),
            participants: Vec::new(),
            idempotency_key: key("note"),
        })
        .await
        .with_context(|| format!("logging a note on CTA {}", cta.id))?;
    writes += 1;
    client
        .update_cta_status(UpdateCtaStatusRequest {
            id: cta.id.clone(),
            status: CtaStatus::Closed as i32,
            outcome: outcome as i32,
            expected_version: version,
            actor: cta.owner.clone(),
            idempotency_key: key("close"),
            ..UpdateCtaStatusRequest::default()
        })
        .await
        .with_context(|| format!("closing CTA {}", cta.id))?;
    Ok(writes + 1)
}
