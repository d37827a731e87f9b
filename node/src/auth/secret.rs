//! The JWT signing secret: configured, or generated once and kept in the data dir.

use std::path::Path;

use base64::Engine;
use rand::RngCore;

/// File in the data dir holding a generated secret.
const SECRET_FILE: &str = "jwt-secret";

/// Returns the configured secret, or reads (creating if missing) the one in `data_dir`.
pub fn load_or_generate(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = configured {
        if s.len() < 16 {
            anyhow::bail!("--jwt-secret must be at least 16 characters");
        }
        return Ok(s.as_bytes().to_vec());
    }
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(SECRET_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let trimmed = existing.trim();
        if trimmed.len() >= 16 {
            return Ok(trimmed.as_bytes().to_vec());
        }
    }
    tracing::warn!(path = %path.display(),
        "no --jwt-secret configured; using a generated secret kept in the data dir");
    let mut bytes = [0u8; 48];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    // Write to a temporary file then rename, so concurrent starts never read half a secret.
    let tmp = data_dir.join(format!("{SECRET_FILE}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &secret)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    // If another node won the race, keep its secret.
    if std::fs::hard_link(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        let existing = std::fs::read_to_string(&path)?;
        return Ok(existing.trim().as_bytes().to_vec());
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(secret.into_bytes())
}
