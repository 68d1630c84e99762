//! `carepay bench reconcile`: one wallet's day of a million statement lines against a
//! million carepay payments on PostgreSQL, end to end (parse, keep, load carepay's side,
//! match, write the result), next to DuckDB classifying the same file against a CSV export
//! of carepay's side with a full outer join (`benches/reconcile_duckdb.py`), in one run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;

use crate::app::{App, Limits};
use crate::directory::{NewFacility, NewRegion};
use crate::domain::access::Principal;
use crate::domain::directory::{FacilityKind, Name, RegionLevel, Scope, WalletId};
use crate::domain::ids::TokenId;
use crate::domain::reconciliation::{Summary, day_start_ms};
use crate::domain::role::Role;
use crate::domain::statement::{
    EntryKind, EntryStatus, StatementHeader, StatementLine, StatementTotals, push_header, push_line, push_trailer,
};
use crate::payments::bench::ScratchDatabase;
use crate::store::{PoolSettings, Store};

const WALLET: &str = "0021888800000001";
/// Long past, so carepay records missing from the statement are past the grace period.
const DAY: &str = "2026-11-01";
/// One line in a hundred of each injected kind: dropped, amount changed, added.
const INJECT_EVERY: u64 = 100;

pub struct BenchOptions {
    pub lines: u64,
    pub postgres_url: String,
    /// The Python interpreter with `duckdb` installed.
    pub python: String,
}

struct Measured {
    label: &'static str,
    seconds: f64,
    peak_mib: f64,
    counts: String,
}

pub async fn run(options: BenchOptions) -> anyhow::Result<String> {
    let scratch = ScratchDatabase::create(&options.postgres_url, "carepay_reconcile_bench").await?;
    let result = measure(&scratch.url, &options).await;
    scratch.drop().await;
    let (carepay, duckdb) = result?;
    Ok(report(&options, &[carepay, duckdb]))
}

fn report(options: &BenchOptions, rows: &[Measured]) -> String {
    let mut out = format!(
        "reconciliation of {} statement lines against {} carepay payments (one wallet, one day)\n\
         {:<44} {:>10} {:>14}  categories\n",
        options.lines, options.lines, "", "seconds", "peak MiB"
    );
    for row in rows {
        let _ = writeln!(out, "{:<44} {:>10.2} {:>14.0}  {}", row.label, row.seconds, row.peak_mib, row.counts);
    }
    if let [carepay, duckdb] = rows {
        let _ = writeln!(out, "carepay / DuckDB time: {:.2}x", carepay.seconds / duckdb.seconds.max(f64::EPSILON));
    }
    out
}

