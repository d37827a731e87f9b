//! Runs one scenario end to end: plan, setup, connect, run (with chaos
//! actions), drain, read history, check, and build the report.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use crate::api::{Api, ApiError};
use crate::chaos;
use crate::checker::{self, CheckInput, SessionStreams};
use crate::cli::RunArgs;
use crate::client::{self, Phase, SessionResult, SessionSpec, Shared};
use crate::metrics::{cdf_points, Metrics, Percentiles};
use crate::outfile;
use crate::plan::{self, Scenario, Shape};
use crate::plot;
use crate::progress::Progress;
use crate::report::{
    CheckerStats, ConnectStats, CpuPoint, IdleStats, MessageStats, Params, ProcStats, Report,
};
use crate::setup::{self, SetupError};
use crate::sysinfo::{self, CpuMeter};
use crate::wsconn::{ConnectError, NodeAddr, SourceAddrs};

/// Why a run could not be carried out (a run that finds violations is not an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A node address is unusable.
    #[error("node address: {0}")]
    Node(#[from] ConnectError),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Api(#[from] ApiError),
    /// Creating users or rooms failed.
    #[error("setup: {0}")]
    Setup(#[from] SetupError),
    /// Bad arguments.
    #[error("{0}")]
    Args(String),
    /// An output file cannot be written (found before the run).
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
}

/// Samples process memory during the run.
struct Sampler {
    pids: Vec<u32>,
    start: Vec<Option<u64>>,
    max: Vec<Option<u64>>,
    last: Vec<Option<u64>>,
    self_max: Option<u64>,
    /// CPU seconds at the previous sample: harness, then nodes.
    last_cpu: Vec<Option<f64>>,
    last_at: Instant,
    cpu: Vec<CpuPoint>,
}

impl Sampler {
    fn new(pids: &[u32]) -> Self {
        let start: Vec<Option<u64>> = pids.iter().map(|p| sysinfo::rss_kib(Some(*p))).collect();
        Sampler {
            pids: pids.to_vec(),
            max: start.clone(),
            last: start.clone(),
            start,
            self_max: sysinfo::rss_kib(None),
            last_cpu: Self::cpu_now(pids),
            last_at: Instant::now(),
            cpu: Vec::new(),
        }
    }

    fn cpu_now(pids: &[u32]) -> Vec<Option<f64>> {
        std::iter::once(sysinfo::cpu_seconds(None))
            .chain(pids.iter().map(|p| sysinfo::cpu_seconds(Some(*p))))
            .collect()
    }

    /// Records CPU use since the last call as one timeline point.
    fn sample_cpu(&mut self, second: f64) {
        let now = Self::cpu_now(&self.pids);
        let wall = self.last_at.elapsed().as_secs_f64().max(1e-3);
        let pct: Vec<Option<f64>> = now
            .iter()
            .zip(&self.last_cpu)
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => Some(((a - b) / wall * 100.0).max(0.0)),
                _ => None,
            })
            .collect();
        self.cpu.push(CpuPoint {
            second,
            harness_percent: pct.first().copied().flatten(),
            node_percent: pct.iter().skip(1).copied().collect(),
        });
        self.last_cpu = now;
        self.last_at = Instant::now();
    }

    fn sample(&mut self) {
        for (i, p) in self.pids.iter().enumerate() {
            let v = sysinfo::rss_kib(Some(*p));
            if v.is_some() {
                self.last[i] = v;
            }
            self.max[i] = self.max[i].max(v);
        }
        self.self_max = self.self_max.max(sysinfo::rss_kib(None));
    }
}

fn secs(x: f64) -> Duration {
    Duration::from_secs_f64(x.max(0.0))
}

