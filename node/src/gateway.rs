//! The WebSocket gateway at `/ws`.
//!
//! Authenticates before the upgrade (401 otherwise), completes the handshake
//! itself ([`crate::ws_handshake`]) with the socket under a
//! [`MessageWatch`] (messages left unfinished: 1008, or 1013 with no room
//! for them), then runs two tasks per connection around the session actor:
//! - the reader: size check (1009), rate limit (`rate_limited`, then 1008 if
//!   the flood goes on), parse (`invalid_json`/`unknown_type`/
//!   `invalid_request`), and hands valid frames to the session actor;
//! - the writer: drains the session's bounded outbound queue into the socket,
//!   ordering live messages against `sync` replays, and closes with the code
//!   asked for (1012 on shutdown, 1013 for slow clients). Writers run on a
//!   runtime of their own, so that a fan-out to a thousand sockets never
//!   stands between an actor and its next message.

use std::collections::HashMap;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tracing::Instrument;

use parley_actors::ordering::{DeliveryOrder, Verdict};
use parley_actors::outbound::{
    self, Next, Outbound, OutboundRx, OutboundTx, SyncItem, TypingNotice,
};
use parley_actors::session::SessionMsg;
use parley_actors::typing_watch::TypingWatch;
use parley_protocol::ids::new_id;
use parley_protocol::ws::{
    parse_client_frame, peek_ref, ClientFrame, ClientRequest, ServerEvent, CLOSE_INVALID_DATA,
    CLOSE_POLICY, CLOSE_PROTOCOL_ERROR, CLOSE_TOKEN_INVALID, CLOSE_TOO_LARGE, CLOSE_TRY_AGAIN,
};
use parley_protocol::ErrorCode;
use ractor::ActorRef;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

use crate::api::error::ApiError;
use crate::auth::extract::bearer;
use crate::auth::tokens::Claims;
use crate::message_watch::{MessageWatch, Unfinished};
use crate::metrics::{inc, Metrics};
use crate::ratelimit::{Admit, ConnectionLimit};
use crate::session_cap::SessionSlot;
use crate::state::AppState;
use crate::ws_handshake::{Handshake, NotAWebSocket, UpgradedIo};

/// A client's WebSocket, its unfinished messages watched.
type WebSocket = WebSocketStream<MessageWatch<UpgradedIo>>;

/// The most the socket writer may have written and not yet flushed.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// Seconds a client refused for holding too many sessions is told to wait.
const SESSION_CAP_RETRY_SECS: u64 = 5;

