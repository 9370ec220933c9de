//! TLS and mutual TLS between the gateway and the services and between the
//! services, with certificates each test makes (see `bowtie_testkit::tls`):
//! real servers on random ports, reached as their peers reach them.
//!
//! A service with `server.tls` serves TLS only; with `client_ca` it refuses
//! every client that does not present a certificate from that CA. Callers
//! use `https://` peer addresses with `peers.tls`. Bad TLS settings stop a
//! service or the gateway at startup with an error naming the setting.

use std::sync::Arc;
use std::time::Duration;

use bowtie_proto::common::{Segment, Stage};
use bowtie_proto::funnel::RecordTransitionRequest;
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_runtime::auth::ApiKeys;
use bowtie_runtime::config::Settings;
use bowtie_runtime::shutdown::Shutdown;
use bowtie_testkit::fixtures::{account, create_account};
use bowtie_testkit::gateway::{FUNNEL_SERVICE, Stack};
use bowtie_testkit::tls::{ClientCert, Pki};
use bowtie_testkit::{
    ACCOUNTS_SERVICE, ADMIN_KEY, Bearer, TestDatabase, TestServer, WRITE_KEY, backend_test,
};
use reqwest::StatusCode;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

backend_test!(
    the_gateway_calls_every_service_over_mutual_tls,
    funnel_asks_accounts_over_mutual_tls,
);

/// How a test client dials a server.
enum Dial<'a> {
    /// `http://`: no TLS at all.
    Plaintext,
    /// TLS trusting `ca`, presenting `client` when given.
    Tls {
        ca: &'a std::path::Path,
        client: Option<&'a ClientCert>,
    },
}

/// Asks the server's health over `dial`: the status, or the error text
/// when the connection or the call fails.
async fn health(server: &TestServer, dial: Dial<'_>) -> Result<ServingStatus, String> {
    let addr = server.addr();
    let endpoint = match dial {
        Dial::Plaintext => Endpoint::from_shared(format!("http://{addr}")),
        Dial::Tls { ca, client } => {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
                std::fs::read(ca).map_err(|e| e.to_string())?,
            ));
            if let Some(client) = client {
                tls = tls.identity(Identity::from_pem(
                    std::fs::read(&client.cert).map_err(|e| e.to_string())?,
                    std::fs::read(&client.key).map_err(|e| e.to_string())?,
                ));
            }
            Endpoint::from_shared(format!("https://{addr}")).and_then(|e| e.tls_config(tls))
        }
    }
    .map_err(|e| e.to_string())?
    .connect_timeout(Duration::from_secs(5))
    .timeout(Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: ACCOUNTS_SERVICE.to_owned(),
        })
        .await
        .map_err(|s| format!("call: {s:?}"))?;
    ServingStatus::try_from(response.into_inner().status).map_err(|e| e.to_string())
}

/// The accounts service on a fresh SQLite database with `configure` applied.
async fn accounts_server(
    db: &TestDatabase,
    configure: impl FnOnce(&mut Settings),
) -> anyhow::Result<TestServer> {
    let mut settings = db.server_settings()?;
    configure(&mut settings);
    TestServer::start_with(&settings).await
}

async fn sqlite() -> anyhow::Result<TestDatabase> {
    TestDatabase::create(bowtie_testkit::Backend::Sqlite)
        .await?
        .ok_or_else(|| anyhow::anyhow!("SQLite is always available"))
}

#[tokio::test]
async fn a_tls_service_serves_rpcs_health_and_reflection_to_a_client_trusting_its_ca()
-> anyhow::Result<()> {
    let pki = Pki::new()?;
    let db = sqlite().await?;
    let server = accounts_server(&db, |s| pki.one_way(s)).await?;
    assert!(server.uri().starts_with("https://"), "{}", server.uri());

    // The harness's channel is a TLS one: a write and a read go through it.
    let created =
        create_account(&mut server.accounts(), account("Acme", Segment::Enterprise)).await?;
    let fetched = server
        .accounts()
        .get_account(bowtie_proto::accounts::GetAccountRequest {
            id: created.id.clone(),
        })
        .await?
        .into_inner()
        .account;
    assert_eq!(fetched.map(|a| a.name), Some("Acme".to_owned()));

    // Health and reflection are on the same TLS port.
    assert_eq!(
        health(
            &server,
            Dial::Tls {
                ca: &pki.ca,
                client: None
            }
        )
        .await,
        Ok(ServingStatus::Serving)
    );
    let mut reflection = ServerReflectionClient::new(server.channel());
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await?
        .into_inner();
    let listed = match answers.message().await?.and_then(|a| a.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => anyhow::bail!("reflection answered {other:?}"),
    };
    assert!(listed.contains(&ACCOUNTS_SERVICE.to_owned()), "{listed:?}");
    Ok(())
}

