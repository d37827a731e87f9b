//! Chaos actions: kill a node with SIGKILL and restart it with a command,
//! or pause it with SIGSTOP and resume it with SIGCONT.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cli::RunArgs;
use crate::report::ChaosStats;

use crate::sysinfo;

/// Why a chaos action failed.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// `kill` could not run or refused.
    #[error("kill -{signal} {pid}: {detail}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// Target.
        pid: u32,
        /// What went wrong.
        detail: String,
    },
    /// The restart command could not be started.
    #[error("restart command: {0}")]
    Restart(std::io::Error),
}

/// Sends the signal named `signal` (`KILL`, `STOP`, `CONT`) to `pid`
/// through the `kill` command.
pub fn signal(pid: u32, signal: &'static str) -> Result<(), ChaosError> {
    let failed = |detail: String| ChaosError::Signal {
        signal,
        pid,
        detail,
    };
    let out = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Checks the process a chaos run is to signal, before the run: it must
/// exist, and be neither the harness nor one of its ancestors (the shell
/// that started it, pid 1), nor 0 (`kill -9 0` ends the caller's whole
/// process group). Returns a remark when its command name is not
/// `parley-node`, which a wrapper may well have, so it is not refused.
pub fn check_target(pid: u32) -> Result<Option<String>, String> {
    if pid == 0 {
        return Err("--kill-pid 0 names the harness's own process group".into());
    }
    let Some(name) = sysinfo::command_name(pid) else {
        return Err(format!("no process {pid} to kill or pause"));
    };
    let mut p = std::process::id();
    for _ in 0..64 {
        if p == pid {
            return Err(format!(
                "process {pid} ({name}) is the harness or one of its parents, not a node"
            ));
        }
        match sysinfo::parent_pid(p) {
            Some(parent) if parent != 0 && parent != p => p = parent,
            _ => break,
        }
    }
    Ok((!name.starts_with("parley-node"))
        .then(|| format!("process {pid} to kill or pause is `{name}`, not parley-node")))
}

/// What an interrupted chaos run must undo before it exits: a node it
/// paused and has not continued, or a node it killed and has not yet
/// restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Continue this process (SIGCONT).
    Continue(u32),
    /// Run this restart command; the pid is the killed node's.
    Restart(u32, String),
}

/// The repair an interrupt must make now, for [`repair_on_interrupt`].
static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

/// Records what an interrupt must undo from now on (`None`: nothing).
pub fn set_pending(pending: Option<Pending>) {
    *PENDING.lock().unwrap_or_else(|p| p.into_inner()) = pending;
}

/// Installs, for the rest of the run, a handler of SIGINT and SIGTERM that
/// makes the pending repair (continues a paused node, or runs the restart
/// command of a killed one) and then ends the harness with status 130, so
/// an interrupted run never leaves a node stopped or dead that it would
/// have brought back. (A signal handler cannot be taken back in tokio, so
/// this is installed once, only by chaos runs that pause or restart.)
pub fn repair_on_interrupt() {
    tokio::spawn(async {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        let pending = PENDING.lock().unwrap_or_else(|p| p.into_inner()).take();
        match pending {
            Some(Pending::Continue(pid)) => match signal(pid, "CONT") {
                Ok(()) => eprintln!("interrupted: node {pid} continued (SIGCONT)"),
                Err(e) => eprintln!("interrupted: {e}; continue it with kill -CONT {pid}"),
            },
            Some(Pending::Restart(pid, cmd)) => match restart(&cmd) {
                Ok(child) => eprintln!(
                    "interrupted: node {pid} was killed; its restart command runs as pid {}",
                    child.id()
                ),
                Err(e) => eprintln!("interrupted: node {pid} was killed and is not restarted: {e}"),
            },
            None => {}
        }
        std::process::exit(130);
    });
}

/// Runs `cmd` with `sh -c` in the background (output discarded) and returns
/// the child; `exec` in the command keeps the node's pid equal to the child's.
pub fn restart(cmd: &str) -> Result<Child, ChaosError> {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(ChaosError::Restart)
}

