//! The run report: a JSON document and a short text table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::checker::{Violation, ViolationKind};
use crate::metrics::{Percentiles, TimelinePoint};
use crate::plan::Scenario;
use crate::sysinfo::HostLoad;

/// CPU use over one interval, percent of one core.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuPoint {
    /// End of the interval, seconds since the run phase started.
    pub second: f64,
    /// The harness.
    pub harness_percent: Option<f64>,
    /// Each node of --pids.
    pub node_percent: Vec<Option<f64>>,
}

/// Parameters the run was given.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Params {
    /// Sessions opened.
    pub sessions: usize,
    /// Users created.
    pub users: usize,
    /// Group rooms created.
    pub rooms: usize,
    /// Direct (one-to-one) rooms created: dm's pairs, mixed's pairs.
    pub direct_rooms: usize,
    /// Members per group room (0 without group rooms).
    pub members: usize,
    /// Senders per group room (dm: 2 per direct room; 0 when nothing is sent).
    pub senders: usize,
    /// Messages per second per sender.
    pub rate: f64,
    /// Sending sessions in total.
    pub sending_sessions: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Body size.
    pub body_bytes: usize,
}

/// Connection figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectStats {
    /// Sessions that connected at first try (or after retries).
    pub connected: u64,
    /// Sessions that never connected.
    pub failed: u64,
    /// Seconds from the first attempt until every session connected or gave up.
    pub seconds: f64,
    /// Sessions connected per second.
    pub rate_per_s: f64,
    /// Per-connection latency (TCP, upgrade, `hello`) of the attempts
    /// that succeeded.
    pub latency: Percentiles,
    /// Connection attempts that failed (a session may retry and then
    /// connect), and how long each took to fail.
    pub failed_attempts: Percentiles,
    /// Machine-wide SYNs dropped because a listen queue was full during the
    /// connect phase (`ListenDrops` of `/proc/net/netstat`).
    pub listen_drops: Option<u64>,
}

/// Message figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MessageStats {
    /// Messages sent (first sends).
    pub sent: u64,
    /// Resends of unacked messages.
    pub resends: u64,
    /// Acks received (resends included).
    pub acked: u64,
    /// Sends refused with a final error.
    pub failed: u64,
    /// Sends never acked.
    pub unacked_at_end: u64,
    /// `message` events received in total.
    pub deliveries: u64,
    /// Deliveries per second over the measurement window.
    pub deliveries_per_s: f64,
    /// Highest one-second delivery count in the window.
    pub peak_deliveries_per_s: u64,
    /// What the offered load should produce per second (sends x members).
    pub expected_deliveries_per_s: f64,
    /// Send-to-receipt latency of live deliveries at every recipient
    /// (window only).
    pub e2e: Percentiles,
    /// Send-to-receipt latency of the deliveries reconnected sessions read
    /// before their `synced` (what they missed while away; window only).
    pub catch_up: Percentiles,
    /// Send-to-`sent` latency (window only).
    pub ack: Percentiles,
}

/// A process's CPU and memory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcStats {
    /// Process id (absent for the harness itself).
    pub pid: Option<u32>,
    /// CPU used during the run, percent of one core (200 = both cores of a 2-core machine).
    pub cpu_percent: Option<f64>,
    /// RSS before sessions connected, KiB.
    pub rss_start_kib: Option<u64>,
    /// Highest RSS sampled, KiB.
    pub rss_max_kib: Option<u64>,
    /// RSS at the end of the run (before sessions closed), KiB; none when
    /// the process is gone (a chaos kill without restart).
    pub rss_end_kib: Option<u64>,
    /// The process that took this one's place (a chaos restart): sampled
    /// from then on, the end included.
    pub restarted_as: Option<u32>,
}

/// Idle-session memory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleStats {
    /// Sessions held.
    pub sessions: u64,
    /// Node RSS growth over the hold, KiB (sum over nodes).
    pub rss_growth_kib: u64,
    /// Node RSS at the end of the hold, KiB (sum over nodes).
    pub rss_total_kib: u64,
    /// RSS growth per session, KiB.
    pub kib_per_session: f64,
}

