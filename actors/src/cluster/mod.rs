//! The cluster layer: membership, placement and talking to other nodes.
//!
//! Nodes are connected by ractor_cluster (set up by the node binary). On top
//! of it this module provides:
//! - [`membership`]: heartbeats, failure detection and the shared [`View`];
//! - [`placement`]: the owner of each room by rendezvous hashing over the view;
//! - [`inbox`]: the one actor per node that receives other nodes' messages;
//! - [`wire`]: what crosses nodes, encoded with the versioned codec.
//!
//! A node without clustering has a view of just itself and behaves the same.

pub mod inbox;
pub mod membership;
pub mod placement;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{ActorCell, ActorRef};
use tokio::sync::watch;

use parley_protocol::http::RoomInfo;

use crate::error::ChatError;
use crate::metrics::{add, METRICS};
use crate::room::ManageCmd;
use membership::{ClusterMsg, MemberStatus};
use wire::{encode, PeerPayload, PeerWire};

/// Process group every node's inbox joins under `<prefix><node name>`.
pub const NODE_GROUP_PREFIX: &str = "parley.node.";

/// The live members as one node sees them.
#[derive(Debug, Clone)]
pub struct View {
    /// This node.
    pub me: Arc<str>,
    /// Live nodes including this one, sorted.
    pub members: Vec<Arc<str>>,
    /// The members rooms are placed on, sorted: those that have finished
    /// joining (see [`membership`]); all members while none has.
    pub owners: Vec<Arc<str>>,
    /// Inboxes of the other live nodes.
    pub inboxes: HashMap<Arc<str>, ActorCell>,
    /// Whether the node has joined its cluster (or serves alone by design).
    pub joined: bool,
}

impl View {
    /// The view of a node that is alone.
    pub fn alone(me: &str, joined: bool) -> View {
        let me: Arc<str> = Arc::from(me);
        View {
            members: vec![me.clone()],
            owners: vec![me.clone()],
            me,
            inboxes: HashMap::new(),
            joined,
        }
    }

    /// The owner of a room.
    pub fn owner(&self, room_id: &str) -> Arc<str> {
        placement::owner(room_id, &self.owners)
            .cloned()
            .unwrap_or_else(|| self.me.clone())
    }

    /// Whether this node announces `user_id`'s presence changes: one node
    /// per user, placed like a room but over the live members (which two
    /// joined nodes agree on sooner than on who has settled), sees every
    /// node's sessions of the user start and end in one order and so
    /// announces each change once.
    pub fn announces_presence_of(&self, user_id: &str) -> bool {
        placement::owner(user_id, &self.members).is_none_or(|node| *node == self.me)
    }

    /// [`View::announces_presence_of`] with `left_out` not counted: for the
    /// changes that node cannot announce itself (it restarted and forgot
    /// them). Rendezvous hashing keeps every other user's announcer.
    pub fn announces_presence_without(&self, user_id: &str, left_out: &str) -> bool {
        let others: Vec<&Arc<str>> = self
            .members
            .iter()
            .filter(|n| n.as_ref() != left_out)
            .collect();
        placement::owner(user_id, &others).is_none_or(|node| **node == self.me)
    }
}