/// Carries out a chaos run's failure: at `--kill-at` it kills the node
/// (or pauses it with `--pause-for`), later restarts (or continues) it,
/// keeps the interrupt guard's pending repair up to date, and records
/// what happened for the report.
pub struct Driver {
    /// The process to kill or pause.
    target: u32,
    kill_at: f64,
    pause: Option<Duration>,
    restart_cmd: Option<String>,
    restart_after: Duration,
    run_start: Instant,
    /// When the signal was sent (or failed): the failure happened once.
    hit_at: Option<Instant>,
    /// The harness clock (µs) at the failure, for the ack pauses.
    hit_us: Option<u64>,
    restarted: Option<Child>,
    resumed: bool,
    stats: ChaosStats,
}

impl Driver {
    /// A driver for a chaos run with these options, or `None` when there
    /// is no process to signal (`--kill-pid`, else the first `--pids`),
    /// which the report counts against the run. Refuses a target that is
    /// no process or is the harness's own (see [`check_target`]); a
    /// remark about it goes to `notes`.
    pub fn new(args: &RunArgs, notes: &mut Vec<String>) -> Result<Option<Driver>, String> {
        let Some(target) = args.kill_pid.or_else(|| args.pids.first().copied()) else {
            notes.push("chaos without --kill-pid or --pids: nothing was killed".into());
            return Ok(None);
        };
        notes.extend(check_target(target)?);
        Ok(Some(Driver {
            target,
            kill_at: args.kill_at,
            pause: (args.pause_for > 0.0).then(|| Duration::from_secs_f64(args.pause_for)),
            restart_cmd: args.restart_cmd.clone(),
            restart_after: Duration::from_secs_f64(args.restart_after),
            run_start: Instant::now(),
            hit_at: None,
            hit_us: None,
            restarted: None,
            resumed: false,
            stats: ChaosStats::default(),
        }))
    }

    /// The process this run kills or pauses.
    pub fn target(&self) -> u32 {
        self.target
    }

    /// Whether an interrupt may have something to undo (a pause or a restart).
    pub fn needs_interrupt_guard(&self) -> bool {
        self.pause.is_some() || self.restart_cmd.is_some()
    }

    /// Marks the start of the run phase (`--kill-at` counts from here).
    pub fn start(&mut self) {
        self.run_start = Instant::now();
    }

    /// Does what is due now; `now_us` is the harness clock. Returns the
    /// process id of a restarted node when the restart command ran now.
    pub fn tick(&mut self, now_us: u64, notes: &mut Vec<String>) -> Option<u32> {
        let t = self.run_start.elapsed().as_secs_f64();
        if self.hit_at.is_none() && t >= self.kill_at {
            self.hit(t, now_us, notes);
        }
        let since = self.hit_at.map(|h| h.elapsed())?;
        if let Some(pause) = self.pause {
            // A paused node is continued, never restarted.
            if since >= pause && !self.resumed {
                self.resume(notes);
            }
            return None;
        }
        let cmd = self.restart_cmd.as_deref()?;
        // Run once: afterwards there is a child or a recorded error.
        let tried = self.restarted.is_some() || self.stats.restart_error.is_some();
        if tried || since < self.restart_after || self.stats.killed_pid.is_none() {
            return None;
        }
        let started = restart(cmd);
        set_pending(None);
        match started {
            Ok(child) => {
                let pid = child.id();
                self.stats.restart_pid = Some(pid);
                self.stats.restarted_at_s = Some(self.run_start.elapsed().as_secs_f64());
                self.restarted = Some(child);
                Some(pid)
            }
            Err(e) => {
                self.stats.restart_error = Some(e.to_string());
                None
            }
        }
    }

    /// Sends the kill (or the pause) now.
    fn hit(&mut self, t: f64, now_us: u64, notes: &mut Vec<String>) {
        let pid = self.target;
        let sig = if self.pause.is_some() { "STOP" } else { "KILL" };
        if self.pause.is_some() {
            // Before the signal, so an interrupt in between still continues it.
            set_pending(Some(Pending::Continue(pid)));
        }
        self.hit_at = Some(Instant::now());
        match signal(pid, sig) {
            Ok(()) => {
                self.hit_us = Some(now_us);
                if self.pause.is_some() {
                    self.stats.paused_pid = Some(pid);
                    self.stats.paused_at_s = Some(t);
                } else {
                    self.stats.killed_pid = Some(pid);
                    self.stats.killed_at_s = Some(t);
                    if let Some(cmd) = &self.restart_cmd {
                        set_pending(Some(Pending::Restart(pid, cmd.clone())));
                    }
                }
            }
            Err(e) => {
                set_pending(None);
                notes.push(e.to_string());
            }
        }
    }

