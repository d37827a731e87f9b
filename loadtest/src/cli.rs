//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::Scenario;

/// Load tests for Parley nodes: scenarios, a correctness checker, reports and benchmarks.
///
/// The nodes under test must run with cheap password hashing and rate limits
/// off, e.g. `parley-node --argon2-memory-kib 64 --argon2-iterations 1
/// --login-rate-per-ip 0 --login-rate-per-user 0 --register-rate-per-ip 0 --ws-rate 0
/// --max-sessions-per-user 0 --api-rate-per-user 0`.
#[derive(Debug, Parser)]
#[command(name = "parley-loadtest", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Scenarios and the benchmark set.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connection storm: rate and time to connect N sessions.
    Connect(RunArgs),
    /// Hold N sessions for the duration; node memory per session (give --pids).
    Idle(RunArgs),
    /// R rooms x M members, S senders per room at r msgs/s for D seconds.
    Fanout(RunArgs),
    /// Many one-to-one pairs (sessions/2 direct rooms), both sides sending at r msgs/s.
    Dm(RunArgs),
    /// Group and direct rooms with typing, read receipts and reconnects.
    Mixed(RunArgs),
    /// Fanout while a node is killed (-9) at --kill-at and optionally
    /// restarted, or paused (--pause-for) and resumed.
    Chaos(RunArgs),
    /// Start release nodes, run the standard benchmark set, write docs/benchmarks.md.
    Bench(BenchArgs),
}

impl Command {
    /// The scenario and its arguments (`None` for `bench`).
    pub fn scenario(&self) -> Option<(Scenario, &RunArgs)> {
        match self {
            Command::Connect(a) => Some((Scenario::Connect, a)),
            Command::Idle(a) => Some((Scenario::Idle, a)),
            Command::Fanout(a) => Some((Scenario::Fanout, a)),
            Command::Dm(a) => Some((Scenario::Dm, a)),
            Command::Mixed(a) => Some((Scenario::Mixed, a)),
            Command::Chaos(a) => Some((Scenario::Chaos, a)),
            Command::Bench(_) => None,
        }
    }
}

/// The node options a load test needs (cheap password hashing, rate and
/// session limits off), as the help text gives them; named again whenever
/// a node's limits refused the harness.
pub const NODE_FLAGS: &str = "--argon2-memory-kib 64 --argon2-iterations 1 \
--login-rate-per-ip 0 --login-rate-per-user 0 --register-rate-per-ip 0 --ws-rate 0 \
--max-sessions-per-user 0 --api-rate-per-user 0";

/// The longest time any option may name, seconds (about 11.6 days): more
/// is a typo, and would overflow the timers.
pub const MAX_SECS: f64 = 1e6;
/// The most sessions (or room members in all) one run may ask for.
pub const MAX_SESSIONS: usize = 1_000_000;

/// Sessions of a `connect`, `idle` or `dm` run unless `--sessions` says.
const DEFAULT_SESSIONS: usize = 1000;

/// Slowest sending rate, messages per second per sender (one per 1,000 s).
const MIN_RATE: f64 = 0.001;

/// Fastest sending rate, messages per second per sender: beyond it the
/// send period is below the harness's timer resolution.
const MAX_RATE: f64 = 10_000.0;

/// Largest message body: its `send` frame stays within the contract's
/// 64 KiB frame limit.
const MAX_BODY_BYTES: usize = 64 * 1024 - 1024;

impl RunArgs {
    /// Sessions of a `connect`, `idle` or `dm` run.
    pub fn sessions(&self) -> usize {
        self.sessions.unwrap_or(DEFAULT_SESSIONS)
    }

