//! `parley-loadtest bench`: starts fresh release nodes, runs the standard
//! benchmark set of issue 5 against them, and writes `docs/benchmarks.md`
//! with the machine, the command, a results table and links to the plots.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cli::{BenchArgs, RunArgs};
use crate::diskprobe;
use crate::metrics::Percentiles;
use crate::nodeproc::{NodeError, NodeProc, LOAD_TEST_FLAGS};
use crate::plan::Scenario;
use crate::report::{Report, Verdict};
use crate::runner;
use crate::sysinfo::{self, MachineInfo};

/// Most runs of each benchmark `--repeat` may ask for.
const MAX_REPEAT: usize = 100;

/// Why the benchmark set could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The node binary is missing.
    #[error("parley-node binary not found at {0}; build it with `cargo build --release -p parley-node` or pass --node-bin")]
    NoNodeBinary(String),
    /// A node would not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Writing the results failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// An input file (`--notes`) cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// `--only` names a benchmark this run does not have.
    #[error("--only {name}: no such benchmark with these options; the set is {known}")]
    UnknownCase {
        /// The name given.
        name: String,
        /// The benchmarks there are, comma-separated.
        known: String,
    },
    /// A benchmark's options name no sensible run.
    #[error("{case}: {reason}")]
    Args {
        /// The benchmark.
        case: String,
        /// What is wrong, naming the scenario option.
        reason: String,
    },
}

/// One benchmark's outcome.
struct Row {
    name: String,
    load: String,
    what: String,
    target: String,
    result: String,
    verdict: String,
    detail: Option<String>,
    plots: Vec<String>,
    metrics: Vec<String>,
    /// The data disk's sync latency just before the run.
    sync: Option<Percentiles>,
    /// The JSON report of the run shown.
    json: PathBuf,
}

/// One run of one benchmark.
struct RunOutcome {
    /// The data disk's sync latency just before the run.
    sync: Option<Percentiles>,
    /// The report, or why the run failed.
    result: Result<Report, String>,
    /// Where the JSON report was written.
    json: PathBuf,
}

/// Turns a report (and the reports of earlier benchmarks, by name) into
/// the result text and the verdict.
type Judge = fn(&Report, &BenchArgs, &HashMap<String, Report>) -> (String, String);

/// One benchmark to run.
struct Case {
    name: String,
    scenario: Scenario,
    what: String,
    target: String,
    args: RunArgs,
    judge: Judge,
    /// Nodes to start (more than one: a local cluster sharing one store).
    nodes: usize,
    /// Chaos without restart: kill the second node of the cluster.
    kill_second: bool,
}

fn base_args(quiet: bool) -> RunArgs {
    RunArgs {
        nodes: Vec::new(),
        sessions: None,
        users: None,
        rooms: 1,
        members: 1,
        senders: 0,
        rate: 0.0,
        duration: 10.0,
        warmup: 2.0,
        body_bytes: 64,
        pids: Vec::new(),
        report: None,
        plot: None,
        connect_concurrency: 256,
        setup_concurrency: 32,
        connect_timeout: 15.0,
        drain_timeout: 60.0,
        spread_sources_above: 20_000,
        per_source: 20_000,
        kill_pid: None,
        kill_at: 5.0,
        restart_cmd: None,
        restart_after: 1.0,
        pause_for: 0.0,
        reconnect_fraction: 0.1,
        quiet,
    }
}

fn violations(r: &Report) -> String {
    match r.verdict() {
        Verdict::Violations => format!("**{} violations**", r.checker.violations),
        Verdict::Incomplete(why) => format!("0 violations, **incomplete**: {why}"),
        Verdict::Passed => "0 violations".into(),
    }
}

fn latency(r: &Report) -> String {
    let e = &r.messages.e2e;
    let live = format!(
        "p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        e.p50_ms, e.p99_ms, e.p999_ms, e.max_ms
    );
    let c = &r.messages.catch_up;
    if c.count == 0 {
        return live;
    }
    format!(
        "{live}; catch-up after reconnects ({} deliveries): p50 {:.1} ms, max {:.1} ms",
        c.count, c.p50_ms, c.max_ms
    )
}

