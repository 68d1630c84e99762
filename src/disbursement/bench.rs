//! `carepay bench batch-upload` and `carepay bench batch-run` on scratch PostgreSQL databases.
//!
//! Upload: a generated N-line file is read, checked and stored by the real use case (streamed
//! from disk, personal data digested and sealed per line), then the same file is loaded with
//! `psql \copy` into a plain table with the same columns, as the floor a database can do.
//! Run: an M-line batch is executed against the in-process sandbox operator (instant answers)
//! with durable per-line state; transfers per second from `run` to `completed`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::access::NewToken;
use crate::app::{App, Limits};
use crate::directory::NewRegion;
use crate::disbursement::{NewProgramme, Upload, UploadRequest};
use crate::domain::access::Principal;
use crate::domain::batch::Period;
use crate::domain::directory::{Name, RegionLevel, WalletId};
use crate::domain::disbursement::ControlTotals;
use crate::domain::money::Amount;
use crate::domain::role::Role;
use crate::store::{PoolSettings, Store};

const FUNDING_WALLET: &str = "0031000000000001";
/// Each line pays this many fen.
const LINE_FEN: i64 = 1_000;

/// The resident set of this process, from /proc (0 where there is none).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:").and_then(|r| r.trim().split(' ').next()?.parse().ok()))
        })
        .unwrap_or(0)
}

