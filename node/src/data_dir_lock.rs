//! One node per data directory, unless the nodes are a cluster.
//!
//! Two nodes that are not clustered each take every room they are asked
//! about as their own: on one data directory (one embedded store) they
//! would both run the same rooms, each delivering only to its own clients,
//! their commits racing for each room's next seq. Running the run command
//! twice is an easy way to get there. So a node holds a lock on
//! `<data dir>/node.lock` while it runs: exclusive when it is alone,
//! shared when it is clustered (the nodes of a local cluster share the
//! directory). A second node that does not fit is refused at start-up. The
//! kernel drops the lock when the process ends, however it ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's name inside the data directory.
const LOCK_FILE: &str = "node.lock";

/// How long a starting node waits for the lock: a node killed a moment ago
/// may not have been reaped yet.
const WAIT: Duration = Duration::from_secs(3);

/// Why a node may not use its data directory.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another node holds the directory in a way this one cannot share.
    #[error(
        "another Parley node is using the data directory {dir} ({how}); \
         nodes sharing a data directory must all be clustered (--cluster-listen), \
         otherwise give each its own --data-dir"
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// What the other node is, as far as this one can tell.
        how: &'static str,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The lock, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes the data directory `dir` (created if missing) for this node: alone
/// (exclusive) or as one of a cluster (`clustered`, shared).
pub fn lock(dir: &Path, clustered: bool) -> Result<DataDirLock, LockError> {
    lock_within(dir, clustered, WAIT)
}

/// [`lock`], waiting at most `wait` for another node to let go.
fn lock_within(dir: &Path, clustered: bool, wait: Duration) -> Result<DataDirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let started = Instant::now();
    loop {
        let tried = if clustered {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match tried {
            Ok(()) => return Ok(DataDirLock { _file: file }),
            Err(TryLockError::WouldBlock) if started.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    how: if clustered {
                        "a node that is not clustered"
                    } else {
                        "a node, clustered or not"
                    },
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_node_has_the_directory_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_within(dir.path(), false, Duration::ZERO).unwrap();
        assert!(matches!(
            lock_within(dir.path(), false, Duration::ZERO),
            Err(LockError::InUse { .. })
        ));
        assert!(matches!(
            lock_within(dir.path(), true, Duration::ZERO),
            Err(LockError::InUse { .. })
        ));
        drop(first);
        lock_within(dir.path(), false, Duration::ZERO).unwrap();
    }

    #[test]
    fn clustered_nodes_share_it_and_keep_a_lone_one_out() {
        let dir = tempfile::tempdir().unwrap();
        let a = lock_within(dir.path(), true, Duration::ZERO).unwrap();
        let b = lock_within(dir.path(), true, Duration::ZERO).unwrap();
        assert!(matches!(
            lock_within(dir.path(), false, Duration::ZERO),
            Err(LockError::InUse { .. })
        ));
        drop((a, b));
        lock_within(dir.path(), false, Duration::ZERO).unwrap();
    }
}