fn cases(b: &BenchArgs, fd_soft: u64) -> Vec<Case> {
    let q = b.quiet;
    let mut out = Vec::new();

    let mut a = base_args(q);
    a.rooms = 1;
    a.members = b.big_members;
    a.senders = b.big_senders.max(1);
    a.rate = b.big_rate / a.senders as f64;
    a.duration = b.duration;
    a.warmup = b.warmup;
    out.push(Case {
        name: "fanout-big-room".into(),
        scenario: Scenario::Fanout,
        what: format!(
            "fanout, 1 room x {} members, {} senders x {} msgs/s = {} msgs/s in, {} s (+{} s warm-up)",
            a.members, a.senders, a.rate, b.big_rate, a.duration, a.warmup
        ),
        target: "≥ 100,000 deliveries/s, p99 ≤ 25 ms, 0 violations".into(),
        args: a,
        nodes: 1,
        kill_second: false,
        judge: |r, b, _| {
            let target = (b.big_rate * b.big_members as f64).min(100_000.0);
            let ok = r.messages.deliveries_per_s >= 0.99 * target
                && r.messages.e2e.p99_ms <= 25.0
                && r.passed();
            (
                format!(
                    "{:.0} deliveries/s; {}; {}",
                    r.messages.deliveries_per_s,
                    latency(r),
                    violations(r)
                ),
                if ok { "met" } else { "**missed**" }.into(),
            )
        },
    });

    for &rate in &b.sweep {
        let mut a = base_args(q);
        a.rooms = 1;
        a.members = b.big_members;
        a.senders = b.big_senders.max(1);
        a.rate = rate / a.senders as f64;
        a.duration = b.sweep_duration;
        a.warmup = b.warmup;
        out.push(Case {
            name: format!("fanout-big-room-at-{rate}"),
            scenario: Scenario::Fanout,
            what: format!(
                "load sweep: the big room at {rate} msgs/s in ({} senders), {} s",
                a.senders, a.duration
            ),
            target: "none (latency against load)".into(),
            args: a,
            nodes: 1,
            kill_second: false,
            judge: |r, _, _| {
                (
                    format!(
                        "{:.0} deliveries/s; {}; {}",
                        r.messages.deliveries_per_s,
                        latency(r),
                        violations(r)
                    ),
                    r.label().into(),
                )
            },
        });
    }

    let mut a = base_args(q);
    a.rooms = b.small_rooms;
    a.members = b.small_members;
    a.senders = b.small_senders;
    a.rate = b.small_rate;
    a.duration = b.duration;
    a.warmup = b.warmup;
    out.push(Case {
        name: "fanout-small-rooms".into(),
        scenario: Scenario::Fanout,
        what: format!(
            "fanout, {} rooms x {} members x {} senders x {} msgs/s, {} s",
            a.rooms, a.members, a.senders, a.rate, a.duration
        ),
        target: "p99 ≤ 10 ms, 0 violations".into(),
        args: a,
        nodes: 1,
        kill_second: false,
        judge: |r, _, _| {
            let ok = r.messages.e2e.p99_ms <= 10.0 && r.passed();
            (
                format!(
                    "{:.0} deliveries/s; {}; {}",
                    r.messages.deliveries_per_s,
                    latency(r),
                    violations(r)
                ),
                if ok { "met" } else { "**missed**" }.into(),
            )
        },
    });

    // Both the harness and the node need one descriptor per session.
    let idle_cap = fd_soft.saturating_sub(1000).max(100) as usize;
    let mut a = base_args(q);
    a.sessions = Some(b.idle_sessions.min(idle_cap));
    a.duration = b.idle_hold;
    a.connect_concurrency = 128;
    let capped = a.sessions() < b.idle_sessions;
    out.push(Case {
        name: "idle".into(),
        scenario: Scenario::Idle,
        what: if capped {
            format!(
                "idle, {} sessions held {} s (asked for {}; capped by the open-file limit of {} per process)",
                a.sessions(), a.duration, b.idle_sessions, fd_soft
            )
        } else {
            format!("idle, {} sessions held {} s", a.sessions(), a.duration)
        },
        target: "100,000 sessions in ≤ 2 GB node RSS (≤ 20 KiB per session)".into(),
        args: a,
        nodes: 1,
        kill_second: false,
        judge: |r, b, _| {
            let Some(i) = &r.idle else {
                return ("no memory figures".into(), "**missed**".into());
            };
            let at_target = i.kib_per_session * b.idle_sessions as f64 / 1024.0;
            let ok = i.kib_per_session <= 20.0 && r.connect.failed == 0 && r.passed();
            (
                format!(
                    "{} sessions connected; node RSS {:.0} MiB (+{:.0} MiB) = {:.1} KiB/session → {:.0} MiB at {}",
                    i.sessions,
                    i.rss_total_kib as f64 / 1024.0,
                    i.rss_growth_kib as f64 / 1024.0,
                    i.kib_per_session,
                    at_target,
                    b.idle_sessions
                ),
                if ok {
                    "met (per session)"
                } else {
                    "**missed**"
                }
                .into(),
            )
        },
    });

    let mut a = base_args(q);
    a.sessions = Some(b.connect_sessions.min(idle_cap));
    a.duration = 1.0;
    out.push(Case {
        name: "connect".into(),
        scenario: Scenario::Connect,
        what: format!("connect storm, {} sessions, 256 at a time", a.sessions()),
        target: "none set (recorded)".into(),
        args: a,
        nodes: 1,
        kill_second: false,
        judge: |r, _, _| {
            (
                format!(
                    "{} connected in {:.2} s = {:.0}/s; connect p50 {:.1} ms, p99 {:.1} ms; {} failed",
                    r.connect.connected,
                    r.connect.seconds,
                    r.connect.rate_per_s,
                    r.connect.latency.p50_ms,
                    r.connect.latency.p99_ms,
                    r.connect.failed
                ),
                "recorded".into(),
            )
        },
    });

    let mut a = base_args(q);
    a.sessions = Some(b.dm_sessions);
    a.rate = b.dm_rate;
    a.duration = b.duration;
    a.warmup = b.warmup;
    out.push(Case {
        name: "dm".into(),
        scenario: Scenario::Dm,
        what: format!(
            "dm, {} pairs, both sides {} msgs/s, {} s",
            a.sessions() / 2,
            a.rate,
            a.duration
        ),
        target: "0 violations (latency recorded)".into(),
        args: a,
        nodes: 1,
        kill_second: false,
        judge: |r, _, _| {
            (
                format!(
                    "{:.0} deliveries/s; {}; {}",
                    r.messages.deliveries_per_s,
                    latency(r),
                    violations(r)
                ),
                if r.passed() { "met" } else { "**missed**" }.into(),
            )
        },
    });

    let mut a = base_args(q);
    a.rooms = 20;
    a.members = 50;
    a.senders = 5;
    a.rate = 2.0;
    a.duration = b.duration;
    a.warmup = b.warmup;
    a.reconnect_fraction = 0.1;
    out.push(Case {
        name: "mixed".into(),
        scenario: Scenario::Mixed,
        what: format!(
            "mixed, {} rooms x {} members + a direct room per user pair, {} senders/room x {} msgs/s, typing, read receipts, 10% of sessions drop and sync, {} s",
            a.rooms, a.members, a.senders, a.rate, a.duration
        ),
        target: "0 violations (latency recorded)".into(),
        args: a,
        nodes: 1,
        kill_second: false,
        judge: |r, _, _| {
            (
                format!(
                    "{:.0} deliveries/s; {}; {} reconnects; {}",
                    r.messages.deliveries_per_s,
                    latency(r),
                    r.reconnects,
                    violations(r)
                ),
                if r.passed() { "met" } else { "**missed**" }.into(),
            )
        },
    });

    let mut a = base_args(q);
    a.rooms = 10;
    a.members = 50;
    a.senders = 2;
    a.rate = 10.0;
    a.duration = b.duration;
    a.warmup = b.warmup;
    a.kill_at = b.chaos_kill_at;
    a.restart_after = 0.5;
    out.push(Case {
        name: "chaos-single-node".into(),
        scenario: Scenario::Chaos,
        what: format!(
            "chaos on one node: fanout 10 rooms x 50 members x 2 senders x 10 msgs/s; node killed (-9) at {} s and restarted 0.5 s later",
            a.kill_at
        ),
        target: "0 violations (the 3 s fail-over target needs a cluster)".into(),
        args: a,
        nodes: 1,
        kill_second: false,
        judge: |r, _, _| {
            let pause = r
                .chaos
                .as_ref()
                .and_then(|c| c.longest_room_ack_pause_ms)
                .map(|p| format!("{:.0} ms", p))
                .unwrap_or_else(|| "-".into());
            (
                format!(
                    "longest room ack pause {pause} (includes the 0.5 s restart delay); {} resends; {}",
                    r.messages.resends,
                    violations(r)
                ),
                if r.passed() { "met" } else { "**missed**" }.into(),
            )
        },
    });
    if b.cluster_nodes > 1 {
        let n = b.cluster_nodes;
        let cross = |q: bool, b: &BenchArgs| {
            let mut a = base_args(q);
            a.rooms = 20;
            a.members = 30;
            a.senders = 2;
            a.rate = 5.0;
            a.duration = b.duration;
            a.warmup = b.warmup;
            a
        };
        out.push(Case {
            name: "cross-node-baseline".into(),
            scenario: Scenario::Fanout,
            what: "baseline for the next row, on one node: fanout 20 rooms x 30 members x 2 senders x 5 msgs/s".into(),
            target: "none (baseline)".into(),
            args: cross(q, b),
            nodes: 1,
            kill_second: false,
            judge: |r, _, _| {
                (
                    format!(
                        "{:.0} deliveries/s; {}; {}",
                        r.messages.deliveries_per_s,
                        latency(r),
                        violations(r)
                    ),
                    r.label().into(),
                )
            },
        });
        out.push(Case {
            name: "cluster-cross-node".into(),
            scenario: Scenario::Fanout,
            what: format!(
                "the same on {n} local nodes sharing the embedded store, sessions spread round-robin (most deliveries cross a node)"
            ),
            target: "adds ≤ 1 ms at p50 over the baseline, 0 violations".into(),
            args: cross(q, b),
            nodes: n,
            kill_second: false,
            judge: |r, _, earlier| {
                let Some(base) = earlier.get("cross-node-baseline") else {
                    return (
                        format!("{}; no baseline to compare", latency(r)),
                        "**not measured**".into(),
                    );
                };
                let added = r.messages.e2e.p50_ms - base.messages.e2e.p50_ms;
                let ok = added <= 1.0 && r.passed();
                (
                    format!(
                        "{}; p50 {:+.2} ms over one node; {}",
                        latency(r),
                        added,
                        violations(r)
                    ),
                    if ok { "met" } else { "**missed**" }.into(),
                )
            },
        });
        let mut a = base_args(q);
        a.rooms = 10;
        a.members = 30;
        a.senders = 2;
        a.rate = 10.0;
        a.duration = b.duration;
        a.warmup = b.warmup;
        a.kill_at = b.chaos_kill_at;
        out.push(Case {
            name: "cluster-chaos".into(),
            scenario: Scenario::Chaos,
            what: format!(
                "chaos on {n} local nodes: fanout 10 rooms x 30 members x 2 senders x 10 msgs/s; node n2 killed (-9) at {} s, not restarted; its clients reconnect to the others and sync",
                a.kill_at
            ),
            target: "rooms serve again within 3 s, 0 violations".into(),
            args: a,
            nodes: n,
            kill_second: true,
            judge: |r, _, _| {
                let pause = r.chaos.as_ref().and_then(|c| c.longest_room_ack_pause_ms);
                let ok = pause.is_some_and(|p| p <= 3000.0) && r.passed();
                (
                    format!(
                        "longest room ack pause {}; {} reconnects; {} resends; {}",
                        pause
                            .map(|p| format!("{p:.0} ms"))
                            .unwrap_or_else(|| "-".into()),
                        r.reconnects,
                        r.messages.resends,
                        violations(r)
                    ),
                    if ok { "met" } else { "**missed**" }.into(),
                )
            },
        });
    }
    out
}