/// `GET /ws`: authenticate, then upgrade.
pub async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<Handshake, NotAWebSocket>,
) -> Response {
    let token = params
        .get("token")
        .map(String::as_str)
        .or_else(|| bearer(&headers));
    let Some(claims) = token.and_then(|t| state.tokens.verify(t)) else {
        inc(&state.metrics.ws_auth_failures);
        return ApiError::unauthorized("missing, invalid or expired token").into_response();
    };
    // An upgrade counts against the user's API budget like any request with
    // its token: each session's start and end is announced to everyone who
    // shares a room with the user, so a connect-and-close loop must not be free.
    if let Err(secs) = state.limits.api_user.check(&claims.sub) {
        inc(&state.metrics.api_rate_limited);
        return ApiError::rate_limited(secs).into_response();
    }
    if state.draining.load(Ordering::SeqCst) {
        return ApiError::new(
            ErrorCode::Unavailable,
            "node is shutting down; connect to another node",
        )
        .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    // Held for the session's whole life; given back when `run` ends (or
    // when the upgrade never completes and the callback is dropped).
    let Some(slot) = state.sessions.acquire(&claims.sub) else {
        inc(&state.metrics.ws_sessions_refused);
        return ApiError {
            message: format!(
                "this user already has {} sessions open on this node; close one first",
                state.config.max_sessions_per_user
            ),
            ..ApiError::rate_limited(SESSION_CAP_RETRY_SECS)
        }
        .into_response();
    };
    let limit = state.config.max_frame_bytes;
    // The library refuses a frame whose header says it is over the limit,
    // and a fragmented message once its parts pass it, before buffering
    // more (1009 either way): an unfinished message never costs more than
    // the limit. The watch bounds how long it may take, and what all
    // large unfinished messages hold together (see `message_watch`).
    let config = WebSocketConfig::default()
        .max_frame_size(Some(limit))
        .max_message_size(Some(limit))
        .read_buffer_size(1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    ws.accept(move |io| async move {
        let watched = MessageWatch::new(
            io,
            state.message_rules.clone(),
            Arc::from(claims.sub.as_str()),
        );
        let socket = WebSocketStream::from_raw_socket(watched, Role::Server, Some(config)).await;
        // Set up in the upgrade's task, then serve from a task of its own
        // that holds only what the connection needs for its whole life: the
        // upgrade's task also carries the set-up's state, which every idle
        // connection would keep.
        if let Some((connection, span)) = open(state, socket, claims, slot).await {
            tokio::spawn(connection.serve(span));
        }
    })
}

/// Seconds from now until `exp` (seconds since the epoch); 0 if past.
fn secs_until(exp: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    exp.saturating_sub(now)
}

/// When a session on a token with expiry `exp` ends: when the token is
/// no longer accepted (with the same leeway as at the upgrade, so a token
/// accepted there never closes its session at once).
fn deadline(exp: u64) -> tokio::time::Instant {
    let end = exp.saturating_add(crate::auth::tokens::LEEWAY_SECS);
    // Capped: an `exp` at the end of time would overflow the clock.
    let secs = secs_until(end).min(MAX_SESSION_SECS);
    tokio::time::Instant::now() + Duration::from_secs(secs)
}

/// Longest a session lasts on one token (ten years; tokens are issued for
/// minutes, so only a token with a far-off `exp` meets it).
const MAX_SESSION_SECS: u64 = 10 * 365 * 24 * 3600;

/// A connection once set up: what it keeps for its whole life.
struct Connection {
    state: AppState,
    /// The user the token named (an `auth` frame must name the same one).
    user_id: String,
    /// When the token the session lives on expires, seconds since the epoch.
    exp: u64,
    stream: SplitStream<WebSocket>,
    tx: OutboundTx,
    session: ActorRef<SessionMsg>,
    /// The socket writer's task.
    writer: tokio::task::JoinHandle<()>,
    /// The user's place under the per-user session cap, given back last.
    slot: SessionSlot,
}

/// Starts the session actor and the socket writer for a new connection.
/// `None` if the session could not start (the socket is dropped).
async fn open(
    state: AppState,
    socket: WebSocket,
    claims: Claims,
    slot: SessionSlot,
) -> Option<(Connection, tracing::Span)> {
    inc(&state.metrics.ws_connections);
    let session_id: Arc<str> = Arc::from(new_id());
    let queue_bytes = outbound::QueueBytes {
        per_session: state.config.outbound_queue_bytes,
        node_messages: state.config.max_outbound_message_bytes,
    };
    let (tx, rx) = outbound::channel(state.config.outbound_queue.max(16), queue_bytes);
    let session = match state
        .system
        .start_session(
            session_id.clone(),
            Arc::from(claims.sub.as_str()),
            Arc::from(claims.name.as_str()),
            tx.clone(),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "could not start session");
            return None;
        }
    };
    let (sink, stream) = socket.split();
    let writer = state.writers.spawn(write_loop(
        sink,
        rx,
        HoldMax {
            messages: state.config.outbound_queue.max(16),
            bytes: queue_bytes,
        },
        state.config.typing_ttl(),
        session.clone(),
    ));
    let span = tracing::info_span!("ws.session", session_id = %session_id, user_id = %claims.sub);
    let connection = Connection {
        state,
        user_id: claims.sub,
        exp: claims.exp,
        stream,
        tx,
        session,
        writer,
        slot,
    };
    Some((connection, span))
}

impl Connection {
    /// Reads the client's frames until it leaves or is closed, then ends
    /// the session.
    ///
    /// Not an `async fn`: those keep a second copy of their arguments in
    /// their future, for the connection's whole life.
    fn serve(mut self, span: tracing::Span) -> impl std::future::Future<Output = ()> + Send {
        async move {
            tracing::debug!("connection opened");
            read_loop(
                &self.state,
                &mut self.stream,
                &self.tx,
                &self.session,
                &self.user_id,
                self.exp,
            )
            .await;
            // Reader done (client left, or a close was asked for): end the session.
            self.tx.close(1000);
            // Drained, not stopped: requests the client sent before it left (or
            // before a 1008) are still carried out; their acks go nowhere, and
            // a resend after reconnecting gets the same ack.
            let _ = self.session.drain();
            let _ = (&mut self.writer).await;
            tracing::debug!("connection closed");
            drop(self.slot);
        }
        .instrument(span)
    }
}

