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

use hdrhistogram::Histogram;
use serde::Serialize;

/// Bytes written before each sync (one SQLite page).
const BLOCK: usize = 4096;
/// Blocks in the probe's file before it wraps round.
const BLOCKS: u64 = 256;
/// Most syncs in one probe, whatever the duration.
const MAX_SYNCS: u64 = 100_000;

/// Sync latency of the disk under one directory.
#[derive(Debug, Clone, Serialize)]
pub struct SyncLatency {
    /// Syncs made.
    pub syncs: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
}

impl SyncLatency {
    /// One line for a table cell.
    pub fn summary(&self) -> String {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.0} ms",
            self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Writes and syncs 4 KiB blocks in `dir` for about `duration` (blocking;
/// run it off the async runtime) and removes its file afterwards.
pub fn probe(dir: &Path, duration: Duration) -> std::io::Result<SyncLatency> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("parley-sync-probe.tmp");
    let result = probe_file(&path, duration);
    let _ = std::fs::remove_file(&path);
    result
}

fn probe_file(path: &Path, duration: Duration) -> std::io::Result<SyncLatency> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let block = vec![0x5au8; BLOCK];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let started = Instant::now();
    let mut n = 0u64;
    while n < MAX_SYNCS && (n == 0 || started.elapsed() < duration) {
        file.seek(SeekFrom::Start((n % BLOCKS) * BLOCK as u64))?;
        file.write_all(&block)?;
        let t = Instant::now();
        file.sync_data()?;
        hist.saturating_record((t.elapsed().as_micros() as u64).max(1));
        n += 1;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(SyncLatency {
        syncs: n,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_a_real_directory_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("parley-probe-{}", std::process::id()));
        let lat = probe(&dir, Duration::from_millis(50)).expect("probe");
        assert!(lat.syncs >= 1);
        assert!(lat.p50_ms <= lat.p99_ms && lat.p99_ms <= lat.max_ms);
        assert!(!dir.join("parley-sync-probe.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
