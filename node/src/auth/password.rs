//! argon2id password hashing, run off the async threads, a few at a time.
//!
//! Each hash takes `--argon2-memory-kib` (19 MiB by default) for its
//! duration. Logins for unknown names are hashed too (so timing reveals
//! nothing), so anyone can start hashes; with no bound, a burst of failed
//! logins from a few addresses held gigabytes at once. At most one hash
//! per CPU runs at a time (more would not finish sooner); the others wait
//! for a slot, and one that waits longer than [`SLOT_WAIT`] is answered
//! "busy, try again" instead.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest a password check waits for a free slot.
pub const SLOT_WAIT: Duration = Duration::from_secs(10);

/// Why a password could not be hashed or checked (never a wrong password:
/// that is `Ok(false)`).
#[derive(Debug, Error)]
pub enum HashError {
    /// Every slot stayed busy for [`SLOT_WAIT`].
    #[error("too many password checks at once, try again")]
    Busy,
    /// The hasher failed.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// argon2id with the configured cost, at most `slots` at a time.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    /// Memory cost in KiB.
    memory_kib: u32,
    /// Iterations.
    iterations: u32,
    /// One permit per hash allowed to run at once.
    slots: Arc<Semaphore>,
}

impl PasswordHasher {
    /// A hasher of the given cost running at most `at_once` hashes together.
    pub fn new(memory_kib: u32, iterations: u32, at_once: usize) -> Self {
        PasswordHasher {
            memory_kib,
            iterations,
            slots: Arc::new(Semaphore::new(at_once.max(1))),
        }
    }

    /// One hash per CPU at a time.
    pub fn per_cpu(memory_kib: u32, iterations: u32) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(memory_kib, iterations, cpus)
    }

    fn argon2(memory_kib: u32, iterations: u32) -> Result<Argon2<'static>, HashError> {
        let params = Params::new(memory_kib.max(8), iterations.max(1), 1, None)
            .map_err(|e| HashError::Failed(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Waits for a free slot, at most [`SLOT_WAIT`].
    async fn slot(&self) -> Result<OwnedSemaphorePermit, HashError> {
        match tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(HashError::Busy),
        }
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let slot = self.slot().await?;
        let (memory_kib, iterations) = (self.memory_kib, self.iterations);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let salt = SaltString::generate(&mut OsRng);
            Self::argon2(memory_kib, iterations)?
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError::Failed(e.to_string()))
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?
    }

    /// Checks a password against a stored PHC string (parameters come from the string).
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, HashError> {
        let slot = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let parsed = PasswordHash::new(&phc).map_err(|e| HashError::Failed(e.to_string()))?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_and_verifies() {
        let h = PasswordHasher::new(64, 1, 1);
        let phc = h.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify("correct horse".into(), phc.clone()).await.unwrap());
        assert!(!h.verify("wrong horse".into(), phc).await.unwrap());
    }

    #[tokio::test]
    async fn no_more_hashes_run_than_there_are_slots() {
        let h = PasswordHasher::new(64, 1, 2);
        let held: Vec<_> = vec![h.slot().await.unwrap(), h.slot().await.unwrap()];
        let waiting = {
            let h = h.clone();
            tokio::spawn(async move { h.hash("a password".into()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "both slots are taken");
        drop(held);
        assert!(waiting.await.unwrap().is_ok());
    }
}