/// Runs a scenario and returns its report.
pub async fn run(scenario: Scenario, args: &RunArgs, command: String) -> Result<Report, RunError> {
    if args.nodes.is_empty() {
        return Err(RunError::Args("--nodes is empty".into()));
    }
    args.check(scenario).map_err(RunError::Args)?;
    check_outputs(args)?;
    let fd_limit = sysinfo::raise_fd_limit();
    let mut notes = Vec::new();
    let mut chaos_driver = match scenario {
        Scenario::Chaos => chaos::Driver::new(args, &mut notes).map_err(RunError::Args)?,
        _ => None,
    };
    let progress = Progress::new(!args.quiet);
    let mut nodes = Vec::new();
    for n in &args.nodes {
        nodes.push(NodeAddr::resolve(n).await?);
    }
    let apis: Vec<Api> = nodes
        .iter()
        .map(|n| Api::new(&n.http))
        .collect::<Result<_, _>>()?;
    let warmup = if scenario.sends() { args.warmup } else { 0.0 };
    let shape = Shape {
        sessions: args.sessions(),
        users: args.users,
        rooms: args.rooms,
        members: args.members,
        senders: args.senders,
        rate: args.rate,
        reconnect_fraction: args.reconnect_fraction,
        run_length: secs(warmup + args.duration),
    };
    let plan = plan::build(scenario, &shape);
    let need_fds = plan.sessions.len() as u64 + 64;
    if need_fds > fd_limit.0 {
        notes.push(format!(
            "{} sessions need about {need_fds} open files; the harness may open {} (ulimit -n); connections beyond it fail",
            plan.sessions.len(),
            fd_limit.0
        ));
    }

    // Setup.
    let t_setup = Instant::now();
    let tag = setup::run_tag();
    let world = setup::build(&apis, &plan, &tag, args.setup_concurrency, &progress).await?;
    let setup_s = t_setup.elapsed().as_secs_f64();

    // Sessions.
    let metrics = Arc::new(Metrics::new());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let shared = Shared {
        metrics: metrics.clone(),
        nodes: Arc::new(nodes.clone()),
        room_ids: Arc::new(world.room_ids.clone()),
        connect_gate: Arc::new(Semaphore::new(args.connect_concurrency.max(1))),
        sources: SourceAddrs::for_total(
            plan.sessions.len(),
            args.spread_sources_above,
            args.per_source,
        ),
        connect_timeout: secs(args.connect_timeout),
        body_bytes: args.body_bytes,
        phase: phase_rx,
    };
    let mut sampler = Sampler::new(&args.pids);
    let connect_started = Instant::now();
    let client_cpu = CpuMeter::start(None);
    let node_cpu: Vec<CpuMeter> = args
        .pids
        .iter()
        .map(|p| CpuMeter::start(Some(*p)))
        .collect();
    let n_sessions = plan.sessions.len();
    let drops_before = sysinfo::listen_drops();
    let t_connect = Instant::now();
    let mut handles = Vec::with_capacity(n_sessions);
    for (i, sp) in plan.sessions.iter().enumerate() {
        let spec = SessionSpec {
            index: i,
            label: format!(
                "{}#{i}",
                world
                    .usernames
                    .get(sp.user)
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
            token: world
                .tokens
                .get(sp.user)
                .cloned()
                .unwrap_or_else(|| Arc::from("")),
            home: i % nodes.len(),
            rooms: sp.rooms.clone(),
            bases: sp
                .rooms
                .iter()
                .map(|r| world.room_heads.get(*r).copied().unwrap_or(0))
                .collect(),
            send_rooms: sp.send_rooms.clone(),
            rate: sp.rate,
            typing: sp.typing,
            read_receipts: sp.read_receipts,
            drop_after: sp.drop_after,
        };
        handles.push(tokio::spawn(client::run(spec, shared.clone())));
    }

    // Connect phase: until every session connected or gave up (bounded).
    let bar = progress.bar("connect", n_sessions as u64);
    let connect_deadline =
        Instant::now() + secs(args.connect_timeout * 6.0 + n_sessions as f64 / 200.0 + 10.0);
    loop {
        let done = metrics.initial_done.load(Ordering::Relaxed);
        bar.set_position(metrics.connected.load(Ordering::Relaxed));
        if done >= n_sessions as u64 || Instant::now() >= connect_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bar.finish_and_clear();
    let connect_s = t_connect.elapsed().as_secs_f64();
    let listen_drops = match (drops_before, sysinfo::listen_drops()) {
        (Some((_, a)), Some((_, b))) => Some(b.saturating_sub(a)),
        _ => None,
    };
    // Sessions that connected at all (some may have been closed since).
    let connected = metrics.initial_ok.load(Ordering::Relaxed);
    if connected < n_sessions as u64 {
        notes.push(format!(
            "{} of {n_sessions} sessions did not connect",
            n_sessions as u64 - connected
        ));
    }

    sampler.sample_cpu(-connect_started.elapsed().as_secs_f64());

    // Run phase.
    let run_len = warmup + args.duration;
    metrics.start_run(secs(warmup), secs(args.duration));
    let run_start = Instant::now();
    let run_start_us = metrics.run_start_us().unwrap_or(0);
    let send_until_us = run_start_us + secs(run_len).as_micros() as u64;
    let _ = phase_tx.send(Phase::Run { send_until_us });
    let clock = progress.clock(scenario.name(), run_len.ceil() as u64);
    if let Some(driver) = chaos_driver.as_mut() {
        driver.start();
        if driver.needs_interrupt_guard() {
            chaos::repair_on_interrupt();
        }
    }
    let mut last_delivered = 0u64;
    let mut last_tick = Instant::now();
    let mut idle_end_rss: Option<Vec<Option<u64>>> = None;
    while run_start.elapsed() < secs(run_len) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = run_start.elapsed().as_secs_f64();
        if let Some(driver) = chaos_driver.as_mut() {
            if let Some(pid) = driver.tick(metrics.now_us(), &mut notes) {
                // Sample the restarted node in place of the killed one.
                if let Some(i) = args.pids.iter().position(|p| *p == driver.target()) {
                    sampler.pids[i] = pid;
                }
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            sampler.sample();
            sampler.sample_cpu(t);
            let d = metrics.delivered.load(Ordering::Relaxed);
            let rate = (d - last_delivered) as f64 / last_tick.elapsed().as_secs_f64();
            last_delivered = d;
            last_tick = Instant::now();
            clock.set_position(t as u64);
            clock.set_message(format!(
                "{} connected, {:.0} deliveries/s, {} acked, {} pending",
                metrics.connected.load(Ordering::Relaxed),
                rate,
                metrics.acks.load(Ordering::Relaxed),
                metrics.pending.load(Ordering::Relaxed)
            ));
        }
    }
    if let Some(driver) = chaos_driver.as_mut() {
        driver.end_run(&mut notes);
    }
    sampler.sample();
    if scenario == Scenario::Idle {
        idle_end_rss = Some(sampler.last.clone());
    }
    let client_cpu_pct = client_cpu.percent();
    let node_cpu_pct: Vec<Option<f64>> = node_cpu.iter().map(|m| m.percent()).collect();
    let host_load = sysinfo::HostLoad::read();
    clock.finish_and_clear();

    // Drain: stop sending, wait for outstanding acks.
    let drain = secs(args.drain_timeout);
    if scenario.sends() {
        let _ = phase_tx.send(Phase::Drain);
        let until = Instant::now() + drain / 2;
        // First every session must have seen the end of sending (a session
        // descheduled just before its last send would otherwise send after
        // history was read), then every send must be acked.
        while (metrics.quiesced.load(Ordering::Relaxed) < n_sessions as u64
            || metrics.pending.load(Ordering::Relaxed) > 0)
            && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if metrics.quiesced.load(Ordering::Relaxed) < n_sessions as u64 {
            notes.push("not every session confirmed the end of sending in time".into());
        }
    }

    // Each node's own view (`/metrics`), saved next to the report.
    let mut node_metrics = Vec::new();
    if let Some(report_path) = &args.report {
        for (i, api) in apis.iter().enumerate() {
            let Ok(text) = api.metrics_text().await else {
                continue;
            };
            let stem = report_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "report".into());
            let path = report_path.with_file_name(format!("{stem}.node{i}.metrics.txt"));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::write(&path, text) {
                Ok(()) => node_metrics.push(path.display().to_string()),
                Err(e) => notes.push(format!("writing {}: {e}", path.display())),
            }
        }
    }

    // Read history (the truth) and let everyone catch up to it.
    let unanswered_at_read = metrics.pending.load(Ordering::Relaxed);
    let mut history = if plan.rooms.is_empty() {
        Vec::new()
    } else {
        setup::read_history(&apis, &plan, &world, args.setup_concurrency).await
    };
    let heads: Vec<u64> = history
        .iter()
        .map(|h| {
            h.as_ref()
                .and_then(|h| h.last())
                .map(|e| e.seq)
                .unwrap_or(0)
        })
        .collect();
    let deadline_us = metrics.now_us() + drain.as_micros() as u64;
    let heads = Arc::new(heads);
    let _ = phase_tx.send(Phase::Finish {
        heads: heads.clone(),
        deadline_us,
    });
    let mut results: Vec<SessionResult> = Vec::with_capacity(n_sessions);
    let mut failed_tasks = 0u64;
    let bar = progress.bar("finish", n_sessions as u64);
    let hard_stop = Instant::now() + drain + Duration::from_secs(10);
    for h in handles {
        let left = hard_stop.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, h).await {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => {
                failed_tasks += 1;
                notes.push(format!("a session task failed: {e}"));
            }
            Err(_) => {
                failed_tasks += 1;
                let _ = phase_tx.send(Phase::Stop);
                notes.push("a session did not finish in time".into());
            }
        }
        bar.inc(1);
    }
    let _ = phase_tx.send(Phase::Stop);
    bar.finish_and_clear();
    // Sends still unanswered when history was read may have been committed
    // since: read it again, so that their acks and deliveries are checked
    // against what holds them, and hold the sessions to the heads they
    // were told to catch up to.
    let mut targets = Vec::new();
    if unanswered_at_read > 0 && !plan.rooms.is_empty() {
        let later = setup::read_history(&apis, &plan, &world, args.setup_concurrency).await;
        let mut reread = 0;
        for (room, (first, again)) in history.iter_mut().zip(later).enumerate() {
            // A room whose first read failed stays unread: its sessions
            // were given no head to catch up to there.
            if first.is_some() && again.is_some() {
                *first = again;
                reread += 1;
            }
            targets.push(heads.get(room).copied().unwrap_or(0));
        }
        notes.push(format!(
            "{unanswered_at_read} send(s) were unanswered when history was read; \
             read again after the finish ({reread} of {} rooms), sessions held to the first read's heads",
            history.len()
        ));
    }

    // Check.
    let mut input = CheckInput {
        rooms: world.room_ids.iter().map(|r| r.to_string()).collect(),
        acks: Vec::new(),
        history,
        targets,
        sessions: Vec::with_capacity(results.len()),
    };
    let mut ack_times = Vec::new();
    let mut unacked = 0u64;
    let mut never_connected = 0u64;
    for r in results {
        input.acks.extend(r.acks);
        ack_times.extend(r.ack_times);
        unacked += r.unacked as u64;
        if !r.connected {
            never_connected += 1;
        }
        input.sessions.push(SessionStreams {
            label: r.label,
            complete: r.complete,
            rooms: r.streams,
        });
    }
    let outcome = checker::check(&input);
    // Counted against the run by `Report::shortfalls`.
    let rooms_without_history = input.history.iter().filter(|h| h.is_none()).count();

    // Measurements.
    let snap = metrics.snapshot();
    let w0 = warmup.floor() as usize;
    let w1 = (warmup + args.duration).ceil() as usize;
    let window: Vec<_> = snap
        .timeline
        .iter()
        .filter(|p| (p.second as usize) >= w0 && (p.second as usize) < w1)
        .collect();
    // Counted by arrival time inside the window itself: the timeline's
    // whole seconds overlap a window that starts or ends mid-second.
    let window_deliveries = metrics.window_delivered.load(Ordering::Relaxed);
    let peak = window.iter().map(|p| p.deliveries).max().unwrap_or(0);
    let sending_sessions = plan.sessions.iter().filter(|s| s.rate > 0.0).count();
    let expected: f64 = plan
        .sessions
        .iter()
        .filter(|s| s.rate > 0.0 && !s.send_rooms.is_empty())
        .map(|s| {
            let avg_members: f64 = s
                .send_rooms
                .iter()
                .map(|r| plan.rooms.get(*r).map(|x| x.members.len()).unwrap_or(0) as f64)
                .sum::<f64>()
                / s.send_rooms.len() as f64;
            s.rate * avg_members
        })
        .sum::<f64>()
        + 0.0; // an empty sum is -0.0
    if let Some(cpu) = client_cpu_pct {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        if cpu > 70.0 * cores {
            notes.push(format!(
                "the harness used {cpu:.0}% CPU ({} cores): it may be the bottleneck",
                cores
            ));
        }
    }
    let node_procs: Vec<ProcStats> = args
        .pids
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // Read now: a node that is gone (killed, not restarted) has none.
            let end = sysinfo::rss_kib(Some(sampler.pids[i]));
            ProcStats {
                pid: Some(*p),
                cpu_percent: node_cpu_pct.get(i).copied().flatten(),
                rss_start_kib: sampler.start[i],
                // Sampling stops before the drain; the end counts too.
                rss_max_kib: sampler.max[i].max(end),
                rss_end_kib: end,
                restarted_as: (sampler.pids[i] != *p).then_some(sampler.pids[i]),
            }
        })
        .collect();
    let idle = idle_end_rss.map(|end| {
        let total: u64 = end.iter().flatten().sum();
        let start: u64 = sampler.start.iter().flatten().sum();
        let growth = total.saturating_sub(start);
        IdleStats {
            sessions: connected,
            rss_growth_kib: growth,
            rss_total_kib: total,
            kib_per_session: if connected > 0 {
                growth as f64 / connected as f64
            } else {
                0.0
            },
        }
    });
    // A chaos run without a process to signal still reports (and is judged by) its stats.
    let chaos_stats = (scenario == Scenario::Chaos).then(|| {
        chaos_driver
            .map(|d| d.finish(&ack_times))
            .unwrap_or_default()
    });

    let plots = match &args.plot {
        Some(prefix) => write_plots(prefix, scenario, &snap, &mut notes),
        None => Vec::new(),
    };

    let errors = metrics.errors();
    notes.extend(limits_note(&errors));
    let group_rooms = plan
        .rooms
        .iter()
        .filter(|r| r.kind == plan::RoomKind::Group)
        .count();
    let list = outcome.violations.iter().take(200).cloned().collect();
    let self_end = sysinfo::rss_kib(None);
    let report = Report {
        scenario,
        command,
        nodes: args.nodes.clone(),
        params: Params {
            sessions: n_sessions,
            users: plan.users,
            rooms: group_rooms,
            direct_rooms: plan.rooms.len() - group_rooms,
            members: if group_rooms > 0 { args.members } else { 0 },
            senders: match scenario {
                Scenario::Connect | Scenario::Idle => 0,
                Scenario::Dm => 2,
                Scenario::Fanout | Scenario::Mixed | Scenario::Chaos => args.senders,
            },
            rate: args.rate,
            sending_sessions,
            duration_s: args.duration,
            warmup_s: warmup,
            body_bytes: args.body_bytes,
        },
        setup_s,
        connect: ConnectStats {
            connected: n_sessions as u64 - never_connected,
            failed: never_connected,
            seconds: connect_s,
            rate_per_s: if connect_s > 0.0 {
                connected as f64 / connect_s
            } else {
                0.0
            },
            latency: Percentiles::of(&snap.connect),
            failed_attempts: Percentiles::of(&snap.connect_failed),
            listen_drops,
        },
        messages: MessageStats {
            sent: metrics.sends.load(Ordering::Relaxed),
            resends: metrics.resends.load(Ordering::Relaxed),
            acked: metrics.acks.load(Ordering::Relaxed),
            failed: metrics.send_failures.load(Ordering::Relaxed),
            unacked_at_end: unacked,
            deliveries: metrics.delivered.load(Ordering::Relaxed),
            deliveries_per_s: if args.duration > 0.0 {
                window_deliveries as f64 / args.duration
            } else {
                0.0
            },
            peak_deliveries_per_s: peak,
            expected_deliveries_per_s: expected,
            e2e: Percentiles::of(&snap.e2e),
            catch_up: Percentiles::of(&snap.catch_up),
            ack: Percentiles::of(&snap.ack),
        },
        errors,
        other_events: metrics.other_events(),
        reconnects: metrics.reconnects.load(Ordering::Relaxed),
        client: ProcStats {
            pid: None,
            cpu_percent: client_cpu_pct,
            rss_start_kib: None,
            rss_max_kib: sampler.self_max.max(self_end),
            rss_end_kib: self_end,
            restarted_as: None,
        },
        node_procs,
        idle,
        chaos: chaos_stats,
        checker: CheckerStats {
            violations: outcome.violations.len(),
            by_kind: outcome.counts(),
            complete_sessions: outcome.complete_sessions,
            incomplete_sessions: outcome.incomplete_sessions,
            acked_messages: outcome.acked_messages,
            deliveries_checked: outcome.deliveries_checked,
            rooms_without_history,
            unchecked_sessions: failed_tasks,
            list,
        },
        timeline: snap.timeline,
        cpu_timeline: sampler.cpu,
        plots,
        node_metrics,
        fd_limit,
        host_load,
        notes,
    };
    Ok(report)
}