/// What happened in a chaos run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosStats {
    /// Killed process.
    pub killed_pid: Option<u32>,
    /// Seconds after the run start it was killed.
    pub killed_at_s: Option<f64>,
    /// Seconds after the run start the restart command ran.
    pub restarted_at_s: Option<f64>,
    /// The restart command's process id (a shell that `exec`s keeps the node's pid).
    pub restart_pid: Option<u32>,
    /// Why the killed node was not brought back: the restart command could
    /// not start, or ended with a failure status during the run.
    pub restart_error: Option<String>,
    /// Paused process (`--pause-for`).
    pub paused_pid: Option<u32>,
    /// Seconds after the run start it was paused.
    pub paused_at_s: Option<f64>,
    /// Seconds after the run start it was resumed.
    pub resumed_at_s: Option<f64>,
    /// Longest pause between two acks of one room around the kill (or the
    /// node's pause), ms (max over rooms).
    pub longest_room_ack_pause_ms: Option<f64>,
    /// From the kill (or the node's pause) to the first ack after it, ms:
    /// any room's, so in a cluster it may come from a room the failed node
    /// never owned; `longest_room_ack_pause_ms` shows the recovery.
    pub first_ack_after_kill_ms: Option<f64>,
}

/// The checker's verdict in the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckerStats {
    /// Number of violations.
    pub violations: usize,
    /// Violations by kind.
    pub by_kind: BTreeMap<ViolationKind, usize>,
    /// Sessions checked in full.
    pub complete_sessions: usize,
    /// Sessions checked as a prefix (ended disconnected or behind).
    pub incomplete_sessions: usize,
    /// Distinct acked messages.
    pub acked_messages: usize,
    /// Deliveries checked.
    pub deliveries_checked: u64,
    /// Rooms whose history could not be read.
    pub rooms_without_history: usize,
    /// Sessions not checked at all: their task failed or did not finish.
    pub unchecked_sessions: u64,
    /// The first violations (at most 200).
    pub list: Vec<Violation>,
}

/// How a run ended (the harness's exit status: 0, 1, 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No violation, and everything asked for was done.
    Passed,
    /// The checker found violations.
    Violations,
    /// No violation, but the run did not do all it was asked to; why.
    Incomplete(String),
}

/// Everything about one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario.
    pub scenario: Scenario,
    /// The command line.
    pub command: String,
    /// Node URLs.
    pub nodes: Vec<String>,
    /// Parameters.
    pub params: Params,
    /// Seconds spent creating users and rooms.
    pub setup_s: f64,
    /// Connections.
    pub connect: ConnectStats,
    /// Messages.
    pub messages: MessageStats,
    /// Errors by code (`error` events, close codes, connect failures).
    pub errors: BTreeMap<String, u64>,
    /// Events of other types received (presence, receipts, typing...), by type.
    pub other_events: BTreeMap<String, u64>,
    /// Reconnects.
    pub reconnects: u64,
    /// The harness process.
    pub client: ProcStats,
    /// The node processes given with --pids.
    pub node_procs: Vec<ProcStats>,
    /// Idle memory (idle scenario).
    pub idle: Option<IdleStats>,
    /// Chaos events (chaos scenario).
    pub chaos: Option<ChaosStats>,
    /// Correctness.
    pub checker: CheckerStats,
    /// Per-second counters and latency.
    pub timeline: Vec<TimelinePoint>,
    /// CPU use about every second; the first point covers the connect phase
    /// (its `second` is minus its length).
    pub cpu_timeline: Vec<CpuPoint>,
    /// Plot files written.
    pub plots: Vec<String>,
    /// Files holding each node's `/metrics` text at the end of the run.
    pub node_metrics: Vec<String>,
    /// Open-file limit of the harness (soft, hard).
    pub fd_limit: (u64, u64),
    /// Machine load at the end of the run (others' work included).
    pub host_load: HostLoad,
    /// Remarks (limits hit, harness saturation).
    pub notes: Vec<String>,
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{v:.1}{unit}"))
        .unwrap_or_else(|| "-".into())
}

