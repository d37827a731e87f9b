//! A deadline for cluster sessions to authenticate.
//!
//! ractor_cluster gives every connection to the cluster port a session that
//! waits for the cookie handshake with no time limit, so a connection that
//! never speaks (a port scanner, a half-open socket, someone holding file
//! descriptors) would keep its socket and session for good. The guard
//! watches the node server's session events and stops any session that has
//! not authenticated within `--cluster-handshake-timeout-ms`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ractor::{ActorId, ActorRef, ActorStatus};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage};

/// Stops node sessions that do not authenticate in time.
struct AuthDeadline {
    timeout: Duration,
    /// Sessions that authenticated and whose deadline has not yet passed.
    authenticated: Arc<Mutex<HashSet<ActorId>>>,
}

impl NodeEventSubscription for AuthDeadline {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let (timeout, authenticated) = (self.timeout, self.authenticated.clone());
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let id = ses.actor.get_id();
            let in_time = authenticated
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            if !in_time && ses.actor.get_status() == ActorStatus::Running {
                tracing::warn!(peer = %ses.peer_addr, "cluster connection did not authenticate in time; closed");
                ses.actor.stop(Some("auth_timeout".into()));
            }
        });
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.authenticated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ses.actor.get_id());
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.authenticated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ses.actor.get_id());
    }
}

/// Makes `server` stop every session that has not authenticated `timeout`
/// after it opened.
pub fn install(server: &ActorRef<NodeServerMessage>, timeout: Duration) -> anyhow::Result<()> {
    server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: "parley.auth_deadline".into(),
            subscription: Box::new(AuthDeadline {
                timeout,
                authenticated: Arc::default(),
            }),
        })
        .map_err(|e| anyhow::anyhow!("subscribing to cluster session events: {e}"))
}
