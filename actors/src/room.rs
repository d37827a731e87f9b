//! The room actor: the single owner of one room's sequence and fan-out.
//!
//! A room actor
//! - assigns each committed message the room's next `seq` (through the
//!   storage commit, which is conditional on the head it expects, so two
//!   owners can never give two messages one seq);
//! - group-commits: sends that arrive while a commit is in flight wait in
//!   `pending` and go out together in the next commit;
//! - acks the sender (`sent`) only after the commit returned, then hands one
//!   pre-serialized `message` event to the dispatcher for all members;
//! - keeps members and watermarks in memory, coalesces receipts, expires
//!   typing indicators;
//! - retires when idle: it asks the directory to forget it, then drains its
//!   mailbox and stops. Any node can load it again from storage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::Instrument;

use parley_protocol::http::{Role, RoomInfo, RoomKind};
use parley_protocol::ids::new_id;
use parley_protocol::time::{now_millis, to_rfc3339};
use parley_protocol::ws::{RoomEventKind, ServerEvent};
use parley_storage::{
    CommitOutcome, MemberRecord, NewMessage, RoomRecord, StorageError, StorageResult, Store,
    Watermarks,
};

use crate::cluster::wire::{AckKey, PeerPayload, WireItem};
use crate::cluster::Cluster;
use crate::convert;
use crate::directory::DirectoryMsg;
use crate::dispatcher::DispatcherMsg;
use crate::error::ChatError;
use crate::metrics::{add, METRICS};
use crate::outbound::{LiveMessage, Outbound, OutboundTx, TypingNotice};
use crate::ActorConfig;

/// Where a room's answers (acks, errors) for one request go.
#[derive(Clone)]
pub enum ReplyTo {
    /// A session on this node.
    Local(OutboundTx),
    /// A session on another node.
    Remote {
        /// The cluster layer.
        cluster: Cluster,
        /// Node of the session.
        node: Arc<str>,
        /// The session.
        session_id: Arc<str>,
    },
}

/// Who is asking: a user and the session to answer.
#[derive(Clone)]
pub struct Caller {
    /// The user's id.
    pub user_id: Arc<str>,
    /// The user's name.
    pub username: Arc<str>,
    /// The session to answer (acks and errors).
    pub reply: ReplyTo,
}

impl Caller {
    /// Sends a frame to the caller's session; `ack` marks the answer to a routed `send`.
    pub fn reply(&self, json: String, ack: Option<AckKey>) {
        match &self.reply {
            ReplyTo::Local(tx) => {
                tx.frame(json);
            }
            ReplyTo::Remote {
                cluster,
                node,
                session_id,
            } => {
                let sent = cluster.send(
                    node,
                    &PeerPayload::ToSession {
                        user_id: self.user_id.to_string(),
                        session_id: session_id.to_string(),
                        json,
                        ack,
                    },
                );
                if !sent {
                    tracing::warn!(%node, %session_id,
                        "answer to a session on another node dropped: that node is not in this node's view");
                }
            }
        }
    }
}

/// A change to a room's membership or details, asked for over HTTP.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ManageCmd {
    /// Add a user as `member`.
    AddMember {
        /// Id of the new member.
        user_id: String,
        /// Name of the new member.
        username: String,
    },
    /// Remove a member (or leave, when it is the caller).
    RemoveMember {
        /// Id of the member to remove.
        user_id: String,
    },
    /// Change a member's role (owner only; `admin` or `member`).
    SetRole {
        /// Id of the member.
        user_id: String,
        /// New role.
        role: Role,
    },
    /// Rename the room (owner or admin, group rooms only).
    Rename {
        /// New name.
        name: String,
    },
}

