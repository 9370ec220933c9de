//! The `bowtie` command.
//!
//! - `bowtie dev` runs every service in one process on SQLite files under
//!   `./data`, with documented development API keys: nothing to install.
//! - `bowtie serve <service>` runs one service alone, as in production
//!   (PostgreSQL by URL, keys from configuration).
//! - `bowtie migrate <service>` applies a service's migrations and exits.
//! - `bowtie dev --demo` also seeds the demo company once the services run.
//! - `bowtie keys generate` prints a new API key and the hash to configure.
//! - `bowtie import` loads CSV files, `bowtie report` prints reports.
//!
//! The work is in the `bowtie` library (demo, import, report, client); this
//! file only parses the command line.
//!
//! Output: stdout is for people (the banner of `bowtie dev`, keys, reports),
//! stderr for logs. `bowtie dev` logs at `warn` (its banner says what a
//! person needs), every other command at the configured
//! `telemetry.log_filter`; `RUST_LOG` or `--log <filter>` asks for more.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bowtie_runtime::auth::{ApiKeys, generate_key, hash_key};
use bowtie_runtime::config::{ApiKeySettings, Settings};
use bowtie_runtime::shutdown::Shutdown;
use clap::{Parser, Subcommand, ValueEnum};

/// jemalloc: the binaries allocate on many threads at once (request
/// handlers, SQLite connections, scoring), where glibc's allocator spends
/// far more time (see docs/benchmarks.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Development key with every scope; printed by `bowtie dev`, documented in docs/api/README.md.
const DEV_ADMIN_KEY: &str = "bowtie-dev-admin";
/// Development key that may only read.
const DEV_READ_KEY: &str = "bowtie-dev-read";