async fn measure(url: &str, options: &BenchOptions) -> anyhow::Result<(Measured, Measured)> {
    let store = Store::connect(url, &PoolSettings { max_connections: 4, ..PoolSettings::default() }).await?;
    store.migrate().await?;
    let app = App::new(store.clone(), Limits::default());
    let facility = create_facility(&app).await?;
    insert_payments(&store, &facility, options.lines).await?;

    let dir = ScratchDir::create()?;
    let statement_path = dir.path().join("statement.csv");
    write_statement_file(&statement_path, options.lines)?;
    let carepay_path = dir.path().join("carepay.csv");
    export_carepay(&store, &facility, &carepay_path).await?;

    // Only the reconciliation itself counts towards the peak: reset the high-water mark.
    reset_peak_memory();
    let started = Instant::now();
    let bytes = std::fs::read(&statement_path)?;
    let report = super::import_file(&app, bytes.into(), "bench").await.map_err(|error| anyhow::anyhow!("{error}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_mib = peak_memory_kib().unwrap_or(0) as f64 / 1024.0;
    let run = store.latest_run(WALLET, DAY).await?.context("the bench run is stored")?;
    let summary: Summary = serde_json::from_str(&run.summary)?;
    let counts: Vec<String> = summary.categories.iter().map(|c| format!("{} {}", c.category, c.count)).collect();
    tracing::debug!(%report, "carepay run");
    store.close().await;
    let carepay = Measured { label: "carepay (PostgreSQL, end to end)", seconds, peak_mib, counts: counts.join(", ") };

    let duckdb = measure_duckdb(options, &statement_path, &carepay_path, dir.path())?;
    Ok((carepay, duckdb))
}

async fn create_facility(app: &App) -> anyhow::Result<String> {
    let root = Principal { token_id: TokenId::generate(), role: Role::Admin, scope: Scope::All, request_id: None };
    let name = |raw: &str| Name::parse(raw).map_err(|error| anyhow::anyhow!("{error}"));
    let region = app
        .create_region(&root, NewRegion { parent_id: None, level: RegionLevel::District, name: name("对账压测区")? })
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let facility = app
        .create_facility(
            &root,
            NewFacility {
                region_id: region.id,
                organisation_id: None,
                name: name("对账压测助餐点")?,
                kind: FacilityKind::MealCanteen,
                merchant_wallet_id: WalletId::parse(WALLET).map_err(|error| anyhow::anyhow!("{error}"))?,
            },
        )
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(facility.id.into_string())
}

fn amount_fen(i: u64) -> i64 {
    100 + i64::try_from(i % 10_000).unwrap_or(0)
}

/// Milliseconds into the day at which payment `i` settled.
fn offset_ms(i: u64) -> i64 {
    i64::try_from(i.wrapping_mul(86) % 86_400_000).unwrap_or(0)
}

/// A million payments in one statement, generated by PostgreSQL itself (setup, not measured).
async fn insert_payments(store: &Store, facility_id: &str, count: u64) -> anyhow::Result<()> {
    let day_start = day_start_ms(DAY).context("bench day")?;
    let terminal = format!("trm_{:032x}", 1);
    store
        .execute_raw(&format!(
            "INSERT INTO terminals (id, facility_id, label, status, version, created_at_ms, updated_at_ms) \
             VALUES ('{terminal}', '{facility_id}', 'bench', 'active', 1, {day_start}, {day_start})"
        ))
        .await?;
    store
        .execute_raw(&format!(
            "INSERT INTO payments (id, facility_id, terminal_id, request_id, merchant_wallet_id, out_trade_no, method, \
             status, amount_fen, description, trade_no, paid_at_ms, version, created_at_ms, updated_at_ms) \
             SELECT 'pay_' || lpad(to_hex(i), 32, '0'), '{facility_id}', '{terminal}', 'r' || i, '{WALLET}', \
             'pay_' || lpad(to_hex(i), 32, '0'), 'payer_code', 'succeeded', 100 + (i % 10000), 'bench', 'T' || i, \
             {day_start} + (i * 86) % 86400000, 1, {day_start}, {day_start} \
             FROM generate_series(1::bigint, {count}::bigint) AS i"
        ))
        .await?;
    store.execute_raw("ANALYZE payments").await?;
    Ok(())
}

/// The operator's statement of those payments with one in a hundred dropped, one in a
/// hundred with another amount, and one in a hundred lines carepay never saw; written a
/// line at a time with the domain writer.
fn write_statement_file(path: &Path, count: u64) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let header = StatementHeader {
        wallet_id: WALLET.to_owned(),
        date: DAY.to_owned(),
        generated_at: String::from("2026-11-02T09:00:00+08:00"),
    };
    let mut out = String::with_capacity(64 * 1024);
    push_header(&mut out, &header);
    let mut totals = StatementTotals::default();
    let mut write_line = |out: &mut String, line: StatementLine| -> anyhow::Result<()> {
        totals.add(0, &line)?;
        push_line(out, &line);
        Ok(())
    };
    for i in 1..=count {
        let mut amount = amount_fen(i);
        match i % INJECT_EVERY {
            1 => continue,
            2 => amount += 1,
            _ => {}
        }
        let second = offset_ms(i) / 1000;
        write_line(
            &mut out,
            StatementLine {
                settled_at: format!("{DAY} {:02}:{:02}:{:02}", second / 3600, second / 60 % 60, second % 60),
                operator_ref: format!("OP{i:016}"),
                out_no: format!("pay_{i:032x}"),
                kind: EntryKind::Payment,
                status: EntryStatus::Success,
                amount_fen: amount,
                fee_fen: 0,
                counterparty: String::from("0021****5678"),
                memo: String::from(if i % 10 == 0 { "午餐, 套餐B" } else { "午餐" }),
            },
        )?;
        if i % INJECT_EVERY == 3 {
            write_line(
                &mut out,
                StatementLine {
                    settled_at: format!("{DAY} 23:59:59"),
                    operator_ref: format!("OPX{i:015}"),
                    out_no: format!("X-{i}"),
                    kind: EntryKind::Payment,
                    status: EntryStatus::Success,
                    amount_fen: 100,
                    fee_fen: 0,
                    counterparty: String::new(),
                    memo: String::new(),
                },
            )?;
        }
        if out.len() > 60 * 1024 {
            file.write_all(out.as_bytes())?;
            out.clear();
        }
    }
    push_trailer(&mut out, &totals);
    file.write_all(out.as_bytes())?;
    file.flush()?;
    Ok(())
}

/// carepay's side as CSV for DuckDB (setup, not measured).
async fn export_carepay(store: &Store, facility: &str, path: &Path) -> anyhow::Result<()> {
    let (from_ms, to_ms) = crate::domain::reconciliation::neighbourhood_ms(DAY).context("bench day")?;
    let owner = crate::domain::reconciliation::WalletOwner::Facility(crate::domain::ids::FacilityId::from_trusted(
        facility.to_owned(),
    ));
    let day = crate::store::reconciliation::CarepayDay {
        wallet_id: WALLET,
        owner: &owner,
        from_ms,
        to_ms,
        tariff: crate::domain::fees::Tariff::flat(0),
    };
    let side = store.carepay_side(&day).await?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(file, "out_no,kind,status,amount_fen,fee_fen,business_day")?;
    for index in 0..side.len() {
        let entry = side.item(u32::try_from(index)?);
        writeln!(
            file,
            "{},{},{},{},{},{}",
            entry.out_no,
            entry.kind.as_str(),
            entry.status.as_str(),
            entry.amount_fen,
            entry.expected_fee_fen,
            entry.business_day()
        )?;
    }
    file.flush()?;
    Ok(())
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join("reconcile_duckdb.py")
}

fn measure_duckdb(options: &BenchOptions, statement: &Path, carepay: &Path, dir: &Path) -> anyhow::Result<Measured> {
    let output = std::process::Command::new(&options.python)
        .arg(script_path())
        .arg(statement)
        .arg(carepay)
        .arg(dir.join("duckdb-result.csv"))
        .output()
        .with_context(|| format!("cannot run {} (pip install duckdb)", options.python))?;
    anyhow::ensure!(output.status.success(), "duckdb script failed: {}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut counts: Vec<String> = answer["counts"]
        .as_object()
        .map(|counts| counts.iter().map(|(category, count)| format!("{category} {count}")).collect())
        .unwrap_or_default();
    counts.sort();
    Ok(Measured {
        label: "DuckDB (full outer join, CSV in and out)",
        seconds: answer["seconds"].as_f64().unwrap_or(0.0),
        peak_mib: answer["peak_kib"].as_f64().unwrap_or(0.0) / 1024.0,
        counts: counts.join(", "),
    })
}

/// A directory for the bench's files, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("carepay-reconcile-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Linux: writing 5 to `clear_refs` resets the process's peak resident set (`VmHWM`).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
