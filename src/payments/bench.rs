//! `carepay bench pay`: a load generator driving many signed terminals through real gRPC
//! against the in-process sandbox operator (instant success), on SQLite and, when given a
//! server, on PostgreSQL next to `pgbench`'s built-in TPC-B-like script at the same client
//! count, in one run. Every payment is the full path: signature check, nonce, idempotency
//! key, payment row, operator call, ledger entry. First, in the same run, the operator
//! signature schemes are timed on their own: microseconds per sign and per verify of an
//! operator request, Ed25519 next to SM2/SM3.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::app::{App, Limits};
use crate::directory::{NewFacility, NewRegion, NewTerminal};
use crate::domain::access::Principal;
use crate::domain::directory::{FacilityKind, Name, PublicKey, RegionLevel, Scope, WalletId};
use crate::domain::ids::TokenId;
use crate::domain::role::Role;
use crate::grpc::client::{new_nonce, now_s, sign};
use crate::grpc::proto;
use crate::grpc::proto::terminal_service_client::TerminalServiceClient;
use crate::http::HttpSettings;
use crate::operator::client::OperatorSettings;
use crate::operator::clock::Clock;
use crate::operator::sandbox::SandboxConfig;
use crate::operator::setup::OperatorTarget;
use crate::operator::signing::{SignatureAlgorithm, Signer, request_message};
use crate::store::{PoolSettings, Store};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Concurrent terminals, each with one request in flight; also pgbench's client count.
    pub terminals: usize,
    pub duration_s: u64,
    /// A PostgreSQL server url: scratch databases are created there (and dropped).
    pub postgres_url: Option<String>,
    /// Signs and verifies per algorithm in the signature measurement.
    pub signature_iterations: usize,
    /// What carepay and the in-process operator sign operator messages with in the payment runs.
    pub operator_algorithm: SignatureAlgorithm,
}

/// One signature scheme's cost, measured on one thread.
#[derive(Clone, Debug)]
pub struct SignatureCost {
    pub algorithm: SignatureAlgorithm,
    pub iterations: usize,
    pub sign_us: f64,
    pub verify_us: f64,
}

/// The spec's request vector body: what a terminal payment's operator request looks like.
const SIGNED_BODY: &[u8] = r#"{"merchant_wallet_id":"0021000000000001","out_trade_no":"P-20261128-0001","amount":"12.50","payer_code":"0100000000000000000","description":"午餐","terminal_id":"trm_01"}"#.as_bytes();

/// Times `iterations` signatures and as many verifications of one operator request message
/// per algorithm (the verifier's window and replay checks left out: they are the same for both).
pub fn measure_signatures(iterations: usize) -> anyhow::Result<Vec<SignatureCost>> {
    let message = request_message("POST", "/v1/payments/code", 1_795_900_000, "n0nce0123456789abcdef", SIGNED_BODY);
    let mut costs = Vec::new();
    for algorithm in [SignatureAlgorithm::Ed25519, SignatureAlgorithm::Sm2Sm3] {
        let signer = Signer::generate_with(algorithm, "carepay-bench", Clock::system())
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let key = signer.verifying_key();
        let started = Instant::now();
        let mut signature = String::new();
        for _ in 0..iterations {
            signature = std::hint::black_box(signer.signature_value(std::hint::black_box(&message)));
        }
        let sign_us = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;
        let raw = signature
            .split_once(':')
            .and_then(|(_, encoded)| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(encoded).ok()
            })
            .context("a labelled base64 signature")?;
        let started = Instant::now();
        for _ in 0..iterations {
            anyhow::ensure!(
                key.verifies(std::hint::black_box(&message), std::hint::black_box(&raw)),
                "{algorithm} verifies"
            );
        }
        let verify_us = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;
        costs.push(SignatureCost { algorithm, iterations, sign_us, verify_us });
    }
    Ok(costs)
}

/// One backend's result.
#[derive(Clone, Debug)]
pub struct Measured {
    pub label: String,
    pub completed: u64,
    pub errors: u64,
    pub per_second: f64,
    pub average_ms: f64,
    /// Percentiles, where the tool reports them (pgbench reports only the average).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

pub async fn run(options: BenchOptions) -> anyhow::Result<String> {
    let iterations = options.signature_iterations.max(1);
    let signatures = tokio::task::spawn_blocking(move || measure_signatures(iterations)).await??;
    let mut rows = Vec::new();
    let sqlite_path = std::env::temp_dir().join(format!("carepay-bench-{}.db", uuid::Uuid::new_v4().simple()));
    let sqlite = measure_carepay("carepay pay, SQLite", &Store::sqlite_url(&sqlite_path), &options).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_path.display()));
    }
    rows.push(sqlite?);
    if let Some(server) = &options.postgres_url {
        let scratch = ScratchDatabase::create(server, "carepay_bench").await?;
        let measured = measure_carepay("carepay pay, PostgreSQL", &scratch.url, &options).await;
        scratch.drop().await;
        rows.push(measured?);
        rows.push(measure_pgbench(server, &options).await?);
    }
    Ok(report(&options, &signatures, &rows))
}

