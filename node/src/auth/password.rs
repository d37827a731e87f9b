//! argon2id password hashing, run off the async threads.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use thiserror::Error;

/// A password hashing failure (never a wrong password: that is `Ok(false)`).
#[derive(Debug, Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// argon2id with the configured cost.
#[derive(Debug, Clone, Copy)]
pub struct PasswordHasherConfig {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
}

impl PasswordHasherConfig {
    fn argon2(&self) -> Result<Argon2<'static>, HashError> {
        let params = Params::new(self.memory_kib.max(8), self.iterations.max(1), 1, None)
            .map_err(|e| HashError(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let this = *self;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            this.argon2()?
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError(e.to_string()))
        })
        .await
        .map_err(|e| HashError(e.to_string()))?
    }

    /// Checks a password against a stored PHC string (parameters come from the string).
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, HashError> {
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| HashError(e.to_string()))?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
        .map_err(|e| HashError(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_and_verifies() {
        let h = PasswordHasherConfig {
            memory_kib: 64,
            iterations: 1,
        };
        let phc = h.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify("correct horse".into(), phc.clone()).await.unwrap());
        assert!(!h.verify("wrong horse".into(), phc).await.unwrap());
    }
}
