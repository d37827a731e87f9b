//! Storage errors.

use thiserror::Error;

/// What can go wrong talking to storage.
#[derive(Debug, Error)]
pub enum StorageError {
    /// A uniqueness rule was hit (username taken, row exists).
    #[error("already exists")]
    AlreadyExists,
    /// A conditional message commit found another head than expected: some
    /// other owner committed to the room. Nothing of the batch was written.
    #[error("room head moved: expected last_seq {expected}, found {actual}")]
    HeadMoved {
        /// The head the committer believed in.
        expected: u64,
        /// The head found in storage.
        actual: u64,
    },
    /// The addressed row does not exist (e.g. committing to an unknown room).
    #[error("not found")]
    NotFound,
    /// Storage cannot be reached or is overloaded; retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data or the schema is not what this version understands.
    #[error("storage schema: {0}")]
    Schema(String),
    /// Anything else.
    #[error("storage error: {0}")]
    Internal(String),
}

/// Result alias for storage calls.
pub type StorageResult<T> = Result<T, StorageError>;
