//! The WebSocket gateway at `/ws`.
//!
//! Authenticates before the upgrade (401 otherwise), then runs two tasks per
//! connection around the session actor:
//! - the reader: size check (1009), rate limit (`rate_limited`, then 1008 if
//!   the flood goes on), parse (`invalid_json`/`unknown_type`/
//!   `invalid_request`), and hands valid frames to the session actor;
//! - the writer: drains the session's bounded outbound queue into the socket,
//!   ordering live messages against `sync` replays, and closes with the code
//!   asked for (1012 on shutdown, 1013 for slow clients). Writers run on a
//!   runtime of their own, so that a fan-out to a thousand sockets never
//!   stands between an actor and its next message.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
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

use crate::api::error::ApiError;
use crate::auth::extract::bearer;
use crate::auth::tokens::Claims;
use crate::metrics::inc;
use crate::ratelimit::ConnectionLimit;
use crate::state::AppState;

/// Tungstenite refuses frames beyond this outright; frames between the
/// configured limit and this are read and refused with 1009 by us.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;

/// Seconds a client refused for holding too many sessions is told to wait.
const SESSION_CAP_RETRY_SECS: u64 = 5;

/// `GET /ws`: authenticate, then upgrade.
pub async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = params
        .get("token")
        .map(String::as_str)
        .or_else(|| bearer(&headers));
    let Some(claims) = token.and_then(|t| state.tokens.verify(t)) else {
        inc(&state.metrics.ws_auth_failures);
        return ApiError::unauthorized("missing, invalid or expired token").into_response();
    };
    if state.draining.load(Ordering::SeqCst) {
        return ApiError::new(
            ErrorCode::Unavailable,
            "node is shutting down; connect to another node",
        )
        .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::invalid(e.body_text()).into_response(),
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
    ws.max_frame_size(HARD_FRAME_LIMIT.max(limit))
        .max_message_size(HARD_FRAME_LIMIT.max(limit))
        .read_buffer_size(1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| async move {
            run(state, socket, claims).await;
            drop(slot);
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
    tokio::time::Instant::now() + Duration::from_secs(secs_until(end))
}

async fn run(state: AppState, socket: WebSocket, claims: Claims) {
    let (user_id, username) = (claims.sub.clone(), claims.name.clone());
    inc(&state.metrics.ws_connections);
    let session_id: Arc<str> = Arc::from(new_id());
    let (tx, rx) = outbound::channel(state.config.outbound_queue.max(16));
    let (sink, stream) = socket.split();
    // Boxed: the actor's start-up future is large, and kept inline it would
    // stay part of this connection's task for the connection's whole life.
    let starting = Box::pin(state.system.start_session(
        session_id.clone(),
        Arc::from(user_id.as_str()),
        Arc::from(username.as_str()),
        tx.clone(),
    ));
    let session = match starting.await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "could not start session");
            return;
        }
    };
    let span = tracing::info_span!("ws.session", session_id = %session_id, user_id = %user_id);
    async {
        tracing::debug!("connection opened");
        let writer = state.writers.spawn(write_loop(
            sink,
            rx,
            state.config.outbound_queue.max(16),
            state.config.typing_ttl(),
            session.clone(),
        ));
        read_loop(&state, stream, &tx, &session, claims).await;
        // Reader done (client left, or a close was asked for): end the session.
        tx.close(1000);
        // Drained, not stopped: requests the client sent before it left (or
        // before a 1008) are still carried out; their acks go nowhere, and
        // a resend after reconnecting gets the same ack.
        let _ = session.drain();
        let _ = writer.await;
        tracing::debug!("connection closed");
    }
    .instrument(span)
    .await
}

