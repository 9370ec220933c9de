//! `bowtie import accounts|subscriptions|subscription-events|invoices|transitions
//! FILE`: CSV files with a header row loaded through the services' public
//! gRPC APIs.
//!
//! Every bad row is reported with its line number and the reason (a column
//! this command could not read, or the server's message, which names the
//! field) and the valid rows land. Accounts and subscriptions are sent row
//! by row; subscription events, invoices and transitions are sent in
//! batches over the services' import streams (`import_stream`), with
//! progress in rows/s and an ETA.
//!
//! Re-importing a file duplicates nothing: accounts are upserted by their
//! external id (a repeat with the same data changes nothing), subscriptions
//! carry an idempotency key derived from their `subscription_id` column (and
//! the cancellation one derived from it), and the streamed rows are
//! idempotent by their content (the services answer a repeat as already
//! there), so an interrupted import run again with the same file finishes
//! the job.
//!
//! Columns (header names are case-insensitive; unknown columns are refused
//! so that a typo cannot silently drop data):
//!
//! - accounts: `external_id`\*, `name`\*, `segment`\* (smb, mid_market,
//!   enterprise), `source` (default `csv`), `industry`, `owner`, `csm`,
//!   `strategic` (true/false), `tags` (separated by `;`, for example
//!   `pilot;eu`; an empty cell keeps the account's tags), and one
//!   `attr.<name>` column per declared attribute (a number, `true`/`false`,
//!   or text for string, date `YYYY-MM-DD` and enum attributes; an empty
//!   cell keeps the account's value).
//! - subscriptions: `subscription_id`\* (the billing system's id),
//!   `account_external_id`\* or `account_id`, `account_source` (default
//!   `csv`), `plan`\*, `quantity`\*, `unit_price`\* (per billing interval, in
//!   major units, e.g. `49.00`), `currency` (default USD), `billing_interval`\*
//!   (month, quarter, year), `discount_percent`, `start_date`\*,
//!   `trial_end_date`, `term_end_date`, `cancelled_at`, `cancel_kind`
//!   (voluntary, involuntary), `cancel_reason` (required with `cancelled_at`).
//! - subscription-events: one row per start, change or cancel, a
//!   subscription's rows in order: `subscription_id`\* (the billing system's
//!   id), `event`\* (start, change, cancel), `effective_date`\*,
//!   `account_external_id` or `account_id` (required on start),
//!   `account_source` (default `csv`); start and change: `plan`\*,
//!   `quantity`\*, `unit_price`\*, `currency` (default USD),
//!   `discount_percent`; start: `billing_interval`\*, `trial_end_date`,
//!   `term_end_date`; cancel: `cancel_kind` (default voluntary),
//!   `cancel_reason`\*.
//! - invoices: `invoice_id`\* (the billing system's id), `account_external_id`\*
//!   or `account_id`, `account_source`, `subscription_id` (the billing
//!   system's, as in subscription-events), `amount`\* (major units),
//!   `currency` (default USD), `due_date`\*, `paid_date`.
//! - transitions: `account_external_id`\* or `account_id`, `account_source`
//!   (default `csv`), `stage`\* (awareness, education, selection, commit,
//!   onboarding, impact, growth, lost, churned), `occurred_at`\*, `reason`
//!   (required for lost and churned), `source` (default `csv`).
//!
//! Dates are `YYYY-MM-DD` (midnight UTC) or RFC 3339 times.

use std::collections::HashMap;
use std::io::Read;

use anyhow::Context as _;
use bowtie_proto::accounts::attribute_value::Kind as ValueKind;
use bowtie_proto::accounts::{
    Account, AttributeType, AttributeValue, ExternalId, ListAccountsRequest,
    ListAttributeDeclarationsRequest, UpsertAccountByExternalIdRequest,
};
use bowtie_proto::common::{Money, PageRequest, Segment, Stage};
use bowtie_proto::revenue::{
    BillingInterval, CancelSubscriptionRequest, Cancellation, CancellationKind,
    CreateSubscriptionRequest, Subscription, Terms,
};
use futures::StreamExt;
use indicatif::ProgressBar;
use prost_types::Timestamp;
use sha2::{Digest, Sha256};