    /// Checks the options before anything starts, so that a run never
    /// does less than it was asked without saying so: every time a finite
    /// number of seconds from 0 to [`MAX_SECS`], rates finite and not
    /// negative, fractions within 0..=1, session counts within
    /// [`MAX_SESSIONS`], a shape the scenario can build as given (nothing
    /// silently raised or cut), and chaos options only for `chaos`.
    pub fn check(&self, scenario: Scenario) -> Result<(), String> {
        let times = [
            ("--duration", self.duration),
            ("--warmup", self.warmup),
            ("--connect-timeout", self.connect_timeout),
            ("--drain-timeout", self.drain_timeout),
            ("--kill-at", self.kill_at),
            ("--restart-after", self.restart_after),
            ("--pause-for", self.pause_for),
        ];
        for (flag, secs) in times {
            if !(secs.is_finite() && (0.0..=MAX_SECS).contains(&secs)) {
                return Err(format!(
                    "{flag} must be a number of seconds from 0 to {MAX_SECS} (got {secs})"
                ));
            }
        }
        if self.connect_timeout == 0.0 {
            return Err("--connect-timeout must be above 0 s".into());
        }
        if !(self.rate.is_finite()
            && (self.rate == 0.0 || (MIN_RATE..=MAX_RATE).contains(&self.rate)))
        {
            return Err(format!(
                "--rate must be 0 or from {MIN_RATE} to {MAX_RATE} messages per second per sender (got {})",
                self.rate
            ));
        }
        if self.body_bytes > MAX_BODY_BYTES {
            return Err(format!(
                "--body-bytes must be at most {MAX_BODY_BYTES}: a larger send frame passes the node's 64 KiB frame limit, which closes the connection (1009)"
            ));
        }
        if !(0.0..=1.0).contains(&self.reconnect_fraction) {
            return Err(format!(
                "--reconnect-fraction must be from 0 to 1 (got {})",
                self.reconnect_fraction
            ));
        }
        if let Some(pid) = self
            .pids
            .iter()
            .find(|p| **p == 0 || !std::path::Path::new(&format!("/proc/{p}")).exists())
        {
            return Err(format!("--pids: no process {pid} to sample"));
        }
        let members = self.rooms.saturating_mul(self.members);
        if self.sessions() > MAX_SESSIONS || members > MAX_SESSIONS {
            return Err(format!(
                "at most {MAX_SESSIONS} sessions (--sessions, or --rooms x --members) in one run"
            ));
        }
        self.check_shape(scenario)?;
        self.check_chaos(scenario)
    }

    /// The scenario's layout options name a run it can build as given.
    fn check_shape(&self, scenario: Scenario) -> Result<(), String> {
        let name = scenario.name();
        match scenario {
            Scenario::Connect | Scenario::Idle => {
                if self.sessions() == 0 {
                    return Err(format!("{name} needs --sessions of at least 1"));
                }
                match self.users {
                    Some(0) => return Err("--users must be at least 1".into()),
                    Some(u) if u > self.sessions() => {
                        return Err(format!(
                        "--users ({u}) cannot exceed --sessions ({}): each user needs a session",
                        self.sessions()
                    ))
                    }
                    _ => {}
                }
            }
            Scenario::Dm => {
                if self.sessions() < 2 || self.sessions() % 2 == 1 {
                    return Err(format!(
                        "dm pairs sessions two by two: --sessions must be even and at least 2 (got {})",
                        self.sessions()
                    ));
                }
                if self.users.is_some() {
                    return Err(
                        "--users is for connect and idle: dm has one user per session".into(),
                    );
                }
            }
            Scenario::Fanout | Scenario::Mixed | Scenario::Chaos => {
                if self.sessions.is_some() || self.users.is_some() {
                    return Err(format!(
                        "{name} has one session per member of each room: --rooms x --members sets them, not --sessions or --users"
                    ));
                }
                if self.rooms == 0 || self.members == 0 {
                    return Err(format!("{name} needs --rooms and --members of at least 1"));
                }
                if self.senders == 0 {
                    return Err(format!(
                        "{name} needs --senders of at least 1 (idle holds sessions without sending)"
                    ));
                }
                if self.senders > self.members {
                    return Err(format!(
                        "--senders ({}) cannot exceed --members ({}): senders are members",
                        self.senders, self.members
                    ));
                }
            }
        }
        if scenario.sends() && self.rate == 0.0 {
            return Err(format!(
                "{name} needs --rate above 0: at 0 nothing is sent and nothing checked"
            ));
        }
        if scenario.sends() && self.duration == 0.0 {
            return Err(format!(
                "{name} needs --duration above 0: nothing is measured in a window of 0 s"
            ));
        }
        Ok(())
    }