/// Reads `user_id`'s frames until the client leaves, the session is
/// closed, or its token (expiring at `exp`, extended by `auth` frames)
/// runs out.
async fn read_loop(
    state: &AppState,
    stream: &mut SplitStream<WebSocket>,
    tx: &OutboundTx,
    session: &ActorRef<SessionMsg>,
    user_id: &str,
    exp: u64,
) {
    let mut limit = ConnectionLimit::new(
        state.config.ws_rate,
        state.config.ws_burst,
        state.config.ws_flood_close_after,
    );
    // The session lives as long as its token; `auth` frames extend it
    // (never shorten it: a still-valid older token changes nothing).
    let mut session_exp = exp;
    let expiry = tokio::time::sleep_until(deadline(session_exp));
    tokio::pin!(expiry);
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = tx.closed() => return,
            _ = &mut expiry => {
                tx.close(CLOSE_TOKEN_INVALID);
                return;
            }
        };
        let text = match msg {
            None => return,
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(b))) => {
                if b.len() > state.config.max_frame_bytes {
                    inc(&state.metrics.ws_too_large_closes);
                    tx.close(CLOSE_TOO_LARGE);
                    return;
                }
                refuse(
                    tx,
                    None,
                    ErrorCode::InvalidRequest,
                    "binary frames are not supported",
                );
                continue;
            }
            Some(Ok(Message::Close(_))) => return,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                // The library answers pings itself, a pong each: they count
                // against the rate like text frames, so a flood of them ends
                // the same way (no error frame for them: they have no `ref`).
                if admit(&mut limit, state, tx) == Admit::Flood {
                    return;
                }
                continue;
            }
            Some(Ok(Message::Frame(_))) => continue, // raw frames are never read
            Some(Err(e)) => {
                if let Some((code, counter)) = close_for(e, &state.metrics) {
                    inc(counter);
                    tx.close(code);
                }
                return;
            }
        };
        inc(&state.metrics.ws_frames_in);
        if text.len() > state.config.max_frame_bytes {
            inc(&state.metrics.ws_too_large_closes);
            tx.close(CLOSE_TOO_LARGE);
            return;
        }
        match admit(&mut limit, state, tx) {
            Admit::Yes => {}
            Admit::Refused => {
                refuse(
                    tx,
                    peek_ref(&text),
                    ErrorCode::RateLimited,
                    "too many frames, slow down",
                );
                continue;
            }
            Admit::Flood => return,
        }
        match parse_client_frame(&text) {
            Ok(ClientFrame {
                r#ref,
                request: ClientRequest::Auth(auth),
            }) => {
                match state
                    .tokens
                    .verify(&auth.token)
                    .filter(|c| c.sub == user_id)
                {
                    Some(fresh) => {
                        session_exp = session_exp.max(fresh.exp);
                        expiry.as_mut().reset(deadline(session_exp));
                        let expires_in = secs_until(session_exp);
                        tx.frame(ServerEvent::Authed { r#ref, expires_in }.to_json());
                    }
                    None => refuse(
                        tx,
                        r#ref,
                        ErrorCode::Unauthorized,
                        "invalid or expired token",
                    ),
                }
            }
            Ok(frame) => {
                if session.cast(SessionMsg::Frame(frame)).is_err() {
                    return;
                }
            }
            Err(e) => {
                inc(&state.metrics.ws_bad_frames);
                refuse(tx, e.r#ref, e.code, e.message);
            }
        }
    }
}

/// Counts a frame against the connection's rate: a refusal is counted in
/// `parley_ws_rate_limited_total`; a flood closes the connection with 1008.
fn admit(limit: &mut ConnectionLimit, state: &AppState, tx: &OutboundTx) -> Admit {
    let verdict = limit.admit();
    match verdict {
        Admit::Yes => {}
        Admit::Refused => inc(&state.metrics.ws_rate_limited),
        Admit::Flood => {
            inc(&state.metrics.ws_rate_limited);
            inc(&state.metrics.ws_flood_closes);
            tx.close(CLOSE_POLICY);
        }
    }
    verdict
}

/// Answers a frame the gateway refuses with an `error`, counted by code in
/// `parley_errors_total` like the errors sessions and rooms answer.
fn refuse(tx: &OutboundTx, r#ref: Option<String>, code: ErrorCode, message: impl Into<String>) {
    parley_actors::metrics::METRICS.error(code);
    tx.frame(ServerEvent::error(r#ref, code, message).to_json());
}

/// The close code (RFC 6455, 7.4.1) for a frame the WebSocket library
/// refused or a message the watch gave up on, and the counter of such
/// closes; `None` when the peer is gone and there is no one to tell.
fn close_for(e: tungstenite::Error, metrics: &Metrics) -> Option<(u16, &AtomicU64)> {
    use tungstenite::error::{Error, ProtocolError};
    let protocol = &metrics.ws_protocol_error_closes;
    match e {
        Error::Io(e) => match Unfinished::of(&e)? {
            Unfinished::Stalled => Some((CLOSE_POLICY, &metrics.ws_unfinished_closes)),
            Unfinished::NoRoom => Some((CLOSE_TRY_AGAIN, &metrics.ws_unfinished_closes)),
        },
        Error::Capacity(_) => Some((CLOSE_TOO_LARGE, &metrics.ws_too_large_closes)),
        Error::Utf8(_) => Some((CLOSE_INVALID_DATA, protocol)),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Protocol(_) => Some((CLOSE_PROTOCOL_ERROR, protocol)),
        _ => None,
    }
}

type Sink = SplitSink<WebSocket, Message>;

async fn close(sink: &mut Sink, code: u16) {
    let reason = match code {
        CLOSE_TOO_LARGE => "frame too large",
        CLOSE_POLICY => "policy violation",
        CLOSE_PROTOCOL_ERROR => "WebSocket protocol error",
        CLOSE_INVALID_DATA => "text frame is not valid UTF-8",
        CLOSE_TRY_AGAIN => "try again later",
        1012 => "node going away; reconnect and sync",
        CLOSE_TOKEN_INVALID => "token expired",
        _ => "",
    };
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// A client that accepts nothing for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Live messages wait at most this long after connecting for the client's
/// first `sync` (any other request ends the wait too).
const FIRST_SYNC_GRACE: Duration = Duration::from_secs(2);

/// Most frames written between two flushes.
const WRITE_BATCH: usize = 64;

/// How long a closing connection may spend writing what is still queued.
const FLUSH_BEFORE_CLOSE: Duration = Duration::from_secs(1);

/// Why a writer can write to its socket no more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stuck {
    /// The client took nothing for [`WRITE_TIMEOUT`]: a slow consumer.
    Slow,
    /// The socket failed (the client is gone).
    Broken,
}

/// What a write or flush came to.
type Written = Result<(), Stuck>;

/// Waits for a write or flush, at most [`WRITE_TIMEOUT`].
async fn in_time<E>(work: impl std::future::Future<Output = Result<(), E>>) -> Written {
    match tokio::time::timeout(WRITE_TIMEOUT, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Stuck::Broken),
        Err(_) => Err(Stuck::Slow),
    }
}

/// Queues a frame in the socket's write buffer (written out by `flush`).
async fn put(sink: &mut Sink, json: &str) -> Written {
    in_time(sink.feed(Message::Text(Utf8Bytes::from(json)))).await
}

/// Writes everything queued in the socket's write buffer.
async fn flush(sink: &mut Sink) -> Written {
    in_time(sink.flush()).await
}

/// A writer that can write no more ends its connection: the reader sees
/// the close and ends the session, and the socket is closed (no close
/// frame can get through). Before, the writer just stopped, and a client
/// that had stopped reading for 15 s kept a session that sent it nothing
/// more, ever, and no close either.
fn give_up(close: &outbound::CloseSignal, stuck: Stuck) {
    if stuck == Stuck::Slow {
        parley_actors::metrics::add(&parley_actors::metrics::METRICS.slow_consumer_closes, 1);
    }
    close.close(CLOSE_TRY_AGAIN);
}

/// The frames one queued item asks the writer to write.
enum Frames {
    /// Nothing to write.
    None,
    /// One frame.
    One(Arc<str>),
    /// Several, in order.
    Many(Vec<Arc<str>>),
}

/// Runs `work` (a write or flush to the socket) unless the session is
/// closed as a slow consumer (1013) meanwhile: a client that reads nothing
/// keeps a write waiting up to [`WRITE_TIMEOUT`], and its queue's overflow
/// must end it now, not then (`Err` with the code). A close with another
/// code lets the work finish (its frames may be the reason for the close)
/// and is noted in `asked`, where `close_wait`, which completes once, is
/// not polled again.
///
/// `work` comes pinned by the caller: moved in here, it would be kept
/// twice in this future, which is part of every connection's memory.
async fn unless_overflow<T, W, F>(
    mut work: Pin<&mut W>,
    close_wait: Pin<&mut F>,
    asked: &mut Option<u16>,
) -> Result<T, u16>
where
    W: std::future::Future<Output = T>,
    F: std::future::Future<Output = u16>,
{
    if asked.is_some() {
        return Ok(work.await);
    }
    tokio::select! {
        biased;
        code = close_wait => {
            if code == CLOSE_TRY_AGAIN {
                return Err(code);
            }
            *asked = Some(code);
            Ok(work.await)
        }
        out = work.as_mut() => Ok(out),
    }
}

/// Writes `frames` into the socket's write buffer, or says why it could not.
async fn write(sink: &mut Sink, frames: Frames) -> Written {
    match frames {
        Frames::None => Ok(()),
        Frames::One(json) => put(sink, &json).await,
        Frames::Many(all) => {
            for json in all {
                put(sink, &json).await?;
            }
            Ok(())
        }
    }
}

/// Too much is held back for a slow client: close with 1013.
struct Overflow;

/// How much a connection may hold back (live messages waiting for a replay,
/// or for the first `sync`) before it is closed with 1013: the same as its
/// live queue, in messages and in bytes (its own, and how far behind it may
/// be while the node holds too many messages).
#[derive(Debug, Clone, Copy)]
struct HoldMax {
    messages: usize,
    bytes: outbound::QueueBytes,
}

impl HoldMax {
    /// No bound (a closing connection writing what is left).
    const NONE: HoldMax = HoldMax {
        messages: usize::MAX,
        bytes: outbound::QueueBytes {
            per_session: usize::MAX,
            node_messages: 0,
        },
    };

    /// Whether `order` holds more than this.
    fn passed(self, order: &DeliveryOrder) -> bool {
        let held = order.held_bytes();
        order.held_len() > self.messages
            || held > self.bytes.per_session
            || self.bytes.too_far_behind(held)
    }
}

/// What the writer keeps about its connection besides the socket.
struct Shown {
    /// Live messages against `sync` replays.
    order: DeliveryOrder,
    /// Typing indicators the client shows.
    typing: TypingWatch,
}

/// What to write for a live item (deciding is kept apart from writing, so
/// that the writer's task holds one write in progress, not one per kind).
fn live_item(
    shown: &mut Shown,
    session: &ActorRef<SessionMsg>,
    item: Outbound,
    hold_max: HoldMax,
) -> Result<Frames, Overflow> {
    let Shown { order, typing } = shown;
    let frames = match item {
        Outbound::Frame(json) => Frames::One(json),
        Outbound::Large(f) => Frames::One(f.json.clone()),
        Outbound::Typing(t) => {
            if typing.pass(&t.room_id, &t.user_id, t.active, Instant::now()) {
                Frames::One(t.json.clone())
            } else {
                Frames::None
            }
        }
        Outbound::Message(m) => match order.live(&m.room_id, m.seq, &m.json) {
            Verdict::Write => Frames::One(m.json.clone()),
            Verdict::Duplicate => Frames::None,
            Verdict::Held | Verdict::Gap { .. } if hold_max.passed(order) => return Err(Overflow),
            Verdict::Held => Frames::None,
            Verdict::Gap { after } => {
                // A delivery was lost on the way: the session replays the
                // missing seqs from storage; the room is held until then.
                let _ = session.cast(SessionMsg::Repair {
                    room: m.room_id.clone(),
                    after,
                });
                Frames::None
            }
        },
        Outbound::SyncStart(start) => {
            let now = order.start_sync(&start.rooms, start.client);
            start.taken();
            Frames::Many(now)
        }
        Outbound::OpenGate => Frames::Many(order.open_gate()),
        Outbound::Head(head) => {
            if let Some(after) = order.head(&head.room_id, head.seq) {
                // The room's last deliveries were lost on the way: replay
                // them from storage, as for a gap a live message shows.
                let _ = session.cast(SessionMsg::Repair {
                    room: head.room_id.clone(),
                    after,
                });
            }
            Frames::None
        }
    };
    Ok(frames)
}

/// What to write for an item of a `sync` replay.
fn sync_item(order: &mut DeliveryOrder, session: &ActorRef<SessionMsg>, item: SyncItem) -> Frames {
    match item {
        SyncItem::Message(m) => match order.replayed(&m.room_id, m.seq) {
            Verdict::Write => Frames::One(m.json.clone()),
            _ => Frames::None,
        },
        SyncItem::RoomDone(end) => {
            let released = order.end_sync(&end.room_id, end.seq);
            if let Some(after) = released.repair_after {
                let _ = session.cast(SessionMsg::Repair {
                    room: end.room_id.clone(),
                    after,
                });
            }
            Frames::Many(released.frames)
        }
        SyncItem::RoomReleased(room_id) => Frames::Many(order.release(&room_id)),
        SyncItem::Done(json) => Frames::One(json),
        // Dropping it gives the page's bytes back.
        SyncItem::PageTaken(_) => Frames::None,
    }
}

/// What to write for the next item, from either queue.
fn next_item(
    shown: &mut Shown,
    session: &ActorRef<SessionMsg>,
    next: Next,
    hold_max: HoldMax,
) -> Result<Frames, Overflow> {
    match next {
        Next::Live(item) => live_item(shown, session, item, hold_max),
        Next::Sync(item) => Ok(sync_item(&mut shown.order, session, item)),
    }
}

/// Writes the frames already queued (at most a few hundred) without waiting for more.
async fn flush_queued(
    sink: &mut Sink,
    rx: &mut OutboundRx,
    shown: &mut Shown,
    session: &ActorRef<SessionMsg>,
) {
    for _ in 0..256 {
        let Some(next) = rx.try_next() else { break };
        let Ok(frames) = next_item(shown, session, next, HoldMax::NONE) else {
            break;
        };
        if write(sink, frames).await.is_err() {
            break;
        }
    }
    let _ = flush(sink).await;
}

/// Closes the socket with `code`, first writing what is already queued
/// (e.g. the errors that led to a 1008), except to a slow client (1013),
/// which gets nothing more.
async fn close_after_queued(
    sink: &mut Sink,
    rx: &mut OutboundRx,
    shown: &mut Shown,
    session: &ActorRef<SessionMsg>,
    code: u16,
) {
    if code != CLOSE_TRY_AGAIN {
        let drain = flush_queued(sink, rx, shown, session);
        let _ = tokio::time::timeout(FLUSH_BEFORE_CLOSE, drain).await;
    }
    close(sink, code).await;
}

/// When the writer next has something to do by itself: the end of the
/// wait for a first `sync`, or of a typing indicator nobody ended.
fn next_timer(shown: &Shown, gate_deadline: tokio::time::Instant) -> Option<tokio::time::Instant> {
    let typing_end = shown
        .typing
        .next_deadline()
        .map(tokio::time::Instant::from_std);
    let gate = shown.order.is_gated().then_some(gate_deadline);
    match (gate, typing_end) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The frames due when the writer's timer fires: live messages held for a
/// first `sync` that did not come, and the end of typing indicators whose
/// room never ended them (it moved to another node meanwhile).
fn timer_frames(shown: &mut Shown, gate_deadline: tokio::time::Instant) -> Frames {
    let mut frames = Vec::new();
    if shown.order.is_gated() && tokio::time::Instant::now() >= gate_deadline {
        frames = shown.order.open_gate();
    }
    frames.extend(
        shown
            .typing
            .expired(Instant::now())
            .into_iter()
            .map(|(room_id, user_id)| TypingNotice::new(room_id, user_id, false).json),
    );
    Frames::Many(frames)
}

/// Drains the session's queues into the socket, in order, batching writes.
///
/// Not an `async fn`, which would keep a second copy of its arguments in
/// its future: the writer's future is part of every idle connection's
/// memory, so it holds no more than one write in progress, and the rare
/// close is boxed.
#[allow(clippy::manual_async_fn)] // on purpose, see above
fn write_loop(
    mut sink: Sink,
    mut rx: OutboundRx,
    hold_max: HoldMax,
    typing_ttl: Duration,
    session: ActorRef<SessionMsg>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let mut shown = Shown {
            order: DeliveryOrder::gated(),
            typing: TypingWatch::new(typing_ttl),
        };
        let gate_deadline = tokio::time::Instant::now() + FIRST_SYNC_GRACE;
        let close_signal = rx.close.clone();
        // One close waiter for the whole connection, registered once (creating
        // it per frame cost two lock round trips on every write).
        let close_wait = close_signal.wait();
        tokio::pin!(close_wait);
        // A close asked for while a write was in progress (other than 1013,
        // which does not wait for the write): taken once the write is done.
        let mut asked: Option<u16> = None;
        let code = 'writing: loop {
            if let Some(code) = asked {
                break code;
            }
            let timer = next_timer(&shown, gate_deadline);
            let step = tokio::select! {
                biased;
                code = &mut close_wait => Step::Close(code),
                item = rx.next() => match item {
                    Some(next) => Step::after(next_item(&mut shown, &session, next, hold_max)),
                    None => return,
                },
                _ = tokio::time::sleep_until(timer.unwrap_or(gate_deadline)), if timer.is_some() => {
                    Step::Write(timer_frames(&mut shown, gate_deadline))
                }
            };
            let mut written = match step {
                Step::Write(frames) => {
                    let write = pin!(write(&mut sink, frames));
                    match unless_overflow(write, close_wait.as_mut(), &mut asked).await {
                        Ok(written) => written,
                        Err(code) => break code,
                    }
                }
                Step::Close(code) => break code,
            };
            // Write whatever else is ready too, then flush once.
            for _ in 0..WRITE_BATCH {
                if written.is_err() {
                    break;
                }
                let Some(item) = rx.try_next_live() else {
                    break;
                };
                written = match Step::after(live_item(&mut shown, &session, item, hold_max)) {
                    Step::Write(frames) => {
                        let write = pin!(write(&mut sink, frames));
                        match unless_overflow(write, close_wait.as_mut(), &mut asked).await {
                            Ok(written) => written,
                            Err(code) => break 'writing code,
                        }
                    }
                    Step::Close(code) => break 'writing code,
                };
            }
            if let Err(stuck) = written {
                return give_up(&close_signal, stuck);
            }
            let flushing = pin!(flush(&mut sink));
            match unless_overflow(flushing, close_wait.as_mut(), &mut asked).await {
                Ok(Ok(())) => {}
                Ok(Err(stuck)) => return give_up(&close_signal, stuck),
                Err(code) => break code,
            }
        };
        if code == CLOSE_TRY_AGAIN {
            // Every 1013 is a slow consumer: a full queue (the producers'
            // close signal) or too much held back (the writer's own).
            parley_actors::metrics::add(&parley_actors::metrics::METRICS.slow_consumer_closes, 1);
        }
        // Boxed: it happens once, and kept inline its futures would be part
        // of the writer's memory for the connection's whole life.
        Box::pin(close_after_queued(
            &mut sink, &mut rx, &mut shown, &session, code,
        ))
        .await;
    }
}

/// What the writer does next.
enum Step {
    /// Write these frames.
    Write(Frames),
    /// Close the socket with this code.
    Close(u16),
}

impl Step {
    /// Writes what an item asks for, or closes with 1013 when too much is
    /// held back.
    fn after(item: Result<Frames, Overflow>) -> Self {
        match item {
            Ok(frames) => Step::Write(frames),
            Err(Overflow) => Step::Close(CLOSE_TRY_AGAIN),
        }
    }
}
