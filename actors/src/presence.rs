//! Presence: who is online, and telling the people who share a room.
//!
//! A user is online while at least one of their sessions exists, on any
//! node. The first session makes them `online`, the last one leaving makes
//! them `offline` and persists `last_seen`. Each node tells every other when
//! a user's first session on it starts and its last one ends; one node per
//! user (placed by [`View::announces_presence_of`]) turns these into the
//! announcements, so sessions that start or end together on different nodes
//! still make one change each. Each change is sent only to users who share a
//! room with that user (looked up from storage off the actor's thread, by an
//! announcer that drains a [`PresenceQueue`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::stream::{self, FuturesUnordered, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use parley_protocol::time::{now_millis, to_rfc3339};
use parley_protocol::ws::{ServerEvent, Status};
use parley_storage::Store;

use crate::cluster::wire::PeerPayload;
use crate::cluster::{Cluster, View};
use crate::dispatcher::{deliver_everywhere, DispatcherMsg};
use crate::metrics::METRICS;
use crate::outbound::Outbound;
use crate::presence_queue::{Audience, Change, PresenceQueue, Taken};

/// Messages of the presence actor.
pub enum PresenceMsg {
    /// A session of the user started.
    Connected(Arc<str>),
    /// A session of the user ended.
    Disconnected(Arc<str>),
    /// Another node's online users (when it comes into that node's view).
    RemoteSnapshot {
        /// The node.
        node: String,
        /// Its online users.
        users: Vec<String>,
        /// Answer with this node's own snapshot.
        reply: bool,
    },
    /// A user came online or went offline on another node.
    RemoteChange {
        /// The node.
        node: String,
        /// The user.
        user: String,
        /// Online there now.
        online: bool,
    },
    /// Membership changed: (joined nodes, left nodes, new view).
    Membership(Vec<Arc<str>>, Vec<Arc<str>>, Arc<View>),
    /// Whether the user has any session.
    IsOnline(String, RpcReplyPort<bool>),
    /// Number of users online.
    Count(RpcReplyPort<usize>),
    /// This node is leaving the cluster (a drain): its peers announce its
    /// users offline when it leaves their view, so from now on its own
    /// sessions' ends are not announced to them a second time.
    Leaving,
}

/// Start-up arguments of the presence actor.
pub struct PresenceArgs {
    /// Storage (contacts and last-seen).
    pub store: Arc<dyn Store>,
    /// Local dispatcher.
    pub dispatcher: ActorRef<DispatcherMsg>,
    /// Other nodes.
    pub cluster: Cluster,
    /// Rooms above this many members carry no presence.
    pub max_room: usize,
}

/// The presence actor.
pub struct Presence;

/// Session counts per online user.
pub struct PresenceState {
    announcements: QueueHandle,
    sessions: HashMap<Arc<str>, usize>,
    remote: HashMap<Arc<str>, HashSet<Arc<str>>>,
    cluster: Cluster,
    /// The node is draining ([`PresenceMsg::Leaving`]).
    leaving: bool,
}

/// Users who share at least one room of at most `max_room` members with
/// `user_id` (not including them). Larger rooms carry no presence: in a room
/// of thousands, every join and leave would go to everyone.
pub async fn contacts(store: &dyn Store, user_id: &str, max_room: usize) -> Vec<Arc<str>> {
    let rooms = match store.user_rooms(user_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "presence: cannot read rooms");
            return Vec::new();
        }
    };
    // Several rooms at a time (on ScyllaDB each is a round trip), as many
    // as the store can serve at once. One id past `max_room` is enough to
    // know a room is too large: a room of thousands costs as little to skip
    // as a small one costs to read.
    let enough = max_room.saturating_add(1);
    let mut members = stream::iter(rooms)
        .map(|room| async move { store.member_ids_up_to(&room, enough).await })
        .buffer_unordered(store.read_parallelism());
    let mut out = BTreeSet::new();
    while let Some(read) = members.next().await {
        match read {
            Ok(ids) if ids.len() <= max_room => out.extend(ids),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "presence: cannot read members"),
        }
    }
    out.remove(user_id);
    out.into_iter().map(|u| Arc::from(u.as_str())).collect()
}

/// Users whose changes are announced at once. Each announcement is a few
/// storage reads; several in flight keep a connect storm from piling up
/// behind one slow read, and one user's changes still go out in order.
const ANNOUNCED_AT_ONCE: usize = 8;

/// Where one announcement goes.
#[derive(Clone)]
struct Announcer {
    max_room: usize,
    store: Arc<dyn Store>,
    dispatcher: ActorRef<DispatcherMsg>,
    cluster: Cluster,
}