#[derive(Debug, Parser)]
#[command(
    name = "bowtie",
    version,
    about = "Revenue along the bowtie funnel, as gRPC services"
)]
struct Cli {
    /// Configuration file (default: ./bowtie.toml when it exists).
    #[arg(long, global = true, env = "BOWTIE_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter (tracing `EnvFilter` directives, e.g. `info` or
    /// `warn,bowtie_scoring=debug`); wins over `RUST_LOG` and the configured
    /// `telemetry.log_filter`. Logs go to stderr.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process on SQLite under the data directory.
    Dev {
        /// Where the SQLite files live.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Seed the demo company (a synthetic SaaS business) once the
        /// services run; a data directory that already holds it is left as is.
        #[arg(long)]
        demo: bool,
        /// Random seed of the demo company.
        #[arg(long, default_value_t = 42, requires = "demo")]
        demo_seed: u64,
        /// Number of accounts of the demo company.
        #[arg(long, default_value_t = 2000, requires = "demo")]
        demo_accounts: usize,
    },
    /// Run one service alone (production mode).
    Serve {
        /// The service.
        service: Service,
    },
    /// Apply a service's database migrations and exit.
    Migrate {
        /// The service.
        service: Service,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Load a CSV file (with a header row) into the services; see docs/cli.md
    /// for the columns. `import stripe` takes JSON files of Stripe list
    /// responses (docs/connectors.md). Exits non-zero when any row failed.
    Import {
        /// What the file holds.
        what: ImportKind,
        /// The CSV file (`stripe`: one or more JSON files).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        connection: Connection,
        /// The accounts service, asked for the ids of `account_external_id`
        /// (default: `[peers] accounts`).
        #[arg(long)]
        accounts_addr: Option<String>,
    },
    /// Stream every row of accounts, subscriptions, movements, transitions
    /// or health to stdout as JSON lines, each with the cursor that
    /// resumes after it.
    Export {
        /// What to export.
        what: bowtie::export::Kind,
        /// Continue after the row this cursor came with (the `cursor` of the
        /// last line read); default from the first row.
        #[arg(long, default_value = "")]
        cursor: String,
        /// Rows the service reads per batch, 1 to 5000 (0: 1000).
        #[arg(long, default_value_t = 0)]
        batch_size: i32,
        #[command(flatten)]
        connection: Connection,
    },
    /// Print a report as a table, CSV or JSON.
    Report {
        /// Which report.
        what: ReportKind,
        /// `table` (default), `csv` (RFC 4180, the gateway's CSV columns) or
        /// `json` (the gateway's JSON document).
        #[arg(long, value_enum, default_value_t = bowtie::report::Format::Table)]
        format: bowtie::report::Format,
        /// `YYYY-MM`, `YYYY-MM..YYYY-MM`, `YYYY`, `YYYY-Qn` or `Nm` (the last
        /// N months); default the last 12 months.
        #[arg(long)]
        period: Option<String>,
        /// Only one segment: smb, mid_market or enterprise.
        #[arg(long)]
        segment: Option<String>,
        /// At most this many accounts (at-risk) or CTAs (work).
        #[arg(long, default_value_t = 25)]
        limit: usize,
        /// Whose work (an owner, as CTAs name it); default the person with
        /// the most open CTAs.
        #[arg(long)]
        owner: Option<String>,
        /// Books by `csm` (default) or `owner` (book).
        #[arg(long, value_enum, default_value_t = BookBy::Csm)]
        by: BookBy,
        /// Only this person's book (book).
        #[arg(long)]
        person: Option<String>,
        /// Also split each author's weeks by the account's owner (touches).
        #[arg(long)]
        by_owner: bool,
        /// Only the caller's book (at-risk, book): the accounts whose CSM or
        /// owner it is, a manager's also its teams'. Needs a key given a
        /// role or a token; a key with scopes only has no book.
        #[arg(long)]
        mine: bool,
        /// Only one value of one dimension (mrr, retention):
        /// `<dimension>=<value>`, the dimension one of segment, plan, owner,
        /// csm, tag or `attr.<name>` (e.g. `plan=pro`, `attr.region=eu`).
        #[arg(long)]
        cut: Option<String>,
        /// Break the report down by one dimension (mrr, retention): segment,
        /// plan, owner, csm, tag or `attr.<name>`.
        #[arg(long)]
        group_by: Option<String>,
        #[command(flatten)]
        connection: Connection,
        /// The accounts service, asked for the names of at-risk accounts
        /// (default: `[peers] accounts`).
        #[arg(long)]
        accounts_addr: Option<String>,
    },
}

/// How `import` and `report` reach a service.
#[derive(Debug, clap::Args)]
struct Connection {
    /// The service's address, e.g. 127.0.0.1:50053 (default: from the
    /// `[peers]` configuration).
    #[arg(long)]
    addr: Option<String>,
    /// API key (write scope to import, read to report).
    #[arg(long, env = "BOWTIE_API_KEY", hide_env_values = true)]
    key: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ImportKind {
    /// Accounts, upserted by external id (accounts service).
    Accounts,
    /// Subscriptions with an optional cancellation (revenue service).
    Subscriptions,
    /// Funnel transitions, streamed in batches (funnel service).
    Transitions,
    /// Subscription events, one row per start, change or cancel, streamed in
    /// batches (revenue service).
    SubscriptionEvents,
    /// Invoices, streamed in batches (revenue service).
    Invoices,
    /// Stripe customers, subscriptions and invoices (JSON list responses).
    Stripe,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportKind {
    /// Volume, conversion, velocity and drop-offs per stage (funnel).
    Funnel,
    /// Which stage to work on first: the ARR a point of conversion or 10%
    /// less time in each stage adds over the next 12 months, from the 12
    /// whole months before this one (with `--period`, the 12 months up to
    /// its last) (funnel).
    Sensitivity,
    /// The MRR waterfall month by month (revenue).
    Mrr,
    /// Churn and contraction by cancellation reason and kind, month by month (revenue).
    Churn,
    /// Logo retention, GRR and NRR by segment and owner, and the cohort grid (revenue).
    Retention,
    /// Accounts in the red or at high churn risk, and why (scoring).
    AtRisk,
    /// A person's open calls to action, earliest due first (success; `--owner`).
    Work,
    /// Every playbook's CTAs, outcomes and effect on churn (success).
    Playbooks,
    /// Each CSM's (or owner's) book of business (success).
    Book,
    /// Activities logged per author and ISO week (success).
    Touches,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BookBy {
    /// The account's customer success manager.
    Csm,
    /// The account's owner (who closed the deal).
    Owner,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a new random key and the configuration entry holding its hash.
    Generate {
        /// Name of the key's holder, shown in logs.
        #[arg(long, default_value = "client")]
        name: String,
        /// Scope: read, write or admin.
        #[arg(long, default_value = "read")]
        scope: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Service {
    /// The accounts service.
    Accounts,
    /// The funnel service.
    Funnel,
    /// The revenue service.
    Revenue,
    /// The scoring service.
    Scoring,
    /// The success service.
    Success,
    /// The HTTP/JSON gateway and dashboard (no database of its own).
    Gateway,
}

/// Every service, in start order (each service's peers start before it).
const ALL_SERVICES: &[Service] = &[
    Service::Accounts,
    Service::Revenue,
    Service::Funnel,
    Service::Scoring,
    Service::Success,
];

fn main() -> std::process::ExitCode {
    match main_inner() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main_inner() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Keys {
        command: KeysCommand::Generate { name, scope },
    } = &cli.command
    {
        let (key, hash) = generate_key();
        println!("key (give it to the client, store it nowhere else): {key}");
        println!();
        println!("[[auth.keys]]\nname = {name:?}\nhash = {hash:?}\nscopes = [{scope:?}]");
        return Ok(());
    }
    let settings = Settings::load(cli.config.as_deref()).context("loading configuration")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli.command, settings, cli.log))
}

/// Installs logging for a command: `--log`, else `RUST_LOG`, else the
/// command's default (see [`bowtie_runtime::telemetry::log_filter`]).
fn telemetry(
    name: &str,
    settings: &Settings,
    log: Option<&str>,
    default: &str,
) -> anyhow::Result<bowtie_runtime::telemetry::TelemetryGuard> {
    let env = std::env::var("RUST_LOG").ok();
    let filter = bowtie_runtime::telemetry::log_filter(log, env.as_deref(), default);
    bowtie_runtime::telemetry::init(name, &settings.telemetry, &filter)
}

/// The log filter of `bowtie dev` when neither `--log` nor `RUST_LOG` asks:
/// `warn`, so the banner is what a person reads, unless the configuration
/// sets a `telemetry.log_filter` of its own.
fn dev_log_filter(settings: &Settings) -> String {
    let built_in = Settings::defaults().map(|d| d.telemetry.log_filter);
    if built_in.is_ok_and(|f| f != settings.telemetry.log_filter) {
        settings.telemetry.log_filter.clone()
    } else {
        "warn".to_owned()
    }
}

async fn run(command: Command, mut settings: Settings, log: Option<String>) -> anyhow::Result<()> {
    let log = log.as_deref();
    match command {
        Command::Dev {
            data_dir,
            demo,
            demo_seed,
            demo_accounts,
        } => {
            let _telemetry = telemetry("bowtie", &settings, log, &dev_log_filter(&settings))?;
            let mut banner = Banner::default();
            dev(&mut settings, &data_dir, &mut banner);
            if demo {
                demo_connectors(&mut settings, &mut banner);
            }
            let demo = demo.then(|| Demo {
                key: demo_key(&mut settings),
                seed: demo_seed,
                accounts: demo_accounts,
            });
            serve(settings, ALL_SERVICES, Some(banner), demo).await
        }
        Command::Serve { service } => {
            let _telemetry = telemetry(
                &format!("bowtie-{}", service_name(service)),
                &settings,
                log,
                &settings.telemetry.log_filter,
            )?;
            // The gateway checks no key itself: the services behind it do.
            if settings.auth.keys.is_empty() && service != Service::Gateway {
                tracing::warn!(
                    "no API keys configured: every call will be refused (see `bowtie keys generate`)"
                );
            }
            serve(settings, &[service], None, None).await
        }
        Command::Migrate { service } => {
            let _telemetry = telemetry(
                "bowtie-migrate",
                &settings,
                log,
                &settings.telemetry.log_filter,
            )?;
            use bowtie_runtime::bootstrap::migrate;
            match service {
                Service::Accounts => {
                    migrate::<bowtie_accounts::storage::Migrator>(&settings.accounts.database)
                        .await?;
                }
                Service::Funnel => {
                    migrate::<bowtie_funnel::storage::Migrator>(&settings.funnel.database).await?;
                }
                Service::Revenue => {
                    migrate::<bowtie_revenue::storage::Migrator>(&settings.revenue.database)
                        .await?;
                }
                Service::Scoring => {
                    migrate::<bowtie_scoring::storage::Migrator>(&settings.scoring.database)
                        .await?;
                }
                Service::Success => {
                    migrate::<bowtie_success::storage::Migrator>(&settings.success.database)
                        .await?;
                }
                Service::Gateway => {}
            }
            tracing::info!(service = service_name(service), "migrations applied");
            Ok(())
        }
        Command::Keys { .. } => Ok(()),
        Command::Import {
            what: ImportKind::Stripe,
            files,
            connection,
            accounts_addr,
        } => import_stripe(settings, &files, connection, accounts_addr).await,
        Command::Import {
            what,
            files,
            connection,
            accounts_addr,
        } => {
            let [file] = files.as_slice() else {
                anyhow::bail!("a CSV import takes one file");
            };
            import(&settings, what, file, connection, accounts_addr).await
        }
        Command::Report {
            what,
            format,
            period,
            segment,
            limit,
            owner,
            by,
            person,
            by_owner,
            mine,
            cut,
            group_by,
            connection,
            accounts_addr,
        } => {
            let query = ReportQuery {
                what,
                format,
                period,
                segment,
                limit,
                owner,
                by,
                person,
                by_owner,
                mine,
                cut,
                group_by,
            };
            report(&settings, query, connection, accounts_addr).await
        }
        Command::Export {
            what,
            cursor,
            batch_size,
            connection,
        } => {
            use bowtie::client::Target;
            let mut target = Target::new(&settings.peers, &connection.key);
            if let Some(addr) = connection.addr {
                target = target.with_address(what.service(), &addr);
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let rows = bowtie::export::export(&target, what, &cursor, batch_size, &mut out).await?;
            tracing::info!(rows, "export done");
            Ok(())
        }
    }
}

async fn import(
    settings: &Settings,
    what: ImportKind,
    file: &std::path::Path,
    connection: Connection,
    accounts_addr: Option<String>,
) -> anyhow::Result<()> {
    use bowtie::client::{Service as Svc, Target};
    use bowtie::import::Kind;
    let (kind, service) = match what {
        ImportKind::Accounts => (Kind::Accounts, Svc::Accounts),
        ImportKind::Subscriptions => (Kind::Subscriptions, Svc::Revenue),
        ImportKind::Transitions => (Kind::Transitions, Svc::Funnel),
        ImportKind::SubscriptionEvents => (Kind::SubscriptionEvents, Svc::Revenue),
        ImportKind::Invoices => (Kind::Invoices, Svc::Revenue),
        ImportKind::Stripe => anyhow::bail!("import stripe reads JSON files"),
    };
    let mut target = Target::new(&settings.peers, &connection.key);
    if let Some(addr) = accounts_addr {
        target = target.with_address(Svc::Accounts, &addr);
    }
    if let Some(addr) = connection.addr {
        target = target.with_address(service, &addr);
    }
    let input = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let progress = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} rows, {per_sec}, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = bowtie::import::import(&target, kind, std::io::BufReader::new(input), &progress)
        .await
        .with_context(|| format!("importing {}", file.display()))?;
    for error in &report.errors {
        println!("line {}: {}", error.line, error.message);
    }
    println!("{}: {}", file.display(), report.summary());
    anyhow::ensure!(
        report.errors.is_empty(),
        "{} of {} rows failed",
        report.errors.len(),
        report.rows
    );
    Ok(())
}

/// `bowtie import stripe FILE...`: the backfill, with progress, each bad
/// object named by its id and a summary.
async fn import_stripe(
    mut settings: Settings,
    files: &[PathBuf],
    connection: Connection,
    accounts_addr: Option<String>,
) -> anyhow::Result<()> {
    let uri = |a: String| {
        if a.contains("://") {
            a
        } else {
            format!("http://{a}")
        }
    };
    if let Some(addr) = connection.addr {
        settings.peers.revenue = uri(addr);
    }
    if let Some(addr) = accounts_addr {
        settings.peers.accounts = uri(addr);
    }
    let progress = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report =
        bowtie::stripe_import::import(&settings, &connection.key, files, &progress).await?;
    for (id, error) in &report.errors {
        println!("{id}: {error}");
    }
    println!("stripe: {}", report.summary());
    anyhow::ensure!(
        report.errors.is_empty(),
        "{} objects failed",
        report.errors.len()
    );
    Ok(())
}

/// What `bowtie report` was asked for.
struct ReportQuery {
    what: ReportKind,
    format: bowtie::report::Format,
    period: Option<String>,
    segment: Option<String>,
    limit: usize,
    owner: Option<String>,
    by: BookBy,
    person: Option<String>,
    by_owner: bool,
    mine: bool,
    cut: Option<String>,
    group_by: Option<String>,
}

async fn report(
    settings: &Settings,
    query: ReportQuery,
    connection: Connection,
    accounts_addr: Option<String>,
) -> anyhow::Result<()> {
    let ReportQuery {
        what,
        format,
        period,
        segment,
        limit,
        owner,
        by,
        person,
        by_owner,
        mine,
        cut,
        group_by,
    } = query;
    use bowtie::client::{Service as Svc, Target};
    let now = chrono::Utc::now();
    let range = bowtie::report::parse_period(period.as_deref(), now.date_naive())?;
    let segment = bowtie::report::parse_segment(segment.as_deref())?;
    let cuts = bowtie::report::parse_cuts(cut.as_deref(), group_by.as_deref())?;
    if cuts != bowtie::report::Cuts::none()
        && !matches!(what, ReportKind::Mrr | ReportKind::Retention)
    {
        anyhow::bail!("--cut and --group-by apply to the mrr and retention reports");
    }
    let service = match what {
        ReportKind::Funnel | ReportKind::Sensitivity => Svc::Funnel,
        ReportKind::Mrr | ReportKind::Churn | ReportKind::Retention => Svc::Revenue,
        ReportKind::AtRisk => Svc::Scoring,
        ReportKind::Work | ReportKind::Playbooks | ReportKind::Book | ReportKind::Touches => {
            Svc::Success
        }
    };
    let mut target = Target::new(&settings.peers, &connection.key);
    if let Some(addr) = accounts_addr {
        target = target.with_address(Svc::Accounts, &addr);
    }
    if let Some(addr) = connection.addr {
        target = target.with_address(service, &addr);
    }
    let text = match what {
        ReportKind::Funnel => bowtie::report::funnel(&target, range, segment, format).await?,
        ReportKind::Sensitivity => {
            let as_of = period.is_some().then(|| range.end());
            bowtie::report::sensitivity(&target, as_of, segment, format).await?
        }
        ReportKind::Mrr => bowtie::report::mrr(&target, range, segment, &cuts, format).await?,
        ReportKind::Churn => bowtie::report::churn(&target, range, segment, format).await?,
        ReportKind::Retention => {
            bowtie::report::retention(&target, range, segment, &cuts, now.timestamp(), format)
                .await?
        }
        ReportKind::AtRisk => {
            bowtie::report::at_risk(&target, segment, limit, mine, format).await?
        }
        ReportKind::Work => bowtie::report::work(&target, owner.as_deref(), limit, format).await?,
        ReportKind::Playbooks => bowtie::report::playbooks(&target, range, format).await?,
        ReportKind::Book => {
            let by_owner = by == BookBy::Owner;
            let person = person.as_deref();
            bowtie::report::book(&target, by_owner, person, mine, range, format).await?
        }
        ReportKind::Touches => {
            bowtie::report::touches(&target, range, owner.as_deref(), by_owner, format).await?
        }
    };
    print!("{text}");
    Ok(())
}

fn service_name(service: Service) -> &'static str {
    match service {
        Service::Accounts => "accounts",
        Service::Funnel => "funnel",
        Service::Revenue => "revenue",
        Service::Scoring => "scoring",
        Service::Success => "success",
        Service::Gateway => "gateway",
    }
}

/// Development defaults: SQLite files under `data_dir` (unless configured
/// otherwise), the documented keys when none are configured (the banner
/// names them), no drain delay.
fn dev(settings: &mut Settings, data_dir: &std::path::Path, banner: &mut Banner) {
    for (service, name) in [
        (&mut settings.accounts, "accounts"),
        (&mut settings.funnel, "funnel"),
        (&mut settings.revenue, "revenue"),
        (&mut settings.scoring, "scoring"),
        (&mut settings.success, "success"),
    ] {
        let default_url = format!("sqlite://data/{name}.db");
        if service.database.url() == default_url {
            let url = format!("sqlite://{}", data_dir.join(format!("{name}.db")).display());
            service.database = service.database.with_url(&url, name);
        }
    }
    if settings.auth.keys.is_empty() {
        settings.auth.keys = vec![
            ApiKeySettings {
                name: "dev-admin".into(),
                hash: hash_key(DEV_ADMIN_KEY),
                scopes: vec!["admin".into()],
                expires_at: None,
                rate_limit: None,
                role: None,
            },
            ApiKeySettings {
                name: "dev-read".into(),
                hash: hash_key(DEV_READ_KEY),
                scopes: vec!["read".into()],
                expires_at: None,
                rate_limit: None,
                role: None,
            },
        ];
        banner.keys = Some(format!(
            "development API keys: {DEV_ADMIN_KEY} (admin), {DEV_READ_KEY} (read)"
        ));
    }
    if secrecy::ExposeSecret::expose_secret(&settings.peers.api_key).is_empty() {
        // The services of this process call each other with a key that lives
        // only as long as the process.
        let (key, hash) = generate_key();
        settings.auth.keys.push(ApiKeySettings {
            name: "dev-peers".into(),
            hash,
            scopes: vec!["read".into()],
            expires_at: None,
            rate_limit: None,
            role: None,
        });
        settings.peers.api_key = key.into();
    }
    let dev_key = |key: &mut secrecy::SecretString, value: &str| {
        if secrecy::ExposeSecret::expose_secret(key).is_empty() {
            *key = value.to_owned().into();
        }
    };
    // The dashboard opens signed in with the read key; webhooks, once a
    // secret is configured, write with the admin key.
    dev_key(&mut settings.gateway.dashboard_key, DEV_READ_KEY);
    dev_key(&mut settings.gateway.webhook_api_key, DEV_ADMIN_KEY);
    settings.server.drain_seconds = 0;
}

/// The Stripe signing secret `bowtie dev --demo` uses unless one is configured.
const DEV_STRIPE_SECRET: &str = "whsec_bowtie_dev_demo";
/// The Segment write key `bowtie dev --demo` uses unless one is configured.
const DEV_SEGMENT_WRITE_KEY: &str = "bowtie-dev-segment";

/// `bowtie dev --demo` turns the Stripe webhook and Segment tracking on with
/// test secrets (unless configured) and prints them, so a signed `curl` can
/// drive each (docs/connectors.md).
fn demo_connectors(settings: &mut Settings, banner: &mut Banner) {
    use secrecy::ExposeSecret;
    let stripe = &mut settings.connectors.stripe;
    if stripe.secret().expose_secret().is_empty() {
        stripe.webhook_secret = DEV_STRIPE_SECRET.to_owned().into();
    }
    let segment = &mut settings.connectors.segment;
    if segment.key().expose_secret().is_empty() {
        segment.write_key = DEV_SEGMENT_WRITE_KEY.to_owned().into();
    }
    let shown = |secret: secrecy::SecretString, dev: &str| {
        if secret.expose_secret() == dev {
            dev.to_owned()
        } else {
            "the configured one".to_owned()
        }
    };
    banner.connectors = format!(
        "\x20 POST /webhooks/stripe     Stripe events, Stripe-Signature under the signing secret {}\n\
         \x20 POST /v1/batch            Segment calls, write key {} (HTTP Basic user name); see docs/connectors.md\n",
        shown(settings.connectors.stripe.secret(), DEV_STRIPE_SECRET),
        shown(settings.connectors.segment.key(), DEV_SEGMENT_WRITE_KEY),
    );
}

/// What `bowtie dev --demo` seeds, and the key it writes with.
struct Demo {
    key: String,
    seed: u64,
    accounts: usize,
}

/// A key that lives only as long as the process, for the demo seeding
/// (admin: it trains the churn model and rescores every account at the end).
fn demo_key(settings: &mut Settings) -> String {
    let (key, hash) = generate_key();
    settings.auth.keys.push(ApiKeySettings {
        name: "dev-demo".into(),
        hash,
        scopes: vec!["admin".into()],
        expires_at: None,
        rate_limit: None,
        role: None,
    });
    key
}

/// What `bowtie dev` tells the person who started it: the addresses, the
/// keys, what the demo holds and what to open. It is printed to stdout as
/// one block once all of it is true (every service listens, the demo is
/// seeded), so nothing else can cut it apart.
#[derive(Debug, Default)]
struct Banner {
    /// One line per service: its name and address.
    services: String,
    /// The development keys, when they are the documented ones.
    keys: Option<String>,
    /// What the demo company holds and what to look at.
    demo: String,
    /// The connectors the demo turns on and their test secrets.
    connectors: String,
    /// The dashboard's address.
    dashboard: Option<String>,
    /// Where to start.
    ready: String,
}

impl Banner {
    fn service(&mut self, name: &str, address: &str) {
        let _ = writeln!(self.services, "{name:<9} {address}");
    }

    fn text(&self) -> String {
        let mut out = self.services.clone();
        if let Some(keys) = &self.keys {
            let _ = writeln!(out, "{keys}");
        }
        out.push_str(&self.demo);
        out.push_str(&self.connectors);
        let _ = writeln!(out, "{}", self.ready);
        out
    }

    /// Writes the whole banner with one write to stdout.
    fn print(&self) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(self.text().as_bytes());
        let _ = stdout.flush();
    }
}

/// Seeds the demo company into the suite at `peers`, then prints the banner
/// with what the demo holds and what to look at.
async fn seed_demo(peers: bowtie_runtime::config::PeerSettings, demo: Demo, mut banner: Banner) {
    let target = bowtie::client::Target::new(&peers, &demo.key);
    let mut options = bowtie::demo::DemoOptions::new(bowtie::demo::plan::anchor_for(
        chrono::Utc::now().timestamp(),
    ));
    options.seed = demo.seed;
    options.accounts = demo.accounts;
    println!(
        "seeding the demo company ({} accounts, seed {})...",
        options.accounts, options.seed
    );
    match bowtie::demo::seed(&target, options).await {
        Ok(seeded) => banner.demo = bowtie::demo::describe(&seeded, banner.dashboard.as_deref()),
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, "seeding the demo company failed");
            banner.demo = format!("seeding the demo company failed: {e:#}\n");
        }
    }
    banner.print();
}