impl Report {
    /// Whether the run did all it was asked to and the checker found
    /// nothing wrong.
    pub fn passed(&self) -> bool {
        matches!(self.verdict(), Verdict::Passed)
    }

    /// How the run ended: violations first, then shortfalls.
    pub fn verdict(&self) -> Verdict {
        if self.checker.violations > 0 {
            return Verdict::Violations;
        }
        let shortfalls = self.shortfalls();
        if shortfalls.is_empty() {
            Verdict::Passed
        } else {
            Verdict::Incomplete(shortfalls.join("; "))
        }
    }

    /// The verdict as a benchmark page's label for a case without a
    /// target: "recorded", or what is wrong.
    pub fn label(&self) -> &'static str {
        match self.verdict() {
            Verdict::Passed => "recorded",
            Verdict::Violations => "**violations**",
            Verdict::Incomplete(_) => "**incomplete**",
        }
    }

    /// What the run could not do that it was asked to, so that "no
    /// violations" would claim more than was checked: rooms whose history
    /// could not be read, sessions that never connected, messages the node
    /// refused, sessions that ended disconnected or behind, messages never
    /// acked, a chaos run that injected no failure or whose restart failed.
    /// Empty for a full run.
    pub fn shortfalls(&self) -> Vec<String> {
        // Sessions that never connected are counted once, below.
        let behind = (self.checker.incomplete_sessions as u64).saturating_sub(self.connect.failed);
        let counted = [
            (
                self.checker.rooms_without_history as u64,
                "room(s) whose history could not be read (their history checks were skipped)",
            ),
            (self.connect.failed, "session(s) never connected"),
            (
                self.messages.failed,
                "message(s) the node refused (see errors)",
            ),
            (
                behind,
                "session(s) ended disconnected or behind (checked as a prefix only)",
            ),
            (self.messages.unacked_at_end, "message(s) never acked"),
            (
                self.checker.unchecked_sessions,
                "session(s) not checked (their task failed or did not finish)",
            ),
        ];
        let mut out: Vec<String> = counted
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if self.scenario.sends() && self.messages.sent == 0 {
            out.push("no message was sent (a run too short for its rate?)".into());
        }
        if let Some(ch) = &self.chaos {
            if ch.killed_pid.is_none() && ch.paused_pid.is_none() {
                out.push("no node was killed or paused".into());
            }
            if let Some(e) = &ch.restart_error {
                out.push(format!("the killed node was not restarted: {e}"));
            }
        }
        out
    }

    /// A short human-readable summary.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let p = &self.params;
        let mut rooms = Vec::new();
        if p.rooms > 0 {
            rooms.push(format!("{} rooms x {} members", p.rooms, p.members));
        }
        if p.direct_rooms > 0 {
            rooms.push(format!("{} direct rooms", p.direct_rooms));
        }
        let rooms = if rooms.is_empty() {
            "no rooms".to_string()
        } else {
            rooms.join(" + ")
        };
        let traffic = if self.scenario.sends() {
            format!(
                "{}, {} senders x {} msg/s, {}s (+{}s warm-up)",
                rooms, p.sending_sessions, p.rate, p.duration_s, p.warmup_s
            )
        } else {
            format!("{}s", p.duration_s)
        };
        let _ = writeln!(
            s,
            "scenario {}: {} sessions, {} users, {traffic}",
            self.scenario.name(),
            p.sessions,
            p.users,
        );
        let c = &self.connect;
        let _ = writeln!(
            s,
            "  connect     {} ok, {} failed in {:.2}s = {:.0}/s; latency p50 {:.1} ms p99 {:.1} ms; listen-queue drops {}",
            c.connected,
            c.failed,
            c.seconds,
            c.rate_per_s,
            c.latency.p50_ms,
            c.latency.p99_ms,
            c.listen_drops.map(|d| d.to_string()).unwrap_or_else(|| "-".into())
        );
        let f = &c.failed_attempts;
        if f.count > 0 {
            let _ = writeln!(
                s,
                "  connect     {} failed attempt(s), retries included; they failed after p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
                f.count, f.p50_ms, f.p99_ms, f.max_ms
            );
        }
        let m = &self.messages;
        if m.sent > 0 {
            let _ = writeln!(
                s,
                "  messages    {} sent, {} acked, {} failed, {} unacked, {} resends",
                m.sent, m.acked, m.failed, m.unacked_at_end, m.resends
            );
            let _ = writeln!(
                s,
                "  deliveries  {} total, {:.0}/s in window (expected {:.0}/s, peak {}/s)",
                m.deliveries,
                m.deliveries_per_s,
                m.expected_deliveries_per_s,
                m.peak_deliveries_per_s
            );
            let catch_up = (m.catch_up.count > 0).then_some(("catch-up", &m.catch_up));
            let lines = [Some(("e2e", &m.e2e)), catch_up, Some(("ack", &m.ack))];
            for (name, l) in lines.into_iter().flatten() {
                let _ = writeln!(
                    s,
                    "  {name:<11} p50 {:.2} ms  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
                );
            }
        }
        let _ = writeln!(
            s,
            "  harness     cpu {} of one core, rss max {} KiB",
            opt(self.client.cpu_percent, "%"),
            self.client.rss_max_kib.unwrap_or(0)
        );
        for n in &self.node_procs {
            let _ = writeln!(
                s,
                "  node {:<6} cpu {}, rss start {} KiB, max {} KiB, end {}",
                match n.restarted_as {
                    Some(new) => format!("{} (restarted as {new})", n.pid.unwrap_or(0)),
                    None => n.pid.unwrap_or(0).to_string(),
                },
                opt(n.cpu_percent, "%"),
                n.rss_start_kib.unwrap_or(0),
                n.rss_max_kib.unwrap_or(0),
                n.rss_end_kib
                    .map(|k| format!("{k} KiB"))
                    .unwrap_or_else(|| "- (process gone)".into())
            );
        }
        if let Some(i) = &self.idle {
            if i.rss_total_kib == 0 {
                // No readable node process: nothing was measured.
                let _ = writeln!(
                    s,
                    "  idle        {} sessions held; node memory not measured (give --pids of the nodes)",
                    i.sessions
                );
            } else {
                let _ = writeln!(
                    s,
                    "  idle        {} sessions: node rss +{} KiB = {:.1} KiB/session (total {} KiB)",
                    i.sessions, i.rss_growth_kib, i.kib_per_session, i.rss_total_kib
                );
            }
        }
        if let Some(ch) = &self.chaos {
            let what = match ch.paused_pid {
                Some(pid) => format!(
                    "paused pid {pid} at {}s, resumed at {}s",
                    opt(ch.paused_at_s, ""),
                    opt(ch.resumed_at_s, "")
                ),
                None => match (ch.killed_pid, ch.restarted_at_s) {
                    (Some(pid), Some(at)) => format!(
                        "killed pid {pid} at {}s, restarted at {at:.1}s",
                        opt(ch.killed_at_s, "")
                    ),
                    (Some(pid), None) => format!(
                        "killed pid {pid} at {}s, not restarted",
                        opt(ch.killed_at_s, "")
                    ),
                    (None, _) => "no node was killed or paused".into(),
                },
            };
            let _ = writeln!(
                s,
                "  chaos       {what}; first ack after the failure {} ms; longest room ack pause {} ms",
                opt(ch.first_ack_after_kill_ms, ""),
                opt(ch.longest_room_ack_pause_ms, "")
            );
        }
        let _ = writeln!(
            s,
            "  machine     load average {} (1 min), cpu pressure {}, io pressure {} (share of the last 60 s in which tasks waited for a CPU / for I/O)",
            opt(self.host_load.loadavg_1m, ""),
            opt(self.host_load.cpu_pressure_avg60, "%"),
            opt(self.host_load.io_pressure_avg60, "%")
        );
        if !self.errors.is_empty() {
            let e: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "  errors      {}", e.join(", "));
        }
        if !self.other_events.is_empty() {
            let e: Vec<String> = self
                .other_events
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "  events      {}", e.join(", "));
        }
        let _ = writeln!(s, "  reconnects  {}", self.reconnects);
        let ck = &self.checker;
        let _ = writeln!(
            s,
            "  checker     {} violations; {} sessions checked in full, {} as prefix; {} acked messages, {} deliveries checked",
            ck.violations,
            ck.complete_sessions,
            ck.incomplete_sessions,
            ck.acked_messages,
            ck.deliveries_checked
        );
        if let Verdict::Incomplete(why) = self.verdict() {
            let _ = writeln!(s, "  incomplete  {why}");
        }
        for v in ck.list.iter().take(20) {
            let _ = writeln!(s, "    {v}");
        }
        if ck.violations > 20 {
            let _ = writeln!(
                s,
                "    ... {} more (see the JSON report)",
                ck.violations - 20
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note        {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of a run that did everything, with `incomplete` sessions
    /// that ended disconnected or behind.
    fn run(scenario: Scenario, incomplete: usize) -> Report {
        Report {
            scenario,
            command: String::new(),
            nodes: Vec::new(),
            params: Params::default(),
            setup_s: 0.0,
            connect: ConnectStats::default(),
            messages: MessageStats {
                sent: u64::from(scenario.sends()),
                ..MessageStats::default()
            },
            errors: BTreeMap::new(),
            other_events: BTreeMap::new(),
            reconnects: 0,
            client: ProcStats::default(),
            node_procs: Vec::new(),
            idle: None,
            chaos: None,
            checker: CheckerStats {
                incomplete_sessions: incomplete,
                ..CheckerStats::default()
            },
            timeline: Vec::new(),
            cpu_timeline: Vec::new(),
            plots: Vec::new(),
            node_metrics: Vec::new(),
            fd_limit: (0, 0),
            host_load: HostLoad::default(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_session_that_ends_behind_makes_a_sending_run_incomplete() {
        assert_eq!(run(Scenario::Fanout, 0).verdict(), Verdict::Passed);
        let Verdict::Incomplete(why) = run(Scenario::Fanout, 1).verdict() else {
            panic!("one session behind is a shortfall");
        };
        assert!(
            why.starts_with("1 session(s) ended disconnected or behind"),
            "{why}"
        );
        // A run that sends nothing still falls short when a session ends
        // disconnected (its node died), but a session that never connected
        // is counted once, as such.
        assert_eq!(run(Scenario::Idle, 0).verdict(), Verdict::Passed);
        assert!(matches!(
            run(Scenario::Idle, 1).verdict(),
            Verdict::Incomplete(_)
        ));
        let mut never = run(Scenario::Idle, 1);
        never.connect.failed = 1;
        let Verdict::Incomplete(why) = never.verdict() else {
            panic!("a session that never connected is a shortfall");
        };
        assert_eq!(why, "1 session(s) never connected");
    }

    #[test]
    fn unchecked_sessions_and_runs_that_sent_nothing_are_incomplete() {
        let mut r = run(Scenario::Fanout, 0);
        r.checker.unchecked_sessions = 1;
        assert!(matches!(r.verdict(), Verdict::Incomplete(_)));
        let mut r = run(Scenario::Fanout, 0);
        r.messages.sent = 0;
        let Verdict::Incomplete(why) = r.verdict() else {
            panic!("a sending run that sent nothing is a shortfall");
        };
        assert!(why.starts_with("no message was sent"), "{why}");
    }

    #[test]
    fn failed_connect_attempts_get_a_line_of_their_own() {
        let mut r = run(Scenario::Connect, 0);
        assert!(!r.table().contains("failed attempt"), "{}", r.table());
        r.connect.failed_attempts = Percentiles {
            count: 3,
            p50_ms: 1.5,
            p99_ms: 10_000.0,
            max_ms: 10_000.0,
            ..Percentiles::default()
        };
        let table = r.table();
        assert!(
            table.contains("3 failed attempt(s), retries included; they failed after p50 1.5 ms p99 10000.0 ms max 10000.0 ms"),
            "{table}"
        );
    }
}
