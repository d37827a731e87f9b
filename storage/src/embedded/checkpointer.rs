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

/// When checkpoints run and which kind.
#[derive(Debug, Clone, Copy)]
struct Policy {
    /// How often a passive checkpoint runs.
    interval: Duration,
    /// WAL frames (pages) after which the WAL is restarted from its beginning.
    restart_after_frames: i64,
    /// WAL file size above which it is truncated instead of restarted.
    truncate_above_bytes: u64,
}

/// The policy of every store.
const POLICY: Policy = Policy {
    interval: Duration::from_secs(5),
    restart_after_frames: 20_000,
    truncate_above_bytes: 512 * 1024 * 1024,
};

/// Starts the checkpoint thread; it ends when the store's pool is dropped.
pub(crate) fn start(path: PathBuf, pool: &Arc<Pool>) -> StorageResult<()> {
    start_with(path, pool, POLICY)
}

fn start_with(path: PathBuf, pool: &Arc<Pool>, policy: Policy) -> StorageResult<()> {
    let conn = open_checkpointer(&path)?;
    let wal = wal_path(&path);
    let pool = Arc::downgrade(pool);
    std::thread::Builder::new()
        .name("parley-checkpoint".into())
        .spawn(move || run(&conn, &wal, &pool, policy))
        .map_err(|e| StorageError::Internal(format!("cannot start the checkpointer: {e}")))?;
    Ok(())
}

/// SQLite's WAL file of the database at `db`.
fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

fn run(conn: &Connection, wal: &Path, pool: &Weak<Pool>, policy: Policy) {
    loop {
        std::thread::sleep(policy.interval);
        if pool.strong_count() == 0 {
            return;
        }
        // (busy, WAL frames, frames checkpointed)
        let passive: rusqlite::Result<(i64, i64, i64)> =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            });
        match passive {
            Ok((_, frames, _)) if frames >= policy.restart_after_frames => {
                let wal_bytes = std::fs::metadata(wal).map_or(0, |m| m.len());
                let mode = if wal_bytes > policy.truncate_above_bytes {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The WAL header's checkpoint sequence number (bytes 12..16, big
    /// endian): SQLite raises it each time the WAL starts over.
    fn wal_generation(wal: &Path) -> Option<u32> {
        let bytes = std::fs::read(wal).ok()?;
        let field: [u8; 4] = bytes.get(12..16)?.try_into().ok()?;
        Some(u32::from_be_bytes(field))
    }

    /// Writes `n` small transactions; returns whether the WAL file was ever
    /// seen smaller than before (truncated).
    fn write_for(pool: &Pool, wal: &Path, n: usize, pause: Duration) -> bool {
        let mut largest = 0;
        let mut shrank = false;
        for i in 0..n {
            pool.write(|tx| {
                tx.execute(
                    "INSERT INTO refresh_tokens (token_hash, user_id, expires_at) VALUES (?1, 'u', 0)",
                    [format!("t{i}-{}", "x".repeat(200))],
                )
                .map_err(crate::embedded::sqlerr::map_err)
            })
            .expect("write");
            let size = std::fs::metadata(wal).map_or(0, |m| m.len());
            shrank |= size < largest;
            largest = largest.max(size);
            std::thread::sleep(pause);
        }
        shrank
    }

    fn open(policy: Policy) -> (tempfile::TempDir, Arc<Pool>, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let pool = Arc::new(Pool::open(&path).expect("open"));
        start_with(path.clone(), &pool, policy).expect("start");
        (dir, pool, wal_path(&path))
    }

    #[test]
    fn steady_writes_restart_the_wal_in_place() {
        let (_dir, pool, wal) = open(Policy {
            interval: Duration::from_millis(20),
            restart_after_frames: 50,
            truncate_above_bytes: u64::MAX,
        });
        let before = wal_generation(&wal).unwrap_or(0);
        let shrank = write_for(&pool, &wal, 1500, Duration::from_micros(200));
        let after = wal_generation(&wal).unwrap_or(0);
        // How often it restarts depends on timing; that it does, and never by
        // truncating the file, does not.
        assert!(
            after >= before + 2,
            "the WAL did not start over: generation {before} -> {after}"
        );
        assert!(!shrank, "the WAL was truncated instead of reused");
    }

    #[test]
    fn an_oversized_wal_is_truncated() {
        let (_dir, pool, wal) = open(Policy {
            interval: Duration::from_millis(20),
            restart_after_frames: 50,
            truncate_above_bytes: 0,
        });
        let shrank = write_for(&pool, &wal, 1500, Duration::from_micros(200));
        assert!(shrank, "an oversized WAL was never truncated");
    }
}
