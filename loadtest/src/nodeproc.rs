//! Starting and stopping `parley-node` processes for `bench`: free loopback
//! ports, fresh data directories, load-test flags (cheap password hashing,
//! rate limits off).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::api::Api;
use crate::ports::free_port;

/// The flags that make a node usable for load tests: cheap argon2 (setup
/// registers and logs in thousands of users), every rate limit off (set-up
/// creates rooms quickly through the API), and no cap on one user's
/// sessions (idle runs may share users).
pub const LOAD_TEST_FLAGS: &[&str] = &[
    "--argon2-memory-kib",
    "64",
    "--argon2-iterations",
    "1",
    "--login-rate-per-ip",
    "0",
    "--login-rate-per-user",
    "0",
    "--register-rate-per-ip",
    "0",
    "--ws-rate",
    "0",
    "--max-sessions-per-user",
    "0",
    "--api-rate-per-user",
    "0",
    "--access-token-ttl-secs",
    "7200",
];

/// Why a node could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No free port, no data dir, or the binary would not start.
    #[error("starting {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The process exited before it was ready.
    #[error("parley-node exited early ({status}); its log: {log}")]
    Exited {
        /// How it exited.
        status: String,
        /// Its stdout and stderr.
        log: String,
    },
    /// `/ready` did not answer 200 in time.
    #[error("parley-node was not ready within 60 s")]
    NotReady,
}

/// A running node.
pub struct NodeProc {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Process id.
    pub pid: u32,
    /// The shell command that starts this node again (same port and data dir).
    pub restart_cmd: String,
    /// Where its stdout and stderr go.
    log_path: PathBuf,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl NodeProc {
    /// Starts `bin` on a free port with a fresh `data_dir` and waits until ready.
    pub async fn start(bin: &Path, data_dir: &Path) -> Result<NodeProc, NodeError> {
        let mut node = Self::spawn(bin, data_dir, "node", &[], None)?;
        node.wait_ready().await?;
        Ok(node)
    }

    /// Starts a local cluster of `n` nodes sharing the embedded store in
    /// `data_dir` (every node lists every cluster address as a seed), and
    /// waits until all are ready (joined, storage answering).
    pub async fn start_cluster(
        bin: &Path,
        data_dir: &Path,
        n: usize,
    ) -> Result<Vec<NodeProc>, NodeError> {
        let spawn_err = |source| NodeError::Spawn {
            bin: bin.display().to_string(),
            source,
        };
        let cluster: Vec<String> = (0..n)
            .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
            .collect::<Result<_, _>>()
            .map_err(spawn_err)?;
        let seeds = cluster.join(",");
        let secret = format!("loadtest-cluster-{}", std::process::id());
        let mut nodes = Vec::new();
        for (i, addr) in cluster.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let extra = [
                "--node-name".to_string(),
                name.clone(),
                "--cluster-listen".to_string(),
                addr.clone(),
                "--seeds".to_string(),
                seeds.clone(),
            ];
            nodes.push(Self::spawn(bin, data_dir, &name, &extra, Some(&secret))?);
        }
        for node in &mut nodes {
            node.wait_ready().await?;
        }
        Ok(nodes)
    }

    fn spawn(
        bin: &Path,
        data_dir: &Path,
        name: &str,
        extra: &[String],
        cluster_secret: Option<&str>,
    ) -> Result<NodeProc, NodeError> {
        let spawn_err = |source| NodeError::Spawn {
            bin: bin.display().to_string(),
            source,
        };
        let port = free_port().map_err(spawn_err)?;
        std::fs::create_dir_all(data_dir).map_err(spawn_err)?;
        let listen = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = vec![
            "--listen".into(),
            listen.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--log-format".into(),
            "json".into(),
        ];
        args.extend(LOAD_TEST_FLAGS.iter().map(|s| s.to_string()));
        args.extend(extra.iter().cloned());
        let log_path = data_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).map_err(spawn_err)?;
        let log2 = log.try_clone().map_err(spawn_err)?;
        let mut cmd = Command::new(bin);
        cmd.args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        let mut env_prefix = "RUST_LOG=warn".to_string();
        if let Some(secret) = cluster_secret {
            cmd.env("PARLEY_CLUSTER_SECRET", secret);
            env_prefix.push_str(&format!(" PARLEY_CLUSTER_SECRET={}", quote(secret)));
        }
        let child = cmd.spawn().map_err(spawn_err)?;
        let pid = child.id().unwrap_or(0);
        let restart_cmd = format!(
            "{env_prefix} exec {} {} >>{} 2>&1",
            quote(&bin.display().to_string()),
            args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
            quote(&log_path.display().to_string())
        );
        Ok(NodeProc {
            child: Some(child),
            base: format!("http://{listen}"),
            pid,
            restart_cmd,
            log_path,
        })
    }

    async fn wait_ready(&mut self) -> Result<(), NodeError> {
        let api = Api::new(&self.base).map_err(|_| NodeError::NotReady)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if api.ready().await {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(NodeError::Exited {
                        status: status.to_string(),
                        log: self.log_path.display().to_string(),
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(NodeError::NotReady)
    }

    /// Stops the node: SIGTERM, then SIGKILL after 20 s. Also stops a
    /// process that replaced it (`other_pid`, e.g. a chaos restart).
    pub async fn stop(mut self, other_pid: Option<u32>) {
        if let Some(p) = other_pid.filter(|p| *p != self.pid && *p != 0) {
            terminate(p, None).await;
        }
        if let Some(c) = self.child.take() {
            terminate(self.pid, Some(c)).await;
        }
    }
}

async fn terminate(pid: u32, child: Option<Child>) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
    match child {
        Some(mut c) => {
            if tokio::time::timeout(Duration::from_secs(20), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
        None => {
            // Not our child: poll until gone, then SIGKILL.
            let deadline = Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                if is_zombie(pid) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{below_ephemeral_range, lock_dir};
    use std::fs::OpenOptions;
    use std::net::TcpListener;

    #[test]
    fn quotes_for_sh() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..20).map(|_| free_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        if let Some((low, high)) = below_ephemeral_range() {
            assert!(ports.iter().all(|p| (low..=high).contains(p)), "{ports:?}");
        }
        for p in ports {
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }

    #[test]
    fn a_handed_out_port_stays_locked_against_other_holders() {
        let p = free_port().unwrap();
        // Another process would hold the lock through its own open file.
        let other = OpenOptions::new()
            .write(true)
            .open(lock_dir().unwrap().join(format!("{p}.lock")))
            .unwrap();
        assert!(other.try_lock().is_err(), "the lock on {p} is not held");
    }
}
