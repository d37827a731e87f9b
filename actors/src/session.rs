//! The session actor: one per WebSocket connection.
//!
//! The gateway parses and rate-limits client frames and hands them to this
//! actor, which routes each to the right room actor (through the directory,
//! caching the answer), answers `ping`, and runs `sync` replays. Everything
//! bound for the client goes through the session's bounded outbound queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use parley_protocol::ws::{ClientFrame, ClientRequest, ServerEvent};
use parley_protocol::ErrorCode;
use parley_storage::{HistoryRange, Store};

use crate::budget::{ByteBudget, Reservation};
use crate::cluster::wire::{AckKey, PeerPayload, WireCaller, WireRoomOp};
use crate::convert;
use crate::dispatcher::SessionEntry;
use crate::error::ChatError;
use crate::outbound::{LiveMessage, Outbound, OutboundTx, RoomSeq, SyncItem};
use crate::replay_queue::{ReplayQueue, ReplayRooms, StartReplay, SyncBusy};
use crate::room::{Caller, ReplyTo};
use crate::room_cache::RoomCache;
use crate::system::ChatSystem;

/// Most rooms one `sync` request may name.
pub const SYNC_MAX_ROOMS: usize = 10_000;
/// Most room actors a session remembers; beyond it the cache starts over.
const ROOM_CACHE_MAX: usize = 1024;

/// Messages of a session actor.
pub enum SessionMsg {
    /// A parsed client frame.
    Frame(ClientFrame),
    /// The running replay finished (internal).
    ReplayFinished,
    /// The socket writer saw a room skip seqs after `after`: replay it from
    /// there (without a `synced` answer; the client did not ask).
    Repair {
        /// The room.
        room: Arc<str>,
        /// The highest seq of the room written on this connection.
        after: u64,
    },
    /// A send routed to another node was answered.
    Acked(AckKey),
    /// These nodes left: sends routed to them and not answered are routed again.
    PeersDown(Vec<Arc<str>>),
}

/// Most sends a session may have in flight on other nodes.
const REMOTE_PENDING_MAX: usize = 10_000;

/// Rooms whose typing indicator a session ends itself when it closes, at
/// most (the oldest is forgotten past this: its room's TTL ends it).
const TYPING_ROOMS_MAX: usize = 16;

/// Start-up arguments of a session.
pub struct SessionArgs {
    /// Connection id.
    pub session_id: Arc<str>,
    /// Authenticated user.
    pub user_id: Arc<str>,
    /// The user's name.
    pub username: Arc<str>,
    /// Outbound queue to the socket.
    pub tx: OutboundTx,
    /// The node's actors.
    pub system: ChatSystem,
}

/// The session actor.
pub struct SessionActor;

/// State of one connection.
pub struct SessionState {
    session_id: Arc<str>,
    caller: Caller,
    tx: OutboundTx,
    system: ChatSystem,
    rooms: RoomCache,
    /// Client syncs and gap repairs: which runs, which waits.
    replays: ReplayQueue,
    /// Whether live messages flow (the first request other than `sync` opens it).
    gate_open: bool,
    /// Sends routed to another node and not yet answered, with that node.
    remote_pending: HashMap<AckKey, (Arc<str>, WireRoomOp)>,
    /// Rooms this session said it is typing in and has not said it stopped:
    /// when the session ends, it ends them (see [`TYPING_ROOMS_MAX`]).
    typing_in: Vec<String>,
}

