//! The `bowtie` command.
//!
//! - `bowtie dev` runs every service in one process on SQLite files under
//!   `./data`, with documented development API keys: nothing to install.
//! - `bowtie serve <service>` runs one service alone, as in production
//!   (PostgreSQL by URL, keys from configuration).
//! - `bowtie migrate <service>` applies a service's migrations and exits.
//! - `bowtie keys generate` prints a new API key and the hash to configure.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bowtie_runtime::auth::{ApiKeys, generate_key, hash_key};
use bowtie_runtime::config::{ApiKeySettings, Settings};
use bowtie_runtime::db::Db;
use bowtie_runtime::shutdown::Shutdown;
use clap::{Parser, Subcommand, ValueEnum};

/// Development key with every scope; printed by `bowtie dev`, documented in the README.
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
    /// The HTTP/JSON gateway and dashboard (no database of its own).
    Gateway,
    /// The scoring service.
    Scoring,
}

/// Every service, in start order (each service's peers start before it).
const ALL_SERVICES: &[Service] = &[
    Service::Accounts,
    Service::Revenue,
    Service::Funnel,
    Service::Scoring,
];

fn main() -> anyhow::Result<()> {
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
        .block_on(run(cli.command, settings))
}

async fn run(command: Command, mut settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Dev { data_dir } => {
            let _telemetry = bowtie_runtime::telemetry::init("bowtie", &settings.telemetry)?;
            dev(&mut settings, &data_dir);
            serve(settings, ALL_SERVICES, true).await
        }
        Command::Serve { service } => {
            let _telemetry = bowtie_runtime::telemetry::init(
                &format!("bowtie-{}", service_name(service)),
                &settings.telemetry,
            )?;
            if settings.auth.keys.is_empty() {
                tracing::warn!(
                    "no API keys configured: every call will be refused (see `bowtie keys generate`)"
                );
            }
            serve(settings, &[service], false).await
        }
        Command::Migrate { service } => {
            let _telemetry =
                bowtie_runtime::telemetry::init("bowtie-migrate", &settings.telemetry)?;
            match service {
                Service::Accounts => {
                    let db = Db::connect(&settings.accounts.database).await?;
                    db.migrate::<bowtie_accounts::storage::Migrator>().await?;
                    db.close().await;
                }
                Service::Funnel => {
                    let db = Db::connect(&settings.funnel.database).await?;
                    db.migrate::<bowtie_funnel::storage::Migrator>().await?;
                    db.close().await;
                }
                Service::Revenue => {
                    let db = Db::connect(&settings.revenue.database).await?;
                    db.migrate::<bowtie_revenue::storage::Migrator>().await?;
                    db.close().await;
                }
                Service::Gateway => {}
                Service::Scoring => {
                    let db = Db::connect(&settings.scoring.database).await?;
                    db.migrate::<bowtie_scoring::storage::Migrator>().await?;
                    db.close().await;
                }
            }
            tracing::info!(service = service_name(service), "migrations applied");
            Ok(())
        }
        Command::Keys { .. } => Ok(()),
    }
}

fn service_name(service: Service) -> &'static str {
    match service {
        Service::Accounts => "accounts",
        Service::Funnel => "funnel",
        Service::Revenue => "revenue",
        Service::Gateway => "gateway",
        Service::Scoring => "scoring",
    }
}

/// Development defaults: SQLite files under `data_dir` (unless configured
/// otherwise), the documented keys when none are configured, no drain delay.
fn dev(settings: &mut Settings, data_dir: &std::path::Path) {
    for (service, name) in [
        (&mut settings.accounts, "accounts"),
        (&mut settings.funnel, "funnel"),
        (&mut settings.revenue, "revenue"),
        (&mut settings.scoring, "scoring"),
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
            },
            ApiKeySettings {
                name: "dev-read".into(),
                hash: hash_key(DEV_READ_KEY),
                scopes: vec!["read".into()],
            },
        ];
        println!("development API keys: {DEV_ADMIN_KEY} (admin), {DEV_READ_KEY} (read)");
    }
    if secrecy::ExposeSecret::expose_secret(&settings.peers.api_key).is_empty() {
        // The services of this process call each other with a key that lives
        // only as long as the process.
        let (key, hash) = generate_key();
        settings.auth.keys.push(ApiKeySettings {
            name: "dev-peers".into(),
            hash,
            scopes: vec!["read".into()],
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

async fn serve(mut settings: Settings, services: &[Service], print: bool) -> anyhow::Result<()> {
    let keys = Arc::new(ApiKeys::from_settings(&settings.auth)?);
    let shutdown = Shutdown::new();
    // One OS signal stops every server of the process: each reports
    // NOT_SERVING, drains, then the shared shutdown fires.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        let _ = stop_tx.send(true);
    });
    let together = services.len() > 1;
    let mut running = tokio::task::JoinSet::new();
    for service in services.iter().filter(|s| !matches!(s, Service::Gateway)) {
        let name = service_name(*service);
        let (keys, shutdown) = (keys.clone(), shutdown.clone());
        let server = match service {
            Service::Accounts => bowtie_accounts::build(&settings, keys, shutdown).await,
            Service::Funnel => bowtie_funnel::build(&settings, keys, shutdown).await,
            Service::Revenue => bowtie_revenue::build(&settings, keys, shutdown).await,
            Service::Gateway => continue,
            Service::Scoring => bowtie_scoring::build(&settings, keys, shutdown).await,
        }
        .with_context(|| format!("starting {name}"))?;
        let addr = server.local_addr();
        tracing::info!(service = name, %addr, "listening");
        if print {
            println!("{name:<9} grpc://{addr}");
        }
        if together {
            // Services of one process reach each other where they listen.
            let uri = format!("http://{addr}");
            match service {
                Service::Accounts => settings.peers.accounts = uri,
                Service::Funnel => settings.peers.funnel = uri,
                Service::Revenue => settings.peers.revenue = uri,
                Service::Gateway => {}
                Service::Scoring => settings.peers.scoring = uri,
            }
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
        if print {
            println!("gateway   http://{addr}/openapi.json");
            println!("dashboard http://{addr}/");
        }
        let mut stop = stop_rx.clone();
        running.spawn(gateway.run_until_stopped(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }));
    }
    if print {
        println!(
            "ready: try `grpcurl -plaintext {} list`",
            settings.peers.accounts.trim_start_matches("http://")
        );
    }
    let mut outcome = Ok(());
    while let Some(joined) = running.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = result {
            shutdown.trigger();
            outcome = Err(e);
        }
    }
    outcome
}
