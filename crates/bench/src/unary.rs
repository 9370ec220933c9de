//! The unary and memory case. Every service runs as its own `bowtie serve`
//! process on temporary SQLite files, exactly as in production, so each
//! one's resident memory can be read from `/proc`. Then the project's load
//! generator sends `GetAccount` at 1, 16 and 64 concurrent requests to the
//! accounts process and, with the same client code, to a bare tonic server
//! answering the same RPC from memory (no database, no middleware) in a
//! process of its own: the most this machine can do, and the ratio to it.
//! The gateway runs as its own `bowtie serve gateway` process in front of
//! them and is measured idle and after a run of REST reads; last, the whole
//! `bowtie dev --demo` suite is measured as one process while it seeds the
//! demo company and once it is idle.
//!
//! The accounts process also trusts a stand-in OpenID Connect issuer
//! ([`crate::issuer`]): `GetAccount` at 64 concurrent requests with its
//! bearer JWT is measured right after the same load with the API key, and
//! the ratio printed (JWT verification may cost at most 10%).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bowtie_proto::accounts::accounts_service_client::AccountsServiceClient;
use bowtie_proto::accounts::accounts_service_server::{AccountsService, AccountsServiceServer};
use bowtie_proto::accounts::*;
use bowtie_proto::common::Segment;
use bowtie_runtime::auth::hash_key;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::load::{self, LoadResult};
use crate::measure::{Report, ms};

pub(crate) const KEY: &str = "bench-unary-key";
/// Concurrency levels measured.
const LEVELS: [usize; 3] = [1, 16, 64];
/// Accounts created before the reads.
const ACCOUNTS: usize = 1_000;
/// REST reads sent through the gateway before its peak memory is read.
const GATEWAY_READS: usize = 2_000;
/// Services that run as their own process, in start order (peers first).
pub(crate) const SERVICES: [&str; 4] = ["accounts", "revenue", "funnel", "scoring"];