fn report(options: &BenchOptions, signatures: &[SignatureCost], rows: &[Measured]) -> String {
    let mut out = String::from(
        "operator request signatures, one thread\n\n| algorithm | iterations | sign µs | verify µs | signs/s | verifies/s |\n|---|---|---|---|---|---|\n",
    );
    for cost in signatures {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {:.0} |\n",
            cost.algorithm,
            cost.iterations,
            cost.sign_us,
            cost.verify_us,
            1e6 / cost.sign_us,
            1e6 / cost.verify_us
        ));
    }
    out.push_str(&format!(
        "\n{} concurrent terminals (pgbench: same client count), {} s each, operator messages signed with {}\n\n| run | completed | errors | per second | avg ms | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|\n",
        options.terminals, options.duration_s, options.operator_algorithm
    ));
    let ms = |value: Option<f64>| value.map(|ms| format!("{ms:.2}")).unwrap_or_else(|| String::from("-"));
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {} | {} |\n",
            row.label,
            row.completed,
            row.errors,
            row.per_second,
            row.average_ms,
            ms(row.p50_ms),
            ms(row.p99_ms)
        ));
    }
    out
}

/// A database created for one measurement and dropped after it.
pub(crate) struct ScratchDatabase {
    server: String,
    name: String,
    pub(crate) url: String,
}

impl ScratchDatabase {
    pub(crate) async fn create(server: &str, prefix: &str) -> anyhow::Result<ScratchDatabase> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = Store::connect(server, &PoolSettings { max_connections: 1, ..PoolSettings::default() }).await?;
        admin.execute_raw(&format!("CREATE DATABASE {name}")).await?;
        admin.close().await;
        let base = server.rsplit_once('/').map(|(base, _)| base).unwrap_or(server);
        Ok(ScratchDatabase { server: server.to_owned(), url: format!("{base}/{name}"), name })
    }

    pub(crate) async fn drop(self) {
        if let Ok(admin) =
            Store::connect(&self.server, &PoolSettings { max_connections: 1, ..PoolSettings::default() }).await
        {
            let _ = admin.execute_raw(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await;
            admin.close().await;
        }
    }
}

async fn measure_carepay(label: &str, url: &str, options: &BenchOptions) -> anyhow::Result<Measured> {
    let pool = PoolSettings { max_connections: options.terminals.clamp(2, 64) as u32, ..PoolSettings::default() };
    let store = Store::connect(url, &pool).await?;
    store.migrate().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let signer = Signer::generate_with(options.operator_algorithm, "carepay-bench", Clock::system())
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    let sandbox = SandboxConfig {
        max_records: 10_000_000,
        signing_algorithm: options.operator_algorithm,
        ..SandboxConfig::default()
    };
    let setup = crate::operator::setup::connect(
        OperatorTarget::InProcess(sandbox),
        signer,
        OperatorSettings { max_in_flight: options.terminals.max(1), ..OperatorSettings::default() },
        None,
        Clock::system(),
    )
    .await?;
    // The load generator is one trusted caller per terminal, measured flat out.
    let unlimited = crate::rate_limit::Rate { per_second: 1_000_000, burst: 1_000_000 };
    let limits = Limits { token_rate: unlimited, terminal_rate: unlimited, ..Limits::default() };
    let app = App::new(store.clone(), limits).with_operator(setup.link);
    let keys = register_terminals(&app, options.terminals).await?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_app = app.clone();
    let server = tokio::spawn(async move {
        // The bench measures the payment path, not admission: every terminal is let in.
        let lanes = crate::http::lanes::LaneSettings { terminal_max_in_flight: 100_000, ..Default::default() };
        let settings = HttpSettings { max_in_flight_requests: 100_000, lanes, ..HttpSettings::default() };
        let stop = async move {
            let _ = stop_rx.await;
        };
        crate::server::serve(server_app, &settings, listener, stop, Duration::from_secs(5)).await
    });

    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))?.connect().await?;
    let deadline = Instant::now() + Duration::from_secs(options.duration_s);
    let mut tasks = Vec::new();
    for (terminal_id, key) in keys {
        let client = TerminalServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(drive_terminal(client, terminal_id, key, deadline)));
    }
    let started = Instant::now();
    let mut latencies_us: Vec<u32> = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, failed) = task.await?;
        latencies_us.extend(latencies);
        errors += failed;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = server.await;
    store.close().await;
    latencies_us.sort_unstable();
    let percentile = |p: f64| -> Option<f64> {
        let last = latencies_us.len().checked_sub(1)?;
        let index = (last as f64 * p).round() as usize;
        Some(f64::from(latencies_us[index]) / 1_000.0)
    };
    let latency_sum_us: u64 = latencies_us.iter().map(|us| u64::from(*us)).sum();
    Ok(Measured {
        label: label.to_owned(),
        completed: latencies_us.len() as u64,
        errors,
        per_second: latencies_us.len() as f64 / elapsed_s,
        average_ms: latency_sum_us as f64 / latencies_us.len().max(1) as f64 / 1_000.0,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
    })
}

