//! Connections: opening and configuring them, one writer and a few readers.
//!
//! rusqlite connections are synchronous, so every call runs on the blocking
//! thread pool (see `EmbeddedStore`). Inside a process, writes serialize on
//! the writer's mutex; across processes sharing the file, they serialize on
//! SQLite's lock via `BEGIN IMMEDIATE` and the busy timeout. Readers never
//! block writers in WAL mode.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use super::schema;
use super::sqlerr::{map_err, poisoned};
use crate::error::{StorageError, StorageResult};

/// How long a statement waits for another connection's lock before giving
/// up with `Unavailable`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Number of reader connections per store.
pub(crate) const READERS: usize = 4;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// One writer and a few reader connections on the same file.
pub(crate) struct Pool {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// What a connection is used for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

impl Pool {
    /// Opens the file (creating it), switches it to WAL, migrates the schema
    /// and opens the readers.
    pub(crate) fn open(path: &Path) -> StorageResult<Pool> {
        let mut writer = open_connection(path, Role::Writer)?;
        let found = schema::migrate(&mut writer)?;
        tracing::info!(
            path = %path.display(),
            found_version = found,
            schema_version = schema::SCHEMA_VERSION,
            "embedded store opened"
        );
        let readers = (0..READERS)
            .map(|_| open_connection(path, Role::Reader).map(Mutex::new))
            .collect::<StorageResult<Vec<_>>>()?;
        Ok(Pool {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Runs `f` on a reader connection: the first free one, round robin, or
    /// waits for one. Each statement sees every commit that finished before
    /// it started (in this process or another).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> StorageResult<T>,
    ) -> StorageResult<T> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let Some(slot) = self.readers.get((start + i) % n) else {
                continue;
            };
            match slot.try_lock() {
                Ok(conn) => return f(&conn),
                Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => continue,
            }
        }
        let slot = self
            .readers
            .get(start % n.max(1))
            .ok_or_else(|| StorageError::Internal("embedded store has no readers".into()))?;
        let conn = slot.lock().map_err(|_| poisoned())?;
        f(&conn)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer and
    /// commits it when `f` succeeds (with `synchronous=FULL` the commit is
    /// fsync'd before this returns). When `f` fails, everything it wrote is
    /// rolled back.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> StorageResult<T>,
    ) -> StorageResult<T> {
        let mut conn = self.writer.lock().map_err(|_| poisoned())?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_err)?;
        let out = f(&tx)?;
        tx.commit().map_err(map_err)?;
        Ok(out)
    }
}

impl Pool {
    /// Runs `write` for each of `jobs` in one `BEGIN IMMEDIATE` transaction
    /// on the writer, each in its own savepoint: a job that fails is rolled
    /// back alone and its error returned in its slot; the others are
    /// committed together (one fsync). `Err` only when the transaction
    /// itself fails (nothing written).
    pub(crate) fn write_each<J, T>(
        &self,
        jobs: &[J],
        mut write: impl FnMut(&Connection, &J) -> StorageResult<T>,
    ) -> StorageResult<Vec<StorageResult<T>>> {
        let mut conn = self.writer.lock().map_err(|_| poisoned())?;
        let mut tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_err)?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let sp = tx.savepoint().map_err(map_err)?;
            match write(&sp, job) {
                Ok(v) => {
                    sp.commit().map_err(map_err)?;
                    out.push(Ok(v));
                }
                // Dropping the savepoint rolls this job back.
                Err(e) => out.push(Err(e)),
            }
        }
        tx.commit().map_err(map_err)?;
        Ok(out)
    }
}

/// Opens a connection for the background checkpointer.
pub(crate) fn open_checkpointer(path: &Path) -> StorageResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StorageError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
    Ok(conn)
}

/// Opens and configures one connection.
fn open_connection(path: &Path, role: Role) -> StorageResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StorageError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if role == Role::Writer {
        // SQLite opens a file it may not write read-only without saying so;
        // every write would then fail while the node looked healthy.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(map_err)? {
            return Err(StorageError::Unavailable(format!(
                "{} is read-only for this user: the node needs to write it",
                path.display()
            )));
        }
        enable_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(map_err)?;
        // Checkpoints run on their own thread (see `checkpointer`), not
        // inside a commit that a client is waiting for.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(map_err)?;
    } else {
        conn.pragma_update(None, "query_only", true)
            .map_err(map_err)?;
    }
    Ok(conn)
}

/// Switches the file to WAL mode (persistent; a no-op once done). Switching
/// needs a moment of exclusive access, so when several processes create the
/// file at once it is retried for up to the busy timeout.
fn enable_wal(conn: &Connection) -> StorageResult<()> {
    let pause = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    loop {
        let res: rusqlite::Result<String> =
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0));
        match res {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(StorageError::Internal(format!(
                    "cannot enable WAL mode (journal mode is {mode})"
                )))
            }
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && waited < BUSY_TIMEOUT =>
            {
                thread::sleep(pause);
                waited += pause;
            }
            Err(e) => return Err(map_err(e)),
        }
    }
}
