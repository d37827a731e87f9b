//! The inbox: the one actor per node that other nodes send to.
//!
//! It joins the process groups that make this node discoverable, decodes
//! each [`PeerWire`](super::wire::PeerWire), and hands the payload to the
//! local actor that owns the matter: the cluster actor (heartbeats,
//! answers), the dispatcher (events for local sessions), room actors
//! (requests for rooms this node owns), or presence.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use super::membership::ClusterMsg;
use super::wire::{decode, PeerPayload, PeerWire, WireCaller, WireItem, WireRoomOp};
use super::{Cluster, NODE_GROUP_PREFIX};
use crate::directory::DirectoryMsg;
use crate::dispatcher::DispatcherMsg;
use crate::error::ChatError;
use crate::metrics::{add, METRICS};
use crate::presence::PresenceMsg;
use crate::room::{Caller, ReplyTo};
use crate::room_cache::RoomCache;

/// Requests are forwarded at most this often when views disagree; then the
/// receiving node serves them itself (storage fencing keeps that safe).
const MAX_HOPS: u8 = 2;

/// Start-up arguments of the inbox.
pub struct InboxArgs {
    /// The cluster layer.
    pub cluster: Cluster,
    /// Local dispatcher.
    pub dispatcher: ActorRef<DispatcherMsg>,
    /// Local room directory.
    pub directory: ActorRef<DirectoryMsg>,
    /// Local presence.
    pub presence: ActorRef<PresenceMsg>,
}

/// The inbox actor.
pub struct Inbox;

/// Collaborators and a cache of local room actors.
pub struct InboxState {
    args: InboxArgs,
    rooms: RoomCache,
}

