//! Statements fetched from the operator on a schedule: at the configured time (default
//! 10:30 Asia/Shanghai) every facility wallet's previous day is planned; due fetches are
//! leased, so several instances share the work without fetching one statement twice; a
//! statement "not yet generated" is tried again later.

use std::time::Duration;

use crate::app::App;
use crate::domain::reconciliation::business_day;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::store::reconciliation::DueFetch;

use super::{Initiator, Prepared, Source, statement_header};

/// When and how the fetch worker runs; from config.
#[derive(Clone, Debug)]
pub struct FetchSettings {
    /// Minutes after midnight, Asia/Shanghai, when the previous day is planned (10:30).
    pub at_minute_of_day: u32,
    pub poll_interval_ms: u64,
    /// A statement not ready yet is asked for again after this long.
    pub retry_after_ms: i64,
    pub lease_ms: i64,
    pub batch: u32,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            at_minute_of_day: 630,
            poll_interval_ms: 60_000,
            retry_after_ms: 30 * 60_000,
            lease_ms: 300_000,
            batch: 20,
        }
    }
}

/// What one fetch came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Kept (a new version or the same file again) and run.
    Reconciled,
    /// The operator has not generated it yet.
    NotReady,
}

const MS_PER_DAY: i64 = 86_400_000;
const SHANGHAI_OFFSET_MS: i64 = 8 * 3_600_000;

/// The business day to plan at `now`, once the configured time of day has passed.
pub fn day_to_plan(now: UnixMs, at_minute_of_day: u32) -> Option<String> {
    let local_ms = now.0 + SHANGHAI_OFFSET_MS;
    let minute_of_day = local_ms.rem_euclid(MS_PER_DAY) / 60_000;
    (minute_of_day >= i64::from(at_minute_of_day)).then(|| business_day(UnixMs(now.0 - MS_PER_DAY)))
}

impl App {
    /// Fetches one wallet's statement of `day` (digest checked by the client against the
    /// signed header), keeps it and runs the day.
    pub async fn fetch_statement(&self, wallet_id: &str, day: &str, now: UnixMs) -> Result<Fetched> {
        let operator =
            self.operator.as_ref().ok_or_else(|| Error::Unavailable { detail: String::from("no operator") })?;
        let bytes = match operator.client.statement(day, wallet_id).await {
            Ok(bytes) => bytes,
            Err(error) if error.is_not_found() => return Ok(Fetched::NotReady),
            Err(error) => return Err(Error::Unavailable { detail: error.to_string() }),
        };
        let header = statement_header(&bytes)?;
        if header.wallet_id != wallet_id || header.date != day {
            return Err(Error::invalid("statement", "STATEMENT_CORRUPT", "the header names another wallet or day"));
        }
        let owned = self.owned_wallet(wallet_id).await?;
        let carepay = self.load_carepay(&owned, wallet_id, day)?;
        let by = Initiator::Carepay("operator");
        let (_, _, parsed) = self.keep_statement(bytes.into(), &header, Source::Operator, by).await?;
        let prepared = Prepared { parsed, carepay };
        self.run_day(&owned, wallet_id, day, Initiator::Carepay("scheduler"), now, Some(prepared)).await?;
        Ok(Fetched::Reconciled)
    }

    /// One pass of the worker: plan the previous day if it is time, then work through due
    /// fetches. Returns how many were finished.
    pub async fn fetch_due_statements(&self, owner: &str, settings: &FetchSettings, now: UnixMs) -> Result<usize> {
        if let Some(day) = day_to_plan(now, settings.at_minute_of_day) {
            self.store.plan_statement_fetches(&day, now).await?;
        }
        let due = self.store.claim_statement_fetches(owner, now, settings.lease_ms, settings.batch).await?;
        let mut finished = 0;
        for fetch in &due {
            let outcome = self.fetch_statement(&fetch.wallet_id, &fetch.business_day, now).await;
            self.finish(fetch, owner, settings, now, outcome).await?;
            finished += 1;
        }
        Ok(finished)
    }

    async fn finish(
        &self,
        fetch: &DueFetch,
        owner: &str,
        settings: &FetchSettings,
        now: UnixMs,
        outcome: Result<Fetched>,
    ) -> Result<()> {
        let retry_at = Some(UnixMs(now.0 + settings.retry_after_ms));
        let (retry_at, error) = match &outcome {
            Ok(Fetched::Reconciled) => (None, None),
            Ok(Fetched::NotReady) => (retry_at, Some(String::from("statement not ready"))),
            // A closed day keeps the statement it was closed with: nothing to try again.
            Err(Error::Conflict { code: "DAY_CLOSED", detail }) => (None, Some(detail.clone())),
            Err(error) => {
                tracing::warn!(wallet_id = %fetch.wallet_id, day = %fetch.business_day, %error, "statement fetch failed");
                (retry_at, Some(error.to_string()))
            }
        };
        self.store.finish_statement_fetch(fetch, owner, retry_at, error.as_deref()).await?;
        Ok(())
    }
}

/// Runs [`App::fetch_due_statements`] until the process ends.
pub async fn run_worker(app: App, settings: FetchSettings) {
    let owner = format!("fetch-{}", uuid::Uuid::now_v7().simple());
    loop {
        if let Err(error) = app.fetch_due_statements(&owner, &settings, UnixMs::now()).await {
            tracing::warn!(%error, "statement fetch pass failed");
        }
        tokio::time::sleep(Duration::from_millis(settings.poll_interval_ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_day_is_planned_after_the_configured_time() {
        // 2026-11-29 10:29 and 10:31 in Shanghai.
        let day_start = crate::domain::reconciliation::day_start_ms("2026-11-29").unwrap();
        assert_eq!(day_to_plan(UnixMs(day_start + 629 * 60_000), 630), None);
        assert_eq!(day_to_plan(UnixMs(day_start + 631 * 60_000), 630).as_deref(), Some("2026-11-28"));
    }
}
