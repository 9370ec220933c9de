//! The connectors case (docs/connectors.md). The services and the gateway
//! run as their own `bowtie serve` processes on temporary SQLite files, with
//! the Stripe webhook and Segment tracking turned on, and are driven over
//! HTTP as Stripe and a Segment-spec source would drive them:
//!
//! - Stripe webhook events applied per second: each customer's events
//!   (`customer.created`, `customer.subscription.created`, `invoice.paid`)
//!   in order, 16 customers at a time, every delivery signed (HMAC-SHA256 of
//!   `"<t>.<body>"`) and checked by the gateway before anything is parsed;
//!   then the same load on other customers through a second gateway that
//!   applies each delivery on its own (`batch_max_events = 1`), and the ratio;
//! - a backfill of 100,000 Stripe subscriptions (`bowtie import stripe` on
//!   JSON list responses, 100,000 customers and their subscriptions);
//! - Segment `/v1/batch` ingest of `track` events (500 a batch, 8 batches
//!   at a time), each batch acknowledged after its signals are committed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::measure::Report;
use crate::unary::{
    KEY, SERVICES, bowtie_binary, config_toml, free_port, start_gateway, start_services,
};

const SECRET: &str = "whsec_bench_connectors";
const WRITE_KEY: &str = "wk_bench_connectors";
/// Customers whose webhook events are delivered.
const WEBHOOK_CUSTOMERS: usize = 2_000;
/// Customers delivered at once.
const WEBHOOK_CONCURRENCY: usize = 16;
/// Subscriptions of the backfill.
const BACKFILL: usize = 100_000;
/// Accounts the tracked events belong to.
const GROUPS: usize = 1_000;
/// Track events sent.
const TRACKS: usize = 200_000;
/// Events a batch.
const BATCH: usize = 500;
/// Batches in flight.
const BATCH_CONCURRENCY: usize = 8;
/// 1 January 2026, Unix seconds: when the generated subscriptions start.
const START: i64 = 1_767_225_600;

/// Runs the case.
pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    let bin = bowtie_binary()?;
    let dir = tempfile::tempdir()?;
    let ports: Vec<u16> = SERVICES
        .iter()
        .map(|_| free_port())
        .collect::<anyhow::Result<_>>()?;
    let gateway_port = free_port()?;
    let config = dir.path().join("bowtie.toml");
    let mut toml = config_toml(dir.path(), &ports, gateway_port);
    toml.push_str(&format!(
        "webhook_api_key = \"{KEY}\"\n\n[connectors.stripe]\nwebhook_secret = \"{SECRET}\"\n\n\
         [connectors.segment]\nwrite_key = \"{WRITE_KEY}\"\n"
    ));
    // The same services behind a second gateway applying each delivery alone.
    let single_port = free_port()?;
    let single_config = dir.path().join("one-by-one.toml");
    let single_toml = toml
        .replace(
            &format!("listen = \"127.0.0.1:{gateway_port}\""),
            &format!("listen = \"127.0.0.1:{single_port}\""),
        )
        .replace(
            "[connectors.stripe]\n",
            "[connectors.stripe]\nbatch_max_events = 1\n",
        );
    std::fs::write(&config, toml)?;
    std::fs::write(&single_config, single_toml)?;
    let services = start_services(&bin, &config, &ports).await?;
    let gateway_addr: SocketAddr = ([127, 0, 0, 1], gateway_port).into();
    let gateway = start_gateway(&bin, &config, gateway_addr).await?;
    let single_addr: SocketAddr = ([127, 0, 0, 1], single_port).into();
    let single = start_gateway(&bin, &single_config, single_addr).await?;
    let base = format!("http://{gateway_addr}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()?;

    let per_second = webhooks(&http, &base, 0).await?;
    report.add_at_least(
        "connectors",
        "Stripe webhook events applied/s",
        per_second,
        "ev/s",
        2_000.0,
    );
    let alone = webhooks(&http, &format!("http://{single_addr}"), WEBHOOK_CUSTOMERS).await?;
    drop(single);
    report.add(
        "connectors",
        "Stripe webhook events applied/s, each delivery alone",
        alone,
        "ev/s",
        None,
    );
    report.add(
        "connectors",
        "ratio batched / each delivery alone",
        per_second / alone.max(f64::MIN_POSITIVE),
        "x",
        None,
    );

    let seconds = backfill(&bin, &config, dir.path()).await?;
    report.add(
        "connectors",
        &format!("Stripe backfill of {BACKFILL} subscriptions"),
        seconds,
        "s",
        Some(60.0),
    );

    let per_second = segment(&http, &base).await?;
    report.add_at_least(
        "connectors",
        "Segment /v1/batch track events/s",
        per_second,
        "ev/s",
        50_000.0,
    );
    drop(gateway);
    drop(services);
    Ok(())
}

