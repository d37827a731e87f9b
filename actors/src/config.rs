//! Tunables of the actor system. Every field is a node flag (see `docs/operations.md`).

use std::time::Duration;

/// Limits and timings used by the actors.
#[derive(Debug, Clone)]
pub struct ActorConfig {
    /// Name of this node, shown in `hello`.
    pub node_name: String,
    /// Frames a session may have queued for its socket before it is closed with 1013.
    pub outbound_queue: usize,
    /// Sends a room accepts waiting for commit before answering `unavailable`.
    pub room_queue_max: usize,
    /// Most messages written in one group commit.
    pub commit_batch_max: usize,
    /// A room with no activity for this long stops and frees its memory.
    pub room_idle: Duration,
    /// How long a typing indicator lasts without refresh.
    pub typing_ttl: Duration,
    /// How often raised watermarks are broadcast and persisted (receipt coalescing).
    pub receipt_flush: Duration,
    /// Rooms with more members than this send each member's receipts only to
    /// that member's own sessions (otherwise receipts grow with members squared).
    pub receipt_fanout_max_members: usize,
    /// Rooms with more members than this do not carry presence.
    pub presence_fanout_max_members: usize,
    /// Interval clients are asked to ping at.
    pub heartbeat: Duration,
    /// Messages per page when replaying `sync`.
    pub sync_page: u32,
    /// Bytes of answers this node may hold unread by their clients (0: no limit).
    pub unsent_max: u64,
    /// Bytes of answers one user may have unread on this node (0: no limit).
    pub unsent_per_user_max: u64,
}

impl Default for ActorConfig {
    fn default() -> Self {
        ActorConfig {
            node_name: "parley".to_string(),
            outbound_queue: 4096,
            room_queue_max: 10_000,
            commit_batch_max: 512,
            room_idle: Duration::from_secs(300),
            typing_ttl: Duration::from_secs(8),
            receipt_flush: Duration::from_millis(100),
            receipt_fanout_max_members: 256,
            presence_fanout_max_members: 256,
            heartbeat: Duration::from_secs(30),
            sync_page: 200,
            unsent_max: 512 << 20,
            unsent_per_user_max: 32 << 20,
        }
    }
}
