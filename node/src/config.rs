//! Node configuration: flags, `PARLEY_*` environment variables, and an optional TOML file.
//!
//! Precedence: command-line flag, then environment variable, then the file
//! named by `--config` (keys are the flag names, e.g. `listen = "..."` or
//! `data-dir = "..."`), then the built-in default.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use parley_storage::scylla::{
    parse_consistency, parse_serial_consistency, Consistency, Replication, ScyllaConfig,
    SerialConsistency, Tablets, TlsOptions,
};

/// Storage backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// SQLite in the data dir (default; no server needed).
    Embedded,
    /// A ScyllaDB cluster (`--scylla-*` settings).
    Scylla,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (default).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Everything a node can be told at start-up.
#[derive(Debug, Clone, Parser)]
#[command(name = "parley-node", version, about = "A Parley chat node")]
pub struct Config {
    /// TOML file with any of these settings (keys are the flag names).
    #[arg(long, env = "PARLEY_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP, WebSocket and web client address.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the embedded store and generated secrets.
    #[arg(long, env = "PARLEY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Storage backend.
    #[arg(long, env = "PARLEY_STORAGE", value_enum, default_value = "embedded")]
    pub storage: StorageKind,
    /// ScyllaDB contact points, `host:port,...`.
    #[arg(long, env = "PARLEY_SCYLLA_NODES", value_delimiter = ',')]
    pub scylla_nodes: Vec<String>,
    /// ScyllaDB keyspace (created with the tables when missing).
    #[arg(long, env = "PARLEY_SCYLLA_KEYSPACE", default_value = "parley")]
    pub scylla_keyspace: String,
    /// Replication used when the keyspace is created: `simple:RF` (development)
    /// or `network:DC=RF[,DC=RF...]` (production).
    #[arg(long, env = "PARLEY_SCYLLA_REPLICATION", default_value = "simple:1")]
    pub scylla_replication: Replication,
    /// Tablets when the keyspace is created: `auto`, `enabled` or `disabled`.
    #[arg(long, env = "PARLEY_SCYLLA_TABLETS", default_value = "auto")]
    pub scylla_tablets: Tablets,
    /// Consistency of ScyllaDB reads and writes (`quorum`, `local_quorum`, ...;
    /// `local_*` only when every Parley node is in one datacenter).
    #[arg(long, env = "PARLEY_SCYLLA_CONSISTENCY", default_value = "quorum",
          value_parser = parse_consistency)]
    pub scylla_consistency: Consistency,
    /// Consistency of ScyllaDB's Paxos rounds (`serial`, or `local_serial`
    /// when every Parley node is in one datacenter).
    #[arg(long, env = "PARLEY_SCYLLA_SERIAL_CONSISTENCY", default_value = "serial",
          value_parser = parse_serial_consistency)]
    pub scylla_serial_consistency: SerialConsistency,
    /// Datacenter to send requests to (needed with `local_*` levels in a
    /// multi-datacenter cluster).
    #[arg(long, env = "PARLEY_SCYLLA_LOCAL_DC")]
    pub scylla_local_dc: Option<String>,
    /// Client-side timeout of one ScyllaDB request, milliseconds.
    #[arg(long, env = "PARLEY_SCYLLA_REQUEST_TIMEOUT_MS",
        value_parser = duration_millis(), default_value_t = 5000)]
    pub scylla_request_timeout_ms: u64,
    /// ScyllaDB username (password authentication).
    #[arg(long, env = "PARLEY_SCYLLA_USERNAME")]
    pub scylla_username: Option<String>,
    /// ScyllaDB password.
    #[arg(long, env = "PARLEY_SCYLLA_PASSWORD", hide_env_values = true)]
    pub scylla_password: Option<String>,
    /// TLS to ScyllaDB (needs a build with the `scylla-tls` feature).
    #[arg(long, env = "PARLEY_SCYLLA_TLS")]
    pub scylla_tls: bool,
    /// PEM file of the CA the ScyllaDB node certificates chain to.
    #[arg(long, env = "PARLEY_SCYLLA_TLS_CA")]
    pub scylla_tls_ca: Option<PathBuf>,
    /// HS256 secret for access tokens; generated and kept in the data dir when absent.
    #[arg(long, env = "PARLEY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// This node's name (default: host name + port).
    #[arg(long, env = "PARLEY_NODE_NAME", value_parser = node_name)]
    pub node_name: Option<String>,
    /// Cluster (ractor_cluster) address, `host:port`; no clustering when absent.
    #[arg(long, env = "PARLEY_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// The IP address peers reach this node's cluster port at, which the
    /// node announces to them; default: the IP of --cluster-listen. Needed
    /// when --cluster-listen binds every interface (0.0.0.0 or ::).
    #[arg(long, env = "PARLEY_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<IpAddr>,
    /// Cluster seed addresses.
    #[arg(long, env = "PARLEY_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Shared cluster cookie (required with --cluster-listen).
    #[arg(long, env = "PARLEY_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Allow clustering without a secret (development on one machine only).
    #[arg(long, env = "PARLEY_CLUSTER_INSECURE_DEV")]
    pub cluster_insecure_dev: bool,
    /// Encrypt cluster connections with mutual TLS: this node's certificate
    /// chain (PEM). Needs --cluster-tls-key and --cluster-tls-ca; every node
    /// of the cluster must use TLS.
    #[arg(long, env = "PARLEY_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// The private key of --cluster-tls-cert (PEM).
    #[arg(long, env = "PARLEY_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,
    /// The CA certificate(s) (PEM) that sign every node's certificate; a
    /// peer must present a certificate from this CA, both ways.
    #[arg(long, env = "PARLEY_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// The DNS name every node certificate carries (checked when dialling
    /// a peer, whose address alone names no host).
    #[arg(
        long,
        env = "PARLEY_CLUSTER_TLS_NAME",
        default_value = "parley-cluster"
    )]
    pub cluster_tls_name: String,
    /// A connection to the cluster port must finish its TLS handshake and
    /// authenticate within this long, milliseconds; else it is closed.
    #[arg(
        long,
        env = "PARLEY_CLUSTER_HANDSHAKE_TIMEOUT_MS",
        value_parser = duration_millis(),
        default_value_t = 10_000
    )]
    pub cluster_handshake_timeout_ms: u64,
    /// Heartbeat interval between nodes, milliseconds.
    #[arg(long, env = "PARLEY_CLUSTER_HEARTBEAT_MS",
        value_parser = duration_millis(), default_value_t = 300)]
    pub cluster_heartbeat_ms: u64,
    /// A node silent for this long is considered dead, milliseconds.
    #[arg(
        long,
        env = "PARLEY_CLUSTER_FAILURE_TIMEOUT_MS",
        value_parser = duration_millis(),
        default_value_t = 1500
    )]
    pub cluster_failure_timeout_ms: u64,
    /// With seeds but no peer reachable after this long, serve alone, milliseconds.
    #[arg(long, env = "PARLEY_CLUSTER_JOIN_GRACE_MS",
        value_parser = duration_millis(), default_value_t = 5000)]
    pub cluster_join_grace_ms: u64,
    /// Log format.
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Access token lifetime, seconds.
    #[arg(long, env = "PARLEY_ACCESS_TOKEN_TTL_SECS",
        value_parser = duration_secs(), default_value_t = 900)]
    pub access_token_ttl_secs: u64,
    /// Refresh token lifetime, seconds.
    #[arg(long, env = "PARLEY_REFRESH_TOKEN_TTL_SECS",
        value_parser = duration_secs(), default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_secs: u64,
    /// argon2id memory cost in KiB.
    #[arg(long, env = "PARLEY_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,
    /// argon2id iterations.
    #[arg(long, env = "PARLEY_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// Login attempts per client IP per minute (0 = unlimited).
    #[arg(long, env = "PARLEY_LOGIN_RATE_PER_IP", default_value_t = 60)]
    pub login_rate_per_ip: u32,
    /// Login attempts per username per minute (0 = unlimited).
    #[arg(long, env = "PARLEY_LOGIN_RATE_PER_USER", default_value_t = 10)]
    pub login_rate_per_user: u32,
    /// Registrations per client IP per minute (0 = unlimited).
    #[arg(long, env = "PARLEY_REGISTER_RATE_PER_IP", default_value_t = 30)]
    pub register_rate_per_ip: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the client, for the
    /// per-IP limits: addresses or ranges (`10.0.0.0/8`), comma-separated.
    #[arg(long, env = "PARLEY_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: crate::client_ip::IpRanges,
    /// Most connections one client address (an IPv6 /64) may hold open at
    /// once; past it a new one is answered 429 `rate_limited` and closed.
    /// Trusted proxies and `--connection-cap-exempt` are not capped. 0 = no cap.
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,
    /// Address ranges `--max-connections-per-ip` leaves out (loopback by
    /// default: a proxy or a load test on the node's own machine).
    #[arg(
        long,
        env = "PARLEY_CONNECTION_CAP_EXEMPT",
        default_value = "127.0.0.0/8,::1"
    )]
    pub connection_cap_exempt: crate::client_ip::IpRanges,
    /// Refresh-token exchanges per client IP per minute (0 = unlimited).
    #[arg(long, env = "PARLEY_REFRESH_RATE_PER_IP", default_value_t = 120)]
    pub refresh_rate_per_ip: u32,
    /// Authenticated HTTP API requests per user per second (0 = unlimited).
    #[arg(long, env = "PARLEY_API_RATE_PER_USER", default_value_t = 20)]
    pub api_rate_per_user: u32,
    /// API requests a user may make at once above their rate.
    #[arg(long, env = "PARLEY_API_BURST_PER_USER", default_value_t = 100)]
    pub api_burst_per_user: u32,
    /// WebSocket frames per connection per second (0 = unlimited).
    #[arg(long, env = "PARLEY_WS_RATE", default_value_t = 50)]
    pub ws_rate: u32,
    /// WebSocket frames a connection may send at once above its rate.
    #[arg(long, env = "PARLEY_WS_BURST", default_value_t = 100)]
    pub ws_burst: u32,
    /// Rate-limited frames (less one for each frame accepted since) after
    /// which the connection is closed with 1008.
    #[arg(long, env = "PARLEY_WS_FLOOD_CLOSE_AFTER", default_value_t = 50)]
    pub ws_flood_close_after: u32,
    /// Largest WebSocket frame in bytes; larger closes with 1009.
    #[arg(long, env = "PARLEY_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Seconds a WebSocket message (or control frame) may take from its
    /// first byte to its last; past it the connection closes with 1008.
    #[arg(long, env = "PARLEY_WS_MESSAGE_TIMEOUT_SECS", default_value_t = 20)]
    pub ws_message_timeout_secs: u64,
    /// Bytes of WebSocket messages over 4 KiB the node may hold while they
    /// arrive (each counts the size its headers state); past it such a
    /// socket is not read until there is room, and closes with 1013 if none
    /// is made within the message timeout. 0 = no limit.
    #[arg(long, env = "PARLEY_MAX_UNFINISHED_MESSAGE_BYTES", default_value_t = 64 << 20)]
    pub max_unfinished_message_bytes: u64,
    /// The same per user. 0 = no limit.
    #[arg(
        long,
        env = "PARLEY_MAX_UNFINISHED_MESSAGE_BYTES_PER_USER",
        default_value_t = 1 << 20
    )]
    pub max_unfinished_message_bytes_per_user: u64,
    /// Largest HTTP request body in bytes; larger answers 413.
    #[arg(long, env = "PARLEY_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Bytes of request bodies over 4 KiB the node may hold while they arrive (each
    /// counts its stated size until it is read); past it a body waits up
    /// to 5 s, then 503 `unavailable`. 0 = no limit.
    #[arg(long, env = "PARLEY_MAX_INCOMING_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_incoming_body_bytes: u64,
    /// The same per client address: past it 429 `rate_limited`. 0 = no limit.
    #[arg(long, env = "PARLEY_MAX_INCOMING_BODY_BYTES_PER_IP", default_value_t = 1 << 20)]
    pub max_incoming_body_bytes_per_ip: u64,
    /// Frames queued per session before a slow client is closed with 1013
    /// (keep it at least twice `--commit-batch-max`: one commit fans out a whole batch).
    #[arg(long, env = "PARLEY_OUTBOUND_QUEUE", default_value_t = 4096)]
    pub outbound_queue: usize,
    /// Bytes of events queued per session before a slow client is closed
    /// with 1013 (one event always fits, whatever its size).
    #[arg(long, env = "PARLEY_OUTBOUND_QUEUE_BYTES", default_value_t = 16 << 20)]
    pub outbound_queue_bytes: usize,
    /// Bytes of messages (and frames of 4 KiB or more) the node may hold on
    /// their way to its sessions (queued, each counted once however many
    /// sessions share it, and held back by writers for replays); past it a
    /// session more than 1 MiB behind is closed with 1013 at its next
    /// event. 0 = no limit.
    #[arg(long, env = "PARLEY_MAX_OUTBOUND_MESSAGE_BYTES", default_value_t = 256 << 20)]
    pub max_outbound_message_bytes: usize,
    /// Bytes of answers (history and room pages, `sync` pages) the node may
    /// hold for clients that have not read them; past it HTTP answers 503
    /// `unavailable` and replays wait. 0 = no limit.
    #[arg(long, env = "PARLEY_MAX_UNSENT_BYTES", default_value_t = 512 << 20)]
    pub max_unsent_bytes: u64,
    /// The same per user: past it the user's HTTP answers are 429
    /// `rate_limited` and their replays wait. 0 = no limit.
    #[arg(long, env = "PARLEY_MAX_UNSENT_BYTES_PER_USER", default_value_t = 32 << 20)]
    pub max_unsent_bytes_per_user: u64,
    /// Seconds between handing the allocator's free pages back to the
    /// system (0: never; they then stay resident after a burst).
    #[arg(long, env = "PARLEY_MEMORY_TRIM_SECS",
        value_parser = clap::value_parser!(u64).range(0..=MAX_DURATION_SECS), default_value_t = 30)]
    pub memory_trim_secs: u64,
    /// Threads of the runtime that writes to client sockets (0: one per CPU).
    #[arg(long, env = "PARLEY_WRITER_THREADS", default_value_t = 0)]
    pub writer_threads: usize,
    /// Sends a room holds waiting for commit before answering `unavailable`.
    #[arg(long, env = "PARLEY_ROOM_QUEUE_MAX", default_value_t = 10_000)]
    pub room_queue_max: usize,
    /// Most messages in one group commit.
    #[arg(long, env = "PARLEY_COMMIT_BATCH_MAX", default_value_t = 512)]
    pub commit_batch_max: usize,
    /// Seconds without activity after which a room actor stops.
    #[arg(long, env = "PARLEY_ROOM_IDLE_SECS",
        value_parser = duration_secs(), default_value_t = 300)]
    pub room_idle_secs: u64,
    /// Milliseconds a typing indicator lasts without refresh.
    #[arg(long, env = "PARLEY_TYPING_TTL_MS",
        value_parser = duration_millis(), default_value_t = 8000)]
    pub typing_ttl_ms: u64,
    /// Milliseconds over which receipts are coalesced.
    #[arg(long, env = "PARLEY_RECEIPT_FLUSH_MS",
        value_parser = duration_millis(), default_value_t = 100)]
    pub receipt_flush_ms: u64,
    /// Rooms above this many members send receipts only to the member's own sessions.
    #[arg(long, env = "PARLEY_RECEIPT_FANOUT_MAX_MEMBERS", default_value_t = 256)]
    pub receipt_fanout_max_members: usize,
    /// Ping interval suggested to clients, milliseconds.
    #[arg(long, env = "PARLEY_HEARTBEAT_MS",
        value_parser = duration_millis(), default_value_t = 30_000)]
    pub heartbeat_ms: u64,
    /// Pending-connection backlog of the HTTP/WebSocket listener.
    #[arg(long, env = "PARLEY_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,
    /// Most client connections open at once (HTTP and WebSocket); 0 means
    /// the open-file limit less 512 descriptors kept for the node itself.
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// Most WebSocket sessions one user may hold open on this node at once;
    /// past it `GET /ws` answers 429 `rate_limited`. 0 = no cap.
    #[arg(long, env = "PARLEY_MAX_SESSIONS_PER_USER", default_value_t = 32)]
    pub max_sessions_per_user: usize,
    /// Seconds a connection may take to send a complete request head; also
    /// how long an idle keep-alive connection stays open.
    #[arg(long, env = "PARLEY_HTTP_HEADER_TIMEOUT_SECS",
        value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS), default_value_t = 30)]
    pub http_header_timeout_secs: u64,
    /// Seconds of silence after which a client connection is probed (TCP
    /// keepalive); one that answers none of 3 probes, sent every sixth of
    /// this (at least 1 s), is closed.
    #[arg(long, env = "PARLEY_TCP_KEEPALIVE_SECS",
        value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS), default_value_t = 60)]
    pub tcp_keepalive_secs: u64,
    /// Rooms above this many members do not carry presence (a user's status
    /// goes to people sharing a smaller room with them).
    #[arg(
        long,
        env = "PARLEY_PRESENCE_FANOUT_MAX_MEMBERS",
        default_value_t = 256
    )]
    pub presence_fanout_max_members: usize,
    /// Most members in one `POST /rooms`.
    #[arg(
        long,
        env = "PARLEY_MAX_ROOM_MEMBERS_PER_REQUEST",
        default_value_t = 1000
    )]
    pub max_room_members_per_request: usize,
}

