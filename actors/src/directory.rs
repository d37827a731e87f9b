//! The room directory: finds or starts the local actor of a room.
//!
//! The directory is the only place that starts room actors on this node, so
//! there is at most one live actor per room here. It loads a room's state
//! from storage before starting its actor (a room that does not exist is
//! answered `NotFound`), supervises the actors it starts, and forgets an
//! actor when it retires or dies.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent};

use parley_storage::Store;

use crate::cluster::{Cluster, View};
use crate::dispatcher::DispatcherMsg;
use crate::error::ChatError;
use crate::room::{load_room, RoomActor, RoomArgs, RoomDeps, RoomMsg};
use crate::system::Gauges;
use crate::ActorConfig;

/// Messages of the directory.
pub enum DirectoryMsg {
    /// The actor of a room, started if needed.
    Get {
        /// The room.
        room_id: String,
        /// Answer.
        reply: RpcReplyPort<Result<ActorRef<RoomMsg>, ChatError>>,
    },
    /// A room actor went idle and asks to be forgotten.
    Retire {
        /// The room.
        room_id: String,
        /// The retiring actor.
        actor: ActorRef<RoomMsg>,
    },
    /// Number of live room actors.
    Count(RpcReplyPort<usize>),
    /// Stop every room actor, draining their queues (shutdown).
    StopAll(RpcReplyPort<()>),
    /// A peer that may have owned this node's rooms while it had left this
    /// node out of its view has it back: every live room actor retires, and
    /// is loaded again from storage on next use (members, roles and head may
    /// have changed meanwhile).
    Reload,
    /// Membership changed: tell the nodes that came into the view the head
    /// of every live room, then retire the rooms this node no longer owns.
    Rebalance {
        /// The new view.
        view: Arc<View>,
        /// Nodes in it that were not in the one before.
        joined: Arc<[Arc<str>]>,
    },
}

/// Start-up arguments of the directory.
pub struct DirectoryArgs {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Local dispatcher.
    pub dispatcher: ActorRef<DispatcherMsg>,
    /// Limits.
    pub config: Arc<ActorConfig>,
    /// Other nodes.
    pub cluster: Cluster,
    /// Where the live room count is published.
    pub gauges: Arc<Gauges>,
}

/// The directory actor.
pub struct Directory;

/// Live room actors by room id.
pub struct DirectoryState {
    args: DirectoryArgs,
    rooms: HashMap<String, ActorRef<RoomMsg>>,
}

impl DirectoryState {
    fn publish(&self) {
        self.args.gauges.rooms.store(
            self.rooms.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Forgets the live room actors whose room matches and tells each to
    /// retire: it finishes its in-flight commit, drains and stops; the
    /// room's next request loads it again from storage (here or on its new
    /// owner). Returns them.
    fn retire_where(&mut self, matches: impl Fn(&str) -> bool) -> Vec<ActorRef<RoomMsg>> {
        let ids: Vec<String> = self.rooms.keys().filter(|r| matches(r)).cloned().collect();
        let mut retired = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.rooms.remove(&id) {
                let _ = r.cast(RoomMsg::RetireAccepted);
                retired.push(r);
            }
        }
        retired
    }

    fn forget(&mut self, actor: &ractor::ActorCell) {
        let id = actor.get_id();
        self.rooms.retain(|_, r| r.get_id() != id);
    }
}

impl Actor for Directory {
    type Msg = DirectoryMsg;
    type State = DirectoryState;
    type Arguments = DirectoryArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DirectoryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DirectoryState {
            args,
            rooms: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DirectoryMsg::Get { room_id, reply } => {
                if let Some(r) = state.rooms.get(&room_id) {
                    if matches!(r.get_status(), ActorStatus::Running | ActorStatus::Starting) {
                        let _ = reply.send(Ok(r.clone()));
                        return Ok(());
                    }
                    state.rooms.remove(&room_id);
                }
                let result = match load_room(state.args.store.as_ref(), &room_id).await {
                    Ok(loaded) => {
                        let deps = RoomDeps {
                            store: state.args.store.clone(),
                            dispatcher: state.args.dispatcher.clone(),
                            directory: myself.clone(),
                            cluster: state.args.cluster.clone(),
                            config: state.args.config.clone(),
                        };
                        match Actor::spawn_linked(
                            None,
                            RoomActor,
                            RoomArgs { deps, loaded },
                            myself.get_cell(),
                        )
                        .await
                        {
                            Ok((room, _)) => {
                                state.rooms.insert(room_id, room.clone());
                                Ok(room)
                            }
                            Err(e) => Err(ChatError::Internal(format!("room start failed: {e}"))),
                        }
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            DirectoryMsg::Retire { room_id, actor } => {
                if state
                    .rooms
                    .get(&room_id)
                    .is_some_and(|r| r.get_id() == actor.get_id())
                {
                    state.rooms.remove(&room_id);
                }
                let _ = actor.cast(RoomMsg::RetireAccepted);
            }
            DirectoryMsg::Rebalance { view, joined } => {
                if !joined.is_empty() {
                    // Before any retires: a room that moves still tells.
                    for r in state.rooms.values() {
                        let _ = r.cast(RoomMsg::PeersJoined(joined.clone()));
                    }
                }
                let moving = state.retire_where(|room_id| view.owner(room_id) != view.me);
                if !moving.is_empty() {
                    tracing::info!(
                        rooms = moving.len(),
                        "handing rooms over to their new owners"
                    );
                }
            }
            DirectoryMsg::Reload => {
                let rooms = state.retire_where(|_| true);
                crate::metrics::add(&crate::metrics::METRICS.rooms_reloaded, rooms.len() as u64);
                tracing::info!(rooms = rooms.len(), "reloading rooms from storage");
            }
            DirectoryMsg::Count(reply) => {
                let _ = reply.send(state.rooms.len());
            }
            DirectoryMsg::StopAll(reply) => {
                for r in state.retire_where(|_| true) {
                    let _ = r.wait(Some(std::time::Duration::from_secs(10))).await;
                }
                let _ = reply.send(());
            }
        }
        state.publish();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => state.forget(&cell),
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(error = %err, "room actor failed; it restarts from storage on next use");
                state.forget(&cell);
            }
            _ => {}
        }
        state.publish();
        Ok(())
    }
}

// Local-only message: never serialized (see `cluster` for what crosses nodes).
impl ractor::Message for DirectoryMsg {}
