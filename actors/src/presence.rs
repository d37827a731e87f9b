//! Presence: who is online, and telling the people who share a room.
//!
//! A user is online while at least one of their sessions exists. The first
//! session makes them `online`, the last one leaving makes them `offline`
//! and persists `last_seen`. Each change is sent only to users who share a
//! room with that user (looked up from storage off the actor's thread).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use parley_protocol::time::{now_millis, to_rfc3339};
use parley_protocol::ws::{ServerEvent, Status};
use parley_storage::Store;

use crate::cluster::wire::PeerPayload;
use crate::cluster::{Cluster, View};
use crate::dispatcher::{deliver_everywhere, DispatcherMsg};
use crate::outbound::Outbound;

/// Messages of the presence actor.
pub enum PresenceMsg {
    /// A session of the user started.
    Connected(Arc<str>),
    /// A session of the user ended.
    Disconnected(Arc<str>),
    /// Another node's online users (when it joins).
    RemoteSnapshot {
        /// The node.
        node: String,
        /// Its online users.
        users: Vec<String>,
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
    announcements: mpsc::Sender<Announcement>,
    sessions: HashMap<Arc<str>, usize>,
    remote: HashMap<Arc<str>, HashSet<Arc<str>>>,
    cluster: Cluster,
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
    // as the store can serve at once.
    let mut members = stream::iter(rooms)
        .map(|room| async move { store.members(&room).await })
        .buffer_unordered(store.read_parallelism());
    let mut out = BTreeSet::new();
    while let Some(read) = members.next().await {
        match read {
            Ok(members) if members.len() <= max_room => {
                out.extend(members.into_iter().map(|m| m.user_id))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "presence: cannot read members"),
        }
    }
    out.remove(user_id);
    out.into_iter().map(|u| Arc::from(u.as_str())).collect()
}

/// One presence change to announce.
type Announcement = (Arc<str>, Status, i64);

/// Announces presence changes one at a time, in the order they happened, off
/// the actor's thread (each needs storage reads to find the user's contacts).
async fn announcer(
    max_room: usize,
    store: Arc<dyn Store>,
    dispatcher: ActorRef<DispatcherMsg>,
    cluster: Cluster,
    mut rx: mpsc::Receiver<Announcement>,
) {
    while let Some((user, status, at)) = rx.recv().await {
        if status == Status::Offline {
            if let Err(e) = store.set_last_seen(&user, at).await {
                tracing::warn!(error = %e, "could not persist last_seen");
            }
        }
        let users = contacts(store.as_ref(), &user, max_room).await;
        if users.is_empty() {
            continue;
        }
        let event = ServerEvent::Presence {
            user_id: user.to_string(),
            status,
            last_seen: Some(to_rfc3339(at)),
        };
        // Contacts may be connected to any node.
        deliver_everywhere(
            &cluster,
            &dispatcher,
            Arc::from(users),
            vec![Outbound::Frame(Arc::from(event.to_json()))],
            None,
            None,
        );
    }
}

impl PresenceState {
    fn online_elsewhere(&self, user: &str) -> bool {
        self.remote.values().any(|users| users.contains(user))
    }

    fn announce(&self, user: Arc<str>, status: Status, at: i64) {
        if self.announcements.try_send((user, status, at)).is_err() {
            tracing::warn!("presence announcements backlogged; dropping one");
        }
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
        let (tx, rx) = mpsc::channel(10_000);
        let cluster = args.cluster.clone();
        tokio::spawn(announcer(
            args.max_room,
            args.store,
            args.dispatcher,
            args.cluster,
            rx,
        ));
        Ok(PresenceState {
            announcements: tx,
            sessions: HashMap::new(),
            remote: HashMap::new(),
            cluster,
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
                    if !state.online_elsewhere(&user) {
                        state.announce(user, Status::Online, now_millis());
                    }
                }
            }
            PresenceMsg::Disconnected(user) => {
                if let Some(n) = state.sessions.get_mut(&user) {
                    *n -= 1;
                    if *n == 0 {
                        state.sessions.remove(&user);
                        state.cluster.broadcast(&PeerPayload::PresenceChange {
                            node: state.cluster.me().to_string(),
                            user: user.to_string(),
                            online: false,
                        });
                        if !state.online_elsewhere(&user) {
                            state.announce(user, Status::Offline, now_millis());
                        }
                    }
                }
            }
            PresenceMsg::IsOnline(user, reply) => {
                let online =
                    state.sessions.contains_key(user.as_str()) || state.online_elsewhere(&user);
                let _ = reply.send(online);
            }
            PresenceMsg::RemoteSnapshot { node, users } => {
                let set = users.into_iter().map(|u| Arc::from(u.as_str())).collect();
                state.remote.insert(Arc::from(node.as_str()), set);
            }
            PresenceMsg::RemoteChange { node, user, online } => {
                let set = state.remote.entry(Arc::from(node.as_str())).or_default();
                if online {
                    set.insert(Arc::from(user.as_str()));
                } else {
                    set.remove(user.as_str());
                }
            }
            PresenceMsg::Membership(up, down, view) => {
                let local: Vec<String> = state.sessions.keys().map(|u| u.to_string()).collect();
                for node in &up {
                    state.cluster.send(
                        node,
                        &PeerPayload::PresenceSnapshot {
                            node: view.me.to_string(),
                            users: local.clone(),
                        },
                    );
                }
                let mut gone: Vec<Arc<str>> = Vec::new();
                for node in &down {
                    if let Some(users) = state.remote.remove(node) {
                        gone.extend(users);
                    }
                }
                // The users of a dead node go offline unless connected elsewhere;
                // one node (the first live one) announces it.
                let announcer = view.members.first().is_some_and(|m| *m == view.me);
                let now = now_millis();
                for user in gone {
                    if announcer
                        && !state.sessions.contains_key(&user)
                        && !state.online_elsewhere(&user)
                    {
                        state.announce(user, Status::Offline, now);
                    }
                }
            }
            PresenceMsg::Count(reply) => {
                let _ = reply.send(state.sessions.len());
            }
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
