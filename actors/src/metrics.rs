//! Process-wide counters and histograms of the actors, rendered by the node
//! at `/metrics`. Plain atomics: recording is a relaxed add, never a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use parley_protocol::ErrorCode;

/// A cumulative histogram with fixed upper bounds (Prometheus style).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one value (in the histogram's unit; `micros` is the value × 1e6 for the sum).
    pub fn observe(&self, value: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if value <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Mean of the recorded values, if any.
    pub fn mean(&self) -> Option<f64> {
        let n = self.count.load(Ordering::Relaxed);
        (n > 0).then(|| self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6 / n as f64)
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {n}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {n}");
    }
}

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Every metric the actors record.
pub struct Metrics {
    /// Messages newly committed.
    pub messages_committed: AtomicU64,
    /// Sends answered as duplicates of an earlier message.
    pub messages_duplicate: AtomicU64,
    /// Events pushed into local session queues.
    pub deliveries: AtomicU64,
    /// Sessions closed because their queue overflowed (1013).
    pub slow_consumer_closes: AtomicU64,
    /// Commits retried because another owner moved the room's head.
    pub head_moved: AtomicU64,
    /// Commits that failed in storage.
    pub commit_failures: AtomicU64,
    /// Delivery gaps a session's writer found and had replayed from storage.
    pub gap_repairs: AtomicU64,
    /// Room actors restarted from storage because a peer that may have owned
    /// their rooms meanwhile has this node in its view again.
    pub rooms_reloaded: AtomicU64,
    /// Inter-node messages sent.
    pub peer_messages_out: AtomicU64,
    /// Inter-node bytes sent.
    pub peer_bytes_out: AtomicU64,
    /// Inter-node messages received.
    pub peer_messages_in: AtomicU64,
    /// Inter-node bytes received.
    pub peer_bytes_in: AtomicU64,
    /// Sends waiting in rooms for their commit (gauge).
    pub room_pending: AtomicI64,
    /// Frames waiting in session queues for their socket (gauge).
    pub outbound_queued: AtomicI64,
    /// Bytes of live `message` events and large frames in memory, each
    /// counted once (gauge).
    pub live_event_bytes: AtomicI64,
    /// Bytes of `message` events socket writers hold back for a replay or
    /// a first `sync`, per connection (gauge).
    pub held_message_bytes: AtomicI64,
    /// Users whose presence change waits to be announced (gauge).
    pub presence_waiting: AtomicI64,
    /// Messages per group commit.
    pub commit_batch: Histogram,
    /// Duration of a group commit in storage.
    pub commit_seconds: Histogram,
    /// From a send reaching its room to its `sent` ack.
    pub send_to_ack_seconds: Histogram,
    /// Duration of one embedded-store transaction (many rooms' batches, one sync).
    pub storage_txn_seconds: Histogram,
    /// Requests (message batches, receipt flushes) written by one embedded-store transaction.
    pub storage_txn_batches: Histogram,
    /// Whether the store reports its transactions (the embedded store does;
    /// ScyllaDB has no committer): the two histograms above are rendered,
    /// empty until the first transaction, only then.
    pub storage_txn_reported: AtomicBool,
    errors: Vec<(ErrorCode, AtomicU64)>,
}

const CODES: [ErrorCode; 11] = [
    ErrorCode::InvalidRequest,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::Internal,
    ErrorCode::Unavailable,
    ErrorCode::InvalidJson,
    ErrorCode::UnknownType,
];

/// Bytes counted in one of the node-wide byte gauges (`METRICS`'
/// `live_event_bytes`, `held_message_bytes`) for as long as this is held,
/// following its changes; counted out when dropped.
#[derive(Debug)]
pub struct GaugedBytes {
    gauge: &'static AtomicI64,
    bytes: usize,
}

impl GaugedBytes {
    /// Counts `bytes` in `gauge`.
    pub fn new(gauge: &'static AtomicI64, bytes: usize) -> Self {
        gauge.fetch_add(bytes as i64, Ordering::Relaxed);
        GaugedBytes { gauge, bytes }
    }

    /// The bytes counted.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Counts `more` bytes in.
    pub fn add(&mut self, more: usize) {
        self.bytes += more;
        self.gauge.fetch_add(more as i64, Ordering::Relaxed);
    }

    /// Counts `less` bytes out (at most those counted).
    pub fn sub(&mut self, less: usize) {
        let less = less.min(self.bytes);
        self.bytes -= less;
        self.gauge.fetch_sub(less as i64, Ordering::Relaxed);
    }
}

