//! The delivery worker: claims due deliveries with a lease, signs and sends them with
//! bounded concurrency and a per-request timeout, and records every outcome.
//!
//! Three bounded stages: one claimer takes at most as many deliveries as there are free
//! send permits (`concurrency`, at most `batch_size` a round); each send runs as its own task
//! holding a permit; outcomes go through a channel of `batch_size` to one recorder that
//! writes them in batches, one transaction each. Memory is bounded by those numbers, never
//! by the backlog. A delivery whose outcome is never recorded (crash, database away) keeps
//! its lease until `lease_ms` runs out and is then claimed again: delivery is at least once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::egress::{ClientSettings, EgressClients, NameLookup, refusal_in};
use super::endpoints::open_signer;
use super::signing::EndpointSigner;
use crate::app::App;
use crate::domain::callbacks::{
    Attempt, AttemptResult, Endpoint, EndpointStatus, RetrySchedule, parse_retry_after, response_excerpt, verdict,
};
use crate::domain::ids::{AttemptId, EndpointId, EventId};
use crate::domain::time::UnixMs;
use crate::store::callbacks::{ClaimStrategy, ClaimedDelivery, HealthRules, Outcome, OutcomeResult};
use crate::tls::ExtraRoots;

/// The worker's bounds and timings; from config (`--callback-*`).
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Requests in flight at once, per instance.
    pub concurrency: usize,
    /// Longest one request (connect, send, response head and excerpt) may take.
    pub request_timeout_ms: u64,
    /// How long the claimer sleeps when nothing is due.
    pub poll_interval_ms: u64,
    /// How long a claim holds a delivery; must outlast a request and its recording, and is
    /// how long a crashed instance's deliveries wait before another instance takes them.
    pub lease_ms: i64,
    /// Most deliveries claimed per round, and most outcomes recorded per transaction.
    pub batch_size: u32,
    /// When a failing endpoint is disabled.
    pub health: HealthRules,
    pub schedule: RetrySchedule,
    /// Bytes of a response body kept so the owner can see what the receiver said (at most
    /// `MAX_RESPONSE_EXCERPT_BYTES`).
    pub response_excerpt_bytes: usize,
    /// `None`: the best claim SQL for the backend.
    pub claim_strategy: Option<ClaimStrategy>,
    /// CAs trusted for https receivers besides the built-in roots.
    pub extra_roots: ExtraRoots,
    /// How receivers' names are resolved (the system resolver; a fixed table in tests).
    pub lookup: NameLookup,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 64,
            request_timeout_ms: 10_000,
            poll_interval_ms: 500,
            lease_ms: 60_000,
            batch_size: 256,
            health: HealthRules { failure_threshold: 20, failure_window_ms: 2 * 86_400_000 },
            schedule: RetrySchedule::default(),
            response_excerpt_bytes: 256,
            claim_strategy: None,
            extra_roots: ExtraRoots::default(),
            lookup: NameLookup::system(),
        }
    }
}

/// A running worker; [`WorkerHandle::stop`] finishes the requests in flight and records them.
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "callback worker ended abnormally");
        }
    }
}

/// Start delivering, where `app.callback_egress` allows. Fails only if the HTTP clients
/// cannot be built.
pub fn spawn(app: App, settings: WorkerSettings) -> anyhow::Result<WorkerHandle> {
    let clients = EgressClients::build(
        app.callback_egress.clone(),
        &ClientSettings {
            request_timeout_ms: settings.request_timeout_ms,
            max_idle_per_host: settings.concurrency,
            extra_roots: settings.extra_roots.clone(),
            lookup: settings.lookup.clone(),
        },
    )?;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(app, Arc::new(settings), Arc::new(clients), stopped));
    Ok(WorkerHandle { stop, task })
}

/// One delivery ready to go out.
struct Job {
    claim: Arc<str>,
    delivery: ClaimedDelivery,
    endpoint: Arc<Endpoint>,
    /// `None` when the endpoint's secrets could not be opened (wrong key): the attempt is
    /// recorded as failed and retried on the schedule, so nothing is lost once fixed.
    signer: Option<Arc<EndpointSigner>>,
}

/// The endpoints of one claim, each with what signs for it.
type ClaimedEndpoints = HashMap<EndpointId, (Arc<Endpoint>, Option<Arc<EndpointSigner>>)>;

