//! `carepay bench callbacks`: how many signed deliveries per second the worker sustains to
//! a receiver on loopback, draining a backlog queued up front, and how much memory it uses
//! while doing so (it must not grow with the backlog).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::endpoints::NewEndpoint;
use super::worker::{self, WorkerSettings};
use super::{EventOwner, EventType, NewEvent};
use crate::app::{App, Limits};
use crate::directory::{NewFacility, NewRegion};
use crate::domain::access::Principal;
use crate::domain::callbacks::{EndpointUrl, EventTypes};
use crate::domain::directory::{FacilityKind, Name, RegionLevel, Scope, WalletId};
use crate::domain::ids::TokenId;
use crate::domain::network::{EgressPolicy, Network};
use crate::domain::role::Role;
use crate::domain::time::UnixMs;
use crate::store::{Backend, PoolSettings, Store};

/// Events written per enqueue transaction while building the backlog.
const ENQUEUE_CHUNK: usize = 1_000;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub events: u64,
    /// A PostgreSQL server to create a scratch database on; `None`: a scratch SQLite file.
    pub postgres_url: Option<String>,
    pub worker: WorkerSettings,
}

#[derive(Debug)]
pub struct BenchReport {
    pub backend: Backend,
    pub events: u64,
    pub enqueue_s: f64,
    pub drain_s: f64,
    pub delivered: u64,
    pub rss_before_drain_kib: u64,
    pub rss_peak_kib: u64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "backend:          {}", self.backend.as_str())?;
        writeln!(f, "events queued:    {} in {:.1} s", self.events, self.enqueue_s)?;
        writeln!(f, "delivered:        {} signed requests in {:.1} s", self.delivered, self.drain_s)?;
        writeln!(f, "throughput:       {:.0} deliveries/s", self.delivered as f64 / self.drain_s.max(f64::EPSILON))?;
        write!(
            f,
            "resident memory:  {} KiB before the drain, {} KiB at most during it",
            self.rss_before_drain_kib, self.rss_peak_kib
        )
    }
}

/// The resident set of this process, from /proc (0 where there is none).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:").and_then(|rest| rest.trim().split(' ').next()?.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// A receiver that accepts everything and counts.
async fn start_receiver(count: Arc<AtomicU64>) -> anyhow::Result<String> {
    let router = axum::Router::new().fallback(move || {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::Relaxed);
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/callbacks", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(url)
}

pub async fn run(options: BenchOptions) -> anyhow::Result<BenchReport> {
    let scratch_dir = tempfile_dir()?;
    let (url, scratch_db) = match &options.postgres_url {
        None => (Store::sqlite_url(&scratch_dir.join("bench.db")), None),
        Some(server) => {
            let name = format!("carepay_bench_{}", uuid::Uuid::new_v4().simple());
            let admin = Store::connect(server, &PoolSettings { max_connections: 1, ..PoolSettings::default() }).await?;
            admin.execute_raw(&format!("CREATE DATABASE {name}")).await?;
            let base = server.rsplit_once('/').map(|(base, _)| base).unwrap_or(server);
            (format!("{base}/{name}"), Some((admin, name)))
        }
    };
    let result = bench_on(&url, &options).await;
    if let Some((admin, name)) = scratch_db {
        admin.execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
        admin.close().await;
    }
    let _ = std::fs::remove_dir_all(&scratch_dir);
    result
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("carepay-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn bench_on(url: &str, options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let store = Store::connect(url, &PoolSettings::default()).await?;
    store.migrate().await?;
    let mut app = App::new(store.clone(), Limits::default());
    // The receiver is on this machine's loopback.
    app.callback_egress =
        Arc::new(EgressPolicy::new(vec![Network::parse("127.0.0.0/8").map_err(anyhow::Error::msg)?], Vec::new()));
    let received = Arc::new(AtomicU64::new(0));
    let receiver_url = start_receiver(received.clone()).await?;

    let root = Principal { token_id: TokenId::generate(), role: Role::Admin, scope: Scope::All, request_id: None };
    let bad = |error: crate::error::Error| anyhow::anyhow!("{error}");
    let region = app
        .create_region(&root, NewRegion { parent_id: None, level: RegionLevel::District, name: Name::parse("基准区")? })
        .await
        .map_err(bad)?;
    let facility = app
        .create_facility(
            &root,
            NewFacility {
                region_id: region.id,
                organisation_id: None,
                name: Name::parse("基准助餐点")?,
                kind: FacilityKind::MealCanteen,
                merchant_wallet_id: WalletId::parse("0021999999999999")?,
            },
        )
        .await
        .map_err(bad)?;
    app.create_endpoint(
        &root,
        NewEndpoint {
            owner: EventOwner::Facility(facility.id.clone()),
            url: EndpointUrl::parse(&receiver_url)?,
            event_types: EventTypes::parse(&["payment.succeeded"])?,
            ed25519: false,
        },
    )
    .await
    .map_err(bad)?;

    let started = Instant::now();
    let mut queued = 0u64;
    while queued < options.events {
        let chunk = (options.events - queued).min(ENQUEUE_CHUNK as u64);
        let events: Vec<NewEvent> = (queued..queued + chunk)
            .map(|n| NewEvent {
                owner: EventOwner::Facility(facility.id.clone()),
                event_type: EventType::PaymentSucceeded,
                object_id: format!("pay_{n:08}"),
                object_version: 1,
                data: serde_json::json!({"amount": "12.50", "payer": "张*"}),
            })
            .collect();
        store.enqueue_many(&events, UnixMs::now()).await.context("queueing the backlog")?;
        queued += chunk;
    }
    let enqueue_s = started.elapsed().as_secs_f64();

    let rss_before_drain_kib = rss_kib();
    let mut rss_peak_kib = rss_before_drain_kib;
    let started = Instant::now();
    let handle = worker::spawn(app, options.worker.clone())?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss_peak_kib = rss_peak_kib.max(rss_kib());
        if store.pending_delivery_count().await? == 0 {
            break;
        }
    }
    let drain_s = started.elapsed().as_secs_f64();
    handle.stop().await;
    store.close().await;
    Ok(BenchReport {
        backend: store.backend(),
        events: options.events,
        enqueue_s,
        drain_s,
        delivered: received.load(Ordering::Relaxed),
        rss_before_drain_kib,
        rss_peak_kib,
    })
}
