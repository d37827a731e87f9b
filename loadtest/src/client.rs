//! One simulated client session: a task that connects, sends at a fixed rate,
//! records every event it receives, reconnects with backoff (to any node)
//! and `sync`s from its last seen seq per room, and resends unacked messages
//! with the same `client_msg_id`.
//!
//! The runner steers all sessions through one [`Phase`] watch channel and
//! collects a [`SessionResult`] from each task when it ends. Every loop here
//! ends by itself: at [`Phase::Stop`], at the finish deadline, or when
//! caught up in [`Phase::Finish`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parley_protocol::ws::ServerEvent;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::checker::{AckRecord, DeliveryStream};
use crate::metrics::Metrics;
use crate::wsconn::{self, NodeAddr, SourceAddrs, Ws};

/// Where the run is; every session follows it.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Connect and wait.
    Connect,
    /// Send until this harness-clock time (µs).
    Run {
        /// End of sending.
        send_until_us: u64,
    },
    /// No new messages; keep resending unacked ones until acked.
    Drain,
    /// Catch up to these room heads (indexed by global room), then close;
    /// give up at the deadline (harness clock, µs).
    Finish {
        /// Head seq of every room.
        heads: Arc<Vec<u64>>,
        /// When to give up.
        deadline_us: u64,
    },
    /// Close now.
    Stop,
}

/// What every session shares.
#[derive(Clone)]
pub struct Shared {
    /// Measurements.
    pub metrics: Arc<Metrics>,
    /// Nodes to connect to (reconnects rotate through them).
    pub nodes: Arc<Vec<NodeAddr>>,
    /// Room ids by global room index.
    pub room_ids: Arc<Vec<Arc<str>>>,
    /// Bounds concurrent connection attempts.
    pub connect_gate: Arc<Semaphore>,
    /// Source address choice.
    pub sources: SourceAddrs,
    /// Timeout of one connection attempt (TCP, upgrade, `hello`).
    pub connect_timeout: Duration,
    /// Pad message bodies to at least this many bytes.
    pub body_bytes: usize,
    /// The run's phase.
    pub phase: watch::Receiver<Phase>,
}

/// What one session does.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Session number (unique in the run).
    pub index: usize,
    /// Human-readable name for reports.
    pub label: String,
    /// Access token of the session's user.
    pub token: Arc<str>,
    /// Node to connect to first (index into the node list).
    pub home: usize,
    /// Global indices of the rooms the user is a member of.
    pub rooms: Vec<usize>,
    /// Room heads when the session was planned (aligned with `rooms`).
    pub bases: Vec<u64>,
    /// Global indices of the rooms this session sends to, in turn.
    pub send_rooms: Vec<usize>,
    /// Messages per second this session sends (0: none).
    pub rate: f64,
    /// Send `typing` before every message.
    pub typing: bool,
    /// Send `read` watermarks about once a second.
    pub read_receipts: bool,
    /// Drop the connection this long after the run starts, then reconnect and sync.
    pub drop_after: Option<Duration>,
}

/// What one session observed.
#[derive(Debug)]
pub struct SessionResult {
    /// Human-readable name.
    pub label: String,
    /// Ended connected and caught up to every room head in [`Phase::Finish`].
    pub complete: bool,
    /// Ever connected.
    pub connected: bool,
    /// Deliveries per room (global room index).
    pub streams: Vec<(usize, DeliveryStream)>,
    /// Acks received.
    pub acks: Vec<AckRecord>,
    /// When each ack arrived: (global room, harness-clock µs).
    pub ack_times: Vec<(usize, u64)>,
    /// Messages still unacked at the end.
    pub unacked: usize,
}

/// A message written but not yet acked.
#[derive(Debug, Clone)]
struct Pending {
    room: usize,
    body: String,
    first_sent_us: u64,
    retry_at: Option<Instant>,
}

/// Why a connection ended.
enum End {
    /// Caught up in the finish phase, or told to stop.
    Done,
    /// Lost (closed by the server, network error, node died).
    Lost,
    /// Planned drop: reconnect after a pause.
    Dropped,
}

