//! The node's actor system as one handle: start it, reach rooms, notify users.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, MessagingErr, RpcReplyPort};

use parley_protocol::http::RoomInfo;
use parley_protocol::ws::ServerEvent;
use parley_storage::Store;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::budget::ByteBudget;
use crate::cluster::inbox::{Inbox, InboxArgs};
use crate::cluster::membership::{ClusterActor, ClusterArgs, ClusterConfig, ClusterMsg, Listeners};
use crate::cluster::{Cluster, View};
use crate::directory::{Directory, DirectoryArgs, DirectoryMsg};
use crate::dispatcher::{Dispatcher, DispatcherMsg};
use crate::error::ChatError;
use crate::outbound::{Outbound, OutboundTx};
use crate::presence::{Presence, PresenceArgs, PresenceMsg};
use crate::room::{ManageCmd, RoomMsg};
use crate::session::{SessionActor, SessionArgs, SessionMsg};
use crate::ActorConfig;

/// Applies a room change on this node (the room's owner).
pub async fn manage_local(
    directory: &ActorRef<DirectoryMsg>,
    room_id: &str,
    by: &str,
    cmd: ManageCmd,
) -> Result<RoomInfo, ChatError> {
    // A room that retires between lookup and request is looked up again.
    for _ in 0..3 {
        let id = room_id.to_string();
        let room = ask(directory, |reply| DirectoryMsg::Get { room_id: id, reply }).await??;
        let by = by.to_string();
        let cmd = cmd.clone();
        match room
            .call(
                |reply| RoomMsg::Manage { by, cmd, reply },
                Some(CALL_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(r)) => return r,
            Ok(CallResult::Timeout) => {
                return Err(ChatError::Unavailable("timed out, try again".into()))
            }
            Ok(CallResult::SenderError) | Err(MessagingErr::SendErr(_)) | Err(_) => continue,
        }
    }
    Err(ChatError::Unavailable("room busy, try again".into()))
}

/// How long a request waits for an actor's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends a request and waits for its answer, mapping every failure to a [`ChatError`].
pub async fn ask<M, T>(
    actor: &ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, ChatError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(build, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(ChatError::Unavailable("timed out, try again".into())),
        Ok(CallResult::SenderError) | Err(_) => Err(ChatError::Unavailable(
            "actor unavailable, try again".into(),
        )),
    }
}

/// Live counts for `/metrics` and the cluster view.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Connected sessions on this node.
    pub sessions: usize,
    /// Users online on this node.
    pub users_online: usize,
    /// Live room actors on this node.
    pub rooms: usize,
    /// Bytes of answers held for clients that have not read them.
    pub unsent_bytes: u64,
}

struct Inner {
    store: Arc<dyn Store>,
    config: Arc<ActorConfig>,
    dispatcher: ActorRef<DispatcherMsg>,
    presence: ActorRef<PresenceMsg>,
    directory: ActorRef<DirectoryMsg>,
    cluster: Cluster,
    gauges: Arc<Gauges>,
    unsent: Arc<ByteBudget>,
}

/// Counts kept up to date by the actors, readable without a round trip.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Local sessions.
    pub sessions: AtomicU64,
    /// Live local room actors.
    pub rooms: AtomicU64,
}

/// Handle to the node's actors; cheap to clone.
#[derive(Clone)]
pub struct ChatSystem {
    inner: Arc<Inner>,
}

impl ChatSystem {
    /// Starts the cluster layer, dispatcher, presence, directory and inbox actors.
    pub async fn start(
        store: Arc<dyn Store>,
        config: ActorConfig,
        cluster_config: ClusterConfig,
    ) -> Result<Self, ChatError> {
        let config = Arc::new(config);
        let gauges = Arc::new(Gauges::default());
        let spawn_err = |e: ractor::SpawnErr| ChatError::Internal(format!("actor start: {e}"));
        let joined = !cluster_config.has_seeds;
        let (view_tx, view_rx) =
            watch::channel(Arc::new(View::alone(&cluster_config.node_name, joined)));
        let (cluster_actor, _) = Actor::spawn(
            None,
            ClusterActor,
            ClusterArgs {
                config: cluster_config,
                view: view_tx,
            },
        )
        .await
        .map_err(spawn_err)?;
        let cluster = Cluster::new(view_rx, cluster_actor.clone());
        let (dispatcher, _) = Actor::spawn(None, Dispatcher, gauges.clone())
            .await
            .map_err(spawn_err)?;
        let (presence, _) = Actor::spawn(
            None,
            Presence,
            PresenceArgs {
                store: store.clone(),
                dispatcher: dispatcher.clone(),
                cluster: cluster.clone(),
                max_room: config.presence_fanout_max_members,
            },
        )
        .await
        .map_err(spawn_err)?;
        let (directory, _) = Actor::spawn(
            None,
            Directory,
            DirectoryArgs {
                store: store.clone(),
                dispatcher: dispatcher.clone(),
                config: config.clone(),
                cluster: cluster.clone(),
                gauges: gauges.clone(),
            },
        )
        .await
        .map_err(spawn_err)?;
        let (d, dir, p) = (dispatcher.clone(), directory.clone(), presence.clone());
        let reload = directory.clone();
        let g = gauges.clone();
        let listeners = Listeners {
            on_change: Arc::new(
                move |up: &[Arc<str>], down: &[Arc<str>], view: &Arc<View>| {
                    if !down.is_empty() {
                        let _ = d.cast(DispatcherMsg::NodesDown(down.to_vec()));
                    }
                    let _ = dir.cast(DirectoryMsg::Rebalance {
                        view: view.clone(),
                        joined: up.into(),
                    });
                    let _ = p.cast(PresenceMsg::Membership(
                        up.to_vec(),
                        down.to_vec(),
                        view.clone(),
                    ));
                },
            ),
            on_back_in_view: Arc::new(move |_peer: &str| {
                let _ = reload.cast(DirectoryMsg::Reload);
            }),
            stats: Arc::new(move || {
                (
                    g.sessions.load(Ordering::Relaxed),
                    g.rooms.load(Ordering::Relaxed),
                )
            }),
        };
        let _ = cluster_actor.cast(ClusterMsg::SetListeners(listeners));
        Actor::spawn(
            None,
            Inbox,
            InboxArgs {
                cluster: cluster.clone(),
                dispatcher: dispatcher.clone(),
                directory: directory.clone(),
                presence: presence.clone(),
            },
        )
        .await
        .map_err(spawn_err)?;
        Ok(ChatSystem {
            inner: Arc::new(Inner {
                store,
                unsent: ByteBudget::new(config.unsent_max, config.unsent_per_user_max),
                config,
                dispatcher,
                presence,
                directory,
                cluster,
                gauges,
            }),
        })
    }