impl InboxState {
    fn reply_error(
        &self,
        origin: &WireCaller,
        r#ref: Option<String>,
        err: &ChatError,
        ack: Option<(String, String)>,
    ) {
        let caller = self.remote_caller(origin);
        caller.reply(
            parley_protocol::ws::ServerEvent::error(r#ref, err.code(), err.to_string()).to_json(),
            ack,
        );
    }

    fn remote_caller(&self, origin: &WireCaller) -> Caller {
        Caller {
            user_id: Arc::from(origin.user_id.as_str()),
            username: Arc::from(origin.username.as_str()),
            reply: ReplyTo::Remote {
                cluster: self.args.cluster.clone(),
                node: Arc::from(origin.node.as_str()),
                session_id: Arc::from(origin.session_id.as_str()),
            },
        }
    }

    async fn room_op(
        &mut self,
        room_id: String,
        op: WireRoomOp,
        origin: WireCaller,
        hops: u8,
        trace: Option<String>,
    ) {
        let view = self.args.cluster.view();
        let owner = view.owner(&room_id);
        if owner != view.me && hops < MAX_HOPS {
            let fwd = PeerPayload::Room {
                room_id,
                op,
                origin,
                hops: hops + 1,
                trace,
            };
            if self.args.cluster.send(&owner, &fwd) {
                return;
            }
            let PeerPayload::Room {
                room_id,
                op,
                origin,
                trace,
                ..
            } = fwd
            else {
                return;
            };
            return Box::pin(self.room_op(room_id, op, origin, MAX_HOPS, trace)).await;
        }
        let from = self.remote_caller(&origin);
        let (ack, r#ref) = match &op {
            WireRoomOp::Send {
                r#ref,
                client_msg_id,
                ..
            } => (
                Some((room_id.clone(), client_msg_id.clone())),
                r#ref.clone(),
            ),
            WireRoomOp::Watermark { r#ref, .. } => (None, r#ref.clone()),
            WireRoomOp::Typing { .. } => (None, None),
        };
        let msg = op.into_room_msg(from);
        if let Err(e) = self.rooms.cast(&self.args.directory, &room_id, msg).await {
            self.reply_error(&origin, r#ref, &e, ack);
        }
    }
}

impl Actor for Inbox {
    type Msg = PeerWire;
    type State = InboxState;
    type Arguments = InboxArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: InboxArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let me = args.cluster.me();
        ractor::pg::join(format!("{NODE_GROUP_PREFIX}{me}"), vec![myself.get_cell()]);
        Ok(InboxState {
            args,
            rooms: RoomCache::new(4096),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        wire: PeerWire,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        add(&METRICS.peer_messages_in, 1);
        add(&METRICS.peer_bytes_in, wire.0.len() as u64);
        let payload = match decode(&wire) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "dropping undecodable inter-node message");
                return Ok(());
            }
        };
        match payload {
            PeerPayload::Heartbeat(hb) => {
                let _ = state.args.cluster.actor().cast(ClusterMsg::Heartbeat(hb));
            }
            PeerPayload::Response { id, result } => {
                let _ = state
                    .args
                    .cluster
                    .actor()
                    .cast(ClusterMsg::Response { id, result });
            }
            PeerPayload::Deliver {
                users,
                items,
                except_user,
                trace,
            } => {
                let span = tracing::info_span!("peer.deliver", users = users.len());
                crate::trace::attach(&span, trace.as_deref());
                let _entered = span.enter();
                let users: Vec<Arc<str>> = users.iter().map(|u| Arc::from(u.as_str())).collect();
                let _ = state.args.dispatcher.cast(DispatcherMsg::Deliver {
                    users: Arc::from(users),
                    items: items.into_iter().map(WireItem::into_outbound).collect(),
                    except_user: except_user.map(|u| Arc::from(u.as_str())),
                });
            }
            PeerPayload::ToSession {
                user_id,
                session_id,
                json,
                ack,
            } => {
                let _ = state.args.dispatcher.cast(DispatcherMsg::ToSession {
                    user_id: Arc::from(user_id.as_str()),
                    session_id: Arc::from(session_id.as_str()),
                    json: Arc::from(json),
                    ack,
                });
            }
            PeerPayload::Room {
                room_id,
                op,
                origin,
                hops,
                trace,
            } => {
                let span = tracing::info_span!(
                    "peer.room_op",
                    room_id = %room_id,
                    from_node = %origin.node,
                    session_id = %origin.session_id,
                    user_id = %origin.user_id,
                );
                crate::trace::attach(&span, trace.as_deref());
                let traced = trace.clone();
                state
                    .room_op(room_id, op, origin, hops, traced)
                    .instrument(span)
                    .await;
            }
            PeerPayload::Request {
                id,
                origin,
                room_id,
                by,
                cmd,
                hops,
            } => {
                let view = state.args.cluster.view();
                let owner = view.owner(&room_id);
                if owner != view.me && hops < MAX_HOPS {
                    let fwd = PeerPayload::Request {
                        id,
                        origin: origin.clone(),
                        room_id,
                        by,
                        cmd,
                        hops: hops + 1,
                    };
                    if state.args.cluster.send(&owner, &fwd) {
                        return Ok(());
                    }
                    let PeerPayload::Request {
                        room_id, by, cmd, ..
                    } = fwd
                    else {
                        return Ok(());
                    };
                    spawn_manage(state, id, origin, room_id, by, cmd);
                } else {
                    spawn_manage(state, id, origin, room_id, by, cmd);
                }
            }
            PeerPayload::PresenceSnapshot { node, users, reply } => {
                let _ =
                    state
                        .args
                        .presence
                        .cast(PresenceMsg::RemoteSnapshot { node, users, reply });
            }
            PeerPayload::PresenceChange { node, user, online } => {
                let _ = state
                    .args
                    .presence
                    .cast(PresenceMsg::RemoteChange { node, user, online });
            }
        }
        Ok(())
    }
}

/// Applies a routed room change locally, off the inbox, and answers the origin.
fn spawn_manage(
    state: &InboxState,
    id: u64,
    origin: String,
    room_id: String,
    by: String,
    cmd: crate::room::ManageCmd,
) {
    let directory = state.args.directory.clone();
    let cluster = state.args.cluster.clone();
    tokio::spawn(async move {
        let result = crate::system::manage_local(&directory, &room_id, &by, cmd).await;
        cluster.send(&origin, &PeerPayload::Response { id, result });
    });
}