use crate::client::{AccountsClient, RevenueClient, Target, describe};

/// Rows in flight at once.
const CONCURRENCY: usize = 8;

/// The default `source` of accounts and transitions.
pub const DEFAULT_SOURCE: &str = "csv";

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Accounts, upserted by external id.
    Accounts,
    /// Subscriptions, with an optional cancellation.
    Subscriptions,
    /// Funnel transitions (streamed).
    Transitions,
    /// Subscription events: one row per start, change or cancel (streamed).
    SubscriptionEvents,
    /// Invoices (streamed).
    Invoices,
}

impl Kind {
    fn columns(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Kind::Accounts => (
                &["external_id", "name", "segment"],
                &["source", "industry", "owner", "csm", "strategic", "tags"],
            ),
            Kind::Subscriptions => (
                &[
                    "subscription_id",
                    "plan",
                    "quantity",
                    "unit_price",
                    "billing_interval",
                    "start_date",
                ],
                &[
                    "account_external_id",
                    "account_id",
                    "account_source",
                    "currency",
                    "discount_percent",
                    "trial_end_date",
                    "term_end_date",
                    "cancelled_at",
                    "cancel_kind",
                    "cancel_reason",
                ],
            ),
            Kind::SubscriptionEvents => (
                &["subscription_id", "event", "effective_date"],
                &[
                    "account_external_id",
                    "account_id",
                    "account_source",
                    "plan",
                    "quantity",
                    "unit_price",
                    "currency",
                    "billing_interval",
                    "discount_percent",
                    "trial_end_date",
                    "term_end_date",
                    "cancel_kind",
                    "cancel_reason",
                ],
            ),
            Kind::Invoices => (
                &["invoice_id", "amount", "due_date"],
                &[
                    "account_external_id",
                    "account_id",
                    "account_source",
                    "subscription_id",
                    "currency",
                    "paid_date",
                ],
            ),
            Kind::Transitions => (
                &["stage", "occurred_at"],
                &[
                    "account_external_id",
                    "account_id",
                    "account_source",
                    "reason",
                    "source",
                ],
            ),
        }
    }
}

/// A row that did not land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Line in the file (the header is line 1).
    pub line: u64,
    /// Why: the column and what is wrong with it, or the server's answer.
    pub message: String,
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: usize,
    /// Rows that created something new.
    pub created: usize,
    /// Rows accepted that created nothing new (an update, or a repeat).
    pub unchanged: usize,
    /// Rows recorded exactly once, now or by an earlier import of the same
    /// row (subscriptions: the service answers a repeat with the first result).
    pub recorded: usize,
    /// Rows that failed, in line order.
    pub errors: Vec<RowError>,
}

impl ImportReport {
    /// The summary line printed after the errors.
    pub fn summary(&self) -> String {
        let landed = if self.recorded > 0 {
            format!("{} recorded (new or already there)", self.recorded)
        } else {
            format!(
                "{} created, {} updated or already there",
                self.created, self.unchanged
            )
        };
        format!("{} rows: {landed}, {} failed", self.rows, self.errors.len())
    }
}

/// One data row: its line and its cells by column name.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) line: u64,
    cells: HashMap<String, String>,
}

