//! The node-local dispatcher: hands events to this node's sessions of given users.
//!
//! Room actors and the presence actor never address sessions one by one;
//! they give the dispatcher a list of user ids and one pre-serialized event,
//! and the dispatcher pushes it into each local session's bounded queue.
//! (In a cluster, each node's dispatcher is the single destination of a
//! room's batched fan-out to that node.)

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::cluster::wire::{AckKey, PeerPayload, WireItem};
use crate::cluster::Cluster;
use crate::metrics::{add, METRICS};
use crate::outbound::{Outbound, OutboundTx, Push};
use crate::session::SessionMsg;
use crate::system::Gauges;

/// A connected session as the dispatcher knows it.
#[derive(Clone)]
pub struct SessionEntry {
    /// The session's id.
    pub session_id: Arc<str>,
    /// Its outbound queue.
    pub tx: OutboundTx,
    /// Its actor (for acks of routed sends and membership news).
    pub actor: ActorRef<SessionMsg>,
}

/// Messages of the dispatcher.
pub enum DispatcherMsg {
    /// A session of `user_id` connected on this node.
    Register {
        /// Owner of the session.
        user_id: Arc<str>,
        /// The session.
        entry: SessionEntry,
    },
    /// A session ended.
    Unregister {
        /// Owner of the session.
        user_id: Arc<str>,
        /// The session's id.
        session_id: Arc<str>,
    },
    /// Push `items`, in order, to every local session of every user in
    /// `users`, except the sessions of `except_user`. A session gets all of
    /// them back to back, so its writer can send them in one socket write.
    Deliver {
        /// Recipients.
        users: Arc<[Arc<str>]>,
        /// The events, in order.
        items: Vec<Outbound>,
        /// A user whose sessions are skipped (e.g. the typist).
        except_user: Option<Arc<str>>,
    },
    /// A frame for one session (from another node); `ack` clears its retry entry.
    ToSession {
        /// Owner of the session.
        user_id: Arc<str>,
        /// The session.
        session_id: Arc<str>,
        /// The frame.
        json: Arc<str>,
        /// The routed send this answers, if any.
        ack: Option<AckKey>,
    },
    /// These nodes left the cluster: sessions re-route what they sent there.
    NodesDown(Vec<Arc<str>>),
    /// Ask every local session to close with a code (shutdown: 1012).
    CloseAll(u16),
    /// Number of local sessions and of distinct local users.
    Count(RpcReplyPort<(usize, usize)>),
}

/// Hands events for `users` to this node's dispatcher and, once, to every
/// other node's (which pass them to their own sessions of those users).
/// `trace` is the `traceparent` the other nodes continue.
pub fn deliver_everywhere(
    cluster: &Cluster,
    dispatcher: &ActorRef<DispatcherMsg>,
    users: Arc<[Arc<str>]>,
    items: Vec<Outbound>,
    except_user: Option<Arc<str>>,
    trace: Option<String>,
) {
    if items.is_empty() {
        return;
    }
    if cluster.has_peers() {
        cluster.broadcast(&PeerPayload::Deliver {
            users: users.iter().map(|u| u.to_string()).collect(),
            items: items.iter().filter_map(WireItem::from_outbound).collect(),
            except_user: except_user.as_ref().map(|u| u.to_string()),
            trace,
        });
    }
    let _ = dispatcher.cast(DispatcherMsg::Deliver {
        users,
        items,
        except_user,
    });
}

/// The dispatcher actor.
pub struct Dispatcher;

/// Local sessions by user.
pub struct DispatcherState {
    by_user: HashMap<Arc<str>, Vec<SessionEntry>>,
    sessions: usize,
    gauges: Arc<Gauges>,
}

impl DispatcherState {
    fn deliver(&mut self, users: &[Arc<str>], items: &[Outbound], except: Option<&Arc<str>>) {
        for user in users {
            if except.is_some_and(|e| e == user) {
                continue;
            }
            let Some(entries) = self.by_user.get_mut(user) else {
                continue;
            };
            let before = entries.len();
            // A session whose queue overflowed was told to close; drop it now
            // so it costs nothing more.
            entries.retain(|e| {
                for item in items {
                    match e.tx.push(item.clone()) {
                        Push::Queued => add(&METRICS.deliveries, 1),
                        // Counted by the writer as it closes (once per session).
                        Push::Overflow => return false,
                        Push::Closed => return false,
                    }
                }
                true
            });
            self.sessions -= before - entries.len();
            if entries.is_empty() {
                self.by_user.remove(user);
            }
        }
    }
}

impl Actor for Dispatcher {
    type Msg = DispatcherMsg;
    type State = DispatcherState;
    type Arguments = Arc<Gauges>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        gauges: Arc<Gauges>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DispatcherState {
            by_user: HashMap::new(),
            sessions: 0,
            gauges,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DispatcherMsg::Register { user_id, entry } => {
                state.by_user.entry(user_id).or_default().push(entry);
                state.sessions += 1;
            }
            DispatcherMsg::Unregister {
                user_id,
                session_id,
            } => {
                if let Some(entries) = state.by_user.get_mut(&user_id) {
                    let before = entries.len();
                    entries.retain(|e| e.session_id != session_id);
                    state.sessions -= before - entries.len();
                    if entries.is_empty() {
                        state.by_user.remove(&user_id);
                    }
                }
            }
            DispatcherMsg::Deliver {
                users,
                items,
                except_user,
            } => {
                state.deliver(&users, &items, except_user.as_ref());
            }
            DispatcherMsg::ToSession {
                user_id,
                session_id,
                json,
                ack,
            } => {
                if let Some(e) = state
                    .by_user
                    .get(&user_id)
                    .and_then(|entries| entries.iter().find(|e| e.session_id == session_id))
                {
                    e.tx.push(Outbound::frame(json));
                    if let Some(key) = ack {
                        let _ = e.actor.cast(SessionMsg::Acked(key));
                    }
                }
            }
            DispatcherMsg::NodesDown(nodes) => {
                for e in state.by_user.values().flatten() {
                    let _ = e.actor.cast(SessionMsg::PeersDown(nodes.clone()));
                }
            }
            DispatcherMsg::CloseAll(code) => {
                for e in state.by_user.values().flatten() {
                    e.tx.close(code);
                }
            }
            DispatcherMsg::Count(reply) => {
                let _ = reply.send((state.sessions, state.by_user.len()));
            }
        }
        state
            .gauges
            .sessions
            .store(state.sessions as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

// Local-only message: never serialized (see `cluster` for what crosses nodes).
impl ractor::Message for DispatcherMsg {}
