//! State shared by every request handler.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parley_actors::budget::ByteBudget;
use parley_actors::ChatSystem;
use parley_storage::Store;

use crate::auth::password::PasswordHasher;
use crate::auth::tokens::TokenKeys;
use crate::config::Config;
use crate::message_watch::MessageRules;
use crate::metrics::Metrics;
use crate::ratelimit::KeyedLimit;
use crate::session_cap::SessionCap;

/// Rate limits of the HTTP API.
pub struct Limits {
    /// Login attempts per IP.
    pub login_ip: KeyedLimit,
    /// Login attempts per username.
    pub login_user: KeyedLimit,
    /// Registrations per IP.
    pub register_ip: KeyedLimit,
    /// Refresh-token exchanges per IP.
    pub refresh_ip: KeyedLimit,
    /// Authenticated API requests per user.
    pub api_user: KeyedLimit,
}

impl Limits {
    /// Forgets, in every limiter, the keys back at a full allowance (bounds memory).
    pub fn prune(&self) {
        for limit in [
            &self.login_ip,
            &self.login_user,
            &self.register_ip,
            &self.refresh_ip,
            &self.api_user,
        ] {
            limit.prune();
        }
    }
}

/// Everything handlers need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The node's actors.
    pub system: ChatSystem,
    /// Storage (also reachable through `system`).
    pub store: Arc<dyn Store>,
    /// Access token keys.
    pub tokens: Arc<TokenKeys>,
    /// Password hashing cost.
    pub passwords: PasswordHasher,
    /// Configuration.
    pub config: Arc<Config>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// HTTP rate limits.
    pub limits: Arc<Limits>,
    /// Set when the node is shutting down (refuses new sessions, `/ready` 503).
    pub draining: Arc<AtomicBool>,
    /// This node's name.
    pub node_name: Arc<str>,
    /// WebSocket sessions open per user, against `--max-sessions-per-user`.
    pub sessions: Arc<SessionCap>,
    /// The runtime the socket writers run on, apart from the actors'.
    pub writers: tokio::runtime::Handle,
    /// Bytes of request bodies arriving, per client address and for the
    /// node (see `api::incoming_body`).
    pub bodies: Arc<ByteBudget>,
    /// Bounds on WebSocket messages clients leave unfinished (see `message_watch`).
    pub message_rules: Arc<MessageRules>,
}