/// Encodes a payload once and sends it to each of these inboxes; returns
/// how many took it.
fn send_to_cells(cells: Vec<ActorCell>, payload: &PeerPayload) -> usize {
    if cells.is_empty() {
        return 0;
    }
    let Some(PeerWire(mut bytes)) = encode(payload) else {
        return 0;
    };
    let len = bytes.len() as u64;
    let last = cells.len() - 1;
    let mut sent = 0;
    for (i, cell) in cells.into_iter().enumerate() {
        add(&METRICS.peer_messages_out, 1);
        add(&METRICS.peer_bytes_out, len);
        // The last one takes the encoded bytes themselves: a single send
        // copies nothing.
        let wire = if i == last {
            PeerWire(std::mem::take(&mut bytes))
        } else {
            PeerWire(bytes.clone())
        };
        if cell.send_message(wire).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// Handle to the cluster layer; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    view: watch::Receiver<Arc<View>>,
    actor: ActorRef<ClusterMsg>,
}

impl Cluster {
    /// Wraps the view channel and the cluster actor.
    pub fn new(view: watch::Receiver<Arc<View>>, actor: ActorRef<ClusterMsg>) -> Self {
        Cluster { view, actor }
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// This node's name.
    pub fn me(&self) -> Arc<str> {
        self.view.borrow().me.clone()
    }

    /// The cluster actor.
    pub fn actor(&self) -> &ActorRef<ClusterMsg> {
        &self.actor
    }

    /// Sends a payload to one node; false if it is not a live member.
    pub fn send(&self, node: &str, payload: &PeerPayload) -> bool {
        let cell = self.view.borrow().inboxes.get(node).cloned();
        send_to_cells(cell.into_iter().collect(), payload) == 1
    }

    /// Sends a payload to each of these nodes that is a live member
    /// (encoded once).
    pub fn send_to(&self, nodes: &[Arc<str>], payload: &PeerPayload) {
        let cells: Vec<ActorCell> = {
            let view = self.view.borrow();
            nodes
                .iter()
                .filter_map(|n| view.inboxes.get(n).cloned())
                .collect()
        };
        let _ = send_to_cells(cells, payload);
    }

    /// Sends a payload once to every other live node (encoded once).
    pub fn broadcast(&self, payload: &PeerPayload) {
        let cells: Vec<ActorCell> = self.view.borrow().inboxes.values().cloned().collect();
        let _ = send_to_cells(cells, payload);
    }

    /// Whether other nodes are live.
    pub fn has_peers(&self) -> bool {
        !self.view.borrow().inboxes.is_empty()
    }

    /// Asks a room's owner node to apply a change; waits for its answer.
    pub async fn request(
        &self,
        node: Arc<str>,
        room_id: &str,
        by: &str,
        cmd: ManageCmd,
    ) -> Result<RoomInfo, ChatError> {
        let room_id = room_id.to_string();
        let by = by.to_string();
        crate::system::ask(&self.actor, |reply| ClusterMsg::Request {
            node,
            room_id,
            by,
            cmd,
            reply,
        })
        .await?
    }

    /// Members as this node sees them.
    pub async fn status(&self) -> Vec<MemberStatus> {
        crate::system::ask(&self.actor, ClusterMsg::Status)
            .await
            .unwrap_or_default()
    }

    /// The cluster addresses of the nodes this node's live peers know
    /// (this node's own left out): what a node that dials its peers itself
    /// connects to.
    pub async fn addresses(&self) -> Vec<String> {
        crate::system::ask(&self.actor, ClusterMsg::Addresses)
            .await
            .unwrap_or_default()
    }

    /// A seed took this node's connection and ended the session before it
    /// joined: while seeds do that, the node does not serve alone.
    pub fn seed_refused(&self) {
        let _ = self.actor.cast(ClusterMsg::SeedRefused);
    }

    /// Announces that this node is leaving (drain).
    pub async fn leave(&self) {
        let _ = crate::system::ask(&self.actor, ClusterMsg::Leave).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of(me: &str) -> View {
        let names: Vec<Arc<str>> = ["n1", "n2", "n3"].into_iter().map(Arc::from).collect();
        View {
            me: Arc::from(me),
            members: names.clone(),
            owners: names,
            inboxes: HashMap::new(),
            joined: true,
        }
    }

    /// Exactly one node announces each user; leaving a node out moves only
    /// that node's users, each to exactly one other node.
    #[test]
    fn one_announcer_per_user_with_or_without_a_node() {
        let views = [view_of("n1"), view_of("n2"), view_of("n3")];
        for i in 0..500 {
            let user = format!("user-{i}");
            let announcers: Vec<&View> = views
                .iter()
                .filter(|v| v.announces_presence_of(&user))
                .collect();
            assert_eq!(announcers.len(), 1, "{user}");
            let without: Vec<&View> = views
                .iter()
                .filter(|v| v.announces_presence_without(&user, "n2"))
                .collect();
            assert_eq!(without.len(), 1, "{user}");
            assert_ne!(&*without[0].me, "n2");
            if &*announcers[0].me != "n2" {
                assert_eq!(without[0].me, announcers[0].me, "{user} moved needlessly");
            }
        }
    }
}
