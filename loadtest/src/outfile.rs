//! Output files (the JSON report, plots, the benchmark page), checked
//! before a run starts: a path that cannot be written is found at once,
//! not after minutes of load.

use std::path::{Path, PathBuf};

/// Makes sure `path` can be written: creates its directory and opens the
/// file for writing without changing it. A file that did not exist is
/// removed again, so a run that fails later leaves no empty file behind.
pub fn check_writable(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// `PREFIX-suffix` in PREFIX's directory: the plots' file names; a PREFIX
/// that names a directory (an existing one, or ending in `/`) gets
/// `PREFIX/suffix` instead of a file beside the directory.
pub fn beside(prefix: &Path, suffix: &str) -> PathBuf {
    let dir_like = prefix
        .as_os_str()
        .to_string_lossy()
        .ends_with(std::path::MAIN_SEPARATOR);
    if dir_like || prefix.is_dir() {
        return prefix.join(suffix);
    }
    let stem = prefix
        .file_name()
        .map(|f| f.to_string_lossy())
        .unwrap_or_default();
    prefix.with_file_name(format!("{stem}-{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_path_is_left_as_it_was() {
        let dir = std::env::temp_dir().join(format!("parley-outfile-{}", std::process::id()));
        let new = dir.join("sub/report.json");
        check_writable(&new).unwrap();
        assert!(!new.exists(), "a checked new file is removed again");
        assert!(new.parent().unwrap().is_dir(), "its directory is made");
        let old = dir.join("old.json");
        std::fs::write(&old, "kept").unwrap();
        check_writable(&old).unwrap();
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "kept");
        // A directory where the file should be cannot be written.
        assert!(check_writable(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plot_names_sit_beside_the_prefix() {
        assert_eq!(
            beside(Path::new("out/run1"), "cdf.svg"),
            PathBuf::from("out/run1-cdf.svg")
        );
        // A directory holds the plots rather than lending them its name.
        assert_eq!(
            beside(Path::new("out/"), "cdf.svg"),
            PathBuf::from("out/cdf.svg")
        );
        let dir = std::env::temp_dir();
        assert_eq!(beside(&dir, "cdf.svg"), dir.join("cdf.svg"));
    }
}
