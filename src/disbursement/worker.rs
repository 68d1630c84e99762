//! Executes running batches: claims lines with leases, sends each transfer at most with a
//! bounded number in flight and at a bounded rate, resolves unknown outcomes by query, records
//! definite answers with their ledger entry, and completes batches with their callback.
//!
//! Exactly once: a line's `out_transfer_no` is fixed at upload and the line is durably marked
//! `sending` by the claim before its request leaves. After a crash, a timeout or a lost lease
//! the line is only ever asked about (or sent again under the same number, which the operator
//! answers with the first result), never given a new number.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::app::App;
use crate::callbacks::NewEvent;
use crate::domain::batch::{Batch, TransferFailure};
use crate::domain::callbacks::{EventOwner, EventType};
use crate::domain::ids::TokenId;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::operator::client::OperatorError;
use crate::operator::types::{TransferQueryResponse, TransferRequest, TransferStatus};
use crate::store::disbursement::{ClaimedLine, LineOutcome};

/// Pause between rounds when nothing was due.
const IDLE_POLL_MS: u64 = 500;

/// Batches completed per round at most (each is one small transaction).
const COMPLETIONS_PER_ROUND: u32 = 16;

/// Who the history shows as completing a batch: the service itself, not a person.
const SYSTEM_ACTOR_LABEL: &str = "carepay";