async fn run(app: App, settings: Arc<WorkerSettings>, clients: Arc<EgressClients>, mut stopped: watch::Receiver<bool>) {
    let instance = format!("wrk_{}", uuid::Uuid::new_v4().simple());
    let strategy = settings.claim_strategy.unwrap_or_else(|| ClaimStrategy::best_for(app.store.backend()));
    let permits = Arc::new(Semaphore::new(settings.concurrency));
    let (outcomes, outcomes_rx) = mpsc::channel::<Outcome>(settings.batch_size as usize);
    let recorder = tokio::spawn(record(app.clone(), settings.clone(), outcomes_rx));
    let poll = Duration::from_millis(settings.poll_interval_ms);
    tracing::info!(%instance, concurrency = settings.concurrency, ?strategy, "callback worker started");
    while !*stopped.borrow() {
        let free = permits.available_permits().min(settings.batch_size as usize);
        if free == 0 {
            tokio::select! {
                permit = permits.clone().acquire_owned() => drop(permit),
                _ = stopped.changed() => {}
            }
            continue;
        }
        let claim: Arc<str> = format!("{instance}:{}", uuid::Uuid::new_v4().simple()).into();
        let jobs = match claim_round(&app, &settings, strategy, &claim, free).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(error = %error, "claiming callback deliveries failed; retrying after the poll interval");
                Vec::new()
            }
        };
        let full = jobs.len() >= free;
        for job in jobs {
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            tokio::spawn(deliver(job, permit, clients.clone(), settings.clone(), outcomes.clone()));
        }
        if !full {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                _ = stopped.changed() => {}
            }
        }
    }
    // Let the requests in flight finish (each is bounded by the request timeout) and their
    // outcomes be recorded before stopping.
    let _ = permits.acquire_many(settings.concurrency as u32).await;
    drop(outcomes);
    let _ = recorder.await;
    tracing::info!(%instance, "callback worker stopped");
}

async fn claim_round(
    app: &App,
    settings: &WorkerSettings,
    strategy: ClaimStrategy,
    claim: &Arc<str>,
    limit: usize,
) -> anyhow::Result<Vec<Job>> {
    let now = UnixMs::now();
    let limit = u32::try_from(limit)?;
    let lease_until = UnixMs(now.0 + settings.lease_ms);
    if app.store.claim_due_deliveries(strategy, claim, now, lease_until, limit).await? == 0 {
        return Ok(Vec::new());
    }
    let deliveries = app.store.claimed_deliveries(claim).await?;
    let mut endpoints = ClaimedEndpoints::new();
    for (endpoint, sealed) in app.store.claimed_endpoints(claim).await? {
        let signer = match open_signer(&app.secrets, &endpoint.id, &sealed, now) {
            Ok(signer) => Some(Arc::new(signer)),
            Err(error) => {
                tracing::error!(endpoint = %endpoint.id, %error, "cannot open an endpoint's signing secret");
                None
            }
        };
        endpoints.insert(endpoint.id.clone(), (Arc::new(endpoint), signer));
    }
    let mut jobs = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let Some((endpoint, signer)) = endpoints.get(&delivery.endpoint_id) else { continue };
        jobs.push(Job { claim: claim.clone(), delivery, endpoint: endpoint.clone(), signer: signer.clone() });
    }
    Ok(jobs)
}

/// Send one delivery and hand its outcome to the recorder. The permit is held until the
/// outcome is queued, so sends plus queued outcomes never exceed the bounds.
async fn deliver(
    job: Job,
    _permit: OwnedSemaphorePermit,
    clients: Arc<EgressClients>,
    settings: Arc<WorkerSettings>,
    outcomes: mpsc::Sender<Outcome>,
) {
    let event_id = job.delivery.event_id.clone();
    let endpoint_id = job.delivery.endpoint_id.clone();
    let result = if job.endpoint.status != EndpointStatus::Enabled {
        OutcomeResult::EndpointDisabled
    } else {
        attempt(&job, &clients, &settings).await
    };
    let outcome = Outcome { claim: job.claim, event_id, endpoint_id, result };
    // A closed channel means the worker is stopping without a recorder: the lease expires
    // and another claim retries.
    let _ = outcomes.send(outcome).await;
}