/// The environment variables a config file key may stand for: one per flag
/// that has one (a misspelled key is refused rather than silently ignored).
fn config_file_keys() -> Vec<String> {
    use clap::CommandFactory;
    Config::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// Longest duration any setting may name (ten years): a longer one
/// overflows the clock where it is added to the time.
const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;

/// Parser of a setting in seconds, at most [`MAX_DURATION_SECS`].
fn duration_secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(..=MAX_DURATION_SECS)
}

/// Parser of a setting in milliseconds, at most [`MAX_DURATION_SECS`].
fn duration_millis() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(..=MAX_DURATION_SECS * 1000)
}

/// Parses `--node-name`: it goes into metric labels and cluster messages.
fn node_name(raw: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err("1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'".into())
    }
}

impl Config {
    /// Reads flags and environment, first loading `--config` (if any) into
    /// the environment for keys not already set there.
    pub fn load() -> anyhow::Result<Config> {
        let first = Config::parse();
        if let Some(path) = &first.config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
            let table: toml::Table = text.parse().map_err(|e| {
                anyhow::anyhow!("config file {} is not valid TOML: {e}", path.display())
            })?;
            let known = config_file_keys();
            for (key, value) in table {
                let var = format!("PARLEY_{}", key.replace('-', "_").to_ascii_uppercase());
                if !known.contains(&var) {
                    anyhow::bail!(
                        "config file {}: unknown setting `{key}` (settings are the long flag names, e.g. `node-name`; see `parley-node --help`)",
                        path.display()
                    );
                }
                let value = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                if std::env::var_os(&var).is_none() {
                    // Single-threaded here: nothing else reads the environment yet.
                    std::env::set_var(var, value);
                }
            }
            return Ok(Config::parse());
        }
        Ok(first)
    }

    /// The node name: configured, or host name + port.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "parley".to_string());
            format!("{host}-{}", self.listen.port())
        })
    }

    /// The cluster address this node announces to its peers: the
    /// --cluster-advertise IP (or the --cluster-listen one) with the
    /// cluster port; `None` when the node does not cluster.
    pub fn cluster_address(&self) -> Option<SocketAddr> {
        self.cluster_listen
            .map(|l| SocketAddr::new(self.cluster_advertise.unwrap_or(l.ip()), l.port()))
    }

    /// The ScyllaDB settings, checked (used with `--storage scylla`).
    pub fn scylla_config(&self) -> anyhow::Result<ScyllaConfig> {
        let mut c = ScyllaConfig::new(self.scylla_nodes.clone());
        c.keyspace = self.scylla_keyspace.clone();
        c.replication = self.scylla_replication.clone();
        c.tablets = self.scylla_tablets;
        c.consistency = self.scylla_consistency;
        c.serial_consistency = self.scylla_serial_consistency;
        c.request_timeout = Duration::from_millis(self.scylla_request_timeout_ms.max(1));
        c.local_datacenter = self.scylla_local_dc.clone();
        c.username = self.scylla_username.clone();
        c.password = self.scylla_password.clone();
        c.tls = match (self.scylla_tls, &self.scylla_tls_ca) {
            (false, _) => None,
            (true, Some(ca)) => Some(TlsOptions {
                ca_file: ca.clone(),
            }),
            (true, None) => anyhow::bail!("--scylla-tls needs --scylla-tls-ca FILE"),
        };
        c.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(c)
    }

    /// The cluster membership settings from this configuration.
    pub fn cluster_config(&self) -> parley_actors::cluster::membership::ClusterConfig {
        parley_actors::cluster::membership::ClusterConfig {
            node_name: self.node_name(),
            http_addr: self.listen.to_string(),
            cluster_addr: self.cluster_address().map(|a| a.to_string()),
            has_seeds: self.cluster_address().is_some_and(|own| {
                self.seeds
                    .iter()
                    .any(|s| s.parse::<SocketAddr>().ok() != Some(own))
            }),
            heartbeat: Duration::from_millis(self.cluster_heartbeat_ms.max(50)),
            failure_timeout: Duration::from_millis(self.cluster_failure_timeout_ms.max(200)),
            join_grace: Duration::from_millis(self.cluster_join_grace_ms),
        }
    }

    /// How long a typing indicator lasts without a refresh (at least 100 ms).
    pub fn typing_ttl(&self) -> Duration {
        Duration::from_millis(self.typing_ttl_ms.max(100))
    }

    /// The actor tunables from this configuration.
    pub fn actor_config(&self) -> parley_actors::ActorConfig {
        parley_actors::ActorConfig {
            node_name: self.node_name(),
            outbound_queue: self.outbound_queue.max(16),
            room_queue_max: self.room_queue_max.max(1),
            commit_batch_max: self.commit_batch_max.max(1),
            room_idle: Duration::from_secs(self.room_idle_secs.max(1)),
            typing_ttl: self.typing_ttl(),
            receipt_flush: Duration::from_millis(self.receipt_flush_ms.max(1)),
            receipt_fanout_max_members: self.receipt_fanout_max_members,
            presence_fanout_max_members: self.presence_fanout_max_members,
            heartbeat: Duration::from_millis(self.heartbeat_ms.max(1000)),
            sync_page: 200,
            unsent_max: self.max_unsent_bytes,
            unsent_per_user_max: self.max_unsent_bytes_per_user,
        }
    }
}