/// Runs the case; `seconds` is the measured time of each load level.
pub async fn run(report: &mut Report, seconds: u64) -> anyhow::Result<()> {
    let bin = bowtie_binary()?;
    let dir = tempfile::tempdir()?;
    let ports: Vec<u16> = SERVICES
        .iter()
        .map(|_| free_port())
        .collect::<anyhow::Result<_>>()?;
    let gateway_port = free_port()?;
    let config = dir.path().join("bowtie.toml");
    let issuer = crate::issuer::Issuer::start().await?;
    std::fs::write(
        &config,
        config_toml(dir.path(), &ports, gateway_port) + &issuer.config_toml(),
    )?;

    let processes = start_services(&bin, &config, &ports).await?;
    let gateway_addr: SocketAddr = ([127, 0, 0, 1], gateway_port).into();
    let gateway = start_gateway(&bin, &config, gateway_addr).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let measured = processes
        .iter()
        .map(|(service, process)| (*service, process));
    for (service, process) in measured.chain([("gateway", &gateway)]) {
        let rss = process.memory("VmRSS")?;
        report.add(
            "memory",
            &format!("{service} RSS idle"),
            rss,
            "MiB",
            Some(30.0),
        );
    }

    let accounts_addr: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let channel = connect(accounts_addr).await?;
    let ids = seed_accounts(channel.clone()).await?;
    println!("unary: {ACCOUNTS} accounts created; GetAccount for {seconds} s per level");
    let duration = Duration::from_secs(seconds);
    let service = get_account_load(accounts_addr, &ids, duration, KEY, &LEVELS).await?;
    let rss_load = processes[0].1.memory("VmHWM")?;
    println!("unary: GetAccount at 64 with the API key, then with a bearer JWT");
    let with_key = get_account_load(accounts_addr, &ids, duration, KEY, &[64]).await?;
    let with_jwt = get_account_load(accounts_addr, &ids, duration, &issuer.token, &[64]).await?;
    if let (Some(key), Some(jwt)) = (with_key.first(), with_jwt.first()) {
        report.add(
            "unary",
            "GetAccount req/s at 64, API key",
            key.per_second,
            "req/s",
            None,
        );
        report.add(
            "unary",
            "GetAccount req/s at 64, bearer JWT",
            jwt.per_second,
            "req/s",
            None,
        );
        let ratio = if key.per_second > 0.0 {
            jwt.per_second / key.per_second
        } else {
            0.0
        };
        println!(
            "unary: bearer JWT / API key at 64 = {ratio:.3} (JWT costs {:.1}%)",
            (1.0 - ratio) * 100.0
        );
        report.add_at_least(
            "unary",
            "ratio GetAccount bearer JWT / API key at 64",
            ratio,
            "x",
            0.9,
        );
        report.add(
            "unary",
            "failed requests with a bearer JWT at 64",
            jwt.errors as f64,
            "",
            Some(1.0),
        );
    }
    let started = Instant::now();
    for i in 0..GATEWAY_READS {
        let path = format!("/api/v1/accounts/{}", ids[i % ids.len()]);
        let (status, _) = http_get(gateway_addr, &path).await?;
        anyhow::ensure!(status == 200, "GET {path} through the gateway: {status}");
    }
    let gateway_reads = GATEWAY_READS as f64 / started.elapsed().as_secs_f64();
    let gateway_peak = gateway.memory("VmHWM")?;
    drop(gateway);

    let echo_port = free_port()?;
    let echo_addr: SocketAddr = ([127, 0, 0, 1], echo_port).into();
    let echo = Process::spawn(
        Command::new(std::env::current_exe()?)
            .arg("--echo-server")
            .arg(echo_addr.to_string()),
        "echo",
    )?;
    wait_connectable(echo_addr).await?;
    let bare = get_account_load(echo_addr, &ids, duration, KEY, &LEVELS).await?;
    drop(echo);

    for (s, e) in service.iter().zip(&bare) {
        let c = s.concurrency;
        report.add(
            "unary",
            &format!("GetAccount req/s at {c}"),
            s.per_second,
            "req/s",
            None,
        );
        report.add(
            "unary",
            &format!("GetAccount p50 / p99 at {c} (p50)"),
            ms(s.p50),
            "ms",
            None,
        );
        report.add(
            "unary",
            &format!("GetAccount p50 / p99 at {c} (p99)"),
            ms(s.p99),
            "ms",
            (c == 64).then_some(5.0),
        );
        report.add(
            "unary",
            &format!("echo server req/s at {c}"),
            e.per_second,
            "req/s",
            None,
        );
        report.add(
            "unary",
            &format!("echo server p99 at {c}"),
            ms(e.p99),
            "ms",
            None,
        );
        let ratio = if e.per_second > 0.0 {
            s.per_second / e.per_second
        } else {
            0.0
        };
        report.add_at_least(
            "unary",
            &format!("ratio GetAccount / echo at {c}"),
            ratio,
            "x",
            0.7,
        );
        report.add(
            "unary",
            &format!("failed requests at {c}"),
            (s.errors + e.errors) as f64,
            "",
            Some(1.0),
        );
    }
    report.add(
        "memory",
        "accounts peak RSS under the unary load",
        rss_load,
        "MiB",
        None,
    );
    report.add(
        "memory",
        "gateway peak RSS after 2,000 REST reads",
        gateway_peak,
        "MiB",
        None,
    );
    report.add(
        "unary",
        "gateway REST GetAccount (a connection each)",
        gateway_reads,
        "req/s",
        None,
    );
    drop(processes);
    demo_suite(report, &bin).await
}