    /// The room directory.
    pub(crate) fn directory(&self) -> &ActorRef<DirectoryMsg> {
        &self.inner.directory
    }

    /// The cluster layer.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// Storage.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Limits.
    pub fn config(&self) -> &ActorConfig {
        &self.inner.config
    }

    /// The bound on bytes held for clients that have not read them.
    pub fn unsent(&self) -> &Arc<ByteBudget> {
        &self.inner.unsent
    }

    /// Changes a room's membership or details on behalf of `by`, on the room's owner node.
    pub async fn manage(
        &self,
        room_id: &str,
        by: &str,
        cmd: ManageCmd,
    ) -> Result<RoomInfo, ChatError> {
        if !parley_protocol::ids::is_valid_id(room_id) {
            return Err(ChatError::NotFound);
        }
        let view = self.inner.cluster.view();
        let owner = view.owner(room_id);
        if owner != view.me {
            return self.inner.cluster.request(owner, room_id, by, cmd).await;
        }
        manage_local(&self.inner.directory, room_id, by, cmd).await
    }

    /// Sends an event to every session of these users, on every node.
    pub fn notify(&self, users: Vec<String>, event: &ServerEvent) {
        let users: Vec<Arc<str>> = users.into_iter().map(|u| Arc::from(u.as_str())).collect();
        crate::dispatcher::deliver_everywhere(
            &self.inner.cluster,
            &self.inner.dispatcher,
            Arc::from(users),
            vec![Outbound::frame(Arc::from(event.to_json()))],
            None,
            None,
        );
    }

    /// Whether the user has a connected session.
    pub async fn is_online(&self, user_id: &str) -> bool {
        let user = user_id.to_string();
        ask(&self.inner.presence, |r| PresenceMsg::IsOnline(user, r))
            .await
            .unwrap_or(false)
    }

    /// Starts the actor of a new WebSocket session (it sends `hello` first).
    pub async fn start_session(
        &self,
        session_id: Arc<str>,
        user_id: Arc<str>,
        username: Arc<str>,
        tx: OutboundTx,
    ) -> Result<ActorRef<SessionMsg>, ChatError> {
        let args = SessionArgs {
            session_id,
            user_id,
            username,
            tx,
            system: self.clone(),
        };
        let (actor, _) = Actor::spawn(None, SessionActor, args)
            .await
            .map_err(|e| ChatError::Internal(format!("session start: {e}")))?;
        Ok(actor)
    }

    /// Registers a session with the dispatcher and presence (used by sessions).
    pub(crate) fn session_started(
        &self,
        user_id: Arc<str>,
        entry: crate::dispatcher::SessionEntry,
    ) {
        let _ = self
            .inner
            .presence
            .cast(PresenceMsg::Connected(user_id.clone()));
        let _ = self
            .inner
            .dispatcher
            .cast(DispatcherMsg::Register { user_id, entry });
    }

    /// Unregisters a session (used by sessions).
    pub(crate) fn session_ended(&self, user_id: Arc<str>, session_id: Arc<str>) {
        let _ = self.inner.dispatcher.cast(DispatcherMsg::Unregister {
            user_id: user_id.clone(),
            session_id,
        });
        let _ = self.inner.presence.cast(PresenceMsg::Disconnected(user_id));
    }

    /// Live counts.
    pub async fn stats(&self) -> Stats {
        let (sessions, users_online) = ask(&self.inner.dispatcher, DispatcherMsg::Count)
            .await
            .unwrap_or((0, 0));
        let rooms = ask(&self.inner.directory, DirectoryMsg::Count)
            .await
            .unwrap_or(0);
        Stats {
            sessions,
            users_online,
            rooms,
            unsent_bytes: self.inner.unsent.held(),
        }
    }

    /// Counts kept current by the actors.
    pub fn gauges(&self) -> &Gauges {
        &self.inner.gauges
    }

    /// Graceful stop: peers are told this node leaves (its rooms move to
    /// them), rooms finish their commits and stop, then every session is
    /// closed with `close_code` (1012: reconnect elsewhere).
    pub async fn shutdown(&self, close_code: u16) {
        // Before the sessions close: their ends are the peers' to announce.
        let _ = self.inner.presence.cast(PresenceMsg::Leaving);
        self.inner.cluster.leave().await;
        let _ = ask(&self.inner.directory, DirectoryMsg::StopAll).await;
        let _ = self
            .inner
            .dispatcher
            .cast(DispatcherMsg::CloseAll(close_code));
    }
}