impl Drop for GaugedBytes {
    fn drop(&mut self) {
        self.gauge.fetch_sub(self.bytes as i64, Ordering::Relaxed);
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    messages_committed: AtomicU64::new(0),
    messages_duplicate: AtomicU64::new(0),
    deliveries: AtomicU64::new(0),
    slow_consumer_closes: AtomicU64::new(0),
    head_moved: AtomicU64::new(0),
    commit_failures: AtomicU64::new(0),
    gap_repairs: AtomicU64::new(0),
    rooms_reloaded: AtomicU64::new(0),
    peer_messages_out: AtomicU64::new(0),
    peer_bytes_out: AtomicU64::new(0),
    peer_messages_in: AtomicU64::new(0),
    peer_bytes_in: AtomicU64::new(0),
    room_pending: AtomicI64::new(0),
    outbound_queued: AtomicI64::new(0),
    live_event_bytes: AtomicI64::new(0),
    held_message_bytes: AtomicI64::new(0),
    presence_waiting: AtomicI64::new(0),
    commit_batch: Histogram::new(SIZES),
    commit_seconds: Histogram::new(SECONDS),
    send_to_ack_seconds: Histogram::new(SECONDS),
    storage_txn_seconds: Histogram::new(SECONDS),
    storage_txn_batches: Histogram::new(SIZES),
    storage_txn_reported: AtomicBool::new(false),
    errors: CODES.iter().map(|c| (*c, AtomicU64::new(0))).collect(),
});

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Counts one error answered to a client.
    pub fn error(&self, code: ErrorCode) {
        if let Some((_, c)) = self.errors.iter().find(|(k, _)| *k == code) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Renders everything in Prometheus text format with a `node` label.
    pub fn render(&self, out: &mut String, node: &str) {
        let labels = format!("node=\"{node}\"");
        let counters: [(&str, &str, &AtomicU64); 12] = [
            (
                "parley_messages_committed_total",
                "messages newly committed",
                &self.messages_committed,
            ),
            (
                "parley_messages_duplicate_total",
                "sends answered as duplicates",
                &self.messages_duplicate,
            ),
            (
                "parley_deliveries_total",
                "events pushed into local session queues",
                &self.deliveries,
            ),
            (
                "parley_slow_consumer_closes_total",
                "sessions closed with 1013 (queue full, or too much held back for a replay)",
                &self.slow_consumer_closes,
            ),
            (
                "parley_commit_head_moved_total",
                "commits retried after another owner moved the head",
                &self.head_moved,
            ),
            (
                "parley_commit_failures_total",
                "commits that failed in storage",
                &self.commit_failures,
            ),
            (
                "parley_delivery_gaps_repaired_total",
                "gaps a connection found in a room's seqs (a live message past them, or a head notice); each was replayed from storage",
                &self.gap_repairs,
            ),
            (
                "parley_rooms_reloaded_total",
                "room actors started over from storage because a peer that had left this node out of its view (and may have owned its rooms meanwhile) has it back",
                &self.rooms_reloaded,
            ),
            (
                "parley_peer_messages_out_total",
                "inter-node messages sent",
                &self.peer_messages_out,
            ),
            (
                "parley_peer_bytes_out_total",
                "inter-node bytes sent",
                &self.peer_bytes_out,
            ),
            (
                "parley_peer_messages_in_total",
                "inter-node messages received",
                &self.peer_messages_in,
            ),
            (
                "parley_peer_bytes_in_total",
                "inter-node bytes received",
                &self.peer_bytes_in,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{{labels}}} {}", c.load(Ordering::Relaxed));
        }
        let gauges: [(&str, &str, &AtomicI64); 5] = [
            (
                "parley_room_pending_sends",
                "sends waiting in rooms for their commit",
                &self.room_pending,
            ),
            (
                "parley_outbound_queued_frames",
                "frames waiting in session queues for their socket",
                &self.outbound_queued,
            ),
            (
                "parley_live_event_bytes",
                "bytes of live message events and frames of 4 KiB or more in memory (queued or being written), each counted once",
                &self.live_event_bytes,
            ),
            (
                "parley_held_message_bytes",
                "bytes of message events socket writers hold back for a replay or a first sync",
                &self.held_message_bytes,
            ),
            (
                "parley_presence_waiting",
                "users whose presence change waits to be announced to their contacts",
                &self.presence_waiting,
            ),
        ];
        for (name, help, g) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            let _ = writeln!(
                out,
                "{name}{{{labels}}} {}",
                g.load(Ordering::Relaxed).max(0)
            );
        }
        let name = "parley_errors_total";
        let _ = writeln!(out, "# HELP {name} errors answered to clients by the actors, by code\n# TYPE {name} counter");
        for (code, c) in &self.errors {
            let _ = writeln!(
                out,
                "{name}{{{labels},code=\"{code}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        self.commit_batch.render(
            out,
            "parley_commit_batch_size",
            "messages per group commit",
            &labels,
        );
        self.commit_seconds.render(
            out,
            "parley_commit_seconds",
            "duration of a group commit in storage",
            &labels,
        );
        self.send_to_ack_seconds.render(
            out,
            "parley_send_to_ack_seconds",
            "from a send reaching its room to its durable ack",
            &labels,
        );
        // Only the embedded store reports these (ScyllaDB has no committer).
        if self.storage_txn_reported.load(Ordering::Relaxed) {
            self.storage_txn_seconds.render(
                out,
                "parley_storage_txn_seconds",
                "duration of one embedded-store transaction (writes and sync to disk)",
                &labels,
            );
            self.storage_txn_batches.render(
                out,
                "parley_storage_txn_batches",
                "requests (message batches and receipt flushes) written by one embedded-store transaction",
                &labels,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(5.0);
        let mut out = String::new();
        h.render(&mut out, "x", "help", "node=\"n\"");
        assert!(out.contains("x_bucket{node=\"n\",le=\"1\"} 1"));
        assert!(out.contains("x_bucket{node=\"n\",le=\"2\"} 2"));
        assert!(out.contains("x_bucket{node=\"n\",le=\"+Inf\"} 3"));
        assert!(out.contains("x_count{node=\"n\"} 3"));
    }
}