impl Row {
    /// A non-empty cell.
    pub(crate) fn get(&self, column: &str) -> Option<&str> {
        self.cells
            .get(column)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn required(&self, column: &str) -> Result<&str, String> {
        self.get(column)
            .ok_or_else(|| format!("{column}: must not be empty"))
    }
}

/// The clients rows are sent with.
struct Clients {
    accounts: AccountsClient,
    revenue: RevenueClient,
}

/// What one row did.
enum Outcome {
    Created,
    Unchanged,
    Recorded,
}

/// Reads a CSV file: the header is checked against `kind`'s columns, then
/// every data row is returned with its line; a row the CSV parser rejects
/// (a wrong number of fields) becomes a row error.
fn read_rows(kind: Kind, input: impl Read) -> anyhow::Result<(Vec<Row>, Vec<RowError>)> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers: Vec<String> = reader
        .headers()
        .context("reading the header row")?
        .iter()
        .map(str::to_ascii_lowercase)
        .collect();
    let (required, optional) = kind.columns();
    for column in &headers {
        let attribute = kind == Kind::Accounts && column.starts_with(ATTRIBUTE_PREFIX);
        if !attribute
            && !required.contains(&column.as_str())
            && !optional.contains(&column.as_str())
        {
            anyhow::bail!(
                "line 1: unknown column {column:?}; the columns are {} (required) and {}",
                required.join(", "),
                optional.join(", ")
            );
        }
    }
    for column in required {
        if !headers.iter().any(|h| h == column) {
            anyhow::bail!("line 1: the required column {column:?} is missing");
        }
    }
    if kind != Kind::Accounts
        && !headers
            .iter()
            .any(|h| h == "account_external_id" || h == "account_id")
    {
        anyhow::bail!("line 1: a column account_external_id or account_id is required");
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        match record {
            Ok(record) => {
                let line = record.position().map_or(0, csv::Position::line);
                let cells = headers
                    .iter()
                    .cloned()
                    .zip(record.iter().map(str::to_owned))
                    .collect();
                rows.push(Row { line, cells });
            }
            Err(e) => errors.push(RowError {
                line: e.position().map_or(0, csv::Position::line),
                message: match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => format!("expected {expected_len} fields like the header, found {len}"),
                    _ => e.to_string(),
                },
            }),
        }
    }
    Ok((rows, errors))
}

/// The prefix of attribute columns: `attr.plan_family`.
const ATTRIBUTE_PREFIX: &str = "attr.";