/// `bowtie dev --demo` as one process: its peak while it seeds the demo
/// company through the public APIs, and its resident memory once idle.
async fn demo_suite(report: &mut Report, bin: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(std::fs::canonicalize(bin)?);
    command
        .current_dir(dir.path())
        .args(["dev", "--demo", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("BOWTIE_CONFIG")
        .env("RUST_LOG", "warn");
    for service in SERVICES.iter().chain(&["gateway"]) {
        let port = free_port()?;
        let name = service.to_uppercase();
        command.env(
            format!("BOWTIE__{name}__LISTEN"),
            format!("127.0.0.1:{port}"),
        );
    }
    println!("unary: bowtie dev --demo (seeds the demo company)");
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bowtie dev --demo")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let demo = Process(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::task::block_in_place(|| rx.recv_timeout(left))
            .map_err(|_| anyhow::anyhow!("the demo company was not seeded in time"))?;
        anyhow::ensure!(!line.contains("failed"), "{line}");
        if line.starts_with("demo company seeded") {
            break;
        }
    }
    let seeded = started.elapsed();
    let peak = demo.memory("VmHWM")?;
    // The funnel and scoring finish consuming the feeds, then it is idle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = demo.memory("VmRSS")?;
    drop(demo);
    report.add(
        "demo",
        "bowtie dev --demo: seeding 2,000 accounts",
        seeded.as_secs_f64(),
        "s",
        None,
    );
    report.add(
        "demo",
        "bowtie dev --demo peak RSS while seeding",
        peak,
        "MiB",
        Some(200.0),
    );
    report.add(
        "demo",
        "bowtie dev --demo RSS idle after seeding",
        idle,
        "MiB",
        Some(200.0),
    );
    Ok(())
}

/// `GET path` over a fresh HTTP/1.1 connection with the bench key: the status
/// code and the body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {answer:.80}"))?;
    Ok((status, answer))
}

