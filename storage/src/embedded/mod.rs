//! Embedded backend: one SQLite file, `<data dir>/parley.db`, in WAL mode.
//!
//! Several node processes on one machine may open the same file (a local
//! cluster): writes use `BEGIN IMMEDIATE` and a busy timeout, so they
//! serialize across processes, and readers never block.
//!
//! Durability: `synchronous=FULL`, so every write transaction is fsync'd
//! before the call returns; a message commit is the point after which the
//! room owner may ack it.
//!
//! Split-owner rule: [`Store::commit_messages`](crate::Store::commit_messages)
//! reads the room's `last_seq` and writes the batch in one `BEGIN IMMEDIATE`
//! transaction, so a second owner committing on the same head sees the moved
//! head and gets `HeadMoved` with nothing written. Cost: one fsync per batch,
//! and all writers of all processes share one file lock (batches amortise
//! both).
//!
//! Group commit across rooms: message commits and receipt watermarks go to
//! one committer thread that writes every request waiting at the moment in
//! one transaction, each in its own savepoint (see `committer`), so many
//! active rooms share an fsync.
//!
//! Modules: `pool` (connections), `committer` (cross-room group commit),
//! `schema` (migrations), `sqlerr` (error
//! mapping), one module per data area, and `store_impl` (the [`Store`]
//! impl, which runs every call on tokio's blocking pool).
//!
//! [`Store`]: crate::Store

mod checkpointer;
mod committer;
mod messages;
mod pool;
mod read_states;
mod rooms;
mod schema;
mod sqlerr;
mod store_impl;
mod tokens;
mod users;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, Transaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{StorageError, StorageResult};
use pool::Pool;

pub use committer::{observe_transactions, TxnObserver};
pub use schema::SCHEMA_VERSION;

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "parley.db";

/// The embedded store. Cheap to clone (clones share the connections).
#[derive(Clone)]
pub struct EmbeddedStore {
    pool: Arc<Pool>,
    path: Arc<PathBuf>,
    commits: std::sync::mpsc::Sender<committer::Job>,
    /// Calls let onto the blocking pool at once: as many reads as there are
    /// reader connections, one write. Every call there is a thread of its
    /// own until it ends, and more than the connections would only wait for
    /// them inside: a burst of 500 room lists had started 500 threads, each
    /// with its own stack and, past a few, memory the allocator kept.
    reads: Arc<Semaphore>,
    writes: Arc<Semaphore>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Creates `dir` and an empty database file `db` when missing, readable by
/// the node's user only (SQLite gives its `-wal` and `-shm` files the
/// database file's permissions). Existing ones are left as they are.
fn create_private(dir: &Path, db: &Path) -> std::io::Result<()> {
    crate::private_files::create_dir(dir)?;
    match crate::private_files::create_new(db) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl EmbeddedStore {
    /// Opens the store under `dir`: creates the directory and
    /// `dir/parley.db` when missing, switches to WAL and migrates the schema.
    /// Refuses a file with a newer schema ([`StorageError::Schema`]).
    /// Blocking; call it at start-up (or from `spawn_blocking`).
    pub fn open(dir: &Path) -> StorageResult<Self> {
        let path = dir.join(DB_FILE_NAME);
        create_private(dir, &path).map_err(|e| {
            StorageError::Unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
        let pool = Arc::new(Pool::open(&path)?);
        let commits = committer::start(Arc::clone(&pool))?;
        checkpointer::start(path.clone(), &pool)?;
        Ok(EmbeddedStore {
            pool,
            path: Arc::new(path),
            commits,
            reads: Arc::new(Semaphore::new(pool::READERS)),
            writes: Arc::new(Semaphore::new(1)),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a reader connection on the blocking pool, once one of
    /// [`pool::READERS`] places there is free.
    async fn read<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    {
        let place = take_place(&self.reads).await?;
        let pool = Arc::clone(&self.pool);
        let out = tokio::task::spawn_blocking(move || pool.read(f)).await;
        drop(place);
        out.map_err(join_error)?
    }

    /// Runs `f` in one durable write transaction on the blocking pool, one
    /// such call at a time.
    async fn write<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StorageResult<T> + Send + 'static,
    {
        let place = take_place(&self.writes).await?;
        let pool = Arc::clone(&self.pool);
        let out = tokio::task::spawn_blocking(move || pool.write(f)).await;
        drop(place);
        out.map_err(join_error)?
    }
}

/// Waits for a place on the blocking pool. It is given back once the
/// call's result is in (its thread then free for the next call, where
/// giving it back from the thread would start another), or when the caller
/// stops waiting.
async fn take_place(places: &Arc<Semaphore>) -> StorageResult<OwnedSemaphorePermit> {
    Arc::clone(places)
        .acquire_owned()
        .await
        .map_err(|_| StorageError::Internal("embedded store is closed".into()))
}

fn join_error(e: tokio::task::JoinError) -> StorageError {
    StorageError::Internal(format!("storage task failed: {e}"))
}
