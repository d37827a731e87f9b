//! WAL checkpoints off the commit path.
//!
//! With SQLite's automatic checkpoints, the commit that crosses the WAL size
//! threshold also copies the WAL into the database file and fsyncs it, and
//! the clients waiting for that commit wait for the copy too. Instead, the
//! writer connections disable automatic checkpoints and this thread runs a
//! `PASSIVE` checkpoint every few seconds (it never blocks writers or
//! readers). Under steady writes a passive checkpoint never catches the
//! last frames, so the WAL would only grow; once it holds many frames, a
//! `RESTART` checkpoint copies the few frames the passive one left and
//! makes the next commit start the WAL file from its beginning again. It
//! blocks writers for that moment (a handful of frames and one fsync of
//! the database file); the WAL file keeps its size and is overwritten in
//! place, so commits neither grow the file nor wait for a truncation. Only
//! a WAL file grown past [`TRUNCATE_ABOVE_BYTES`] (after a burst, or while
//! a long read held the WAL) is truncated to zero, which costs a writer
//! stall of tens of milliseconds on a disk that discards freed blocks.
//! Checkpoints stay rare because each one fsyncs the database file, which
//! competes with the commits' own fsyncs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rusqlite::Connection;

use super::pool::{open_checkpointer, Pool};
use crate::error::{StorageError, StorageResult};

/// How often a passive checkpoint runs.
const INTERVAL: Duration = Duration::from_secs(5);
/// WAL frames (pages) after which the WAL is restarted from its beginning.
const RESTART_AFTER_FRAMES: i64 = 20_000;
/// WAL file size above which it is truncated instead of restarted.
const TRUNCATE_ABOVE_BYTES: u64 = 512 * 1024 * 1024;

/// Starts the checkpoint thread; it ends when the store's pool is dropped.
pub(crate) fn start(path: PathBuf, pool: &Arc<Pool>) -> StorageResult<()> {
    let conn = open_checkpointer(&path)?;
    let mut wal = path.into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let pool = Arc::downgrade(pool);
    std::thread::Builder::new()
        .name("parley-checkpoint".into())
        .spawn(move || run(&conn, &wal, &pool))
        .map_err(|e| StorageError::Internal(format!("cannot start the checkpointer: {e}")))?;
    Ok(())
}

fn run(conn: &Connection, wal: &Path, pool: &Weak<Pool>) {
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
            Ok((_, frames, _)) if frames >= RESTART_AFTER_FRAMES => {
                let wal_bytes = std::fs::metadata(wal).map_or(0, |m| m.len());
                let mode = if wal_bytes > TRUNCATE_ABOVE_BYTES {
                    "PRAGMA wal_checkpoint(TRUNCATE)"
                } else {
                    "PRAGMA wal_checkpoint(RESTART)"
                };
                if let Err(e) = conn.query_row(mode, [], |_| Ok(())) {
                    tracing::debug!(error = %e, mode, "checkpoint skipped");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "checkpoint skipped"),
        }
    }
}
