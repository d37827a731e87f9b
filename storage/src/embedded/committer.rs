//! Group commit across rooms: one thread that writes the message batches of
//! many rooms in one transaction and one fsync.
//!
//! Each room actor already batches its own sends; with many active rooms the
//! store would still pay one fsync per room batch. The committer takes every
//! commit request waiting at the moment, runs each in its own savepoint of
//! one `BEGIN IMMEDIATE` transaction (so a `HeadMoved` or any other failure
//! of one room undoes only that room's writes), commits once, and then
//! answers every request. Nothing is answered before the transaction is
//! durable.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::messages;
use super::pool::Pool;
use crate::error::{StorageError, StorageResult};
use crate::model::{CommitOutcome, NewMessage};

/// Most room batches written in one transaction.
const MAX_JOBS: usize = 256;

/// Told about every group-commit transaction: how many room batches it
/// wrote and how long it took (writes and the sync to disk included).
pub type TxnObserver = fn(usize, Duration);

static OBSERVER: OnceLock<TxnObserver> = OnceLock::new();

/// Installs the process-wide [`TxnObserver`] (once; later calls are ignored).
pub fn observe_transactions(observer: TxnObserver) {
    let _ = OBSERVER.set(observer);
}

/// One room's commit request.
pub(crate) struct CommitJob {
    pub(crate) room_id: String,
    pub(crate) expected_last_seq: u64,
    pub(crate) batch: Vec<NewMessage>,
    pub(crate) reply: oneshot::Sender<StorageResult<Vec<CommitOutcome>>>,
}

/// Starts the committer thread; it ends when every sender is dropped.
pub(crate) fn start(pool: Arc<Pool>) -> StorageResult<mpsc::Sender<CommitJob>> {
    let (tx, rx) = mpsc::channel::<CommitJob>();
    std::thread::Builder::new()
        .name("parley-committer".into())
        .spawn(move || run(&pool, &rx))
        .map_err(|e| StorageError::Internal(format!("cannot start the committer: {e}")))?;
    Ok(tx)
}

fn run(pool: &Pool, rx: &mpsc::Receiver<CommitJob>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let work: Vec<_> = jobs
            .iter()
            .map(|j| (j.room_id.as_str(), j.expected_last_seq, j.batch.as_slice()))
            .collect();
        let started = Instant::now();
        let results = pool.write_each(work.len(), |conn, i| {
            let (room_id, expected, batch) = work[i];
            messages::commit(conn, room_id, expected, batch)
        });
        if let Some(observe) = OBSERVER.get() {
            observe(jobs.len(), started.elapsed());
        }
        match results {
            Ok(results) => {
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
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
                    let _ = job.reply.send(Err(err));
                }
            }
        }
    }
}
