//! Logs and metrics. Logs are structured `tracing` events (JSON when configured); metrics
//! are Prometheus text at `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How often histogram buckets are folded, so memory does not grow between scrapes.
const METRICS_UPKEEP_INTERVAL_MS: u64 = 5_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the global log subscriber once; later calls (tests) are no-ops.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide metrics recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
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