fn rel_link(out: &Path, file: &str) -> String {
    let p = PathBuf::from(file);
    let base = out.parent().unwrap_or(Path::new(""));
    p.strip_prefix(base)
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| file.to_string())
}

/// The benchmarks `--only` picks (all without it), each with options it
/// can run: a name the set lacks, or options a scenario refuses, end the
/// bench before any node starts rather than after the others ran.
fn selected(b: &BenchArgs, fd_soft: u64) -> Result<Vec<Case>, BenchError> {
    let all = cases(b, fd_soft);
    let mut only: Vec<String> = b
        .only
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    // The cross-node benchmark is judged against its baseline.
    if only.iter().any(|n| n == "cluster-cross-node")
        && !only.iter().any(|n| n == "cross-node-baseline")
    {
        only.push("cross-node-baseline".into());
    }
    if let Some(name) = only.iter().find(|n| !all.iter().any(|c| &c.name == *n)) {
        return Err(BenchError::UnknownCase {
            name: name.clone(),
            known: all
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let picked: Vec<Case> = all
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&c.name))
        .collect();
    for case in &picked {
        case.args
            .check(case.scenario)
            .map_err(|reason| BenchError::Args {
                case: case.name.clone(),
                reason,
            })?;
    }
    Ok(picked)
}

/// Runs the benchmark set and writes the markdown; returns the verdict of
/// all runs together: violations if any run found some, else incomplete if
/// any run was (or failed), else passed.
pub async fn run(b: &BenchArgs, command: String) -> Result<Verdict, BenchError> {
    let machine = MachineInfo::read();
    let node_bin = match &b.node_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("parley-node")))
            .unwrap_or_else(|| PathBuf::from("target/release/parley-node")),
    };
    if !node_bin.exists() {
        return Err(BenchError::NoNodeBinary(node_bin.display().to_string()));
    }
    let picked = selected(b, machine.fd_limit.0)?;
    if !(1..=MAX_REPEAT).contains(&b.repeat) {
        return Err(BenchError::Args {
            case: "bench".into(),
            reason: format!("--repeat must be from 1 to {MAX_REPEAT}"),
        });
    }
    if !(b.sync_probe.is_finite() && (0.0..=60.0).contains(&b.sync_probe)) {
        return Err(BenchError::Args {
            case: "bench".into(),
            reason: format!(
                "--sync-probe must be from 0 to 60 seconds (got {})",
                b.sync_probe
            ),
        });
    }
    // Read now: a missing file is found before any node starts.
    let notes = match &b.notes {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|source| BenchError::Read {
                path: path.display().to_string(),
                source,
            })?,
        ),
        None => None,
    };
    let write_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| BenchError::Write { path, source }
    };
    std::fs::create_dir_all(&b.assets).map_err(write_err(&b.assets))?;
    crate::outfile::check_writable(&b.out).map_err(write_err(&b.out))?;
    let scratch = Scratch(
        b.scratch
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("parley-bench-{}", std::process::id())),
    );
    let scratch = &scratch.0;
    std::fs::create_dir_all(scratch).map_err(write_err(scratch))?;
    let data_disk = format!(
        "`{}` ({})",
        scratch.display(),
        sysinfo::filesystem_of(scratch).unwrap_or_else(|| "filesystem unknown".into())
    );
    let started = std::time::SystemTime::now();
    let mut rows = Vec::new();
    let mut overall = Verdict::Passed;
    let mut earlier: HashMap<String, Report> = HashMap::new();
    let repeat = b.repeat;
    for case in picked {
        let mut runs = Vec::with_capacity(repeat);
        for k in 1..=repeat {
            let run = (repeat > 1).then_some(k);
            eprintln!(
                "bench: {}{} ...",
                case.name,
                run.map(|k| format!(" (run {k} of {repeat})"))
                    .unwrap_or_default()
            );
            runs.push(run_once(&case, b, &node_bin, scratch, &command, run).await?);
        }
        let keys: Vec<Option<Key>> = runs.iter().map(key_metric).collect();
        let spread_text = spread(&keys);
        let pick = representative(&keys);
        let RunOutcome { sync, result, json } = runs.swap_remove(pick);
        for r in runs.iter().map(|r| &r.result).chain([&result]) {
            let v = match r {
                Ok(report) => report.verdict(),
                Err(e) => Verdict::Incomplete(format!("the run failed: {e}")),
            };
            overall = worse(overall, v, &case.name);
        }
        let row = match result {
            Ok(report) => {
                let (mut result, verdict) = (case.judge)(&report, b, &earlier);
                if let Some(text) = spread_text {
                    result.push_str(&text);
                }
                eprintln!("{}", report.table());
                earlier.insert(case.name.clone(), report.clone());
                let l = &report.host_load;
                Row {
                    name: case.name,
                    load: format!(
                        "{} / {} / {}",
                        l.loadavg_1m
                            .map(|v| format!("{v:.1}"))
                            .unwrap_or_else(|| "-".into()),
                        l.cpu_pressure_avg60
                            .map(|v| format!("{v:.0}%"))
                            .unwrap_or_else(|| "-".into()),
                        l.io_pressure_avg60
                            .map(|v| format!("{v:.0}%"))
                            .unwrap_or_else(|| "-".into())
                    ),
                    what: case.what,
                    target: case.target,
                    result,
                    verdict,
                    detail: Some(report.table()),
                    plots: report.plots.clone(),
                    metrics: report.node_metrics.clone(),
                    sync,
                    json,
                }
            }
            Err(e) => Row {
                name: case.name,
                load: "-".into(),
                what: case.what,
                target: case.target,
                result: format!("run failed: {e}"),
                verdict: "**not measured**".into(),
                detail: None,
                plots: Vec::new(),
                metrics: Vec::new(),
                sync,
                json,
            },
        };
        rows.push(row);
    }
    let facts = PageFacts {
        started,
        node_bin: &node_bin,
        data_disk,
        notes,
    };
    let md = markdown(b, &machine, &command, &rows, &facts);
    std::fs::write(&b.out, md).map_err(write_err(&b.out))?;
    Ok(overall)
}