#[tokio::test]
async fn a_tls_service_refuses_plaintext_and_is_refused_by_a_client_trusting_another_ca()
-> anyhow::Result<()> {
    let pki = Pki::new()?;
    let db = sqlite().await?;
    let server = accounts_server(&db, |s| pki.one_way(s)).await?;
    let plaintext = health(&server, Dial::Plaintext).await;
    assert!(
        plaintext.is_err(),
        "a plaintext client was answered: {plaintext:?}"
    );
    let untrusted = health(
        &server,
        Dial::Tls {
            ca: &pki.other_ca,
            client: None,
        },
    )
    .await;
    assert!(
        untrusted
            .as_ref()
            .is_err_and(|e| e.contains("UnknownIssuer")),
        "a client trusting another CA accepted the server: {untrusted:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_mutual_tls_service_answers_only_clients_with_a_certificate_from_its_ca()
-> anyhow::Result<()> {
    let pki = Pki::new()?;
    let db = sqlite().await?;
    let server = accounts_server(&db, |s| pki.mutual(s)).await?;
    let trusted = |client| Dial::Tls {
        ca: &pki.ca,
        client,
    };

    let without_certificate = health(&server, trusted(None)).await;
    assert!(
        without_certificate.is_err(),
        "a client without a certificate was answered: {without_certificate:?}"
    );
    let stranger = health(&server, trusted(Some(&pki.stranger))).await;
    assert!(
        stranger.is_err(),
        "a client with another CA's certificate was answered: {stranger:?}"
    );
    let plaintext = health(&server, Dial::Plaintext).await;
    assert!(
        plaintext.is_err(),
        "a plaintext client was answered: {plaintext:?}"
    );

    // The refused handshakes left the server serving the right client,
    // health and RPCs alike; the API key is still checked on top.
    assert_eq!(
        health(&server, trusted(Some(&pki.client))).await,
        Ok(ServingStatus::Serving)
    );
    create_account(&mut server.accounts(), account("Acme", Segment::Smb)).await?;
    let status = server
        .accounts_with(Bearer::none())
        .get_account(bowtie_proto::accounts::GetAccountRequest {
            id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(status, Some(Code::Unauthenticated));
    Ok(())
}

async fn funnel_asks_accounts_over_mutual_tls(db: &TestDatabase) -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let mut settings = db.server_settings()?;
    pki.mutual(&mut settings);
    let accounts = TestServer::start_with(&settings).await?;
    settings.peers.accounts = accounts.uri();
    let funnel = TestServer::start_service(FUNNEL_SERVICE, &settings, bowtie_funnel::build).await?;
    let acme = create_account(&mut accounts.accounts(), account("Acme", Segment::Smb)).await?;
    let transition = |account_id: &str| RecordTransitionRequest {
        account_id: account_id.to_owned(),
        to_stage: Stage::Awareness as i32,
        occurred_at: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() - 60,
            nanos: 0,
        }),
        reason: String::new(),
        source: "test".to_owned(),
        idempotency_key: String::new(),
    };
    let mut client = FunnelServiceClient::new(funnel.with_key(WRITE_KEY));

    // Funnel learns that Acme exists, and that another id does not, from
    // accounts over mutual TLS.
    let recorded = client
        .record_transition(transition(&acme.id))
        .await?
        .into_inner();
    assert!(recorded.applied);
    assert_eq!(recorded.current_stage, Stage::Awareness as i32);
    let unknown = client
        .record_transition(transition(&uuid::Uuid::new_v4().to_string()))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(unknown, Some(Code::NotFound));

    // The same funnel without a client certificate is refused by accounts:
    // UNAVAILABLE to its caller, nothing written.
    let mut keyless = settings.clone();
    keyless.peers.tls = pki.peer_tls(None);
    let shutdown = Shutdown::new();
    let server = bowtie_funnel::build(
        &keyless,
        Arc::new(ApiKeys::from_settings(&keyless.auth)?),
        shutdown.clone(),
    )
    .await?;
    let refused_funnel = server.uri();
    let task = tokio::spawn(server.run_until_stopped(std::future::pending()));
    let channel = Endpoint::from_shared(refused_funnel)?
        .tls_config(bowtie_runtime::tls::client_config(
            "funnel",
            &settings.peers.tls,
        )?)?
        .connect()
        .await?;
    let mut refused = FunnelServiceClient::with_interceptor(channel, Bearer::new(WRITE_KEY));
    let outcome = refused
        .record_transition(transition(&acme.id))
        .await
        .err()
        .map(|s| s.code());
    shutdown.trigger();
    task.abort();
    assert_eq!(outcome, Some(Code::Unavailable));
    Ok(())
}

async fn the_gateway_calls_every_service_over_mutual_tls(db: &TestDatabase) -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let mut settings = db.server_settings()?;
    pki.mutual(&mut settings);
    let stack = Stack::start_from(settings, |_| {}).await?;
    for uri in [
        &stack.settings.peers.accounts,
        &stack.settings.peers.funnel,
        &stack.settings.peers.revenue,
        &stack.settings.peers.scoring,
    ] {
        assert!(uri.starts_with("https://"), "{uri}");
    }

    // /readyz asks the health of all four services over mutual TLS.
    let (status, body) = stack
        .call(reqwest::Method::GET, "/readyz", None, None)
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A write and a read through the gateway.
    let id = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let (status, body) = stack
        .get(&format!("/api/v1/accounts/{id}"), ADMIN_KEY)
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Acme");
    Ok(())
}