/// The plot files of a run under `prefix`: for runs that send, latency over
/// time and the CDF of send-to-receipt and send-to-ack latency; for
/// `connect` and `idle`, the CDF of connect latency. Returns the files
/// written; a plot that fails is noted.
fn write_plots(
    prefix: &std::path::Path,
    scenario: Scenario,
    snap: &crate::metrics::Snapshot,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut written = Vec::new();
    let mut keep = |path: std::path::PathBuf, result: Result<(), plot::PlotError>| match result {
        Ok(()) => written.push(path.display().to_string()),
        Err(e) => notes.push(e.to_string()),
    };
    let cdf = outfile::beside(prefix, "cdf.svg");
    if scenario.sends() {
        let lat = outfile::beside(prefix, "latency.svg");
        let title = format!("{}: send to receipt latency per second", scenario.name());
        let result = plot::latency_over_time(&lat, &title, &snap.timeline);
        keep(lat, result);
        let curves = [
            ("send to receipt", cdf_points(&snap.e2e)),
            ("send to ack", cdf_points(&snap.ack)),
        ];
        let title = format!("{}: latency CDF", scenario.name());
        let result = plot::cdf(&cdf, &title, &curves);
        keep(cdf, result);
    } else {
        let curves = [("connect", cdf_points(&snap.connect))];
        let title = format!("{}: connect latency CDF", scenario.name());
        let result = plot::cdf(&cdf, &title, &curves);
        keep(cdf, result);
    }
    written
}