impl Announcer {
    /// Persists `last_seen` when the user went offline and tells their
    /// contacts, wherever they are connected. Gives the user back when done.
    async fn announce(self, user: Arc<str>, change: Change) -> Arc<str> {
        let Change {
            status,
            at,
            audience,
        } = change;
        if status == Status::Offline {
            if let Err(e) = self.store.set_last_seen(&user, at).await {
                tracing::warn!(error = %e, "could not persist last_seen");
            }
        }
        let users = contacts(self.store.as_ref(), &user, self.max_room).await;
        if !users.is_empty() {
            let event = ServerEvent::Presence {
                user_id: user.to_string(),
                status,
                last_seen: Some(to_rfc3339(at)),
            };
            let users: Arc<[Arc<str>]> = Arc::from(users);
            let items = vec![Outbound::frame(Arc::from(event.to_json()))];
            match audience {
                Audience::Everyone => {
                    deliver_everywhere(&self.cluster, &self.dispatcher, users, items, None, None)
                }
                Audience::ThisNode => {
                    let _ = self.dispatcher.cast(DispatcherMsg::Deliver {
                        users,
                        items,
                        except_user: None,
                    });
                }
            }
        }
        user
    }

    /// Announces what `queue` holds, [`ANNOUNCED_AT_ONCE`] users at a time,
    /// until it is closed and empty.
    async fn run(self, queue: Arc<PresenceQueue>) {
        let mut sending = FuturesUnordered::new();
        loop {
            while sending.len() < ANNOUNCED_AT_ONCE {
                match queue.take() {
                    Taken::Change(user, change) => {
                        sending.push(self.clone().announce(user, change))
                    }
                    Taken::Wait => break,
                    Taken::Finished => return,
                }
            }
            METRICS
                .presence_waiting
                .store(queue.waiting() as i64, Ordering::Relaxed);
            tokio::select! {
                Some(user) = sending.next(), if !sending.is_empty() => queue.done(&user),
                _ = queue.changed() => {}
            }
        }
    }
}

/// Closes the announcer's queue when the presence actor's state goes away,
/// so the announcer sends what is left and stops.
struct QueueHandle(Arc<PresenceQueue>);

impl Drop for QueueHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl PresenceState {
    fn online_elsewhere(&self, user: &str) -> bool {
        self.remote.values().any(|users| users.contains(user))
    }

    fn online_anywhere(&self, user: &str) -> bool {
        self.sessions.contains_key(user) || self.online_elsewhere(user)
    }

    /// Whether this node announces the user's changes (see the module doc).
    fn announces(&self, user: &str) -> bool {
        self.cluster.view().announces_presence_of(user)
    }

    /// This node's users with a session, for another node; `reply` asks
    /// it for its own.
    fn snapshot(&self, reply: bool) -> PeerPayload {
        PeerPayload::PresenceSnapshot {
            node: self.cluster.me().to_string(),
            users: self.sessions.keys().map(|u| u.to_string()).collect(),
            reply,
        }
    }

    fn announce(&self, user: Arc<str>, status: Status, at: i64, audience: Audience) {
        self.announcements.0.push(
            user,
            Change {
                status,
                at,
                audience,
            },
        );
    }
}

