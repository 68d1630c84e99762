//! Logs and metrics. Logs are structured `tracing` events (JSON when configured); metrics
//! are Prometheus text at `/metrics`.
//!
//! Counters are bumped where the thing they count happens (a payment or refund moved, a round
//! of transfers recorded, an operator call answered); gauges of state kept in the database
//! (the callback delivery backlog) and of the connection pool are sampled at each scrape,
//! bounded in rows counted and in time.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::store::Store;

/// How often histogram buckets are folded, so memory does not grow between scrapes.
const METRICS_UPKEEP_INTERVAL_MS: u64 = 5_000;
/// Longest a scrape waits for the database to count the backlog; past it the gauges keep
/// their last values.
const SAMPLE_TIMEOUT_MS: u64 = 1_000;
/// Most pending deliveries a scrape counts: the backlog gauges saturate here rather than
/// have a scrape walk an arbitrarily long queue.
pub const BACKLOG_COUNT_LIMIT: i64 = 100_000;

/// Operator round trips, by operation and outcome (`success`, `rejected`, `unknown`).
const OPERATOR_CALL_SECONDS: &str = "operator_call_duration_seconds";
/// Buckets of operator latency: the operator's answers take milliseconds to its timeout.
const OPERATOR_CALL_BUCKETS_S: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A payment moved to `status` (each payment is counted once per state it reaches).
pub fn payment_moved(status: &'static str) {
    metrics::counter!("payments_total", "outcome" => status).increment(1);
}

/// A refund reached its final `status`.
pub fn refund_finished(status: &'static str) {
    metrics::counter!("refunds_total", "outcome" => status).increment(1);
}

/// Subsidy transfers recorded final in one transaction.
pub fn transfers_finished(succeeded: usize, failed: usize) {
    for (status, lines) in [("succeeded", succeeded), ("failed", failed)] {
        if lines > 0 {
            metrics::counter!("transfers_total", "outcome" => status).increment(lines as u64);
        }
    }
}

/// One operator call, from its start to its verified (or failed) answer.
pub fn operator_call(operation: &'static str, outcome: &'static str, elapsed: Duration) {
    metrics::histogram!(OPERATOR_CALL_SECONDS, "operation" => operation, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// Set the gauges read from the store: connections of the pool, and the callback deliveries
/// still pending (all of them, and those already due).
pub async fn sample(store: &Store) {
    let pool = store.pool_usage();
    metrics::gauge!("db_pool_connections_max").set(f64::from(pool.max));
    metrics::gauge!("db_pool_connections", "state" => "idle").set(pool.idle as f64);
    metrics::gauge!("db_pool_connections", "state" => "in_use").set(pool.in_use as f64);
    let now = crate::domain::time::UnixMs::now();
    let counted = tokio::time::timeout(
        Duration::from_millis(SAMPLE_TIMEOUT_MS),
        store.delivery_backlog(now, BACKLOG_COUNT_LIMIT),
    );
    match counted.await {
        Ok(Ok(backlog)) => {
            metrics::gauge!("callback_deliveries_pending").set(backlog.pending as f64);
            metrics::gauge!("callback_deliveries_due").set(backlog.due as f64);
        }
        Ok(Err(error)) => tracing::warn!(%error, "cannot count the callback backlog for metrics"),
        Err(_) => tracing::warn!(timeout_ms = SAMPLE_TIMEOUT_MS, "counting the callback backlog for metrics timed out"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the global log subscriber once; later calls (tests) are no-ops.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or a journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide metrics recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        // Fixed buckets make operator latency a histogram (quantiles of a summary cannot be
        // added up across instances).
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(OPERATOR_CALL_SECONDS.to_owned()), &OPERATOR_CALL_BUCKETS_S)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program); then we still
        // render our own handle, just without the global macros feeding it.
        let _ = metrics::set_global_recorder(recorder);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let upkeep = handle.clone();
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(METRICS_UPKEEP_INTERVAL_MS));
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
        }
        handle
    })
}
