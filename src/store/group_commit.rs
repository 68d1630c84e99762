//! Group commit for the terminal payment path.
//!
//! Every terminal payment writes twice (its start, then its outcome), and every terminal
//! request first records its nonce. Written one by one, each is a transaction of its own: a
//! commit (a WAL flush) and a round trip per statement, and every outcome of one facility
//! queues on that facility's ledger-account row until the previous one commits. Here the
//! writes that arrive while a transaction is being written wait for the next one and then
//! share it: a handful of multi-row statements and one commit for however many there are,
//! each guarded account updated once by the sum of its postings.
//!
//! Nothing waits for a batch to fill: a writer takes whatever is queued the moment it is free,
//! so a lone request is written at once. Each write keeps its own answer: a nonce already
//! seen, a request id already used or a payment that already moved is reported to that
//! caller only. If a shared transaction fails as a whole (a guard held, a constraint
//! refused one row), its writes are retried one transaction each, so one bad write never
//! fails the others and each caller gets the error its own write causes.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::payments::{BeginWrite, MoveWrite, NonceWrite};
use super::{Backend, Store, StoreError};
use crate::domain::payment::Payment;
use crate::store::payments::Begun;

/// Bounds of the group commit; from config.
#[derive(Clone, Copy, Debug)]
pub struct GroupCommitSettings {
    /// Most writes one transaction carries.
    pub max_batch: usize,
    /// Writes waiting in each lane; callers wait for room beyond it.
    pub queue: usize,
    /// PostgreSQL: transactions starting payments written at once (the flushes of
    /// concurrent commits are shared by the server).
    pub postgres_begin_writers: usize,
}

impl Default for GroupCommitSettings {
    fn default() -> Self {
        GroupCommitSettings { max_batch: 64, queue: 4_096, postgres_begin_writers: 2 }
    }
}

/// Which queue a write waits in. SQLite has one writer, so it has one lane: anything else
/// would only cut its batches into more commits. PostgreSQL takes concurrent transactions,
/// and the lanes keep them from waiting on each other: nonces (every request's first write)
/// never queue behind payment writes, starts touch only new rows, and every outcome goes through one writer, because outcomes
/// of one facility update its ledger account row, which a second writer would wait on
/// until the first committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Nonces = 0,
    Begins = 1,
    Moves = 2,
}

/// One write and where its answer goes.
pub(crate) enum Job {
    Nonce(NonceWrite, oneshot::Sender<Result<bool, StoreError>>),
    Begin(Box<BeginWrite>, oneshot::Sender<Result<Begun<Payment>, StoreError>>),
    Move(Box<MoveWrite>, oneshot::Sender<Result<bool, StoreError>>),
}

impl Job {
    /// Two writes with the same key must not share a transaction: the second must see what
    /// the first did (a used nonce, a used request id, a payment already moved).
    fn key(&self) -> (u8, String) {
        match self {
            Job::Nonce(write, _) => (0, format!("{}\u{1f}{}", write.terminal_id, write.nonce)),
            Job::Begin(write, _) => (1, format!("{}\u{1f}{}", write.payment.terminal_id, write.request_id)),
            Job::Move(write, _) => (2, write.payment_id.to_string()),
        }
    }

    fn lane(&self) -> Lane {
        match self {
            Job::Nonce(..) => Lane::Nonces,
            Job::Begin(..) => Lane::Begins,
            Job::Move(..) => Lane::Moves,
        }
    }

    fn fail(self, error: StoreError) {
        match self {
            Job::Nonce(_, reply) => {
                let _ = reply.send(Err(error));
            }
            Job::Begin(_, reply) => {
                let _ = reply.send(Err(error));
            }
            Job::Move(_, reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// The queues in front of the writers, by [`Lane`] (one on SQLite).
#[derive(Clone, Debug)]
pub(crate) struct GroupCommit {
    lanes: Vec<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Nonce(..) => "Job::Nonce",
            Job::Begin(..) => "Job::Begin",
            Job::Move(..) => "Job::Move",
        })
    }
}

impl GroupCommit {
    /// Start the writers on `store` (a store without a group commit of its own: the writers
    /// must not hold the queues open, or they would never close). They stop once every
    /// sender is gone.
    pub(super) fn start(store: Store, settings: GroupCommitSettings) -> GroupCommit {
        let writers_per_lane: &[usize] = match store.backend() {
            Backend::Sqlite => &[1],
            Backend::Postgres => &[1, settings.postgres_begin_writers.max(1), 1],
        };
        let mut lanes = Vec::with_capacity(writers_per_lane.len());
        for &writers in writers_per_lane {
            let (jobs, receiver) = mpsc::channel(settings.queue.max(1));
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..writers {
                tokio::spawn(write_loop(store.clone(), Arc::clone(&receiver), settings.max_batch.max(1)));
            }
            lanes.push(jobs);
        }
        GroupCommit { lanes }
    }