/// Waits until `GET path` answers 200.
pub(crate) async fn wait_http_ok(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get(addr, path).await {
            Ok((200, _)) => return Ok(()),
            outcome if Instant::now() > deadline => {
                anyhow::bail!("GET {path} did not answer 200 within 30 s: {outcome:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The `bowtie` release binary: `BOWTIE_BENCH_BIN` or the workspace's
/// `target/release/bowtie` (`make bench` builds it first).
pub(crate) fn bowtie_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("BOWTIE_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/bowtie"));
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it with `cargo build -p bowtie --release` (make bench does)",
        path.display()
    );
    Ok(path)
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn config_toml(dir: &Path, ports: &[u16], gateway_port: u16) -> String {
    let mut toml = format!(
        "[telemetry]\nlog_filter = \"warn\"\n\n[server]\ndrain_seconds = 0\n\n\
         [auth]\nkeys = [{{ name = \"bench\", hash = \"{}\", scopes = [\"admin\"] }}]\n\n\
         [peers]\napi_key = \"{KEY}\"\n",
        hash_key(KEY)
    );
    for (service, port) in SERVICES.iter().zip(ports) {
        toml.push_str(&format!("{service} = \"http://127.0.0.1:{port}\"\n"));
    }
    for (service, port) in SERVICES.iter().zip(ports) {
        toml.push_str(&format!(
            "\n[{service}]\nlisten = \"127.0.0.1:{port}\"\n\n[{service}.database]\nurl = \"sqlite://{}\"\n",
            dir.join(format!("{service}.db")).display()
        ));
    }
    toml.push_str(&format!(
        "\n[gateway]\nlisten = \"127.0.0.1:{gateway_port}\"\n"
    ));
    toml
}

/// Starts each of [`SERVICES`] as its own `bowtie serve` process on its
/// port, in order, each serving before the next starts.
pub(crate) async fn start_services(
    bin: &Path,
    config: &Path,
    ports: &[u16],
) -> anyhow::Result<Vec<(&'static str, Process)>> {
    let mut processes = Vec::new();
    for (service, port) in SERVICES.iter().zip(ports) {
        let child = Process::spawn(
            Command::new(bin)
                .arg("--config")
                .arg(config)
                .args(["serve", service]),
            service,
        )?;
        let addr: SocketAddr = ([127, 0, 0, 1], *port).into();
        wait_serving(addr)
            .await
            .with_context(|| format!("{service} did not start"))?;
        processes.push((*service, child));
    }
    Ok(processes)
}

/// Starts `bowtie serve gateway` and waits until it answers on `addr`.
pub(crate) async fn start_gateway(
    bin: &Path,
    config: &Path,
    addr: SocketAddr,
) -> anyhow::Result<Process> {
    let gateway = Process::spawn(
        Command::new(bin)
            .arg("--config")
            .arg(config)
            .args(["serve", "gateway"]),
        "gateway",
    )?;
    wait_http_ok(addr, "/healthz")
        .await
        .context("the gateway did not start")?;
    Ok(gateway)
}

/// A child process that is killed when dropped.
pub(crate) struct Process(Child);

impl Process {
    pub(crate) fn spawn(command: &mut Command, name: &str) -> anyhow::Result<Self> {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self(child))
    }

    /// A memory figure of `/proc/<pid>/status` (VmRSS, VmHWM) in MiB.
    pub(crate) fn memory(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in /proc status"))?;
        Ok(kib / 1024.0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

async fn wait_connectable(addr: SocketAddr) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match connect(addr).await {
            Ok(channel) => return Ok(channel),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub(crate) async fn wait_serving(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut health = HealthClient::new(wait_connectable(addr).await?);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if status.is_ok_and(|s| s == ServingStatus::Serving as i32) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "not serving after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn authorized<T>(message: T) -> Request<T> {
    authorized_as(message, KEY)
}

/// `message` with `authorization: Bearer <credential>` (an API key or a JWT).
fn authorized_as<T>(message: T, credential: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {credential}")) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

async fn seed_accounts(channel: Channel) -> anyhow::Result<Vec<String>> {
    let mut client = AccountsServiceClient::new(channel);
    let segments = [Segment::Smb, Segment::MidMarket, Segment::Enterprise];
    let mut ids = Vec::with_capacity(ACCOUNTS);
    for i in 0..ACCOUNTS {
        let account = Account {
            name: format!("Customer {i:04}"),
            segment: segments[i % 3] as i32,
            industry: "software".into(),
            owner: format!("owner-{}", i % 7),
            csm: format!("csm-{}", i % 5),
            ..Account::default()
        };
        let created = client
            .create_account(authorized(CreateAccountRequest {
                account: Some(account),
                idempotency_key: String::new(),
            }))
            .await?
            .into_inner()
            .account
            .context("no account")?;
        ids.push(created.id);
    }
    Ok(ids)
}

/// GetAccount of random known ids at each of `levels`, with `credential`,
/// over up to eight connections shared by the workers.
async fn get_account_load(
    addr: SocketAddr,
    ids: &[String],
    duration: Duration,
    credential: &str,
    levels: &[usize],
) -> anyhow::Result<Vec<LoadResult>> {
    let mut out = Vec::new();
    for &concurrency in levels {
        let mut clients = Vec::new();
        for _ in 0..concurrency.clamp(1, 8) {
            clients.push(AccountsServiceClient::new(connect(addr).await?));
        }
        let clients = std::sync::Arc::new(clients);
        let ids = std::sync::Arc::new(ids.to_vec());
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let credential: std::sync::Arc<str> = credential.into();
        let result = load::run(concurrency, duration, move |worker| {
            let mut client = clients[worker % clients.len()].clone();
            let n = counter.fetch_add(7_919, std::sync::atomic::Ordering::Relaxed);
            let id = ids[n % ids.len()].clone();
            let credential = credential.clone();
            async move {
                client
                    .get_account(authorized_as(GetAccountRequest { id }, &credential))
                    .await
                    .map(|_| ())
            }
        })
        .await;
        println!(
            "  {addr} at {concurrency:>2}: {:>8.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            result.per_second,
            ms(result.p50),
            ms(result.p99),
            result.errors
        );
        out.push(result);
    }
    Ok(out)
}

/// Serves the echo server on `addr` until killed (`bowtie-bench --echo-server`).
pub fn serve_echo(addr: SocketAddr) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            tonic::transport::Server::builder()
                .add_service(AccountsServiceServer::new(Echo))
                .serve(addr)
                .await
        })?;
    Ok(())
}

/// A bare tonic implementation of the accounts contract: `GetAccount`
/// answers a fixed account of the same shape from memory; nothing else is
/// implemented.
struct Echo;

fn echo_account(id: String) -> Account {
    let now = prost_types::Timestamp {
        seconds: 1_767_225_600,
        nanos: 0,
    };
    Account {
        id,
        name: "Customer 0001".into(),
        segment: Segment::MidMarket as i32,
        coverage_model: 2,
        industry: "software".into(),
        owner: "owner-1".into(),
        csm: "csm-1".into(),
        strategic: false,
        external_ids: Vec::new(),
        status: 1,
        version: 1,
        create_time: Some(now),
        update_time: Some(now),
        tags: Vec::new(),
        attributes: std::collections::HashMap::new(),
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AccountsService for Echo {
    async fn get_account(&self, request: Request<GetAccountRequest>) -> Answer<GetAccountResponse> {
        Ok(Response::new(GetAccountResponse {
            account: Some(echo_account(request.into_inner().id)),
        }))
    }
    async fn create_account(
        &self,
        _: Request<CreateAccountRequest>,
    ) -> Answer<CreateAccountResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn update_account(
        &self,
        _: Request<UpdateAccountRequest>,
    ) -> Answer<UpdateAccountResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn list_accounts(&self, _: Request<ListAccountsRequest>) -> Answer<ListAccountsResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn upsert_account_by_external_id(
        &self,
        _: Request<UpsertAccountByExternalIdRequest>,
    ) -> Answer<UpsertAccountByExternalIdResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn archive_account(
        &self,
        _: Request<ArchiveAccountRequest>,
    ) -> Answer<ArchiveAccountResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn create_contact(
        &self,
        _: Request<CreateContactRequest>,
    ) -> Answer<CreateContactResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn get_contact(&self, _: Request<GetContactRequest>) -> Answer<GetContactResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn update_contact(
        &self,
        _: Request<UpdateContactRequest>,
    ) -> Answer<UpdateContactResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn list_contacts(&self, _: Request<ListContactsRequest>) -> Answer<ListContactsResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn list_audit_events(
        &self,
        _: Request<ListAuditEventsRequest>,
    ) -> Answer<ListAuditEventsResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn delete_contact(
        &self,
        _: Request<DeleteContactRequest>,
    ) -> Answer<DeleteContactResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn mark_contact_left(
        &self,
        _: Request<MarkContactLeftRequest>,
    ) -> Answer<MarkContactLeftResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn declare_attribute(
        &self,
        _: Request<bowtie_proto::accounts::DeclareAttributeRequest>,
    ) -> Answer<bowtie_proto::accounts::DeclareAttributeResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn delete_attribute_declaration(
        &self,
        _: Request<bowtie_proto::accounts::DeleteAttributeDeclarationRequest>,
    ) -> Answer<bowtie_proto::accounts::DeleteAttributeDeclarationResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn list_attribute_declarations(
        &self,
        _: Request<bowtie_proto::accounts::ListAttributeDeclarationsRequest>,
    ) -> Answer<bowtie_proto::accounts::ListAttributeDeclarationsResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn link_source_user(
        &self,
        _: Request<bowtie_proto::accounts::LinkSourceUserRequest>,
    ) -> Answer<bowtie_proto::accounts::LinkSourceUserResponse> {
        Err(Status::unimplemented("echo"))
    }
    async fn get_source_users(
        &self,
        _: Request<bowtie_proto::accounts::GetSourceUsersRequest>,
    ) -> Answer<bowtie_proto::accounts::GetSourceUsersResponse> {
        Err(Status::unimplemented("echo"))
    }
    type WatchEventsStream = futures::stream::Empty<Result<WatchEventsResponse, Status>>;
    async fn watch_events(
        &self,
        _: Request<WatchEventsRequest>,
    ) -> Answer<Self::WatchEventsStream> {
        Err(Status::unimplemented("echo"))
    }
    type ExportAccountsStream =
        futures::stream::Empty<Result<bowtie_proto::accounts::ExportAccountsResponse, Status>>;
    async fn export_accounts(
        &self,
        _: Request<bowtie_proto::accounts::ExportAccountsRequest>,
    ) -> Answer<Self::ExportAccountsStream> {
        Err(Status::unimplemented("echo"))
    }
    type ImportAccountsStream =
        futures::stream::Empty<Result<bowtie_proto::accounts::ImportAccountsResponse, Status>>;
    async fn import_accounts(
        &self,
        _: Request<tonic::Streaming<bowtie_proto::accounts::ImportAccountsRequest>>,
    ) -> Answer<Self::ImportAccountsStream> {
        Err(Status::unimplemented("echo"))
    }
}
