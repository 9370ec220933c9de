//! The per-service PostgreSQL roles of `deploy/postgres/init-roles.sh`, the
//! script itself run against a PostgreSQL server of the test's own that
//! checks passwords: each service migrates and serves under its own role,
//! and no role can read, write or migrate another service's schema, nor use
//! the public schema.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use bowtie_proto::accounts::accounts_service_client::AccountsServiceClient;
use bowtie_proto::accounts::{Account, CreateAccountRequest};
use bowtie_proto::common::Segment;
use bowtie_runtime::config::{DatabaseSettings, Settings};
use bowtie_testkit::WRITE_KEY;

use crate::support::{Node, PrivatePostgres, Process, SERVICES, free_port, run, write_config};

/// The password the script gives `role`.
fn password(role: &str) -> String {
    format!("{role}-secret-for-the-roles-test")
}

/// `role`'s settings for `schema` in database `bowtie` of `pg`.
fn database(pg: &PrivatePostgres, role: &str, schema: &str) -> anyhow::Result<DatabaseSettings> {
    let url = format!(
        "postgres://{role}:{}@127.0.0.1:{}/bowtie",
        password(role),
        pg.port()
    );
    Ok(Settings::defaults()?
        .accounts
        .database
        .with_url(&url, schema))
}

/// Runs `sql` in database `bowtie` over TCP as `role` with `password`:
/// `Ok(output)`, or `Err(error message)` when psql fails.
fn psql_as(
    pg: &PrivatePostgres,
    role: &str,
    password: &str,
    sql: &str,
) -> anyhow::Result<Result<String, String>> {
    let output = Command::new(pg.psql_program())
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", role, "-d", "bowtie", "-c", sql])
        .env("PGPASSWORD", password)
        .env_remove("PGHOST")
        .output()?;
    Ok(if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    })
}

/// Runs `sql` as the superuser over the Unix socket, in database `db`.
fn psql_admin(pg: &PrivatePostgres, db: &str, sql: &str) -> anyhow::Result<String> {
    let output = Command::new(pg.psql_program())
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ])
        .envs(pg.admin_env())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `bowtie --config <config> migrate <service>`: `Err(stderr)` when it fails.
fn migrate(config: &Path, service: &str) -> anyhow::Result<Result<(), String>> {
    let output = Command::new(env!("CARGO_BIN_EXE_bowtie"))
        .arg("--config")
        .arg(config)
        .args(["migrate", service])
        .output()?;
    Ok(if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_role_migrates_and_serves_its_own_schema_and_cannot_open_another_one()
-> anyhow::Result<()> {
    let Some(pg) = PrivatePostgres::create("scram-sha-256")? else {
        return Ok(());
    };
    pg.start()?;
    psql_admin(&pg, "postgres", "CREATE DATABASE bowtie")?;

    // The deployment's own script, as an administrator runs it.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/postgres/init-roles.sh");
    let mut init = Command::new("sh");
    init.arg(&script)
        .envs(pg.admin_env())
        .env("POSTGRES_USER", "bowtie")
        .env("POSTGRES_DB", "bowtie");
    // Its psql is this server's version.
    let bin = pg.psql_program().with_file_name("");
    init.env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    for service in SERVICES {
        init.env(
            format!("{}_DB_PASSWORD", service.to_uppercase()),
            password(service),
        );
    }
    // The script also makes the success service's role, and needs its password.
    init.env("SUCCESS_DB_PASSWORD", password("success"));
    run(&mut init).context("deploy/postgres/init-roles.sh")?;

    // Each service migrates under its own role, into its own schema.
    let dir = tempfile::tempdir()?;
    let databases: Vec<DatabaseSettings> = SERVICES
        .iter()
        .map(|s| database(&pg, s, s))
        .collect::<anyhow::Result<_>>()?;
    let mut ports = Vec::new();
    for _ in SERVICES {
        ports.push(free_port()?);
    }
    let nodes: Vec<Node<'_>> = SERVICES
        .iter()
        .zip(&databases)
        .zip(&ports)
        .map(|((service, database), port)| Node {
            service,
            database,
            port: *port,
        })
        .collect();
    let config = write_config(dir.path(), &nodes, &[])?;
    for service in SERVICES {
        if let Err(e) = migrate(&config, service)? {
            anyhow::bail!("bowtie migrate {service} under its own role failed: {e}");
        }
    }
    let tables = psql_admin(
        &pg,
        "bowtie",
        "SELECT table_schema || '.' || min(table_name) FROM information_schema.tables \
         WHERE table_schema IN ('accounts', 'funnel', 'revenue', 'scoring') \
         GROUP BY table_schema ORDER BY table_schema",
    )?;
    let tables: Vec<&str> = tables.lines().collect();
    assert_eq!(tables.len(), SERVICES.len(), "one schema each: {tables:?}");

    // Every service serves under its role; accounts takes a write.
    let mut processes = Vec::new();
    for (service, port) in SERVICES.iter().zip(&ports) {
        processes.push(Process::start(&config, service, *port).await?);
    }
    let created = AccountsServiceClient::new(processes[0].channel(WRITE_KEY)?)
        .create_account(CreateAccountRequest {
            account: Some(Account {
                name: "Acme".into(),
                segment: Segment::Smb as i32,
                ..Account::default()
            }),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner()
        .account
        .context("no account")?;
    drop(processes);

    for (role, own) in SERVICES.iter().zip(&tables) {
        // Its own tables: readable and writable.
        psql_as(
            &pg,
            role,
            &password(role),
            &format!("SELECT count(*) FROM {own}"),
        )?
        .map_err(|e| anyhow::anyhow!("{role} cannot read its own {own}: {e}"))?;
        // Nobody's public schema, and nobody else's schema.
        let denied = psql_as(
            &pg,
            role,
            &password(role),
            "CREATE TABLE public.intruder (x int)",
        )?;
        assert!(
            denied
                .as_ref()
                .is_err_and(|e| e.contains("permission denied")),
            "{role} created a table in public: {denied:?}"
        );
        for (other, theirs) in SERVICES.iter().zip(&tables) {
            if other == role {
                continue;
            }
            for sql in [
                format!("SELECT * FROM {theirs} LIMIT 1"),
                format!("DELETE FROM {theirs}"),
                format!("CREATE TABLE {other}.intruder (x int)"),
            ] {
                let denied = psql_as(&pg, role, &password(role), &sql)?;
                assert!(
                    denied.as_ref().is_err_and(
                        |e| e.contains(&format!("permission denied for schema {other}"))
                    ),
                    "{role}: {sql}: {denied:?}"
                );
            }
            // Nor can a service configured with another service's schema
            // migrate (or so much as open) it.
            let cross = tempfile::tempdir()?;
            let database = database(&pg, role, other)?;
            let config = write_config(
                cross.path(),
                &[Node {
                    service: other,
                    database: &database,
                    port: free_port()?,
                }],
                &[],
            )?;
            let refused = migrate(&config, other)?;
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.contains("permission denied")),
                "{role} migrated {other}'s schema: {refused:?}"
            );
        }
        // And a wrong password is refused outright.
        let refused = psql_as(&pg, role, "not-the-password", "SELECT 1")?;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("password authentication failed")),
            "{refused:?}"
        );
    }
    let stored = psql_as(
        &pg,
        "accounts",
        &password("accounts"),
        &format!(
            "SELECT count(*) FROM accounts.accounts WHERE id = '{}'",
            created.id
        ),
    )?;
    assert_eq!(
        stored,
        Ok("1".to_owned()),
        "the account written under the accounts role"
    );
    Ok(())
}
