//! WAL checkpoints off the commit path.
//!
//! With SQLite's automatic checkpoints, the commit that crosses the WAL size
//! threshold also copies the WAL into the database file and fsyncs it, and
//! the clients waiting for that commit wait for the copy too. Instead, the
//! writer connections disable automatic checkpoints and this thread runs a
//! `PASSIVE` checkpoint every few seconds (it never blocks writers or
//! readers), and a `TRUNCATE` one when the WAL has grown large, to bound its
//! size. Checkpoints stay rare because each one fsyncs the database file,
//! which competes with the commits' own fsyncs.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rusqlite::Connection;

use super::pool::{open_checkpointer, Pool};
use crate::error::{StorageError, StorageResult};

/// How often a passive checkpoint runs.
const INTERVAL: Duration = Duration::from_secs(5);
/// WAL frames (pages) after which a truncating checkpoint is attempted.
const TRUNCATE_AFTER_FRAMES: i64 = 20_000;

/// Starts the checkpoint thread; it ends when the store's pool is dropped.
pub(crate) fn start(path: PathBuf, pool: &Arc<Pool>) -> StorageResult<()> {
    let conn = open_checkpointer(&path)?;
    let pool = Arc::downgrade(pool);
    std::thread::Builder::new()
        .name("parley-checkpoint".into())
        .spawn(move || run(&conn, &pool))
        .map_err(|e| StorageError::Internal(format!("cannot start the checkpointer: {e}")))?;
    Ok(())
}

fn run(conn: &Connection, pool: &Weak<Pool>) {
    loop {
        std::thread::sleep(INTERVAL);
        if pool.strong_count() == 0 {
            return;
        }
        // (busy, WAL frames, frames checkpointed)
        let passive: rusqlite::Result<(i64, i64, i64)> =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            });
        match passive {
            Ok((_, frames, done)) if frames >= TRUNCATE_AFTER_FRAMES && done == frames => {
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "checkpoint skipped"),
        }
    }
}
