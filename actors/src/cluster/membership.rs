//! Membership: heartbeats, failure detection and the shared view of live nodes.
//!
//! ractor_cluster connects nodes and mirrors process groups, but has no
//! failure detector. Every node's inbox joins the group `parley.node.<name>`;
//! the cluster actor finds peers through those groups, sends each a
//! heartbeat every `heartbeat` interval, and counts a peer alive while its
//! group has a member and its last heartbeat is younger than
//! `failure_timeout` (a closed connection removes the group member at once;
//! a silent one times out). The resulting [`View`] is published on a watch
//! channel that routing reads without a round trip, and every change is told
//! to the listeners (dispatcher, directory, presence).
//!
//! A peer that has lost sight of this node (a partition, a pause) places
//! this node's rooms on itself meanwhile and may change them. When its
//! heartbeat lists this node again, the listeners hear of it too, so that
//! the room actors here start over from storage.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use parley_protocol::http::RoomInfo;

use super::wire::{encode, Heartbeat, PeerPayload};
use super::{View, NODE_GROUP_PREFIX};
use crate::error::ChatError;
use crate::room::ManageCmd;

/// Settings of the membership layer.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name (unique in the cluster).
    pub node_name: String,
    /// This node's HTTP address, shown to operators.
    pub http_addr: String,
    /// This node's cluster address (`ip:port`), announced to peers.
    pub cluster_addr: Option<String>,
    /// Whether this node is meant to join others (seeds were given).
    pub has_seeds: bool,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// A peer silent for this long is considered dead.
    pub failure_timeout: Duration,
    /// With seeds but no peer after this long, the node serves alone.
    pub join_grace: Duration,
}

/// What a node knows about one member, for `/api/v1/cluster`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberStatus {
    /// Node name.
    pub node: String,
    /// `self`, `alive`, `leaving` or `suspect` (connected but silent).
    pub state: String,
    /// HTTP address.
    pub http_addr: String,
    /// Sessions on that node (last heartbeat).
    pub sessions: u64,
    /// Live rooms on that node (last heartbeat).
    pub rooms: u64,
    /// Milliseconds since its last heartbeat (0 for self).
    pub last_heartbeat_ms: u64,
}

/// Called with (joined, left) node names and the new view.
pub type ChangeFn = dyn Fn(&[Arc<str>], &[Arc<str>], &Arc<View>) + Send + Sync;

/// Who wants to hear about membership changes.
#[derive(Clone)]
pub struct Listeners {
    /// Called with (joined, left) node names and the new view.
    pub on_change: Arc<ChangeFn>,
    /// Local (sessions, rooms) for heartbeats.
    pub stats: Arc<dyn Fn() -> (u64, u64) + Send + Sync>,
    /// Called with a peer that has this node in its view again after
    /// leaving it out: it may have owned and changed rooms of this node.
    pub on_back_in_view: Arc<dyn Fn(&str) + Send + Sync>,
}

/// Messages of the cluster actor.
pub enum ClusterMsg {
    /// Time to heartbeat and re-evaluate (internal).
    Tick,
    /// A peer's heartbeat arrived.
    Heartbeat(Heartbeat),
    /// Send a room change to its owner and wait for the answer.
    Request {
        /// Owner node.
        node: Arc<str>,
        /// The room.
        room_id: String,
        /// Acting user.
        by: String,
        /// The change.
        cmd: ManageCmd,
        /// Answer.
        reply: RpcReplyPort<Result<RoomInfo, ChatError>>,
    },
    /// A peer answered a request.
    Response {
        /// Correlation id.
        id: u64,
        /// Its result.
        result: Result<RoomInfo, ChatError>,
    },
    /// Install the change listeners (once, at start-up).
    SetListeners(Listeners),
    /// This node is draining: tell peers and stop counting as a member.
    Leave(RpcReplyPort<()>),
    /// Members as this node sees them.
    Status(RpcReplyPort<Vec<MemberStatus>>),
    /// The cluster addresses of the live peers and of the nodes they
    /// count live (this node's own left out).
    Addresses(RpcReplyPort<Vec<String>>),
    /// A seed took this node's connection but ended the session before it
    /// joined (a different cluster secret, this node's name taken, TLS the
    /// seed does not trust): the cluster exists and refuses this node, which
    /// must not serve alone beside it.
    SeedRefused,
}