/// Small deterministic pseudo-random numbers (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Session {
    spec: SessionSpec,
    shared: Shared,
    streams: Vec<DeliveryStream>,
    pending: BTreeMap<u64, Pending>,
    next_n: u64,
    acks: Vec<AckRecord>,
    ack_times: Vec<(usize, u64)>,
    reconnects: u32,
    rng: Rng,
    send_turn: usize,
    read_sent: Vec<u64>,
    complete: bool,
    quiesced: bool,
    /// Reconnected and waiting for `synced`: what arrives now was missed
    /// while away (or held back by the replay) and is timed as catch-up.
    catching_up: bool,
}

/// Runs one session until the run stops it; never panics on network input.
pub async fn run(spec: SessionSpec, shared: Shared) -> SessionResult {
    let streams = spec.bases.iter().map(|&b| DeliveryStream::new(b)).collect();
    let read_sent = spec.bases.clone();
    let seed = (spec.index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut s = Session {
        spec,
        shared,
        streams,
        pending: BTreeMap::new(),
        next_n: 0,
        acks: Vec::new(),
        ack_times: Vec::new(),
        reconnects: 0,
        rng: Rng(seed),
        send_turn: 0,
        read_sent,
        complete: false,
        quiesced: false,
        catching_up: false,
    };
    let connected = s.life().await;
    s.quiesce();
    let unacked = s.pending.len();
    for _ in 0..unacked {
        s.shared.metrics.settle();
    }
    SessionResult {
        label: s.spec.label,
        complete: s.complete,
        connected,
        streams: s.spec.rooms.iter().copied().zip(s.streams).collect(),
        acks: s.acks,
        ack_times: s.ack_times,
        unacked,
    }
}

impl Session {
    fn phase(&self) -> Phase {
        self.shared.phase.borrow().clone()
    }

    /// Tells the runner, once, that this session will send nothing new:
    /// it has seen the run phase end (or it is ending).
    fn quiesce(&mut self) {
        if !self.quiesced {
            self.quiesced = true;
            self.shared.metrics.quiesced.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Quiesces if the phase is past sending.
    fn note_phase(&mut self, phase: &Phase) {
        if !matches!(phase, Phase::Connect | Phase::Run { .. }) {
            self.quiesce();
        }
    }

    /// Whether the session should stop trying to (re)connect.
    fn over(&self) -> bool {
        match self.phase() {
            Phase::Stop => true,
            Phase::Finish { deadline_us, .. } => self.shared.metrics.now_us() >= deadline_us,
            _ => false,
        }
    }

    /// Connects, runs, reconnects; returns whether it ever connected.
    async fn life(&mut self) -> bool {
        let metrics = self.shared.metrics.clone();
        let n_nodes = self.shared.nodes.len().max(1);
        let mut attempt: u32 = 0;
        let mut ever = false;
        let mut dropped_once = false;
        loop {
            let phase = self.phase();
            self.note_phase(&phase);
            if self.over() {
                return ever;
            }
            let node_i = (self.spec.home + attempt as usize) % n_nodes;
            let Some(node) = self.shared.nodes.get(node_i).cloned() else {
                return ever;
            };
            let source = self.shared.sources.source_for(self.spec.index, &node.addr);
            let (conn, t0) = {
                let _permit = self.shared.connect_gate.acquire().await;
                let t0 = Instant::now();
                let timeout = self.shared.connect_timeout;
                let conn = match wsconn::connect(&node, &self.spec.token, source, timeout).await {
                    Ok(ws) => wait_hello(ws, timeout).await,
                    Err(e) => Err(e.code()),
                };
                (conn, t0)
            };
            let mut ws = match conn {
                Ok(ws) => ws,
                Err(code) => {
                    metrics.record_connect_failure(self.spec.index, t0.elapsed());
                    metrics.error(code);
                    attempt += 1;
                    if !ever && attempt >= 5 {
                        metrics.initial_done.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    let base = (100u64 << attempt.min(5)).min(2000);
                    let delay = Duration::from_millis(base).mul_f64(0.5 + self.rng.next_f64());
                    self.pause(delay).await;
                    continue;
                }
            };
            metrics.record_connect(self.spec.index, t0.elapsed());
            metrics.connected.fetch_add(1, Ordering::Relaxed);
            if !ever {
                metrics.initial_ok.fetch_add(1, Ordering::Relaxed);
                metrics.initial_done.fetch_add(1, Ordering::Relaxed);
            } else {
                self.reconnects += 1;
                metrics.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            let end = self.connected(&mut ws).await;
            ever = true;
            attempt = 0;
            metrics.connected.fetch_sub(1, Ordering::Relaxed);
            match end {
                End::Done => {
                    let _ = ws.close(None).await;
                    return true;
                }
                End::Lost => {
                    attempt = 1;
                    let delay = Duration::from_millis(100).mul_f64(0.5 + self.rng.next_f64());
                    self.pause(delay).await;
                }
                End::Dropped if !dropped_once => {
                    dropped_once = true;
                    attempt = 1;
                    drop(ws);
                    let delay = Duration::from_millis(200).mul_f64(1.0 + self.rng.next_f64());
                    self.pause(delay).await;
                }
                End::Dropped => {}
            }
        }
    }

    /// Sleeps, waking early if the phase says stop.
    async fn pause(&mut self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        let mut phase = self.shared.phase.clone();
        loop {
            if matches!(*phase.borrow_and_update(), Phase::Stop) {
                return;
            }
            tokio::select! {
                _ = sleep_until(until) => return,
                r = phase.changed() => if r.is_err() { return },
            }
        }
    }

    fn caught_up(&self, heads: &[u64]) -> bool {
        self.pending.is_empty()
            && self
                .spec
                .rooms
                .iter()
                .zip(&self.streams)
                .all(|(r, s)| s.last_seen() >= heads.get(*r).copied().unwrap_or(0))
    }

    fn room_index(&self, room_id: &str) -> Option<usize> {
        self.spec.rooms.iter().position(|&r| {
            self.shared
                .room_ids
                .get(r)
                .is_some_and(|id| &**id == room_id)
        })
    }

    /// One connection's life.
    async fn connected(&mut self, ws: &mut Ws) -> End {
        let metrics = self.shared.metrics.clone();
        let mut phase_rx = self.shared.phase.clone();
        // Sync first on every connection (the server holds live messages of
        // a new connection until its first request): on a reconnect this
        // replays what was missed; on the first connection it replays
        // nothing past the base and just lets live messages flow.
        if !self.spec.rooms.is_empty() {
            let rooms: HashMap<&str, u64> = self
                .spec
                .rooms
                .iter()
                .zip(&self.streams)
                .filter_map(|(r, s)| {
                    self.shared
                        .room_ids
                        .get(*r)
                        .map(|id| (&**id, s.last_seen()))
                })
                .collect();
            let frame = json!({"type": "sync", "ref": "sync", "rooms": rooms}).to_string();
            if ws.send(WsMessage::text(frame)).await.is_err() {
                return End::Lost;
            }
            self.catching_up = self.reconnects > 0;
        }
        // Resend everything unacked, in order, with the same client_msg_id.
        let unacked: Vec<u64> = self.pending.keys().copied().collect();
        for n in unacked {
            if !self.resend(ws, n).await {
                return End::Lost;
            }
        }
        let now = tokio::time::Instant::now();
        let period = (self.spec.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / self.spec.rate));
        let offset = period
            .map(|p| p.mul_f64(self.rng.next_f64()))
            .unwrap_or_default();
        let mut next_send = now + offset;
        let mut next_ping = now + Duration::from_secs(15);
        let mut next_read = now + Duration::from_millis(500 + (self.spec.index % 500) as u64);
        let far = now + Duration::from_secs(86_400);
        // One timer for everything time-driven, reset only when the earliest
        // deadline changes (timers are costly at 100,000 events per second).
        let timer = tokio::time::sleep_until(far);
        tokio::pin!(timer);
        let mut timer_at = far;
        let mut was_sending = false;
        loop {
            let phase = phase_rx.borrow_and_update().clone();
            // From here on, a phase past `Run` means no new message is sent.
            self.note_phase(&phase);
            let sending = match &phase {
                Phase::Run { send_until_us } => {
                    period.is_some()
                        && !self.spec.send_rooms.is_empty()
                        && metrics.now_us() < *send_until_us
                }
                _ => false,
            };
            if sending && !was_sending {
                // Start the schedule now (spread by the offset), not at
                // connect time: no burst of catch-up sends at the start.
                next_send = tokio::time::Instant::now() + offset;
            }
            was_sending = sending;
            let deadline = match &phase {
                Phase::Stop => return End::Done,
                Phase::Finish { heads, deadline_us } => {
                    if self.caught_up(heads) {
                        self.complete = true;
                        return End::Done;
                    }
                    Some(tokio::time::Instant::from_std(
                        metrics.instant_at(*deadline_us),
                    ))
                }
                _ => None,
            };
            let drop_at = self
                .spec
                .drop_after
                .filter(|_| self.reconnects == 0 && matches!(phase, Phase::Run { .. }))
                .and_then(|d| metrics.run_start_us().map(|s| s + d.as_micros() as u64))
                .map(|us| tokio::time::Instant::from_std(metrics.instant_at(us)));
            let retry_at = self
                .pending
                .values()
                .filter_map(|p| p.retry_at)
                .min()
                .map(tokio::time::Instant::from_std);
            let reading = self.spec.read_receipts;
            let next = [
                sending.then_some(next_send),
                Some(next_ping),
                reading.then_some(next_read),
                retry_at,
                drop_at,
                deadline,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far);
            if next != timer_at {
                timer.as_mut().reset(next);
                timer_at = next;
            }
            tokio::select! {
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(WsMessage::Text(t))) => t,
                        Some(Ok(WsMessage::Close(c))) => {
                            let code = c.map(|c| u16::from(c.code)).unwrap_or(1005);
                            metrics.error(format!("close_{code}"));
                            return End::Lost;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(_)) => {
                            metrics.error("connection_error");
                            return End::Lost;
                        }
                        None => {
                            metrics.error("connection_closed");
                            return End::Lost;
                        }
                    };
                    if !self.on_text(&text) {
                        return End::Lost;
                    }
                }
                _ = &mut timer => {
                    // A fired timer must be reset before it is polled again:
                    // this sentinel differs from every computed deadline.
                    timer_at = far + Duration::from_secs(1);
                    let now = tokio::time::Instant::now();
                    if deadline.is_some_and(|d| d <= now) {
                        return End::Done;
                    }
                    if drop_at.is_some_and(|d| d <= now) {
                        return End::Dropped;
                    }
                    // Sending ends at its time, not at the next send after it.
                    let still_sending = match &phase {
                        Phase::Run { send_until_us } => metrics.now_us() < *send_until_us,
                        _ => false,
                    };
                    if sending && still_sending && next_send <= now {
                        if let Some(p) = period {
                            next_send += p;
                            if next_send + Duration::from_secs(1) < now {
                                // The harness fell more than a second behind: skip ahead.
                                metrics.error("harness_send_lag");
                                next_send = now + p;
                            }
                        }
                        if !self.send_new(ws).await {
                            return End::Lost;
                        }
                    }
                    if next_ping <= now {
                        next_ping += Duration::from_secs(15);
                        let ping = WsMessage::text(r#"{"type":"ping","ref":"ping"}"#);
                        if ws.send(ping).await.is_err() {
                            return End::Lost;
                        }
                    }
                    if reading && next_read <= now {
                        next_read += Duration::from_secs(1);
                        if !self.send_reads(ws).await {
                            return End::Lost;
                        }
                    }
                    if retry_at.is_some_and(|t| t <= now) {
                        let due: Vec<u64> = self
                            .pending
                            .iter()
                            .filter(|(_, p)| p.retry_at.is_some_and(|t| t <= Instant::now()))
                            .map(|(n, _)| *n)
                            .collect();
                        for n in due {
                            if !self.resend(ws, n).await {
                                return End::Lost;
                            }
                        }
                    }
                }
                r = phase_rx.changed() => {
                    if r.is_err() {
                        return End::Done;
                    }
                }
            }
        }
    }

    fn client_msg_id(&self, n: u64) -> String {
        format!("s{}-{n}", self.spec.index)
    }

    /// Composes and sends the next message.
    async fn send_new(&mut self, ws: &mut Ws) -> bool {
        let Some(&room) = self
            .spec
            .send_rooms
            .get(self.send_turn % self.spec.send_rooms.len().max(1))
        else {
            return true;
        };
        self.send_turn += 1;
        let n = self.next_n;
        self.next_n += 1;
        let metrics = &self.shared.metrics;
        let now = metrics.now_us();
        let mut body = format!("{now}:{}:{n}", self.spec.label);
        if body.len() < self.shared.body_bytes {
            body.push(' ');
            while body.len() < self.shared.body_bytes {
                body.push('x');
            }
        }
        self.pending.insert(
            n,
            Pending {
                room,
                body,
                first_sent_us: now,
                retry_at: None,
            },
        );
        metrics.record_send(self.spec.index);
        if self.spec.typing {
            if let Some(id) = self.shared.room_ids.get(room) {
                let t = json!({"type": "typing", "room_id": &**id, "active": true}).to_string();
                if ws.send(WsMessage::text(t)).await.is_err() {
                    return false;
                }
            }
        }
        self.write_send(ws, n).await
    }

    async fn resend(&mut self, ws: &mut Ws, n: u64) -> bool {
        if let Some(p) = self.pending.get_mut(&n) {
            p.retry_at = None;
            self.shared.metrics.resends.fetch_add(1, Ordering::Relaxed);
        }
        self.write_send(ws, n).await
    }

    async fn write_send(&mut self, ws: &mut Ws, n: u64) -> bool {
        let Some(p) = self.pending.get(&n) else {
            return true;
        };
        let Some(room_id) = self.shared.room_ids.get(p.room) else {
            return true;
        };
        let cmid = self.client_msg_id(n);
        let frame = json!({
            "type": "send",
            "ref": cmid,
            "room_id": &**room_id,
            "client_msg_id": cmid,
            "body": p.body,
        })
        .to_string();
        ws.send(WsMessage::text(frame)).await.is_ok()
    }

    async fn send_reads(&mut self, ws: &mut Ws) -> bool {
        for i in 0..self.streams.len() {
            let seen = self.streams[i].last_seen();
            if seen > self.read_sent[i] {
                self.read_sent[i] = seen;
                let Some(id) = self
                    .spec
                    .rooms
                    .get(i)
                    .and_then(|r| self.shared.room_ids.get(*r))
                else {
                    continue;
                };
                let f = json!({"type": "read", "room_id": &**id, "seq": seen}).to_string();
                if ws.send(WsMessage::text(f)).await.is_err() {
                    return false;
                }
            }
        }
        true
    }

    /// Handles one server frame; false if the connection is unusable.
    fn on_text(&mut self, text: &str) -> bool {
        let metrics = self.shared.metrics.clone();
        let Ok(f) = serde_json::from_str::<Frame>(text) else {
            metrics.error("unparsed_event");
            return true;
        };
        match (&*f.kind, f.room_id.as_deref(), f.seq) {
            ("message", Some(room_id), Some(seq)) => {
                let Some(i) = self.room_index(room_id) else {
                    metrics.error("message_for_unknown_room");
                    return true;
                };
                self.streams[i].record(seq, f.message_id.as_deref().unwrap_or(""));
                let sent_us = f.body.as_deref().and_then(body_timestamp);
                metrics.record_delivery(self.spec.index, sent_us, self.catching_up);
            }
            ("sent", Some(room_id), Some(seq)) => {
                let cmid = f.client_msg_id.as_deref().unwrap_or("");
                if let Some(p) = self.own_number(cmid).and_then(|n| self.pending.remove(&n)) {
                    metrics.record_ack(self.spec.index, p.first_sent_us);
                    metrics.settle();
                }
                match self.room_index(room_id) {
                    Some(i) => {
                        let room = self.spec.rooms[i];
                        self.ack_times.push((room, metrics.now_us()));
                        self.acks.push(AckRecord {
                            room,
                            seq,
                            client_msg_id: cmid.to_string(),
                            message_id: f.message_id.as_deref().unwrap_or("").to_string(),
                        });
                    }
                    None => metrics.error("ack_for_unknown_room"),
                }
            }
            ("error", _, _) => {
                let code = f.code.as_deref().unwrap_or("unknown");
                metrics.error(code);
                if let Some(n) = f.r#ref.as_deref().and_then(|r| self.own_number(r)) {
                    use parley_protocol::ErrorCode as C;
                    let retry = [C::Unavailable, C::RateLimited, C::Internal]
                        .iter()
                        .any(|c| c.as_str() == code);
                    if retry {
                        // Retry later with the same client_msg_id: safe, the
                        // server deduplicates.
                        let delay = Duration::from_millis(200).mul_f64(1.0 + self.rng.next_f64());
                        if let Some(p) = self.pending.get_mut(&n) {
                            p.retry_at = Some(Instant::now() + delay);
                        }
                    } else if self.pending.remove(&n).is_some() {
                        metrics.send_failures.fetch_add(1, Ordering::Relaxed);
                        metrics.settle();
                    }
                }
            }
            ("message" | "sent", _, _) => metrics.error("malformed_event"),
            ("synced", _, _) => {
                self.catching_up = false;
                metrics.other_event(&f.kind);
            }
            _ => {
                metrics.other_event(&f.kind);
            }
        }
        true
    }

    /// The message number `n` of one of this session's `client_msg_id`s (`s{index}-{n}`).
    fn own_number(&self, cmid: &str) -> Option<u64> {
        let rest = cmid.strip_prefix('s')?;
        let (idx, n) = rest.split_once('-')?;
        (idx.parse::<usize>().ok()? == self.spec.index)
            .then(|| n.parse().ok())
            .flatten()
    }
}

/// The fields of a server event the harness reads, borrowed from the frame
/// where possible (the hot path parses 100,000 of these per second); the
/// shapes are those of `parley_protocol::ws::ServerEvent`.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    room_id: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    body: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client_msg_id: Option<Cow<'a, str>>,
    #[serde(rename = "ref", borrow, default)]
    r#ref: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

/// Waits for the `hello` that opens every connection.
async fn wait_hello(mut ws: Ws, timeout: Duration) -> Result<Ws, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("hello_timeout".into()),
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                if let Ok(ServerEvent::Hello { .. }) = serde_json::from_str::<ServerEvent>(&t) {
                    return Ok(ws);
                }
            }
            Ok(Some(Ok(WsMessage::Close(c)))) => {
                let code = c.map(|c| u16::from(c.code)).unwrap_or(1005);
                return Err(format!("close_{code}"));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => return Err("hello_connection_lost".into()),
        }
    }
}