/// Gives every service listening on port 0 a free port of its address, then
/// points the peers at the services of this process.
fn settle_ports(settings: &mut Settings) -> anyhow::Result<()> {
    for service in [
        &mut settings.accounts,
        &mut settings.funnel,
        &mut settings.revenue,
        &mut settings.scoring,
        &mut settings.success,
    ] {
        if service.listen.port() == 0 {
            let probe = std::net::TcpListener::bind(service.listen)
                .with_context(|| format!("binding {}", service.listen))?;
            service.listen = probe.local_addr()?;
        }
    }
    // Over TLS when the services serve it: the certificate must then name
    // the listen address.
    let scheme = if settings.server.tls.cert.is_empty() {
        "http"
    } else {
        "https"
    };
    settings.peers.accounts = format!("{scheme}://{}", settings.accounts.listen);
    settings.peers.funnel = format!("{scheme}://{}", settings.funnel.listen);
    settings.peers.revenue = format!("{scheme}://{}", settings.revenue.listen);
    settings.peers.scoring = format!("{scheme}://{}", settings.scoring.listen);
    settings.peers.success = format!("{scheme}://{}", settings.success.listen);
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn serve(
    mut settings: Settings,
    services: &[Service],
    mut banner: Option<Banner>,
    demo: Option<Demo>,
) -> anyhow::Result<()> {
    let keys = Arc::new(ApiKeys::from_settings(&settings.auth)?.audited(settings.audit.enabled));
    let shutdown = Shutdown::new();
    // One OS signal stops every server of the process: each reports
    // NOT_SERVING, drains, then the shared shutdown fires.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        let _ = stop_tx.send(true);
    });
    let together = services.len() > 1;
    if together {
        // Services of one process reach each other where they listen, and
        // some call each other both ways (funnel and scoring), so every
        // address is settled before the first one starts.
        settle_ports(&mut settings)?;
    }
    let mut running = tokio::task::JoinSet::new();
    for service in services.iter().filter(|s| !matches!(s, Service::Gateway)) {
        let name = service_name(*service);
        let (keys, shutdown) = (keys.clone(), shutdown.clone());
        let server = match service {
            Service::Accounts => bowtie_accounts::build(&settings, keys, shutdown).await,
            Service::Funnel => bowtie_funnel::build(&settings, keys, shutdown).await,
            Service::Revenue => bowtie_revenue::build(&settings, keys, shutdown).await,
            Service::Scoring => bowtie_scoring::build(&settings, keys, shutdown).await,
            Service::Success => bowtie_success::build(&settings, keys, shutdown).await,
            Service::Gateway => continue,
        }
        .with_context(|| format!("starting {name}"))?;
        let addr = server.local_addr();
        tracing::info!(service = name, %addr, security = server.security(), "listening");
        if let Some(banner) = &mut banner {
            banner.service(name, &format!("grpc://{addr}"));
        }
        let mut stop = stop_rx.clone();
        running.spawn(server.run_until_stopped(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }));
    }
    if together || services.contains(&Service::Gateway) {
        let gateway = bowtie_gateway::build(&settings, shutdown.clone())
            .await
            .context("starting gateway")?;
        let addr = gateway.local_addr();
        tracing::info!(service = "gateway", %addr, "listening");
        if let Some(banner) = &mut banner {
            banner.service("gateway", &format!("http://{addr}/openapi.json"));
            banner.service("dashboard", &format!("http://{addr}/"));
            banner.dashboard = Some(format!("http://{addr}/"));
        }
        let mut stop = stop_rx.clone();
        running.spawn(gateway.run_until_stopped(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }));
    }
    // Seeding talks to the services like any client; it stops with them.
    let mut seeding = None;
    if let Some(mut banner) = banner {
        banner.ready = format!(
            "ready: try `grpcurl -plaintext {} list`",
            settings.peers.accounts.trim_start_matches("http://")
        );
        match demo {
            Some(demo) => {
                seeding = Some(tokio::spawn(seed_demo(
                    settings.peers.clone(),
                    demo,
                    banner,
                )));
            }
            None => banner.print(),
        }
    }
    let mut outcome = Ok(());
    while let Some(joined) = running.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = result {
            shutdown.trigger();
            outcome = Err(e);
        }
    }
    if let Some(seeding) = seeding {
        seeding.abort();
    }
    outcome
}
