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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Service {
    /// The accounts service.
    Accounts,
    /// The revenue service.
    Revenue,
}

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
            serve_all(settings, &[Service::Accounts, Service::Revenue], true).await
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
            serve_all(settings, &[service], false).await
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
                Service::Revenue => {
                    let db = Db::connect(&settings.revenue.database).await?;
                    db.migrate::<bowtie_revenue::storage::Migrator>().await?;
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
        Service::Revenue => "revenue",
    }
}

/// Development defaults: SQLite files under `data_dir` (unless configured
/// otherwise), the documented keys when none are configured, no drain delay.
fn dev(settings: &mut Settings, data_dir: &std::path::Path) {
    let default_url = "sqlite://data/accounts.db";
    if settings.accounts.database.url() == default_url {
        let url = format!("sqlite://{}", data_dir.join("accounts.db").display());
        settings.accounts.database = settings.accounts.database.with_url(&url, "accounts");
    }
    if settings.revenue.database.url() == "sqlite://data/revenue.db" {
        let url = format!("sqlite://{}", data_dir.join("revenue.db").display());
        settings.revenue.database = settings.revenue.database.with_url(&url, "revenue");
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

async fn serve_all(
    mut settings: Settings,
    services: &[Service],
    print: bool,
) -> anyhow::Result<()> {
    let keys = Arc::new(ApiKeys::from_settings(&settings.auth)?);
    let shutdown = Shutdown::new();
    let mut servers = Vec::new();
    for service in services {
        let server = match service {
            Service::Accounts => {
                let server = bowtie_accounts::build(&settings, keys.clone(), shutdown.clone())
                    .await
                    .context("starting accounts")?;
                if services.len() > 1 {
                    // Services of one process reach accounts where it listens.
                    settings.peers.accounts = format!("http://{}", server.local_addr());
                }
                server
            }
            Service::Revenue => bowtie_revenue::build(&settings, keys.clone(), shutdown.clone())
                .await
                .context("starting revenue")?,
        };
        let name = service_name(*service);
        let addr = server.local_addr();
        tracing::info!(service = name, %addr, "listening");
        if print {
            println!("{name:<9} grpc://{addr}");
        }
        servers.push(server);
    }
    if print && let Some(first) = servers.first() {
        println!(
            "ready: try `grpcurl -plaintext {} list`",
            first.local_addr()
        );
    }
    // On the signal the first server reports NOT_SERVING, drains, then fires
    // the shared shutdown that every server of the process stops on.
    let mut runs = Vec::new();
    for (i, server) in servers.into_iter().enumerate() {
        let stopped = shutdown.clone();
        runs.push(tokio::spawn(async move {
            if i == 0 {
                server.run_until_stopped(stop_signal()).await
            } else {
                server
                    .run_until_stopped(async move { stopped.wait().await })
                    .await
            }
        }));
    }
    for run in runs {
        run.await.context("a server task panicked")??;
    }
    Ok(())
}
