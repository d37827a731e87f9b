//! Measurements shared by every session task: latency histograms, counters,
//! errors by code and a per-second timeline.
//!
//! Sessions record into one of a few mutex-guarded shards (chosen by session
//! index) so that thousands of tasks do not contend on one lock; the shards
//! are merged once at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

const SHARDS: usize = 8;

/// Event types counted besides `message` and `sent`; anything else counts as `other`.
pub const OTHER_EVENTS: [&str; 8] = [
    "presence", "receipt", "typing", "room", "pong", "synced", "hello", "other",
];
/// Largest latency recorded, in microseconds (one hour).
const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, or `None` if it could not be built.
pub(crate) fn histogram(sigfig: u8) -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_US, sigfig).ok()
}

/// Records `us` microseconds (clamped to the histogram's range).
pub(crate) fn record(h: &mut Option<Histogram<u64>>, us: u64) {
    if let Some(h) = h {
        h.saturating_record(us.clamp(1, MAX_US));
    }
}

/// Counters and histograms of one second of the run.
#[derive(Default)]
struct Second {
    deliveries: u64,
    sends: u64,
    acks: u64,
    e2e: Option<Histogram<u64>>,
}

struct Shard {
    e2e: Option<Histogram<u64>>,
    catch_up: Option<Histogram<u64>>,
    ack: Option<Histogram<u64>>,
    connect: Option<Histogram<u64>>,
    connect_failed: Option<Histogram<u64>>,
    seconds: Vec<Second>,
}

impl Shard {
    fn new() -> Self {
        Shard {
            e2e: histogram(3),
            catch_up: histogram(3),
            ack: histogram(3),
            connect: histogram(3),
            connect_failed: histogram(3),
            seconds: Vec::new(),
        }
    }

    fn second(&mut self, i: usize) -> &mut Second {
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, Second::default);
        }
        &mut self.seconds[i]
    }
}

