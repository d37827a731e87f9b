//! The JWT signing secret: configured, or generated once and kept in the data dir.

use std::path::Path;

use base64::Engine;
use parley_storage::private_files;
use rand::RngCore;

/// File in the data dir holding a generated secret.
const SECRET_FILE: &str = "jwt-secret";

/// Shortest secret accepted, in characters.
const MIN_LEN: usize = 16;

/// Returns the configured secret, or reads (creating if missing) the one in `data_dir`.
pub fn load_or_generate(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = configured {
        if s.len() < MIN_LEN {
            anyhow::bail!("--jwt-secret must be at least 16 characters");
        }
        return Ok(s.as_bytes().to_vec());
    }
    private_files::create_dir(data_dir)?;
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(existing) => return checked(&path, &existing),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
    }
    tracing::warn!(path = %path.display(),
        "no --jwt-secret configured; using a generated secret kept in the data dir");
    let mut bytes = [0u8; 48];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    // Write to a temporary file (readable by the node's user only from the
    // start) then link it in place, so concurrent starts never read half a
    // secret.
    let tmp = data_dir.join(format!("{SECRET_FILE}.{}.tmp", std::process::id()));
    if let Err(e) = write_private(&tmp, secret.as_bytes()) {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("writing {}: {e}", tmp.display());
    }
    // If another node won the race, keep its secret.
    if std::fs::hard_link(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        let existing = std::fs::read_to_string(&path)?;
        return checked(&path, &existing);
    }
    let _ = std::fs::remove_file(&tmp);
    // The link itself must survive a power loss too (else tokens signed
    // now would be refused after it).
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(secret.into_bytes())
}

/// The secret a file holds, if it is long enough to sign with. A short one
/// (an empty file, a `touch`, a blank secret mount) is refused: tokens
/// signed with it could be forged by anyone.
fn checked(path: &Path, contents: &str) -> anyhow::Result<Vec<u8>> {
    let trimmed = contents.trim();
    if trimmed.len() < MIN_LEN {
        anyhow::bail!(
            "{} holds a secret of {} characters, fewer than {MIN_LEN}: refusing to sign tokens with it \
             (remove the file to have a new secret generated, or write one of at least {MIN_LEN} characters)",
            path.display(),
            trimmed.len()
        );
    }
    Ok(trimmed.as_bytes().to_vec())
}

/// Writes a new file readable by the node's user only, synced to disk.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = private_files::create_new(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_or_empty_secret_file_is_refused_not_used() {
        let dir = tempfile::tempdir().unwrap();
        for contents in ["", "  \n", "abc"] {
            std::fs::write(dir.path().join(SECRET_FILE), contents).unwrap();
            let e = load_or_generate(None, dir.path()).unwrap_err().to_string();
            assert!(e.contains("refusing to sign tokens"), "{contents:?}: {e}");
        }
    }

    #[test]
    fn a_generated_secret_is_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = load_or_generate(None, &data).unwrap();
        assert!(first.len() >= MIN_LEN);
        assert_eq!(load_or_generate(None, &data).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&data.join(SECRET_FILE)), 0o600);
            assert_eq!(mode(&data), 0o700);
        }
        let e = load_or_generate(Some("short"), &data)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 16"), "{e}");
    }
}
