//! Chaos actions: kill a node with SIGKILL and restart it with a command,
//! or pause it with SIGSTOP and resume it with SIGCONT.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

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

/// The node a chaos run has stopped with SIGSTOP and not yet continued
/// (0: none), for [`resume_on_interrupt`].
static PAUSED: AtomicU32 = AtomicU32::new(0);

/// Records that `pid` is paused (`Some`) or that no node is (`None`).
pub fn set_paused(pid: Option<u32>) {
    PAUSED.store(pid.unwrap_or(0), Ordering::SeqCst);
}

/// Installs, for the rest of the run, a handler of SIGINT and SIGTERM that
/// continues the paused node (if one is paused at that moment) and then
/// ends the harness with status 130, so an interrupted run never leaves a
/// node stopped. (A signal handler cannot be taken back in tokio, so this
/// is installed once, only by runs that pause a node.)
pub fn resume_on_interrupt() {
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
        let pid = PAUSED.swap(0, Ordering::SeqCst);
        if pid != 0 {
            match signal(pid, "CONT") {
                Ok(()) => eprintln!("interrupted: node {pid} continued (SIGCONT)"),
                Err(e) => eprintln!("interrupted: {e}; continue it with kill -CONT {pid}"),
            }
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
    fn restart_runs_a_command() {
        let mut c = restart("exit 0").unwrap();
        assert!(c.wait().unwrap().success());
        let err = signal(u32::MAX - 1, "KILL").unwrap_err();
        assert!(err.to_string().starts_with("kill -KILL"), "{err}");
    }
}
