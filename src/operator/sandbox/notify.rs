//! Notification delivery: signed POSTs to the configured URL, retried on anything but a
//! 2xx on the spec's schedule (scaled by `time_scale` for tests), with the notification
//! faults applied (duplicate, delay, reorder, drop).
//!
//! Bounded: at most `max_pending` notifications are being delivered or waiting for a retry
//! at once; past that new ones are dropped and counted (a real operator would queue them
//! durably; the sandbox says so instead of growing without bound). At most
//! `max_concurrent_sends` POSTs are open at once, well inside the receiving service's
//! notification lane, so a burst (a large batch settling) queues here instead of being
//! answered 503 there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::faults::{Faults, NotificationFault};
use crate::operator::signing::RotatingSigner;

/// The spec's retry schedule: the wait before each retry after a failed attempt.
pub const RETRY_SCHEDULE_S: [u64; 15] =
    [15, 15, 30, 180, 600, 1_200, 1_800, 1_800, 1_800, 3_600, 10_800, 10_800, 10_800, 21_600, 21_600];

#[derive(Clone, Debug)]
pub struct NotifySettings {
    /// Multiplies every retry wait: 1.0 is the spec; tests use e.g. 0.001 (15 s -> 15 ms).
    pub time_scale: f64,
    pub max_pending: usize,
    /// POSTs open at once; the others wait their turn (and count against `max_pending`).
    pub max_concurrent_sends: usize,
    /// One delivery attempt, all told.
    pub attempt_timeout_ms: u64,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings { time_scale: 1.0, max_pending: 65_536, max_concurrent_sends: 32, attempt_timeout_ms: 5_000 }
    }
}

/// A notification ready to send: its event id and exact body bytes.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub id: String,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub struct Notifier {
    settings: NotifySettings,
    url: RwLock<Option<String>>,
    http: reqwest::Client,
    signer: RotatingSigner,
    faults: Arc<Faults>,
    pending: Arc<Semaphore>,
    sends: Semaphore,
    /// A notification held back by a `Reorder` fault until the next one has gone.
    held: Mutex<Option<(Outgoing, OwnedSemaphorePermit)>>,
    dropped: AtomicU64,
    attempts: AtomicU64,
}

impl Notifier {
    pub fn new(settings: NotifySettings, url: Option<String>, signer: RotatingSigner, faults: Arc<Faults>) -> Notifier {
        // `Duration::mul_f64` panics on a negative or non-finite factor; fall back to the spec.
        let mut settings = settings;
        if !(settings.time_scale.is_finite() && settings.time_scale >= 0.0) {
            settings.time_scale = 1.0;
        }
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default();
        let pending = Arc::new(Semaphore::new(settings.max_pending.max(1)));
        let sends = Semaphore::new(settings.max_concurrent_sends.max(1));
        Notifier {
            settings,
            url: RwLock::new(url),
            http,
            signer,
            faults,
            pending,
            sends,
            held: Mutex::new(None),
            dropped: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
        }
    }

    pub fn set_url(&self, url: Option<String>) {
        *self.url.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = url;
    }

    pub fn url(&self) -> Option<String> {
        self.url.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Notifications dropped because too many were pending (faults excluded).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Delivery attempts made so far (retries and duplicates included).
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Starts delivering `outgoing` in the background. Needs a Tokio runtime.
    ///
    /// With no URL configured there is nobody to tell, as with a real operator: the event is
    /// not queued (nor retried once a URL is set later).
    pub fn send(self: &Arc<Self>, outgoing: Outgoing) {
        if self.url().is_none() {
            return;
        }
        let Ok(permit) = Arc::clone(&self.pending).try_acquire_owned() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(event_id = %outgoing.id, "sandbox notification dropped: too many pending");
            return;
        };
        let mut batch = vec![(outgoing.clone(), permit)];
        let mut delay = Duration::ZERO;
        match self.faults.take_notification() {
            None => {}
            Some(NotificationFault::Drop) => return,
            Some(NotificationFault::Delay { delay_ms }) => delay = Duration::from_millis(delay_ms),
            Some(NotificationFault::Duplicate { copies }) => {
                // Each copy takes its own pending slot, so duplicates count against the bound.
                for _ in 0..copies {
                    if let Ok(permit) = Arc::clone(&self.pending).try_acquire_owned() {
                        batch.push((outgoing.clone(), permit));
                    }
                }
            }
            Some(NotificationFault::Reorder) => {
                let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if held.is_none() {
                    *held = batch.pop();
                    return;
                }
            }
        }
        if let Some(held) = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            batch.push(held);
        }
        let notifier = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // First attempts go out in order, one after the other, so a reorder or a
            // duplicate arrives exactly as arranged; retries then run independently.
            for (outgoing, permit) in batch {
                if !notifier.attempt(&outgoing).await {
                    let retrier = Arc::clone(&notifier);
                    tokio::spawn(async move { retrier.retry(outgoing, permit).await });
                }
            }
        });
    }

    async fn retry(&self, outgoing: Outgoing, _permit: OwnedSemaphorePermit) {
        for wait_s in RETRY_SCHEDULE_S {
            tokio::time::sleep(Duration::from_secs(wait_s).mul_f64(self.settings.time_scale)).await;
            if self.attempt(&outgoing).await {
                return;
            }
        }
        tracing::warn!(event_id = %outgoing.id, "sandbox notification abandoned after the last retry");
    }

    /// One signed POST; true on a 2xx.
    async fn attempt(&self, outgoing: &Outgoing) -> bool {
        // The semaphore is never closed, so acquiring only waits.
        let Ok(_send) = self.sends.acquire().await else {
            return false;
        };
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let Some(url) = self.url() else {
            return false;
        };
        // Each attempt is signed afresh (new timestamp and nonce) with the key current then.
        let signature = self.signer.current().sign_response(&outgoing.body);
        let mut request = self
            .http
            .post(url)
            .timeout(Duration::from_millis(self.settings.attempt_timeout_ms))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(outgoing.body.clone());
        for (name, value) in signature.pairs() {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => response.status().is_success(),
            Err(error) => {
                tracing::debug!(event_id = %outgoing.id, %error, "sandbox notification attempt failed");
                false
            }
        }
    }
}
