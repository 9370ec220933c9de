//! `bowtie import stripe FILE...`: a backfill from JSON files of Stripe list
//! responses (what `stripe customers list`, `GET /v1/subscriptions?status=all`
//! with its items and `GET /v1/invoices` return, one page or an array of
//! pages per file), applied by the Stripe webhook's own rules and keys
//! (`bowtie_gateway::StripeBackfill`, docs/connectors.md), so importing
//! again, or after live events, adds nothing twice.
//!
//! Each customer's objects are applied in order, the customer first, then
//! its subscriptions, then its invoices, whatever the order of the files.
//! Customers are applied [`CHUNK`] at a time through the connector's batched
//! path (one transaction per service per chunk, docs/design.md 8.1), up to
//! [`CONCURRENCY`] chunks at once. Each bad object is reported by its id and
//! the rest land.

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt as _;

use anyhow::Context as _;
use bowtie_runtime::config::Settings;
use indicatif::ProgressBar;
use serde_json::Value;

/// What a backfill did.
#[derive(Debug, Default)]
pub struct StripeReport {
    /// Customers applied.
    pub customers: usize,
    /// Subscriptions applied.
    pub subscriptions: usize,
    /// Invoices applied.
    pub invoices: usize,
    /// Each object that failed: its id and why.
    pub errors: Vec<(String, String)>,
}

impl StripeReport {
    /// One line: what landed and what failed.
    pub fn summary(&self) -> String {
        format!(
            "{} customers, {} subscriptions, {} invoices applied; {} failed",
            self.customers,
            self.subscriptions,
            self.invoices,
            self.errors.len()
        )
    }
}

/// The objects of one file: a list object, an array of list objects or an
/// array of objects.
pub fn objects(text: &str) -> anyhow::Result<Vec<Value>> {
    let value: Value = serde_json::from_str(text)?;
    let mut out = Vec::new();
    let mut take = |v: &Value| match v.get("data").and_then(Value::as_array) {
        Some(data) if v.get("object").and_then(Value::as_str) == Some("list") => {
            out.extend(data.iter().cloned());
        }
        _ => out.push(v.clone()),
    };
    match &value {
        Value::Array(items) => items.iter().for_each(&mut take),
        other => take(other),
    }
    Ok(out)
}

/// Customers a chunk holds: their objects are applied together.
pub const CHUNK: usize = 1_000;

/// Chunks applied at once, so one service writes while another does.
pub const CONCURRENCY: usize = 3;

/// The customer an object belongs to: a customer's own id, or the
/// `customer` of a subscription or invoice (an id or the expanded object).
fn customer_of(object: &Value) -> String {
    let own = (rank(object) == 0).then(|| object.get("id")).flatten();
    let named = object.get("customer").map(|c| c.get("id").unwrap_or(c));
    own.or(named)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn rank(object: &Value) -> u8 {
    match object.get("object").and_then(Value::as_str) {
        Some("customer") => 0,
        Some("subscription") => 1,
        Some("invoice") => 2,
        _ => 3,
    }
}

/// Reads `files` and applies their objects to the services of `settings.peers` with `key`.
pub async fn import(
    settings: &Settings,
    key: &str,
    files: &[impl AsRef<Path>],
    progress: &ProgressBar,
) -> anyhow::Result<StripeReport> {
    let mut all = Vec::new();
    for file in files {
        let file = file.as_ref();
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        all.extend(objects(&text).with_context(|| format!("parsing {}", file.display()))?);
    }
    let mut by_customer: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for object in all {
        by_customer
            .entry(customer_of(&object))
            .or_default()
            .push(object);
    }
    let backfill = bowtie_gateway::StripeBackfill::connect(settings, key)?;
    let total: usize = by_customer.values().map(Vec::len).sum();
    progress.set_length(u64::try_from(total).unwrap_or(u64::MAX));
    let backfill = &backfill;
    let mut customers: Vec<Vec<Value>> = by_customer.into_values().collect();
    for objects in &mut customers {
        objects.sort_by_key(rank);
    }
    let mut chunks = Vec::new();
    let mut customers = customers.into_iter().peekable();
    while customers.peek().is_some() {
        let chunk: Vec<Value> = customers.by_ref().take(CHUNK).flatten().collect();
        chunks.push(chunk);
    }
    let mut outcomes = futures::stream::iter(chunks)
        .map(|objects| async move {
            let mut report = StripeReport::default();
            let outcomes = backfill.apply(&objects).await;
            for (object, outcome) in objects.iter().zip(outcomes) {
                match outcome {
                    Ok(()) => match rank(object) {
                        0 => report.customers += 1,
                        1 => report.subscriptions += 1,
                        _ => report.invoices += 1,
                    },
                    Err(e) => {
                        let id = object
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("(no id)")
                            .to_owned();
                        report.errors.push((id, e));
                    }
                }
            }
            progress.inc(objects.len() as u64);
            report
        })
        .buffer_unordered(CONCURRENCY);
    let mut report = StripeReport::default();
    while let Some(one) = outcomes.next().await {
        report.customers += one.customers;
        report.subscriptions += one.subscriptions;
        report.invoices += one.invoices;
        report.errors.extend(one.errors);
    }
    progress.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_a_page_an_array_of_pages_or_an_array_of_objects() -> anyhow::Result<()> {
        let page =
            r#"{"object":"list","data":[{"id":"cus_1","object":"customer"}],"has_more":false}"#;
        assert_eq!(objects(page)?.len(), 1);
        assert_eq!(objects(&format!("[{page},{page}]"))?.len(), 2);
        assert_eq!(objects(r#"[{"id":"in_1","object":"invoice"}]"#)?.len(), 1);
        Ok(())
    }

    #[test]
    fn an_object_belongs_to_its_customer_by_id_or_expanded_object() {
        let customer = serde_json::json!({"id": "cus_1", "object": "customer"});
        let by_id =
            serde_json::json!({"id": "sub_1", "object": "subscription", "customer": "cus_1"});
        let expanded = serde_json::json!({"id": "in_1", "object": "invoice",
                                          "customer": {"id": "cus_1", "object": "customer"}});
        assert_eq!(customer_of(&customer), "cus_1");
        assert_eq!(customer_of(&by_id), "cus_1");
        assert_eq!(customer_of(&expanded), "cus_1");
    }
}