    pub(super) async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = job(reply);
        let lane = if self.lanes.len() == 1 { &self.lanes[0] } else { &self.lanes[job.lane() as usize] };
        lane.send(job).await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer.await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
}

/// Write one job in a transaction of its own and return its answer.
pub(super) async fn write_alone<T>(
    store: &Store,
    job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
) -> Result<T, StoreError> {
    let (reply, answer) = oneshot::channel();
    write_round(store, vec![job(reply)]).await;
    answer.await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
}

async fn write_loop(store: Store, receiver: Arc<Mutex<mpsc::Receiver<Job>>>, max_batch: usize) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, max_batch).await == 0 {
                return;
            }
        }
        // Writes with a key already in this transaction go to the next one, in order.
        while !batch.is_empty() {
            let mut seen = HashSet::new();
            let (round, later): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|job| seen.insert(job.key()));
            write_round(&store, round).await;
            batch = later;
        }
    }
}

/// Write `jobs` in one transaction and answer each; if that fails, one transaction each.
async fn write_round(store: &Store, jobs: Vec<Job>) {
    let shared = jobs.len() > 1;
    let Err((mut jobs, error)) = write_transaction(store, jobs).await else { return };
    if !shared {
        // A lone write's own failure is its answer.
        if let Some(job) = jobs.pop() {
            job.fail(error);
        }
        return;
    }
    tracing::debug!(%error, writes = jobs.len(), "shared transaction refused; writing one by one");
    for job in jobs {
        if let Err((mut failed, error)) = write_transaction(store, vec![job]).await
            && let Some(job) = failed.pop()
        {
            job.fail(error);
        }
    }
}

/// One transaction for all of `jobs`; on success every job is answered, on failure the
/// jobs come back unanswered with the error.
async fn write_transaction(store: &Store, jobs: Vec<Job>) -> Result<(), (Vec<Job>, StoreError)> {
    let mut nonces = Vec::new();
    let mut begins = Vec::new();
    let mut moves = Vec::new();
    for job in &jobs {
        match job {
            Job::Nonce(write, _) => nonces.push(write),
            Job::Begin(write, _) => begins.push(write.as_ref()),
            Job::Move(write, _) => moves.push(write.as_ref()),
        }
    }
    let started = std::time::Instant::now();
    let written = async {
        // Committed durably, nonces too: the terminal contract promises a replay is refused
        // until its window closes, after a crash of carepay or of the database as well.
        let mut tx = store.begin_write().await?;
        let fresh = super::payments::record_nonces_in(&mut tx, &nonces).await?;
        let begun = super::payments::begin_payments_in(&mut tx, &begins).await?;
        let (moved, opened) = super::payments::move_payments_in(&mut tx, &moves, &store.known_accounts).await?;
        tx.commit().await?;
        store.known_accounts.remember(&opened);
        Ok::<_, StoreError>((fresh, begun, moved))
    }
    .await;
    tracing::trace!(
        nonces = nonces.len(),
        begins = begins.len(),
        moves = moves.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        ok = written.is_ok(),
        "group commit"
    );
    let (fresh, begun, moved) = match written {
        Ok(results) => results,
        Err(error) => return Err((jobs, error)),
    };
    let (mut fresh, mut begun, mut moved) = (fresh.into_iter(), begun.into_iter(), moved.into_iter());
    for job in jobs {
        match job {
            Job::Nonce(_, reply) => {
                let _ = reply.send(Ok(fresh.next().expect("one answer per nonce")));
            }
            Job::Begin(_, reply) => {
                let _ = reply.send(Ok(begun.next().expect("one answer per start")));
            }
            Job::Move(_, reply) => {
                let _ = reply.send(Ok(moved.next().expect("one answer per move")));
            }
        }
    }
    Ok(())
}