#[tokio::test]
async fn a_gateway_without_a_client_certificate_reports_the_services_unready() -> anyhow::Result<()>
{
    let pki = Pki::new()?;
    let db = sqlite().await?;
    let mut settings = db.server_settings()?;
    pki.mutual(&mut settings);
    let stack = Stack::start_from(settings, |s| s.peers.tls = pki.peer_tls(None)).await?;
    let (status, body) = stack
        .call(reqwest::Method::GET, "/readyz", None, None)
        .await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, body) = stack.get("/api/v1/accounts", ADMIN_KEY).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    Ok(())
}

/// The startup error of the accounts service with `configure` applied.
async fn startup_error(
    db: &TestDatabase,
    configure: impl FnOnce(&mut Settings),
) -> anyhow::Result<String> {
    let mut settings = db.server_settings()?;
    configure(&mut settings);
    let keys = Arc::new(ApiKeys::from_settings(&settings.auth)?);
    match bowtie_accounts::build(&settings, keys, Shutdown::new()).await {
        Ok(_) => anyhow::bail!("the service started"),
        Err(e) => Ok(format!("{e:#}")),
    }
}

#[tokio::test]
async fn a_missing_key_file_stops_the_service_at_startup_naming_the_setting() -> anyhow::Result<()>
{
    let pki = Pki::new()?;
    let db = sqlite().await?;
    let error = startup_error(&db, |s| {
        s.server.tls = pki.server_tls(false);
        s.server.tls.key = "/nonexistent/bowtie/key.pem".to_owned();
    })
    .await?;
    assert!(
        error.contains("server.tls.key: cannot read \"/nonexistent/bowtie/key.pem\""),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_client_ca_that_is_not_pem_stops_the_service_at_startup_naming_the_setting()
-> anyhow::Result<()> {
    let pki = Pki::new()?;
    let db = sqlite().await?;
    let dir = tempfile::tempdir()?;
    let garbage = dir.path().join("client-ca.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    let error = startup_error(&db, |s| {
        s.server.tls = pki.server_tls(true);
        s.server.tls.client_ca = garbage.display().to_string();
    })
    .await?;
    assert!(
        error.contains("server.tls.client_ca:") && error.contains("holds no PEM certificate"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_stops_the_service_at_startup()
-> anyhow::Result<()> {
    let pki = Pki::new()?;
    let db = sqlite().await?;
    let error = startup_error(&db, |s| {
        s.server.tls = pki.server_tls(false);
        s.server.tls.key = pki.client.key.display().to_string();
    })
    .await?;
    assert!(
        error.contains("server.tls.cert: the certificate and key cannot be used"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_gateway_with_an_https_peer_and_no_ca_stops_at_startup_naming_the_setting()
-> anyhow::Result<()> {
    let db = sqlite().await?;
    let mut settings = db.server_settings()?;
    settings.peers.accounts = "https://127.0.0.1:1".to_owned();
    let error = match bowtie_gateway::build(&settings, Shutdown::new()).await {
        Ok(_) => anyhow::bail!("the gateway started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("peer \"https://127.0.0.1:1\" is https:// but peers.tls.ca is empty"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_mutual_tls_service_answers_plaintext_health_probes_on_its_health_address_only()
-> anyhow::Result<()> {
    let pki = Pki::new()?;
    let db = sqlite().await?;
    let mut settings = db.server_settings()?;
    pki.mutual(&mut settings);
    settings.accounts.health_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let shutdown = Shutdown::new();
    let server = bowtie_accounts::build(
        &settings,
        Arc::new(ApiKeys::from_settings(&settings.auth)?),
        shutdown.clone(),
    )
    .await?;
    let probe_addr = server
        .health_addr()
        .ok_or_else(|| anyhow::anyhow!("no health listener"))?;
    let task = tokio::spawn(server.run_until_stopped(std::future::pending()));
    let channel = Endpoint::from_shared(format!("http://{probe_addr}"))?
        .connect()
        .await?;

    // A plaintext probe sees the service turn SERVING...
    let mut probe = HealthClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = probe
            .check(HealthCheckRequest {
                service: ACCOUNTS_SERVICE.to_owned(),
            })
            .await?
            .into_inner()
            .status;
        if status == ServingStatus::Serving as i32 || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // ...but no RPC of the service is reachable there, even with a key.
    let rpc =
        bowtie_proto::accounts::accounts_service_client::AccountsServiceClient::with_interceptor(
            channel,
            Bearer::new(ADMIN_KEY),
        )
        .get_account(bowtie_proto::accounts::GetAccountRequest {
            id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .err()
        .map(|s| s.code());
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert_eq!(status, ServingStatus::Serving as i32);
    assert_eq!(rpc, Some(Code::Unimplemented));
    Ok(())
}