/// The declared type of each attribute a column of `rows` names; fails when
/// one is not declared.
async fn attribute_types(
    client: &mut AccountsClient,
    rows: &[Row],
) -> anyhow::Result<HashMap<String, AttributeType>> {
    let Some(first) = rows.first() else {
        return Ok(HashMap::new());
    };
    let mut columns: Vec<&str> = first
        .cells
        .keys()
        .filter_map(|c| c.strip_prefix(ATTRIBUTE_PREFIX))
        .collect();
    if columns.is_empty() {
        return Ok(HashMap::new());
    }
    columns.sort_unstable();
    let declared: HashMap<String, AttributeType> = client
        .list_attribute_declarations(ListAttributeDeclarationsRequest {})
        .await
        .context("reading the attribute declarations")?
        .into_inner()
        .declarations
        .into_iter()
        .map(|d| {
            (
                d.name,
                AttributeType::try_from(d.r#type).unwrap_or_default(),
            )
        })
        .collect();
    for name in columns {
        if !declared.contains_key(name) {
            anyhow::bail!(
                "line 1: column {ATTRIBUTE_PREFIX}{name}: {name:?} is not a declared attribute"
            );
        }
    }
    Ok(declared)
}

/// The attribute values of a row's non-empty `attr.*` cells, by the
/// declared types.
fn attribute_values(
    row: &Row,
    types: &HashMap<String, AttributeType>,
) -> Result<HashMap<String, AttributeValue>, String> {
    let mut values = HashMap::new();
    for (column, cell) in &row.cells {
        let Some(name) = column.strip_prefix(ATTRIBUTE_PREFIX) else {
            continue;
        };
        if cell.is_empty() {
            continue;
        }
        let kind = match types.get(name).copied().unwrap_or_default() {
            AttributeType::Number => ValueKind::NumberValue(
                cell.parse()
                    .map_err(|_| format!("{column}: {cell:?} is not a number"))?,
            ),
            AttributeType::Bool => ValueKind::BoolValue(
                parse_bool(cell)
                    .ok_or_else(|| format!("{column}: {cell:?} is not true or false"))?,
            ),
            _ => ValueKind::StringValue(cell.clone()),
        };
        values.insert(name.to_owned(), AttributeValue { kind: Some(kind) });
    }
    Ok(values)
}

/// Imports `input` (a CSV file of `kind`) into the services at `target`,
/// advancing `progress` by one per row. Fails as a whole only when the file
/// cannot be read (a bad header) or the accounts cannot be listed.
pub async fn import(
    target: &Target,
    kind: Kind,
    input: impl Read,
    progress: &ProgressBar,
) -> anyhow::Result<ImportReport> {
    let (rows, mut errors) = read_rows(kind, input)?;
    let mut report = ImportReport {
        rows: rows.len() + errors.len(),
        ..ImportReport::default()
    };
    progress.set_length(report.rows as u64);
    progress.inc(errors.len() as u64);
    let directory = if kind != Kind::Accounts && rows.iter().any(|r| r.get("account_id").is_none())
    {
        progress.set_message("reading the account directory");
        account_directory(target).await?
    } else {
        HashMap::new()
    };
    progress.set_message(match kind {
        Kind::Accounts => "accounts",
        Kind::Subscriptions => "subscriptions",
        Kind::Transitions => "transitions",
        Kind::SubscriptionEvents => "subscription events",
        Kind::Invoices => "invoices",
    });
    if matches!(
        kind,
        Kind::Transitions | Kind::SubscriptionEvents | Kind::Invoices
    ) {
        let streamed = crate::import_stream::send(target, kind, &directory, rows, progress).await?;
        errors.extend(streamed.errors);
        report.created = streamed.recorded;
        report.unchanged = streamed.duplicates;
        errors.sort_by_key(|e| e.line);
        report.errors = errors;
        progress.finish_and_clear();
        return Ok(report);
    }
    let directory = &directory;
    // One channel per service, shared by every row (clients are cheap clones).
    let clients = &Clients {
        accounts: target.accounts()?,
        revenue: target.revenue()?,
    };
    let types = &if kind == Kind::Accounts {
        attribute_types(&mut clients.accounts.clone(), &rows).await?
    } else {
        HashMap::new()
    };
    let outcomes: Vec<(u64, Result<Outcome, String>)> = futures::stream::iter(rows)
        .map(|row| async move {
            let outcome = match kind {
                Kind::Accounts => account_row(clients.accounts.clone(), &row, types).await,
                Kind::Subscriptions => {
                    subscription_row(clients.revenue.clone(), directory, &row).await
                }
                _ => Err("this kind of file is imported over a stream".to_owned()),
            };
            progress.inc(1);
            (row.line, outcome)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (line, outcome) in outcomes {
        match outcome {
            Ok(Outcome::Created) => report.created += 1,
            Ok(Outcome::Unchanged) => report.unchanged += 1,
            Ok(Outcome::Recorded) => report.recorded += 1,
            Err(message) => errors.push(RowError { line, message }),
        }
    }
    errors.sort_by_key(|e| e.line);
    report.errors = errors;
    progress.finish_and_clear();
    Ok(report)
}

/// Every account's id by (source, external id), read page by page.
async fn account_directory(target: &Target) -> anyhow::Result<HashMap<(String, String), String>> {
    let mut client = target.accounts()?;
    let mut directory = HashMap::new();
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
            .await
            .map_err(|s| anyhow::anyhow!("listing accounts: {}", describe(&s)))?
            .into_inner();
        for account in page.accounts {
            for id in account.external_ids {
                directory.insert((id.source, id.external_id), account.id.clone());
            }
        }
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(directory);
        }
    }
}

/// The account a subscription or transition row refers to.
pub(crate) fn account_of<'a>(
    directory: &'a HashMap<(String, String), String>,
    row: &'a Row,
) -> Result<&'a str, String> {
    if let Some(id) = row.get("account_id") {
        return Ok(id);
    }
    let external = row
        .get("account_external_id")
        .ok_or_else(|| "account_external_id: must not be empty (or give account_id)".to_owned())?;
    let source = row.get("account_source").unwrap_or(DEFAULT_SOURCE);
    directory
        .get(&(source.to_owned(), external.to_owned()))
        .map(String::as_str)
        .ok_or_else(|| format!("account_external_id: no account has the {source} id {external:?}"))
}