/// Terminals per facility: a district's canteens each have a few counters.
const TERMINALS_PER_FACILITY: usize = 4;

/// One region, a facility per few terminals, `count` terminals with fresh keys.
async fn register_terminals(app: &App, count: usize) -> anyhow::Result<Vec<(String, Arc<Ed25519KeyPair>)>> {
    let root = Principal { token_id: TokenId::generate(), role: Role::Admin, scope: Scope::All, request_id: None };
    let name = |raw: &str| Name::parse(raw).map_err(|error| anyhow::anyhow!("{error}"));
    let region = app
        .create_region(&root, NewRegion { parent_id: None, level: RegionLevel::District, name: name("压测区")? })
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let rng = ring::rand::SystemRandom::new();
    let mut terminals = Vec::with_capacity(count);
    let mut facility = None;
    for n in 0..count {
        if n % TERMINALS_PER_FACILITY == 0 {
            let wallet = format!("00219999{:08}", n / TERMINALS_PER_FACILITY);
            let created = app
                .create_facility(
                    &root,
                    NewFacility {
                        region_id: region.id.clone(),
                        organisation_id: None,
                        name: name(&format!("压测助餐点{}", n / TERMINALS_PER_FACILITY))?,
                        kind: FacilityKind::MealCanteen,
                        merchant_wallet_id: WalletId::parse(&wallet).map_err(|error| anyhow::anyhow!("{error}"))?,
                    },
                )
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            facility = Some(created);
        }
        let facility = facility.as_ref().expect("created on the first terminal");
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("key generation failed"))?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("key parsing failed"))?;
        use base64::Engine as _;
        let public = base64::engine::general_purpose::STANDARD.encode(key.public_key().as_ref());
        let terminal = app
            .register_terminal(
                &root,
                NewTerminal {
                    facility_id: facility.id.clone(),
                    label: name(&format!("压测终端{n}"))?,
                    public_key: PublicKey::parse(&public).map_err(|error| anyhow::anyhow!("{error}"))?,
                },
            )
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        terminals.push((terminal.id.to_string(), Arc::new(key)));
    }
    Ok(terminals)
}

/// Pay in a loop until the deadline; returns each success's latency and the error count.
async fn drive_terminal(
    mut client: TerminalServiceClient<tonic::transport::Channel>,
    terminal_id: String,
    key: Arc<Ed25519KeyPair>,
    deadline: Instant,
) -> (Vec<u32>, u64) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut sequence: u64 = 0;
    while Instant::now() < deadline {
        sequence += 1;
        let message = proto::PayRequest {
            request_id: format!("bench-{sequence}"),
            amount: String::from("12.50"),
            description: String::from("午餐"),
            source: Some(proto::pay_request::Source::PayerCode(String::from("013400000000000000"))),
        };
        let request = sign(&terminal_id, &key, "Pay", message, now_s(), &new_nonce());
        let started = Instant::now();
        match client.pay(request).await {
            Ok(response) if response.get_ref().status == proto::PaymentStatus::Succeeded as i32 => {
                latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            _ => errors += 1,
        }
    }
    (latencies, errors)
}

/// pgbench's built-in TPC-B-like script on a scratch database of the same server, with the
/// same client count and duration, at scale 10: ten branch rows, so the clients are not all
/// queued on a single row as at scale 1 (which would make the baseline slower, not fairer).
async fn measure_pgbench(server: &str, options: &BenchOptions) -> anyhow::Result<Measured> {
    let scratch = ScratchDatabase::create(server, "carepay_pgbench").await?;
    let url = scratch.url.clone();
    let clients = options.terminals.to_string();
    let duration = options.duration_s.to_string();
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let init = std::process::Command::new("pgbench")
            .args(["-i", "-q", "-s", "10", &url])
            .output()
            .context("running pgbench (install postgresql-contrib or the postgresql client)")?;
        anyhow::ensure!(init.status.success(), "pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
        let run = std::process::Command::new("pgbench")
            .args(["-n", "-c", &clients, "-j", "2", "-T", &duration, "-r", &url])
            .output()?;
        anyhow::ensure!(run.status.success(), "pgbench failed: {}", String::from_utf8_lossy(&run.stderr));
        Ok(String::from_utf8_lossy(&run.stdout).into_owned())
    })
    .await?;
    scratch.drop().await;
    let output = result?;
    let number_after = |prefix: &str| -> f64 {
        output
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    };
    let tps = number_after("tps =");
    Ok(Measured {
        label: String::from("pgbench TPC-B-like, same PostgreSQL"),
        completed: number_after("number of transactions actually processed:") as u64,
        errors: number_after("number of failed transactions:") as u64,
        per_second: tps,
        average_ms: number_after("latency average ="),
        p50_ms: None,
        p99_ms: None,
    })
}