fn customer(id: &str) -> Value {
    json!({
        "id": id, "object": "customer", "name": format!("Customer {id}"),
        "email": format!("billing@{id}.example"), "created": START, "currency": "usd",
        "livemode": false, "metadata": {"bowtie_segment": "SMB"}
    })
}

fn subscription(n: usize) -> Value {
    let amount = 1_000 + (n % 50) as i64 * 100;
    let price = json!({
        "id": "price_pro", "object": "price", "active": true, "currency": "usd",
        "product": "prod_bowtie", "type": "recurring", "unit_amount": amount,
        "billing_scheme": "per_unit",
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}
    });
    let item = json!({
        "id": format!("si_{n}"), "object": "subscription_item", "quantity": 1 + n % 5,
        "created": START, "metadata": {}, "price": price
    });
    json!({
        "id": format!("sub_{n}"), "object": "subscription", "customer": format!("cus_{n}"),
        "status": "active", "currency": "usd", "start_date": START, "created": START,
        "billing_cycle_anchor": START, "cancel_at_period_end": false, "canceled_at": null,
        "cancel_at": null, "ended_at": null, "trial_start": null, "trial_end": null,
        "discount": null, "discounts": [], "livemode": false,
        "cancellation_details": {"comment": null, "feedback": null, "reason": null},
        "items": {"object": "list", "has_more": false, "data": [item]}
    })
}

fn invoice(n: usize) -> Value {
    json!({
        "id": format!("in_{n}"), "object": "invoice", "customer": format!("cus_{n}"),
        "currency": "usd", "amount_due": 1_000, "created": START, "due_date": null,
        "status": "paid", "attempt_count": 1,
        "status_transitions": {"paid_at": START + 3_600}
    })
}

fn event(id: String, kind: &str, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "type": kind,
        "created": START, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "data": {"object": object}
    })
}