/// Parses a segment name: `smb`, `mid_market` (or `mid-market`), `enterprise`.
pub fn parse_segment(value: &str) -> Option<Segment> {
    match value
        .to_ascii_lowercase()
        .replace('-', "_")
        .trim_start_matches("segment_")
    {
        "smb" => Some(Segment::Smb),
        "mid_market" | "midmarket" => Some(Segment::MidMarket),
        "enterprise" => Some(Segment::Enterprise),
        _ => None,
    }
}

/// Parses a stage name such as `selection` or `STAGE_SELECTION`.
pub fn parse_stage(value: &str) -> Option<Stage> {
    let name = value.to_ascii_uppercase();
    let name = if name.starts_with("STAGE_") {
        name
    } else {
        format!("STAGE_{name}")
    };
    Stage::from_str_name(&name).filter(|s| *s != Stage::Unspecified)
}

/// Parses `YYYY-MM-DD` (midnight UTC) or an RFC 3339 time.
pub fn parse_time(value: &str) -> Option<Timestamp> {
    let seconds = if let Ok(date) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0)?.and_utc().timestamp()
    } else {
        chrono::DateTime::parse_from_rfc3339(value)
            .ok()?
            .timestamp()
    };
    Some(Timestamp { seconds, nanos: 0 })
}