impl ractor::Message for ClusterMsg {}

struct Peer {
    cell: Option<ActorCell>,
    last: Option<(Instant, Heartbeat)>,
}

impl Peer {
    /// Records the peer's inbox as found now. When its connection closed or
    /// its inbox is another actor (the node restarted under the same name),
    /// what its last heartbeat said about having settled no longer holds:
    /// the new incarnation owns no rooms until it says so itself.
    fn set_cell(&mut self, cell: Option<ActorCell>) {
        let same = match (&self.cell, &cell) {
            (Some(old), Some(new)) => old.get_id() == new.get_id(),
            (None, None) => true,
            _ => false,
        };
        if !same && self.cell.is_some() {
            if let Some((_, hb)) = self.last.as_mut() {
                hb.settled = false;
            }
        }
        self.cell = cell;
    }
}

/// State of the cluster actor.
pub struct ClusterState {
    config: ClusterConfig,
    started: Instant,
    peers: BTreeMap<Arc<str>, Peer>,
    view: watch::Sender<Arc<View>>,
    listeners: Option<Listeners>,
    /// Room changes sent to their owner and not yet answered: when, to
    /// which node, and who waits.
    pending: HashMap<u64, PendingRequest>,
    leaving: bool,
    /// This node has finished joining (see [`ClusterState::settle`]); once
    /// set it stays set.
    settled: bool,
    /// Peers that may have left this node out of their view since they last
    /// listed it: their heartbeat stopped listing it, or they left this
    /// node's view without saying they were leaving.
    lost: HashSet<Arc<str>>,
    /// When a seed last refused this node (see [`ClusterMsg::SeedRefused`]).
    refused_at: Option<Instant>,
}

/// A room change sent to its owner node, waiting for the answer.
struct PendingRequest {
    sent: Instant,
    node: Arc<str>,
    reply: RpcReplyPort<Result<RoomInfo, ChatError>>,
}

/// The cluster actor.
pub struct ClusterActor;