/// Everything the sessions measure while a scenario runs.
pub struct Metrics {
    epoch: Instant,
    /// Start of the run phase (µs since epoch); `u64::MAX` before it.
    run_start_us: AtomicU64,
    /// Measurement window (µs since epoch), after warm-up.
    window_start_us: AtomicU64,
    window_end_us: AtomicU64,
    shards: Vec<Mutex<Shard>>,
    /// `message` events received.
    pub delivered: AtomicU64,
    /// `message` events received within the measurement window (by arrival).
    pub window_delivered: AtomicU64,
    /// `send` frames written (resends included).
    pub sends: AtomicU64,
    /// Resends of unacked messages after a reconnect or `unavailable`.
    pub resends: AtomicU64,
    /// `sent` acks received.
    pub acks: AtomicU64,
    /// Sends given up (refused by the server with a final error).
    pub send_failures: AtomicU64,
    /// Sends written and not yet acked.
    pub pending: AtomicI64,
    /// Sessions currently connected.
    pub connected: AtomicU64,
    /// Successful connects, reconnects included.
    pub connects: AtomicU64,
    /// Failed connection attempts.
    pub connect_failures: AtomicU64,
    /// Sessions whose first connection succeeded or was given up.
    pub initial_done: AtomicU64,
    /// Sessions whose first connection succeeded.
    pub initial_ok: AtomicU64,
    /// Sessions that saw the end of the run phase (they send nothing new after).
    pub quiesced: AtomicU64,
    /// Reconnects after a lost or closed connection.
    pub reconnects: AtomicU64,
    /// Other events received, by type (see [`OTHER_EVENTS`]).
    other_events: [AtomicU64; OTHER_EVENTS.len()],
    /// Last time (µs since epoch) an ack arrived.
    pub last_ack_us: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics; the clock starts now.
    pub fn new() -> Self {
        Metrics {
            epoch: Instant::now(),
            run_start_us: AtomicU64::new(u64::MAX),
            window_start_us: AtomicU64::new(u64::MAX),
            window_end_us: AtomicU64::new(u64::MAX),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            delivered: AtomicU64::new(0),
            window_delivered: AtomicU64::new(0),
            sends: AtomicU64::new(0),
            resends: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            pending: AtomicI64::new(0),
            connected: AtomicU64::new(0),
            initial_ok: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            initial_done: AtomicU64::new(0),
            quiesced: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            other_events: Default::default(),
            last_ack_us: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Microseconds since the metrics were created (the harness clock).
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Converts a harness-clock time to an `Instant`.
    pub fn instant_at(&self, us: u64) -> Instant {
        self.epoch + Duration::from_micros(us)
    }

    /// Marks the start of the run phase and the measurement window.
    pub fn start_run(&self, warmup: Duration, duration: Duration) {
        let now = self.now_us();
        let ws = now + warmup.as_micros() as u64;
        self.run_start_us.store(now, Ordering::Relaxed);
        self.window_start_us.store(ws, Ordering::Relaxed);
        self.window_end_us
            .store(ws + duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// Run start (µs since epoch), if the run started.
    pub fn run_start_us(&self) -> Option<u64> {
        let v = self.run_start_us.load(Ordering::Relaxed);
        (v != u64::MAX).then_some(v)
    }

    /// The measurement window (µs since epoch).
    pub fn window_us(&self) -> (u64, u64) {
        (
            self.window_start_us.load(Ordering::Relaxed),
            self.window_end_us.load(Ordering::Relaxed),
        )
    }

    fn in_window(&self, us: u64) -> bool {
        let (a, b) = self.window_us();
        us >= a && us < b
    }

    fn second_of(&self, us: u64) -> Option<usize> {
        let start = self.run_start_us()?;
        us.checked_sub(start).map(|d| (d / 1_000_000) as usize)
    }

    fn shard(&self, session: usize) -> std::sync::MutexGuard<'_, Shard> {
        let m = &self.shards[session % SHARDS];
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `message` arrived for a message sent at `sent_us` (harness clock,
    /// `None` if the body carried no timestamp). `catch_up`: it arrived on a
    /// reconnected session before its `synced`, so its latency includes the
    /// time the session was away and goes to the catch-up histogram, not to
    /// the live end-to-end one or the timeline's.
    pub fn record_delivery(&self, session: usize, sent_us: Option<u64>, catch_up: bool) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let now = self.now_us();
        if self.in_window(now) {
            self.window_delivered.fetch_add(1, Ordering::Relaxed);
        }
        let second = self.second_of(now);
        let latency = sent_us
            .filter(|&t| self.in_window(t))
            .map(|t| now.saturating_sub(t));
        if second.is_none() && latency.is_none() {
            return;
        }
        let mut guard = self.shard(session);
        let shard = &mut *guard;
        if let Some(l) = latency {
            record(
                if catch_up {
                    &mut shard.catch_up
                } else {
                    &mut shard.e2e
                },
                l,
            );
        }
        if let Some(i) = second {
            let s = shard.second(i);
            s.deliveries += 1;
            // The timeline's latencies are live ones only.
            if let Some(l) = latency.filter(|_| !catch_up) {
                if s.e2e.is_none() {
                    s.e2e = histogram(2);
                }
                record(&mut s.e2e, l);
            }
        }
    }

    /// A `send` frame was written (first send, not a resend).
    pub fn record_send(&self, session: usize) {
        self.sends.fetch_add(1, Ordering::Relaxed);
        self.pending.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = self.second_of(self.now_us()) {
            self.shard(session).second(i).sends += 1;
        }
    }

    /// A send left the pending set (acked or given up).
    pub fn settle(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }

    /// A `sent` ack arrived for a message first sent at `sent_us`.
    pub fn record_ack(&self, session: usize, sent_us: u64) {
        self.acks.fetch_add(1, Ordering::Relaxed);
        let now = self.now_us();
        self.last_ack_us.fetch_max(now, Ordering::Relaxed);
        let mut shard = self.shard(session);
        if self.in_window(sent_us) {
            record(&mut shard.ack, now.saturating_sub(sent_us));
        }
        if let Some(i) = self.second_of(now) {
            shard.second(i).acks += 1;
        }
    }

    /// A connection attempt succeeded after `took` (TCP, upgrade and `hello`).
    pub fn record_connect(&self, session: usize, took: Duration) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        record(&mut self.shard(session).connect, took.as_micros() as u64);
    }

    /// A connection attempt failed after `took` (refused at once, or given
    /// up at the connect timeout): counted and timed apart from successes.
    pub fn record_connect_failure(&self, session: usize, took: Duration) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        record(
            &mut self.shard(session).connect_failed,
            took.as_micros() as u64,
        );
    }

    /// Counts an event of another type than `message`, `sent` or `error`.
    pub fn other_event(&self, kind: &str) {
        let i = OTHER_EVENTS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(OTHER_EVENTS.len() - 1);
        self.other_events[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Events of other types received, by type (zero counts left out).
    pub fn other_events(&self) -> BTreeMap<String, u64> {
        OTHER_EVENTS
            .iter()
            .zip(&self.other_events)
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .filter(|(_, v)| *v > 0)
            .collect()
    }

    /// Counts an error (an `error` event code, a close code, a transport failure).
    pub fn error(&self, what: impl Into<String>) {
        let mut m = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(what.into()).or_insert(0) += 1;
    }

    /// Errors counted so far, by code.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Merges the shards.
    pub fn snapshot(&self) -> Snapshot {
        let mut e2e = histogram(3);
        let mut catch_up = histogram(3);
        let mut ack = histogram(3);
        let mut connect = histogram(3);
        let mut connect_failed = histogram(3);
        let mut seconds: Vec<Second> = Vec::new();
        for m in &self.shards {
            let s = m.lock().unwrap_or_else(|p| p.into_inner());
            merge(&mut e2e, &s.e2e);
            merge(&mut catch_up, &s.catch_up);
            merge(&mut ack, &s.ack);
            merge(&mut connect, &s.connect);
            merge(&mut connect_failed, &s.connect_failed);
            for (i, sec) in s.seconds.iter().enumerate() {
                if seconds.len() <= i {
                    seconds.resize_with(i + 1, Second::default);
                }
                let t = &mut seconds[i];
                t.deliveries += sec.deliveries;
                t.sends += sec.sends;
                t.acks += sec.acks;
                if sec.e2e.is_some() {
                    if t.e2e.is_none() {
                        t.e2e = histogram(2);
                    }
                    merge(&mut t.e2e, &sec.e2e);
                }
            }
        }
        let timeline = seconds
            .iter()
            .enumerate()
            .map(|(i, s)| TimelinePoint {
                second: i as u64,
                deliveries: s.deliveries,
                sends: s.sends,
                acks: s.acks,
                e2e_p50_ms: s.e2e.as_ref().map(|h| ms(h.value_at_quantile(0.5))),
                e2e_p99_ms: s.e2e.as_ref().map(|h| ms(h.value_at_quantile(0.99))),
                e2e_max_ms: s.e2e.as_ref().map(|h| ms(h.max())),
            })
            .collect();
        Snapshot {
            e2e,
            catch_up,
            ack,
            connect,
            connect_failed,
            timeline,
        }
    }
}

fn merge(into: &mut Option<Histogram<u64>>, from: &Option<Histogram<u64>>) {
    if let (Some(a), Some(b)) = (into.as_mut(), from.as_ref()) {
        // Same bounds everywhere, so adding cannot fail; ignore if it does.
        let _ = a.add(b);
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the run phase started.
    pub second: u64,
    /// `message` events received in this second.
    pub deliveries: u64,
    /// Messages first sent in this second.
    pub sends: u64,
    /// Acks received in this second.
    pub acks: u64,
    /// Median send-to-receipt latency of deliveries in this second (measurement window only).
    pub e2e_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub e2e_p99_ms: Option<f64>,
    /// Maximum of the same.
    pub e2e_max_ms: Option<f64>,
}

/// The merged measurements.
pub struct Snapshot {
    /// Send-to-receipt latency (µs) of live deliveries, every recipient,
    /// measurement window.
    pub e2e: Option<Histogram<u64>>,
    /// Send-to-receipt latency (µs) of deliveries a reconnected session
    /// read before its `synced`, measurement window.
    pub catch_up: Option<Histogram<u64>>,
    /// Send-to-ack latency (µs), measurement window.
    pub ack: Option<Histogram<u64>>,
    /// Connect latency (µs) of the attempts that succeeded.
    pub connect: Option<Histogram<u64>>,
    /// How long (µs) the attempts that failed took.
    pub connect_failed: Option<Histogram<u64>>,
    /// Per-second counters.
    pub timeline: Vec<TimelinePoint>,
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Percentiles {
    /// Summarises a histogram (all zero when empty or missing).
    pub fn of(h: &Option<Histogram<u64>>) -> Self {
        match h {
            Some(h) if !h.is_empty() => Percentiles {
                count: h.len(),
                p50_ms: ms(h.value_at_quantile(0.5)),
                p90_ms: ms(h.value_at_quantile(0.9)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                p999_ms: ms(h.value_at_quantile(0.999)),
                max_ms: ms(h.max()),
                mean_ms: h.mean() / 1000.0,
            },
            _ => Percentiles::default(),
        }
    }
}

/// Points of the cumulative distribution of a histogram: (latency ms, fraction).
pub fn cdf_points(h: &Option<Histogram<u64>>) -> Vec<(f64, f64)> {
    let Some(h) = h.as_ref().filter(|h| !h.is_empty()) else {
        return Vec::new();
    };
    let mut pts = Vec::new();
    // Dense in the body, denser in the tail: 1 - 10^(-k/50) for k in 0..=250.
    for k in 0..=250 {
        let q = 1.0 - 10f64.powf(-(k as f64) / 50.0);
        pts.push((ms(h.value_at_quantile(q)), q));
    }
    pts.push((ms(h.max()), 1.0));
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_before_a_fractional_warm_up_ends_are_not_in_the_window() {
        let m = Metrics::new();
        m.start_run(Duration::from_millis(500), Duration::from_secs(60));
        // Arrives during the warm-up, inside the first whole second: the
        // old per-second window counted it.
        m.record_delivery(0, None, false);
        assert_eq!(m.window_delivered.load(Ordering::Relaxed), 0);
        assert_eq!(m.delivered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn window_and_timeline() {
        let m = Metrics::new();
        // Before the run: counted, not timed.
        m.record_delivery(0, Some(0), false);
        m.start_run(Duration::ZERO, Duration::from_secs(60));
        let t = m.now_us();
        m.record_send(1);
        m.record_delivery(1, Some(t), false);
        m.record_delivery(2, Some(t), false);
        m.record_delivery(4, Some(t), true);
        m.record_ack(3, t);
        m.settle();
        let s = m.snapshot();
        assert_eq!(m.delivered.load(Ordering::Relaxed), 4);
        // Only arrivals inside the window count toward deliveries/s.
        assert_eq!(m.window_delivered.load(Ordering::Relaxed), 3);
        // The catch-up delivery counts in the second, but is timed apart.
        assert_eq!(Percentiles::of(&s.e2e).count, 2);
        assert_eq!(Percentiles::of(&s.catch_up).count, 1);
        assert_eq!(s.timeline[0].deliveries, 3);
        assert_eq!(Percentiles::of(&s.ack).count, 1);
        assert_eq!(s.timeline[0].sends, 1);
        assert_eq!(m.pending.load(Ordering::Relaxed), 0);
        assert!(!cdf_points(&s.e2e).is_empty());
        m.other_event("presence");
        m.other_event("whatever");
        assert_eq!(m.other_events()["presence"], 1);
        assert_eq!(m.other_events()["other"], 1);
        m.error("unavailable");
        m.error("unavailable");
        assert_eq!(m.errors()["unavailable"], 2);
    }

    #[test]
    fn catch_up_stays_out_of_live_latency() {
        let m = Metrics::new();
        m.start_run(Duration::ZERO, Duration::from_secs(60));
        let sent = m.now_us();
        std::thread::sleep(Duration::from_millis(5));
        // Missed while away: at least 5 ms old.
        m.record_delivery(0, Some(sent), true);
        // Live, stamped "now or later": recorded as (next to) zero.
        m.record_delivery(1, Some(m.now_us() + 1_000_000), false);
        let s = m.snapshot();
        assert!(Percentiles::of(&s.catch_up).max_ms >= 5.0);
        assert!(Percentiles::of(&s.e2e).max_ms < 1.0);
        let second = &s.timeline[0];
        assert_eq!(second.deliveries, 2);
        assert!(second.e2e_max_ms.is_some_and(|ms| ms < 1.0), "{second:?}");
    }
}