/// The bench's scratch directory (the nodes' data), removed with
/// everything in it however the bench ends: done, or stopped by an error
/// such as a node that would not start (whose log is in the error).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The worse of the verdict so far and one of `case`'s runs (violations,
/// then incomplete, then passed); the first incomplete one is kept, named
/// by its benchmark.
fn worse(a: Verdict, b: Verdict, case: &str) -> Verdict {
    match (a, b) {
        (Verdict::Violations, _) | (_, Verdict::Violations) => Verdict::Violations,
        (Verdict::Incomplete(first), _) => Verdict::Incomplete(first),
        (Verdict::Passed, Verdict::Incomplete(why)) => {
            Verdict::Incomplete(format!("{case}: {why}"))
        }
        (Verdict::Passed, Verdict::Passed) => Verdict::Passed,
    }
}

/// Starts fresh nodes for `case`, runs it once and stops them. `run` numbers
/// the run when the benchmark is repeated (its files get a `.runN` suffix).
async fn run_once(
    case: &Case,
    b: &BenchArgs,
    node_bin: &Path,
    scratch: &Path,
    command: &str,
    run: Option<usize>,
) -> Result<RunOutcome, BenchError> {
    let stem = match run {
        Some(k) => format!("{}.run{k}", case.name),
        None => case.name.clone(),
    };
    let dir = scratch.join(&stem);
    let _ = std::fs::remove_dir_all(&dir);
    let sync = probe_sync(&dir, b.sync_probe).await;
    let nodes = if case.nodes > 1 {
        NodeProc::start_cluster(node_bin, &dir, case.nodes).await?
    } else {
        vec![NodeProc::start(node_bin, &dir).await?]
    };
    let mut args = case.args.clone();
    args.nodes = nodes.iter().map(|n| n.base.clone()).collect();
    args.pids = nodes.iter().map(|n| n.pid).collect();
    if case.kill_second {
        args.kill_pid = nodes.get(1).map(|n| n.pid);
    } else if case.scenario == Scenario::Chaos {
        args.kill_pid = nodes.first().map(|n| n.pid);
        args.restart_cmd = nodes.first().map(|n| n.restart_cmd.clone());
    }
    let json = b.assets.join(format!("{stem}.json"));
    args.report = Some(json.clone());
    args.plot = Some(b.assets.join(&stem));
    let result = runner::run(case.scenario, &args, format!("{command} # {stem}")).await;
    let mut restarted = result
        .as_ref()
        .ok()
        .and_then(|r| r.chaos.as_ref())
        .and_then(|c| c.restart_pid);
    for node in nodes {
        node.stop(restarted.take()).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Ok(report) = &result {
        let _ = runner::write_report(&json, report);
    }
    Ok(RunOutcome {
        sync,
        result: result.map_err(|e| e.to_string()),
        json,
    })
}

/// The number a benchmark's runs are compared by, with its name and unit.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key {
    value: f64,
    name: &'static str,
    unit: &'static str,
}

