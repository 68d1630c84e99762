//! The `carepay` command line.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::access::NewToken;
use crate::app::{App, Limits};
use crate::config::{DatabaseConfig, OperatorConfig, ReconciliationConfig, SecretKeyConfig, ServeConfig};
use crate::domain::directory::Name;
use crate::domain::ids::RegionId;
use crate::domain::role::Role;
use crate::operator::clock::Clock;
use crate::operator::sandbox::SandboxConfig;
use crate::operator::setup::OperatorTarget;
use crate::operator::signing::Signer;
use crate::store::Store;

#[derive(Parser, Debug)]
#[command(name = "carepay", version, about = "Digital-RMB settlement for elder-care facilities")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service (REST API for the back office; migrations are applied first).
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Manage back-office API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Check the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Seed a demo district (regions, facilities, terminals, today's payments, a paid subsidy
    /// batch, reconciled days) through the real use cases and the in-process sandbox operator,
    /// and print a token per role. Running it again adds nothing but new tokens.
    Demo {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        keys: SecretKeyConfig,
    },
    /// Keys that seal secrets and personal data at rest.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the OpenAPI document of the REST API.
    Openapi,
    /// Measure throughput on scratch data.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Daily reconciliation against the operator's statements.
    Reconcile {
        #[command(subcommand)]
        command: ReconcileCommand,
    },
    /// Subsidy batches against a running carepay: upload, approve, run, pause, status, result.
    Batch(crate::cli_batch::BatchArgs),
    /// Run the sandbox wallet operator (in memory; for development and tests only).
    SandboxOperator(crate::operator::sandbox::run::SandboxOperatorArgs),
}

/// Everything `carepay serve` is told.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    serve: ServeConfig,
    #[command(flatten)]
    operator: OperatorConfig,
    #[command(flatten)]
    reconciliation: ReconciliationConfig,
    /// Seed the demo district first (as `carepay demo`) and print its tokens; needs the
    /// in-process sandbox operator.
    #[arg(long)]
    demo: bool,
}

