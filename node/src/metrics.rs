//! Counters for `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parley_actors::Stats;

/// Process-wide counters; gauges come from the actor system at scrape time.
#[derive(Default)]
pub struct Metrics {
    /// HTTP requests answered.
    pub http_requests: AtomicU64,
    /// HTTP answers with status >= 400.
    pub http_errors: AtomicU64,
    /// WebSocket connections accepted.
    pub ws_connections: AtomicU64,
    /// WebSocket upgrades refused for a bad token.
    pub ws_auth_failures: AtomicU64,
    /// Client frames received.
    pub ws_frames_in: AtomicU64,
    /// Client frames refused as malformed.
    pub ws_bad_frames: AtomicU64,
    /// Frames refused by the per-connection rate limit.
    pub ws_rate_limited: AtomicU64,
    /// Connections closed for flooding (1008).
    pub ws_flood_closes: AtomicU64,
    /// Connections closed for oversized frames (1009).
    pub ws_too_large_closes: AtomicU64,
    /// Connections closed for breaking the WebSocket protocol (1002) or
    /// sending a text frame that is not UTF-8 (1007).
    pub ws_protocol_error_closes: AtomicU64,
    /// Connections closed for a message left unfinished past the time
    /// limit (1008) or with no room for it in time (1013).
    pub ws_unfinished_closes: AtomicU64,
    /// Logins, registrations and token refreshes refused by rate limits.
    pub auth_rate_limited: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Failed logins.
    pub login_failures: AtomicU64,
    /// Client connections open now (HTTP and WebSocket).
    pub connections_open: AtomicU64,
    /// Times a connection had to wait because `--max-connections` were open.
    pub connections_limited: AtomicU64,
    /// Connections refused because their address held `--max-connections-per-ip`.
    pub connections_refused_per_ip: AtomicU64,
    /// WebSocket upgrades refused because the user held `--max-sessions-per-user`.
    pub ws_sessions_refused: AtomicU64,
    /// API requests refused because the user was over `--api-rate-per-user`.
    pub api_rate_limited: AtomicU64,
}

/// Bytes reserved for what clients are still sending.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arriving {
    /// HTTP request bodies.
    pub bodies: u64,
    /// WebSocket messages over 4 KiB.
    pub messages: u64,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Renders every metric in Prometheus text format, with the actors'
    /// `stats`, the cluster's live `members` and the bytes reserved for
    /// what clients are still sending.
    pub fn render(&self, stats: Stats, members: usize, arriving: Arriving, node: &str) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 18] = [
            (
                "parley_http_requests_total",
                "HTTP requests answered",
                &self.http_requests,
            ),
            (
                "parley_http_errors_total",
                "HTTP answers with status >= 400",
                &self.http_errors,
            ),
            (
                "parley_ws_connections_total",
                "WebSocket connections accepted",
                &self.ws_connections,
            ),
            (
                "parley_ws_auth_failures_total",
                "WebSocket upgrades refused (401)",
                &self.ws_auth_failures,
            ),
            (
                "parley_ws_frames_in_total",
                "client frames received",
                &self.ws_frames_in,
            ),
            (
                "parley_ws_bad_frames_total",
                "client frames refused as malformed",
                &self.ws_bad_frames,
            ),
            (
                "parley_ws_rate_limited_total",
                "client frames refused by rate limit",
                &self.ws_rate_limited,
            ),
            (
                "parley_ws_flood_closes_total",
                "connections closed with 1008 for flooding",
                &self.ws_flood_closes,
            ),
            (
                "parley_ws_too_large_closes_total",
                "connections closed with 1009",
                &self.ws_too_large_closes,
            ),
            (
                "parley_ws_protocol_error_closes_total",
                "connections closed with 1002 or 1007 (broken WebSocket framing, text that is not UTF-8)",
                &self.ws_protocol_error_closes,
            ),
            (
                "parley_ws_unfinished_closes_total",
                "connections closed for a message left unfinished past --ws-message-timeout-secs (1008), or with no room for it within that time (1013)",
                &self.ws_unfinished_closes,
            ),
            (
                "parley_auth_rate_limited_total",
                "logins, registrations and token refreshes refused by rate limit",
                &self.auth_rate_limited,
            ),
            ("parley_logins_total", "successful logins", &self.logins),
            (
                "parley_login_failures_total",
                "failed logins",
                &self.login_failures,
            ),
            (
                "parley_connections_limited_total",
                "times a new connection waited because --max-connections were open",
                &self.connections_limited,
            ),
            (
                "parley_connections_refused_per_ip_total",
                "connections answered 429 because their address held --max-connections-per-ip",
                &self.connections_refused_per_ip,
            ),
            (
                "parley_ws_sessions_refused_total",
                "WebSocket upgrades refused because the user held --max-sessions-per-user",
                &self.ws_sessions_refused,
            ),
            (
                "parley_api_rate_limited_total",
                "API requests refused because the user was over --api-rate-per-user",
                &self.api_rate_limited,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(
                out,
                "{name}{{node=\"{node}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "parley_sessions",
                "connected WebSocket sessions",
                stats.sessions,
            ),
            (
                "parley_users_online",
                "distinct users connected to this node",
                stats.users_online,
            ),
            (
                "parley_rooms_active",
                "live room actors on this node",
                stats.rooms,
            ),
            (
                "parley_cluster_members",
                "live cluster members this node sees (itself included)",
                members,
            ),
            (
                "parley_connections_open",
                "client connections open (HTTP and WebSocket)",
                self.connections_open.load(Ordering::Relaxed) as usize,
            ),
            (
                "parley_unsent_answer_bytes",
                "bytes of history, room and sync pages held for clients that have not read them",
                stats.unsent_bytes as usize,
            ),
            (
                "parley_incoming_body_bytes",
                "bytes reserved for HTTP request bodies still arriving",
                arriving.bodies as usize,
            ),
            (
                "parley_unfinished_message_bytes",
                "bytes reserved for WebSocket messages over 4 KiB still arriving",
                arriving.messages as usize,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {v}");
        }
        parley_actors::metrics::METRICS.render(&mut out, node);
        out
    }
}