/// A run's [`Key`]: the longest room pause for chaos, memory per session
/// for idle, else the send-to-receipt p99 (`None` for a failed run or one
/// with none of these).
fn key_metric(run: &RunOutcome) -> Option<Key> {
    let r = run.result.as_ref().ok()?;
    let key = |value, name, unit| Key { value, name, unit };
    if let Some(pause) = r.chaos.as_ref().and_then(|c| c.longest_room_ack_pause_ms) {
        return Some(key(pause, "longest room ack pause", "ms"));
    }
    if let Some(idle) = &r.idle {
        return Some(key(idle.kib_per_session, "node RSS per session", "KiB"));
    }
    (r.messages.e2e.count > 0).then(|| key(r.messages.e2e.p99_ms, "p99", "ms"))
}

/// The run to show for a repeated benchmark: the one with the median key,
/// the higher of the middle two for an even count (the first run when no
/// run has a key).
fn representative(keys: &[Option<Key>]) -> usize {
    let mut keyed: Vec<(usize, f64)> = keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| k.map(|k| (i, k.value)))
        .collect();
    keyed.sort_by(|a, b| a.1.total_cmp(&b.1));
    keyed.get(keyed.len() / 2).map_or(0, |(i, _)| *i)
}

/// "; p99 over 3 runs: 98.3 / 127.4 / 277.2 ms (min / shown / max)" when
/// more than one run has a key; runs without one (failed) are counted.
fn spread(keys: &[Option<Key>]) -> Option<String> {
    let mut present: Vec<Key> = keys.iter().flatten().copied().collect();
    if present.len() < 2 {
        return None;
    }
    present.sort_by(|a, b| a.value.total_cmp(&b.value));
    let (first, mid, last) = (
        present[0],
        present[present.len() / 2],
        present[present.len() - 1],
    );
    let missing = keys.len() - present.len();
    Some(format!(
        "; {} over {} runs: {:.1} / {:.1} / {:.1} {} (min / shown / max){}",
        first.name,
        present.len(),
        first.value,
        mid.value,
        last.value,
        first.unit,
        if missing > 0 {
            format!("; {missing} run(s) failed")
        } else {
            String::new()
        }
    ))
}