/// Runs until `stop` resolves.
pub async fn run(app: App, stop: impl std::future::Future<Output = ()>) {
    let owner = format!("disburse-{}", uuid::Uuid::now_v7().simple());
    let in_flight = Arc::new(Semaphore::new(app.disbursement.concurrency.max(1)));
    let mut recording = Recording::default();
    tokio::pin!(stop);
    loop {
        let busy = match round(&app, &owner, &in_flight, &mut recording).await {
            Ok(busy) => busy,
            Err(error) => {
                tracing::error!(%error, "disbursement worker round failed");
                false
            }
        };
        let pause = if busy { Duration::ZERO } else { Duration::from_millis(IDLE_POLL_MS) };
        tokio::select! {
            () = &mut stop => {
                recording.finish().await;
                return;
            }
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// The previous round's outcomes being recorded (and finished batches completed) while the
/// next round claims and sends: at most one round waits to be recorded. Its lines keep their
/// leases until then, so no claim takes them meanwhile.
#[derive(Default)]
pub struct Recording(Option<tokio::task::JoinHandle<()>>);

impl Recording {
    async fn finish(&mut self) {
        if let Some(previous) = self.0.take()
            && let Err(error) = previous.await
        {
            tracing::error!(%error, "recording a round of subsidy outcomes stopped");
        }
    }

    async fn start(&mut self, app: &App, outcomes: Vec<(String, LineOutcome)>) {
        self.finish().await;
        let app = app.clone();
        self.0 = Some(tokio::spawn(async move {
            record_outcomes(&app, &outcomes).await;
            if let Err(error) = complete_finished(&app).await {
                tracing::error!(%error, "completing finished subsidy batches failed");
            }
        }));
    }
}

/// One round: claim what is due, work it with bounded concurrency and rate, then hand the
/// answers to `recording` (which also completes batches that are done). `true` when a full
/// claim was found (more may be waiting).
pub async fn round(app: &App, owner: &str, in_flight: &Arc<Semaphore>, recording: &mut Recording) -> Result<bool> {
    let settings = &app.disbursement;
    let now = UnixMs::now();
    let claim_size = claim_size(settings);
    let claimed = app.store.claim_lines(owner, now, settings.lease_ms, settings.query_delay_ms, claim_size).await?;
    let full = claimed.len() as u32 >= claim_size;
    // Spacing starts between transfers bounds the rate towards the operator per instance. The
    // n-th start is due at `n * spacing`; we sleep only when more than a timer tick ahead, since
    // timers are coarser (1 ms) than the spacing at high rates.
    let spacing = Duration::from_micros(1_000_000 / u64::from(settings.rate_per_s.max(1)));
    let round_start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, line) in claimed.into_iter().enumerate() {
        let due = round_start + spacing * u32::try_from(n).unwrap_or(u32::MAX);
        if due > tokio::time::Instant::now() + Duration::from_millis(1) {
            tokio::time::sleep_until(due).await;
        }
        let permit = Arc::clone(in_flight).acquire_owned().await.map_err(|e| Error::Internal(e.into()))?;
        let app = app.clone();
        let owner = owner.to_owned();
        tasks.spawn(async move {
            let result = work_line(&app, &owner, &line).await;
            drop(permit);
            match result {
                Ok(outcome) => outcome.map(|outcome| (line.line.out_transfer_no.clone(), outcome)),
                Err(error) => {
                    // The line keeps its lease until it lapses and is then queried again.
                    tracing::warn!(%error, out_transfer_no = %line.line.out_transfer_no, "subsidy line not settled this round");
                    None
                }
            }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(outcome)) = joined {
            outcomes.push(outcome);
        }
    }
    recording.start(app, outcomes).await;
    Ok(full)
}

/// Lines one round claims: no more than the rate can start within a quarter of the lease, so
/// a round's last line still leaves before its lease could lapse to another instance.
fn claim_size(settings: &super::DisbursementSettings) -> u32 {
    let startable = u64::from(settings.rate_per_s) * u64::try_from(settings.lease_ms.max(0)).unwrap_or(0) / 4_000;
    settings.claim_batch.min(u32::try_from(startable).unwrap_or(u32::MAX)).max(1)
}

/// Definite answers of a round, recorded in one transaction; should that fail, line by line, so
/// one bad line cannot hold back the others. What is not recorded is asked about again.
async fn record_outcomes(app: &App, outcomes: &[(String, LineOutcome)]) {
    if outcomes.is_empty() {
        return;
    }
    if let Err(error) = app.store.finish_lines(outcomes, UnixMs::now()).await {
        tracing::warn!(%error, "recording a round of subsidy outcomes failed; recording them one by one");
        for (out_transfer_no, outcome) in outcomes {
            if let Err(error) = app.store.finish_line(out_transfer_no, outcome, UnixMs::now()).await {
                tracing::error!(%error, %out_transfer_no, "recording a subsidy outcome failed");
            }
        }
    }
}

/// Sends (first attempt) or asks about (later attempts) one line; the definite answer, if any,
/// for the caller to record with the rest of the round.
async fn work_line(app: &App, owner: &str, claimed: &ClaimedLine) -> Result<Option<LineOutcome>> {
    let client =
        &app.operator.as_ref().ok_or_else(|| Error::Internal(anyhow::anyhow!("no operator configured")))?.client;
    let line = &claimed.line;
    let payer = claimed.funding_wallet_id.as_str();
    let request = TransferRequest {
        payer_wallet_id: payer.to_owned(),
        out_transfer_no: line.out_transfer_no.clone(),
        payee_wallet_id: line.wallet_id.as_str().to_owned(),
        payee_name: line.payee_name.clone(),
        amount: line.amount,
        memo: line.memo.clone(),
    };
    if claimed.first_attempt
        && let Some(settled) = send(client, &request, UnixMs::now()).await
    {
        return Ok(Some(settled));
    }
    match client.query_transfer(payer, &line.out_transfer_no).await {
        Ok(answer) => match definite(&answer) {
            Some(outcome) => Ok(Some(outcome)),
            None => reschedule(app, owner, claimed).await.map(|()| None),
        },
        Err(OperatorError::Rejected { http_status: 404, .. }) => {
            // The operator never received it: send it again under the same number (the
            // operator's idempotency key), then ask at the next due time.
            if let Some(settled) = send(client, &request, UnixMs::now()).await {
                return Ok(Some(settled));
            }
            reschedule(app, owner, claimed).await.map(|()| None)
        }
        Err(_) => reschedule(app, owner, claimed).await.map(|()| None),
    }
}

/// Sends the transfer; the outcome when the answer settles it. A definite refusal is a
/// failure; an answer of `SUCCESS` (an operator that settles inside the request) is a success
/// at the time of the answer, except close to the end of a business day, where only the
/// operator's own `succeeded_at` (asked for by query) may decide the day it is booked on.
/// Anything else, an unknown outcome included, decides nothing: the caller asks.
async fn send(
    client: &crate::operator::client::OperatorClient,
    request: &TransferRequest,
    now: UnixMs,
) -> Option<LineOutcome> {
    match client.transfer(request).await {
        Err(OperatorError::Rejected { code, .. }) if is_definite_failure(&code) => {
            Some(LineOutcome::Failed { transfer_no: None, fail_code: code })
        }
        Ok(answer) if answer.status == TransferStatus::Success && !near_business_day_end(now) => {
            Some(LineOutcome::Succeeded { transfer_no: Some(answer.transfer_no), at: now })
        }
        Ok(_) | Err(_) => None,
    }
}

/// How close to midnight in Asia/Shanghai a success answered without its time is asked about
/// rather than booked at the time carepay saw it.
const DAY_END_MARGIN_MS: i64 = 60_000;

fn near_business_day_end(now: UnixMs) -> bool {
    const SHANGHAI_OFFSET_MS: i64 = 8 * 3_600_000;
    let into_day_ms = (now.0 + SHANGHAI_OFFSET_MS).rem_euclid(crate::domain::reconciliation::MS_PER_DAY);
    !(DAY_END_MARGIN_MS..=crate::domain::reconciliation::MS_PER_DAY - DAY_END_MARGIN_MS).contains(&into_day_ms)
}

/// The outcome an answer settles, or `None` while the transfer is still `ACCEPTED`.
fn definite(answer: &TransferQueryResponse) -> Option<LineOutcome> {
    match answer.status {
        TransferStatus::Accepted => None,
        TransferStatus::Success => Some(LineOutcome::Succeeded {
            transfer_no: Some(answer.transfer_no.clone()),
            at: crate::payments::parse_operator_time(answer.succeeded_at.as_deref()).unwrap_or_else(UnixMs::now),
        }),
        TransferStatus::Failed => Some(LineOutcome::Failed {
            transfer_no: Some(answer.transfer_no.clone()),
            fail_code: answer.fail_code.clone().unwrap_or_else(|| String::from("UNKNOWN")),
        }),
    }
}

async fn reschedule(app: &App, owner: &str, claimed: &ClaimedLine) -> Result<()> {
    // Back off with the attempts so a line the operator keeps not answering costs little.
    let attempts = i64::from(claimed.line.attempts.min(10));
    let delay_ms = app.disbursement.query_delay_ms.saturating_mul(attempts.max(1));
    let next = UnixMs(UnixMs::now().0 + delay_ms);
    app.store.reschedule_line(&claimed.line, owner, next).await?;
    Ok(())
}

/// Refusals that say the transfer was not and will not be made under this number.
fn is_definite_failure(code: &str) -> bool {
    TransferFailure::classify(code) != TransferFailure::Other
}

/// Completes every running batch with no line left to settle, and tells the office.
async fn complete_finished(app: &App) -> Result<()> {
    for batch in app.store.batches_ready_to_complete(COMPLETIONS_PER_ROUND).await? {
        let progress = app.store.batch_progress(&batch.id).await?;
        let event = completed_event(app, &batch, &progress).await?;
        let system = system_actor();
        match app.store.complete_batch(&batch, &event, (&system, SYSTEM_ACTOR_LABEL), UnixMs::now()).await {
            Ok(()) => tracing::info!(batch = %batch.id, "subsidy batch completed"),
            // Another instance completed it first.
            Err(crate::store::StoreError::GuardFailed) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}

/// The token id recorded for steps the service takes on its own.
fn system_actor() -> TokenId {
    TokenId::from_trusted(String::from("tok_00000000000000000000000000000000"))
}

async fn completed_event(app: &App, batch: &Batch, progress: &crate::domain::batch::Progress) -> Result<NewEvent> {
    let programme = app
        .store
        .programme(&batch.programme_id)
        .await?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("programme of {} vanished", batch.id)))?;
    let yuan = |fen: i64| crate::domain::money::Amount::from_fen(fen).map(|a| a.to_string()).unwrap_or_default();
    let data = serde_json::json!({
        "batch_id": batch.id.as_str(),
        "programme_id": batch.programme_id.as_str(),
        "period": batch.period.as_str(),
        "status": "completed",
        "succeeded_lines": progress.succeeded.lines,
        "succeeded_amount": yuan(progress.succeeded.amount_fen),
        "failed_lines": progress.failed.lines,
        "failed_amount": yuan(progress.failed.amount_fen),
    });
    Ok(NewEvent {
        owner: EventOwner::Office(programme.region_id),
        event_type: EventType::BatchCompleted,
        object_id: batch.id.as_str().to_owned(),
        object_version: batch.version + 1,
        data,
    })
}

/// Applies a TRANSFER.* notification from the operator: a hint confirmed by the answer it
/// carries; a line already final is left as it is.
pub async fn apply_transfer_notification(app: &App, answer: &TransferQueryResponse) -> Result<()> {
    let (Some(out_transfer_no), Some(outcome)) = (answer.out_transfer_no.as_deref(), definite(answer)) else {
        return Ok(());
    };
    app.store.finish_line(out_transfer_no, &outcome, UnixMs::now()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_claims_no_more_than_the_rate_starts_within_a_quarter_of_the_lease() {
        let settings = |rate_per_s, lease_ms| crate::disbursement::DisbursementSettings {
            rate_per_s,
            lease_ms,
            claim_batch: 1_024,
            ..Default::default()
        };
        assert_eq!(claim_size(&settings(2_000, 30_000)), 1_024);
        assert_eq!(claim_size(&settings(20, 30_000)), 150);
        assert_eq!(claim_size(&settings(1, 1_000)), 1);
    }

    #[test]
    fn successes_answered_near_midnight_in_shanghai_are_asked_about() {
        // 2026-11-29T16:00:00Z is midnight in Asia/Shanghai.
        let midnight = UnixMs(1_795_968_000_000);
        assert!(near_business_day_end(UnixMs(midnight.0 - 1)));
        assert!(near_business_day_end(UnixMs(midnight.0 + 59_999)));
        assert!(!near_business_day_end(UnixMs(midnight.0 + 60_001)));
        assert!(!near_business_day_end(UnixMs(midnight.0 - 3_600_000)));
    }
}