/// Errors that mean the node's own limits refused the harness (frames
/// over `--ws-rate`, a flood close, an upgrade over
/// `--max-sessions-per-user`): a note naming the options that lift them,
/// so the numbers are not mistaken for the node's capacity.
fn limits_note(errors: &std::collections::BTreeMap<String, u64>) -> Option<String> {
    let hits: Vec<String> = ["rate_limited", "close_1008", "connect_http_429"]
        .iter()
        .filter_map(|k| errors.get(*k).map(|n| format!("{k} x{n}")))
        .collect();
    (!hits.is_empty()).then(|| {
        format!(
            "the node's limits refused the harness ({}); run the nodes for load tests with {}",
            hits.join(", "),
            crate::cli::NODE_FLAGS
        )
    })
}

/// The files a run will write (the report and the first plot), checked
/// before it starts.
fn check_outputs(args: &RunArgs) -> Result<(), RunError> {
    let plot = args.plot.as_ref().map(|p| outfile::beside(p, "cdf.svg"));
    for path in args.report.iter().chain(plot.as_ref()) {
        outfile::check_writable(path).map_err(|source| RunError::Output {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Writes the report as pretty JSON.
pub fn write_report(path: &std::path::Path, report: &Report) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_limits_are_named_only_when_they_refused() {
        let mut errors = std::collections::BTreeMap::new();
        errors.insert("connection_closed".to_string(), 3);
        assert_eq!(limits_note(&errors), None);
        errors.insert("connect_http_429".to_string(), 7);
        errors.insert("close_1008".to_string(), 1);
        let note = limits_note(&errors).unwrap_or_default();
        assert!(
            note.contains("(close_1008 x1, connect_http_429 x7)"),
            "{note}"
        );
        assert!(note.contains("--max-sessions-per-user 0"), "{note}");
    }
}