/// Start-up arguments of the cluster actor.
pub struct ClusterArgs {
    /// Settings.
    pub config: ClusterConfig,
    /// Where views are published.
    pub view: watch::Sender<Arc<View>>,
}

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// How long a routed room change may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl ClusterState {
    fn me(&self) -> Arc<str> {
        self.view.borrow().me.clone()
    }

    /// Takes in a peer's heartbeat. True when it lists this node again
    /// after the peer may have left it out (see `lost`).
    fn heard(&mut self, hb: Heartbeat) -> bool {
        let me = self.me();
        let name: Arc<str> = Arc::from(hb.node.as_str());
        let lists = |hb: &Heartbeat| hb.members.iter().any(|m| **m == *me);
        let lists_me = lists(&hb);
        let peer = self.peers.entry(name.clone()).or_insert(Peer {
            cell: None,
            last: None,
        });
        let listed_me = peer.last.as_ref().is_some_and(|(_, old)| lists(old));
        peer.last = Some((Instant::now(), hb));
        if lists_me {
            self.lost.remove(&name)
        } else {
            if listed_me {
                self.lost.insert(name);
            }
            false
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        let (sessions, rooms) = self
            .listeners
            .as_ref()
            .map(|l| (l.stats)())
            .unwrap_or((0, 0));
        Heartbeat {
            node: self.config.node_name.clone(),
            http_addr: self.config.http_addr.clone(),
            sessions,
            rooms,
            leaving: self.leaving,
            members: self
                .view
                .borrow()
                .members
                .iter()
                .map(|m| m.to_string())
                .collect(),
            cluster_addr: self.config.cluster_addr.clone(),
            peer_addrs: self
                .live_heartbeats()
                .filter_map(|hb| hb.cluster_addr.clone())
                .collect(),
            settled: self.settled,
        }
    }

    /// The last heartbeats of the live peers.
    fn live_heartbeats(&self) -> impl Iterator<Item = &Heartbeat> {
        self.peers
            .values()
            .filter(|p| self.alive(p))
            .filter_map(|p| p.last.as_ref().map(|(_, hb)| hb))
    }

    /// The cluster addresses of the live peers and of their live peers
    /// (sorted, once each; this node's own left out).
    fn known_addrs(&self) -> std::collections::BTreeSet<String> {
        self.live_heartbeats()
            .flat_map(|hb| hb.cluster_addr.iter().chain(&hb.peer_addrs))
            .filter(|a| Some(*a) != self.config.cluster_addr.as_ref())
            .cloned()
            .collect()
    }

    /// Whether this node has finished joining: it has joined, and every node
    /// its live peers count as a member is live here too. Until then a node
    /// that just came up may not yet hear some members, and a room it owned
    /// would fan out to only part of the cluster; so it owns no rooms (its
    /// peers place none on it, it places none on itself) but still receives
    /// deliveries. Settling happens once: a member that died and that a peer
    /// still reports later must not take rooms away from a running node.
    fn settle(&mut self, members: &[Arc<str>], joined: bool) {
        if self.settled || !joined {
            return;
        }
        if self.sees_every_member_peers_see(members) {
            self.settled = true;
            tracing::info!(members = ?members, "joined the cluster: this node now owns rooms");
        }
    }

    /// Whether `members` (this node's live members, itself included) holds
    /// every member the live peers' last heartbeats report.
    fn sees_every_member_peers_see(&self, members: &[Arc<str>]) -> bool {
        self.live_heartbeats()
            .flat_map(|hb| hb.members.iter())
            .all(|m| members.iter().any(|x| **x == **m))
    }

    /// Whether every live peer's last heartbeat lists this node.
    fn seen_by_every_peer(&self) -> bool {
        let me = self.me();
        self.live_heartbeats()
            .all(|hb| hb.members.iter().any(|m| **m == *me))
    }

    /// The members rooms are placed on: settled ones (this node by its own
    /// state, peers by their last heartbeat); all members while none is.
    fn owners(&self, members: &[Arc<str>]) -> Vec<Arc<str>> {
        let me = self.me();
        let owners: Vec<Arc<str>> = members
            .iter()
            .filter(|m| {
                if **m == me {
                    self.settled
                } else {
                    self.peers
                        .get(*m)
                        .and_then(|p| p.last.as_ref())
                        .is_some_and(|(_, hb)| hb.settled)
                }
            })
            .cloned()
            .collect();
        if owners.is_empty() {
            members.to_vec()
        } else {
            owners
        }
    }

    /// Finds peers through their process groups.
    fn discover(&mut self) {
        let me = self.me();
        let mut seen: BTreeMap<Arc<str>, ActorCell> = BTreeMap::new();
        for group in ractor::pg::which_groups() {
            let Some(name) = group.strip_prefix(NODE_GROUP_PREFIX) else {
                continue;
            };
            if *name == *me {
                continue;
            }
            if let Some(cell) = ractor::pg::get_members(&group).into_iter().next() {
                seen.insert(Arc::from(name), cell);
            }
        }
        for (name, peer) in self.peers.iter_mut() {
            peer.set_cell(seen.remove(name));
        }
        for (name, cell) in seen {
            self.peers.insert(
                name,
                Peer {
                    cell: Some(cell),
                    last: None,
                },
            );
        }
        // Forget peers that are gone and silent for long.
        let timeout = self.config.failure_timeout * 10;
        self.peers.retain(|_, p| {
            p.cell.is_some() || p.last.as_ref().is_some_and(|(t, _)| t.elapsed() < timeout)
        });
    }

    fn alive(&self, p: &Peer) -> bool {
        p.cell.is_some()
            && p.last
                .as_ref()
                .is_some_and(|(t, hb)| t.elapsed() < self.config.failure_timeout && !hb.leaving)
    }

    fn publish(&mut self) {
        let me = self.me();
        let mut members: Vec<Arc<str>> = vec![me.clone()];
        let mut inboxes = HashMap::new();
        for (name, p) in &self.peers {
            if self.alive(p) {
                members.push(name.clone());
                if let Some(c) = &p.cell {
                    inboxes.insert(name.clone(), c.clone());
                }
            }
        }
        members.sort();
        // Joined once this node sees every member its live peers see, and
        // they all see it (each one's last heartbeat lists it): until a
        // member counts this node live, it drops what it sends here (acks,
        // answers, deliveries). A node that finds no peer within the grace
        // serves alone, unless a seed refused it within the grace: then the
        // cluster is there and does not take this node (serving alone
        // beside it would split the store's rooms between two views).
        let refused = self
            .refused_at
            .is_some_and(|t| t.elapsed() < self.config.join_grace);
        let joined = !self.config.has_seeds
            || (members.len() > 1
                && self.seen_by_every_peer()
                && self.sees_every_member_peers_see(&members))
            || (members.len() == 1 && self.started.elapsed() >= self.config.join_grace && !refused)
            || self.view.borrow().joined;
        self.settle(&members, joined);
        let owners = self.owners(&members);
        let old = self.view.borrow().clone();
        if old.members == members && old.joined == joined && old.owners == owners {
            // Same members; refresh the inbox handles silently.
            if old.inboxes.len() != inboxes.len() {
                self.view.send_replace(Arc::new(View {
                    me,
                    members,
                    owners,
                    inboxes,
                    joined,
                }));
            }
            return;
        }
        let up: Vec<Arc<str>> = members
            .iter()
            .filter(|m| !old.members.contains(m))
            .cloned()
            .collect();
        let down: Vec<Arc<str>> = old
            .members
            .iter()
            .filter(|m| !members.contains(m))
            .cloned()
            .collect();
        // Changes waiting on a node that left get their answer now rather
        // than at the request timeout: it may or may not have made them.
        for (_, p) in self.pending.extract_if(|_, p| down.contains(&p.node)) {
            let err = ChatError::Unavailable(
                "the room's node left before answering; the change may have been made: \
                 check the room, then retry"
                    .into(),
            );
            let _ = p.reply.send(Err(err));
        }
        for node in &down {
            let said_leaving = self
                .peers
                .get(node)
                .and_then(|p| p.last.as_ref())
                .is_some_and(|(_, hb)| hb.leaving);
            if !said_leaving {
                self.lost.insert(node.clone());
            }
        }
        let view = Arc::new(View {
            me,
            members,
            owners,
            inboxes,
            joined,
        });
        self.view.send_replace(view.clone());
        if !up.is_empty() || !down.is_empty() || old.owners != view.owners {
            tracing::info!(members = ?view.members, owners = ?view.owners, joined = ?up, left = ?down, "cluster membership changed");
            if let Some(l) = &self.listeners {
                (l.on_change)(&up, &down, &view);
            }
        }
    }

    /// Finds peers, re-evaluates the view, heartbeats, and forgets
    /// requests that timed out.
    fn tick(&mut self) {
        self.discover();
        // The view first, then the heartbeat that reports it: a peer
        // dropped in this tick must hear that it was left out (it may be a
        // paused node about to resume, which then reloads its rooms) even
        // if it is back before the next tick.
        self.publish();
        self.broadcast_heartbeat();
        self.pending
            .retain(|_, p| p.sent.elapsed() < REQUEST_TIMEOUT);
    }

    fn broadcast_heartbeat(&self) {
        let Some(wire) = encode(&PeerPayload::Heartbeat(self.heartbeat())) else {
            return;
        };
        for p in self.peers.values() {
            if let Some(cell) = &p.cell {
                let _ = cell.send_message(super::wire::PeerWire(wire.0.clone()));
            }
        }
    }
}