async fn read_loop(
    state: &AppState,
    mut stream: SplitStream<WebSocket>,
    tx: &OutboundTx,
    session: &ActorRef<SessionMsg>,
    claims: Claims,
) {
    let limit = ConnectionLimit::new(state.config.ws_rate, state.config.ws_burst);
    let mut refused_in_a_row = 0u32;
    let close_signal = tx.clone();
    // The session lives as long as its token; `auth` frames extend it
    // (never shorten it: a still-valid older token changes nothing).
    let mut session_exp = claims.exp;
    let expiry = tokio::time::sleep_until(deadline(session_exp));
    tokio::pin!(expiry);
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = close_signal.closed() => return,
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
                tx.frame(
                    ServerEvent::error(
                        None,
                        ErrorCode::InvalidRequest,
                        "binary frames are not supported",
                    )
                    .to_json(),
                );
                continue;
            }
            Some(Ok(Message::Close(_))) => return,
            Some(Ok(_)) => continue, // ping/pong are answered by the library
            Some(Err(e)) => {
                match close_code_for(e) {
                    Some(CLOSE_TOO_LARGE) => {
                        inc(&state.metrics.ws_too_large_closes);
                        tx.close(CLOSE_TOO_LARGE);
                    }
                    Some(code) => {
                        inc(&state.metrics.ws_protocol_error_closes);
                        tx.close(code);
                    }
                    None => {}
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
        if !limit.allow() {
            inc(&state.metrics.ws_rate_limited);
            refused_in_a_row += 1;
            if refused_in_a_row >= state.config.ws_flood_close_after.max(1) {
                inc(&state.metrics.ws_flood_closes);
                tx.close(CLOSE_POLICY);
                return;
            }
            tx.frame(
                ServerEvent::error(
                    peek_ref(&text),
                    ErrorCode::RateLimited,
                    "too many frames, slow down",
                )
                .to_json(),
            );
            continue;
        }
        refused_in_a_row = 0;
        match parse_client_frame(&text) {
            Ok(ClientFrame {
                r#ref,
                request: ClientRequest::Auth(auth),
            }) => {
                match state
                    .tokens
                    .verify(&auth.token)
                    .filter(|c| c.sub == claims.sub)
                {
                    Some(fresh) => {
                        session_exp = session_exp.max(fresh.exp);
                        expiry.as_mut().reset(deadline(session_exp));
                        let expires_in = secs_until(session_exp);
                        tx.frame(ServerEvent::Authed { r#ref, expires_in }.to_json());
                    }
                    None => {
                        tx.frame(
                            ServerEvent::error(
                                r#ref,
                                ErrorCode::Unauthorized,
                                "invalid or expired token",
                            )
                            .to_json(),
                        );
                    }
                }
            }
            Ok(frame) => {
                if session.cast(SessionMsg::Frame(frame)).is_err() {
                    return;
                }
            }
            Err(e) => {
                inc(&state.metrics.ws_bad_frames);
                tx.frame(ServerEvent::from(e).to_json());
            }
        }
    }
}

/// The close code (RFC 6455, 7.4.1) for a frame the WebSocket library
/// refused; `None` when the peer is gone and there is no one to tell.
fn close_code_for(e: axum::Error) -> Option<u16> {
    use tungstenite::error::{Error, ProtocolError};
    match e.into_inner().downcast_ref::<Error>()? {
        Error::Capacity(_) => Some(CLOSE_TOO_LARGE),
        Error::Utf8(_) => Some(CLOSE_INVALID_DATA),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Protocol(_) => Some(CLOSE_PROTOCOL_ERROR),
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
        code,
        reason: Utf8Bytes::from(reason),
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

/// Queues a frame in the socket's write buffer (written out by `flush`).
async fn put(sink: &mut Sink, json: &str) -> bool {
    let write = sink.feed(Message::Text(Utf8Bytes::from(json)));
    matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

/// Writes everything queued in the socket's write buffer.
async fn flush(sink: &mut Sink) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, sink.flush()).await,
        Ok(Ok(()))
    )
}

async fn put_all(sink: &mut Sink, frames: Vec<Arc<str>>) -> bool {
    for json in frames {
        if !put(sink, &json).await {
            return false;
        }
    }
    true
}

/// What the writer does after an item.
enum Flow {
    /// Keep going.
    Go,
    /// The socket or the session is gone.
    Stop,
    /// Too much held back for a slow client: close with 1013.
    Overflow,
}

fn flow(ok: bool) -> Flow {
    if ok {
        Flow::Go
    } else {
        Flow::Stop
    }
}

/// What the writer keeps about its connection besides the socket.
struct Shown {
    /// Live messages against `sync` replays.
    order: DeliveryOrder,
    /// Typing indicators the client shows.
    typing: TypingWatch,
}

async fn live_item(
    sink: &mut Sink,
    shown: &mut Shown,
    session: &ActorRef<SessionMsg>,
    item: Outbound,
    hold_max: usize,
) -> Flow {
    let Shown { order, typing } = shown;
    let ok = match item {
        Outbound::Frame(json) => put(sink, &json).await,
        Outbound::Typing(t) => {
            if typing.pass(&t.room_id, &t.user_id, t.active, Instant::now()) {
                put(sink, &t.json).await
            } else {
                true
            }
        }
        Outbound::Message(m) => match order.live(&m.room_id, m.seq, &m.json) {
            Verdict::Write => put(sink, &m.json).await,
            Verdict::Duplicate => true,
            Verdict::Held | Verdict::Gap { .. } if order.held_len() > hold_max => {
                return Flow::Overflow
            }
            Verdict::Held => true,
            Verdict::Gap { after } => {
                // A delivery was lost on the way: the session replays the
                // missing seqs from storage; the room is held until then.
                let _ = session.cast(SessionMsg::Repair {
                    room: m.room_id.clone(),
                    after,
                });
                true
            }
        },
        Outbound::SyncStart(start) => {
            let now = order.start_sync(&start.rooms, start.client);
            start.taken();
            put_all(sink, now).await
        }
        Outbound::OpenGate => {
            let now = order.open_gate();
            put_all(sink, now).await
        }
        Outbound::Head(head) => {
            if let Some(after) = order.head(&head.room_id, head.seq) {
                // The room's last deliveries were lost on the way: replay
                // them from storage, as for a gap a live message shows.
                let _ = session.cast(SessionMsg::Repair {
                    room: head.room_id.clone(),
                    after,
                });
            }
            true
        }
    };
    flow(ok)
}

async fn sync_item(
    sink: &mut Sink,
    order: &mut DeliveryOrder,
    session: &ActorRef<SessionMsg>,
    item: SyncItem,
) -> Flow {
    let ok = match item {
        SyncItem::Message(m) => match order.replayed(&m.room_id, m.seq) {
            Verdict::Write => put(sink, &m.json).await,
            _ => true,
        },
        SyncItem::RoomDone(end) => {
            let released = order.end_sync(&end.room_id, end.seq);
            if let Some(after) = released.repair_after {
                let _ = session.cast(SessionMsg::Repair {
                    room: end.room_id.clone(),
                    after,
                });
            }
            put_all(sink, released.frames).await
        }
        SyncItem::RoomReleased(room_id) => {
            let now = order.release(&room_id);
            put_all(sink, now).await
        }
        SyncItem::Done(json) => put(sink, &json).await,
    };
    flow(ok)
}

/// Writes the frames already queued (at most a few hundred) without waiting for more.
async fn flush_queued(
    sink: &mut Sink,
    rx: &mut OutboundRx,
    shown: &mut Shown,
    session: &ActorRef<SessionMsg>,
) {
    for _ in 0..256 {
        let flow = match rx.try_next() {
            Some(Next::Live(item)) => live_item(sink, shown, session, item, usize::MAX).await,
            Some(Next::Sync(item)) => sync_item(sink, &mut shown.order, session, item).await,
            None => break,
        };
        if !matches!(flow, Flow::Go) {
            break;
        }
    }
    flush(sink).await;
}

/// Drains the session's queues into the socket, in order, batching writes.
async fn write_loop(
    mut sink: Sink,
    mut rx: OutboundRx,
    hold_max: usize,
    typing_ttl: Duration,
    session: ActorRef<SessionMsg>,
) {
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
    loop {
        let typing_end = shown
            .typing
            .next_deadline()
            .map(tokio::time::Instant::from_std);
        let mut next = tokio::select! {
            biased;
            code = &mut close_wait => {
                if code != CLOSE_TRY_AGAIN {
                    // Say what is already queued (e.g. the errors that led to a
                    // 1008) before closing; a slow client (1013) gets nothing more.
                    let drain = flush_queued(&mut sink, &mut rx, &mut shown, &session);
                    let _ = tokio::time::timeout(FLUSH_BEFORE_CLOSE, drain).await;
                }
                close(&mut sink, code).await;
                return;
            }
            item = rx.next() => match item {
                Some(Next::Live(item)) => {
                    live_item(&mut sink, &mut shown, &session, item, hold_max).await
                }
                Some(Next::Sync(item)) => {
                    sync_item(&mut sink, &mut shown.order, &session, item).await
                }
                None => Flow::Stop,
            },
            _ = tokio::time::sleep_until(gate_deadline), if shown.order.is_gated() => {
                let now = shown.order.open_gate();
                flow(put_all(&mut sink, now).await)
            }
            _ = tokio::time::sleep_until(typing_end.unwrap_or(gate_deadline)), if typing_end.is_some() => {
                // Indicators whose room never ended them (it moved to
                // another node meanwhile): end them here.
                let frames = shown
                    .typing
                    .expired(Instant::now())
                    .into_iter()
                    .map(|(room_id, user_id)| TypingNotice::new(room_id, user_id, false).json)
                    .collect();
                flow(put_all(&mut sink, frames).await)
            }
        };
        // Write whatever else is ready too, then flush once.
        for _ in 0..WRITE_BATCH {
            if !matches!(next, Flow::Go) {
                break;
            }
            match rx.try_next_live() {
                Some(item) => {
                    next = live_item(&mut sink, &mut shown, &session, item, hold_max).await
                }
                None => break,
            }
        }
        match next {
            Flow::Go => {
                if !flush(&mut sink).await {
                    return;
                }
            }
            Flow::Stop => return,
            Flow::Overflow => {
                close(&mut sink, CLOSE_TRY_AGAIN).await;
                return;
            }
        }
    }
}