    /// Chaos options only for `chaos`, and a pause is resumed, never restarted.
    fn check_chaos(&self, scenario: Scenario) -> Result<(), String> {
        if scenario != Scenario::Chaos {
            let given = [
                ("--kill-pid", self.kill_pid.is_some()),
                ("--restart-cmd", self.restart_cmd.is_some()),
                ("--pause-for", self.pause_for > 0.0),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
                return Err(format!("{flag} is for the chaos scenario only"));
            }
        }
        let run = self.warmup + self.duration;
        if scenario == Scenario::Chaos && self.kill_at >= run {
            return Err(format!(
                "--kill-at ({} s) must fall within the run (--warmup + --duration = {run} s)",
                self.kill_at
            ));
        }
        if self.restart_cmd.is_some() && self.kill_at + self.restart_after >= run {
            return Err(format!(
                "--kill-at + --restart-after ({} s) must fall within the run (--warmup + --duration = {run} s): the node would stay dead",
                self.kill_at + self.restart_after
            ));
        }
        if self.pause_for > 0.0 && self.kill_at + self.pause_for >= run {
            return Err(format!(
                "--kill-at + --pause-for ({} s) must fall within the run (--warmup + --duration = {run} s): the pause would be cut short",
                self.kill_at + self.pause_for
            ));
        }
        if self.pause_for > 0.0 && self.restart_cmd.is_some() {
            return Err(
                "--pause-for and --restart-cmd exclude each other: a paused node is resumed, not restarted"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Options of every scenario.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Node base URLs, comma-separated (sessions are spread over them).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Sessions (connect, idle, dm; fanout/mixed/chaos use rooms x members) [default: 1000]
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Users for connect/idle (sessions share them); default one per session.
    #[arg(long)]
    pub users: Option<usize>,
    /// Rooms (fanout, mixed, chaos).
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Members per room.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Senders per room.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Messages per second per sender.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Measured duration, seconds (idle: how long to hold).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up before measuring, seconds (sent, checked, not timed).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Message body size in bytes (at least the timestamp header).
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
    /// Node process ids, comma-separated, for RSS and CPU sampling.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write SVG plots as PREFIX-latency.svg and PREFIX-cdf.svg (connect
    /// and idle: PREFIX-cdf.svg of connect latency).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Concurrent connection attempts.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Concurrent HTTP calls during setup.
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
    /// Timeout of one connection attempt, seconds.
    #[arg(long, default_value_t = 15.0)]
    pub connect_timeout: f64,
    /// How long to wait at the end for acks and catch-up, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Bind sockets to 127.0.0.2, 127.0.0.3, ... when more sessions than this.
    #[arg(long, default_value_t = 20_000)]
    pub spread_sources_above: usize,
    /// Sessions per source address when spreading.
    #[arg(long, default_value_t = 20_000)]
    pub per_source: usize,
    /// Chaos: process to kill with SIGKILL (default: the first of --pids).
    #[arg(long)]
    pub kill_pid: Option<u32>,
    /// Chaos: seconds after the run starts to kill it.
    #[arg(long, default_value_t = 5.0)]
    pub kill_at: f64,
    /// Chaos: shell command that restarts the killed node (run with `sh -c`).
    #[arg(long)]
    pub restart_cmd: Option<String>,
    /// Chaos: seconds after the kill to run the restart command.
    #[arg(long, default_value_t = 1.0)]
    pub restart_after: f64,
    /// Chaos: pause the node (SIGSTOP) at --kill-at instead of killing it,
    /// and resume it (SIGCONT) this many seconds later; 0 kills.
    #[arg(long, default_value_t = 0.0)]
    pub pause_for: f64,
    /// Mixed: share of sessions that drop once and reconnect with sync.
    #[arg(long, default_value_t = 0.1)]
    pub reconnect_fraction: f64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The parley-node binary (default: next to this binary).
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    /// What the node binary is, for the report (e.g. "release build of commit abc123").
    #[arg(long)]
    pub node_label: Option<String>,
    /// Markdown file to write.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
    /// Directory for plots and JSON reports (linked from the markdown).
    #[arg(long, default_value = "docs/bench")]
    pub assets: PathBuf,
    /// Where the nodes keep their data (default: the system's temp
    /// directory). A tmpfs such as /dev/shm takes the disk out of the
    /// numbers (its syncs cost nothing, so nothing is durable): a diagnosis,
    /// not a benchmark of a real deployment.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Seconds to measure the data disk's sync latency before each
    /// benchmark (0: do not).
    #[arg(long, default_value_t = 3.0)]
    pub sync_probe: f64,
    /// Runs of each benchmark (fresh nodes each time). With more than one,
    /// the run with the median p99 (or pause, or memory; of two middle runs,
    /// the higher) is shown and the
    /// spread over all runs is added to its result: on a shared machine
    /// runs of the same code differ several-fold.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Only these benchmarks (comma-separated names; default all). A name
    /// the set lacks is refused before any node starts, and the set named.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Measured seconds of each message benchmark.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Warm-up seconds of each message benchmark (sent and checked, not timed).
    /// Connecting the members of a big room makes the node send every member
    /// every other member's presence (a million events for 1,000 members),
    /// which takes several seconds; the warm-up keeps it out of the numbers.
    #[arg(long, default_value_t = 10.0)]
    pub warmup: f64,
    /// Big-room fanout: members.
    #[arg(long, default_value_t = 1000)]
    pub big_members: usize,
    /// Big-room fanout: senders (the rate is split between them).
    #[arg(long, default_value_t = 10)]
    pub big_senders: usize,
    /// Big-room fanout: messages per second into the room, all senders together.
    #[arg(long, default_value_t = 100.0)]
    pub big_rate: f64,
    /// Extra big-room runs at these total rates (msgs/s), to show latency against load.
    #[arg(long, value_delimiter = ',', default_values_t = [10.0, 50.0])]
    pub sweep: Vec<f64>,
    /// Measured seconds of each sweep run.
    #[arg(long, default_value_t = 10.0)]
    pub sweep_duration: f64,
    /// Markdown file whose text is included under "Observations".
    #[arg(long)]
    pub notes: Option<PathBuf>,
    /// Small-rooms fanout: rooms.
    #[arg(long, default_value_t = 100)]
    pub small_rooms: usize,
    /// Small-rooms fanout: members per room.
    #[arg(long, default_value_t = 10)]
    pub small_members: usize,
    /// Small-rooms fanout: senders per room.
    #[arg(long, default_value_t = 2)]
    pub small_senders: usize,
    /// Small-rooms fanout: messages per second per sender.
    #[arg(long, default_value_t = 10.0)]
    pub small_rate: f64,
    /// Idle: sessions (capped by the open-file limit, which is reported).
    #[arg(long, default_value_t = 100_000)]
    pub idle_sessions: usize,
    /// Idle: seconds to hold the sessions.
    #[arg(long, default_value_t = 20.0)]
    pub idle_hold: f64,
    /// Connect storm: sessions.
    #[arg(long, default_value_t = 10_000)]
    pub connect_sessions: usize,
    /// DM: sessions (pairs are half).
    #[arg(long, default_value_t = 2000)]
    pub dm_sessions: usize,
    /// DM: messages per second per session.
    #[arg(long, default_value_t = 1.0)]
    pub dm_rate: f64,
    /// Nodes of the local cluster for the cluster benchmarks (0 or 1: skip them).
    #[arg(long, default_value_t = 3)]
    pub cluster_nodes: usize,
    /// Chaos: seconds into the run to kill the node.
    #[arg(long, default_value_t = 10.0)]
    pub chaos_kill_at: f64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}