/// Messages of a room actor.
pub enum RoomMsg {
    /// Post a message.
    Send {
        /// Sender.
        from: Caller,
        /// Request ref to echo.
        r#ref: Option<String>,
        /// Idempotency key.
        client_msg_id: String,
        /// Text.
        body: String,
        /// Trace context of the request (`traceparent`).
        trace: Option<String>,
    },
    /// Typing indicator.
    Typing {
        /// Typist.
        from: Caller,
        /// Started or stopped.
        active: bool,
    },
    /// Raise watermarks (`delivered`/`read`).
    Watermark {
        /// Member.
        from: Caller,
        /// New delivered watermark (0 = unchanged).
        delivered: u64,
        /// New read watermark (0 = unchanged).
        read: u64,
        /// Request ref to echo on error.
        r#ref: Option<String>,
    },
    /// Membership or detail change by `by` (a user id).
    Manage {
        /// Acting user.
        by: String,
        /// The change.
        cmd: ManageCmd,
        /// Answer: the room as it is after the change.
        reply: RpcReplyPort<Result<RoomInfo, ChatError>>,
    },
    /// The room as `user_id` (a member) sees it.
    Info {
        /// Asking user.
        user_id: String,
        /// Answer.
        reply: RpcReplyPort<Result<RoomInfo, ChatError>>,
    },
    /// A commit finished (internal).
    CommitDone {
        /// The messages that were committed, in batch order.
        msgs: Vec<NewMessage>,
        /// What storage said.
        result: StorageResult<Vec<CommitOutcome>>,
    },
    /// Time to broadcast and persist raised watermarks (internal).
    FlushReceipts,
    /// A typing indicator may have expired (internal).
    TypingExpired(Arc<str>),
    /// Periodic idleness check (internal).
    IdleCheck,
    /// The directory forgot this actor; drain and stop (internal).
    RetireAccepted,
    /// These nodes just came into this node's view (internal): tell them
    /// the room's head.
    PeersJoined(Arc<[Arc<str>]>),
}

/// What a room actor needs from the rest of the node.
#[derive(Clone)]
pub struct RoomDeps {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Local dispatcher for fan-out.
    pub dispatcher: ActorRef<DispatcherMsg>,
    /// Directory to retire from.
    pub directory: ActorRef<DirectoryMsg>,
    /// Other nodes, for fan-out and remote answers.
    pub cluster: Cluster,
    /// Limits.
    pub config: Arc<ActorConfig>,
}

/// A room's state as loaded from storage.
#[derive(Debug, Clone)]
pub struct LoadedRoom {
    /// The room row (with `last_seq`).
    pub record: RoomRecord,
    /// Its members.
    pub members: Vec<MemberRecord>,
    /// Stored watermarks.
    pub watermarks: Vec<(String, Watermarks)>,
}

/// Reads everything a room actor starts from.
pub async fn load_room(store: &dyn Store, room_id: &str) -> Result<LoadedRoom, ChatError> {
    store.settle_room(room_id).await?;
    let record = store.room(room_id).await?.ok_or(ChatError::NotFound)?;
    let members = store.members(room_id).await?;
    let watermarks = store.room_watermarks(room_id).await?;
    Ok(LoadedRoom {
        record,
        members,
        watermarks,
    })
}

/// Start-up arguments of a room actor.
pub struct RoomArgs {
    /// Collaborators.
    pub deps: RoomDeps,
    /// Initial state.
    pub loaded: LoadedRoom,
}

/// The room actor.
pub struct RoomActor;

struct PendingSend {
    from: Caller,
    r#ref: Option<String>,
    client_msg_id: String,
    arrived: Instant,
    trace: Option<String>,
}

/// A user's watermarks plus whether they must be broadcast / persisted.
#[derive(Default, Clone, Copy)]
struct Marks {
    current: Watermarks,
    /// The watermarks the last receipt showed (zero when the room loaded:
    /// what was shown before is not kept).
    announced: Watermarks,
    /// Changed since the last flush and should be broadcast as a receipt.
    loud: bool,
    /// Changed since the last flush and should be persisted.
    dirty: bool,
}

/// In-memory state of a live room.
pub struct RoomState {
    deps: RoomDeps,
    room_id: Arc<str>,
    record: RoomRecord,
    members: Vec<MemberRecord>,
    member_ids: Arc<[Arc<str>]>,
    roles: HashMap<String, Role>,
    last_seq: u64,
    pending: Vec<(PendingSend, NewMessage)>,
    inflight: Option<Vec<PendingSend>>,
    marks: HashMap<Arc<str>, Marks>,
    flush_scheduled: bool,
    typing: HashMap<Arc<str>, Instant>,
    last_activity: Instant,
    retire_requested: bool,
    retiring: bool,
    draining: bool,
}

