//! What the harness reads about processes and the machine from `/proc`:
//! CPU time, resident memory, open-file limits, machine facts and the
//! filesystem under a path.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
/// `pid` `None` means this process.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow ") ".
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// The parent of a process (field 4 of `/proc/PID/stat`).
pub fn parent_pid(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.get(text.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The command name of a process (`/proc/PID/comm`), `None` when there is
/// no such process.
pub fn command_name(pid: u32) -> Option<String> {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(name.trim_end().to_string())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Measures a process's CPU use as a share of one core between two points in time.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: Option<u32>,
    start_cpu: Option<f64>,
    start: Instant,
}

impl CpuMeter {
    /// Starts measuring `pid` (`None`: this process).
    pub fn start(pid: Option<u32>) -> Self {
        CpuMeter {
            pid,
            start_cpu: cpu_seconds(pid),
            start: Instant::now(),
        }
    }

    /// Percent of one core used since the start (`None` if unreadable,
    /// e.g. the process died).
    pub fn percent(&self) -> Option<f64> {
        let now = cpu_seconds(self.pid)?;
        let wall = self.start.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        Some((now - self.start_cpu?) / wall * 100.0)
    }
}

/// How busy the whole machine was (other users' work included).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostLoad {
    /// 1-minute load average (`/proc/loadavg`).
    pub loadavg_1m: Option<f64>,
    /// Share of the last 60 s in which some runnable task waited for a CPU,
    /// percent (`/proc/pressure/cpu`, "some avg60").
    pub cpu_pressure_avg60: Option<f64>,
    /// Share of the last 60 s in which some task waited for I/O, percent
    /// (`/proc/pressure/io`, "some avg60"); commits wait on fsync.
    pub io_pressure_avg60: Option<f64>,
}

fn pressure_avg60(path: &str) -> Option<f64> {
    std::fs::read_to_string(path).ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("some"))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("avg60=")))
            .and_then(|v| v.parse().ok())
    })
}

impl HostLoad {
    /// Reads the current figures.
    pub fn read() -> Self {
        let loadavg_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()));
        HostLoad {
            loadavg_1m,
            cpu_pressure_avg60: pressure_avg60("/proc/pressure/cpu"),
            io_pressure_avg60: pressure_avg60("/proc/pressure/io"),
        }
    }
}

/// Machine-wide TCP listen-queue counters from `/proc/net/netstat`:
/// (`ListenOverflows`, `ListenDrops`). A rising count during a connect storm
/// means a node's accept queue was full and SYNs were dropped (clients then
/// retry after about one second).
pub fn listen_drops() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("ListenOverflows")?, get("ListenDrops")?))
}

/// The open-file limit after trying to raise it: (soft, hard).
pub fn raise_fd_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    // rlim_t is u64 here but not on every target.
    #[allow(clippy::unnecessary_cast)]
    let out = (lim.rlim_cur as u64, lim.rlim_max as u64);
    out
}

/// Facts about the machine a benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    /// Logical CPUs (`nproc`).
    pub nproc: usize,
    /// First `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Output of `free -h`.
    pub memory: String,
    /// Kernel release.
    pub kernel: String,
    /// Open-file limit of the harness (soft, hard).
    pub fd_limit: (u64, u64),
}

impl MachineInfo {
    /// Reads the machine facts.
    pub fn read() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory = std::process::Command::new("free")
            .arg("-h")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        MachineInfo {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            memory,
            kernel,
            fd_limit: raise_fd_limit(),
        }
    }
}

/// The filesystem type (`ext4`, `tmpfs`, ...) holding `path`, from the
/// longest mount point of `/proc/self/mounts` that contains it.
pub fn filesystem_of(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            // Spaces in mount points are written as \040.
            let point = PathBuf::from(point.replace("\\040", " "));
            path.starts_with(&point)
                .then(|| (point.components().count(), fstype.to_string()))
        })
        .max_by_key(|(depth, _)| *depth)
        .map(|(_, fstype)| fstype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parent_and_name() {
        let me = std::process::id();
        assert_eq!(parent_pid(me), Some(std::os::unix::process::parent_id()));
        assert!(command_name(me).is_some_and(|n| !n.is_empty()));
        assert_eq!(command_name(u32::MAX - 1), None);
    }

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds(None).is_some());
        assert!(rss_kib(None).unwrap_or(0) > 0);
        let m = CpuMeter::start(None);
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(m.percent().is_some());
        assert!(raise_fd_limit().0 > 0);
        assert!(listen_drops().is_some());
        let _ = HostLoad::read();
        assert!(filesystem_of(Path::new("/")).is_some());
        assert_eq!(
            filesystem_of(Path::new("/proc/self")).as_deref(),
            Some("proc")
        );
    }
}