#[derive(Subcommand, Debug)]
pub enum ReconcileCommand {
    /// Import a statement file (CSV or gzip, UTF-8 or GB18030) an accountant received, keep it
    /// as the next version of its wallet's day, and run the day.
    Import {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        reconciliation: ReconciliationConfig,
        #[command(flatten)]
        keys: SecretKeyConfig,
        /// The statement file.
        file: std::path::PathBuf,
        /// Who imports it, for the record.
        #[arg(long, default_value = "cli")]
        actor: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Signed terminal payments per second through gRPC, SQLite and PostgreSQL, next to pgbench.
    Pay {
        /// Concurrent terminals (and pgbench clients).
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1_024))]
        terminals: u64,
        /// Seconds each measurement runs.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3_600))]
        duration_s: u64,
        /// A PostgreSQL server url: the bench creates (and drops) scratch databases there.
        /// Without it, only SQLite is measured.
        #[arg(long)]
        postgres_url: Option<String>,
        /// Signatures and verifications timed per algorithm (Ed25519 and SM2) before the runs.
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        signature_iterations: u64,
        /// What carepay and the in-process operator sign operator messages with in the runs.
        #[arg(long, default_value = "ed25519")]
        operator_signing_algorithm: crate::operator::signing::SignatureAlgorithm,
    },
    /// Signed callback deliveries per second to a receiver on loopback, draining a backlog.
    Callbacks {
        /// Events queued before the worker starts.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        events: u64,
        /// A PostgreSQL server url: the bench creates (and drops) a scratch database there.
        /// Default: a scratch SQLite file.
        #[arg(long)]
        postgres_url: Option<String>,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_024))]
        concurrency: u64,
        /// Deliveries claimed per round and outcomes recorded per transaction.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=5_000))]
        batch_size: u64,
    },
    /// One wallet's day: statement lines against carepay payments on PostgreSQL, end to end,
    /// next to DuckDB doing the same classification (`pip install duckdb`).
    Reconcile {
        /// Statement lines and carepay payments.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        lines: u64,
        /// A PostgreSQL server url: the bench creates (and drops) a scratch database there.
        #[arg(long)]
        postgres_url: String,
        /// The Python interpreter with the `duckdb` package.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Upload + validate + store a subsidy batch file on PostgreSQL, next to `psql \copy`.
    BatchUpload {
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        lines: u64,
        /// The PostgreSQL server: the bench creates (and drops) a scratch database there.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        postgres_url: String,
    },
    /// Execute a subsidy batch against the in-process sandbox operator on PostgreSQL.
    BatchRun {
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        lines: u64,
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        postgres_url: String,
        /// Transfers in flight at once.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_024))]
        concurrency: u64,
        /// Transfers started per second at most.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rate_per_s: u32,
        /// Lines claimed per round.
        #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        claim_batch: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the keyed hash chain and name the first broken record (exit status 1 if
    /// any); with checkpoints kept from earlier, also find records removed since.
    Verify {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        keys: SecretKeyConfig,
        /// A head published earlier (`SEQ:HASH` or `SEQ:HASH:SIGNATURE`, from the log's
        /// "audit checkpoint" lines or an export's Audit-Checkpoint header); repeatable.
        #[arg(long)]
        checkpoint: Vec<String>,
    },
    /// Print the chain's head now, signed (`SEQ:HASH:SIGNATURE`), and the key that checks it.
    Checkpoint {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        keys: SecretKeyConfig,
    },
    /// Once, after upgrading from a release whose chain was not keyed: check the records
    /// written before (by their public recipe, and against checkpoints kept from then) and
    /// append a keyed record vouching for them.
    SealLegacy {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        keys: SecretKeyConfig,
        /// A head kept from before the upgrade (`SEQ:HASH`); repeatable.
        #[arg(long)]
        checkpoint: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Print a new random key as `ID:BASE64`, to put first in the key list (then restart every
    /// instance and run `carepay keys reseal`).
    Generate {
        /// The new key's id (letters, digits, '-', '_').
        #[arg(long)]
        id: String,
    },
    /// Re-seal every citizen ID number and callback secret stored under an older key with the
    /// current (first) key, in bounded transactions. Safe to stop and run again.
    Reseal {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        keys: SecretKeyConfig,
        /// Values re-sealed per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_size: u32,
        /// Stop after this many transactions (spread the work over several windows).
        #[arg(long)]
        max_batches: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token and print it once. Needs only database access (and the key file the
    /// audit trail is keyed with), so it creates the first admin credential.
    Create {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        keys: SecretKeyConfig,
        /// admin, facility_manager, subsidy_clerk, subsidy_approver, accountant or auditor.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Confine the token to this region and below (default: every region).
        #[arg(long)]
        region: Option<String>,
        /// A note saying whose token this is.
        #[arg(long, default_value = "created on the command line")]
        label: String,
        /// Days until it expires (default: never).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3_650))]
        lifetime_days: Option<u32>,
    },
}

fn parse_role(raw: &str) -> Result<Role, String> {
    Role::parse(raw).ok_or_else(|| {
        let names: Vec<_> = Role::ALL.iter().map(|role| role.as_str()).collect();
        format!("unknown role {raw:?}; one of {}", names.join(", "))
    })
}

/// carepay's key for signing operator requests: from the key file, or fresh.
fn operator_signer(operator: &OperatorConfig, clock: &Clock) -> anyhow::Result<Signer> {
    match &operator.operator_signing_key_file {
        Some(path) => {
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --operator-signing-key-file {}", path.display()))?;
            let algorithm = operator.operator_signing_algorithm;
            Signer::from_secret_base64(algorithm, &operator.operator_key_id, secret.trim(), clock.clone()).map_err(
                |error| anyhow::anyhow!("--operator-signing-key-file {} ({algorithm}): {error}", path.display()),
            )
        }
        None if operator.operator_url.is_some() => {
            anyhow::bail!(
                "--operator-signing-key-file (CAREPAY_OPERATOR_SIGNING_KEY_FILE) is required with --operator-url"
            )
        }
        None => Signer::generate_with(operator.operator_signing_algorithm, &operator.operator_key_id, clock.clone())
            .map_err(|error| anyhow::anyhow!("cannot generate a signing key: {error:?}")),
    }
}

async fn open_store(database: &DatabaseConfig) -> anyhow::Result<Store> {
    open_store_with(database, crate::store::group_commit::GroupCommitSettings::default()).await
}

/// [`open_store`] for a process taking payments, with its group commit settings.
async fn open_store_with(
    database: &DatabaseConfig,
    group_commit: crate::store::group_commit::GroupCommitSettings,
) -> anyhow::Result<Store> {
    let pool = crate::store::PoolSettings { group_commit, ..database.pool_settings() };
    let store = Store::connect(&database.url(), &pool)
        .await
        .context("cannot open the database (check --database-url / DATABASE_URL or --sqlite-path)")?;
    store.migrate().await.context("cannot apply database migrations")?;
    Ok(store)
}

/// The store, with its audit chain keyed by the configured keys.
async fn open_keyed_store(database: &DatabaseConfig, keys: &SecretKeyConfig) -> anyhow::Result<Store> {
    let secrets = keys.secret_box(database)?;
    let store = open_store(database).await?;
    store.set_audit_keys(crate::audit::audit_keys(&secrets));
    Ok(store)
}

fn parse_checkpoints(given: &[String]) -> anyhow::Result<Vec<crate::domain::audit::GivenCheckpoint>> {
    given
        .iter()
        .map(|text| {
            crate::domain::audit::GivenCheckpoint::parse(text.trim())
                .map_err(|error| anyhow::anyhow!("--checkpoint {text}: {error}"))
        })
        .collect()
}

async fn audit_command(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { database, keys, checkpoint } => {
            let given = parse_checkpoints(&checkpoint)?;
            let store = open_keyed_store(&database, &keys).await?;
            let checkpoints =
                crate::audit::checkpoints_to_check(&store, &given).map_err(|error| anyhow::anyhow!("{error}"))?;
            let verdict = store.verify_audit_chain(&checkpoints).await?;
            store.close().await;
            match verdict.broken {
                None => {
                    println!("audit trail intact up to record {}", verdict.head.seq);
                    println!("checkpoint: {}", store.audit_keys().sign(verdict.head));
                    Ok(())
                }
                Some(link) => anyhow::bail!("audit trail broken at record {}: {}", link.seq, link.reason),
            }
        }
        AuditCommand::Checkpoint { database, keys } => {
            let store = open_keyed_store(&database, &keys).await?;
            let signed = crate::audit::publish_checkpoint(&store, "command line").await?;
            store.close().await;
            println!("checkpoint: {signed}");
            println!("checkpoint key (ed25519, base64url): {}", store.audit_keys().public_key());
            Ok(())
        }
        AuditCommand::SealLegacy { database, keys, checkpoint } => {
            let given = parse_checkpoints(&checkpoint)?;
            let store = open_keyed_store(&database, &keys).await?;
            let sealed = crate::audit::seal_legacy(&store, &given).await;
            store.close().await;
            match sealed? {
                crate::audit::Sealed::Now { legacy_last_seq, seq } => {
                    println!("records 1 to {legacy_last_seq} sealed by record {seq}");
                }
                crate::audit::Sealed::NothingToSeal => println!("no unkeyed records to seal"),
            }
            Ok(())
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Command::Bench { .. }) {
        // Benchmarks print their report on stdout; `CAREPAY_LOG=info` adds phase timings.
        let filter = std::env::var("CAREPAY_LOG").unwrap_or_else(|_| String::from("warn"));
        crate::telemetry::init_logging(crate::telemetry::LogFormat::Text, &filter);
    }
    match cli.command {
        Command::Serve(args) => {
            let ServeArgs { database, serve, operator, reconciliation, demo } = *args;
            crate::telemetry::init_logging(serve.log.log_format, &serve.log.log_filter);
            let extra_roots = serve.extra_roots()?;
            let worker_settings = serve.callbacks.worker_settings(&extra_roots).map_err(anyhow::Error::msg)?;
            let http_settings = serve.http_settings().map_err(anyhow::Error::msg)?;
            let secrets = serve.callbacks.keys.secret_box(&database)?;
            let store = open_store_with(&database, serve.group_commit.settings()).await?;
            tracing::info!(backend = store.backend().as_str(), "database ready");
            let listener = tokio::net::TcpListener::bind(serve.listen)
                .await
                .with_context(|| format!("cannot listen on {} (CAREPAY_LISTEN / --listen)", serve.listen))?;
            let address = listener.local_addr()?;
            // The demo puts last week's days in; the clock it moves is the wall clock again
            // before anything is served.
            let clock = if demo { Clock::adjustable() } else { Clock::system() };
            let signer = operator_signer(&operator, &clock)?;
            // The public half, for the operator to trust (`KEY_ID=ALG:BASE64`).
            tracing::info!(
                key_id = signer.key_id(),
                algorithm = %signer.algorithm(),
                public_key = %signer.public_key_base64(),
                "operator requests are signed with this key"
            );
            let target = match &operator.operator_url {
                None => OperatorTarget::InProcess(SandboxConfig { clock: clock.clone(), ..SandboxConfig::default() }),
                Some(url) => OperatorTarget::Remote {
                    base_url: url.clone(),
                    public_keys: operator.operator_public_keys.clone(),
                    allow_plain_http: operator.operator_allow_plain_http,
                },
            };
            let notify_url = format!("http://{address}{}", crate::http::notifications::NOTIFICATIONS_PATH);
            let setup = crate::operator::setup::connect(
                target,
                signer,
                operator.client_settings(&extra_roots),
                Some(notify_url),
                clock.clone(),
            )
            .await?;
            let mut app = App::new(store.clone(), serve.limits())
                .with_operator(setup.link)
                .with_secrets(secrets)
                .with_clock(clock.clone());
            app.payments = operator.payment_settings();
            app.reconciliation = reconciliation.settings()?;
            app.disbursement = serve.disbursement.settings();
            app.callback_egress = Arc::new(
                serve.callbacks.egress_policy(std::iter::once(address).chain(setup.sandbox_address).collect()),
            );
            if demo {
                let sandbox = setup.sandbox.as_ref().context("--demo needs the in-process sandbox operator")?;
                let seeded = crate::demo::seed(&app, sandbox).await;
                clock.set_ms(crate::domain::time::UnixMs::now().0);
                println!("{}", seeded?);
            }
            tracing::info!(%address, "carepay listening");
            // What a person starting it wants next, on the terminal whatever the log level.
            eprintln!(
                "carepay is running: console http://{address}/console, API document http://{address}/openapi.json"
            );

            let fetch_worker =
                tokio::spawn(crate::reconciliation::fetch::run_worker(app.clone(), reconciliation.fetch_settings()));
            let callbacks_worker = crate::callbacks::worker::spawn(app.clone(), worker_settings)?;
            let checkpoints = tokio::spawn(crate::audit::publish_checkpoints(
                app.store.clone(),
                Duration::from_secs(serve.audit_checkpoint_interval_s),
            ));
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let payments_worker =
                tokio::spawn(crate::payments::worker::run(app.clone(), operator.worker_settings(), {
                    let mut stop_rx = stop_rx.clone();
                    async move {
                        let _ = stop_rx.wait_for(|stop| *stop).await;
                    }
                }));
            let disbursement_worker = tokio::spawn(crate::disbursement::worker::run(app.clone(), {
                let mut stop_rx = stop_rx.clone();
                async move {
                    let _ = stop_rx.wait_for(|stop| *stop).await;
                }
            }));
            crate::server::serve(
                app,
                &http_settings,
                listener,
                crate::server::shutdown_signal(),
                Duration::from_millis(serve.shutdown_grace_ms),
            )
            .await?;
            let _ = stop_tx.send(true);
            let _ = payments_worker.await;
            // A fetch cut short holds only its lease, which runs out; every write is one transaction.
            fetch_worker.abort();
            checkpoints.abort();
            let _ = disbursement_worker.await;
            callbacks_worker.stop().await;
            store.close().await;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Migrate { database } => {
            let store = open_store(&database).await?;
            println!("migrations applied ({})", store.backend().as_str());
            Ok(())
        }
        Command::Token { command: TokenCommand::Create { database, keys, role, region, label, lifetime_days } } => {
            let secrets = keys.secret_box(&database)?;
            let store = open_store(&database).await?;
            let app = App::new(store, Limits::default()).with_secrets(secrets);
            let scope_region_id = region
                .as_deref()
                .map(RegionId::parse)
                .transpose()
                .map_err(|error| anyhow::anyhow!("--region {error}"))?;
            let label = Name::parse(&label).map_err(|error| anyhow::anyhow!("--label {error}"))?;
            let issued = app
                .issue_token_unchecked(NewToken { role, scope_region_id, label, lifetime_days }, None)
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            eprintln!("issued {} token {} (shown once; store it now):", issued.token.role, issued.token.id);
            println!("{}", issued.secret.expose());
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Pay { terminals, duration_s, postgres_url, signature_iterations, operator_signing_algorithm },
        } => {
            let options = crate::payments::bench::BenchOptions {
                terminals: usize::try_from(terminals)?,
                duration_s,
                postgres_url,
                signature_iterations: usize::try_from(signature_iterations)?,
                operator_algorithm: operator_signing_algorithm,
            };
            println!("{}", crate::payments::bench::run(options).await?);
            Ok(())
        }
        Command::Bench { command: BenchCommand::Callbacks { events, postgres_url, concurrency, batch_size } } => {
            let worker = crate::callbacks::worker::WorkerSettings {
                concurrency: usize::try_from(concurrency)?,
                batch_size: u32::try_from(batch_size)?,
                poll_interval_ms: 20,
                ..Default::default()
            };
            let options = crate::callbacks::bench::BenchOptions { events, postgres_url, worker };
            println!("{}", crate::callbacks::bench::run(options).await?);
            Ok(())
        }
        Command::Audit { command } => audit_command(command).await,
        Command::Bench { command: BenchCommand::Reconcile { lines, postgres_url, python } } => {
            let options = crate::reconciliation::bench::BenchOptions { lines, postgres_url, python };
            println!("{}", crate::reconciliation::bench::run(options).await?);
            Ok(())
        }
        Command::Bench { command: BenchCommand::BatchUpload { lines, postgres_url } } => {
            println!("{}", crate::disbursement::bench::upload_bench(lines, &postgres_url).await?);
            Ok(())
        }
        Command::Bench {
            command: BenchCommand::BatchRun { lines, postgres_url, concurrency, rate_per_s, claim_batch },
        } => {
            let settings = crate::disbursement::DisbursementSettings {
                concurrency: usize::try_from(concurrency)?,
                rate_per_s,
                claim_batch,
                ..Default::default()
            };
            println!("{}", crate::disbursement::bench::run_bench(lines, &postgres_url, settings).await?);
            Ok(())
        }
        Command::Demo { database, keys } => {
            let secrets = keys.secret_box(&database)?;
            let store = open_store(&database).await?;
            let clock = Clock::adjustable();
            let signer = Signer::generate("carepay-demo", clock.clone())
                .map_err(|error| anyhow::anyhow!("cannot generate a signing key: {error:?}"))?;
            let setup = crate::operator::setup::connect(
                OperatorTarget::InProcess(SandboxConfig { clock: clock.clone(), ..SandboxConfig::default() }),
                signer,
                crate::operator::client::OperatorSettings::default(),
                None,
                clock.clone(),
            )
            .await?;
            let sandbox = setup.sandbox.clone().context("the in-process sandbox operator")?;
            let app = App::new(store.clone(), Limits::default())
                .with_operator(setup.link)
                .with_secrets(secrets)
                .with_clock(clock);
            let report = crate::demo::seed(&app, &sandbox).await?;
            store.close().await;
            println!("{report}");
            println!("start it with `carepay serve --demo` (the same database) to have the operator's wallets too");
            Ok(())
        }
        Command::Keys { command: KeysCommand::Generate { id } } => {
            println!("{}", crate::callbacks::secrets::generate_key_line(&id)?);
            Ok(())
        }
        Command::Keys { command: KeysCommand::Reseal { database, keys, batch_size, max_batches } } => {
            let secrets = keys.secret_box(&database)?;
            let store = open_store(&database).await?;
            store.set_audit_keys(crate::audit::audit_keys(&secrets));
            let report = crate::keys::reseal_all(&store, &secrets, batch_size, max_batches).await?;
            store.close().await;
            if report.unopenable_total > 0 {
                anyhow::bail!("{report}");
            }
            println!("{report}");
            Ok(())
        }
        Command::Openapi => {
            // A reader that stops early (`carepay openapi | head`) is not an error.
            let document = crate::http::openapi().to_pretty_json()?;
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{document}").and_then(|()| out.flush()) {
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
            Ok(())
        }
        Command::Reconcile { command: ReconcileCommand::Import { database, reconciliation, keys, file, actor } } => {
            let secrets = keys.secret_box(&database)?;
            let store = open_store(&database).await?;
            let mut app = App::new(store, Limits::default()).with_secrets(secrets);
            app.reconciliation = reconciliation.settings()?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let report = crate::reconciliation::import_file(&app, bytes.into(), &actor)
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            println!("{report}");
            Ok(())
        }
        Command::SandboxOperator(args) => crate::operator::sandbox::run::run(args).await,
        Command::Batch(args) => crate::cli_batch::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        // clap's own checks (global and required flags, duplicate names, ...), which
        // otherwise fire only when that subcommand is first run.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