    /// Continues the paused node, if it paused one.
    fn resume(&mut self, notes: &mut Vec<String>) {
        self.resumed = true;
        let Some(pid) = self.stats.paused_pid else {
            return;
        };
        match signal(pid, "CONT") {
            Ok(()) => self.stats.resumed_at_s = Some(self.run_start.elapsed().as_secs_f64()),
            Err(e) => notes.push(e.to_string()),
        }
        // After the signal, so an interrupt in between still continues it.
        set_pending(None);
    }

    /// At the end of the run phase: a pause longer than the run ends with
    /// it, so no node is left stopped.
    pub fn end_run(&mut self, notes: &mut Vec<String>) {
        if self.pause.is_some() && !self.resumed {
            self.resume(notes);
        }
    }

    /// The record of the run, with how the restart command ended (if it
    /// has) and the acks' pauses around the failure; `acks` are (room,
    /// harness-clock µs).
    pub fn finish(mut self, acks: &[(usize, u64)]) -> ChaosStats {
        if let Some(child) = self.restarted.as_mut() {
            match child.try_wait() {
                Ok(Some(status)) if !status.success() => {
                    self.stats.restart_error =
                        Some(format!("the restart command ended with {status}"));
                }
                Ok(_) => {}
                Err(e) => self.stats.restart_error = Some(format!("restart command: {e}")),
            }
        }
        if let Some(k) = self.hit_us {
            let (longest, first) = ack_pauses(acks, k);
            self.stats.longest_room_ack_pause_ms = longest;
            self.stats.first_ack_after_kill_ms = first;
        }
        self.stats
    }
}

/// Longest pause between consecutive acks of one room that spans `at_us`,
/// over all rooms, in ms; and the first ack after `at_us`, in ms after it.
/// `acks` are (room, harness-clock µs).
pub fn ack_pauses(acks: &[(usize, u64)], at_us: u64) -> (Option<f64>, Option<f64>) {
    let mut by_room: std::collections::HashMap<usize, Vec<u64>> = Default::default();
    for &(r, t) in acks {
        by_room.entry(r).or_default().push(t);
    }
    let mut longest: Option<u64> = None;
    for times in by_room.values_mut() {
        times.sort_unstable();
        let before = times.iter().rev().find(|&&t| t <= at_us);
        let after = times.iter().find(|&&t| t > at_us);
        if let (Some(b), Some(a)) = (before, after) {
            longest = Some(longest.unwrap_or(0).max(a - b));
        }
    }
    let first = acks.iter().map(|&(_, t)| t).filter(|&t| t > at_us).min();
    (
        longest.map(|us| us as f64 / 1000.0),
        first.map(|t| (t - at_us) as f64 / 1000.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_around_a_kill() {
        let acks = [
            (0, 100),
            (0, 200),
            (0, 5_200),
            (1, 150),
            (1, 1_150),
            (2, 50),
        ];
        let (longest, first) = ack_pauses(&acks, 1_000);
        assert_eq!(longest, Some(5.0));
        assert_eq!(first, Some(0.15));
        assert_eq!(ack_pauses(&[], 0), (None, None));
    }

    #[test]
    fn the_harness_and_its_parents_are_no_target() {
        let me = std::process::id();
        assert!(check_target(me).is_err());
        assert!(check_target(std::os::unix::process::parent_id()).is_err());
        assert!(check_target(0).is_err());
        assert!(check_target(u32::MAX - 1).is_err());
        // A child of the harness is a target; it is not a node, which is said.
        let mut child = restart("sleep 30").unwrap();
        let note = check_target(child.id()).unwrap();
        assert!(note.is_some_and(|n| n.contains("not parley-node")));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn restart_runs_a_command() {
        let mut c = restart("exit 0").unwrap();
        assert!(c.wait().unwrap().success());
        let err = signal(u32::MAX - 1, "KILL").unwrap_err();
        assert!(err.to_string().starts_with("kill -KILL"), "{err}");
    }
}