fn citizen_id(n: u64) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    // Region code varies with n / 1000 so 1,000,000 people get distinct numbers with valid dates.
    let first17 = format!("{:06}19500101{:03}", 110_000 + n / 1000, n % 1000);
    let sum: u32 = first17.bytes().zip(WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    format!("{first17}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

fn wallet(n: u64) -> String {
    format!("0021{n:012}")
}

/// Writes an N-line batch file (UTF-8, Chinese headers) and returns its path.
fn write_file(dir: &std::path::Path, lines: u64) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join(format!("batch-{lines}.csv"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(out, "姓名,身份证号,钱包编号,金额,备注")?;
    for n in 0..lines {
        writeln!(out, "老人{n},{},{},10.00,十一月高龄津贴", citizen_id(n), wallet(n))?;
    }
    out.flush()?;
    Ok(path)
}

struct Scratch {
    server: String,
    name: String,
    url: String,
}

impl Scratch {
    async fn create(server: &str) -> anyhow::Result<Scratch> {
        let name = format!("carepay_bench_batch_{}", uuid::Uuid::new_v4().simple());
        let admin = Store::connect(server, &PoolSettings { max_connections: 1, ..PoolSettings::default() }).await?;
        admin.execute_raw(&format!("CREATE DATABASE {name}")).await?;
        admin.close().await;
        let base = server.rsplit_once('/').map(|(base, _)| base).unwrap_or(server);
        Ok(Scratch { server: server.to_owned(), url: format!("{base}/{name}"), name })
    }

    async fn drop(self) {
        if let Ok(admin) =
            Store::connect(&self.server, &PoolSettings { max_connections: 1, ..PoolSettings::default() }).await
        {
            let _ = admin.execute_raw(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await;
            admin.close().await;
        }
    }
}

/// An app on the scratch database with a district, a programme and clerk/approver principals.
async fn office(
    url: &str,
    budget: Amount,
) -> anyhow::Result<(App, Principal, Principal, crate::domain::ids::ProgrammeId)> {
    let store = Store::connect(url, &PoolSettings::default()).await?;
    store.migrate().await?;
    let app = App::new(store, Limits::default());
    let token = |role: Role, region| NewToken {
        role,
        scope_region_id: region,
        label: Name::parse("bench").expect("a valid label"),
        lifetime_days: None,
    };
    let err = |e: crate::error::Error| anyhow::anyhow!("{e}");
    let root = app.issue_token_unchecked(token(Role::Admin, None), None).await.map_err(err)?;
    let root = app.authenticate(root.secret.expose(), None).await.map_err(err)?;
    let new_region =
        NewRegion { parent_id: None, level: RegionLevel::District, name: Name::parse("吴江区").expect("name") };
    let region = app.create_region(&root, new_region).await.map_err(err)?;
    let clerk =
        app.issue_token_unchecked(token(Role::SubsidyClerk, Some(region.id.clone())), None).await.map_err(err)?;
    let clerk = app.authenticate(clerk.secret.expose(), None).await.map_err(err)?;
    let approver =
        app.issue_token_unchecked(token(Role::SubsidyApprover, Some(region.id.clone())), None).await.map_err(err)?;
    let approver = app.authenticate(approver.secret.expose(), None).await.map_err(err)?;
    let cap = Amount::from_fen(50_000)?;
    let programme = app
        .create_programme(
            &root,
            NewProgramme {
                region_id: region.id,
                name: Name::parse("bench").expect("a valid name"),
                funding_wallet_id: WalletId::parse(FUNDING_WALLET).expect("wallet id"),
                budget,
                per_payment_cap: cap,
                per_period_cap: cap,
                designated_merchants: Vec::new(),
                starts_on: String::from("2026-01-01"),
                ends_on: String::from("2026-12-31"),
            },
        )
        .await
        .map_err(err)?;
    Ok((app, clerk, approver, programme.id))
}

async fn upload(
    app: &App,
    clerk: &Principal,
    programme: &crate::domain::ids::ProgrammeId,
    path: &std::path::Path,
    lines: u64,
) -> anyhow::Result<crate::domain::batch::Batch> {
    let request = UploadRequest {
        programme_id: programme.clone(),
        period: Period::parse("2026-11").expect("period"),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        stated: ControlTotals { line_count: lines, total: Amount::from_fen(LINE_FEN * i64::try_from(lines)?)? },
    };
    let file = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path)?);
    match app.upload_batch(clerk, request, file).await.map_err(|e| anyhow::anyhow!("{e}"))? {
        Upload::Accepted(batch) => Ok(batch),
        Upload::Rejected(rejection) => anyhow::bail!("the bench file was refused: {:?}", rejection.errors.first()),
    }
}

/// Upload + validate + store N lines, next to `psql \copy` of the same file.
pub async fn upload_bench(lines: u64, postgres_url: &str) -> anyhow::Result<String> {
    let dir = tempfile_dir()?;
    let path = write_file(&dir, lines)?;
    let size = std::fs::metadata(&path)?.len();
    let scratch = Scratch::create(postgres_url).await?;
    let result = async {
        let budget = Amount::from_fen(LINE_FEN * i64::try_from(lines)? * 2)?;
        let (app, clerk, _, programme) = office(&scratch.url, budget).await?;
        let rss_before = rss_kib();
        let started = Instant::now();
        let batch = upload(&app, &clerk, &programme, &path, lines).await?;
        let upload_time = started.elapsed();
        let rss_after = rss_kib();
        app.store.close().await;

        let table = "CREATE TABLE copy_lines (name TEXT NOT NULL, citizen_id TEXT NOT NULL, wallet_id TEXT NOT NULL, \
                     amount TEXT NOT NULL, memo TEXT NOT NULL)";
        let copy = format!("\\copy copy_lines FROM '{}' WITH (FORMAT csv, HEADER true)", path.display());
        let started = Instant::now();
        let status = std::process::Command::new("psql")
            .args([scratch.url.as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-c", table, "-c", &copy])
            .status()?;
        let copy_time = started.elapsed();
        anyhow::ensure!(status.success(), "psql \\copy failed");
        Ok::<_, anyhow::Error>(format!(
            "batch upload, PostgreSQL, {lines} lines ({:.1} MB):\n  carepay upload+validate+store: {:>8.2} s ({} lines/s), batch {}\n  psql \\copy (plain table):     {:>8.2} s\n  ratio: {:.2}x   peak RSS before/after upload: {} / {} KiB",
            size as f64 / 1e6,
            secs(upload_time),
            per_s(lines, upload_time),
            batch.id,
            secs(copy_time),
            secs(upload_time) / secs(copy_time).max(1e-9),
            rss_before,
            rss_after,
        ))
    }
    .await;
    scratch.drop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Execute an M-line batch against the in-process sandbox (instant answers).
pub async fn run_bench(
    lines: u64,
    postgres_url: &str,
    settings: crate::disbursement::DisbursementSettings,
) -> anyhow::Result<String> {
    let dir = tempfile_dir()?;
    let path = write_file(&dir, lines)?;
    let scratch = Scratch::create(postgres_url).await?;
    let result = async {
        let total = Amount::from_fen(LINE_FEN * i64::try_from(lines)?)?;
        let (app, clerk, approver, programme) = office(&scratch.url, total).await?;
        let signer = crate::operator::signing::Signer::generate("carepay-bench", crate::operator::clock::Clock::system())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let setup = crate::operator::setup::connect(
            crate::operator::setup::OperatorTarget::InProcess(crate::operator::sandbox::SandboxConfig::default()),
            signer,
            crate::operator::client::OperatorSettings::default(),
            None,
            crate::operator::clock::Clock::system(),
        )
        .await?;
        let sandbox = setup.sandbox.clone().ok_or_else(|| anyhow::anyhow!("no in-process sandbox"))?;
        sandbox.open_wallet(FUNDING_WALLET, "民政局", 1, total).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for n in 0..lines {
            sandbox.open_wallet(&wallet(n), &format!("老人{n}"), 2, Amount::ZERO).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        let mut app = app.with_operator(setup.link);
        app.disbursement = settings;
        let batch = upload(&app, &clerk, &programme, &path, lines).await?;
        app.approve_batch(&approver, &batch.id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(super::worker::run(app.clone(), async move {
            let _ = stop_rx.await;
        }));
        let started = crate::domain::time::UnixMs::now();
        app.run_batch(&clerk, &batch.id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        // Polled slowly so the bench's own progress queries cost the database little; the time
        // measured is the batch's recorded completion, not when the poll noticed it.
        let progress = loop {
            let (now, progress) = app.batch_progress(&clerk, &batch.id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            if now.status == crate::domain::batch::BatchStatus::Completed {
                break progress;
            }
            tokio::time::sleep(Duration::from_millis(1_000)).await;
        };
        let steps = app.store.batch_steps(&batch.id).await?;
        let completed_at = steps
            .iter()
            .find(|step| step.to == crate::domain::batch::BatchStatus::Completed)
            .map(|step| step.at)
            .ok_or_else(|| anyhow::anyhow!("the completed batch has no completion step"))?;
        let elapsed = Duration::from_millis(u64::try_from(completed_at.0 - started.0).unwrap_or_default());
        let _ = stop_tx.send(());
        let _ = worker.await;
        app.store.close().await;
        Ok::<_, anyhow::Error>(format!(
            "batch run, PostgreSQL, in-process sandbox, {lines} lines: {:.2} s, {} transfers/s (succeeded {}, failed {}; concurrency {}, rate cap {}/s)",
            secs(elapsed),
            per_s(lines, elapsed),
            progress.succeeded.lines,
            progress.failed.lines,
            app.disbursement.concurrency,
            app.disbursement.rate_per_s,
        ))
    }
    .await;
    scratch.drop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn per_s(lines: u64, d: Duration) -> u64 {
    (lines as f64 / d.as_secs_f64().max(1e-9)) as u64
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("carepay-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