/// `Stripe-Signature` for `body` at `t`, as Stripe computes it.
fn signature(body: &str, t: i64) -> anyhow::Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
    mac.update(format!("{t}.{body}").as_bytes());
    Ok(format!(
        "t={t},v1={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// Delivers the three events of each of [`WEBHOOK_CUSTOMERS`] customers
/// numbered from `first`; returns events applied per second.
async fn webhooks(http: &reqwest::Client, base: &str, first: usize) -> anyhow::Result<f64> {
    let customers: Vec<Vec<String>> = (first..first + WEBHOOK_CUSTOMERS)
        .map(|n| {
            let id = format!("cus_{n}");
            vec![
                event(format!("evt_c{n}"), "customer.created", customer(&id)).to_string(),
                event(
                    format!("evt_s{n}"),
                    "customer.subscription.created",
                    subscription(n),
                )
                .to_string(),
                event(format!("evt_i{n}"), "invoice.paid", invoice(n)).to_string(),
            ]
        })
        .collect();
    let events = customers.iter().map(Vec::len).sum::<usize>();
    let queue = Arc::new(tokio::sync::Mutex::new(customers));
    let url = format!("{base}/webhooks/stripe");
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..WEBHOOK_CONCURRENCY {
        let (queue, http, url) = (queue.clone(), http.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(bodies) = queue.lock().await.pop() else {
                    return anyhow::Ok(());
                };
                for body in bodies {
                    let t = chrono::Utc::now().timestamp();
                    let answer = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("Stripe-Signature", signature(&body, t)?)
                        .body(body)
                        .send()
                        .await?;
                    let status = answer.status();
                    anyhow::ensure!(
                        status.is_success(),
                        "a webhook delivery answered {status}: {}",
                        answer.text().await.unwrap_or_default()
                    );
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("connectors: {events} Stripe events delivered in {elapsed:.1} s");
    Ok(events as f64 / elapsed)
}

/// Writes the backfill's list responses and times `bowtie import stripe`.
async fn backfill(bin: &Path, config: &Path, dir: &Path) -> anyhow::Result<f64> {
    // Numbered after both webhook runs' customers, so nothing is shared.
    let range = 2 * WEBHOOK_CUSTOMERS..2 * WEBHOOK_CUSTOMERS + BACKFILL;
    let page = |data: Vec<Value>| json!({"object": "list", "data": data, "has_more": false});
    let customers = page(
        range
            .clone()
            .map(|n| customer(&format!("cus_{n}")))
            .collect(),
    );
    let subscriptions = page(range.map(subscription).collect());
    let files = [
        (dir.join("customers.json"), customers),
        (dir.join("subscriptions.json"), subscriptions),
    ];
    for (path, value) in &files {
        std::fs::write(path, serde_json::to_vec(value)?)?;
    }
    let started = Instant::now();
    let mut import = Command::new(bin);
    import
        .arg("--config")
        .arg(config)
        .args(["import", "stripe"])
        .args(files.iter().map(|(p, _)| p))
        .args(["--key", KEY])
        .stdout(std::process::Stdio::null());
    let status = tokio::task::spawn_blocking(move || import.status()).await??;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "bowtie import stripe failed: {status}");
    println!("connectors: {BACKFILL} Stripe subscriptions backfilled in {seconds:.1} s");
    Ok(seconds)
}

/// Groups the accounts, then sends the track batches; returns track events
/// acknowledged per second.
async fn segment(http: &reqwest::Client, base: &str) -> anyhow::Result<f64> {
    let url = format!("{base}/v1/batch");
    let groups: Vec<Value> = (0..GROUPS)
        .map(|g| {
            json!({"type": "group", "userId": format!("user_{g}"), "groupId": format!("org_{g}"),
                   "traits": {"name": format!("Org {g}"), "employees": 40},
                   "messageId": format!("group-{g}"), "timestamp": "2026-11-01T00:00:00Z"})
        })
        .collect();
    for chunk in groups.chunks(BATCH) {
        post_batch(http, &url, chunk).await?;
    }
    let batches: Vec<Vec<Value>> = (0..TRACKS)
        .map(|n| {
            let g = n % GROUPS;
            json!({"type": "track", "userId": format!("user_{g}"), "event": "Signed In",
                   "context": {"groupId": format!("org_{g}")},
                   "messageId": format!("track-{n}"),
                   "timestamp": format!("2026-11-{:02}T{:02}:00:00Z", 1 + n % 28, n % 24)})
        })
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(<[Value]>::to_vec)
        .collect();
    let queue = Arc::new(tokio::sync::Mutex::new(batches));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..BATCH_CONCURRENCY {
        let (queue, http, url) = (queue.clone(), http.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(batch) = queue.lock().await.pop() else {
                    return anyhow::Ok(());
                };
                post_batch(&http, &url, &batch).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("connectors: {TRACKS} Segment track events acknowledged in {elapsed:.1} s");
    Ok(TRACKS as f64 / elapsed)
}

async fn post_batch(http: &reqwest::Client, url: &str, batch: &[Value]) -> anyhow::Result<()> {
    let answer = http
        .post(url)
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({ "batch": batch }))
        .send()
        .await?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "a batch answered {status}: {body}");
    let rejected = body
        .get("rejected")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    anyhow::ensure!(rejected == 0, "a batch had rejected events: {body}");
    Ok(())
}