/// Parses a decimal amount in major units into minor units with `exponent`
/// digits: ("49.5", 2) -> 4950. More fractional digits than the currency
/// has are refused rather than rounded.
pub fn parse_amount(value: &str, exponent: u32) -> Option<i64> {
    let value = value.replace(',', "");
    let (whole, fraction) = value.split_once('.').unwrap_or((&value, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !fraction.chars().all(|c| c.is_ascii_digit())
        || fraction.len() > exponent as usize
    {
        return None;
    }
    let scale = 10i64.checked_pow(exponent)?;
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let padded = format!("{fraction:0<width$}", width = exponent as usize);
    let fraction: i64 = if padded.is_empty() {
        0
    } else {
        padded.parse().ok()?
    };
    whole.checked_mul(scale)?.checked_add(fraction)
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" => Some(true),
        "false" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// The tags of a `tags` cell: `;`-separated, blanks between separators
/// dropped (the server normalises and checks each one).
fn split_tags(cell: Option<&str>) -> Vec<String> {
    cell.unwrap_or_default()
        .split(';')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn account_row(
    mut client: AccountsClient,
    row: &Row,
    types: &HashMap<String, AttributeType>,
) -> Result<Outcome, String> {
    let attributes = attribute_values(row, types)?;
    let segment_text = row.required("segment")?;
    let segment = parse_segment(segment_text).ok_or_else(|| {
        format!("segment: unknown segment {segment_text:?} (smb, mid_market or enterprise)")
    })?;
    let strategic = match row.get("strategic") {
        None => false,
        Some(v) => parse_bool(v).ok_or_else(|| format!("strategic: {v:?} is not true or false"))?,
    };
    let external_id = ExternalId {
        source: row.get("source").unwrap_or(DEFAULT_SOURCE).to_owned(),
        external_id: row.required("external_id")?.to_owned(),
    };
    let response = client
        .upsert_account_by_external_id(UpsertAccountByExternalIdRequest {
            external_id: Some(external_id.clone()),
            account: Some(Account {
                name: row.get("name").unwrap_or_default().to_owned(),
                segment: segment as i32,
                industry: row.get("industry").unwrap_or_default().to_owned(),
                owner: row.get("owner").unwrap_or_default().to_owned(),
                csm: row.get("csm").unwrap_or_default().to_owned(),
                strategic,
                external_ids: vec![external_id],
                tags: split_tags(row.get("tags")),
                attributes,
                ..Account::default()
            }),
            // No idempotency key: the upsert by external id is the key, and
            // its answer says truthfully whether this call created the account
            // (a replayed key would repeat the first answer, "created").
            idempotency_key: String::new(),
            source_updated_at: None,
        })
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    Ok(if response.created {
        Outcome::Created
    } else {
        Outcome::Unchanged
    })
}

pub(crate) fn optional_time(row: &Row, column: &str) -> Result<Option<Timestamp>, String> {
    row.get(column)
        .map(|v| {
            parse_time(v).ok_or_else(|| {
                format!("{column}: {v:?} is not a date (YYYY-MM-DD) or an RFC 3339 time")
            })
        })
        .transpose()
}

/// The terms of a row: `plan`, `quantity`, `unit_price` in `currency`
/// (default USD) and `discount_percent`.
pub(crate) fn terms_of(row: &Row) -> Result<Terms, String> {
    let currency = row.get("currency").unwrap_or("USD").to_ascii_uppercase();
    let exponent = bowtie_revenue::domain::minor_exponent(&currency)
        .ok_or_else(|| format!("currency: unknown currency {currency:?}"))?;
    let price_text = row.required("unit_price")?;
    let unit_price = parse_amount(price_text, exponent).ok_or_else(|| {
        format!("unit_price: {price_text:?} is not an amount in {currency} (e.g. 49.00)")
    })?;
    let quantity_text = row.required("quantity")?;
    let quantity: i64 = quantity_text
        .parse()
        .map_err(|_| format!("quantity: {quantity_text:?} is not a whole number"))?;
    let discount = match row.get("discount_percent") {
        None => 0,
        Some(v) => parse_amount(v, 2)
            .and_then(|bp| i32::try_from(bp).ok())
            .ok_or_else(|| format!("discount_percent: {v:?} is not a percentage (e.g. 12.5)"))?,
    };
    Ok(Terms {
        plan: row.get("plan").unwrap_or_default().to_owned(),
        quantity,
        unit_price: Some(Money {
            currency_code: currency,
            minor_units: unit_price,
        }),
        discount_basis_points: discount,
    })
}

/// The `billing_interval` of a row: month, quarter or year.
pub(crate) fn interval_of(row: &Row) -> Result<BillingInterval, String> {
    let interval_text = row.required("billing_interval")?;
    match interval_text.to_ascii_lowercase().as_str() {
        "month" | "monthly" => Ok(BillingInterval::Month),
        "quarter" | "quarterly" => Ok(BillingInterval::Quarter),
        "year" | "yearly" | "annual" => Ok(BillingInterval::Year),
        _ => Err(format!(
            "billing_interval: {interval_text:?} is not month, quarter or year"
        )),
    }
}

/// The `cancel_kind` of a row: voluntary (the default) or involuntary.
pub(crate) fn cancel_kind_of(row: &Row) -> Result<CancellationKind, String> {
    match row
        .get("cancel_kind")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("voluntary") => Ok(CancellationKind::Voluntary),
        Some("involuntary") => Ok(CancellationKind::Involuntary),
        Some(other) => Err(format!(
            "cancel_kind: {other:?} is not voluntary or involuntary"
        )),
    }
}

async fn subscription_row(
    mut client: RevenueClient,
    directory: &HashMap<(String, String), String>,
    row: &Row,
) -> Result<Outcome, String> {
    let account_id = account_of(directory, row)?;
    let external = row.required("subscription_id")?;
    let terms = terms_of(row)?;
    let interval = interval_of(row)?;
    let start = optional_time(row, "start_date")?
        .ok_or_else(|| "start_date: must not be empty".to_owned())?;
    let cancelled_at = optional_time(row, "cancelled_at")?;
    let cancel_kind = cancel_kind_of(row)?;
    let key = {
        let mut hash = Sha256::new();
        hash.update(external.as_bytes());
        format!("csv-subscription-{}", &hex::encode(hash.finalize())[..32])
    };
    let subscription = client
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                account_id: account_id.to_owned(),
                billing_interval: interval as i32,
                terms: Some(terms),
                start_at: Some(start),
                trial_end_at: optional_time(row, "trial_end_date")?,
                term_end_at: optional_time(row, "term_end_date")?,
                ..Subscription::default()
            }),
            idempotency_key: key.clone(),
        })
        .await
        .map_err(|s| describe(&s))?
        .into_inner()
        .subscription
        .ok_or_else(|| "CreateSubscription answered without a subscription".to_owned())?;
    if let Some(at) = cancelled_at {
        client
            .cancel_subscription(CancelSubscriptionRequest {
                id: subscription.id.clone(),
                cancellation: Some(Cancellation {
                    effective_at: Some(at),
                    kind: cancel_kind as i32,
                    reason_code: row.get("cancel_reason").unwrap_or_default().to_owned(),
                }),
                idempotency_key: format!("{key}-cancel"),
                expected_version: None,
            })
            .await
            .map_err(|s| format!("{} (the subscription itself was recorded)", describe(&s)))?;
    }
    // The service answers a repeat with the first result, so whether this
    // row was new or already there cannot be told apart; either way it is
    // recorded exactly once.
    Ok(Outcome::Recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_in_minor_units_without_rounding() {
        assert_eq!(parse_amount("49.00", 2), Some(4900));
        assert_eq!(parse_amount("49.5", 2), Some(4950));
        assert_eq!(parse_amount("1,200", 2), Some(120_000));
        assert_eq!(parse_amount(".5", 2), Some(50));
        assert_eq!(parse_amount("1200", 0), Some(1200));
        // Three decimals do not fit cents; a JPY amount has none.
        assert_eq!(parse_amount("1.005", 2), None);
        assert_eq!(parse_amount("1.5", 0), None);
        assert_eq!(parse_amount("-3", 2), None);
        assert_eq!(parse_amount("abc", 2), None);
        assert_eq!(parse_amount("", 2), None);
    }

    #[test]
    fn segments_and_stages_accept_plain_and_enum_names() {
        assert_eq!(parse_segment("SMB"), Some(Segment::Smb));
        assert_eq!(parse_segment("mid-market"), Some(Segment::MidMarket));
        assert_eq!(
            parse_segment("SEGMENT_ENTERPRISE"),
            Some(Segment::Enterprise)
        );
        assert_eq!(parse_segment("gold"), None);
        assert_eq!(parse_stage("selection"), Some(Stage::Selection));
        assert_eq!(parse_stage("STAGE_LOST"), Some(Stage::Lost));
        assert_eq!(parse_stage("unspecified"), None);
        assert_eq!(parse_stage("won"), None);
    }

    #[test]
    fn dates_are_midnight_utc_and_times_keep_their_offset() {
        // 2026-03-02T00:00:00Z.
        assert_eq!(
            parse_time("2026-03-02").map(|t| t.seconds),
            Some(1_772_409_600)
        );
        // 09:00 at +01:00 is 08:00Z.
        assert_eq!(
            parse_time("2026-03-02T09:00:00+01:00").map(|t| t.seconds),
            Some(1_772_409_600 + 8 * 3600)
        );
        assert_eq!(parse_time("02/03/2026"), None);
    }

    #[test]
    fn a_tags_cell_splits_on_semicolons_and_drops_blanks() {
        assert_eq!(
            split_tags(Some("pilot; EU ;;beta")),
            vec!["pilot", "EU", "beta"]
        );
        assert!(split_tags(None).is_empty());
    }

    #[test]
    fn a_header_with_an_unknown_column_is_refused() {
        let csv = "external_id,name,segmnt\nx,Acme,smb\n";
        let error = read_rows(Kind::Accounts, csv.as_bytes()).err();
        assert!(error.is_some_and(|e| e.to_string().contains("segmnt")));
    }

    #[test]
    fn rows_carry_their_line_numbers_and_ragged_rows_are_errors() -> anyhow::Result<()> {
        let csv = "external_id,name,segment\na,Acme,smb\nb,Globex\n\"c\",\"Multi\nline\",enterprise\nd,Initech,smb\n";
        let (rows, errors) = read_rows(Kind::Accounts, csv.as_bytes())?;
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        // Line 3 has two fields; the quoted name spans lines 4 and 5.
        assert_eq!(lines, vec![2, 4, 6]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 3);
        assert!(errors[0].message.contains("expected 3 fields"));
        Ok(())
    }
}