impl Actor for Presence {
    type Msg = PresenceMsg;
    type State = PresenceState;
    type Arguments = PresenceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: PresenceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let queue = PresenceQueue::new();
        let cluster = args.cluster.clone();
        let announcer = Announcer {
            max_room: args.max_room,
            store: args.store,
            dispatcher: args.dispatcher,
            cluster: args.cluster,
        };
        tokio::spawn(announcer.run(queue.clone()));
        Ok(PresenceState {
            announcements: QueueHandle(queue),
            sessions: HashMap::new(),
            remote: HashMap::new(),
            cluster,
            leaving: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PresenceMsg::Connected(user) => {
                let n = state.sessions.entry(user.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    state.cluster.broadcast(&PeerPayload::PresenceChange {
                        node: state.cluster.me().to_string(),
                        user: user.to_string(),
                        online: true,
                    });
                    if !state.online_elsewhere(&user) && state.announces(&user) {
                        state.announce(user, Status::Online, now_millis(), Audience::Everyone);
                    }
                }
            }
            PresenceMsg::Disconnected(user) => {
                if let Some(n) = state.sessions.get_mut(&user) {
                    *n -= 1;
                    if *n == 0 {
                        state.sessions.remove(&user);
                        if state.leaving {
                            // The peers announce it when this node leaves
                            // their view; here only last_seen is kept (and
                            // this node's own clients, closing too, told).
                            state.announce(user, Status::Offline, now_millis(), Audience::ThisNode);
                            return Ok(());
                        }
                        state.cluster.broadcast(&PeerPayload::PresenceChange {
                            node: state.cluster.me().to_string(),
                            user: user.to_string(),
                            online: false,
                        });
                        if !state.online_elsewhere(&user) && state.announces(&user) {
                            state.announce(user, Status::Offline, now_millis(), Audience::Everyone);
                        }
                    }
                }
            }
            PresenceMsg::IsOnline(user, reply) => {
                let _ = reply.send(state.online_anywhere(&user));
            }
            PresenceMsg::RemoteSnapshot { node, users, reply } => {
                if reply {
                    state.cluster.send(&node, &state.snapshot(false));
                }
                let set: HashSet<Arc<str>> =
                    users.into_iter().map(|u| Arc::from(u.as_str())).collect();
                // Users this node counted offline: their node was out of its
                // view (and they were announced offline here), or was not in
                // it yet when they connected. Its own contacts hear they are
                // online; every other node does the same with the snapshot
                // it gets. (A node without sessions has no one to tell, as
                // when it has just started.)
                let back: Vec<Arc<str>> = if state.sessions.is_empty() {
                    Vec::new()
                } else {
                    set.iter()
                        .filter(|u| !state.sessions.contains_key(*u) && !state.online_elsewhere(u))
                        .cloned()
                        .collect()
                };
                // Users the node had and no longer has, without this node
                // hearing that they left: the node restarted before its
                // peers noticed it was gone, and its sessions died with it.
                let vanished: Vec<Arc<str>> = state
                    .remote
                    .get(node.as_str())
                    .map(|old| old.difference(&set).cloned().collect())
                    .unwrap_or_default();
                state.remote.insert(Arc::from(node.as_str()), set);
                let now = now_millis();
                for user in back {
                    state.announce(user, Status::Online, now, Audience::ThisNode);
                }
                let view = state.cluster.view();
                for user in vanished {
                    if view.announces_presence_without(&user, &node)
                        && !state.online_anywhere(&user)
                    {
                        state.announce(user, Status::Offline, now, Audience::Everyone);
                    }
                }
            }
            PresenceMsg::RemoteChange { node, user, online } => {
                let before = state.online_anywhere(&user);
                let user: Arc<str> = Arc::from(user.as_str());
                let set = state.remote.entry(Arc::from(node.as_str())).or_default();
                if online {
                    set.insert(user.clone());
                } else {
                    set.remove(&user);
                }
                // The node that announces this user's changes makes one
                // announcement per change, in the order the nodes' reports
                // reach it.
                if state.online_anywhere(&user) != before && state.announces(&user) {
                    let status = if online {
                        Status::Online
                    } else {
                        Status::Offline
                    };
                    state.announce(user, status, now_millis(), Audience::Everyone);
                }
            }
            PresenceMsg::Membership(up, down, view) => {
                if !up.is_empty() {
                    let snapshot = state.snapshot(true);
                    for node in &up {
                        state.cluster.send(node, &snapshot);
                    }
                }
                let mut gone: Vec<Arc<str>> = Vec::new();
                for node in &down {
                    if let Some(users) = state.remote.remove(node) {
                        gone.extend(users);
                    }
                }
                // The users of a dead node go offline unless connected
                // elsewhere; the node that announces each user's changes
                // (in the new view) announces it.
                let now = now_millis();
                for user in gone {
                    if view.announces_presence_of(&user) && !state.online_anywhere(&user) {
                        state.announce(user, Status::Offline, now, Audience::Everyone);
                    }
                }
            }
            PresenceMsg::Count(reply) => {
                let _ = reply.send(state.sessions.len());
            }
            PresenceMsg::Leaving => state.leaving = true,
        }
        Ok(())
    }
}

// Local-only message: never serialized (see `cluster` for what crosses nodes).
impl ractor::Message for PresenceMsg {}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_storage::conformance::{member, room, user};
    use parley_storage::embedded::EmbeddedStore;
    use parley_storage::UserRecord;

    async fn group(store: &dyn Store, users: &[&UserRecord]) {
        let members: Vec<_> = users.iter().map(|u| member(u, "member", 0)).collect();
        store
            .create_room(&room("group", "contacts"), &members)
            .await
            .unwrap();
    }

    /// More rooms than are read at once, each with its own partner, plus a
    /// room too large for presence: every small room's members and nobody
    /// from the large one.
    #[tokio::test]
    async fn contacts_come_from_every_small_room_and_no_large_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let me = user();
        let mut expected = Vec::new();
        for _ in 0..store.read_parallelism() * 10 {
            let partner = user();
            group(&store, &[&me, &partner]).await;
            expected.push(partner.user_id);
        }
        let crowd: Vec<UserRecord> = (0..10).map(|_| user()).collect();
        let mut large: Vec<&UserRecord> = crowd.iter().collect();
        large.push(&me);
        group(&store, &large).await;

        let got: Vec<String> = contacts(&store, &me.user_id, 5)
            .await
            .iter()
            .map(|u| u.to_string())
            .collect();
        expected.sort();
        assert_eq!(got, expected);
    }
}