async fn attempt(job: &Job, clients: &EgressClients, settings: &WorkerSettings) -> OutcomeResult {
    let started_at = UnixMs::now();
    let started = Instant::now();
    let (status_code, retry_after_ms, error, excerpt) = match &job.signer {
        None => (None, None, Some(String::from("signing secret unavailable")), String::new()),
        Some(signer) => send(job, signer, clients, started_at, settings.response_excerpt_bytes).await,
    };
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let number = job.delivery.attempts + 1;
    let result = AttemptResult { status_code, retry_after_ms };
    // Delays count from when the attempt ended, as recorded, so the record itself shows the
    // schedule was kept.
    let ended_at = UnixMs(started_at.0.saturating_add(latency_ms));
    let verdict = verdict(result, number, &settings.schedule, ended_at, jitter());
    let outcome_label = match status_code {
        Some(200..=299) => "delivered",
        Some(_) => "http_error",
        None => "no_response",
    };
    metrics::counter!("callback_attempts_total", "outcome" => outcome_label).increment(1);
    metrics::histogram!("callback_attempt_duration_seconds").record(started.elapsed().as_secs_f64());
    let attempt = Attempt {
        id: AttemptId::generate(),
        event_id: job.delivery.event_id.clone(),
        endpoint_id: job.delivery.endpoint_id.clone(),
        attempt: number,
        started_at,
        latency_ms,
        status_code: status_code.map(i64::from),
        error,
        response_excerpt: excerpt,
        next_attempt_at: None,
    };
    OutcomeResult::Attempted { attempt, verdict }
}

/// POST the signed body. Returns the status, the `Retry-After` in ms, why no response
/// arrived (if none did) and the start of the response body. A connection the egress rules
/// refuse is never opened: its attempt carries the reason and no excerpt.
async fn send(
    job: &Job,
    signer: &EndpointSigner,
    clients: &EgressClients,
    started_at: UnixMs,
    excerpt_bytes: usize,
) -> (Option<u16>, Option<i64>, Option<String>, String) {
    let client = match clients.client_for(&job.endpoint.url) {
        Ok(client) => client,
        Err(refused) => return (None, None, Some(refused.to_string()), String::new()),
    };
    let message_id: &EventId = &job.delivery.event_id;
    let timestamp_s = started_at.0.div_euclid(1_000);
    let signature = signer.header(message_id.as_str(), timestamp_s, &job.delivery.body);
    let request = client
        .post(job.endpoint.url.as_str())
        .header("content-type", "application/json")
        .header("webhook-id", message_id.as_str())
        .header("webhook-timestamp", timestamp_s.to_string())
        .header("webhook-signature", signature)
        .body(job.delivery.body.clone());
    match request.send().await {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            let mut excerpt = Vec::new();
            // Read no more than the excerpt: a receiver cannot make us buffer a large body.
            while excerpt.len() < excerpt_bytes {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        excerpt.extend_from_slice(&chunk[..chunk.len().min(excerpt_bytes - excerpt.len())])
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            (Some(status), retry_after, None, response_excerpt(&excerpt, excerpt_bytes))
        }
        Err(error) => (None, None, Some(classify(&error)), String::new()),
    }
}

/// Why no response arrived, in words the owner can act on (never internal detail).
fn classify(error: &reqwest::Error) -> String {
    if let Some(refused) = refusal_in(error) {
        refused.to_string()
    } else if let Some(tls) = crate::tls::tls_failure(error) {
        tls
    } else if error.is_timeout() {
        String::from("timeout")
    } else if error.is_connect() {
        String::from("connection failed")
    } else {
        String::from("connection broken")
    }
}

/// Uniform in -1000..=1000, for the retry jitter.
fn jitter() -> i64 {
    let mut bytes = [0u8; 2];
    match SystemRandom::new().fill(&mut bytes) {
        Ok(()) => i64::from(u16::from_le_bytes(bytes) % 2_001) - 1_000,
        Err(_) => 0,
    }
}

/// Write outcomes in batches: take one, then whatever else is already waiting, up to the
/// batch size, and record them in one transaction.
async fn record(app: App, settings: Arc<WorkerSettings>, mut outcomes: mpsc::Receiver<Outcome>) {
    let mut batch = Vec::with_capacity(settings.batch_size as usize);
    while let Some(first) = outcomes.recv().await {
        batch.push(first);
        while batch.len() < settings.batch_size as usize {
            match outcomes.try_recv() {
                Ok(outcome) => batch.push(outcome),
                Err(_) => break,
            }
        }
        match app.store.record_outcomes(&batch, settings.health, UnixMs::now()).await {
            Ok(disabled) => {
                for endpoint in disabled {
                    tracing::warn!(%endpoint, "callback endpoint disabled; its owner was sent endpoint.disabled");
                }
            }
            Err(error) => tracing::error!(
                %error,
                outcomes = batch.len(),
                "recording callback outcomes failed; those deliveries go out again when their lease ends"
            ),
        }
        batch.clear();
    }
}