impl Actor for ClusterActor {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = ClusterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ClusterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.config.heartbeat, || ClusterMsg::Tick);
        Ok(ClusterState {
            config: args.config,
            started: Instant::now(),
            peers: BTreeMap::new(),
            view: args.view,
            listeners: None,
            pending: HashMap::new(),
            leaving: false,
            settled: false,
            lost: HashSet::new(),
            refused_at: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterMsg::Tick => state.tick(),
            ClusterMsg::Heartbeat(hb) => {
                let name: Arc<str> = Arc::from(hb.node.as_str());
                if *name != *state.me() {
                    let first = state.peers.get(&name).is_none_or(|p| p.last.is_none());
                    let back = state.heard(hb);
                    if first {
                        state.discover();
                    }
                    // A first heartbeat, or a `leaving` one, changes the view at once.
                    state.publish();
                    if back {
                        tracing::info!(peer = %name, "a peer has this node in its view again; rooms here start over from storage");
                        if let Some(l) = &state.listeners {
                            (l.on_back_in_view)(&name);
                        }
                    }
                }
            }
            ClusterMsg::Request {
                node,
                room_id,
                by,
                cmd,
                reply,
            } => {
                let id = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
                let payload = PeerPayload::Request {
                    id,
                    origin: state.config.node_name.clone(),
                    room_id,
                    by,
                    cmd,
                    hops: 0,
                };
                let cell = state.view.borrow().inboxes.get(&node).cloned();
                let sent = match (cell, encode(&payload)) {
                    (Some(cell), Some(wire)) => cell.send_message(wire).is_ok(),
                    _ => false,
                };
                if sent {
                    let request = PendingRequest {
                        sent: Instant::now(),
                        node,
                        reply,
                    };
                    state.pending.insert(id, request);
                } else {
                    let err = ChatError::Unavailable("room owner unreachable, retry".into());
                    let _ = reply.send(Err(err));
                }
            }
            ClusterMsg::Response { id, result } => {
                if let Some(p) = state.pending.remove(&id) {
                    let _ = p.reply.send(result);
                }
            }
            ClusterMsg::SetListeners(l) => state.listeners = Some(l),
            ClusterMsg::Leave(reply) => {
                state.leaving = true;
                state.broadcast_heartbeat();
                let _ = reply.send(());
            }
            ClusterMsg::Addresses(reply) => {
                let _ = reply.send(state.known_addrs().into_iter().collect());
            }
            ClusterMsg::SeedRefused => {
                state.refused_at = Some(Instant::now());
            }
            ClusterMsg::Status(reply) => {
                let me = state.me();
                let (sessions, rooms) = state
                    .listeners
                    .as_ref()
                    .map(|l| (l.stats)())
                    .unwrap_or((0, 0));
                let mut out = vec![MemberStatus {
                    node: me.to_string(),
                    state: if state.leaving {
                        "leaving".into()
                    } else {
                        "self".into()
                    },
                    http_addr: state.config.http_addr.clone(),
                    sessions,
                    rooms,
                    last_heartbeat_ms: 0,
                }];
                for (name, p) in &state.peers {
                    let (st, addr, s, r, ms) = match &p.last {
                        Some((t, hb)) => {
                            let st = if hb.leaving {
                                "leaving"
                            } else if state.alive(p) {
                                "alive"
                            } else {
                                "suspect"
                            };
                            (
                                st,
                                hb.http_addr.clone(),
                                hb.sessions,
                                hb.rooms,
                                t.elapsed().as_millis() as u64,
                            )
                        }
                        None => ("joining", String::new(), 0, 0, 0),
                    };
                    out.push(MemberStatus {
                        node: name.to_string(),
                        state: st.into(),
                        http_addr: addr,
                        sessions: s,
                        rooms: r,
                        last_heartbeat_ms: ms,
                    });
                }
                let _ = reply.send(out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An actor that does nothing: peers need a live inbox cell.
    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    fn state(me: &str) -> ClusterState {
        let (view, _) = watch::channel(Arc::new(View::alone(me, false)));
        ClusterState {
            config: ClusterConfig {
                node_name: me.into(),
                http_addr: String::new(),
                cluster_addr: Some(format!("{me}:9000")),
                has_seeds: true,
                heartbeat: Duration::from_millis(100),
                failure_timeout: Duration::from_secs(60),
                join_grace: Duration::from_secs(60),
            },
            started: Instant::now(),
            peers: BTreeMap::new(),
            view,
            listeners: None,
            pending: HashMap::new(),
            leaving: false,
            settled: false,
            lost: HashSet::new(),
            refused_at: None,
        }
    }

    /// `node`'s heartbeat, reporting `members`, heard now over a live cell.
    async fn hear(s: &mut ClusterState, node: &str, members: &[&str], settled: bool) {
        let (cell, _) = Actor::spawn(None, Idle, ()).await.expect("spawn");
        let hb = Heartbeat {
            node: node.into(),
            http_addr: String::new(),
            sessions: 0,
            rooms: 0,
            leaving: false,
            members: members.iter().map(|m| m.to_string()).collect(),
            cluster_addr: None,
            peer_addrs: Vec::new(),
            settled,
        };
        s.peers.insert(
            Arc::from(node),
            Peer {
                cell: Some(cell.get_cell()),
                last: Some((Instant::now(), hb)),
            },
        );
        s.publish();
    }

    fn names(v: &[Arc<str>]) -> Vec<&str> {
        v.iter().map(|m| &**m).collect()
    }

    #[tokio::test]
    async fn a_joining_node_owns_rooms_only_once_it_hears_every_member() {
        let mut s = state("n4");
        let all = ["n1", "n2", "n3"];
        // The seed answers first: n4 is live but does not hear n2 and n3 yet.
        hear(&mut s, "n1", &all, true).await;
        let view = s.view.borrow().clone();
        assert_eq!(names(&view.members), ["n1", "n4"]);
        assert_eq!(names(&view.owners), ["n1"], "n4 owns nothing yet");
        assert!(!s.heartbeat().settled);
        hear(&mut s, "n2", &all, true).await;
        assert_eq!(names(&s.view.borrow().owners), ["n1", "n2"]);
        // It hears everyone its peers know, but n1 and n2 do not count it
        // live yet (they would drop what they send it): not yet.
        let everyone = ["n1", "n2", "n3", "n4"];
        hear(&mut s, "n3", &everyone, true).await;
        assert_eq!(names(&s.view.borrow().owners), ["n1", "n2", "n3"]);
        assert!(!s.view.borrow().joined);
        assert!(!s.heartbeat().settled);
        // Once every peer lists it: it owns rooms and says so.
        hear(&mut s, "n1", &everyone, true).await;
        hear(&mut s, "n2", &everyone, true).await;
        let view = s.view.borrow().clone();
        assert!(view.joined);
        assert_eq!(names(&view.owners), ["n1", "n2", "n3", "n4"]);
        let hb = s.heartbeat();
        assert!(hb.settled);
        assert_eq!(hb.members, ["n1", "n2", "n3", "n4"]);
        // Settled for good: a peer still reporting a member this node does
        // not count (one that died) does not take its rooms away.
        hear(&mut s, "n2", &["n1", "n2", "n3", "n4", "n5"], true).await;
        assert_eq!(names(&s.view.borrow().owners), ["n1", "n2", "n3", "n4"]);
    }

    #[tokio::test]
    async fn a_peer_that_reconnects_or_restarts_must_say_again_that_it_settled() {
        let mut s = state("n1");
        hear(&mut s, "n2", &["n1", "n2"], true).await;
        assert_eq!(names(&s.view.borrow().owners), ["n1", "n2"]);
        let peer = s.peers.get_mut("n2").expect("n2");
        let same = peer.cell.clone();
        peer.set_cell(same);
        assert!(peer.last.as_ref().is_some_and(|(_, hb)| hb.settled));
        // Another inbox under the same name: a restarted node.
        let (other, _) = Actor::spawn(None, Idle, ()).await.expect("spawn");
        peer.set_cell(Some(other.get_cell()));
        assert!(peer.last.as_ref().is_some_and(|(_, hb)| !hb.settled));
        s.publish();
        assert_eq!(names(&s.view.borrow().owners), ["n1"]);
        // Its own heartbeat settles it again.
        hear(&mut s, "n2", &["n1", "n2"], true).await;
        assert_eq!(names(&s.view.borrow().owners), ["n1", "n2"]);
        // A closed connection too.
        let peer = s.peers.get_mut("n2").expect("n2");
        peer.set_cell(None);
        assert!(peer.last.as_ref().is_some_and(|(_, hb)| !hb.settled));
    }

    #[tokio::test]
    async fn a_peer_that_had_left_this_node_out_is_back_when_it_lists_it_again() {
        let mut s = state("n1");
        let from_n2 = |members: &[&str]| Heartbeat {
            node: "n2".into(),
            http_addr: String::new(),
            sessions: 0,
            rooms: 0,
            leaving: false,
            members: members.iter().map(|m| m.to_string()).collect(),
            cluster_addr: None,
            peer_addrs: Vec::new(),
            settled: true,
        };
        // A new node that lists this one for the first time changed nothing here.
        assert!(!s.heard(from_n2(&["n2"])));
        assert!(!s.heard(from_n2(&["n1", "n2"])));
        // It leaves this node out (it lost sight of it), then lists it again.
        assert!(!s.heard(from_n2(&["n2"])));
        assert!(s.heard(from_n2(&["n1", "n2"])));
        assert!(!s.heard(from_n2(&["n1", "n2"])), "once");
        // This node loses sight of it (its connection closes): it may have
        // lost sight of this node too, so its next heartbeat brings it back.
        hear(&mut s, "n2", &["n1", "n2"], true).await;
        s.peers.get_mut("n2").expect("n2").set_cell(None);
        s.publish();
        assert_eq!(names(&s.view.borrow().members), ["n1"]);
        assert!(s.heard(from_n2(&["n1", "n2"])));
        // A peer that said it was leaving (a drain) owned nothing meanwhile.
        hear(&mut s, "n2", &["n1", "n2"], true).await;
        if let Some((_, hb)) = s.peers.get_mut("n2").and_then(|p| p.last.as_mut()) {
            hb.leaving = true;
        }
        s.publish();
        assert_eq!(names(&s.view.borrow().members), ["n1"]);
        assert!(!s.heard(from_n2(&["n1", "n2"])));
    }

    #[tokio::test]
    async fn peers_that_have_not_settled_own_nothing_unless_no_one_has() {
        let mut s = state("n1");
        // Nodes starting together: n2 reports n3, which n1 does not hear
        // yet; no one has settled, so every member owns rooms.
        hear(&mut s, "n2", &["n2", "n3"], false).await;
        assert!(!s.settled);
        assert_eq!(names(&s.view.borrow().owners), ["n1", "n2"]);
        // n1 hears n3 too, and settles once both count it live; from then
        // on only settled members own rooms.
        hear(&mut s, "n3", &["n1", "n3"], false).await;
        assert!(!s.settled, "n2 does not count n1 live yet");
        hear(&mut s, "n2", &["n1", "n2", "n3"], false).await;
        assert!(s.settled);
        assert_eq!(names(&s.view.borrow().owners), ["n1"]);
        hear(&mut s, "n2", &["n1", "n2", "n3"], true).await;
        assert_eq!(names(&s.view.borrow().owners), ["n1", "n2"]);
    }

    #[tokio::test]
    async fn addresses_are_learned_from_live_peers_and_never_second_hand() {
        let mut s = state("n1");
        let heartbeat = |node: &str, peers: &[&str]| Heartbeat {
            node: node.into(),
            http_addr: String::new(),
            sessions: 0,
            rooms: 0,
            leaving: false,
            members: vec![node.into()],
            cluster_addr: Some(format!("{node}:9000")),
            peer_addrs: peers.iter().map(|p| format!("{p}:9000")).collect(),
            settled: true,
        };
        // n2 hears n1 and n3; its address and n3's are what n1 dials.
        hear(&mut s, "n2", &["n1", "n2"], true).await;
        s.heard(heartbeat("n2", &["n1", "n3"]));
        assert_eq!(
            s.known_addrs().into_iter().collect::<Vec<_>>(),
            ["n2:9000", "n3:9000"]
        );
        // n1 passes on only what it hears itself: n2, not n3.
        assert_eq!(s.heartbeat().cluster_addr.as_deref(), Some("n1:9000"));
        assert_eq!(s.heartbeat().peer_addrs, ["n2:9000"]);
        // Once n2 stops hearing n3, n3's address is gone here too.
        s.heard(heartbeat("n2", &["n1"]));
        assert_eq!(s.known_addrs().into_iter().collect::<Vec<_>>(), ["n2:9000"]);
    }

    /// A peer inbox that keeps the heartbeats it is sent.
    struct Recorder;

    impl Actor for Recorder {
        type Msg = super::super::wire::PeerWire;
        type State = Arc<std::sync::Mutex<Vec<Heartbeat>>>;
        type Arguments = Arc<std::sync::Mutex<Vec<Heartbeat>>>;

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            got: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(got)
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            msg: Self::Msg,
            got: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let Ok(PeerPayload::Heartbeat(hb)) = super::super::wire::decode(&msg) {
                got.lock().unwrap().push(hb);
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_tick_that_drops_a_silent_peer_sends_it_a_heartbeat_without_it() {
        let peer = "tick-test-peer";
        let mut s = state("n1");
        s.config.failure_timeout = Duration::from_millis(200);
        let got = Arc::default();
        let (inbox, _) = Actor::spawn(None, Recorder, Arc::clone(&got))
            .await
            .unwrap();
        let group = format!("{NODE_GROUP_PREFIX}{peer}");
        ractor::pg::join(group.clone(), vec![inbox.get_cell()]);
        s.discover();
        s.heard(Heartbeat {
            node: peer.into(),
            http_addr: String::new(),
            sessions: 0,
            rooms: 0,
            leaving: false,
            members: vec!["n1".into(), peer.into()],
            cluster_addr: None,
            peer_addrs: Vec::new(),
            settled: true,
        });
        s.publish();
        assert!(s.view.borrow().members.iter().any(|m| &**m == peer));
        // The peer falls silent (paused); the next tick drops it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.tick();
        assert!(!s.view.borrow().members.iter().any(|m| &**m == peer));
        // The heartbeat of that same tick already leaves it out, so it
        // learns it was dropped even if it is back before the next tick.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let last = got.lock().unwrap().last().cloned().expect("a heartbeat");
        assert!(
            !last.members.iter().any(|m| m == peer),
            "{:?}",
            last.members
        );
        ractor::pg::leave(group, vec![inbox.get_cell()]);
        inbox.stop(None);
    }
}