impl SessionState {
    /// Runs a replay off the actor (the queue said to start it); its end
    /// comes back as [`SessionMsg::ReplayFinished`].
    fn start_replay(&self, myself: &ActorRef<SessionMsg>, start: Option<StartReplay>) {
        let Some(start) = start else {
            return;
        };
        let replay = Replay {
            store: self.system.store().clone(),
            user_id: self.caller.user_id.clone(),
            tx: self.tx.clone(),
            page: self.system.config().sync_page.max(1),
            unsent: self.system.unsent().clone(),
            r#ref: start.r#ref,
            repair: start.repair,
        };
        let me = myself.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let last = replay.run(start.rooms).await;
            // The session hears of the end before the client does, so a
            // `sync` sent on `synced` (or on the error) is never refused as
            // "a sync is already running".
            let _ = me.cast(SessionMsg::ReplayFinished);
            match last {
                Some(LastWord::Synced(json)) => {
                    tx.sync(SyncItem::Done(json)).await;
                }
                Some(LastWord::Error(json)) => {
                    tx.frame(json);
                }
                None => {}
            }
        });
    }

    /// Queues a replay of `room` after `after` (the writer found a gap).
    fn repair(&mut self, myself: &ActorRef<SessionMsg>, room: &str, after: u64) {
        crate::metrics::add(&crate::metrics::METRICS.gap_repairs, 1);
        let start = self.replays.repair(room, after);
        self.start_replay(myself, start);
    }

    fn error(&self, r#ref: Option<String>, code: ErrorCode, message: impl Into<String>) {
        crate::metrics::METRICS.error(code);
        self.tx
            .frame(ServerEvent::error(r#ref, code, message).to_json());
    }

    /// Delivers a request to the room's owner: a local actor, or another node.
    async fn route(&mut self, room_id: &str, op: WireRoomOp) -> Result<(), ChatError> {
        if !parley_protocol::ids::is_valid_id(room_id) {
            return Err(ChatError::NotFound);
        }
        let view = self.system.cluster().view();
        let owner = view.owner(room_id);
        if owner == view.me {
            let msg = op.into_room_msg(self.caller.clone());
            return self.rooms.cast(self.system.directory(), room_id, msg).await;
        }
        let key = match &op {
            WireRoomOp::Send { client_msg_id, .. } => {
                if self.remote_pending.len() >= REMOTE_PENDING_MAX {
                    return Err(ChatError::Unavailable("too many sends in flight".into()));
                }
                let key = (room_id.to_string(), client_msg_id.clone());
                self.remote_pending
                    .insert(key.clone(), (owner.clone(), op.clone()));
                Some(key)
            }
            _ => None,
        };
        let payload = PeerPayload::Room {
            room_id: room_id.to_string(),
            op,
            origin: WireCaller {
                user_id: self.caller.user_id.to_string(),
                username: self.caller.username.to_string(),
                node: view.me.to_string(),
                session_id: self.session_id.to_string(),
            },
            hops: 0,
            trace: crate::trace::current(),
        };
        if self.system.cluster().send(&owner, &payload) {
            return Ok(());
        }
        if let Some(k) = key {
            self.remote_pending.remove(&k);
        }
        Err(ChatError::Unavailable(
            "room owner unreachable, retry".into(),
        ))
    }

    /// Keeps [`SessionState::typing_in`] up to date with a `typing` frame.
    fn note_typing(&mut self, room_id: &str, active: bool) {
        let known = self.typing_in.iter().position(|r| r == room_id);
        match (active, known) {
            (true, None) => {
                if self.typing_in.len() >= TYPING_ROOMS_MAX {
                    self.typing_in.remove(0);
                }
                self.typing_in.push(room_id.to_owned());
            }
            (false, Some(i)) => {
                self.typing_in.remove(i);
            }
            _ => {}
        }
    }

    /// Sends routed to nodes that left go to the rooms' new owners.
    async fn reroute(&mut self, down: &[Arc<str>]) {
        let lost: Vec<AckKey> = self
            .remote_pending
            .iter()
            .filter(|(_, (node, _))| down.contains(node))
            .map(|(k, _)| k.clone())
            .collect();
        for key in lost {
            if let Some((_, op)) = self.remote_pending.remove(&key) {
                let r#ref = match &op {
                    WireRoomOp::Send { r#ref, .. } => r#ref.clone(),
                    _ => None,
                };
                if let Err(e) = Box::pin(self.route(&key.0, op)).await {
                    self.error(r#ref, e.code(), e.to_string());
                }
            }
        }
    }

    async fn handle_frame(&mut self, myself: &ActorRef<SessionMsg>, frame: ClientFrame) {
        let r#ref = frame.r#ref;
        if !self.gate_open {
            // The socket writer holds live messages until the first `sync`
            // (which opens it itself) or any other request.
            self.gate_open = true;
            if !matches!(frame.request, ClientRequest::Sync(_)) {
                self.tx.push(Outbound::OpenGate);
            }
        }
        let (room_id, msg) = match frame.request {
            ClientRequest::Ping => {
                self.tx.frame(ServerEvent::Pong { r#ref }.to_json());
                return;
            }
            ClientRequest::Auth(_) => {
                // Tokens are the gateway's business; it never forwards `auth`.
                return;
            }
            ClientRequest::Sync(sync) => {
                if sync
                    .rooms
                    .as_ref()
                    .is_some_and(|r| r.len() > SYNC_MAX_ROOMS)
                {
                    self.error(
                        r#ref,
                        ErrorCode::InvalidRequest,
                        format!("sync may name at most {SYNC_MAX_ROOMS} rooms"),
                    );
                    return;
                }
                match self.replays.sync(r#ref.clone(), sync.rooms) {
                    Ok(start) => self.start_replay(myself, start),
                    Err(SyncBusy) => self.error(
                        r#ref,
                        ErrorCode::InvalidRequest,
                        "a sync is already running",
                    ),
                }
                return;
            }
            ClientRequest::Send(f) => (
                f.room_id,
                WireRoomOp::Send {
                    r#ref: r#ref.clone(),
                    client_msg_id: f.client_msg_id,
                    body: f.body,
                },
            ),
            ClientRequest::Typing(f) => {
                self.note_typing(&f.room_id, f.active);
                (f.room_id, WireRoomOp::Typing { active: f.active })
            }
            ClientRequest::Delivered(f) => (
                f.room_id,
                WireRoomOp::Watermark {
                    delivered: f.seq,
                    read: 0,
                    r#ref: r#ref.clone(),
                },
            ),
            ClientRequest::Read(f) => (
                f.room_id,
                WireRoomOp::Watermark {
                    delivered: f.seq,
                    read: f.seq,
                    r#ref: r#ref.clone(),
                },
            ),
        };
        let kind = match &msg {
            WireRoomOp::Send { .. } => "send",
            WireRoomOp::Typing { .. } => "typing",
            WireRoomOp::Watermark { .. } => "watermark",
        };
        // The root of a request's trace; routing carries it to the room's owner.
        let span = tracing::info_span!(
            "ws.request",
            kind,
            room_id = %room_id,
            session_id = %self.session_id,
            user_id = %self.caller.user_id,
        );
        if let Err(e) = self.route(&room_id, msg).instrument(span).await {
            self.error(r#ref, e.code(), e.to_string());
        }
    }
}

/// One `sync` replay, run off the session actor.
struct Replay {
    store: Arc<dyn Store>,
    user_id: Arc<str>,
    tx: OutboundTx,
    page: u32,
    /// Bytes the node holds for clients that have not read them.
    unsent: Arc<ByteBudget>,
    r#ref: Option<String>,
    /// Filling gaps the writer found, not answering a `sync`: no `synced`
    /// and no errors for the client, and every room is ended even if it
    /// cannot be read (the writer holds its live messages until then).
    repair: bool,
}

/// The frame that ends a client's replay, sent once the session knows the
/// replay is over.
enum LastWord {
    /// The `synced` answer.
    Synced(Arc<str>),
    /// The error that stopped the replay.
    Error(String),
}

impl Replay {
    /// The next page of `room_id` after `after` as `message` events, with
    /// its bytes reserved in the node's unsent budget; `None` when the
    /// connection went away meanwhile.
    ///
    /// When the user (or the node) already holds too much that clients have
    /// not read, the page is let go and the replay waits for room, then reads
    /// the same messages again: a waiting replay holds no page.
    async fn page(
        &self,
        room_id: &Arc<str>,
        after: u64,
    ) -> Result<Option<(Vec<Arc<LiveMessage>>, Reservation)>, ChatError> {
        let mut limit = self.page;
        let mut waited: Option<Reservation> = None;
        loop {
            let range = HistoryRange::After {
                after_seq: after,
                before_seq: None,
                limit,
            };
            let page: Vec<Arc<LiveMessage>> = self
                .store
                .messages(room_id, range)
                .await?
                .iter()
                .map(|m| {
                    Arc::new(LiveMessage::replayed(
                        room_id.clone(),
                        m.seq,
                        Arc::from(ServerEvent::Message(convert::message(m)).to_json()),
                    ))
                })
                .collect();
            let bytes = page.iter().map(|m| m.json.len() as u64).sum();
            match waited.take() {
                Some(r) if r.bytes() >= bytes => return Ok(Some((page, r))),
                // Messages are never changed, so this is rare (a page that was
                // not full grew); give the room back and try again.
                other => drop(other),
            }
            if let Ok(r) = self.unsent.try_reserve(&self.user_id, bytes) {
                return Ok(Some((page, r)));
            }
            // The same messages next time, even if more came meanwhile.
            limit = (page.len() as u32).max(1);
            drop(page);
            tokio::select! {
                r = self.unsent.reserve(&self.user_id, bytes) => waited = Some(r),
                _ = self.tx.gone() => return Ok(None),
            }
        }
    }

    /// Runs the replay; returns its last word for the client (none for a
    /// gap repair, or when the connection is gone).
    async fn run(self, rooms: ReplayRooms) -> Option<LastWord> {
        let mut started = Vec::new();
        match self.replay(rooms, &mut started).await {
            Ok(synced) => synced.map(LastWord::Synced),
            Err(e) => {
                // Release the rooms whose live messages the writer holds; what
                // could not be read stays missing until the client syncs.
                for room in started {
                    if !self.tx.sync(SyncItem::RoomReleased(room)).await {
                        return None;
                    }
                }
                if self.repair {
                    tracing::warn!(error = %e, "could not replay a delivery gap");
                    return None;
                }
                let error = ServerEvent::error(self.r#ref.clone(), e.code(), e.to_string());
                Some(LastWord::Error(error.to_json()))
            }
        }
    }

    /// Replays `rooms` (all of the user's from 0 when `None`); the rooms
    /// whose live messages are held from the start go into `started`.
    /// Returns the `synced` frame to send (none for a gap repair, or when
    /// the connection is gone).
    async fn replay(
        &self,
        rooms: ReplayRooms,
        started: &mut Vec<Arc<str>>,
    ) -> Result<Option<Arc<str>>, ChatError> {
        let wanted: Vec<(String, u64)> = match rooms {
            Some(map) => map.into_iter().collect(),
            None => self
                .store
                .user_rooms(&self.user_id)
                .await?
                .into_iter()
                .map(|r| (r, 0))
                .collect(),
        };
        // Only rooms the user belongs to; others answer not_found (no existence leak).
        if self.repair {
            // The writer holds these rooms already.
            started.extend(wanted.iter().map(|(r, _)| Arc::<str>::from(r.as_str())));
        }
        let mut allowed = Vec::with_capacity(wanted.len());
        for (room_id, after) in wanted {
            let member = parley_protocol::ids::is_valid_id(&room_id)
                && self.store.member(&room_id, &self.user_id).await?.is_some();
            if member {
                allowed.push((Arc::<str>::from(room_id.as_str()), after));
            } else if self.repair {
                // Left the room meanwhile: just release what is held.
                let room: Arc<str> = Arc::from(room_id.as_str());
                started.retain(|r| *r != room);
                if !self.tx.sync(SyncItem::RoomReleased(room)).await {
                    return Ok(None);
                }
            } else {
                self.tx.frame(
                    ServerEvent::error(
                        self.r#ref.clone(),
                        ErrorCode::NotFound,
                        format!(
                            "room {} not found",
                            room_id.chars().take(64).collect::<String>()
                        ),
                    )
                    .to_json(),
                );
            }
        }
        // Hold live messages of these rooms before reading anything.
        if !self.tx.start_sync(allowed.clone(), !self.repair).await {
            return Ok(None);
        }
        if !self.repair {
            started.extend(allowed.iter().map(|(r, _)| r.clone()));
        }
        let mut heads = BTreeMap::new();
        for (room_id, after) in allowed {
            let mut cursor = after;
            loop {
                let Some((page, reserved)) = self.page(&room_id, cursor).await? else {
                    return Ok(None);
                };
                let full = page.len() as u32 >= self.page;
                for m in page {
                    cursor = cursor.max(m.seq);
                    if !self.tx.sync(SyncItem::Message(m)).await {
                        return Ok(None);
                    }
                }
                if !self.tx.sync(SyncItem::PageTaken(Arc::new(reserved))).await {
                    return Ok(None);
                }
                if !full {
                    break;
                }
            }
            started.retain(|r| *r != room_id);
            let done = SyncItem::RoomDone(Arc::new(RoomSeq {
                room_id: room_id.clone(),
                seq: after,
            }));
            if !self.tx.sync(done).await {
                return Ok(None);
            }
            if cursor == after && after > 0 && !self.repair {
                // Nothing after the client's seq: report the room's head,
                // which a client that claims more than there is must learn.
                if let Some(room) = self.store.room(&room_id).await? {
                    cursor = cursor.min(room.last_seq);
                }
            }
            heads.insert(room_id.to_string(), cursor);
        }
        if self.repair {
            return Ok(None);
        }
        let done = ServerEvent::Synced {
            r#ref: self.r#ref.clone(),
            rooms: heads,
        };
        Ok(Some(Arc::from(done.to_json())))
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let config = args.system.config();
        let hello = ServerEvent::Hello {
            user_id: args.user_id.to_string(),
            session_id: args.session_id.to_string(),
            node: config.node_name.clone(),
            heartbeat_ms: config.heartbeat.as_millis() as u64,
        };
        // `hello` is queued before the session is registered for events, so it is first.
        args.tx.frame(hello.to_json());
        args.system.session_started(
            args.user_id.clone(),
            SessionEntry {
                session_id: args.session_id.clone(),
                tx: args.tx.clone(),
                actor: myself,
            },
        );
        tracing::debug!(session = %args.session_id, user = %args.user_id, "session started");
        Ok(SessionState {
            session_id: args.session_id,
            caller: Caller {
                user_id: args.user_id,
                username: args.username,
                reply: ReplyTo::Local(args.tx.clone()),
            },
            tx: args.tx,
            system: args.system,
            rooms: RoomCache::new(ROOM_CACHE_MAX),
            replays: ReplayQueue::default(),
            gate_open: false,
            remote_pending: HashMap::new(),
            typing_in: Vec::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A typist who closes the app stops typing now, not when the
        // indicator's TTL runs out.
        for room_id in std::mem::take(&mut state.typing_in) {
            let _ = state
                .route(&room_id, WireRoomOp::Typing { active: false })
                .await;
        }
        state
            .system
            .session_ended(state.caller.user_id.clone(), state.session_id.clone());
        tracing::debug!(session = %state.session_id, "session ended");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The runtime keeps this future's largest state inside every idle
        // session for its whole life, so the big branches are boxed: their
        // memory exists only while a message is being handled.
        match msg {
            SessionMsg::Frame(frame) => Box::pin(state.handle_frame(&myself, frame)).await,
            SessionMsg::ReplayFinished => {
                let start = state.replays.finished();
                state.start_replay(&myself, start);
            }
            SessionMsg::Repair { room, after } => state.repair(&myself, &room, after),
            SessionMsg::Acked(key) => {
                state.remote_pending.remove(&key);
            }
            SessionMsg::PeersDown(nodes) => Box::pin(state.reroute(&nodes)).await,
        }
        Ok(())
    }
}

// Local-only message: never serialized (see `cluster` for what crosses nodes).
impl ractor::Message for SessionMsg {}