impl RoomState {
    fn new(deps: RoomDeps, loaded: LoadedRoom) -> Self {
        let room_id: Arc<str> = Arc::from(loaded.record.room_id.as_str());
        let marks = loaded
            .watermarks
            .into_iter()
            .map(|(u, w)| {
                (
                    Arc::from(u.as_str()),
                    Marks {
                        current: w,
                        announced: Watermarks::default(),
                        loud: false,
                        dirty: false,
                    },
                )
            })
            .collect();
        let mut s = RoomState {
            deps,
            room_id,
            last_seq: loaded.record.last_seq,
            record: loaded.record,
            members: Vec::new(),
            member_ids: Arc::from(Vec::new()),
            roles: HashMap::new(),
            pending: Vec::new(),
            inflight: None,
            marks,
            flush_scheduled: false,
            typing: HashMap::new(),
            last_activity: Instant::now(),
            retire_requested: false,
            retiring: false,
            draining: false,
        };
        s.set_members(loaded.members);
        s
    }

    fn set_members(&mut self, members: Vec<MemberRecord>) {
        self.roles = members
            .iter()
            .map(|m| {
                (
                    m.user_id.clone(),
                    Role::parse(&m.role).unwrap_or(Role::Member),
                )
            })
            .collect();
        self.member_ids = members
            .iter()
            .map(|m| Arc::from(m.user_id.as_str()))
            .collect();
        self.members = members;
    }

    fn info(&self) -> RoomInfo {
        convert::room(&self.record, &self.members, self.last_seq)
    }

    fn is_member(&self, user_id: &str) -> bool {
        self.roles.contains_key(user_id)
    }

    /// Hands events to this node's dispatcher and, once, to every other node.
    fn deliver(&self, users: Arc<[Arc<str>]>, items: Vec<Outbound>, except_user: Option<Arc<str>>) {
        crate::dispatcher::deliver_everywhere(
            &self.deps.cluster,
            &self.deps.dispatcher,
            users,
            items,
            except_user,
            crate::trace::current(),
        );
    }

    /// Tells nodes that just came into this node's view how far the room
    /// has gone. A fan-out made while a node was out of the view missed it,
    /// and no later message may come to show the gap; its connections that
    /// wrote less of the room replay the rest from storage.
    ///
    /// Receipts broadcast meanwhile were lost the same way, so in a room
    /// small enough to broadcast receipts, the notice carries every
    /// member's current watermarks as `receipt` events too (a client keeps
    /// the highest it has seen, so one it already had changes nothing).
    fn tell_head(&self, nodes: &[Arc<str>]) {
        if self.last_seq == 0 || self.member_ids.is_empty() {
            return;
        }
        let mut items = vec![WireItem::Head {
            room_id: self.room_id.to_string(),
            seq: self.last_seq,
        }];
        if self.receipts_broadcast() {
            let mut marks: Vec<_> = self
                .marks
                .iter()
                .filter(|(user, m)| m.current.delivered_seq > 0 && self.is_member(user))
                .collect();
            marks.sort_by(|a, b| a.0.cmp(b.0));
            items.extend(
                marks
                    .into_iter()
                    .map(|(user, m)| WireItem::Frame(self.receipt_json(user, m.current))),
            );
        }
        self.deps.cluster.send_to(
            nodes,
            &PeerPayload::Deliver {
                users: self.member_ids.iter().map(|u| u.to_string()).collect(),
                items,
                except_user: None,
                trace: None,
            },
        );
    }

    /// Whether receipts go to every member (else only to the reader's own
    /// sessions): rooms up to `receipt_fanout_max_members`.
    fn receipts_broadcast(&self) -> bool {
        self.members.len() <= self.deps.config.receipt_fanout_max_members
    }

    /// The `receipt` event of `user`'s watermarks `w`.
    fn receipt_json(&self, user: &str, w: Watermarks) -> String {
        ServerEvent::Receipt {
            room_id: self.room_id.to_string(),
            user_id: user.to_string(),
            delivered_seq: w.delivered_seq,
            read_seq: w.read_seq,
        }
        .to_json()
    }

    /// Tells the other members that `user` is typing (or stopped).
    fn broadcast_typing(&self, user: Arc<str>, active: bool) {
        let notice = TypingNotice::new(self.room_id.clone(), user.clone(), active);
        self.deliver(
            self.member_ids.clone(),
            vec![Outbound::Typing(Arc::new(notice))],
            Some(user),
        );
    }