/// Measures the data disk's sync latency in `dir` for `secs` seconds
/// (`None` when `secs` is 0 or the probe failed, which is reported).
async fn probe_sync(dir: &Path, secs: f64) -> Option<Percentiles> {
    let duration = std::time::Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())?;
    let dir = dir.to_path_buf();
    let probed = tokio::task::spawn_blocking(move || diskprobe::probe(&dir, duration))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match probed {
        Ok(l) => {
            eprintln!("bench: data disk sync {}", diskprobe::summary(&l));
            Some(l)
        }
        Err(e) => {
            eprintln!("bench: data disk sync probe failed: {e}");
            None
        }
    }
}

/// What the page says about the bench run itself.
struct PageFacts<'a> {
    /// When the bench started.
    started: std::time::SystemTime,
    /// The node binary measured.
    node_bin: &'a Path,
    /// Where the nodes kept their data, and its filesystem.
    data_disk: String,
    /// The `--notes` text, shown under "Observations".
    notes: Option<String>,
}

fn markdown(
    b: &BenchArgs,
    m: &MachineInfo,
    command: &str,
    rows: &[Row],
    facts: &PageFacts,
) -> String {
    let PageFacts {
        started,
        node_bin,
        data_disk,
        notes,
    } = facts;
    let mut s = String::new();
    let when = started
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .map(parley_protocol::time::to_rfc3339)
        .unwrap_or_else(|_| "an unknown time".into());
    let _ = writeln!(s, "# Parley benchmarks\n");
    let _ = writeln!(
        s,
        "Measured with the load-test harness `parley-loadtest` (crate `loadtest/`), \
         harness and node on the same machine. Every run also ran the correctness \
         checker (no loss, no duplicates, seq order per room, history matches acks). \
         Written by `parley-loadtest bench` (started at {when}).\n"
    );
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "- CPUs (`nproc`): {}", m.nproc);
    let _ = writeln!(s, "- CPU model: {}", m.cpu_model);
    let _ = writeln!(s, "- kernel: {}", m.kernel);
    let _ = writeln!(
        s,
        "- open-file limit per process (soft, hard): {}, {}",
        m.fd_limit.0, m.fd_limit.1
    );
    let _ = writeln!(s, "- node data directories: under {data_disk}");
    let _ = writeln!(s, "- memory (`free -h`):\n\n```\n{}\n```\n", m.memory);
    let _ = writeln!(
        s,
        "Other work on the machine may share its CPUs (each row gives the load during \
         its run); the harness reports its own CPU use next to the node's so a \
         saturated harness is visible.\n"
    );
    let _ = writeln!(s, "## Command\n");
    let _ = writeln!(s, "```sh\n{command}\n```\n");
    let _ = writeln!(
        s,
        "Node binary: `{}`{}. Each benchmark starts a fresh node on a free 127.0.0.1 \
         port with a fresh data directory and these load-test flags (cheap password \
         hashing for the set-up, every rate limit off):\n\n```\n{}\n```\n",
        node_bin.display(),
        b.node_label
            .as_ref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default(),
        LOAD_TEST_FLAGS.join(" ")
    );
    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(
        s,
        "| benchmark | what | target | result | verdict | machine load¹ | disk sync p99² |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for r in rows {
        let sync = r
            .sync
            .as_ref()
            .map(|l| format!("{:.1} ms", l.p99_ms))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {sync} |",
            r.name, r.what, r.target, r.result, r.verdict, r.load
        );
    }
    if b.cluster_nodes <= 1 {
        let why = format!("not run (--cluster-nodes {})", b.cluster_nodes);
        let _ = writeln!(
            s,
            "| cluster-cross-node | local nodes: added latency of a cross-node hop | ≤ 1 ms at p50 | {why} | not run | - | - |"
        );
        let _ = writeln!(
            s,
            "| cluster-chaos | local nodes, one killed (-9) | rooms serve again within 3 s, 0 violations | {why} | not run | - | - |"
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "¹ 1-minute load average / CPU pressure / I/O pressure (share of the last \
         60 s in which a runnable task waited for a CPU / for I/O) at the end of \
         the run, other users' work included: on 2 cores, a load above 2 or a high pressure \
         means the numbers are pessimistic.\n"
    );
    let _ = writeln!(
        s,
        "² How long the disk under the nodes' data took to make a 4 KiB write \
         durable (`fdatasync`, one at a time, for {} s just before the benchmark): \
         the floor under every group commit, which the embedded store syncs before \
         it acks. \"-\": not probed.\n",
        b.sync_probe
    );
    let _ = writeln!(
        s,
        "Latency is from the sender writing `send` to each recipient reading the \
         `message` (every member session, the sender's own included), measured after \
         the warm-up. Messages a reconnected session reads before its `synced` (what it \
         missed while away) are timed apart as catch-up. JSON reports with per-second \
         timelines are next to the plots.\n"
    );
    if let Some(notes) = notes {
        let _ = writeln!(s, "## Observations\n\n{}\n", notes.trim_end());
    }
    let _ = writeln!(s, "## Details\n");
    for r in rows {
        let _ = writeln!(s, "### {}\n", r.name);
        if let Some(d) = &r.detail {
            let _ = writeln!(s, "```\n{}```\n", d);
        }
        if let Some(l) = &r.sync {
            let _ = writeln!(
                s,
                "Data disk just before the run: {} over {} syncs of 4 KiB.\n",
                diskprobe::summary(l),
                l.count
            );
        }
        for p in &r.plots {
            let link = rel_link(&b.out, p);
            let _ = writeln!(s, "![{}]({link})\n", r.name);
        }
        let _ = writeln!(
            s,
            "Report: [{}]({})\n",
            r.json.display(),
            rel_link(&b.out, &r.json.display().to_string())
        );
        for m in &r.metrics {
            let _ = writeln!(
                s,
                "Node `/metrics` at the end: [{m}]({})\n",
                rel_link(&b.out, m)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p99(value: f64) -> Option<Key> {
        Some(Key {
            value,
            name: "p99",
            unit: "ms",
        })
    }

    #[test]
    fn the_bench_verdict_is_the_worst_run() {
        let inc = |w: &str| Verdict::Incomplete(w.into());
        assert_eq!(
            worse(Verdict::Passed, Verdict::Passed, "a"),
            Verdict::Passed
        );
        assert_eq!(worse(Verdict::Passed, inc("x"), "a"), inc("a: x"));
        // The first incomplete one is kept; violations outrank it.
        assert_eq!(worse(inc("a: x"), inc("y"), "b"), inc("a: x"));
        assert_eq!(
            worse(inc("a: x"), Verdict::Violations, "b"),
            Verdict::Violations
        );
        assert_eq!(
            worse(Verdict::Violations, Verdict::Passed, "b"),
            Verdict::Violations
        );
    }

    #[test]
    fn a_repeated_benchmark_shows_its_median_run_and_the_spread() {
        let keys = [p99(300.0), p99(5.0), None, p99(40.0)];
        assert_eq!(representative(&keys), 3, "the median of 5, 40 and 300");
        assert_eq!(
            spread(&keys).as_deref(),
            Some("; p99 over 3 runs: 5.0 / 40.0 / 300.0 ms (min / shown / max); 1 run(s) failed")
        );
        // One run, or one with a key: nothing to compare.
        assert_eq!(spread(&[p99(7.0)]), None);
        assert_eq!(spread(&[p99(7.0), None]), None);
        assert_eq!(representative(&[None, None]), 0);
        assert_eq!(representative(&[None, p99(1.0)]), 1);
    }
}