/// The send time (harness clock, µs) at the start of a harness message body.
pub fn body_timestamp(body: &str) -> Option<u64> {
    body.split_once(':').and_then(|(ts, _)| ts.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_body_timestamps() {
        assert_eq!(body_timestamp("12345:u1#0:7 xxxx"), Some(12345));
        assert_eq!(body_timestamp("hello"), None);
        assert_eq!(body_timestamp("x:1"), None);
    }

    #[test]
    fn frames_match_the_protocol_types() {
        let ev = ServerEvent::Message(parley_protocol::http::Message {
            room_id: "r".into(),
            seq: 7,
            message_id: "m".into(),
            sender_id: "u".into(),
            sender_name: "n".into(),
            body: "12:a:b \"quoted\"".into(),
            sent_at: "t".into(),
            client_msg_id: "s1-2".into(),
        });
        let json = ev.to_json();
        let f: Frame = serde_json::from_str(&json).unwrap();
        assert_eq!(&*f.kind, "message");
        assert_eq!(f.seq, Some(7));
        assert_eq!(f.body.as_deref().and_then(body_timestamp), Some(12));
        let e = ServerEvent::error(
            Some("s1-2".into()),
            parley_protocol::ErrorCode::Unavailable,
            "x",
        );
        let json = e.to_json();
        let f: Frame = serde_json::from_str(&json).unwrap();
        assert_eq!(f.code.as_deref(), Some("unavailable"));
        assert_eq!(f.r#ref.as_deref(), Some("s1-2"));
    }

    #[test]
    fn rng_is_in_unit_interval() {
        let mut r = Rng(7);
        for _ in 0..1000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
