//! How long the disk under a data directory takes to make a small write
//! durable: the floor under every commit of the embedded store, which syncs
//! each group commit with `fdatasync` before it acks.
//!
//! The probe writes 4 KiB blocks round a 1 MiB file (like a WAL being
//! reused) and syncs after each, one at a time, for a bounded time.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::metrics::{histogram, record, Percentiles};

/// Bytes written before each sync (one SQLite page).
const BLOCK: usize = 4096;
/// Blocks in the probe's file before it wraps round.
const BLOCKS: u64 = 256;
/// Most syncs in one probe, whatever the duration.
const MAX_SYNCS: u64 = 100_000;

/// One line for a table cell: median, p99 and slowest sync.
pub fn summary(l: &Percentiles) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.0} ms",
        l.p50_ms, l.p99_ms, l.max_ms
    )
}

/// Writes and syncs 4 KiB blocks in `dir` for about `duration` (blocking;
/// run it off the async runtime) and removes its file afterwards.
pub fn probe(dir: &Path, duration: Duration) -> std::io::Result<Percentiles> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("parley-sync-probe.tmp");
    let result = probe_file(&path, duration);
    let _ = std::fs::remove_file(&path);
    result
}

fn probe_file(path: &Path, duration: Duration) -> std::io::Result<Percentiles> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let block = vec![0x5au8; BLOCK];
    let mut hist = histogram(3);
    let started = Instant::now();
    let mut n = 0u64;
    while n < MAX_SYNCS && (n == 0 || started.elapsed() < duration) {
        file.seek(SeekFrom::Start((n % BLOCKS) * BLOCK as u64))?;
        file.write_all(&block)?;
        let t = Instant::now();
        file.sync_data()?;
        record(&mut hist, t.elapsed().as_micros() as u64);
        n += 1;
    }
    Ok(Percentiles::of(&hist))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_a_real_directory_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("parley-probe-{}", std::process::id()));
        let lat = probe(&dir, Duration::from_millis(50)).expect("probe");
        assert!(lat.count >= 1);
        assert!(lat.p50_ms <= lat.p99_ms && lat.p99_ms <= lat.max_ms);
        assert!(!dir.join("parley-sync-probe.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