    /// Ends the typing indicators around a member just removed: theirs,
    /// for the members left, and the others' that they were shown, for
    /// them, before they hear they were removed (after that they get
    /// nothing more of the room).
    fn end_typing_of_removed(&mut self, user_id: &str) {
        let removed: Arc<str> = Arc::from(user_id);
        let shown: Vec<Outbound> = self
            .typing
            .keys()
            .filter(|typist| **typist != removed)
            .map(|typist| {
                let notice = TypingNotice::new(self.room_id.clone(), typist.clone(), false);
                Outbound::Typing(Arc::new(notice))
            })
            .collect();
        if !shown.is_empty() {
            self.deliver(Arc::from(vec![removed.clone()]), shown, None);
        }
        if self.typing.remove(&removed).is_some() {
            self.broadcast_typing(removed, false);
        }
    }

    fn room_event(&self, kind: RoomEventKind, extra: Option<&str>) {
        let event = ServerEvent::Room {
            event: kind,
            room: self.info(),
        };
        let json: Arc<str> = Arc::from(event.to_json());
        let mut users: Vec<Arc<str>> = self.member_ids.to_vec();
        if let Some(u) = extra {
            if !self.is_member(u) {
                users.push(Arc::from(u));
            }
        }
        self.deliver(Arc::from(users), vec![Outbound::frame(json)], None);
    }

    fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    /// Raises a user's watermarks; returns whether there is anything to
    /// persist or announce.
    ///
    /// A `loud` raise (the user's own `delivered` or `read`) is announced
    /// even when it raises nothing, as long as it asks for more than the
    /// last receipt showed: a member who replies before reading raised their
    /// watermarks quietly with the reply, and their `read` that follows must
    /// still tell the others.
    fn raise(&mut self, user: &Arc<str>, delivered: u64, read: u64, loud: bool) -> bool {
        let read = read.min(self.last_seq);
        let delivered = delivered.max(read).min(self.last_seq);
        let m = self.marks.entry(user.clone()).or_default();
        let mut changed = false;
        if delivered > m.current.delivered_seq {
            m.current.delivered_seq = delivered;
            changed = true;
        }
        if read > m.current.read_seq {
            m.current.read_seq = read;
            changed = true;
        }
        if changed {
            m.dirty = true;
        }
        let unshown = delivered > m.announced.delivered_seq || read > m.announced.read_seq;
        let announce = loud && unshown && !m.loud;
        m.loud |= announce;
        changed || announce
    }

    fn schedule_flush(&mut self, myself: &ActorRef<RoomMsg>) {
        if !self.flush_scheduled && !self.draining {
            self.flush_scheduled = true;
            myself.send_after(self.deps.config.receipt_flush, || RoomMsg::FlushReceipts);
        }
    }

    /// Broadcasts raised watermarks as receipts and returns those to persist.
    fn take_receipts(&mut self) -> Vec<(String, Watermarks)> {
        let small = self.receipts_broadcast();
        let mut to_store = Vec::new();
        let mut loud = Vec::new();
        for (user, m) in self.marks.iter_mut() {
            if m.dirty {
                to_store.push((user.to_string(), m.current));
                m.dirty = false;
            }
            if m.loud {
                loud.push((user.clone(), m.current));
                m.announced = m.current;
                m.loud = false;
            }
        }
        for (user, w) in loud {
            let json: Arc<str> = Arc::from(self.receipt_json(&user, w));
            let users = if small {
                self.member_ids.clone()
            } else {
                Arc::from(vec![user])
            };
            self.deliver(users, vec![Outbound::frame(json)], None);
        }
        to_store
    }

