//! `bowtie import stripe FILE...`: a backfill from JSON files of Stripe list
//! responses (what `stripe customers list`, `GET /v1/subscriptions?status=all`
//! with its items and `GET /v1/invoices` return, one page or an array of
//! pages per file), applied by the Stripe webhook's own rules and keys
//! (`bowtie_gateway::StripeBackfill`, docs/connectors.md), so importing
//! again, or after live events, adds nothing twice.
//!
//! Customers are applied first, then subscriptions, then invoices, whatever
//! the order of the files; each bad object is reported by its id and the
//! rest land.

use std::path::Path;

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
    all.sort_by_key(rank);
    let backfill = bowtie_gateway::StripeBackfill::connect(settings, key)?;
    progress.set_length(u64::try_from(all.len()).unwrap_or(u64::MAX));
    let mut report = StripeReport::default();
    for object in &all {
        let id = object
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("(no id)")
            .to_owned();
        progress.set_message(id.clone());
        match backfill.apply(object).await {
            Ok(()) => match rank(object) {
                0 => report.customers += 1,
                1 => report.subscriptions += 1,
                _ => report.invoices += 1,
            },
            Err(e) => report.errors.push((id, e)),
        }
        progress.inc(1);
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
}
