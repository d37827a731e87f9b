//! Group commit across rooms: one thread that writes the message batches
//! and receipt watermarks of many rooms in one transaction and one fsync.
//!
//! Each room actor already batches its own sends and receipts; with many
//! active rooms the store would still pay one fsync per room batch (and,
//! written one by one, one per receipt: a thousand readers in a hundred
//! rooms made a thousand fsyncs a second that message commits queued
//! behind). The committer takes every request waiting at the moment, runs
//! each in its own savepoint of one `BEGIN IMMEDIATE` transaction (so a
//! `HeadMoved` or any other failure of one request undoes only its own
//! writes), commits once, and then answers every request. Nothing is
//! answered before the transaction is durable.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::pool::Pool;
use super::{messages, read_states};
use crate::error::{StorageError, StorageResult};
use crate::model::{CommitOutcome, NewMessage, Watermarks};

/// Most requests written in one transaction.
const MAX_JOBS: usize = 256;

/// Told about every group-commit transaction: how many requests it
/// wrote and how long it took (writes and the sync to disk included).
pub type TxnObserver = fn(usize, Duration);

static OBSERVER: OnceLock<TxnObserver> = OnceLock::new();

/// Installs the process-wide [`TxnObserver`] (once; later calls are ignored).
pub fn observe_transactions(observer: TxnObserver) {
    let _ = OBSERVER.set(observer);
}

/// One request to the committer.
pub(crate) enum Job {
    /// Commit one room's message batch.
    Messages(CommitJob),
    /// Raise watermarks in one room.
    Watermarks(WatermarksJob),
}

/// One room's commit request.
pub(crate) struct CommitJob {
    pub(crate) room_id: String,
    pub(crate) expected_last_seq: u64,
    pub(crate) batch: Vec<NewMessage>,
    pub(crate) reply: oneshot::Sender<StorageResult<Vec<CommitOutcome>>>,
}

/// One room's receipts: users' watermarks to raise.
pub(crate) struct WatermarksJob {
    pub(crate) room_id: String,
    pub(crate) marks: Vec<(String, Watermarks)>,
    pub(crate) reply: oneshot::Sender<StorageResult<()>>,
}

impl Job {
    /// Writes the request on `conn` (inside its savepoint): a message
    /// batch's outcomes, nothing for watermarks.
    fn write(&self, conn: &rusqlite::Connection) -> StorageResult<Vec<CommitOutcome>> {
        match self {
            Job::Messages(j) => messages::commit(conn, &j.room_id, j.expected_last_seq, &j.batch),
            Job::Watermarks(j) => {
                for (user_id, w) in &j.marks {
                    read_states::raise(conn, user_id, &j.room_id, *w)?;
                }
                Ok(Vec::new())
            }
        }
    }

    /// Answers the request with what [`Job::write`] returned for it.
    fn answer(self, result: StorageResult<Vec<CommitOutcome>>) {
        match self {
            Job::Messages(j) => {
                let _ = j.reply.send(result);
            }
            Job::Watermarks(j) => {
                let _ = j.reply.send(result.map(drop));
            }
        }
    }
}

/// Starts the committer thread; it ends when every sender is dropped.
pub(crate) fn start(pool: Arc<Pool>) -> StorageResult<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("parley-committer".into())
        .spawn(move || run(&pool, &rx))
        .map_err(|e| StorageError::Internal(format!("cannot start the committer: {e}")))?;
    Ok(tx)
}

fn run(pool: &Pool, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let results = pool.write_each(&jobs, |conn, job| job.write(conn));
        if let Some(observe) = OBSERVER.get() {
            observe(jobs.len(), started.elapsed());
        }
        match results {
            Ok(results) => {
                for (job, result) in jobs.into_iter().zip(results) {
                    job.answer(result);
                }
            }
            Err(e) => {
                // The transaction as a whole failed: nothing was written.
                let msg = e.to_string();
                for job in jobs {
                    let err = match &e {
                        StorageError::Unavailable(_) => StorageError::Unavailable(msg.clone()),
                        _ => StorageError::Internal(msg.clone()),
                    };
                    job.answer(Err(err));
                }
            }
        }
    }
}