    fn reply_error(to: &Caller, r#ref: Option<String>, err: &ChatError, ack: Option<AckKey>) {
        METRICS.error(err.code());
        to.reply(
            ServerEvent::error(r#ref, err.code(), err.to_string()).to_json(),
            ack,
        );
    }

    /// Starts the next group commit if none is in flight.
    fn start_commit(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.inflight.is_some() || self.pending.is_empty() || self.draining {
            return;
        }
        let n = self
            .pending
            .len()
            .min(self.deps.config.commit_batch_max.max(1));
        let (senders, msgs): (Vec<_>, Vec<_>) = self.pending.drain(..n).unzip();
        METRICS
            .room_pending
            .fetch_sub(n as i64, std::sync::atomic::Ordering::Relaxed);
        self.inflight = Some(senders);
        let store = self.deps.store.clone();
        let room_id = self.room_id.clone();
        let head = self.last_seq;
        let me = myself.clone();
        METRICS.commit_batch.observe(msgs.len() as f64);
        let span = tracing::info_span!("room.commit", room_id = %room_id, batch = msgs.len(), head);
        tokio::spawn(
            async move {
                let started = Instant::now();
                let result = store.commit_messages(&room_id, head, &msgs).await;
                METRICS.commit_seconds.observe_duration(started.elapsed());
                let _ = me.cast(RoomMsg::CommitDone { msgs, result });
            }
            .instrument(span),
        );
    }

    /// Acks and fans out a finished commit; returns messages to retry after a head move.
    fn finish_commit(
        &mut self,
        senders: Vec<PendingSend>,
        msgs: Vec<NewMessage>,
        result: StorageResult<Vec<CommitOutcome>>,
    ) -> Option<(Vec<PendingSend>, Vec<NewMessage>)> {
        match result {
            Ok(outcomes) => {
                // The whole commit fans out as one delivery: each session gets
                // its messages back to back and writes them with one syscall,
                // so a slow commit (a big batch) costs no more writes than a
                // fast one.
                let mut fanout = Vec::new();
                let mut trace = None;
                for (p, outcome) in senders.into_iter().zip(outcomes) {
                    let m = outcome.message();
                    let ack = Some((m.room_id.clone(), p.client_msg_id.clone()));
                    if m.sender_id != *p.from.user_id {
                        // Someone else's message holds this client_msg_id: refuse
                        // rather than answer with another user's message.
                        let err = ChatError::Conflict(
                            "client_msg_id already used in this room by another sender".into(),
                        );
                        Self::reply_error(&p.from, p.r#ref, &err, ack);
                        continue;
                    }
                    let sent = ServerEvent::Sent {
                        r#ref: p.r#ref,
                        room_id: m.room_id.clone(),
                        client_msg_id: m.client_msg_id.clone(),
                        seq: m.seq,
                        message_id: m.message_id.clone(),
                        sent_at: to_rfc3339(m.sent_at),
                    };
                    p.from.reply(sent.to_json(), ack);
                    METRICS
                        .send_to_ack_seconds
                        .observe_duration(p.arrived.elapsed());
                    if matches!(outcome, CommitOutcome::Duplicate(_)) {
                        add(&METRICS.messages_duplicate, 1);
                    }
                    if let CommitOutcome::Committed(m) = &outcome {
                        add(&METRICS.messages_committed, 1);
                        self.last_seq = self.last_seq.max(m.seq);
                        let json: Arc<str> =
                            Arc::from(ServerEvent::Message(convert::message(m)).to_json());
                        fanout.push(Outbound::Message(Arc::new(LiveMessage::live(
                            self.room_id.clone(),
                            m.seq,
                            json,
                        ))));
                        trace = trace.or(p.trace);
                        // A sender has read everything up to its own message.
                        self.raise(&p.from.user_id, m.seq, m.seq, false);
                    }
                }
                // The fan-out continues the (first) sender's trace on every node.
                let span = tracing::info_span!("room.fanout", room_id = %self.room_id, batch = fanout.len());
                crate::trace::attach(&span, trace.as_deref());
                let _entered = span.enter();
                self.deliver(self.member_ids.clone(), fanout, None);
                None
            }
            Err(StorageError::HeadMoved { actual, expected }) => {
                tracing::warn!(room = %self.room_id, expected, actual,
                    "another owner committed to this room; retrying on the new head");
                self.last_seq = actual;
                add(&METRICS.head_moved, 1);
                Some((senders, msgs))
            }
            Err(e) => {
                tracing::error!(room = %self.room_id, error = %e, "commit failed");
                add(&METRICS.commit_failures, 1);
                let err = ChatError::Unavailable(
                    "message not stored, retry with the same client_msg_id".into(),
                );
                for p in senders {
                    let ack = Some((self.room_id.to_string(), p.client_msg_id.clone()));
                    Self::reply_error(&p.from, p.r#ref, &err, ack);
                }
                None
            }
        }
    }

    /// Commits everything pending right here (used while draining, when the
    /// mailbox no longer accepts the commit's completion message).
    async fn commit_inline(&mut self) {
        while !self.pending.is_empty() {
            let n = self
                .pending
                .len()
                .min(self.deps.config.commit_batch_max.max(1));
            let (mut senders, mut msgs): (Vec<_>, Vec<_>) = self.pending.drain(..n).unzip();
            METRICS
                .room_pending
                .fetch_sub(n as i64, std::sync::atomic::Ordering::Relaxed);
            loop {
                let result = self
                    .deps
                    .store
                    .commit_messages(&self.room_id, self.last_seq, &msgs)
                    .await;
                match self.finish_commit(senders, msgs, result) {
                    Some((s, m)) => {
                        senders = s;
                        msgs = m;
                    }
                    None => break,
                }
            }
        }
    }

    /// A member added to a room with messages starts with its watermarks at
    /// the head: what was said before is history to read, not unread. Set
    /// quietly (no receipt: the member has not read anything yet) and
    /// persisted before the answer, so `GET /rooms` shows it at once.
    async fn start_marks_at_head(&mut self, user_id: &str) {
        if self.last_seq == 0 {
            return;
        }
        let head = Watermarks {
            delivered_seq: self.last_seq,
            read_seq: self.last_seq,
        };
        let m = self.marks.entry(Arc::from(user_id)).or_default();
        m.current = head;
        m.announced = head;
        self.persist(vec![(user_id.to_string(), head)]).await;
    }

    async fn persist(&self, marks: Vec<(String, Watermarks)>) {
        save_marks(self.deps.store.clone(), self.room_id.clone(), marks).await;
    }

    fn persist_later(&self, marks: Vec<(String, Watermarks)>) {
        if !marks.is_empty() {
            tokio::spawn(save_marks(
                self.deps.store.clone(),
                self.room_id.clone(),
                marks,
            ));
        }
    }

    fn maybe_retire(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.retiring && !self.draining && self.inflight.is_none() && self.pending.is_empty() {
            self.draining = true;
            // Messages already queued are still handled (commits inline); new
            // ones are refused and their senders re-route through the directory.
            let _ = myself.drain();
        }
    }

    /// Takes the room's name and members from storage. Around an ownership
    /// handover another actor of this room may have changed them since this
    /// one loaded it; a change made here must start from what it stored.
    async fn refresh_from_store(&mut self) -> Result<(), ChatError> {
        let store = &self.deps.store;
        let record = store
            .room(&self.room_id)
            .await?
            .ok_or(ChatError::NotFound)?;
        let members = store.members(&self.room_id).await?;
        self.record.name = record.name;
        self.set_members(members);
        let roles = &self.roles;
        self.marks.retain(|user, _| roles.contains_key(&**user));
        Ok(())
    }

    async fn manage(&mut self, by: &str, cmd: ManageCmd) -> Result<RoomInfo, ChatError> {
        self.refresh_from_store().await?;
        let by_role = *self.roles.get(by).ok_or(ChatError::NotFound)?;
        let direct = self.record.kind == RoomKind::Direct.as_str();
        match cmd {
            ManageCmd::AddMember { user_id, username } => {
                if direct {
                    return Err(ChatError::Forbidden(
                        "the members of a direct room cannot change".into(),
                    ));
                }
                if !by_role.can_manage_members() {
                    return Err(ChatError::Forbidden(
                        "only owners and admins can add members".into(),
                    ));
                }
                if self.is_member(&user_id) {
                    return Ok(self.info());
                }
                let rec = MemberRecord {
                    user_id: user_id.clone(),
                    username,
                    role: Role::Member.as_str().into(),
                    joined_at: now_millis(),
                };
                self.deps.store.put_member(&self.room_id, &rec).await?;
                let mut members = self.members.clone();
                members.push(rec);
                self.set_members(members);
                self.start_marks_at_head(&user_id).await;
                self.room_event(RoomEventKind::MemberAdded, None);
                Ok(self.info())
            }
            ManageCmd::RemoveMember { user_id } => {
                let target_role = *self.roles.get(&user_id).ok_or(ChatError::NoSuchMember)?;
                if direct {
                    return Err(ChatError::Forbidden(
                        "the members of a direct room cannot change".into(),
                    ));
                }
                let allowed = user_id == by
                    || by_role == Role::Owner
                    || (by_role == Role::Admin && target_role == Role::Member);
                if !allowed {
                    return Err(ChatError::Forbidden(
                        "only the owner, or an admin for plain members, can remove others".into(),
                    ));
                }
                self.deps
                    .store
                    .remove_member(&self.room_id, &user_id)
                    .await?;
                let mut members: Vec<MemberRecord> = self
                    .members
                    .iter()
                    .filter(|m| m.user_id != user_id)
                    .cloned()
                    .collect();
                if target_role == Role::Owner {
                    // Hand ownership to the longest-standing admin, else member.
                    let heir = members
                        .iter()
                        .position(|m| m.role == Role::Admin.as_str())
                        .or(if members.is_empty() { None } else { Some(0) });
                    if let Some(i) = heir {
                        members[i].role = Role::Owner.as_str().into();
                        self.deps
                            .store
                            .put_member(&self.room_id, &members[i])
                            .await?;
                    }
                }
                self.set_members(members);
                self.marks.remove(user_id.as_str());
                self.end_typing_of_removed(&user_id);
                self.room_event(RoomEventKind::MemberRemoved, Some(&user_id));
                Ok(self.info())
            }
            ManageCmd::SetRole { user_id, role } => {
                if by_role != Role::Owner {
                    return Err(ChatError::Forbidden(
                        "only the owner can change roles".into(),
                    ));
                }
                if role == Role::Owner {
                    return Err(ChatError::Invalid("role must be admin or member".into()));
                }
                if user_id == by {
                    return Err(ChatError::Invalid("the owner's role cannot change".into()));
                }
                let mut members = self.members.clone();
                let m = members
                    .iter_mut()
                    .find(|m| m.user_id == user_id)
                    .ok_or(ChatError::NoSuchMember)?;
                m.role = role.as_str().into();
                let rec = m.clone();
                self.deps.store.put_member(&self.room_id, &rec).await?;
                self.set_members(members);
                self.room_event(RoomEventKind::Updated, None);
                Ok(self.info())
            }
            ManageCmd::Rename { name } => {
                if direct {
                    return Err(ChatError::Forbidden(
                        "a direct room cannot be renamed".into(),
                    ));
                }
                if !by_role.can_manage_members() {
                    return Err(ChatError::Forbidden(
                        "only owners and admins can rename".into(),
                    ));
                }
                self.deps.store.rename_room(&self.room_id, &name).await?;
                self.record.name = name;
                self.room_event(RoomEventKind::Updated, None);
                Ok(self.info())
            }
        }
    }
}

impl Actor for RoomActor {
    type Msg = RoomMsg;
    type State = RoomState;
    type Arguments = RoomArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RoomArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let state = RoomState::new(args.deps, args.loaded);
        myself.send_after(state.deps.config.room_idle, || RoomMsg::IdleCheck);
        tracing::debug!(room = %state.room_id, last_seq = state.last_seq, "room started");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.commit_inline().await;
        let marks = state.take_receipts();
        state.persist(marks).await;
        tracing::debug!(room = %state.room_id, "room stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoomMsg::Send {
                from,
                r#ref,
                client_msg_id,
                body,
                trace,
            } => {
                state.touch();
                let ack = Some((state.room_id.to_string(), client_msg_id.clone()));
                if !state.is_member(&from.user_id) {
                    RoomState::reply_error(&from, r#ref, &ChatError::NotFound, ack);
                    return Ok(());
                }
                if state.pending.len() >= state.deps.config.room_queue_max {
                    let err = ChatError::Unavailable("room overloaded, retry later".into());
                    RoomState::reply_error(&from, r#ref, &err, ack);
                    return Ok(());
                }
                let msg = NewMessage {
                    message_id: new_id(),
                    sender_id: from.user_id.to_string(),
                    sender_name: from.username.to_string(),
                    body,
                    sent_at: now_millis(),
                    client_msg_id: client_msg_id.clone(),
                };
                state.pending.push((
                    PendingSend {
                        from,
                        r#ref,
                        client_msg_id,
                        arrived: Instant::now(),
                        trace,
                    },
                    msg,
                ));
                METRICS
                    .room_pending
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if state.draining {
                    state.commit_inline().await;
                } else {
                    state.start_commit(&myself);
                }
            }
            RoomMsg::CommitDone { msgs, result } => {
                let senders = state.inflight.take().unwrap_or_default();
                if let Some((senders, msgs)) = state.finish_commit(senders, msgs, result) {
                    // Head moved: retry the same batch first, on the new head.
                    let mut retry: Vec<_> = senders.into_iter().zip(msgs).collect();
                    METRICS
                        .room_pending
                        .fetch_add(retry.len() as i64, std::sync::atomic::Ordering::Relaxed);
                    retry.append(&mut state.pending);
                    state.pending = retry;
                }
                state.schedule_flush(&myself);
                state.start_commit(&myself);
                state.maybe_retire(&myself);
            }
            RoomMsg::Typing { from, active } => {
                state.touch();
                if !state.is_member(&from.user_id) {
                    RoomState::reply_error(&from, None, &ChatError::NotFound, None);
                    return Ok(());
                }
                if active {
                    state.typing.insert(
                        from.user_id.clone(),
                        Instant::now() + state.deps.config.typing_ttl,
                    );
                    let user = from.user_id.clone();
                    if !state.draining {
                        myself.send_after(state.deps.config.typing_ttl, move || {
                            RoomMsg::TypingExpired(user)
                        });
                    }
                } else {
                    state.typing.remove(&from.user_id);
                }
                state.broadcast_typing(from.user_id, active);
            }
            RoomMsg::TypingExpired(user) => {
                if let Some(deadline) = state.typing.get(&user) {
                    if *deadline <= Instant::now() {
                        state.typing.remove(&user);
                        state.broadcast_typing(user, false);
                    }
                }
            }
            RoomMsg::Watermark {
                from,
                delivered,
                read,
                r#ref,
            } => {
                state.touch();
                if !state.is_member(&from.user_id) {
                    RoomState::reply_error(&from, r#ref, &ChatError::NotFound, None);
                    return Ok(());
                }
                if state.raise(&from.user_id, delivered, read, true) {
                    if state.draining {
                        let marks = state.take_receipts();
                        state.persist(marks).await;
                    } else {
                        state.schedule_flush(&myself);
                    }
                }
            }
            RoomMsg::FlushReceipts => {
                state.flush_scheduled = false;
                let marks = state.take_receipts();
                state.persist_later(marks);
            }
            RoomMsg::Manage { by, cmd, reply } => {
                state.touch();
                let result = state.manage(&by, cmd).await;
                let _ = reply.send(result);
            }
            RoomMsg::Info { user_id, reply } => {
                let result = if state.is_member(&user_id) {
                    Ok(state.info())
                } else {
                    Err(ChatError::NotFound)
                };
                let _ = reply.send(result);
            }
            RoomMsg::IdleCheck => {
                let idle = state.last_activity.elapsed() >= state.deps.config.room_idle;
                if idle
                    && state.pending.is_empty()
                    && state.inflight.is_none()
                    && !state.retire_requested
                {
                    state.retire_requested = true;
                    let _ = state.deps.directory.cast(DirectoryMsg::Retire {
                        room_id: state.room_id.to_string(),
                        actor: myself.clone(),
                    });
                } else if !state.draining {
                    myself.send_after(state.deps.config.room_idle, || RoomMsg::IdleCheck);
                }
            }
            RoomMsg::PeersJoined(nodes) => state.tell_head(&nodes),
            RoomMsg::RetireAccepted => {
                state.retiring = true;
                let marks = state.take_receipts();
                state.persist(marks).await;
                state.maybe_retire(&myself);
            }
        }
        Ok(())
    }
}

/// Persists raised watermarks, all of the room's in one store call
/// (storage keeps the maximum, so order does not matter).
async fn save_marks(store: Arc<dyn Store>, room_id: Arc<str>, marks: Vec<(String, Watermarks)>) {
    if let Err(e) = store.raise_room_watermarks(&room_id, &marks).await {
        tracing::warn!(room = %room_id, users = marks.len(), error = %e, "could not persist watermarks");
    }
}

// Local-only message: never serialized (see `cluster` for what crosses nodes).
impl ractor::Message for RoomMsg {}
